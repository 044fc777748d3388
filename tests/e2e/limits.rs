//! Budgets on the paths that spend WeChat quota, as a client sees them:
//! `429 rate_limited` with a `Retry-After`, and no WeChat call once spent.

use reqwest::Method;
use serde_json::json;
use wxlogin_tests::{Options, TestApp, assert_error};
use wxlogin_wechat_sim::seal;

/// A login with a code WeChat does not know, maybe through a proxy that
/// says it forwards `forwarded_for`.
async fn bogus_login(app: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let code = format!("bogus{:08}", next_number());
    let mut request = app
        .http
        .post(app.url("/v1/login"))
        .json(&json!({ "code": code }));
    if let Some(addresses) = forwarded_for {
        request = request.header("x-forwarded-for", addresses);
    }
    request.send().await.expect("POST /v1/login")
}

fn next_number() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Asserts a `429 rate_limited` whose `Retry-After` is a whole number of
/// seconds within the minute the budgets are counted over.
async fn assert_limited(response: reqwest::Response) {
    let retry_after = response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .to_owned();
    let seconds: u64 = retry_after.parse().expect("Retry-After in seconds");
    assert!((1..=60).contains(&seconds), "Retry-After: {retry_after}");
    assert_error(response, 429, "rate_limited").await;
}

#[tokio::test]
async fn logins_beyond_the_address_budget_are_429_and_never_reach_wechat() {
    // Arrange
    let app = TestApp::spawn_with(Options {
        login_per_ip: 3,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        assert_error(bogus_login(&app, None).await, 401, "invalid_code").await;
    }

    // Act
    let refused = bogus_login(&app, None).await;
    // The gateway trusts no proxy here: a forged header changes nothing.
    let forged = bogus_login(&app, Some("198.51.100.99")).await;

    // Assert
    assert_limited(refused).await;
    assert_limited(forged).await;
    assert_eq!(app.simulator().stats().code2session_calls, 3);
}

#[tokio::test]
async fn real_logins_from_one_address_spend_no_budget_bogus_ones_do() {
    // Arrange: a budget of 3 per address, and many people behind it (a
    // carrier-grade NAT, a campus).
    let app = TestApp::spawn_with(Options {
        login_per_ip: 3,
        login_per_app: 3,
        ..Options::default()
    })
    .await;

    // Act: ten real logins, one after the other.
    for _ in 0..10 {
        app.login_ok(&app.mint().code).await;
    }
    let mut bogus = Vec::new();
    for _ in 0..4 {
        bogus.push(bogus_login(&app, None).await);
    }

    // Assert: every real login passed, and the budget was still whole for
    // the three codes WeChat refused, which spent it: the fourth never
    // reached WeChat.
    let last = bogus.pop().unwrap();
    for response in bogus {
        assert_error(response, 401, "invalid_code").await;
    }
    assert_limited(last).await;
    assert_eq!(app.simulator().stats().code2session_calls, 13);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client() {
    // Arrange: the test client stands in for our proxy.
    let app = TestApp::spawn_with(Options {
        login_per_ip: 2,
        trusted_proxies: "127.0.0.1, ::1".to_owned(),
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        let response = bogus_login(&app, Some("198.51.100.1")).await;
        assert_error(response, 401, "invalid_code").await;
    }

    // Act
    let spent = bogus_login(&app, Some("198.51.100.1")).await;
    // The client forged a left-most entry; our proxy appended what it saw.
    let spoofed = bogus_login(&app, Some("203.0.113.5, 198.51.100.1")).await;
    let other = bogus_login(&app, Some("198.51.100.2")).await;

    // Assert
    assert_limited(spent).await;
    assert_limited(spoofed).await;
    assert_error(other, 401, "invalid_code").await;
    assert_eq!(app.simulator().stats().code2session_calls, 3);
}

#[tokio::test]
async fn undecryptable_profiles_beyond_the_user_budget_ask_wechat_nothing() {
    // Arrange: a logged-in user, two checkSessionKey calls a minute.
    let app = TestApp::spawn_with(Options {
        check_session_per_user: 2,
        ..Options::default()
    })
    .await;
    let minted = app.mint();
    let login = app.login_ok(&minted.code).await;
    let token = login["token"].as_str().unwrap();
    // Decrypts with the user's key, but is no JSON: the data is at fault,
    // and auth asks WeChat whether the key is still current.
    let sealed = seal(&minted.session_key, b"not json at all").unwrap();
    let body = json!({ "encryptedData": sealed.encrypted_data, "iv": sealed.iv });
    let post = || app.json_with_token(Method::POST, "/v1/me/profile", token, &body);
    for _ in 0..2 {
        assert_error(post().await, 422, "invalid_encrypted_data").await;
    }

    // Act
    let answers = [post().await, post().await];

    // Assert
    for answer in answers {
        assert_limited(answer).await;
    }
    assert_eq!(app.simulator().stats().check_session_calls, 2);
    // Other users still have their budget.
    let other = app.mint();
    let other_token = app.login_ok(&other.code).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sealed = seal(&other.session_key, b"not json at all").unwrap();
    let body = json!({ "encryptedData": sealed.encrypted_data, "iv": sealed.iv });
    let response = app
        .json_with_token(Method::POST, "/v1/me/profile", &other_token, &body)
        .await;
    assert_error(response, 422, "invalid_encrypted_data").await;
    assert_eq!(app.simulator().stats().check_session_calls, 3);
}
