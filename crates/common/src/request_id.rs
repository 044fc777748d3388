//! The request id that follows a request from the gateway's HTTP layer into
//! every gRPC call it makes, and into the log lines of every service.

use http::{HeaderName, Request};
use tower_http::trace::{MakeSpan, TraceLayer};
use tracing::{Span, field::Empty};

use crate::{metrics, telemetry};

/// Header (HTTP) and metadata key (gRPC) that carries the request id.
pub const HEADER: &str = "x-request-id";

/// The header name as a typed constant.
pub static HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);

/// The request id of `request`, or `-` when it has none.
pub fn of<B>(request: &Request<B>) -> &str {
    request
        .headers()
        .get(&HEADER_NAME)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
}

/// Opens one span per request named after the path, with its request id.
/// Query strings are left out: they are where secrets would travel.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpan {
    pub service: &'static str,
}

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let span = tracing::info_span!(
            "request",
            service = self.service,
            method = %request.method(),
            path = request.uri().path(),
            request_id = of(request),
            otel.kind = Empty,
            otel.name = Empty,
        );
        if telemetry::exporting() {
            // A server span, named by its gRPC method, or by its HTTP
            // method until the gateway's router finds the route.
            span.record("otel.kind", "server");
            if is_grpc(request) {
                span.record("otel.name", metrics::grpc_method(request.uri().path()));
            } else {
                span.record("otel.name", request.method().as_str());
            }
            telemetry::continue_trace(&span, request.headers());
        }
        span
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// Tracing for a tonic server: one span per RPC carrying the caller's request id.
///
/// A failed RPC is logged at DEBUG only: most are a client's mistake (a used
/// code, an expired token) or a client that went away, and each service's
/// error mapping already logged, at the level it deserves, what an operator
/// must act on.
pub fn grpc_trace_layer(
    service: &'static str,
) -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    RequestSpan,
    tower_http::trace::DefaultOnRequest,
    tower_http::trace::DefaultOnResponse,
    tower_http::trace::DefaultOnBodyChunk,
    tower_http::trace::DefaultOnEos,
    tower_http::trace::DefaultOnFailure,
> {
    TraceLayer::new_for_grpc()
        .make_span_with(RequestSpan { service })
        .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG))
}
