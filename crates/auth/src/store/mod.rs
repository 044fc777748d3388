//! Where the auth service keeps what outlives a request, split by concern
//! into narrow traits, each with a Redis implementation (shared by every
//! auth instance; [`redis`]) and an in-process one (the single-process
//! setup; [`memory`]):
//!
//! - [`Sessions`]: sessions, each user's index of them, the user's latest
//!   session_key, and forgetting a user;
//! - [`CodeExchanges`]: the one exchange of each wx.login code among all
//!   instances, and its sealed outcome;
//! - [`AccessTokenCache`]: the apps' access_tokens and their refresh lock;
//! - [`BudgetStore`]: the rate limiter's budgets.
//!
//! Both implementations keep the same promises: a session ends after its
//! idle TTL unless used, and after its absolute lifetime regardless; only
//! the SHA-256 of a token is stored. Time comes from the [`Clock`] they are
//! given. Key formats and scripts are `wxlogin_redis`'s.

pub mod memory;
pub mod model;
pub mod redis;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use wxlogin_common::{ExposeSecret, SecretString, clock::Clock};
use wxlogin_provider::SessionSecret;
use wxlogin_redis::RedisGuard;

pub use model::*;

use crate::token::Token;

/// The `REDIS_URL` that selects the in-process stores.
pub const MEMORY_URL: &str = "memory://";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("a stored value is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl StoreError {
    /// Whether the store could not be reached, as opposed to misbehaving.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Redis(error) => wxlogin_redis::is_unavailable(error),
            StoreError::Corrupt(_) => false,
        }
    }
}

/// Sessions and what belongs to a user's sessions.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Stores the user's latest session_key, opens a session and records
    /// the login's sealed `outcome` for other submissions of its code, all
    /// atomically. With Redis, the same round trip reads the user service's
    /// copy of the user and, when the copy answers the login
    /// (`wxlogin_userdata::copy::answers_login`), journals
    /// the login for the user service: the caller then answers from the
    /// copy alone. The in-process store has no copies.
    async fn open(&self, session: NewSession<'_>) -> Result<Opened, StoreError>;

    /// The session `token` names, if it is live; using it starts its idle
    /// period again.
    async fn touch(&self, token: &Token) -> Result<Option<LiveSession>, StoreError>;

    /// Ends the session; false when there was none.
    async fn remove(&self, token: &Token) -> Result<bool, StoreError>;

    /// The sessions of (appid, openid) the store still holds, in no order
    /// (see [`live_sessions`] for the list users see).
    async fn list(&self, appid: &str, openid: &str) -> Result<Vec<SessionSummary>, StoreError>;

    /// Ends the session of (appid, openid) whose public id is `id`, or all
    /// of them: how many live sessions ended.
    async fn revoke(&self, appid: &str, openid: &str, id: Option<&str>) -> Result<u32, StoreError>;

    /// Forgets the user of (appid, openid) (`user_id`), who is being
    /// deleted: every session, the session_key, the index of sessions and
    /// the user service's copy go, and no copy of `user_id` can be written
    /// for a day. How many live sessions ended.
    async fn forget(&self, appid: &str, openid: &str, user_id: u64) -> Result<u32, StoreError>;

    /// The latest session_key of (appid, openid), if one is kept.
    async fn session_key(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<SessionSecret>, StoreError>;
}

/// The live sessions of (appid, openid) at `now_ms`, newest first.
pub async fn live_sessions(
    sessions: &dyn Sessions,
    appid: &str,
    openid: &str,
    now_ms: u64,
) -> Result<Vec<SessionSummary>, StoreError> {
    let mut listed = sessions.list(appid, openid).await?;
    listed.retain(|session| session.record.absolute_expiry_ms > now_ms);
    listed.sort_by_key(|session| std::cmp::Reverse(session.record.created_at_ms));
    Ok(listed)
}

/// The exchange of each wx.login code, shared by every instance: one
/// claims it, the others wait for its sealed outcome.
#[async_trait]
pub trait CodeExchanges: Send + Sync {
    /// Takes the code's slot with the claim's marker for its TTL, unless
    /// the slot holds something, and only if the login's budgets have room:
    /// all in one round trip.
    async fn claim(&self, claim: CodeClaim<'_>) -> Result<Claim, StoreError>;

    /// What the slot holds; `None` once it is empty (released or expired).
    async fn slot(&self, appid: &str, slot: &str) -> Result<Option<ExchangeSlot>, StoreError>;

    /// Puts a sealed refusal in its slot for its TTL, unless an outcome is
    /// already sealed there (by an instance whose exchange outlived its
    /// claim): that one stays, and is answered (`Some`) for the caller to
    /// answer instead. (A session's outcome is recorded by
    /// [`Sessions::open`].)
    async fn record_refusal(
        &self,
        appid: &str,
        refusal: SealedOutcome<'_>,
    ) -> Result<Option<String>, StoreError>;

    /// Empties the slot if it still holds `marker`, so that the code can
    /// be tried again.
    async fn release(&self, appid: &str, slot: &str, marker: &str) -> Result<(), StoreError>;
}

/// The apps' access_tokens as every instance shares them, and the lock
/// that lets one instance at a time refresh one.
#[async_trait]
pub trait AccessTokenCache: Send + Sync {
    /// The app's cached access_token.
    async fn get(&self, appid: &str) -> Result<Option<CachedToken>, StoreError>;

    /// Caches the app's access_token until it expires.
    async fn put(&self, appid: &str, token: &CachedToken) -> Result<(), StoreError>;

    /// Drops the cached access_token if it is still `token` (WeChat refused
    /// it); a newer one that another instance cached meanwhile stays.
    async fn drop_if(&self, appid: &str, token: &str) -> Result<(), StoreError>;

    /// Takes the lock `name` for `holder` for at most `ttl` (so that a
    /// holder that dies cannot block the others for longer); false when
    /// someone holds it.
    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Releases the lock if `holder` still holds it.
    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}

/// The rate limiter's budgets (GCRA: one timestamp per budget).
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Checks or charges (as `mode` says) every budget of `charges` at
    /// once: the one that refuses longest, if any.
    async fn charge(
        &self,
        mode: ChargeMode,
        charges: &[Charge<'_>],
    ) -> Result<Option<Refused>, StoreError>;

    /// Whether [`CodeExchanges::claim`] checks a login's budgets in the
    /// round trip that claims its code (Redis); else they are checked
    /// before, on their own.
    fn checked_at_claim(&self) -> bool;
}

/// The stores of this process, by concern. Cheap to clone.
#[derive(Clone)]
pub struct Stores {
    pub sessions: Arc<dyn Sessions>,
    pub exchanges: Arc<dyn CodeExchanges>,
    pub access_tokens: Arc<dyn AccessTokenCache>,
    pub budgets: Arc<dyn BudgetStore>,
    /// How long the sessions live.
    pub policy: SessionPolicy,
    /// The Redis connection behind them, for health reporting; `None` for
    /// the in-process stores, which always answer.
    pub redis: Option<RedisGuard>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Redis at `url`, or the in-process stores when `url` is
    /// [`MEMORY_URL`].
    pub async fn connect(
        url: &SecretString,
        prefix: &str,
        policy: SessionPolicy,
        clock: Clock,
    ) -> Result<Stores, StoreError> {
        if url.expose_secret() == MEMORY_URL {
            return Ok(memory::stores(policy, clock));
        }
        let redis = RedisGuard::connect(url.expose_secret()).await?;
        Ok(redis::stores(redis, prefix, policy, clock))
    }

    /// Whether the stores answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.redis {
            Some(redis) => Ok(redis.ping().await?),
            None => Ok(()),
        }
    }

    /// Follows whether Redis answers (its breaker's state); `None` for the
    /// in-process stores, which always do.
    pub fn availability(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.redis.as_ref().map(RedisGuard::watch)
    }
}
