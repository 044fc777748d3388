//! The one Redis connection of a process, behind a circuit breaker
//! ([`wxlogin_common::breaker`]), shared by everything a service keeps in
//! Redis.
//!
//! `REDIS_URL` names one of three topologies ([`Topology`]): one Redis
//! (`redis://…`), a Redis Cluster (`redis+cluster://host:port,host:port`,
//! any of its nodes), or a primary that Redis Sentinel watches
//! (`redis+sentinel://host:port,host:port/<service name>[/<db>]`). The
//! callers' keys are laid out so that every multi-key command and script
//! stays inside one hash slot, so they run unchanged on all three.
//!
//! Without the breaker, every command sent while Redis is down waits for the
//! client's reconnect attempts before it fails. Here the first command that
//! fails for want of Redis marks it down; from then on commands fail at
//! once with an unavailable error, and a background probe PINGs every
//! [`PROBE_EVERY`] until Redis answers, which marks it up again. Under
//! Sentinel the probe first asks the sentinels which server is the primary
//! now, so a failover costs the time the sentinels take to agree plus one
//! probe. The transitions are logged once each, so an outage costs two log
//! lines, not one per request.

use std::{
    sync::{Arc, PoisonError, RwLock, Weak},
    time::Duration,
};

use redis::{
    Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelServerType},
};
use tokio::sync::watch;
use wxlogin_common::{
    breaker::{Breaker, Messages},
    metrics::name,
};

use crate::topology::Topology;

/// How long a new connection may take: Redis sits next to the services, so
/// anything slower is an outage, and a request should not wait it out.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a command may take before Redis counts as unavailable. Our
/// commands are single-key reads and writes and tiny scripts.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the probe PINGs a Redis that is down: the bound on how long
/// the service keeps failing after Redis answers again.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long one probe waits for its PONG (and, under Sentinel, for the
/// sentinels to name the primary).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether `error` means Redis could not be reached or cannot serve now (as
/// opposed to Redis refusing or misreading a command): the errors that trip
/// the breaker and that callers report as a dependency outage. Besides
/// connection failures: a Cluster without a primary for a slot, a server
/// that turned replica or is loading, a failover in flight.
pub fn is_unavailable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::BusyLoading
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                )
        )
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

fn cluster_client(nodes: &[String]) -> RedisResult<ClusterClient> {
    ClusterClient::builder(nodes.iter().map(String::as_str))
        .connection_timeout(CONNECTION_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        // MOVED and ASK are followed; while a slot has no primary, fail
        // soon and let the breaker wait.
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(100)
        .build()
}

fn cluster_config() -> ClusterConfig {
    ClusterConfig::new()
        .set_connection_timeout(CONNECTION_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
}

/// A connection to whichever topology `REDIS_URL` names: what the commands
/// of [`RedisGuard::run`] are sent on. Cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    /// One server (directly, or the primary Sentinel named last).
    One(ConnectionManager),
    /// A Redis Cluster: each command goes to its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::One(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::One(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::One(conn) => conn.get_db(),
            RedisConn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A multiplexed, self-reconnecting Redis connection that fails fast while
/// Redis is known to be down. Cheap to clone; one per process is enough.
#[derive(Clone)]
pub struct RedisGuard {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` until a lazily connected Sentinel setup first names its
    /// primary.
    conn: RwLock<Option<RedisConn>>,
    /// How to find the primary again, under Sentinel.
    sentinel: Option<tokio::sync::Mutex<Sentinel>>,
    cluster: bool,
    /// Whether Redis answered the last command (or probe).
    breaker: Breaker,
}

/// What the breaker says of Redis.
const MESSAGES: Messages = Messages {
    down: "Redis unavailable: failing fast until it answers again",
    up: "Redis answers again",
    gauge: Some(name::REDIS_UP),
};

struct Sentinel {
    client: SentinelClient,
    /// The primary the connection goes to.
    primary: Option<String>,
}

impl std::fmt::Debug for RedisGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGuard")
            .field("up", &self.is_up())
            .field("cluster", &self.inner.cluster)
            .finish_non_exhaustive()
    }
}

impl RedisGuard {
    /// Connects now: fails when Redis does not answer.
    pub async fn connect(url: &str) -> RedisResult<RedisGuard> {
        match Topology::parse(url)? {
            Topology::Single(url) => {
                let conn =
                    ConnectionManager::new_with_config(Client::open(url)?, connection_config())
                        .await?;
                Ok(RedisGuard::new(Some(RedisConn::One(conn)), None, false))
            }
            Topology::Cluster(nodes) => {
                let conn = cluster_client(&nodes)?
                    .get_async_connection_with_config(cluster_config())
                    .await?;
                Ok(RedisGuard::new(Some(RedisConn::Cluster(conn)), None, true))
            }
            topology @ Topology::Sentinel { .. } => {
                let mut sentinel = Sentinel::new(&topology)?;
                let conn = sentinel.primary().await?;
                Ok(RedisGuard::new(Some(conn), Some(sentinel), false))
            }
        }
    }

    /// Connects on first use: the caller starts while Redis is down. Must be
    /// called inside a tokio runtime.
    pub fn connect_lazy(url: &str) -> RedisResult<RedisGuard> {
        match Topology::parse(url)? {
            Topology::Single(url) => {
                let conn = ConnectionManager::new_lazy_with_config(
                    Client::open(url)?,
                    connection_config(),
                )?;
                Ok(RedisGuard::new(Some(RedisConn::One(conn)), None, false))
            }
            Topology::Cluster(nodes) => {
                let conn = cluster_client(&nodes)?
                    .get_pending_async_connection_with_config(cluster_config());
                Ok(RedisGuard::new(Some(RedisConn::Cluster(conn)), None, true))
            }
            topology @ Topology::Sentinel { .. } => {
                // Down until the probe has asked the sentinels.
                let guard = RedisGuard::new(None, Some(Sentinel::new(&topology)?), false);
                guard.inner.breaker.start_down();
                tokio::spawn(probe(Arc::downgrade(&guard.inner)));
                Ok(guard)
            }
        }
    }

    fn new(conn: Option<RedisConn>, sentinel: Option<Sentinel>, cluster: bool) -> RedisGuard {
        RedisGuard {
            inner: Arc::new(Inner {
                conn: RwLock::new(conn),
                sentinel: sentinel.map(tokio::sync::Mutex::new),
                cluster,
                breaker: Breaker::new(MESSAGES),
            }),
        }
    }

    /// Whether the keys live in a Redis Cluster, where every command and
    /// script must keep to one hash slot.
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster
    }

    /// Runs `command` on the connection, unless Redis is known to be down:
    /// then it fails at once with an unavailable error. A command that fails
    /// for want of Redis marks it down.
    pub async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut RedisConn) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let conn = if self.is_up() {
            self.inner.connection()
        } else {
            None
        };
        let Some(mut conn) = conn else {
            metrics::counter!(name::REDIS_ERRORS, "kind" => "down").increment(1);
            return Err(down());
        };
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
        self.inner.breaker.is_up()
    }

    /// Follows the up/down state, for health reporting and for work to do
    /// once Redis is back.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.inner.breaker.watch()
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
        if !self.inner.breaker.mark_down(error) {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(probe(inner))),
            // Not reachable from async code; without a runtime nothing
            // could probe, so stay up and let the next command find out.
            Err(_) => drop(self.inner.breaker.mark_up()),
        }
    }
}

impl Inner {
    fn connection(&self) -> Option<RedisConn> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Under Sentinel: asks the sentinels for the primary and, when it is
    /// another server than the connection's, connects to it instead.
    async fn follow_primary(&self) -> RedisResult<()> {
        let Some(sentinel) = &self.sentinel else {
            return Ok(());
        };
        let mut sentinel = sentinel.lock().await;
        let address = sentinel.address().await?;
        if sentinel.primary.as_deref() == Some(address.as_str()) {
            return Ok(());
        }
        let conn = sentinel.primary().await?;
        tracing::info!(primary = %address, "Redis Sentinel names a new primary; connected to it");
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Some(conn);
        Ok(())
    }
}

impl Sentinel {
    fn new(topology: &Topology) -> RedisResult<Sentinel> {
        let Topology::Sentinel {
            sentinels,
            service,
            primary,
        } = topology
        else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "not a Sentinel URL",
            )));
        };
        let client = SentinelClient::build(
            sentinels.clone(),
            service.clone(),
            Some(primary.clone()),
            SentinelServerType::Master,
        )?;
        Ok(Sentinel {
            client,
            primary: None,
        })
    }

    /// The address the sentinels give for the primary (which is asked
    /// whether it is one).
    async fn address(&mut self) -> RedisResult<String> {
        let client = self.client.async_get_client().await?;
        Ok(client.get_connection_info().addr().to_string())
    }

    /// A connection to the primary the sentinels name now.
    async fn primary(&mut self) -> RedisResult<RedisConn> {
        let client = self.client.async_get_client().await?;
        let address = client.get_connection_info().addr().to_string();
        let conn = ConnectionManager::new_with_config(client, connection_config()).await?;
        self.primary = Some(address);
        Ok(RedisConn::One(conn))
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

/// Until Redis answers a PING (or the guard is dropped), then marks it up;
/// the first PING at once, then one every [`PROBE_EVERY`].
/// The PING goes through the same connection as the commands, so that its
/// reconnection is what gets checked; under Sentinel, the sentinels are
/// asked for the primary first. A Cluster answers a PING only when every
/// primary does.
async fn probe(inner: Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let pong = tokio::time::timeout(PROBE_TIMEOUT, async {
            inner.follow_primary().await?;
            let Some(mut conn) = inner.connection() else {
                return Err(down());
            };
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await;
        if matches!(pong, Ok(Ok(()))) {
            inner.breaker.mark_up();
            return;
        }
        drop(inner);
        tokio::time::sleep(PROBE_EVERY).await;
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
