//! When a map that only grows sweeps out its dead entries, so that a long
//! benchmark does not grow memory without bound.

/// The smallest size at which a map is swept.
pub(super) const MIN_SWEEP_AT: usize = 1024;

/// A map is swept once it grows to a size; the next size is twice what the
/// sweep left (at least [`MIN_SWEEP_AT`]). Doubling keeps the sweeps
/// amortised O(1) per insert.
#[derive(Debug)]
pub(super) struct Sweep {
    at: usize,
}

impl Sweep {
    pub(super) fn new() -> Self {
        Sweep { at: MIN_SWEEP_AT }
    }

    /// Whether a map of `len` entries is to be swept before it grows.
    pub(super) fn due(&self, len: usize) -> bool {
        len >= self.at
    }

    /// Records a sweep that left `len` entries.
    pub(super) fn swept(&mut self, len: usize) {
        self.at = (len * 2).max(MIN_SWEEP_AT);
    }
}
