//! code2Session's answer and how to read it, kept pure so that every case of
//! WeChat's contract is tested without a network.

use std::fmt;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    Error,
    wire::{self, present},
};

/// The user's session_key. It signs and decrypts the user's data, so it
/// never shows in `Debug` output or logs.
#[derive(Clone)]
pub struct SessionKey(SecretString);

impl SessionKey {
    pub fn new(key: String) -> Self {
        SessionKey(SecretString::from(key))
    }

    /// The key as WeChat sent it (base64 of 16 bytes).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// Who the code belonged to.
#[derive(Debug, Clone)]
pub struct Code2Session {
    pub openid: String,
    /// Present when the mini-program is bound to an Open Platform account.
    pub unionid: Option<String>,
    pub session_key: SessionKey,
}

/// WeChat's answer, success and error alike. Deliberately not `Debug`: it
/// holds the session_key in the clear.
#[derive(Deserialize)]
struct RawAnswer {
    errcode: Option<i64>,
    errmsg: Option<String>,
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
}

/// Reads code2Session's answer. The body is JSON whatever the content type
/// says (WeChat labels it `text/plain`); an absent errcode means 0.
pub(crate) fn parse_code2session(status: StatusCode, body: &[u8]) -> Result<Code2Session, Error> {
    let answer: RawAnswer = wire::parse_json(status, body, "code2Session")?;
    wire::check_errcode(status, answer.errcode, answer.errmsg, Error::from_errcode)?;
    let openid = present(answer.openid)
        .ok_or_else(|| Error::InvalidResponse("success without an openid".to_owned()))?;
    let session_key = present(answer.session_key)
        .ok_or_else(|| Error::InvalidResponse("success without a session_key".to_owned()))?;
    Ok(Code2Session {
        openid,
        unionid: present(answer.unionid),
        session_key: SessionKey::new(session_key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "HyVFkGl5F5OQWJZZaNzBBg==";

    fn parse(body: &str) -> Result<Code2Session, Error> {
        parse_code2session(StatusCode::OK, body.as_bytes())
    }

    fn errcode_body(errcode: i64) -> String {
        format!(r#"{{"errcode":{errcode},"errmsg":"some text, rid: 6543"}}"#)
    }

    #[test]
    fn a_success_without_errcode_gives_the_identity() {
        let session = parse(&format!(
            r#"{{"session_key":"{KEY}","openid":"oABC","unionid":"uXYZ"}}"#
        ))
        .unwrap();
        assert_eq!(session.openid, "oABC");
        assert_eq!(session.unionid.as_deref(), Some("uXYZ"));
        assert_eq!(session.session_key.expose(), KEY);
    }

    #[test]
    fn errcode_zero_is_a_success() {
        let session = parse(&format!(
            r#"{{"errcode":0,"errmsg":"ok","session_key":"{KEY}","openid":"oABC"}}"#
        ))
        .unwrap();
        assert_eq!(session.openid, "oABC");
        assert_eq!(session.unionid, None);
    }

    #[test]
    fn an_empty_unionid_is_none() {
        let session = parse(&format!(
            r#"{{"session_key":"{KEY}","openid":"oABC","unionid":""}}"#
        ))
        .unwrap();
        assert_eq!(session.unionid, None);
    }

    #[test]
    fn a_text_plain_body_is_parsed_as_json() {
        // The status and bytes are all the parser sees: a `text/plain`
        // label cannot stop it. This is the exact body WeChat sends.
        let body = format!("{{\"session_key\":\"{KEY}\",\"openid\":\"oABC\"}}\n");
        let session = parse_code2session(StatusCode::OK, body.as_bytes()).unwrap();
        assert_eq!(session.openid, "oABC");
    }

    #[test]
    fn each_known_errcode_maps_to_its_variant() {
        assert!(matches!(parse(&errcode_body(-1)), Err(Error::Busy)));
        assert!(matches!(
            parse(&errcode_body(40029)),
            Err(Error::InvalidCode)
        ));
        assert!(matches!(parse(&errcode_body(40163)), Err(Error::CodeUsed)));
        assert!(matches!(
            parse(&errcode_body(45011)),
            Err(Error::RateLimited)
        ));
        assert!(matches!(
            parse(&errcode_body(40226)),
            Err(Error::UserBlocked)
        ));
        for errcode in [40013, 40125, 41002, 41004] {
            assert!(
                matches!(
                    parse(&errcode_body(errcode)),
                    Err(Error::InvalidCredentials { errcode: e }) if e == errcode
                ),
                "{errcode}"
            );
        }
    }

    #[test]
    fn an_unknown_errcode_is_an_api_error_with_its_message() {
        match parse(&errcode_body(40001)) {
            Err(Error::Api { errcode, errmsg }) => {
                assert_eq!(errcode, 40001);
                assert_eq!(errmsg, "some text, rid: 6543");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"errcode":12345}"#),
            Err(Error::Api { errcode: 12345, errmsg }) if errmsg.is_empty()
        ));
    }

    #[test]
    fn an_errcode_wins_over_the_http_status() {
        let body = errcode_body(-1);
        assert!(matches!(
            parse_code2session(StatusCode::SERVICE_UNAVAILABLE, body.as_bytes()),
            Err(Error::Busy)
        ));
    }

    #[test]
    fn a_non_2xx_status_without_errcode_is_an_invalid_response() {
        let body = format!(r#"{{"session_key":"{KEY}","openid":"oABC"}}"#);
        assert!(matches!(
            parse_code2session(StatusCode::BAD_GATEWAY, body.as_bytes()),
            Err(Error::InvalidResponse(_))
        ));
    }

    #[test]
    fn a_missing_or_empty_openid_is_an_invalid_response() {
        for body in [
            format!(r#"{{"session_key":"{KEY}","openid":""}}"#),
            format!(r#"{{"session_key":"{KEY}"}}"#),
            format!(r#"{{"session_key":"{KEY}","openid":null}}"#),
        ] {
            match parse(&body) {
                Err(Error::InvalidResponse(message)) => {
                    assert!(message.contains("openid"), "{message}");
                    assert!(!message.contains(KEY), "{message}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_or_empty_session_key_is_an_invalid_response() {
        for body in [
            r#"{"openid":"oABC","session_key":""}"#,
            r#"{"openid":"oABC"}"#,
        ] {
            assert!(
                matches!(parse(body), Err(Error::InvalidResponse(m)) if m.contains("session_key")),
                "{body}"
            );
        }
    }

    #[test]
    fn a_non_json_body_is_an_invalid_response() {
        for body in ["<html>502 Bad Gateway</html>", "", "[]", "\"oABC\""] {
            assert!(
                matches!(parse(body), Err(Error::InvalidResponse(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn parse_errors_do_not_quote_the_body() {
        // A mistyped field must not drag the session_key into the message.
        let body = format!(r#"{{"openid":"oABC","session_key":"{KEY}","errcode":"{KEY}"}}"#);
        match parse(&body) {
            Err(error @ Error::InvalidResponse(_)) => {
                assert!(!error.to_string().contains(KEY), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_output_never_shows_the_session_key() {
        let key = SessionKey::new(KEY.to_owned());
        assert_eq!(format!("{key:?}"), "SessionKey(<redacted>)");
        let session = Code2Session {
            openid: "oABC".to_owned(),
            unionid: None,
            session_key: key.clone(),
        };
        let debug = format!("{session:?}");
        assert!(debug.contains("oABC"), "{debug}");
        assert!(!debug.contains(KEY), "{debug}");
        assert!(!format!("{session:#?}").contains(KEY));
        assert_eq!(key.expose(), KEY);
    }
}
