//! The HTTP API: one module per endpoint, each with its own request and
//! response types and its own error set, and the one list of routes.
//!
//! Handlers turn a bearer token into a session or user only through the
//! session resolver in [`crate::state`]. This module must not assemble the
//! OpenAPI document nor import it: `openapi.rs` reads the handlers'
//! annotations, and the server hands its route to [`router`].

pub(crate) mod delete_me;
pub(crate) mod end_session;
mod fallbacks;
pub(crate) mod health;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod me;
pub(crate) mod phone;
pub(crate) mod profile;
mod schema;
pub(crate) mod sessions;
pub(crate) mod verify;
mod views;

use axum::{
    Router,
    routing::{delete, get, on, post},
};

pub use verify::identity;

use crate::state::AppState;

/// Every route, `others` (served beside them, e.g. the OpenAPI document's)
/// included: those are merged before the fallbacks are set, which reach
/// only the routes present then (a wrong method answers the same `405`
/// everywhere).
pub(crate) fn router(others: Router<AppState>) -> Router<AppState> {
    Router::new()
        .route("/v1/login", post(login::login))
        .route("/v1/me", get(me::me).delete(delete_me::delete_me))
        .route("/v1/verify", on(verify::VERIFY_METHODS, verify::verify))
        .route("/v1/logout", post(logout::logout))
        .route("/v1/me/sessions", get(sessions::sessions))
        .route("/v1/me/sessions/{id}", delete(end_session::end_session))
        .route(
            "/v1/me/profile",
            post(profile::profile_from_encrypted).put(profile::update_profile),
        )
        .route("/v1/me/phone", post(phone::phone))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(others)
        .fallback(fallbacks::not_found)
        .method_not_allowed_fallback(fallbacks::method_not_allowed)
}
