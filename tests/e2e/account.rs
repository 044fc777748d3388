//! Users own their account: deletion (`DELETE /v1/me`, gRPC `DeleteUser`)
//! and the team's block (`BlockUser` / `UnblockUser`), on every backend.

use reqwest::Method;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use wxlogin_proto::{
    auth::v1::{ForgetUserRequest, ListSessionsRequest, auth_service_client::AuthServiceClient},
    reason::{self, Reason},
    user::v1::{
        BlockUserRequest, DeleteUserRequest, OpenId, UnblockUserRequest, UserKey, user_key::Key,
        user_service_client::UserServiceClient,
    },
};
use wxlogin_testkit::credential::{Credential, channel};
use wxlogin_tests::{TestApp, assert_error};
use wxlogin_wechat_sim::MintCode;

/// A login of `openid`: the answer's body.
async fn login_as(app: &TestApp, openid: &str) -> Value {
    let minted = app.mint_for(MintCode {
        openid: Some(openid.to_owned()),
        ..MintCode::default()
    });
    app.login_ok(&minted.code).await
}

fn token(login: &Value) -> String {
    login["token"].as_str().unwrap().to_owned()
}

async fn delete_me(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .delete(app.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn users(
    app: &TestApp,
) -> UserServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Credential>,
> {
    UserServiceClient::new(channel(app.user_addr, Credential::internal()))
}

fn by_openid(openid: &str) -> Option<UserKey> {
    Some(UserKey {
        key: Some(Key::Openid(OpenId {
            appid: wxlogin_tests::DEFAULT_APPID.to_owned(),
            openid: openid.to_owned(),
        })),
    })
}

/// The ids of the rows of `openid` in the test's database.
async fn rows_of(app: &TestApp, openid: &str) -> Vec<i64> {
    let db = app.database().await;
    db.query_all_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT CAST(id AS SIGNED) AS id FROM users WHERE openid = ?",
        [openid.into()],
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<i64>("", "id").unwrap())
    .collect()
}

/// The test's Redis keys that name `openid`, but the deletion's tombstone.
async fn redis_keys_of(app: &TestApp, openid: &str) -> Vec<String> {
    let Some(redis) = &app.redis else {
        return Vec::new();
    };
    redis
        .dump()
        .await
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| key.contains(openid) && !key.contains(":deleted:"))
        .collect()
}

async fn assert_logged_out(app: &TestApp, tokens: &[&str]) {
    for token in tokens {
        assert_error(
            app.get_with_token("/v1/me", token).await,
            401,
            "invalid_token",
        )
        .await;
    }
}

#[tokio::test]
async fn deleting_the_account_ends_every_session_and_the_next_login_registers_anew() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let phone = login_as(&app, &openid).await;
    let laptop = login_as(&app, &openid).await;
    let renamed = app
        .json_with_token(
            Method::PUT,
            "/v1/me/profile",
            &token(&phone),
            &json!({ "nickname": "Ann" }),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    let old_id = phone["user"]["id"].as_i64().unwrap();

    let response = delete_me(&app, &token(&laptop)).await;

    assert_eq!(response.status(), 204);
    assert_logged_out(&app, &[&token(&phone), &token(&laptop)]).await;
    assert_eq!(rows_of(&app, &openid).await, Vec::<i64>::new());
    // No session, session_key, index of sessions or copy is left.
    assert_eq!(redis_keys_of(&app, &openid).await, Vec::<String>::new());
    assert_error(delete_me(&app, &token(&phone)).await, 401, "invalid_token").await;

    let again = login_as(&app, &openid).await;
    assert_eq!(again["created"], true);
    assert_ne!(again["user"]["id"].as_i64().unwrap(), old_id);
    assert_eq!(again["user"]["nickname"], Value::Null);
    let me = app.get_with_token("/v1/me", &token(&again)).await;
    assert_eq!(me.status(), 200);
    assert_eq!(rows_of(&app, &openid).await.len(), 1);

    let logs = wxlogin_tests::captured_logs();
    let deleted = logs
        .lines()
        .find(|line| {
            line.contains("wxlogin::audit")
                && line.contains("event=\"account_deleted\"")
                && line.contains(&format!("user_id={old_id}"))
        })
        .unwrap_or_else(|| panic!("no audit event of the deletion of {old_id}"));
    assert!(deleted.contains("request_id="), "{deleted}");
    assert!(!logs.contains(&token(&phone)));
}

#[tokio::test]
async fn the_back_office_deletes_a_user_over_grpc_and_repeating_it_is_harmless() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let login = login_as(&app, &openid).await;
    let mut users = users(&app);

    let deleted = users
        .delete_user(DeleteUserRequest {
            user: by_openid(&openid),
        })
        .await
        .unwrap()
        .into_inner();

    assert!(deleted.deleted);
    assert_eq!(deleted.sessions_ended, 1);
    assert_logged_out(&app, &[&token(&login)]).await;
    assert_eq!(rows_of(&app, &openid).await, Vec::<i64>::new());
    let repeated = users
        .delete_user(DeleteUserRequest {
            user: by_openid(&openid),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!repeated.deleted);
    let by_id = users
        .delete_user(DeleteUserRequest {
            user: Some(UserKey {
                key: Some(Key::Id(login["user"]["id"].as_u64().unwrap())),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(reason::of(&by_id), Some(Reason::UserNotFound));
    let nobody = users
        .delete_user(DeleteUserRequest { user: None })
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), tonic::Code::InvalidArgument);
}

/// Makes every deletion of a user row fail, as a crash between the
/// deletion's steps would leave it; dropped by [`allow_row_deletes`].
async fn fail_row_deletes(app: &TestApp) {
    let db = app.database().await;
    let trigger = match db.get_database_backend() {
        // 1205, lock wait timeout: the database could not do it now.
        DbBackend::MySql => {
            "CREATE TRIGGER users_no_delete BEFORE DELETE ON users FOR EACH ROW \
             SIGNAL SQLSTATE 'HY000' SET MESSAGE_TEXT = 'injected', MYSQL_ERRNO = 1205"
        }
        _ => {
            "CREATE TRIGGER users_no_delete BEFORE DELETE ON users \
             BEGIN SELECT RAISE(ABORT, 'injected'); END"
        }
    };
    db.execute_unprepared(trigger).await.unwrap();
}

async fn allow_row_deletes(app: &TestApp) {
    let db = app.database().await;
    db.execute_unprepared("DROP TRIGGER users_no_delete")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deletion_cut_short_leaves_nobody_logged_in_and_repeating_it_completes_it() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let phone = login_as(&app, &openid).await;
    let laptop = login_as(&app, &openid).await;
    let old_id = phone["user"]["id"].as_i64().unwrap();
    fail_row_deletes(&app).await;

    let response = delete_me(&app, &token(&phone)).await;

    assert!(response.status().is_server_error(), "{}", response.status());
    // Stopped before the row went: nothing logs the user in any more.
    assert_eq!(rows_of(&app, &openid).await, vec![old_id]);
    assert_logged_out(&app, &[&token(&phone), &token(&laptop)]).await;
    assert_eq!(redis_keys_of(&app, &openid).await, Vec::<String>::new());

    allow_row_deletes(&app).await;
    let again = login_as(&app, &openid).await;
    if app.redis.is_some() {
        // The login met the deletion's tombstone and completed it.
        assert_eq!(again["created"], true);
        assert_ne!(again["user"]["id"].as_i64().unwrap(), old_id);
    } else {
        // The single-process setup keeps no tombstone: the user is as
        // they were, and deleting again completes the deletion.
        assert_eq!(again["user"]["id"].as_i64().unwrap(), old_id);
        assert_eq!(delete_me(&app, &token(&again)).await.status(), 204);
        let fresh = login_as(&app, &openid).await;
        assert_eq!(fresh["created"], true);
        assert_ne!(fresh["user"]["id"].as_i64().unwrap(), old_id);
    }
    let rows = rows_of(&app, &openid).await;
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0], old_id);
}

#[tokio::test]
async fn a_deletion_whose_caller_goes_away_still_completes() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let login = login_as(&app, &openid).await;
    let mut request = tonic::Request::new(DeleteUserRequest {
        user: by_openid(&openid),
    });
    // The caller gives up almost at once: the server cancels the call.
    request.set_timeout(std::time::Duration::from_millis(1));

    let _ = users(&app).delete_user(request).await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !rows_of(&app, &openid).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion stopped half-way"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_logged_out(&app, &[&token(&login)]).await;
    assert_eq!(redis_keys_of(&app, &openid).await, Vec::<String>::new());
}

#[tokio::test]
async fn the_back_office_completes_a_deletion_cut_short() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let login = login_as(&app, &openid).await;
    fail_row_deletes(&app).await;
    let mut users = users(&app);
    let failed = users
        .delete_user(DeleteUserRequest {
            user: by_openid(&openid),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            failed.code(),
            tonic::Code::Unavailable | tonic::Code::Internal
        ),
        "{failed:?}"
    );
    assert_logged_out(&app, &[&token(&login)]).await;
    allow_row_deletes(&app).await;

    let completed = users
        .delete_user(DeleteUserRequest {
            user: by_openid(&openid),
        })
        .await
        .unwrap()
        .into_inner();

    assert!(completed.deleted);
    assert_eq!(rows_of(&app, &openid).await, Vec::<i64>::new());
}

#[tokio::test]
async fn a_deletion_racing_logins_of_the_same_user_leaves_no_orphan_and_no_copy() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    for _ in 0..4 {
        let first = login_as(&app, &openid).await;
        let deleted_id = first["user"]["id"].as_i64().unwrap();
        let codes: Vec<String> = (0..6)
            .map(|_| {
                app.mint_for(MintCode {
                    openid: Some(openid.clone()),
                    ..MintCode::default()
                })
                .code
            })
            .collect();

        let first_token = token(&first);
        let deletion = delete_me(&app, &first_token);
        let logins = futures::future::join_all(codes.iter().map(|code| app.login(code)));
        let (deletion, logins) = tokio::join!(deletion, logins);

        assert_eq!(deletion.status(), 204);
        assert!(!rows_of(&app, &openid).await.contains(&deleted_id));
        for login in logins {
            assert_eq!(login.status(), 200);
            let login: Value = login.json().await.unwrap();
            // A session either ended with the deletion or is of a user who
            // exists, and never of the deleted one.
            let me = app.get_with_token("/v1/me", &token(&login)).await;
            match me.status().as_u16() {
                401 => {}
                200 => {
                    let me: Value = me.json().await.unwrap();
                    let id = me["user"]["id"].as_i64().unwrap();
                    assert_ne!(id, deleted_id);
                    assert_eq!(rows_of(&app, &openid).await, vec![id]);
                }
                status => panic!("GET /v1/me answered {status}"),
            }
        }
        // No copy of the deleted user came back.
        if let Some(redis) = &app.redis {
            let copy = wxlogin_redis::Keyspace::new(redis.prefix())
                .user_copy(wxlogin_tests::DEFAULT_APPID, &openid);
            if let Some(mut copy) = redis.get(&copy).await {
                let user = wxlogin_userdata::copy::decode(
                    &wxlogin_testkit::credential::data_keys(),
                    &mut copy,
                    wxlogin_tests::DEFAULT_APPID,
                    &openid,
                );
                assert_ne!(user.map(|user| user.id), u64::try_from(deleted_id).ok());
            }
        }
        // And the user can log in, as whoever the database holds.
        let after = login_as(&app, &openid).await;
        let me = app.get_with_token("/v1/me", &token(&after)).await;
        assert_eq!(me.status(), 200);
        let id = after["user"]["id"].as_i64().unwrap();
        assert_eq!(rows_of(&app, &openid).await, vec![id]);
    }
}

#[tokio::test]
async fn a_blocked_user_loses_every_session_and_cannot_log_in_until_unblocked() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let phone = login_as(&app, &openid).await;
    let laptop = login_as(&app, &openid).await;
    let id = phone["user"]["id"].as_u64().unwrap();
    let mut users = users(&app);

    let blocked = users
        .block_user(BlockUserRequest {
            user: Some(UserKey {
                key: Some(Key::Id(id)),
            }),
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(blocked.sessions_ended, 2);
    assert!(blocked.user.unwrap().blocked);
    assert_logged_out(&app, &[&token(&phone), &token(&laptop)]).await;
    for _ in 0..2 {
        let minted = app.mint_for(MintCode {
            openid: Some(openid.clone()),
            ..MintCode::default()
        });
        assert_error(app.login(&minted.code).await, 403, "user_blocked").await;
    }
    // The refused logins left no session behind.
    let mut auth = AuthServiceClient::new(channel(app.auth_addr, Credential::internal()));
    let sessions = auth
        .list_sessions(ListSessionsRequest {
            appid: String::new(),
            openid: openid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 0);

    let unblocked = users
        .unblock_user(UnblockUserRequest {
            user: by_openid(&openid),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!unblocked.user.unwrap().blocked);
    let back = login_as(&app, &openid).await;
    assert_eq!(back["created"], false);
    assert_eq!(back["user"]["id"].as_u64(), Some(id));
    assert_eq!(
        app.get_with_token("/v1/me", &token(&back)).await.status(),
        200
    );

    let nobody = users
        .block_user(BlockUserRequest {
            user: Some(UserKey {
                key: Some(Key::Id(u64::MAX)),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(reason::of(&nobody), Some(Reason::UserNotFound));
    let logs = wxlogin_tests::captured_logs();
    for event in ["user_blocked", "blocked_login_refused", "user_unblocked"] {
        assert!(
            logs.lines().any(|line| line.contains("wxlogin::audit")
                && line.contains(&format!("event=\"{event}\""))
                && line.contains(&format!("user_id={id}"))),
            "no {event} audit event for user {id}"
        );
    }
}

#[tokio::test]
async fn only_the_user_service_may_make_auth_forget_a_user() {
    let app = TestApp::spawn().await;
    let openid = app.mint().openid;
    let login = login_as(&app, &openid).await;
    let mut auth = AuthServiceClient::new(channel(app.auth_addr, Credential::internal()));

    let refused = auth
        .forget_user(ForgetUserRequest {
            appid: String::new(),
            openid: openid.clone(),
            user_id: login["user"]["id"].as_u64().unwrap(),
        })
        .await
        .unwrap_err();

    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        app.get_with_token("/v1/me", &token(&login)).await.status(),
        200
    );
}
