//! The in-process session store of the single-process setup: the same
//! semantics as the Redis store, for one process only. Entries expire by the
//! same rules; expired ones are swept now and then as new sessions arrive.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use wxlogin_wechat::SessionKey;

use super::{
    CachedToken, ExchangeSlot, LiveSession, SEALED, SessionRecord, SessionSummary, now_unix_ms,
};
use crate::{config::SessionPolicy, token::Token};

/// How often creating a session or claiming a code's exchange also sweeps
/// out expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    policy: SessionPolicy,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

struct Entry<T> {
    value: T,
    idle_deadline: Instant,
}

/// A session and when it was last used (Unix ms).
struct Session {
    entry: Entry<SessionRecord>,
    last_used_ms: u64,
}

struct State {
    /// By the token's SHA-256.
    sessions: HashMap<String, Session>,
    /// Each user's sessions, by (appid, openid): their tokens' SHA-256.
    /// Entries of sessions that are over go at the sweep, at a listing or
    /// at a revocation.
    by_user: HashMap<(String, String), Vec<String>>,
    /// By (appid, openid).
    session_keys: HashMap<(String, String), Entry<SessionKey>>,
    /// By appid.
    access_tokens: HashMap<String, CachedToken>,
    /// By name: holder and expiry.
    locks: HashMap<String, (String, Instant)>,
    /// Codes' exchanges, by (appid, slot): the value as Redis would hold
    /// it, and its expiry.
    exchanges: HashMap<(String, String), (String, Instant)>,
    last_sweep: Instant,
}

impl State {
    fn sweep_if_due(&mut self, now: Instant) {
        if now.duration_since(self.last_sweep) < SWEEP_EVERY {
            return;
        }
        self.sessions
            .retain(|_, session| session.entry.idle_deadline > now);
        let sessions = &self.sessions;
        self.by_user.retain(|_, digests| {
            digests.retain(|digest| sessions.contains_key(digest));
            !digests.is_empty()
        });
        self.session_keys
            .retain(|_, entry| entry.idle_deadline > now);
        self.exchanges.retain(|_, (_, expiry)| *expiry > now);
        self.last_sweep = now;
    }
}

impl MemoryStore {
    pub fn new(policy: SessionPolicy) -> Self {
        MemoryStore {
            state: Arc::new(Mutex::new(State {
                sessions: HashMap::new(),
                by_user: HashMap::new(),
                session_keys: HashMap::new(),
                access_tokens: HashMap::new(),
                locks: HashMap::new(),
                exchanges: HashMap::new(),
                last_sweep: Instant::now(),
            })),
            policy,
        }
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn create(&self, token: &Token, record: &SessionRecord, session_key: &SessionKey) {
        let now = Instant::now();
        let mut state = self.lock();
        state.sweep_if_due(now);
        state.session_keys.insert(
            (record.appid.clone(), record.openid.clone()),
            Entry {
                value: session_key.clone(),
                idle_deadline: now + self.policy.max_lifetime,
            },
        );
        let digest = token.digest();
        state
            .by_user
            .entry((record.appid.clone(), record.openid.clone()))
            .or_default()
            .push(digest.clone());
        state.sessions.insert(
            digest,
            Session {
                entry: Entry {
                    value: record.clone(),
                    idle_deadline: now + self.policy.idle_ttl,
                },
                last_used_ms: record.created_at_ms,
            },
        );
    }

    pub fn touch(&self, token: &Token) -> Option<LiveSession> {
        let now = Instant::now();
        let digest = token.digest();
        let mut state = self.lock();
        let session = state.sessions.get_mut(&digest)?;
        if session.entry.idle_deadline <= now {
            state.sessions.remove(&digest);
            return None;
        }
        let now_ms = now_unix_ms();
        let live = LiveSession::at(session.entry.value.clone(), now_ms, self.policy);
        match live {
            Some(_) => {
                session.entry.idle_deadline = now + self.policy.idle_ttl;
                session.last_used_ms = now_ms;
            }
            None => {
                state.sessions.remove(&digest);
            }
        }
        live
    }

    pub fn remove(&self, token: &Token) -> bool {
        self.lock().sessions.remove(&token.digest()).is_some()
    }

    /// The live sessions of (appid, openid), in no order.
    pub fn list(&self, appid: &str, openid: &str) -> Vec<SessionSummary> {
        let now = Instant::now();
        let mut state = self.lock();
        let State {
            sessions, by_user, ..
        } = &mut *state;
        let Some(digests) = by_user.get_mut(&(appid.to_owned(), openid.to_owned())) else {
            return Vec::new();
        };
        digests.retain(|digest| {
            sessions
                .get(digest)
                .is_some_and(|session| session.entry.idle_deadline > now)
        });
        digests
            .iter()
            .filter_map(|digest| {
                let session = sessions.get(digest)?;
                Some(SessionSummary {
                    digest: digest.clone(),
                    record: session.entry.value.clone(),
                    last_used_ms: session.last_used_ms,
                })
            })
            .collect()
    }

    /// Ends the session of (appid, openid) whose public id is `id`, or all
    /// of them: how many were live.
    pub fn revoke(&self, appid: &str, openid: &str, id: Option<&str>) -> u32 {
        let now = Instant::now();
        let mut state = self.lock();
        let State {
            sessions, by_user, ..
        } = &mut *state;
        let user = (appid.to_owned(), openid.to_owned());
        let Some(digests) = by_user.get_mut(&user) else {
            return 0;
        };
        let mut ended = 0;
        digests.retain(|digest| {
            if id.is_some_and(|id| !digest.starts_with(id)) {
                return true;
            }
            if sessions
                .remove(digest)
                .is_some_and(|session| session.entry.idle_deadline > now)
            {
                ended += 1;
            }
            false
        });
        if digests.is_empty() {
            by_user.remove(&user);
        }
        ended
    }

    /// Ends every session of (appid, openid) and forgets their session_key
    /// (this store keeps no copies of users): how many were live.
    pub fn forget(&self, appid: &str, openid: &str) -> u32 {
        let ended = self.revoke(appid, openid, None);
        self.lock()
            .session_keys
            .remove(&(appid.to_owned(), openid.to_owned()));
        ended
    }

    pub fn session_key(&self, appid: &str, openid: &str) -> Option<SessionKey> {
        let now = Instant::now();
        self.lock()
            .session_keys
            .get(&(appid.to_owned(), openid.to_owned()))
            .filter(|entry| entry.idle_deadline > now)
            .map(|entry| entry.value.clone())
    }

    pub fn access_token(&self, appid: &str) -> Option<CachedToken> {
        let now = now_unix_ms();
        self.lock()
            .access_tokens
            .get(appid)
            .filter(|token| token.expires_at_ms > now)
            .cloned()
    }

    pub fn put_access_token(&self, appid: &str, token: &CachedToken) {
        self.lock()
            .access_tokens
            .insert(appid.to_owned(), token.clone());
    }

    pub fn drop_access_token(&self, appid: &str, token: &str) {
        let mut state = self.lock();
        if state
            .access_tokens
            .get(appid)
            .is_some_and(|cached| cached.token == token)
        {
            state.access_tokens.remove(appid);
        }
    }

    pub fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        if state
            .locks
            .get(name)
            .is_some_and(|(_, expiry)| *expiry > now)
        {
            return false;
        }
        state
            .locks
            .insert(name.to_owned(), (holder.to_owned(), now + ttl));
        true
    }

    /// The slot's live value, with expired ones removed.
    fn exchange_value<'a>(
        state: &'a mut State,
        key: &(String, String),
        now: Instant,
    ) -> Option<&'a String> {
        if state
            .exchanges
            .get(key)
            .is_some_and(|(_, expiry)| *expiry <= now)
        {
            state.exchanges.remove(key);
        }
        state.exchanges.get(key).map(|(value, _)| value)
    }

    pub fn claim_exchange(
        &self,
        appid: &str,
        slot: &str,
        marker: &str,
        ttl: Duration,
    ) -> Option<ExchangeSlot> {
        let now = Instant::now();
        let key = (appid.to_owned(), slot.to_owned());
        let mut state = self.lock();
        state.sweep_if_due(now);
        if let Some(current) = Self::exchange_value(&mut state, &key, now) {
            return Some(ExchangeSlot::parse(current.clone()));
        }
        state.exchanges.insert(key, (marker.to_owned(), now + ttl));
        None
    }

    pub fn exchange_slot(&self, appid: &str, slot: &str) -> Option<ExchangeSlot> {
        let key = (appid.to_owned(), slot.to_owned());
        Self::exchange_value(&mut self.lock(), &key, Instant::now())
            .cloned()
            .map(ExchangeSlot::parse)
    }

    pub fn record_exchange(
        &self,
        appid: &str,
        slot: &str,
        sealed: &str,
        ttl: Duration,
        replace_sealed: bool,
    ) -> Option<String> {
        let now = Instant::now();
        let key = (appid.to_owned(), slot.to_owned());
        let mut state = self.lock();
        if !replace_sealed
            && let Some(ExchangeSlot::Sealed(kept)) = Self::exchange_value(&mut state, &key, now)
                .cloned()
                .map(ExchangeSlot::parse)
        {
            return Some(kept);
        }
        state
            .exchanges
            .insert(key, (format!("{SEALED}{sealed}"), now + ttl));
        None
    }

    pub fn release_exchange(&self, appid: &str, slot: &str, marker: &str) {
        let key = (appid.to_owned(), slot.to_owned());
        let mut state = self.lock();
        if state
            .exchanges
            .get(&key)
            .is_some_and(|(value, _)| value == marker)
        {
            state.exchanges.remove(&key);
        }
    }

    pub fn unlock(&self, name: &str, holder: &str) {
        let mut state = self.lock();
        if state
            .locks
            .get(name)
            .is_some_and(|(current, _)| current == holder)
        {
            state.locks.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lifetime: Duration) -> SessionRecord {
        let now = now_unix_ms();
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

    fn store(idle_ms: u64, max_ms: u64) -> MemoryStore {
        MemoryStore::new(SessionPolicy {
            idle_ttl: Duration::from_millis(idle_ms),
            max_lifetime: Duration::from_millis(max_ms),
        })
    }

    #[test]
    fn a_session_lives_while_used_and_ends_on_remove() {
        let store = store(60_000, 120_000);
        let token = Token::generate().unwrap();
        store.create(
            &token,
            &record(Duration::from_secs(120)),
            &SessionKey::new("k".into()),
        );
        let live = store.touch(&token).unwrap();
        assert_eq!(live.record.openid, "o1");
        assert!(live.expires_in <= Duration::from_secs(60));
        assert!(store.remove(&token));
        assert!(store.touch(&token).is_none());
        assert!(!store.remove(&token));
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let store = store(80, 10_000);
        let idle = Token::generate().unwrap();
        store.create(
            &idle,
            &record(Duration::from_secs(10)),
            &SessionKey::new("k".into()),
        );
        std::thread::sleep(Duration::from_millis(120));
        assert!(store.touch(&idle).is_none(), "idle too long");

        let store = self::store(80, 150);
        let used = Token::generate().unwrap();
        store.create(
            &used,
            &record(Duration::from_millis(150)),
            &SessionKey::new("k".into()),
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(store.touch(&used).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(store.touch(&used).is_some(), "use extends the idle period");
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            store.touch(&used).is_none(),
            "but not past the absolute lifetime"
        );
    }

    #[test]
    fn a_users_sessions_are_listed_and_revoked() {
        let store = store(60_000, 120_000);
        let key = SessionKey::new("k".into());
        let tokens: Vec<Token> = (0..3).map(|_| Token::generate().unwrap()).collect();
        for token in &tokens {
            store.create(token, &record(Duration::from_secs(120)), &key);
        }
        let mut other = record(Duration::from_secs(120));
        other.openid = "o2".into();
        let foreign = Token::generate().unwrap();
        store.create(&foreign, &other, &key);
        assert_eq!(store.list("wxa", "o1").len(), 3);
        assert!(store.remove(&tokens[0]));
        assert_eq!(store.list("wxa", "o1").len(), 2, "a logout leaves the list");

        let id = tokens[1].session_id();
        assert_eq!(store.revoke("wxa", "o2", Some(&id)), 0, "not o2's");
        assert_eq!(store.revoke("wxa", "o1", Some(&id)), 1);
        assert!(store.touch(&tokens[1]).is_none());
        assert!(store.touch(&tokens[2]).is_some());
        assert_eq!(store.revoke("wxa", "o1", None), 1);
        assert!(store.touch(&tokens[2]).is_none());
        assert!(store.list("wxa", "o1").is_empty());
        assert!(store.touch(&foreign).is_some());
    }
}
