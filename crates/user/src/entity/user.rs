//! One row per (appid, openid): a WeChat user of one mini-program. The
//! text columns' widths are [`crate::fields::Field`]'s.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::Appid.max_chars()))",
        unique_key = "appid_openid"
    )]
    pub appid: String,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::Openid.max_chars()))",
        unique_key = "appid_openid"
    )]
    pub openid: String,
    /// Stored the first time WeChat reports it, never overwritten afterwards.
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::Unionid.max_chars()))",
        nullable,
        indexed
    )]
    pub unionid: Option<String>,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::Nickname.max_chars()))",
        nullable
    )]
    pub nickname: Option<String>,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::AvatarUrl.max_chars()))",
        nullable
    )]
    pub avatar_url: Option<String>,
    /// 0 unknown, 1 male, 2 female (WeChat's values).
    pub gender: i8,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_login_at: DateTimeUtc,
    pub login_count: i64,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::Country.max_chars()))",
        nullable
    )]
    pub country: Option<String>,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::Province.max_chars()))",
        nullable
    )]
    pub province: Option<String>,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::City.max_chars()))",
        nullable
    )]
    pub city: Option<String>,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::Language.max_chars()))",
        nullable
    )]
    pub language: Option<String>,
    /// Personal data: never logged.
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::PhoneNumber.max_chars()))",
        nullable
    )]
    pub phone_number: Option<String>,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::PurePhoneNumber.max_chars()))",
        nullable
    )]
    pub pure_phone_number: Option<String>,
    #[sea_orm(
        column_type = "String(StringLen::N(crate::fields::Field::PhoneCountryCode.max_chars()))",
        nullable
    )]
    pub phone_country_code: Option<String>,
    /// When the team blocked the user; `None` while they are not blocked.
    pub blocked_at: Option<DateTimeUtc>,
    // The sealed personal columns (see `crate::personal`): each holds the
    // value of the plaintext column of the same name, sealed. The plaintext
    // columns are kept, NULL once their row is sealed, until a later
    // release drops them.
    #[sea_orm(
        column_type = "VarBinary(StringLen::N(crate::personal::sealed_width(crate::fields::Field::Nickname)))",
        nullable
    )]
    pub nickname_enc: Option<Vec<u8>>,
    #[sea_orm(
        column_type = "VarBinary(StringLen::N(crate::personal::sealed_width(crate::fields::Field::AvatarUrl)))",
        nullable
    )]
    pub avatar_url_enc: Option<Vec<u8>>,
    #[sea_orm(
        column_type = "VarBinary(StringLen::N(crate::personal::sealed_width(crate::fields::Field::Country)))",
        nullable
    )]
    pub country_enc: Option<Vec<u8>>,
    #[sea_orm(
        column_type = "VarBinary(StringLen::N(crate::personal::sealed_width(crate::fields::Field::Province)))",
        nullable
    )]
    pub province_enc: Option<Vec<u8>>,
    #[sea_orm(
        column_type = "VarBinary(StringLen::N(crate::personal::sealed_width(crate::fields::Field::City)))",
        nullable
    )]
    pub city_enc: Option<Vec<u8>>,
    #[sea_orm(
        column_type = "VarBinary(StringLen::N(crate::personal::sealed_width(crate::fields::Field::PhoneNumber)))",
        nullable
    )]
    pub phone_number_enc: Option<Vec<u8>>,
    #[sea_orm(
        column_type = "VarBinary(StringLen::N(crate::personal::sealed_width(crate::fields::Field::PurePhoneNumber)))",
        nullable
    )]
    pub pure_phone_number_enc: Option<Vec<u8>>,
    #[sea_orm(
        column_type = "VarBinary(StringLen::N(crate::personal::sealed_width(crate::fields::Field::PhoneCountryCode)))",
        nullable
    )]
    pub phone_country_code_enc: Option<Vec<u8>>,
    /// The key the row's sealed values are under; NULL while none is
    /// sealed, and [`crate::personal::MIXED_KEYS`] when some may be under
    /// another: `rewrap` selects by it.
    #[sea_orm(
        column_type = "String(StringLen::N(wxlogin_userdata::sealing::KEY_ID_MAX as u32))",
        nullable,
        indexed
    )]
    pub data_key_id: Option<String>,
    /// The blind index of the phone number (HMAC-SHA-256 under
    /// `DATA_INDEX_KEY`), for lookups by phone.
    #[sea_orm(column_type = "Binary(32)", nullable, indexed)]
    pub phone_index: Option<Vec<u8>>,
}

impl ActiveModelBehavior for ActiveModel {}
