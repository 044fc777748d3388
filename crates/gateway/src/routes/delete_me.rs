//! `DELETE /v1/me`: the session's user's account, deleted.

use axum::{extract::State, http::StatusCode};
use wxlogin_proto::{
    reason::Reason,
    user::v1::{self as user, DeleteUserRequest, UserKey, user_key},
};

use super::schema::{BEARER, SERVICE, errors};
use crate::{
    error::ApiError,
    extract::{BearerToken, RequestId},
    state::AppState,
};

errors! {
    /// What `DELETE /v1/me` can fail with.
    DeleteMeErrors = [BEARER, SERVICE];
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
        DeleteMeErrors,
    ),
)]
pub(crate) async fn delete_me(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
) -> Result<StatusCode, ApiError> {
    let session = state.session(&request_id, token).await?.session;
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
