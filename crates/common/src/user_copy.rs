//! The copy of each user that the user service keeps in Redis, beside the
//! sessions, and the journal of the logins it answered. This module is the
//! one owner of both: their keys, the copy's encoding and lifetime, and the
//! rule that says when a copy answers a login. The user service writes the
//! copies and applies the journal; the auth service reads a copy in the
//! round trip that opens or checks a session and carries it as opaque
//! bytes; the gateway turns it into the JSON it answers.
//!
//! A copy is one version byte, one flags byte, then the protobuf encoding
//! of `wxlogin.user.v1.User` sealed under the data keys
//! ([`crate::data_crypto`]; additional data: the version, the flags, the
//! appid and the openid), so Redis holds no personal data in the clear and
//! a copy moved under another user's key does not open. The version and
//! the flags stay in the clear: they let the session script (Lua, inside
//! Redis) apply [`answers_login`] without the keys. Whoever reads a copy
//! (the gateway, the user service) needs `DATA_ENCRYPTION_KEYS`; the auth
//! service only carries the bytes. The flags say whether the user has a
//! unionid and whether the team blocked them (a blocked user's copy answers
//! no login).
//!
//! A deleted user's tombstone ([`tombstone_key`]) sits beside the copy: no
//! copy of the id it names is written while it lasts ([`WRITE_COPY_LUA`]).
//!
//! The journal is a Redis stream: an entry per login that a copy answered
//! (appid, openid, Unix milliseconds), appended in the same atomic script
//! that opens the session. The user service reads it through a consumer
//! group and records the logins (`last_login_at`, `login_count`) in MySQL
//! in batches, acknowledging entries only once they are stored.

use std::time::Duration;

use prost::Message;
use wxlogin_proto::user::v1::User;

use crate::data_crypto::{DataKeys, SealError};

/// How long a copy lives after its last write.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// The format of the copies this build writes and reads (1 was the
/// protobuf in the clear).
const VERSION: u8 = 2;
/// Flag: the user has a unionid, so no login can backfill one.
const HAS_UNIONID: u8 = 1;
/// Flag: the user is blocked, so the copy answers no login (the user
/// service refuses it).
const BLOCKED: u8 = 2;

/// How long after a user's deletion no copy of them may be written: longer
/// than any request that read the user before the deletion can still run,
/// and as long as a copy lives.
pub const TOMBSTONE_TTL: Duration = TTL;

/// How many shards users are spread over (Redis Cluster has 16384 hash
/// slots).
pub const SHARDS: u16 = 1 << 14;

/// The shard of (appid, openid). The keys of the user's copy, of the user's
/// session_key and of each of the user's sessions carry it as a Redis
/// Cluster hash tag ([`shard_tag`]), so that they share one hash slot: the
/// script that opens a session and the round trip that checks one touch
/// several of them at once. A session's token carries its user's shard (see
/// the auth service's `token` module), so the session's key is known from
/// the token alone.
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

/// The start of the keys of every copy in `shard`: the script that checks
/// a session builds the rest from the session's appid and openid.
pub fn key_prefix(prefix: &str, shard: u16) -> String {
    format!("{prefix}user:{}:", shard_tag(shard))
}

/// The key of the copy of (appid, openid):
/// `user:{<shard>}:<appid>:<openid>`.
pub fn key(prefix: &str, appid: &str, openid: &str) -> String {
    format!(
        "{}{appid}:{openid}",
        key_prefix(prefix, shard(appid, openid))
    )
}

/// The key that marks (appid, openid)'s user as deleted (it holds the
/// deleted user's id): `deleted:{<shard>}:<appid>:<openid>`. In the shard
/// of the user's copy, so that the script that writes a copy checks it in
/// the same step.
pub fn tombstone_key(prefix: &str, appid: &str, openid: &str) -> String {
    format!(
        "{prefix}deleted:{}:{appid}:{openid}",
        shard_tag(shard(appid, openid))
    )
}

/// Writes a copy (KEYS[1]) unless the tombstone (KEYS[2]) names its user
/// (ARGV[1], the id): `SET KEYS[1] ARGV[2] EX ARGV[3]`, with `NX` when
/// ARGV[4] is '1'. Answers 1 when written, 0 when the copy was there
/// already (NX), -1 when the user is deleted.
pub const WRITE_COPY_LUA: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then return -1 end
if ARGV[4] == '1' then
  if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3]) then return 1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// Why `prefix` cannot start wxlogin's Redis keys: a brace would make
/// Redis Cluster hash the keys by the prefix's braces instead of their
/// hash tags.
pub fn check_key_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.contains(['{', '}']) {
        return Err("REDIS_KEY_PREFIX must not contain '{' or '}' (Redis Cluster hash tags)");
    }
    Ok(())
}

/// What binds a copy's sealed body to its header and its user.
fn aad<'a>(header: &'a [u8; 2], appid: &'a str, openid: &'a str) -> [&'a [u8]; 4] {
    [b"user copy", header, appid.as_bytes(), openid.as_bytes()]
}

/// `user` as its copy is stored: the header, then the sealed protobuf.
pub fn encode(keys: &DataKeys, user: &User) -> Result<Vec<u8>, SealError> {
    let mut flags = 0;
    if user.unionid.is_some() {
        flags |= HAS_UNIONID;
    }
    if user.blocked {
        flags |= BLOCKED;
    }
    let header = [VERSION, flags];
    let len = user.encoded_len();
    let mut bytes = Vec::with_capacity(2 + crate::data_crypto::sealed_len_max(len));
    bytes.extend_from_slice(&header);
    keys.seal_into(
        &aad(&header, &user.appid, &user.openid),
        &mut bytes,
        |body| {
            // Writing into a Vec cannot run out of room.
            let _ = user.encode(body);
        },
    )?;
    Ok(bytes)
}

/// The user a copy stored under the key of (appid, openid) holds, opened
/// in place (the bytes are overwritten); `None` (logged) when it is not a
/// copy this build can read, which callers treat as no copy.
pub fn decode(keys: &DataKeys, copy: &mut [u8], appid: &str, openid: &str) -> Option<User> {
    let (header, sealed) = match copy {
        [VERSION, flags, sealed @ ..] => ([VERSION, *flags], sealed),
        // Written by an earlier build (during an upgrade): the user's next
        // login or write replaces it, or it expires.
        _ => {
            tracing::debug!("a cached user is not in this build's format; ignoring it");
            return None;
        }
    };
    let body = keys
        .open(&aad(&header, appid, openid), sealed)
        .inspect_err(|error| tracing::warn!(%error, "the cached user does not open; ignoring it"))
        .ok()?;
    User::decode(body)
        .inspect_err(|error| tracing::warn!(%error, "the cached user does not decode; ignoring it"))
        .ok()
}

/// Whether `user` (a decoded copy) is (appid, openid) exactly as a login
/// with `unionid` leaves them: then the copy answers the login, which
/// changes nothing stored but the login's time and count. A login changes
/// the user only by backfilling a unionid the user lacks (a stored unionid
/// is never replaced). A blocked user's copy answers none: the user
/// service refuses their logins.
pub fn answers_login(user: &User, appid: &str, openid: &str, unionid: Option<&str>) -> bool {
    user.appid == appid
        && user.openid == openid
        && !user.blocked
        && (unionid.is_none() || user.unionid.is_some())
}

/// [`answers_login`] in Lua, for a copy read inside Redis under the key of
/// (appid, openid): `answers_login(copy, unionid)`, where `unionid` is ''
/// when the login has none.
pub const ANSWERS_LOGIN_LUA: &str = r"
local function answers_login(copy, unionid)
  if string.byte(copy, 1) ~= 2 then return false end
  local flags = string.byte(copy, 2) or 0
  if math.floor(flags / 2) % 2 == 1 then return false end
  return unionid == '' or flags % 2 == 1
end
";

/// The journal of logins that copies answered.
pub fn journal_key(prefix: &str) -> String {
    format!("{prefix}logins")
}

/// The consumer group the user services read the journal through.
pub const JOURNAL_GROUP: &str = "users";

/// The fields of a journal entry.
pub mod journal_field {
    pub const APPID: &str = "a";
    pub const OPENID: &str = "o";
    /// Unix milliseconds of the login.
    pub const AT_MS: &str = "t";
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn keys() -> DataKeys {
        DataKeys::parse("k:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
    }

    fn encode(user: &User) -> Vec<u8> {
        super::encode(&keys(), user).unwrap()
    }

    fn decode(copy: &[u8]) -> Option<User> {
        super::decode(&keys(), &mut copy.to_vec(), "wxapp", "o-1")
    }

    fn user(unionid: Option<&str>) -> User {
        User {
            id: 7,
            appid: "wxapp".into(),
            openid: "o-1".into(),
            unionid: unionid.map(str::to_owned),
            nickname: Some("n".into()),
            ..User::default()
        }
    }

    #[test]
    fn a_users_keys_share_the_shard_tag() {
        let shard = shard("wxapp", "o-1");
        assert!(shard < SHARDS);
        assert_eq!(
            key("p:", "wxapp", "o-1"),
            format!("p:user:{}:wxapp:o-1", shard_tag(shard))
        );
        assert_ne!(super::shard("wxapp", "o-1"), super::shard("wxapp", "o-2"));
        assert!(check_key_prefix("wxlogin:").is_ok());
        assert!(check_key_prefix("a{b}:").is_err());
    }

    #[test]
    fn a_copy_reads_back_as_written() {
        for unionid in [None, Some("u-1")] {
            let user = user(unionid);
            assert_eq!(decode(&encode(&user)), Some(user));
        }
    }

    #[test]
    fn the_session_script_checks_this_builds_version() {
        assert!(ANSWERS_LOGIN_LUA.contains(&format!("string.byte(copy, 1) ~= {VERSION} then")));
    }

    #[test]
    fn a_copy_holds_nothing_in_the_clear_and_opens_only_as_its_user() {
        let copy = encode(&User {
            nickname: Some("Nick-Of-Test".into()),
            ..user(Some("u-1"))
        });

        assert_eq!(copy[..2], [VERSION, HAS_UNIONID]);
        for clear in [&b"Nick-Of-Test"[..], b"wxapp", b"o-1", b"u-1"] {
            assert!(!copy.windows(clear.len()).any(|w| w == clear));
        }
        assert!(super::decode(&keys(), &mut copy.clone(), "wxapp", "o-2").is_none());
        let mut flags_cleared = copy.clone();
        flags_cleared[1] = 0;
        assert_eq!(decode(&flags_cleared), None);
        let other_keys = DataKeys::parse("k:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=").unwrap();
        assert!(super::decode(&other_keys, &mut copy.clone(), "wxapp", "o-1").is_none());
    }

    /// The cost `GET /v1/me` pays for a sealed copy: `cargo test --release
    /// -p wxlogin-common cost_of_opening -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_of_opening_a_copy() {
        let user = User {
            nickname: Some("微信用户 Nickname".into()),
            avatar_url: Some(format!(
                "https://thirdwx.qlogo.cn/mmopen/vi_32/{}/132",
                "x".repeat(90)
            )),
            city: Some("Guangzhou".into()),
            province: Some("Guangdong".into()),
            country: Some("CN".into()),
            language: Some("zh_CN".into()),
            phone_number: Some("+86 13800138000".into()),
            pure_phone_number: Some("13800138000".into()),
            phone_country_code: Some("86".into()),
            created_at: Some(prost_types::Timestamp::default()),
            updated_at: Some(prost_types::Timestamp::default()),
            ..user(Some("oUnion_0123456789abcdef"))
        };
        let keys = keys();
        let copy = super::encode(&keys, &user).unwrap();
        let plain = user.encode_to_vec();
        const N: u32 = 200_000;
        let mut buffer = copy.clone();
        let started = std::time::Instant::now();
        for _ in 0..N {
            buffer.copy_from_slice(&copy);
            assert!(super::decode(&keys, &mut buffer, "wxapp", "o-1").is_some());
        }
        let sealed = started.elapsed() / N;
        let started = std::time::Instant::now();
        for _ in 0..N {
            assert!(User::decode(std::hint::black_box(&plain[..])).is_ok());
        }
        let clear = started.elapsed() / N;
        let started = std::time::Instant::now();
        for _ in 0..N / 10 {
            assert!(super::encode(&keys, &user).is_ok());
        }
        let sealing = started.elapsed() / (N / 10);
        println!(
            "a copy of {} bytes ({} of protobuf): open + decode {sealed:?}, decode alone {clear:?}; seal {sealing:?}",
            copy.len(),
            plain.len()
        );
    }

    #[test]
    fn copies_of_another_format_are_no_copies() {
        let mut copy = encode(&user(None));
        copy[0] = 0;
        assert_eq!(decode(&copy), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[VERSION, 0, 0xff, 0xff]), None);
    }

    #[test]
    fn a_copy_answers_a_login_that_backfills_nothing() {
        let without = user(None);
        let with = user(Some("u-1"));
        assert!(answers_login(&without, "wxapp", "o-1", None));
        assert!(!answers_login(&without, "wxapp", "o-1", Some("u-1")));
        assert!(answers_login(&with, "wxapp", "o-1", Some("u-1")));
        assert!(answers_login(&with, "wxapp", "o-1", None));
        assert!(!answers_login(&with, "wxapp", "o-2", None));
        assert!(!answers_login(&with, "wxother", "o-1", None));
    }

    #[test]
    fn a_blocked_users_copy_answers_no_login_and_says_so_in_its_flags() {
        let blocked = User {
            blocked: true,
            ..user(Some("u-1"))
        };
        assert!(!answers_login(&blocked, "wxapp", "o-1", None));
        // The flags the Lua twin reads: bit 0 unionid, bit 1 blocked.
        assert_eq!(encode(&blocked)[1], HAS_UNIONID | BLOCKED);
        assert_eq!(encode(&user(None))[1], 0);
        assert_eq!(decode(&encode(&blocked)), Some(blocked));
    }

    #[test]
    fn a_tombstone_is_in_its_users_slot() {
        let tag = shard_tag(shard("wxapp", "o-1"));
        assert_eq!(
            tombstone_key("p:", "wxapp", "o-1"),
            format!("p:deleted:{tag}:wxapp:o-1")
        );
        assert!(key("p:", "wxapp", "o-1").contains(&tag));
    }
}
