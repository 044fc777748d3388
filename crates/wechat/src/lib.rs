//! WeChat's mini-program login: a typed client for WeChat's server API
//! (code2Session, `GET /sns/jscode2session`, a `wx.login` code for the
//! user's openid, unionid and session_key; the app's access_token,
//! `POST /cgi-bin/stable_token`; the user's phone number,
//! `POST /wxa/business/getuserphonenumber`; checkSessionKey,
//! `GET /wxa/checksession`), the decryption of the user data WeChat seals
//! with the session_key ([`crypto`]), and [`MiniProgram`], which puts both
//! behind `wxlogin_provider::LoginProvider`.
//!
//! It owns the wire contract (see `docs/wechat.md`): the URLs, WeChat's quirks
//! (`text/plain` JSON bodies, absent errcodes, country codes as strings or
//! numbers, the checkSession signature, the encryptedData format and its
//! watermark) and the mapping of errcodes to [`Error`] variants and of
//! those to the provider interface's kinds. It must not decide how the
//! core answers those errors, store or cache anything (access_tokens
//! included: the host lends them through [`AccessTokenSource`]), or retry
//! a request that may have reached WeChat (a code is single-use, so a retry
//! turns a slow answer into 40163; a forced token refresh is rationed). It
//! must never let the app secret, an access_token, a session_key, a request
//! URL (which carries one or the other) or decrypted data reach an error
//! message or a log line.

mod access_token;
mod check_session;
mod code2session;
pub mod crypto;
mod error;
mod phone;
mod provider;
mod wire;

use std::{fmt, time::Duration};

use reqwest::{RequestBuilder, StatusCode, Url, redirect};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

pub use access_token::{AccessToken, IssuedToken};
pub use check_session::check_session_signature;
pub use code2session::{Code2Session, SessionKey};
pub use error::Error;
pub use phone::{PhoneInfo, Watermark};
pub use provider::{AccessTokenSource, MiniProgram, NAME};

/// WeChat's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.weixin.qq.com";

/// A larger answer is none of the endpoints': refuse it rather than buffer it.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Where WeChat is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://api.weixin.qq.com` in production; tests point it at the
    /// simulator. A path prefix is kept.
    pub base_url: String,
    /// The whole request, connecting included.
    pub timeout: Duration,
    /// Establishing the connection.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// A mini-program's appid and secret. `Debug` redacts the secret.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub appid: String,
    pub secret: SecretString,
}

impl AppCredentials {
    pub fn new(appid: impl Into<String>, secret: impl Into<String>) -> Self {
        AppCredentials {
            appid: appid.into(),
            secret: SecretString::from(secret.into()),
        }
    }
}

/// A WeChat API client. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The endpoints, without a query.
    code2session_url: Url,
    stable_token_url: Url,
    phone_number_url: Url,
    check_session_url: Url,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("code2session_url", &self.code2session_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the WeChat at `config.base_url`.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let code2session_url = endpoint(&config.base_url, "sns/jscode2session")?;
        let stable_token_url = endpoint(&config.base_url, "cgi-bin/stable_token")?;
        let phone_number_url = endpoint(&config.base_url, "wxa/business/getuserphonenumber")?;
        let check_session_url = endpoint(&config.base_url, "wxa/checksession")?;
        if config.timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "timeout and connect_timeout must be positive".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // A redirect would carry the secret or the token to another URL.
            .redirect(redirect::Policy::none())
            .user_agent(concat!("wxlogin-wechat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::InvalidConfig(error::describe(&error.without_url())))?;
        Ok(Client {
            http,
            code2session_url,
            stable_token_url,
            phone_number_url,
            check_session_url,
        })
    }

    /// Exchanges a `wx.login` code for the user's identity and session_key.
    ///
    /// Sent at most once, except that a failed connection is retried once:
    /// then the request surely did not reach WeChat and the code is intact.
    /// After [`Error::Timeout`] or [`Error::Transport`] WeChat may have
    /// consumed the code; asking again will likely give [`Error::CodeUsed`].
    #[tracing::instrument(
        name = "wechat.code2session",
        skip_all,
        fields(appid = %app.appid, errcode = tracing::field::Empty)
    )]
    pub async fn code2session(
        &self,
        app: &AppCredentials,
        code: &str,
    ) -> Result<Code2Session, Error> {
        let started = std::time::Instant::now();
        let result = self.try_code2session(app, code).await;
        trace_outcome(
            "jscode2session",
            started,
            &result,
            "code exchanged",
            "code2Session failed",
        );
        result
    }

    async fn try_code2session(
        &self,
        app: &AppCredentials,
        code: &str,
    ) -> Result<Code2Session, Error> {
        if code.is_empty() {
            // WeChat would refuse it too (41008); no need to spend a call.
            return Err(Error::InvalidCode);
        }
        let mut url = self.code2session_url.clone();
        url.query_pairs_mut()
            .append_pair("appid", &app.appid)
            .append_pair("secret", app.secret.expose_secret())
            .append_pair("js_code", code)
            .append_pair("grant_type", "authorization_code");

        let (status, body) = self.send(|| self.http.get(url.clone())).await?;
        code2session::parse_code2session(status, &body)
    }

    /// Fetches the app's access_token from `stable_token`, which hands out
    /// the same token while it is valid (with its remaining lifetime), so
    /// that instances asking on their own do not knock each other out.
    ///
    /// `force_refresh` asks for a new token (the previous one then lives a
    /// few more minutes). WeChat rations it (about 20 a day, 30 s apart): use
    /// it only after a cached token was refused with
    /// [`Error::AccessTokenInvalid`]. Sent at most once, except that a
    /// failed connection is retried once. A wrong secret is
    /// [`Error::InvalidCredentials`] (40001 included: here it means the
    /// secret, not the token); a spent daily quota (45009) is
    /// [`Error::RateLimited`].
    #[tracing::instrument(
        name = "wechat.stable_token",
        skip_all,
        fields(appid = %app.appid, force_refresh = force_refresh, errcode = tracing::field::Empty)
    )]
    pub async fn stable_token(
        &self,
        app: &AppCredentials,
        force_refresh: bool,
    ) -> Result<IssuedToken, Error> {
        let started = std::time::Instant::now();
        let result = self.try_stable_token(app, force_refresh).await;
        trace_outcome(
            "stable_token",
            started,
            &result,
            "access_token issued",
            "stable_token failed",
        );
        result
    }

    async fn try_stable_token(
        &self,
        app: &AppCredentials,
        force_refresh: bool,
    ) -> Result<IssuedToken, Error> {
        #[derive(Serialize)]
        struct StableTokenRequest<'a> {
            grant_type: &'static str,
            appid: &'a str,
            secret: &'a str,
            force_refresh: bool,
        }
        let request = StableTokenRequest {
            grant_type: "client_credential",
            appid: &app.appid,
            secret: app.secret.expose_secret(),
            force_refresh,
        };
        let (status, body) = self
            .send(|| self.http.post(self.stable_token_url.clone()).json(&request))
            .await?;
        access_token::parse_stable_token(status, &body)
    }

    /// Exchanges a phone code (from the `getPhoneNumber` button; not a
    /// `wx.login` code) for the user's phone number. `openid`, when known,
    /// helps WeChat's risk control.
    ///
    /// The code is single-use, so this is sent at most once, except that a
    /// failed connection is retried once. On [`Error::AccessTokenInvalid`]
    /// the code is still unused: refresh the token once (forced) and retry
    /// once. A used code is [`Error::CodeUsed`], an unknown, expired or
    /// other app's one [`Error::InvalidCode`], a spent quota
    /// [`Error::RateLimited`].
    #[tracing::instrument(
        name = "wechat.phone_number",
        skip_all,
        fields(errcode = tracing::field::Empty)
    )]
    pub async fn phone_number(
        &self,
        access_token: &AccessToken,
        code: &str,
        openid: Option<&str>,
    ) -> Result<PhoneInfo, Error> {
        let started = std::time::Instant::now();
        let result = self.try_phone_number(access_token, code, openid).await;
        trace_outcome(
            "getuserphonenumber",
            started,
            &result,
            "phone number read",
            "getuserphonenumber failed",
        );
        result
    }

    async fn try_phone_number(
        &self,
        access_token: &AccessToken,
        code: &str,
        openid: Option<&str>,
    ) -> Result<PhoneInfo, Error> {
        #[derive(Serialize)]
        struct PhoneNumberRequest<'a> {
            code: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            openid: Option<&'a str>,
        }
        if code.is_empty() {
            // WeChat would refuse it too; no need to spend a call.
            return Err(Error::InvalidCode);
        }
        let request = PhoneNumberRequest {
            code,
            openid: openid.filter(|openid| !openid.is_empty()),
        };
        let url = with_access_token(&self.phone_number_url, access_token);
        let (status, body) = self
            .send(|| self.http.post(url.clone()).json(&request))
            .await?;
        phone::parse_phone_number(status, &body)
    }

    /// Asks WeChat whether `session_key` is still the user's current one
    /// (checkSessionKey): `Ok(true)` if so, `Ok(false)` when WeChat answers
    /// 87009 (invalid signature: the key was rotated out or never was the
    /// user's). The signature is [`check_session_signature`].
    ///
    /// On [`Error::AccessTokenInvalid`] refresh the token once (forced) and
    /// retry once. Sent at most once, except that a failed connection is
    /// retried once.
    #[tracing::instrument(
        name = "wechat.check_session",
        skip_all,
        fields(errcode = tracing::field::Empty)
    )]
    pub async fn check_session(
        &self,
        access_token: &AccessToken,
        openid: &str,
        session_key: &SessionKey,
    ) -> Result<bool, Error> {
        let started = std::time::Instant::now();
        let result = self
            .try_check_session(access_token, openid, session_key)
            .await;
        trace_outcome(
            "checksession",
            started,
            &result,
            "session_key checked",
            "checksession failed",
        );
        result
    }

    async fn try_check_session(
        &self,
        access_token: &AccessToken,
        openid: &str,
        session_key: &SessionKey,
    ) -> Result<bool, Error> {
        let mut url = with_access_token(&self.check_session_url, access_token);
        url.query_pairs_mut()
            .append_pair("openid", openid)
            .append_pair("signature", &check_session_signature(session_key))
            .append_pair("sig_method", "hmac_sha256");
        let (status, body) = self.send(|| self.http.get(url.clone())).await?;
        check_session::parse_check_session(status, &body)
    }

    /// Sends the request `build` makes and reads the answer. A failed
    /// connection is retried once, since then the request surely did not
    /// reach WeChat; nothing else is.
    async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), Error> {
        let response = match build().send().await {
            Err(error) if error.is_connect() => {
                let error = error.without_url();
                tracing::warn!(
                    error = %error::describe(&error),
                    "cannot connect to WeChat, retrying once"
                );
                build().send().await
            }
            sent => sent,
        }
        .map_err(Error::from_reqwest)?;

        let status = response.status();
        let body = read_body(response).await?;
        Ok((status, body))
    }
}

/// `url` with the access_token in its query, as WeChat wants it. The result
/// must never be logged or put in an error.
fn with_access_token(url: &Url, access_token: &AccessToken) -> Url {
    let mut url = url.clone();
    url.query_pairs_mut()
        .append_pair("access_token", access_token.expose());
    url
}

/// The metrics of WeChat calls (Prometheus names, see
/// `wxlogin_common::metrics` for the others).
pub mod metrics_names {
    /// WeChat API calls, by `api` and `errcode` (`0`, WeChat's errcode,
    /// `timeout`, `unreachable`, `transport` or `invalid_response`).
    pub const CALLS: &str = "wxlogin_wechat_calls_total";
    /// Their latency, by `api`.
    pub const DURATION: &str = "wxlogin_wechat_call_duration_seconds";
    /// Every name above.
    pub const ALL: &[&str] = &[CALLS, DURATION];
}

/// Counts and times a call of `api`, records the errcode on the current
/// span and logs the outcome at debug.
/// Errors never carry a secret, a token or a URL, so they can be logged.
fn trace_outcome<T>(
    api: &'static str,
    started: std::time::Instant,
    result: &Result<T, Error>,
    success: &str,
    failure: &str,
) {
    let errcode = match result {
        Ok(_) => "0".to_owned(),
        Err(error) => match error.errcode() {
            Some(errcode) => errcode.to_string(),
            None => error.kind_label().to_owned(),
        },
    };
    metrics::counter!(metrics_names::CALLS, "api" => api, "errcode" => errcode).increment(1);
    metrics::histogram!(metrics_names::DURATION, "api" => api)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(_) => tracing::debug!("{success}"),
        Err(error) => {
            if let Some(errcode) = error.errcode() {
                tracing::Span::current().record("errcode", errcode);
            }
            tracing::debug!(%error, "{failure}");
        }
    }
}

/// `base_url` joined with `path`, refusing what cannot be WeChat's API.
fn endpoint(base_url: &str, path: &str) -> Result<Url, Error> {
    let invalid = |message: &str| Error::InvalidConfig(format!("base_url: {message}"));
    let mut base = Url::parse(base_url).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        return Err(invalid("must be an http or https URL"));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(invalid("must have no query or fragment"));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(invalid("must carry no credentials"));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(path).map_err(|error| invalid(&error.to_string()))
}

/// The whole body, up to [`MAX_BODY_BYTES`].
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Error::from_reqwest)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Error::InvalidResponse(format!(
                "body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value-that-must-not-leak";

    #[test]
    fn credentials_debug_redacts_the_secret() {
        let app = AppCredentials::new("wx0123456789abcdef", SECRET);
        let debug = format!("{app:?}");
        assert!(debug.contains("wx0123456789abcdef"), "{debug}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!format!("{app:#?}").contains(SECRET));
    }

    #[test]
    fn the_endpoint_keeps_a_path_prefix() {
        let url = endpoint("http://127.0.0.1:8090", "sns/jscode2session").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8090/sns/jscode2session");
        let url = endpoint("http://proxy.local/wechat", "sns/jscode2session").unwrap();
        assert_eq!(url.as_str(), "http://proxy.local/wechat/sns/jscode2session");
        let url = endpoint("https://api.weixin.qq.com/", "sns/jscode2session").unwrap();
        assert_eq!(url.as_str(), "https://api.weixin.qq.com/sns/jscode2session");
    }

    #[test]
    fn unusable_configurations_are_refused() {
        for base_url in [
            "api.weixin.qq.com",
            "ftp://api.weixin.qq.com",
            "https://api.weixin.qq.com/?x=1",
            "https://user:pw@api.weixin.qq.com",
            "",
        ] {
            let config = ClientConfig {
                base_url: base_url.to_owned(),
                ..ClientConfig::default()
            };
            assert!(
                matches!(Client::new(config), Err(Error::InvalidConfig(_))),
                "{base_url}"
            );
        }
        let config = ClientConfig {
            timeout: Duration::ZERO,
            ..ClientConfig::default()
        };
        assert!(matches!(Client::new(config), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn the_default_configuration_builds() {
        let client = Client::new(ClientConfig::default()).unwrap();
        let debug = format!("{client:?}");
        assert!(
            debug.contains("https://api.weixin.qq.com/sns/jscode2session"),
            "{debug}"
        );
    }
}
