//! Personal data at rest: the one owner of the sealed format, of the data
//! keys (`DATA_ENCRYPTION_KEYS`) and of the blind-index key
//! (`DATA_INDEX_KEY`). The user service seals personal columns of `users`
//! with it, and the user service and the gateway seal and open the user
//! copy in Redis.
//!
//! A sealed value is self-describing, so that keys can rotate:
//!
//! ```text
//! format (1) | key id length (1) | key id | nonce (12) | ciphertext | tag (16)
//! ```
//!
//! AES-256-GCM, a fresh random nonce from the OS for every value (2^32
//! values per key keep the chance of a repeated nonce below 2^-32), and
//! additional data that binds the value to where it is stored (the row and
//! the column, the copy's user): a value copied elsewhere does not open.
//!
//! The ciphers are built once, from the configuration; sealing and opening
//! allocate nothing but the sealed value itself ([`DataKeys::open`]
//! decrypts in place).
//!
//! It must not log values or keys, and it never panics on bad input: a
//! value that does not open is an [`OpenError`].

use std::{fmt, sync::Arc};

use aes_gcm::{AeadInOut, Aes256Gcm, Key, KeyInit, Nonce, Tag};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::{TryRng, rngs::SysRng};
use sha2::Sha256;
pub use zeroize::Zeroizing;

use wxlogin_common::config::{ConfigError, Source, optional};

/// The data keys: `<key id>:<base64 of 32 bytes>`, comma-separated; the
/// first seals, all open.
pub const KEYS_VAR: &str = "DATA_ENCRYPTION_KEYS";
/// The blind index's key: base64 of 32 bytes.
pub const INDEX_KEY_VAR: &str = "DATA_INDEX_KEY";

/// The sealed format this build writes (and the only one it reads).
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// The longest key id.
pub const KEY_ID_MAX: usize = 16;
/// The most bytes sealing adds to a value.
pub const MAX_OVERHEAD: usize = 2 + KEY_ID_MAX + NONCE_LEN + TAG_LEN;
/// The length of a blind index.
pub const INDEX_LEN: usize = 32;

/// The longest sealed value of a plaintext of at most `plain_max` bytes.
pub const fn sealed_len_max(plain_max: usize) -> usize {
    plain_max + MAX_OVERHEAD
}

/// Why a sealed value does not open. Says nothing of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed value of a format this build reads")]
    Malformed,
    #[error("sealed under key {0:?}, which {KEYS_VAR} does not hold")]
    UnknownKey(String),
    #[error("the sealed value does not authenticate (tampered, or stored elsewhere)")]
    Unauthentic,
}

/// Why a value could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the OS random number generator failed")]
    Random,
    #[error("the value is too long to seal")]
    TooLong,
}

struct DataKey {
    id: Box<str>,
    cipher: Aes256Gcm,
}

/// The data keys, each an AES-256-GCM cipher built once. The first seals;
/// every one opens. Cheap to clone. `Debug` shows the key ids only; the
/// ciphers clear their key schedules when dropped.
#[derive(Clone)]
pub struct DataKeys(Arc<[DataKey]>);

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Whether `id` is a key id: 1 to 16 of `A-Z a-z 0-9 _ -`.
pub fn is_key_id(id: &str) -> bool {
    (1..=KEY_ID_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// 32 bytes from base64, or why not (never quoting the value).
fn key_bytes(encoded: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, &'static str> {
    let decoded = Zeroizing::new(
        STANDARD
            .decode(encoded)
            .map_err(|_| "the key is not standard base64")?,
    );
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if decoded.len() != KEY_LEN {
        return Err("the key must be 32 bytes (44 characters of base64)");
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}

/// 32 random bytes from the OS, in base64: a new key.
pub fn generate_key() -> Result<Zeroizing<String>, SealError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    SysRng
        .try_fill_bytes(key.as_mut())
        .map_err(|_| SealError::Random)?;
    Ok(Zeroizing::new(STANDARD.encode(key.as_ref())))
}

impl DataKeys {
    /// The keys of a `DATA_ENCRYPTION_KEYS` value. Errors name the entry by
    /// its position and never quote a key (nor an id that may be one).
    pub fn parse(value: &str) -> Result<DataKeys, String> {
        let mut keys: Vec<DataKey> = Vec::new();
        for (index, entry) in value.split(',').enumerate() {
            let n = index + 1;
            let Some((id, encoded)) = entry.trim().split_once(':') else {
                return Err(format!("entry {n} is not <key id>:<base64 key>"));
            };
            if !is_key_id(id) {
                return Err(format!(
                    "entry {n}: a key id is 1 to {KEY_ID_MAX} of A-Z a-z 0-9 _ -"
                ));
            }
            if keys.iter().any(|key| &*key.id == id) {
                return Err(format!("entry {n}: key id {id:?} appears twice"));
            }
            let bytes = key_bytes(encoded).map_err(|message| format!("entry {n}: {message}"))?;
            keys.push(DataKey {
                id: id.into(),
                cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*bytes)),
            });
        }
        Ok(DataKeys(keys.into()))
    }

    /// `DATA_ENCRYPTION_KEYS`, if set.
    pub fn from_source(source: &dyn Source) -> Result<Option<DataKeys>, ConfigError> {
        optional(source, KEYS_VAR)
            .map(|value| {
                let value = Zeroizing::new(value);
                DataKeys::parse(&value).map_err(|message| ConfigError::invalid(KEYS_VAR, message))
            })
            .transpose()
    }

    /// `DATA_ENCRYPTION_KEYS`, which must be set: a service that stores
    /// personal data must not store it in the clear for want of a key.
    pub fn required(source: &dyn Source) -> Result<DataKeys, ConfigError> {
        DataKeys::from_source(source)?.ok_or_else(|| {
            ConfigError::invalid(
                KEYS_VAR,
                "must be set (<key id>:<base64 of 32 bytes>, comma-separated, newest first): \
                 personal data is stored encrypted",
            )
        })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        // `parse` never makes an empty list: `split` yields one entry at least.
        self.0.first().map_or("", |key| &key.id)
    }

    /// Every key id, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|key| &*key.id)
    }

    /// `plaintext` sealed under the current key, bound to `aad`.
    pub fn seal(&self, aad: &[&[u8]], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::with_capacity(sealed_len_max(plaintext.len()));
        self.seal_into(aad, &mut out, |buffer| buffer.extend_from_slice(plaintext))?;
        Ok(out)
    }

    /// Appends to `out` the sealed value of what `write` appends to it,
    /// sealed in place: no buffer of its own.
    pub fn seal_into(
        &self,
        aad: &[&[u8]],
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), SealError> {
        let key = self.0.first().ok_or(SealError::Random)?;
        let mut nonce = [0u8; NONCE_LEN];
        SysRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let start = out.len();
        // The id is at most 16 bytes (checked by `parse`).
        out.extend_from_slice(&[FORMAT, key.id.len() as u8]);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&nonce);
        let body = out.len();
        write(out);
        let tag = with_aad(aad, |aad| {
            key.cipher
                .encrypt_inout_detached(&Nonce::from(nonce), aad, out[body..].as_mut().into())
        });
        match tag {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(SealError::TooLong)
            }
        }
    }

    /// Opens `sealed` in place (it is overwritten) and returns the
    /// plaintext, a part of it. No allocation.
    pub fn open<'a>(&self, aad: &[&[u8]], sealed: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        let (id, nonce_at) = header(sealed)?;
        let key = self
            .0
            .iter()
            .find(|key| key.id.as_bytes() == id)
            .ok_or_else(|| OpenError::UnknownKey(String::from_utf8_lossy(id).into_owned()))?;
        let body_at = nonce_at + NONCE_LEN;
        let tag_at = sealed.len() - TAG_LEN;
        let (head, tail) = sealed.split_at_mut(tag_at);
        let tag = Tag::try_from(&tail[..]).map_err(|_| OpenError::Malformed)?;
        let nonce: [u8; NONCE_LEN] = head[nonce_at..body_at]
            .try_into()
            .map_err(|_| OpenError::Malformed)?;
        let body = &mut head[body_at..];
        with_aad(aad, |aad| {
            key.cipher
                .decrypt_inout_detached(&Nonce::from(nonce), aad, body.into(), &tag)
        })
        .map_err(|_| OpenError::Unauthentic)?;
        Ok(&sealed[body_at..tag_at])
    }

    /// [`open`](Self::open) into a new buffer, leaving `sealed` as it is.
    pub fn open_to_vec(&self, aad: &[&[u8]], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut copy = sealed.to_vec();
        let plain = self.open(aad, &mut copy)?.len();
        let body_at = copy.len() - TAG_LEN - plain;
        copy.truncate(body_at + plain);
        copy.drain(..body_at);
        Ok(copy)
    }
}

/// The key id of a sealed value, as written; `None` if it is not one.
pub fn key_id_of(sealed: &[u8]) -> Option<&str> {
    let (id, _) = header(sealed).ok()?;
    std::str::from_utf8(id).ok()
}

/// The key id of `sealed` and where its nonce starts, once its length
/// holds a whole value.
fn header(sealed: &[u8]) -> Result<(&[u8], usize), OpenError> {
    let [FORMAT, id_len, rest @ ..] = sealed else {
        return Err(OpenError::Malformed);
    };
    let id_len = usize::from(*id_len);
    if id_len == 0 || id_len > KEY_ID_MAX || rest.len() < id_len + NONCE_LEN + TAG_LEN {
        return Err(OpenError::Malformed);
    }
    Ok((&rest[..id_len], 2 + id_len))
}

/// Runs `f` with the additional data of `parts`: each part as its length
/// (2 bytes, big-endian) then its bytes, so that no two lists of parts
/// give the same bytes. On the stack when it fits (always, for users).
fn with_aad<R>(parts: &[&[u8]], f: impl FnOnce(&[u8]) -> R) -> R {
    const STACK: usize = 512;
    let len: usize = parts.iter().map(|part| 2 + part.len()).sum();
    let mut stack = [0u8; STACK];
    let mut heap = Vec::new();
    let buffer: &mut [u8] = if len <= STACK {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    for part in parts {
        // Parts are user fields, far below 64 KiB; a longer one is cut in
        // its length only, and still binds all its bytes.
        let part_len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        buffer[at..at + 2].copy_from_slice(&part_len.to_be_bytes());
        buffer[at + 2..at + 2 + part.len()].copy_from_slice(part);
        at += 2 + part.len();
    }
    f(buffer)
}

/// The blind index's key: an HMAC-SHA-256, keyed once. `Debug` is redacted.
#[derive(Clone)]
pub struct IndexKey(Hmac<Sha256>);

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexKey([REDACTED])")
    }
}

impl IndexKey {
    /// The key of a `DATA_INDEX_KEY` value (base64 of 32 bytes).
    pub fn parse(value: &str) -> Result<IndexKey, String> {
        let bytes = key_bytes(value.trim())?;
        Hmac::<Sha256>::new_from_slice(bytes.as_ref())
            .map(IndexKey)
            .map_err(|_| "the key is not usable for HMAC".to_owned())
    }

    /// `DATA_INDEX_KEY`, which must be set.
    pub fn required(source: &dyn Source) -> Result<IndexKey, ConfigError> {
        let value = Zeroizing::new(optional(source, INDEX_KEY_VAR).ok_or_else(|| {
            ConfigError::invalid(
                INDEX_KEY_VAR,
                "must be set (base64 of 32 bytes): phone numbers are looked up by a keyed index",
            )
        })?);
        IndexKey::parse(&value).map_err(|message| ConfigError::invalid(INDEX_KEY_VAR, message))
    }

    /// The blind index of a phone number: HMAC of its normal form
    /// ([`normal_phone`]), so that equal numbers written differently meet.
    pub fn phone(&self, country_code: &str, pure_number: &str) -> [u8; INDEX_LEN] {
        let mut mac = self.0.clone();
        mac.update(b"phone\0");
        for c in normal_phone(country_code, pure_number) {
            mac.update(&[c]);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The digits of the country code, a `:`, then the digits of the number:
/// `+86` and `13800138000` are `86:13800138000`.
fn normal_phone<'a>(country_code: &'a str, pure_number: &'a str) -> impl Iterator<Item = u8> + 'a {
    let digits = |text: &'a str| text.bytes().filter(u8::is_ascii_digit);
    digits(country_code)
        .chain(std::iter::once(b':'))
        .chain(digits(pure_number))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn keys(value: &str) -> DataKeys {
        DataKeys::parse(value).unwrap()
    }

    const AAD: &[&[u8]] = &[b"wxapp", b"o-1", b"nickname"];

    #[test]
    fn a_value_opens_as_sealed() {
        let keys = keys(&format!("a:{KEY_A}"));
        for plain in [&b""[..], b"x", "微信用户 😀".as_bytes(), &[7u8; 5000]] {
            let mut sealed = keys.seal(AAD, plain).unwrap();

            assert_eq!(key_id_of(&sealed), Some("a"));
            assert!(sealed.len() <= sealed_len_max(plain.len()));
            assert_eq!(keys.open_to_vec(AAD, &sealed).unwrap(), plain);
            assert_eq!(keys.open(AAD, &mut sealed).unwrap(), plain);
        }
    }

    #[test]
    fn every_seal_has_its_own_nonce() {
        let keys = keys(&format!("a:{KEY_A}"));
        assert_ne!(keys.seal(AAD, b"x").unwrap(), keys.seal(AAD, b"x").unwrap());
    }

    #[test]
    fn the_plaintext_does_not_appear_in_the_sealed_value() {
        let keys = keys(&format!("a:{KEY_A}"));
        let sealed = keys.seal(AAD, b"13800138000").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"13800138000"));
    }

    #[test]
    fn older_keys_open_and_the_first_seals() {
        let old = keys(&format!("a:{KEY_A}"));
        let sealed = old.seal(AAD, b"x").unwrap();
        let rotated = keys(&format!("b:{KEY_B},a:{KEY_A}"));

        assert_eq!(rotated.open_to_vec(AAD, &sealed).unwrap(), b"x");
        assert_eq!(rotated.current_id(), "b");
        assert_eq!(key_id_of(&rotated.seal(AAD, b"x").unwrap()), Some("b"));
    }

    #[test]
    fn an_unknown_key_is_said_by_its_id() {
        let sealed = keys(&format!("a:{KEY_A}")).seal(AAD, b"x").unwrap();
        let error = keys(&format!("b:{KEY_B}"))
            .open_to_vec(AAD, &sealed)
            .unwrap_err();
        assert_eq!(error, OpenError::UnknownKey("a".into()));
        assert!(error.to_string().contains("\"a\""), "{error}");
    }

    #[test]
    fn the_same_id_with_another_key_does_not_open() {
        let sealed = keys(&format!("a:{KEY_A}")).seal(AAD, b"x").unwrap();
        let error = keys(&format!("a:{KEY_B}"))
            .open_to_vec(AAD, &sealed)
            .unwrap_err();
        assert_eq!(error, OpenError::Unauthentic);
    }

    #[test]
    fn every_tampered_byte_is_noticed() {
        let keys = keys(&format!("a:{KEY_A}"));
        let sealed = keys.seal(AAD, b"13800138000").unwrap();
        for at in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[at] ^= 0x01;
            assert!(keys.open_to_vec(AAD, &tampered).is_err(), "byte {at}");
        }
    }

    #[test]
    fn a_value_does_not_open_in_another_row_or_column() {
        let keys = keys(&format!("a:{KEY_A}"));
        let sealed = keys.seal(AAD, b"x").unwrap();
        for other in [
            &[&b"wxapp"[..], b"o-2", b"nickname"][..],
            &[b"wxapp", b"o-1", b"city"],
            &[b"wxappo-1", b"", b"nickname"],
            &[b"wxapp", b"o-1"],
        ] {
            assert_eq!(
                keys.open_to_vec(other, &sealed),
                Err(OpenError::Unauthentic)
            );
        }
    }

    #[test]
    fn garbage_is_malformed_and_never_panics() {
        let keys = keys(&format!("a:{KEY_A}"));
        let sealed = keys.seal(AAD, b"x").unwrap();
        for len in 0..sealed.len() {
            assert!(keys.open_to_vec(AAD, &sealed[..len]).is_err(), "{len}");
        }
        for garbage in [&b""[..], b"\x01", b"\x02\x01a", b"\x01\x00", &[1, 17, 0, 0]] {
            assert_eq!(
                keys.open_to_vec(AAD, garbage),
                Err(OpenError::Malformed),
                "{garbage:?}"
            );
        }
        let long_aad = vec![0u8; 70_000];
        assert!(keys.open_to_vec(&[&long_aad], &sealed).is_err());
    }

    #[test]
    fn bad_configuration_is_refused_without_quoting_keys() {
        for (value, says) in [
            ("", "entry 1 is not"),
            (KEY_A, "entry 1 is not"),
            (&format!("a b:{KEY_A}"), "entry 1: a key id"),
            (&format!("{}:{KEY_A}", "x".repeat(17)), "entry 1: a key id"),
            ("a:c2hvcnQ=", "entry 1: the key must be 32 bytes"),
            ("a:not base64!", "entry 1: the key is not standard base64"),
            (
                &format!("a:{KEY_A},a:{KEY_B}"),
                "entry 2: key id \"a\" appears twice",
            ),
            (&format!("a:{KEY_A},"), "entry 2 is not"),
        ] {
            let error = DataKeys::parse(value).unwrap_err();
            assert!(error.starts_with(says), "{value}: {error}");
            assert!(!error.contains(KEY_A) && !error.contains(KEY_B), "{error}");
        }
        let missing = DataKeys::required(&wxlogin_common::config::Map::new(&[])).unwrap_err();
        assert!(missing.to_string().starts_with(KEYS_VAR), "{missing}");
        let bad =
            DataKeys::required(&wxlogin_common::config::Map::new(&[(KEYS_VAR, "x")])).unwrap_err();
        assert!(bad.to_string().starts_with(KEYS_VAR), "{bad}");
        let bad = IndexKey::required(&wxlogin_common::config::Map::new(&[(
            INDEX_KEY_VAR,
            "c2hvcnQ=",
        )]))
        .unwrap_err();
        assert!(bad.to_string().starts_with(INDEX_KEY_VAR), "{bad}");
    }

    #[test]
    fn debug_shows_no_key() {
        let keys = keys(&format!("a:{KEY_A}, b:{KEY_B}"));
        let index = IndexKey::parse(KEY_A).unwrap();
        let shown = format!("{keys:?} {index:?}");
        assert_eq!(
            shown,
            "DataKeys { ids: [\"a\", \"b\"], .. } IndexKey([REDACTED])"
        );
    }

    #[test]
    fn the_blind_index_is_keyed_and_normalised() {
        let index = IndexKey::parse(KEY_A).unwrap();
        let other = IndexKey::parse(KEY_B).unwrap();

        assert_eq!(
            index.phone("+86", "13800138000"),
            index.phone("86", "138 0013 8000")
        );
        assert_ne!(
            index.phone("86", "13800138000"),
            index.phone("8", "613800138000")
        );
        assert_ne!(
            index.phone("86", "13800138000"),
            other.phone("86", "13800138000")
        );
    }

    #[test]
    fn generated_keys_parse() {
        let key = generate_key().unwrap();
        assert!(DataKeys::parse(&format!("local:{}", key.as_str())).is_ok());
        assert!(IndexKey::parse(&key).is_ok());
    }
}
