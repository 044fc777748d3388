//! `wxlogin-user [serve]` migrates the database and serves until SIGTERM or
//! Ctrl-C; `wxlogin-user migrate` only migrates.

use std::process::ExitCode;

use wxlogin_user::{Application, Config, error::report};

// The services' allocator: why, beside `mimalloc` in the workspace Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    wxlogin_common::telemetry::init();

    let command = std::env::args().nth(1);
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("wxlogin-user: configuration error: {error}");
            return ExitCode::from(2);
        }
    };

    let outcome = match command.as_deref() {
        None | Some("serve") => serve(config).await,
        Some("migrate") => {
            wxlogin_user::migrate(&config.database_url, config.db_connect_timeout).await
        }
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

async fn serve(config: Config) -> Result<(), wxlogin_user::Error> {
    let app = Application::build(config).await?;
    app.run_until_stopped(wxlogin_common::shutdown::signal())
        .await
}
