//! The `/sim/` control API: what tests in other processes, benchmarks and
//! humans use to mint codes, retire access_tokens, seal user data, script
//! faults and read counters. JSON in and
//! out; a malformed request gets 400 and `{"error": "..."}`.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    Fault, MintCode, MintPhoneCode, Minted, MintedPhoneCode, Sealed, Simulator, Stats, crypto,
    endpoint, numeric_country_code, unix_now,
};

pub(crate) fn routes(sim: Simulator) -> Router {
    Router::new()
        .route("/sim/codes", post(mint_code))
        .route("/sim/phone-codes", post(mint_phone_code))
        .route(
            "/sim/access-tokens/invalidate",
            post(invalidate_access_tokens),
        )
        .route(
            "/sim/access-tokens/ttl",
            put(set_access_token_ttl).get(get_access_token_ttl),
        )
        .route(
            "/sim/access-tokens/grace",
            put(set_access_token_grace).get(get_access_token_grace),
        )
        .route("/sim/seal", post(seal))
        .route("/sim/faults", post(push_fault))
        .route("/sim/latency", put(set_latency).get(get_latency))
        .route("/sim/session-key", get(session_key))
        .route("/sim/stats", get(stats))
        .with_state(sim)
}

/// A refused control request.
#[derive(Debug)]
pub(crate) struct ControlError {
    status: StatusCode,
    message: String,
}

impl ControlError {
    fn bad_request(message: impl Into<String>) -> Self {
        ControlError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ControlError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON body whatever its content type (curl users forget it); an
/// empty body counts as `{}`.
fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ControlError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|error| ControlError::bad_request(format!("bad JSON body: {error}")))
}

async fn mint_code(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<Json<Minted>, ControlError> {
    let request: MintCode = json_body(&body)?;
    if let Some(appid) = request.appid.as_deref().filter(|appid| !appid.is_empty())
        && sim.secret_of(appid).is_none()
    {
        return Err(ControlError::bad_request(format!("unknown appid {appid}")));
    }
    Ok(Json(sim.mint_code(request)))
}

/// `appid` unless it is absent or empty, then the default app; refused
/// when the simulator does not know it.
fn known_appid(sim: &Simulator, appid: Option<String>) -> Result<String, ControlError> {
    match appid.filter(|appid| !appid.is_empty()) {
        None => Ok(sim.default_appid().to_owned()),
        Some(appid) if sim.secret_of(&appid).is_some() => Ok(appid),
        Some(appid) => Err(ControlError::bad_request(format!("unknown appid {appid}"))),
    }
}

async fn mint_phone_code(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<Json<MintedPhoneCode>, ControlError> {
    let mut request: MintPhoneCode = json_body(&body)?;
    request.appid = Some(known_appid(&sim, request.appid)?);
    if request.country_code_as_number
        && let Some(country_code) = request.country_code.as_deref().filter(|c| !c.is_empty())
        && numeric_country_code(country_code).is_none()
    {
        return Err(ControlError::bad_request(
            "country_code_as_number needs a country_code of digits",
        ));
    }
    Ok(Json(sim.mint_phone_code(request)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct InvalidateRequest {
    appid: Option<String>,
}

#[derive(Serialize)]
struct Invalidated {
    appid: String,
    invalidated: usize,
}

async fn invalidate_access_tokens(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<Json<Invalidated>, ControlError> {
    let request: InvalidateRequest = json_body(&body)?;
    let appid = known_appid(&sim, request.appid)?;
    let invalidated = sim.invalidate_access_tokens(&appid);
    Ok(Json(Invalidated { appid, invalidated }))
}

async fn set_access_token_ttl(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<Json<Latency>, ControlError> {
    let ttl: Latency = json_body(&body)?;
    sim.set_access_token_ttl(Duration::from_millis(ttl.ms));
    Ok(Json(ttl))
}

async fn get_access_token_ttl(State(sim): State<Simulator>) -> Json<Latency> {
    Json(Latency {
        ms: millis(sim.token_lifetimes().ttl),
    })
}

async fn set_access_token_grace(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<Json<Latency>, ControlError> {
    let grace: Latency = json_body(&body)?;
    sim.set_access_token_grace(Duration::from_millis(grace.ms));
    Ok(Json(grace))
}

async fn get_access_token_grace(State(sim): State<Simulator>) -> Json<Latency> {
    Json(Latency {
        ms: millis(sim.token_lifetimes().grace),
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealRequest {
    appid: Option<String>,
    openid: String,
    data: serde_json::Value,
}

async fn seal(State(sim): State<Simulator>, body: Bytes) -> Result<Json<Sealed>, ControlError> {
    let request: SealRequest = json_body(&body)?;
    let appid = known_appid(&sim, request.appid)?;
    let Some(session_key) = sim.session_key(&appid, &request.openid) else {
        return Err(ControlError::not_found(
            "no session_key for that appid and openid",
        ));
    };
    crypto::seal_user_data(&appid, &session_key, request.data, unix_now())
        .map(Json)
        .map_err(|error| ControlError::bad_request(error.to_string()))
}

async fn push_fault(State(sim): State<Simulator>, body: Bytes) -> Result<StatusCode, ControlError> {
    let fault: Fault = json_body(&body)?;
    if fault.times == 0 {
        return Err(ControlError::bad_request("times must be at least 1"));
    }
    if let Some(scope) = fault.endpoint.as_deref()
        && !endpoint::ALL.contains(&scope)
    {
        return Err(ControlError::bad_request(format!(
            "unknown endpoint {scope}; one of {}",
            endpoint::ALL.join(", ")
        )));
    }
    sim.push_fault(fault);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Latency {
    ms: u64,
}

async fn set_latency(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<Json<Latency>, ControlError> {
    let latency: Latency = json_body(&body)?;
    sim.set_latency(Duration::from_millis(latency.ms));
    Ok(Json(latency))
}

async fn get_latency(State(sim): State<Simulator>) -> Json<Latency> {
    Json(Latency {
        ms: sim.stats().latency_ms,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionKeyQuery {
    appid: Option<String>,
    openid: String,
}

#[derive(Serialize)]
struct SessionKeyBody {
    appid: String,
    openid: String,
    session_key: String,
}

async fn session_key(
    State(sim): State<Simulator>,
    query: Result<Query<SessionKeyQuery>, QueryRejection>,
) -> Result<Json<SessionKeyBody>, ControlError> {
    let Query(query) =
        query.map_err(|rejection| ControlError::bad_request(rejection.body_text()))?;
    let appid = query
        .appid
        .filter(|appid| !appid.is_empty())
        .unwrap_or_else(|| sim.default_appid().to_owned());
    match sim.session_key(&appid, &query.openid) {
        Some(session_key) => Ok(Json(SessionKeyBody {
            appid,
            openid: query.openid,
            session_key,
        })),
        None => Err(ControlError::not_found(
            "no session_key for that appid and openid",
        )),
    }
}

async fn stats(State(sim): State<Simulator>) -> Json<Stats> {
    Json(sim.stats())
}
