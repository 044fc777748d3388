use std::process::ExitCode;

use wxlogin_auth::{Application, Config};

#[tokio::main]
async fn main() -> ExitCode {
    wxlogin_common::service::main(
        "wxlogin-auth",
        Config::from_env,
        Application::build,
        Application::run_until_stopped,
    )
    .await
}
