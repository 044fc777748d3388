//! The floor servers, run as `wxlogin-bench floor-grpc` and
//! `wxlogin-bench floor-http` so that, like the gateway and auth, each is a
//! process of its own.
//!
//! They are as small as a gateway → auth → Redis call can be: one tonic
//! unary RPC (auth's `ValidateSession` messages, on a hand-written service
//! so that no generated trait has to be implemented in full) doing one
//! Redis `GET`, called from one axum handler. No logging, no request ids,
//! no JSON errors beyond a status: only what the real path cannot avoid.

use std::{convert::Infallible, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::get,
};
use redis::aio::ConnectionManager;
use serde_json::json;
use tokio::net::TcpListener;
use tonic::{
    Status,
    body::Body,
    codegen::{BoxFuture, Context, Poll, Service, http},
    server::{NamedService, UnaryService},
    transport::{Channel, Endpoint, Server, server::TcpIncoming},
};
use wxlogin_proto::auth::v1::{Session, ValidateSessionRequest, ValidateSessionResponse};
use wxlogin_proto::codec::Codec;
use wxlogin_wechat_sim::DEFAULT_APPID;

use crate::cli::{FloorGrpcArgs, FloorHttpArgs};

const SERVICE: &str = "wxlogin.bench.v1.Floor";
const LOOKUP: &str = "/wxlogin.bench.v1.Floor/Lookup";

/// The Redis key the floor gRPC server reads for `token`.
pub fn session_key(prefix: &str, token: &str) -> String {
    format!("{prefix}floor:session:{token}")
}

/// Answers every call as `Lookup`: a token in, the session stored under it out.
#[derive(Clone)]
struct Floor {
    redis: ConnectionManager,
    prefix: Arc<str>,
}

impl Floor {
    async fn lookup(
        &self,
        request: tonic::Request<ValidateSessionRequest>,
    ) -> Result<tonic::Response<ValidateSessionResponse>, Status> {
        let token = request.into_inner().token;
        let mut redis = self.redis.clone();
        let openid: Option<String> = redis::cmd("GET")
            .arg(session_key(&self.prefix, &token))
            .query_async(&mut redis)
            .await
            .map_err(|_| Status::unavailable("redis"))?;
        let openid = openid.ok_or_else(|| Status::unauthenticated("invalid token"))?;
        Ok(tonic::Response::new(ValidateSessionResponse {
            session: Some(Session {
                appid: DEFAULT_APPID.to_owned(),
                openid,
                ..Session::default()
            }),
            ..ValidateSessionResponse::default()
        }))
    }
}

struct Lookup(Floor);

impl UnaryService<ValidateSessionRequest> for Lookup {
    type Response = ValidateSessionResponse;
    type Future = BoxFuture<tonic::Response<ValidateSessionResponse>, Status>;

    fn call(&mut self, request: tonic::Request<ValidateSessionRequest>) -> Self::Future {
        let floor = self.0.clone();
        Box::pin(async move { floor.lookup(request).await })
    }
}

impl NamedService for Floor {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for Floor {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let lookup = Lookup(self.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Codec::<
                ValidateSessionResponse,
                ValidateSessionRequest,
            >::default());
            Ok(grpc.unary(lookup, request).await)
        })
    }
}

/// `wxlogin-bench floor-grpc`: serves until SIGTERM or Ctrl-C.
pub async fn serve_grpc(args: FloorGrpcArgs) -> anyhow::Result<()> {
    let redis = super::redis_connection(&args.redis).await?;
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let floor = Floor {
        redis,
        prefix: args.prefix.into(),
    };
    // As the services do: small messages want no Nagle delay.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(floor)
        .serve_with_incoming_shutdown(incoming, wxlogin_common::shutdown::signal())
        .await
        .context("the floor gRPC server failed")
}

#[derive(Clone)]
struct HttpFloor {
    grpc: tonic::client::Grpc<Channel>,
}

async fn me(State(state): State<HttpFloor>, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut grpc = state.grpc;
    if grpc.ready().await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut request = tonic::Request::new(ValidateSessionRequest {
        token: token.to_owned(),
    });
    // The gateway puts a deadline on every call; so does the floor.
    request.set_timeout(Duration::from_secs(10));
    let answer = grpc
        .unary(
            request,
            http::uri::PathAndQuery::from_static(LOOKUP),
            Codec::<ValidateSessionRequest, ValidateSessionResponse>::default(),
        )
        .await;
    match answer.map(|response| response.into_inner().session) {
        Ok(Some(session)) => Json(json!({
            "user": { "appid": session.appid, "openid": session.openid }
        }))
        .into_response(),
        Ok(None) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            StatusCode::UNAUTHORIZED.into_response()
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// `wxlogin-bench floor-http`: serves until SIGTERM or Ctrl-C.
pub async fn serve_http(args: FloorHttpArgs) -> anyhow::Result<()> {
    // Configured as the gateway configures its channels.
    let channel = Endpoint::from_shared(args.grpc_url)
        .context("--grpc-url is not a URL")?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy();
    let state = HttpFloor {
        grpc: tonic::client::Grpc::new(channel),
    };
    let router = Router::new()
        .route("/v1/me", get(me))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .with_state(state);
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    axum::serve(listener, router)
        .with_graceful_shutdown(wxlogin_common::shutdown::signal())
        .await
        .context("the floor HTTP server failed")
}
