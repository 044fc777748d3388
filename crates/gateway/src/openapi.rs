//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers and
//! the types they read and write, served at `GET /openapi.json` and written
//! to `crates/gateway/openapi.json` (a test fails when the two differ).
//!
//! Error answers are described from the one table of reasons
//! (`wxlogin_proto::reason`): each operation names the reasons it can answer
//! with, and their statuses, codes and headers come from the table.

use std::{collections::BTreeMap, sync::LazyLock};

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, Header, Object, ObjectBuilder, RefOr, ResponseBuilder, Schema, Type,
        response::Response as ApiResponse,
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};
use wxlogin_proto::{
    fields::{Field, WEB_URL_PATTERN},
    reason::Reason,
};

use crate::routes::{self, identity};

/// The name of the session token's security scheme (the handlers' `security(("session" = []))`:
/// the macro takes only a literal).
pub const SESSION: &str = "session";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wxlogin",
        description = "WeChat mini-program login: exchange a `wx.login()` code for a session \
            token, read and update the user, decrypt `encryptedData`, and authenticate \
            requests to the team's own API (`/v1/verify`, proxy mode). Every error is \
            `{\"error\": {\"code\", \"message\"}}`; a 429 or 503 carries `Retry-After`.",
    ),
    paths(
        routes::login,
        routes::me,
        routes::delete_me,
        routes::verify,
        routes::logout,
        routes::sessions,
        routes::end_session,
        routes::profile_from_encrypted,
        routes::update_profile,
        routes::phone,
        routes::healthz,
        routes::readyz,
        serve,
    ),
    modifiers(&SessionScheme, &VerifyAnyMethod, &OptionalLogoutBody),
    tags(
        (name = "session", description = "Log in, check and end sessions."),
        (name = "user", description = "The logged-in user's data."),
        (name = "operations", description = "Health, readiness and this document."),
    )
)]
struct ApiDoc;

struct SessionScheme;

impl Modify for SessionScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "The session token `POST /v1/login` answers, as `Authorization: Bearer <token>`."
                .to_owned(),
        );
        components.add_security_scheme(SESSION, SecurityScheme::Http(scheme));
    }
}

/// `/v1/verify` answers every method alike (a proxy may ask with the
/// client's own): the document says so with the same operation under each.
struct VerifyAnyMethod;

impl Modify for VerifyAnyMethod {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(item) = openapi.paths.paths.get_mut("/v1/verify") else {
            return;
        };
        let Some(get) = item.get.clone() else { return };
        let each = |method: &str| {
            let mut operation = get.clone();
            operation.operation_id = Some(format!("verify_{method}"));
            Some(operation)
        };
        item.head = each("head");
        item.post = each("post");
        item.put = each("put");
        item.patch = each("patch");
        item.delete = each("delete");
        item.options = each("options");
        item.trace = each("trace");
    }
}

/// `POST /v1/logout` may come without a body (this session only); when it
/// has one, it is a `LogoutInput`, never `null`.
struct OptionalLogoutBody;

impl Modify for OptionalLogoutBody {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let body = openapi
            .paths
            .paths
            .get_mut("/v1/logout")
            .and_then(|item| item.post.as_mut())
            .and_then(|post| post.request_body.as_mut());
        if let Some(body) = body {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

/// The document, as served and as committed.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document's JSON, generated once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
});

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)),
)]
pub(crate) async fn serve() -> Response {
    let mut response = DOCUMENT.as_str().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The error answers of `reasons`, grouped by HTTP status: each status's
/// body names exactly the codes this operation can answer with it.
fn error_responses(reasons: &[&[Reason]]) -> BTreeMap<String, RefOr<ApiResponse>> {
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

fn enum_of(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// Every request with a body.
const BODY: &[Reason] = &[
    Reason::InvalidArgument,
    Reason::PayloadTooLarge,
    Reason::UnsupportedMediaType,
];
/// Every call that takes a session token.
const BEARER: &[Reason] = &[Reason::MissingToken, Reason::InvalidToken];
/// Every call that reaches a service.
const SERVICE: &[Reason] = &[
    Reason::DependencyUnavailable,
    Reason::Internal,
    Reason::CallerUnauthenticated,
];
/// Every call that may reach WeChat.
const WECHAT: &[Reason] = &[
    Reason::RateLimited,
    Reason::WechatConfig,
    Reason::WechatUnavailable,
    Reason::WechatBusy,
];
/// Every call that decrypts `encryptedData` with the session's key.
const DECRYPT: &[Reason] = &[
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

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
                error_responses(&[$($group),*])
            }
        }
    )*};
}

errors! {
    /// `POST /v1/login`.
    LoginErrors = [
        BODY,
        SERVICE,
        WECHAT,
        &[Reason::UnknownApp, Reason::InvalidCode, Reason::CodeUsed, Reason::UserBlocked],
    ];
    /// The calls that only check the session: `/v1/me`, `/v1/verify`,
    /// `GET /v1/me/sessions`.
    SessionErrors = [BEARER, SERVICE];
    /// `POST /v1/logout`, whose body is optional.
    LogoutErrors = [BODY, BEARER, SERVICE];
    /// `DELETE /v1/me/sessions/{id}`.
    EndSessionErrors = [BEARER, SERVICE, &[Reason::SessionNotFound]];
    /// `POST /v1/me/profile`.
    SealedProfileErrors = [
        BODY,
        BEARER,
        SERVICE,
        WECHAT,
        DECRYPT,
        &[Reason::InvalidSignature, Reason::UserNotFound],
    ];
    /// `PUT /v1/me/profile`.
    ProfileErrors = [BODY, BEARER, SERVICE, &[Reason::UserNotFound]];
    /// `POST /v1/me/phone`.
    PhoneErrors = [
        BODY,
        BEARER,
        SERVICE,
        WECHAT,
        DECRYPT,
        &[Reason::InvalidPhoneCode, Reason::PhoneCodeUsed, Reason::UserBlocked, Reason::UserNotFound],
    ];
}

/// `/v1/verify`'s answer: the identity headers, from the one list of them.
pub(crate) struct VerifyAnswer;

impl utoipa::IntoResponses for VerifyAnswer {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        let mut response =
            ResponseBuilder::new().description("The session is live; its identity is in headers.");
        for (name, what) in [
            (identity::USER_ID, "The user's id."),
            (identity::OPENID, "The user's openid."),
            (identity::UNIONID, "The user's unionid, only when known."),
            (identity::APPID, "The mini-program's appid."),
            (
                identity::SESSION_ID,
                "A stable id of this session (32 hex digits of a SHA-256 of the token).",
            ),
        ] {
            let schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(what));
            response = response.header(name, Header::new(schema));
        }
        BTreeMap::from([("200".to_owned(), RefOr::T(response.build()))])
    }
}

/// `/readyz`'s `503`: the error, and what each check answered.
pub(crate) struct NotReady;

impl utoipa::IntoResponses for NotReady {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        let mut responses = error_responses(&[&[Reason::NotReady]]);
        for response in responses.values_mut() {
            let RefOr::T(response) = response else {
                continue;
            };
            for content in response.content.values_mut() {
                let Some(RefOr::T(Schema::Object(body))) = &mut content.schema else {
                    continue;
                };
                body.properties
                    .insert("status".to_owned(), enum_of(&["not_ready"]).into());
                body.required.push("status".to_owned());
                body.properties.insert(
                    "checks".to_owned(),
                    RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Checks")),
                );
                body.required.push("checks".to_owned());
            }
            response.headers.clear();
        }
        responses
    }
}

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

    /// Where the committed copy lives, from the crate's directory.
    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

    #[test]
    fn the_committed_document_is_the_generated_one() {
        let generated = format!("{}\n", DOCUMENT.as_str());
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(COMMITTED, &generated).expect("write openapi.json");
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == generated,
            "crates/gateway/openapi.json differs from the API the code serves; \
             regenerate it with `UPDATE_OPENAPI=1 cargo test -p wxlogin-gateway openapi` \
             and commit it"
        );
    }

    #[test]
    fn every_reason_with_a_public_answer_is_documented_somewhere() {
        let document: serde_json::Value =
            serde_json::from_str(&DOCUMENT).expect("the document is JSON");
        let text = document.to_string();
        for &reason in Reason::ALL {
            // Answered by the router itself, for what the document does not
            // describe, or by proxy mode for the team's own routes.
            if matches!(
                reason,
                Reason::NotFound
                    | Reason::MethodNotAllowed
                    | Reason::UpstreamUnavailable
                    | Reason::UpstreamTimeout
            ) {
                continue;
            }
            assert!(
                text.contains(&format!("\"{}\"", reason.public_code())),
                "{reason:?} is in no operation's answers"
            );
        }
    }

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
