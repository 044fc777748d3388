//! `UpsertUser`: a login registers its user or records their return, and
//! answers from the caller's copy of the user when it is current.

use wxlogin_proto::user::v1::{UpsertUserRequest, UpsertUserResponse, User};
use wxlogin_proto::{audit, audit::Event};
use wxlogin_userdata::{copy as user_copy, sealing::DataKeys};

use super::{UserApi, whose};
use crate::{
    cache::Written,
    error::Error,
    fields::{Field, FieldCheck},
    repo::Upserted,
};

/// How many times a login's upsert is tried when the user is deleted under
/// it.
const REGISTER_ATTEMPTS: u32 = 3;

impl UserApi {
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

    pub(super) async fn upsert(
        &self,
        mut request: UpsertUserRequest,
    ) -> Result<UpsertUserResponse, Error> {
        let (appid, openid) = whose(&request.appid, &request.openid)?;
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
