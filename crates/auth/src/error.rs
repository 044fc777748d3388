//! The auth service's errors and their one mapping to gRPC statuses (whose
//! codes come from the table in `wxlogin_proto::reason`).

use tonic::Status;
use wxlogin_proto::reason::Reason;
use wxlogin_provider::{ErrorKind, ProviderError};

use crate::{
    limit::{Exhausted, Kind, LimitError},
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no mini-program is configured with this appid")]
    UnknownApp,
    #[error("the session token is unknown or expired")]
    InvalidToken,
    #[error("no live session of this user has this id")]
    SessionNotFound,
    #[error("a newer login replaced this session's session_key; call wx.login again")]
    SessionKeyStale,
    #[error("the phone code is invalid, expired or of another mini-program")]
    InvalidPhoneCode,
    #[error("the phone code was already used")]
    PhoneCodeUsed,
    #[error("{provider}: {0}", provider = .0.provider())]
    Provider(ProviderError),
    #[error("session store: {0}")]
    Store(#[from] StoreError),
    #[error("the OS random number generator failed: {0}")]
    Random(String),
    #[error("the login task failed: {0}")]
    Task(String),
    #[error("another instance's exchange of this code did not finish in time")]
    ExchangeWait,
    #[error(transparent)]
    Sealed(#[from] crate::sealed_outcome::SealError),
    #[error("{0}")]
    RateLimited(Exhausted),
}

impl From<ProviderError> for AuthError {
    /// The provider's failure, or the core's own error the provider passed
    /// back (a failure of the access_token cache auth lends it).
    fn from(error: ProviderError) -> Self {
        let provider = error.provider();
        match error.into_host() {
            Err(error) => AuthError::Provider(error),
            Ok(host) => match host.downcast::<AuthError>() {
                Ok(own) => *own,
                Err(other) => AuthError::Provider(ProviderError::new(
                    provider,
                    ErrorKind::Host,
                    other.to_string(),
                )),
            },
        }
    }
}

impl From<LimitError> for AuthError {
    fn from(error: LimitError) -> Self {
        match error {
            LimitError::Exhausted(exhausted) => AuthError::RateLimited(exhausted),
            LimitError::Store(store) => AuthError::Store(store),
        }
    }
}

/// Our own budget's refusal, with when it frees up (the limiter tells the
/// operator about the one budget that refuses everyone).
fn rate_limited(exhausted: &Exhausted) -> Status {
    let message = match exhausted.kind {
        Kind::LoginPerIp => "too many logins from this address",
        Kind::LoginPerApp => "too many logins of this mini-program right now",
        Kind::CheckSessionPerUser => "too many checks of this user's session",
        Kind::PhonePerUser => "too many phone-number requests for this user",
    };
    tracing::debug!(budget = exhausted.kind.name(), retry_after = ?exhausted.retry_after, "budget spent");
    let seconds = exhausted.retry_after.as_secs_f64().ceil().max(1.0);
    Reason::RateLimited.status_retry_after(
        format!("{message}; try again in {seconds} s"),
        exhausted.retry_after,
    )
}

impl AuthError {
    /// The same failure in the phone-number flow, where the provider's
    /// "invalid code" is about the phone button's code, not the session's.
    pub fn in_phone_flow(self) -> AuthError {
        match &self {
            AuthError::Provider(error) => match error.kind() {
                ErrorKind::CodeRefused => AuthError::InvalidPhoneCode,
                ErrorKind::CodeSpent => AuthError::PhoneCodeUsed,
                _ => self,
            },
            _ => self,
        }
    }
}

impl From<&AuthError> for Status {
    fn from(error: &AuthError) -> Status {
        match error {
            AuthError::InvalidArgument(message) => Reason::InvalidArgument.status(message),
            AuthError::UnknownApp => Reason::UnknownApp.status(error.to_string()),
            AuthError::RateLimited(exhausted) => rate_limited(exhausted),
            AuthError::InvalidToken => Reason::InvalidToken.status(error.to_string()),
            AuthError::SessionKeyStale => Reason::SessionKeyStale.status(error.to_string()),
            AuthError::SessionNotFound => Reason::SessionNotFound.status(error.to_string()),
            AuthError::InvalidPhoneCode => Reason::InvalidPhoneCode.status(error.to_string()),
            AuthError::PhoneCodeUsed => Reason::PhoneCodeUsed.status(error.to_string()),
            // The answers and log lines still name WeChat, the one door
            // today: they are the contract clients and operators read.
            AuthError::Provider(provider) => match provider.kind() {
                ErrorKind::CodeRefused => Reason::InvalidCode
                    .status("the code is invalid or belongs to another mini-program"),
                ErrorKind::CodeSpent => Reason::CodeUsed.status("the code was already used"),
                ErrorKind::SubjectBlocked => {
                    Reason::UserBlocked.status("WeChat blocked this user as high-risk")
                }
                ErrorKind::RateLimited => Reason::RateLimited.status_retry_after(
                    "WeChat rate-limited this user; try again in a minute",
                    std::time::Duration::from_secs(60),
                ),
                ErrorKind::Busy => {
                    tracing::warn!("WeChat answered system busy (-1)");
                    Reason::WechatBusy.status("WeChat is busy; try again")
                }
                ErrorKind::CredentialsRefused => {
                    tracing::error!(
                        errcode = provider.code().unwrap_or_default(),
                        "WeChat rejected our appid or secret: check WECHAT_APPID/WECHAT_SECRET/WECHAT_APPS"
                    );
                    Reason::WechatConfig.status("the login service is misconfigured")
                }
                ErrorKind::Misconfigured => {
                    tracing::error!(error = %provider, "WeChat client misconfigured");
                    Reason::WechatConfig.status("the login service is misconfigured")
                }
                ErrorKind::Unavailable | ErrorKind::TimedOut | ErrorKind::Failed => {
                    tracing::warn!(error = %provider, "WeChat unavailable");
                    Reason::WechatUnavailable.status("WeChat is unavailable; try again")
                }
                // Opening data is the user service's; a host error that
                // is not auth's own is a bug.
                ErrorKind::DataMalformed
                | ErrorKind::DataInvalid
                | ErrorKind::Unsupported
                | ErrorKind::Host => {
                    tracing::error!(%error, "internal error");
                    Reason::Internal.status("internal error")
                }
            },
            // The outage itself is logged once, when Redis goes down (see
            // `wxlogin_redis::guard`), not once per request.
            AuthError::Store(store) if store.is_unavailable() => {
                // Per request, so DEBUG: the breaker logged the outage once
                // when it began, and readiness reports it.
                tracing::debug!(error = %store, "session store unavailable");
                Reason::DependencyUnavailable.status("session store unavailable")
            }
            AuthError::ExchangeWait => {
                tracing::warn!(%error);
                Reason::DependencyUnavailable.status("the login is still under way; try again")
            }
            AuthError::Store(_)
            | AuthError::Random(_)
            | AuthError::Task(_)
            | AuthError::Sealed(_) => {
                tracing::error!(%error, "internal error");
                Reason::Internal.status("internal error")
            }
        }
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Status {
        Status::from(&error)
    }
}
