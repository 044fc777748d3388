//! Each call of `wxlogin.auth.v1.AuthService`: its checks, the work, and
//! its answer in the contract's types.

use std::time::{Duration, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use wxlogin_common::{grpc, metrics::name};
use wxlogin_proto::{
    auth::v1::{
        CheckSessionRequest, CheckSessionResponse, ForgetUserRequest, ForgetUserResponse,
        GetPhoneNumberRequest, GetPhoneNumberResponse, GetSessionKeyRequest, GetSessionKeyResponse,
        ListSessionsRequest, ListSessionsResponse, LoginRequest, LoginResponse, LogoutRequest,
        LogoutResponse, PhoneNumber, RevokeSessionsRequest, RevokeSessionsResponse, Session,
        SessionSummary as SessionView, ValidateSessionRequest, ValidateSessionResponse,
        auth_service_server::AuthService,
    },
    caller::{self, Caller},
    fields,
};
use wxlogin_provider::LoginCode;

use super::{
    Auth,
    login::{SessionClient, validate_code},
    parse_token,
};
use crate::{
    error::AuthError,
    limit::Client,
    store::{SessionRecord, SessionSummary, is_session_id, live_sessions},
    token::Token,
};

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
        let (charged, budgets) = match self
            .inner
            .logins
            .check_budgets(&client, &appid, &code)
            .await?
        {
            Some((charged, budgets)) => (Some(charged), budgets),
            None => (None, None),
        };
        let outcome = match self
            .inner
            .logins
            .login(&appid, LoginCode::code(code), budgets, session_client)
            .await
        {
            Ok(outcome) => outcome,
            Err(error) => {
                if let (Some(appid), AuthError::Provider(refused)) = (charged, &*error)
                    && refused.is_code_refused()
                {
                    // Counted before the answer, so that the next bogus
                    // code of this client already meets the count.
                    self.inner.logins.refused(&client, &appid).await;
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
        self.app_of(record)?;
        self.inner
            .limiter
            .check_session(&record.appid, &record.openid)
            .await
            .map_err(AuthError::from)?;
        let valid = self
            .inner
            .provider
            .session_secret_valid(&record.appid, &record.openid, &key)
            .await
            .map_err(AuthError::from)?;
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
        self.app_of(record)?;
        self.inner
            .limiter
            .phone(&record.appid, &record.openid)
            .await
            .map_err(AuthError::from)?;
        let phone = self
            .inner
            .provider
            .phone_number(&record.appid, &record.openid, &code)
            .await
            .map_err(|error| AuthError::from(error).in_phone_flow())?;
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
