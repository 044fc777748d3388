//! What the handlers' OpenAPI annotations share: error answers described
//! from the one table of reasons (`wxlogin_proto::reason`), in the groups
//! operations answer with, and the schemas of bounded text fields.
//!
//! Each handler declares its own error set with [`errors!`], naming the
//! reasons it can answer with; statuses, codes and headers come from the
//! table, never from here. This module must not know any handler.

use std::collections::BTreeMap;

use axum::http::header;
use utoipa::openapi::{
    Content, Header, Object, ObjectBuilder, RefOr, ResponseBuilder, Type,
    response::Response as ApiResponse,
};
use wxlogin_proto::{
    fields::{Field, WEB_URL_PATTERN},
    reason::Reason,
};

/// The error answers of `reasons`, grouped by HTTP status: each status's
/// body names exactly the codes this operation can answer with it.
pub(crate) fn error_responses(reasons: &[&[Reason]]) -> BTreeMap<String, RefOr<ApiResponse>> {
    let mut by_status: BTreeMap<u16, Vec<Reason>> = BTreeMap::new();
    for &reason in reasons.iter().copied().flatten() {
        let same = by_status.entry(reason.http_status()).or_default();
        if !same
            .iter()
            .any(|known| known.public_code() == reason.public_code())
        {
            same.push(reason);
        }
    }
    by_status
        .into_iter()
        .map(|(status, reasons)| {
            let codes: Vec<&str> = reasons.iter().map(|reason| reason.public_code()).collect();
            let code = ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.clone()));
            let error = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("code", code)
                .required("code")
                .property(
                    "message",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("What went wrong, for people.")),
                )
                .required("message");
            let body = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("error", error)
                .required("error")
                .build();
            let mut response = ResponseBuilder::new()
                .description(format!("`{}`", codes.join("`, `")))
                .content("application/json", Content::new(Some(body)));
            if status == 401 {
                response = response.header(
                    header::WWW_AUTHENTICATE.as_str(),
                    Header::new(enum_of(&["Bearer"])),
                );
            }
            if reasons.iter().any(|reason| reason.is_retryable()) {
                response = response.header(
                    header::RETRY_AFTER.as_str(),
                    Header::new(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some("^[1-9][0-9]*$"))
                            .description(Some("Seconds to wait before trying again.")),
                    ),
                );
            }
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

/// A string schema that takes only `values`.
pub(crate) fn enum_of(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// Every request with a body.
pub(crate) const BODY: &[Reason] = &[
    Reason::InvalidArgument,
    Reason::PayloadTooLarge,
    Reason::UnsupportedMediaType,
];
/// Every call that takes a session token.
pub(crate) const BEARER: &[Reason] = &[Reason::MissingToken, Reason::InvalidToken];
/// Every call that reaches a service.
pub(crate) const SERVICE: &[Reason] = &[
    Reason::DependencyUnavailable,
    Reason::Internal,
    Reason::CallerUnauthenticated,
];
/// Every call that may reach WeChat.
pub(crate) const WECHAT: &[Reason] = &[
    Reason::RateLimited,
    Reason::WechatConfig,
    Reason::WechatUnavailable,
    Reason::WechatBusy,
];
/// Every call that decrypts `encryptedData` with the session's key.
pub(crate) const DECRYPT: &[Reason] = &[
    Reason::SessionKeyStale,
    Reason::InvalidEncryptedData,
    Reason::CallerForbidden,
];

/// Declares `IntoResponses` types that answer the error responses of a list
/// of reason groups, for the `responses(…)` of a handler's `#[utoipa::path]`.
macro_rules! errors {
    ($($(#[$doc:meta])* $name:ident = [$($group:expr),* $(,)?];)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;

        impl ::utoipa::IntoResponses for $name {
            fn responses() -> ::std::collections::BTreeMap<
                String,
                ::utoipa::openapi::RefOr<::utoipa::openapi::response::Response>,
            > {
                $crate::routes::schema::error_responses(&[$($group),*])
            }
        }
    )*};
}
pub(crate) use errors;

/// The schema of a text user field: its column's width.
fn text_field(field: Field) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .max_length(usize::try_from(field.max_chars()).ok())
}

/// A session's `user_agent`: at most the characters a session keeps.
pub(crate) fn user_agent_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .max_length(Some(wxlogin_proto::fields::USER_AGENT_MAX_CHARS))
        .description(Some(format!(
            "The client's `User-Agent` at login: its first {} characters, control \
             characters replaced by spaces.",
            wxlogin_proto::fields::USER_AGENT_MAX_CHARS
        )))
        .build()
}

/// `nickname` as users fill it in.
pub(crate) fn nickname_schema() -> Object {
    let field = Field::Nickname;
    text_field(field)
        .description(Some(format!(
            "At most {} characters; empty or WeChat's placeholder changes nothing.",
            field.max_chars()
        )))
        .build()
}

/// `avatar_url` as users pick it: empty, or an http(s) URL.
pub(crate) fn avatar_url_schema() -> Object {
    text_field(Field::AvatarUrl)
        .pattern(Some(format!("^$|{WEB_URL_PATTERN}")))
        .description(Some("An http(s) URL; empty changes nothing."))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_come_from_the_reason_table() {
        let responses = error_responses(&[&[Reason::InvalidCode, Reason::MissingToken]]);
        assert_eq!(responses.keys().collect::<Vec<_>>(), ["401"]);
        let RefOr::T(response) = &responses["401"] else {
            panic!("an inline response")
        };
        assert!(response.headers.contains_key("www-authenticate"));
        let json = serde_json::to_string(response).expect("serializes");
        assert!(json.contains("\"invalid_code\"") && json.contains("\"missing_token\""));
        let responses = error_responses(&[&[Reason::RateLimited]]);
        let RefOr::T(response) = &responses["429"] else {
            panic!("an inline response")
        };
        assert!(response.headers.contains_key("retry-after"));
    }
}
