//! The shared user cache: a copy of each user, as the user service last
//! wrote it, in the Redis the auth service keeps sessions in. The auth
//! service reads it in the same round trip as the session, so that an
//! authenticated call like `GET /v1/me` needs neither this service nor
//! MySQL.
//!
//! Every write of a user writes the copy (write-through, from the row as
//! read back after the write); a lookup that finds no copy adds one only if
//! none appeared meanwhile (`SET NX`), so a slow lookup never overwrites a
//! newer write. A copy that cannot be written is deleted, so readers fall
//! back to MySQL rather than see stale data; copies also expire. Without
//! `REDIS_URL` (the single-process setup) there is no cache.
//!
//! While Redis is down (see `wxlogin_redis::guard`) the cache costs
//! requests nothing: writes fail at once, and the copies they could not
//! replace are remembered and deleted as soon as Redis answers again, before
//! anyone can read them stale.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError, Weak},
};

use wxlogin_proto::user::v1::User;
use wxlogin_redis::{
    Keyspace, RedisGuard, WeakRedisGuard, keys::USER_COPY_TTL as TTL, scripts::WRITE_COPY,
};
use wxlogin_userdata::{copy as user_copy, sealing::DataKeys};

/// How many copies an outage may leave stale that are deleted when Redis
/// is back; past that, the rest stay until they expire (logged once).
const MAX_STALE: usize = 100_000;

#[derive(Clone)]
pub struct UserCache {
    redis: RedisGuard,
    keyspace: Keyspace,
    /// What the copies are sealed with (see `wxlogin_userdata::copy`).
    keys: DataKeys,
    /// Keys of copies a write could not replace while Redis was down.
    stale: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for UserCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCache")
            .field("prefix", &self.keyspace.prefix())
            .finish_non_exhaustive()
    }
}

impl UserCache {
    /// Connects lazily: the user service starts, and serves from MySQL,
    /// while Redis is down.
    /// Must be called inside a tokio runtime (it starts the task that
    /// deletes stale copies when Redis is back).
    pub fn connect(
        url: &str,
        prefix: String,
        keys: DataKeys,
    ) -> Result<UserCache, redis::RedisError> {
        let redis = RedisGuard::connect_lazy(url)?;
        let stale = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(delete_stale_on_recovery(
            redis.watch(),
            Arc::downgrade(&stale),
            redis.downgrade(),
        ));
        Ok(UserCache {
            redis,
            keyspace: Keyspace::new(&prefix),
            keys,
            stale,
        })
    }

    /// The connection, shared with the login journal's reader.
    pub fn guard(&self) -> &RedisGuard {
        &self.redis
    }

    /// Writes `body`, the copy of `user`, at `key` (only if there is none
    /// when `only_new`), unless the user was deleted: `Ok(1)` written,
    /// `Ok(0)` there was one (`only_new`), `Ok(-1)` deleted (see
    /// [`WRITE_COPY`]).
    async fn write(
        &self,
        key: &str,
        user: &User,
        body: &[u8],
        only_new: bool,
    ) -> redis::RedisResult<i64> {
        let tombstone = self.keyspace.tombstone(&user.appid, &user.openid);
        self.redis
            .run(async |conn| {
                WRITE_COPY
                    .key(key)
                    .key(&tombstone)
                    .arg(user.id)
                    .arg(body)
                    .arg(TTL.as_secs())
                    .arg(if only_new { "1" } else { "0" })
                    .invoke_async(conn)
                    .await
            })
            .await
    }

    /// After a write: the copy becomes `user`. [`Written::Deleted`] when the
    /// user was deleted meanwhile (no copy is written then).
    pub async fn written(&self, user: &User) -> Written {
        let key = self.keyspace.user_copy(&user.appid, &user.openid);
        let body = match user_copy::encode(&self.keys, user) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "could not seal the cached user; dropping the copy");
                self.drop_copy(key).await;
                return Written::Kept;
            }
        };
        let error = match self.write(&key, user, &body, false).await {
            Ok(-1) => return Written::Deleted,
            Ok(_) => return Written::Kept,
            Err(error) => error,
        };
        if wxlogin_redis::guard::is_unavailable(&error) {
            // Redis is down: the outage is logged once by the guard.
            tracing::debug!(%error, "could not write the cached user; deleting it once Redis is back");
            self.remember_stale(key);
            return Written::Kept;
        }
        tracing::warn!(%error, "could not write the cached user; dropping the copy");
        self.drop_copy(key).await;
        Written::Kept
    }

    /// Deletes the copy at `key`, or remembers it to delete later.
    async fn drop_copy(&self, key: String) {
        let deleted: redis::RedisResult<()> = self
            .redis
            .run(async |conn| redis::cmd("DEL").arg(&key).query_async(conn).await)
            .await;
        if deleted.is_err() {
            self.remember_stale(key);
        }
    }

    fn remember_stale(&self, key: String) {
        let mut stale = self.stale.lock().unwrap_or_else(PoisonError::into_inner);
        if stale.len() < MAX_STALE {
            stale.insert(key);
        } else if stale.len() == MAX_STALE {
            stale.insert(key);
            tracing::error!(
                "too many cached users could not be replaced during a Redis outage: \
                 some may be stale until they expire (24 h); flush the user:* keys to be sure"
            );
        }
    }

    /// After a lookup that the cache may lack: adds the copy if there is
    /// none (and the user was not deleted).
    pub async fn looked_up(&self, user: &User) {
        let key = self.keyspace.user_copy(&user.appid, &user.openid);
        let Ok(body) = user_copy::encode(&self.keys, user) else {
            // The next write or lookup adds it.
            return;
        };
        if let Err(error) = self.write(&key, user, &body, true).await {
            tracing::debug!(%error, "could not add the cached user");
        }
    }
}

/// What became of a copy the service wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written, or (when Redis failed) dropped or to be dropped, so that no
    /// stale copy is read.
    Kept,
    /// The user is deleted (a tombstone names them): no copy was written.
    Deleted,
}

/// Each time Redis comes back, deletes the copies writes could not replace
/// while it was down. Ends with the cache.
async fn delete_stale_on_recovery(
    mut availability: tokio::sync::watch::Receiver<bool>,
    stale: Weak<Mutex<HashSet<String>>>,
    redis: WeakRedisGuard,
) {
    while availability.changed().await.is_ok() {
        let (Some(stale), Some(redis)) = (stale.upgrade(), redis.upgrade()) else {
            return;
        };
        if !*availability.borrow_and_update() {
            continue;
        }
        let keys: Vec<String> = stale
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        // A Redis Cluster deletes several keys at once only in one hash
        // slot; copies of different users are in different ones.
        let per_command = if redis.is_cluster() { 1 } else { 1000 };
        for chunk in keys.chunks(per_command) {
            let deleted: redis::RedisResult<()> = redis
                .run(async |conn| redis::cmd("DEL").arg(chunk).query_async(conn).await)
                .await;
            if let Err(error) = deleted {
                tracing::warn!(%error, "could not delete cached users written during the outage; retrying when Redis is back");
                stale
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(chunk.iter().cloned());
            }
        }
    }
}
