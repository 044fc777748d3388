//! Error reasons carried in `google.rpc.ErrorInfo` on failed RPCs.
//!
//! The gRPC code says what kind of failure it was; the reason says exactly
//! which, in words that stay stable across releases.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every wxlogin error.
pub const DOMAIN: &str = "wxlogin";

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        /// A stable, machine-readable reason for a failed RPC.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => $text,)*
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Reason::$name),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// The request is malformed.
    InvalidArgument = "INVALID_ARGUMENT",
    /// The appid names no configured mini-program.
    UnknownApp = "UNKNOWN_APP",
    /// WeChat does not know the code (40029).
    InvalidCode = "INVALID_CODE",
    /// WeChat saw the code before (40163).
    CodeUsed = "CODE_USED",
    /// WeChat blocked the user as high-risk (40226).
    UserBlocked = "USER_BLOCKED",
    /// WeChat rate-limited the user (45011).
    RateLimited = "RATE_LIMITED",
    /// WeChat answered "system busy" (-1).
    WechatBusy = "WECHAT_BUSY",
    /// WeChat could not be reached or answered nonsense.
    WechatUnavailable = "WECHAT_UNAVAILABLE",
    /// WeChat rejected our own appid or secret (40013, 40125).
    WechatConfig = "WECHAT_CONFIG",
    /// The session token is unknown or expired.
    InvalidToken = "INVALID_TOKEN",
    /// The user does not exist.
    UserNotFound = "USER_NOT_FOUND",
    /// A dependency of the service (database, Redis) is unavailable.
    DependencyUnavailable = "DEPENDENCY_UNAVAILABLE",
    /// Encrypted user data failed to decrypt or validate (one reason for
    /// every cause, so that answers form no padding oracle).
    InvalidEncryptedData = "INVALID_ENCRYPTED_DATA",
    /// rawData's signature does not match.
    InvalidSignature = "INVALID_SIGNATURE",
    /// The session's session_key was replaced by a newer login, or WeChat
    /// no longer accepts it: the client must call wx.login again.
    SessionKeyStale = "SESSION_KEY_STALE",
}

/// Builds a status carrying `reason` in an `ErrorInfo` detail.
pub fn status(code: Code, reason: Reason, message: impl Into<String>) -> Status {
    let details =
        ErrorDetails::with_error_info(reason.as_str(), DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(code, message, details)
}

/// The wxlogin reason carried by `status`, if any.
pub fn of(status: &Status) -> Option<Reason> {
    let info = status.get_details_error_info()?;
    if info.domain != DOMAIN {
        return None;
    }
    Reason::parse(&info.reason)
}

/// A `RESOURCE_EXHAUSTED` status with `Reason::RateLimited` and a
/// `RetryInfo` detail saying when the budget frees up.
pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Status {
    let mut details = ErrorDetails::with_error_info(
        Reason::RateLimited.as_str(),
        DOMAIN,
        std::collections::HashMap::new(),
    );
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// How long `status`'s `RetryInfo` detail asks the caller to wait, if it
/// has one.
pub fn retry_after(status: &Status) -> Option<std::time::Duration> {
    status.get_details_retry_info()?.retry_delay
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_a_status_round_trip() {
        for &reason in Reason::ALL {
            let status = status(Code::Unauthenticated, reason, "nope");
            assert_eq!(of(&status), Some(reason));
            assert_eq!(status.code(), Code::Unauthenticated);
            assert_eq!(status.message(), "nope");
        }
    }

    #[test]
    fn a_rate_limited_status_says_when_to_retry() {
        let status = rate_limited("slow down", std::time::Duration::from_secs(7));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(of(&status), Some(Reason::RateLimited));
        assert_eq!(
            retry_after(&status),
            Some(std::time::Duration::from_secs(7))
        );
        assert_eq!(retry_after(&Status::internal("x")), None);
    }

    #[test]
    fn a_status_without_details_has_no_reason() {
        assert_eq!(of(&Status::internal("boom")), None);
    }
}
