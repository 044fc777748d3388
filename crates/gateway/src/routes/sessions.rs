//! `GET /v1/me/sessions`: the user's live sessions.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use wxlogin_proto::auth::v1::ListSessionsRequest;

use super::{
    schema::{BEARER, SERVICE, errors, user_agent_schema},
    views::rfc3339,
};
use crate::{
    error::ApiError,
    extract::{BearerToken, RequestId},
    state::AppState,
};

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
    #[schema(schema_with = user_agent_schema)]
    user_agent: Option<String>,
    /// The client's network at login: IPv4 /24 or IPv6 /48.
    #[schema(example = "203.0.113.0/24")]
    address_prefix: Option<String>,
}

errors! {
    /// What `GET /v1/me/sessions` can fail with.
    SessionsErrors = [BEARER, SERVICE];
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
        SessionsErrors,
    ),
)]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
) -> Result<Json<SessionsOutput>, ApiError> {
    let valid = state.session(&request_id, token).await?;
    let request = ListSessionsRequest {
        appid: valid.session.appid,
        openid: valid.session.openid,
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
            current: listed.session_id == valid.id,
            id: listed.session_id,
            created_at: rfc3339(listed.created_at),
            last_used_at: rfc3339(listed.last_used_at),
            user_agent: listed.user_agent,
            address_prefix: listed.address_prefix,
        })
        .collect();
    Ok(Json(SessionsOutput { sessions }))
}
