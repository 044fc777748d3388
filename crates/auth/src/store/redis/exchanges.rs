//! Codes' exchanges (`login:{a:<appid>}:<slot>`): `pending:<owner>` while
//! one instance exchanges the code (set with NX, expiring a little after
//! the exchange must be over), then `sealed:<base64>`, the login's outcome
//! encrypted under a key derived from the code, for as long as a code
//! lives. `<slot>` is a SHA-256 of the code (see
//! [`crate::sealed_outcome`]); neither the code nor the outcome can be read
//! from the entry. The claim checks the login budgets, which carry the
//! app's hash tag too, in the same script.

use async_trait::async_trait;
use redis::AsyncCommands;
use wxlogin_redis::{
    Keyspace, RedisGuard,
    scripts::{CLAIM_CODE, DELETE_IF_EQUAL, RECORD_REFUSAL},
};

use super::millis;
use crate::store::{
    Claim, CodeClaim, CodeExchanges, ExchangeSlot, SEALED, SealedOutcome, StoreError,
};

pub struct RedisExchanges {
    redis: RedisGuard,
    keys: Keyspace,
}

impl RedisExchanges {
    pub fn new(redis: RedisGuard, keys: Keyspace) -> Self {
        RedisExchanges { redis, keys }
    }
}

#[async_trait]
impl CodeExchanges for RedisExchanges {
    async fn claim(&self, claim: CodeClaim<'_>) -> Result<Claim, StoreError> {
        let key = self.keys.login_slot(claim.appid, claim.slot);
        let answer: Vec<redis::Value> = self
            .redis
            .run(async |conn| {
                let mut invocation = CLAIM_CODE.key(&key);
                for charge in claim.budgets {
                    invocation.key(charge.subject.key(&self.keys));
                }
                invocation
                    .arg(claim.marker)
                    .arg(millis(claim.ttl))
                    .arg(claim.budgets.len());
                for charge in claim.budgets {
                    invocation.arg(charge.emission_us).arg(charge.period_us);
                }
                invocation.invoke_async(conn).await
            })
            .await?;
        let text = |value: Option<&redis::Value>| -> Option<String> {
            redis::FromRedisValue::from_redis_value_ref(value?).ok()
        };
        let number = |value: Option<&redis::Value>| -> Option<u64> {
            redis::FromRedisValue::from_redis_value_ref(value?).ok()
        };
        match text(answer.first()).as_deref() {
            Some("claimed") => Ok(Claim::Owned),
            Some("held") => Ok(Claim::Held(ExchangeSlot::parse(
                text(answer.get(1)).unwrap_or_default(),
            ))),
            Some("refused") => Ok(Claim::Refused {
                wait_us: number(answer.get(1)).unwrap_or(1),
                position: number(answer.get(2))
                    .and_then(|position| usize::try_from(position).ok())
                    .unwrap_or(1),
            }),
            _ => Err(StoreError::Redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the code's claim script answered something unexpected",
            )))),
        }
    }

    async fn slot(&self, appid: &str, slot: &str) -> Result<Option<ExchangeSlot>, StoreError> {
        let key = self.keys.login_slot(appid, slot);
        let current: Option<String> = self.redis.run(async |conn| conn.get(&key).await).await?;
        Ok(current.map(ExchangeSlot::parse))
    }

    async fn record_refusal(
        &self,
        appid: &str,
        refusal: SealedOutcome<'_>,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys.login_slot(appid, refusal.slot);
        let value = ExchangeSlot::sealed_value(refusal.sealed);
        let kept: Option<String> = self
            .redis
            .run(async |conn| {
                RECORD_REFUSAL
                    .key(&key)
                    .arg(&value)
                    .arg(millis(refusal.ttl))
                    .arg(SEALED)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(kept.and_then(|kept| match ExchangeSlot::parse(kept) {
            ExchangeSlot::Sealed(sealed) => Some(sealed),
            ExchangeSlot::Pending => None,
        }))
    }

    async fn release(&self, appid: &str, slot: &str, marker: &str) -> Result<(), StoreError> {
        let key = self.keys.login_slot(appid, slot);
        let _: i64 = self
            .redis
            .run(async |conn| {
                DELETE_IF_EQUAL
                    .key(&key)
                    .arg(marker)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(())
    }
}
