//! What can keep the system from starting, or stop it.

use wxlogin_common::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("WeChat simulator: {0}")]
    Simulator(#[from] std::io::Error),
    #[error("user service: {0}")]
    User(#[from] wxlogin_user::Error),
    #[error("auth service: {0}")]
    Auth(#[from] wxlogin_auth::StartError),
    #[error("gateway: {0}")]
    Gateway(#[from] wxlogin_gateway::StartError),
    #[error("a service stopped unexpectedly: {0}")]
    Stopped(String),
    #[error("the OS random number generator failed: {0}")]
    Random(String),
    #[error("the data key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("wiring the services: {0}")]
    Wiring(String),
    #[error("{0}")]
    Process(std::io::Error),
}
