//! `POST /v1/login`: a `wx.login()` code for a session token and its user.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wxlogin_proto::{
    auth::v1::{LoginRequest, LoginResponse, LogoutRequest, Session},
    reason::Reason,
    user::v1::{self as user, UpsertUserRequest, UpsertUserResponse},
};

use wxlogin_proto::{audit, audit::Event};

use super::{
    schema::{BODY, SERVICE, WECHAT, errors},
    views::UserView,
};
use crate::{
    client_ip::ClientIp,
    error::{ApiError, Missing},
    extract::{Body, RequestId, UserAgent},
    state::AppState,
};

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

errors! {
    /// What `POST /v1/login` can fail with.
    LoginErrors = [
        BODY,
        SERVICE,
        WECHAT,
        &[Reason::UnknownApp, Reason::InvalidCode, Reason::CodeUsed, Reason::UserBlocked],
    ];
}

/// The session auth opened for a login.
struct Opened {
    token: String,
    expires_in: u64,
    session: Session,
    /// The user service's sealed copy of the user, read with the session;
    /// empty without one.
    copy: Vec<u8>,
    /// Whether the copy is the whole answer: auth journaled the login for
    /// the user service, which must not be asked.
    recorded: bool,
}

impl TryFrom<LoginResponse> for Opened {
    type Error = Missing;

    fn try_from(answer: LoginResponse) -> Result<Self, Missing> {
        Ok(Opened {
            session: answer.session.ok_or(Missing("session"))?,
            token: answer.token,
            expires_in: answer.expires_in,
            copy: answer.user_copy,
            recorded: answer.login_recorded,
        })
    }
}

/// The user an upsert leaves, and whether it registered them.
struct Upserted {
    user: user::User,
    created: bool,
}

impl TryFrom<UpsertUserResponse> for Upserted {
    type Error = Missing;

    fn try_from(answer: UpsertUserResponse) -> Result<Self, Missing> {
        Ok(Upserted {
            user: answer.user.ok_or(Missing("user"))?,
            created: answer.created,
        })
    }
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
        LoginErrors,
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
    let mut login = Opened::try_from(state.auth().login(request).await?.into_inner())?;
    // A returning user whom the login changes in nothing stored: the copy
    // auth read with the session is the answer, and auth journaled the
    // login for the user service to record.
    if login.recorded
        && let Some(user) = state.open_copy(&mut login.copy, &login.session)
    {
        audit_login(&request_id, &user, false);
        return Ok(Json(LoginOutput {
            token: login.token,
            expires_in: login.expires_in,
            created: false,
            user: user.into(),
        }));
    }
    let upsert = state
        .user()
        .upsert_user(state.request(
            &request_id,
            UpsertUserRequest {
                appid: login.session.appid,
                openid: login.session.openid,
                unionid: login.session.unionid,
                cached_copy: login.copy,
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
    let Upserted { user, created } = upsert.try_into()?;
    audit_login(&request_id, &user, created);
    Ok(Json(LoginOutput {
        token: login.token,
        expires_in: login.expires_in,
        created,
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
