//! Whether the database is known to be down: a circuit breaker. While it
//! is, every request that needs the database fails at once (gRPC
//! Unavailable, a 503 for the client) instead of waiting the pool's acquire
//! timeout for a connection that cannot come; and the health status says
//! NOT_SERVING.
//!
//! [`probe`] owns the state: it asks the database on a connection of its
//! own every [`PROBE_EVERY_UP`] (every [`PROBE_EVERY_DOWN`] while it is
//! down), and at once when a statement fails because its connection failed.
//! Such a failure does not set the state by itself: a restarted MySQL drops
//! every connection but answers new ones, and one dead connection must not
//! fail every request for a probe period. It does make every pooled
//! connection idle since then suspect (pinged before use), so that the
//! others are found dead by a ping rather than by a request. A pool that
//! cannot hand out a connection in time does not wake the probe: that is
//! also what overload looks like.

use std::{fmt::Display, future::Future, time::Duration};

use sea_orm::DatabaseConnection;
use tokio::sync::watch;
use wxlogin_common::{
    breaker::{Breaker, Messages},
    metrics::name,
};

use crate::error::{self, Error};

/// How often the probe asks a database that answers.
pub const PROBE_EVERY_UP: Duration = Duration::from_secs(1);
/// How often the probe asks a database that is down: the first answer ends
/// the outage for clients.
pub const PROBE_EVERY_DOWN: Duration = Duration::from_millis(250);
/// How long the probe waits for a connection and for the answer to a ping;
/// a local MySQL answers in well under a millisecond.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The database's breaker state ([`Breaker`]), and how statements go
/// through it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Availability {
    breaker: Breaker,
}

impl Default for Availability {
    fn default() -> Self {
        Availability::new()
    }
}

impl Availability {
    /// Up, until something says otherwise.
    pub fn new() -> Availability {
        Availability {
            breaker: Breaker::new(Messages {
                down: "the database is down: requests that need it fail at once until it answers",
                up: "the database answers again",
                gauge: None,
            }),
        }
    }

    pub fn is_down(&self) -> bool {
        !self.breaker.is_up()
    }

    /// The database failed to answer; the first failure after it answered
    /// is logged, the others are not.
    pub fn mark_down(&self, why: &dyn Display) {
        self.breaker.mark_down(why);
    }

    /// A statement's connection failed: pooled connections idle since now
    /// are suspect, and the probe checks the database at once.
    pub fn suspect(&self) {
        self.breaker.suspect();
    }

    /// The database answered.
    pub fn mark_up(&self) {
        self.breaker.mark_up();
    }

    /// Changes of the state (`true`: up), for the health service.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.breaker.watch()
    }

    /// Whether a pooled connection idle for `idle_for` has been idle since
    /// before the database was last seen down: it may have been cut, and
    /// is worth a ping before it carries a request.
    pub fn idle_across_an_outage(&self, idle_for: Duration) -> bool {
        self.breaker.idle_across_an_outage(idle_for)
    }

    /// Runs `statement`, unless the database is known down; gives up on it
    /// as soon as the database becomes known down (a request waiting for a
    /// pool connection would otherwise wait the whole acquire timeout). A
    /// statement that fails because its connection failed makes the probe
    /// check at once.
    pub async fn guard<T>(
        &self,
        statement: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut up = self.watch();
        if !*up.borrow_and_update() {
            return Err(refused());
        }
        let result = tokio::select! {
            result = statement => result,
            _ = up.wait_for(|up| !*up) => return Err(refused()),
        };
        if let Err(error) = &result {
            count(error);
        }
        if let Err(Error::DatabaseUnavailable(cause)) = &result
            && error::is_connection_failure(cause)
        {
            tracing::debug!(error = %error::report(cause), "a statement's connection failed");
            self.suspect();
        }
        result
    }
}

/// A statement refused because the database is known down, counted.
fn refused() -> Error {
    count(&Error::DatabaseDown);
    Error::DatabaseDown
}

/// Counts a failed statement by kind (`wxlogin_db_errors_total`); what is
/// not the database's failure (a row not found) is not counted.
fn count(error: &Error) {
    let kind = match error {
        Error::DatabaseDown => "down",
        Error::DatabaseUnavailable(_) => "unavailable",
        Error::Database(_) => "other",
        _ => return,
    };
    metrics::counter!(name::DB_ERRORS, "kind" => kind).increment(1);
}

/// Samples the pool behind `db` every second into the gauges of
/// `wxlogin_db_pool_connections` and `wxlogin_db_pool_max_connections`, for
/// as long as the service runs.
pub async fn sample_pool(db: DatabaseConnection) {
    let mut every = tokio::time::interval(POOL_SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (in_use, idle, max) = match db.get_database_backend() {
            sea_orm::DbBackend::Sqlite => pool_state(db.get_sqlite_connection_pool()),
            _ => pool_state(db.get_mysql_connection_pool()),
        };
        let connections = name::DB_POOL_CONNECTIONS;
        metrics::gauge!(connections, "state" => "in_use").set(f64::from(in_use));
        metrics::gauge!(connections, "state" => "idle").set(f64::from(idle));
        metrics::gauge!(name::DB_POOL_MAX).set(f64::from(max));
    }
}

/// How often [`sample_pool`] looks.
const POOL_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The pool's connections in use, its idle ones, and its most.
fn pool_state<DB: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<DB>) -> (u32, u32, u32) {
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    (
        pool.size().saturating_sub(idle),
        idle,
        pool.options().get_max_connections(),
    )
}

/// Asks the database on `db` (a pool of its own, so that a busy service pool
/// delays no answer) whether it answers, for as long as the service runs,
/// and keeps `availability` in step.
pub async fn probe(db: DatabaseConnection, availability: Availability) {
    loop {
        let mut answer = ping(&db).await;
        // The probe's own connection may be one that MySQL or the network
        // cut while the database answers new ones: a new one decides. (A
        // timeout already took its time and is not tried again.)
        if let Err(Some(_)) = answer {
            answer = ping(&db).await;
        }
        match answer {
            Ok(()) => availability.mark_up(),
            Err(Some(cause)) => availability.mark_down(&error::report(&cause)),
            Err(None) => availability.mark_down(&format_args!(
                "no answer within {} ms",
                PROBE_TIMEOUT.as_millis()
            )),
        }
        let every = if availability.is_down() {
            PROBE_EVERY_DOWN
        } else {
            PROBE_EVERY_UP
        };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = availability.breaker.suspected() => {}
        }
    }
}

/// One ping, within [`PROBE_TIMEOUT`]; `Err(None)` when it timed out.
async fn ping(db: &DatabaseConnection) -> Result<(), Option<sea_orm::DbErr>> {
    match tokio::time::timeout(PROBE_TIMEOUT, db.ping()).await {
        Ok(answer) => answer.map_err(Some),
        Err(_) => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::DbErr;

    fn connection_failure() -> Error {
        Error::from(DbErr::Conn(sea_orm::RuntimeErr::Internal(
            "connection reset".into(),
        )))
    }

    #[tokio::test]
    async fn while_down_a_statement_is_not_even_started() {
        let availability = Availability::new();
        availability.mark_down(&"test");
        let mut started = false;

        let result = availability
            .guard(async {
                started = true;
                Ok(())
            })
            .await;

        assert!(matches!(result, Err(Error::DatabaseDown)));
        assert!(!started);
    }

    #[tokio::test]
    async fn a_connection_failure_makes_idle_connections_suspect_and_wakes_the_probe() {
        let availability = Availability::new();

        let result: Result<(), Error> = availability
            .guard(async { Err(connection_failure()) })
            .await;

        assert!(matches!(result, Err(Error::DatabaseUnavailable(_))));
        assert!(!availability.is_down(), "only the probe decides");
        assert!(availability.idle_across_an_outage(Duration::from_secs(60)));
        let woken =
            tokio::time::timeout(Duration::from_secs(1), availability.breaker.suspected()).await;
        assert!(woken.is_ok());
    }

    #[test]
    fn the_probe_marks_it_down_and_up() {
        let availability = Availability::new();

        availability.mark_down(&"probe");
        assert!(availability.is_down());
        availability.mark_up();
        assert!(!availability.is_down());
    }

    #[tokio::test]
    async fn other_failures_suspect_nothing() {
        let availability = Availability::new();

        let result: Result<(), Error> = availability
            .guard(async {
                Err(Error::from(DbErr::ConnectionAcquire(
                    sea_orm::ConnAcquireErr::Timeout,
                )))
            })
            .await;

        assert!(result.is_err());
        assert!(!availability.idle_across_an_outage(Duration::from_secs(60)));
    }

    #[tokio::test]
    async fn a_waiting_statement_gives_up_when_the_database_is_seen_down() {
        let availability = Availability::new();
        let waiting = availability.guard(std::future::pending::<Result<(), Error>>());
        let other = availability.clone();

        let (result, ()) = tokio::join!(waiting, async move { other.mark_down(&"probe") });

        assert!(matches!(result, Err(Error::DatabaseDown)));
    }
}
