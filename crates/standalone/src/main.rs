//! `cargo run --release`: the whole of wxlogin in one process.

use std::process::ExitCode;

use wxlogin_standalone::{System, banner};

// The services' allocator: why, beside `mimalloc` in the workspace Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    wxlogin_common::telemetry::init();
    // One process, one /metrics for its three services.
    let metrics = wxlogin_common::metrics::addr("wxlogin", &wxlogin_common::config::Env);
    if let Err(error) = metrics
        .map_err(|error| error.to_string())
        .and_then(|addr| wxlogin_common::metrics::serve(addr).map_err(|error| error.to_string()))
    {
        tracing::error!(%error, "cannot start");
        eprintln!("wxlogin: {error}");
        return ExitCode::from(2);
    }
    let system = match System::build().await {
        Ok(system) => system,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("wxlogin: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", banner(&system.addresses));
    match system
        .run_until_stopped(wxlogin_common::shutdown::signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopped");
            eprintln!("wxlogin: {error}");
            ExitCode::FAILURE
        }
    }
}
