//! Where sessions and session keys live: Redis in production (shared by
//! every auth instance), or an in-process store for the single-process
//! setup. Both keep the same promises: a session ends after its idle TTL
//! unless used, and after its absolute lifetime regardless; only the SHA-256
//! of a token is stored.

mod memory;
mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wxlogin_common::{ExposeSecret, SecretString};
use wxlogin_wechat::SessionKey;

pub use self::{memory::MemoryStore, redis::RedisStore};
use crate::{config::SessionPolicy, limit::BudgetCheck, token::Token};

/// The `REDIS_URL` that selects the in-process store.
pub const MEMORY_URL: &str = "memory://";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("a stored session is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl StoreError {
    /// Whether the store could not be reached, as opposed to misbehaving.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Redis(error) => wxlogin_common::redis_guard::is_unavailable(error),
            StoreError::Corrupt(_) => false,
        }
    }
}

/// The hash tag of an app's login keys: its codes' slots and its login
/// budgets (see [`crate::limit`]), which the script that claims a code
/// touches together, so they must share one Redis Cluster hash slot.
pub fn app_tag(appid: &str) -> String {
    format!("{{a:{appid}}}")
}

/// How a code's slot marks an exchange under way; the owner's id follows.
const PENDING: &str = "pending:";
/// How a code's slot marks a sealed outcome; the sealed text follows.
const SEALED: &str = "sealed:";

/// What claiming a code's slot came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller now owns the exchange.
    Owned,
    /// The slot holds another's exchange or its outcome.
    Held(ExchangeSlot),
    /// A login budget has no room: the one at `position` (from 1) has room
    /// again in `wait_us`. Nothing was claimed.
    Refused { position: usize, wait_us: u64 },
}

/// What the store holds for one code's exchange (see
/// [`crate::sealed_outcome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeSlot {
    /// An instance is exchanging the code.
    Pending,
    /// The exchange is over: its sealed outcome.
    Sealed(String),
}

impl ExchangeSlot {
    fn parse(value: String) -> ExchangeSlot {
        match value.strip_prefix(SEALED) {
            Some(sealed) => ExchangeSlot::Sealed(sealed.to_owned()),
            None => ExchangeSlot::Pending,
        }
    }

    /// The value that marks `owner`'s exchange under way.
    pub fn marker(owner: &str) -> String {
        format!("{PENDING}{owner}")
    }
}

/// What a session knows about its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub appid: String,
    pub openid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds after which the session is over, used or not.
    pub absolute_expiry_ms: u64,
    /// Which session_key the login that opened this session received (a
    /// truncated SHA-256, see [`key_fingerprint`]): a newer login replaces
    /// the user's key, and data sealed for this session then can't be read.
    #[serde(default)]
    pub key_fingerprint: String,
    /// The client's User-Agent at login, bounded (see
    /// [`wxlogin_proto::fields::user_agent`]); absent in sessions opened
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client's network at login (see
    /// [`wxlogin_proto::fields::address_prefix`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_prefix: Option<String>,
}

/// How coarsely a session's last use is recorded: a use within this long
/// of the recorded one writes nothing (so `GET /v1/me` stays a read).
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// How long after its recorded last use a user's index keeps a session:
/// past the idle TTL plus the recording's coarseness (and some clock skew
/// between instances), the session is surely over.
pub fn index_keeps(policy: SessionPolicy) -> Duration {
    policy.idle_ttl + LAST_USED_EVERY * 2
}

/// One of a user's live sessions, as the user's list shows it.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// The SHA-256 of its token (see [`Token::digest`]).
    pub digest: String,
    pub record: SessionRecord,
    /// Unix milliseconds, to [`LAST_USED_EVERY`].
    pub last_used_ms: u64,
}

impl SessionSummary {
    /// The session's public id (see [`Token::session_id`]).
    pub fn session_id(&self) -> &str {
        self.digest.get(..SESSION_ID_LEN).unwrap_or(&self.digest)
    }
}

/// Hex digits in a session's public id.
pub const SESSION_ID_LEN: usize = 32;

/// Whether `id` has the shape of a session's public id.
pub fn is_session_id(id: &str) -> bool {
    id.len() == SESSION_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// 64 bits of the SHA-256 of a session_key: enough to tell two keys apart,
/// nothing to learn the key from.
pub fn key_fingerprint(session_key: &SessionKey) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(session_key.expose().as_bytes())[..8])
}

/// The app's access_token as cached for every instance.
#[derive(Clone, Serialize, Deserialize)]
pub struct CachedToken {
    pub token: String,
    /// Unix ms: WeChat stops accepting it.
    pub expires_at_ms: u64,
    /// Unix ms: one instance should fetch a fresh one from now on.
    pub refresh_at_ms: u64,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("refresh_at_ms", &self.refresh_at_ms)
            .finish()
    }
}

/// A login's sealed outcome (see [`crate::sealed_outcome`]), to record in
/// its code's slot for `ttl`.
#[derive(Debug, Clone, Copy)]
pub struct SealedOutcome<'a> {
    pub slot: &'a str,
    pub sealed: &'a str,
    pub ttl: Duration,
}

/// What opening a session found of its user.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// The user service's copy of the user (opaque; see
    /// `wxlogin_common::user_copy`), when the store has one.
    pub copy: Option<Vec<u8>>,
    /// Whether the copy answers the login, which the store journaled.
    pub recorded: bool,
}

/// A live session and how long it has left if unused.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub record: SessionRecord,
    pub expires_in: Duration,
    /// The user service's copy of the session's user (opaque; see
    /// `wxlogin_common::user_copy`), when the store has one.
    pub user_copy: Option<Vec<u8>>,
}

impl LiveSession {
    /// The session as of `now_ms`, just used; `None` once its absolute
    /// lifetime is over.
    fn at(record: SessionRecord, now_ms: u64, policy: SessionPolicy) -> Option<LiveSession> {
        let left = Duration::from_millis(
            record
                .absolute_expiry_ms
                .checked_sub(now_ms)
                .filter(|&left| left > 0)?,
        );
        Some(LiveSession {
            record,
            expires_in: left.min(policy.idle_ttl),
            user_copy: None,
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The session store of this process.
#[derive(Debug, Clone)]
pub enum SessionStore {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl SessionStore {
    /// Redis at `url`, or the in-process store when `url` is [`MEMORY_URL`].
    pub async fn connect(
        url: &SecretString,
        prefix: String,
        policy: SessionPolicy,
    ) -> Result<Self, StoreError> {
        if url.expose_secret() == MEMORY_URL {
            return Ok(SessionStore::Memory(MemoryStore::new(policy)));
        }
        Ok(SessionStore::Redis(
            RedisStore::connect(url, prefix, policy).await?,
        ))
    }

    pub fn policy(&self) -> SessionPolicy {
        match self {
            SessionStore::Redis(store) => store.policy(),
            SessionStore::Memory(store) => store.policy(),
        }
    }

    /// Stores the user's latest session_key, opens a session and records
    /// the login's sealed `outcome` for other submissions of its code, all
    /// atomically. With Redis, the same round trip reads the user service's
    /// copy of the user and, when the copy answers the login
    /// ([`user_copy::answers_login`](wxlogin_common::user_copy::answers_login)),
    /// journals the login for the user service: the caller then answers
    /// from the copy alone. The in-process store has no copies.
    pub async fn create(
        &self,
        token: &Token,
        record: &SessionRecord,
        session_key: &SessionKey,
        outcome: Option<SealedOutcome<'_>>,
    ) -> Result<Opened, StoreError> {
        match self {
            SessionStore::Redis(store) => store.create(token, record, session_key, outcome).await,
            SessionStore::Memory(store) => {
                store.create(token, record, session_key);
                if let Some(outcome) = outcome {
                    store.record_exchange(
                        &record.appid,
                        outcome.slot,
                        outcome.sealed,
                        outcome.ttl,
                        true,
                    );
                }
                Ok(Opened::default())
            }
        }
    }

    /// The session `token` names, if it is live; using it starts its idle
    /// period again.
    pub async fn touch(&self, token: &Token) -> Result<Option<LiveSession>, StoreError> {
        match self {
            SessionStore::Redis(store) => store.touch(token).await,
            SessionStore::Memory(store) => Ok(store.touch(token)),
        }
    }

    /// Ends the session; false when there was none.
    pub async fn remove(&self, token: &Token) -> Result<bool, StoreError> {
        match self {
            SessionStore::Redis(store) => store.remove(token).await,
            SessionStore::Memory(store) => Ok(store.remove(token)),
        }
    }

    /// The live sessions of (appid, openid), newest first.
    pub async fn list(&self, appid: &str, openid: &str) -> Result<Vec<SessionSummary>, StoreError> {
        let mut sessions = match self {
            SessionStore::Redis(store) => store.list(appid, openid).await?,
            SessionStore::Memory(store) => store.list(appid, openid),
        };
        let now = now_unix_ms();
        sessions.retain(|session| session.record.absolute_expiry_ms > now);
        sessions.sort_by_key(|session| std::cmp::Reverse(session.record.created_at_ms));
        Ok(sessions)
    }

    /// Ends the session of (appid, openid) whose public id is `id`, or all
    /// of them: how many live sessions ended.
    pub async fn revoke(
        &self,
        appid: &str,
        openid: &str,
        id: Option<&str>,
    ) -> Result<u32, StoreError> {
        match self {
            SessionStore::Redis(store) => store.revoke(appid, openid, id).await,
            SessionStore::Memory(store) => Ok(store.revoke(appid, openid, id)),
        }
    }

    /// Forgets the user of (appid, openid) (`user_id`), who is being
    /// deleted: every session, the session_key, the index of sessions and
    /// the user service's copy go at once, and no copy of `user_id` can be
    /// written for a day. How many live sessions ended.
    pub async fn forget(&self, appid: &str, openid: &str, user_id: u64) -> Result<u32, StoreError> {
        match self {
            SessionStore::Redis(store) => store.forget(appid, openid, user_id).await,
            SessionStore::Memory(store) => Ok(store.forget(appid, openid)),
        }
    }

    /// The latest session_key of (appid, openid), if one is kept.
    pub async fn session_key(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<SessionKey>, StoreError> {
        match self {
            SessionStore::Redis(store) => store.session_key(appid, openid).await,
            SessionStore::Memory(store) => Ok(store.session_key(appid, openid)),
        }
    }

    /// The app's cached access_token.
    pub async fn access_token(&self, appid: &str) -> Result<Option<CachedToken>, StoreError> {
        match self {
            SessionStore::Redis(store) => store.access_token(appid).await,
            SessionStore::Memory(store) => Ok(store.access_token(appid)),
        }
    }

    /// Caches the app's access_token until it expires.
    pub async fn put_access_token(
        &self,
        appid: &str,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        match self {
            SessionStore::Redis(store) => store.put_access_token(appid, token).await,
            SessionStore::Memory(store) => {
                store.put_access_token(appid, token);
                Ok(())
            }
        }
    }

    /// Drops the cached access_token if it is still `token` (WeChat refused
    /// it); a newer one that another instance cached meanwhile stays.
    pub async fn drop_access_token(&self, appid: &str, token: &str) -> Result<(), StoreError> {
        match self {
            SessionStore::Redis(store) => store.drop_access_token(appid, token).await,
            SessionStore::Memory(store) => {
                store.drop_access_token(appid, token);
                Ok(())
            }
        }
    }

    /// Takes the lock `name` for at most `ttl` (so that a holder that dies
    /// cannot block the others for longer); `None` when someone holds it.
    /// The returned value unlocks it.
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        let holder = format!("{:016x}", rand::random::<u64>());
        let taken = match self {
            SessionStore::Redis(store) => store.try_lock(name, &holder, ttl).await?,
            SessionStore::Memory(store) => store.try_lock(name, &holder, ttl),
        };
        Ok(taken.then_some(holder))
    }

    /// Releases the lock if `holder` still holds it.
    pub async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        match self {
            SessionStore::Redis(store) => store.unlock(name, holder).await,
            SessionStore::Memory(store) => {
                store.unlock(name, holder);
                Ok(())
            }
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            SessionStore::Redis(store) => store.ping().await,
            SessionStore::Memory(_) => Ok(()),
        }
    }

    /// Follows whether Redis answers (its breaker's state); `None` for the
    /// in-process store, which always does.
    pub fn availability(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        match self {
            SessionStore::Redis(store) => Some(store.guard().watch()),
            SessionStore::Memory(_) => None,
        }
    }

    /// Takes the slot of a code of `appid` with `marker` (see
    /// [`ExchangeSlot::marker`]) for `ttl`, unless it holds something, and
    /// only if the login's `budgets` (Redis budgets, see
    /// [`Limiter::login_budgets`](crate::limit::Limiter::login_budgets))
    /// have room: all in one round trip.
    pub async fn claim_exchange(
        &self,
        appid: &str,
        slot: &str,
        marker: &str,
        ttl: Duration,
        budgets: Option<&BudgetCheck>,
    ) -> Result<Claim, StoreError> {
        match self {
            SessionStore::Redis(store) => {
                store
                    .claim_exchange(appid, slot, marker, ttl, budgets)
                    .await
            }
            SessionStore::Memory(store) => {
                Ok(match store.claim_exchange(appid, slot, marker, ttl) {
                    None => Claim::Owned,
                    Some(held) => Claim::Held(held),
                })
            }
        }
    }

    /// What the slot holds; `None` once it is empty (released or expired).
    pub async fn exchange_slot(
        &self,
        appid: &str,
        slot: &str,
    ) -> Result<Option<ExchangeSlot>, StoreError> {
        match self {
            SessionStore::Redis(store) => store.exchange_slot(appid, slot).await,
            SessionStore::Memory(store) => Ok(store.exchange_slot(appid, slot)),
        }
    }

    /// Puts a sealed refusal in the slot for `ttl`, unless an outcome is
    /// already sealed there (by an instance whose exchange outlived its
    /// claim): that one stays, and is answered (`Some`) for the caller to
    /// answer instead. (A session's outcome is recorded by
    /// [`SessionStore::create`].)
    pub async fn record_refusal(
        &self,
        appid: &str,
        slot: &str,
        sealed: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        match self {
            SessionStore::Redis(store) => store.record_refusal(appid, slot, sealed, ttl).await,
            SessionStore::Memory(store) => {
                Ok(store.record_exchange(appid, slot, sealed, ttl, false))
            }
        }
    }

    /// Empties the slot if it still holds `marker`, so that the code can
    /// be tried again.
    pub async fn release_exchange(
        &self,
        appid: &str,
        slot: &str,
        marker: &str,
    ) -> Result<(), StoreError> {
        match self {
            SessionStore::Redis(store) => store.release_exchange(appid, slot, marker).await,
            SessionStore::Memory(store) => {
                store.release_exchange(appid, slot, marker);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_before_the_client_fields_still_reads() {
        let old = r#"{"appid":"wxa","openid":"o1","created_at_ms":1,"absolute_expiry_ms":2,"key_fingerprint":"f"}"#;
        let record: SessionRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.user_agent, None);
        assert_eq!(record.address_prefix, None);
        let written = serde_json::to_string(&record).unwrap();
        assert!(!written.contains("user_agent"), "{written}");
    }

    #[test]
    fn session_ids_are_32_lowercase_hex_digits() {
        let token = Token::generate().unwrap();
        assert!(is_session_id(&token.session_id()));
        for bad in ["", "abc", &"A".repeat(32), &"0".repeat(33), &"g".repeat(32)] {
            assert!(!is_session_id(bad), "{bad}");
        }
    }
}
