//! The auth service: exchanges login codes at the login provider (WeChat's
//! mini-program, `wxlogin_wechat::MiniProgram`, built here and the only
//! place that names it; the service calls `wxlogin_provider::LoginProvider`
//! alone), keeps each user's latest `session_key`, and issues, resolves and
//! ends our own opaque session tokens, stored by their SHA-256.
//!
//! - [`service`]: the gRPC calls ([`service::login`]: the login of a code,
//!   one exchange per code among every instance);
//! - [`store`]: what outlives a request, as narrow traits (sessions, code
//!   exchanges, access tokens, budgets), each in Redis and in process;
//! - [`limit`]: the budgets on every path that spends the app's quota at
//!   the provider;
//! - [`access_token`]: the apps' shared access_tokens; [`sealed_outcome`]: a
//!   login's answer sealed under its code; [`token`]: session tokens.
//!
//! It owns the `session_key` and never lets it out: not in a response, not in
//! a log line, not in `Debug` output; only the user service gets it, to
//! open the user's data. It knows nothing of users' profiles; that is the
//! user service's, whose copies it only carries as opaque bytes. Key formats
//! and scripts are `wxlogin_redis`'s.

pub mod access_token;
pub mod config;
pub mod error;
pub mod limit;
pub mod sealed_outcome;
pub mod service;
pub mod store;
pub mod token;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use wxlogin_proto::auth::v1::auth_service_server::AuthServiceServer;
use wxlogin_proto::caller::{Authenticator, Caller};

pub use config::Config;
use service::Auth;
use store::{StoreError, Stores};
use wxlogin_common::clock::Clock;

/// How often readiness re-checks Redis when nothing else told it Redis's
/// state changed: bounds how long `/readyz` misses an outage no request saw.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot reach Redis: {0}")]
    Redis(#[from] StoreError),
    #[error("cannot build the WeChat client: {0}")]
    Wechat(#[from] wxlogin_wechat::Error),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A bound, ready-to-serve auth service.
pub struct Application {
    listener: TcpListener,
    auth: Auth,
    callers: Authenticator,
}

impl Application {
    /// Connects to Redis, builds the WeChat client and the login provider
    /// on it, and binds the listener (port 0 picks a free one; see
    /// [`Application::local_addr`]).
    pub async fn build(config: Config) -> Result<Application, StartError> {
        let clock = Clock::system();
        let stores = Stores::connect(
            &config.redis_url,
            &config.redis_key_prefix,
            config.sessions,
            clock.clone(),
        )
        .await?;
        let wechat = wxlogin_wechat::Client::new(config.wechat.clone())?;
        let access_tokens = access_token::AccessTokens::new(
            stores.access_tokens.clone(),
            Arc::new(wechat.clone()),
            config.wechat.timeout,
            clock.clone(),
        );
        let provider = wxlogin_wechat::MiniProgram::new(
            wechat,
            config.apps.credentials().cloned(),
            Arc::new(access_tokens),
        );
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        tracing::info!(
            apps = ?config.apps.appids().collect::<Vec<_>>(),
            default_app = config.apps.default_appid(),
            wechat = %config.wechat.base_url,
            "auth service configured"
        );
        Ok(Application {
            listener,
            auth: Auth::new(
                config.apps,
                Arc::new(provider),
                limit::Limiter::new(stores.budgets.clone(), config.limits, clock.clone()),
                stores,
                config.wechat.timeout,
                clock,
            ),
            callers: Authenticator::new(&[
                (&config.internal_secret, Caller::Internal),
                (&config.internal_user_secret, Caller::UserService),
            ]),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        wxlogin_common::service::bound_addr(&self.listener)
    }

    /// Serves until `shutdown` completes, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let addr = self.local_addr();
        let (reporter, health) = tonic_health::server::health_reporter();
        let store = self.auth.stores().clone();
        let probe = tokio::spawn(async move {
            let mut serving = None;
            // Redis's breaker tells at once when commands start or stop
            // failing; the PING finds an outage while no request runs.
            let mut availability = store.availability();
            loop {
                let ok = store.ping().await.is_ok();
                if serving != Some(ok) {
                    // Only the named service follows Redis: "" stays SERVING
                    // while the process serves, for liveness probes.
                    if ok {
                        reporter.set_serving::<AuthServiceServer<Auth>>().await;
                    } else {
                        tracing::warn!("Redis does not answer: reporting NOT_SERVING");
                        reporter.set_not_serving::<AuthServiceServer<Auth>>().await;
                    }
                    serving = Some(ok);
                }
                match &mut availability {
                    Some(changes) => {
                        if let Ok(Err(_)) =
                            tokio::time::timeout(HEALTH_PROBE_INTERVAL, changes.changed()).await
                        {
                            availability = None;
                        }
                    }
                    None => tokio::time::sleep(HEALTH_PROBE_INTERVAL).await,
                }
            }
        });
        tracing::info!(%addr, "auth service listening");
        let result = wxlogin_common::grpc::server()
            .layer(wxlogin_common::metrics::grpc_server_layer("auth"))
            .layer(wxlogin_common::request_id::grpc_trace_layer("auth"))
            .add_service(health)
            .add_service(AuthServiceServer::with_interceptor(self.auth, self.callers))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await;
        probe.abort();
        tracing::info!("auth service stopped");
        Ok(result?)
    }
}
