//! `/v1/verify`: forward authentication for a reverse proxy, and the
//! identity headers it answers with, which proxy mode forwards too.

use std::collections::BTreeMap;

use axum::{
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::MethodFilter,
};
use utoipa::openapi::{
    Header, ObjectBuilder, RefOr, ResponseBuilder, Type, response::Response as ApiResponse,
};

use super::schema::{BEARER, SERVICE, errors};
use crate::{
    error::ApiError,
    extract::{BearerToken, RequestId},
    state::AppState,
};

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
pub(super) const VERIFY_METHODS: MethodFilter = MethodFilter::GET
    .or(MethodFilter::HEAD)
    .or(MethodFilter::POST)
    .or(MethodFilter::PUT)
    .or(MethodFilter::PATCH)
    .or(MethodFilter::DELETE)
    .or(MethodFilter::OPTIONS)
    .or(MethodFilter::TRACE);

errors! {
    /// What `/v1/verify` can fail with.
    VerifyErrors = [BEARER, SERVICE];
}

/// `/v1/verify`'s answer: the identity headers, from the one list of them.
pub(crate) struct VerifyAnswer;

impl utoipa::IntoResponses for VerifyAnswer {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        let mut response =
            ResponseBuilder::new().description("The session is live; its identity is in headers.");
        for (name, what) in [
            (identity::USER_ID, "The user's id."),
            (identity::OPENID, "The user's openid."),
            (identity::UNIONID, "The user's unionid, only when known."),
            (identity::APPID, "The mini-program's appid."),
            (
                identity::SESSION_ID,
                "A stable id of this session (32 hex digits of a SHA-256 of the token).",
            ),
        ] {
            let schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(what));
            response = response.header(name, Header::new(schema));
        }
        BTreeMap::from([("200".to_owned(), RefOr::T(response.build()))])
    }
}

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
    responses(VerifyAnswer, VerifyErrors),
)]
pub(crate) async fn verify(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
) -> Result<Response, ApiError> {
    let headers = identity_headers(&state, &request_id, token).await?;
    Ok((StatusCode::OK, headers).into_response())
}

/// The identity headers of the live session `token` names: `/v1/verify`'s
/// answer, and what proxy mode forwards.
pub(super) async fn identity_headers(
    state: &AppState,
    request_id: &RequestId,
    token: String,
) -> Result<HeaderMap, ApiError> {
    let session = state.session(request_id, token).await?;
    let session_id = session.id.clone();
    let user = state.user_of(request_id, session).await?;
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
