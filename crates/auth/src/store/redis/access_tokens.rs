//! The apps' access_tokens (`access_token:<appid>`, JSON) and their refresh
//! locks (`lock:<name>`).

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use wxlogin_common::clock::Clock;
use wxlogin_redis::{
    Keyspace, RedisGuard,
    scripts::{DELETE_IF_EQUAL, DROP_ACCESS_TOKEN},
};

use super::millis;
use crate::store::{AccessTokenCache, CachedToken, StoreError};

pub struct RedisAccessTokens {
    redis: RedisGuard,
    keys: Keyspace,
    clock: Clock,
}

impl RedisAccessTokens {
    pub fn new(redis: RedisGuard, keys: Keyspace, clock: Clock) -> Self {
        RedisAccessTokens { redis, keys, clock }
    }
}

#[async_trait]
impl AccessTokenCache for RedisAccessTokens {
    async fn get(&self, appid: &str) -> Result<Option<CachedToken>, StoreError> {
        let key = self.keys.access_token(appid);
        let body: Option<String> = self.redis.run(async |conn| conn.get(&key).await).await?;
        Ok(body.map(|body| serde_json::from_str(&body)).transpose()?)
    }

    async fn put(&self, appid: &str, token: &CachedToken) -> Result<(), StoreError> {
        let ttl_ms = token
            .expires_at_ms
            .saturating_sub(self.clock.unix_ms())
            .max(1);
        let key = self.keys.access_token(appid);
        let body = serde_json::to_string(token)?;
        let _: () = self
            .redis
            .run(async |conn| conn.pset_ex(&key, &body, ttl_ms).await)
            .await?;
        Ok(())
    }

    async fn drop_if(&self, appid: &str, token: &str) -> Result<(), StoreError> {
        // Compare and delete in one step: another instance may have cached
        // a fresh token since this one saw the refused one.
        let key = self.keys.access_token(appid);
        let _: i64 = self
            .redis
            .run(async |conn| {
                DROP_ACCESS_TOKEN
                    .key(&key)
                    .arg(token)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys.lock(name);
        let taken: Option<String> = self
            .redis
            .run(async |conn| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(conn)
                    .await
            })
            .await?;
        Ok(taken.is_some())
    }

    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let key = self.keys.lock(name);
        let _: i64 = self
            .redis
            .run(async |conn| {
                DELETE_IF_EQUAL
                    .key(&key)
                    .arg(holder)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(())
    }
}
