//! `wxlogin-healthcheck`: the probe that container health checks run inside
//! our image, where there is no shell tool that speaks gRPC (and
//! `grpc_health_probe` cannot be fetched at build time).
//!
//! - `wxlogin-healthcheck grpc http://127.0.0.1:50051 [service]` asks the
//!   server's `grpc.health.v1.Health/Check` about `service` (default `""`,
//!   the server as a whole) and is healthy on `SERVING` only.
//! - `wxlogin-healthcheck http http://127.0.0.1:8080/readyz` is healthy on a
//!   2xx answer.
//!
//! Kubernetes does not need it (its probes speak gRPC health and HTTP
//! natively); Docker Compose does. It must stay a probe: one request, a
//! bounded wait, no retries (the orchestrator retries) and no state.

use std::time::Duration;

use tonic::{Code, transport::Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long one probe may take in all, connecting included. Below Compose's
/// health check `timeout` so that the probe, not Docker, reports why.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

pub const USAGE: &str = "usage: wxlogin-healthcheck grpc <url> [service]\n       \
                         wxlogin-healthcheck http <url>";

/// One health question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `grpc.health.v1.Health/Check` for `service` at the server `url`.
    Grpc { url: String, service: String },
    /// `GET url`.
    Http { url: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UsageError(String);

/// Why a probe did not come back healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{url} is not a usable URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    TimedOut { url: String, timeout: Duration },
    #[error("{url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} reports {status} for service {service:?}")]
    NotServing {
        url: String,
        service: String,
        status: String,
    },
    #[error("{url} does not know service {service:?}")]
    UnknownService { url: String, service: String },
    #[error("{url} answered the health check with {code:?}: {message}")]
    Grpc {
        url: String,
        code: Code,
        message: String,
    },
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
}

impl Probe {
    /// The probe the command-line arguments (without the program name) ask
    /// for.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Probe, UsageError> {
        let args: Vec<String> = args.into_iter().collect();
        match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["grpc", url] => Ok(Probe::Grpc {
                url: url.to_owned(),
                service: String::new(),
            }),
            ["grpc", url, service] => Ok(Probe::Grpc {
                url: url.to_owned(),
                service: service.to_owned(),
            }),
            ["http", url] => Ok(Probe::Http {
                url: url.to_owned(),
            }),
            _ => Err(UsageError(format!(
                "unexpected arguments {args:?}\n{USAGE}"
            ))),
        }
    }

    /// Asks once, giving up after `timeout`. `Ok` says what the healthy
    /// answer was, for the health check's log.
    pub async fn check(&self, timeout: Duration) -> Result<String, ProbeError> {
        let answer = async {
            match self {
                Probe::Grpc { url, service } => check_grpc(url, service, timeout).await,
                Probe::Http { url } => check_http(url, timeout).await,
            }
        };
        let url = match self {
            Probe::Grpc { url, .. } | Probe::Http { url } => url,
        };
        tokio::time::timeout(timeout, answer)
            .await
            .unwrap_or_else(|_| {
                Err(ProbeError::TimedOut {
                    url: url.clone(),
                    timeout,
                })
            })
    }
}

async fn check_grpc(url: &str, service: &str, timeout: Duration) -> Result<String, ProbeError> {
    let endpoint =
        Endpoint::from_shared(url.to_owned()).map_err(|error| ProbeError::InvalidUrl {
            url: url.to_owned(),
            reason: error.to_string(),
        })?;
    let channel = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|error| ProbeError::Unreachable {
            url: url.to_owned(),
            reason: error_chain(&error),
        })?;
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let response = HealthClient::new(channel)
        .check(request)
        .await
        .map_err(|status| match status.code() {
            Code::NotFound => ProbeError::UnknownService {
                url: url.to_owned(),
                service: service.to_owned(),
            },
            code => ProbeError::Grpc {
                url: url.to_owned(),
                code,
                message: status.message().to_owned(),
            },
        })?
        .into_inner();
    let status = ServingStatus::try_from(response.status).map_or_else(
        |_| format!("unknown status {}", response.status),
        |status| status.as_str_name().to_owned(),
    );
    if response.status == ServingStatus::Serving as i32 {
        Ok(format!("{url} reports {status} for service {service:?}"))
    } else {
        Err(ProbeError::NotServing {
            url: url.to_owned(),
            service: service.to_owned(),
            status,
        })
    }
}

async fn check_http(url: &str, timeout: Duration) -> Result<String, ProbeError> {
    let invalid = |reason: String| ProbeError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect is not health: report it rather than follow it.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| invalid(error_chain(&error)))?;
    let request = client
        .get(url)
        .build()
        .map_err(|error| invalid(error_chain(&error)))?;
    let response = client
        .execute(request)
        .await
        .map_err(|error| ProbeError::Unreachable {
            url: url.to_owned(),
            reason: error_chain(&error),
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(format!("{url} answered HTTP {}", status.as_u16()))
    } else {
        Err(ProbeError::HttpStatus {
            url: url.to_owned(),
            status: status.as_u16(),
        })
    }
}

/// An error and its causes on one line: "connection refused" is usually
/// only in the innermost one.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn grpc_asks_about_the_whole_server_unless_a_service_is_named() {
        assert_eq!(
            Probe::from_args(args(&["grpc", "http://127.0.0.1:50051"])),
            Ok(Probe::Grpc {
                url: "http://127.0.0.1:50051".into(),
                service: String::new()
            })
        );
        assert_eq!(
            Probe::from_args(args(&[
                "grpc",
                "http://127.0.0.1:50051",
                "wxlogin.auth.v1.AuthService"
            ])),
            Ok(Probe::Grpc {
                url: "http://127.0.0.1:50051".into(),
                service: "wxlogin.auth.v1.AuthService".into()
            })
        );
    }

    #[test]
    fn http_takes_one_url() {
        assert_eq!(
            Probe::from_args(args(&["http", "http://127.0.0.1:8080/readyz"])),
            Ok(Probe::Http {
                url: "http://127.0.0.1:8080/readyz".into()
            })
        );
    }

    #[test]
    fn anything_else_is_a_usage_error() {
        for bad in [
            &[][..],
            &["grpc"][..],
            &["http"][..],
            &["http", "http://x", "extra"][..],
            &["tcp", "127.0.0.1:1"][..],
        ] {
            let error = Probe::from_args(args(bad)).unwrap_err();
            assert!(error.to_string().contains("usage:"), "{error}");
        }
    }
}
