//! Every Redis key wxlogin writes, in one place: their formats, the prefix
//! they start with (`REDIS_KEY_PREFIX`) and the hash tags that keep the
//! keys one script touches in one Redis Cluster hash slot.
//!
//! | key | holds | written by |
//! |---|---|---|
//! | `session:{u…}:<sha256(token)>` | a session (JSON), expiring after the idle TTL | auth |
//! | `sessions:{u…}:<appid>:<openid>` | the user's index of sessions: a sorted set of token digests by last use | auth |
//! | `session_key:{u…}:<appid>:<openid>` | the user's latest WeChat session_key | auth |
//! | `login:{a:<appid>}:<slot>` | one wx.login code's exchange: `pending:<owner>`, then `sealed:<outcome>` | auth |
//! | `limit:<budget>:<subject>` | a budget's GCRA timestamp (µs); login budgets' subjects carry `{a:<appid>}` | auth |
//! | `access_token:<appid>` | the app's shared access_token (JSON) | auth |
//! | `lock:<name>` | a lock's holder, expiring | auth |
//! | `user:{u…}:<appid>:<openid>` | the user service's sealed copy of the user | user |
//! | `deleted:{u…}:<appid>:<openid>` | a deleted user's id, for a day | auth |
//! | `logins` | the journal of logins that copies answered (a stream) | auth, read by user |
//!
//! `{u…}` is the user's shard tag ([`shard_tag`] of [`shard`]): the keys of
//! one user (their sessions, index, session_key, copy and tombstone) share
//! one hash slot, so the scripts that open, check and end sessions touch
//! one slot. A session's token carries its user's shard, so the session's
//! key is known from the token alone. `{a:<appid>}` ([`app_tag`]) puts an
//! app's code slots and login budgets in one slot, which the script that
//! claims a code checks together.
//!
//! These formats are what every running replica reads: changing one ends
//! live sessions or splits old and new replicas during a rolling upgrade.
//! The tests below pin each of them.

use std::{sync::Arc, time::Duration};

/// How long a user copy lives after its last write.
pub const USER_COPY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long after a user's deletion no copy of them may be written: longer
/// than any request that read the user before the deletion can still run,
/// and as long as a copy lives.
pub const TOMBSTONE_TTL: Duration = USER_COPY_TTL;

/// How many shards users are spread over (Redis Cluster has 16384 hash
/// slots).
pub const SHARDS: u16 = 1 << 14;

/// The shard of (appid, openid): the first two bytes of
/// SHA-256(appid ‖ 0 ‖ openid), modulo [`SHARDS`].
pub fn shard(appid: &str, openid: &str) -> u16 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(appid)
        .chain_update([0])
        .chain_update(openid)
        .finalize();
    u16::from_be_bytes([digest[0], digest[1]]) % SHARDS
}

/// The hash tag of a shard's keys: `{u<4 hex digits>}`.
pub fn shard_tag(shard: u16) -> String {
    format!("{{u{shard:04x}}}")
}

/// The hash tag of an app's login keys (its codes' slots and its login
/// budgets): `{a:<appid>}`.
pub fn app_tag(appid: &str) -> String {
    format!("{{a:{appid}}}")
}

/// Why `prefix` cannot start wxlogin's Redis keys: a brace would make
/// Redis Cluster hash the keys by the prefix's braces instead of their
/// hash tags.
pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.contains(['{', '}']) {
        return Err("REDIS_KEY_PREFIX must not contain '{' or '}' (Redis Cluster hash tags)");
    }
    Ok(())
}

/// The consumer group the user services read the login journal through.
pub const JOURNAL_GROUP: &str = "users";

/// The fields of a login journal entry.
pub mod journal_field {
    pub const APPID: &str = "a";
    pub const OPENID: &str = "o";
    /// Unix milliseconds of the login.
    pub const AT_MS: &str = "t";
}

/// The budgets whose timestamps are kept under `limit:`, by the name their
/// keys carry.
pub mod budget {
    pub const LOGIN_PER_IP: &str = "login_ip";
    pub const LOGIN_PER_APP: &str = "login_app";
    pub const CHECK_SESSION: &str = "check_session";
    pub const PHONE: &str = "phone";
}

/// The keys under one `REDIS_KEY_PREFIX`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: Arc<str>,
}

impl Keyspace {
    /// Keys starting with `prefix` (checked at configuration: see
    /// [`check_prefix`]).
    pub fn new(prefix: &str) -> Keyspace {
        Keyspace {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn user_key(&self, kind: &str, appid: &str, openid: &str) -> String {
        format!(
            "{}{kind}:{}:{appid}:{openid}",
            self.prefix,
            shard_tag(shard(appid, openid))
        )
    }

    /// The session whose token is in `shard` and has SHA-256 `digest`.
    pub fn session(&self, shard: u16, digest: &str) -> String {
        format!("{}session:{}:{digest}", self.prefix, shard_tag(shard))
    }

    /// The user's index of sessions.
    pub fn session_index(&self, appid: &str, openid: &str) -> String {
        self.user_key("sessions", appid, openid)
    }

    /// The user's latest WeChat session_key.
    pub fn session_key(&self, appid: &str, openid: &str) -> String {
        self.user_key("session_key", appid, openid)
    }

    /// The user service's copy of the user.
    pub fn user_copy(&self, appid: &str, openid: &str) -> String {
        self.user_key("user", appid, openid)
    }

    /// The mark of the user's deletion (it holds the deleted user's id).
    pub fn tombstone(&self, appid: &str, openid: &str) -> String {
        self.user_key("deleted", appid, openid)
    }

    /// The exchange of the code of `appid` whose slot (a digest of the
    /// code) is `slot`.
    pub fn login_slot(&self, appid: &str, slot: &str) -> String {
        format!("{}login:{}:{slot}", self.prefix, app_tag(appid))
    }

    /// The login budget of `appid` for one client address.
    pub fn login_budget_per_client(&self, appid: &str, client: &str) -> String {
        self.budget(
            budget::LOGIN_PER_IP,
            &format!("{}:{client}", app_tag(appid)),
        )
    }

    /// The login budget of `appid` for everyone.
    pub fn login_budget_per_app(&self, appid: &str) -> String {
        self.budget(budget::LOGIN_PER_APP, &app_tag(appid))
    }

    /// The budget `name` (one of [`budget`]'s) of one user.
    pub fn user_budget(&self, name: &str, appid: &str, openid: &str) -> String {
        self.budget(name, &format!("{appid}:{openid}"))
    }

    fn budget(&self, name: &str, subject: &str) -> String {
        format!("{}limit:{name}:{subject}", self.prefix)
    }

    /// The app's cached access_token.
    pub fn access_token(&self, appid: &str) -> String {
        format!("{}access_token:{appid}", self.prefix)
    }

    /// The lock `name`.
    pub fn lock(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }

    /// The journal of logins that copies answered.
    pub fn journal(&self) -> String {
        format!("{}logins", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key format, byte for byte, as replicas of every version since
    /// the hash tags were introduced write them.
    #[test]
    fn key_formats_are_pinned() {
        let keys = Keyspace::new("p:");
        let tag = "{u1b78}"; // shard 7032
        assert_eq!(shard_tag(0x2a), "{u002a}");
        assert_eq!(app_tag("wxapp"), "{a:wxapp}");
        assert_eq!(keys.session(0x2a, "d1g3st"), "p:session:{u002a}:d1g3st");
        for (key, kind) in [
            (keys.session_index("wxapp", "o-1"), "sessions"),
            (keys.session_key("wxapp", "o-1"), "session_key"),
            (keys.user_copy("wxapp", "o-1"), "user"),
            (keys.tombstone("wxapp", "o-1"), "deleted"),
        ] {
            assert_eq!(key, format!("p:{kind}:{tag}:wxapp:o-1"));
        }
        assert_eq!(keys.login_slot("wxapp", "s10t"), "p:login:{a:wxapp}:s10t");
        assert_eq!(
            keys.login_budget_per_client("wxapp", "192.0.2.1"),
            "p:limit:login_ip:{a:wxapp}:192.0.2.1"
        );
        assert_eq!(
            keys.login_budget_per_app("wxapp"),
            "p:limit:login_app:{a:wxapp}"
        );
        assert_eq!(
            keys.user_budget(budget::CHECK_SESSION, "wxapp", "o-1"),
            "p:limit:check_session:wxapp:o-1"
        );
        assert_eq!(
            keys.user_budget(budget::PHONE, "wxapp", "o-1"),
            "p:limit:phone:wxapp:o-1"
        );
        assert_eq!(keys.access_token("wxapp"), "p:access_token:wxapp");
        assert_eq!(keys.lock("n"), "p:lock:n");
        assert_eq!(keys.journal(), "p:logins");
    }

    #[test]
    fn shards_are_pinned() {
        // Values computed by the first build that sharded users: a change
        // moves every user's keys and ends every live session.
        assert_eq!(shard("wxapp", "o-1"), PINNED_SHARD);
        assert!(shard("wxapp", "o-1") < SHARDS);
        assert_ne!(shard("wxapp", "o-1"), shard("wxapp", "o-2"));
    }

    /// SHA-256("wxapp\0o-1")'s first two bytes, modulo 16384 (`python3 -c
    /// "import hashlib; print(int.from_bytes(hashlib.sha256(b'wxapp\\0o-1').digest()[:2], 'big') % 16384)"`).
    const PINNED_SHARD: u16 = 7032;

    #[test]
    fn a_prefix_with_braces_is_refused() {
        assert!(check_prefix("wxlogin:").is_ok());
        assert!(check_prefix("a{b}:").is_err());
    }
}
