//! One row per (appid, openid): a WeChat user of one mini-program.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(column_type = "String(StringLen::N(64))", unique_key = "appid_openid")]
    pub appid: String,
    #[sea_orm(column_type = "String(StringLen::N(128))", unique_key = "appid_openid")]
    pub openid: String,
    /// Stored the first time WeChat reports it, never overwritten afterwards.
    #[sea_orm(column_type = "String(StringLen::N(128))", nullable, indexed)]
    pub unionid: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(128))", nullable)]
    pub nickname: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(1024))", nullable)]
    pub avatar_url: Option<String>,
    /// 0 unknown, 1 male, 2 female (WeChat's values).
    pub gender: i8,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_login_at: DateTimeUtc,
    pub login_count: i64,
    #[sea_orm(column_type = "String(StringLen::N(64))", nullable)]
    pub country: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(64))", nullable)]
    pub province: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(64))", nullable)]
    pub city: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(16))", nullable)]
    pub language: Option<String>,
    /// Personal data: never logged.
    #[sea_orm(column_type = "String(StringLen::N(32))", nullable)]
    pub phone_number: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(32))", nullable)]
    pub pure_phone_number: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(8))", nullable)]
    pub phone_country_code: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}
