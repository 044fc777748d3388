//! `wxlogin-user [serve]` migrates the database and serves (and its metrics
//! at `METRICS_ADDR`) until SIGTERM or Ctrl-C; `wxlogin-user migrate` only
//! migrates; `wxlogin-user encrypt-existing` seals the personal data of rows
//! written before encryption (the service also does it at start-up) and
//! `wxlogin-user rewrap` seals again under the newest key of
//! `DATA_ENCRYPTION_KEYS`; both migrate first and print what they did.

use std::process::ExitCode;

use wxlogin_user::{Application, Config, Reseal, error::report};

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
        Some(name @ ("encrypt-existing" | "rewrap")) => {
            let command = if name == "rewrap" {
                Reseal::Rewrap
            } else {
                Reseal::EncryptExisting
            };
            let env = wxlogin_common::config::Env;
            let ((url, timeout), (keys, index)) =
                match Config::database(&env).and_then(|db| Ok((db, Config::keys(&env)?))) {
                    Ok(settings) => settings,
                    Err(error) => return config_error(&error),
                };
            let sealer = wxlogin_user::personal::Sealer::new(keys, index);
            wxlogin_user::reseal(command, &url, timeout, sealer)
                .await
                .map(|report| println!("wxlogin-user {name}: {report}"))
        }
        Some(other) => {
            eprintln!(
                "wxlogin-user: unknown command {other:?}; \
                 usage: wxlogin-user [serve|migrate|encrypt-existing|rewrap]"
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
