//! The provider-neutral values that cross the interface.

use std::{fmt, time::Duration};

use secrecy::{ExposeSecret, SecretString};

/// What a client hands over to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCode {
    /// The login code (`wx.login`, `tt.login`, `my.getAuthCode`, …).
    pub code: String,
    /// Douyin's second code, for the anonymous user of the same device.
    pub anonymous_code: Option<String>,
}

impl LoginCode {
    /// A login by one code and nothing else.
    pub fn code(code: impl Into<String>) -> LoginCode {
        LoginCode {
            code: code.into(),
            anonymous_code: None,
        }
    }
}

/// What an identifier of a user says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// The user within one app (WeChat's and Douyin's openid).
    OpenId,
    /// A device's user who has not logged in (Douyin's anonymous_openid).
    AnonymousOpenId,
    /// The user across the provider (Alipay's user_id).
    UserId,
}

/// One identifier of the user an exchange found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: SubjectKind,
    pub id: String,
}

/// What an exchange of a login code yields.
#[derive(Debug, Clone)]
pub struct Exchanged {
    /// Whom the session is for.
    pub subject: Subject,
    /// Further identifiers the same exchange gave (Douyin's anonymous one).
    pub others: Vec<Subject>,
    /// The user's id across the provider's apps (WeChat's unionid), if any.
    pub union_id: Option<String>,
    /// The secret the provider shares with this session (WeChat's
    /// session_key), if the provider has such a thing.
    pub session_secret: Option<SessionSecret>,
}

impl Exchanged {
    /// Every identifier, the session's first.
    pub fn subjects(&self) -> impl Iterator<Item = &Subject> {
        std::iter::once(&self.subject).chain(&self.others)
    }
}

/// A secret the provider shares with one session of a user: it signs and
/// opens the user's data, so it never shows in `Debug` output or logs.
#[derive(Clone)]
pub struct SessionSecret(SecretString);

impl SessionSecret {
    pub fn new(secret: String) -> Self {
        SessionSecret(SecretString::from(secret))
    }

    /// The secret as the provider gave it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether it is the empty secret a session of a provider without
    /// session secrets keeps.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(<redacted>)")
    }
}

/// User data as the provider sealed it.
#[derive(Debug, Clone, Copy)]
pub struct Sealed<'a> {
    /// The ciphertext, as the client sent it.
    pub data: &'a str,
    /// The iv the client sent with it, where the provider uses one.
    pub iv: Option<&'a str>,
}

/// Content and the signature the client sent with it.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub content: &'a str,
    pub signature: &'a str,
}

/// What opened data must say to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectations<'a> {
    /// The app the data must be stamped for.
    pub appid: &'a str,
    /// When `Some` and the data names its user, the two must be equal.
    pub subject: Option<&'a str>,
    /// How old the data's stamp may be; `None`: no freshness check.
    pub max_age: Option<Duration>,
    /// The current time, in seconds since the Unix epoch.
    pub now_unix: i64,
}

/// Opened user data: the JSON object the provider sealed.
pub type OpenedData = serde_json::Map<String, serde_json::Value>;

/// Profile fields in opened data. Placeholders and empty values are
/// `None`, so that callers never overwrite real stored values with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub nickname: Option<String>,
    pub avatar_url: Option<String>,
    /// 1 male, 2 female; anything else is `None`.
    pub gender: Option<i32>,
    pub country: Option<String>,
    pub province: Option<String>,
    pub city: Option<String>,
    pub language: Option<String>,
    pub unionid: Option<String>,
    pub openid: Option<String>,
}

/// A phone number the user agreed to share. `Debug` shows only the last
/// four digits, so that the number stays out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    /// With the country code for foreign numbers, e.g. `+1 202...`.
    pub phone_number: String,
    /// Without the country code.
    pub pure_phone_number: String,
    /// E.g. `86`.
    pub country_code: String,
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.pure_phone_number.chars().count();
        let last_four: String = self
            .pure_phone_number
            .chars()
            .skip(digits.saturating_sub(4))
            .collect();
        f.debug_struct("PhoneNumber")
            .field("country_code", &self.country_code)
            .field("pure_phone_number", &format_args!("…{last_four}"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret_or_a_whole_number() {
        let secret = SessionSecret::new("HyVFkGl5F5OQWJZZaNzBBg==".to_owned());
        assert_eq!(format!("{secret:?}"), "SessionSecret(<redacted>)");
        let phone = PhoneNumber {
            phone_number: "13800138000".to_owned(),
            pure_phone_number: "13800138000".to_owned(),
            country_code: "86".to_owned(),
        };
        let debug = format!("{phone:?}");
        assert!(
            debug.contains("…8000") && !debug.contains("1380013"),
            "{debug}"
        );
    }

    #[test]
    fn the_session_subject_comes_first() {
        let subject = |kind, id: &str| Subject {
            kind,
            id: id.to_owned(),
        };
        let exchanged = Exchanged {
            subject: subject(SubjectKind::OpenId, "o1"),
            others: vec![subject(SubjectKind::AnonymousOpenId, "a1")],
            union_id: None,
            session_secret: None,
        };
        let ids: Vec<_> = exchanged.subjects().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["o1", "a1"]);
    }
}
