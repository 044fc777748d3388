//! Proxy mode: the gateway itself in front of the team's API
//! (`PROXY_ROUTES`), against a real upstream server in a process of its own.

use serde_json::Value;
use wxlogin_gateway::routes::identity;
use wxlogin_tests::{Options, TestApp, assert_error};

#[tokio::test]
async fn the_gateway_forwards_signed_in_calls_with_their_identity_and_passes_answers_through() {
    let upstream = wxlogin_tests::echo_upstream!().await;
    let app = TestApp::spawn_with(Options {
        proxy_routes: format!("/api/=http://{}", upstream.addr()),
        ..Options::default()
    })
    .await;
    let minted = app.mint();
    let login = app.login_ok(&minted.code).await;
    let token = login["token"].as_str().unwrap().to_owned();

    // A signed-in call with a body and forged identity headers.
    let response = app
        .http
        .put(app.url("/api/orders/7?fields=all"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .header("x-wx-openid", "o-forged")
        .header("x-wx-unionid", "u-forged")
        .header("x-custom", "kept")
        .body("the order")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["path"], "/api/orders/7");
    assert_eq!(echoed["query"], "fields=all");
    assert_eq!(echoed["body"], "the order");
    let headers = &echoed["headers"];
    assert_eq!(headers[identity::OPENID], minted.openid.as_str());
    assert_eq!(
        headers[identity::USER_ID],
        login["user"]["id"].as_u64().unwrap().to_string().as_str()
    );
    assert_eq!(headers[identity::APPID], minted.appid.as_str());
    assert_eq!(headers[identity::SESSION_ID].as_str().unwrap().len(), 32);
    assert!(headers.get(identity::UNIONID).is_none(), "{headers}");
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["content-type"], "text/plain");
    assert!(headers.get("x-forwarded-for").is_some(), "{headers}");
    assert!(!echoed.to_string().contains(&token));

    // The upstream's answer, whatever it is, reaches the client unchanged.
    for code in [201, 404, 500] {
        let response = app
            .get_with_token(&format!("/api/status/{code}"), &token)
            .await;
        assert_eq!(response.status(), code);
        assert_eq!(response.headers()["x-upstream"], "yes");
        assert_eq!(
            response.text().await.unwrap(),
            format!("upstream says {code}")
        );
    }
    let calls = upstream.seen().await;

    // No token, a bad one, or a logged-out one: wxlogin's 401, and the
    // upstream is never called.
    let bare = app.http.get(app.url("/api/orders")).send().await.unwrap();
    assert_error(bare, 401, "missing_token").await;
    let bad = app.get_with_token("/api/orders", &"x".repeat(43)).await;
    assert_error(bad, 401, "invalid_token").await;
    assert_eq!(
        app.post_with_token("/v1/logout", &token).await.status(),
        204
    );
    let after = app.get_with_token("/api/orders", &token).await;
    assert_error(after, 401, "invalid_token").await;
    assert_eq!(upstream.seen().await, calls);

    // Outside every prefix: 404 as before.
    let elsewhere = app.get_with_token("/other", &token).await;
    assert_error(elsewhere, 404, "not_found").await;
}

#[tokio::test]
async fn an_upstream_that_is_down_or_slow_is_a_502_or_504() {
    let upstream = wxlogin_tests::echo_upstream!().await;
    let (_held, nowhere) = wxlogin_testkit::refusing_addr();
    let app = TestApp::spawn_with(Options {
        proxy_routes: format!("/api/=http://{},/gone/=http://{nowhere}", upstream.addr()),
        proxy_timeout_ms: 500,
        ..Options::default()
    })
    .await;
    let token = app.login_ok(&app.mint().code).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let gone = app
        .get_with_token("/gone/orders?coupon=c0up0n-s3cr3t", &token)
        .await;
    assert_error(gone, 502, "upstream_unavailable").await;
    // The failure is logged, but not the request's query string.
    let logs = wxlogin_tests::captured_logs();
    assert!(
        logs.contains("the proxied service did not answer"),
        "{logs}"
    );
    assert!(!logs.contains("c0up0n-s3cr3t"), "{logs}");
    let slow = app.get_with_token("/api/slow", &token).await;
    assert_error(slow, 504, "upstream_timeout").await;
}
