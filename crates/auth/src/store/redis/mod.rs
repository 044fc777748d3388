//! The stores in Redis, shared by every auth instance. Keys and scripts are
//! `wxlogin_redis`'s ([`Keyspace`], `wxlogin_redis::scripts`); every
//! command goes through the process's [`RedisGuard`], so it fails at once
//! while Redis is known to be down.
//!
//! On a Redis Cluster, opening a session takes up to three round trips
//! instead of one: the code's slot (the app's hash tag) and the login
//! journal (its own key) are written after the script on the user's keys.
//! The raw token is never written to Redis, as a key or as a value.

mod access_tokens;
mod budgets;
mod exchanges;
mod sessions;

use std::{sync::Arc, time::Duration};

use wxlogin_common::clock::Clock;
use wxlogin_redis::{Keyspace, RedisGuard};

use super::{SessionPolicy, Stores};

/// The stores on `redis`, under `prefix`.
pub fn stores(redis: RedisGuard, prefix: &str, policy: SessionPolicy, clock: Clock) -> Stores {
    let keys = Keyspace::new(prefix);
    Stores {
        sessions: Arc::new(sessions::RedisSessions::new(
            redis.clone(),
            keys.clone(),
            policy,
            clock.clone(),
        )),
        exchanges: Arc::new(exchanges::RedisExchanges::new(redis.clone(), keys.clone())),
        access_tokens: Arc::new(access_tokens::RedisAccessTokens::new(
            redis.clone(),
            keys.clone(),
            clock,
        )),
        budgets: Arc::new(budgets::RedisBudgets::new(redis.clone(), keys)),
        policy,
        redis: Some(redis),
    }
}

/// Whole milliseconds, at least 1 (Redis refuses a TTL of 0).
fn millis(duration: Duration) -> u64 {
    wxlogin_common::clock::millis(duration).max(1)
}
