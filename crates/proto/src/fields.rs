//! The user fields wxlogin stores: each text column's width, and the names
//! clients know them by. The user service checks every value against them
//! before any write (`wxlogin_user::fields`); the gateway's OpenAPI document
//! states the same limits. One table, [`user_fields!`](crate::user_fields), so that they
//! cannot differ: [`Field`] is generated from it here, and the user
//! service generates its personal columns, the text values of a profile
//! update and the `User` message's text fields from it.

/// The one list of the text columns of `users`, in column order. Each row
/// gives the [`Field`] variant; its column (also the name of the field in
/// the entity, the `User` message and a profile update); its width in
/// characters (a utf8mb4 `VARCHAR(n)` holds n characters whatever their
/// size in bytes); its name in WeChat's data, and in our requests where
/// that is not the column's; and its kind: `key` (the row's identity,
/// never updated), `plain` (stored as it is) or `personal(SealedVariant,
/// sealed_column)` (sealed at rest in that column, see
/// `wxlogin_user::personal`).
///
/// `user_fields!(then)` calls the macro `then` with the rows, so that each
/// crate generates what it needs from this one table.
#[macro_export]
macro_rules! user_fields {
    ($then:ident) => {
        $then! {
            Appid { column: appid, max: 64, wechat: "appid", kind: key },
            Openid { column: openid, max: 128, wechat: "openId", kind: key },
            Unionid { column: unionid, max: 128, wechat: "unionId", kind: plain },
            Nickname {
                column: nickname, max: 128, wechat: "nickName",
                kind: personal(NicknameEnc, nickname_enc)
            },
            AvatarUrl {
                column: avatar_url, max: 1024, wechat: "avatarUrl",
                kind: personal(AvatarUrlEnc, avatar_url_enc)
            },
            Country {
                column: country, max: 64, wechat: "country",
                kind: personal(CountryEnc, country_enc)
            },
            Province {
                column: province, max: 64, wechat: "province",
                kind: personal(ProvinceEnc, province_enc)
            },
            City { column: city, max: 64, wechat: "city", kind: personal(CityEnc, city_enc) },
            Language { column: language, max: 16, wechat: "language", kind: plain },
            PhoneNumber {
                column: phone_number, max: 32, wechat: "phoneNumber",
                kind: personal(PhoneNumberEnc, phone_number_enc)
            },
            PurePhoneNumber {
                column: pure_phone_number, max: 32, wechat: "purePhoneNumber",
                kind: personal(PurePhoneNumberEnc, pure_phone_number_enc)
            },
            PhoneCountryCode {
                column: phone_country_code, max: 8, wechat: "countryCode", request: "country_code",
                kind: personal(PhoneCountryCodeEnc, phone_country_code_enc)
            },
        }
    };
}

/// [`Field`] and its tables, from the rows of [`user_fields!`].
macro_rules! field_enum {
    ($(
        $Variant:ident {
            column: $column:ident, max: $max:literal, wechat: $wechat:literal
            $(, request: $request:literal)?, kind: $kind:ident $(($($sealed:ident),*))?
        }
    ),* $(,)?) => {
        /// A text column of `users`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Field {
            $($Variant),*
        }

        impl Field {
            pub const ALL: [Field; [$(Field::$Variant),*].len()] = [$(Field::$Variant),*];

            /// The column's width in characters: a utf8mb4 `VARCHAR(n)`
            /// holds n characters whatever their size in bytes.
            pub const fn max_chars(self) -> u32 {
                match self {
                    $(Field::$Variant => $max),*
                }
            }

            /// The column's name in `users`.
            pub const fn column(self) -> &'static str {
                match self {
                    $(Field::$Variant => stringify!($column)),*
                }
            }

            /// The field's name as the client sent it.
            pub const fn name(self, origin: Origin) -> &'static str {
                match origin {
                    // A request names a field as its column unless the
                    // table says otherwise.
                    Origin::Request => match self {
                        $(Field::$Variant => [$($request,)? stringify!($column)][0]),*
                    },
                    Origin::WeChat => match self {
                        $(Field::$Variant => $wechat),*
                    },
                }
            }
        }
    };
}

user_fields!(field_enum);

/// Where a value came from; it decides how an error message names the
/// field, so that the client recognises its own input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A field of one of our gRPC requests (`nickname`, `phone_number`).
    Request,
    /// A field of WeChat's decrypted data (`nickName`, `phoneNumber`).
    WeChat,
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

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn every_field_has_its_names() {
        let names: Vec<(&str, &str, &str)> = Field::ALL
            .iter()
            .map(|field| {
                (
                    field.column(),
                    field.name(Origin::Request),
                    field.name(Origin::WeChat),
                )
            })
            .collect();

        assert_eq!(
            names,
            [
                ("appid", "appid", "appid"),
                ("openid", "openid", "openId"),
                ("unionid", "unionid", "unionId"),
                ("nickname", "nickname", "nickName"),
                ("avatar_url", "avatar_url", "avatarUrl"),
                ("country", "country", "country"),
                ("province", "province", "province"),
                ("city", "city", "city"),
                ("language", "language", "language"),
                ("phone_number", "phone_number", "phoneNumber"),
                ("pure_phone_number", "pure_phone_number", "purePhoneNumber"),
                ("phone_country_code", "country_code", "countryCode"),
            ]
        );
    }
}
