//! WeChat's mini-program as a [`LoginProvider`]: code2Session exchanges
//! codes, [`crate::crypto`] opens `encryptedData` and checks the `rawData`
//! signature, getuserphonenumber reads phone numbers and checkSessionKey
//! checks session_keys. The last two take an access_token, which the host
//! lends through [`AccessTokenSource`]: the cache shared by every instance
//! and its refresh lock are the host's, not this crate's.

use std::{collections::BTreeMap, fmt, sync::Arc};

use async_trait::async_trait;
use wxlogin_provider::{
    ErrorKind, Exchanged, Expectations, LoginCode, LoginProvider, OpenedData, PhoneNumber, Profile,
    ProviderError, Sealed, SessionSecret, Signed, Subject, SubjectKind,
};

use crate::{
    AccessToken, AppCredentials, Client, Error, SessionKey,
    crypto::{self, DecryptError, FromDecrypted as _},
};

/// The provider's name in log lines and errors.
pub const NAME: &str = "WeChat";

/// Where WeChat's calls that take an access_token get one.
#[async_trait]
pub trait AccessTokenSource: Send + Sync {
    /// A token of `app` WeChat should accept now.
    async fn token(&self, app: &AppCredentials) -> Result<AccessToken, ProviderError>;

    /// A token of `app` other than `refused`, which WeChat just refused.
    async fn renew(
        &self,
        app: &AppCredentials,
        refused: &AccessToken,
    ) -> Result<AccessToken, ProviderError>;
}

/// WeChat's mini-program login.
pub struct MiniProgram {
    remote: Option<Remote>,
}

impl fmt::Debug for MiniProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let appids: Vec<&str> = self
            .remote
            .iter()
            .flat_map(|r| r.apps.keys())
            .map(String::as_str)
            .collect();
        f.debug_struct("MiniProgram")
            .field("appids", &appids)
            .finish_non_exhaustive()
    }
}

/// What the calls to WeChat need.
struct Remote {
    client: Client,
    apps: BTreeMap<String, AppCredentials>,
    tokens: Arc<dyn AccessTokenSource>,
}

impl MiniProgram {
    /// The mini-programs `apps`, asking WeChat through `client` with the
    /// access_tokens of `tokens`.
    pub fn new(
        client: Client,
        apps: impl IntoIterator<Item = AppCredentials>,
        tokens: Arc<dyn AccessTokenSource>,
    ) -> MiniProgram {
        let apps = apps
            .into_iter()
            .map(|app| (app.appid.clone(), app))
            .collect();
        MiniProgram {
            remote: Some(Remote {
                client,
                apps,
                tokens,
            }),
        }
    }

    /// A provider that opens and checks data only, for a service that holds
    /// no app secret (the user service): its calls to WeChat answer
    /// [`ErrorKind::Misconfigured`].
    pub fn offline() -> MiniProgram {
        MiniProgram { remote: None }
    }

    /// The client and the credentials of `appid`.
    fn remote(&self, appid: &str) -> Result<(&Remote, &AppCredentials), ProviderError> {
        let misconfigured = |what: String| ProviderError::new(NAME, ErrorKind::Misconfigured, what);
        let remote = self.remote.as_ref().ok_or_else(|| {
            misconfigured("this WeChat provider only opens data: it has no client".to_owned())
        })?;
        let app = remote
            .apps
            .get(appid)
            .ok_or_else(|| misconfigured(format!("no credentials for appid {appid}")))?;
        Ok((remote, app))
    }
}

/// Runs `call` with a token of `app`; when WeChat refuses the token,
/// renews it once and runs `call` once more (a second refusal is an
/// outage, not a loop).
async fn with_token<T, F, Fut>(
    tokens: &dyn AccessTokenSource,
    app: &AppCredentials,
    call: F,
) -> Result<T, ProviderError>
where
    F: Fn(AccessToken) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let token = tokens.token(app).await?;
    match call(token.clone()).await {
        Err(error) if error.is_access_token_invalid() => {
            let renewed = tokens.renew(app, &token).await?;
            Ok(call(renewed).await?)
        }
        other => Ok(other?),
    }
}

#[async_trait]
impl LoginProvider for MiniProgram {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn exchange(&self, appid: &str, login: &LoginCode) -> Result<Exchanged, ProviderError> {
        let (remote, app) = self.remote(appid)?;
        let session = remote.client.code2session(app, &login.code).await?;
        Ok(Exchanged {
            subject: Subject {
                kind: SubjectKind::OpenId,
                id: session.openid,
            },
            others: Vec::new(),
            union_id: session.unionid,
            session_secret: Some(SessionSecret::new(session.session_key.expose().to_owned())),
        })
    }

    fn open(
        &self,
        sealed: &Sealed<'_>,
        secret: Option<&SessionSecret>,
        expect: &Expectations<'_>,
    ) -> Result<OpenedData, ProviderError> {
        // Without a key the data cannot open: the empty one says so as a
        // key of the wrong length would.
        let key = secret.map_or("", SessionSecret::expose);
        Ok(crypto::decrypt(
            key,
            sealed.data,
            sealed.iv.unwrap_or(""),
            expect,
        )?)
    }

    fn verify(&self, _appid: &str, signed: &Signed<'_>, secret: Option<&SessionSecret>) -> bool {
        let key = secret.map_or("", SessionSecret::expose);
        crypto::verify_raw_data_signature(signed.content, key, signed.signature)
    }

    fn profile(&self, opened: &OpenedData) -> Profile {
        Profile::from_decrypted(opened)
    }

    fn phone_in(&self, opened: &OpenedData) -> Result<PhoneNumber, ProviderError> {
        Ok(PhoneNumber::from_decrypted(opened)?)
    }

    fn is_placeholder_nickname(&self, nickname: &str) -> bool {
        crypto::is_placeholder_nickname(nickname)
    }

    fn is_placeholder_avatar(&self, url: &str) -> bool {
        crypto::is_placeholder_avatar(url)
    }

    async fn phone_number(
        &self,
        appid: &str,
        subject: &str,
        code: &str,
    ) -> Result<PhoneNumber, ProviderError> {
        let (remote, app) = self.remote(appid)?;
        let client = &remote.client;
        let phone = with_token(&*remote.tokens, app, |token| async move {
            client.phone_number(&token, code, Some(subject)).await
        })
        .await?;
        if let Some(watermark) = &phone.watermark
            && watermark.appid != appid
        {
            return Err(Error::InvalidResponse(
                "the phone number's watermark names another app".into(),
            )
            .into());
        }
        Ok(PhoneNumber {
            phone_number: phone.phone_number,
            pure_phone_number: phone.pure_phone_number,
            country_code: phone.country_code,
        })
    }

    async fn session_secret_valid(
        &self,
        appid: &str,
        subject: &str,
        secret: &SessionSecret,
    ) -> Result<bool, ProviderError> {
        let (remote, app) = self.remote(appid)?;
        let client = &remote.client;
        let key = &SessionKey::new(secret.expose().to_owned());
        with_token(&*remote.tokens, app, |token| async move {
            client.check_session(&token, subject, key).await
        })
        .await
    }
}

impl From<Error> for ProviderError {
    /// What each of WeChat's failures means for the core; the description
    /// is the error's own, which never carries a secret, token or URL.
    fn from(error: Error) -> ProviderError {
        let kind = match &error {
            Error::Busy => ErrorKind::Busy,
            Error::InvalidCode => ErrorKind::CodeRefused,
            Error::CodeUsed => ErrorKind::CodeSpent,
            Error::RateLimited => ErrorKind::RateLimited,
            Error::UserBlocked => ErrorKind::SubjectBlocked,
            Error::InvalidCredentials { .. } => ErrorKind::CredentialsRefused,
            // A token refused after a renewal, or no connection: nothing
            // was spent.
            Error::AccessTokenInvalid { .. } | Error::Unreachable => ErrorKind::Unavailable,
            Error::Timeout => ErrorKind::TimedOut,
            Error::Api { .. } | Error::Transport(_) | Error::InvalidResponse(_) => {
                ErrorKind::Failed
            }
            Error::InvalidConfig(_) => ErrorKind::Misconfigured,
        };
        let converted = ProviderError::new(NAME, kind, error.to_string());
        match error.errcode() {
            Some(errcode) => converted.with_code(errcode),
            None => converted,
        }
    }
}

impl From<DecryptError> for ProviderError {
    fn from(error: DecryptError) -> ProviderError {
        match error {
            DecryptError::Malformed(message) => {
                ProviderError::new(NAME, ErrorKind::DataMalformed, message)
            }
            DecryptError::Invalid => {
                ProviderError::new(NAME, ErrorKind::DataInvalid, error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_keeps_its_words_and_errcode() {
        let cases = [
            (Error::Busy, ErrorKind::Busy),
            (Error::InvalidCode, ErrorKind::CodeRefused),
            (Error::CodeUsed, ErrorKind::CodeSpent),
            (Error::RateLimited, ErrorKind::RateLimited),
            (Error::UserBlocked, ErrorKind::SubjectBlocked),
            (
                Error::InvalidCredentials { errcode: 40125 },
                ErrorKind::CredentialsRefused,
            ),
            (
                Error::AccessTokenInvalid { errcode: 40001 },
                ErrorKind::Unavailable,
            ),
            (Error::Unreachable, ErrorKind::Unavailable),
            (Error::Timeout, ErrorKind::TimedOut),
            (Error::Transport("reset".into()), ErrorKind::Failed),
            (
                Error::InvalidResponse("no openid".into()),
                ErrorKind::Failed,
            ),
            (
                Error::Api {
                    errcode: 47001,
                    errmsg: "x".into(),
                },
                ErrorKind::Failed,
            ),
            (
                Error::InvalidConfig("timeout".into()),
                ErrorKind::Misconfigured,
            ),
        ];
        for (error, kind) in cases {
            let (text, errcode) = (error.to_string(), error.errcode());
            let converted = ProviderError::from(error);
            assert_eq!(converted.kind(), kind, "{text}");
            assert_eq!(converted.to_string(), text);
            assert_eq!(converted.code(), errcode, "{text}");
            assert_eq!(converted.provider(), "WeChat");
        }
    }

    #[test]
    fn an_offline_provider_opens_data_but_asks_wechat_nothing() {
        let provider = MiniProgram::offline();
        let sealed = Sealed {
            data: "AAAA",
            iv: None,
        };
        let expect = Expectations {
            appid: "wx1",
            subject: None,
            max_age: None,
            now_unix: 0,
        };
        let refused = provider.open(&sealed, None, &expect).map(|_| ());
        assert!(
            matches!(&refused, Err(e) if e.kind() == ErrorKind::DataMalformed),
            "{refused:?}"
        );
        let error = provider.remote("wx1").map(|_| ()).err();
        assert_eq!(
            error.map(|e| e.kind()),
            Some(ErrorKind::Misconfigured),
            "no client"
        );
    }
}
