//! `wxlogin-healthcheck grpc <url> [service]` | `wxlogin-healthcheck http <url>`:
//! exits 0 when healthy and 1 otherwise, a usage error included (Docker
//! reserves exit code 2 in health checks).

use std::process::ExitCode;

use wxlogin_healthcheck::{DEFAULT_TIMEOUT, Probe};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let probe = match Probe::from_args(std::env::args().skip(1)) {
        Ok(probe) => probe,
        Err(error) => {
            eprintln!("wxlogin-healthcheck: {error}");
            return ExitCode::FAILURE;
        }
    };
    match probe.check(DEFAULT_TIMEOUT).await {
        Ok(healthy) => {
            println!("{healthy}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wxlogin-healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}
