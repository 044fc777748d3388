//! WeChat's encrypted user data (`encryptedData` + `iv`, sealed with the
//! user's session_key) and the `rawData` signature: decrypting, checking the
//! watermark, and reading the profile and phone fields out of the result.
//!
//! Pure functions: no I/O, no clock (callers pass `now_unix`), no logging.
//! They must not panic on any input, and the session_key and the plaintext
//! must never reach an error, `Debug` or `Display`.
//!
//! There is no MAC and the client chooses the iv, so everything that needs
//! the key to find out ends in one [`DecryptError::Invalid`]: answering
//! differently for bad padding and bad JSON would hand out a padding oracle.

use std::time::Duration;

use aes::cipher::{BlockModeDecrypt as _, KeyIvInit as _, block_padding::Pkcs7};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};
use serde_json::{Map, Value};
use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq as _;
// The proto crate's table, not `crate::fields`, which builds on this module.
use wxlogin_proto::fields::{Field, Origin};

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// AES block, key and CBC iv length.
const BLOCK_LEN: usize = 16;

/// How far ahead of `now_unix` a watermark may be before it is refused
/// (clocks drift; WeChat's and ours are not the same clock).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The nickname WeChat puts in anonymised profile data (since 2021).
const PLACEHOLDER_NICKNAME: &str = "微信用户";

/// Image ids of the grey default avatars. WeChat serves the first one, at
/// any size (`/0`, `/46`, `/64`, `/96`, `/132`) and under http or https, in
/// anonymised profile data; the second is the default avatar of WeChat's
/// own avatar-picker sample, which many mini-programs send back unchanged.
const PLACEHOLDER_AVATAR_IDS: [&str; 2] = [
    "POgEwh4mIHO4nibH0KlMECNjjGxQUq24ZEaGT4poC6icRiccVGKSyXwibcPq4BWmiaIGuG1icwxaQX6grC9VemZoJ8rg",
    "icTdbqWNOwNRna42FI242Lcia07jQodd2FJGIYQfG0LAJGFxM4FbnQP6yfMxBgJ0F3YRqJCJ1aPAK2dQagdusBZg",
];

/// Hosts WeChat serves avatars from (and their subdomains).
const AVATAR_HOSTS: [&str; 2] = ["qlogo.cn", "qpic.cn"];

/// Why encrypted data was refused. `Malformed` covers what the client can
/// see without any key (bad base64, key/iv not 16 bytes, ciphertext empty
/// or not a multiple of 16): HTTP 400. Everything that needs the key to find
/// out (padding, UTF-8, JSON, watermark appid/age, openid mismatch) is ONE
/// variant with ONE message, so that answers form no padding oracle: HTTP
/// 422 `invalid_encrypted_data`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("{0}")]
    Malformed(&'static str),
    #[error("the encrypted data is not valid")]
    Invalid,
}

/// What the decrypted data must say to be accepted: `watermark.appid` must
/// equal `appid`; when `subject` is `Some` and the plaintext has an
/// `openId`, the two must be equal; `watermark.timestamp` may be `max_age`
/// old (`None`: no freshness check, neither age nor [`MAX_CLOCK_SKEW`]).
pub use wxlogin_provider::Expectations;

/// Decrypts WeChat's `encryptedData` with the user's `session_key` and the
/// `iv` the client sent, and checks the result against `expect`.
///
/// Inputs are strict base64: standard alphabet, no whitespace, no URL-safe
/// characters, no stray bits in the last character. Padding may be given or
/// left out (`=` is redundant, and some clients lose it in transit), but
/// not half given.
///
/// Then: key and iv must be 16 bytes, the ciphertext a non-empty multiple of
/// 16 (else [`DecryptError::Malformed`]); AES-128-CBC with strict PKCS#7
/// unpadding; UTF-8; a JSON object with `watermark.appid == expect.appid`
/// and an integer `watermark.timestamp`, no older than `expect.max_age` and
/// no more than [`MAX_CLOCK_SKEW`] ahead of `expect.now_unix`; and when
/// both `expect.subject` and the plaintext's `openId` are present, they
/// must be equal. Any of these failing is [`DecryptError::Invalid`].
///
/// Without a MAC, whoever picks the iv controls the first 16 plaintext
/// bytes up to a known XOR: WeChat's `{"openId":"oGZUI` can become
/// `{"npenId":"oGZUI`, which drops `openId` and is accepted. So identify
/// the user by the openid of the session, never by the decrypted `openId`.
pub fn decrypt(
    session_key: &str,
    encrypted_data: &str,
    iv: &str,
    expect: &Expectations,
) -> Result<Map<String, Value>, DecryptError> {
    let key = decode_base64(session_key, "session_key is not valid base64")?;
    if key.len() != BLOCK_LEN {
        return Err(DecryptError::Malformed("session_key is not 16 bytes"));
    }
    let iv = decode_base64(iv, "iv is not valid base64")?;
    if iv.len() != BLOCK_LEN {
        return Err(DecryptError::Malformed("iv is not 16 bytes"));
    }
    let mut buf = decode_base64(encrypted_data, "encrypted_data is not valid base64")?;
    if buf.is_empty() {
        return Err(DecryptError::Malformed("encrypted_data is empty"));
    }
    if !buf.len().is_multiple_of(BLOCK_LEN) {
        return Err(DecryptError::Malformed(
            "encrypted_data is not a multiple of 16 bytes",
        ));
    }

    let cipher = Aes128CbcDec::new_from_slices(&key, &iv)
        .map_err(|_| DecryptError::Malformed("session_key or iv is not 16 bytes"))?;
    let plaintext = cipher
        .decrypt_padded::<Pkcs7>(&mut buf)
        .map_err(|_| DecryptError::Invalid)?;
    let text = std::str::from_utf8(plaintext).map_err(|_| DecryptError::Invalid)?;
    let map: Map<String, Value> = serde_json::from_str(text).map_err(|_| DecryptError::Invalid)?;

    check_watermark(&map, expect)?;
    if let (Some(expected), Some(found)) = (expect.subject, map.get("openId"))
        && found.as_str() != Some(expected)
    {
        return Err(DecryptError::Invalid);
    }
    Ok(map)
}

/// Checks `rawData` against the `signature` the client sent:
/// `signature == hex(sha1(raw_data + session_key))`, hex in either case,
/// compared in constant time.
pub fn verify_raw_data_signature(raw_data: &str, session_key: &str, signature: &str) -> bool {
    let mut expected = [0u8; 20];
    // The length and alphabet of the signature are public; only the digest
    // comparison must not leak how many bytes matched.
    if hex::decode_to_slice(signature, &mut expected).is_err() {
        return false;
    }
    let digest = Sha1::new()
        .chain_update(raw_data.as_bytes())
        .chain_update(session_key.as_bytes())
        .finalize();
    digest.as_slice().ct_eq(&expected).into()
}

/// Whether `s` is no real nickname: empty, blank, or WeChat's anonymised
/// "微信用户".
pub fn is_placeholder_nickname(s: &str) -> bool {
    let s = s.trim();
    s.is_empty() || s == PLACEHOLDER_NICKNAME
}

/// Whether `url` is no real avatar: empty, blank, or one of WeChat's grey
/// default avatars (any size, http or https).
pub fn is_placeholder_avatar(url: &str) -> bool {
    let url = url.trim();
    if url.is_empty() {
        return true;
    }
    let Some((host, path)) = split_url(url) else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let wechat_host = AVATAR_HOSTS
        .iter()
        .any(|known| host == *known || host.ends_with(&format!(".{known}")));
    wechat_host
        && path
            .split('/')
            .any(|segment| PLACEHOLDER_AVATAR_IDS.contains(&segment))
}

/// Phone fields from decrypted `getPhoneNumber` data (or the `phone_info`
/// of `getuserphonenumber`).
pub use wxlogin_provider::PhoneNumber;
/// Profile fields from decrypted `getUserInfo` / `getUserProfile` data.
pub use wxlogin_provider::Profile as UserInfo;

/// Reads WeChat's fields out of decrypted data into a provider-neutral
/// value.
pub trait FromDecrypted: Sized {
    /// The value, or why there is none.
    type Read;
    fn from_decrypted(map: &Map<String, Value>) -> Self::Read;
}

impl FromDecrypted for UserInfo {
    type Read = UserInfo;

    /// Reads the profile fields of `map`, ignoring fields of the wrong
    /// type; placeholders and empty values are `None`.
    fn from_decrypted(map: &Map<String, Value>) -> UserInfo {
        let text = |field: Field| {
            map.get(field.name(Origin::WeChat))
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
        };
        UserInfo {
            nickname: text(Field::Nickname).filter(|s| !is_placeholder_nickname(s)),
            avatar_url: text(Field::AvatarUrl).filter(|s| !is_placeholder_avatar(s)),
            gender: map
                .get("gender")
                .and_then(Value::as_i64)
                .filter(|g| matches!(g, 1 | 2))
                .and_then(|g| i32::try_from(g).ok()),
            country: text(Field::Country),
            province: text(Field::Province),
            city: text(Field::City),
            language: text(Field::Language),
            unionid: text(Field::Unionid),
            openid: text(Field::Openid),
        }
    }
}

impl FromDecrypted for PhoneNumber {
    type Read = Result<PhoneNumber, DecryptError>;

    /// Reads the phone fields of `map`; [`DecryptError::Invalid`] when one
    /// is missing, empty or of the wrong type. WeChat sends the country
    /// code as a string or a number.
    fn from_decrypted(map: &Map<String, Value>) -> Result<PhoneNumber, DecryptError> {
        let text = |field: Field| {
            map.get(field.name(Origin::WeChat))
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
                .ok_or(DecryptError::Invalid)
        };
        let country_code = match map.get(Field::PhoneCountryCode.name(Origin::WeChat)) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) if n.is_u64() => n.to_string(),
            _ => return Err(DecryptError::Invalid),
        };
        Ok(PhoneNumber {
            phone_number: text(Field::PhoneNumber)?,
            pure_phone_number: text(Field::PurePhoneNumber)?,
            country_code,
        })
    }
}

/// Standard base64, with canonical padding or none at all.
fn decode_base64(input: &str, malformed: &'static str) -> Result<Vec<u8>, DecryptError> {
    let engine = if input.ends_with('=') {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    engine
        .decode(input)
        .map_err(|_| DecryptError::Malformed(malformed))
}

fn check_watermark(map: &Map<String, Value>, expect: &Expectations) -> Result<(), DecryptError> {
    let watermark = map
        .get("watermark")
        .and_then(Value::as_object)
        .ok_or(DecryptError::Invalid)?;
    let appid = watermark
        .get("appid")
        .and_then(Value::as_str)
        .ok_or(DecryptError::Invalid)?;
    let timestamp = watermark
        .get("timestamp")
        .and_then(Value::as_i64)
        .ok_or(DecryptError::Invalid)?;
    if appid != expect.appid {
        return Err(DecryptError::Invalid);
    }
    if let Some(max_age) = expect.max_age {
        // i128: neither the subtraction nor the bounds can overflow.
        let age = i128::from(expect.now_unix) - i128::from(timestamp);
        if age > i128::from(max_age.as_secs()) || -age > i128::from(MAX_CLOCK_SKEW.as_secs()) {
            return Err(DecryptError::Invalid);
        }
    }
    Ok(())
}

/// `(host, path)` of an `http`/`https` URL, or `None` for anything else.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = host_port
        .split_once(':')
        .map_or(host_port, |(host, _)| host);
    Some((host, path))
}

#[cfg(test)]
mod tests;
