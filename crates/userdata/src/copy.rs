//! The codec of the copy of each user that the user service keeps in Redis
//! (under `wxlogin_redis::Keyspace::user_copy`), and the rule that says
//! when a copy answers a login. The user service writes copies; the auth
//! service reads one in the round trip that opens or checks a session and
//! carries it as opaque bytes; the gateway opens it into the JSON it
//! answers.
//!
//! A copy is the clear header of `wxlogin_redis::scripts::copy_header` (a
//! version byte, a flags byte), then the protobuf encoding of
//! `wxlogin.user.v1.User` sealed under the data keys ([`crate::sealing`];
//! additional data: the header, the appid and the openid), so Redis holds
//! no personal data in the clear and a copy moved under another user's key
//! does not open. The header stays in the clear so that the script that
//! opens a session can tell whether the copy answers the login without the
//! keys. Whoever opens a copy (the gateway, the user service) needs
//! `DATA_ENCRYPTION_KEYS`; the auth service only carries the bytes.

use prost::Message;
use wxlogin_proto::user::v1::User;
use wxlogin_redis::scripts::copy_header::{BLOCKED, HAS_UNIONID, VERSION};

use crate::sealing::{DataKeys, SealError};

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
    let mut bytes = Vec::with_capacity(2 + crate::sealing::sealed_len_max(len));
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
    fn a_copy_reads_back_as_written() {
        for unionid in [None, Some("u-1")] {
            let user = user(unionid);
            assert_eq!(decode(&encode(&user)), Some(user));
        }
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
}
