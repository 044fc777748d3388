//! Sessions, users' lists of them and session keys in this process.

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use async_trait::async_trait;
use tokio::time::Instant;
use wxlogin_common::clock::Clock;
use wxlogin_provider::SessionSecret;

use super::{MemoryExchanges, lock};
use crate::{
    store::{
        LiveSession, NewSession, Opened, SessionPolicy, SessionRecord, SessionSummary, Sessions,
        StoreError,
    },
    token::Token,
};

/// How often opening a session also sweeps out expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub struct MemorySessions {
    policy: SessionPolicy,
    clock: Clock,
    /// Where a session's sealed outcome is recorded for its code.
    exchanges: Arc<MemoryExchanges>,
    state: Mutex<State>,
}

/// A session, when it ends unless used, and when it was last used (Unix
/// ms).
struct Session {
    record: SessionRecord,
    idle_deadline: Instant,
    last_used_ms: u64,
}

struct State {
    /// By the token's SHA-256.
    sessions: HashMap<String, Session>,
    /// Each user's sessions, by (appid, openid): their tokens' SHA-256.
    /// Entries of sessions that are over go at the sweep, at a listing or
    /// at a revocation.
    by_user: HashMap<(String, String), Vec<String>>,
    /// By (appid, openid): the key and when it is forgotten.
    session_keys: HashMap<(String, String), (SessionSecret, Instant)>,
    last_sweep: Instant,
}

impl State {
    fn sweep_if_due(&mut self, now: Instant) {
        if now.duration_since(self.last_sweep) < SWEEP_EVERY {
            return;
        }
        self.sessions
            .retain(|_, session| session.idle_deadline > now);
        let sessions = &self.sessions;
        self.by_user.retain(|_, digests| {
            digests.retain(|digest| sessions.contains_key(digest));
            !digests.is_empty()
        });
        self.session_keys.retain(|_, (_, deadline)| *deadline > now);
        self.last_sweep = now;
    }
}

fn user(appid: &str, openid: &str) -> (String, String) {
    (appid.to_owned(), openid.to_owned())
}

impl MemorySessions {
    pub fn new(policy: SessionPolicy, clock: Clock, exchanges: Arc<MemoryExchanges>) -> Self {
        MemorySessions {
            policy,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                by_user: HashMap::new(),
                session_keys: HashMap::new(),
                last_sweep: clock.now(),
            }),
            clock,
            exchanges,
        }
    }
}

#[async_trait]
impl Sessions for MemorySessions {
    async fn open(&self, session: NewSession<'_>) -> Result<Opened, StoreError> {
        let (token, record) = (session.token, session.record);
        let now = self.clock.now();
        {
            let mut state = lock(&self.state);
            state.sweep_if_due(now);
            let owner = user(&record.appid, &record.openid);
            state.session_keys.insert(
                owner.clone(),
                (session.session_key.clone(), now + self.policy.max_lifetime),
            );
            let digest = token.digest();
            state.by_user.entry(owner).or_default().push(digest.clone());
            state.sessions.insert(
                digest,
                Session {
                    record: record.clone(),
                    idle_deadline: now + self.policy.idle_ttl,
                    last_used_ms: record.created_at_ms,
                },
            );
        }
        if let Some(outcome) = session.outcome {
            self.exchanges.record(&record.appid, outcome, true);
        }
        // This store keeps no copies of users.
        Ok(Opened::default())
    }

    async fn touch(&self, token: &Token) -> Result<Option<LiveSession>, StoreError> {
        let now = self.clock.now();
        let digest = token.digest();
        let mut state = lock(&self.state);
        let Some(session) = state.sessions.get_mut(&digest) else {
            return Ok(None);
        };
        if session.idle_deadline <= now {
            state.sessions.remove(&digest);
            return Ok(None);
        }
        let now_ms = self.clock.unix_ms();
        let live = LiveSession::at(session.record.clone(), now_ms, self.policy);
        match live {
            Some(_) => {
                session.idle_deadline = now + self.policy.idle_ttl;
                session.last_used_ms = now_ms;
            }
            None => {
                state.sessions.remove(&digest);
            }
        }
        Ok(live)
    }

    async fn remove(&self, token: &Token) -> Result<bool, StoreError> {
        Ok(lock(&self.state).sessions.remove(&token.digest()).is_some())
    }

    async fn list(&self, appid: &str, openid: &str) -> Result<Vec<SessionSummary>, StoreError> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let State {
            sessions, by_user, ..
        } = &mut *state;
        let Some(digests) = by_user.get_mut(&user(appid, openid)) else {
            return Ok(Vec::new());
        };
        digests.retain(|digest| {
            sessions
                .get(digest)
                .is_some_and(|session| session.idle_deadline > now)
        });
        Ok(digests
            .iter()
            .filter_map(|digest| {
                let session = sessions.get(digest)?;
                Some(SessionSummary {
                    digest: digest.clone(),
                    record: session.record.clone(),
                    last_used_ms: session.last_used_ms,
                })
            })
            .collect())
    }

    async fn revoke(&self, appid: &str, openid: &str, id: Option<&str>) -> Result<u32, StoreError> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let State {
            sessions, by_user, ..
        } = &mut *state;
        let owner = user(appid, openid);
        let Some(digests) = by_user.get_mut(&owner) else {
            return Ok(0);
        };
        let mut ended = 0;
        digests.retain(|digest| {
            if id.is_some_and(|id| !digest.starts_with(id)) {
                return true;
            }
            if sessions
                .remove(digest)
                .is_some_and(|session| session.idle_deadline > now)
            {
                ended += 1;
            }
            false
        });
        if digests.is_empty() {
            by_user.remove(&owner);
        }
        Ok(ended)
    }

    async fn forget(&self, appid: &str, openid: &str, _user_id: u64) -> Result<u32, StoreError> {
        // No copies here, so no tombstone either.
        let ended = self.revoke(appid, openid, None).await?;
        lock(&self.state).session_keys.remove(&user(appid, openid));
        Ok(ended)
    }

    async fn session_key(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<SessionSecret>, StoreError> {
        let now = self.clock.now();
        Ok(lock(&self.state)
            .session_keys
            .get(&user(appid, openid))
            .filter(|(_, deadline)| *deadline > now)
            .map(|(key, _)| key.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(clock: &Clock, lifetime: Duration) -> SessionRecord {
        let now = clock.unix_ms();
        SessionRecord {
            appid: "wxa".into(),
            openid: "o1".into(),
            unionid: None,
            created_at_ms: now,
            absolute_expiry_ms: now + u64::try_from(lifetime.as_millis()).unwrap(),
            key_fingerprint: String::new(),
            user_agent: None,
            address_prefix: None,
        }
    }

    fn store(idle: Duration, max: Duration) -> (MemorySessions, Clock) {
        let clock = Clock::following_tokio();
        let exchanges = Arc::new(MemoryExchanges::new(clock.clone()));
        let policy = SessionPolicy {
            idle_ttl: idle,
            max_lifetime: max,
        };
        (MemorySessions::new(policy, clock.clone(), exchanges), clock)
    }

    async fn open(store: &MemorySessions, token: &Token, record: &SessionRecord) {
        store
            .open(NewSession {
                token,
                record,
                session_key: &SessionSecret::new("k".into()),
                outcome: None,
            })
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_lives_while_used_and_ends_on_remove() {
        let (store, clock) = store(Duration::from_secs(60), Duration::from_secs(120));
        let token = Token::generate().unwrap();
        open(&store, &token, &record(&clock, Duration::from_secs(120))).await;
        let live = store.touch(&token).await.unwrap().unwrap();
        assert_eq!(live.record.openid, "o1");
        assert!(live.expires_in <= Duration::from_secs(60));
        assert!(store.remove(&token).await.unwrap());
        assert!(store.touch(&token).await.unwrap().is_none());
        assert!(!store.remove(&token).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_absolute_expiry() {
        let (store, clock) = store(Duration::from_millis(80), Duration::from_secs(10));
        let idle = Token::generate().unwrap();
        open(&store, &idle, &record(&clock, Duration::from_secs(10))).await;
        tokio::time::advance(Duration::from_millis(120)).await;
        assert!(store.touch(&idle).await.unwrap().is_none(), "idle too long");

        let (store, clock) = self::store(Duration::from_millis(80), Duration::from_millis(150));
        let used = Token::generate().unwrap();
        open(&store, &used, &record(&clock, Duration::from_millis(150))).await;
        tokio::time::advance(Duration::from_millis(60)).await;
        assert!(store.touch(&used).await.unwrap().is_some());
        tokio::time::advance(Duration::from_millis(60)).await;
        assert!(
            store.touch(&used).await.unwrap().is_some(),
            "use extends the idle period"
        );
        tokio::time::advance(Duration::from_millis(60)).await;
        assert!(
            store.touch(&used).await.unwrap().is_none(),
            "but not past the absolute lifetime"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_users_sessions_are_listed_and_revoked() {
        let (store, clock) = store(Duration::from_secs(60), Duration::from_secs(120));
        let tokens: Vec<Token> = (0..3).map(|_| Token::generate().unwrap()).collect();
        for token in &tokens {
            open(&store, token, &record(&clock, Duration::from_secs(120))).await;
        }
        let mut other = record(&clock, Duration::from_secs(120));
        other.openid = "o2".into();
        let foreign = Token::generate().unwrap();
        open(&store, &foreign, &other).await;
        assert_eq!(store.list("wxa", "o1").await.unwrap().len(), 3);
        assert!(store.remove(&tokens[0]).await.unwrap());
        assert_eq!(
            store.list("wxa", "o1").await.unwrap().len(),
            2,
            "a logout leaves the list"
        );

        let id = tokens[1].session_id();
        assert_eq!(
            store.revoke("wxa", "o2", Some(&id)).await.unwrap(),
            0,
            "not o2's"
        );
        assert_eq!(store.revoke("wxa", "o1", Some(&id)).await.unwrap(), 1);
        assert!(store.touch(&tokens[1]).await.unwrap().is_none());
        assert!(store.touch(&tokens[2]).await.unwrap().is_some());
        assert_eq!(store.revoke("wxa", "o1", None).await.unwrap(), 1);
        assert!(store.touch(&tokens[2]).await.unwrap().is_none());
        assert!(store.list("wxa", "o1").await.unwrap().is_empty());
        assert!(store.touch(&foreign).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn forgetting_a_user_ends_their_sessions_and_their_session_key() {
        let (store, clock) = store(Duration::from_secs(60), Duration::from_secs(120));
        let token = Token::generate().unwrap();
        open(&store, &token, &record(&clock, Duration::from_secs(120))).await;
        assert!(store.session_key("wxa", "o1").await.unwrap().is_some());
        assert_eq!(store.forget("wxa", "o1", 7).await.unwrap(), 1);
        assert!(store.touch(&token).await.unwrap().is_none());
        assert!(store.session_key("wxa", "o1").await.unwrap().is_none());
    }
}
