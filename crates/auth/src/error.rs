//! The auth service's errors and their one mapping to gRPC statuses.

use tonic::{Code, Status};
use wxlogin_proto::reason::{Reason, status};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no mini-program is configured with this appid")]
    UnknownApp,
    #[error("the session token is unknown or expired")]
    InvalidToken,
    #[error("a newer login replaced this session's session_key; call wx.login again")]
    SessionKeyStale,
    #[error("WeChat: {0}")]
    Wechat(#[from] wxlogin_wechat::Error),
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
}

impl From<&AuthError> for Status {
    fn from(error: &AuthError) -> Status {
        use wxlogin_wechat::Error as Wx;
        match error {
            AuthError::InvalidArgument(message) => {
                status(Code::InvalidArgument, Reason::InvalidArgument, message)
            }
            AuthError::UnknownApp => {
                status(Code::InvalidArgument, Reason::UnknownApp, error.to_string())
            }
            AuthError::InvalidToken => status(
                Code::Unauthenticated,
                Reason::InvalidToken,
                error.to_string(),
            ),
            AuthError::SessionKeyStale => status(
                Code::FailedPrecondition,
                Reason::SessionKeyStale,
                error.to_string(),
            ),
            AuthError::Wechat(wx) => match wx {
                Wx::InvalidCode => status(
                    Code::Unauthenticated,
                    Reason::InvalidCode,
                    "the code is invalid or belongs to another mini-program",
                ),
                Wx::CodeUsed => status(
                    Code::Unauthenticated,
                    Reason::CodeUsed,
                    "the code was already used",
                ),
                Wx::UserBlocked => status(
                    Code::PermissionDenied,
                    Reason::UserBlocked,
                    "WeChat blocked this user as high-risk",
                ),
                Wx::RateLimited => status(
                    Code::ResourceExhausted,
                    Reason::RateLimited,
                    "WeChat rate-limited this user; try again in a minute",
                ),
                Wx::Busy => {
                    tracing::warn!("WeChat answered system busy (-1)");
                    status(
                        Code::Unavailable,
                        Reason::WechatBusy,
                        "WeChat is busy; try again",
                    )
                }
                Wx::InvalidCredentials { errcode } => {
                    tracing::error!(
                        errcode,
                        "WeChat rejected our appid or secret: check WECHAT_APPID/WECHAT_SECRET/WECHAT_APPS"
                    );
                    status(
                        Code::Internal,
                        Reason::WechatConfig,
                        "the login service is misconfigured",
                    )
                }
                Wx::InvalidConfig(_) => {
                    tracing::error!(error = %wx, "WeChat client misconfigured");
                    status(
                        Code::Internal,
                        Reason::WechatConfig,
                        "the login service is misconfigured",
                    )
                }
                Wx::Unreachable
                | Wx::Timeout
                | Wx::Transport(_)
                | Wx::InvalidResponse(_)
                | Wx::Api { .. }
                | Wx::AccessTokenInvalid { .. } => {
                    tracing::warn!(error = %wx, "WeChat unavailable");
                    status(
                        Code::Unavailable,
                        Reason::WechatUnavailable,
                        "WeChat is unavailable; try again",
                    )
                }
            },
            // The outage itself is logged once, when Redis goes down (see
            // `wxlogin_common::redis_guard`), not once per request.
            AuthError::Store(store) if store.is_unavailable() => {
                tracing::debug!(error = %store, "session store unavailable");
                status(
                    Code::Unavailable,
                    Reason::DependencyUnavailable,
                    "session store unavailable",
                )
            }
            AuthError::ExchangeWait => {
                tracing::warn!(%error);
                status(
                    Code::Unavailable,
                    Reason::DependencyUnavailable,
                    "the login is still under way; try again",
                )
            }
            AuthError::Store(_)
            | AuthError::Random(_)
            | AuthError::Task(_)
            | AuthError::Sealed(_) => {
                tracing::error!(%error, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Status {
        Status::from(&error)
    }
}
