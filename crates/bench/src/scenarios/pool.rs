//! Single-use login codes, minted outside the measured window and taken
//! by any number of workers.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

/// Single-use login codes, taken by any number of workers.
#[derive(Debug, Default)]
pub struct CodePool {
    codes: Mutex<Vec<String>>,
    taken: AtomicU64,
}

impl CodePool {
    pub(super) fn take(&self) -> Option<String> {
        let code = self
            .codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(code)
    }

    pub(super) fn extend(&self, codes: Vec<String>) {
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(codes);
    }

    pub(super) fn len(&self) -> usize {
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(super) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}
