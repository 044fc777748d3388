//! Sessions, users' indexes of sessions and session keys in Redis (the key
//! formats are [`Keyspace`]'s):
//!
//! - a session is its record as JSON, expiring after the idle TTL; every
//!   use moves the expiry (`GETEX`). The absolute lifetime is stored inside
//!   and checked on every use. The token carries the user's shard, so the
//!   session's key is known from the token.
//! - a user's index of sessions is a sorted set of their tokens' SHA-256,
//!   each scored by when the session was last used (Unix ms, recorded at
//!   most once a [`LAST_USED_EVERY`]). Every write to it first drops the
//!   entries last used longer ago than [`SessionPolicy::index_keeps`]:
//!   those sessions are surely over. The set itself expires as long after
//!   its latest write, so it never outlives the user's last session by
//!   more than that. Logout leaves the entry; the next listing drops
//!   entries whose session is gone.
//! - the user's latest WeChat session_key, kept as long as a session can
//!   live. Nothing outside this service reads it.
//!
//! A check needs the keys of the session's user (their index and the user
//! service's copy), which only the session names: a session this instance
//! has not seen is read first, then used with its user's keys (two round
//! trips); one it opened or checked lately is used in one.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use async_trait::async_trait;
use redis::AsyncCommands;
use wxlogin_common::clock::Clock;
use wxlogin_provider::SessionSecret;
use wxlogin_redis::{
    Keyspace, RedisGuard,
    keys::{TOMBSTONE_TTL, journal_field, shard},
    scripts::{END_SESSIONS, FORGET_USER, OPEN_SESSION, READ_SESSIONS, TOUCH_SESSION},
};

use super::millis;
use crate::{
    store::{
        ExchangeSlot, LAST_USED_EVERY, LiveSession, NewSession, Opened, SessionPolicy,
        SessionRecord, SessionSummary, Sessions, StoreError,
    },
    token::Token,
};

/// How many sessions' keys an instance remembers (about 200 bytes each).
const REMEMBERED_SESSIONS: usize = 32 * 1024;

pub struct RedisSessions {
    redis: RedisGuard,
    keys: Keyspace,
    policy: SessionPolicy,
    clock: Clock,
    /// The keys of the session's user, by session key, for the sessions
    /// this instance opened or checked lately: a session names one user
    /// for its whole life, so a later check reads the session and the copy
    /// with two plain commands in one round trip. Once a minute a check
    /// records the session's use in the user's index: that one runs the
    /// script.
    remembered: quick_cache::sync::Cache<String, Arc<Remembered>>,
}

/// What an instance remembers of a session it opened or checked.
struct Remembered {
    index_key: Box<str>,
    copy_key: Box<str>,
    /// The session's last use as recorded in the user's index (Unix ms),
    /// by this instance or as it read it: a check within
    /// [`LAST_USED_EVERY`] of it records nothing.
    last_used_ms: AtomicU64,
}

impl Remembered {
    fn new(keys: &Keyspace, appid: &str, openid: &str, last_used_ms: u64) -> Arc<Remembered> {
        Arc::new(Remembered {
            index_key: keys.session_index(appid, openid).into_boxed_str(),
            copy_key: keys.user_copy(appid, openid).into_boxed_str(),
            last_used_ms: AtomicU64::new(last_used_ms),
        })
    }
}

/// A user's sessions about to end: the user's index, the sessions' keys
/// and their members in the index, in the same order.
struct Ending {
    index: String,
    sessions: Vec<String>,
    digests: Vec<String>,
}

impl RedisSessions {
    pub fn new(redis: RedisGuard, keys: Keyspace, policy: SessionPolicy, clock: Clock) -> Self {
        RedisSessions {
            redis,
            keys,
            policy,
            clock,
            remembered: quick_cache::sync::Cache::new(REMEMBERED_SESSIONS),
        }
    }

    fn session_key_of(&self, token: &Token) -> String {
        self.keys.session(token.shard(), &token.digest())
    }

    /// Journals a login that the user's copy answered (on a Redis Cluster,
    /// beside the script that opened its session); false when it could
    /// not, and the caller has the user service record the login instead.
    async fn journal(&self, record: &SessionRecord, journal: &str) -> bool {
        let added: Result<String, _> = self
            .redis
            .run(async |conn| {
                redis::cmd("XADD")
                    .arg(journal)
                    .arg("*")
                    .arg(journal_field::APPID)
                    .arg(&record.appid)
                    .arg(journal_field::OPENID)
                    .arg(&record.openid)
                    .arg(journal_field::AT_MS)
                    .arg(record.created_at_ms)
                    .query_async(conn)
                    .await
            })
            .await;
        added
            .inspect_err(|error| tracing::debug!(%error, "could not journal the login"))
            .is_ok()
    }

    /// Uses the session at `key`, whose user's keys are `remembered`, in
    /// one round trip: the script when its use is due for recording in the
    /// index (then `Some(last used)` comes back), else two plain commands.
    async fn touch_known(
        &self,
        key: &str,
        digest: &str,
        remembered: &Remembered,
        now: u64,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>, Option<u64>), StoreError> {
        let ttl = self.policy.idle_ttl.as_secs();
        let due = now.saturating_sub(remembered.last_used_ms.load(Ordering::Relaxed))
            >= millis(LAST_USED_EVERY);
        if !due {
            let (body, user): (Option<Vec<u8>>, Option<Vec<u8>>) = self
                .redis
                .run(async |conn| {
                    redis::pipe()
                        .cmd("GETEX")
                        .arg(key)
                        .arg("EX")
                        .arg(ttl)
                        .get(&*remembered.copy_key)
                        .query_async(conn)
                        .await
                })
                .await?;
            return Ok((body, user, None));
        }
        let found: Option<Vec<Vec<u8>>> = self
            .redis
            .run(async |conn| {
                TOUCH_SESSION
                    .key(key)
                    .key(&*remembered.index_key)
                    .key(&*remembered.copy_key)
                    .arg(ttl)
                    .arg(digest)
                    .arg(now)
                    .arg(millis(LAST_USED_EVERY))
                    .arg(millis(self.policy.index_keeps()))
                    .invoke_async(conn)
                    .await
            })
            .await?;
        let mut found = found.unwrap_or_default().into_iter();
        let body = found.next();
        let last_used = found
            .next()
            .and_then(|seen| std::str::from_utf8(&seen).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        Ok((body, found.next(), Some(last_used)))
    }

    /// The sessions of (appid, openid) that the index lists, whose public
    /// id is `id` (all without), about to end: this instance forgets their
    /// users' keys.
    async fn ending(
        &self,
        appid: &str,
        openid: &str,
        id: Option<&str>,
    ) -> Result<Ending, StoreError> {
        let index = self.keys.session_index(appid, openid);
        let shard = shard(appid, openid);
        let digests: Vec<String> = self
            .members(&index, None)
            .await?
            .into_iter()
            .map(|(digest, _)| digest)
            .filter(|digest| id.is_none_or(|id| digest.starts_with(id)))
            .collect();
        let sessions: Vec<String> = digests
            .iter()
            .map(|digest| self.keys.session(shard, digest))
            .collect();
        for key in &sessions {
            self.remembered.remove(key);
        }
        Ok(Ending {
            index,
            sessions,
            digests,
        })
    }

    /// The index's members (token digests), after dropping the entries
    /// last used before `kept_since` (Unix ms) when given.
    async fn members(
        &self,
        index: &str,
        kept_since: Option<u64>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let (members,): (Vec<(String, u64)>,) = self
            .redis
            .run(async |conn| {
                let mut pipe = redis::pipe();
                if let Some(kept_since) = kept_since {
                    pipe.cmd("ZREMRANGEBYSCORE")
                        .arg(index)
                        .arg("-inf")
                        .arg(kept_since)
                        .ignore();
                }
                pipe.cmd("ZRANGE")
                    .arg(index)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(conn)
                    .await
            })
            .await?;
        Ok(members)
    }
}

#[async_trait]
impl Sessions for RedisSessions {
    async fn open(&self, session: NewSession<'_>) -> Result<Opened, StoreError> {
        let (token, record) = (session.token, session.record);
        let body = serde_json::to_string(record)?;
        let (slot, sealed, slot_ttl) = match session.outcome {
            Some(outcome) => (
                self.keys.login_slot(&record.appid, outcome.slot),
                ExchangeSlot::sealed_value(outcome.sealed),
                millis(outcome.ttl),
            ),
            None => (self.keys.login_slot(&record.appid, "-"), String::new(), 1),
        };
        let digest = token.digest();
        let entry = self.keys.session(token.shard(), &digest);
        let remembered = Remembered::new(
            &self.keys,
            &record.appid,
            &record.openid,
            record.created_at_ms,
        );
        let journal = self.keys.journal();
        // On a Redis Cluster the script keeps to the user's slot; the code's
        // slot and the journal are written on their own.
        let cluster = self.redis.is_cluster();
        let open = self.redis.run(async |conn| {
            let mut invocation =
                OPEN_SESSION.key(self.keys.session_key(&record.appid, &record.openid));
            invocation
                .key(&entry)
                .key(&*remembered.copy_key)
                .key(&*remembered.index_key);
            if !cluster {
                invocation.key(&slot).key(&journal);
            }
            invocation
                .arg(session.session_key.expose())
                .arg(self.policy.max_lifetime.as_secs())
                .arg(&body)
                .arg(self.policy.idle_ttl.as_secs())
                .arg(&sealed)
                .arg(slot_ttl)
                .arg(record.unionid.as_deref().unwrap_or(""))
                .arg(&record.appid)
                .arg(&record.openid)
                .arg(record.created_at_ms)
                .arg(&digest)
                .arg(record.created_at_ms)
                .arg(millis(self.policy.index_keeps()))
                .invoke_async::<Vec<Vec<u8>>>(conn)
                .await
        });
        let found = open.await?;
        // Only once the session is open: an outcome recorded for a session
        // that failed to open would hand later submissions of the code a
        // dead token.
        if cluster && !sealed.is_empty() {
            let recorded = self
                .redis
                .run(async |conn| conn.pset_ex::<_, _, ()>(&slot, &sealed, slot_ttl).await)
                .await;
            if let Err(error) = recorded {
                // The session is open; only other submissions of the code
                // miss its answer.
                tracing::warn!(%error, "could not record the login's sealed outcome");
            }
        }
        self.remembered.insert(entry, remembered);
        let mut found = found.into_iter();
        let copy = found.next();
        let recorded = match found.next().as_deref() {
            Some(b"1") => true,
            Some(b"2") => self.journal(record, &journal).await,
            _ => false,
        };
        Ok(Opened { copy, recorded })
    }

    async fn touch(&self, token: &Token) -> Result<Option<LiveSession>, StoreError> {
        let key = self.session_key_of(token);
        let now = self.clock.unix_ms();
        let digest = token.digest();
        let remembered = match self.remembered.get(&key) {
            Some(remembered) => remembered,
            None => {
                // A session this instance has not seen: its record names
                // its user's keys.
                let ttl = self.policy.idle_ttl.as_secs();
                let body: Option<Vec<u8>> = self
                    .redis
                    .run(async |conn| {
                        redis::cmd("GETEX")
                            .arg(&key)
                            .arg("EX")
                            .arg(ttl)
                            .query_async(conn)
                            .await
                    })
                    .await?;
                let Some(body) = body else {
                    return Ok(None);
                };
                let record: SessionRecord = serde_json::from_slice(&body)?;
                // Recorded as never used, so that this use is.
                Remembered::new(&self.keys, &record.appid, &record.openid, 0)
            }
        };
        let (body, user, recorded) = self.touch_known(&key, &digest, &remembered, now).await?;
        let Some(body) = body else {
            self.remembered.remove(&key);
            return Ok(None);
        };
        let record: SessionRecord = serde_json::from_slice(&body)?;
        if let Some(last_used) = recorded {
            remembered.last_used_ms.store(last_used, Ordering::Relaxed);
            if self.remembered.get(&key).is_none() {
                self.remembered.insert(key.clone(), remembered);
            }
        }
        match LiveSession::at(record, now, self.policy) {
            Some(live) => Ok(Some(LiveSession {
                user_copy: user,
                ..live
            })),
            None => {
                self.remembered.remove(&key);
                let _: () = self.redis.run(async |conn| conn.del(&key).await).await?;
                Ok(None)
            }
        }
    }

    async fn remove(&self, token: &Token) -> Result<bool, StoreError> {
        let key = self.session_key_of(token);
        self.remembered.remove(&key);
        let removed: u64 = self.redis.run(async |conn| conn.del(&key).await).await?;
        Ok(removed > 0)
    }

    async fn list(&self, appid: &str, openid: &str) -> Result<Vec<SessionSummary>, StoreError> {
        let index = self.keys.session_index(appid, openid);
        let kept_since = self
            .clock
            .unix_ms()
            .saturating_sub(millis(self.policy.index_keeps()));
        let members = self.members(&index, Some(kept_since)).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let shard = shard(appid, openid);
        let found: Vec<(String, Vec<u8>)> = self
            .redis
            .run(async |conn| {
                let mut invocation = READ_SESSIONS.key(&index);
                for (digest, _) in &members {
                    invocation.key(self.keys.session(shard, digest));
                }
                for (digest, _) in &members {
                    invocation.arg(digest);
                }
                invocation.invoke_async(conn).await
            })
            .await?;
        let mut listed = Vec::with_capacity(found.len());
        for (digest, body) in found {
            let record: SessionRecord = match serde_json::from_slice(&body) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(%error, "a listed session is not valid JSON; skipped");
                    continue;
                }
            };
            let last_used_ms = members
                .iter()
                .find(|(member, _)| *member == digest)
                .map_or(record.created_at_ms, |(_, score)| *score);
            listed.push(SessionSummary {
                digest,
                last_used_ms,
                record,
            });
        }
        Ok(listed)
    }

    async fn revoke(&self, appid: &str, openid: &str, id: Option<&str>) -> Result<u32, StoreError> {
        let ending = self.ending(appid, openid, id).await?;
        if ending.digests.is_empty() {
            return Ok(0);
        }
        let ended: u32 = self
            .redis
            .run(async |conn| {
                END_SESSIONS
                    .key(&ending.index)
                    .key(&ending.sessions)
                    .arg(&ending.digests)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(ended)
    }

    async fn forget(&self, appid: &str, openid: &str, user_id: u64) -> Result<u32, StoreError> {
        let ending = self.ending(appid, openid, None).await?;
        let ended: u32 = self
            .redis
            .run(async |conn| {
                FORGET_USER
                    .key(&ending.index)
                    .key(self.keys.session_key(appid, openid))
                    .key(self.keys.user_copy(appid, openid))
                    .key(self.keys.tombstone(appid, openid))
                    .key(&ending.sessions)
                    .arg(user_id)
                    .arg(TOMBSTONE_TTL.as_secs())
                    .arg(&ending.digests)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(ended)
    }

    async fn session_key(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<SessionSecret>, StoreError> {
        let entry = self.keys.session_key(appid, openid);
        let key: Option<String> = self.redis.run(async |conn| conn.get(&entry).await).await?;
        Ok(key.map(SessionSecret::new))
    }
}
