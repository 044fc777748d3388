//! The apps' access_tokens, shared by every auth instance through the store.
//!
//! WeChat gives each app one valid access_token at a time, and refreshing it
//! from several instances on their own knocks them out (40001). So:
//! - one cache for all instances (Redis), read on every use;
//! - refreshed ahead of expiry by exactly one instance at a time: a lock with
//!   an expiry (a holder that dies cannot block the others for longer), and
//!   the others keep serving the current token meanwhile;
//! - a cold or expired cache is filled by one fetch: the other callers, in
//!   this instance and in others, wait for it rather than fetch too;
//! - when WeChat refuses the token (40001 / 40014 / 42001) the caller renews
//!   it once and retries once (`wxlogin_wechat::MiniProgram` does, through
//!   the [`AccessTokenSource`] this lends it).
//!
//! Login never depends on any of this.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use wxlogin_provider::ProviderError;
use wxlogin_wechat::{
    AccessToken, AccessTokenSource, AppCredentials, Client as Wechat, IssuedToken,
};

use wxlogin_common::clock::Clock;

use crate::{
    error::AuthError,
    store::{AccessTokenCache, CachedToken},
};

/// Refresh this long before WeChat's expiry.
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// A refresh lock outlives one WeChat call with margin.
const LOCK_TTL: Duration = Duration::from_secs(15);
/// How often a caller waiting for another's fetch looks again.
const POLL: Duration = Duration::from_millis(25);

/// Where fresh tokens come from: WeChat's `stable_token` (a seam, so that
/// the refresh can be tested on paused time).
#[async_trait]
pub trait TokenIssuer: Send + Sync {
    /// The app's current token (a new one when `force_refresh`).
    async fn issue(
        &self,
        app: &AppCredentials,
        force_refresh: bool,
    ) -> Result<IssuedToken, wxlogin_wechat::Error>;
}

#[async_trait]
impl TokenIssuer for Wechat {
    async fn issue(
        &self,
        app: &AppCredentials,
        force_refresh: bool,
    ) -> Result<IssuedToken, wxlogin_wechat::Error> {
        self.stable_token(app, force_refresh).await
    }
}

#[derive(Clone)]
pub struct AccessTokens {
    store: Arc<dyn AccessTokenCache>,
    clock: Clock,
    issuer: Arc<dyn TokenIssuer>,
    /// One fetch at a time per app within this instance.
    local: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// How long a caller waits for someone else's fetch before giving up.
    wait: Duration,
}

fn lock_name(appid: &str) -> String {
    format!("access_token_refresh:{appid}")
}

impl AccessTokens {
    pub fn new(
        store: Arc<dyn AccessTokenCache>,
        issuer: Arc<dyn TokenIssuer>,
        wechat_timeout: Duration,
        clock: Clock,
    ) -> Self {
        AccessTokens {
            store,
            clock,
            issuer,
            local: Arc::default(),
            wait: wechat_timeout + LOCK_TTL,
        }
    }

    /// A token WeChat should accept now.
    pub async fn get(&self, app: &AppCredentials) -> Result<AccessToken, AuthError> {
        let now = self.clock.unix_ms();
        if let Some(cached) = self.store.get(&app.appid).await? {
            if now >= cached.refresh_at_ms && now < cached.expires_at_ms {
                self.refresh_in_background(app);
            }
            if now < cached.expires_at_ms {
                return Ok(AccessToken::new(cached.token));
            }
        }
        self.fetch(app, None).await
    }

    /// A token other than `refused`, which WeChat just refused.
    pub async fn renew(
        &self,
        app: &AppCredentials,
        refused: &AccessToken,
    ) -> Result<AccessToken, AuthError> {
        tracing::warn!(appid = %app.appid, "WeChat refused the cached access_token: renewing it");
        self.store.drop_if(&app.appid, refused.expose()).await?;
        self.fetch(app, Some(refused.expose())).await
    }

    /// One instance refreshes ahead of expiry; the caller goes on with the
    /// current token.
    fn refresh_in_background(&self, app: &AppCredentials) {
        // Every call in the refresh window lands here: while this instance
        // is already fetching for the app, there is nothing to start.
        let Ok(one_at_a_time) = self.gate(&app.appid).try_lock_owned() else {
            return;
        };
        let this = self.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _one_at_a_time = one_at_a_time;
            let name = lock_name(&app.appid);
            let Ok(Some(holder)) = this.try_lock(&name).await else {
                return; // another instance is at it
            };
            // Another instance may have refreshed the token (and let go of
            // the lock) between this caller's read and its lock: refresh
            // only what is still due.
            let due = match this.store.get(&app.appid).await {
                Ok(Some(cached)) => this.clock.unix_ms() >= cached.refresh_at_ms,
                Ok(None) => true,
                Err(_) => false,
            };
            if due && let Err(error) = this.fetch_and_cache(&app, None).await {
                tracing::warn!(appid = %app.appid, %error, "refreshing the access_token ahead of expiry failed");
            }
            drop(this.store.unlock(&name, &holder).await);
        });
    }

    /// Takes the refresh lock `name` for [`LOCK_TTL`]: the holder's value
    /// that unlocks it, or `None` when someone holds it.
    async fn try_lock(&self, name: &str) -> Result<Option<String>, AuthError> {
        let holder = format!("{:016x}", rand::random::<u64>());
        let taken = self.store.try_lock(name, &holder, LOCK_TTL).await?;
        Ok(taken.then_some(holder))
    }

    /// What lets one fetch at a time per app run in this instance.
    fn gate(&self, appid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        local.entry(appid.to_owned()).or_default().clone()
    }

    /// Fills an empty or refused cache with one fetch across all instances.
    async fn fetch(
        &self,
        app: &AppCredentials,
        refused: Option<&str>,
    ) -> Result<AccessToken, AuthError> {
        let _one_at_a_time = self.gate(&app.appid).lock_owned().await;
        let name = lock_name(&app.appid);
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            // Someone may have filled the cache while this caller waited.
            if let Some(cached) = self.store.get(&app.appid).await?
                && self.clock.unix_ms() < cached.expires_at_ms
                && refused != Some(cached.token.as_str())
            {
                return Ok(AccessToken::new(cached.token));
            }
            if let Some(holder) = self.try_lock(&name).await? {
                let fetched = self.fetch_and_cache(app, refused).await;
                drop(self.store.unlock(&name, &holder).await);
                return fetched;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(wechat(wxlogin_wechat::Error::Timeout));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn fetch_and_cache(
        &self,
        app: &AppCredentials,
        refused: Option<&str>,
    ) -> Result<AccessToken, AuthError> {
        let fetched = self.fetch_and_cache_once(app, refused).await;
        let outcome = match &fetched {
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        metrics::counter!(
            wxlogin_common::metrics::name::ACCESS_TOKEN_REFRESHES,
            "appid" => app.appid.clone(),
            "outcome" => outcome
        )
        .increment(1);
        fetched
    }

    async fn fetch_and_cache_once(
        &self,
        app: &AppCredentials,
        refused: Option<&str>,
    ) -> Result<AccessToken, AuthError> {
        let mut issued = self.issuer.issue(app, false).await.map_err(wechat)?;
        if refused == Some(issued.token.expose()) {
            // stable_token hands out the same token while WeChat thinks it
            // valid; we know better: force a new one (rate-limited by WeChat,
            // so only here).
            issued = self.issuer.issue(app, true).await.map_err(wechat)?;
        }
        let now = self.clock.unix_ms();
        let lifetime = u64::try_from(issued.expires_in.as_millis()).unwrap_or(u64::MAX);
        let ahead = u64::try_from(REFRESH_AHEAD.as_millis()).unwrap_or(0);
        let cached = CachedToken {
            token: issued.token.expose().to_owned(),
            expires_at_ms: now.saturating_add(lifetime),
            // Refresh ahead of expiry, but not in a loop when WeChat hands
            // back a token that is already close to it.
            refresh_at_ms: now.saturating_add(lifetime.saturating_sub(ahead).max(lifetime / 2)),
        };
        self.store.put(&app.appid, &cached).await?;
        tracing::info!(appid = %app.appid, expires_in = issued.expires_in.as_secs(), "access_token fetched");
        Ok(issued.token)
    }
}

/// A failure of WeChat's token endpoint, as every WeChat failure reads.
fn wechat(error: wxlogin_wechat::Error) -> AuthError {
    AuthError::Provider(error.into())
}

/// What WeChat's calls that take a token borrow; a failure of the cache is
/// passed through to the core as its own.
#[async_trait]
impl AccessTokenSource for AccessTokens {
    async fn token(&self, app: &AppCredentials) -> Result<AccessToken, ProviderError> {
        self.get(app).await.map_err(lend)
    }

    async fn renew(
        &self,
        app: &AppCredentials,
        refused: &AccessToken,
    ) -> Result<AccessToken, ProviderError> {
        AccessTokens::renew(self, app, refused).await.map_err(lend)
    }
}

fn lend(error: AuthError) -> ProviderError {
    match error {
        AuthError::Provider(error) => error,
        own => ProviderError::host(wxlogin_wechat::NAME, own),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::store::memory::MemoryAccessTokens;

    /// Tokens that live `lifetime`, counted.
    struct Counting {
        issued: AtomicU32,
        lifetime: Duration,
    }

    #[async_trait]
    impl TokenIssuer for Counting {
        async fn issue(
            &self,
            _app: &AppCredentials,
            _force_refresh: bool,
        ) -> Result<IssuedToken, wxlogin_wechat::Error> {
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            // WeChat takes a while.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(IssuedToken {
                token: AccessToken::new(format!("token-{n}")),
                expires_in: self.lifetime,
            })
        }
    }

    /// One instance refreshes the token ahead of expiry while every caller,
    /// on every instance, goes on with the current one.
    #[tokio::test(start_paused = true)]
    async fn one_instance_refreshes_ahead_of_expiry_and_nobody_waits_for_it() {
        // Arrange: two instances sharing one cache; tokens live 6 s, so a
        // refresh is due after 3 s.
        let clock = Clock::following_tokio();
        let cache: Arc<dyn AccessTokenCache> = Arc::new(MemoryAccessTokens::new(clock.clone()));
        let issuer = Arc::new(Counting {
            issued: AtomicU32::new(0),
            lifetime: Duration::from_secs(6),
        });
        let instance = || {
            AccessTokens::new(
                cache.clone(),
                issuer.clone(),
                Duration::from_secs(1),
                clock.clone(),
            )
        };
        let (first, second) = (instance(), instance());
        let app = AppCredentials::new("wxa", "secret");
        let cold = first.get(&app).await.unwrap();
        assert_eq!(cold.expose(), "token-1");

        // Act: ten calls on both instances inside the refresh window.
        tokio::time::advance(Duration::from_millis(3_200)).await;
        let calls = (0..10).map(|i| {
            let instance = if i % 2 == 0 { &first } else { &second };
            instance.get(&app)
        });
        let answers = futures::future::join_all(calls).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Assert: all served with the current token at once; one refresh
        // in all, which the next call gets.
        for answer in answers {
            assert_eq!(answer.unwrap().expose(), "token-1");
        }
        assert_eq!(issuer.issued.load(Ordering::SeqCst), 2);
        assert_eq!(second.get(&app).await.unwrap().expose(), "token-2");
    }

    /// A cold cache is filled by one fetch that every caller waits for.
    #[tokio::test(start_paused = true)]
    async fn a_cold_cache_is_filled_once() {
        let clock = Clock::following_tokio();
        let issuer = Arc::new(Counting {
            issued: AtomicU32::new(0),
            lifetime: Duration::from_secs(7200),
        });
        let tokens = AccessTokens::new(
            Arc::new(MemoryAccessTokens::new(clock.clone())),
            issuer.clone(),
            Duration::from_secs(1),
            clock,
        );
        let app = AppCredentials::new("wxa", "secret");
        let answers = futures::future::join_all((0..8).map(|_| tokens.get(&app))).await;
        for answer in answers {
            assert_eq!(answer.unwrap().expose(), "token-1");
        }
        assert_eq!(issuer.issued.load(Ordering::SeqCst), 1);
    }
}
