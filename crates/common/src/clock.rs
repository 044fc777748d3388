//! The one way time enters the services' stores and budgets: the wall
//! clock (Unix milliseconds, for what is written down and compared across
//! instances) and the monotonic clock (for deadlines inside one process),
//! both from one [`Clock`].
//!
//! The monotonic side is tokio's, so a test that pauses tokio's time
//! (`#[tokio::test(start_paused = true)]`) and advances it moves every
//! deadline at once; [`Clock::following_tokio`] makes the wall clock follow
//! it too. Production uses [`Clock::system`].

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system's wall clock; else a Unix time in ms and the
    /// tokio instant it was read at, from which the wall clock follows
    /// tokio's.
    anchor: Option<Arc<(u64, Instant)>>,
}

impl Clock {
    /// The system's clocks.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A wall clock that moves with tokio's time only: paused and advanced
    /// with it in tests. Starts at the system's time now.
    pub fn following_tokio() -> Clock {
        Clock {
            anchor: Some(Arc::new((system_unix_ms(), Instant::now()))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        match &self.anchor {
            None => system_unix_ms(),
            Some(anchor) => {
                let (unix_ms, at) = **anchor;
                unix_ms.saturating_add(millis(at.elapsed()))
            }
        }
    }

    /// Now, for deadlines within this process.
    pub fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Whole milliseconds of `duration`, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn system_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_following_clock_moves_with_tokios_time() {
        let clock = Clock::following_tokio();
        let (wall, mono) = (clock.unix_ms(), clock.now());
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.unix_ms() - wall, 90_000);
        assert_eq!(clock.now() - mono, Duration::from_secs(90));
    }

    #[test]
    fn the_system_clock_is_the_systems() {
        let before = system_unix_ms();
        let now = Clock::system().unix_ms();
        assert!(now >= before && now - before < 1_000);
    }
}
