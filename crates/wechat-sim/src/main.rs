//! `wxlogin-wechat-sim`: the WeChat simulator as a process. `SIM_ADDR`
//! (default `127.0.0.1:8090`), `SIM_APPS` (`appid:secret,...`),
//! `SIM_CODE_TTL_SECS`, `SIM_ACCESS_TOKEN_TTL_SECS` and
//! `SIM_ACCESS_TOKEN_GRACE_SECS` configure it; see the library for its HTTP
//! API.

use std::process::ExitCode;

use wxlogin_common::{config, shutdown, telemetry};
use wxlogin_wechat_sim::{ADDR_VAR, DEFAULT_ADDR, SimConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = telemetry::init("wxlogin-wechat-sim");
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "wechat simulator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let addr = config::parsed(&config::Env, ADDR_VAR, DEFAULT_ADDR)?;
    let sim_config = SimConfig::from_env()?;
    wxlogin_wechat_sim::serve(addr, sim_config, shutdown::signal()).await?;
    Ok(())
}
