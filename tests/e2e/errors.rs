use serde_json::json;
use wxlogin_tests::{Fault, Options, TestApp, assert_error};

fn fault(errcode: i64) -> Fault {
    Fault {
        errcode,
        ..Fault::default()
    }
}

#[tokio::test]
async fn an_unknown_code_is_401_invalid_code() {
    let app = TestApp::spawn().await;
    let response = app.login("0a3Kx7000Gj5oS1e2x300E0uXd2Kx70f").await;
    assert_error(response, 401, "invalid_code").await;
}

#[tokio::test]
async fn a_code_sent_again_gets_the_same_answer_and_a_spent_one_code_used() {
    // A code submitted again after its login finished: the same session,
    // not a second exchange (which WeChat would refuse).
    let app = TestApp::spawn().await;
    let minted = app.mint();
    let first = app.login_ok(&minted.code).await;
    let again = app.login_ok(&minted.code).await;
    assert_eq!(again["token"], first["token"]);

    // A code spent elsewhere: 401 code_used, and the same on a retry.
    let spent = app.mint();
    app.simulator().push_fault(fault(40163));
    assert_error(app.login(&spent.code).await, 401, "code_used").await;
    assert_error(app.login(&spent.code).await, 401, "code_used").await;
}

#[tokio::test]
async fn wechat_errcodes_map_to_their_answers() {
    let app = TestApp::spawn().await;
    for (errcode, status, code) in [
        (-1, 503, "wechat_busy"),
        (45011, 429, "rate_limited"),
        (40226, 403, "user_blocked"),
        (40029, 401, "invalid_code"),
        (40163, 401, "code_used"),
        (40013, 500, "server_misconfigured"),
        (99999, 502, "wechat_unavailable"),
    ] {
        app.simulator().push_fault(fault(errcode));
        let response = app.login(&app.mint().code).await;
        if status == 429 {
            assert_eq!(response.headers()["retry-after"], "60");
        }
        assert_error(response, status, code).await;
    }
}

#[tokio::test]
async fn a_code_survives_a_busy_wechat_and_works_on_retry() {
    let app = TestApp::spawn().await;
    let minted = app.mint();
    app.simulator().push_fault(fault(-1));

    assert_error(app.login(&minted.code).await, 503, "wechat_busy").await;
    let body = app.login_ok(&minted.code).await;

    assert_eq!(body["user"]["openid"], minted.openid);
}

#[tokio::test]
async fn a_wrong_secret_is_our_misconfiguration() {
    let app = TestApp::spawn_with(Options {
        secret: "not-the-secret-0123456789abcdef".into(),
        ..Options::default()
    })
    .await;

    let response = app.login(&app.mint().code).await;

    let message = assert_error(response, 500, "server_misconfigured").await;
    assert!(!message.contains("not-the-secret"));
}

#[tokio::test]
async fn a_slow_wechat_is_502_and_a_dead_one_too() {
    let app = TestApp::spawn_with(Options {
        wechat_timeout_ms: 300,
        ..Options::default()
    })
    .await;
    app.simulator().push_fault(Fault {
        delay_ms: Some(1500),
        ..fault(0)
    });
    assert_error(app.login(&app.mint().code).await, 502, "wechat_unavailable").await;

    // Nothing listens on this port.
    let (_held, closed) = wxlogin_testkit::refusing_addr();
    let dead = format!("http://{closed}");
    let app = TestApp::spawn_with(Options {
        wechat_base: Some(dead),
        ..Options::default()
    })
    .await;
    assert_error(app.login(&app.mint().code).await, 502, "wechat_unavailable").await;
}

#[tokio::test]
async fn malformed_login_bodies_are_400() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Option<&str>, String)> = vec![
        ("bad JSON", Some("application/json"), "{\"code\":".into()),
        ("not an object", Some("application/json"), "[1,2]".into()),
        ("no code", Some("application/json"), "{}".into()),
        (
            "code is a number",
            Some("application/json"),
            "{\"code\":42}".into(),
        ),
        (
            "empty code",
            Some("application/json"),
            "{\"code\":\"\"}".into(),
        ),
        (
            "spaces",
            Some("application/json"),
            "{\"code\":\"a b\"}".into(),
        ),
        (
            "quote",
            Some("application/json"),
            "{\"code\":\"a'b\"}".into(),
        ),
        (
            "oversized code",
            Some("application/json"),
            format!("{{\"code\":\"{}\"}}", "a".repeat(129)),
        ),
        ("empty body", Some("application/json"), String::new()),
        ("empty body, no type", None, String::new()),
        (
            "bad form",
            Some("application/x-www-form-urlencoded"),
            "appid=x".into(),
        ),
    ];
    for (name, content_type, body) in cases {
        let mut request = app.http.post(app.url("/v1/login")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{name}");
        assert_error(response, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn an_unknown_appid_is_400() {
    let app = TestApp::spawn().await;
    let response = app
        .post_json(
            "/v1/login",
            &json!({ "code": app.mint().code, "appid": "wxnotconfigured000" }),
        )
        .await;
    assert_error(response, 400, "unknown_app").await;
}

#[tokio::test]
async fn oversized_bodies_are_413_and_odd_types_415() {
    let app = TestApp::spawn_with(Options {
        body_limit: 1024,
        ..Options::default()
    })
    .await;
    let big = json!({ "code": "abc", "padding": "x".repeat(4096) });
    assert_error(
        app.post_json("/v1/login", &big).await,
        413,
        "payload_too_large",
    )
    .await;

    let xml = app
        .http
        .post(app.url("/v1/login"))
        .header("content-type", "application/xml")
        .body("<code>abc</code>")
        .send()
        .await
        .unwrap();
    assert_error(xml, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_json() {
    let app = TestApp::spawn().await;
    assert_error(
        app.http.get(app.url("/v2/nothing")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.http.get(app.url("/v1/login")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn a_clients_mistakes_are_no_error_in_any_log() {
    // Arrange: each request carries an id of its own, which every service's
    // log lines about it carry too.
    let app = TestApp::spawn().await;
    let request_id = format!("mistakes-{}", uuid::Uuid::new_v4());
    let spent = app.mint();
    app.simulator().push_fault(fault(40163));
    let send = |request: reqwest::RequestBuilder| {
        let request_id = request_id.clone();
        async move {
            request
                .header("x-request-id", request_id)
                .send()
                .await
                .unwrap()
        }
    };

    // Act: a used code, an unknown code, a bad token, a missing one, an
    // undecryptable profile with a real session, a body of the wrong type.
    let used = send(
        app.http
            .post(app.url("/v1/login"))
            .json(&json!({ "code": spent.code })),
    )
    .await;
    let unknown = send(
        app.http
            .post(app.url("/v1/login"))
            .json(&json!({ "code": "0a3Kx7000Gj5oS1e2x300E0uXd2Kx70f" })),
    )
    .await;
    let bad_token = send(app.http.get(app.url("/v1/me")).bearer_auth("not-a-token")).await;
    let no_token = send(app.http.get(app.url("/v1/me"))).await;
    let login = app.login_ok(&app.mint().code).await;
    let token = login["token"].as_str().unwrap();
    let garbage = send(
        app.http
            .post(app.url("/v1/me/profile"))
            .bearer_auth(token)
            .json(&json!({ "encryptedData": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAAAAAAAAAAAAAAAAAAAA==" })),
    )
    .await;
    let odd = send(
        app.http
            .post(app.url("/v1/login"))
            .header("content-type", "text/plain")
            .body("code"),
    )
    .await;

    // Assert: each got its 4xx; no log line about them is an ERROR.
    for (response, status) in [
        (used, 401),
        (unknown, 401),
        (bad_token, 401),
        (no_token, 401),
        (garbage, 422),
        (odd, 415),
    ] {
        assert_eq!(response.status(), status);
    }
    let logs = wxlogin_tests::captured_logs();
    let ours: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains(&request_id))
        .collect();
    assert!(!ours.is_empty(), "the requests were logged with their id");
    let errors: Vec<&&str> = ours
        .iter()
        .filter(|line| line.contains(" ERROR "))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
