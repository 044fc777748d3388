//! Random identifiers shaped like WeChat's, so that code which validates
//! lengths or alphabets sees what production sends.
//!
//! `rand::rng()` is a CSPRNG reseeded from the OS: fast enough to mint codes
//! under a benchmark, and unpredictable like WeChat's own values.

use base64::Engine;
use rand::{
    RngExt,
    distr::{Alphanumeric, SampleString},
};

/// The alphabet of openids (URL-safe base64).
const OPENID_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A login code: 32 characters of `[A-Za-z0-9]`.
pub(crate) fn code() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// An openid: 28 characters of `[A-Za-z0-9_-]` starting with `o`.
pub(crate) fn openid() -> String {
    let mut rng = rand::rng();
    let mut openid = String::with_capacity(28);
    openid.push('o');
    for _ in 0..27 {
        // 64 symbols: the low six bits pick one without bias.
        let index = usize::from(rng.random::<u8>() & 63);
        openid.push(char::from(OPENID_ALPHABET[index]));
    }
    openid
}

/// A session_key: 16 random bytes in standard base64 (24 characters).
pub(crate) fn session_key() -> String {
    let mut key = [0u8; 16];
    rand::rng().fill(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// An access_token: 136 characters of `[A-Za-z0-9_-]`, about as long as
/// WeChat's, so that code storing tokens sees a realistic size.
pub(crate) fn access_token() -> String {
    let mut rng = rand::rng();
    (0..136)
        .map(|_| char::from(OPENID_ALPHABET[usize::from(rng.random::<u8>() & 63)]))
        .collect()
}

/// A phone code from the `getPhoneNumber` button: 64 lowercase hex digits.
pub(crate) fn phone_code() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    hex::encode(bytes)
}

/// A mainland China mobile number: 11 digits, `1[3-9]` then nine more.
pub(crate) fn phone_number() -> String {
    let mut rng = rand::rng();
    let mut number = String::with_capacity(11);
    number.push('1');
    number.push(char::from(b'0' + rng.random_range(3..=9u8)));
    for _ in 0..9 {
        number.push(char::from(b'0' + rng.random_range(0..=9u8)));
    }
    number
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_look_like_wechat_codes() {
        let code = code();
        assert_eq!(code.len(), 32);
        assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
        assert_ne!(code, super::code());
    }

    #[test]
    fn openids_look_like_wechat_openids() {
        for _ in 0..100 {
            let openid = openid();
            assert_eq!(openid.len(), 28);
            assert!(openid.starts_with('o'));
            assert!(
                openid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{openid}"
            );
        }
    }

    #[test]
    fn session_keys_are_sixteen_bytes_of_standard_base64() {
        let key = session_key();
        assert_eq!(key.len(), 24);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        assert_eq!(bytes.len(), 16);
        assert_ne!(key, session_key());
    }

    #[test]
    fn access_tokens_are_long_and_url_safe() {
        let token = access_token();
        assert_eq!(token.len(), 136);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert_ne!(token, access_token());
    }

    #[test]
    fn phone_codes_and_numbers_look_like_wechat_ones() {
        let code = phone_code();
        assert_eq!(code.len(), 64);
        assert!(code.bytes().all(|b| b.is_ascii_hexdigit()), "{code}");
        for _ in 0..100 {
            let number = phone_number();
            assert_eq!(number.len(), 11);
            assert!(number.starts_with('1'));
            assert!(number.as_bytes()[1] >= b'3', "{number}");
            assert!(number.bytes().all(|b| b.is_ascii_digit()), "{number}");
        }
    }
}
