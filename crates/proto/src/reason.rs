//! The one table of wxlogin's errors.
//!
//! Every failure has a [`Reason`]; the table below gives, for each, the
//! gRPC code a service answers it with, the HTTP status and the public
//! snake_case code the gateway answers it with. Services build statuses with
//! [`Reason::status`], the gateway reads them back with [`of_status`]: no
//! service picks its own code and no handler overrides the table.
//!
//! A reason travels in a `google.rpc.ErrorInfo` (domain [`DOMAIN`]); a status
//! without one did not come from a wxlogin handler but from the transport (a
//! dead, frozen or unreachable peer, a connection reset), and reads as
//! [`Reason::DependencyUnavailable`].

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every wxlogin error.
pub const DOMAIN: &str = "wxlogin";

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident = $text:literal, $grpc:ident, $http:literal, $public:literal;)*) => {
        /// A stable, machine-readable reason for a failure.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];

            /// The `ErrorInfo.reason` on the gRPC wire.
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

            /// The gRPC code of a status carrying this reason.
            pub fn grpc_code(self) -> Code {
                match self {
                    $(Reason::$name => Code::$grpc,)*
                }
            }

            /// The HTTP status the gateway answers.
            pub fn http_status(self) -> u16 {
                match self {
                    $(Reason::$name => $http,)*
                }
            }

            /// The `error.code` of the gateway's JSON answer.
            pub fn public_code(self) -> &'static str {
                match self {
                    $(Reason::$name => $public,)*
                }
            }
        }
    };
}

reasons! {
    /// The request is malformed.
    InvalidArgument = "INVALID_ARGUMENT", InvalidArgument, 400, "invalid_request";
    /// The appid names no configured mini-program.
    UnknownApp = "UNKNOWN_APP", InvalidArgument, 400, "unknown_app";
    /// WeChat does not know the phone code, or it is of another app.
    InvalidPhoneCode = "INVALID_PHONE_CODE", InvalidArgument, 400, "invalid_phone_code";
    /// The phone code was already used.
    PhoneCodeUsed = "PHONE_CODE_USED", InvalidArgument, 400, "phone_code_used";
    /// WeChat does not know the code (40029).
    InvalidCode = "INVALID_CODE", Unauthenticated, 401, "invalid_code";
    /// WeChat saw the code before (40163).
    CodeUsed = "CODE_USED", Unauthenticated, 401, "code_used";
    /// No session token was sent.
    MissingToken = "MISSING_TOKEN", Unauthenticated, 401, "missing_token";
    /// The session token is unknown or expired.
    InvalidToken = "INVALID_TOKEN", Unauthenticated, 401, "invalid_token";
    /// WeChat blocked the user as high-risk (40226), or the team did
    /// (`BlockUser`).
    UserBlocked = "USER_BLOCKED", PermissionDenied, 403, "user_blocked";
    /// No such HTTP endpoint.
    NotFound = "NOT_FOUND", Unimplemented, 404, "not_found";
    /// The session id names no live session of this user.
    SessionNotFound = "SESSION_NOT_FOUND", NotFound, 404, "session_not_found";
    /// The user does not exist.
    UserNotFound = "USER_NOT_FOUND", NotFound, 404, "user_not_found";
    /// The HTTP endpoint does not take this method.
    MethodNotAllowed = "METHOD_NOT_ALLOWED", Unimplemented, 405, "method_not_allowed";
    /// The session's session_key was replaced by a newer login, or WeChat
    /// no longer accepts it: the client must call wx.login again.
    SessionKeyStale = "SESSION_KEY_STALE", FailedPrecondition, 409, "session_key_stale";
    /// The request body is over the limit.
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", ResourceExhausted, 413, "payload_too_large";
    /// The request body is neither JSON nor a form.
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE", InvalidArgument, 415, "unsupported_media_type";
    /// Encrypted user data failed to decrypt or validate (one reason for
    /// every cause, so that answers form no padding oracle).
    InvalidEncryptedData = "INVALID_ENCRYPTED_DATA", FailedPrecondition, 422, "invalid_encrypted_data";
    /// rawData's signature does not match.
    InvalidSignature = "INVALID_SIGNATURE", FailedPrecondition, 422, "invalid_signature";
    /// A budget is spent: ours (per client, app or user) or WeChat's (45011).
    /// The status carries a `google.rpc.RetryInfo` when the wait is known.
    RateLimited = "RATE_LIMITED", ResourceExhausted, 429, "rate_limited";
    /// WeChat rejected our own appid or secret (40013, 40125).
    WechatConfig = "WECHAT_CONFIG", Internal, 500, "server_misconfigured";
    /// An internal caller presented no valid credential: a deployment
    /// mistake (the services' `INTERNAL_*_SECRET`s differ).
    CallerUnauthenticated = "CALLER_UNAUTHENTICATED", Unauthenticated, 500, "server_misconfigured";
    /// An internal caller asked for what its credential does not allow
    /// (only the user service may read session keys).
    CallerForbidden = "CALLER_FORBIDDEN", PermissionDenied, 500, "server_misconfigured";
    /// A bug; the details are in the logs of the service that had it.
    Internal = "INTERNAL", Internal, 500, "internal_error";
    /// WeChat could not be reached or answered nonsense.
    WechatUnavailable = "WECHAT_UNAVAILABLE", Unavailable, 502, "wechat_unavailable";
    /// Proxy mode: the team's service behind the gateway could not be
    /// reached.
    UpstreamUnavailable = "UPSTREAM_UNAVAILABLE", Unavailable, 502, "upstream_unavailable";
    /// Proxy mode: the team's service did not answer within
    /// `PROXY_TIMEOUT_MS`.
    UpstreamTimeout = "UPSTREAM_TIMEOUT", DeadlineExceeded, 504, "upstream_timeout";
    /// WeChat answered "system busy" (-1); the code was not spent.
    WechatBusy = "WECHAT_BUSY", Unavailable, 503, "wechat_busy";
    /// A service or a dependency (database, Redis) is unavailable, or a peer
    /// died mid-call; asking again later may succeed.
    DependencyUnavailable = "DEPENDENCY_UNAVAILABLE", Unavailable, 503, "service_unavailable";
    /// `/readyz`: a service the gateway needs does not serve.
    NotReady = "NOT_READY", Unavailable, 503, "not_ready";
}

impl Reason {
    /// A status with this reason's code, carrying the reason.
    pub fn status(self, message: impl Into<String>) -> Status {
        self.status_with(message, None)
    }

    /// A status that also tells the caller how long to wait before trying
    /// again (a `google.rpc.RetryInfo`).
    pub fn status_retry_after(self, message: impl Into<String>, wait: Duration) -> Status {
        self.status_with(message, Some(wait))
    }

    fn status_with(self, message: impl Into<String>, wait: Option<Duration>) -> Status {
        let mut details =
            ErrorDetails::with_error_info(self.as_str(), DOMAIN, std::collections::HashMap::new());
        if let Some(wait) = wait {
            details.set_retry_info(Some(wait));
        }
        Status::with_error_details(self.grpc_code(), message, details)
    }

    /// Whether the client may send the same request again later and expect
    /// it to work: the HTTP answer then carries `Retry-After`.
    pub fn is_retryable(self) -> bool {
        matches!(self.http_status(), 429 | 503)
    }
}

/// The wxlogin reason carried by `status`, if any.
pub fn of(status: &Status) -> Option<Reason> {
    let info = status.get_details_error_info()?;
    if info.domain != DOMAIN {
        return None;
    }
    Reason::parse(&info.reason)
}

/// The reason of any status a wxlogin service or the transport produced:
/// without a wxlogin reason, the peer died, froze, reset the stream or
/// could not be reached, which is [`Reason::DependencyUnavailable`].
pub fn of_status(status: &Status) -> Reason {
    of(status).unwrap_or(Reason::DependencyUnavailable)
}

/// How long `status` asks its caller to wait, when it says.
pub fn retry_after(status: &Status) -> Option<Duration> {
    status.get_details_retry_info()?.retry_delay
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_a_status_round_trip() {
        for &reason in Reason::ALL {
            let status = reason.status("nope");
            assert_eq!(of(&status), Some(reason));
            assert_eq!(of_status(&status), reason);
            assert_eq!(status.code(), reason.grpc_code());
            assert_eq!(status.message(), "nope");
            assert_eq!(retry_after(&status), None);
        }
    }

    #[test]
    fn the_table_is_whole_and_consistent() {
        let mut wire = std::collections::HashSet::new();
        for &reason in Reason::ALL {
            assert!(wire.insert(reason.as_str()), "{reason:?} twice");
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            let http = reason.http_status();
            assert!((400..600).contains(&http), "{reason:?}: {http}");
            let public = reason.public_code();
            assert!(
                !public.is_empty() && public.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{reason:?}: {public}"
            );
            // A client's mistake is never a gRPC code that reads as ours,
            // and an outage is never a client's mistake.
            match reason.grpc_code() {
                Code::Unavailable => assert!(http == 502 || http == 503, "{reason:?}"),
                Code::Internal => assert_eq!(http, 500, "{reason:?}"),
                Code::InvalidArgument => assert!((400..500).contains(&http), "{reason:?}"),
                _ => {}
            }
            assert_eq!(reason.is_retryable(), http == 429 || http == 503);
        }
    }

    #[test]
    fn a_status_without_a_reason_is_an_unavailable_peer() {
        for status in [
            Status::internal("h2 protocol error"),
            Status::unknown("transport error"),
            Status::cancelled("reset"),
            Status::unavailable("connection refused"),
        ] {
            assert_eq!(of(&status), None);
            assert_eq!(of_status(&status), Reason::DependencyUnavailable);
        }
    }

    #[test]
    fn a_wait_travels_with_the_status() {
        let status = Reason::RateLimited.status_retry_after("slow down", Duration::from_secs(7));
        assert_eq!(of(&status), Some(Reason::RateLimited));
        assert_eq!(retry_after(&status), Some(Duration::from_secs(7)));
    }

    #[test]
    fn a_status_without_details_has_no_reason() {
        assert_eq!(of(&Status::internal("boom")), None);
        assert_eq!(retry_after(&Status::internal("x")), None);
    }
}
