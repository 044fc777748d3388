//! Opening the login provider's sealed data for the session of a request's
//! token: the session secret from auth, the signature check, the opening
//! (through the [`LoginProvider`](wxlogin_provider::LoginProvider)), and
//! the provider's word on a secret that no longer opens it. Used by the RPCs that
//! store what the data says (`profile`); it stores nothing itself.

use tonic::Status;
use wxlogin_proto::{audit, audit::Event};
use wxlogin_proto::{
    auth::v1::{CheckSessionRequest, GetSessionKeyRequest},
    reason::{self, Reason},
    user::v1::{UpdatePhoneFromEncryptedRequest, UpdateProfileFromEncryptedRequest},
};

use wxlogin_provider::{ErrorKind, Expectations, Sealed, SessionSecret};

use super::{UserApi, from_auth};
use crate::{error::Error, fields};

/// encryptedData of getUserInfo is well under 2 KiB; this bounds the work.
const ENCRYPTED_MAX_CHARS: u32 = 16 * 1024;
/// A base64 iv of 16 bytes is 24 characters; this only bounds the work.
const IV_MAX_CHARS: u32 = 64;

/// Decrypted data and whose it is (the session's user, never the data's
/// own `openId`, which the client can tamper with through the iv).
pub(super) struct Opened {
    pub appid: String,
    pub openid: String,
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// A request that carries WeChat's encrypted data.
pub(super) trait Encrypted {
    /// The session's token, the encrypted data and its iv.
    fn sealed(&self) -> (&str, &str, &str);
}

impl Encrypted for UpdateProfileFromEncryptedRequest {
    fn sealed(&self) -> (&str, &str, &str) {
        (&self.token, &self.encrypted_data, &self.iv)
    }
}

impl Encrypted for UpdatePhoneFromEncryptedRequest {
    fn sealed(&self) -> (&str, &str, &str) {
        (&self.token, &self.encrypted_data, &self.iv)
    }
}

impl UserApi {
    /// Fetches the session's session_key from auth, runs `check` with the
    /// session's appid and it (the rawData signature), and opens the data
    /// through the login provider. A failed decryption with a current key
    /// is either tampered data or a key WeChat replaced behind our back:
    /// WeChat's checkSessionKey tells which.
    pub(super) async fn open(
        &self,
        request_id: &Option<String>,
        request: &impl Encrypted,
        check: impl FnOnce(&str, Option<&SessionSecret>) -> Result<(), Error>,
    ) -> Result<Opened, Status> {
        let (token, encrypted_data, iv) = request.sealed();
        if token.is_empty() {
            return Err(Reason::InvalidToken.status("token is required"));
        }
        required(encrypted_data, "encrypted_data", ENCRYPTED_MAX_CHARS)?;
        required(iv, "iv", IV_MAX_CHARS)?;
        let keyed = self
            .auth_client()
            .get_session_key(self.auth.call(
                GetSessionKeyRequest {
                    token: token.to_owned(),
                },
                request_id.as_deref(),
            ))
            .await
            .map_err(|status| {
                let status = from_auth(status);
                if reason::of(&status) == Some(Reason::SessionKeyStale) {
                    audit!(Event::SessionKeyStale, request_id = request_id.as_deref());
                }
                status
            })?
            .into_inner();
        let session = keyed.session.ok_or_else(|| {
            tracing::error!("auth answered a session key without its session");
            Reason::Internal.status("internal error")
        })?;
        let span = tracing::Span::current();
        span.record("appid", session.appid.as_str());
        // A session of a provider without session secrets keeps the empty
        // one: its data opens with the provider's own key.
        let secret = Some(SessionSecret::new(keyed.session_key)).filter(|key| !key.is_empty());
        check(&session.appid, secret.as_ref())?;
        let expect = Expectations {
            appid: &session.appid,
            subject: Some(&session.openid),
            max_age: self.watermark_max_age,
            now_unix: chrono::Utc::now().timestamp(),
        };
        let sealed = Sealed {
            data: encrypted_data,
            iv: Some(iv),
        };
        match self.provider.open(&sealed, secret.as_ref(), &expect) {
            Ok(data) => Ok(Opened {
                appid: session.appid,
                openid: session.openid,
                data,
            }),
            Err(error) if error.kind() == ErrorKind::DataMalformed => {
                Err(Error::InvalidArgument(error.to_string()).into())
            }
            Err(error) if error.kind() != ErrorKind::DataInvalid => {
                tracing::error!(%error, "the login provider cannot open data");
                Err(Reason::Internal.status("internal error"))
            }
            Err(_) => {
                let check = self
                    .auth_client()
                    .check_session(self.auth.call(
                        CheckSessionRequest {
                            token: token.to_owned(),
                        },
                        request_id.as_deref(),
                    ))
                    .await;
                match check {
                    Ok(answer) if !answer.get_ref().valid => {
                        audit!(Event::SessionKeyStale, appid = %session.appid, request_id = request_id.as_deref());
                        Err(Reason::SessionKeyStale.status(
                            "WeChat replaced this session's session_key; call wx.login again",
                        ))
                    }
                    Ok(_) => Err(Error::InvalidEncryptedData.into()),
                    // A spent checksession budget (ours or WeChat's) is the
                    // honest answer to whoever posts blob after blob: 429,
                    // with auth's Retry-After. A real user hardly gets here.
                    Err(status) if reason::of(&status) == Some(Reason::RateLimited) => Err(status),
                    Err(status) => {
                        // Without WeChat's word, the data is what failed.
                        tracing::warn!(code = ?status.code(), "checkSessionKey failed");
                        Err(Error::InvalidEncryptedData.into())
                    }
                }
            }
        }
    }
}

/// `value`, which must be non-empty and at most `max_chars` characters: for
/// inputs that are no user field (those are [`fields::Field`]s).
fn required<'a>(value: &'a str, name: &str, max_chars: u32) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{name} is required")));
    }
    fields::at_most(name, value, max_chars)
}
