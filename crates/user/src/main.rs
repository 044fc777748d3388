//! `wxlogin-user [serve]` migrates the database and serves (and its metrics
//! at `METRICS_ADDR`) until SIGTERM or Ctrl-C; `wxlogin-user migrate` only migrates.

use std::process::ExitCode;

use wxlogin_user::{Application, Config, error::report};

// The services' allocator: why, beside `mimalloc` in the workspace Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Kept to the end: dropping it sends the last spans.
    let _telemetry = wxlogin_common::telemetry::init("wxlogin-user");

    let command = std::env::args().nth(1);
    let outcome = match command.as_deref() {
        None | Some("serve") => {
            if let Err(code) = wxlogin_common::service::start_metrics("wxlogin-user") {
                return code;
            }
            match Config::from_env() {
                Ok(config) => serve(config).await,
                Err(error) => return config_error(&error),
            }
        }
        // Migrating needs the database alone, not the service's credentials.
        Some("migrate") => match Config::database(&wxlogin_common::config::Env) {
            Ok((url, timeout)) => wxlogin_user::migrate(&url, timeout).await,
            Err(error) => return config_error(&error),
        },
        Some(other) => {
            eprintln!(
                "wxlogin-user: unknown command {other:?}; usage: wxlogin-user [serve|migrate]"
            );
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %report(&error), "wxlogin-user failed");
            eprintln!("wxlogin-user: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

fn config_error(error: &wxlogin_common::config::ConfigError) -> ExitCode {
    eprintln!("wxlogin-user: configuration error: {error}");
    ExitCode::from(2)
}

async fn serve(config: Config) -> Result<(), wxlogin_user::Error> {
    let app = Application::build(config).await?;
    app.run_until_stopped(wxlogin_common::shutdown::signal())
        .await
}
