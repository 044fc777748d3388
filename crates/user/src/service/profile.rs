//! `UpdateProfile`, `UpdatePhone` and their `FromEncrypted` forms: storing
//! what the user (or WeChat's encrypted data) says about them, each value
//! checked against its column first.

use tonic::{Request, Response, Status};
use wxlogin_common::grpc;
use wxlogin_proto::user::v1::{
    UpdatePhoneFromEncryptedRequest, UpdatePhoneRequest, UpdateProfileFromEncryptedRequest,
    UpdateProfileRequest, UpdateUserResponse,
};

use wxlogin_provider::{PhoneNumber, Signed};

use super::{UserApi, to_completion, whose};
use crate::{
    error::Error,
    fields::{Field, FieldCheck, Origin, ProfileUpdate, Validated},
};

impl UserApi {
    /// Stores `update` in the row of (appid, openid), then the row in its
    /// copy, to completion whether or not the caller waits.
    async fn store(
        &self,
        appid: &str,
        openid: &str,
        update: Validated,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let this = self.clone();
        let (appid, openid) = (appid.to_owned(), openid.to_owned());
        to_completion(async move {
            let user = this
                .repo
                .update_profile(&appid, &openid, &update)
                .await?
                .ok_or(Error::UserNotFound)?;
            tracing::Span::current().record("user_id", user.id);
            Ok(Response::new(UpdateUserResponse {
                user: Some(this.written(user).await),
            }))
        })
        .await
    }

    pub(super) async fn profile_from_encrypted(
        &self,
        request: Request<UpdateProfileFromEncryptedRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request_id = grpc::request_id_of(&request);
        let request = request.into_inner();
        let signed = match (request.raw_data.as_deref(), request.signature.as_deref()) {
            (Some(raw_data), Some(signature)) => Some((raw_data, signature)),
            (None, None) => None,
            _ => {
                return Err(
                    Error::InvalidArgument("rawData and signature go together".into()).into(),
                );
            }
        };
        let opened = self
            .open(&request_id, &request, |appid, secret| match signed {
                Some((content, signature))
                    if !self
                        .provider
                        .verify(appid, &Signed { content, signature }, secret) =>
                {
                    Err(Error::InvalidSignature)
                }
                _ => Ok(()),
            })
            .await?;
        let info = self.provider.profile(&opened.data);
        let update = ProfileUpdate {
            nickname: info.nickname,
            avatar_url: info.avatar_url,
            gender: info.gender.and_then(|g| i8::try_from(g).ok()),
            country: info.country,
            province: info.province,
            city: info.city,
            language: info.language,
            unionid: info.unionid,
            ..ProfileUpdate::default()
        }
        .validated(Origin::WeChat)?;
        self.store(&opened.appid, &opened.openid, update).await
    }

    pub(super) async fn profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request = request.into_inner();
        let (appid, openid) = whose(&request.appid, &request.openid)?;
        // The limits apply to what the client sent (as the OpenAPI document
        // states them), before any trimming. Empty values and WeChat's
        // anonymous placeholders never replace what is stored: they say
        // nothing about the user.
        let text = |field: Field, value: Option<&str>| -> Result<Option<String>, Error> {
            let Some(sent) = value.filter(|value| !value.is_empty()) else {
                return Ok(None);
            };
            let sent = field.fits(field.name(Origin::Request), sent)?;
            Ok(Some(sent.trim())
                .filter(|value| !value.is_empty())
                .map(str::to_owned))
        };
        let update = ProfileUpdate {
            nickname: text(Field::Nickname, request.nickname.as_deref())?
                .filter(|name| !self.provider.is_placeholder_nickname(name)),
            avatar_url: text(Field::AvatarUrl, request.avatar_url.as_deref())?
                .filter(|url| !self.provider.is_placeholder_avatar(url)),
            ..ProfileUpdate::default()
        }
        .validated(Origin::Request)?;
        self.store(appid, openid, update).await
    }

    pub(super) async fn phone_from_encrypted(
        &self,
        request: Request<UpdatePhoneFromEncryptedRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request_id = grpc::request_id_of(&request);
        let request = request.into_inner();
        let opened = self.open(&request_id, &request, |_, _| Ok(())).await?;
        let phone = match self.provider.phone_in(&opened.data) {
            Ok(phone) => phone,
            Err(_) => return Err(Error::InvalidEncryptedData.into()),
        };
        let update = ProfileUpdate::phone(phone).validated(Origin::WeChat)?;
        self.store(&opened.appid, &opened.openid, update).await
    }

    pub(super) async fn phone(
        &self,
        request: Request<UpdatePhoneRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request = request.into_inner();
        let (appid, openid) = whose(&request.appid, &request.openid)?;
        let phone = [
            (Field::PhoneNumber, &request.phone_number),
            (Field::PurePhoneNumber, &request.pure_phone_number),
            (Field::PhoneCountryCode, &request.country_code),
        ];
        for (field, value) in phone {
            if value.is_empty() {
                let name = field.name(Origin::Request);
                return Err(Error::InvalidArgument(format!("{name} is required")).into());
            }
        }
        let update = ProfileUpdate::phone(PhoneNumber {
            phone_number: request.phone_number,
            pure_phone_number: request.pure_phone_number,
            country_code: request.country_code,
        })
        .validated(Origin::Request)?;
        self.store(appid, openid, update).await
    }
}
