//! The team's RPCs: `BlockUser`, `UnblockUser` and `DeleteUser`. Each ends
//! the user's sessions through auth; each runs to completion even when its
//! caller goes away.

use tonic::{Request, Response, Status};
use wxlogin_common::grpc;
use wxlogin_proto::{audit, audit::Event};
use wxlogin_proto::{
    auth::v1::{ForgetUserRequest, RevokeSessionsRequest},
    user::v1::{
        BlockUserRequest, BlockUserResponse, DeleteUserRequest, DeleteUserResponse, OpenId,
        UnblockUserRequest, UpdateUserResponse, User, UserKey, user_key::Key,
    },
};

use super::{UserApi, from_auth, to_completion};
use crate::error::Error;

impl UserApi {
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

    pub(super) async fn block(
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

    pub(super) async fn unblock(
        &self,
        request: Request<UnblockUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let request_id = grpc::request_id_of(&request);
        let key = request.into_inner().user;
        let this = self.clone();
        to_completion(async move {
            let user = this.set_blocked(key, None).await?;
            audit!(Event::UserUnblocked, user_id = user.id, appid = %user.appid, request_id = request_id.as_deref());
            Ok(Response::new(UpdateUserResponse { user: Some(user) }))
        })
        .await
    }

    pub(super) async fn delete_account(
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

/// The key of a request that names a user.
fn user_key(user: Option<UserKey>) -> Option<Key> {
    user.and_then(|user| user.key)
}
