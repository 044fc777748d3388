//! `POST /v1/me/phone`: the user's phone number, stored from the
//! getPhoneNumber button's code or its legacy encrypted data.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wxlogin_proto::{
    auth::v1::{GetPhoneNumberRequest, GetPhoneNumberResponse, PhoneNumber, Session},
    reason::Reason,
    user::v1::{UpdatePhoneFromEncryptedRequest, UpdatePhoneRequest, UpdateUserResponse},
};

use super::{
    schema::{BEARER, BODY, DECRYPT, SERVICE, WECHAT, errors},
    views::UserView,
};
use crate::{
    error::{ApiError, Missing},
    extract::{BearerToken, Body, RequestId},
    state::AppState,
};

/// Either the getPhoneNumber button's code, or its legacy encrypted data.
#[derive(Debug, Deserialize)]
pub(crate) struct PhoneInput {
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "encryptedData", alias = "encrypted_data")]
    encrypted_data: Option<String>,
    #[serde(default)]
    iv: Option<String>,
}

/// What `POST /v1/me/phone` takes, as the document describes it: one of the
/// two forms ([`PhoneInput`] reads them).
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub(crate) enum PhoneRequest {
    /// The getPhoneNumber button's code.
    Code { code: String },
    /// The legacy encrypted data.
    Encrypted {
        #[serde(rename = "encryptedData")]
        encrypted_data: String,
        iv: String,
    },
}

/// The stored phone number.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PhoneView {
    phone_number: Option<String>,
    pure_phone_number: Option<String>,
    country_code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PhoneOutput {
    phone: PhoneView,
    user: UserView,
}

/// The number a phone write left, and the user.
impl TryFrom<UpdateUserResponse> for PhoneOutput {
    type Error = Missing;

    fn try_from(answer: UpdateUserResponse) -> Result<Self, Missing> {
        let user = answer.user.ok_or(Missing("user"))?;
        let phone = PhoneView {
            phone_number: user.phone_number.clone(),
            pure_phone_number: user.pure_phone_number.clone(),
            country_code: user.phone_country_code.clone(),
        };
        Ok(PhoneOutput {
            phone,
            user: user.into(),
        })
    }
}

/// The number WeChat gave for a code, and the session it is for.
struct GivenPhone {
    session: Session,
    phone: PhoneNumber,
}

impl TryFrom<GetPhoneNumberResponse> for GivenPhone {
    type Error = Missing;

    fn try_from(answer: GetPhoneNumberResponse) -> Result<Self, Missing> {
        Ok(GivenPhone {
            session: answer.session.ok_or(Missing("session"))?,
            phone: answer.phone.ok_or(Missing("phone"))?,
        })
    }
}

errors! {
    /// What `POST /v1/me/phone` can fail with.
    PhoneErrors = [
        BODY,
        BEARER,
        SERVICE,
        WECHAT,
        DECRYPT,
        &[Reason::InvalidPhoneCode, Reason::PhoneCodeUsed, Reason::UserBlocked, Reason::UserNotFound],
    ];
}

/// Store the user's phone number.
///
/// From the getPhoneNumber button's code, or its legacy encrypted data.
#[utoipa::path(
    post,
    path = "/v1/me/phone",
    tag = "user",
    security(("session" = [])),
    request_body(content(
        (PhoneRequest = "application/json"),
        (PhoneRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The number is stored.", body = PhoneOutput),
        PhoneErrors,
    ),
)]
pub(crate) async fn phone(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    Body(input): Body<PhoneInput>,
) -> Result<Json<PhoneOutput>, ApiError> {
    let response = match input {
        PhoneInput {
            code: Some(code), ..
        } => {
            let answer = state
                .auth()
                .get_phone_number(state.request(&request_id, GetPhoneNumberRequest { token, code }))
                .await?
                .into_inner();
            let GivenPhone { session, phone } = answer.try_into()?;
            let request = UpdatePhoneRequest {
                appid: session.appid,
                openid: session.openid,
                phone_number: phone.phone_number,
                pure_phone_number: phone.pure_phone_number,
                country_code: phone.country_code,
            };
            state
                .user()
                .update_phone(state.request(&request_id, request))
                .await?
        }
        PhoneInput {
            encrypted_data: Some(encrypted_data),
            iv: Some(iv),
            ..
        } => {
            let request = UpdatePhoneFromEncryptedRequest {
                token,
                encrypted_data,
                iv,
            };
            state
                .user()
                .update_phone_from_encrypted(state.request(&request_id, request))
                .await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "send {\"code\"} or {\"encryptedData\", \"iv\"}",
            ));
        }
    };
    Ok(Json(response.into_inner().try_into()?))
}
