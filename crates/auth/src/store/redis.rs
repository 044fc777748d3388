//! Sessions and session keys in Redis, shared by every auth instance.
//!
//! Keys (all under the configured prefix):
//! - `session:<sha256(token) hex>` → the session as JSON, expiring after the
//!   idle TTL; every use moves the expiry (one `GETEX` round trip). The
//!   absolute lifetime is stored inside and checked on every use.
//! - `session_key:<appid>:<openid>` → the user's latest WeChat session_key,
//!   kept as long as a session can live. Nothing outside this service reads it.
//!
//! The raw token is never written to Redis, as a key or as a value.

use std::time::Duration;

use redis::{AsyncCommands, aio::ConnectionManager, aio::ConnectionManagerConfig};
use wxlogin_common::{ExposeSecret, SecretString, user_copy};
use wxlogin_wechat::SessionKey;

use super::{CachedToken, LiveSession, SessionRecord, StoreError, now_unix_ms};

/// GETEX the session, then GET `<prefix>user:<appid>:<openid>` it names.
static TOUCH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local body = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
          if not body then return {} end
          local ok, session = pcall(cjson.decode, body)
          if not ok or type(session) ~= 'table' then return {body} end
          local user = redis.call('GET', ARGV[2] .. tostring(session.appid) .. ':' .. tostring(session.openid))
          if user then return {body, user} end
          return {body}",
    )
});
use crate::{config::SessionPolicy, token::Token};

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    policy: SessionPolicy,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis. The connection is multiplexed and reconnects by
    /// itself; one per process is enough.
    pub async fn connect(
        url: &SecretString,
        prefix: String,
        policy: SessionPolicy,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url.expose_secret())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(RedisStore {
            conn,
            prefix,
            policy,
        })
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    /// The shared connection, for the rate limiter's keys (see
    /// [`crate::limit`]), which live beside the sessions.
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn session_entry(&self, token: &Token) -> String {
        format!("{}session:{}", self.prefix, token.digest())
    }

    fn session_key_key(&self, appid: &str, openid: &str) -> String {
        format!("{}session_key:{appid}:{openid}", self.prefix)
    }

    /// Stores the user's latest session_key and opens a session, in one
    /// atomic round trip, which also reads the user service's cached copy of
    /// the user (see [`SessionStore::create`](super::SessionStore::create)).
    pub async fn create(
        &self,
        token: &Token,
        record: &SessionRecord,
        session_key: &SessionKey,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let body = serde_json::to_string(record)?;
        let mut conn = self.conn.clone();
        let (user,): (Option<Vec<u8>>,) = redis::pipe()
            .atomic()
            .set_ex(
                self.session_key_key(&record.appid, &record.openid),
                session_key.expose(),
                self.policy.max_lifetime.as_secs(),
            )
            .ignore()
            .set_ex(
                self.session_entry(token),
                body,
                self.policy.idle_ttl.as_secs(),
            )
            .ignore()
            .get(user_copy::key(&self.prefix, &record.appid, &record.openid))
            .query_async(&mut conn)
            .await?;
        Ok(user)
    }

    /// The session `token` names, if it is live; using it starts its idle
    /// period again.
    pub async fn touch(&self, token: &Token) -> Result<Option<LiveSession>, StoreError> {
        let key = self.session_entry(token);
        let mut conn = self.conn.clone();
        // One round trip: the session (its idle period restarted) and the
        // user service's cached copy of its user, whose key the session
        // names. (The second key is computed inside the script, which a
        // Redis Cluster would refuse; wxlogin uses one Redis.)
        let found: Option<Vec<Vec<u8>>> = TOUCH
            .key(&key)
            .arg(self.policy.idle_ttl.as_secs())
            .arg(user_copy::key_prefix(&self.prefix))
            .invoke_async(&mut conn)
            .await?;
        let Some(mut found) = found.filter(|found| !found.is_empty()) else {
            return Ok(None);
        };
        let user = (found.len() > 1).then(|| found.swap_remove(1));
        let record: SessionRecord = serde_json::from_slice(&found[0])?;
        let live = LiveSession::at(record, now_unix_ms(), self.policy);
        match live {
            Some(live) => Ok(Some(LiveSession { user, ..live })),
            None => {
                let _: () = conn.del(&key).await?;
                Ok(None)
            }
        }
    }

    /// Ends the session; false when there was none.
    pub async fn remove(&self, token: &Token) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: u64 = conn.del(self.session_entry(token)).await?;
        Ok(removed > 0)
    }

    pub async fn session_key(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<SessionKey>, StoreError> {
        let mut conn = self.conn.clone();
        let key: Option<String> = conn.get(self.session_key_key(appid, openid)).await?;
        Ok(key.map(SessionKey::new))
    }

    fn access_token_key(&self, appid: &str) -> String {
        format!("{}access_token:{appid}", self.prefix)
    }

    pub async fn access_token(&self, appid: &str) -> Result<Option<CachedToken>, StoreError> {
        let mut conn = self.conn.clone();
        let body: Option<String> = conn.get(self.access_token_key(appid)).await?;
        Ok(body.map(|body| serde_json::from_str(&body)).transpose()?)
    }

    pub async fn put_access_token(
        &self,
        appid: &str,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        let ttl_ms = token.expires_at_ms.saturating_sub(now_unix_ms()).max(1);
        let mut conn = self.conn.clone();
        let _: () = conn
            .pset_ex(
                self.access_token_key(appid),
                serde_json::to_string(token)?,
                ttl_ms,
            )
            .await?;
        Ok(())
    }

    pub async fn drop_access_token(&self, appid: &str, token: &str) -> Result<(), StoreError> {
        // Compare and delete in one step: another instance may have cached
        // a fresh token since this one saw the refused one.
        let script = redis::Script::new(
            r"local body = redis.call('GET', KEYS[1])
              if body and cjson.decode(body).token == ARGV[1] then
                return redis.call('DEL', KEYS[1])
              end
              return 0",
        );
        let mut conn = self.conn.clone();
        let _: i64 = script
            .key(self.access_token_key(appid))
            .arg(token)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    fn lock_key(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }

    pub async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.lock_key(name))
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await?;
        Ok(taken.is_some())
    }

    pub async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let script = redis::Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                return redis.call('DEL', KEYS[1])
              end
              return 0",
        );
        let mut conn = self.conn.clone();
        let _: i64 = script
            .key(self.lock_key(name))
            .arg(holder)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(())
    }
}
