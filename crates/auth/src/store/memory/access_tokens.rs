//! The apps' access_tokens and refresh locks, in this process.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use tokio::time::Instant;
use wxlogin_common::clock::Clock;

use super::lock;
use crate::store::{AccessTokenCache, CachedToken, StoreError};

pub struct MemoryAccessTokens {
    clock: Clock,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By appid.
    tokens: HashMap<String, CachedToken>,
    /// By name: holder and expiry.
    locks: HashMap<String, (String, Instant)>,
}

impl MemoryAccessTokens {
    pub fn new(clock: Clock) -> Self {
        MemoryAccessTokens {
            clock,
            state: Mutex::default(),
        }
    }
}

#[async_trait]
impl AccessTokenCache for MemoryAccessTokens {
    async fn get(&self, appid: &str) -> Result<Option<CachedToken>, StoreError> {
        let now = self.clock.unix_ms();
        Ok(lock(&self.state)
            .tokens
            .get(appid)
            .filter(|token| token.expires_at_ms > now)
            .cloned())
    }

    async fn put(&self, appid: &str, token: &CachedToken) -> Result<(), StoreError> {
        lock(&self.state)
            .tokens
            .insert(appid.to_owned(), token.clone());
        Ok(())
    }

    async fn drop_if(&self, appid: &str, token: &str) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if state
            .tokens
            .get(appid)
            .is_some_and(|cached| cached.token == token)
        {
            state.tokens.remove(appid);
        }
        Ok(())
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        if state
            .locks
            .get(name)
            .is_some_and(|(_, expiry)| *expiry > now)
        {
            return Ok(false);
        }
        state
            .locks
            .insert(name.to_owned(), (holder.to_owned(), now + ttl));
        Ok(true)
    }

    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if state
            .locks
            .get(name)
            .is_some_and(|(current, _)| current == holder)
        {
            state.locks.remove(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at_ms: u64) -> CachedToken {
        CachedToken {
            token: "t1".into(),
            expires_at_ms,
            refresh_at_ms: expires_at_ms,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_served_until_it_expires_and_dropped_only_if_unchanged() {
        let clock = Clock::following_tokio();
        let tokens = MemoryAccessTokens::new(clock.clone());
        tokens
            .put("wxa", &token(clock.unix_ms() + 1_000))
            .await
            .unwrap();
        tokens.drop_if("wxa", "another").await.unwrap();
        assert_eq!(tokens.get("wxa").await.unwrap().unwrap().token, "t1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(tokens.get("wxa").await.unwrap().is_none(), "expired");

        tokens
            .put("wxa", &token(clock.unix_ms() + 1_000))
            .await
            .unwrap();
        tokens.drop_if("wxa", "t1").await.unwrap();
        assert!(tokens.get("wxa").await.unwrap().is_none(), "dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_is_held_until_released_or_expired() {
        let tokens = MemoryAccessTokens::new(Clock::following_tokio());
        let ttl = Duration::from_secs(15);
        assert!(tokens.try_lock("n", "a", ttl).await.unwrap());
        assert!(!tokens.try_lock("n", "b", ttl).await.unwrap());
        tokens.unlock("n", "b").await.unwrap();
        assert!(
            !tokens.try_lock("n", "b", ttl).await.unwrap(),
            "not b's to release"
        );
        tokens.unlock("n", "a").await.unwrap();
        assert!(tokens.try_lock("n", "b", ttl).await.unwrap());
        tokio::time::advance(ttl).await;
        assert!(
            tokens.try_lock("n", "c", ttl).await.unwrap(),
            "a dead holder's lock expires"
        );
    }
}
