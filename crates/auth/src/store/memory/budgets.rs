//! The budgets in this process: the Redis script's GCRA arithmetic under a
//! mutex, on the process's clock.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use tokio::time::Instant;
use wxlogin_common::clock::Clock;
use wxlogin_redis::Keyspace;

use super::lock;
use crate::store::{BudgetStore, Charge, ChargeMode, Refused, StoreError};

/// How often charging also sweeps out the budgets that are full again (and
/// so need no entry).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct MemoryBudgets {
    clock: Clock,
    /// Keys as in Redis, without a prefix.
    keys: Keyspace,
    state: Mutex<State>,
}

struct State {
    /// Budget key → its theoretical arrival time (µs after `epoch`).
    tats: HashMap<String, u64>,
    epoch: Instant,
    last_sweep: u64,
}

impl MemoryBudgets {
    pub fn new(clock: Clock) -> Self {
        let epoch = clock.now();
        MemoryBudgets {
            clock,
            keys: Keyspace::new(""),
            state: Mutex::new(State {
                tats: HashMap::new(),
                epoch,
                last_sweep: 0,
            }),
        }
    }
}

#[async_trait]
impl BudgetStore for MemoryBudgets {
    async fn charge(
        &self,
        mode: ChargeMode,
        charges: &[Charge<'_>],
    ) -> Result<Option<Refused>, StoreError> {
        let mut state = lock(&self.state);
        let now = u64::try_from((self.clock.now() - state.epoch).as_micros()).unwrap_or(u64::MAX);
        if now.saturating_sub(state.last_sweep) >= SWEEP_EVERY.as_micros() as u64 {
            // A budget whose timestamp is past is full again: the same as no
            // entry.
            state.tats.retain(|_, tat| *tat > now);
            state.last_sweep = now;
        }
        let keys: Vec<String> = charges
            .iter()
            .map(|charge| charge.subject.key(&self.keys))
            .collect();
        let mut refused: Option<Refused> = None;
        let mut tats = Vec::with_capacity(charges.len());
        for (index, (charge, key)) in charges.iter().zip(&keys).enumerate() {
            let tat = state.tats.get(key).copied();
            if mode == ChargeMode::Force {
                tats.push(
                    tat.unwrap_or(now)
                        .max(now)
                        .saturating_add(charge.emission_us),
                );
                continue;
            }
            match gcra(tat, now, charge) {
                Ok(tat) => tats.push(tat),
                Err(wait_us) if refused.is_none_or(|longest| wait_us > longest.wait_us) => {
                    refused = Some(Refused { index, wait_us });
                }
                Err(_) => {}
            }
        }
        if refused.is_none() && mode != ChargeMode::Check {
            for (key, tat) in keys.into_iter().zip(tats) {
                state.tats.insert(key, tat);
            }
        }
        Ok(refused)
    }

    fn checked_at_claim(&self) -> bool {
        false
    }
}

/// One GCRA step at `now` (µs) for a budget whose theoretical arrival time
/// is `tat`: the new one if the call fits, else how long until it would.
/// (The Redis script does the same arithmetic.)
fn gcra(tat: Option<u64>, now: u64, charge: &Charge<'_>) -> Result<u64, u64> {
    let tat = tat.unwrap_or(now).max(now);
    let next = tat.saturating_add(charge.emission_us);
    let allow_at = next.saturating_sub(charge.period_us);
    if allow_at > now {
        Err(allow_at - now)
    } else {
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BudgetSubject;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn gcra_allows_a_burst_then_one_per_emission_interval() {
        // 3 a minute.
        let budget = Charge {
            subject: BudgetSubject::LoginApp { appid: "wxa" },
            emission_us: 20 * SECOND,
            period_us: 60 * SECOND,
        };
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(tat, 0, &budget).unwrap());
        }
        // Full: the next call fits when one interval (20 s) has passed.
        assert_eq!(gcra(tat, 0, &budget), Err(20 * SECOND));
        assert_eq!(gcra(tat, 15 * SECOND, &budget), Err(5 * SECOND));
        let after = gcra(tat, 20 * SECOND, &budget).unwrap();
        assert_eq!(gcra(Some(after), 20 * SECOND, &budget), Err(20 * SECOND));
        // A budget left alone long enough is full again.
        assert!(gcra(tat, 10 * 60 * SECOND, &budget).is_ok());
    }
}
