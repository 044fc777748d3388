//! The auth service's configuration, read from the environment.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use wxlogin_common::{
    ExposeSecret, SecretString,
    config::{ConfigError, Env, Source, optional, parsed},
    grpc,
};
use wxlogin_wechat::{AppCredentials, ClientConfig};

use crate::{
    limit::{Budget, Budgets},
    store::{MEMORY_URL, SessionPolicy},
};

/// The mini-programs this deployment serves: appid → credentials.
#[derive(Debug, Clone)]
pub struct Apps {
    default_appid: String,
    apps: BTreeMap<String, AppCredentials>,
}

impl Apps {
    /// Apps from `(appid, secret)` pairs; the first is the default.
    pub fn new(
        pairs: impl IntoIterator<Item = (String, SecretString)>,
    ) -> Result<Apps, ConfigError> {
        let mut apps = BTreeMap::new();
        let mut default_appid = None;
        for (appid, secret) in pairs {
            default_appid.get_or_insert_with(|| appid.clone());
            let credentials = AppCredentials {
                appid: appid.clone(),
                secret,
            };
            if apps.insert(appid.clone(), credentials).is_some() {
                return Err(ConfigError::invalid(
                    "WECHAT_APPS",
                    format!("appid {appid} is configured twice"),
                ));
            }
        }
        let default_appid = default_appid.ok_or_else(|| {
            ConfigError::invalid(
                "WECHAT_APPID",
                "no mini-program configured: set WECHAT_APPID and WECHAT_SECRET (or WECHAT_APPS)",
            )
        })?;
        Ok(Apps {
            default_appid,
            apps,
        })
    }

    /// The app `appid` names; an empty appid names the default app.
    pub fn get(&self, appid: &str) -> Option<&AppCredentials> {
        let appid = if appid.is_empty() {
            &self.default_appid
        } else {
            appid
        };
        self.apps.get(appid)
    }

    pub fn default_appid(&self) -> &str {
        &self.default_appid
    }

    pub fn appids(&self) -> impl Iterator<Item = &str> {
        self.apps.keys().map(String::as_str)
    }

    /// Every app's credentials.
    pub fn credentials(&self) -> impl Iterator<Item = &AppCredentials> {
        self.apps.values()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_ADDR`: where the gRPC server listens.
    pub listen_addr: SocketAddr,
    /// `REDIS_URL`.
    pub redis_url: SecretString,
    /// `REDIS_KEY_PREFIX`: every key this service writes starts with it.
    pub redis_key_prefix: String,
    /// `WECHAT_API_BASE`, `WECHAT_TIMEOUT_MS`.
    pub wechat: ClientConfig,
    /// `WECHAT_APPID` + `WECHAT_SECRET`, and `WECHAT_APPS`.
    pub apps: Apps,
    /// `SESSION_TTL_SECS`, `SESSION_MAX_LIFETIME_SECS`.
    pub sessions: SessionPolicy,
    /// `INTERNAL_SECRET`: what the gateway and other internal callers
    /// present.
    pub internal_secret: SecretString,
    /// `INTERNAL_USER_SECRET`: what the user service presents; the only
    /// credential session keys are answered to.
    pub internal_user_secret: SecretString,
    /// `RATE_LIMIT_LOGIN_PER_IP`, `RATE_LIMIT_LOGIN_PER_APP`,
    /// `RATE_LIMIT_CHECK_SESSION_PER_USER`, `RATE_LIMIT_PHONE_PER_USER`.
    pub limits: Budgets,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_source(&Env)
    }

    pub fn from_source(source: &dyn Source) -> Result<Config, ConfigError> {
        let listen_addr = parsed(
            source,
            "AUTH_ADDR",
            SocketAddr::from(([127, 0, 0, 1], 50051)),
        )?;
        let redis_url =
            optional(source, "REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        if redis_url != MEMORY_URL {
            wxlogin_redis::config::check_url(&redis_url)?;
        }
        let redis_key_prefix = wxlogin_redis::config::key_prefix(source)?;
        let defaults = ClientConfig::default();
        let wechat = ClientConfig {
            base_url: optional(source, "WECHAT_API_BASE").unwrap_or(defaults.base_url),
            timeout: Duration::from_millis(parsed(
                source,
                "WECHAT_TIMEOUT_MS",
                defaults.timeout.as_millis() as u64,
            )?),
            connect_timeout: defaults.connect_timeout,
        };
        if wechat.timeout.is_zero() {
            return Err(ConfigError::invalid("WECHAT_TIMEOUT_MS", "must be above 0"));
        }
        let apps = Apps::new(app_pairs(source)?)?;
        let internal_secret = grpc::secret(source, grpc::INTERNAL_SECRET)?;
        let internal_user_secret = grpc::secret(source, grpc::INTERNAL_USER_SECRET)?;
        if internal_secret.expose_secret() == internal_user_secret.expose_secret() {
            return Err(ConfigError::invalid(
                grpc::INTERNAL_USER_SECRET,
                "must differ from INTERNAL_SECRET: only the user service may read session keys",
            ));
        }

        let default_policy = SessionPolicy::default();
        let idle = parsed(
            source,
            "SESSION_TTL_SECS",
            default_policy.idle_ttl.as_secs(),
        )?;
        let max = parsed(
            source,
            "SESSION_MAX_LIFETIME_SECS",
            default_policy.max_lifetime.as_secs(),
        )?;
        if idle == 0 {
            return Err(ConfigError::invalid("SESSION_TTL_SECS", "must be above 0"));
        }
        if max < idle {
            return Err(ConfigError::invalid(
                "SESSION_MAX_LIFETIME_SECS",
                format!("{max} is below SESSION_TTL_SECS ({idle})"),
            ));
        }
        let limits = budgets(source)?;
        Ok(Config {
            listen_addr,
            redis_url: redis_url.into(),
            redis_key_prefix,
            wechat,
            apps,
            sessions: SessionPolicy {
                idle_ttl: Duration::from_secs(idle),
                max_lifetime: Duration::from_secs(max),
            },
            internal_secret,
            internal_user_secret,
            limits,
        })
    }
}

/// The `RATE_LIMIT_*` budgets: calls per minute, `0` for none.
fn budgets(source: &dyn Source) -> Result<Budgets, ConfigError> {
    let defaults = Budgets::default();
    let per_minute = |name: &str, default: Budget| -> Result<Budget, ConfigError> {
        Ok(Budget::per_minute(parsed(source, name, default.limit)?))
    };
    Ok(Budgets {
        login_per_ip: per_minute("RATE_LIMIT_LOGIN_PER_IP", defaults.login_per_ip)?,
        login_per_app: per_minute("RATE_LIMIT_LOGIN_PER_APP", defaults.login_per_app)?,
        check_session_per_user: per_minute(
            "RATE_LIMIT_CHECK_SESSION_PER_USER",
            defaults.check_session_per_user,
        )?,
        phone_per_user: per_minute("RATE_LIMIT_PHONE_PER_USER", defaults.phone_per_user)?,
    })
}

/// `WECHAT_APPID`/`WECHAT_SECRET` first (the default app), then the
/// comma-separated `appid:secret` pairs of `WECHAT_APPS`.
fn app_pairs(source: &dyn Source) -> Result<Vec<(String, SecretString)>, ConfigError> {
    let mut pairs = Vec::new();
    match (
        optional(source, "WECHAT_APPID"),
        optional(source, "WECHAT_SECRET"),
    ) {
        (Some(appid), Some(secret)) => pairs.push((appid, secret.into())),
        (None, None) => {}
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                name: "WECHAT_SECRET".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                name: "WECHAT_APPID".into(),
            });
        }
    }
    if let Some(list) = optional(source, "WECHAT_APPS") {
        for (index, entry) in list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let Some((appid, secret)) = entry.split_once(':') else {
                // The entry may hold a secret: name its position, not its text.
                return Err(ConfigError::invalid(
                    "WECHAT_APPS",
                    format!("entry {} is not appid:secret", index + 1),
                ));
            };
            let (appid, secret) = (appid.trim(), secret.trim());
            if appid.is_empty() || secret.is_empty() {
                return Err(ConfigError::invalid(
                    "WECHAT_APPS",
                    format!("entry {} has an empty appid or secret", index + 1),
                ));
            }
            pairs.push((appid.to_owned(), secret.to_owned().into()));
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERNAL: &str = "internal-secret-0123456789abcdef0123";
    const USER: &str = "user-secret-0123456789abcdef01234567";

    /// `pairs` over a configuration that has the internal secrets.
    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all = vec![
            (grpc::INTERNAL_SECRET, INTERNAL),
            (grpc::INTERNAL_USER_SECRET, USER),
        ];
        all.extend_from_slice(pairs);
        Config::from_source(&wxlogin_common::config::Map::new(&all))
    }

    #[test]
    fn internal_secrets_are_required_long_and_distinct() {
        for (pairs, variable) in [
            (&[(grpc::INTERNAL_SECRET, "")][..], grpc::INTERNAL_SECRET),
            (
                &[(grpc::INTERNAL_USER_SECRET, "short")][..],
                grpc::INTERNAL_USER_SECRET,
            ),
            (
                &[(grpc::INTERNAL_USER_SECRET, INTERNAL)][..],
                grpc::INTERNAL_USER_SECRET,
            ),
        ] {
            let mut pairs = pairs.to_vec();
            pairs.push(("WECHAT_APPS", "wxa:x"));
            let error = config(&pairs).unwrap_err().to_string();
            assert!(error.starts_with(variable), "{error}");
        }
        let config = config(&[("WECHAT_APPS", "wxa:x")]).unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(INTERNAL) && !debug.contains(USER),
            "{debug}"
        );
    }

    #[test]
    fn one_app_from_appid_and_secret() {
        let config = config(&[("WECHAT_APPID", "wxa"), ("WECHAT_SECRET", "s3cret")]).unwrap();
        assert_eq!(config.apps.default_appid(), "wxa");
        assert_eq!(config.apps.get("").unwrap().appid, "wxa");
        assert_eq!(
            config.apps.get("wxa").unwrap().secret.expose_secret(),
            "s3cret"
        );
        assert!(config.apps.get("wxb").is_none());
        assert_eq!(config.sessions, SessionPolicy::default());
        assert_eq!(config.limits, Budgets::default());
        assert_eq!(config.wechat.base_url, "https://api.weixin.qq.com");
    }

    #[test]
    fn several_apps_and_the_default() {
        let config = config(&[
            ("WECHAT_APPID", "wxa"),
            ("WECHAT_SECRET", "a"),
            ("WECHAT_APPS", "wxb:b, wxc:c"),
        ])
        .unwrap();
        assert_eq!(
            config.apps.appids().collect::<Vec<_>>(),
            ["wxa", "wxb", "wxc"]
        );
        assert_eq!(config.apps.get("").unwrap().appid, "wxa");
        let only_list = super::tests::config(&[("WECHAT_APPS", "wxb:b,wxc:c")]).unwrap();
        assert_eq!(only_list.apps.default_appid(), "wxb");
    }

    #[test]
    fn errors_name_the_variable_and_never_the_secret() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "WECHAT_APPID"),
            (&[("WECHAT_APPID", "wxa")], "WECHAT_SECRET"),
            (&[("WECHAT_APPS", "wxa-topsecret")], "WECHAT_APPS"),
            (&[("WECHAT_APPS", "wxa:x,wxa:topsecret")], "WECHAT_APPS"),
            (
                &[("WECHAT_APPS", "wxa:x"), ("SESSION_TTL_SECS", "0")],
                "SESSION_TTL_SECS",
            ),
            (
                &[
                    ("WECHAT_APPS", "wxa:x"),
                    ("SESSION_TTL_SECS", "100"),
                    ("SESSION_MAX_LIFETIME_SECS", "10"),
                ],
                "SESSION_MAX_LIFETIME_SECS",
            ),
            (
                &[("WECHAT_APPS", "wxa:x"), ("AUTH_ADDR", "nowhere")],
                "AUTH_ADDR",
            ),
            (
                &[("WECHAT_APPS", "wxa:x"), ("RATE_LIMIT_LOGIN_PER_IP", "-1")],
                "RATE_LIMIT_LOGIN_PER_IP",
            ),
            (
                &[
                    ("WECHAT_APPS", "wxa:x"),
                    ("RATE_LIMIT_PHONE_PER_USER", "lots"),
                ],
                "RATE_LIMIT_PHONE_PER_USER",
            ),
        ];
        for (pairs, variable) in cases {
            let error = config(pairs).unwrap_err().to_string();
            assert!(error.starts_with(variable), "{error}");
            assert!(!error.contains("topsecret"), "{error}");
        }
    }

    #[test]
    fn budgets_per_minute_and_zero_for_none() {
        let config = config(&[
            ("WECHAT_APPS", "wxa:x"),
            ("RATE_LIMIT_LOGIN_PER_IP", "5"),
            ("RATE_LIMIT_LOGIN_PER_APP", "0"),
            ("RATE_LIMIT_CHECK_SESSION_PER_USER", "2"),
            ("RATE_LIMIT_PHONE_PER_USER", "3"),
        ])
        .unwrap();
        assert_eq!(config.limits.login_per_ip, Budget::per_minute(5));
        assert_eq!(config.limits.login_per_app.limit, 0);
        assert_eq!(config.limits.check_session_per_user.limit, 2);
        assert_eq!(config.limits.phone_per_user.limit, 3);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = config(&[
            ("WECHAT_APPS", "wxa:topsecret"),
            ("REDIS_URL", "redis://:hunter2@127.0.0.1:6379"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("topsecret"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
