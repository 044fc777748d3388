use std::collections::HashSet;

use futures::future::join_all;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use wxlogin_tests::{OTHER_APPID, TestApp, assert_error};
use wxlogin_wechat_sim::MintCode;

#[tokio::test]
async fn first_login_registers_the_user_and_returns_a_token() {
    // Arrange
    let app = TestApp::spawn().await;
    let minted = app.mint_for(MintCode {
        unionid: Some("oUnion_first_login".into()),
        ..MintCode::default()
    });

    // Act
    let body = app.login_ok(&minted.code).await;

    // Assert
    assert_eq!(body["created"], true);
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.len(), 43);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let user = &body["user"];
    assert!(user["id"].as_u64().unwrap() > 0);
    assert_eq!(user["appid"], minted.appid);
    assert_eq!(user["openid"], minted.openid);
    assert_eq!(user["unionid"], "oUnion_first_login");
    assert_eq!(user["gender"], 0);
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_returning_user_keeps_the_id_and_gets_a_new_token() {
    let app = TestApp::spawn().await;
    let first = app.mint();
    let first_login = app.login_ok(&first.code).await;

    let again = app.mint_for(MintCode {
        openid: Some(first.openid.clone()),
        ..MintCode::default()
    });
    let second_login = app.login_ok(&again.code).await;

    assert_eq!(second_login["created"], false);
    assert_eq!(second_login["user"]["id"], first_login["user"]["id"]);
    assert_ne!(second_login["token"], first_login["token"]);
    // Both sessions stay valid.
    for login in [&first_login, &second_login] {
        let me = app
            .get_with_token("/v1/me", login["token"].as_str().unwrap())
            .await;
        assert_eq!(me.status(), 200);
    }
}

#[tokio::test]
async fn a_returning_login_is_recorded_even_while_the_user_service_is_down() {
    let mut app = TestApp::spawn().await;
    let first = app.mint();
    let registered = app.login_ok(&first.code).await;
    let again = |app: &TestApp| {
        app.mint_for(MintCode {
            openid: Some(first.openid.clone()),
            ..MintCode::default()
        })
        .code
    };

    // A returning login: with Redis, auth answers it from the user's copy
    // and journals it; the user service records it behind.
    let second = app.login_ok(&again(&app)).await;
    assert_eq!(second["created"], false);
    assert_eq!(second["user"], registered["user"]);
    assert_eq!(
        app.wait_for_recorded_logins(&first.openid, 2).await,
        (2, true)
    );

    app.stop_user_service().await;
    let login = app.login(&again(&app)).await;
    if app.redis.is_none() {
        // The single-process store has no copies: the user service answers
        // every login.
        assert_error(login, 503, "service_unavailable").await;
        return;
    }
    // The copy answers without the user service; the login waits in Redis
    // until a user service is back, and is recorded then.
    assert_eq!(login.status(), 200);
    let third: Value = login.json().await.unwrap();
    assert_eq!(third["user"], registered["user"]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.recorded_logins(&first.openid).await.0, 2);
    app.restart_user_service().await;
    assert_eq!(
        app.wait_for_recorded_logins(&first.openid, 3).await,
        (3, true)
    );
}

#[tokio::test]
async fn a_unionid_that_appears_later_is_backfilled() {
    let app = TestApp::spawn().await;
    let first = app.mint();
    let login = app.login_ok(&first.code).await;
    assert_eq!(login["user"]["unionid"], Value::Null);

    let bound = app.mint_for(MintCode {
        openid: Some(first.openid.clone()),
        unionid: Some("oUnion_backfilled".into()),
        ..MintCode::default()
    });
    let login = app.login_ok(&bound.code).await;

    assert_eq!(login["user"]["unionid"], "oUnion_backfilled");
    let me: Value = app
        .get_with_token("/v1/me", login["token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["unionid"], "oUnion_backfilled");
}

#[tokio::test]
async fn a_form_encoded_body_logs_in_too() {
    let app = TestApp::spawn().await;
    let minted = app.mint();

    let response = app
        .http
        .post(app.url("/v1/login"))
        .form(&[("code", minted.code.as_str())])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["openid"], minted.openid);
    assert_eq!(body["created"], true);
}

#[tokio::test]
async fn the_appid_field_selects_another_mini_program() {
    let app = TestApp::spawn().await;
    let minted = app.mint_for(MintCode {
        appid: Some(OTHER_APPID.into()),
        ..MintCode::default()
    });

    let body = app
        .post_json(
            "/v1/login",
            &json!({ "code": minted.code, "appid": OTHER_APPID }),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();

    assert_eq!(body["user"]["appid"], OTHER_APPID);
    assert_eq!(body["user"]["openid"], minted.openid);
}

#[tokio::test]
async fn a_code_of_one_app_is_refused_for_another() {
    let app = TestApp::spawn().await;
    let minted = app.mint(); // for the default app

    let response = app
        .post_json(
            "/v1/login",
            &json!({ "code": minted.code, "appid": OTHER_APPID }),
        )
        .await;

    assert_error(response, 401, "invalid_code").await;
}

#[tokio::test]
async fn the_same_openid_in_two_apps_is_two_users() {
    let app = TestApp::spawn().await;
    let openid = "oSameOpenidInTwoApps0000000".to_owned();
    let default_app = app.mint_for(MintCode {
        openid: Some(openid.clone()),
        ..MintCode::default()
    });
    let other_app = app.mint_for(MintCode {
        appid: Some(OTHER_APPID.into()),
        openid: Some(openid.clone()),
        ..MintCode::default()
    });

    let a = app.login_ok(&default_app.code).await;
    let b = app
        .post_json(
            "/v1/login",
            &json!({ "code": other_app.code, "appid": OTHER_APPID }),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();

    assert_ne!(a["user"]["id"], b["user"]["id"]);
    assert_eq!(a["created"], true);
    assert_eq!(b["created"], true);
}

#[tokio::test]
async fn fifty_concurrent_first_logins_of_one_openid_make_one_user() {
    // Arrange: 50 codes for one new user, as 50 devices logging in at once.
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let codes: Vec<String> = (0..50)
        .map(|_| {
            app.mint_for(MintCode {
                openid: Some(openid.clone()),
                ..MintCode::default()
            })
            .code
        })
        .collect();

    // Act
    let bodies: Vec<Value> = join_all(codes.iter().map(|code| app.login_ok(code))).await;

    // Assert: one row, one `created`, one id, 50 distinct working tokens.
    let created = bodies.iter().filter(|b| b["created"] == true).count();
    assert_eq!(created, 1);
    let ids: HashSet<u64> = bodies
        .iter()
        .map(|b| b["user"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    let tokens: HashSet<&str> = bodies
        .iter()
        .map(|b| b["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 50);
    let statuses = join_all(
        tokens
            .iter()
            .map(|token| app.get_with_token("/v1/me", token)),
    )
    .await;
    assert!(statuses.iter().all(|r| r.status() == 200));

    let db = app.database().await;
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM users WHERE openid = ?",
            [openid.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    let rows: i64 = row.try_get("", "n").unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn concurrent_submissions_of_one_code_get_one_answer() {
    // A double-tapped login button: the same code arrives several times at
    // once. WeChat must see it once, and every submission gets the answer.
    let app = TestApp::spawn().await;
    app.simulator()
        .set_latency(std::time::Duration::from_millis(300));
    let minted = app.mint();
    let before = app.simulator().code2session_calls();

    let bodies = join_all((0..5).map(|_| app.login_ok(&minted.code))).await;

    assert_eq!(app.simulator().code2session_calls() - before, 1);
    let tokens: HashSet<&str> = bodies
        .iter()
        .map(|b| b["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 1, "one exchange, one session, one answer");
    // Once the exchange is over, a late duplicate (within the code's
    // lifetime) still gets the same answer, without a second exchange.
    app.simulator().set_latency(std::time::Duration::ZERO);
    let late = app.login_ok(&minted.code).await;
    assert_eq!(late["token"], bodies[0]["token"]);
    assert_eq!(late["user"]["id"], bodies[0]["user"]["id"]);
    assert_eq!(app.simulator().code2session_calls() - before, 1);

    // Once that session is over, a replay of the code is a used code, not
    // a 200 with a dead token.
    let token = late["token"].as_str().unwrap();
    assert_eq!(app.post_with_token("/v1/logout", token).await.status(), 204);
    assert_error(app.login(&minted.code).await, 401, "code_used").await;
    assert_eq!(app.simulator().code2session_calls() - before, 1);
}
