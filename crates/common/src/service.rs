//! The `main` of every service binary: telemetry, metrics, configuration, start,
//! serve until SIGTERM or Ctrl-C, and an exit code that says what happened.

use std::{fmt::Display, future::Future, process::ExitCode};

use crate::config::ConfigError;

/// The address `listener` is bound to (port 0 asked for any: this names
/// the one chosen), or the unspecified address if the OS cannot tell.
pub fn bound_addr(listener: &tokio::net::TcpListener) -> std::net::SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Serves `binary`'s `/metrics` where `METRICS_ADDR` (or its default) says;
/// when it cannot, says why and answers the exit code: 2 for an invalid
/// `METRICS_ADDR`, 1 for an address that cannot be served.
pub fn start_metrics(binary: &str) -> Result<(), ExitCode> {
    let addr = crate::metrics::addr(binary, &crate::config::Env).map_err(|error| {
        tracing::error!(%error, "invalid configuration");
        eprintln!("{binary}: {error}");
        ExitCode::from(2)
    })?;
    crate::metrics::serve(addr).map_err(|error| {
        tracing::error!(%error, "cannot start");
        eprintln!("{binary}: {error}");
        ExitCode::FAILURE
    })
}

/// A configuration error exits with 2 (the variable is named), a failure to
/// start or serve with 1.
pub async fn main<C, A, BE, RE, BF, RF>(
    name: &str,
    config: impl FnOnce() -> Result<C, ConfigError>,
    build: impl FnOnce(C) -> BF,
    run: impl FnOnce(A, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> RF,
) -> ExitCode
where
    BF: Future<Output = Result<A, BE>>,
    RF: Future<Output = Result<(), RE>>,
    BE: Display,
    RE: Display,
{
    // Kept to the end: dropping it sends the last spans.
    let _telemetry = crate::telemetry::init(name);
    if let Err(code) = start_metrics(name) {
        return code;
    }
    let config = match config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let app = match build(config).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("{name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match run(app, Box::pin(crate::shutdown::signal())).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopped with an error");
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    }
}
