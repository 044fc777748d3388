//! The `wxlogin.user.v1.UserService` gRPC service: validates requests,
//! calls the repository and turns rows into messages.
//!
//! One file per group of RPCs (`login`, `lookup`, `profile` with
//! `encrypted`, `admin`), each adding the handlers of its group to
//! [`UserApi`]; this module owns the state, the one dispatch of the
//! service's trait to those handlers, and what every group shares (rows
//! into messages, the auth service's statuses). It must not know SQL (the
//! repository's) or how the user copy is sealed (`wxlogin_userdata::copy`).

use std::{sync::Arc, time::Duration};
use tonic::{Request, Response, Status};
use tracing::field::Empty;

use wxlogin_common::grpc::{Upstream, UpstreamChannel};
use wxlogin_proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    reason::{self, Reason},
    user::v1::{
        BlockUserRequest, BlockUserResponse, DeleteUserRequest, DeleteUserResponse, GetUserRequest,
        GetUserResponse, ListUsersByPhoneRequest, ListUsersByPhoneResponse,
        ListUsersByUnionidRequest, ListUsersByUnionidResponse, UnblockUserRequest,
        UpdatePhoneFromEncryptedRequest, UpdatePhoneRequest, UpdateProfileFromEncryptedRequest,
        UpdateProfileRequest, UpdateUserResponse, UpsertUserRequest, UpsertUserResponse, User,
        user_service_server::UserService,
    },
};
use wxlogin_provider::LoginProvider;
use wxlogin_userdata::sealing::DataKeys;

use crate::{
    cache::{UserCache, Written},
    entity::user,
    error::Error,
    fields::{Field, FieldCheck},
    repo::UserRepo,
};

mod admin;
mod encrypted;
mod login;
mod lookup;
mod profile;

/// The deadline of calls to the auth service (a session-key lookup, or
/// WeChat's checkSessionKey behind it).
pub const AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// The service's state: the repository, and the auth service that holds
/// the session_keys. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UserApi {
    pub(crate) repo: UserRepo,
    /// The auth service, which holds the session_keys.
    pub(crate) auth: Upstream,
    /// How old a watermark may be; `None`: not checked.
    pub(crate) watermark_max_age: Option<Duration>,
    /// The shared cache of users, when Redis is configured.
    pub(crate) cache: Option<UserCache>,
    /// What the callers' copies of users are sealed with.
    pub(crate) keys: DataKeys,
    /// What opens and reads the data the login provider sealed.
    pub(crate) provider: Arc<dyn LoginProvider>,
}

impl UserApi {
    fn auth_client(&self) -> AuthServiceClient<UpstreamChannel> {
        AuthServiceClient::new(self.auth.channel())
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
}

/// How a call is served: by the method given its message, answering its
/// message (`message`), or given the whole request (`request`).
macro_rules! serve {
    ($api:ident, $request:ident, message $method:ident) => {
        Ok(Response::new($api.$method($request.into_inner()).await?))
    };
    ($api:ident, $request:ident, request $method:ident) => {
        $api.$method($request).await
    };
}

/// The one dispatch of `UserService`: each call, under a span of its name
/// with the fields it records (empty until it does), to the method of the
/// file that serves it.
macro_rules! dispatch {
    ($($rpc:ident($request:ty) -> $response:ty => $how:ident $method:ident [$($field:ident),*];)*) => {
        #[tonic::async_trait]
        impl UserService for UserApi {
            $(
                #[tracing::instrument(skip_all, fields($($field = Empty),*))]
                async fn $rpc(
                    &self,
                    request: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    serve!(self, request, $how $method)
                }
            )*
        }
    };
}

dispatch! {
    upsert_user(UpsertUserRequest) -> UpsertUserResponse => message upsert [appid, user_id, created, degraded];
    get_user(GetUserRequest) -> GetUserResponse => message get [appid, user_id];
    list_users_by_unionid(ListUsersByUnionidRequest) -> ListUsersByUnionidResponse => request list_by_unionid [];
    list_users_by_phone(ListUsersByPhoneRequest) -> ListUsersByPhoneResponse => request list_by_phone [];
    update_profile_from_encrypted(UpdateProfileFromEncryptedRequest) -> UpdateUserResponse => request profile_from_encrypted [appid, user_id];
    update_profile(UpdateProfileRequest) -> UpdateUserResponse => request profile [appid, user_id];
    update_phone_from_encrypted(UpdatePhoneFromEncryptedRequest) -> UpdateUserResponse => request phone_from_encrypted [appid, user_id];
    update_phone(UpdatePhoneRequest) -> UpdateUserResponse => request phone [appid, user_id];
    block_user(BlockUserRequest) -> BlockUserResponse => request block [appid, user_id];
    unblock_user(UnblockUserRequest) -> UpdateUserResponse => request unblock [appid, user_id];
    delete_user(DeleteUserRequest) -> DeleteUserResponse => request delete_account [appid, user_id];
}

/// Runs `work` in a task of its own, in the caller's span, so that it
/// finishes even when the caller goes away: a client that hangs up must not
/// leave a write half done (a row changed and its copy in Redis not, which
/// readers would see stale until it expires; a block or a deletion with
/// sessions left).
pub(super) async fn to_completion<T: Send + 'static>(
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

/// The user a request names by (appid, openid), both required.
fn whose<'a>(appid: &'a str, openid: &'a str) -> Result<(&'a str, &'a str), Error> {
    Ok((
        Field::Appid.required("appid", appid)?,
        Field::Openid.required("openid", openid)?,
    ))
}

/// [`to_proto`], whose text fields are the columns of
/// [`wxlogin_proto::user_fields!`], each moved from the row's field of the
/// same name (so the `User` message and the entity cannot lack one).
macro_rules! to_proto {
    ($($Variant:ident { column: $column:ident, $($other:tt)* }),* $(,)?) => {
        fn to_proto(user: user::Model) -> User {
            User {
                // Auto-increment ids start at 1.
                id: u64::try_from(user.id).unwrap_or_default(),
                gender: i32::from(user.gender),
                created_at: Some(timestamp(user.created_at)),
                updated_at: Some(timestamp(user.updated_at)),
                blocked: user.blocked_at.is_some(),
                $($column: user.$column,)*
            }
        }
    };
}

wxlogin_proto::user_fields!(to_proto);

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
