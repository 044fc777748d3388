//! `DELETE /v1/me/sessions/{id}`: one of the user's sessions, ended.

use axum::{
    extract::{Path, State},
    http::StatusCode,
};
use wxlogin_proto::{auth::v1::RevokeSessionsRequest, reason::Reason};

use wxlogin_proto::{audit, audit::Event};

use super::schema::{BEARER, SERVICE, errors};
use crate::{
    error::ApiError,
    extract::{BearerToken, RequestId},
    state::AppState,
};

errors! {
    /// What `DELETE /v1/me/sessions/{id}` can fail with.
    EndSessionErrors = [BEARER, SERVICE, &[Reason::SessionNotFound]];
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
        EndSessionErrors,
    ),
)]
pub(crate) async fn end_session(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut valid = state.session(&request_id, token).await?;
    let user_id = state.user_id_of(&mut valid);
    let request = RevokeSessionsRequest {
        appid: valid.session.appid,
        openid: valid.session.openid,
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
        by_session = %valid.id,
        request_id = request_id.as_str()
    );
    Ok(StatusCode::NO_CONTENT)
}
