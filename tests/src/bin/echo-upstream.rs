//! The team's own API, for the tests of what wxlogin puts in front of it
//! (proxy mode, nginx): a process of its own on 127.0.0.1 and a free port,
//! which it prints as `listening on <addr>`.
//!
//! It answers every request with the method, path, query, headers and body
//! it got, as JSON; `/…/status/<code>` answers that status with an
//! `x-upstream` header and a text body instead, and `/…/slow` answers after
//! two seconds. `GET /_echo/seen` answers how many other requests it got.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{any, get},
};

async fn echo(
    State(seen): State<Arc<AtomicU64>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    seen.fetch_add(1, Ordering::SeqCst);
    let path = uri.path().to_owned();
    if let Some(code) = path.rsplit_once("/status/").map(|(_, code)| code) {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::IM_A_TEAPOT);
        return (
            status,
            [("x-upstream", "yes")],
            format!("upstream says {code}"),
        )
            .into_response();
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                serde_json::json!(value.to_str().unwrap_or("<binary>")),
            )
        })
        .collect();
    Json(serde_json::json!({
        "method": method.as_str(),
        "path": path,
        "query": uri.query(),
        "headers": headers,
        "body": body,
    }))
    .into_response()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let seen = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/_echo/seen",
            get(async |State(seen): State<Arc<AtomicU64>>| seen.load(Ordering::SeqCst).to_string()),
        )
        .fallback(any(echo))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    axum::serve(listener, app).await
}
