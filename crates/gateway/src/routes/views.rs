//! The answers more than one endpoint gives: the user as the mini-program
//! sees it (`User` in the document), `{"user": …}`, and timestamps as
//! RFC 3339. Endpoint-specific types live with their handler.

use serde::Serialize;
use utoipa::ToSchema;
use wxlogin_proto::user::v1::{self as user, UpdateUserResponse};

use crate::error::Missing;

/// `{"user": …}`, serialized straight from the view.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserOutput {
    user: UserView,
}

impl From<user::User> for UserOutput {
    fn from(user: user::User) -> Self {
        UserOutput { user: user.into() }
    }
}

/// The user a write left: the whole answer of the calls that change them.
impl TryFrom<UpdateUserResponse> for UserOutput {
    type Error = Missing;

    fn try_from(answer: UpdateUserResponse) -> Result<Self, Missing> {
        Ok(answer.user.ok_or(Missing("user"))?.into())
    }
}

/// A user as the mini-program sees it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    /// wxlogin's id of the user, stable across logins.
    id: u64,
    appid: String,
    openid: String,
    unionid: Option<String>,
    nickname: Option<String>,
    avatar_url: Option<String>,
    /// WeChat's gender: 0 unknown, 1 male, 2 female.
    gender: i32,
    country: Option<String>,
    province: Option<String>,
    city: Option<String>,
    language: Option<String>,
    phone_number: Option<String>,
    pure_phone_number: Option<String>,
    phone_country_code: Option<String>,
    /// RFC 3339, UTC.
    created_at: Option<String>,
    /// RFC 3339, UTC.
    updated_at: Option<String>,
}

/// A timestamp as the API writes them: RFC 3339, UTC, to the millisecond.
pub(crate) fn rfc3339(timestamp: Option<prost_types::Timestamp>) -> Option<String> {
    let timestamp = timestamp?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    chrono::DateTime::from_timestamp(timestamp.seconds, nanos)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl From<user::User> for UserView {
    fn from(user: user::User) -> Self {
        UserView {
            id: user.id,
            appid: user.appid,
            openid: user.openid,
            unionid: user.unionid,
            nickname: user.nickname,
            avatar_url: user.avatar_url,
            gender: user.gender,
            country: user.country,
            province: user.province,
            city: user.city,
            language: user.language,
            phone_number: user.phone_number,
            pure_phone_number: user.pure_phone_number,
            phone_country_code: user.phone_country_code,
            created_at: rfc3339(user.created_at),
            updated_at: rfc3339(user.updated_at),
        }
    }
}
