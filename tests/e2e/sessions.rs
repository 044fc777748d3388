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
            let copy = wxlogin_redis::Keyspace::new(redis.prefix())
                .user_copy(&minted.appid, &minted.openid);
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

/// A user's sessions as `GET /v1/me/sessions` lists them to `token`.
async fn listed(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.get_with_token("/v1/me/sessions", token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

/// Logs `openid` in again from a client that says it is `user_agent`.
async fn login_as(app: &TestApp, openid: &str, user_agent: &str) -> String {
    let minted = app.mint_for(MintCode {
        openid: Some(openid.to_owned()),
        ..Default::default()
    });
    let response = app
        .http
        .post(app.url("/v1/login"))
        .header(
            "user-agent",
            reqwest::header::HeaderValue::from_bytes(user_agent.as_bytes()).unwrap(),
        )
        .json(&json!({ "code": minted.code }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn end_session(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.http
        .delete(app.url(&format!("/v1/me/sessions/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// What `/v1/verify` names as the session of `token`.
async fn session_id(app: &TestApp, token: &str) -> String {
    let response = app.get_with_token("/v1/verify", token).await;
    assert_eq!(response.status(), 200);
    response.headers()["x-wx-session-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_user_sees_their_live_sessions_newest_first_with_the_callers_marked() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    // What HTTP lets through of control characters (a tab), quotes, and
    // more than is kept.
    let long = format!("Mozilla/5.0\tX-Injected: 1 \"{}", "界".repeat(400));
    let older = login_as(&app, &openid, "older-phone").await;
    let newer = login_as(&app, &openid, &long).await;
    let someone_else = app.login_ok(&app.mint().code).await;

    let sessions = listed(&app, &older).await;

    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions[0]["id"], session_id(&app, &newer).await);
    assert_eq!(sessions[1]["id"], session_id(&app, &older).await);
    assert_eq!(sessions[0]["current"], false);
    assert_eq!(sessions[1]["current"], true);
    assert_eq!(sessions[1]["user_agent"], "older-phone");
    let kept = sessions[0]["user_agent"].as_str().unwrap();
    assert_eq!(kept.chars().count(), 256);
    assert!(kept.starts_with("Mozilla/5.0 X-Injected: 1 \"界"), "{kept}");
    for session in &sessions {
        assert_eq!(session["address_prefix"], "127.0.0.0/24");
        assert!(session["created_at"].as_str().unwrap().ends_with('Z'));
        assert!(session["last_used_at"].is_string());
        let text = session.to_string();
        for token in [&older, &newer] {
            assert!(!text.contains(token.as_str()), "a token is never listed");
        }
    }
    let theirs = someone_else["token"].as_str().unwrap();
    assert_eq!(listed(&app, theirs).await.len(), 1);
}

#[tokio::test]
async fn sessions_that_are_over_are_not_listed() {
    let app = TestApp::spawn_with(Options {
        session_ttl_secs: 1,
        session_max_lifetime_secs: 60,
        ..Options::default()
    })
    .await;
    let openid = app.mint().openid;
    let idle = login_as(&app, &openid, "idle").await;
    let logged_out = login_as(&app, &openid, "logged out").await;
    assert_eq!(
        app.post_with_token("/v1/logout", &logged_out)
            .await
            .status(),
        204
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let used = login_as(&app, &openid, "used").await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let sessions = listed(&app, &used).await;

    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["user_agent"], "used");
    assert_error(
        app.get_with_token("/v1/me", &idle).await,
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn ending_one_session_kills_it_at_once_and_leaves_the_others() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let phone = login_as(&app, &openid, "phone").await;
    let tablet = login_as(&app, &openid, "tablet").await;
    let laptop = login_as(&app, &openid, "laptop").await;
    // The tablet's session is checked (and remembered) before it ends.
    assert_eq!(app.get_with_token("/v1/me", &tablet).await.status(), 200);
    let id = session_id(&app, &tablet).await;

    let response = end_session(&app, &phone, &id).await;

    assert_eq!(response.status(), 204);
    assert_error(
        app.get_with_token("/v1/me", &tablet).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(app.get_with_token("/v1/me", &phone).await.status(), 200);
    assert_eq!(app.get_with_token("/v1/me", &laptop).await.status(), 200);
    let ids: Vec<Value> = listed(&app, &phone)
        .await
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert!(!ids.contains(&Value::from(id.clone())));
    assert_eq!(ids.len(), 2);
    assert_error(
        end_session(&app, &phone, &id).await,
        404,
        "session_not_found",
    )
    .await;
}

#[tokio::test]
async fn a_foreign_unknown_or_malformed_id_is_404_and_ends_nothing() {
    let app = TestApp::spawn().await;
    let mine = app.login_ok(&app.mint().code).await;
    let theirs = app.login_ok(&app.mint().code).await;
    let mine = mine["token"].as_str().unwrap();
    let theirs = theirs["token"].as_str().unwrap();
    let foreign = session_id(&app, theirs).await;

    for id in [
        foreign.as_str(),
        &"0".repeat(32),
        "a",
        &foreign.to_uppercase(),
        "%20",
    ] {
        assert_error(end_session(&app, mine, id).await, 404, "session_not_found").await;
    }

    assert_eq!(app.get_with_token("/v1/me", theirs).await.status(), 200);
    assert_eq!(app.get_with_token("/v1/me", mine).await.status(), 200);
    assert_error(
        end_session(&app, "not-a-token", &foreign).await,
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_only() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let first = login_as(&app, &openid, "first").await;
    let second = login_as(&app, &openid, "second").await;
    let other = app.login_ok(&app.mint().code).await;

    let response = app
        .json_with_token(Method::POST, "/v1/logout", &second, &json!({ "all": true }))
        .await;

    assert_eq!(response.status(), 204);
    for token in [&first, &second] {
        assert_error(
            app.get_with_token("/v1/me", token).await,
            401,
            "invalid_token",
        )
        .await;
    }
    let other = other["token"].as_str().unwrap();
    assert_eq!(app.get_with_token("/v1/me", other).await.status(), 200);
    // `{"all": false}` is the plain logout.
    let third = login_as(&app, &openid, "third").await;
    let fourth = login_as(&app, &openid, "fourth").await;
    // A field logout does not know (a misspelt `all`) ends nothing.
    let misspelt = app
        .json_with_token(Method::POST, "/v1/logout", &third, &json!({ "al": true }))
        .await;
    assert_error(misspelt, 400, "invalid_request").await;
    assert_eq!(app.get_with_token("/v1/me", &third).await.status(), 200);
    let response = app
        .json_with_token(Method::POST, "/v1/logout", &third, &json!({ "all": false }))
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(app.get_with_token("/v1/me", &fourth).await.status(), 200);
}

#[tokio::test]
async fn the_back_office_lists_and_revokes_a_users_sessions_over_grpc() {
    use wxlogin_proto::{
        auth::v1::{
            ListSessionsRequest, RevokeSessionsRequest, auth_service_client::AuthServiceClient,
        },
        reason::{self, Reason},
    };
    use wxlogin_testkit::credential::{Credential, channel};
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let phone = login_as(&app, &openid, "phone").await;
    let laptop = login_as(&app, &openid, "laptop").await;
    let mut auth = AuthServiceClient::new(channel(app.auth_addr, Credential::internal()));
    let list = async |auth: &mut AuthServiceClient<_>| {
        auth.list_sessions(ListSessionsRequest {
            appid: String::new(),
            openid: openid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .sessions
    };

    let sessions = list(&mut auth).await;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].session_id, session_id(&app, &laptop).await);
    assert_eq!(sessions[0].user_agent.as_deref(), Some("laptop"));
    let created = |i: usize| {
        let at = sessions[i].created_at.unwrap();
        (at.seconds, at.nanos)
    };
    assert!(created(0) >= created(1));

    let one = auth
        .revoke_sessions(RevokeSessionsRequest {
            appid: String::new(),
            openid: openid.clone(),
            session_id: Some(sessions[0].session_id.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.ended, 1);
    assert_error(
        app.get_with_token("/v1/me", &laptop).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(app.get_with_token("/v1/me", &phone).await.status(), 200);
    let gone = auth
        .revoke_sessions(RevokeSessionsRequest {
            appid: String::new(),
            openid: openid.clone(),
            session_id: Some(sessions[0].session_id.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(reason::of(&gone), Some(Reason::SessionNotFound));

    let all = auth
        .revoke_sessions(RevokeSessionsRequest {
            appid: String::new(),
            openid: openid.clone(),
            session_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.ended, 1);
    assert_error(
        app.get_with_token("/v1/me", &phone).await,
        401,
        "invalid_token",
    )
    .await;
    assert!(list(&mut auth).await.is_empty());
}
