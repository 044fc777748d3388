//! Extractors that turn what the mini-program sends into typed input, or
//! into an `ApiError` that says what was wrong.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;
use wxlogin_common::request_id;
use wxlogin_proto::reason::Reason;

use crate::error::ApiError;

/// A request body in JSON or in `application/x-www-form-urlencoded`, the two
/// forms `wx.request` sends. Without a content type, JSON is assumed.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (kind, bytes) = read(request, state).await?;
        let kind = kind?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("the request body is empty"));
        }
        Body::parse(&kind, &bytes)
    }
}

/// A body that may be left out: an empty one is `None`, whatever its
/// content type.
impl<S: Send + Sync, T: DeserializeOwned> OptionalFromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let (kind, bytes) = read(request, state).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        Body::parse(&kind?, &bytes).map(Some)
    }
}

/// The body's kind, as its content type says, and its bytes.
async fn read<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<(Result<BodyKind, ApiError>, Bytes), ApiError> {
    let kind = BodyKind::of(request.headers());
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(Reason::PayloadTooLarge, "the request body is too large")
            } else {
                ApiError::bad_request("the request body could not be read")
            }
        })?;
    Ok((kind, bytes))
}

impl<T: DeserializeOwned> Body<T> {
    fn parse(kind: &BodyKind, bytes: &[u8]) -> Result<Self, ApiError> {
        let parsed = match kind {
            // Every body of the API is an object; serde would also read a
            // struct from an array of its fields.
            BodyKind::Json if bytes.trim_ascii_start().first() != Some(&b'{') => {
                return Err(ApiError::bad_request("the body must be a JSON object"));
            }
            BodyKind::Json => serde_json::from_slice(bytes).map_err(|error| {
                ApiError::bad_request(format!("the body is not valid JSON for this call: {error}"))
            })?,
            BodyKind::Form => serde_urlencoded::from_bytes(bytes).map_err(|error| {
                ApiError::bad_request(format!("the form body is not valid for this call: {error}"))
            })?,
        };
        Ok(Body(parsed))
    }
}

enum BodyKind {
    Json,
    Form,
}

impl BodyKind {
    fn of(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Ok(BodyKind::Json);
        };
        let mime = value
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" | "text/json" | "" => Ok(BodyKind::Json),
            "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
            _ => Err(ApiError::new(
                Reason::UnsupportedMediaType,
                "send application/json or application/x-www-form-urlencoded",
            )),
        }
    }
}

/// The session token from `Authorization: Bearer <token>`.
pub struct BearerToken(pub String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(ApiError::missing_token)?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid_token())?
            .trim();
        let (scheme, token) = value.split_once(' ').ok_or_else(ApiError::invalid_token)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ApiError::invalid_token());
        }
        Ok(BearerToken(token.to_owned()))
    }
}

/// The id of the request, set by the request-id layer, for the gRPC calls.
#[derive(Debug, Clone)]
pub struct RequestId(pub Option<http::HeaderValue>);

impl RequestId {
    /// The id as text, when there is one (the gateway always sets one).
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_ref().and_then(|id| id.to_str().ok())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts.headers.get(&request_id::HEADER_NAME).cloned(),
        ))
    }
}

/// The client's `User-Agent`, for the session a login opens (auth bounds
/// and cleans it: [`wxlogin_proto::fields::user_agent`]); empty without one.
#[derive(Debug)]
pub struct UserAgent(pub String);

impl<S: Send + Sync> FromRequestParts<S> for UserAgent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::USER_AGENT) else {
            return Ok(UserAgent(String::new()));
        };
        // No more than the characters kept can take (4 bytes each), so
        // that a huge header is not carried to auth.
        let bytes = value.as_bytes();
        let bytes = &bytes[..bytes
            .len()
            .min(wxlogin_proto::fields::USER_AGENT_MAX_CHARS * 4)];
        Ok(UserAgent(String::from_utf8_lossy(bytes).into_owned()))
    }
}
