//! Tracing set up once per process, and the W3C trace context that follows
//! a request from HTTP into every gRPC call it makes.
//!
//! `RUST_LOG` filters the log (default `info`), `LOG_FORMAT=json` switches
//! to JSON lines for log shippers. Secrets never reach a log line because
//! the types that hold them redact themselves; nothing here filters text.
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, wxlogin's spans are exported
//! over OTLP/gRPC in batches, and a `traceparent` is read from what a
//! service receives and written into what it sends. The exporter honours the
//! standard `OTEL_*` variables (endpoint, headers, timeout, `OTEL_BSP_*`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`).
//! Without them nothing is exported and the only cost on a request is the
//! check of one flag ([`exporting`]).

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, filter::filter_fn, fmt, prelude::*};

use crate::config::{Source, optional};

/// Whether spans are exported: set once, by [`init`].
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans (and so carries trace context).
#[inline]
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// How long stopping waits for the last spans to be sent.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps the span exporter of [`init`]; dropping it sends the spans still
/// queued (a graceful shutdown's last act).
#[must_use = "dropping it stops exporting spans"]
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            eprintln!("could not send the last spans: {error}");
        }
    }
}

/// What [`init`] exports, read from the `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traces {
    /// `service.name`: `OTEL_SERVICE_NAME`, else the binary's own.
    pub service_name: String,
}

/// Whether to export spans: an OTLP endpoint is configured, and neither
/// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says no.
pub fn traces(source: &dyn Source, default_service_name: &str) -> Option<Traces> {
    let endpoint = optional(source, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| optional(source, "OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = optional(source, "OTEL_SDK_DISABLED")
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
        || optional(source, "OTEL_TRACES_EXPORTER")
            .is_some_and(|value| value.eq_ignore_ascii_case("none"));
    if endpoint.is_none() || disabled {
        return None;
    }
    let service_name = optional(source, "OTEL_SERVICE_NAME")
        .or_else(|| {
            // OTEL_RESOURCE_ATTRIBUTES=service.name=… also names it.
            optional(source, "OTEL_RESOURCE_ATTRIBUTES")?
                .split(',')
                .find_map(|pair| pair.trim().strip_prefix("service.name=").map(str::to_owned))
        })
        .unwrap_or_else(|| default_service_name.to_owned());
    Some(Traces { service_name })
}

/// Installs the global subscriber and, when [`traces`] says so, the span
/// exporter; `service` names the process's spans unless
/// `OTEL_SERVICE_NAME` does. A second call (tests that start several
/// services in one process) keeps the first subscriber and exports nothing.
///
/// Call it inside the Tokio runtime: the exporter's connection is made on it.
pub fn init(service: &str) -> Telemetry {
    let Some(traces) = traces(&crate::config::Env, service) else {
        init_log();
        return Telemetry::default();
    };
    let provider = match tracer_provider(&traces) {
        Ok(provider) => provider,
        Err(error) => {
            init_log();
            tracing::error!(%error, "cannot export traces: running without");
            return Telemetry::default();
        }
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("wxlogin"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(exported));
    // Each layer filters for itself: the log keeps to RUST_LOG, the spans
    // are exported whatever it says.
    let log = if json_log() {
        fmt::layer().json().with_current_span(true).boxed()
    } else {
        fmt::layer().with_ansi(ansi_log()).boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(log.with_filter(log_filter()))
        .with(spans)
        .try_init();
    if installed.is_err() {
        return Telemetry::default();
    }
    EXPORTING.store(true, Ordering::Relaxed);
    tracing::info!(service_name = %traces.service_name, "exporting traces over OTLP");
    Telemetry {
        provider: Some(provider),
    }
}

/// The log alone, its filter global: a disabled span or event costs a
/// process that exports no traces what it always did.
fn init_log() {
    let registry = tracing_subscriber::registry().with(log_filter());
    let result = if json_log() {
        registry
            .with(fmt::layer().json().with_current_span(true))
            .try_init()
    } else {
        registry.with(fmt::layer().with_ansi(ansi_log())).try_init()
    };
    // Already installed: the first subscriber stays.
    drop(result);
}

/// `RUST_LOG`, default `info`.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// `LOG_FORMAT=json`: JSON lines for log shippers.
fn json_log() -> bool {
    std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"))
}

/// Colour only on a terminal: a file or a log shipper gets plain text.
fn ansi_log() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// What becomes part of a trace, whatever `RUST_LOG` says: wxlogin's own
/// spans (their fields are the ones the log shows, never a secret), and its
/// warnings and errors as span events.
fn exported(metadata: &tracing::Metadata<'_>) -> bool {
    exported_kind(metadata.is_span(), metadata.target(), *metadata.level())
}

fn exported_kind(span: bool, target: &str, level: Level) -> bool {
    let least = if span { Level::INFO } else { Level::WARN };
    target.starts_with("wxlogin") && level <= least
}

fn tracer_provider(traces: &Traces) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|error| error.to_string())?;
    let resource = Resource::builder()
        .with_service_name(traces.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// Only W3C trace context (`traceparent`, `tracestate`): no vendor formats.
fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// Makes `span` continue the trace whose context `headers` carry (HTTP
/// headers or gRPC metadata); without one, `span` starts a trace.
pub fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    if !exporting() || !headers.contains_key("traceparent") {
        return;
    }
    let context = propagator().extract(&Headers(headers));
    // Refused only for a span that was already started, or is disabled.
    drop(span.set_parent(context));
}

/// Writes the trace context of `span` into `headers`, for the service it
/// calls.
pub fn inject(span: &Span, headers: &mut http::HeaderMap) {
    propagator().inject_context(&span.context(), &mut HeadersMut(headers));
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Map;

    #[test]
    fn traces_are_exported_only_to_a_configured_endpoint() {
        assert_eq!(traces(&Map::new(&[]), "wxlogin-auth"), None);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert_eq!(
            traces(&Map::new(&[endpoint]), "wxlogin-auth"),
            Some(Traces {
                service_name: "wxlogin-auth".to_owned()
            })
        );
        let signal = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317",
        );
        assert!(traces(&Map::new(&[signal]), "x").is_some());
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(traces(&Map::new(&[endpoint, off]), "x"), None, "{off:?}");
        }
    }

    #[test]
    fn the_service_name_is_the_operators_or_the_binarys() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let name = |pairs: &[(&str, &str)]| {
            let mut all = vec![endpoint];
            all.extend_from_slice(pairs);
            traces(&Map::new(&all), "wxlogin-user").map(|traces| traces.service_name)
        };
        assert_eq!(name(&[]).as_deref(), Some("wxlogin-user"));
        assert_eq!(
            name(&[("OTEL_SERVICE_NAME", "users-eu")]).as_deref(),
            Some("users-eu")
        );
        assert_eq!(
            name(&[("OTEL_RESOURCE_ATTRIBUTES", "team=id, service.name=users-us")]).as_deref(),
            Some("users-us")
        );
    }

    #[test]
    fn only_wxlogins_spans_and_warnings_are_exported() {
        assert!(exported_kind(true, "wxlogin_auth::service", Level::INFO));
        assert!(!exported_kind(true, "wxlogin_auth::service", Level::DEBUG));
        assert!(exported_kind(false, "wxlogin_user::error", Level::WARN));
        assert!(!exported_kind(false, "wxlogin_user::error", Level::INFO));
        assert!(!exported_kind(true, "h2::proto", Level::INFO));
        assert!(!exported_kind(false, "sqlx::query", Level::ERROR));
    }
}
