//! Single-use codes bound to an app, with a lifetime: login codes (behind
//! them the identity code2Session returns) and phone codes (behind them
//! the phone_info getuserphonenumber returns).

use std::{collections::HashMap, time::Instant};

use serde::Serialize;

use super::sweep::Sweep;

/// The identity behind a code, handed out once.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: String,
}

/// How a phone code's `countryCode` goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum CountryCode {
    Text(String),
    Number(u64),
}

/// The phone_info behind a phone code, handed out once.
#[derive(Debug)]
pub(crate) struct PhoneRecord {
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: CountryCode,
    /// When the user tapped the button (Unix seconds): the watermark's.
    pub timestamp: i64,
}

/// What presenting a single-use code gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken<T> {
    Ok(T),
    /// Unknown, expired, or minted for another app: 40029.
    Invalid,
    /// Presented before: 40163.
    Used,
}

/// What exchanging a login code gave.
pub(crate) type Exchange = Taken<Identity>;

struct OneTimeCode<T> {
    appid: String,
    /// Taken by the one successful use; `None` marks the code used. A used
    /// code keeps only what 40163 needs, so long benchmarks stay small.
    value: Option<T>,
    /// `None`: the TTL is too large to represent, the code never expires.
    expires_at: Option<Instant>,
}

impl<T> OneTimeCode<T> {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// Single-use codes bound to an app, with a lifetime.
pub(crate) struct OneTimeCodes<T> {
    codes: HashMap<String, OneTimeCode<T>>,
    /// When expired codes are swept.
    sweep: Sweep,
}

impl<T> OneTimeCodes<T> {
    pub(crate) fn new() -> Self {
        OneTimeCodes {
            codes: HashMap::new(),
            sweep: Sweep::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.codes.len()
    }

    pub(crate) fn insert(
        &mut self,
        code: String,
        appid: String,
        value: T,
        expires_at: Option<Instant>,
        now: Instant,
    ) {
        if self.sweep.due(self.codes.len()) {
            self.codes.retain(|_, code| code.is_live(now));
            self.sweep.swept(self.codes.len());
        }
        self.codes.insert(
            code,
            OneTimeCode {
                appid,
                value: Some(value),
                expires_at,
            },
        );
    }

    /// Takes the value behind `code`, once. An expired code is invalid
    /// whether or not it was used, so the answer does not depend on when
    /// expired codes are swept.
    pub(crate) fn take(&mut self, appid: &str, code: &str, now: Instant) -> Taken<T> {
        match self.codes.get_mut(code) {
            Some(entry) if entry.appid == appid && entry.is_live(now) => match entry.value.take() {
                Some(value) => Taken::Ok(value),
                None => Taken::Used,
            },
            _ => Taken::Invalid,
        }
    }
}
