use std::process::ExitCode;

use wxlogin_gateway::{Application, Config};

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
