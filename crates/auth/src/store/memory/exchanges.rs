//! Codes' exchanges in this process: the value each slot would hold in
//! Redis, and its expiry.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use tokio::time::Instant;
use wxlogin_common::clock::Clock;

use super::lock;
use crate::store::{Claim, CodeClaim, CodeExchanges, ExchangeSlot, SealedOutcome, StoreError};

/// How often claiming a code also sweeps out expired slots.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub struct MemoryExchanges {
    clock: Clock,
    state: Mutex<State>,
}

struct State {
    /// By (appid, slot): the value as Redis would hold it, and its expiry.
    slots: HashMap<(String, String), (String, Instant)>,
    last_sweep: Instant,
}

impl State {
    /// The slot's live value, with an expired one removed.
    fn value(&mut self, key: &(String, String), now: Instant) -> Option<&String> {
        if self
            .slots
            .get(key)
            .is_some_and(|(_, expiry)| *expiry <= now)
        {
            self.slots.remove(key);
        }
        self.slots.get(key).map(|(value, _)| value)
    }
}

fn slot_key(appid: &str, slot: &str) -> (String, String) {
    (appid.to_owned(), slot.to_owned())
}

impl MemoryExchanges {
    pub fn new(clock: Clock) -> Self {
        MemoryExchanges {
            state: Mutex::new(State {
                slots: HashMap::new(),
                last_sweep: clock.now(),
            }),
            clock,
        }
    }

    /// Records `outcome` in its slot, unless (`!replace_sealed`) an outcome
    /// is already sealed there: that one is answered.
    pub(super) fn record(
        &self,
        appid: &str,
        outcome: SealedOutcome<'_>,
        replace_sealed: bool,
    ) -> Option<String> {
        let now = self.clock.now();
        let key = slot_key(appid, outcome.slot);
        let mut state = lock(&self.state);
        if !replace_sealed
            && let Some(ExchangeSlot::Sealed(kept)) =
                state.value(&key, now).cloned().map(ExchangeSlot::parse)
        {
            return Some(kept);
        }
        state.slots.insert(
            key,
            (
                ExchangeSlot::sealed_value(outcome.sealed),
                now + outcome.ttl,
            ),
        );
        None
    }
}

#[async_trait]
impl CodeExchanges for MemoryExchanges {
    async fn claim(&self, claim: CodeClaim<'_>) -> Result<Claim, StoreError> {
        // The budgets were checked on their own before (see `MemoryBudgets`).
        let now = self.clock.now();
        let key = slot_key(claim.appid, claim.slot);
        let mut state = lock(&self.state);
        if now.duration_since(state.last_sweep) >= SWEEP_EVERY {
            state.slots.retain(|_, (_, expiry)| *expiry > now);
            state.last_sweep = now;
        }
        if let Some(current) = state.value(&key, now) {
            return Ok(Claim::Held(ExchangeSlot::parse(current.clone())));
        }
        state
            .slots
            .insert(key, (claim.marker.to_owned(), now + claim.ttl));
        Ok(Claim::Owned)
    }

    async fn slot(&self, appid: &str, slot: &str) -> Result<Option<ExchangeSlot>, StoreError> {
        let now = self.clock.now();
        Ok(lock(&self.state)
            .value(&slot_key(appid, slot), now)
            .cloned()
            .map(ExchangeSlot::parse))
    }

    async fn record_refusal(
        &self,
        appid: &str,
        refusal: SealedOutcome<'_>,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.record(appid, refusal, false))
    }

    async fn release(&self, appid: &str, slot: &str, marker: &str) -> Result<(), StoreError> {
        let key = slot_key(appid, slot);
        let mut state = lock(&self.state);
        if state
            .slots
            .get(&key)
            .is_some_and(|(value, _)| value == marker)
        {
            state.slots.remove(&key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(sealed: &str, ttl: Duration) -> SealedOutcome<'_> {
        SealedOutcome {
            slot: "s",
            sealed,
            ttl,
        }
    }

    fn claim(marker: &str, ttl: Duration) -> CodeClaim<'_> {
        CodeClaim {
            appid: "wxa",
            slot: "s",
            marker,
            ttl,
            budgets: &[],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_holds_until_released_or_expired_and_a_sealed_outcome_stays() {
        let exchanges = MemoryExchanges::new(Clock::following_tokio());
        let ttl = Duration::from_secs(10);
        let mine = ExchangeSlot::marker("a");
        assert_eq!(
            exchanges.claim(claim(&mine, ttl)).await.unwrap(),
            Claim::Owned
        );
        assert_eq!(
            exchanges.claim(claim("pending:b", ttl)).await.unwrap(),
            Claim::Held(ExchangeSlot::Pending)
        );
        exchanges.release("wxa", "s", "pending:b").await.unwrap();
        assert_eq!(
            exchanges.slot("wxa", "s").await.unwrap(),
            Some(ExchangeSlot::Pending),
            "only its owner releases a claim"
        );
        tokio::time::advance(ttl).await;
        assert_eq!(exchanges.slot("wxa", "s").await.unwrap(), None, "expired");

        assert_eq!(
            exchanges
                .record_refusal("wxa", refusal("first", ttl))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            exchanges
                .record_refusal("wxa", refusal("second", ttl))
                .await
                .unwrap(),
            Some("first".into()),
            "the outcome sealed first is what counts"
        );
        assert_eq!(
            exchanges.claim(claim(&mine, ttl)).await.unwrap(),
            Claim::Held(ExchangeSlot::Sealed("first".into()))
        );
    }
}
