//! What WeChat does with the session_key: sealing user data for
//! `wx.getUserInfo` / `getUserProfile` / `getPhoneNumber` (`encryptedData` +
//! `iv`), signing `rawData`, and the checkSessionKey signature.
//!
//! Written from WeChat's documentation alone, apart from our services'
//! decryption code: if both sides shared code they could agree on a mistake.

use aes::Aes128;
use base64::{Engine, engine::general_purpose::STANDARD};
use cbc::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// Sealed user data, as the mini-program receives it: both fields standard
/// base64 with padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    #[serde(rename = "encryptedData")]
    pub encrypted_data: String,
    pub iv: String,
}

/// Why data could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// The session_key is not standard base64 of 16 bytes (a test minted a
    /// code with a made-up key, say).
    InvalidSessionKey,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::InvalidSessionKey => {
                f.write_str("the session_key is not base64 of 16 bytes")
            }
        }
    }
}

impl std::error::Error for SealError {}

/// Seals `plaintext` as WeChat seals user data: AES-128-CBC with PKCS#7
/// padding, key = base64-decode(session_key), a fresh random 16-byte iv.
pub fn seal(session_key_b64: &str, plaintext: &[u8]) -> Result<Sealed, SealError> {
    let mut iv = [0u8; 16];
    rand::rng().fill(&mut iv);
    seal_with_iv(session_key_b64, &iv, plaintext)
}

fn seal_with_iv(
    session_key_b64: &str,
    iv: &[u8; 16],
    plaintext: &[u8],
) -> Result<Sealed, SealError> {
    let key = STANDARD
        .decode(session_key_b64)
        .map_err(|_| SealError::InvalidSessionKey)?;
    let encryptor = cbc::Encryptor::<Aes128>::new_from_slices(&key, iv)
        .map_err(|_| SealError::InvalidSessionKey)?;
    // PKCS#7 always pads, by a whole block when the length is a multiple of 16.
    let mut buffer = plaintext.to_vec();
    buffer.resize((plaintext.len() / 16 + 1) * 16, 0);
    // The buffer has room for the padding, so this cannot fail; an empty
    // answer would still be refused by any decryption.
    let ciphertext = encryptor
        .encrypt_padded::<Pkcs7>(&mut buffer, plaintext.len())
        .unwrap_or_default();
    Ok(Sealed {
        encrypted_data: STANDARD.encode(ciphertext),
        iv: STANDARD.encode(iv),
    })
}

/// Seals `data` for `appid` the way WeChat does: a JSON object gets
/// `"watermark": {"appid", "timestamp"}` unless it already has a
/// `watermark` (tests forging a foreign or stale one keep theirs).
pub(crate) fn seal_user_data(
    appid: &str,
    session_key_b64: &str,
    mut data: Value,
    timestamp: i64,
) -> Result<Sealed, SealError> {
    if let Value::Object(object) = &mut data {
        object
            .entry("watermark")
            .or_insert_with(|| json!({"appid": appid, "timestamp": timestamp}));
    }
    // Serialising a `Value` cannot fail: its map keys are strings.
    let plaintext = serde_json::to_vec(&data).unwrap_or_default();
    seal(session_key_b64, &plaintext)
}

/// The `signature` WeChat sends with `rawData`: lowercase hex of
/// SHA-1(rawData followed by the session_key string).
pub fn raw_data_signature(raw_data: &str, session_key_b64: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(raw_data.as_bytes());
    sha1.update(session_key_b64.as_bytes());
    hex::encode(sha1.finalize())
}

/// The signature checkSessionKey accepts for `session_key`: lowercase hex
/// of HMAC-SHA256 keyed with the session_key *string* (not its decoded
/// bytes) over the empty message.
pub(crate) fn check_session_signature(session_key: &str) -> String {
    // HMAC takes keys of any length: this cannot fail. Were it to, the
    // empty string matches no signature a client sends as valid hex.
    <Hmac<Sha256> as KeyInit>::new_from_slice(session_key.as_bytes())
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use cbc::cipher::BlockModeDecrypt;

    const KEY: &str = "HyVFkGl5F5OQWJZZaNzBBg==";

    fn open(session_key: &str, sealed: &Sealed) -> Vec<u8> {
        let key = STANDARD.decode(session_key).unwrap();
        let iv = STANDARD.decode(&sealed.iv).unwrap();
        let ciphertext = STANDARD.decode(&sealed.encrypted_data).unwrap();
        let mut buffer = ciphertext.clone();
        cbc::Decryptor::<Aes128>::new_from_slices(&key, &iv)
            .unwrap()
            .decrypt_padded::<Pkcs7>(&mut buffer)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn sealing_matches_an_independent_implementation() {
        // printf '%s' "$PLAINTEXT" | openssl enc -aes-128-cbc \
        //   -K 1f254590697917939058965968dcc106 -iv afb0575ca90b6fcaab48d9f4e67d2a88 | base64 -w0
        let plaintext = r#"{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","watermark":{"appid":"wx4f4bc4dec97d474b","timestamp":1477314187}}"#;
        let iv: [u8; 16] = STANDARD
            .decode("r7BXXKkLb8qrSNn05n0qiA==")
            .unwrap()
            .try_into()
            .unwrap();

        let sealed = seal_with_iv(KEY, &iv, plaintext.as_bytes()).unwrap();

        assert_eq!(
            sealed.encrypted_data,
            "aNsfMh3+Jsvbmz4M0Btvnq076sQu/vLPHI7rUW5/M9ukrbLcqbVmSki1cKP4wxwj7IPg3Na2AiIjAHi2agu/9pnjpvQGWIGP/fliwQwfREvkyW6B5PNKv2bkbjJ+9l2u0juSQ6FMthdHMv3i4QyUIA=="
        );
        assert_eq!(sealed.iv, "r7BXXKkLb8qrSNn05n0qiA==");
    }

    #[test]
    fn sealed_data_opens_with_the_session_key_and_its_iv() {
        let sealed = seal(KEY, b"hello, sixteen!!").unwrap();
        let again = seal(KEY, b"hello, sixteen!!").unwrap();

        assert_eq!(open(KEY, &sealed), b"hello, sixteen!!");
        // A full block of padding follows a plaintext of whole blocks.
        assert_eq!(STANDARD.decode(&sealed.encrypted_data).unwrap().len(), 32);
        assert_eq!(STANDARD.decode(&sealed.iv).unwrap().len(), 16);
        assert_ne!(sealed.iv, again.iv, "the iv is random");
        assert_ne!(sealed.encrypted_data, again.encrypted_data);
    }

    #[test]
    fn a_key_that_is_not_16_bytes_of_base64_is_refused() {
        for key in [
            "",
            "not base64!",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert_eq!(seal(key, b"x"), Err(SealError::InvalidSessionKey), "{key}");
        }
    }

    #[test]
    fn user_data_gets_a_watermark_unless_it_has_one() {
        let sealed = seal_user_data("wxa", KEY, json!({"nickName": "Band"}), 1700000000).unwrap();
        let opened: Value = serde_json::from_slice(&open(KEY, &sealed)).unwrap();
        assert_eq!(
            opened,
            json!({"nickName": "Band", "watermark": {"appid": "wxa", "timestamp": 1700000000}})
        );

        let forged =
            json!({"nickName": "Band", "watermark": {"appid": "wx_other", "timestamp": 1}});
        let sealed = seal_user_data("wxa", KEY, forged.clone(), 1700000000).unwrap();
        let opened: Value = serde_json::from_slice(&open(KEY, &sealed)).unwrap();
        assert_eq!(opened, forged);
    }

    #[test]
    fn the_raw_data_signature_matches_wechats_documented_vector() {
        let raw_data = r#"{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w7bQxKARol6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5ibXQ/0"}"#;
        assert_eq!(
            raw_data_signature(raw_data, KEY),
            "75e81ceda165f4ffa64f4068af58c64b8f54b88c"
        );
    }

    #[test]
    fn the_check_session_signature_keys_hmac_with_the_base64_text() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"HyVFkGl5F5OQWJZZaNzBBg==", b"", hashlib.sha256).hexdigest())'
        assert_eq!(
            check_session_signature(KEY),
            "252b75c92698025afe925b29cca5517fdf9ee67aae072cf3225ebf3a53783058"
        );
    }
}
