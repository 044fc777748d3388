//! The in-process stores of the single-process setup: the same semantics as
//! the Redis ones, for one process only. Entries expire by the same rules,
//! on the [`Clock`] the stores are given; expired ones are swept now and
//! then as new ones arrive.

mod access_tokens;
mod budgets;
mod exchanges;
mod sessions;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wxlogin_common::clock::Clock;

use super::{SessionPolicy, Stores};

pub use self::{
    access_tokens::MemoryAccessTokens, budgets::MemoryBudgets, exchanges::MemoryExchanges,
    sessions::MemorySessions,
};

/// The in-process stores.
pub fn stores(policy: SessionPolicy, clock: Clock) -> Stores {
    let exchanges = Arc::new(MemoryExchanges::new(clock.clone()));
    Stores {
        sessions: Arc::new(MemorySessions::new(
            policy,
            clock.clone(),
            exchanges.clone(),
        )),
        exchanges,
        access_tokens: Arc::new(MemoryAccessTokens::new(clock.clone())),
        budgets: Arc::new(MemoryBudgets::new(clock)),
        policy,
        redis: None,
    }
}

/// The lock of an in-process store's state; a panic while it was held
/// leaves the state as consistent as each step leaves it.
fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
