//! The one check every user field passes before any write (the widths and
//! names are `wxlogin_proto::fields`', shared with the gateway's OpenAPI
//! document), whatever path it came by
//! (a gRPC request, or data decrypted from WeChat). So no path can store
//! what another refuses, and MySQL never sees a value too long for its
//! column (which it would refuse with error 1406, a 500 for the client).
//!
//! The fields themselves are the one list [`wxlogin_proto::user_fields!`];
//! [`ProfileUpdate::texts`] is generated from it.
//!
//! The entity takes its widths from [`Field::max_chars`]. The migrations keep
//! the literals they were written with, because a migration is history and
//! must create the same schema forever; a test checks the migrated schema
//! against this table, so the two cannot drift apart unnoticed.

use wxlogin_provider::PhoneNumber;

use crate::error::Error;

pub use wxlogin_proto::fields::{Field, Origin};

/// The checks of a value against its column, before any write.
pub trait FieldCheck: Copy {
    /// `value` if it fits the column; `name` is what the error calls it.
    fn fits<'a>(self, name: &str, value: &'a str) -> Result<&'a str, Error>;

    /// `value`, which must be non-empty and fit the column.
    fn required<'a>(self, name: &str, value: &'a str) -> Result<&'a str, Error> {
        if value.is_empty() {
            return Err(Error::InvalidArgument(format!("{name} is required")));
        }
        self.fits(name, value)
    }

    /// `value` if present; an empty string counts as absent, because proto3
    /// clients often send "" for "none".
    fn optional<'a>(self, name: &str, value: Option<&'a str>) -> Result<Option<&'a str>, Error> {
        match value {
            None | Some("") => Ok(None),
            Some(value) => self.fits(name, value).map(Some),
        }
    }
}

impl FieldCheck for Field {
    fn fits<'a>(self, name: &str, value: &'a str) -> Result<&'a str, Error> {
        at_most(name, value, self.max_chars())?;
        if self == Field::AvatarUrl && !wxlogin_proto::fields::is_web_url(value) {
            return Err(Error::InvalidArgument(format!(
                "{name} must be an http(s) URL"
            )));
        }
        Ok(value)
    }
}

/// `value` if it has at most `max_chars` characters (not bytes); else an
/// error naming it `name`.
pub fn at_most<'a>(name: &str, value: &'a str, max_chars: u32) -> Result<&'a str, Error> {
    // Counting stops one past the limit: a huge value costs no more.
    let too_long = usize::try_from(max_chars).is_ok_and(|max| value.chars().nth(max).is_some());
    if too_long {
        return Err(Error::InvalidArgument(format!(
            "{name} is longer than {max_chars} characters"
        )));
    }
    Ok(value)
}

/// Profile fields to store; `None` leaves the stored value as it is. Only
/// [`ProfileUpdate::validated`] turns one into something the repository
/// writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileUpdate {
    pub nickname: Option<String>,
    pub avatar_url: Option<String>,
    pub gender: Option<i8>,
    pub country: Option<String>,
    pub province: Option<String>,
    pub city: Option<String>,
    pub language: Option<String>,
    /// Stored only when the user has no unionid yet.
    pub unionid: Option<String>,
    pub phone_number: Option<String>,
    pub pure_phone_number: Option<String>,
    pub phone_country_code: Option<String>,
}

impl ProfileUpdate {
    /// The phone fields of `phone`, nothing else.
    pub fn phone(phone: PhoneNumber) -> ProfileUpdate {
        ProfileUpdate {
            phone_number: Some(phone.phone_number),
            pure_phone_number: Some(phone.pure_phone_number),
            phone_country_code: Some(phone.country_code),
            ..ProfileUpdate::default()
        }
    }

    /// This update, once every value fits its column (and an avatar is an
    /// http(s) URL); else an error naming the first field that does not, as
    /// `origin` calls it. Nothing is written for a refused update.
    pub fn validated(self, origin: Origin) -> Result<Validated, Error> {
        for (field, value) in self.texts() {
            if let Some(value) = value {
                field.fits(field.name(origin), value)?;
            }
        }
        if let Some(gender) = self.gender
            && !(0..=2).contains(&gender)
        {
            return Err(Error::InvalidArgument(format!(
                "gender must be 0, 1 or 2, not {gender}"
            )));
        }
        Ok(Validated(self))
    }
}

/// [`ProfileUpdate::texts`], from the rows of [`wxlogin_proto::user_fields!`]
/// that are no key (appid and openid name the row; an update never
/// changes them): every other text column is a field of an update.
macro_rules! update_texts {
    (@keep [$($kept:tt)*]) => {
        update_texts!(@emit $($kept)*);
    };
    (@keep [$($kept:tt)*]
        $Variant:ident {
            column: $column:ident, max: $max:literal, wechat: $wechat:literal
            $(, request: $request:literal)?, kind: key
        }
        $(, $($rest:tt)*)?
    ) => {
        update_texts!(@keep [$($kept)*] $($($rest)*)?);
    };
    (@keep [$($kept:tt)*] $Variant:ident { column: $column:ident, $($other:tt)* }
        $(, $($rest:tt)*)?
    ) => {
        update_texts!(@keep [$($kept)* ($Variant, $column)] $($($rest)*)?);
    };
    (@emit $(($Variant:ident, $column:ident))*) => {
        impl ProfileUpdate {
            /// Every text value with its column, in column order.
            pub(crate) fn texts(&self) -> [(Field, Option<&str>); [$(Field::$Variant),*].len()] {
                [$((Field::$Variant, self.$column.as_deref())),*]
            }
        }
    };
    ($($rows:tt)*) => {
        update_texts!(@keep [] $($rows)*);
    };
}

wxlogin_proto::user_fields!(update_texts);

/// A [`ProfileUpdate`] whose every value fits; the only kind the repository
/// writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated(ProfileUpdate);

impl std::ops::Deref for Validated {
    type Target = ProfileUpdate;

    fn deref(&self) -> &ProfileUpdate {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of_len(c: char, n: u32) -> String {
        std::iter::repeat_n(c, usize::try_from(n).unwrap_or(0)).collect()
    }

    #[test]
    fn every_field_takes_exactly_its_width_in_characters() {
        for field in Field::ALL {
            let max = field.max_chars();
            // Four bytes each in UTF-8: a byte count would refuse these.
            let (at_limit, over) = if field == Field::AvatarUrl {
                let prefix = "https://a/";
                let room = max - 10;
                (
                    format!("{prefix}{}", of_len('😀', room)),
                    format!("{prefix}{}", of_len('😀', room + 1)),
                )
            } else {
                (of_len('😀', max), of_len('😀', max + 1))
            };

            assert_eq!(
                field.fits("f", &at_limit).ok(),
                Some(at_limit.as_str()),
                "{field:?}"
            );
            let Err(Error::InvalidArgument(message)) = field.fits("f", &over) else {
                panic!("{field:?}: {} characters accepted", max + 1);
            };
            assert_eq!(message, format!("f is longer than {max} characters"));
        }
    }

    #[test]
    fn the_widths_are_the_columns() {
        let widths: Vec<(&str, u32)> = Field::ALL
            .iter()
            .map(|field| (field.column(), field.max_chars()))
            .collect();

        assert_eq!(
            widths,
            [
                ("appid", 64),
                ("openid", 128),
                ("unionid", 128),
                ("nickname", 128),
                ("avatar_url", 1024),
                ("country", 64),
                ("province", 64),
                ("city", 64),
                ("language", 16),
                ("phone_number", 32),
                ("pure_phone_number", 32),
                ("phone_country_code", 8),
            ]
        );
    }

    #[test]
    fn required_values_must_be_present() {
        let Err(Error::InvalidArgument(message)) = Field::Openid.required("openid", "") else {
            panic!("expected InvalidArgument");
        };

        assert_eq!(message, "openid is required");
        assert_eq!(Field::Openid.required("openid", "o1").ok(), Some("o1"));
    }

    #[test]
    fn an_empty_optional_value_is_absent() {
        assert_eq!(Field::Unionid.optional("u", Some("")).ok(), Some(None));
        assert_eq!(Field::Unionid.optional("u", None).ok(), Some(None));
        assert_eq!(
            Field::Unionid.optional("u", Some("u1")).ok(),
            Some(Some("u1"))
        );
        let long = of_len('u', 129);
        assert!(Field::Unionid.optional("u", Some(&long)).is_err());
    }

    #[test]
    fn avatars_are_http_urls_only() {
        for good in [
            "https://thirdwx.qlogo.cn/mmopen/vi_32/x/132",
            "http://example.com/a.png",
            "HTTPS://example.com/a.png",
        ] {
            assert!(Field::AvatarUrl.fits("avatarUrl", good).is_ok(), "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "JavaScript://%0aalert(1)",
            "data:image/png;base64,AAAA",
            "ftp://example.com/a.png",
            "//example.com/a.png",
            "/avatar.png",
            "https://",
            "https:///path",
            "https://example.com/a b.png",
            "https://example.com/\na.png",
        ] {
            let Err(Error::InvalidArgument(message)) = Field::AvatarUrl.fits("avatarUrl", bad)
            else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(message, "avatarUrl must be an http(s) URL", "{bad:?}");
        }
    }

    #[test]
    fn an_update_names_the_field_as_its_origin_calls_it() {
        let update = ProfileUpdate {
            nickname: Some(of_len('n', 129)),
            ..ProfileUpdate::default()
        };

        let from_wechat = update.clone().validated(Origin::WeChat);
        let from_request = update.validated(Origin::Request);

        let (Err(Error::InvalidArgument(wechat)), Err(Error::InvalidArgument(request))) =
            (from_wechat, from_request)
        else {
            panic!("a 129-character nickname was accepted");
        };
        assert_eq!(wechat, "nickName is longer than 128 characters");
        assert_eq!(request, "nickname is longer than 128 characters");
    }

    #[test]
    fn every_text_of_an_update_is_checked() {
        type Set = fn(&mut ProfileUpdate, String);
        let cases: [(&str, Set, u32); 10] = [
            ("unionId", |u, v| u.unionid = Some(v), 128),
            ("nickName", |u, v| u.nickname = Some(v), 128),
            (
                "avatarUrl",
                |u, v| u.avatar_url = Some(format!("https://a/{v}")),
                1014,
            ),
            ("country", |u, v| u.country = Some(v), 64),
            ("province", |u, v| u.province = Some(v), 64),
            ("city", |u, v| u.city = Some(v), 64),
            ("language", |u, v| u.language = Some(v), 16),
            ("phoneNumber", |u, v| u.phone_number = Some(v), 32),
            ("purePhoneNumber", |u, v| u.pure_phone_number = Some(v), 32),
            ("countryCode", |u, v| u.phone_country_code = Some(v), 8),
        ];
        for (name, set, room) in cases {
            let mut fits = ProfileUpdate::default();
            set(&mut fits, of_len('字', room));
            let mut over = ProfileUpdate::default();
            set(&mut over, of_len('字', room + 1));

            assert!(fits.validated(Origin::WeChat).is_ok(), "{name}");
            let Err(Error::InvalidArgument(message)) = over.validated(Origin::WeChat) else {
                panic!("{name}: over-long value accepted");
            };
            assert!(
                message.starts_with(&format!("{name} is longer than")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_gender_is_one_of_wechats() {
        let update = |gender| ProfileUpdate {
            gender: Some(gender),
            ..ProfileUpdate::default()
        };

        assert!(update(2).validated(Origin::Request).is_ok());
        assert!(update(3).validated(Origin::Request).is_err());
    }
}
