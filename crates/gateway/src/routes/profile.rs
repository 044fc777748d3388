//! `/v1/me/profile`: the user's profile, stored from what
//! `wx.getUserProfile` hands over encrypted (`POST`) or from the fields
//! users fill in themselves (`PUT`). Both answer with the user.

use axum::{Json, extract::State};
use serde::Deserialize;
use utoipa::ToSchema;
use wxlogin_proto::{
    reason::Reason,
    user::v1::{UpdateProfileFromEncryptedRequest, UpdateProfileRequest},
};

use super::{
    schema::{BEARER, BODY, DECRYPT, SERVICE, WECHAT, avatar_url_schema, errors, nickname_schema},
    views::UserOutput,
};
use crate::{
    error::ApiError,
    extract::{BearerToken, Body, RequestId},
    state::AppState,
};

/// What wx.getUserInfo / getUserProfile hand the mini-program.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct EncryptedProfile {
    /// Base64 of the AES-128-CBC ciphertext.
    #[serde(rename = "encryptedData", alias = "encrypted_data")]
    encrypted_data: String,
    /// Base64 of the 16-byte IV.
    iv: String,
    /// Sent together with `signature`, or not at all.
    #[serde(default, rename = "rawData", alias = "raw_data")]
    raw_data: Option<String>,
    /// `sha1(rawData + session_key)`, in hex.
    #[serde(default)]
    signature: Option<String>,
}

errors! {
    /// What `POST /v1/me/profile` can fail with.
    SealedProfileErrors = [
        BODY,
        BEARER,
        SERVICE,
        WECHAT,
        DECRYPT,
        &[Reason::InvalidSignature, Reason::UserNotFound],
    ];
    /// What `PUT /v1/me/profile` can fail with.
    ProfileErrors = [BODY, BEARER, SERVICE, &[Reason::UserNotFound]];
}

/// Decrypt and store the user's profile (`wx.getUserProfile`).
#[utoipa::path(
    post,
    path = "/v1/me/profile",
    tag = "user",
    security(("session" = [])),
    request_body(content(
        (EncryptedProfile = "application/json"),
        (EncryptedProfile = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The decrypted profile is stored.", body = UserOutput),
        SealedProfileErrors,
    ),
)]
pub(crate) async fn profile_from_encrypted(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    Body(input): Body<EncryptedProfile>,
) -> Result<Json<UserOutput>, ApiError> {
    // The token goes to the user service as it is: decrypting takes the
    // session's key, which the gateway never sees.
    let request = UpdateProfileFromEncryptedRequest {
        token,
        encrypted_data: input.encrypted_data,
        iv: input.iv,
        raw_data: input.raw_data,
        signature: input.signature,
    };
    let response = state
        .user()
        .update_profile_from_encrypted(state.request(&request_id, request))
        .await?;
    Ok(Json(response.into_inner().try_into()?))
}

/// The profile fields users fill in themselves.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ProfileFields {
    #[serde(default, alias = "nickName")]
    #[schema(schema_with = nickname_schema)]
    nickname: Option<String>,
    #[serde(default, alias = "avatarUrl")]
    #[schema(schema_with = avatar_url_schema)]
    avatar_url: Option<String>,
}

/// Store the profile fields users fill in themselves.
#[utoipa::path(
    put,
    path = "/v1/me/profile",
    tag = "user",
    security(("session" = [])),
    request_body(content(
        (ProfileFields = "application/json"),
        (ProfileFields = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The fields are stored.", body = UserOutput),
        ProfileErrors,
    ),
)]
pub(crate) async fn update_profile(
    State(state): State<AppState>,
    request_id: RequestId,
    BearerToken(token): BearerToken,
    Body(input): Body<ProfileFields>,
) -> Result<Json<UserOutput>, ApiError> {
    let session = state.session(&request_id, token).await?.session;
    let request = UpdateProfileRequest {
        appid: session.appid,
        openid: session.openid,
        nickname: input.nickname,
        avatar_url: input.avatar_url,
    };
    let response = state
        .user()
        .update_profile(state.request(&request_id, request))
        .await?;
    Ok(Json(response.into_inner().try_into()?))
}
