//! `/healthz` and `/readyz`: whether the gateway runs, and whether the
//! services it needs serve.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;
use utoipa::{
    ToSchema,
    openapi::{RefOr, Schema, response::Response as ApiResponse},
};
use wxlogin_proto::reason::Reason;

use super::schema::{enum_of, error_responses};
use crate::{
    error::ApiError,
    state::{AppState, Readiness},
};

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// `200` while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The gateway runs.", body = Health)),
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// What each service's health check answered.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Checks {
    auth: Readiness,
    user: Readiness,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    checks: Checks,
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

/// `200` when auth and user both serve, else `503 not_ready`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Auth and user both serve.", body = Ready),
        NotReady,
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let (auth, user) = tokio::join!(state.check_auth(), state.check_user());
    if auth.is_ready() && user.is_ready() {
        let checks = Checks { auth, user };
        return Json(Ready {
            status: "ready",
            checks,
        })
        .into_response();
    }
    let error = ApiError::new(
        Reason::NotReady,
        "a service the gateway needs is unavailable",
    );
    let mut body = error.body();
    body["status"] = json!("not_ready");
    body["checks"] = json!(Checks { auth, user });
    (error.status(), Json(body)).into_response()
}
