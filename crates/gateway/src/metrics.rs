//! The gateway's HTTP metrics (names: `wxlogin_common::metrics::name`).

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use wxlogin_common::metrics::name;

/// Counts and times every answer by route (the route's pattern; `other`
/// for what no route of wxlogin's matched: proxy mode, 404s), method and
/// status.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        name::HTTP_REQUESTS,
        "route" => route.clone(),
        "method" => method,
        "status" => status
    )
    .increment(1);
    metrics::histogram!(name::HTTP_DURATION, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: the client picks it, so anything but the
/// standard ones is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts a login's answer: `ok` with whether it registered the user, or
/// the error's code.
pub(crate) fn login(outcome: Result<bool, &'static str>) {
    let (outcome, created) = match outcome {
        Ok(true) => ("ok", "true"),
        Ok(false) => ("ok", "false"),
        Err(code) => (code, "none"),
    };
    metrics::counter!(name::LOGINS, "outcome" => outcome, "created" => created).increment(1);
}
