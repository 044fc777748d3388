use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wxlogin_tests::{Options, TestApp, assert_error};
use wxlogin_wechat_sim::MintCode;

#[tokio::test]
async fn me_returns_the_user_of_the_token() {
    let app = TestApp::spawn().await;
    let minted = app.mint();
    let login = app.login_ok(&minted.code).await;

    let response = app
        .get_with_token("/v1/me", login["token"].as_str().unwrap())
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"], login["user"]);
}

#[tokio::test]
async fn me_without_a_token_is_401() {
    let app = TestApp::spawn().await;

    let response = app.http.get(app.url("/v1/me")).send().await.unwrap();

    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_error(response, 401, "missing_token").await;
}

#[tokio::test]
async fn unknown_or_malformed_tokens_are_401() {
    let app = TestApp::spawn().await;
    for token in [
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", // well-formed, unknown
        "not-a-token",
        "' OR 1=1 --",
    ] {
        let response = app.get_with_token("/v1/me", token).await;
        assert_error(response, 401, "invalid_token").await;
    }
    let wrong_scheme = app
        .http
        .get(app.url("/v1/me"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_error(wrong_scheme, 401, "invalid_token").await;
}

#[tokio::test]
async fn logout_ends_the_session_and_only_that_one() {
    let app = TestApp::spawn().await;
    let minted = app.mint();
    let first = app.login_ok(&minted.code).await;
    let again = app.mint_for(wxlogin_wechat_sim::MintCode {
        openid: Some(minted.openid.clone()),
        ..Default::default()
    });
    let second = app.login_ok(&again.code).await;
    let token = first["token"].as_str().unwrap();

    let response = app.post_with_token("/v1/logout", token).await;

    assert_eq!(response.status(), 204);
    assert_error(
        app.get_with_token("/v1/me", token).await,
        401,
        "invalid_token",
    )
    .await;
    assert_error(
        app.post_with_token("/v1/logout", token).await,
        401,
        "invalid_token",
    )
    .await;
    let other = app
        .get_with_token("/v1/me", second["token"].as_str().unwrap())
        .await;
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn an_unused_session_expires_after_the_idle_ttl() {
    let app = TestApp::spawn_with(Options {
        session_ttl_secs: 1,
        session_max_lifetime_secs: 60,
        ..Options::default()
    })
    .await;
    let login = app.login_ok(&app.mint().code).await;
    assert_eq!(login["expires_in"], 1);

    tokio::time::sleep(Duration::from_millis(2100)).await;

    let response = app
        .get_with_token("/v1/me", login["token"].as_str().unwrap())
        .await;
    assert_error(response, 401, "invalid_token").await;
}

#[tokio::test]
async fn use_extends_a_session_up_to_its_absolute_lifetime() {
    let app = TestApp::spawn_with(Options {
        session_ttl_secs: 2,
        session_max_lifetime_secs: 3,
        ..Options::default()
    })
    .await;
    let login = app.login_ok(&app.mint().code).await;
    let token = login["token"].as_str().unwrap();

    // Used every 1.2 s, the session outlives its 2 s idle TTL...
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(app.get_with_token("/v1/me", token).await.status(), 200);
    }
    // ...but not its 3 s absolute lifetime.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_error(
        app.get_with_token("/v1/me", token).await,
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn health_and_readiness() {
    let mut app = TestApp::spawn().await;

    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["auth"], "ok");
    assert_eq!(ready["checks"]["user"], "ok");

    app.stop_user_service().await;

    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["user"], "unreachable");
    assert_eq!(body["checks"]["auth"], "ok");
    assert_eq!(body["error"]["code"], "not_ready");
    // The process is still alive.
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A login while the user service is down fails cleanly, and the session
    // it opened does not outlive the failure.
    let response = app.login(&app.mint().code).await;
    assert_error(response, 503, "service_unavailable").await;
    if let Some(redis) = &app.redis {
        let sessions = redis
            .dump()
            .await
            .into_iter()
            .filter(|(key, _)| key.contains(":session:"))
            .count();
        assert_eq!(sessions, 0);
    }
}

#[tokio::test]
async fn a_returning_login_answers_the_profile_as_last_stored() {
    let app = TestApp::spawn().await;
    let minted = app.mint();
    let again = || {
        app.mint_for(MintCode {
            openid: Some(minted.openid.clone()),
            ..MintCode::default()
        })
    };
    let first = app.login_ok(&minted.code).await;
    let token = first["token"].as_str().unwrap().to_owned();

    for name in ["Ann", "Bea"] {
        let renamed = app
            .json_with_token(
                Method::PUT,
                "/v1/me/profile",
                &token,
                &json!({ "nickname": name }),
            )
            .await;
        assert_eq!(renamed.status(), 200);

        let login = app.login_ok(&again().code).await;

        assert_eq!(login["created"], false);
        assert_eq!(login["user"]["id"], first["user"]["id"]);
        assert_eq!(login["user"]["nickname"], name);
    }
}

#[tokio::test]
async fn me_is_fresh_and_with_redis_needs_neither_the_user_service_nor_mysql() {
    let mut app = TestApp::spawn().await;
    let minted = app.mint();
    let token = app.login_ok(&minted.code).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let rename = async |name: &'static str| {
        let body = json!({ "nickname": name });
        app.json_with_token(Method::PUT, "/v1/me/profile", &token, &body)
            .await
    };
    let nickname = |app: &TestApp| {
        let request = app.http.get(app.url("/v1/me")).bearer_auth(&token);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["user"]["nickname"].clone()
        }
    };

    // Every write shows at once.
    assert_eq!(rename("Ann").await.status(), 200);
    assert_eq!(nickname(&app).await, "Ann");
    assert_eq!(rename("Bea").await.status(), 200);
    assert_eq!(nickname(&app).await, "Bea");

    match app.redis.as_ref() {
        Some(redis) => {
            // The copy lives beside the session; without it, the user service
            // answers and puts it back.
            let copy =
                wxlogin_common::user_copy::key(redis.prefix(), &minted.appid, &minted.openid);
            let has_copy =
                |keys: Vec<(String, Option<String>)>| keys.iter().any(|(key, _)| *key == copy);
            let keys = redis.dump().await;
            assert!(has_copy(keys.clone()), "{copy} not in {keys:?}");
            redis.delete(&copy).await;
            assert_eq!(nickname(&app).await, "Bea");
            assert!(has_copy(redis.dump().await));
            // With the copy, the user service is not needed at all.
            app.stop_user_service().await;
            assert_eq!(nickname(&app).await, "Bea");
        }
        None => {
            // The single-process store has no copy: the user service answers.
            app.stop_user_service().await;
            let response = app.get_with_token("/v1/me", &token).await;
            assert_error(response, 503, "service_unavailable").await;
        }
    }
}

#[tokio::test]
async fn verify_answers_the_identity_of_a_live_session_and_401_otherwise() {
    use wxlogin_gateway::routes::identity;
    let app = TestApp::spawn().await;
    let minted = app.mint_for(MintCode {
        unionid: Some("u-verify".into()),
        ..MintCode::default()
    });
    let login = app.login_ok(&minted.code).await;
    let token = login["token"].as_str().unwrap();

    // Any method: proxies ask with the original request's.
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let response = app
            .http
            .request(method.clone(), app.url("/v1/verify"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        let headers = response.headers();
        assert_eq!(headers[identity::OPENID], minted.openid.as_str());
        assert_eq!(headers[identity::UNIONID], "u-verify");
        assert_eq!(headers[identity::APPID], minted.appid.as_str());
        assert_eq!(
            headers[identity::USER_ID],
            login["user"]["id"].as_u64().unwrap().to_string().as_str()
        );
        let session_id = headers[identity::SESSION_ID].to_str().unwrap().to_owned();
        assert_eq!(session_id.len(), 32);
        assert!(!token.contains(&session_id));
        assert!(response.text().await.unwrap().is_empty());
    }

    let bare = app.http.get(app.url("/v1/verify")).send().await.unwrap();
    assert_eq!(bare.headers()["www-authenticate"], "Bearer");
    assert_error(bare, 401, "missing_token").await;
    let unknown = app.get_with_token("/v1/verify", &"x".repeat(43)).await;
    assert_eq!(unknown.headers()["www-authenticate"], "Bearer");
    assert_error(unknown, 401, "invalid_token").await;
    assert_eq!(app.post_with_token("/v1/logout", token).await.status(), 204);
    assert_error(
        app.get_with_token("/v1/verify", token).await,
        401,
        "invalid_token",
    )
    .await;
}
