//! The endpoints that imitate WeChat's server API: jscode2session, the two
//! token endpoints, getuserphonenumber and checksession.
//!
//! Like WeChat, they answer HTTP 200 with a JSON body labelled `text/plain`,
//! errors included. A new endpoint is a route in [`routes`] plus a handler
//! that answers through [`reply`] or [`WxError`]; the global latency applies
//! to every route here by itself.

use std::{borrow::Cow, time::Instant};

use axum::{
    Router,
    body::Bytes,
    extract::{Query, Request, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    Simulator, count, crypto, endpoint, ids,
    state::{CountryCode, Exchange, Fault, Taken, TokenKind, TokenRefusal},
};

pub(crate) fn routes(sim: Simulator) -> Router {
    Router::new()
        .route("/sns/jscode2session", get(jscode2session))
        .route("/cgi-bin/stable_token", post(stable_token))
        .route("/cgi-bin/token", get(token))
        .route(
            "/wxa/business/getuserphonenumber",
            post(get_user_phone_number),
        )
        .route("/wxa/checksession", get(check_session))
        .route_layer(middleware::from_fn_with_state(sim.clone(), latency))
        .with_state(sim)
}

async fn latency(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let latency = sim.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    next.run(request).await
}

/// A WeChat error answer: `{"errcode": N, "errmsg": "..."}`.
#[derive(Debug, Serialize)]
pub(crate) struct WxError {
    errcode: i64,
    errmsg: Cow<'static, str>,
}

impl WxError {
    const fn new(errcode: i64, errmsg: &'static str) -> Self {
        WxError {
            errcode,
            errmsg: Cow::Borrowed(errmsg),
        }
    }

    const INVALID_CODE: WxError = WxError::new(40029, "invalid code");
    const CODE_USED: WxError = WxError::new(40163, "code been used");
    const INVALID_APPID: WxError = WxError::new(40013, "invalid appid");
    const INVALID_SECRET: WxError = WxError::new(40125, "invalid appsecret");
    const MISSING_APPID: WxError = WxError::new(41002, "appid missing");
    const MISSING_SECRET: WxError = WxError::new(41004, "appsecret missing");
    const MISSING_CODE: WxError = WxError::new(41008, "missing code");
    const INVALID_GRANT_TYPE: WxError = WxError::new(40002, "invalid grant_type");
    const INVALID_TOKEN: WxError = WxError::new(
        40001,
        "invalid credential, access_token is invalid or not latest",
    );
    const EXPIRED_TOKEN: WxError = WxError::new(42001, "access_token expired");
    const INVALID_SIGNATURE: WxError = WxError::new(87009, "invalid signature");

    /// The answer a scripted fault asks for, with WeChat's usual text.
    fn from_fault(fault: Fault) -> Self {
        let errmsg = match fault.errmsg {
            Some(errmsg) => Cow::Owned(errmsg),
            None => Cow::Borrowed(default_errmsg(fault.errcode)),
        };
        WxError {
            errcode: fault.errcode,
            errmsg,
        }
    }
}

impl IntoResponse for WxError {
    fn into_response(self) -> Response {
        reply(StatusCode::OK, &self)
    }
}

fn default_errmsg(errcode: i64) -> &'static str {
    match errcode {
        -1 => "system error",
        40029 => "invalid code",
        40163 => "code been used",
        40226 => "high risk user",
        45011 => "api minute-quota reach limit  mustslower  retry next minute",
        40013 => "invalid appid",
        40125 => "invalid appsecret",
        40001 => "invalid credential, access_token is invalid or not latest",
        40014 => "invalid access_token",
        42001 => "access_token expired",
        45009 => "reach max api daily quota limit",
        87009 => "invalid signature",
        _ => "simulated fault",
    }
}

/// A WeChat answer: JSON labelled `text/plain`, as WeChat sends it.
pub(crate) fn reply<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(json) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            json,
        )
            .into_response(),
        // Only maps with non-string keys fail to serialise; none are sent.
        Err(error) => {
            tracing::error!(%error, "cannot serialise an answer");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The query of a malformed call (a repeated parameter, say): WeChat's
/// "invalid args", with HTTP 400 so that it stands out.
fn invalid_args(rejection: &QueryRejection) -> Response {
    let error = WxError {
        errcode: 40097,
        errmsg: Cow::Owned(format!("invalid args: {}", rejection.body_text())),
    };
    reply(StatusCode::BAD_REQUEST, &error)
}

/// A POST body that is not the JSON object the endpoint takes: WeChat's
/// "data format error", to be answered with HTTP 400 so that it stands out.
fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, WxError> {
    serde_json::from_slice(body).map_err(|error| WxError {
        errcode: 47001,
        errmsg: Cow::Owned(format!("data format error: {error}")),
    })
}

/// Plays the next fault queued for `endpoint`, if any: calls `consume`
/// when the fault uses the code up, waits its delay, and answers its
/// errcode (`None` after a delay-only fault: answer normally).
async fn play_fault(sim: &Simulator, endpoint: &str, consume: impl FnOnce()) -> Option<Response> {
    let fault = sim.with_state(|state| state.faults.next(endpoint))?;
    tracing::debug!(
        errcode = fault.errcode,
        endpoint,
        "answering with a scripted fault"
    );
    if fault.consume_code {
        // Consumed before the delay: WeChat used the code, then was slow or failed.
        consume();
    }
    if let Some(delay) = fault.delay_duration() {
        tokio::time::sleep(delay).await;
    }
    (fault.errcode != 0).then(|| WxError::from_fault(fault).into_response())
}

#[derive(Debug, Deserialize)]
struct Code2SessionQuery {
    appid: Option<String>,
    secret: Option<String>,
    js_code: Option<String>,
    grant_type: Option<String>,
}

#[derive(Serialize)]
struct Code2SessionOk {
    session_key: String,
    openid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    unionid: Option<String>,
}

async fn jscode2session(
    State(sim): State<Simulator>,
    query: Result<Query<Code2SessionQuery>, QueryRejection>,
) -> Response {
    count(&sim.calls().code2session);
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return invalid_args(&rejection),
    };

    let consume = || {
        if let (Ok(appid), Some(code)) =
            (sim.check_app(&query.appid, &query.secret), &query.js_code)
        {
            let now = Instant::now();
            sim.with_state(|state| {
                state.exchange(appid, code, now);
            });
        }
    };
    if let Some(fault) = play_fault(&sim, endpoint::JSCODE2SESSION, consume).await {
        return fault;
    }

    match code2session(&sim, &query) {
        Ok(ok) => reply(StatusCode::OK, &ok),
        Err(error) => {
            tracing::debug!(errcode = error.errcode, "jscode2session refused");
            error.into_response()
        }
    }
}

fn code2session(sim: &Simulator, query: &Code2SessionQuery) -> Result<Code2SessionOk, WxError> {
    let appid = sim.check_app(&query.appid, &query.secret)?;
    if query.grant_type.as_deref() != Some("authorization_code") {
        return Err(WxError::INVALID_GRANT_TYPE);
    }
    let code = match query.js_code.as_deref() {
        Some(code) if !code.is_empty() => code,
        _ => return Err(WxError::MISSING_CODE),
    };
    let now = Instant::now();
    match sim.with_state(|state| state.exchange(appid, code, now)) {
        Exchange::Ok(identity) => Ok(Code2SessionOk {
            session_key: identity.session_key,
            openid: identity.openid,
            unionid: identity.unionid,
        }),
        Exchange::Invalid => Err(WxError::INVALID_CODE),
        Exchange::Used => Err(WxError::CODE_USED),
    }
}

/// An access_token as the token endpoints answer it.
#[derive(Serialize)]
struct TokenOk {
    access_token: String,
    expires_in: u64,
}

#[derive(Debug, Deserialize)]
struct StableTokenRequest {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    force_refresh: Option<bool>,
}

async fn stable_token(State(sim): State<Simulator>, body: Bytes) -> Response {
    count(&sim.calls().stable_token);
    let request: StableTokenRequest = match json_body(&body) {
        Ok(request) => request,
        Err(error) => return reply(StatusCode::BAD_REQUEST, &error),
    };
    if let Some(fault) = play_fault(&sim, endpoint::STABLE_TOKEN, || {}).await {
        return fault;
    }
    let force_refresh = request.force_refresh.unwrap_or(false);
    match issue_token(
        &sim,
        &request.appid,
        &request.secret,
        request.grant_type.as_deref(),
        TokenKind::Stable,
        force_refresh,
    ) {
        Ok(ok) => reply(StatusCode::OK, &ok),
        Err(error) => {
            tracing::debug!(errcode = error.errcode, "stable_token refused");
            error.into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
}

async fn token(
    State(sim): State<Simulator>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    count(&sim.calls().token);
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return invalid_args(&rejection),
    };
    if let Some(fault) = play_fault(&sim, endpoint::TOKEN, || {}).await {
        return fault;
    }
    match issue_token(
        &sim,
        &query.appid,
        &query.secret,
        query.grant_type.as_deref(),
        TokenKind::Classic,
        true,
    ) {
        Ok(ok) => reply(StatusCode::OK, &ok),
        Err(error) => {
            tracing::debug!(errcode = error.errcode, "token refused");
            error.into_response()
        }
    }
}

fn issue_token(
    sim: &Simulator,
    appid: &Option<String>,
    secret: &Option<String>,
    grant_type: Option<&str>,
    kind: TokenKind,
    force_refresh: bool,
) -> Result<TokenOk, WxError> {
    let appid = sim.check_app(appid, secret)?;
    if grant_type != Some("client_credential") {
        return Err(WxError::INVALID_GRANT_TYPE);
    }
    let lifetimes = sim.token_lifetimes();
    let now = Instant::now();
    let issued = sim.with_state(|state| {
        state.tokens.issue(
            appid,
            kind,
            force_refresh,
            lifetimes,
            ids::access_token,
            now,
        )
    });
    Ok(TokenOk {
        access_token: issued.access_token,
        expires_in: issued.expires_in,
    })
}

/// The query of the endpoints that take an access_token.
#[derive(Debug, Deserialize)]
struct AccessTokenQuery {
    access_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PhoneNumberRequest {
    code: Option<String>,
    /// Accepted and ignored, as WeChat uses it for risk control only.
    #[allow(dead_code)]
    openid: Option<String>,
}

#[derive(Serialize)]
struct PhoneNumberOk {
    errcode: i64,
    errmsg: &'static str,
    phone_info: PhoneInfo,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhoneInfo {
    phone_number: String,
    pure_phone_number: String,
    country_code: CountryCode,
    watermark: Watermark,
}

#[derive(Serialize)]
struct Watermark {
    timestamp: i64,
    appid: String,
}

async fn get_user_phone_number(
    State(sim): State<Simulator>,
    query: Result<Query<AccessTokenQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    count(&sim.calls().phone_number);
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return invalid_args(&rejection),
    };
    let request: PhoneNumberRequest = match json_body(&body) {
        Ok(request) => request,
        Err(error) => return reply(StatusCode::BAD_REQUEST, &error),
    };

    let consume = || {
        if let (Ok(appid), Some(code)) = (
            sim.check_access_token(query.access_token.as_deref()),
            &request.code,
        ) {
            let now = Instant::now();
            sim.with_state(|state| {
                state.exchange_phone_code(&appid, code, now);
            });
        }
    };
    if let Some(fault) = play_fault(&sim, endpoint::GET_USER_PHONE_NUMBER, consume).await {
        return fault;
    }

    match phone_number(&sim, query.access_token.as_deref(), request.code.as_deref()) {
        Ok(ok) => reply(StatusCode::OK, &ok),
        Err(error) => {
            tracing::debug!(errcode = error.errcode, "getuserphonenumber refused");
            error.into_response()
        }
    }
}

fn phone_number(
    sim: &Simulator,
    access_token: Option<&str>,
    code: Option<&str>,
) -> Result<PhoneNumberOk, WxError> {
    let appid = sim.check_access_token(access_token)?;
    let code = match code {
        Some(code) if !code.is_empty() => code,
        _ => return Err(WxError::MISSING_CODE),
    };
    let now = Instant::now();
    match sim.with_state(|state| state.exchange_phone_code(&appid, code, now)) {
        Taken::Ok(record) => Ok(PhoneNumberOk {
            errcode: 0,
            errmsg: "ok",
            phone_info: PhoneInfo {
                phone_number: record.phone_number,
                pure_phone_number: record.pure_phone_number,
                country_code: record.country_code,
                watermark: Watermark {
                    timestamp: record.timestamp,
                    appid,
                },
            },
        }),
        Taken::Invalid => Err(WxError::INVALID_CODE),
        Taken::Used => Err(WxError::CODE_USED),
    }
}

#[derive(Debug, Deserialize)]
struct CheckSessionQuery {
    access_token: Option<String>,
    openid: Option<String>,
    signature: Option<String>,
    sig_method: Option<String>,
}

/// checkSessionKey's success.
#[derive(Serialize)]
struct Ok0 {
    errcode: i64,
    errmsg: &'static str,
}

async fn check_session(
    State(sim): State<Simulator>,
    query: Result<Query<CheckSessionQuery>, QueryRejection>,
) -> Response {
    count(&sim.calls().check_session);
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return invalid_args(&rejection),
    };
    if let Some(fault) = play_fault(&sim, endpoint::CHECK_SESSION, || {}).await {
        return fault;
    }
    match check_session_key(&sim, &query) {
        Ok(()) => reply(
            StatusCode::OK,
            &Ok0 {
                errcode: 0,
                errmsg: "ok",
            },
        ),
        Err(error) => {
            tracing::debug!(errcode = error.errcode, "checksession refused");
            error.into_response()
        }
    }
}

fn check_session_key(sim: &Simulator, query: &CheckSessionQuery) -> Result<(), WxError> {
    let appid = sim.check_access_token(query.access_token.as_deref())?;
    // Only hmac_sha256 exists; anything else cannot match (documented as
    // 87009 rather than WeChat's undocumented answer).
    if query.sig_method.as_deref() != Some("hmac_sha256") {
        return Err(WxError::INVALID_SIGNATURE);
    }
    let (Some(openid), Some(signature)) = (&query.openid, &query.signature) else {
        return Err(WxError::INVALID_SIGNATURE);
    };
    let Some(session_key) = sim.session_key(&appid, openid) else {
        return Err(WxError::INVALID_SIGNATURE);
    };
    // Exact comparison: uppercase hex or a signature over the decoded key
    // is what broken SDKs send, and WeChat refuses them.
    if *signature == crypto::check_session_signature(&session_key) {
        Ok(())
    } else {
        Err(WxError::INVALID_SIGNATURE)
    }
}

impl Simulator {
    /// The appid `access_token` belongs to, or WeChat's error: 40001 for a
    /// missing, unknown, invalidated or replaced token, 42001 for an
    /// expired one.
    fn check_access_token(&self, access_token: Option<&str>) -> Result<String, WxError> {
        let Some(token) = access_token.filter(|token| !token.is_empty()) else {
            return Err(WxError::INVALID_TOKEN);
        };
        let now = Instant::now();
        self.with_state(|state| state.tokens.check(token, now))
            .map_err(|refusal| match refusal {
                TokenRefusal::Invalid => WxError::INVALID_TOKEN,
                TokenRefusal::Expired => WxError::EXPIRED_TOKEN,
            })
    }

    /// The appid of a known app whose secret matches, or WeChat's error.
    fn check_app<'a>(
        &self,
        appid: &'a Option<String>,
        secret: &Option<String>,
    ) -> Result<&'a str, WxError> {
        let appid = match appid.as_deref() {
            Some(appid) if !appid.is_empty() => appid,
            _ => return Err(WxError::MISSING_APPID),
        };
        let Some(expected) = self.secret_of(appid) else {
            return Err(WxError::INVALID_APPID);
        };
        match secret.as_deref() {
            Some(secret) if !secret.is_empty() => {
                if secret == expected {
                    Ok(appid)
                } else {
                    Err(WxError::INVALID_SECRET)
                }
            }
            _ => Err(WxError::MISSING_SECRET),
        }
    }
}
