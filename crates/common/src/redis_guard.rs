//! The one Redis connection of a process, behind a circuit breaker, shared
//! by the auth service's session store and the user service's user copies.
//!
//! Without it, every command sent while Redis is down waits for the
//! connection manager's reconnect attempts (about half a second) before it
//! fails. Here the first command that fails for want of Redis marks it down;
//! from then on commands fail at once with an unavailable error, and a
//! background probe PINGs every [`PROBE_EVERY`] until Redis answers, which
//! marks it up again. The transitions are logged once each, so an outage
//! costs two log lines, not one per request.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use redis::{
    ErrorKind, RedisError, RedisResult,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::sync::watch;

use crate::metrics::name;

/// How long a new connection may take: Redis sits next to the services, so
/// anything slower is an outage, and a request should not wait it out.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a command may take before Redis counts as unavailable. Our
/// commands are single-key reads and writes and tiny scripts.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the probe PINGs a Redis that is down: the bound on how long
/// the service keeps failing after Redis answers again.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long one probe waits for its PONG.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Whether `error` means Redis could not be reached (as opposed to Redis
/// refusing or misreading a command): the errors that trip the breaker and
/// that callers report as a dependency outage.
pub fn is_unavailable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
}

/// The connection settings of every wxlogin Redis client: short timeouts and
/// one quick reconnect attempt, because the breaker, not the client, waits
/// for Redis to come back.
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(50))
}

/// A multiplexed, self-reconnecting Redis connection that fails fast while
/// Redis is known to be down. Cheap to clone; one per process is enough.
#[derive(Clone)]
pub struct RedisGuard {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    /// Whether Redis answered the last command (or probe).
    up: watch::Sender<bool>,
}

impl std::fmt::Debug for RedisGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGuard")
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisGuard {
    /// Connects now: fails when Redis does not answer.
    pub async fn connect(url: &str) -> RedisResult<RedisGuard> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_with_config(client, connection_config()).await?;
        Ok(RedisGuard::new(conn))
    }

    /// Connects on first use: the caller starts while Redis is down.
    pub fn connect_lazy(url: &str) -> RedisResult<RedisGuard> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_lazy_with_config(client, connection_config())?;
        Ok(RedisGuard::new(conn))
    }

    fn new(conn: ConnectionManager) -> RedisGuard {
        RedisGuard {
            inner: Arc::new(Inner {
                conn,
                up: watch::Sender::new(true),
            }),
        }
    }

    /// Runs `command` on the connection, unless Redis is known to be down:
    /// then it fails at once with an unavailable error. A command that fails
    /// for want of Redis marks it down.
    pub async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut ConnectionManager) -> RedisResult<T>,
    ) -> RedisResult<T> {
        if !self.is_up() {
            metrics::counter!(name::REDIS_ERRORS, "kind" => "down").increment(1);
            return Err(down());
        }
        let mut conn = self.inner.conn.clone();
        let result = command(&mut conn).await;
        if let Err(error) = &result {
            let unavailable = is_unavailable(error);
            let kind = if unavailable { "unavailable" } else { "other" };
            metrics::counter!(name::REDIS_ERRORS, "kind" => kind).increment(1);
            if unavailable {
                self.trip(error);
            }
        }
        result
    }

    /// Whether Redis answered the last command or probe.
    pub fn is_up(&self) -> bool {
        *self.inner.up.borrow()
    }

    /// Follows the up/down state, for health reporting and for work to do
    /// once Redis is back.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.inner.up.subscribe()
    }

    /// A handle that does not keep the connection open, for background
    /// tasks that should end with their owner.
    pub fn downgrade(&self) -> WeakRedisGuard {
        WeakRedisGuard(Arc::downgrade(&self.inner))
    }

    /// PINGs Redis (through the breaker: fails at once while it is down).
    pub async fn ping(&self) -> RedisResult<()> {
        self.run(async |conn| redis::cmd("PING").query_async::<()>(conn).await)
            .await
    }

    fn trip(&self, error: &RedisError) {
        let tripped = self
            .inner
            .up
            .send_if_modified(|up| std::mem::replace(up, false));
        if !tripped {
            return;
        }
        tracing::warn!(%error, "Redis unavailable: failing fast until it answers again");
        metrics::gauge!(name::REDIS_UP).set(0.0);
        let inner = Arc::downgrade(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(probe(inner))),
            // Not reachable from async code; without a runtime nothing
            // could probe, so stay up and let the next command find out.
            Err(_) => drop(self.inner.up.send_replace(true)),
        }
    }
}

/// A [`RedisGuard`] that does not keep it alive.
#[derive(Clone)]
pub struct WeakRedisGuard(Weak<Inner>);

impl WeakRedisGuard {
    pub fn upgrade(&self) -> Option<RedisGuard> {
        self.0.upgrade().map(|inner| RedisGuard { inner })
    }
}

/// Until Redis answers a PING (or the connection is dropped), then marks it
/// up. The PING goes through the same connection manager as the commands, so
/// that its reconnection is what gets checked.
async fn probe(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut conn = inner.conn.clone();
        let pong = tokio::time::timeout(
            PROBE_TIMEOUT,
            redis::cmd("PING").query_async::<()>(&mut conn),
        )
        .await;
        if matches!(pong, Ok(Ok(()))) {
            inner.up.send_replace(true);
            tracing::info!("Redis answers again");
            metrics::gauge!(name::REDIS_UP).set(1.0);
            return;
        }
    }
}

/// The error of a command refused because Redis is known to be down; it
/// counts as unavailable ([`is_unavailable`]).
fn down() -> RedisError {
    RedisError::from((ErrorKind::Io, "Redis is unavailable (failing fast)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fail_fast_error_counts_as_unavailable() {
        assert!(is_unavailable(&down()));
        assert!(!is_unavailable(&RedisError::from((
            ErrorKind::Parse,
            "not an outage"
        ))));
    }
}
