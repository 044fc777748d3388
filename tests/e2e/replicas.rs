//! Two replicas of auth and the gateway sharing one Redis prefix, database
//! and simulator: a code sent to both is exchanged once, and every
//! submission, at once or later, gets the same answer.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use wxlogin_tests::{Fault, TestApp, assert_error};

/// The app and a replica, or `None` on the embedded backend, whose
/// in-process store one process owns.
async fn two_replicas() -> Option<(TestApp, wxlogin_tests::Replica)> {
    let app = TestApp::spawn().await;
    if app.redis.is_none() {
        eprintln!("skipped: replicas share codes and sessions through Redis");
        return None;
    }
    let replica = app.spawn_replica().await;
    Some((app, replica))
}

async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn one_code_sent_through_two_replicas_is_exchanged_once() {
    // Arrange: WeChat answers slowly, so the submissions overlap.
    let Some((app, replica)) = two_replicas().await else {
        return;
    };
    app.simulator().set_latency(Duration::from_millis(300));
    let minted = app.mint();
    let before = app.simulator().code2session_calls();

    // Act: three submissions through each replica at once, then one more
    // through each after they all finished.
    let at_once = join_all((0..6).map(|i| {
        let code = minted.code.clone();
        let (app, replica) = (&app, &replica);
        async move {
            if i % 2 == 0 {
                app.login(&code).await
            } else {
                replica.login(&code).await
            }
        }
    }))
    .await;
    let mut answers = Vec::new();
    for response in at_once {
        answers.push(body(response).await);
    }
    app.simulator().set_latency(Duration::ZERO);
    answers.push(body(app.login(&minted.code).await).await);
    answers.push(body(replica.login(&minted.code).await).await);

    // Assert: WeChat saw the code once; every answer is the same session.
    assert_eq!(app.simulator().code2session_calls() - before, 1);
    let (_, first) = &answers[0];
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["token"], first["token"]);
        assert_eq!(answer["user"]["id"], first["user"]["id"]);
        assert_eq!(answer["user"]["openid"], minted.openid.as_str());
        assert_eq!(answer["expires_in"], first["expires_in"]);
    }
    let token = first["token"].as_str().unwrap();
    assert_eq!(app.get_with_token("/v1/me", token).await.status(), 200);
    let me = app
        .http
        .get(replica.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    replica.stop().await;
}

#[tokio::test]
async fn a_refused_code_gets_the_same_refusal_everywhere_and_a_busy_one_is_retried() {
    let Some((app, replica)) = two_replicas().await else {
        return;
    };
    let before = app.simulator().code2session_calls();

    // A code WeChat does not know: one call, the same 401 on both, now and later.
    app.simulator().set_latency(Duration::from_millis(200));
    let unknown = "0a3Kx7000Gj5oS1e2x300E0uXd2Kx70f";
    let (a, b) = tokio::join!(app.login(unknown), replica.login(unknown));
    app.simulator().set_latency(Duration::ZERO);
    assert_error(a, 401, "invalid_code").await;
    assert_error(b, 401, "invalid_code").await;
    assert_error(replica.login(unknown).await, 401, "invalid_code").await;
    assert_eq!(app.simulator().code2session_calls() - before, 1);

    // WeChat busy (-1) spends no code: the claim is given up, and a retry
    // through the other replica exchanges it.
    let minted = app.mint();
    app.simulator()
        .push_fault(Fault::errcode(-1).for_endpoint("jscode2session"));
    assert_error(app.login(&minted.code).await, 503, "wechat_busy").await;
    let retried = replica.login(&minted.code).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(app.simulator().code2session_calls() - before, 3);
    replica.stop().await;
}

#[tokio::test]
async fn redis_holds_no_raw_token_and_no_extra_session_key_after_a_replicated_login() {
    let Some((app, replica)) = two_replicas().await else {
        return;
    };
    app.simulator().set_latency(Duration::from_millis(200));
    let minted = app.mint();
    let (a, b) = tokio::join!(app.login(&minted.code), replica.login(&minted.code));
    let (_, a) = body(a).await;
    let (_, b) = body(b).await;
    assert_eq!(a["token"], b["token"]);
    let token = a["token"].as_str().unwrap();

    // Every key of the test's prefix, with its value (as text).
    let keys = app.redis.as_ref().unwrap().dump().await;
    let mut holding_session_key = Vec::new();
    let mut login_entries = 0;
    for (key, value) in &keys {
        let value = value.as_deref().unwrap_or_default();
        for secret in [token, minted.code.as_str()] {
            assert!(!key.contains(secret), "a secret in the key {key}");
            assert!(!value.contains(secret), "a secret in the value of {key}");
        }
        if value.contains(&minted.session_key) {
            holding_session_key.push(key.clone());
        }
        if key.contains(":login:") {
            login_entries += 1;
            assert!(value.starts_with("sealed:"), "{key}: {value}");
            assert!(!value.contains(&minted.openid), "the outcome is sealed");
        }
    }
    assert_eq!(login_entries, 1, "{keys:?}");
    // The session_key sits where it always did, and nowhere else.
    assert_eq!(holding_session_key.len(), 1, "{holding_session_key:?}");
    assert!(holding_session_key[0].contains(":session_key:"));
    replica.stop().await;
}

#[tokio::test]
async fn a_claim_left_by_a_crashed_instance_delays_a_login_but_never_blocks_it() {
    // Arrange: short WeChat timeout, so claims are short too.
    let app = TestApp::spawn_with(wxlogin_tests::Options {
        wechat_timeout_ms: 300,
        ..wxlogin_tests::Options::default()
    })
    .await;
    let Some(redis) = &app.redis else {
        eprintln!("skipped: claims of other instances live in Redis");
        return;
    };
    // Whatever the topology (the suite also runs on a Redis Cluster).
    let conn = wxlogin_redis::guard::RedisGuard::connect(redis.url())
        .await
        .unwrap();
    let slot_key = |code: &str| {
        let secrets =
            wxlogin_auth::sealed_outcome::CodeSecrets::derive(wxlogin_tests::DEFAULT_APPID, code);
        wxlogin_redis::Keyspace::new(redis.prefix())
            .login_slot(wxlogin_tests::DEFAULT_APPID, secrets.slot())
    };
    let before = app.simulator().code2session_calls();

    // An instance claimed the code and died: once its claim expires the
    // code is exchanged here.
    let minted = app.mint();
    let _: () = conn
        .run(async |conn| {
            redis::cmd("SET")
                .arg(slot_key(&minted.code))
                .arg("pending:crashed")
                .arg("PX")
                .arg(500)
                .query_async(conn)
                .await
        })
        .await
        .unwrap();
    let body = app.login_ok(&minted.code).await;
    assert_eq!(body["user"]["openid"], minted.openid.as_str());

    // A claim that never ends (a wedged instance): 503, within the bound.
    let wedged = app.mint();
    let _: () = conn
        .run(async |conn| {
            redis::cmd("SET")
                .arg(slot_key(&wedged.code))
                .arg("pending:wedged")
                .query_async(conn)
                .await
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let response = app.login(&wedged.code).await;
    let waited = started.elapsed();
    assert_eq!(response.headers()["retry-after"], "1");
    assert_error(response, 503, "service_unavailable").await;
    println!("a wedged claim answered 503 after {waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(app.simulator().code2session_calls() - before, 1);
}

#[tokio::test]
async fn a_logout_or_a_profile_change_on_one_replica_shows_on_the_other_at_once() {
    let Some((app, replica)) = two_replicas().await else {
        return;
    };
    let minted = app.mint();
    let token = app.login_ok(&minted.code).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = |base: String| {
        let request = app
            .http
            .get(format!("{base}/v1/me"))
            .bearer_auth(&token)
            .send();
        async move { request.await.unwrap() }
    };
    // Both replicas have checked the session (and remember whose it is).
    for _ in 0..3 {
        assert_eq!(me(app.base_url.clone()).await.status(), 200);
        assert_eq!(me(replica.base_url.clone()).await.status(), 200);
    }

    // A profile change through one replica is what the other answers next.
    let renamed = app
        .http
        .put(app.url("/v1/me/profile"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "nickname": "Renamed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    let (status, seen) = body(me(replica.base_url.clone()).await).await;
    assert_eq!(status, 200);
    assert_eq!(seen["user"]["nickname"], "Renamed");

    // A logout through one replica ends the session on the other at once.
    let logout = app
        .http
        .post(app.url("/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_error(me(replica.base_url.clone()).await, 401, "invalid_token").await;
    assert_error(me(app.base_url.clone()).await, 401, "invalid_token").await;
    replica.stop().await;
}
