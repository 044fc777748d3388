//! What the auth service's stores hold, whichever backend holds it: the
//! session as written down, how long sessions live, what a code's exchange
//! slot holds, the cached access_token. These are stored formats (JSON in
//! Redis): their serialized shape must stay readable by every replica.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wxlogin_provider::SessionSecret;
use wxlogin_redis::Keyspace;

use crate::token::Token;

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused for this long ends (`SESSION_TTL_SECS`); every use
    /// starts the period again.
    pub idle_ttl: Duration,
    /// No session lives longer than this after login, however often it is
    /// used (`SESSION_MAX_LIFETIME_SECS`).
    pub max_lifetime: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_ttl: Duration::from_secs(7 * 24 * 3600),
            max_lifetime: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// How coarsely a session's last use is recorded: a use within this long
/// of the recorded one writes nothing (so `GET /v1/me` stays a read).
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

impl SessionPolicy {
    /// How long after its recorded last use a user's index keeps a session:
    /// past the idle TTL plus the recording's coarseness (and some clock
    /// skew between instances), the session is surely over.
    pub fn index_keeps(self) -> Duration {
        self.idle_ttl + LAST_USED_EVERY * 2
    }
}

/// What a session knows about its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub appid: String,
    pub openid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds after which the session is over, used or not.
    pub absolute_expiry_ms: u64,
    /// Which session_key the login that opened this session received (a
    /// truncated SHA-256, see [`key_fingerprint`]): a newer login replaces
    /// the user's key, and data sealed for this session then can't be read.
    #[serde(default)]
    pub key_fingerprint: String,
    /// The client's User-Agent at login, bounded (see
    /// [`wxlogin_proto::fields::user_agent`]); absent in sessions opened
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client's network at login (see
    /// [`wxlogin_proto::fields::address_prefix`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_prefix: Option<String>,
}

/// 64 bits of the SHA-256 of a session_key: enough to tell two keys apart,
/// nothing to learn the key from.
pub fn key_fingerprint(session_key: &SessionSecret) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(session_key.expose().as_bytes())[..8])
}

/// A live session and how long it has left if unused.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub record: SessionRecord,
    pub expires_in: Duration,
    /// The user service's copy of the session's user (opaque; see
    /// `wxlogin_userdata::copy`), when the store has one.
    pub user_copy: Option<Vec<u8>>,
}

impl LiveSession {
    /// The session as of `now_ms`, just used; `None` once its absolute
    /// lifetime is over.
    pub fn at(record: SessionRecord, now_ms: u64, policy: SessionPolicy) -> Option<LiveSession> {
        let left = Duration::from_millis(
            record
                .absolute_expiry_ms
                .checked_sub(now_ms)
                .filter(|&left| left > 0)?,
        );
        Some(LiveSession {
            record,
            expires_in: left.min(policy.idle_ttl),
            user_copy: None,
        })
    }
}

/// What opening a session found of its user.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// The user service's copy of the user (opaque; see
    /// `wxlogin_userdata::copy`), when the store has one.
    pub copy: Option<Vec<u8>>,
    /// Whether the copy answers the login, which the store journaled.
    pub recorded: bool,
}

/// One of a user's live sessions, as the user's list shows it.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// The SHA-256 of its token (see [`crate::token::Token::digest`]).
    pub digest: String,
    pub record: SessionRecord,
    /// Unix milliseconds, to [`LAST_USED_EVERY`].
    pub last_used_ms: u64,
}

/// Hex digits in a session's public id.
pub const SESSION_ID_LEN: usize = 32;

impl SessionSummary {
    /// The session's public id (see [`crate::token::Token::session_id`]).
    pub fn session_id(&self) -> &str {
        self.digest.get(..SESSION_ID_LEN).unwrap_or(&self.digest)
    }
}

/// Whether `id` has the shape of a session's public id.
pub fn is_session_id(id: &str) -> bool {
    id.len() == SESSION_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// How a code's slot marks an exchange under way; the owner's id follows.
const PENDING: &str = "pending:";
/// How a code's slot marks a sealed outcome; the sealed text follows.
pub(crate) const SEALED: &str = "sealed:";

/// What claiming a code's slot came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller now owns the exchange.
    Owned,
    /// The slot holds another's exchange or its outcome.
    Held(ExchangeSlot),
    /// A login budget has no room: the one at `position` (from 1) has room
    /// again in `wait_us`. Nothing was claimed.
    Refused { position: usize, wait_us: u64 },
}

/// What the store holds for one code's exchange (see
/// [`crate::sealed_outcome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeSlot {
    /// An instance is exchanging the code.
    Pending,
    /// The exchange is over: its sealed outcome.
    Sealed(String),
}

impl ExchangeSlot {
    /// What a slot's stored value says.
    pub(crate) fn parse(value: String) -> ExchangeSlot {
        match value.strip_prefix(SEALED) {
            Some(sealed) => ExchangeSlot::Sealed(sealed.to_owned()),
            None => ExchangeSlot::Pending,
        }
    }

    /// The value that marks `owner`'s exchange under way.
    pub fn marker(owner: &str) -> String {
        format!("{PENDING}{owner}")
    }

    /// The value that records a sealed outcome.
    pub(crate) fn sealed_value(sealed: &str) -> String {
        format!("{SEALED}{sealed}")
    }
}

/// A login's sealed outcome (see [`crate::sealed_outcome`]), to record in
/// its code's slot for `ttl`.
#[derive(Debug, Clone, Copy)]
pub struct SealedOutcome<'a> {
    pub slot: &'a str,
    pub sealed: &'a str,
    pub ttl: Duration,
}

/// A session to open (see [`super::Sessions::open`]).
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub token: &'a Token,
    pub record: &'a SessionRecord,
    /// The user's session_key, which the login received.
    pub session_key: &'a SessionSecret,
    /// The login's sealed outcome, recorded for its code in the same write.
    pub outcome: Option<SealedOutcome<'a>>,
}

/// A claim on a code's exchange (see [`super::CodeExchanges::claim`]).
#[derive(Debug, Clone, Copy)]
pub struct CodeClaim<'a> {
    pub appid: &'a str,
    /// The code's slot (see [`crate::sealed_outcome::CodeSecrets::slot`]).
    pub slot: &'a str,
    /// What marks the claim as this caller's (see [`ExchangeSlot::marker`]).
    pub marker: &'a str,
    /// How long the claim lasts unless released.
    pub ttl: Duration,
    /// The login budgets that must have room, checked in the same step
    /// where the store can (see [`super::BudgetStore::checked_at_claim`]).
    pub budgets: &'a [Charge<'a>],
}

/// The app's access_token as cached for every instance.
#[derive(Clone, Serialize, Deserialize)]
pub struct CachedToken {
    pub token: String,
    /// Unix ms: WeChat stops accepting it.
    pub expires_at_ms: u64,
    /// Unix ms: one instance should fetch a fresh one from now on.
    pub refresh_at_ms: u64,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("refresh_at_ms", &self.refresh_at_ms)
            .finish()
    }
}

/// Whom a budget counts, as its key names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSubject<'a> {
    /// Logins to an app from one client address (or /64).
    LoginClient { appid: &'a str, client: &'a str },
    /// Logins to an app from everyone.
    LoginApp { appid: &'a str },
    /// One user's calls of the kind `budget` names
    /// (`wxlogin_redis::keys::budget`).
    User {
        budget: &'static str,
        appid: &'a str,
        openid: &'a str,
    },
}

impl BudgetSubject<'_> {
    /// The budget's key: in Redis under the prefix, in process under none.
    pub fn key(self, keys: &Keyspace) -> String {
        match self {
            BudgetSubject::LoginClient { appid, client } => {
                keys.login_budget_per_client(appid, client)
            }
            BudgetSubject::LoginApp { appid } => keys.login_budget_per_app(appid),
            BudgetSubject::User {
                budget,
                appid,
                openid,
            } => keys.user_budget(budget, appid, openid),
        }
    }
}

/// One budget to check or charge: whom it counts, and its GCRA parameters
/// (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge<'a> {
    pub subject: BudgetSubject<'a>,
    pub emission_us: u64,
    pub period_us: u64,
}

/// What a call to the budgets does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeMode {
    /// Charge every budget if all have room, else none.
    Charge,
    /// Only say whether all have room.
    Check,
    /// Charge every budget, room or not: for what already happened.
    Force,
}

impl ChargeMode {
    /// The mode as the budget script takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeMode::Charge => "charge",
            ChargeMode::Check => "check",
            ChargeMode::Force => "force",
        }
    }
}

/// A budget that refused: its position among the charges (from 0) and the
/// µs until it has room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub wait_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_before_the_client_fields_still_reads() {
        let old = r#"{"appid":"wxa","openid":"o1","created_at_ms":1,"absolute_expiry_ms":2,"key_fingerprint":"f"}"#;
        let record: SessionRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.user_agent, None);
        assert_eq!(record.address_prefix, None);
        let written = serde_json::to_string(&record).unwrap();
        assert!(!written.contains("user_agent"), "{written}");
    }

    /// The stored formats, byte for byte: every replica reads them.
    #[test]
    fn stored_formats_are_pinned() {
        let record = SessionRecord {
            appid: "wxa".into(),
            openid: "o1".into(),
            unionid: Some("u1".into()),
            created_at_ms: 1,
            absolute_expiry_ms: 2,
            key_fingerprint: "f".into(),
            user_agent: Some("ua".into()),
            address_prefix: Some("192.0.2.0/24".into()),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"appid":"wxa","openid":"o1","unionid":"u1","created_at_ms":1,"absolute_expiry_ms":2,"key_fingerprint":"f","user_agent":"ua","address_prefix":"192.0.2.0/24"}"#
        );
        let token = CachedToken {
            token: "t".into(),
            expires_at_ms: 3,
            refresh_at_ms: 2,
        };
        assert_eq!(
            serde_json::to_string(&token).unwrap(),
            r#"{"token":"t","expires_at_ms":3,"refresh_at_ms":2}"#
        );
        assert_eq!(ExchangeSlot::marker("00ff"), "pending:00ff");
        assert_eq!(ExchangeSlot::sealed_value("c2Vh"), "sealed:c2Vh");
        assert_eq!(
            ExchangeSlot::parse("sealed:c2Vh".into()),
            ExchangeSlot::Sealed("c2Vh".into())
        );
        assert_eq!(
            ExchangeSlot::parse("pending:00ff".into()),
            ExchangeSlot::Pending
        );
    }

    #[test]
    fn session_ids_are_32_lowercase_hex_digits() {
        let token = crate::token::Token::generate().unwrap();
        assert!(is_session_id(&token.session_id()));
        for bad in ["", "abc", &"A".repeat(32), &"0".repeat(33), &"g".repeat(32)] {
            assert!(!is_session_id(bad), "{bad}");
        }
    }
}
