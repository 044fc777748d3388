//! What can go wrong talking to WeChat, split so callers can answer each
//! case differently: WeChat's verdicts on the user's code, our own
//! misconfiguration, and infrastructure failures (where it matters whether
//! the request may have reached WeChat, because a retry would burn the code).

/// A failed WeChat call. No variant ever carries the app secret, an
/// access_token or the request URL (which holds one or the other).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// errcode -1: WeChat is busy.
    #[error("WeChat is busy (errcode -1)")]
    Busy,
    /// errcode 40029: unknown or expired code, or one from another appid.
    #[error("WeChat does not know the code (errcode 40029)")]
    InvalidCode,
    /// errcode 40163: the code was exchanged before.
    #[error("the code was already used (errcode 40163)")]
    CodeUsed,
    /// errcode 45011: the user (or the app, per minute) hit WeChat's rate
    /// limit; also errcode 45009 from the access_token endpoints: the app's
    /// daily quota is spent. [`Error::errcode`] answers 45011 for both.
    #[error("WeChat rate-limited the call (errcode 45011 or 45009)")]
    RateLimited,
    /// errcode 40226: WeChat blocked the user as high-risk.
    #[error("WeChat blocked the user as high-risk (errcode 40226)")]
    UserBlocked,
    /// WeChat rejected our appid or secret (40013, 40125) or says one is
    /// missing (41002, 41004): our configuration is wrong.
    #[error("WeChat rejected our appid or secret (errcode {errcode})")]
    InvalidCredentials { errcode: i64 },
    /// errcode 40001, 40014 or 42001 from an endpoint that takes an
    /// access_token: the token is invalid, not the latest one (another
    /// instance fetched a new one with the classic API) or expired. Fetch a
    /// fresh token (`force_refresh` when the cached one was just refused),
    /// then retry the call once; a second refusal is an outage, not a loop.
    #[error("WeChat refused the access_token (errcode {errcode})")]
    AccessTokenInvalid { errcode: i64 },
    /// Any other non-zero errcode.
    #[error("WeChat answered errcode {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    /// No connection could be made: the request surely did not reach WeChat.
    #[error("cannot connect to WeChat")]
    Unreachable,
    /// The request was sent but no answer came in time: WeChat may have
    /// consumed the code.
    #[error("WeChat did not answer in time")]
    Timeout,
    /// Another HTTP or transport failure after the connection was made.
    #[error("the HTTP exchange with WeChat failed: {0}")]
    Transport(String),
    /// WeChat's answer was not what its contract promises.
    #[error("unexpected answer from WeChat: {0}")]
    InvalidResponse(String),
    /// The client configuration is unusable.
    #[error("invalid WeChat client configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// The error for a non-zero `errcode` from WeChat.
    pub(crate) fn from_errcode(errcode: i64, errmsg: Option<String>) -> Self {
        match errcode {
            -1 => Error::Busy,
            40029 => Error::InvalidCode,
            40163 => Error::CodeUsed,
            45011 => Error::RateLimited,
            40226 => Error::UserBlocked,
            40013 | 40125 | 41002 | 41004 => Error::InvalidCredentials { errcode },
            _ => Error::Api {
                errcode,
                errmsg: errmsg.unwrap_or_default(),
            },
        }
    }

    /// The error for a non-zero `errcode` from the token endpoints
    /// (`stable_token`, `token`). There 40001 means a wrong secret, not a
    /// stale token: answering [`Error::AccessTokenInvalid`] would send the
    /// caller into a refresh that cannot succeed.
    pub(crate) fn from_token_errcode(errcode: i64, errmsg: Option<String>) -> Self {
        match errcode {
            40001 => Error::InvalidCredentials { errcode },
            45009 => Error::RateLimited,
            _ => Error::from_errcode(errcode, errmsg),
        }
    }

    /// The error for a non-zero `errcode` from an endpoint that takes an
    /// access_token (`getuserphonenumber`, `checksession`).
    pub(crate) fn from_access_token_errcode(errcode: i64, errmsg: Option<String>) -> Self {
        match errcode {
            40001 | 40014 | 42001 => Error::AccessTokenInvalid { errcode },
            45009 => Error::RateLimited,
            _ => Error::from_errcode(errcode, errmsg),
        }
    }

    /// Whether WeChat refused the access_token: refresh it once and retry
    /// the call once.
    pub fn is_access_token_invalid(&self) -> bool {
        matches!(self, Error::AccessTokenInvalid { .. })
    }

    /// Whether WeChat refused the code itself (unknown, of another app, or
    /// used): what a client spends the app's quota with when it sends codes
    /// that are not real.
    pub fn is_code_refused(&self) -> bool {
        matches!(self, Error::InvalidCode | Error::CodeUsed)
    }

    /// What a metric's `errcode` label says of an error without one.
    pub fn kind_label(&self) -> &'static str {
        match self {
            Error::Unreachable => "unreachable",
            Error::Timeout => "timeout",
            Error::Transport(_) => "transport",
            Error::InvalidResponse(_) => "invalid_response",
            Error::InvalidConfig(_) => "invalid_config",
            _ => "errcode",
        }
    }

    /// The errcode WeChat answered with, when the failure is WeChat's verdict.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Error::Busy => Some(-1),
            Error::InvalidCode => Some(40029),
            Error::CodeUsed => Some(40163),
            Error::RateLimited => Some(45011),
            Error::UserBlocked => Some(40226),
            Error::InvalidCredentials { errcode }
            | Error::AccessTokenInvalid { errcode }
            | Error::Api { errcode, .. } => Some(*errcode),
            Error::Unreachable
            | Error::Timeout
            | Error::Transport(_)
            | Error::InvalidResponse(_)
            | Error::InvalidConfig(_) => None,
        }
    }

    /// Maps a reqwest failure. The URL is stripped first: it carries the
    /// secret or the access_token.
    pub(crate) fn from_reqwest(error: reqwest::Error) -> Self {
        let error = error.without_url();
        // A connect timeout is both; it is a connect failure first, since
        // nothing was sent.
        if error.is_connect() {
            Error::Unreachable
        } else if error.is_timeout() {
            Error::Timeout
        } else {
            Error::Transport(describe(&error))
        }
    }
}

/// The error and its causes on one line, without any URL.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    redact(wxlogin_common::error_report(error))
}

/// `without_url` strips the URL from the outer error only; should a cause
/// from a third-party crate ever print one, the message is dropped rather
/// than risk the secret or the access_token.
fn redact(text: String) -> String {
    if ["secret=", "js_code=", "access_token="]
        .iter()
        .any(|marker| text.contains(marker))
    {
        "details withheld: they mention the request URL".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value-that-must-not-leak";

    fn every_variant() -> Vec<Error> {
        vec![
            Error::Busy,
            Error::InvalidCode,
            Error::CodeUsed,
            Error::RateLimited,
            Error::UserBlocked,
            Error::InvalidCredentials { errcode: 40125 },
            Error::AccessTokenInvalid { errcode: 40001 },
            Error::Api {
                errcode: 40001,
                errmsg: "invalid credential, rid: 1".to_owned(),
            },
            Error::Unreachable,
            Error::Timeout,
            Error::Transport(describe(&std::io::Error::other(format!(
                "for url (https://api.weixin.qq.com/sns/jscode2session?appid=wx1&secret={SECRET})"
            )))),
            Error::InvalidResponse("missing openid".to_owned()),
            Error::InvalidConfig("timeout must be positive".to_owned()),
        ]
    }

    #[test]
    fn no_variant_shows_the_secret() {
        for error in every_variant() {
            let display = error.to_string();
            let debug = format!("{error:?}");
            assert!(!display.is_empty());
            assert!(!display.contains(SECRET), "{display}");
            assert!(!debug.contains(SECRET), "{debug}");
        }
    }

    #[test]
    fn errcodes_map_to_their_variants_and_back() {
        for errcode in [
            -1, 40029, 40163, 45011, 40226, 40013, 40125, 41002, 41004, 40001,
        ] {
            assert_eq!(Error::from_errcode(errcode, None).errcode(), Some(errcode));
        }
        assert!(matches!(
            Error::from_errcode(40125, None),
            Error::InvalidCredentials { errcode: 40125 }
        ));
        assert_eq!(Error::Timeout.errcode(), None);
    }

    #[test]
    fn access_token_errcodes_map_to_access_token_invalid_where_a_token_is_sent() {
        for errcode in [40001, 40014, 42001] {
            let error = Error::from_access_token_errcode(errcode, None);
            assert!(
                matches!(error, Error::AccessTokenInvalid { errcode: e } if e == errcode),
                "{error:?}"
            );
            assert!(error.is_access_token_invalid());
            assert_eq!(error.errcode(), Some(errcode));
        }
        // code2Session takes no token: 40001 there is just an API error.
        assert!(!Error::from_errcode(40001, None).is_access_token_invalid());
        // On the token endpoints 40001 means a wrong secret.
        assert!(matches!(
            Error::from_token_errcode(40001, None),
            Error::InvalidCredentials { errcode: 40001 }
        ));
    }

    #[test]
    fn the_daily_quota_is_rate_limited_on_the_access_token_paths() {
        assert!(matches!(
            Error::from_access_token_errcode(45009, None),
            Error::RateLimited
        ));
        assert!(matches!(
            Error::from_token_errcode(45009, None),
            Error::RateLimited
        ));
        for map in [Error::from_access_token_errcode, Error::from_token_errcode] {
            assert!(matches!(map(45011, None), Error::RateLimited));
            assert!(matches!(map(40029, None), Error::InvalidCode));
            assert!(matches!(map(40163, None), Error::CodeUsed));
            assert!(matches!(map(-1, None), Error::Busy));
            assert!(matches!(map(40125, None), Error::InvalidCredentials { .. }));
        }
    }

    #[test]
    fn descriptions_mentioning_an_access_token_are_withheld() {
        let error = std::io::Error::other(
            "error for url (https://api.weixin.qq.com/wxa/checksession?access_token=72_abc)",
        );
        assert!(!describe(&error).contains("72_abc"));
    }

    #[test]
    fn descriptions_without_urls_are_kept() {
        let error = std::io::Error::other("connection reset by peer");
        assert_eq!(describe(&error), "connection reset by peer");
    }
}
