//! The budgets' GCRA timestamps (`limit:<budget>:<subject>`), charged by one
//! script on Redis's clock, so that every instance shares them.

use async_trait::async_trait;
use wxlogin_redis::{Keyspace, RedisGuard, scripts::CHARGE_BUDGETS};

use crate::store::{BudgetStore, Charge, ChargeMode, Refused, StoreError};

pub struct RedisBudgets {
    redis: RedisGuard,
    keys: Keyspace,
}

impl RedisBudgets {
    pub fn new(redis: RedisGuard, keys: Keyspace) -> Self {
        RedisBudgets { redis, keys }
    }
}

#[async_trait]
impl BudgetStore for RedisBudgets {
    async fn charge(
        &self,
        mode: ChargeMode,
        charges: &[Charge<'_>],
    ) -> Result<Option<Refused>, StoreError> {
        let mut invocation = CHARGE_BUDGETS.prepare_invoke();
        for charge in charges {
            invocation
                .key(charge.subject.key(&self.keys))
                .arg(charge.emission_us)
                .arg(charge.period_us);
        }
        invocation.arg(mode.as_str());
        let (wait_us, position): (u64, usize) = self
            .redis
            .run(async |conn| invocation.invoke_async(conn).await)
            .await?;
        // Lua counts from 1.
        Ok((wait_us > 0).then(|| Refused {
            index: position.saturating_sub(1),
            wait_us,
        }))
    }

    fn checked_at_claim(&self) -> bool {
        true
    }
}
