//! Sessions and session keys in Redis, shared by every auth instance.
//!
//! Keys (all under the configured prefix). `{u…}` is the user's shard tag
//! and `{a:<appid>}` the app's (see [`super::app_tag`]): Redis Cluster keeps
//! the keys of one tag in one hash slot, so each script and pipeline below
//! touches one slot.
//! - `session:{u…}:<sha256(token) hex>` → the session as JSON, expiring
//!   after the idle TTL; every use moves the expiry (one `GETEX` round trip).
//!   The absolute lifetime is stored inside and checked on every use. The
//!   token carries the shard, so the key is known from the token.
//! - `sessions:{u…}:<appid>:<openid>` → the user's index of sessions: a
//!   sorted set of their tokens' SHA-256, each scored by when the session
//!   was last used (Unix ms, recorded at most once a minute: see
//!   [`LAST_USED_EVERY`]). Every write to it first drops the entries last
//!   used longer ago than the idle TTL (plus twice that minute, for the
//!   coarseness and clock skew): those sessions are surely over. The set
//!   itself expires as long after its latest write, so it never outlives
//!   the user's last session by more than that, and never grows past the
//!   sessions opened within one idle TTL. Logout leaves the entry; the
//!   next listing drops entries whose session is gone.
//! - `session_key:{u…}:<appid>:<openid>` → the user's latest WeChat
//!   session_key, kept as long as a session can live. Nothing outside this
//!   service reads it.
//! - `login:{a:<appid>}:<slot>` → one wx.login code's exchange, shared by every
//!   auth instance: `pending:<owner>` while one instance exchanges it (set
//!   with NX, expiring a little after the exchange must be over), then
//!   `sealed:<base64>`, the login's outcome encrypted under a key derived
//!   from the code, for as long as a code lives. `<slot>` is a SHA-256 of
//!   the code (see [`crate::sealed_outcome`]); neither the code nor the
//!   outcome can be read from the entry.
//! - `deleted:{u…}:<appid>:<openid>` → the id of the user of (appid,
//!   openid) who was deleted, for a day (see
//!   [`user_copy::tombstone_key`]): no copy of that user can be written
//!   meanwhile.
//! - `access_token:<appid>` and `lock:<name>`: the shared access_token and
//!   its refresh lock.
//!
//! On a Redis Cluster, opening a session takes up to three round trips
//! instead of one: the code's slot (the app's tag) and the login journal
//! (its own key) are written after the script on the user's keys.
//!
//! The raw token is never written to Redis, as a key or as a value.
//! Every command goes through the process's [`RedisGuard`], so it fails at
//! once while Redis is known to be down.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::AsyncCommands;
use wxlogin_common::{ExposeSecret, SecretString, redis_guard::RedisGuard, user_copy};
use wxlogin_wechat::SessionKey;

use super::{
    CachedToken, Claim, ExchangeSlot, LAST_USED_EVERY, LiveSession, Opened, SEALED, SealedOutcome,
    SessionRecord, SessionSummary, StoreError, index_keeps, now_unix_ms,
};

/// GETEX the session, then, in the keys it names in its shard
/// (`<ARGV[2]|ARGV[3]><appid>:<openid>`): records its use (ARGV[5], Unix ms)
/// in the user's index (ARGV[3]…) unless the recorded one is less than
/// ARGV[6] ms old, dropping entries older than ARGV[7] ms, and GETs the
/// user's copy (ARGV[2]…). Answers `{}`, or `{session, last used[, copy]}`.
static TOUCH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local body = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
          if not body then return {} end
          local ok, session = pcall(cjson.decode, body)
          if not ok or type(session) ~= 'table' then return {body, '0'} end
          local tail = tostring(session.appid) .. ':' .. tostring(session.openid)
          local index = ARGV[3] .. tail
          local now = tonumber(ARGV[5])
          local seen = tonumber(redis.call('ZSCORE', index, ARGV[4]) or '0')
          if seen < now - tonumber(ARGV[6]) then
            redis.call('ZREMRANGEBYSCORE', index, '-inf', now - tonumber(ARGV[7]))
            redis.call('ZADD', index, 'GT', ARGV[5], ARGV[4])
            redis.call('PEXPIRE', index, ARGV[7])
            seen = now
          end
          local user = redis.call('GET', ARGV[2] .. tail)
          if user then return {body, string.format('%d', seen), user} end
          return {body, string.format('%d', seen)}",
    )
});
/// A user's live sessions from their index (KEYS[1]), after dropping the
/// entries last used before ARGV[2]: `{digest, last used, session, …}`;
/// entries whose session is gone are dropped too. ARGV[1] starts the keys
/// of the shard's sessions.
static LIST: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
          local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
          local found = {}
          for i = 1, #members, 2 do
            local body = redis.call('GET', ARGV[1] .. members[i])
            if body then
              found[#found + 1] = members[i]
              found[#found + 1] = members[i + 1]
              found[#found + 1] = body
            else
              redis.call('ZREM', KEYS[1], members[i])
            end
          end
          return found",
    )
});
/// Ends the sessions in a user's index (KEYS[1]) whose digest starts with
/// ARGV[2] (every one when it is empty): answers how many were live.
static REVOKE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local ended = 0
          for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
            if ARGV[2] == '' or string.sub(member, 1, string.len(ARGV[2])) == ARGV[2] then
              ended = ended + redis.call('DEL', ARGV[1] .. member)
              redis.call('ZREM', KEYS[1], member)
            end
          end
          return ended",
    )
});
/// Forgets a user who is being deleted: ends every session in their index
/// (KEYS[1]), deletes the index, their session_key (KEYS[2]) and their copy
/// (KEYS[3]), and writes the tombstone (KEYS[4]) that keeps user ARGV[2]'s
/// copy from being written again, for ARGV[3] seconds (none for id 0: a
/// deletion completed after its row was gone leaves the tombstone it wrote
/// first). ARGV[1] starts the keys of the shard's sessions. Answers how
/// many sessions were live.
static FORGET: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local ended = 0
          for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
            ended = ended + redis.call('DEL', ARGV[1] .. member)
          end
          redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
          if ARGV[2] ~= '0' then redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[3]) end
          return ended",
    )
});
/// Opens a session (see [`RedisStore::create`]): KEYS are the user's
/// session_key, the session, the user's copy, the user's index of
/// sessions (ARGV[11] the member, ARGV[12] now, ARGV[13] how long entries
/// are kept), then, on one Redis, the code's slot and the login journal; answers `{}` without a copy, else
/// `{copy}`, or `{copy, '1'}` when the copy answers the login and the
/// script journaled it, or `{copy, '2'}` when it answers the login and the
/// caller journals it (no journal key: on a Redis Cluster).
static CREATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{}
          redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
          redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
          redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[12]) - tonumber(ARGV[13]))
          redis.call('ZADD', KEYS[4], ARGV[12], ARGV[11])
          redis.call('PEXPIRE', KEYS[4], ARGV[13])
          if KEYS[5] and ARGV[5] ~= '' then redis.call('SET', KEYS[5], ARGV[5], 'PX', ARGV[6]) end
          local copy = redis.call('GET', KEYS[3])
          if not copy then return {{}} end
          if not answers_login(copy, ARGV[7]) then return {{copy}} end
          if not KEYS[6] then return {{copy, '2'}} end
          redis.call('XADD', KEYS[6], '*', '{}', ARGV[8], '{}', ARGV[9], '{}', ARGV[10])
          return {{copy, '1'}}",
        user_copy::ANSWERS_LOGIN_LUA,
        user_copy::journal_field::APPID,
        user_copy::journal_field::OPENID,
        user_copy::journal_field::AT_MS,
    ))
});

/// Checks the login budgets (KEYS[2..], their arguments after ARGV[3], how
/// many in ARGV[3]), then takes the code's slot (KEYS[1]) unless it holds
/// something: answers `{'refused', wait, position}`, `{'held', value}` or
/// `{'claimed'}`.
static CLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{}
          local n = tonumber(ARGV[3])
          if n > 0 then
            local keys, args = {{}}, {{}}
            for i = 1, n do
              keys[i] = KEYS[1 + i]
              args[2 * i - 1] = ARGV[2 + 2 * i]
              args[2 * i] = ARGV[3 + 2 * i]
            end
            local verdict = gcra(keys, args, 'check')
            if verdict[1] > 0 then return {{'refused', verdict[1], verdict[2]}} end
          end
          local current = redis.call('GET', KEYS[1])
          if current then return {{'held', current}} end
          redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
          return {{'claimed'}}",
        crate::limit::GCRA_LUA
    ))
});

/// Records a code's refusal. It never replaces an outcome already sealed
/// (by an instance whose exchange outlived its claim): that one is answered
/// instead, so every submission keeps getting the same answer.
static RECORD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local current = redis.call('GET', KEYS[1])
          if current and string.sub(current, 1, string.len(ARGV[3])) == ARGV[3] then
            return current
          end
          redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
          return false",
    )
});

/// Deletes a key if it still holds the given value.
static DELETE_IF: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0",
    )
});

use crate::{config::SessionPolicy, limit::BudgetCheck, token::Token};

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[derive(Clone)]
pub struct RedisStore {
    redis: RedisGuard,
    prefix: String,
    policy: SessionPolicy,
    /// The key of the user's copy, by session key, for the sessions this
    /// instance opened or checked lately: a session names one user for
    /// its whole life, so a later check reads the session and the copy with
    /// two plain commands in one round trip, without the script that finds
    /// the copy's key inside Redis. Once a minute a check records the
    /// session's use in the user's index: that one runs the script.
    copy_keys: Arc<quick_cache::sync::Cache<String, Arc<Remembered>>>,
}

/// What an instance remembers of a session it opened or checked.
struct Remembered {
    copy_key: Box<str>,
    /// The session's last use as recorded in the user's index (Unix ms),
    /// by this instance or as it read it: a check within
    /// [`LAST_USED_EVERY`] of it records nothing.
    last_used_ms: AtomicU64,
}

impl Remembered {
    fn new(copy_key: Box<str>, last_used_ms: u64) -> Arc<Remembered> {
        Arc::new(Remembered {
            copy_key,
            last_used_ms: AtomicU64::new(last_used_ms),
        })
    }
}

/// How many sessions' copy keys an instance remembers (about 200 bytes
/// each).
const REMEMBERED_SESSIONS: usize = 32 * 1024;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis. The connection is multiplexed and reconnects by
    /// itself; one per process is enough.
    pub async fn connect(
        url: &SecretString,
        prefix: String,
        policy: SessionPolicy,
    ) -> Result<Self, StoreError> {
        let redis = RedisGuard::connect(url.expose_secret()).await?;
        Ok(RedisStore {
            redis,
            prefix,
            policy,
            copy_keys: Arc::new(quick_cache::sync::Cache::new(REMEMBERED_SESSIONS)),
        })
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connection and its breaker, for health reporting and the rate
    /// limiter's keys (see [`crate::limit`]), which live beside the sessions.
    pub fn guard(&self) -> &RedisGuard {
        &self.redis
    }

    fn session_entry(&self, token: &Token) -> String {
        self.session_entry_of(token.shard(), &token.digest())
    }

    fn session_entry_of(&self, shard: u16, digest: &str) -> String {
        format!("{}{digest}", self.sessions_prefix(shard))
    }

    /// The start of the keys of the sessions in `shard`.
    fn sessions_prefix(&self, shard: u16) -> String {
        format!("{}session:{}:", self.prefix, user_copy::shard_tag(shard))
    }

    /// The start of the keys of the indexes of sessions in `shard`.
    fn index_prefix(&self, shard: u16) -> String {
        format!("{}sessions:{}:", self.prefix, user_copy::shard_tag(shard))
    }

    /// The user's index of sessions (see the module's doc).
    fn index_key(&self, appid: &str, openid: &str) -> String {
        format!(
            "{}{appid}:{openid}",
            self.index_prefix(user_copy::shard(appid, openid))
        )
    }

    fn session_key_key(&self, appid: &str, openid: &str) -> String {
        format!(
            "{}session_key:{}:{appid}:{openid}",
            self.prefix,
            user_copy::shard_tag(user_copy::shard(appid, openid))
        )
    }

    /// Stores the user's latest session_key, opens a session and records
    /// the login's sealed outcome, in one atomic round trip, which also
    /// reads the user service's copy of the user and journals the login
    /// when the copy answers it (see
    /// [`SessionStore::create`](super::SessionStore::create)).
    pub async fn create(
        &self,
        token: &Token,
        record: &SessionRecord,
        session_key: &SessionKey,
        outcome: Option<SealedOutcome<'_>>,
    ) -> Result<Opened, StoreError> {
        let body = serde_json::to_string(record)?;
        let (slot, sealed, slot_ttl) = match outcome {
            Some(outcome) => (
                self.login_key(&record.appid, outcome.slot),
                format!("{SEALED}{}", outcome.sealed),
                millis(outcome.ttl),
            ),
            None => (self.login_key(&record.appid, "-"), String::new(), 1),
        };
        let digest = token.digest();
        let entry = self.session_entry_of(token.shard(), &digest);
        let index = self.index_key(&record.appid, &record.openid);
        let copy_key = user_copy::key(&self.prefix, &record.appid, &record.openid);
        let journal = user_copy::journal_key(&self.prefix);
        // On a Redis Cluster the script keeps to the user's slot; the code's
        // slot and the journal are written on their own.
        let cluster = self.redis.is_cluster();
        let open = self.redis.run(async |conn| {
            let mut invocation = CREATE.key(self.session_key_key(&record.appid, &record.openid));
            invocation.key(&entry).key(&copy_key).key(&index);
            if !cluster {
                invocation.key(&slot).key(&journal);
            }
            invocation
                .arg(session_key.expose())
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
                .arg(millis(index_keeps(self.policy)))
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
        self.copy_keys.insert(
            entry,
            Remembered::new(copy_key.into_boxed_str(), record.created_at_ms),
        );
        let mut found = found.into_iter();
        let copy = found.next();
        let recorded = match found.next().as_deref() {
            Some(b"1") => true,
            Some(b"2") => self.journal(record, &journal).await,
            _ => false,
        };
        Ok(Opened { copy, recorded })
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
                    .arg(user_copy::journal_field::APPID)
                    .arg(&record.appid)
                    .arg(user_copy::journal_field::OPENID)
                    .arg(&record.openid)
                    .arg(user_copy::journal_field::AT_MS)
                    .arg(record.created_at_ms)
                    .query_async(conn)
                    .await
            })
            .await;
        added
            .inspect_err(|error| tracing::debug!(%error, "could not journal the login"))
            .is_ok()
    }

    /// The session `token` names, if it is live; using it starts its idle
    /// period again.
    pub async fn touch(&self, token: &Token) -> Result<Option<LiveSession>, StoreError> {
        let key = self.session_entry(token);
        let ttl = self.policy.idle_ttl.as_secs();
        let now = now_unix_ms();
        let remembered = self.copy_keys.get(&key).filter(|remembered| {
            now.saturating_sub(remembered.last_used_ms.load(Ordering::Relaxed))
                < millis(LAST_USED_EVERY)
        });
        let (body, user, recorded) = match &remembered {
            // One round trip of two plain commands: the session (its idle
            // period restarted) and its user's copy.
            Some(remembered) => {
                let (body, user): (Option<Vec<u8>>, Option<Vec<u8>>) = self
                    .redis
                    .run(async |conn| {
                        redis::pipe()
                            .cmd("GETEX")
                            .arg(&key)
                            .arg("EX")
                            .arg(ttl)
                            .get(&*remembered.copy_key)
                            .query_async(conn)
                            .await
                    })
                    .await?;
                (body, user, None)
            }
            // One round trip: the script finds the copy's and the index's
            // keys in the session, and records the use in the index. (It
            // computes keys inside the script: the user's, which are in the
            // session's hash slot.)
            None => {
                let shard = token.shard();
                let user_prefix = user_copy::key_prefix(&self.prefix, shard);
                let index_prefix = self.index_prefix(shard);
                let digest = token.digest();
                let found: Option<Vec<Vec<u8>>> = self
                    .redis
                    .run(async |conn| {
                        TOUCH
                            .key(&key)
                            .arg(ttl)
                            .arg(&user_prefix)
                            .arg(&index_prefix)
                            .arg(&digest)
                            .arg(now)
                            .arg(millis(LAST_USED_EVERY))
                            .arg(millis(super::index_keeps(self.policy)))
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
                (body, found.next(), Some(last_used))
            }
        };
        let Some(body) = body else {
            self.copy_keys.remove(&key);
            return Ok(None);
        };
        let record: SessionRecord = serde_json::from_slice(&body)?;
        if let Some(last_used) = recorded {
            match self.copy_keys.get(&key) {
                Some(known) => known.last_used_ms.store(last_used, Ordering::Relaxed),
                None => self.copy_keys.insert(
                    key.clone(),
                    Remembered::new(
                        user_copy::key(&self.prefix, &record.appid, &record.openid)
                            .into_boxed_str(),
                        last_used,
                    ),
                ),
            }
        }
        match LiveSession::at(record, now, self.policy) {
            Some(live) => Ok(Some(LiveSession {
                user_copy: user,
                ..live
            })),
            None => {
                self.copy_keys.remove(&key);
                let _: () = self.redis.run(async |conn| conn.del(&key).await).await?;
                Ok(None)
            }
        }
    }

    /// Ends the session; false when there was none. (Its entry in the
    /// user's index goes at the next listing.)
    pub async fn remove(&self, token: &Token) -> Result<bool, StoreError> {
        let key = self.session_entry(token);
        self.copy_keys.remove(&key);
        let removed: u64 = self.redis.run(async |conn| conn.del(&key).await).await?;
        Ok(removed > 0)
    }

    /// The sessions of (appid, openid) that Redis still holds, in one round
    /// trip that also drops the index's entries of sessions that are over.
    pub async fn list(&self, appid: &str, openid: &str) -> Result<Vec<SessionSummary>, StoreError> {
        let index = self.index_key(appid, openid);
        let sessions = self.sessions_prefix(user_copy::shard(appid, openid));
        let kept_since = now_unix_ms().saturating_sub(millis(super::index_keeps(self.policy)));
        let found: Vec<Vec<u8>> = self
            .redis
            .run(async |conn| {
                LIST.key(&index)
                    .arg(&sessions)
                    .arg(kept_since)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        let mut listed = Vec::with_capacity(found.len() / 3);
        for entry in found.chunks_exact(3) {
            let [digest, last_used, body] = entry else {
                continue;
            };
            let record: SessionRecord = match serde_json::from_slice(body) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(%error, "a listed session is not valid JSON; skipped");
                    continue;
                }
            };
            listed.push(SessionSummary {
                digest: String::from_utf8_lossy(digest).into_owned(),
                // Scores are whole milliseconds, which Redis prints as such.
                last_used_ms: std::str::from_utf8(last_used)
                    .ok()
                    .and_then(|score| score.parse().ok())
                    .unwrap_or(record.created_at_ms),
                record,
            });
        }
        Ok(listed)
    }

    /// Ends the session of (appid, openid) whose public id is `id` (every
    /// one without), in one round trip: how many were live.
    pub async fn revoke(
        &self,
        appid: &str,
        openid: &str,
        id: Option<&str>,
    ) -> Result<u32, StoreError> {
        let index = self.index_key(appid, openid);
        let sessions = self.sessions_prefix(user_copy::shard(appid, openid));
        let ended: u32 = self
            .redis
            .run(async |conn| {
                REVOKE
                    .key(&index)
                    .arg(&sessions)
                    .arg(id.unwrap_or(""))
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(ended)
    }

    /// Forgets the user of (appid, openid), whose id is `user_id`, in one
    /// atomic round trip (see [`FORGET`]): how many sessions were live.
    pub async fn forget(&self, appid: &str, openid: &str, user_id: u64) -> Result<u32, StoreError> {
        let shard = user_copy::shard(appid, openid);
        let ended: u32 = self
            .redis
            .run(async |conn| {
                FORGET
                    .key(self.index_key(appid, openid))
                    .key(self.session_key_key(appid, openid))
                    .key(user_copy::key(&self.prefix, appid, openid))
                    .key(user_copy::tombstone_key(&self.prefix, appid, openid))
                    .arg(self.sessions_prefix(shard))
                    .arg(user_id)
                    .arg(user_copy::TOMBSTONE_TTL.as_secs())
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(ended)
    }

    pub async fn session_key(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<SessionKey>, StoreError> {
        let entry = self.session_key_key(appid, openid);
        let key: Option<String> = self.redis.run(async |conn| conn.get(&entry).await).await?;
        Ok(key.map(SessionKey::new))
    }

    fn access_token_key(&self, appid: &str) -> String {
        format!("{}access_token:{appid}", self.prefix)
    }

    pub async fn access_token(&self, appid: &str) -> Result<Option<CachedToken>, StoreError> {
        let key = self.access_token_key(appid);
        let body: Option<String> = self.redis.run(async |conn| conn.get(&key).await).await?;
        Ok(body.map(|body| serde_json::from_str(&body)).transpose()?)
    }

    pub async fn put_access_token(
        &self,
        appid: &str,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        let ttl_ms = token.expires_at_ms.saturating_sub(now_unix_ms()).max(1);
        let key = self.access_token_key(appid);
        let body = serde_json::to_string(token)?;
        let _: () = self
            .redis
            .run(async |conn| conn.pset_ex(&key, &body, ttl_ms).await)
            .await?;
        Ok(())
    }

    pub async fn drop_access_token(&self, appid: &str, token: &str) -> Result<(), StoreError> {
        // Compare and delete in one step: another instance may have cached
        // a fresh token since this one saw the refused one.
        let script = redis::Script::new(
            r"local body = redis.call('GET', KEYS[1])
              if body and cjson.decode(body).token == ARGV[1] then
                return redis.call('DEL', KEYS[1])
              end
              return 0",
        );
        let key = self.access_token_key(appid);
        let _: i64 = self
            .redis
            .run(async |conn| script.key(&key).arg(token).invoke_async(conn).await)
            .await?;
        Ok(())
    }

    fn lock_key(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }

    pub async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.lock_key(name);
        let taken: Option<String> = self
            .redis
            .run(async |conn| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(conn)
                    .await
            })
            .await?;
        Ok(taken.is_some())
    }

    pub async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let key = self.lock_key(name);
        let _: i64 = self
            .redis
            .run(async |conn| DELETE_IF.key(&key).arg(holder).invoke_async(conn).await)
            .await?;
        Ok(())
    }

    fn login_key(&self, appid: &str, slot: &str) -> String {
        format!("{}login:{}:{slot}", self.prefix, super::app_tag(appid))
    }

    /// See [`SessionStore::claim_exchange`](super::SessionStore::claim_exchange).
    pub async fn claim_exchange(
        &self,
        appid: &str,
        slot: &str,
        marker: &str,
        ttl: Duration,
        budgets: Option<&BudgetCheck>,
    ) -> Result<Claim, StoreError> {
        let key = self.login_key(appid, slot);
        let empty = BudgetCheck::default();
        let budgets = budgets.unwrap_or(&empty);
        let answer: Vec<redis::Value> = self
            .redis
            .run(async |conn| {
                let mut invocation = CLAIM.key(&key);
                invocation.key(&budgets.keys);
                invocation
                    .arg(marker)
                    .arg(millis(ttl))
                    .arg(budgets.keys.len())
                    .arg(&budgets.args)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        let text = |value: Option<&redis::Value>| -> Option<String> {
            redis::FromRedisValue::from_redis_value_ref(value?).ok()
        };
        let number = |value: Option<&redis::Value>| -> Option<u64> {
            redis::FromRedisValue::from_redis_value_ref(value?).ok()
        };
        match text(answer.first()).as_deref() {
            Some("claimed") => Ok(Claim::Owned),
            Some("held") => Ok(Claim::Held(ExchangeSlot::parse(
                text(answer.get(1)).unwrap_or_default(),
            ))),
            Some("refused") => Ok(Claim::Refused {
                wait_us: number(answer.get(1)).unwrap_or(1),
                position: number(answer.get(2))
                    .and_then(|position| usize::try_from(position).ok())
                    .unwrap_or(1),
            }),
            _ => Err(StoreError::Redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the code's claim script answered something unexpected",
            )))),
        }
    }

    pub async fn exchange_slot(
        &self,
        appid: &str,
        slot: &str,
    ) -> Result<Option<ExchangeSlot>, StoreError> {
        let key = self.login_key(appid, slot);
        let current: Option<String> = self.redis.run(async |conn| conn.get(&key).await).await?;
        Ok(current.map(ExchangeSlot::parse))
    }

    /// See [`SessionStore::record_refusal`](super::SessionStore::record_refusal).
    pub async fn record_refusal(
        &self,
        appid: &str,
        slot: &str,
        sealed: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let key = self.login_key(appid, slot);
        let value = format!("{SEALED}{sealed}");
        let kept: Option<String> = self
            .redis
            .run(async |conn| {
                RECORD
                    .key(&key)
                    .arg(&value)
                    .arg(millis(ttl))
                    .arg(SEALED)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        Ok(kept.and_then(|kept| match ExchangeSlot::parse(kept) {
            ExchangeSlot::Sealed(sealed) => Some(sealed),
            ExchangeSlot::Pending => None,
        }))
    }

    pub async fn release_exchange(
        &self,
        appid: &str,
        slot: &str,
        marker: &str,
    ) -> Result<(), StoreError> {
        let key = self.login_key(appid, slot);
        let _: i64 = self
            .redis
            .run(async |conn| DELETE_IF.key(&key).arg(marker).invoke_async(conn).await)
            .await?;
        Ok(())
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.redis.ping().await?)
    }
}
