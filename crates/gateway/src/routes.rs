//! The HTTP API.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{MethodFilter, delete, get, on, post},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use wxlogin_proto::{
    auth::v1::{
        GetPhoneNumberRequest, ListSessionsRequest, LoginRequest, LogoutRequest,
        RevokeSessionsRequest, ValidateSessionRequest,
    },
    reason::Reason,
    user::v1::{
        self as user, DeleteUserRequest, GetUserRequest, UpdatePhoneFromEncryptedRequest,
        UpdatePhoneRequest, UpdateProfileFromEncryptedRequest, UpdateProfileRequest,
        UpsertUserRequest, UserKey, get_user_request::Key, user_key,
    },
};

use wxlogin_common::{audit, audit::Event, user_copy};

use crate::{
    AppState,
    client_ip::ClientIp,
    error::ApiError,
    extract::{BearerToken, Body, RequestId, UserAgent},
    openapi,
    proxy::{Proxy, ProxyRoute},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/me", get(me).delete(delete_me))
        .route("/v1/verify", on(VERIFY_METHODS, verify))
        .route("/v1/logout", post(logout))
        .route("/v1/me/sessions", get(sessions))
        .route("/v1/me/sessions/{id}", delete(end_session))
        .route(
            "/v1/me/profile",
            post(profile_from_encrypted).put(update_profile),
        )
        .route("/v1/me/phone", post(phone))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

impl AppState {
    /// The live session `token` names, with the cached copy of its user
    /// when the store has one.
    async fn validated(
        &self,
        request_id: &RequestId,
        token: String,
    ) -> Result<wxlogin_proto::auth::v1::ValidateSessionResponse, ApiError> {
        let request = self.request(request_id, ValidateSessionRequest { token });
        Ok(self.auth().validate_session(request).await?.into_inner())
    }

    /// The live session `token` names.
    async fn session(
        &self,
        request_id: &RequestId,
        token: String,
    ) -> Result<wxlogin_proto::auth::v1::Session, ApiError> {
        self.validated(request_id, token)
            .await?
            .session
            .ok_or_else(|| missing("session"))
    }

    /// A gRPC request with the call's deadline, our credential and the
    /// HTTP request's id (the same for both upstreams).
    fn request<T>(&self, request_id: &RequestId, message: T) -> tonic::Request<T> {
        let id = request_id.as_str();
        self.auth.call(message, id)
    }
}

/// What `POST /v1/login` takes (its `Debug` hides the code).
#[derive(Deserialize, ToSchema)]
pub(crate) struct LoginInput {
    /// The one-time code from `wx.login()`.
    code: String,
    /// Which configured mini-program the code is of; default: `WECHAT_APPID`.
    #[serde(default)]
    appid: Option<String>,
}

/// A session for the mini-program, and its user (its `Debug` hides the
/// token).
#[derive(Serialize, ToSchema)]
pub(crate) struct LoginOutput {
    /// The opaque session token: send it as `Authorization: Bearer <token>`.
    token: String,
    /// Seconds the session lives without use; each use restarts it.
    expires_in: u64,
    /// Whether this login registered the user.
    created: bool,
    user: UserView,
}

impl std::fmt::Debug for LoginInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginInput")
            .field("code", &"<redacted>")
            .field("appid", &self.appid)
            .finish()
    }
}

impl std::fmt::Debug for LoginOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginOutput")
            .field("token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("created", &self.created)
            .field("user", &self.user)
            .finish()
    }
}

/// `{"user": …}`, serialized straight from the view.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserOutput {
    user: UserView,
}

/// A user as the mini-program sees it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    /// wxlogin's id of the user, stable across logins.
    id: u64,
    appid: String,
    openid: String,
    unionid: Option<String>,
    nickname: Option<String>,
    avatar_url: Option<String>,
    /// WeChat's gender: 0 unknown, 1 male, 2 female.
    gender: i32,
    country: Option<String>,
    province: Option<String>,
    city: Option<String>,
    language: Option<String>,
    phone_number: Option<String>,
    pure_phone_number: Option<String>,
    phone_country_code: Option<String>,
    /// RFC 3339, UTC.
    created_at: Option<String>,
    /// RFC 3339, UTC.
    updated_at: Option<String>,
}

fn rfc3339(timestamp: Option<prost_types::Timestamp>) -> Option<String> {
    let timestamp = timestamp?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    chrono::DateTime::from_timestamp(timestamp.seconds, nanos)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl From<user::User> for UserView {
    fn from(user: user::User) -> Self {
        UserView {
            id: user.id,
            appid: user.appid,
            openid: user.openid,
            unionid: user.unionid,
            nickname: user.nickname,
            avatar_url: user.avatar_url,
            gender: user.gender,
            country: user.country,
            province: user.province,
            city: user.city,
            language: user.language,
            phone_number: user.phone_number,
            pure_phone_number: user.pure_phone_number,
            phone_country_code: user.phone_country_code,
            created_at: rfc3339(user.created_at),
            updated_at: rfc3339(user.updated_at),
        }
    }
}

fn missing(what: &str) -> ApiError {
    tracing::error!(what, "an upstream answer lacks a required field");
    ApiError::internal()
}

/// Exchange a `wx.login()` code for a session token.
///
/// The first login of a WeChat user registers them.
#[utoipa::path(
    post,
    path = "/v1/login",
    tag = "session",
    request_body(content(
        (LoginInput = "application/json"),
        (LoginInput = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in.", body = LoginOutput),
        openapi::LoginErrors,
    ),
)]
pub(crate) async fn login(
    state: State<AppState>,
    request_id: RequestId,
    client: ClientIp,
    user_agent: UserAgent,
    input: Result<Body<LoginInput>, ApiError>,
) -> Result<Json<LoginOutput>, ApiError> {
    let answer = match input {
        Ok(input) => log_in(state, request_id, client, user_agent, input).await,
        Err(error) => Err(error),
    };
    crate::metrics::login(match &answer {
        Ok(Json(output)) => Ok(output.created),
        Err(error) => Err(error.code()),
    });
    answer
}

async fn log_in(
    State(state): State<AppState>,
    request_id: RequestId,
    ClientIp(client): ClientIp,
    UserAgent(user_agent): UserAgent,
    Body(input): Body<LoginInput>,
) -> Result<Json<LoginOutput>, ApiError> {
    let mut request = state.request(
        &request_id,
        LoginRequest {
            appid: input.appid.unwrap_or_default(),
            code: input.code,
            user_agent,
        },
    );
    if let Some(client) = client {
        wxlogin_common::grpc::set_client_ip(&mut request, client);
    }
    let mut login = state.auth().login(request).await?.into_inner();
    // A returning user whom the login changes in nothing stored: the copy
    // auth read with the session is the answer, and auth journaled the
    // login for the user service to record.
    if login.login_recorded
        && let Some(user) = state.open_copy(&mut login.user_copy, login.session.as_ref())
    {
        audit_login(&request_id, &user, false);
        return Ok(Json(LoginOutput {
            token: login.token,
            expires_in: login.expires_in,
            created: false,
            user: user.into(),
        }));
    }
    let session = login.session.ok_or_else(|| missing("session"))?;
    let upsert = state
        .user()
        .upsert_user(state.request(
            &request_id,
            UpsertUserRequest {
                appid: session.appid,
                openid: session.openid,
                unionid: session.unionid,
                cached_copy: login.user_copy,
            },
        ))
        .await;
    let upsert = match upsert {
        Ok(response) => response.into_inner(),
        Err(status) => {
            // The client never sees this token: end its session now rather
            // than leave it to expire.
            let logout = LogoutRequest { token: login.token };
            if let Err(error) = state
                .auth()
                .logout(state.request(&request_id, logout))
                .await
            {
                tracing::warn!(code = ?error.code(), "could not end the session of a failed login");
            }
            return Err(status.into());
        }
    };
    let user = upsert.user.ok_or_else(|| missing("user"))?;
    audit_login(&request_id, &user, upsert.created);
    Ok(Json(LoginOutput {
        token: login.token,
        expires_in: login.expires_in,
        created: upsert.created,
        user: user.into(),
    }))
}

fn audit_login(request_id: &RequestId, user: &user::User, created: bool) {
    audit!(
        Event::Login,
        user_id = user.id,
        appid = %user.appid,
        created,
        request_id = request_id.as_str()
    );
}

/// Delete the user's account: every session (this one too), the stored
/// `session_key`, the cached copy and the row. The next `wx.login`
/// registers a new user (`created: true`, a new id). A deletion that fails
/// part-way has already ended every session: call `DELETE` again after
/// logging in, and it completes (so does the login itself).
#[utoipa::path(
    delete,
    path = "/v1/me",
    tag = "user",
    security(("session" = [])),
    responses(
        (status = 204, description = "The account is deleted."),
        openapi::SessionErrors,
    ),
)]
pub(crate) async fn delete_me(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
) -> Result<StatusCode, ApiError> {
    let session = state.session(&request_id, token).await?;
    let request = DeleteUserRequest {
        user: Some(UserKey {
            key: Some(user_key::Key::Openid(user::OpenId {
                appid: session.appid,
                openid: session.openid,
            })),
        }),
    };
    match state
        .user()
        .delete_user(state.request(&request_id, request))
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        // Deleted meanwhile (by another of the user's sessions): so much
        // the better.
        Err(status) if wxlogin_proto::reason::of(&status) == Some(Reason::UserNotFound) => {
            Ok(StatusCode::NO_CONTENT)
        }
        Err(status) => Err(status.into()),
    }
}

/// The logged-in user. Restarts the session's idle period.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "user",
    security(("session" = [])),
    responses(
        (status = 200, description = "The session's user.", body = UserOutput),
        openapi::SessionErrors,
    ),
)]
pub(crate) async fn me(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
) -> Result<Json<UserOutput>, ApiError> {
    let validated = state.validated(&request_id, token).await?;
    let user = state.user_of(&request_id, validated).await?;
    Ok(Json(UserOutput { user: user.into() }))
}

/// The identity headers `/v1/verify` answers with, for the service behind
/// the proxy. One list, so that the proxy configurations in `deploy/` and
/// the tests name the same ones.
pub mod identity {
    pub const USER_ID: &str = "x-wx-user-id";
    pub const OPENID: &str = "x-wx-openid";
    pub const UNIONID: &str = "x-wx-unionid";
    pub const APPID: &str = "x-wx-appid";
    pub const SESSION_ID: &str = "x-wx-session-id";
    /// Every one of them: a proxy removes these from what clients send.
    pub const ALL: [&str; 5] = [USER_ID, OPENID, UNIONID, APPID, SESSION_ID];
}

/// The methods `/v1/verify` answers: every method OpenAPI 3.1 can describe,
/// since a proxy may ask with the client's own.
const VERIFY_METHODS: MethodFilter = MethodFilter::GET
    .or(MethodFilter::HEAD)
    .or(MethodFilter::POST)
    .or(MethodFilter::PUT)
    .or(MethodFilter::PATCH)
    .or(MethodFilter::DELETE)
    .or(MethodFilter::OPTIONS)
    .or(MethodFilter::TRACE);

/// Forward authentication for a reverse proxy.
///
/// nginx `auth_request`, Traefik `ForwardAuth`, Envoy `ext_authz`, …, with
/// any of [`VERIFY_METHODS`]: `200` (no body) with the session's identity in headers, or the
/// same `401` as every other authenticated call. It costs what `GET /v1/me`
/// costs.
#[utoipa::path(
    get,
    path = "/v1/verify",
    tag = "session",
    security(("session" = [])),
    responses(openapi::VerifyAnswer, openapi::SessionErrors),
)]
pub(crate) async fn verify(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
) -> Result<Response, ApiError> {
    let headers = state.identity(&request_id, token).await?;
    Ok((StatusCode::OK, headers).into_response())
}

impl AppState {
    /// The identity headers of the live session `token` names.
    pub(crate) async fn identity(
        &self,
        request_id: &RequestId,
        token: String,
    ) -> Result<HeaderMap, ApiError> {
        let validated = self.validated(request_id, token).await?;
        let session_id = validated.session_id.clone();
        let user = self.user_of(request_id, validated).await?;
        let mut headers = HeaderMap::new();
        let values = [
            (identity::USER_ID, Some(user.id.to_string())),
            (identity::OPENID, Some(user.openid)),
            (identity::UNIONID, user.unionid),
            (identity::APPID, Some(user.appid)),
            (identity::SESSION_ID, Some(session_id)),
        ];
        for (name, value) in values {
            let Some(value) = value else { continue };
            let value = HeaderValue::try_from(value).map_err(|_| {
                tracing::error!(
                    header = name,
                    "an identity value is not a valid header value"
                );
                ApiError::internal()
            })?;
            headers.insert(HeaderName::from_static(name), value);
        }
        Ok(headers)
    }

    /// The user in the copy that came with `session` (opened in place);
    /// `None` when there is none this build can open.
    fn open_copy(
        &self,
        copy: &mut [u8],
        session: Option<&wxlogin_proto::auth::v1::Session>,
    ) -> Option<user::User> {
        let session = session?;
        user_copy::decode(&self.keys, copy, &session.appid, &session.openid)
    }

    /// The id of a validated session's user, when the session came with the
    /// user's copy (for audit events; `None` otherwise). Opens the copy in
    /// place.
    fn user_id_of(
        &self,
        validated: &mut wxlogin_proto::auth::v1::ValidateSessionResponse,
    ) -> Option<u64> {
        self.open_copy(&mut validated.user_copy, validated.session.as_ref())
            .map(|user| user.id)
    }

    /// The user of a validated session: the copy that came with it, else
    /// the user service's row.
    async fn user_of(
        &self,
        request_id: &RequestId,
        mut validated: wxlogin_proto::auth::v1::ValidateSessionResponse,
    ) -> Result<user::User, ApiError> {
        // The session usually comes with the user service's copy of its
        // user: then neither the user service nor MySQL is asked.
        if !validated.user_copy.is_empty()
            && let Some(user) = self.open_copy(&mut validated.user_copy, validated.session.as_ref())
        {
            return Ok(user);
        }
        let session = validated.session.ok_or_else(|| missing("session"))?;
        let key = Key::Openid(user::OpenId {
            appid: session.appid,
            openid: session.openid,
        });
        let found = self
            .user()
            .get_user(self.request(request_id, GetUserRequest { key: Some(key) }))
            .await;
        match found {
            Ok(response) => response.into_inner().user.ok_or_else(|| missing("user")),
            // A live session whose user is gone (the row was deleted): the
            // client must log in again, which registers the user anew.
            Err(status) if wxlogin_proto::reason::of(&status) == Some(Reason::UserNotFound) => {
                Err(ApiError::invalid_token())
            }
            Err(status) => Err(status.into()),
        }
    }
}

/// What `POST /v1/logout` may take; no body ends this session only. A
/// field it does not know is refused (a misspelt `all` must not end only
/// this session).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogoutInput {
    /// End every session of the user, this one included.
    #[serde(default)]
    all: bool,
}

/// End this session, or every session of the user.
///
/// Without a body (or with `{"all": false}`), this session's token is dead;
/// with `{"all": true}`, every session of the user is over, this one too.
#[utoipa::path(
    post,
    path = "/v1/logout",
    tag = "session",
    security(("session" = [])),
    request_body(
        description = "Optional: without a body, this session only.",
        content(
            (LogoutInput = "application/json"),
            (LogoutInput = "application/x-www-form-urlencoded"),
        ),
    ),
    responses(
        (status = 204, description = "The session (or every session of the user) is over."),
        openapi::LogoutErrors,
    ),
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    input: Option<Body<LogoutInput>>,
) -> Result<StatusCode, ApiError> {
    let mut validated = state.validated(&request_id, token.clone()).await?;
    let user_id = state.user_id_of(&mut validated);
    if input.is_some_and(|Body(input)| input.all) {
        let session = validated.session.ok_or_else(|| missing("session"))?;
        let request = RevokeSessionsRequest {
            appid: session.appid,
            openid: session.openid,
            session_id: None,
        };
        let ended = state
            .auth()
            .revoke_sessions(state.request(&request_id, request))
            .await?
            .into_inner()
            .ended;
        audit!(
            Event::Logout,
            user_id,
            all = true,
            ended,
            request_id = request_id.as_str()
        );
        return Ok(StatusCode::NO_CONTENT);
    }
    audit!(
        Event::Logout,
        user_id,
        session_id = %validated.session_id,
        request_id = request_id.as_str()
    );
    let ended = state
        .auth()
        .logout(state.request(&request_id, LogoutRequest { token }))
        .await?
        .into_inner()
        .ended;
    if ended {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::invalid_token())
    }
}

/// `{"sessions": […]}`, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionsOutput {
    sessions: Vec<SessionView>,
}

/// One of the user's live sessions.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub(crate) struct SessionView {
    /// The session's public id (32 hex digits of a SHA-256 of its token,
    /// as `X-Wx-Session-Id`): never the token, and no way to it.
    id: String,
    /// Whether this is the session of the token that asks.
    current: bool,
    /// RFC 3339, UTC.
    created_at: Option<String>,
    /// RFC 3339, UTC; recorded to the minute.
    last_used_at: Option<String>,
    #[schema(schema_with = openapi::user_agent_schema)]
    user_agent: Option<String>,
    /// The client's network at login: IPv4 /24 or IPv6 /48.
    #[schema(example = "203.0.113.0/24")]
    address_prefix: Option<String>,
}

/// The user's live sessions, newest first (restarts this session's idle
/// period).
#[utoipa::path(
    get,
    path = "/v1/me/sessions",
    tag = "session",
    security(("session" = [])),
    responses(
        (status = 200, description = "The user's live sessions.", body = SessionsOutput),
        openapi::SessionErrors,
    ),
)]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
) -> Result<Json<SessionsOutput>, ApiError> {
    let validated = state.validated(&request_id, token).await?;
    let session = validated.session.ok_or_else(|| missing("session"))?;
    let request = ListSessionsRequest {
        appid: session.appid,
        openid: session.openid,
    };
    let listed = state
        .auth()
        .list_sessions(state.request(&request_id, request))
        .await?
        .into_inner();
    let sessions = listed
        .sessions
        .into_iter()
        .map(|listed| SessionView {
            current: listed.session_id == validated.session_id,
            id: listed.session_id,
            created_at: rfc3339(listed.created_at),
            last_used_at: rfc3339(listed.last_used_at),
            user_agent: listed.user_agent,
            address_prefix: listed.address_prefix,
        })
        .collect();
    Ok(Json(SessionsOutput { sessions }))
}

/// End one of the user's sessions (its token is dead at once).
#[utoipa::path(
    delete,
    path = "/v1/me/sessions/{id}",
    tag = "session",
    security(("session" = [])),
    params(("id" = String, Path, description = "The session's id, as `GET /v1/me/sessions` lists it.")),
    responses(
        (status = 204, description = "The session is over."),
        openapi::EndSessionErrors,
    ),
)]
pub(crate) async fn end_session(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut validated = state.validated(&request_id, token).await?;
    let user_id = state.user_id_of(&mut validated);
    let session = validated.session.ok_or_else(|| missing("session"))?;
    let request = RevokeSessionsRequest {
        appid: session.appid,
        openid: session.openid,
        session_id: Some(id.clone()),
    };
    state
        .auth()
        .revoke_sessions(state.request(&request_id, request))
        .await?;
    audit!(
        Event::SessionRevoked,
        user_id,
        session_id = %id,
        by_session = %validated.session_id,
        request_id = request_id.as_str()
    );
    Ok(StatusCode::NO_CONTENT)
}

/// What wx.getUserInfo / getUserProfile hand the mini-program.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct EncryptedProfile {
    /// Base64 of the AES-128-CBC ciphertext.
    #[serde(rename = "encryptedData", alias = "encrypted_data")]
    encrypted_data: String,
    /// Base64 of the 16-byte IV.
    iv: String,
    /// Sent together with `signature`, or not at all.
    #[serde(default, rename = "rawData", alias = "raw_data")]
    raw_data: Option<String>,
    /// `sha1(rawData + session_key)`, in hex.
    #[serde(default)]
    signature: Option<String>,
}

fn user_of(response: user::UpdateUserResponse) -> Result<Json<UserOutput>, ApiError> {
    let user = response.user.ok_or_else(|| missing("user"))?;
    Ok(Json(UserOutput { user: user.into() }))
}

/// Decrypt and store the user's profile (`wx.getUserProfile`).
#[utoipa::path(
    post,
    path = "/v1/me/profile",
    tag = "user",
    security(("session" = [])),
    request_body(content(
        (EncryptedProfile = "application/json"),
        (EncryptedProfile = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The decrypted profile is stored.", body = UserOutput),
        openapi::SealedProfileErrors,
    ),
)]
pub(crate) async fn profile_from_encrypted(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    Body(input): Body<EncryptedProfile>,
) -> Result<Json<UserOutput>, ApiError> {
    let request = UpdateProfileFromEncryptedRequest {
        token,
        encrypted_data: input.encrypted_data,
        iv: input.iv,
        raw_data: input.raw_data,
        signature: input.signature,
    };
    let response = state
        .user()
        .update_profile_from_encrypted(state.request(&request_id, request))
        .await?;
    user_of(response.into_inner())
}

/// The profile fields users fill in themselves.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ProfileFields {
    #[serde(default, alias = "nickName")]
    #[schema(schema_with = openapi::nickname_schema)]
    nickname: Option<String>,
    #[serde(default, alias = "avatarUrl")]
    #[schema(schema_with = openapi::avatar_url_schema)]
    avatar_url: Option<String>,
}

/// Store the profile fields users fill in themselves.
#[utoipa::path(
    put,
    path = "/v1/me/profile",
    tag = "user",
    security(("session" = [])),
    request_body(content(
        (ProfileFields = "application/json"),
        (ProfileFields = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The fields are stored.", body = UserOutput),
        openapi::ProfileErrors,
    ),
)]
pub(crate) async fn update_profile(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    Body(input): Body<ProfileFields>,
) -> Result<Json<UserOutput>, ApiError> {
    let session = state.session(&request_id, token).await?;
    let request = UpdateProfileRequest {
        appid: session.appid,
        openid: session.openid,
        nickname: input.nickname,
        avatar_url: input.avatar_url,
    };
    let response = state
        .user()
        .update_profile(state.request(&request_id, request))
        .await?;
    user_of(response.into_inner())
}

/// Either the getPhoneNumber button's code, or its legacy encrypted data.
#[derive(Debug, Deserialize)]
pub(crate) struct PhoneInput {
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "encryptedData", alias = "encrypted_data")]
    encrypted_data: Option<String>,
    #[serde(default)]
    iv: Option<String>,
}

/// What `POST /v1/me/phone` takes, as the document describes it: one of the
/// two forms ([`PhoneInput`] reads them).
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub(crate) enum PhoneRequest {
    /// The getPhoneNumber button's code.
    Code { code: String },
    /// The legacy encrypted data.
    Encrypted {
        #[serde(rename = "encryptedData")]
        encrypted_data: String,
        iv: String,
    },
}

/// The stored phone number.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PhoneView {
    phone_number: Option<String>,
    pure_phone_number: Option<String>,
    country_code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PhoneOutput {
    phone: PhoneView,
    user: UserView,
}

/// Store the user's phone number.
///
/// From the getPhoneNumber button's code, or its legacy encrypted data.
#[utoipa::path(
    post,
    path = "/v1/me/phone",
    tag = "user",
    security(("session" = [])),
    request_body(content(
        (PhoneRequest = "application/json"),
        (PhoneRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The number is stored.", body = PhoneOutput),
        openapi::PhoneErrors,
    ),
)]
pub(crate) async fn phone(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    Body(input): Body<PhoneInput>,
) -> Result<Json<PhoneOutput>, ApiError> {
    let response = match input {
        PhoneInput {
            code: Some(code), ..
        } => {
            let answer = state
                .auth()
                .get_phone_number(state.request(&request_id, GetPhoneNumberRequest { token, code }))
                .await?
                .into_inner();
            let session = answer.session.ok_or_else(|| missing("session"))?;
            let phone = answer.phone.ok_or_else(|| missing("phone"))?;
            let request = UpdatePhoneRequest {
                appid: session.appid,
                openid: session.openid,
                phone_number: phone.phone_number,
                pure_phone_number: phone.pure_phone_number,
                country_code: phone.country_code,
            };
            state
                .user()
                .update_phone(state.request(&request_id, request))
                .await?
        }
        PhoneInput {
            encrypted_data: Some(encrypted_data),
            iv: Some(iv),
            ..
        } => {
            let request = UpdatePhoneFromEncryptedRequest {
                token,
                encrypted_data,
                iv,
            };
            state
                .user()
                .update_phone_from_encrypted(state.request(&request_id, request))
                .await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "send {\"code\"} or {\"encryptedData\", \"iv\"}",
            ));
        }
    };
    let user = response.into_inner().user.ok_or_else(|| missing("user"))?;
    let phone = PhoneView {
        phone_number: user.phone_number.clone(),
        pure_phone_number: user.pure_phone_number.clone(),
        country_code: user.phone_country_code.clone(),
    };
    Ok(Json(PhoneOutput {
        phone,
        user: user.into(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// `200` while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The gateway runs.", body = Health)),
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// What each service's health check answered.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Checks {
    auth: crate::Readiness,
    user: crate::Readiness,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    checks: Checks,
}

/// `200` when auth and user both serve, else `503 not_ready`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Auth and user both serve.", body = Ready),
        openapi::NotReady,
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let (auth, user) = tokio::join!(state.check_auth(), state.check_user());
    if auth.is_ready() && user.is_ready() {
        let checks = Checks { auth, user };
        return Json(Ready {
            status: "ready",
            checks,
        })
        .into_response();
    }
    let error = ApiError::new(
        Reason::NotReady,
        "a service the gateway needs is unavailable",
    );
    let mut body = error.body();
    body["status"] = json!("not_ready");
    body["checks"] = json!(Checks { auth, user });
    (error.status(), Json(body)).into_response()
}

/// What no route of wxlogin's own takes: proxy mode's routes
/// (`PROXY_ROUTES`), else 404.
async fn not_found(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    if let Some(proxy) = state.proxy.clone()
        && let Some(route) = proxy.route(request.uri().path())
    {
        return match proxied(&state, &proxy, route, request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
    }
    ApiError::new(Reason::NotFound, "no such endpoint").into_response()
}

/// A request under one of proxy mode's prefixes: its caller's identity, as
/// `/v1/verify` would answer it, then the upstream's answer.
async fn proxied(
    state: &AppState,
    proxy: &Proxy,
    route: &ProxyRoute,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let BearerToken(token) = BearerToken::from_request_parts(&mut parts, state).await?;
    let Ok(request_id) = RequestId::from_request_parts(&mut parts, state).await;
    let Ok(ClientIp(client)) = ClientIp::from_request_parts(&mut parts, state).await;
    let identity = state.identity(&request_id, token).await?;
    proxy.forward(route, parts, body, identity, client).await
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Reason::MethodNotAllowed,
        "this endpoint does not take this method",
    )
}
