//! The `wxlogin.user.v1.UserService` gRPC service: validates requests,
//! calls the repository and turns rows into messages.

use std::{sync::Arc, time::Duration};
use tonic::{Request, Response, Status};
use tracing::field::Empty;

use wxlogin_common::grpc::{self, Upstream, UpstreamChannel};
use wxlogin_proto::{audit, audit::Event};
use wxlogin_proto::{
    auth::v1::{
        CheckSessionRequest, ForgetUserRequest, GetSessionKeyRequest, RevokeSessionsRequest,
        auth_service_client::AuthServiceClient,
    },
    reason::{self, Reason},
    user::v1::{
        BlockUserRequest, BlockUserResponse, DeleteUserRequest, DeleteUserResponse, GetUserRequest,
        GetUserResponse, ListUsersByPhoneRequest, ListUsersByPhoneResponse,
        ListUsersByUnionidRequest, ListUsersByUnionidResponse, OpenId, UnblockUserRequest,
        UpdatePhoneFromEncryptedRequest, UpdatePhoneRequest, UpdateProfileFromEncryptedRequest,
        UpdateProfileRequest, UpdateUserResponse, UpsertUserRequest, UpsertUserResponse, User,
        UserKey, get_user_request, user_key::Key, user_service_server::UserService,
    },
};
use wxlogin_provider::{
    ErrorKind, Expectations, LoginProvider, PhoneNumber, Sealed, SessionSecret, Signed,
};
use wxlogin_userdata::{copy as user_copy, sealing::DataKeys};

use crate::{
    cache::{UserCache, Written},
    entity::user,
    error::Error,
    fields::{self, Field, FieldCheck, Origin, ProfileUpdate, Validated},
    repo::{Upserted, UserRepo},
};

/// encryptedData of getUserInfo is well under 2 KiB; this bounds the work.
const ENCRYPTED_MAX_CHARS: u32 = 16 * 1024;
/// A base64 iv of 16 bytes is 24 characters; this only bounds the work.
const IV_MAX_CHARS: u32 = 64;

/// The service's state: the repository, and the auth service that holds
/// the session_keys. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UserApi {
    repo: UserRepo,
    auth: Upstream,
    watermark_max_age: Option<Duration>,
    cache: Option<UserCache>,
    /// What the callers' copies of users are sealed with.
    keys: DataKeys,
    /// What opens and reads the data the login provider sealed.
    provider: Arc<dyn LoginProvider>,
}

/// Decrypted data and whose it is (the session's user, never the data's
/// own `openId`, which the client can tamper with through the iv).
struct Opened {
    appid: String,
    openid: String,
    data: serde_json::Map<String, serde_json::Value>,
}

/// How many times a login's upsert is tried when the user is deleted under
/// it.
const REGISTER_ATTEMPTS: u32 = 3;

/// The deadline of calls to the auth service (a session-key lookup, or
/// WeChat's checkSessionKey behind it).
pub const AUTH_DEADLINE: Duration = Duration::from_secs(10);

impl UserApi {
    pub fn new(
        repo: UserRepo,
        auth: Upstream,
        watermark_max_age: Option<Duration>,
        cache: Option<UserCache>,
        keys: DataKeys,
        provider: Arc<dyn LoginProvider>,
    ) -> Self {
        UserApi {
            repo,
            auth,
            watermark_max_age,
            cache,
            keys,
            provider,
        }
    }

    fn auth_client(&self) -> AuthServiceClient<UpstreamChannel> {
        AuthServiceClient::new(self.auth.channel())
    }

    /// A returning user: the caller's cached copy when it is current, else
    /// the row (and the copy gets it). The caller's copy is the cache's
    /// content as auth read it in this very login, so reading the cache
    /// again could only find the same.
    async fn returning(&self, id: i64, cached: Option<&User>) -> Result<(User, Written), Error> {
        match cached.filter(|user| i64::try_from(user.id) == Ok(id)) {
            Some(user) => Ok((user.clone(), Written::Kept)),
            None => Ok(self.written_checked(self.repo.row(id).await?).await),
        }
    }

    /// The message for `user`, after a write: the shared cache gets it too.
    async fn written(&self, user: user::Model) -> User {
        self.written_checked(user).await.0
    }

    /// [`Self::written`], and whether the user turned out to be deleted
    /// (then no copy was written).
    async fn written_checked(&self, user: user::Model) -> (User, Written) {
        let user = to_proto(user);
        let written = match &self.cache {
            Some(cache) => cache.written(&user).await,
            None => Written::Kept,
        };
        (user, written)
    }

    /// The row `key` names, if there is one.
    async fn find(&self, key: Option<Key>) -> Result<Option<user::Model>, Error> {
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

    /// Blocks (`Some(at)`) or unblocks the user `key` names: the user as
    /// they now are (the copy too).
    async fn set_blocked(
        &self,
        key: Option<UserKey>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<User, Error> {
        let row = self.find(user_key(key)).await?.ok_or(Error::UserNotFound)?;
        tracing::Span::current().record("user_id", row.id);
        let row = self
            .repo
            .set_blocked(row.id, at)
            .await?
            .ok_or(Error::UserNotFound)?;
        Ok(self.written(row).await)
    }

    /// Ends every session of (appid, openid): how many were live.
    async fn end_sessions(
        &self,
        appid: &str,
        openid: &str,
        request_id: Option<&str>,
    ) -> Result<u32, Status> {
        let request = RevokeSessionsRequest {
            appid: appid.to_owned(),
            openid: openid.to_owned(),
            session_id: None,
        };
        Ok(self
            .auth_client()
            .revoke_sessions(self.auth.call(request, request_id))
            .await
            .map_err(from_auth)?
            .into_inner()
            .ended)
    }

    /// Deletes the user of (appid, openid), whose row is `id` (`None` when
    /// it is gone already: a repeated deletion, completed), in an order
    /// where stopping at any step leaves nobody logged in and a repeat of
    /// the call finishing the work:
    /// 1. auth forgets the user: every session, the session_key, the index
    ///    of sessions and the cached copy go at once, and a tombstone keeps
    ///    a copy of `id` from being written again (by a login that raced
    ///    this deletion);
    /// 2. the row goes;
    /// 3. sessions that logins racing the deletion opened meanwhile end.
    ///
    /// A login that meets the tombstone before step 2 completes the
    /// deletion itself (see [`Self::upsert`]).
    async fn delete(
        &self,
        appid: &str,
        openid: &str,
        id: Option<i64>,
        request_id: Option<&str>,
    ) -> Result<DeleteUserResponse, Status> {
        let forget = ForgetUserRequest {
            appid: appid.to_owned(),
            openid: openid.to_owned(),
            user_id: id.and_then(|id| u64::try_from(id).ok()).unwrap_or(0),
        };
        let mut ended = self
            .auth_client()
            .forget_user(self.auth.call(forget, request_id))
            .await
            .map_err(from_auth)?
            .into_inner()
            .ended;
        let deleted = match id {
            Some(id) => self.repo.delete(id).await?,
            None => false,
        };
        ended += self.end_sessions(appid, openid, request_id).await?;
        Ok(DeleteUserResponse {
            deleted,
            sessions_ended: ended,
        })
    }

    /// Fetches the session's session_key from auth, runs `check` with the
    /// session's appid and it (the rawData signature), and opens the data
    /// through the login provider. A failed decryption with a current key
    /// is either tampered data or a key WeChat replaced behind our back:
    /// WeChat's checkSessionKey tells which.
    async fn open(
        &self,
        request_id: &Option<String>,
        token: &str,
        encrypted_data: &str,
        iv: &str,
        check: impl FnOnce(&str, Option<&SessionSecret>) -> Result<(), Error>,
    ) -> Result<Opened, Status> {
        if token.is_empty() {
            return Err(Reason::InvalidToken.status("token is required"));
        }
        required(encrypted_data, "encrypted_data", ENCRYPTED_MAX_CHARS)?;
        required(iv, "iv", IV_MAX_CHARS)?;
        let keyed = self
            .auth_client()
            .get_session_key(self.auth.call(
                GetSessionKeyRequest {
                    token: token.to_owned(),
                },
                request_id.as_deref(),
            ))
            .await
            .map_err(|status| {
                let status = from_auth(status);
                if reason::of(&status) == Some(Reason::SessionKeyStale) {
                    audit!(Event::SessionKeyStale, request_id = request_id.as_deref());
                }
                status
            })?
            .into_inner();
        let session = keyed.session.ok_or_else(|| {
            tracing::error!("auth answered a session key without its session");
            Reason::Internal.status("internal error")
        })?;
        let span = tracing::Span::current();
        span.record("appid", session.appid.as_str());
        // A session of a provider without session secrets keeps the empty
        // one: its data opens with the provider's own key.
        let secret = Some(SessionSecret::new(keyed.session_key)).filter(|key| !key.is_empty());
        check(&session.appid, secret.as_ref())?;
        let expect = Expectations {
            appid: &session.appid,
            subject: Some(&session.openid),
            max_age: self.watermark_max_age,
            now_unix: chrono::Utc::now().timestamp(),
        };
        let sealed = Sealed {
            data: encrypted_data,
            iv: Some(iv),
        };
        match self.provider.open(&sealed, secret.as_ref(), &expect) {
            Ok(data) => Ok(Opened {
                appid: session.appid,
                openid: session.openid,
                data,
            }),
            Err(error) if error.kind() == ErrorKind::DataMalformed => {
                Err(Error::InvalidArgument(error.to_string()).into())
            }
            Err(error) if error.kind() != ErrorKind::DataInvalid => {
                tracing::error!(%error, "the login provider cannot open data");
                Err(Reason::Internal.status("internal error"))
            }
            Err(_) => {
                let check = self
                    .auth_client()
                    .check_session(self.auth.call(
                        CheckSessionRequest {
                            token: token.to_owned(),
                        },
                        request_id.as_deref(),
                    ))
                    .await;
                match check {
                    Ok(answer) if !answer.get_ref().valid => {
                        audit!(Event::SessionKeyStale, appid = %session.appid, request_id = request_id.as_deref());
                        Err(Reason::SessionKeyStale.status(
                            "WeChat replaced this session's session_key; call wx.login again",
                        ))
                    }
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
        update: &Validated,
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

    /// Registers the login's user or records their return; the user, what
    /// became of their copy, and whether this registered them.
    async fn register(
        &self,
        login: Login<'_>,
        cached: Option<&User>,
    ) -> Result<(User, Written, bool), Error> {
        Ok(
            match self
                .repo
                .upsert(login.appid, login.openid, login.unionid)
                .await?
            {
                Upserted::Row { user, created } => {
                    let (user, written) = self.written_checked(*user).await;
                    (user, written, created)
                }
                Upserted::Existing { id } => {
                    let (user, written) = self.returning(id, cached).await?;
                    (user, written, false)
                }
            },
        )
    }

    async fn upsert(&self, mut request: UpsertUserRequest) -> Result<UpsertUserResponse, Error> {
        let appid = Field::Appid.required("appid", &request.appid)?;
        let openid = Field::Openid.required("openid", &request.openid)?;
        let unionid = Field::Unionid.optional("unionid", request.unionid.as_deref())?;
        let span = tracing::Span::current();
        span.record("appid", appid);

        let login = Login {
            appid,
            openid,
            unionid,
        };
        // The caller's copy, opened once (in place).
        let cached = login.copy(&self.keys, &mut request.cached_copy);
        let mut attempt = 1;
        let mut copy = cached.as_ref();
        let (user, written, created) = loop {
            match self.register(login, copy).await {
                Ok(registered) => break registered,
                // Deleted between the upsert and its read-back: once more,
                // which registers the user anew.
                Err(Error::Vanished) if attempt < REGISTER_ATTEMPTS => {
                    attempt += 1;
                    copy = None;
                }
                // The database cannot record this login, but a returning
                // user's copy is all the answer needs: their login depends
                // on Redis and WeChat only. What goes unrecorded is the
                // login itself (`last_login_at`, `login_count`), which no
                // answer shows.
                Err(error @ (Error::DatabaseDown | Error::DatabaseUnavailable(_))) => {
                    let Some(user) = cached.clone() else {
                        return Err(error);
                    };
                    span.record("degraded", true);
                    span.record("user_id", user.id);
                    span.record("created", false);
                    return Ok(UpsertUserResponse {
                        user: Some(user),
                        created: false,
                    });
                }
                Err(error) => return Err(error),
            }
        };
        let (user, created) = match written {
            Written::Kept => (user, created),
            // The user was deleted, but the deletion stopped before the
            // row went: this login completes it and registers the user
            // anew.
            Written::Deleted => {
                self.repo
                    .delete(i64::try_from(user.id).unwrap_or_default())
                    .await?;
                audit!(
                    Event::AccountDeleted,
                    user_id = user.id,
                    appid,
                    completed_by = "login"
                );
                let (user, _, created) = self.register(login, None).await?;
                (user, created)
            }
        };
        if user.blocked {
            span.record("user_id", user.id);
            audit!(Event::BlockedLoginRefused, user_id = user.id, appid);
            return Err(Error::UserBlocked);
        }

        span.record("user_id", user.id);
        span.record("created", created);
        Ok(UpsertUserResponse {
            user: Some(user),
            created,
        })
    }

    async fn get(&self, request: GetUserRequest) -> Result<GetUserResponse, Error> {
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
}

#[tonic::async_trait]
impl UserService for UserApi {
    #[tracing::instrument(
        skip_all,
        fields(appid = Empty, user_id = Empty, created = Empty, degraded = Empty)
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
        let unionid = Field::Unionid.required("unionid", &request.get_ref().unionid)?;
        let users = self.repo.list_by_unionid(unionid).await?;
        Ok(Response::new(ListUsersByUnionidResponse {
            users: users.into_iter().map(to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_users_by_phone(
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
                |appid, secret| match signed {
                    Some((content, signature))
                        if !self
                            .provider
                            .verify(appid, &Signed { content, signature }, secret) =>
                    {
                        Err(Error::InvalidSignature)
                    }
                    _ => Ok(()),
                },
            )
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
        self.store(&opened.appid, &opened.openid, &update).await
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request = request.into_inner();
        let appid = Field::Appid.required("appid", &request.appid)?;
        let openid = Field::Openid.required("openid", &request.openid)?;
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
                |_, _| Ok(()),
            )
            .await?;
        let phone = match self.provider.phone_in(&opened.data) {
            Ok(phone) => phone,
            Err(_) => return Err(Error::InvalidEncryptedData.into()),
        };
        let update = ProfileUpdate::phone(phone).validated(Origin::WeChat)?;
        self.store(&opened.appid, &opened.openid, &update).await
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn update_phone(
        &self,
        request: Request<UpdatePhoneRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request = request.into_inner();
        let appid = Field::Appid.required("appid", &request.appid)?;
        let openid = Field::Openid.required("openid", &request.openid)?;
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
        self.store(appid, openid, &update).await
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn block_user(
        &self,
        request: Request<BlockUserRequest>,
    ) -> Result<Response<BlockUserResponse>, Status> {
        let request_id = grpc::request_id_of(&request);
        // The row first: from then on the user's logins are refused. Then
        // the copy, which answers no login once it says blocked, and last
        // the sessions, so that none opened meanwhile outlives the block.
        let key = request.into_inner().user;
        let this = self.clone();
        to_completion(async move {
            let user = this.set_blocked(key, Some(crate::repo::now())).await?;
            let ended = this
                .end_sessions(&user.appid, &user.openid, request_id.as_deref())
                .await?;
            audit!(Event::UserBlocked, user_id = user.id, appid = %user.appid, ended, request_id = request_id.as_deref());
            Ok(Response::new(BlockUserResponse {
                user: Some(user),
                sessions_ended: ended,
            }))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn unblock_user(
        &self,
        request: Request<UnblockUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request_id = grpc::request_id_of(&request);
        let user = self.set_blocked(request.into_inner().user, None).await?;
        audit!(Event::UserUnblocked, user_id = user.id, appid = %user.appid, request_id = request_id.as_deref());
        Ok(Response::new(UpdateUserResponse { user: Some(user) }))
    }

    #[tracing::instrument(skip_all, fields(appid = Empty, user_id = Empty))]
    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let request_id = grpc::request_id_of(&request);
        let key = user_key(request.into_inner().user);
        let this = self.clone();
        let deleted = to_completion(async move {
            let row = this.find(key.clone()).await?;
            let (appid, openid, id) = match (row, key) {
                (Some(row), _) => (row.appid, row.openid, Some(row.id)),
                // The row is gone: a deletion repeated, which still ends
                // what logins racing it may have opened.
                (None, Some(Key::Openid(OpenId { appid, openid }))) => (appid, openid, None),
                (None, _) => return Err(Error::UserNotFound.into()),
            };
            if let Some(id) = id {
                tracing::Span::current().record("user_id", id);
            }
            let deleted = this
                .delete(&appid, &openid, id, request_id.as_deref())
                .await?;
            audit!(
                Event::AccountDeleted,
                user_id = id,
                appid = %appid,
                ended = deleted.sessions_ended,
                row_deleted = deleted.deleted,
                request_id = request_id.as_deref()
            );
            Ok(deleted)
        })
        .await?;
        Ok(Response::new(deleted))
    }
}

/// Runs `work` in a task of its own, in the caller's span, so that it
/// finishes even when the caller goes away (a client that hangs up must not
/// leave a deletion or a block half done).
async fn to_completion<T: Send + 'static>(
    work: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    use tracing::Instrument as _;
    tokio::spawn(work.instrument(tracing::Span::current()))
        .await
        .unwrap_or_else(|error| {
            tracing::error!(%error, "a task that had to finish did not");
            Err(Reason::Internal.status("internal error"))
        })
}

/// The key of a request that names a user.
fn user_key(user: Option<UserKey>) -> Option<Key> {
    user.and_then(|user| user.key)
}

/// `value`, which must be non-empty and at most `max_chars` characters: for
/// inputs that are no user field (those are [`Field`]s).
fn required<'a>(value: &'a str, name: &str, max_chars: u32) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{name} is required")));
    }
    fields::at_most(name, value, max_chars)
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
        blocked: user.blocked_at.is_some(),
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
        Some(
            Reason::InvalidToken
            | Reason::SessionKeyStale
            | Reason::InvalidArgument
            | Reason::RateLimited,
        ) => status,
        // Auth refused our credential: a deployment mistake, said as such.
        Some(Reason::CallerUnauthenticated | Reason::CallerForbidden) => {
            tracing::error!(code = ?status.code(), "the auth service refused our credential: check INTERNAL_USER_SECRET");
            status
        }
        _ => {
            tracing::warn!(code = ?status.code(), "the auth service failed");
            Reason::DependencyUnavailable
                .status("the session store is unavailable, try again later")
        }
    }
}

/// A login: whose, and the unionid WeChat gave with it.
#[derive(Clone, Copy)]
struct Login<'a> {
    appid: &'a str,
    openid: &'a str,
    unionid: Option<&'a str>,
}

impl Login<'_> {
    /// The user in the caller's copy (empty when it has none; opened in
    /// place), if the copy is this user as this login leaves them.
    fn copy(&self, keys: &DataKeys, copy: &mut [u8]) -> Option<User> {
        if copy.is_empty() {
            return None;
        }
        user_copy::decode(keys, copy, self.appid, self.openid)
            .filter(|user| user_copy::answers_login(user, self.appid, self.openid, self.unionid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
