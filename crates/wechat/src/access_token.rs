//! The app's access_token, and the answer of `stable_token` that issues
//! it, kept pure so that every case of WeChat's contract is tested without a
//! network.
//!
//! This module does not cache tokens: one cache shared by every instance,
//! with a single-flight refresh, is the caller's job (see `docs/wechat.md`).

use std::{fmt, time::Duration};

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    Error,
    wire::{self, present},
};

/// The app's access_token. It lets anyone call WeChat's API as the app, so
/// it never shows in `Debug` output or logs. It travels in the query string,
/// which is why no request URL ever reaches an error.
#[derive(Clone)]
pub struct AccessToken(SecretString);

impl AccessToken {
    pub fn new(token: String) -> Self {
        AccessToken(SecretString::from(token))
    }

    /// The token as WeChat issued it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// A token and how long WeChat says it stays valid, counted from when the
/// answer arrived. `stable_token` answers the remaining lifetime of the
/// token it hands out again, so this may be far below 7200 s.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: AccessToken,
    pub expires_in: Duration,
}

/// WeChat's answer. Deliberately not `Debug`: it holds the token.
#[derive(Deserialize)]
struct RawAnswer {
    errcode: Option<i64>,
    errmsg: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Reads `stable_token`'s (or the classic `token`'s) answer.
pub(crate) fn parse_stable_token(status: StatusCode, body: &[u8]) -> Result<IssuedToken, Error> {
    let answer: RawAnswer = wire::parse_json(status, body, "stable_token")?;
    wire::check_errcode(
        status,
        answer.errcode,
        answer.errmsg,
        Error::from_token_errcode,
    )?;
    let token = present(answer.access_token)
        .ok_or_else(|| Error::InvalidResponse("success without an access_token".to_owned()))?;
    let expires_in = answer
        .expires_in
        .ok_or_else(|| Error::InvalidResponse("success without expires_in".to_owned()))?;
    Ok(IssuedToken {
        token: AccessToken::new(token),
        expires_in: Duration::from_secs(expires_in),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "72_AbCdEf0123456789-token-that-must-not-leak";

    fn parse(body: &str) -> Result<IssuedToken, Error> {
        parse_stable_token(StatusCode::OK, body.as_bytes())
    }

    #[test]
    fn a_success_gives_the_token_and_its_lifetime() {
        let issued = parse(&format!(
            r#"{{"access_token":"{TOKEN}","expires_in":7200}}"#
        ))
        .unwrap();
        assert_eq!(issued.token.expose(), TOKEN);
        assert_eq!(issued.expires_in, Duration::from_secs(7200));

        let issued = parse(&format!(
            r#"{{"errcode":0,"errmsg":"ok","access_token":"{TOKEN}","expires_in":3}}"#
        ))
        .unwrap();
        assert_eq!(issued.expires_in, Duration::from_secs(3));
    }

    #[test]
    fn errcodes_map_to_their_variants() {
        let parse_errcode = |errcode: i64| {
            parse(&format!(
                r#"{{"errcode":{errcode},"errmsg":"some text, rid: 1"}}"#
            ))
        };
        assert!(matches!(parse_errcode(-1), Err(Error::Busy)));
        for errcode in [40013, 40125, 41002, 41004, 40001] {
            assert!(
                matches!(
                    parse_errcode(errcode),
                    Err(Error::InvalidCredentials { errcode: e }) if e == errcode
                ),
                "{errcode}"
            );
        }
        assert!(matches!(parse_errcode(45009), Err(Error::RateLimited)));
        assert!(matches!(parse_errcode(45011), Err(Error::RateLimited)));
        assert!(matches!(
            parse_errcode(40002),
            Err(Error::Api { errcode: 40002, errmsg }) if errmsg == "some text, rid: 1"
        ));
    }

    #[test]
    fn a_missing_token_or_lifetime_is_an_invalid_response() {
        for (body, missing) in [
            (r#"{"expires_in":7200}"#.to_owned(), "access_token"),
            (
                r#"{"access_token":"","expires_in":7200}"#.to_owned(),
                "access_token",
            ),
            (format!(r#"{{"access_token":"{TOKEN}"}}"#), "expires_in"),
        ] {
            match parse(&body) {
                Err(Error::InvalidResponse(message)) => {
                    assert!(message.contains(missing), "{message}");
                    assert!(!message.contains(TOKEN), "{message}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_bodies_are_invalid_responses_that_quote_nothing() {
        for body in [
            "<html>502</html>".to_owned(),
            String::new(),
            format!(r#"{{"access_token":"{TOKEN}","expires_in":"{TOKEN}"}}"#),
            format!(r#"{{"access_token":"{TOKEN}","expires_in":-5}}"#),
        ] {
            match parse(&body) {
                Err(error @ Error::InvalidResponse(_)) => {
                    assert!(!error.to_string().contains(TOKEN), "{error}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_non_2xx_status_without_errcode_is_an_invalid_response() {
        let body = format!(r#"{{"access_token":"{TOKEN}","expires_in":7200}}"#);
        assert!(matches!(
            parse_stable_token(StatusCode::BAD_GATEWAY, body.as_bytes()),
            Err(Error::InvalidResponse(_))
        ));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let issued = IssuedToken {
            token: AccessToken::new(TOKEN.to_owned()),
            expires_in: Duration::from_secs(7200),
        };
        let debug = format!("{issued:?} {issued:#?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains("AccessToken(<redacted>)"), "{debug}");
        assert_eq!(issued.token.expose(), TOKEN);
    }
}
