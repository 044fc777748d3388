//! The `wxlogin.auth.v1.AuthService` implementation.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, UNIX_EPOCH},
};

use futures::future::{BoxFuture, FutureExt, Shared};
use tonic::{Request, Response, Status};
use wxlogin_common::{clock::Clock, grpc, metrics::name};
use wxlogin_proto::caller::{self, Caller};
use wxlogin_proto::{
    auth::v1::{
        CheckSessionRequest, CheckSessionResponse, ForgetUserRequest, ForgetUserResponse,
        GetPhoneNumberRequest, GetPhoneNumberResponse, GetSessionKeyRequest, GetSessionKeyResponse,
        ListSessionsRequest, ListSessionsResponse, LoginRequest, LoginResponse, LogoutRequest,
        LogoutResponse, PhoneNumber, RevokeSessionsRequest, RevokeSessionsResponse, Session,
        SessionSummary as SessionView, ValidateSessionRequest, ValidateSessionResponse,
        auth_service_server::AuthService,
    },
    fields,
};
use wxlogin_wechat::Client as Wechat;

use crate::{
    access_token::AccessTokens,
    config::Apps,
    error::AuthError,
    limit::{Client, Limiter, LoginBudgets},
    sealed_outcome::{CodeSecrets, Recorded, Refusal},
    store::{
        Claim, ExchangeSlot, LiveSession, Opened, SealedOutcome, SessionRecord, SessionSummary,
        Stores, is_session_id, key_fingerprint, live_sessions,
    },
    token::Token,
};

/// The longest code we pass on to WeChat; real ones are 32 characters.
pub const MAX_CODE_LEN: usize = 128;

/// How long WeChat accepts a wx.login code, and so how long a later
/// submission of one gets the answer of its exchange.
pub const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// How often an instance looks whether another instance's exchange of a
/// code is over.
const POLL_EVERY: Duration = Duration::from_millis(20);

type Outcome = Result<Arc<LoginOutcome>, Arc<AuthError>>;
type Flight = Shared<BoxFuture<'static, Outcome>>;

/// What a session keeps of the client that opened it, for the user's list
/// of sessions.
#[derive(Debug, Default)]
struct SessionClient {
    user_agent: Option<String>,
    address_prefix: Option<String>,
}

#[derive(Debug)]
struct LoginOutcome {
    token: Token,
    record: SessionRecord,
    expires_in: Duration,
    /// What the session write found of the user: the user service's copy,
    /// and whether it answers this login (which is then journaled).
    user: Opened,
}

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    apps: Apps,
    wechat: Wechat,
    stores: Stores,
    clock: Clock,
    access_tokens: AccessTokens,
    limiter: Limiter,
    /// Code exchanges under way in this process, by (appid, code): a second
    /// submission of a code waits for the first one's answer instead of
    /// burning it, or asking the store.
    in_flight: Mutex<HashMap<(String, String), Flight>>,
    /// How long an instance's claim on a code's exchange lasts: an exchange
    /// (the WeChat call, retried once when the connection failed, then the
    /// session write) is over by then, or its instance died.
    claim_ttl: Duration,
}

impl Auth {
    pub fn new(
        apps: Apps,
        wechat: Wechat,
        limiter: Limiter,
        stores: Stores,
        wechat_timeout: Duration,
        clock: Clock,
    ) -> Self {
        Auth {
            inner: Arc::new(Inner {
                access_tokens: AccessTokens::new(
                    stores.access_tokens.clone(),
                    wechat.clone(),
                    wechat_timeout,
                    clock.clone(),
                ),
                limiter,
                apps,
                wechat,
                stores,
                clock,
                in_flight: Mutex::new(HashMap::new()),
                claim_ttl: wechat_timeout
                    .saturating_mul(2)
                    .saturating_add(Duration::from_secs(2)),
            }),
        }
    }

    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// The login of `code`: joins its exchange under way in this process,
    /// or starts one that checks `budgets` (of the first submission) in
    /// the round trip that claims the code.
    async fn login(
        &self,
        appid: &str,
        code: &str,
        budgets: Option<LoginBudgets>,
        client: SessionClient,
    ) -> Outcome {
        let app = self
            .inner
            .apps
            .get(appid)
            .ok_or(Arc::new(AuthError::UnknownApp))?;
        validate_code(code).map_err(Arc::new)?;
        let key = (app.appid.clone(), code.to_owned());
        let flight = {
            let mut in_flight = self
                .inner
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
                            .exchange_once(&task_key.0, &task_key.1, budgets, client)
                            .await;
                        this.inner
                            .in_flight
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
        code: &str,
        budgets: Option<LoginBudgets>,
        client: SessionClient,
    ) -> Outcome {
        let stores = &self.inner.stores;
        let secrets = CodeSecrets::derive(appid, code);
        let marker = ExchangeSlot::marker(&format!("{:016x}", rand::random::<u64>()));
        let deadline = self.inner.clock.now() + self.inner.claim_ttl + Duration::from_secs(1);
        let store_error = |error| Arc::new(AuthError::from(error));
        let charges = budgets
            .as_ref()
            .map(LoginBudgets::charges)
            .unwrap_or_default();
        loop {
            let claim = stores
                .exchanges
                .claim(
                    appid,
                    secrets.slot(),
                    &marker,
                    self.inner.claim_ttl,
                    &charges,
                )
                .await
                .map_err(store_error)?;
            let mut held = match claim {
                Claim::Owned => {
                    return self
                        .exchange_owned(appid, code, &secrets, &marker, client)
                        .await;
                }
                Claim::Refused { position, wait_us } => {
                    let refusal = self
                        .inner
                        .limiter
                        .refusal(budgets.as_ref(), position, wait_us);
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
                if self.inner.clock.now() >= deadline {
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
                // answer is WeChat's for a used code, not a dead token.
                if stores
                    .sessions
                    .touch(&outcome.token)
                    .await
                    .map_err(store_error)?
                    .is_none()
                {
                    return Err(Arc::new(AuthError::Wechat(wxlogin_wechat::Error::CodeUsed)));
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
        code: &str,
        secrets: &CodeSecrets,
        marker: &str,
        client: SessionClient,
    ) -> Outcome {
        let exchanges = &self.inner.stores.exchanges;
        let outcome = self.exchange(appid, code, secrets, client).await;
        let counted = match &outcome {
            Ok(_) => "ok",
            Err(error) => match &**error {
                AuthError::Wechat(wx) if Refusal::of(wx).is_some() => "refused",
                _ => "failed",
            },
        };
        if self.inner.apps.get(appid).is_some() {
            metrics::counter!(name::CODE_EXCHANGES, "appid" => appid.to_owned(), "outcome" => counted)
                .increment(1);
        }
        let error = match &outcome {
            // The session write recorded the outcome.
            Ok(_) => return outcome,
            Err(error) => error,
        };
        let refusal = match &**error {
            AuthError::Wechat(wx) => Refusal::of(wx),
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
            .record_refusal(appid, secrets.slot(), &sealed, CODE_LIFETIME)
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
            Recorded::Refused { error } => Err(Arc::new(AuthError::Wechat(error.error()))),
        }
    }

    /// Exchanges the code at WeChat and opens the session, recording its
    /// sealed outcome for every other submission of the code in the same
    /// write.
    async fn exchange(
        &self,
        appid: &str,
        code: &str,
        secrets: &CodeSecrets,
        client: SessionClient,
    ) -> Outcome {
        let app = self
            .inner
            .apps
            .get(appid)
            .ok_or(Arc::new(AuthError::UnknownApp))?;
        let session = self
            .inner
            .wechat
            .code2session(app, code)
            .await
            .map_err(|error| Arc::new(AuthError::from(error)))?;
        let token = Token::for_shard(wxlogin_redis::keys::shard(&app.appid, &session.openid))
            .map_err(|error| Arc::new(AuthError::Random(error.to_string())))?;
        let policy = self.inner.stores.sessions.policy();
        let now = self.inner.clock.unix_ms();
        let record = SessionRecord {
            appid: app.appid.clone(),
            openid: session.openid,
            unionid: session.unionid,
            created_at_ms: now,
            key_fingerprint: key_fingerprint(&session.session_key),
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
            .inner
            .stores
            .sessions
            .open(&token, &record, &session.session_key, outcome)
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
}

impl Auth {
    /// Checks a login against its client's and its app's budgets, before
    /// the code can reach WeChat (they count refused codes; see
    /// [`Limiter::login`]): in-process budgets now, Redis budgets in the
    /// round trip that claims the code (the answer's [`LoginBudgets`]).
    /// Answers the app to count a refusal against too. What never reaches
    /// WeChat costs nothing: an unknown app or a malformed code is refused
    /// first (which also keeps the per-app keys to configured apps), and a
    /// second submission of a code joins the exchange under way (two that
    /// arrive together may both be checked).
    async fn check_login_budgets(
        &self,
        client: &Client,
        appid: &str,
        code: &str,
    ) -> Result<Option<(String, Option<LoginBudgets>)>, AuthError> {
        let app = self.inner.apps.get(appid).ok_or(AuthError::UnknownApp)?;
        validate_code(code)?;
        let joins = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&(app.appid.clone(), code.to_owned()));
        if joins {
            return Ok(None);
        }
        let budgets = self.inner.limiter.login_budgets(client, &app.appid).await?;
        Ok(Some((app.appid.clone(), budgets)))
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

    /// The session's user's latest session_key, if it is still the one this
    /// session's login received.
    async fn current_session_key(
        &self,
        live: &LiveSession,
    ) -> Result<wxlogin_wechat::SessionKey, AuthError> {
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

    fn app_of(&self, record: &SessionRecord) -> Result<&wxlogin_wechat::AppCredentials, AuthError> {
        // A session of an app that was since removed from the configuration.
        self.inner
            .apps
            .get(&record.appid)
            .ok_or(AuthError::UnknownApp)
    }
}

fn validate_code(code: &str) -> Result<(), AuthError> {
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

fn timestamp(unix_ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(UNIX_EPOCH + Duration::from_millis(unix_ms))
}

fn session(record: &SessionRecord) -> Session {
    Session {
        appid: record.appid.clone(),
        openid: record.openid.clone(),
        unionid: record.unionid.clone(),
        created_at: Some(timestamp(record.created_at_ms)),
        absolute_expires_at: Some(timestamp(record.absolute_expiry_ms)),
    }
}

/// Who a login is charged to. The gateway names the client in metadata,
/// and auth trusts it (only our own services reach auth). A caller that
/// names none is an internal consumer calling Login directly: it is charged
/// by its own peer address, so that one such consumer cannot spend the
/// others' budget, or to the one internal bucket when the peer is unknown.
fn client_of<T>(request: &Request<T>) -> Client {
    wxlogin_common::grpc::client_ip_of(request)
        .or_else(|| request.remote_addr().map(|addr| addr.ip()))
        .map_or_else(Client::internal, Client::address)
}

fn session_view(summary: SessionSummary) -> SessionView {
    SessionView {
        session_id: summary.session_id().to_owned(),
        created_at: Some(timestamp(summary.record.created_at_ms)),
        last_used_at: Some(timestamp(summary.last_used_ms)),
        absolute_expires_at: Some(timestamp(summary.record.absolute_expiry_ms)),
        user_agent: summary.record.user_agent,
        address_prefix: summary.record.address_prefix,
    }
}

fn parse_token(raw: &str) -> Result<Token, AuthError> {
    Token::parse(raw).ok_or(AuthError::InvalidToken)
}

#[tonic::async_trait]
impl AuthService for Auth {
    #[tracing::instrument(skip_all, fields(appid = %request.get_ref().appid))]
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let client = client_of(&request);
        // Only the address the gateway names: an internal consumer's own
        // address says nothing of the user's.
        let address_prefix = grpc::client_ip_of(&request).map(fields::address_prefix);
        let LoginRequest {
            appid,
            code,
            user_agent,
        } = request.into_inner();
        let session_client = SessionClient {
            user_agent: fields::user_agent(&user_agent),
            address_prefix,
        };
        let (charged, budgets) = match self.check_login_budgets(&client, &appid, &code).await? {
            Some((charged, budgets)) => (Some(charged), budgets),
            None => (None, None),
        };
        let outcome = match self.login(&appid, &code, budgets, session_client).await {
            Ok(outcome) => outcome,
            Err(error) => {
                if let (Some(appid), AuthError::Wechat(wx)) = (charged, &*error)
                    && wx.is_code_refused()
                {
                    // Counted before the answer, so that the next bogus
                    // code of this client already meets the count.
                    if let Err(error) = self.inner.limiter.login_refused(&client, &appid).await {
                        tracing::debug!(%error, "could not count a refused code");
                    }
                }
                return Err(Status::from(&*error));
            }
        };
        let copy = if outcome.user.copy.is_some() {
            "hit"
        } else {
            "miss"
        };
        metrics::counter!(name::USER_COPY, "result" => copy).increment(1);
        Ok(Response::new(LoginResponse {
            token: outcome.token.expose().to_owned(),
            expires_in: outcome.expires_in.as_secs(),
            session: Some(session(&outcome.record)),
            user_copy: outcome.user.copy.clone().unwrap_or_default(),
            login_recorded: outcome.user.recorded,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn validate_session(
        &self,
        request: Request<ValidateSessionRequest>,
    ) -> Result<Response<ValidateSessionResponse>, Status> {
        let token = parse_token(&request.get_ref().token)?;
        let live = match self.live(&token).await {
            Ok(live) => live,
            Err(error) => {
                if matches!(error, AuthError::InvalidToken) {
                    metrics::counter!(name::SESSION_VALIDATIONS, "outcome" => "unknown")
                        .increment(1);
                }
                return Err(error.into());
            }
        };
        metrics::counter!(name::SESSION_VALIDATIONS, "outcome" => "live").increment(1);
        let copy = if live.user_copy.is_some() {
            "hit"
        } else {
            "miss"
        };
        metrics::counter!(name::USER_COPY, "result" => copy).increment(1);
        Ok(Response::new(ValidateSessionResponse {
            session_id: token.session_id(),
            session: Some(session(&live.record)),
            expires_in: live.expires_in.as_secs(),
            user_copy: live.user_copy.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let ended = match Token::parse(&request.get_ref().token) {
            Some(token) => self
                .inner
                .stores
                .sessions
                .remove(&token)
                .await
                .map_err(AuthError::from)?,
            None => false,
        };
        Ok(Response::new(LogoutResponse { ended }))
    }

    #[tracing::instrument(skip_all, fields(appid = %request.get_ref().appid))]
    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let ListSessionsRequest { appid, openid } = request.into_inner();
        let appid = self.user_app(&appid, &openid)?;
        let sessions = live_sessions(
            &*self.inner.stores.sessions,
            &appid,
            &openid,
            self.inner.clock.unix_ms(),
        )
        .await
        .map_err(AuthError::from)?;
        Ok(Response::new(ListSessionsResponse {
            sessions: sessions.into_iter().map(session_view).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(appid = %request.get_ref().appid))]
    async fn revoke_sessions(
        &self,
        request: Request<RevokeSessionsRequest>,
    ) -> Result<Response<RevokeSessionsResponse>, Status> {
        let RevokeSessionsRequest {
            appid,
            openid,
            session_id,
        } = request.into_inner();
        let appid = self.user_app(&appid, &openid)?;
        // Anything else names no session (and a shorter id must not match
        // every session it starts).
        if session_id.as_deref().is_some_and(|id| !is_session_id(id)) {
            return Err(AuthError::SessionNotFound.into());
        }
        let ended = self
            .inner
            .stores
            .sessions
            .revoke(&appid, &openid, session_id.as_deref())
            .await
            .map_err(AuthError::from)?;
        if session_id.is_some() && ended == 0 {
            return Err(AuthError::SessionNotFound.into());
        }
        tracing::info!(%appid, %openid, ended, one = session_id.is_some(), "sessions revoked");
        Ok(Response::new(RevokeSessionsResponse { ended }))
    }

    #[tracing::instrument(skip_all, fields(appid = %request.get_ref().appid))]
    async fn forget_user(
        &self,
        request: Request<ForgetUserRequest>,
    ) -> Result<Response<ForgetUserResponse>, Status> {
        // It deletes the user service's copy: the user service alone asks.
        caller::require_caller(&request, Caller::UserService)?;
        let ForgetUserRequest {
            appid,
            openid,
            user_id,
        } = request.into_inner();
        let appid = self.user_app(&appid, &openid)?;
        let ended = self
            .inner
            .stores
            .sessions
            .forget(&appid, &openid, user_id)
            .await
            .map_err(AuthError::from)?;
        Ok(Response::new(ForgetUserResponse { ended }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_session_key(
        &self,
        request: Request<GetSessionKeyRequest>,
    ) -> Result<Response<GetSessionKeyResponse>, Status> {
        // The key decrypts the user's data: only the user service gets it.
        caller::require_caller(&request, Caller::UserService)?;
        let live = self.live_session(&request.get_ref().token).await?;
        let key = self.current_session_key(&live).await?;
        Ok(Response::new(GetSessionKeyResponse {
            session: Some(session(&live.record)),
            session_key: key.expose().to_owned(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn check_session(
        &self,
        request: Request<CheckSessionRequest>,
    ) -> Result<Response<CheckSessionResponse>, Status> {
        let live = self.live_session(&request.get_ref().token).await?;
        let key = match self.current_session_key(&live).await {
            Ok(key) => key,
            Err(AuthError::SessionKeyStale) => {
                return Ok(Response::new(CheckSessionResponse { valid: false }));
            }
            Err(error) => return Err(error.into()),
        };
        let record = &live.record;
        let app = self.app_of(record)?;
        self.inner
            .limiter
            .check_session(&record.appid, &record.openid)
            .await
            .map_err(AuthError::from)?;
        let wechat = &self.inner.wechat;
        let valid = self
            .inner
            .access_tokens
            .with_token(app, |token| {
                let key = &key;
                async move { wechat.check_session(&token, &record.openid, key).await }
            })
            .await?;
        if !valid {
            tracing::info!(appid = %record.appid, openid = %record.openid, "WeChat no longer accepts the stored session_key");
        }
        Ok(Response::new(CheckSessionResponse { valid }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_phone_number(
        &self,
        request: Request<GetPhoneNumberRequest>,
    ) -> Result<Response<GetPhoneNumberResponse>, Status> {
        let GetPhoneNumberRequest { token, code } = request.into_inner();
        let live = self.live_session(&token).await?;
        validate_code(&code)?;
        let record = &live.record;
        let app = self.app_of(record)?;
        self.inner
            .limiter
            .phone(&record.appid, &record.openid)
            .await
            .map_err(AuthError::from)?;
        let wechat = &self.inner.wechat;
        let code = code.as_str();
        let phone = self
            .inner
            .access_tokens
            .with_token(app, |token| async move {
                wechat
                    .phone_number(&token, code, Some(&record.openid))
                    .await
            })
            .await
            .map_err(AuthError::in_phone_flow)?;
        if let Some(watermark) = &phone.watermark
            && watermark.appid != record.appid
        {
            return Err(AuthError::Wechat(wxlogin_wechat::Error::InvalidResponse(
                "the phone number's watermark names another app".into(),
            ))
            .into());
        }
        Ok(Response::new(GetPhoneNumberResponse {
            session: Some(session(record)),
            phone: Some(PhoneNumber {
                phone_number: phone.phone_number,
                pure_phone_number: phone.pure_phone_number,
                country_code: phone.country_code,
            }),
        }))
    }
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
