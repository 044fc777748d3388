//! Traces: the three service processes export their spans over OTLP to a
//! collector in this test, and the spans of one request form one trace
//! across them, each service's server span a child of its caller's client
//! span. No span carries an openid, a token or a code.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::span::SpanKind,
};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use wxlogin_wechat_sim::MintCode;

use crate::faults::Stack;

/// A span as the collector received it, with the `service.name` of the
/// process that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: opentelemetry_proto::tonic::trace::v1::Span,
}

impl Received {
    fn is(&self, service: &str, kind: SpanKind, name: &str) -> bool {
        self.service == service && self.span.kind == kind as i32 && self.span.name == name
    }
}

/// An OTLP/gRPC trace collector that keeps what it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| text(attribute.value.as_ref()?))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                received.extend(scope_spans.spans.into_iter().map(|span| Received {
                    service: service.clone(),
                    span,
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        Value::StringValue(text) => Some(text.clone()),
        other => Some(format!("{other:?}")),
    }
}

impl Collector {
    /// Serves OTLP/gRPC on a free port; answers its address.
    async fn start(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        addr
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

/// The one span of `spans` that `matches`.
fn one<'a>(spans: &'a [Received], what: &str, matches: impl Fn(&Received) -> bool) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|span| matches(span)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

/// Whether `ancestor` is `span`'s parent, or its parent's, and so on.
fn descends(spans: &[Received], span: &Received, ancestor: &Received) -> bool {
    let mut parent = span.span.parent_span_id.clone();
    while !parent.is_empty() {
        if parent == ancestor.span.span_id {
            return true;
        }
        parent = spans
            .iter()
            .find(|other| other.span.span_id == parent)
            .map(|other| other.span.parent_span_id.clone())
            .unwrap_or_default();
    }
    false
}

/// Checks one hop of a trace: `service`'s server span of `method` is a child
/// of the client span that `caller`'s `parent` made for it.
fn hop<'a>(
    trace: &'a [Received],
    caller: &str,
    parent: &Received,
    service: &str,
    method: &str,
) -> &'a Received {
    let client = one(trace, &format!("{caller}'s call of {method}"), |span| {
        span.is(caller, SpanKind::Client, method)
    });
    assert!(
        descends(trace, client, parent),
        "the call of {method} is not inside {}",
        parent.span.name
    );
    let server = one(trace, &format!("{service}'s answer to {method}"), |span| {
        span.is(service, SpanKind::Server, method)
    });
    assert_eq!(
        server.span.parent_span_id, client.span.span_id,
        "{service}'s span of {method} is not the child of the call's"
    );
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_is_one_trace_across_the_three_services() {
    // Arrange: the stack exports to our collector, in batches sent only when
    // a service stops (the schedule delay is longer than the test).
    let collector = Collector::default();
    let otlp = collector.start().await;
    let mut stack = Stack::start_with_env(
        Duration::from_secs(5),
        &[],
        false,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";

    // Act: a first login inside the caller's trace, then a profile from
    // encrypted data (the user service asks auth for the session key) in a
    // trace of its own.
    let minted = stack.sim.sim.mint_code(MintCode::default());
    let login = http
        .post(format!("{}/v1/login", stack.base_url))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({ "code": minted.code }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let body: serde_json::Value = login.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let profile = stack.post_sealed_profile(&http, &minted, &token).await;
    assert_eq!(profile.status(), 200);
    drop(http);
    stack.stop_gracefully().await;

    // Assert: the login's trace is the caller's, and goes gateway → auth,
    // gateway → user.
    let spans = collector.spans();
    let (gateway, auth, user) = ("wxlogin-gateway", "wxlogin-auth", "wxlogin-user");
    let login_trace: Vec<Received> = spans
        .iter()
        .filter(|span| hex::encode(&span.span.trace_id) == trace_id)
        .cloned()
        .collect();
    for service in [gateway, auth, user] {
        assert!(
            login_trace.iter().any(|span| span.service == service),
            "no span of {service} in the login's trace: {login_trace:#?}"
        );
    }
    let root = one(&login_trace, "the login's HTTP span", |span| {
        span.is(gateway, SpanKind::Server, "POST /v1/login")
    });
    assert_eq!(hex::encode(&root.span.parent_span_id), caller_span);
    hop(
        &login_trace,
        gateway,
        root,
        auth,
        "wxlogin.auth.v1.AuthService/Login",
    );
    hop(
        &login_trace,
        gateway,
        root,
        user,
        "wxlogin.user.v1.UserService/UpsertUser",
    );
    // Every span of the trace hangs from the caller's span.
    for span in &login_trace {
        assert!(
            span.span.span_id == root.span.span_id || descends(&login_trace, span, root),
            "{span:#?} is not part of the login's tree"
        );
    }

    // The profile's trace starts at the gateway and goes gateway → user →
    // auth.
    let profile_root = one(&spans, "the profile's HTTP span", |span| {
        span.is(gateway, SpanKind::Server, "POST /v1/me/profile")
    });
    assert!(profile_root.span.parent_span_id.is_empty());
    assert_ne!(hex::encode(&profile_root.span.trace_id), trace_id);
    let profile_trace: Vec<Received> = spans
        .iter()
        .filter(|span| span.span.trace_id == profile_root.span.trace_id)
        .cloned()
        .collect();
    let user_span = hop(
        &profile_trace,
        gateway,
        profile_root,
        user,
        "wxlogin.user.v1.UserService/UpdateProfileFromEncrypted",
    );
    hop(
        &profile_trace,
        user,
        user_span,
        auth,
        "wxlogin.auth.v1.AuthService/GetSessionKey",
    );

    // No span, attribute or event names a user, a session or a code.
    let secrets = [minted.openid.as_str(), token.as_str(), minted.code.as_str()];
    for received in &spans {
        let span = &received.span;
        let attributes = span
            .attributes
            .iter()
            .chain(span.events.iter().flat_map(|event| &event.attributes));
        let mut texts: Vec<String> = attributes.map(render).collect();
        texts.push(span.name.clone());
        texts.extend(span.events.iter().map(|event| event.name.clone()));
        for text in texts {
            for secret in secrets {
                assert!(!text.contains(secret), "{secret} in {span:#?}");
            }
        }
    }
}

fn render(attribute: &KeyValue) -> String {
    let value = attribute.value.as_ref().and_then(text).unwrap_or_default();
    format!("{}={value}", attribute.key)
}
