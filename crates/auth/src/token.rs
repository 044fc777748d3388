//! Session tokens: 32 bytes, base64url without padding: 30 from the OS
//! CSPRNG (240 bits a guesser must find), then the user's shard (see
//! `wxlogin_redis::keys::shard`), big-endian, which names the Redis
//! Cluster hash slot of the session's key.
//!
//! Only the SHA-256 of a token is ever stored or used as a key; the token
//! itself lives in the client and in memory for the length of a request.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{TryRng, rngs::SysRng};
use sha2::{Digest, Sha256};
use std::fmt;

/// Bytes in a token.
pub const TOKEN_BYTES: usize = 32;
/// Of them, random.
const RANDOM_BYTES: usize = TOKEN_BYTES - 2;
/// Characters in a token's base64url form.
pub const TOKEN_LEN: usize = 43;

/// A bearer token as handed to the client. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// 32 fresh bytes from the operating system's CSPRNG (a secret, or a
    /// session in a random shard).
    pub fn generate() -> Result<Token, rand::rngs::SysError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        SysRng.try_fill_bytes(&mut bytes)?;
        Ok(Token(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A fresh token from the operating system's CSPRNG, for a session of
    /// a user in `shard`.
    pub fn for_shard(shard: u16) -> Result<Token, rand::rngs::SysError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        SysRng.try_fill_bytes(&mut bytes[..RANDOM_BYTES])?;
        bytes[RANDOM_BYTES..].copy_from_slice(&shard.to_be_bytes());
        Ok(Token(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The shard the token's session is kept in (any token a client makes
    /// up names some shard, where its session is not found).
    pub fn shard(&self) -> u16 {
        let mut bytes = [0u8; TOKEN_BYTES];
        // A parsed token always decodes to TOKEN_BYTES.
        let _ = URL_SAFE_NO_PAD.decode_slice(self.0.as_bytes(), &mut bytes);
        u16::from_be_bytes([bytes[RANDOM_BYTES], bytes[RANDOM_BYTES + 1]])
            % wxlogin_redis::keys::SHARDS
    }

    /// Accepts what a client sent if it has the shape of one of our tokens.
    /// Anything else cannot name a session, so it is turned away before any
    /// lookup.
    pub fn parse(raw: &str) -> Option<Token> {
        let well_formed = raw.len() == TOKEN_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && URL_SAFE_NO_PAD
                .decode(raw)
                .is_ok_and(|bytes| bytes.len() == TOKEN_BYTES);
        well_formed.then(|| Token(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The lowercase hex SHA-256 of the token: what storage sees.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// The session's public id: the first 128 bits of [`Token::digest`].
    /// It names the session in logs and to the services behind forward
    /// authentication, and cannot be turned back into the token.
    pub fn session_id(&self) -> String {
        let mut digest = self.digest();
        digest.truncate(32);
        digest
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tokens_are_43_url_safe_characters_and_unique() {
        let tokens: HashSet<String> = (0..1000)
            .map(|_| Token::generate().unwrap().expose().to_owned())
            .collect();
        assert_eq!(tokens.len(), 1000);
        for token in &tokens {
            assert_eq!(token.len(), TOKEN_LEN);
            assert!(Token::parse(token).is_some(), "{token}");
        }
    }

    #[test]
    fn a_token_carries_its_shard() {
        for shard in [0, 1, 0x1234, wxlogin_redis::keys::SHARDS - 1] {
            let token = Token::for_shard(shard).unwrap();
            assert_eq!(Token::parse(token.expose()).unwrap().shard(), shard);
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = Token::generate().unwrap();
        for bad in [
            "",
            "short",
            &format!("{}=", &good.expose()[..42]),
            &format!("{}+", &good.expose()[..42]),
            &format!("{}a", good.expose()),
        ] {
            assert!(Token::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_token_and_the_digest_is_sha256() {
        let token = Token::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        // sha256 of 43 'A's
        assert_eq!(token.digest().len(), 64);
        assert_ne!(token.digest(), token.expose());
    }
}
