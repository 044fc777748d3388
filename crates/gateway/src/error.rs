//! `ApiError`: the one place where failures become HTTP answers.
//!
//! Every error is `{"error": {"code", "message"}}` with a stable snake_case
//! code. Internal causes are logged here, once, and never shown.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tonic::Code;
use wxlogin_proto::reason::{self, Reason};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After`, when the upstream said (a `RetryInfo`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn missing_token() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "send the session token as Authorization: Bearer <token>",
        )
    }

    pub fn invalid_token() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the session token is unknown or expired; log in again",
        )
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }

    pub fn unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "a service this request needs is unavailable; try again",
        )
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        let retry_after = retry_after_secs(&status);
        let mut error = match reason::of(&status) {
            Some(Reason::InvalidArgument) => ApiError::bad_request(message),
            Some(Reason::UnknownApp) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_app", message)
            }
            Some(Reason::InvalidCode) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_code", message)
            }
            Some(Reason::CodeUsed) => ApiError::new(StatusCode::UNAUTHORIZED, "code_used", message),
            Some(Reason::UserBlocked) => {
                ApiError::new(StatusCode::FORBIDDEN, "user_blocked", message)
            }
            Some(Reason::RateLimited) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            }
            Some(Reason::WechatBusy) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "wechat_busy", message)
            }
            Some(Reason::WechatUnavailable) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "wechat_unavailable", message)
            }
            Some(Reason::WechatConfig) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_misconfigured",
                "the login service is misconfigured",
            ),
            Some(Reason::InvalidToken) => ApiError::invalid_token(),
            Some(Reason::UserNotFound) => {
                ApiError::new(StatusCode::NOT_FOUND, "user_not_found", message)
            }
            Some(Reason::DependencyUnavailable) => ApiError::unavailable(),
            Some(Reason::InvalidEncryptedData) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_encrypted_data",
                message,
            ),
            Some(Reason::InvalidSignature) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_signature",
                message,
            ),
            Some(Reason::SessionKeyStale) => {
                ApiError::new(StatusCode::CONFLICT, "session_key_stale", message)
            }
            None => match status.code() {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::ResourceExhausted => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "upstream unavailable");
                    ApiError::unavailable()
                }
                _ => {
                    tracing::error!(code = ?status.code(), message = status.message(), "upstream failed");
                    ApiError::internal()
                }
            },
        };
        error.retry_after = retry_after;
        error
    }
}

/// The whole seconds (at least 1) `status`'s `RetryInfo` asks the client
/// to wait: `Retry-After` has no fractions, and 0 would invite a retry
/// that is refused again.
pub fn retry_after_secs(status: &tonic::Status) -> Option<u64> {
    let delay = reason::retry_after(status)?;
    Some(delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).map(|secs| secs.max(1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(
                status = self.status.as_u16(),
                code = self.code,
                "request failed"
            );
        }
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_to_a_client_answer() {
        for &reason in Reason::ALL {
            let error = ApiError::from(reason::status(Code::Unknown, reason, "m"));
            assert!(!error.code.is_empty());
            assert!(
                error
                    .code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                error.code
            );
        }
    }

    #[test]
    fn retry_info_becomes_retry_after_in_whole_seconds() {
        use std::time::Duration;
        let answer =
            |delay| ApiError::from(reason::rate_limited("slow down", delay)).into_response();
        let header = |response: &Response| {
            response.headers()[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .to_owned()
        };
        let limited = answer(Duration::from_millis(12_300));
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&limited), "13");
        assert_eq!(header(&answer(Duration::from_millis(1))), "1");
        assert_eq!(header(&answer(Duration::ZERO)), "1");
        let without = ApiError::from(reason::status(
            Code::ResourceExhausted,
            Reason::RateLimited,
            "m",
        ));
        assert_eq!(header(&without.into_response()), "60");
    }

    #[test]
    fn statuses_without_a_reason() {
        assert_eq!(
            ApiError::from(tonic::Status::unavailable("x")).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(tonic::Status::deadline_exceeded("x")).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let internal = ApiError::from(tonic::Status::internal("db password is hunter2"));
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.message.contains("hunter2"));
    }
}
