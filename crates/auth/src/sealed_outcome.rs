//! A login's outcome, sealed under a key only a holder of its code can
//! derive, so that every auth instance sharing the store can answer a
//! duplicate submission of the code with the same session, while the store
//! itself never holds a usable token or anything about the session in the
//! clear.
//!
//! From `(appid, code)` come two independent values (different labels): the
//! slot, a SHA-256 that names the outcome in the store and reveals nothing
//! of the code, and an AES-256-GCM key (HKDF-SHA-256 of the code). A
//! WeChat code carries far more entropy than anyone can search, and lives
//! five minutes; the sealed outcome lives as long.

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use hkdf::Hkdf;
use rand::{TryRng, rngs::SysRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wxlogin_provider::{ErrorKind, ProviderError};

use crate::store::SessionRecord;

const SLOT_LABEL: &[u8] = b"wxlogin login key";
const KEY_LABEL: &[u8] = b"wxlogin login outcome key";
const NONCE_LEN: usize = 12;

/// What the store keeps about one code, and how to read it.
pub struct CodeSecrets {
    slot: String,
    key: [u8; 32],
}

impl CodeSecrets {
    /// Both values for `code` of `appid`. The parts are separated by a NUL,
    /// which neither an appid nor a code (checked before) contains.
    pub fn derive(appid: &str, code: &str) -> CodeSecrets {
        let mut slot = Sha256::new();
        for part in [SLOT_LABEL, appid.as_bytes(), code.as_bytes()] {
            slot.update(part);
            slot.update([0]);
        }
        let mut key = [0u8; 32];
        let info = [KEY_LABEL, &[0], appid.as_bytes()].concat();
        // 32 bytes is far below HKDF-SHA-256's limit of 8160: it cannot fail.
        let _ = Hkdf::<Sha256>::new(None, code.as_bytes()).expand(&info, &mut key);
        CodeSecrets {
            slot: hex::encode(slot.finalize()),
            key,
        }
    }

    /// The outcome's name in the store (lowercase hex).
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// `outcome` encrypted and authenticated (bound to this slot), as
    /// base64 text.
    pub fn seal(&self, outcome: &Recorded) -> Result<String, SealError> {
        let plain = serde_json::to_vec(outcome).map_err(|_| SealError)?;
        let mut nonce = [0u8; NONCE_LEN];
        SysRng.try_fill_bytes(&mut nonce).map_err(|_| SealError)?;
        let sealed = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: self.slot.as_bytes(),
                },
            )
            .map_err(|_| SealError)?;
        Ok(STANDARD_NO_PAD.encode([&nonce[..], &sealed].concat()))
    }

    /// The outcome [`seal`](Self::seal) sealed for this code.
    pub fn open(&self, sealed: &str) -> Result<Recorded, SealError> {
        let bytes = STANDARD_NO_PAD.decode(sealed).map_err(|_| SealError)?;
        let (nonce, sealed) = bytes.split_at_checked(NONCE_LEN).ok_or(SealError)?;
        let nonce = Nonce::try_from(nonce).map_err(|_| SealError)?;
        let plain = self
            .cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: self.slot.as_bytes(),
                },
            )
            .map_err(|_| SealError)?;
        serde_json::from_slice(&plain).map_err(|_| SealError)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.key))
    }
}

/// A sealed outcome that cannot be made or read; deliberately says nothing
/// more (it would be about the key or the plaintext).
#[derive(Debug, thiserror::Error)]
#[error("a login outcome could not be sealed or opened")]
pub struct SealError;

/// What a login of a code came to, as every later submission of the code
/// must be answered.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recorded {
    Session {
        token: String,
        record: SessionRecord,
        expires_in_secs: u64,
    },
    Refused {
        error: Refusal,
    },
}

/// Why an exchange failed for good: the provider's verdict on the code, or
/// a failure after the code may have reached the provider (so trying it
/// again could only burn it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    InvalidCode,
    CodeUsed,
    UserBlocked,
    Timeout,
    Failed,
}

impl Refusal {
    /// The refusal to record for `error`, or `None` when the code surely
    /// was not spent (the provider busy, unreachable, our configuration,
    /// the rate limit) and a retry with it may succeed.
    pub fn of(error: &ProviderError) -> Option<Refusal> {
        match error.kind() {
            ErrorKind::CodeRefused => Some(Refusal::InvalidCode),
            ErrorKind::CodeSpent => Some(Refusal::CodeUsed),
            ErrorKind::SubjectBlocked => Some(Refusal::UserBlocked),
            ErrorKind::TimedOut => Some(Refusal::Timeout),
            ErrorKind::Failed => Some(Refusal::Failed),
            ErrorKind::Busy
            | ErrorKind::Unavailable
            | ErrorKind::RateLimited
            | ErrorKind::CredentialsRefused
            | ErrorKind::Misconfigured
            | ErrorKind::DataMalformed
            | ErrorKind::DataInvalid
            | ErrorKind::Unsupported
            | ErrorKind::Host => None,
        }
    }

    /// The error of `provider` the recorded refusal answers again, in the
    /// words its own error had.
    pub fn error(self, provider: &'static str) -> ProviderError {
        let (kind, detail) = match self {
            Refusal::InvalidCode => (
                ErrorKind::CodeRefused,
                format!("{provider} does not know the code"),
            ),
            Refusal::CodeUsed => (ErrorKind::CodeSpent, "the code was already used".to_owned()),
            Refusal::UserBlocked => (
                ErrorKind::SubjectBlocked,
                format!("{provider} blocked the user as high-risk"),
            ),
            Refusal::Timeout => (
                ErrorKind::TimedOut,
                format!("{provider} did not answer in time"),
            ),
            Refusal::Failed => (
                ErrorKind::Failed,
                format!(
                    "unexpected answer from {provider}: an earlier submission of this code failed"
                ),
            ),
        };
        ProviderError::new(provider, kind, detail)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn session() -> Recorded {
        Recorded::Session {
            token: "t".repeat(43),
            record: SessionRecord {
                appid: "wxa".into(),
                openid: "o-openid-in-clear".into(),
                unionid: None,
                created_at_ms: 1,
                absolute_expiry_ms: 2,
                key_fingerprint: "f".into(),
                user_agent: None,
                address_prefix: None,
            },
            expires_in_secs: 3600,
        }
    }

    #[test]
    fn only_the_same_code_of_the_same_app_opens_an_outcome() {
        let secrets = CodeSecrets::derive("wxa", "code1");
        let sealed = secrets.seal(&session()).unwrap();
        assert!(matches!(
            secrets.open(&sealed).unwrap(),
            Recorded::Session { ref token, .. } if token == &"t".repeat(43)
        ));
        // (Strings long enough not to turn up in random base64 by chance.)
        assert!(!sealed.contains("openid-in-clear") && !sealed.contains("tttttttt"));
        assert!(CodeSecrets::derive("wxa", "code2").open(&sealed).is_err());
        assert!(CodeSecrets::derive("wxb", "code1").open(&sealed).is_err());
        assert_eq!(
            secrets.slot(),
            CodeSecrets::derive("wxa", "code1").slot(),
            "every instance finds the same slot"
        );
        assert_ne!(secrets.slot(), CodeSecrets::derive("wxa", "code2").slot());
    }

    #[test]
    fn a_tampered_outcome_does_not_open() {
        let secrets = CodeSecrets::derive("wxa", "code1");
        let sealed = secrets.seal(&session()).unwrap();
        let mut bytes = STANDARD_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(secrets.open(&STANDARD_NO_PAD.encode(bytes)).is_err());
        assert!(secrets.open("").is_err());
        assert!(secrets.open("not base64!").is_err());
        assert_ne!(sealed, secrets.seal(&session()).unwrap(), "a fresh nonce");
    }
}
