//! The answer of `getuserphonenumber` and how to read it, kept pure so that
//! every case of WeChat's contract is tested without a network.

use std::fmt;

use reqwest::StatusCode;
use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};

use crate::{Error, wire};

/// The phone number the user agreed to share. Personal data: callers must
/// not log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneInfo {
    /// The number as the user sees it; with the country code for numbers
    /// outside mainland China.
    pub phone_number: String,
    /// The number without country code.
    pub pure_phone_number: String,
    /// `"86"` for mainland China. WeChat sends a string or a number; both
    /// arrive here as the digits.
    pub country_code: String,
    /// Which app the number was given to, and when.
    pub watermark: Option<Watermark>,
}

/// What WeChat stamps into user data: the app it is for and when it was
/// issued (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Watermark {
    pub appid: String,
    pub timestamp: i64,
}

/// WeChat's answer, success and error alike.
#[derive(Deserialize)]
struct RawAnswer {
    errcode: Option<i64>,
    errmsg: Option<String>,
    phone_info: Option<RawPhoneInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPhoneInfo {
    phone_number: Option<String>,
    pure_phone_number: Option<String>,
    #[serde(default, deserialize_with = "string_or_integer")]
    country_code: Option<String>,
    watermark: Option<Watermark>,
}

/// Reads `getuserphonenumber`'s answer.
pub(crate) fn parse_phone_number(status: StatusCode, body: &[u8]) -> Result<PhoneInfo, Error> {
    let answer: RawAnswer = wire::parse_json(status, body, "getuserphonenumber")?;
    wire::check_token_errcode(status, answer.errcode, answer.errmsg)?;
    let info = answer
        .phone_info
        .ok_or_else(|| Error::InvalidResponse("success without phone_info".to_owned()))?;
    let required = |value: Option<String>, name: &str| {
        wire::present(value)
            .ok_or_else(|| Error::InvalidResponse(format!("phone_info without {name}")))
    };
    Ok(PhoneInfo {
        phone_number: required(info.phone_number, "phoneNumber")?,
        pure_phone_number: required(info.pure_phone_number, "purePhoneNumber")?,
        country_code: required(info.country_code, "countryCode")?,
        watermark: info.watermark,
    })
}

/// `"86"` and `86` alike, as the digits; `null` as absent.
fn string_or_integer<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct StringOrInteger;

    impl<'de> Visitor<'de> for StringOrInteger {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a country code as a string or an integer")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(Some(value.to_owned()))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(StringOrInteger)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<PhoneInfo, Error> {
        parse_phone_number(StatusCode::OK, body.as_bytes())
    }

    fn success(country_code: &str) -> String {
        format!(
            r#"{{"errcode":0,"errmsg":"ok","phone_info":{{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":{country_code},"watermark":{{"timestamp":1637744274,"appid":"wx0123456789abcdef"}}}}}}"#
        )
    }

    #[test]
    fn a_string_country_code_is_read() {
        let info = parse(&success(r#""86""#)).unwrap();
        assert_eq!(
            info,
            PhoneInfo {
                phone_number: "13800138000".to_owned(),
                pure_phone_number: "13800138000".to_owned(),
                country_code: "86".to_owned(),
                watermark: Some(Watermark {
                    appid: "wx0123456789abcdef".to_owned(),
                    timestamp: 1637744274,
                }),
            }
        );
    }

    #[test]
    fn a_numeric_country_code_is_read_as_its_digits() {
        assert_eq!(parse(&success("86")).unwrap().country_code, "86");
        assert_eq!(parse(&success("852")).unwrap().country_code, "852");
    }

    #[test]
    fn a_success_without_errcode_or_watermark_is_read() {
        let info = parse(
            r#"{"phone_info":{"phoneNumber":"+852 61234567","purePhoneNumber":"61234567","countryCode":"852"}}"#,
        )
        .unwrap();
        assert_eq!(info.phone_number, "+852 61234567");
        assert_eq!(info.pure_phone_number, "61234567");
        assert_eq!(info.watermark, None);
    }

    #[test]
    fn a_text_plain_body_with_a_trailing_newline_is_parsed() {
        let body = format!("{}\n", success("86"));
        assert!(parse_phone_number(StatusCode::OK, body.as_bytes()).is_ok());
    }

    #[test]
    fn a_missing_phone_info_is_an_invalid_response() {
        for body in [
            r#"{"errcode":0,"errmsg":"ok"}"#,
            r#"{"errcode":0,"errmsg":"ok","phone_info":null}"#,
        ] {
            assert!(
                matches!(parse(body), Err(Error::InvalidResponse(m)) if m.contains("phone_info")),
                "{body}"
            );
        }
    }

    #[test]
    fn missing_fields_are_named_but_not_quoted() {
        for (body, name) in [
            (
                r#"{"phone_info":{"purePhoneNumber":"13800138000","countryCode":"86"}}"#,
                "phoneNumber",
            ),
            (
                r#"{"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"","countryCode":"86"}}"#,
                "purePhoneNumber",
            ),
            (
                r#"{"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":null}}"#,
                "countryCode",
            ),
            (
                r#"{"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000"}}"#,
                "countryCode",
            ),
        ] {
            match parse(body) {
                Err(Error::InvalidResponse(message)) => {
                    assert!(message.contains(name), "{message}");
                    assert!(!message.contains("13800138000"), "{message}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_malformed_country_code_or_watermark_is_an_invalid_response() {
        for country_code in ["8.6", "true", "[86]", r#"{"code":86}"#] {
            assert!(
                matches!(
                    parse(&success(country_code)),
                    Err(Error::InvalidResponse(_))
                ),
                "{country_code}"
            );
        }
        let body = r#"{"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"appid":"wx1"}}}"#;
        assert!(
            matches!(parse(body), Err(Error::InvalidResponse(m)) if !m.contains("13800138000"))
        );
    }

    #[test]
    fn each_errcode_maps_to_its_variant() {
        let parse_errcode = |errcode: i64| {
            parse(&format!(
                r#"{{"errcode":{errcode},"errmsg":"some text, rid: 1"}}"#
            ))
        };
        assert!(matches!(parse_errcode(40029), Err(Error::InvalidCode)));
        assert!(matches!(parse_errcode(40163), Err(Error::CodeUsed)));
        assert!(matches!(parse_errcode(45009), Err(Error::RateLimited)));
        assert!(matches!(parse_errcode(45011), Err(Error::RateLimited)));
        assert!(matches!(parse_errcode(-1), Err(Error::Busy)));
        for errcode in [40001, 40014, 42001] {
            assert!(
                matches!(
                    parse_errcode(errcode),
                    Err(Error::AccessTokenInvalid { errcode: e }) if e == errcode
                ),
                "{errcode}"
            );
        }
        assert!(matches!(
            parse_errcode(47001),
            Err(Error::Api { errcode: 47001, errmsg }) if errmsg == "some text, rid: 1"
        ));
    }

    #[test]
    fn an_errcode_wins_over_the_http_status_and_a_bare_error_status_is_invalid() {
        let body = r#"{"errcode":40001,"errmsg":"invalid credential"}"#;
        assert!(matches!(
            parse_phone_number(StatusCode::SERVICE_UNAVAILABLE, body.as_bytes()),
            Err(Error::AccessTokenInvalid { errcode: 40001 })
        ));
        assert!(matches!(
            parse_phone_number(StatusCode::BAD_GATEWAY, success("86").as_bytes()),
            Err(Error::InvalidResponse(_))
        ));
    }

    #[test]
    fn a_non_json_body_is_an_invalid_response() {
        for body in ["<html>502 Bad Gateway</html>", "", "[]", "null"] {
            assert!(
                matches!(parse(body), Err(Error::InvalidResponse(_))),
                "{body:?}"
            );
        }
    }
}
