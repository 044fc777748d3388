//! `REDIS_URL` and `REDIS_KEY_PREFIX`, as every service reads them.

use wxlogin_common::config::{ConfigError, Source, optional};

use crate::{keys::check_prefix, topology::Topology};

/// `REDIS_KEY_PREFIX`: the start of every Redis key of wxlogin's services
/// (default `wxlogin:`).
pub fn key_prefix(source: &dyn Source) -> Result<String, ConfigError> {
    let prefix = optional(source, "REDIS_KEY_PREFIX").unwrap_or_else(|| "wxlogin:".into());
    check_prefix(&prefix).map_err(|message| ConfigError::invalid("REDIS_KEY_PREFIX", message))?;
    Ok(prefix)
}

/// Checks that a `REDIS_URL` names one Redis, a Cluster or a Sentinel
/// setup (see [`Topology`]).
pub fn check_url(url: &str) -> Result<(), ConfigError> {
    Topology::parse(url).map(drop).map_err(|error| {
        ConfigError::invalid(
            "REDIS_URL",
            format!(
                "{} (redis://host:port/db, redis+cluster://host:port,host:port or \
                 redis+sentinel://host:port,host:port/service)",
                error.detail().unwrap_or("not a Redis URL")
            ),
        )
    })
}
