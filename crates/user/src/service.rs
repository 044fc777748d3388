//! The `wxlogin.user.v1.UserService` gRPC service: validates requests,
//! calls the repository and turns rows into messages.

use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::field::Empty;

use tonic::transport::Channel;
use wxlogin_common::grpc;
use wxlogin_proto::{
    auth::v1::{CheckSessionRequest, GetSessionKeyRequest, auth_service_client::AuthServiceClient},
    reason::{self, Reason},
    user::v1::{
        GetUserRequest, GetUserResponse, ListUsersByUnionidRequest, ListUsersByUnionidResponse,
        OpenId, UpdatePhoneFromEncryptedRequest, UpdatePhoneRequest,
        UpdateProfileFromEncryptedRequest, UpdateProfileRequest, UpdateUserResponse,
        UpsertUserRequest, UpsertUserResponse, User, get_user_request::Key,
        user_service_server::UserService,
    },
};

use crate::{
    cache::UserCache,
    crypto::{self, DecryptError, Expectations, PhoneNumber, UserInfo},
    entity::user,
    error::Error,
    repo::{ProfileUpdate, Upserted, UserRepo},
};

/// Column widths of `users`; longer values are refused rather than truncated.
const APPID_MAX_CHARS: usize = 64;
const OPENID_MAX_CHARS: usize = 128;
const UNIONID_MAX_CHARS: usize = 128;
const NICKNAME_MAX_CHARS: usize = 128;
const AVATAR_MAX_CHARS: usize = 1024;
const PHONE_MAX_CHARS: usize = 32;
const COUNTRY_CODE_MAX_CHARS: usize = 8;
/// encryptedData of getUserInfo is well under 2 KiB; this bounds the work.
const ENCRYPTED_MAX_CHARS: usize = 16 * 1024;

/// The service's state: the repository, and the auth service that holds
/// the session_keys. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UserApi {
    repo: UserRepo,
    auth: AuthServiceClient<Channel>,
    watermark_max_age: Option<Duration>,
    cache: Option<UserCache>,
}

/// Decrypted data and whose it is (the session's user, never the data's
/// own `openId`, which the client can tamper with through the iv).
struct Opened {
    appid: String,
    openid: String,
    data: serde_json::Map<String, serde_json::Value>,
}

/// The deadline of calls to the auth service (a session-key lookup, or
/// WeChat's checkSessionKey behind it).
const AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// A call to the auth service, carrying the request id.
fn auth_request<T>(request_id: &Option<String>, message: T) -> Request<T> {
    grpc::call(message, request_id.as_deref(), AUTH_DEADLINE)
}

impl UserApi {
    pub fn new(
        repo: UserRepo,
        auth: AuthServiceClient<Channel>,
        watermark_max_age: Option<Duration>,
        cache: Option<UserCache>,
    ) -> Self {
        UserApi {
            repo,
            auth,
            watermark_max_age,
            cache,
        }
    }

    /// A returning user: the caller's cached copy when it is current, else
    /// the row (and the copy gets it). The caller's copy is the cache's
    /// content as auth read it in this very login, so reading the cache
    /// again could only find the same.
    async fn returning(&self, login: Returning<'_>, cached: Option<User>) -> Result<User, Error> {
        match cached.filter(|user| login.holds(user)) {
            Some(user) => Ok(user),
            None => Ok(self.written(self.repo.row(login.id).await?).await),
        }
    }

    /// The message for `user`, after a write: the shared cache gets it too.
    async fn written(&self, user: user::Model) -> User {
        let user = to_proto(user);
        if let Some(cache) = &self.cache {
            cache.written(&user).await;
        }
        user
    }

    /// Fetches the session's session_key from auth, runs `check` with it
    /// (the rawData signature), and decrypts. A failed decryption with a
    /// current key is either tampered data or a key WeChat replaced behind
    /// our back: WeChat's checkSessionKey tells which.
    async fn open(
        &self,
        request_id: &Option<String>,
        token: &str,
        encrypted_data: &str,
        iv: &str,
        check: impl FnOnce(&str) -> Result<(), Error>,
    ) -> Result<Opened, Status> {
        if token.is_empty() {
            return Err(reason::status(
                tonic::Code::Unauthenticated,
                Reason::InvalidToken,
                "token is required",
            ));
        }
        required(encrypted_data, "encrypted_data", ENCRYPTED_MAX_CHARS)?;
        required(iv, "iv", 64)?;
        let keyed = self
            .auth
            .clone()
            .get_session_key(auth_request(
                request_id,
                GetSessionKeyRequest {
                    token: token.to_owned(),
                },
            ))
            .await
            .map_err(from_auth)?
            .into_inner();
        let session = keyed
            .session
            .ok_or_else(|| Status::internal("internal error"))?;
        let span = tracing::Span::current();
        span.record("appid", session.appid.as_str());
        check(&keyed.session_key)?;
        let expect = Expectations {
            appid: &session.appid,
            openid: Some(&session.openid),
            max_age: self.watermark_max_age,
            now_unix: chrono::Utc::now().timestamp(),
        };
        match crypto::decrypt(&keyed.session_key, encrypted_data, iv, &expect) {
            Ok(data) => Ok(Opened {
                appid: session.appid,
                openid: session.openid,
                data,
            }),
            Err(DecryptError::Malformed(message)) => {
                Err(Error::InvalidArgument(message.into()).into())
            }
            Err(DecryptError::Invalid) => {
                let check = self
                    .auth
                    .clone()
                    .check_session(auth_request(
                        request_id,
                        CheckSessionRequest {
                            token: token.to_owned(),
                        },
                    ))
                    .await;
                match check {
                    Ok(answer) if !answer.get_ref().valid => Err(reason::status(
                        tonic::Code::FailedPrecondition,
                        Reason::SessionKeyStale,
                        "WeChat replaced this session's session_key; call wx.login again",
                    )),
                    Ok(_) => Err(Error::InvalidEncryptedData.into()),
                    // A spent checksession budget (ours or WeChat's) is the
                    // honest answer to whoever posts blob after blob: 429,
                    // with auth's Retry-After. A real user hardly gets here.
                    Err(status) if reason::of(&status) == Some(Reason::RateLimited) => Err(status),
                    Err(status) => {
                        // Without WeChat's word, the data is what failed.
                        tracing::warn!(code = ?status.code(), "checkSessionKey failed");
                        Err(Error::InvalidEncryptedData.into())
                    }
                }
            }
        }
    }

    async fn store(
        &self,
        appid: &str,
        openid: &str,
        update: &ProfileUpdate,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let user = self
            .repo
            .update_profile(appid, openid, update)
            .await?
            .ok_or(Error::UserNotFound)?;
        tracing::Span::current().record("user_id", user.id);
        Ok(Response::new(UpdateUserResponse {
            user: Some(self.written(user).await),
        }))
    }

    async fn store_phone(
        &self,
        appid: &str,
        openid: &str,
        phone: PhoneNumber,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let update = ProfileUpdate {
            phone_number: Some(phone.phone_number),
            pure_phone_number: Some(phone.pure_phone_number),
            phone_country_code: Some(phone.country_code),
            ..ProfileUpdate::default()
        };
        self.store(appid, openid, &update).await
    }

    async fn upsert(&self, request: UpsertUserRequest) -> Result<UpsertUserResponse, Error> {
        let appid = required(&request.appid, "appid", APPID_MAX_CHARS)?;
        let openid = required(&request.openid, "openid", OPENID_MAX_CHARS)?;
        let unionid = optional(request.unionid.as_deref(), "unionid", UNIONID_MAX_CHARS)?;
        let span = tracing::Span::current();
        span.record("appid", appid);

        let (user, created) = match self.repo.upsert(appid, openid, unionid).await? {
            Upserted::Row { user, created } => (self.written(*user).await, created),
            Upserted::Existing { id } => {
                let returning = Returning {
                    id,
                    appid,
                    openid,
                    unionid,
                };
                (self.returning(returning, request.cached).await?, false)
            }
        };

        span.record("user_id", user.id);
        span.record("created", created);
        Ok(UpsertUserResponse {
            user: Some(user),
            created,
        })
    }

    async fn get(&self, request: GetUserRequest) -> Result<GetUserResponse, Error> {
        let found = match request.key {
            // Ids are positive i64s; a larger one names nobody.
            Some(Key::Id(id)) => match i64::try_from(id) {
                Ok(id) => self.repo.get_by_id(id).await?,
                Err(_) => None,
            },
            Some(Key::Openid(OpenId { appid, openid })) => {
                let appid = required(&appid, "openid.appid", APPID_MAX_CHARS)?;
                let openid = required(&openid, "openid.openid", OPENID_MAX_CHARS)?;
                tracing::Span::current().record("appid", appid);
                self.repo.get_by_openid(appid, openid).await?
            }
            None => {
                return Err(Error::InvalidArgument(
                    "key: give an id or an openid".into(),
                ));
            }
        };
        let user = found.ok_or(Error::UserNotFound)?;

        tracing::Span::current().record("user_id", user.id);
        let user = to_proto(user);
        if let Some(cache) = &self.cache {
            cache.looked_up(&user).await;
        }
        Ok(GetUserResponse { user: Some(user) })
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    #[tracing::instrument(
        skip_all,
        fields(appid = Empty, user_id = Empty, created = Empty)
    )]
    async fn upsert_user(
        &self,
        request: Request<UpsertUserRequest>,
    ) -> Result<Response<UpsertUserResponse>, Status> {
        Ok(Response::new(self.upsert(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        Ok(Response::new(self.get(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_users_by_unionid(
        &self,
        request: Request<ListUsersByUnionidRequest>,
    ) -> Result<Response<ListUsersByUnionidResponse>, Status> {
        let unionid = required(&request.get_ref().unionid, "unionid", UNIONID_MAX_CHARS)?;
        let users = self.repo.list_by_unionid(unionid).await?;
        Ok(Response::new(ListUsersByUnionidResponse {
            users: users.into_iter().map(to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn update_profile_from_encrypted(
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
            .open(
                &request_id,
                &request.token,
                &request.encrypted_data,
                &request.iv,
                |session_key| match signed {
                    Some((raw_data, signature))
                        if !crypto::verify_raw_data_signature(raw_data, session_key, signature) =>
                    {
                        Err(Error::InvalidSignature)
                    }
                    _ => Ok(()),
                },
            )
            .await?;
        let info = UserInfo::from_decrypted(&opened.data);
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
        };
        self.store(&opened.appid, &opened.openid, &update).await
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request = request.into_inner();
        let appid = required(&request.appid, "appid", APPID_MAX_CHARS)?;
        let openid = required(&request.openid, "openid", OPENID_MAX_CHARS)?;
        // Empty values and WeChat's anonymous placeholders never replace
        // what is stored: they say nothing about the user.
        let nickname = optional(
            request.nickname.as_deref().map(str::trim),
            "nickname",
            NICKNAME_MAX_CHARS,
        )?
        .filter(|name| !crypto::is_placeholder_nickname(name));
        let avatar_url = optional(
            request.avatar_url.as_deref().map(str::trim),
            "avatar_url",
            AVATAR_MAX_CHARS,
        )?
        .filter(|url| !crypto::is_placeholder_avatar(url));
        if let Some(url) = avatar_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(Error::InvalidArgument("avatar_url must be an http(s) URL".into()).into());
        }
        let update = ProfileUpdate {
            nickname: nickname.map(str::to_owned),
            avatar_url: avatar_url.map(str::to_owned),
            ..ProfileUpdate::default()
        };
        self.store(appid, openid, &update).await
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn update_phone_from_encrypted(
        &self,
        request: Request<UpdatePhoneFromEncryptedRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request_id = grpc::request_id_of(&request);
        let request = request.into_inner();
        let opened = self
            .open(
                &request_id,
                &request.token,
                &request.encrypted_data,
                &request.iv,
                |_| Ok(()),
            )
            .await?;
        let phone = match PhoneNumber::from_decrypted(&opened.data) {
            Ok(phone) => phone,
            Err(_) => return Err(Error::InvalidEncryptedData.into()),
        };
        self.store_phone(&opened.appid, &opened.openid, phone).await
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn update_phone(
        &self,
        request: Request<UpdatePhoneRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request = request.into_inner();
        let appid = required(&request.appid, "appid", APPID_MAX_CHARS)?.to_owned();
        let openid = required(&request.openid, "openid", OPENID_MAX_CHARS)?.to_owned();
        let phone = PhoneNumber {
            phone_number: required(&request.phone_number, "phone_number", PHONE_MAX_CHARS)?
                .to_owned(),
            pure_phone_number: required(
                &request.pure_phone_number,
                "pure_phone_number",
                PHONE_MAX_CHARS,
            )?
            .to_owned(),
            country_code: required(
                &request.country_code,
                "country_code",
                COUNTRY_CODE_MAX_CHARS,
            )?
            .to_owned(),
        };
        self.store_phone(&appid, &openid, phone).await
    }
}

/// `value`, which must be non-empty and at most `max_chars` characters.
fn required<'a>(value: &'a str, field: &str, max_chars: usize) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is required")));
    }
    within(value, field, max_chars)
}

/// `value` if present; an empty string counts as absent, because proto3
/// clients often send "" for "none".
fn optional<'a>(
    value: Option<&'a str>,
    field: &str,
    max_chars: usize,
) -> Result<Option<&'a str>, Error> {
    match value {
        None | Some("") => Ok(None),
        Some(value) => within(value, field, max_chars).map(Some),
    }
}

fn within<'a>(value: &'a str, field: &str, max_chars: usize) -> Result<&'a str, Error> {
    if value.chars().count() > max_chars {
        return Err(Error::InvalidArgument(format!(
            "{field} is longer than {max_chars} characters"
        )));
    }
    Ok(value)
}

fn to_proto(user: user::Model) -> User {
    User {
        // Auto-increment ids start at 1.
        id: u64::try_from(user.id).unwrap_or_default(),
        appid: user.appid,
        openid: user.openid,
        unionid: user.unionid,
        nickname: user.nickname,
        avatar_url: user.avatar_url,
        gender: i32::from(user.gender),
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
        country: user.country,
        province: user.province,
        city: user.city,
        language: user.language,
        phone_number: user.phone_number,
        pure_phone_number: user.pure_phone_number,
        phone_country_code: user.phone_country_code,
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Always in 0..1_000_000_000 (chrono keeps leap seconds apart from
        // the nanoseconds only above that range, which DATETIME cannot hold).
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(999_999_999),
    }
}

/// Statuses from the auth service pass through when they carry a wxlogin
/// reason meant for the client (invalid token, stale key); anything else
/// means auth is unavailable to us.
fn from_auth(status: Status) -> Status {
    match reason::of(&status) {
        Some(Reason::InvalidToken | Reason::SessionKeyStale | Reason::InvalidArgument) => status,
        _ => {
            tracing::warn!(code = ?status.code(), "the auth service failed");
            reason::status(
                tonic::Code::Unavailable,
                Reason::DependencyUnavailable,
                "the session store is unavailable, try again later",
            )
        }
    }
}

/// A login of a user who was already registered, as its upsert left the row.
struct Returning<'a> {
    id: i64,
    appid: &'a str,
    openid: &'a str,
    unionid: Option<&'a str>,
}

impl Returning<'_> {
    /// Whether a cached copy is this user as the upsert left them.
    fn holds(&self, user: &User) -> bool {
        u64::try_from(self.id).is_ok_and(|id| id == user.id)
            && user.appid == self.appid
            && user.openid == self.openid
            // The login may have backfilled the unionid the copy lacks.
            && (self.unionid.is_none() || user.unionid.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn required_values_must_be_present_and_short_enough() {
        assert!(required("", "appid", 3).is_err());
        assert!(required("abcd", "appid", 3).is_err());
        assert_eq!(required("abc", "appid", 3).ok(), Some("abc"));
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert_eq!(required("微信号", "appid", 3).ok(), Some("微信号"));
    }

    #[test]
    fn an_empty_optional_value_is_absent() {
        assert_eq!(optional(Some(""), "unionid", 3).ok(), Some(None));
        assert_eq!(optional(None, "unionid", 3).ok(), Some(None));
        assert_eq!(optional(Some("u1"), "unionid", 3).ok(), Some(Some("u1")));
        assert!(optional(Some("u1234"), "unionid", 3).is_err());
    }

    #[test]
    fn an_error_names_the_field() {
        let Err(Error::InvalidArgument(message)) = required("", "openid", 3) else {
            panic!("expected InvalidArgument");
        };

        assert_eq!(message, "openid is required");
    }

    #[test]
    fn timestamps_keep_microseconds() {
        let at = chrono::Utc
            .timestamp_opt(1_700_000_000, 123_456_000)
            .single()
            .unwrap();

        let ts = timestamp(at);

        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_000));
    }
}
