//! The login of a code: its one exchange at the login provider among every
//! auth instance sharing the stores. A second submission of a code (a
//! client that retried, a duplicate request) must get the first one's
//! session, not burn the code at the provider again: within this process it joins the exchange
//! under way; across instances the first claims the code's slot in the
//! stores and the others wait for its outcome, sealed there under a key
//! only a holder of the code can derive (see [`crate::sealed_outcome`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt, Shared};
use wxlogin_common::{clock::Clock, metrics::name};
use wxlogin_provider::{LoginCode, LoginProvider, SessionSecret};

use crate::{
    config::Apps,
    error::AuthError,
    limit::{Client, Limiter, LoginBudgets},
    sealed_outcome::{CodeSecrets, Recorded, Refusal},
    store::{
        Claim, CodeClaim, ExchangeSlot, NewSession, Opened, SealedOutcome, SessionRecord, Stores,
        key_fingerprint,
    },
    token::Token,
};

/// The longest code we pass on to the provider; WeChat's are 32 characters.
pub const MAX_CODE_LEN: usize = 128;

/// How long WeChat accepts a wx.login code, and so how long a later
/// submission of one gets the answer of its exchange.
pub const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// How often an instance looks whether another instance's exchange of a
/// code is over.
const POLL_EVERY: Duration = Duration::from_millis(20);

pub type Outcome = Result<Arc<LoginOutcome>, Arc<AuthError>>;
type Flight = Shared<BoxFuture<'static, Outcome>>;

/// What a session keeps of the client that opened it, for the user's list
/// of sessions.
#[derive(Debug, Default)]
pub struct SessionClient {
    pub user_agent: Option<String>,
    pub address_prefix: Option<String>,
}

/// A login's answer: its session.
#[derive(Debug)]
pub struct LoginOutcome {
    pub token: Token,
    pub record: SessionRecord,
    pub expires_in: Duration,
    /// What the session write found of the user: the user service's copy,
    /// and whether it answers this login (which is then journaled).
    pub user: Opened,
}

/// The logins of this process.
pub struct Logins {
    apps: Apps,
    provider: Arc<dyn LoginProvider>,
    stores: Stores,
    limiter: Limiter,
    clock: Clock,
    /// Code exchanges under way in this process, by (appid, code): a second
    /// submission of a code waits for the first one's answer instead of
    /// burning it, or asking the store.
    in_flight: Mutex<HashMap<(String, String), Flight>>,
    /// How long an instance's claim on a code's exchange lasts: an exchange
    /// (the provider's call, retried once when the connection failed, then
    /// the session write) is over by then, or its instance died.
    claim_ttl: Duration,
}

impl Logins {
    /// `provider_timeout` bounds one call to the provider.
    pub fn new(
        apps: Apps,
        provider: Arc<dyn LoginProvider>,
        stores: Stores,
        limiter: Limiter,
        clock: Clock,
        provider_timeout: Duration,
    ) -> Logins {
        Logins {
            apps,
            provider,
            stores,
            limiter,
            clock,
            in_flight: Mutex::new(HashMap::new()),
            claim_ttl: provider_timeout
                .saturating_mul(2)
                .saturating_add(Duration::from_secs(2)),
        }
    }

    /// The configured appid `appid` names (empty: the default app's).
    fn appid<'a>(&'a self, appid: &str) -> Result<&'a str, AuthError> {
        self.apps
            .get(appid)
            .map(|app| app.appid.as_str())
            .ok_or(AuthError::UnknownApp)
    }

    /// Counts a code of `appid` from `client` that the provider refused (see
    /// [`Limiter::login_refused`]).
    pub async fn refused(&self, client: &Client, appid: &str) {
        if let Err(error) = self.limiter.login_refused(client, appid).await {
            tracing::debug!(%error, "could not count a refused code");
        }
    }

    /// The login of `login`'s code: joins its exchange under way in this
    /// process, or starts one that checks `budgets` (of the first
    /// submission) in the round trip that claims the code.
    pub async fn login(
        self: &Arc<Self>,
        appid: &str,
        login: LoginCode,
        budgets: Option<LoginBudgets>,
        client: SessionClient,
    ) -> Outcome {
        let appid = self.appid(appid).map_err(Arc::new)?;
        validate_code(&login.code).map_err(Arc::new)?;
        if let Some(anonymous_code) = &login.anonymous_code {
            validate_code(anonymous_code).map_err(Arc::new)?;
        }
        let key = (appid.to_owned(), login.code.clone());
        let flight = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match in_flight.get(&key) {
                Some(flight) => {
                    tracing::info!("joining an exchange of the same code already under way");
                    metrics::counter!(name::CODE_JOINS, "via" => "process").increment(1);
                    flight.clone()
                }
                None => {
                    // The exchange runs in a task of its own so that it
                    // finishes, and leaves the map, even if every caller
                    // waiting for it goes away.
                    let this = self.clone();
                    let task_key = key.clone();
                    let task = tokio::spawn(async move {
                        let outcome = this
                            .exchange_once(&task_key.0, &login, budgets, client)
                            .await;
                        this.in_flight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&task_key);
                        outcome
                    });
                    let flight = async move {
                        task.await.unwrap_or_else(|error| {
                            Err(Arc::new(AuthError::Task(error.to_string())))
                        })
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(key, flight.clone());
                    flight
                }
            }
        };
        flight.await
    }

    /// The outcome of the one exchange of `code` among every instance
    /// sharing the store: this instance exchanges it if no other has, else
    /// waits for the other's outcome (sealed in the store under the code),
    /// or reads it when that exchange is over.
    async fn exchange_once(
        &self,
        appid: &str,
        login: &LoginCode,
        budgets: Option<LoginBudgets>,
        client: SessionClient,
    ) -> Outcome {
        let stores = &self.stores;
        let secrets = CodeSecrets::derive(appid, &login.code);
        let marker = ExchangeSlot::marker(&format!("{:016x}", rand::random::<u64>()));
        let deadline = self.clock.now() + self.claim_ttl + Duration::from_secs(1);
        let store_error = |error| Arc::new(AuthError::from(error));
        let charges = budgets
            .as_ref()
            .map(LoginBudgets::charges)
            .unwrap_or_default();
        loop {
            let claim = stores
                .exchanges
                .claim(CodeClaim {
                    appid,
                    slot: secrets.slot(),
                    marker: &marker,
                    ttl: self.claim_ttl,
                    budgets: &charges,
                })
                .await
                .map_err(store_error)?;
            let mut held = match claim {
                Claim::Owned => {
                    return self
                        .exchange_owned(appid, login, &secrets, &marker, client)
                        .await;
                }
                Claim::Refused { position, wait_us } => {
                    let refusal = self.limiter.refusal(budgets.as_ref(), position, wait_us);
                    return Err(Arc::new(AuthError::from(refusal)));
                }
                Claim::Held(ExchangeSlot::Pending) => {
                    tracing::info!(
                        "another instance is exchanging this code; waiting for its outcome"
                    );
                    Some(ExchangeSlot::Pending)
                }
                Claim::Held(sealed) => Some(sealed),
            };
            while let Some(ExchangeSlot::Pending) = held {
                if self.clock.now() >= deadline {
                    return Err(Arc::new(AuthError::ExchangeWait));
                }
                tokio::time::sleep(POLL_EVERY).await;
                held = stores
                    .exchanges
                    .slot(appid, secrets.slot())
                    .await
                    .map_err(store_error)?;
            }
            if let Some(ExchangeSlot::Sealed(sealed)) = held {
                metrics::counter!(name::CODE_JOINS, "via" => "store").increment(1);
                let outcome = self.answer(&secrets, &sealed)?;
                // A replay after the code's session ended (a logout, an
                // expiry): the code is spent and its token dead, so the
                // answer is the provider's for a used code, not a dead
                // token.
                if stores
                    .sessions
                    .touch(&outcome.token)
                    .await
                    .map_err(store_error)?
                    .is_none()
                {
                    let used = Refusal::CodeUsed.error(self.provider.name());
                    return Err(Arc::new(AuthError::Provider(used)));
                }
                return Ok(outcome);
            }
            // The other instance gave the code up (it was not spent): try
            // it here.
        }
    }

    /// Exchanges the code this instance claimed, then records the outcome
    /// for every other submission of it, or gives the claim up when the
    /// code was not spent and may be tried again.
    async fn exchange_owned(
        &self,
        appid: &str,
        login: &LoginCode,
        secrets: &CodeSecrets,
        marker: &str,
        client: SessionClient,
    ) -> Outcome {
        let exchanges = &self.stores.exchanges;
        let outcome = self.exchange(appid, login, secrets, client).await;
        let counted = match &outcome {
            Ok(_) => "ok",
            Err(error) => match &**error {
                AuthError::Provider(refused) if Refusal::of(refused).is_some() => "refused",
                _ => "failed",
            },
        };
        if self.apps.get(appid).is_some() {
            metrics::counter!(name::CODE_EXCHANGES, "appid" => appid.to_owned(), "outcome" => counted)
                .increment(1);
        }
        let error = match &outcome {
            // The session write recorded the outcome.
            Ok(_) => return outcome,
            Err(error) => error,
        };
        let refusal = match &**error {
            AuthError::Provider(refused) => Refusal::of(refused),
            _ => None,
        };
        let Some(error) = refusal else {
            if let Err(error) = exchanges.release(appid, secrets.slot(), marker).await {
                tracing::warn!(%error, "could not give up the claim on a code; it is free again when the claim expires");
            }
            return outcome;
        };
        let sealed = match secrets.seal(&Recorded::Refused { error }) {
            Ok(sealed) => sealed,
            Err(error) => {
                tracing::warn!(%error, "other submissions of this code will not get its answer");
                return outcome;
            }
        };
        match exchanges
            .record_refusal(
                appid,
                SealedOutcome {
                    slot: secrets.slot(),
                    sealed: &sealed,
                    ttl: CODE_LIFETIME,
                },
            )
            .await
        {
            Ok(None) => outcome,
            // Our claim had expired and another instance's exchange, which
            // every other submission has been answered with, is what counts.
            Ok(Some(kept)) => self.answer(secrets, &kept),
            Err(error) => {
                tracing::warn!(%error, "could not record a login's outcome; other submissions of this code will wait for the claim to expire");
                outcome
            }
        }
    }

    /// The answer sealed for this code.
    fn answer(&self, secrets: &CodeSecrets, sealed: &str) -> Outcome {
        match secrets.open(sealed).map_err(AuthError::from)? {
            Recorded::Session {
                token,
                record,
                expires_in_secs,
            } => Ok(Arc::new(LoginOutcome {
                token: Token::parse(&token)
                    .ok_or(AuthError::from(crate::sealed_outcome::SealError))?,
                record,
                expires_in: Duration::from_secs(expires_in_secs),
                // The copy was the first submission's answer; this one's
                // caller asks the user service.
                user: Opened::default(),
            })),
            Recorded::Refused { error } => Err(Arc::new(AuthError::Provider(
                error.error(self.provider.name()),
            ))),
        }
    }

    /// Exchanges the code at the provider and opens the session for the
    /// exchange's first subject, recording its sealed outcome for every
    /// other submission of the code in the same write.
    async fn exchange(
        &self,
        appid: &str,
        login: &LoginCode,
        secrets: &CodeSecrets,
        client: SessionClient,
    ) -> Outcome {
        let appid = self.appid(appid).map_err(Arc::new)?;
        let session = self
            .provider
            .exchange(appid, login)
            .await
            .map_err(|error| Arc::new(AuthError::from(error)))?;
        let openid = session.subject.id;
        // A provider without session secrets (Alipay) keeps the empty one:
        // sessions have one shape whatever the door, and its data opens
        // with the provider's own key.
        let session_key = session
            .session_secret
            .unwrap_or_else(|| SessionSecret::new(String::new()));
        let token = Token::for_shard(wxlogin_redis::keys::shard(appid, &openid))
            .map_err(|error| Arc::new(AuthError::Random(error.to_string())))?;
        let policy = self.stores.policy;
        let now = self.clock.unix_ms();
        let record = SessionRecord {
            appid: appid.to_owned(),
            openid,
            unionid: session.union_id,
            created_at_ms: now,
            key_fingerprint: key_fingerprint(&session_key),
            absolute_expiry_ms: now
                .saturating_add(u64::try_from(policy.max_lifetime.as_millis()).unwrap_or(u64::MAX)),
            user_agent: client.user_agent,
            address_prefix: client.address_prefix,
        };
        let sealed = secrets
            .seal(&Recorded::Session {
                token: token.expose().to_owned(),
                record: record.clone(),
                expires_in_secs: policy.idle_ttl.as_secs(),
            })
            .inspect_err(|error| {
                tracing::warn!(%error, "other submissions of this code will not get its answer");
            })
            .ok();
        let outcome = sealed.as_deref().map(|sealed| SealedOutcome {
            slot: secrets.slot(),
            sealed,
            ttl: CODE_LIFETIME,
        });
        let user = self
            .stores
            .sessions
            .open(NewSession {
                token: &token,
                record: &record,
                session_key: &session_key,
                outcome,
            })
            .await
            .map_err(|error| Arc::new(AuthError::from(error)))?;
        // DEBUG: the login's INFO line is the gateway's audit event, which
        // knows the user's id.
        tracing::debug!(appid = %record.appid, openid = %record.openid, "session opened");
        Ok(Arc::new(LoginOutcome {
            token,
            record,
            expires_in: policy.idle_ttl,
            user,
        }))
    }

    /// Checks a login against its client's and its app's budgets, before
    /// the code can reach the provider (they count refused codes; see
    /// [`Limiter::login`]): in-process budgets now, Redis budgets in the
    /// round trip that claims the code (the answer's [`LoginBudgets`]).
    /// Answers the app to count a refusal against too. What never reaches
    /// WeChat costs nothing: an unknown app or a malformed code is refused
    /// first (which also keeps the per-app keys to configured apps), and a
    /// second submission of a code joins the exchange under way (two that
    /// arrive together may both be checked).
    pub async fn check_budgets(
        &self,
        client: &Client,
        appid: &str,
        code: &str,
    ) -> Result<Option<(String, Option<LoginBudgets>)>, AuthError> {
        let appid = self.appid(appid)?;
        validate_code(code)?;
        let joins = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&(appid.to_owned(), code.to_owned()));
        if joins {
            return Ok(None);
        }
        let budgets = self.limiter.login_budgets(client, appid).await?;
        Ok(Some((appid.to_owned(), budgets)))
    }
}

pub fn validate_code(code: &str) -> Result<(), AuthError> {
    if code.is_empty() {
        return Err(AuthError::InvalidArgument("code is empty".into()));
    }
    if code.len() > MAX_CODE_LEN {
        return Err(AuthError::InvalidArgument(format!(
            "code is longer than {MAX_CODE_LEN} characters"
        )));
    }
    if !code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AuthError::InvalidArgument(
            "code has characters WeChat never uses".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_code;

    #[test]
    fn codes_are_checked_before_wechat_sees_them() {
        assert!(validate_code("0a3Kx7000Gj5oS1e2x300E0uXd2Kx70f").is_ok());
        assert!(validate_code("with_under-score").is_ok());
        for bad in [
            "",
            "has space",
            "semi;colon",
            "emoji😀",
            "a/b",
            &"x".repeat(129),
        ] {
            assert!(validate_code(bad).is_err(), "{bad:?}");
        }
        assert!(validate_code(&"x".repeat(128)).is_ok());
    }
}
