//! checkSessionKey (`GET /wxa/checksession`): its signature and how to read
//! its answer, kept pure so that both are tested without a network.

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde::Deserialize;
use sha2::Sha256;

use crate::{Error, SessionKey, wire};

/// WeChat's "invalid signature": the session_key is not the user's current
/// one.
const INVALID_SIGNATURE: i64 = 87009;

/// The signature checkSessionKey expects: lowercase hex of
/// HMAC-SHA256 with the session_key *string as WeChat gave it* (its base64
/// text, not the decoded bytes) as the key, over the empty message. Two
/// major SDKs shipped this wrong (decoded key, or key and message swapped).
pub fn check_session_signature(session_key: &SessionKey) -> String {
    // HMAC takes keys of any length, so this never fails; were it to, the
    // empty signature would merely be refused by WeChat (87009).
    <Hmac<Sha256> as KeyInit>::new_from_slice(session_key.expose().as_bytes())
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct RawAnswer {
    errcode: Option<i64>,
    errmsg: Option<String>,
}

/// Reads checkSessionKey's answer: `true` when the key is the user's
/// current one, `false` for 87009.
pub(crate) fn parse_check_session(status: StatusCode, body: &[u8]) -> Result<bool, Error> {
    let answer: RawAnswer = wire::parse_json(status, body, "checksession")?;
    if answer.errcode == Some(INVALID_SIGNATURE) {
        return Ok(false);
    }
    wire::check_token_errcode(status, answer.errcode, answer.errmsg)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_keys_hmac_with_the_base64_text() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"HyVFkGl5F5OQWJZZaNzBBg==", b"", hashlib.sha256).hexdigest())'
        let key = SessionKey::new("HyVFkGl5F5OQWJZZaNzBBg==".to_owned());
        assert_eq!(
            check_session_signature(&key),
            "252b75c92698025afe925b29cca5517fdf9ee67aae072cf3225ebf3a53783058"
        );
    }

    #[test]
    fn different_keys_sign_differently() {
        let one = check_session_signature(&SessionKey::new("HyVFkGl5F5OQWJZZaNzBBg==".to_owned()));
        let other =
            check_session_signature(&SessionKey::new("AAAAAAAAAAAAAAAAAAAAAA==".to_owned()));
        assert_ne!(one, other);
        assert_eq!(other.len(), 64);
    }

    fn parse(body: &str) -> Result<bool, Error> {
        parse_check_session(StatusCode::OK, body.as_bytes())
    }

    #[test]
    fn errcode_zero_or_absent_is_a_valid_key() {
        assert!(parse(r#"{"errcode":0,"errmsg":"ok"}"#).unwrap());
        assert!(parse("{}\n").unwrap());
    }

    #[test]
    fn invalid_signature_is_a_stale_key_not_an_error() {
        assert!(!parse(r#"{"errcode":87009,"errmsg":"invalid signature"}"#).unwrap());
        // Even on a non-2xx status: the errcode is WeChat's verdict.
        assert!(!parse_check_session(StatusCode::BAD_REQUEST, br#"{"errcode":87009}"#).unwrap());
    }

    #[test]
    fn token_errcodes_are_access_token_invalid() {
        for errcode in [40001, 40014, 42001] {
            assert!(matches!(
                parse(&format!(r#"{{"errcode":{errcode},"errmsg":"x"}}"#)),
                Err(Error::AccessTokenInvalid { errcode: e }) if e == errcode
            ));
        }
        assert!(matches!(
            parse(r#"{"errcode":-1,"errmsg":"system error"}"#),
            Err(Error::Busy)
        ));
        assert!(matches!(
            parse(r#"{"errcode":45009}"#),
            Err(Error::RateLimited)
        ));
        assert!(matches!(
            parse(r#"{"errcode":40003,"errmsg":"invalid openid"}"#),
            Err(Error::Api { errcode: 40003, .. })
        ));
    }

    #[test]
    fn malformed_answers_are_invalid_responses() {
        for body in ["", "<html></html>", r#"{"errcode":"87009"}"#, "[]"] {
            assert!(
                matches!(parse(body), Err(Error::InvalidResponse(_))),
                "{body:?}"
            );
        }
        assert!(matches!(
            parse_check_session(StatusCode::BAD_GATEWAY, b"{}"),
            Err(Error::InvalidResponse(_))
        ));
    }
}
