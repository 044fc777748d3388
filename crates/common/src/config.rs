//! Reading typed settings from the environment, with errors that name the
//! variable so a misconfigured deployment says what to fix.

use std::{fmt::Display, str::FromStr};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {message}")]
    Invalid { name: String, message: String },
    #[error("{name} must be set")]
    Missing { name: String },
}

impl ConfigError {
    pub fn invalid(name: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name: name.to_owned(),
            message: message.into(),
        }
    }
}

/// A source of settings: the process environment in production, a map in
/// tests that must not touch the (process-global) environment.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env;

impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Source for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Fixed settings, for tests and for wiring services together in one
/// process without touching the (process-global) environment.
#[derive(Debug, Clone, Default)]
pub struct Map(std::collections::HashMap<String, String>);

impl Map {
    pub fn new(pairs: &[(&str, &str)]) -> Map {
        Map(pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect())
    }
}

impl Source for Map {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// The value of `name`, if set to something other than blanks.
pub fn optional(source: &dyn Source, name: &str) -> Option<String> {
    source
        .get(name)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The value of `name`, which must be set.
pub fn required(source: &dyn Source, name: &str) -> Result<String, ConfigError> {
    optional(source, name).ok_or_else(|| ConfigError::Missing {
        name: name.to_owned(),
    })
}

/// The value of `name` parsed as `T`, or `default` when unset.
pub fn parsed<T>(source: &dyn Source, name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match optional(source, name) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|error| ConfigError::invalid(name, format!("{raw:?} is not valid: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(pairs: &[(&str, &str)]) -> Map {
        Map::new(pairs)
    }

    #[test]
    fn unset_and_blank_values_take_the_default() {
        let env = source(&[("BLANK", "  ")]);
        assert_eq!(parsed(&env, "UNSET", 7u64).unwrap(), 7);
        assert_eq!(parsed(&env, "BLANK", 7u64).unwrap(), 7);
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let env = source(&[("SESSION_TTL_SECS", "soon")]);
        let error = parsed(&env, "SESSION_TTL_SECS", 7u64).unwrap_err();
        assert!(
            error.to_string().starts_with("SESSION_TTL_SECS: "),
            "{error}"
        );
    }

    #[test]
    fn a_missing_required_value_names_the_variable() {
        let env = source(&[]);
        assert_eq!(
            required(&env, "DATABASE_URL").unwrap_err().to_string(),
            "DATABASE_URL must be set"
        );
    }
}
