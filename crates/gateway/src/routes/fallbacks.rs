//! What no route of wxlogin's own takes: proxy mode's routes
//! (`PROXY_ROUTES`), authenticated here as `/v1/verify` authenticates and
//! then forwarded; else `404`, and `405` for a method a route does not take.

use axum::{
    extract::{FromRequestParts, Request, State},
    response::{IntoResponse, Response},
};
use wxlogin_proto::reason::Reason;

use super::verify::identity_headers;
use crate::{
    client_ip::ClientIp,
    error::ApiError,
    extract::{BearerToken, RequestId},
    proxy::{Proxy, ProxyRoute},
    state::AppState,
};

/// Proxy mode's routes, else 404.
pub(super) async fn not_found(State(state): State<AppState>, request: Request) -> Response {
    if let Some(proxy) = state.proxy()
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
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let BearerToken(token) = BearerToken::from_request_parts(&mut parts, state).await?;
    let Ok(request_id) = RequestId::from_request_parts(&mut parts, state).await;
    let Ok(ClientIp(client)) = ClientIp::from_request_parts(&mut parts, state).await;
    let identity = identity_headers(state, &request_id, token).await?;
    proxy.forward(route, parts, body, identity, client).await
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Reason::MethodNotAllowed,
        "this endpoint does not take this method",
    )
}
