//! The user fields wxlogin stores: each text column's width, and the names
//! clients know them by. The user service checks every value against them
//! before any write (`wxlogin_user::fields`); the gateway's OpenAPI document
//! states the same limits. One table, so that the two cannot differ.

/// A text column of `users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Appid,
    Openid,
    Unionid,
    Nickname,
    AvatarUrl,
    Country,
    Province,
    City,
    Language,
    PhoneNumber,
    PurePhoneNumber,
    PhoneCountryCode,
}

/// Where a value came from; it decides how an error message names the
/// field, so that the client recognises its own input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A field of one of our gRPC requests (`nickname`, `phone_number`).
    Request,
    /// A field of WeChat's decrypted data (`nickName`, `phoneNumber`).
    WeChat,
}

impl Field {
    pub const ALL: [Field; 12] = [
        Field::Appid,
        Field::Openid,
        Field::Unionid,
        Field::Nickname,
        Field::AvatarUrl,
        Field::Country,
        Field::Province,
        Field::City,
        Field::Language,
        Field::PhoneNumber,
        Field::PurePhoneNumber,
        Field::PhoneCountryCode,
    ];

    /// The column's width in characters: a utf8mb4 `VARCHAR(n)` holds n
    /// characters whatever their size in bytes.
    pub const fn max_chars(self) -> u32 {
        match self {
            Field::Appid => 64,
            Field::Openid | Field::Unionid | Field::Nickname => 128,
            Field::AvatarUrl => 1024,
            Field::Country | Field::Province | Field::City => 64,
            Field::Language => 16,
            Field::PhoneNumber | Field::PurePhoneNumber => 32,
            Field::PhoneCountryCode => 8,
        }
    }

    /// The column's name in `users`.
    pub const fn column(self) -> &'static str {
        match self {
            Field::Appid => "appid",
            Field::Openid => "openid",
            Field::Unionid => "unionid",
            Field::Nickname => "nickname",
            Field::AvatarUrl => "avatar_url",
            Field::Country => "country",
            Field::Province => "province",
            Field::City => "city",
            Field::Language => "language",
            Field::PhoneNumber => "phone_number",
            Field::PurePhoneNumber => "pure_phone_number",
            Field::PhoneCountryCode => "phone_country_code",
        }
    }

    /// The field's name as the client sent it.
    pub const fn name(self, origin: Origin) -> &'static str {
        match (origin, self) {
            (Origin::Request, Field::PhoneCountryCode) => "country_code",
            (Origin::Request, field) => field.column(),
            (Origin::WeChat, Field::Appid) => "appid",
            (Origin::WeChat, Field::Openid) => "openId",
            (Origin::WeChat, Field::Unionid) => "unionId",
            (Origin::WeChat, Field::Nickname) => "nickName",
            (Origin::WeChat, Field::AvatarUrl) => "avatarUrl",
            (Origin::WeChat, Field::Country) => "country",
            (Origin::WeChat, Field::Province) => "province",
            (Origin::WeChat, Field::City) => "city",
            (Origin::WeChat, Field::Language) => "language",
            (Origin::WeChat, Field::PhoneNumber) => "phoneNumber",
            (Origin::WeChat, Field::PurePhoneNumber) => "purePhoneNumber",
            (Origin::WeChat, Field::PhoneCountryCode) => "countryCode",
        }
    }
}

/// Whether `url` is an absolute http(s) URL: the only avatars a client can
/// safely put in an `<image src>` (no `javascript:`, `data:` or relative
/// paths), with no whitespace or control characters that would end it
/// early.
pub fn is_web_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http"))
        && !rest.is_empty()
        && !rest.starts_with('/')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// [`is_web_url`] as the ECMA-262 pattern of a JSON schema (the OpenAPI
/// document's): an http or https scheme in any case, then a host part that
/// does not start with `/`, and no whitespace or control characters.
pub const WEB_URL_PATTERN: &str =
    r"^[Hh][Tt][Tt][Pp][Ss]?://[^/\s\x00-\x1f\x7f][^\s\x00-\x1f\x7f]*$";

/// The most characters of a client's User-Agent a session keeps (for the
/// user's list of sessions); the rest is cut.
pub const USER_AGENT_MAX_CHARS: usize = 256;

/// What a session keeps of a client's User-Agent: client-controlled text,
/// so at most [`USER_AGENT_MAX_CHARS`] characters, control characters
/// (line breaks, escapes) replaced by spaces, surrounding whitespace
/// trimmed; `None` when nothing is left.
pub fn user_agent(raw: &str) -> Option<String> {
    let kept: String = raw
        .trim()
        .chars()
        .take(USER_AGENT_MAX_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let kept = kept.trim_end();
    (!kept.is_empty()).then(|| kept.to_owned())
}

/// What a session keeps of a client's address: its network, IPv4 /24 or
/// IPv6 /48 (`203.0.113.0/24`, `2001:db8:1::/48`), enough to tell "home"
/// from "elsewhere" without keeping the address.
pub fn address_prefix(ip: std::net::IpAddr) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{}/24", Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, ..] = v6.segments();
            format!("{}/48", Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn a_user_agent_is_bounded_and_has_no_control_characters() {
        assert_eq!(user_agent("  "), None);
        assert_eq!(
            user_agent("a\r\nInjected: yes\u{1b}[31m\"").as_deref(),
            Some("a  Injected: yes [31m\"")
        );
        let long = "界".repeat(1000);
        assert_eq!(
            user_agent(&long).map(|kept| kept.chars().count()),
            Some(USER_AGENT_MAX_CHARS)
        );
    }

    #[test]
    fn an_address_keeps_its_network_only() {
        let prefix = |ip: &str| address_prefix(ip.parse().unwrap());
        assert_eq!(prefix("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(prefix("::ffff:198.51.100.9"), "198.51.100.0/24");
        assert_eq!(prefix("2001:db8:1:2:3:4:5:6"), "2001:db8:1::/48");
    }
}
