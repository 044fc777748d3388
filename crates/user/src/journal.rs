//! Records the logins that auth answered from a user's copy without asking
//! this service (see `wxlogin_userdata::copy`): auth appends each to a
//! Redis stream in the round trip that opens its session, and every user
//! service instance reads the stream through one consumer group, tallies a
//! batch by user and stores it in one statement
//! ([`UserRepo::record_logins`]).
//!
//! An entry is acknowledged (and deleted) only after its batch is stored:
//! while MySQL is down the entries wait in Redis, and are stored when it is
//! back. An instance that dies holding a batch leaves it pending; another
//! instance claims it once it has been idle for [`ORPHAN_AFTER`]. Delivery
//! is at least once: a crash between the statement and the acknowledgement
//! stores that batch's counts twice (`last_login_at` is unaffected).

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use redis::{
    Value,
    streams::{StreamAutoClaimReply, StreamId, StreamReadReply},
};
use tokio::sync::watch;
use wxlogin_redis::{
    RedisGuard,
    keys::{JOURNAL_GROUP, Keyspace, journal_field},
};

use crate::repo::{LoginTally, UserRepo};

/// The most entries one read takes.
const BATCH: usize = 1000;
/// How long the reader waits when the journal had nothing new.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How long the reader waits after a failure (Redis or MySQL).
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long an entry delivered to an instance stays its own before another
/// may take it over: a batch is stored well within it, or its instance died.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(30);
/// How often the reader looks for orphaned entries.
const CLAIM_EVERY: Duration = Duration::from_secs(10);

/// One instance's reader of the journal.
pub struct Journal {
    redis: RedisGuard,
    key: String,
    consumer: String,
    repo: UserRepo,
}

impl Journal {
    pub fn new(redis: RedisGuard, prefix: &str, repo: UserRepo) -> Journal {
        Journal {
            redis,
            key: Keyspace::new(prefix).journal(),
            consumer: format!("user-{:016x}", rand::random::<u64>()),
            repo,
        }
    }

    /// Stores journaled logins until `stop` turns true (or its sender is
    /// dropped); the batch in hand when it does is finished first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        // Entries delivered to this consumer and not yet stored: none for a
        // new consumer, but every failure leaves some.
        let mut pending = false;
        let mut last_claim = tokio::time::Instant::now();
        while !*stop.borrow() {
            let wait = match self.step(&mut pending, &mut last_claim).await {
                Ok(true) => continue,
                Ok(false) => POLL_EVERY,
                Err(error) => {
                    tracing::debug!(%error, "could not record journaled logins; retrying");
                    pending = true;
                    RETRY_EVERY
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // The service is gone without saying so: so is the reader.
                changed = stop.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Stores one batch; `Ok(true)` when there may be more at once.
    async fn step(
        &self,
        pending: &mut bool,
        last_claim: &mut tokio::time::Instant,
    ) -> Result<bool, StepError> {
        if *pending {
            let entries = self.read("0").await?;
            if entries.is_empty() {
                *pending = false;
            } else {
                // Refresh the claim, so that no other instance takes these
                // over while this one retries them.
                self.claim_again(&entries).await?;
                self.store(&entries).await?;
                return Ok(true);
            }
        }
        let entries = self.read(">").await?;
        if !entries.is_empty() {
            *pending = true;
            self.store(&entries).await?;
            *pending = false;
            return Ok(entries.len() == BATCH);
        }
        if last_claim.elapsed() >= CLAIM_EVERY {
            *last_claim = tokio::time::Instant::now();
            if self.claim_orphans().await? {
                *pending = true;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Entries of the group: new ones (`>`) or this consumer's own (`0`).
    async fn read(&self, from: &str) -> Result<Vec<StreamId>, StepError> {
        let read = self.read_once(from).await;
        let reply = match read {
            Err(error) if error.code() == Some("NOGROUP") => {
                self.create_group().await?;
                self.read_once(from).await?
            }
            other => other?,
        };
        Ok(reply.keys.into_iter().flat_map(|key| key.ids).collect())
    }

    async fn read_once(&self, from: &str) -> redis::RedisResult<StreamReadReply> {
        self.redis
            .run(async |conn| {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(JOURNAL_GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("STREAMS")
                    .arg(&self.key)
                    .arg(from)
                    .query_async(conn)
                    .await
            })
            .await
    }

    /// The group reads the journal from its start: entries appended before
    /// any instance created it are stored too.
    async fn create_group(&self) -> redis::RedisResult<()> {
        let created: redis::RedisResult<()> = self
            .redis
            .run(async |conn| {
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&self.key)
                    .arg(JOURNAL_GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(conn)
                    .await
            })
            .await;
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => Err(error),
            _ => Ok(()),
        }
    }

    async fn claim_again(&self, entries: &[StreamId]) -> redis::RedisResult<()> {
        self.redis
            .run(async |conn| {
                redis::cmd("XCLAIM")
                    .arg(&self.key)
                    .arg(JOURNAL_GROUP)
                    .arg(&self.consumer)
                    .arg(0)
                    .arg(ids(entries))
                    .arg("JUSTID")
                    .query_async::<Value>(conn)
                    .await
            })
            .await
            .map(drop)
    }

    /// Takes over entries that other instances left idle for
    /// [`ORPHAN_AFTER`]; whether there were any.
    async fn claim_orphans(&self) -> Result<bool, StepError> {
        let reply: StreamAutoClaimReply = self
            .redis
            .run(async |conn| {
                redis::cmd("XAUTOCLAIM")
                    .arg(&self.key)
                    .arg(JOURNAL_GROUP)
                    .arg(&self.consumer)
                    .arg(u64::try_from(ORPHAN_AFTER.as_millis()).unwrap_or(u64::MAX))
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("JUSTID")
                    .query_async(conn)
                    .await
            })
            .await?;
        if !reply.claimed.is_empty() {
            tracing::info!(
                entries = reply.claimed.len(),
                "took over journaled logins another user service instance left"
            );
        }
        Ok(!reply.claimed.is_empty())
    }

    /// Stores the entries' logins, then acknowledges and deletes them.
    async fn store(&self, entries: &[StreamId]) -> Result<(), StepError> {
        let tallies = tally(entries);
        self.repo.record_logins(&tallies).await?;
        let ids = ids(entries);
        self.redis
            .run(async |conn| {
                redis::pipe()
                    .atomic()
                    .cmd("XACK")
                    .arg(&self.key)
                    .arg(JOURNAL_GROUP)
                    .arg(&ids)
                    .ignore()
                    .cmd("XDEL")
                    .arg(&self.key)
                    .arg(&ids)
                    .ignore()
                    .query_async::<()>(conn)
                    .await
            })
            .await?;
        Ok(())
    }
}

fn ids(entries: &[StreamId]) -> Vec<&str> {
    entries.iter().map(|entry| entry.id.as_str()).collect()
}

/// The entries' logins by user. An entry that does not parse (not written
/// by this build's auth) is skipped, and so dropped with its batch.
fn tally(entries: &[StreamId]) -> Vec<LoginTally> {
    let mut tallies: HashMap<(String, String), LoginTally> = HashMap::new();
    for entry in entries {
        let (Some(appid), Some(openid), Some(at_ms)) = (
            entry.get::<String>(journal_field::APPID),
            entry.get::<String>(journal_field::OPENID),
            entry.get::<i64>(journal_field::AT_MS),
        ) else {
            tracing::warn!(id = %entry.id, "a journaled login does not parse; dropping it");
            continue;
        };
        let Some(at) = DateTime::<Utc>::from_timestamp_millis(at_ms) else {
            tracing::warn!(id = %entry.id, "a journaled login has no valid time; dropping it");
            continue;
        };
        tallies
            .entry((appid.clone(), openid.clone()))
            .and_modify(|tally| {
                tally.count += 1;
                tally.last_at = tally.last_at.max(at);
            })
            .or_insert(LoginTally {
                appid,
                openid,
                count: 1,
                last_at: at,
            });
    }
    tallies.into_values().collect()
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("mysql: {0}")]
    Database(#[from] crate::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, appid: &str, openid: &str, at_ms: &str) -> StreamId {
        let mut entry = StreamId {
            id: id.into(),
            ..StreamId::default()
        };
        for (field, value) in [
            (journal_field::APPID, appid),
            (journal_field::OPENID, openid),
            (journal_field::AT_MS, at_ms),
        ] {
            entry
                .map
                .insert(field.into(), Value::BulkString(value.as_bytes().to_vec()));
        }
        entry
    }

    #[test]
    fn a_batch_is_tallied_by_user() {
        let mut tallies = tally(&[
            entry("1-0", "wxa", "o1", "1000"),
            entry("2-0", "wxa", "o2", "1500"),
            entry("3-0", "wxa", "o1", "3000"),
            entry("4-0", "wxa", "o1", "2000"),
            entry("5-0", "wxa", "o3", "not a time"),
        ]);
        tallies.sort_by(|a, b| a.openid.cmp(&b.openid));

        let at = |ms| DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
        assert_eq!(
            tallies,
            vec![
                LoginTally {
                    appid: "wxa".into(),
                    openid: "o1".into(),
                    count: 3,
                    last_at: at(3000),
                },
                LoginTally {
                    appid: "wxa".into(),
                    openid: "o2".into(),
                    count: 1,
                    last_at: at(1500),
                },
            ]
        );
    }
}
