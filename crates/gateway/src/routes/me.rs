//! `GET /v1/me`: the session's user.

use axum::{Json, extract::State};

use super::{
    schema::{BEARER, SERVICE, errors},
    views::UserOutput,
};
use crate::{
    error::ApiError,
    extract::{BearerToken, RequestId},
    state::AppState,
};

errors! {
    /// What `GET /v1/me` can fail with.
    MeErrors = [BEARER, SERVICE];
}

/// The logged-in user. Restarts the session's idle period.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "user",
    security(("session" = [])),
    responses(
        (status = 200, description = "The session's user.", body = UserOutput),
        MeErrors,
    ),
)]
pub(crate) async fn me(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
) -> Result<Json<UserOutput>, ApiError> {
    let session = state.session(&request_id, token).await?;
    let user = state.user_of(&request_id, session).await?;
    Ok(Json(user.into()))
}
