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
}

impl ActiveModelBehavior for ActiveModel {}
