//! The `wxlogin.auth.v1.AuthService` implementation: [`Auth`] holds what
//! every call needs; [`login`] is the login of a code, its exchange shared
//! by every instance; `rpc` turns each call into the work and its answer.
//!
//! The login provider is a [`LoginProvider`] (one for every configured app
//! today; one per app would be a map here): nothing in the service names a
//! provider's endpoints.

pub mod login;
mod rpc;

use std::{sync::Arc, time::Duration};

use wxlogin_common::clock::Clock;
use wxlogin_provider::{LoginProvider, SessionSecret};

use crate::{
    config::Apps,
    error::AuthError,
    limit::Limiter,
    store::{LiveSession, SessionRecord, Stores, key_fingerprint},
    token::Token,
};
use login::Logins;

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    apps: Apps,
    provider: Arc<dyn LoginProvider>,
    stores: Stores,
    clock: Clock,
    limiter: Limiter,
    logins: Arc<Logins>,
}

impl Auth {
    /// `provider_timeout` bounds one call to the provider.
    pub fn new(
        apps: Apps,
        provider: Arc<dyn LoginProvider>,
        limiter: Limiter,
        stores: Stores,
        provider_timeout: Duration,
        clock: Clock,
    ) -> Self {
        Auth {
            inner: Arc::new(Inner {
                logins: Arc::new(Logins::new(
                    apps.clone(),
                    provider.clone(),
                    stores.clone(),
                    limiter.clone(),
                    clock.clone(),
                    provider_timeout,
                )),
                limiter,
                apps,
                provider,
                stores,
                clock,
            }),
        }
    }

    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    async fn live_session(&self, raw_token: &str) -> Result<LiveSession, AuthError> {
        self.live(&parse_token(raw_token)?).await
    }

    /// The live session `token` names; using it starts its idle period
    /// again.
    async fn live(&self, token: &Token) -> Result<LiveSession, AuthError> {
        self.inner
            .stores
            .sessions
            .touch(token)
            .await?
            .ok_or(AuthError::InvalidToken)
    }

    /// The session's user's latest session secret, if it is still the one
    /// this session's login received.
    async fn current_session_key(&self, live: &LiveSession) -> Result<SessionSecret, AuthError> {
        let record = &live.record;
        let key = self
            .inner
            .stores
            .sessions
            .session_key(&record.appid, &record.openid)
            .await?
            .ok_or(AuthError::SessionKeyStale)?;
        if key_fingerprint(&key) != record.key_fingerprint {
            return Err(AuthError::SessionKeyStale);
        }
        Ok(key)
    }

    /// The appid a user names (empty: the default app), for the calls that
    /// take a user rather than a session. An app no longer configured may
    /// still have sessions.
    fn user_app(&self, appid: &str, openid: &str) -> Result<String, AuthError> {
        if openid.is_empty() {
            return Err(AuthError::InvalidArgument("openid is empty".into()));
        }
        Ok(if appid.is_empty() {
            self.inner.apps.default_appid().to_owned()
        } else {
            appid.to_owned()
        })
    }

    /// Refuses a session of an app that was since removed from the
    /// configuration.
    fn app_of(&self, record: &SessionRecord) -> Result<(), AuthError> {
        match self.inner.apps.get(&record.appid) {
            Some(_) => Ok(()),
            None => Err(AuthError::UnknownApp),
        }
    }
}

fn parse_token(raw: &str) -> Result<Token, AuthError> {
    Token::parse(raw).ok_or(AuthError::InvalidToken)
}
