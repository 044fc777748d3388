//! The access_token endpoints (stable_token, token), the APIs that take a
//! token (getuserphonenumber, checksession), sealed user data and
//! per-endpoint faults, over a real socket.

// Test code: a failed unwrap is a failed test, and helpers sit outside #[test].
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use aes::Aes128;
use base64::{Engine, engine::general_purpose::STANDARD};
use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode, Url, header::CONTENT_TYPE};
use serde_json::{Value, json};
use sha2::Sha256;
use wxlogin_wechat_sim::{
    DEFAULT_APPID, DEFAULT_SECRET, Fault, MintCode, MintPhoneCode, MintedPhoneCode,
    RunningSimulator, SimConfig, Simulator, endpoint,
};

const OTHER_APPID: &str = "wx_other_app_0001";
const OTHER_SECRET: &str = "other0secret";

async fn spawn_with(config: SimConfig) -> RunningSimulator {
    Simulator::new(SimConfig {
        apps: vec![
            (DEFAULT_APPID.to_owned(), DEFAULT_SECRET.to_owned()),
            (OTHER_APPID.to_owned(), OTHER_SECRET.to_owned()),
        ],
        ..config
    })
    .spawn("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap()
}

async fn spawn() -> RunningSimulator {
    spawn_with(SimConfig::default()).await
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Answer {
    fn errcode(&self) -> Option<i64> {
        self.body.get("errcode").and_then(Value::as_i64)
    }

    fn token(&self) -> String {
        self.body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {}", self.body))
            .to_owned()
    }
}

async fn call(
    server: &RunningSimulator,
    method: Method,
    path: &str,
    query: &[(&str, &str)],
    body: Option<String>,
) -> Answer {
    let mut url = Url::parse(&format!("{}{path}", server.base_url())).unwrap();
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        content_type,
        body,
    }
}

async fn stable_token(server: &RunningSimulator, body: Value) -> Answer {
    call(
        server,
        Method::POST,
        "/cgi-bin/stable_token",
        &[],
        Some(body.to_string()),
    )
    .await
}

async fn stable_token_for(server: &RunningSimulator, appid: &str, secret: &str) -> String {
    stable_token(
        server,
        json!({"grant_type": "client_credential", "appid": appid, "secret": secret}),
    )
    .await
    .token()
}

async fn default_token(server: &RunningSimulator) -> String {
    stable_token_for(server, DEFAULT_APPID, DEFAULT_SECRET).await
}

async fn classic_token(server: &RunningSimulator) -> Answer {
    call(
        server,
        Method::GET,
        "/cgi-bin/token",
        &[
            ("grant_type", "client_credential"),
            ("appid", DEFAULT_APPID),
            ("secret", DEFAULT_SECRET),
        ],
        None,
    )
    .await
}

async fn phone_number(server: &RunningSimulator, token: Option<&str>, body: Value) -> Answer {
    let query: Vec<(&str, &str)> = token.map(|t| ("access_token", t)).into_iter().collect();
    call(
        server,
        Method::POST,
        "/wxa/business/getuserphonenumber",
        &query,
        Some(body.to_string()),
    )
    .await
}

async fn check_session(
    server: &RunningSimulator,
    token: &str,
    openid: &str,
    signature: &str,
    sig_method: &str,
) -> Answer {
    call(
        server,
        Method::GET,
        "/wxa/checksession",
        &[
            ("access_token", token),
            ("openid", openid),
            ("signature", signature),
            ("sig_method", sig_method),
        ],
        None,
    )
    .await
}

/// Computed here, apart from the simulator's own code.
fn hmac_signature(session_key: &str) -> String {
    let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(session_key.as_bytes()).unwrap();
    hex::encode(mac.finalize().into_bytes())
}

fn open(session_key: &str, encrypted_data: &str, iv: &str) -> Value {
    let key = STANDARD.decode(session_key).unwrap();
    let iv = STANDARD.decode(iv).unwrap();
    let mut buffer = STANDARD.decode(encrypted_data).unwrap();
    let plaintext = cbc::Decryptor::<Aes128>::new_from_slices(&key, &iv)
        .unwrap()
        .decrypt_padded::<Pkcs7>(&mut buffer)
        .unwrap();
    serde_json::from_slice(plaintext).unwrap()
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

// ---- stable_token and token ----

#[tokio::test]
async fn stable_token_hands_out_the_same_token_until_forced() {
    let server = spawn().await;
    let request = json!({"grant_type": "client_credential", "appid": DEFAULT_APPID, "secret": DEFAULT_SECRET, "force_refresh": false});

    let first = stable_token(&server, request.clone()).await;
    let second = stable_token(&server, request).await;
    let forced = stable_token(
        &server,
        json!({"grant_type": "client_credential", "appid": DEFAULT_APPID, "secret": DEFAULT_SECRET, "force_refresh": true}),
    )
    .await;

    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.content_type, "text/plain");
    assert_eq!(first.errcode(), None);
    assert_eq!(first.body["expires_in"], 7200);
    assert!(first.token().len() > 100);
    assert_eq!(second.token(), first.token());
    assert_ne!(forced.token(), first.token());
    assert_eq!(forced.body["expires_in"], 7200);
    assert_eq!(server.sim.stable_token_calls(), 3);
    // The replaced token lives out its grace (five minutes by default).
    let code = server.sim.mint_phone_code(MintPhoneCode::default()).code;
    let answer = phone_number(&server, Some(&first.token()), json!({"code": code})).await;
    assert_eq!(answer.errcode(), Some(0), "{}", answer.body);
}

#[tokio::test]
async fn tokens_belong_to_their_app() {
    let server = spawn().await;

    let default = default_token(&server).await;
    let other = stable_token_for(&server, OTHER_APPID, OTHER_SECRET).await;

    assert_ne!(default, other);
    // A phone code minted for the default app is not the other app's.
    let code = server.sim.mint_phone_code(MintPhoneCode::default()).code;
    let foreign = phone_number(&server, Some(&other), json!({"code": code})).await;
    assert_eq!(
        foreign.body,
        json!({"errcode": 40029, "errmsg": "invalid code"})
    );
    let own = phone_number(&server, Some(&default), json!({"code": code})).await;
    assert_eq!(own.errcode(), Some(0));
}

#[tokio::test]
async fn the_classic_token_is_new_each_time_and_retires_the_previous_one() {
    let server = spawn_with(SimConfig {
        access_token_grace: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let stable = default_token(&server).await;

    let first = classic_token(&server).await;
    let second = classic_token(&server).await;

    assert_eq!(first.body["expires_in"], 7200);
    assert_ne!(first.token(), second.token());
    assert_eq!(server.sim.token_calls(), 2);
    let code = || server.sim.mint_phone_code(MintPhoneCode::default()).code;
    let retired = phone_number(&server, Some(&first.token()), json!({"code": code()})).await;
    assert_eq!(
        retired.body,
        json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"})
    );
    let latest = phone_number(&server, Some(&second.token()), json!({"code": code()})).await;
    assert_eq!(latest.errcode(), Some(0));
    // The two kinds of token never retire each other.
    let stable = phone_number(&server, Some(&stable), json!({"code": code()})).await;
    assert_eq!(stable.errcode(), Some(0));
}

#[tokio::test]
async fn token_endpoints_check_credentials_and_grant_type() {
    let server = spawn().await;
    let request = |appid: &str, secret: &str, grant_type: &str| json!({"grant_type": grant_type, "appid": appid, "secret": secret});

    let wrong_secret = stable_token(
        &server,
        request(DEFAULT_APPID, "not-it", "client_credential"),
    )
    .await;
    let unknown_app = stable_token(
        &server,
        request("wx_nobody", DEFAULT_SECRET, "client_credential"),
    )
    .await;
    let bad_grant = stable_token(
        &server,
        request(DEFAULT_APPID, DEFAULT_SECRET, "authorization_code"),
    )
    .await;
    let no_grant = stable_token(
        &server,
        json!({"appid": DEFAULT_APPID, "secret": DEFAULT_SECRET}),
    )
    .await;
    let classic_wrong = call(
        &server,
        Method::GET,
        "/cgi-bin/token",
        &[
            ("grant_type", "client_credential"),
            ("appid", DEFAULT_APPID),
            ("secret", "not-it"),
        ],
        None,
    )
    .await;

    assert_eq!(
        wrong_secret.body,
        json!({"errcode": 40125, "errmsg": "invalid appsecret"})
    );
    assert_eq!(unknown_app.errcode(), Some(40013));
    assert_eq!(
        bad_grant.body,
        json!({"errcode": 40002, "errmsg": "invalid grant_type"})
    );
    assert_eq!(no_grant.errcode(), Some(40002));
    assert_eq!(classic_wrong.errcode(), Some(40125));
    for answer in [&wrong_secret, &unknown_app, &bad_grant, &classic_wrong] {
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.content_type, "text/plain");
    }
}

#[tokio::test]
async fn malformed_token_requests_are_400s_in_wechats_shape() {
    let server = spawn().await;

    for body in [
        "{not json",
        "",
        "[]",
        r#"{"grant_type":"client_credential","force_refresh":"yes"}"#,
    ] {
        let answer = call(
            &server,
            Method::POST,
            "/cgi-bin/stable_token",
            &[],
            Some(body.to_owned()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.errcode(), Some(47001), "{body}");
    }
    let repeated = call(
        &server,
        Method::GET,
        "/cgi-bin/token",
        &[("appid", "a"), ("appid", "b")],
        None,
    )
    .await;
    assert_eq!(repeated.status, StatusCode::BAD_REQUEST);
    assert_eq!(repeated.errcode(), Some(40097));
}

// ---- getuserphonenumber ----

#[tokio::test]
async fn a_phone_code_gives_its_number_once() {
    let server = spawn().await;
    let token = default_token(&server).await;
    let minted = server.sim.mint_phone_code(MintPhoneCode {
        pure_phone_number: Some("13800138000".to_owned()),
        ..MintPhoneCode::default()
    });
    let before = unix_now();

    let first = phone_number(
        &server,
        Some(&token),
        json!({"code": minted.code, "openid": "o_alice"}),
    )
    .await;
    let second = phone_number(&server, Some(&token), json!({"code": minted.code})).await;

    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.content_type, "text/plain");
    assert_eq!(first.body["errcode"], 0);
    assert_eq!(first.body["errmsg"], "ok");
    let info = &first.body["phone_info"];
    assert_eq!(info["phoneNumber"], "13800138000");
    assert_eq!(info["purePhoneNumber"], "13800138000");
    assert_eq!(info["countryCode"], "86");
    assert_eq!(info["watermark"]["appid"], DEFAULT_APPID);
    let timestamp = info["watermark"]["timestamp"].as_i64().unwrap();
    assert!(
        (before - 5..=unix_now()).contains(&timestamp),
        "{timestamp}"
    );
    assert_eq!(
        second.body,
        json!({"errcode": 40163, "errmsg": "code been used"})
    );
    assert_eq!(server.sim.phone_number_calls(), 2);
}

#[tokio::test]
async fn a_phone_code_can_carry_a_numeric_or_foreign_country_code() {
    let server = spawn().await;
    let token = default_token(&server).await;
    let numeric = server.sim.mint_phone_code(MintPhoneCode {
        country_code_as_number: true,
        ..MintPhoneCode::default()
    });
    let foreign = server.sim.mint_phone_code(MintPhoneCode {
        pure_phone_number: Some("61234567".to_owned()),
        country_code: Some("852".to_owned()),
        ..MintPhoneCode::default()
    });

    let numeric_answer = phone_number(&server, Some(&token), json!({"code": numeric.code})).await;
    let foreign_answer = phone_number(&server, Some(&token), json!({"code": foreign.code})).await;

    assert_eq!(numeric_answer.body["phone_info"]["countryCode"], json!(86));
    assert_eq!(
        numeric_answer.body["phone_info"]["purePhoneNumber"],
        numeric.pure_phone_number.as_str()
    );
    assert_eq!(numeric.pure_phone_number.len(), 11);
    assert_eq!(numeric.country_code, "86");
    assert_eq!(foreign.phone_number, "+852 61234567");
    assert_eq!(
        foreign_answer.body["phone_info"],
        json!({
            "phoneNumber": "+852 61234567",
            "purePhoneNumber": "61234567",
            "countryCode": "852",
            "watermark": foreign_answer.body["phone_info"]["watermark"].clone(),
        })
    );
}

#[tokio::test]
async fn bad_access_tokens_are_refused_and_leave_the_code_unused() {
    let server = spawn().await;
    let code = server.sim.mint_phone_code(MintPhoneCode::default()).code;

    let missing = phone_number(&server, None, json!({"code": code})).await;
    let empty = phone_number(&server, Some(""), json!({"code": code})).await;
    let unknown = phone_number(&server, Some("not-a-token"), json!({"code": code})).await;

    for answer in [&missing, &empty, &unknown] {
        assert_eq!(answer.errcode(), Some(40001), "{}", answer.body);
        assert_eq!(answer.status, StatusCode::OK);
    }
    let token = default_token(&server).await;
    let answer = phone_number(&server, Some(&token), json!({"code": code})).await;
    assert_eq!(answer.errcode(), Some(0));
}

#[tokio::test]
async fn invalidated_tokens_are_40001_until_a_new_one_is_fetched() {
    let server = spawn().await;
    let token = default_token(&server).await;
    let other = stable_token_for(&server, OTHER_APPID, OTHER_SECRET).await;
    let code = || server.sim.mint_phone_code(MintPhoneCode::default()).code;

    assert_eq!(server.sim.invalidate_access_tokens(DEFAULT_APPID), 1);
    let refused = phone_number(&server, Some(&token), json!({"code": code()})).await;
    let fresh = default_token(&server).await;
    let accepted = phone_number(&server, Some(&fresh), json!({"code": code()})).await;

    assert_eq!(refused.errcode(), Some(40001));
    assert_ne!(fresh, token);
    assert_eq!(accepted.errcode(), Some(0));
    // The other app's token was left alone.
    let other_code = server.sim.mint_phone_code(MintPhoneCode {
        appid: Some(OTHER_APPID.to_owned()),
        ..MintPhoneCode::default()
    });
    let answer = phone_number(&server, Some(&other), json!({"code": other_code.code})).await;
    assert_eq!(answer.errcode(), Some(0));
}

#[tokio::test]
async fn expired_tokens_are_42001() {
    let server = spawn().await;
    server.sim.set_access_token_ttl(Duration::from_millis(100));
    let token = default_token(&server).await;
    let code = server.sim.mint_phone_code(MintPhoneCode::default()).code;

    tokio::time::sleep(Duration::from_millis(250)).await;
    let answer = phone_number(&server, Some(&token), json!({"code": code})).await;
    let renewed = default_token(&server).await;

    assert_eq!(
        answer.body,
        json!({"errcode": 42001, "errmsg": "access_token expired"})
    );
    assert_ne!(renewed, token);
}

#[tokio::test]
async fn malformed_phone_requests_get_wechat_errors() {
    let server = spawn().await;
    let token = default_token(&server).await;

    let not_json = call(
        &server,
        Method::POST,
        "/wxa/business/getuserphonenumber",
        &[("access_token", &token)],
        Some("code=abc".to_owned()),
    )
    .await;
    let no_code = phone_number(&server, Some(&token), json!({})).await;
    let unknown = phone_number(&server, Some(&token), json!({"code": "nope"})).await;
    let login_code = server.sim.mint_code(MintCode::default()).code;
    let wrong_kind = phone_number(&server, Some(&token), json!({"code": login_code})).await;

    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_json.errcode(), Some(47001));
    assert_eq!(no_code.errcode(), Some(41008));
    assert_eq!(unknown.errcode(), Some(40029));
    assert_eq!(wrong_kind.errcode(), Some(40029));
}

#[tokio::test]
async fn phone_codes_expire_with_the_code_ttl() {
    let server = spawn_with(SimConfig {
        code_ttl: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let token = default_token(&server).await;
    let code = server.sim.mint_phone_code(MintPhoneCode::default()).code;

    tokio::time::sleep(Duration::from_millis(250)).await;
    let answer = phone_number(&server, Some(&token), json!({"code": code})).await;

    assert_eq!(answer.errcode(), Some(40029));
}

// ---- checksession ----

#[tokio::test]
async fn checksession_accepts_only_the_current_session_key() {
    let server = spawn().await;
    let token = default_token(&server).await;
    let old = server.sim.mint_code(MintCode {
        openid: Some("o_alice".to_owned()),
        ..MintCode::default()
    });
    let current = server.sim.mint_code(MintCode {
        openid: Some("o_alice".to_owned()),
        ..MintCode::default()
    });

    let valid = check_session(
        &server,
        &token,
        "o_alice",
        &hmac_signature(&current.session_key),
        "hmac_sha256",
    )
    .await;
    let stale = check_session(
        &server,
        &token,
        "o_alice",
        &hmac_signature(&old.session_key),
        "hmac_sha256",
    )
    .await;

    assert_eq!(valid.body, json!({"errcode": 0, "errmsg": "ok"}));
    assert_eq!(valid.content_type, "text/plain");
    assert_eq!(
        stale.body,
        json!({"errcode": 87009, "errmsg": "invalid signature"})
    );
    assert_eq!(server.sim.check_session_calls(), 2);
}

#[tokio::test]
async fn checksession_refuses_what_broken_sdks_send() {
    let server = spawn().await;
    let token = default_token(&server).await;
    let minted = server.sim.mint_code(MintCode {
        openid: Some("o_alice".to_owned()),
        session_key: Some("HyVFkGl5F5OQWJZZaNzBBg==".to_owned()),
        ..MintCode::default()
    });
    let good = hmac_signature(&minted.session_key);
    assert_eq!(
        good,
        "252b75c92698025afe925b29cca5517fdf9ee67aae072cf3225ebf3a53783058"
    );
    let decoded_key = {
        let key = STANDARD.decode(&minted.session_key).unwrap();
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        hex::encode(mac.finalize().into_bytes())
    };

    let cases = [
        (good.to_uppercase(), "hmac_sha256", "o_alice"),
        (decoded_key, "hmac_sha256", "o_alice"),
        (good.clone(), "sha256", "o_alice"),
        (good.clone(), "", "o_alice"),
        (good.clone(), "hmac_sha256", "o_nobody"),
        (String::new(), "hmac_sha256", "o_alice"),
    ];
    for (signature, sig_method, openid) in cases {
        let answer = check_session(&server, &token, openid, &signature, sig_method).await;
        assert_eq!(
            answer.errcode(),
            Some(87009),
            "{signature} {sig_method} {openid}"
        );
    }
    let ok = check_session(&server, &token, "o_alice", &good, "hmac_sha256").await;
    assert_eq!(ok.errcode(), Some(0));
    let bad_token = check_session(&server, "stale", "o_alice", &good, "hmac_sha256").await;
    assert_eq!(bad_token.errcode(), Some(40001));
    let no_params = call(&server, Method::GET, "/wxa/checksession", &[], None).await;
    assert_eq!(no_params.errcode(), Some(40001));
}

// ---- sealed user data ----

#[tokio::test]
async fn sealed_data_opens_with_the_current_session_key() {
    let server = spawn().await;
    let minted = server.sim.mint_code(MintCode::default());
    let before = unix_now();

    let sealed = server
        .sim
        .seal_user_data(
            DEFAULT_APPID,
            &minted.openid,
            json!({"nickName": "Band", "gender": 1}),
        )
        .unwrap();

    let opened = open(&minted.session_key, &sealed.encrypted_data, &sealed.iv);
    assert_eq!(opened["nickName"], "Band");
    assert_eq!(opened["watermark"]["appid"], DEFAULT_APPID);
    let timestamp = opened["watermark"]["timestamp"].as_i64().unwrap();
    assert!((before - 5..=unix_now()).contains(&timestamp));
    assert_eq!(STANDARD.decode(&sealed.iv).unwrap().len(), 16);
    // Nobody to seal for.
    assert!(
        server
            .sim
            .seal_user_data(DEFAULT_APPID, "o_nobody", json!({}))
            .is_none()
    );
    assert!(
        server
            .sim
            .seal_user_data(OTHER_APPID, &minted.openid, json!({}))
            .is_none()
    );
}

#[tokio::test]
async fn sealing_over_http_keeps_a_forged_watermark() {
    let server = spawn().await;
    let minted = server.sim.mint_code(MintCode {
        openid: Some("o_bob".to_owned()),
        ..MintCode::default()
    });
    let data =
        json!({"phoneNumber": "13800138000", "watermark": {"appid": "wx_evil", "timestamp": 1}});

    let answer = call(
        &server,
        Method::POST,
        "/sim/seal",
        &[],
        Some(json!({"openid": "o_bob", "data": data}).to_string()),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    let opened = open(
        &minted.session_key,
        answer.body["encryptedData"].as_str().unwrap(),
        answer.body["iv"].as_str().unwrap(),
    );
    assert_eq!(opened, data);
}

#[tokio::test]
async fn a_sealing_request_without_a_usable_key_is_refused() {
    let server = spawn().await;
    server.sim.mint_code(MintCode {
        openid: Some("o_handmade".to_owned()),
        session_key: Some("not-a-real-key".to_owned()),
        ..MintCode::default()
    });

    let nobody = call(
        &server,
        Method::POST,
        "/sim/seal",
        &[],
        Some(json!({"openid": "o_nobody", "data": {}}).to_string()),
    )
    .await;
    let handmade = call(
        &server,
        Method::POST,
        "/sim/seal",
        &[],
        Some(json!({"openid": "o_handmade", "data": {}}).to_string()),
    )
    .await;

    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
    assert!(nobody.body["error"].is_string());
    assert_eq!(handmade.status, StatusCode::BAD_REQUEST);
    assert!(handmade.body["error"].is_string());
    assert!(
        server
            .sim
            .seal_user_data(DEFAULT_APPID, "o_handmade", json!({}))
            .is_none()
    );
}

// ---- faults per endpoint ----

#[tokio::test]
async fn scoped_faults_are_taken_only_by_their_endpoint() {
    let server = spawn().await;
    let token = default_token(&server).await;
    let login = server.sim.mint_code(MintCode::default());
    server
        .sim
        .push_fault(Fault::errcode(40001).for_endpoint(endpoint::GET_USER_PHONE_NUMBER));
    server
        .sim
        .push_fault(Fault::errcode(-1).for_endpoint(endpoint::CHECK_SESSION));
    server
        .sim
        .push_fault(Fault::errcode(45009).for_endpoint(endpoint::STABLE_TOKEN));

    // jscode2session passes all three by.
    let exchanged = call(
        &server,
        Method::GET,
        "/sns/jscode2session",
        &[
            ("appid", DEFAULT_APPID),
            ("secret", DEFAULT_SECRET),
            ("js_code", &login.code),
            ("grant_type", "authorization_code"),
        ],
        None,
    )
    .await;
    let signature = hmac_signature(&login.session_key);
    let checked = check_session(&server, &token, &login.openid, &signature, "hmac_sha256").await;
    let checked_again =
        check_session(&server, &token, &login.openid, &signature, "hmac_sha256").await;
    let code = server.sim.mint_phone_code(MintPhoneCode::default()).code;
    let phone = phone_number(&server, Some(&token), json!({"code": code})).await;
    let phone_again = phone_number(&server, Some(&token), json!({"code": code})).await;
    let quota = stable_token(
        &server,
        json!({"grant_type": "client_credential", "appid": DEFAULT_APPID, "secret": DEFAULT_SECRET}),
    )
    .await;

    assert_eq!(exchanged.errcode(), None, "{}", exchanged.body);
    assert_eq!(checked.errcode(), Some(-1));
    assert_eq!(checked_again.errcode(), Some(0));
    assert_eq!(phone.errcode(), Some(40001));
    // The fault did not consume the phone code.
    assert_eq!(phone_again.errcode(), Some(0));
    assert_eq!(
        quota.body,
        json!({"errcode": 45009, "errmsg": "reach max api daily quota limit"})
    );
    assert_eq!(server.sim.stats().pending_faults, 0);
}

#[tokio::test]
async fn an_unscoped_fault_answers_whichever_endpoint_comes_next() {
    let server = spawn().await;
    server.sim.push_fault(Fault::errcode(-1));

    let busy = classic_token(&server).await;
    let fine = classic_token(&server).await;

    assert_eq!(busy.errcode(), Some(-1));
    assert_eq!(fine.errcode(), None);
}

#[tokio::test]
async fn a_consuming_fault_uses_the_phone_code_up() {
    let server = spawn().await;
    let token = default_token(&server).await;
    let code = server.sim.mint_phone_code(MintPhoneCode::default()).code;
    server.sim.push_fault(
        Fault::errcode(-1)
            .consuming_code()
            .for_endpoint(endpoint::GET_USER_PHONE_NUMBER),
    );

    let busy = phone_number(&server, Some(&token), json!({"code": code})).await;
    let retry = phone_number(&server, Some(&token), json!({"code": code})).await;

    assert_eq!(busy.errcode(), Some(-1));
    assert_eq!(retry.errcode(), Some(40163));
}

// ---- control API ----

#[tokio::test]
async fn phone_codes_tokens_and_faults_are_controlled_over_http() {
    let server = spawn().await;

    let minted = call(
        &server,
        Method::POST,
        "/sim/phone-codes",
        &[],
        Some(
            json!({"appid": OTHER_APPID, "pure_phone_number": "13900139000", "country_code_as_number": true})
                .to_string(),
        ),
    )
    .await;
    let empty = call(&server, Method::POST, "/sim/phone-codes", &[], None).await;
    let token = stable_token_for(&server, OTHER_APPID, OTHER_SECRET).await;
    let invalidated = call(
        &server,
        Method::POST,
        "/sim/access-tokens/invalidate",
        &[],
        Some(json!({"appid": OTHER_APPID}).to_string()),
    )
    .await;
    let ttl = call(
        &server,
        Method::PUT,
        "/sim/access-tokens/ttl",
        &[],
        Some(r#"{"ms":60000}"#.to_owned()),
    )
    .await;
    let grace = call(&server, Method::GET, "/sim/access-tokens/grace", &[], None).await;
    let fault = call(
        &server,
        Method::POST,
        "/sim/faults",
        &[],
        Some(r#"{"errcode":-1,"endpoint":"token"}"#.to_owned()),
    )
    .await;
    let stats = call(&server, Method::GET, "/sim/stats", &[], None).await;

    assert_eq!(minted.status, StatusCode::OK);
    let minted: MintedPhoneCode = serde_json::from_value(minted.body).unwrap();
    assert_eq!(minted.appid, OTHER_APPID);
    assert_eq!(minted.phone_number, "13900139000");
    assert_eq!(minted.country_code, "86");
    assert_eq!(minted.code.len(), 64);
    let empty: MintedPhoneCode = serde_json::from_value(empty.body).unwrap();
    assert_eq!(empty.appid, DEFAULT_APPID);
    assert_eq!(
        invalidated.body,
        json!({"appid": OTHER_APPID, "invalidated": 1})
    );
    let refused = phone_number(&server, Some(&token), json!({"code": minted.code})).await;
    assert_eq!(refused.errcode(), Some(40001));
    assert_eq!(ttl.body, json!({"ms": 60000}));
    let fresh = stable_token_for(&server, OTHER_APPID, OTHER_SECRET).await;
    let answer = phone_number(&server, Some(&fresh), json!({"code": minted.code})).await;
    assert_eq!(answer.body["phone_info"]["countryCode"], json!(86));
    assert_eq!(grace.body, json!({"ms": 300000}));
    assert_eq!(fault.status, StatusCode::NO_CONTENT);
    assert_eq!(stats.body["pending_faults"], 1);
    assert_eq!(stats.body["stable_token_calls"], 1);
    assert_eq!(stats.body["phone_number_calls"], 0);
    assert_eq!(classic_token(&server).await.errcode(), Some(-1));
}

#[tokio::test]
async fn bad_control_requests_for_the_new_apis_get_a_400() {
    let server = spawn().await;
    let cases = [
        ("/sim/phone-codes", r#"{"appid":"wx_nobody"}"#),
        ("/sim/phone-codes", r#"{"phone":"1"}"#),
        (
            "/sim/phone-codes",
            r#"{"country_code":"+86","country_code_as_number":true}"#,
        ),
        ("/sim/access-tokens/invalidate", r#"{"appid":"wx_nobody"}"#),
        ("/sim/access-tokens/invalidate", r#"{"app":"wx"}"#),
        ("/sim/seal", r#"{"openid":"o_x"}"#),
        ("/sim/seal", r#"{"data":{}}"#),
        (
            "/sim/seal",
            r#"{"appid":"wx_nobody","openid":"o","data":{}}"#,
        ),
        (
            "/sim/faults",
            r#"{"errcode":-1,"endpoint":"jscode2sessions"}"#,
        ),
        ("/sim/faults", r#"{"errcode":-1,"endpoint":5}"#),
    ];

    for (path, body) in cases {
        let answer = call(&server, Method::POST, path, &[], Some(body.to_owned())).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert!(answer.body["error"].is_string(), "{path} {body}");
    }
    let answer = call(
        &server,
        Method::PUT,
        "/sim/access-tokens/ttl",
        &[],
        Some(r#"{"ms":"soon"}"#.to_owned()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.sim.stats().pending_faults, 0);
}

#[tokio::test]
async fn latency_applies_to_the_new_endpoints_too() {
    let server = spawn().await;
    server.sim.set_latency(Duration::from_millis(100));

    let started = Instant::now();
    let answer = classic_token(&server).await;

    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(answer.errcode(), None);
}
