//! `ApiError`: the one place where failures become HTTP answers (gRPC
//! statuses and upstream answers that lack a field included).
//!
//! Every error is `{"error": {"code", "message"}}`. Status and code come
//! from the one table in `wxlogin_proto::reason`; nothing here or in a
//! handler picks its own. Internal causes are logged where they happen and
//! never shown.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use wxlogin_proto::reason::{self, Reason};

/// What a 503 asks the client to wait when nothing says otherwise.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(1);
/// What a 429 asks the client to wait when nothing says otherwise (WeChat's
/// 45011 does not say; its budgets are per minute).
const RETRY_RATE_LIMITED: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
    /// How long the client should wait before trying again, when known.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.reason.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn code(&self) -> &'static str {
        self.reason.public_code()
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(Reason::InvalidArgument, message)
    }

    pub fn missing_token() -> Self {
        ApiError::new(
            Reason::MissingToken,
            "send the session token as Authorization: Bearer <token>",
        )
    }

    pub fn invalid_token() -> Self {
        ApiError::new(
            Reason::InvalidToken,
            "the session token is unknown or expired; log in again",
        )
    }

    pub fn internal() -> Self {
        ApiError::new(Reason::Internal, "internal error")
    }

    pub fn unavailable() -> Self {
        ApiError::new(
            Reason::DependencyUnavailable,
            "a service this request needs is unavailable; try again",
        )
    }

    /// The JSON body of this error, for answers that add fields to it.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code(), "message": self.message } })
    }
}

/// An upstream answer without a field the gateway needs (a field proto3
/// lets be absent, which the service always sets): the typed conversions
/// of upstream answers fail with it, and it is answered as `internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing(pub &'static str);

impl From<Missing> for ApiError {
    fn from(Missing(what): Missing) -> Self {
        tracing::error!(what, "an upstream answer lacks a required field");
        ApiError::internal()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let Some(reason) = reason::of(&status) else {
            // Not a wxlogin handler's answer: the transport's (a peer that
            // died, froze past the deadline or reset the connection).
            // DEBUG: the answer's own WARN line (below) says it once.
            tracing::debug!(code = ?status.code(), message = status.message(), "upstream unavailable");
            return ApiError::unavailable();
        };
        let message = match reason {
            // The service's message may name what an operator fixes; the
            // client only learns that it is not its fault.
            // (Auth logged WeChat's refusal of our appid where it happened.)
            Reason::WechatConfig => "the login service is misconfigured".to_owned(),
            Reason::CallerUnauthenticated | Reason::CallerForbidden => {
                tracing::error!(
                    ?reason,
                    message = status.message(),
                    "an upstream refused us: check the configuration"
                );
                "the login service is misconfigured".to_owned()
            }
            Reason::Internal => "internal error".to_owned(),
            Reason::DependencyUnavailable => {
                "a service this request needs is unavailable; try again".to_owned()
            }
            _ => status.message().to_owned(),
        };
        ApiError {
            reason,
            message,
            retry_after: reason::retry_after(&status),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                code = self.code(),
                "request failed"
            );
        }
        let mut response = (status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.reason.is_retryable() {
            let default = if status == StatusCode::TOO_MANY_REQUESTS {
                RETRY_RATE_LIMITED
            } else {
                RETRY_UNAVAILABLE
            };
            // Whole seconds, rounded up: never ask for less than the wait.
            let wait = self.retry_after.unwrap_or(default);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_answered_by_the_table() {
        for &reason in Reason::ALL {
            let error = ApiError::from(reason.status("m"));
            assert_eq!(error.reason, reason);
            assert_eq!(error.status().as_u16(), reason.http_status());
            assert_eq!(error.code(), reason.public_code());
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), reason.http_status());
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                matches!(reason.http_status(), 429 | 503),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn a_status_without_a_reason_is_503() {
        for status in [
            tonic::Status::unavailable("x"),
            tonic::Status::deadline_exceeded("x"),
            tonic::Status::unknown("transport error"),
            tonic::Status::cancelled("x"),
            tonic::Status::internal("h2 protocol error: db password is hunter2"),
        ] {
            let error = ApiError::from(status);
            assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(error.code(), "service_unavailable");
            assert!(!error.message.contains("hunter2"));
        }
    }

    #[test]
    fn an_answer_without_a_required_field_is_internal() {
        let error = ApiError::from(Missing("session"));
        assert_eq!(error, ApiError::internal());
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.code(), Reason::Internal.public_code());
    }

    #[test]
    fn internal_messages_are_masked() {
        let error = ApiError::from(Reason::Internal.status("db password is hunter2"));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.message.contains("hunter2"));
    }

    #[test]
    fn retry_after_says_the_wait_in_whole_seconds() {
        let error = ApiError::from(
            Reason::RateLimited.status_retry_after("slow down", Duration::from_millis(2500)),
        );
        let response = error.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let wechat = ApiError::from(Reason::RateLimited.status("45011")).into_response();
        assert_eq!(wechat.headers()[header::RETRY_AFTER], "60");
        for tiny in [Duration::from_millis(1), Duration::ZERO] {
            let error = ApiError::from(Reason::RateLimited.status_retry_after("m", tiny));
            assert_eq!(error.into_response().headers()[header::RETRY_AFTER], "1");
        }
    }
}
