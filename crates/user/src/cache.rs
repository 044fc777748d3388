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

use std::time::Duration;

use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use wxlogin_proto::user::v1::User;

/// How long a copy lives after its last write.
const TTL: Duration = Duration::from_secs(24 * 3600);

pub use wxlogin_common::user_copy::key;

#[derive(Clone)]
pub struct UserCache {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for UserCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl UserCache {
    /// Connects lazily: the user service starts, and serves from MySQL,
    /// while Redis is down.
    pub fn connect(url: &str, prefix: String) -> Result<UserCache, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(UserCache { conn, prefix })
    }

    /// After a write: the copy becomes `user`.
    pub async fn written(&self, user: &User) {
        let key = key(&self.prefix, &user.appid, &user.openid);
        let mut conn = self.conn.clone();
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(user.encode_to_vec())
            .arg("EX")
            .arg(TTL.as_secs())
            .query_async(&mut conn)
            .await;
        if let Err(error) = set {
            tracing::warn!(%error, "could not write the cached user; dropping the copy");
            let deleted: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
            if let Err(error) = deleted {
                tracing::error!(%error, "could not drop the cached user: it may be stale until it expires");
            }
        }
    }

    /// After a lookup that the cache may lack: adds the copy if there is none.
    pub async fn looked_up(&self, user: &User) {
        let key = key(&self.prefix, &user.appid, &user.openid);
        let mut conn = self.conn.clone();
        let added: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(&key)
            .arg(user.encode_to_vec())
            .arg("NX")
            .arg("EX")
            .arg(TTL.as_secs())
            .query_async(&mut conn)
            .await;
        if let Err(error) = added {
            tracing::debug!(%error, "could not add the cached user");
        }
    }
}
