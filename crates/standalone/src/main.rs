//! `cargo run --release`: the whole of wxlogin in one process.

use std::process::ExitCode;

use wxlogin_standalone::{System, banner};

// The services' allocator: why, beside `mimalloc` in the workspace Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // One service name for the process's spans (`wxlogin`); each request's
    // span says which part served it. Kept to the end: dropping it sends the
    // last spans.
    let _telemetry = wxlogin_common::telemetry::init("wxlogin");
    // One process, one /metrics for its three services.
    if let Err(code) = wxlogin_common::service::start_metrics("wxlogin") {
        return code;
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
