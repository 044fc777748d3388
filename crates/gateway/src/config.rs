//! The gateway's configuration, read from the environment.

use std::{net::SocketAddr, time::Duration};

use wxlogin_common::{
    SecretString,
    config::{ConfigError, Env, Source, optional, parsed},
    grpc,
};
use wxlogin_userdata::sealing::DataKeys;

use crate::{client_ip::TrustedProxies, proxy::ProxyRoutes};

#[derive(Debug, Clone)]
pub struct Config {
    /// `GATEWAY_ADDR`: where the HTTP server listens.
    pub listen_addr: SocketAddr,
    /// `AUTH_URL`: the auth service's gRPC endpoint.
    pub auth_url: String,
    /// `USER_URL`: the user service's gRPC endpoint.
    pub user_url: String,
    /// `BODY_LIMIT_BYTES`: larger request bodies get 413.
    pub body_limit: usize,
    /// `UPSTREAM_TIMEOUT_MS`: deadline of each gRPC call.
    pub upstream_timeout: Duration,
    /// `UPSTREAM_CONNECTIONS`: HTTP/2 connections to each service.
    pub upstream_connections: usize,
    /// `INTERNAL_SECRET`: the credential every gRPC call carries.
    pub internal_secret: SecretString,
    /// `TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` names the
    /// client (comma-separated IPs and CIDR networks; none by default).
    pub trusted_proxies: TrustedProxies,
    /// `PROXY_ROUTES`: proxy mode's `prefix=url` pairs (none by default).
    pub proxy_routes: ProxyRoutes,
    /// `PROXY_TIMEOUT_MS`: how long a proxied request may take, answer
    /// included.
    pub proxy_timeout: Duration,
    /// `DATA_ENCRYPTION_KEYS`: the keys that open the user copies sessions
    /// come with (required; the user service's).
    pub data_keys: DataKeys,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_source(&Env)
    }

    pub fn from_source(source: &dyn Source) -> Result<Config, ConfigError> {
        let upstream = |name: &str, default: &str| -> Result<String, ConfigError> {
            let url = optional(source, name).unwrap_or_else(|| default.to_owned());
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    name,
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
            Ok(url)
        };
        let config = Config {
            listen_addr: parsed(
                source,
                "GATEWAY_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 8080)),
            )?,
            auth_url: upstream("AUTH_URL", "http://127.0.0.1:50051")?,
            user_url: upstream("USER_URL", "http://127.0.0.1:50052")?,
            body_limit: parsed(source, "BODY_LIMIT_BYTES", 64 * 1024)?,
            upstream_timeout: Duration::from_millis(parsed(source, "UPSTREAM_TIMEOUT_MS", 10_000)?),
            upstream_connections: grpc::connections(source)?,
            internal_secret: grpc::secret(source, grpc::INTERNAL_SECRET)?,
            trusted_proxies: optional(source, "TRUSTED_PROXIES")
                .map(|list| list.parse())
                .transpose()
                .map_err(|message: String| ConfigError::invalid("TRUSTED_PROXIES", message))?
                .unwrap_or_default(),
            proxy_routes: optional(source, "PROXY_ROUTES")
                .map(|routes| routes.parse())
                .transpose()
                .map_err(|message: String| ConfigError::invalid("PROXY_ROUTES", message))?
                .unwrap_or_default(),
            proxy_timeout: Duration::from_millis(parsed(source, "PROXY_TIMEOUT_MS", 30_000)?),
            data_keys: DataKeys::required(source)?,
        };
        if config.proxy_timeout.is_zero() {
            return Err(ConfigError::invalid("PROXY_TIMEOUT_MS", "must be above 0"));
        }
        if config.body_limit == 0 {
            return Err(ConfigError::invalid("BODY_LIMIT_BYTES", "must be above 0"));
        }
        if config.upstream_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "UPSTREAM_TIMEOUT_MS",
                "must be above 0",
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pairs` over a configuration that has the internal secret.
    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all = vec![
            (
                grpc::INTERNAL_SECRET,
                "internal-secret-0123456789abcdef0123",
            ),
            (
                wxlogin_userdata::sealing::KEYS_VAR,
                "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ];
        all.extend_from_slice(pairs);
        Config::from_source(&wxlogin_common::config::Map::new(&all))
    }

    #[test]
    fn defaults_need_nothing() {
        let config = config(&[]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.auth_url, "http://127.0.0.1:50051");
        assert_eq!(config.user_url, "http://127.0.0.1:50052");
        assert_eq!(config.body_limit, 65536);
        assert_eq!(config.trusted_proxies, TrustedProxies::default());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("AUTH_URL", "auth:50051"),
            ("USER_URL", "ftp://x"),
            ("BODY_LIMIT_BYTES", "0"),
            ("BODY_LIMIT_BYTES", "lots"),
            ("UPSTREAM_TIMEOUT_MS", "0"),
            ("GATEWAY_ADDR", "8080"),
            ("UPSTREAM_CONNECTIONS", "0"),
            (grpc::INTERNAL_SECRET, "too-short"),
            (grpc::INTERNAL_SECRET, ""),
            ("TRUSTED_PROXIES", "10.0.0.0/8,ingress"),
            (wxlogin_userdata::sealing::KEYS_VAR, ""),
            (wxlogin_userdata::sealing::KEYS_VAR, "k1"),
        ] {
            let error = config(&[(name, value)]).unwrap_err().to_string();
            assert!(error.starts_with(name), "{error}");
        }
    }
}
