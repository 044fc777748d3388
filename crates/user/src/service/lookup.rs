//! `GetUser`, `ListUsersByUnionid` and `ListUsersByPhone`: finding users by
//! id, openid, unionid or phone number.

use tonic::{Request, Response, Status};
use wxlogin_proto::user::v1::{
    GetUserRequest, GetUserResponse, ListUsersByPhoneRequest, ListUsersByPhoneResponse,
    ListUsersByUnionidRequest, ListUsersByUnionidResponse, OpenId, get_user_request, user_key::Key,
};

use super::{UserApi, to_proto};
use crate::{
    entity::user,
    error::Error,
    fields::{Field, FieldCheck},
};

impl UserApi {
    /// The row `key` names, if there is one.
    pub(super) async fn find(&self, key: Option<Key>) -> Result<Option<user::Model>, Error> {
        match key {
            // Ids are positive i64s; a larger one names nobody.
            Some(Key::Id(id)) => match i64::try_from(id) {
                Ok(id) => self.repo.get_by_id(id).await,
                Err(_) => Ok(None),
            },
            Some(Key::Openid(OpenId { appid, openid })) => {
                let appid = Field::Appid.required("openid.appid", &appid)?;
                let openid = Field::Openid.required("openid.openid", &openid)?;
                tracing::Span::current().record("appid", appid);
                self.repo.get_by_openid(appid, openid).await
            }
            None => Err(Error::InvalidArgument(
                "key: give an id or an openid".into(),
            )),
        }
    }

    pub(super) async fn get(&self, request: GetUserRequest) -> Result<GetUserResponse, Error> {
        let key = request.key.map(|key| match key {
            get_user_request::Key::Id(id) => Key::Id(id),
            get_user_request::Key::Openid(openid) => Key::Openid(openid),
        });
        let user = self.find(key).await?.ok_or(Error::UserNotFound)?;

        tracing::Span::current().record("user_id", user.id);
        let user = to_proto(user);
        if let Some(cache) = &self.cache {
            cache.looked_up(&user).await;
        }
        Ok(GetUserResponse { user: Some(user) })
    }

    pub(super) async fn list_by_unionid(
        &self,
        request: Request<ListUsersByUnionidRequest>,
    ) -> Result<Response<ListUsersByUnionidResponse>, Status> {
        let unionid = Field::Unionid.required("unionid", &request.get_ref().unionid)?;
        let users = self.repo.list_by_unionid(unionid).await?;
        Ok(Response::new(ListUsersByUnionidResponse {
            users: users.into_iter().map(to_proto).collect(),
        }))
    }

    pub(super) async fn list_by_phone(
        &self,
        request: Request<ListUsersByPhoneRequest>,
    ) -> Result<Response<ListUsersByPhoneResponse>, Status> {
        let request = request.get_ref();
        let code = Field::PhoneCountryCode.required("country_code", &request.country_code)?;
        let number =
            Field::PurePhoneNumber.required("pure_phone_number", &request.pure_phone_number)?;
        let users = self.repo.list_by_phone(code, number).await?;
        Ok(Response::new(ListUsersByPhoneResponse {
            users: users.into_iter().map(to_proto).collect(),
        }))
    }
}
