//! `POST /v1/logout`: this session ended, or every session of its user.

use axum::{extract::State, http::StatusCode};
use serde::Deserialize;
use utoipa::ToSchema;
use wxlogin_proto::auth::v1::{LogoutRequest, RevokeSessionsRequest};

use wxlogin_proto::{audit, audit::Event};

use super::schema::{BEARER, BODY, SERVICE, errors};
use crate::{
    error::ApiError,
    extract::{BearerToken, Body, RequestId},
    state::AppState,
};

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

errors! {
    /// What `POST /v1/logout` can fail with (its body is optional).
    LogoutErrors = [BODY, BEARER, SERVICE];
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
        LogoutErrors,
    ),
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    input: Option<Body<LogoutInput>>,
) -> Result<StatusCode, ApiError> {
    let mut valid = state.session(&request_id, token.clone()).await?;
    let user_id = state.user_id_of(&mut valid);
    if input.is_some_and(|Body(input)| input.all) {
        let request = RevokeSessionsRequest {
            appid: valid.session.appid,
            openid: valid.session.openid,
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
        session_id = %valid.id,
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
