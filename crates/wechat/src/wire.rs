//! What every WeChat answer has in common: a JSON body whatever the content
//! type says (WeChat labels it `text/plain`), and an errcode that may be
//! absent, meaning 0, and that wins over the HTTP status.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::Error;

/// Parses `body` as the JSON answer of `endpoint`. The message names serde's
/// error category and position only: serde's own message may quote the
/// offending value, which may be a session_key or a phone number.
pub(crate) fn parse_json<T: DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
    endpoint: &str,
) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|error| {
        Error::InvalidResponse(format!(
            "HTTP {status}: body is not a {endpoint} JSON object ({:?} error at line {}, column {})",
            error.classify(),
            error.line(),
            error.column()
        ))
    })
}

/// Turns a non-zero errcode into its error (`map` says what the errcodes
/// mean on this endpoint), and a non-2xx status without one into an invalid
/// response. `Ok` means the rest of the body is worth reading.
pub(crate) fn check_errcode(
    status: StatusCode,
    errcode: Option<i64>,
    errmsg: Option<String>,
    map: fn(i64, Option<String>) -> Error,
) -> Result<(), Error> {
    let errcode = errcode.unwrap_or(0);
    if errcode != 0 {
        return Err(map(errcode, errmsg));
    }
    if !status.is_success() {
        return Err(Error::InvalidResponse(format!(
            "HTTP {status} without an errcode"
        )));
    }
    Ok(())
}

/// [`check_errcode`] for the endpoints that take an access_token, whose
/// errcodes say whether WeChat refused the token.
pub(crate) fn check_token_errcode(
    status: StatusCode,
    errcode: Option<i64>,
    errmsg: Option<String>,
) -> Result<(), Error> {
    check_errcode(status, errcode, errmsg, Error::from_access_token_errcode)
}

/// `value`, unless it is absent or empty.
pub(crate) fn present(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}
