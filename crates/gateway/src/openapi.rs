//! The OpenAPI 3.1 document of the HTTP API, assembled from the handlers'
//! and their types' annotations, served at `GET /openapi.json` (its
//! [`router`]) and written to `crates/gateway/openapi.json` (a test fails
//! when the two differ).
//!
//! Error answers are described from the one table of reasons
//! (`wxlogin_proto::reason`): each handler names the reasons it can answer
//! with, and their statuses, codes and headers come from the table.
//!
//! This module only assembles: operations, their types and error sets are
//! described beside their handlers (`routes`), and it must not describe
//! any but its own route. No handler imports it; the server merges its
//! [`router`].

use std::sync::LazyLock;

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

use crate::{routes, state::AppState};

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
        routes::login::login,
        routes::me::me,
        routes::delete_me::delete_me,
        routes::verify::verify,
        routes::logout::logout,
        routes::sessions::sessions,
        routes::end_session::end_session,
        routes::profile::profile_from_encrypted,
        routes::profile::update_profile,
        routes::phone::phone,
        routes::health::healthz,
        routes::health::readyz,
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

/// The route that serves the document, for the router to merge.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve))
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
async fn serve() -> Response {
    let mut response = DOCUMENT.as_str().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use wxlogin_proto::reason::Reason;

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
}
