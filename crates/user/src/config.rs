//! The user service's settings, read from the environment at start-up.

use std::{net::SocketAddr, time::Duration};

use wxlogin_common::{
    SecretString,
    config::{self, ConfigError, Source},
    grpc,
};
use wxlogin_userdata::sealing::{DataKeys, IndexKey};

/// Default gRPC listen address (`USER_ADDR`).
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50052";
/// Default database (`DATABASE_URL`).
pub const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306/wxlogin";
/// Default pool size (`DB_MAX_CONNECTIONS`).
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 16;
/// Default auth service (`AUTH_URL`).
pub const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:50051";
/// Default maximum age of encrypted data's watermark (`WATERMARK_MAX_AGE_SECS`).
pub const DEFAULT_WATERMARK_MAX_AGE_SECS: u64 = 3600;
/// Default seconds to wait for a database connection (`DB_CONNECT_TIMEOUT_SECS`).
pub const DEFAULT_DB_CONNECT_TIMEOUT_SECS: u64 = 5;

/// Everything the user service needs to start.
///
/// `Debug` is derived safely: the database URL, which may carry a password,
/// is a [`SecretString`] that prints as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gRPC server listens (`USER_ADDR`); port 0 picks a free one.
    pub listen_addr: SocketAddr,
    /// The MySQL database (`DATABASE_URL`).
    pub database_url: SecretString,
    /// Size of the connection pool (`DB_MAX_CONNECTIONS`, at least 1).
    pub db_max_connections: u32,
    /// How long to wait for a connection, at start-up and when a request
    /// needs one from the pool (`DB_CONNECT_TIMEOUT_SECS`, at least 1).
    pub db_connect_timeout: Duration,
    /// The auth service (`AUTH_URL`), which holds the session_keys that
    /// decrypt users' data.
    pub auth_url: String,
    /// The Redis of the shared user cache (`REDIS_URL`; the auth service's
    /// Redis); `None` (unset, or `memory://`) means no cache.
    pub redis_url: Option<SecretString>,
    /// `REDIS_KEY_PREFIX`, as the auth service's.
    pub redis_key_prefix: String,
    /// How old the watermark of encrypted user data may be
    /// (`WATERMARK_MAX_AGE_SECS`); `None` (0) turns the check off.
    pub watermark_max_age: Option<Duration>,
    /// `INTERNAL_SECRET`: what callers of this service (the gateway, other
    /// internal consumers) must present.
    pub internal_secret: SecretString,
    /// `INTERNAL_USER_SECRET`: what this service presents to auth, which
    /// answers session keys to it alone.
    pub internal_user_secret: SecretString,
    /// `UPSTREAM_CONNECTIONS`: HTTP/2 connections to auth.
    pub upstream_connections: usize,
    /// `DATA_ENCRYPTION_KEYS`: the keys personal data and the user copies
    /// are sealed with (required).
    pub data_keys: DataKeys,
    /// `DATA_INDEX_KEY`: the key of the phone numbers' blind index
    /// (required).
    pub index_key: IndexKey,
}

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_source(&config::Env)
    }

    /// What `wxlogin-user migrate` needs, and nothing more: the database
    /// (`DATABASE_URL`) and how long to wait for it (`DB_CONNECT_TIMEOUT_SECS`).
    pub fn database(source: &dyn Source) -> Result<(SecretString, Duration), ConfigError> {
        let database_url = config::optional(source, "DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        // The value is not echoed: it may carry a password.
        if !(database_url.starts_with("mysql://") || database_url.starts_with("sqlite:")) {
            return Err(ConfigError::invalid(
                "DATABASE_URL",
                "must be a mysql:// URL, or a sqlite: URL for a single-process setup",
            ));
        }
        let connect_timeout_secs = config::parsed(
            source,
            "DB_CONNECT_TIMEOUT_SECS",
            DEFAULT_DB_CONNECT_TIMEOUT_SECS,
        )?;
        if connect_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "DB_CONNECT_TIMEOUT_SECS",
                "must be at least 1",
            ));
        }
        Ok((
            SecretString::from(database_url),
            Duration::from_secs(connect_timeout_secs),
        ))
    }

    /// Reads the settings from `source`, using the defaults for unset ones.
    pub fn from_source(source: &dyn Source) -> Result<Config, ConfigError> {
        let default_addr = DEFAULT_LISTEN_ADDR
            .parse()
            .map_err(|_| ConfigError::invalid("USER_ADDR", "built-in default is not valid"))?;
        let listen_addr = config::parsed(source, "USER_ADDR", default_addr)?;

        let (database_url, db_connect_timeout) = Config::database(source)?;

        let db_max_connections =
            config::parsed(source, "DB_MAX_CONNECTIONS", DEFAULT_DB_MAX_CONNECTIONS)?;
        if db_max_connections == 0 {
            return Err(ConfigError::invalid(
                "DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }

        let auth_url =
            config::optional(source, "AUTH_URL").unwrap_or_else(|| DEFAULT_AUTH_URL.to_owned());
        if !(auth_url.starts_with("http://") || auth_url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "AUTH_URL",
                format!("{auth_url:?} is not an http(s) URL"),
            ));
        }
        let watermark_max_age = config::parsed(
            source,
            "WATERMARK_MAX_AGE_SECS",
            DEFAULT_WATERMARK_MAX_AGE_SECS,
        )?;

        let redis_url = config::optional(source, "REDIS_URL").filter(|url| url != "memory://");
        if let Some(url) = &redis_url {
            wxlogin_redis::config::check_url(url)?;
        }
        Ok(Config {
            redis_url: redis_url.map(SecretString::from),
            redis_key_prefix: wxlogin_redis::config::key_prefix(source)?,
            auth_url,
            watermark_max_age: (watermark_max_age > 0)
                .then(|| Duration::from_secs(watermark_max_age)),
            listen_addr,
            database_url,
            db_max_connections,
            db_connect_timeout,
            internal_secret: grpc::secret(source, grpc::INTERNAL_SECRET)?,
            internal_user_secret: grpc::secret(source, grpc::INTERNAL_USER_SECRET)?,
            upstream_connections: grpc::connections(source)?,
            data_keys: DataKeys::required(source)?,
            index_key: IndexKey::required(source)?,
        })
    }

    /// What `wxlogin-user encrypt-existing` and `rewrap` need: the database
    /// and the keys.
    pub fn keys(source: &dyn Source) -> Result<(DataKeys, IndexKey), ConfigError> {
        Ok((DataKeys::required(source)?, IndexKey::required(source)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxlogin_common::ExposeSecret;

    /// `pairs` over an environment that has the internal secrets and the
    /// data keys.
    fn source(pairs: &[(&str, &str)]) -> wxlogin_common::config::Map {
        let mut all = vec![
            (
                wxlogin_userdata::sealing::KEYS_VAR,
                "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            (
                wxlogin_userdata::sealing::INDEX_KEY_VAR,
                "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
            ),
            (
                grpc::INTERNAL_SECRET,
                "internal-secret-0123456789abcdef0123",
            ),
            (
                grpc::INTERNAL_USER_SECRET,
                "user-secret-0123456789abcdef01234567",
            ),
        ];
        all.extend_from_slice(pairs);
        wxlogin_common::config::Map::new(&all)
    }

    #[test]
    fn an_empty_environment_gives_the_defaults() {
        let config = Config::from_source(&source(&[])).unwrap();

        assert_eq!(config.listen_addr.to_string(), DEFAULT_LISTEN_ADDR);
        assert_eq!(config.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(config.db_max_connections, 16);
        assert_eq!(config.db_connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn every_setting_is_read_from_its_variable() {
        let env = source(&[
            ("USER_ADDR", "0.0.0.0:7000"),
            ("DATABASE_URL", "mysql://app:pw@db:3306/users"),
            ("DB_MAX_CONNECTIONS", "4"),
            ("DB_CONNECT_TIMEOUT_SECS", "9"),
        ]);

        let config = Config::from_source(&env).unwrap();

        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:7000");
        assert_eq!(
            config.database_url.expose_secret(),
            "mysql://app:pw@db:3306/users"
        );
        assert_eq!(config.db_max_connections, 4);
        assert_eq!(config.db_connect_timeout, Duration::from_secs(9));
    }

    #[test]
    fn errors_name_the_variable() {
        for (name, value) in [
            ("USER_ADDR", "nowhere"),
            ("DATABASE_URL", "postgres://db/users"),
            ("DB_MAX_CONNECTIONS", "0"),
            ("DB_MAX_CONNECTIONS", "many"),
            ("DB_CONNECT_TIMEOUT_SECS", "0"),
            (grpc::INTERNAL_SECRET, "short"),
            (grpc::INTERNAL_USER_SECRET, ""),
            (wxlogin_userdata::sealing::KEYS_VAR, ""),
            (wxlogin_userdata::sealing::KEYS_VAR, "k1:short"),
            (wxlogin_userdata::sealing::INDEX_KEY_VAR, ""),
        ] {
            let error = Config::from_source(&source(&[(name, value)])).unwrap_err();

            assert!(
                error.to_string().starts_with(name),
                "{name}={value}: {error}"
            );
        }
    }

    #[test]
    fn debug_does_not_show_the_database_password() {
        let env = source(&[("DATABASE_URL", "mysql://app:hunter2@db:3306/users")]);

        let config = Config::from_source(&env).unwrap();

        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{config:?}").contains("AAECAwQF"));
    }
}
