//! The simulator's settings: which mini-programs it knows and how long codes
//! and access_tokens live. Read from the environment by the binary, built in code by tests.

use std::{fmt, time::Duration};

use wxlogin_common::config::{self, ConfigError, Source};

/// The appid of the one app a simulator knows when `SIM_APPS` is unset.
pub const DEFAULT_APPID: &str = "wx0123456789abcdef";

/// The secret of [`DEFAULT_APPID`]. A fake secret: it only opens the simulator.
pub const DEFAULT_SECRET: &str = "sim0secret0123456789abcdef012345";

/// How long a minted code stays exchangeable, as on WeChat.
pub const DEFAULT_CODE_TTL: Duration = Duration::from_secs(300);

/// How long an access_token stays valid, as on WeChat.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(7200);

/// How long a replaced access_token stays valid, as on WeChat (about five
/// minutes).
pub const DEFAULT_ACCESS_TOKEN_GRACE: Duration = Duration::from_secs(300);

/// `appid:secret,appid2:secret2`: the apps the simulator accepts.
pub const APPS_VAR: &str = "SIM_APPS";

/// Lifetime of minted codes, in seconds.
pub const CODE_TTL_VAR: &str = "SIM_CODE_TTL_SECS";

/// Lifetime of access_tokens, in seconds.
pub const ACCESS_TOKEN_TTL_VAR: &str = "SIM_ACCESS_TOKEN_TTL_SECS";

/// How long a replaced access_token stays valid, in seconds.
pub const ACCESS_TOKEN_GRACE_VAR: &str = "SIM_ACCESS_TOKEN_GRACE_SECS";

/// What the simulator knows about the world.
#[derive(Clone)]
pub struct SimConfig {
    /// `(appid, secret)` pairs. The first is the default app for minting.
    pub apps: Vec<(String, String)>,
    /// How long a minted code (login or phone) stays exchangeable.
    pub code_ttl: Duration,
    /// How long an access_token stays valid after it is issued.
    pub access_token_ttl: Duration,
    /// How long an access_token stays valid once a newer one of its kind
    /// replaced it (a forced stable_token refresh, any classic token call).
    pub access_token_grace: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            apps: vec![(DEFAULT_APPID.to_owned(), DEFAULT_SECRET.to_owned())],
            code_ttl: DEFAULT_CODE_TTL,
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            access_token_grace: DEFAULT_ACCESS_TOKEN_GRACE,
        }
    }
}

// Secrets stay out of Debug even here, so that printing a config never
// teaches anyone to print secrets.
impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let appids: Vec<&str> = self.apps.iter().map(|(appid, _)| appid.as_str()).collect();
        f.debug_struct("SimConfig")
            .field("appids", &appids)
            .field("code_ttl", &self.code_ttl)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("access_token_grace", &self.access_token_grace)
            .finish_non_exhaustive()
    }
}

impl SimConfig {
    /// Reads `SIM_APPS`, `SIM_CODE_TTL_SECS`, `SIM_ACCESS_TOKEN_TTL_SECS` and
    /// `SIM_ACCESS_TOKEN_GRACE_SECS` from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&config::Env)
    }

    /// Reads the settings from `source` (a map in tests).
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let apps = match config::optional(source, APPS_VAR) {
            None => SimConfig::default().apps,
            Some(raw) => {
                parse_apps(&raw).map_err(|message| ConfigError::invalid(APPS_VAR, message))?
            }
        };
        let ttl_secs = config::parsed(source, CODE_TTL_VAR, DEFAULT_CODE_TTL.as_secs())?;
        let token_ttl_secs = config::parsed(
            source,
            ACCESS_TOKEN_TTL_VAR,
            DEFAULT_ACCESS_TOKEN_TTL.as_secs(),
        )?;
        let token_grace_secs = config::parsed(
            source,
            ACCESS_TOKEN_GRACE_VAR,
            DEFAULT_ACCESS_TOKEN_GRACE.as_secs(),
        )?;
        Ok(SimConfig {
            apps,
            code_ttl: Duration::from_secs(ttl_secs),
            access_token_ttl: Duration::from_secs(token_ttl_secs),
            access_token_grace: Duration::from_secs(token_grace_secs),
        })
    }
}

/// Parses `appid:secret,appid2:secret2`. Messages name the entry by position,
/// never by content: the content holds a secret.
fn parse_apps(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut apps: Vec<(String, String)> = Vec::new();
    for (index, entry) in raw.split(',').map(str::trim).enumerate() {
        let position = index + 1;
        if entry.is_empty() {
            continue;
        }
        let Some((appid, secret)) = entry.split_once(':') else {
            return Err(format!("entry {position} must look like appid:secret"));
        };
        let (appid, secret) = (appid.trim(), secret.trim());
        if appid.is_empty() || secret.is_empty() {
            return Err(format!("entry {position} has an empty appid or secret"));
        }
        if apps.iter().any(|(known, _)| known == appid) {
            return Err(format!("entry {position} repeats appid {appid}"));
        }
        apps.push((appid.to_owned(), secret.to_owned()));
    }
    if apps.is_empty() {
        return Err("must name at least one appid:secret".to_owned());
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(pairs: &[(&str, &str)]) -> wxlogin_common::config::Map {
        wxlogin_common::config::Map::new(pairs)
    }

    #[test]
    fn unset_variables_give_the_default_app_and_ttl() {
        let config = SimConfig::from_source(&source(&[])).unwrap();
        assert_eq!(
            config.apps,
            vec![(DEFAULT_APPID.to_owned(), DEFAULT_SECRET.to_owned())]
        );
        assert_eq!(config.code_ttl, DEFAULT_CODE_TTL);
        assert_eq!(config.access_token_ttl, DEFAULT_ACCESS_TOKEN_TTL);
        assert_eq!(config.access_token_grace, DEFAULT_ACCESS_TOKEN_GRACE);
    }

    #[test]
    fn apps_and_ttl_are_read() {
        let config = SimConfig::from_source(&source(&[
            (APPS_VAR, " wxa:sa , wxb:sb ,"),
            (CODE_TTL_VAR, "7"),
            (ACCESS_TOKEN_TTL_VAR, "60"),
            (ACCESS_TOKEN_GRACE_VAR, "0"),
        ]))
        .unwrap();
        assert_eq!(
            config.apps,
            vec![
                ("wxa".to_owned(), "sa".to_owned()),
                ("wxb".to_owned(), "sb".to_owned())
            ]
        );
        assert_eq!(config.code_ttl, Duration::from_secs(7));
        assert_eq!(config.access_token_ttl, Duration::from_secs(60));
        assert_eq!(config.access_token_grace, Duration::ZERO);
    }

    #[test]
    fn a_bad_entry_names_the_variable_but_not_the_secret() {
        for raw in [
            "wxa:topsecret,broken",
            "wxa:topsecret,wxa:topsecret",
            ":topsecret",
            ",",
        ] {
            let error = SimConfig::from_source(&source(&[(APPS_VAR, raw)])).unwrap_err();
            let text = error.to_string();
            assert!(text.starts_with("SIM_APPS: "), "{text}");
            assert!(!text.contains("topsecret"), "{text}");
        }
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let text = format!("{:?}", SimConfig::default());
        assert!(text.contains(DEFAULT_APPID), "{text}");
        assert!(!text.contains(DEFAULT_SECRET), "{text}");
    }
}
