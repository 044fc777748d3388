//! The simulator over a real socket, as the services and benchmarks see it.

// Test code: a failed unwrap is a failed test, and helpers sit outside #[test].
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url, header::CONTENT_TYPE};
use serde_json::{Value, json};
use wxlogin_wechat_sim::{
    DEFAULT_APPID, DEFAULT_SECRET, Fault, MintCode, Minted, RunningSimulator, SimConfig, Simulator,
    Stats,
};

const OTHER_APPID: &str = "wx_other_app_0001";
const OTHER_SECRET: &str = "other0secret";

async fn spawn_with(config: SimConfig) -> RunningSimulator {
    Simulator::new(config)
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn spawn() -> RunningSimulator {
    spawn_with(SimConfig {
        apps: vec![
            (DEFAULT_APPID.to_owned(), DEFAULT_SECRET.to_owned()),
            (OTHER_APPID.to_owned(), OTHER_SECRET.to_owned()),
        ],
        ..SimConfig::default()
    })
    .await
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Answer {
    fn errcode(&self) -> Option<i64> {
        self.body.get("errcode").and_then(Value::as_i64)
    }
}

async fn jscode2session(server: &RunningSimulator, params: &[(&str, &str)]) -> Answer {
    let mut url = Url::parse(&format!("{}/sns/jscode2session", server.base_url())).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn exchange(server: &RunningSimulator, appid: &str, secret: &str, code: &str) -> Answer {
    jscode2session(
        server,
        &[
            ("appid", appid),
            ("secret", secret),
            ("js_code", code),
            ("grant_type", "authorization_code"),
        ],
    )
    .await
}

async fn exchange_default(server: &RunningSimulator, code: &str) -> Answer {
    exchange(server, DEFAULT_APPID, DEFAULT_SECRET, code).await
}

fn mint(server: &RunningSimulator) -> Minted {
    server.sim.mint_code(MintCode::default())
}

#[tokio::test]
async fn a_code_is_exchanged_once_like_wechat_does() {
    let server = spawn().await;
    let minted = server.sim.mint_code(MintCode {
        unionid: Some("uUNION".to_owned()),
        ..MintCode::default()
    });

    let first = exchange_default(&server, &minted.code).await;
    let second = exchange_default(&server, &minted.code).await;

    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.content_type, "text/plain");
    assert_eq!(
        first.body,
        json!({"session_key": minted.session_key, "openid": minted.openid, "unionid": "uUNION"})
    );
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.content_type, "text/plain");
    assert_eq!(
        second.body,
        json!({"errcode": 40163, "errmsg": "code been used"})
    );
    assert_eq!(server.sim.code2session_calls(), 2);
}

#[tokio::test]
async fn unionid_is_only_sent_when_the_identity_has_one() {
    let server = spawn().await;
    let minted = mint(&server);

    let answer = exchange_default(&server, &minted.code).await;

    assert_eq!(minted.unionid, None);
    assert!(answer.body.get("unionid").is_none(), "{}", answer.body);
    assert!(answer.body.get("errcode").is_none(), "{}", answer.body);
}

#[tokio::test]
async fn codes_expire_after_the_configured_ttl() {
    let server = spawn_with(SimConfig {
        code_ttl: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let minted = mint(&server);

    tokio::time::sleep(Duration::from_millis(250)).await;
    let answer = exchange_default(&server, &minted.code).await;

    assert_eq!(answer.errcode(), Some(40029));
}

#[tokio::test]
async fn a_code_from_another_app_is_invalid() {
    let server = spawn().await;
    let minted = mint(&server);

    let answer = exchange(&server, OTHER_APPID, OTHER_SECRET, &minted.code).await;

    assert_eq!(
        answer.body,
        json!({"errcode": 40029, "errmsg": "invalid code"})
    );
    // The code is still good for its own app.
    let answer = exchange_default(&server, &minted.code).await;
    assert_eq!(answer.errcode(), None);
}

#[tokio::test]
async fn unknown_codes_are_invalid() {
    let server = spawn().await;

    let answer = exchange_default(&server, "0123456789abcdefABCDEF0123456789").await;

    assert_eq!(answer.errcode(), Some(40029));
}

#[tokio::test]
async fn bad_credentials_and_arguments_get_wechats_errcodes() {
    let server = spawn().await;
    let code = mint(&server).code;

    let wrong_secret = exchange(&server, DEFAULT_APPID, "not-the-secret", &code).await;
    let unknown_app = exchange(&server, "wx_unknown", DEFAULT_SECRET, &code).await;
    let no_code = exchange(&server, DEFAULT_APPID, DEFAULT_SECRET, "").await;
    let no_appid = jscode2session(&server, &[("secret", DEFAULT_SECRET), ("js_code", &code)]).await;
    let no_secret = jscode2session(&server, &[("appid", DEFAULT_APPID), ("js_code", &code)]).await;
    let bad_grant = jscode2session(
        &server,
        &[
            ("appid", DEFAULT_APPID),
            ("secret", DEFAULT_SECRET),
            ("js_code", &code),
            ("grant_type", "client_credential"),
        ],
    )
    .await;

    assert_eq!(
        wrong_secret.body,
        json!({"errcode": 40125, "errmsg": "invalid appsecret"})
    );
    assert_eq!(
        unknown_app.body,
        json!({"errcode": 40013, "errmsg": "invalid appid"})
    );
    assert_eq!(
        no_code.body,
        json!({"errcode": 41008, "errmsg": "missing code"})
    );
    assert_eq!(no_appid.errcode(), Some(41002));
    assert_eq!(no_secret.errcode(), Some(41004));
    assert_eq!(
        bad_grant.body,
        json!({"errcode": 40002, "errmsg": "invalid grant_type"})
    );
    for answer in [&wrong_secret, &unknown_app, &no_code, &bad_grant] {
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.content_type, "text/plain");
    }
    // None of the refusals used the code up.
    assert_eq!(exchange_default(&server, &code).await.errcode(), None);
}

#[tokio::test]
async fn a_malformed_query_is_a_400_in_wechats_shape() {
    let server = spawn().await;

    let answer = jscode2session(&server, &[("appid", "a"), ("appid", "b")]).await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.errcode(), Some(40097));
}

#[tokio::test]
async fn faults_answer_in_order_as_many_times_as_asked() {
    let server = spawn().await;
    let code = mint(&server).code;
    server.sim.push_fault(Fault::errcode(-1).times(2));
    server.sim.push_fault(Fault {
        errcode: 45011,
        errmsg: Some("slow down".to_owned()),
        ..Fault::default()
    });
    server.sim.push_fault(Fault::errcode(40226));

    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(exchange_default(&server, &code).await);
    }

    let errcodes: Vec<Option<i64>> = answers.iter().map(Answer::errcode).collect();
    assert_eq!(
        errcodes,
        vec![Some(-1), Some(-1), Some(45011), Some(40226), None]
    );
    assert_eq!(answers[0].body["errmsg"], "system error");
    assert_eq!(answers[2].body["errmsg"], "slow down");
    assert_eq!(answers[4].body["openid"].as_str().map(str::len), Some(28));
    assert_eq!(server.sim.stats().pending_faults, 0);
    assert_eq!(server.sim.code2session_calls(), 5);
}

#[tokio::test]
async fn a_consuming_fault_uses_the_code_up() {
    let server = spawn().await;
    let code = mint(&server).code;
    server.sim.push_fault(Fault::errcode(-1).consuming_code());

    let busy = exchange_default(&server, &code).await;
    let retry = exchange_default(&server, &code).await;

    assert_eq!(busy.errcode(), Some(-1));
    assert_eq!(retry.errcode(), Some(40163));
}

#[tokio::test]
async fn a_delay_only_fault_answers_normally_but_late() {
    let server = spawn().await;
    let code = mint(&server).code;
    server
        .sim
        .push_fault(Fault::delay(Duration::from_millis(200)));

    let started = Instant::now();
    let answer = exchange_default(&server, &code).await;

    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(answer.errcode(), None);
    assert!(answer.body.get("session_key").is_some());
}

#[tokio::test]
async fn re_minting_for_a_user_rotates_the_session_key() {
    let server = spawn().await;
    let first = server.sim.mint_code(MintCode {
        openid: Some("o_alice".to_owned()),
        ..MintCode::default()
    });
    let second = server.sim.mint_code(MintCode {
        openid: Some("o_alice".to_owned()),
        ..MintCode::default()
    });

    assert_ne!(first.session_key, second.session_key);
    assert_eq!(
        server.sim.session_key(DEFAULT_APPID, "o_alice"),
        Some(second.session_key.clone())
    );
    // The older code still carries the key it was minted with.
    let answer = exchange_default(&server, &first.code).await;
    assert_eq!(answer.body["session_key"], first.session_key.as_str());

    let chosen = server.sim.mint_code(MintCode {
        openid: Some("o_alice".to_owned()),
        session_key: Some("HyVFkGl5F5OQWJZZaNzBBg==".to_owned()),
        ..MintCode::default()
    });
    assert_eq!(chosen.session_key, "HyVFkGl5F5OQWJZZaNzBBg==");
    assert_eq!(
        server.sim.session_key(DEFAULT_APPID, "o_alice").as_deref(),
        Some("HyVFkGl5F5OQWJZZaNzBBg==")
    );
    assert_eq!(server.sim.session_key(OTHER_APPID, "o_alice"), None);
}

// ---- control API ----

async fn control(
    server: &RunningSimulator,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url()))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

#[tokio::test]
async fn codes_minted_over_http_can_be_exchanged() {
    let server = spawn().await;

    let (status, body) = control(
        &server,
        reqwest::Method::POST,
        "/sim/codes",
        &json!({"appid": OTHER_APPID, "openid": "o_bob", "unionid": "u_bob"}).to_string(),
    )
    .await;
    let minted: Minted = serde_json::from_value(body).unwrap();
    let answer = exchange(&server, OTHER_APPID, OTHER_SECRET, &minted.code).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(minted.appid, OTHER_APPID);
    assert_eq!(minted.openid, "o_bob");
    assert_eq!(minted.code.len(), 32);
    assert_eq!(
        answer.body,
        json!({"session_key": minted.session_key, "openid": "o_bob", "unionid": "u_bob"})
    );
}

#[tokio::test]
async fn an_empty_mint_request_gives_a_fresh_wechat_shaped_identity() {
    let server = spawn().await;

    let (status, body) = control(&server, reqwest::Method::POST, "/sim/codes", "").await;

    assert_eq!(status, StatusCode::OK);
    let minted: Minted = serde_json::from_value(body).unwrap();
    assert_eq!(minted.appid, DEFAULT_APPID);
    assert_eq!(minted.openid.len(), 28);
    assert!(minted.openid.starts_with('o'));
    assert_eq!(minted.session_key.len(), 24);
    assert!(minted.code.bytes().all(|b| b.is_ascii_alphanumeric()));
}

#[tokio::test]
async fn faults_latency_stats_and_keys_work_over_http() {
    let server = spawn().await;
    let minted = mint(&server);

    let (fault_status, _) = control(
        &server,
        reqwest::Method::POST,
        "/sim/faults",
        r#"{"errcode":45011,"times":2}"#,
    )
    .await;
    let (latency_status, _) = control(
        &server,
        reqwest::Method::PUT,
        "/sim/latency",
        r#"{"ms":100}"#,
    )
    .await;
    let started = Instant::now();
    let first = exchange_default(&server, &minted.code).await;
    let elapsed = started.elapsed();
    let (_, stats) = control(&server, reqwest::Method::GET, "/sim/stats", "").await;
    let (key_status, key) = control(
        &server,
        reqwest::Method::GET,
        &format!("/sim/session-key?openid={}", minted.openid),
        "",
    )
    .await;

    assert_eq!(fault_status, StatusCode::NO_CONTENT);
    assert_eq!(latency_status, StatusCode::OK);
    assert_eq!(first.errcode(), Some(45011));
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    let stats: Stats = serde_json::from_value(stats).unwrap();
    assert_eq!(
        stats,
        Stats {
            code2session_calls: 1,
            stable_token_calls: 0,
            token_calls: 0,
            phone_number_calls: 0,
            check_session_calls: 0,
            pending_faults: 1,
            latency_ms: 100
        }
    );
    assert_eq!(key_status, StatusCode::OK);
    assert_eq!(key["session_key"], minted.session_key.as_str());
}

#[tokio::test]
async fn bad_control_requests_get_a_400_with_a_json_error() {
    let server = spawn().await;
    let cases = [
        (reqwest::Method::POST, "/sim/codes", "{not json"),
        (reqwest::Method::POST, "/sim/codes", r#"{"openid": 5}"#),
        (
            reqwest::Method::POST,
            "/sim/codes",
            r#"{"appid":"wx_nobody"}"#,
        ),
        (
            reqwest::Method::POST,
            "/sim/faults",
            r#"{"errcode":-1,"times":0}"#,
        ),
        (
            reqwest::Method::POST,
            "/sim/faults",
            r#"{"errcode":"busy"}"#,
        ),
        (reqwest::Method::POST, "/sim/faults", r#"{"delay":5}"#),
        (reqwest::Method::PUT, "/sim/latency", r#"{"ms":-3}"#),
        (reqwest::Method::PUT, "/sim/latency", "[]"),
        (reqwest::Method::GET, "/sim/session-key", ""),
    ];

    for (method, path, body) in cases {
        let (status, answer) = control(&server, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path} {body}");
        assert!(
            answer["error"].is_string(),
            "{method} {path} {body}: {answer}"
        );
    }
    let (status, answer) = control(&server, reqwest::Method::GET, "/nowhere", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(answer["error"].is_string());
    let (status, _) = control(
        &server,
        reqwest::Method::GET,
        "/sim/session-key?openid=o_nobody",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(server.sim.stats().pending_faults, 0);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let server = spawn().await;
    let base_url = server.base_url();

    server.shutdown().await.unwrap();

    assert!(reqwest::get(format!("{base_url}/sim/stats")).await.is_err());
}
