//! How our services call each other over gRPC: one way to open the
//! connections to an upstream, to build a call (deadline, request id,
//! credential), to check a caller's credential, and to configure a server so
//! that callers who give up do not bring a connection down.

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use tonic::{
    metadata::{AsciiMetadataValue, MetadataValue},
    transport::{Channel, Endpoint, Server},
};

use crate::{
    config::{ConfigError, Source, optional, parsed},
    metrics::{GrpcCall, code_name},
    request_id, telemetry,
};

/// The metadata key that carries an internal caller's credential.
pub const CREDENTIAL_HEADER: &str = "authorization";

/// Shortest internal secret we accept: 32 characters.
pub const MIN_SECRET_LEN: usize = 32;

/// The secret every internal caller (the gateway, the team's own services)
/// presents to auth and user.
pub const INTERNAL_SECRET: &str = "INTERNAL_SECRET";
/// The user service's own secret toward auth: the only credential auth
/// answers session keys to.
pub const INTERNAL_USER_SECRET: &str = "INTERNAL_USER_SECRET";

/// How many HTTP/2 streams one caller may have open on one connection, and
/// how many streams it may reset before the server has accepted them.
///
/// h2 sends GOAWAY once more than 20 (its default) streams were reset before
/// the server accepted them (a guard against "rapid reset" floods). A caller
/// that hits its deadline while the server is frozen or saturated cancels
/// every call it has queued, easily more than 20, and the GOAWAY then kills
/// every other call on that connection. Callers are authenticated internal
/// services, so the guard is set at the stream limit: a caller can never
/// have more streams to reset than it may open.
const MAX_STREAMS: u32 = 4096;

/// A gRPC server configured for internal callers (see [`MAX_STREAMS`]).
pub fn server() -> Server {
    Server::builder()
        .max_concurrent_streams(MAX_STREAMS)
        .http2_max_pending_accept_reset_streams(Some(MAX_STREAMS as usize))
        .http2_max_local_error_reset_streams(Some(MAX_STREAMS as usize))
}

/// An internal secret from `name`, at least [`MIN_SECRET_LEN`] characters.
pub fn secret(source: &dyn Source, name: &str) -> Result<SecretString, ConfigError> {
    let value = optional(source, name).ok_or_else(|| {
        ConfigError::invalid(
            name,
            format!(
                "must be set to a random secret of at least {MIN_SECRET_LEN} characters \
                 (e.g. `openssl rand -hex 32`), the same in every service"
            ),
        )
    })?;
    if value.len() < MIN_SECRET_LEN {
        return Err(ConfigError::invalid(
            name,
            format!("is shorter than {MIN_SECRET_LEN} characters"),
        ));
    }
    if AsciiMetadataValue::try_from(format!("Bearer {value}")).is_err() {
        return Err(ConfigError::invalid(
            name,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(SecretString::from(value))
}

/// Connections to one upstream service, and how each call to it is made.
///
/// Several HTTP/2 connections, used in turn: behind a Kubernetes Service
/// each connection lands on a replica of its own, and a connection that
/// breaks takes only its share of the calls in flight with it. Each
/// connects on first use and reconnects by itself, so a caller starts (and
/// reports not ready) while the service it calls is still coming up.
#[derive(Clone)]
pub struct Upstream {
    channels: Arc<[UpstreamChannel]>,
    next: Arc<AtomicUsize>,
    credential: AsciiMetadataValue,
    deadline: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("connections", &self.channels.len())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// How many connections an [`Upstream`] opens unless configured.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// `UPSTREAM_CONNECTIONS`: connections per upstream service.
pub fn connections(source: &dyn Source) -> Result<usize, ConfigError> {
    let connections = parsed(source, "UPSTREAM_CONNECTIONS", DEFAULT_CONNECTIONS)?;
    if !(1..=64).contains(&connections) {
        return Err(ConfigError::invalid(
            "UPSTREAM_CONNECTIONS",
            "must be between 1 and 64",
        ));
    }
    Ok(connections)
}

impl Upstream {
    /// `connections` lazy connections to `url`, the `service` its calls are
    /// counted under (`auth`, `user`); every call carries `credential` and
    /// `deadline`.
    pub fn new(
        service: &'static str,
        url: &str,
        connections: usize,
        credential: &SecretString,
        deadline: Duration,
    ) -> Result<Upstream, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channels = (0..connections.max(1))
            .map(|_| UpstreamChannel {
                inner: endpoint.clone().connect_lazy(),
                service,
            })
            .collect();
        // Checked by `secret` when it came from configuration.
        let credential =
            AsciiMetadataValue::try_from(format!("Bearer {}", credential.expose_secret()))
                .unwrap_or_else(|_| AsciiMetadataValue::from_static("Bearer -"));
        Ok(Upstream {
            channels,
            next: Arc::new(AtomicUsize::new(0)),
            credential,
            deadline,
        })
    }

    /// The next connection, in turn.
    pub fn channel(&self) -> UpstreamChannel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    /// A call carrying `message`, the deadline, the credential and the id of
    /// the request it serves (when there is one) in `x-request-id`.
    pub fn call<T>(&self, message: T, request_id: Option<&str>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        let metadata = request.metadata_mut();
        metadata.insert(CREDENTIAL_HEADER, self.credential.clone());
        if let Some(id) = request_id.and_then(|id| MetadataValue::try_from(id).ok()) {
            metadata.insert(request_id::HEADER, id);
        }
        request
    }
}

/// One connection to an upstream service, which every call to it goes
/// through: counted and timed by method and code (the caller's side of
/// `wxlogin_grpc_server_requests_total`), and, when traces are exported, a
/// client span whose context the call carries in `traceparent`.
#[derive(Debug, Clone)]
pub struct UpstreamChannel {
    inner: Channel,
    service: &'static str,
}

impl tower::Service<http::Request<tonic::body::Body>> for UpstreamChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = UpstreamCall;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> UpstreamCall {
        let call = GrpcCall::start(self.service, request.uri().path());
        let span = telemetry::exporting().then(|| {
            let span = tracing::info_span!(
                "grpc.client",
                otel.kind = "client",
                otel.name = crate::metrics::grpc_method(request.uri().path()),
                rpc.system = "grpc",
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
            );
            telemetry::inject(&span, request.headers_mut());
            span
        });
        UpstreamCall {
            inner: self.inner.call(request),
            call,
            span,
        }
    }
}

/// A call in flight on an [`UpstreamChannel`]: it records the call when the
/// answer (or the failure) comes, and ends the client span.
pub struct UpstreamCall {
    inner: tonic::transport::channel::ResponseFuture,
    call: GrpcCall,
    span: Option<tracing::Span>,
}

impl Future for UpstreamCall {
    type Output = Result<http::Response<tonic::body::Body>, tonic::transport::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        let code = self.call.answered(&result);
        if let Some(span) = self.span.take() {
            span.record("rpc.grpc.status_code", code as i32);
            if code != tonic::Code::Ok {
                span.record("otel.status_code", "error");
                span.record("otel.status_description", code_name(code));
            }
        }
        Poll::Ready(result)
    }
}

/// The gRPC metadata in which the gateway tells auth which client address
/// a login comes from (auth's per-address budgets key on it).
pub const CLIENT_IP: &str = "x-client-ip";

/// Tells the callee that `request` serves the client at `ip`.
pub fn set_client_ip<T>(request: &mut tonic::Request<T>, ip: IpAddr) {
    if let Ok(value) = MetadataValue::try_from(ip.to_string()) {
        request.metadata_mut().insert(CLIENT_IP, value);
    }
}

/// The client address an incoming call carries, if any and well-formed.
pub fn client_ip_of<T>(request: &tonic::Request<T>) -> Option<IpAddr> {
    request
        .metadata()
        .get(CLIENT_IP)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The request id an incoming call carries.
pub fn request_id_of<T>(request: &tonic::Request<T>) -> Option<String> {
    let id = request.metadata().get(request_id::HEADER)?;
    id.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_of(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    // Lazy connections still need a runtime to be made in.
    #[tokio::test]
    async fn a_call_carries_its_deadline_request_id_and_credential() {
        let upstream = Upstream::new(
            "auth",
            "http://127.0.0.1:1",
            2,
            &secret_of("s3cret"),
            Duration::from_millis(1500),
        )
        .unwrap();
        let request = upstream.call((), Some("rid-1"));
        assert_eq!(request_id_of(&request).as_deref(), Some("rid-1"));
        assert_eq!(
            request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok()),
            Some("1500000u")
        );
        assert_eq!(
            request.metadata().get(CREDENTIAL_HEADER).unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(request_id_of(&upstream.call((), None)), None);
    }

    #[test]
    fn a_call_carries_the_client_address() {
        let mut request = tonic::Request::new(());
        assert_eq!(client_ip_of(&request), None);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        set_client_ip(&mut request, ip);
        assert_eq!(client_ip_of(&request), Some(ip));
        request
            .metadata_mut()
            .insert(CLIENT_IP, MetadataValue::from_static("not an address"));
        assert_eq!(client_ip_of(&request), None);
    }

    #[test]
    fn a_bad_url_is_refused() {
        assert!(
            Upstream::new(
                "auth",
                "not a url",
                1,
                &secret_of("x"),
                Duration::from_secs(1)
            )
            .is_err()
        );
    }

    #[test]
    fn secrets_must_be_long_enough() {
        let source = crate::config::Map::new(&[("SHORT", "abc"), ("GOOD", &"a".repeat(32))]);
        assert!(secret(&source, "GOOD").is_ok());
        for name in ["SHORT", "MISSING"] {
            let error = secret(&source, name).unwrap_err().to_string();
            assert!(error.starts_with(name), "{error}");
        }
    }
}
