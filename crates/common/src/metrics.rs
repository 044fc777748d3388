//! Prometheus metrics: every service binary serves its own at
//! `METRICS_ADDR` (`/metrics`), through the `metrics` facade and
//! `metrics-exporter-prometheus`.
//!
//! Names follow Prometheus' conventions (`wxlogin_…_total` counters,
//! `…_seconds` histograms in base units) and labels stay low-cardinality:
//! a route, a gRPC method, a status, a reason, an appid; never an openid, a
//! token or a code. The names live here, one constant each, so that code,
//! dashboard and tests agree.
//!
//! Nothing is recorded until [`serve`] runs (each binary's `main` calls
//! it): libraries and in-process tests pay only the no-op recorder.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::config::{ConfigError, Source, optional};

/// The variable that says where a binary serves `/metrics` (`off` for
/// nowhere).
pub const ADDR_VAR: &str = "METRICS_ADDR";

/// Where each binary serves `/metrics` unless `METRICS_ADDR` says
/// otherwise: one port per service, so that the services can share a host.
pub fn default_addr(binary: &str) -> SocketAddr {
    let port = match binary {
        "wxlogin-gateway" => 9101,
        "wxlogin-auth" => 9102,
        "wxlogin-user" => 9103,
        _ => 9100,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Histogram buckets of every `…_seconds` metric: 0.5 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics: {0}")]
pub struct InstallError(String);

/// Starts serving `/metrics` at `addr`.
pub fn install(addr: SocketAddr) -> Result<(), InstallError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .map_err(|error| InstallError(error.to_string()))?
        .install()
        .map_err(|error| InstallError(format!("{addr}: {error}")))?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    Ok(())
}

/// Where a binary serves `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// `METRICS_ADDR=off`.
    Off,
    /// Its default port: when taken (another wxlogin on the host), the
    /// binary runs without metrics and says so.
    Default(SocketAddr),
    /// `METRICS_ADDR`: the binary does not start without it.
    Configured(SocketAddr),
}

/// Where `binary` serves `/metrics`: `METRICS_ADDR`, or its default.
pub fn addr(binary: &str, source: &dyn Source) -> Result<MetricsAddr, ConfigError> {
    match optional(source, ADDR_VAR).as_deref().map(str::trim) {
        None => Ok(MetricsAddr::Default(default_addr(binary))),
        Some("off") => Ok(MetricsAddr::Off),
        Some(text) => text.parse().map(MetricsAddr::Configured).map_err(|_| {
            ConfigError::invalid(ADDR_VAR, "must be host:port (e.g. 0.0.0.0:9101) or off")
        }),
    }
}

/// Serves `/metrics` where `addr` says. Only a configured address that
/// cannot be served is an error.
pub fn serve(addr: MetricsAddr) -> Result<(), InstallError> {
    match addr {
        MetricsAddr::Off => Ok(()),
        MetricsAddr::Configured(addr) => install(addr),
        MetricsAddr::Default(addr) => {
            if let Err(error) = install(addr) {
                tracing::warn!(%error, "running without metrics: set {ADDR_VAR} to a free address, or to off");
            }
            Ok(())
        }
    }
}

/// Declares each name as a constant, and [`name::ALL`] of them.
macro_rules! names {
    ($($(#[$doc:meta])* $name:ident = $value:literal;)*) => {
        $($(#[$doc])* pub const $name: &str = $value;)*
        /// Every name above (WeChat's calls are `wxlogin_wechat::metrics_names`).
        pub const ALL: &[&str] = &[$($name),*];
    };
}

/// The metric names, one owner each.
pub mod name {
    names! {
        /// HTTP requests the gateway answered, by `route`, `method`, `status`.
        HTTP_REQUESTS = "wxlogin_http_requests_total";
        /// Their latency, by `route` and `method`.
        HTTP_DURATION = "wxlogin_http_request_duration_seconds";
        /// gRPC calls a service answered, by `service`, `method`, `code`.
        GRPC_REQUESTS = "wxlogin_grpc_server_requests_total";
        /// Their latency, by `service` and `method`.
        GRPC_DURATION = "wxlogin_grpc_server_request_duration_seconds";
        /// Logins the gateway answered, by `outcome` (`ok` or the error code)
        /// and `created` (`true`, `false`, or `none` for a failed login).
        LOGINS = "wxlogin_logins_total";
        /// Code exchanges auth made at WeChat, by `appid` and `outcome` (`ok`;
        /// `refused`: an invalid, used or blocked code; `failed`: anything else,
        /// which `wxlogin_wechat_calls_total` details).
        CODE_EXCHANGES = "wxlogin_auth_code_exchanges_total";
        /// Submissions of a code that joined another's exchange instead of
        /// calling WeChat, by `via` (`process`: the same instance; `store`:
        /// another instance's outcome).
        CODE_JOINS = "wxlogin_auth_code_joins_total";
        /// access_token fetches from WeChat, by `appid` and `outcome`.
        ACCESS_TOKEN_REFRESHES = "wxlogin_auth_access_token_refreshes_total";
        /// Session checks, by `outcome` (`live`, `unknown`).
        SESSION_VALIDATIONS = "wxlogin_auth_session_validations_total";
        /// Whether the user's copy came with a session check or a login, by
        /// `result` (`hit`, `miss`).
        USER_COPY = "wxlogin_auth_user_copy_total";
        /// Requests refused because a budget was spent, by `budget`.
        RATE_LIMITED = "wxlogin_auth_rate_limited_total";
        /// Redis commands that failed, by `kind`: `unavailable` (Redis did not
        /// answer), `down` (refused at once while Redis is known down), `other`.
        REDIS_ERRORS = "wxlogin_redis_errors_total";
        /// 0 while this process knows Redis down, 1 once it answers again
        /// (absent until the first outage).
        REDIS_UP = "wxlogin_redis_up";
        /// gRPC calls a service made to another (the gateway to auth and
        /// user, user to auth), by `service` (the one called), `method`,
        /// `code` (as the caller saw it: a call that got no answer is
        /// `UNAVAILABLE`, or `DEADLINE_EXCEEDED` when its deadline passed).
        GRPC_CLIENT_REQUESTS = "wxlogin_grpc_client_requests_total";
        /// Their latency, by `service` and `method`.
        GRPC_CLIENT_DURATION = "wxlogin_grpc_client_request_duration_seconds";
        /// The user service's database pool (MySQL; SQLite in the
        /// single-process setup): its connections by `state` (`in_use`,
        /// `idle`), sampled every second.
        DB_POOL_CONNECTIONS = "wxlogin_db_pool_connections";
        /// The most connections the pool opens (`DB_MAX_CONNECTIONS`).
        DB_POOL_MAX = "wxlogin_db_pool_max_connections";
        /// Database statements that failed, by `kind`: `unavailable` (the
        /// database did not answer, or the pool had no connection in time),
        /// `down` (refused at once while the database is known down),
        /// `other`.
        DB_ERRORS = "wxlogin_db_errors_total";
    }
}

/// The part of a gRPC path a label (or a span's name) may carry: our own
/// methods and the health check's, else `other` (the path is the caller's
/// to choose).
pub(crate) fn grpc_method(path: &str) -> &str {
    if path.starts_with("/wxlogin.") || path.starts_with("/grpc.health.") {
        path.trim_start_matches('/')
    } else {
        "other"
    }
}

/// [`grpc_method`] as a label value: one allocation, shared by the call's
/// series.
fn method_label(path: &str) -> SharedString {
    match grpc_method(path) {
        "other" => SharedString::const_str("other"),
        method => SharedString::from(Arc::<str>::from(method)),
    }
}

/// The gRPC code of a unary call's answer. An error is answered
/// "trailers-only", its `grpc-status` in the headers; a success's is in the
/// trailers, after the body.
pub(crate) fn response_code<R>(response: &http::Response<R>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|code| code.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// The code of a call that got no answer: its deadline passed, or the
/// connection failed.
fn unanswered_code(error: &(dyn std::error::Error + 'static)) -> tonic::Code {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tonic::TimeoutExpired>() {
            return tonic::Code::DeadlineExceeded;
        }
        cause = error.source();
    }
    tonic::Code::Unavailable
}

/// One gRPC call, timed from when it was made: what both sides record.
pub(crate) struct GrpcCall {
    /// Which service answers (`auth`, `user`).
    service: &'static str,
    method: SharedString,
    started: Instant,
}

impl GrpcCall {
    /// A call to `path` of `service`, starting now.
    pub(crate) fn start(service: &'static str, path: &str) -> GrpcCall {
        GrpcCall {
            service,
            method: method_label(path),
            started: Instant::now(),
        }
    }

    fn record(&self, requests: &'static str, duration: &'static str, code: &'static str) {
        metrics::counter!(
            requests,
            "service" => self.service,
            "method" => self.method.clone(),
            "code" => code
        )
        .increment(1);
        metrics::histogram!(duration, "service" => self.service, "method" => self.method.clone())
            .record(self.started.elapsed().as_secs_f64());
    }

    /// The caller's side of the call ended with `result`; answers its code.
    pub(crate) fn answered<R, E>(&self, result: &Result<http::Response<R>, E>) -> tonic::Code
    where
        E: std::error::Error + 'static,
    {
        let code = match result {
            Ok(response) => response_code(response),
            Err(error) => unanswered_code(error),
        };
        self.record(
            name::GRPC_CLIENT_REQUESTS,
            name::GRPC_CLIENT_DURATION,
            code_name(code),
        );
        code
    }
}

/// A tower layer for a tonic server: counts each call by method and gRPC
/// code and times it.
#[derive(Debug, Clone, Copy)]
pub struct GrpcServerLayer {
    service: &'static str,
}

/// Metrics of the gRPC server of `service` (`auth`, `user`).
pub fn grpc_server_layer(service: &'static str) -> GrpcServerLayer {
    GrpcServerLayer { service }
}

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcServerMetrics<S>;

    fn layer(&self, inner: S) -> GrpcServerMetrics<S> {
        GrpcServerMetrics {
            inner,
            service: self.service,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcServerMetrics<S> {
    inner: S,
    service: &'static str,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcServerMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = GrpcCall::start(self.service, request.uri().path());
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => code_name(response_code(response)),
                Err(_) => "transport",
            };
            call.record(name::GRPC_REQUESTS, name::GRPC_DURATION, code);
            result
        })
    }
}

/// The canonical name of a gRPC code (`OK`, `UNAVAILABLE`, …).
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Map;

    #[test]
    fn the_address_is_the_default_an_address_or_off() {
        let none = Map::new(&[]);
        assert_eq!(
            addr("wxlogin-auth", &none).unwrap(),
            MetricsAddr::Default(default_addr("wxlogin-auth"))
        );
        let set = Map::new(&[(ADDR_VAR, "0.0.0.0:9999")]);
        assert_eq!(
            addr("wxlogin-auth", &set).unwrap(),
            MetricsAddr::Configured("0.0.0.0:9999".parse().unwrap())
        );
        assert_eq!(
            addr("x", &Map::new(&[(ADDR_VAR, "off")])).unwrap(),
            MetricsAddr::Off
        );
        assert!(addr("x", &Map::new(&[(ADDR_VAR, "nine")])).is_err());
        let ports: std::collections::BTreeSet<u16> =
            ["wxlogin-gateway", "wxlogin-auth", "wxlogin-user", "wxlogin"]
                .map(|binary| default_addr(binary).port())
                .into();
        assert_eq!(ports.len(), 4, "each binary has a port of its own");
    }

    #[test]
    fn only_our_methods_are_labels() {
        assert_eq!(
            grpc_method("/wxlogin.auth.v1.AuthService/Login"),
            "wxlogin.auth.v1.AuthService/Login"
        );
        assert_eq!(
            grpc_method("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(grpc_method("/evil/0123456789"), "other");
    }
}
