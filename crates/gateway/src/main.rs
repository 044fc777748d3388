use std::process::ExitCode;

use wxlogin_gateway::{Application, Config};

// The services' allocator: why, beside `mimalloc` in the workspace Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    wxlogin_common::service::main(
        "wxlogin-gateway",
        Config::from_env,
        Application::build,
        Application::run_until_stopped,
    )
    .await
}
