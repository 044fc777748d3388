//! What every wxlogin binary shares: typed configuration from the
//! environment, telemetry set up once, Prometheus metrics, gRPC plumbing
//! (connections, servers, credentials), the request id that follows a
//! request from HTTP into gRPC, the circuit breaker's state, a clock, and
//! graceful shutdown.
//!
//! It must stay small and free of business logic: no WeChat, no storage
//! (it depends on neither Redis nor the gRPC contracts), no users.

pub mod breaker;
pub mod clock;
pub mod config;
pub mod grpc;
pub mod metrics;
pub mod request_id;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use secrecy::{ExposeSecret, SecretString};

/// `error` and its causes on one line, for a log or a terminal.
pub fn error_report(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
