//! The gateway: the HTTP API the mini-program calls (axum). It validates and
//! translates requests, calls the auth and user services over gRPC and turns
//! their answers into JSON; in proxy mode it also fronts the team's own
//! services.
//!
//! Its secrets are the internal credential its gRPC calls carry and the
//! data keys (`DATA_ENCRYPTION_KEYS`) that open the user copies sessions
//! come with. It holds no state of its own: no WeChat credentials, no
//! database, no Redis; it never sees a `session_key`.
//!
//! This file binds and serves; the routes are in [`routes`], what they
//! share (the upstreams and the one session resolver) in `state`.

pub mod client_ip;
pub mod config;
pub mod error;
pub mod extract;
mod metrics;
pub mod openapi;
pub mod proxy;
pub mod routes;
mod state;

use std::{future::Future, net::SocketAddr};

use axum::{Router, extract::DefaultBodyLimit};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnFailure, MakeSpan, TraceLayer},
};
use wxlogin_common::grpc::Upstream;
use wxlogin_common::request_id::RequestSpan;

use crate::state::AppState;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{name} is not a valid gRPC endpoint: {source}")]
    Upstream {
        name: &'static str,
        source: tonic::transport::Error,
    },
    #[error("HTTP server: {0}")]
    Serve(#[from] std::io::Error),
    #[error("proxy mode's HTTP client: {0}")]
    Proxy(String),
}

fn upstream(
    name: &'static str,
    service: &'static str,
    url: &str,
    config: &Config,
) -> Result<Upstream, StartError> {
    Upstream::new(
        service,
        url,
        config.upstream_connections,
        &config.internal_secret,
        config.upstream_timeout,
    )
    .map_err(|source| StartError::Upstream { name, source })
}

/// Each request's span (see [`RequestSpan`]); when traces are exported, a
/// server span named by its route, e.g. `POST /v1/login` (layers added
/// with `Router::layer` run after routing: the route is known).
#[derive(Debug, Clone, Copy)]
struct HttpSpan;

impl<B> MakeSpan<B> for HttpSpan {
    fn make_span(&mut self, request: &axum::http::Request<B>) -> tracing::Span {
        let span = RequestSpan { service: "gateway" }.make_span(request);
        if wxlogin_common::telemetry::exporting() {
            let route = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or("other", axum::extract::MatchedPath::as_str);
            span.record("otel.name", format!("{} {route}", request.method()));
        }
        span
    }
}

/// A bound, ready-to-serve gateway.
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartError> {
        let auth = upstream("AUTH_URL", "auth", &config.auth_url, &config)?;
        let user = upstream("USER_URL", "user", &config.user_url, &config)?;
        let proxy = match config.proxy_routes.is_empty() {
            true => None,
            false => Some(
                proxy::Proxy::new(config.proxy_routes.clone(), config.proxy_timeout)
                    .map_err(|error| StartError::Proxy(error.to_string()))?,
            ),
        };
        let state = AppState::new(
            auth,
            user,
            config.trusted_proxies.clone(),
            proxy,
            config.data_keys.clone(),
        );
        let router = routes::router(openapi::router())
            .layer(DefaultBodyLimit::max(config.body_limit))
            .layer(axum::middleware::from_fn(metrics::record))
            .layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                    .layer(
                        // Failed answers are logged by `ApiError` at the level
                        // they deserve; an outage's 503s are not each an ERROR.
                        TraceLayer::new_for_http()
                            .make_span_with(HttpSpan)
                            .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
                    )
                    .layer(PropagateRequestIdLayer::x_request_id())
                    .layer(CatchPanicLayer::custom(
                        |_: Box<dyn std::any::Any + Send>| {
                            use axum::response::IntoResponse;
                            tracing::error!("a handler panicked");
                            error::ApiError::internal().into_response()
                        },
                    )),
            )
            .with_state(state);
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        Ok(Application { listener, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        wxlogin_common::service::bound_addr(&self.listener)
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        tracing::info!(addr = %self.local_addr(), "gateway listening");
        // With the peer's address: auth budgets logins per client address.
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}
