//! The user service over gRPC, against a real MariaDB.

mod support;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    time::{Duration, Instant},
};

use support::{APPID, TestApp};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use wxlogin_proto::{
    reason::{self, Reason},
    user::v1::{
        GetUserRequest, UpsertUserRequest, User, user_service_client::UserServiceClient,
        user_service_server::SERVICE_NAME,
    },
};
use wxlogin_testkit::credential::{Credential, channel};
use wxlogin_userdata::copy as user_copy;

#[tokio::test]
async fn the_first_upsert_registers_the_user() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let response = app.upsert("o-first", None).await.expect("upsert");

    // Assert
    assert!(response.created);
    let user = response.user.expect("a user");
    assert!(user.id > 0);
    assert_eq!(user.appid, APPID);
    assert_eq!(user.openid, "o-first");
    assert_eq!(user.unionid, None);
    assert_eq!(user.gender, 0);
    assert!(user.created_at.is_some());
    assert_eq!(user.created_at, user.updated_at);
}

#[tokio::test]
async fn a_second_upsert_recognises_the_user_and_counts_the_login() {
    // Arrange
    let app = TestApp::spawn().await;
    let first = app.upsert("o-again", None).await.expect("first upsert");
    let first_user = first.user.expect("a user");

    // Act
    let second = app.upsert("o-again", None).await.expect("second upsert");

    // Assert
    assert!(!second.created);
    let second_user = second.user.expect("a user");
    assert_eq!(second_user.id, first_user.id);
    assert_eq!(second_user.created_at, first_user.created_at);
    let logins = app
        .count(
            "SELECT CAST(login_count AS SIGNED) FROM users WHERE id = ?",
            vec![first_user.id.into()],
        )
        .await;
    assert_eq!(logins, 2);
}

#[tokio::test]
async fn the_same_openid_in_another_app_is_another_user() {
    // Arrange
    let app = TestApp::spawn().await;
    let mine = app.upsert("o-shared", None).await.expect("upsert");

    // Act
    let theirs = app
        .client
        .clone()
        .upsert_user(UpsertUserRequest {
            appid: "wx-other-app".into(),
            openid: "o-shared".into(),
            unionid: None,
            cached_copy: Vec::new(),
        })
        .await
        .expect("upsert")
        .into_inner();

    // Assert
    assert!(theirs.created);
    assert_ne!(
        theirs.user.expect("a user").id,
        mine.user.expect("a user").id
    );
}

#[tokio::test]
async fn openids_differing_only_in_case_are_different_users() {
    // Arrange
    let app = TestApp::spawn().await;
    let lower = app.upsert("o-case", None).await.expect("upsert");

    // Act
    let upper = app.upsert("O-CASE", None).await.expect("upsert");

    // Assert
    assert!(upper.created);
    assert_ne!(
        upper.user.expect("a user").id,
        lower.user.expect("a user").id
    );
}

#[tokio::test]
async fn a_unionid_is_backfilled_when_it_first_appears() {
    // Arrange
    let app = TestApp::spawn().await;
    app.upsert("o-backfill", None).await.expect("upsert");

    // Act
    let response = app.upsert("o-backfill", Some("u-1")).await.expect("upsert");

    // Assert
    assert_eq!(
        response.user.expect("a user").unionid.as_deref(),
        Some("u-1")
    );
}

#[tokio::test]
async fn a_unionid_is_kept_when_a_later_login_has_none() {
    // Arrange
    let app = TestApp::spawn().await;
    app.upsert("o-keep", Some("u-1")).await.expect("upsert");

    // Act
    let without = app.upsert("o-keep", None).await.expect("upsert");
    let empty = app.upsert("o-keep", Some("")).await.expect("upsert");

    // Assert
    assert_eq!(
        without.user.expect("a user").unionid.as_deref(),
        Some("u-1")
    );
    assert_eq!(empty.user.expect("a user").unionid.as_deref(), Some("u-1"));
}

/// WeChat never changes a user's unionid; a different one is a caller's bug
/// and the first value, which other records may point to, stays.
#[tokio::test]
async fn the_first_unionid_stays_when_another_one_arrives() {
    // Arrange
    let app = TestApp::spawn().await;
    app.upsert("o-first-wins", Some("u-a"))
        .await
        .expect("upsert");

    // Act
    let response = app
        .upsert("o-first-wins", Some("u-b"))
        .await
        .expect("upsert");

    // Assert
    assert_eq!(
        response.user.expect("a user").unionid.as_deref(),
        Some("u-a")
    );
}

#[tokio::test]
async fn an_empty_unionid_is_stored_as_none() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let response = app.upsert("o-empty-union", Some("")).await.expect("upsert");

    // Assert
    assert_eq!(response.user.expect("a user").unionid, None);
}

#[tokio::test]
async fn a_returning_login_answers_the_callers_copy_only_when_it_is_current() {
    // Arrange: a registered user, and copies of them as a caller may hold.
    let app = TestApp::spawn().await;
    let registered = app
        .upsert("o-copy", None)
        .await
        .expect("first upsert")
        .user
        .expect("a user");
    let copy = |edit: &dyn Fn(&mut User)| {
        let mut user = User {
            nickname: Some("from the copy".into()),
            ..registered.clone()
        };
        edit(&mut user);
        user
    };
    let login = |unionid: Option<&str>, cached: User| UpsertUserRequest {
        appid: APPID.into(),
        openid: "o-copy".into(),
        unionid: unionid.map(str::to_owned),
        cached_copy: user_copy::encode(&wxlogin_testkit::credential::data_keys(), &cached).unwrap(),
    };
    let cases = [
        ("current copy", login(None, copy(&|_| {})), true),
        ("another id", login(None, copy(&|u| u.id += 1)), false),
        (
            "another openid",
            login(None, copy(&|u| u.openid = "o-other".into())),
            false,
        ),
        (
            "another app",
            login(None, copy(&|u| u.appid = "wx-other".into())),
            false,
        ),
        // This login backfills the unionid, which the copy lacks.
        (
            "copy without the new unionid",
            login(Some("u-copy"), copy(&|_| {})),
            false,
        ),
    ];

    for (case, request, answered) in cases {
        // Act
        let response = app
            .client
            .clone()
            .upsert_user(request)
            .await
            .expect(case)
            .into_inner();

        // Assert
        assert!(!response.created, "{case}");
        let user = response.user.expect("a user");
        assert_eq!(user.id, registered.id, "{case}");
        assert_eq!(user.openid, "o-copy", "{case}");
        assert_eq!(user.appid, APPID, "{case}");
        let expected = answered.then(|| "from the copy".to_owned());
        assert_eq!(user.nickname, expected, "{case}");
    }
    let backfilled = app.get_by_id(registered.id).await.expect("the user");
    assert_eq!(backfilled.unionid.as_deref(), Some("u-copy"));
}

#[tokio::test]
async fn a_user_is_found_by_id_and_by_openid() {
    // Arrange
    let app = TestApp::spawn().await;
    let registered = app
        .upsert("o-find-me", Some("u-find-me"))
        .await
        .expect("upsert")
        .user
        .expect("a user");

    // Act
    let by_id = app.get_by_id(registered.id).await.expect("by id");
    let by_openid = app
        .get_by_openid(APPID, "o-find-me")
        .await
        .expect("by openid");

    // Assert
    assert_eq!(by_id, registered);
    assert_eq!(by_openid, registered);
}

#[tokio::test]
async fn an_unknown_user_is_not_found() {
    // Arrange
    let app = TestApp::spawn().await;
    app.upsert("o-someone", None).await.expect("upsert");

    // Act
    let by_id = app.get_by_id(999_999).await.expect_err("no such id");
    let by_openid = app
        .get_by_openid(APPID, "o-nobody")
        .await
        .expect_err("no such openid");

    // Assert
    for status in [by_id, by_openid] {
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(reason::of(&status), Some(Reason::UserNotFound));
    }
}

#[tokio::test]
async fn malformed_upserts_are_invalid_arguments() {
    // Arrange
    let app = TestApp::spawn().await;
    let long = |n: usize| "x".repeat(n);
    let cases = [
        ("empty appid", String::new(), "o".to_owned(), None),
        ("empty openid", APPID.to_owned(), String::new(), None),
        ("long appid", long(65), "o".to_owned(), None),
        ("long openid", APPID.to_owned(), long(129), None),
        (
            "long unionid",
            APPID.to_owned(),
            "o".to_owned(),
            Some(long(129)),
        ),
    ];

    for (case, appid, openid, unionid) in cases {
        // Act
        let status = app
            .client
            .clone()
            .upsert_user(UpsertUserRequest {
                appid,
                openid,
                unionid,
                cached_copy: Vec::new(),
            })
            .await
            .expect_err(case);

        // Assert
        assert_eq!(status.code(), Code::InvalidArgument, "{case}");
        assert_eq!(reason::of(&status), Some(Reason::InvalidArgument), "{case}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users", vec![]).await, 0);
}

#[tokio::test]
async fn the_longest_values_fit() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let response = app
        .client
        .clone()
        .upsert_user(UpsertUserRequest {
            appid: "a".repeat(64),
            openid: "微".repeat(128),
            unionid: Some("u".repeat(128)),
            cached_copy: Vec::new(),
        })
        .await;

    // Assert
    let user = response.expect("upsert").into_inner().user.expect("a user");
    assert_eq!(user.openid, "微".repeat(128));
}

#[tokio::test]
async fn malformed_lookups_are_invalid_arguments() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let no_key = app
        .client
        .clone()
        .get_user(GetUserRequest { key: None })
        .await
        .expect_err("no key");
    let no_appid = app.get_by_openid("", "o-1").await.expect_err("no appid");
    let no_openid = app.get_by_openid(APPID, "").await.expect_err("no openid");

    // Assert
    for status in [no_key, no_appid, no_openid] {
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason::of(&status), Some(Reason::InvalidArgument));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_logins_make_one_user() {
    // Arrange
    let app = TestApp::spawn().await;
    let mut calls = tokio::task::JoinSet::new();

    // Act
    for _ in 0..50 {
        let mut client = app.client.clone();
        calls.spawn(async move {
            client
                .upsert_user(UpsertUserRequest {
                    appid: APPID.into(),
                    openid: "o-stampede".into(),
                    unionid: Some("u-stampede".into()),
                    cached_copy: Vec::new(),
                })
                .await
        });
    }
    let responses: Vec<_> = calls
        .join_all()
        .await
        .into_iter()
        .map(|result| result.expect("every upsert succeeds").into_inner())
        .collect();

    // Assert
    assert_eq!(responses.len(), 50);
    assert_eq!(responses.iter().filter(|r| r.created).count(), 1);
    let ids: HashSet<u64> = responses
        .iter()
        .map(|r| r.user.as_ref().expect("a user").id)
        .collect();
    assert_eq!(ids.len(), 1);
    let rows = app
        .count(
            "SELECT COUNT(*) FROM users WHERE appid = ? AND openid = ?",
            vec![APPID.into(), "o-stampede".into()],
        )
        .await;
    assert_eq!(rows, 1);
    let logins = app
        .count("SELECT CAST(login_count AS SIGNED) FROM users", vec![])
        .await;
    assert_eq!(logins, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_of_many_users_each_register_once() {
    // Arrange: 40 users, each logging in three times at once, some of them
    // already registered (what gathered multi-row statements must keep
    // apart: new rows, existing ones, and one user twice).
    let app = TestApp::spawn().await;
    let openid = |i: usize| format!("o-many-{i}");
    for i in 0..10 {
        app.upsert(&openid(i), None).await.expect("register");
    }
    let mut calls = tokio::task::JoinSet::new();

    // Act
    for round in 0..3 {
        for i in 0..40 {
            let mut client = app.client.clone();
            let openid = openid(i);
            calls.spawn(async move {
                let answer = client
                    .upsert_user(UpsertUserRequest {
                        appid: APPID.into(),
                        openid: openid.clone(),
                        unionid: (round == 2).then(|| format!("u-{openid}")),
                        cached_copy: Vec::new(),
                    })
                    .await;
                (openid, answer)
            });
        }
    }
    let answers = calls.join_all().await;

    // Assert: one registration per new user, one id per user, every login
    // counted, every unionid stored.
    let mut created: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<String, HashSet<u64>> = HashMap::new();
    for (openid, answer) in answers {
        let answer = answer.expect("every upsert succeeds").into_inner();
        let user = answer.user.expect("a user");
        assert_eq!(user.openid, openid);
        *created.entry(openid.clone()).or_default() += usize::from(answer.created);
        ids.entry(openid).or_default().insert(user.id);
    }
    for i in 0..40 {
        let expected = usize::from(i >= 10);
        assert_eq!(created[&openid(i)], expected, "{}", openid(i));
        assert_eq!(ids[&openid(i)].len(), 1, "{}", openid(i));
    }
    let all_ids: HashSet<u64> = ids.values().flatten().copied().collect();
    assert_eq!(all_ids.len(), 40);
    let logins = app
        .count("SELECT CAST(SUM(login_count) AS SIGNED) FROM users", vec![])
        .await;
    assert_eq!(logins, 10 + 3 * 40);
    let with_unionid = app
        .count(
            "SELECT COUNT(*) FROM users WHERE unionid = CONCAT('u-', openid)",
            vec![],
        )
        .await;
    assert_eq!(with_unionid, 40);
}

#[tokio::test]
async fn callers_without_the_internal_credential_are_refused() {
    // Arrange
    let app = TestApp::spawn().await;
    let request = || UpsertUserRequest {
        appid: APPID.into(),
        openid: "o-intruder".into(),
        unionid: None,
        cached_copy: Vec::new(),
    };

    // Act
    let mut bare = UserServiceClient::connect(format!("http://{}", app.addr))
        .await
        .expect("connect");
    let without = bare.upsert_user(request()).await.unwrap_err();
    let mut wrong = UserServiceClient::new(channel(
        app.addr,
        Credential::of("not-the-secret-0123456789abcdef0123456"),
    ));
    let wrongly = wrong.upsert_user(request()).await.unwrap_err();
    // The user service's own credential is for auth, not for this API.
    let mut misused = UserServiceClient::new(channel(app.addr, Credential::user_service()));
    let misusing = misused.upsert_user(request()).await.unwrap_err();

    // Assert
    for status in [without, wrongly, misusing] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(reason::of(&status), Some(Reason::CallerUnauthenticated));
    }
    let rows = app
        .count(
            "SELECT COUNT(*) FROM users WHERE openid = ?",
            vec!["o-intruder".into()],
        )
        .await;
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn the_health_service_reports_serving() {
    // Arrange
    let app = TestApp::spawn().await;
    let mut health = app.health().await;

    // Act
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("check the server");
    let users = health
        .check(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .expect("check the user service");

    // Assert
    assert_eq!(overall.into_inner().status(), ServingStatus::Serving);
    assert_eq!(users.into_inner().status(), ServingStatus::Serving);
}

/// The user service's named health status.
async fn users_status(health: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("check the user service")
        .into_inner()
        .status()
}

/// How long `f` took, and what it gave.
async fn timed<T>(f: impl Future<Output = T>) -> (Duration, T) {
    let start = Instant::now();
    let result = f.await;
    (start.elapsed(), result)
}

#[tokio::test]
async fn while_mysql_is_down_new_users_fail_fast_returning_users_log_in_from_their_copy() {
    // Arrange: the pool's acquire timeout is the default 5 s, which a
    // request must not wait for; a returning user and the copy auth would
    // hold of them.
    let (app, proxy) = TestApp::behind_proxy(Duration::from_secs(5)).await;
    let copy = app
        .upsert("o-returning", None)
        .await
        .expect("register while reachable")
        .user
        .expect("a user");
    let returning = |cached: Option<User>| UpsertUserRequest {
        appid: APPID.into(),
        openid: "o-returning".into(),
        unionid: None,
        cached_copy: cached
            .as_ref()
            .map(|cached| {
                user_copy::encode(&wxlogin_testkit::credential::data_keys(), cached).unwrap()
            })
            .unwrap_or_default(),
    };
    let mut health = app.health().await;

    // Act: MySQL goes away, with no request to notice it.
    proxy.cut().await;
    let cut_at = Instant::now();
    let mut status = ServingStatus::Serving;
    while status != ServingStatus::NotServing && cut_at.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = users_status(&mut health, SERVICE_NAME).await;
    }
    let detected = cut_at.elapsed();

    // Assert: readiness follows within 2 s; the process stays SERVING.
    println!(
        "readiness NOT_SERVING {} ms after MySQL went away",
        detected.as_millis()
    );
    assert_eq!(status, ServingStatus::NotServing);
    assert!(detected < Duration::from_secs(2), "{detected:?}");
    assert_eq!(users_status(&mut health, "").await, ServingStatus::Serving);

    // Act + Assert: a new user's upsert is Unavailable, at once.
    let mut took = Vec::new();
    for i in 0..20 {
        let (elapsed, result) = timed(app.upsert(&format!("o-new-{i}"), None)).await;
        let status = result.expect_err("MySQL is down");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason::of(&status), Some(Reason::DependencyUnavailable));
        took.push(elapsed);
    }
    took.sort();
    println!(
        "Unavailable while down: median {:?}, max {:?} over {} upserts",
        took[took.len() / 2],
        took[took.len() - 1],
        took.len()
    );
    assert!(took[took.len() - 1] < Duration::from_secs(1), "{took:?}");

    // The returning user with a current copy logs in; without one, no.
    let (elapsed, answer) = timed(
        app.client
            .clone()
            .upsert_user(returning(Some(copy.clone()))),
    )
    .await;
    let answer = answer
        .expect("a returning login from the copy")
        .into_inner();
    assert!(!answer.created);
    assert_eq!(answer.user, Some(copy.clone()));
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    let without_copy = app
        .client
        .clone()
        .upsert_user(returning(None))
        .await
        .expect_err("nothing to answer with");
    assert_eq!(without_copy.code(), Code::Unavailable);
    // A copy of another user, or one this login would change, is no answer.
    for cached in [
        User {
            openid: "o-other".into(),
            ..copy.clone()
        },
        copy.clone(),
    ] {
        let backfilling = UpsertUserRequest {
            unionid: (cached.openid == "o-returning").then(|| "u-new".into()),
            ..returning(Some(cached))
        };
        let refused = app
            .client
            .clone()
            .upsert_user(backfilling)
            .await
            .expect_err("the copy does not answer this login");
        assert_eq!(refused.code(), Code::Unavailable);
    }
    let lookup = app.get_by_id(copy.id).await.expect_err("MySQL is down");
    assert_eq!(lookup.code(), Code::Unavailable);

    // Act: MySQL is back.
    proxy.restore();
    let back_at = Instant::now();
    let mut registered = None;
    while registered.is_none() && back_at.elapsed() < Duration::from_secs(10) {
        match app.upsert("o-after", None).await {
            Ok(response) => registered = Some(response),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let recovered = back_at.elapsed();

    // Assert: within a couple of seconds, everything works again.
    println!(
        "upserts succeed again {} ms after MySQL came back",
        recovered.as_millis()
    );
    assert!(registered.expect("an upsert after recovery").created);
    assert!(recovered < Duration::from_secs(3), "{recovered:?}");
    assert_eq!(
        users_status(&mut health, SERVICE_NAME).await,
        ServingStatus::Serving
    );
    let again = app
        .upsert("o-returning", None)
        .await
        .expect("a returning login");
    assert!(!again.created);
    assert_eq!(again.user.expect("a user").id, copy.id);
    // The logins answered from the copy were not recorded.
    let logins = app
        .count(
            "SELECT CAST(login_count AS SIGNED) FROM users WHERE openid = 'o-returning'",
            vec![],
        )
        .await;
    assert_eq!(logins, 2);
}

#[tokio::test]
async fn connections_cut_during_an_outage_cost_no_request_after_it() {
    // Arrange: a pool full of connections, all of which the outage cuts.
    let (app, proxy) = TestApp::behind_proxy(Duration::from_secs(5)).await;
    let openids: Vec<String> = (0..8).map(|i| format!("o-cut-{i}")).collect();
    for result in futures::future::join_all(openids.iter().map(|o| app.upsert(o, None))).await {
        result.expect("upsert while connected");
    }
    let mut health = app.health().await;
    proxy.cut().await;
    while users_status(&mut health, SERVICE_NAME).await != ServingStatus::NotServing {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Act
    proxy.restore();
    while users_status(&mut health, SERVICE_NAME).await != ServingStatus::Serving {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = futures::future::join_all(openids.iter().map(|o| app.upsert(o, None))).await;

    // Assert: the dead connections were found out before a request used them.
    for result in results {
        assert!(!result.expect("upsert after the outage").created);
    }
}

#[tokio::test]
async fn connections_mysql_dropped_fail_once_at_most_and_are_replaced() {
    // Arrange: a few pooled connections, then MySQL's side of them gone.
    let (app, proxy) = TestApp::behind_proxy(Duration::from_secs(5)).await;
    let openids: Vec<String> = (0..8).map(|i| format!("o-pool-{i}")).collect();
    for result in futures::future::join_all(openids.iter().map(|o| app.upsert(o, None))).await {
        result.expect("upsert while connected");
    }
    let dropped = proxy.drop_connections().await;
    assert!(dropped > 0);

    // Act: one login after another.
    let mut failed = 0;
    for openid in openids.iter().cycle().take(dropped + 4) {
        if let Err(status) = app.upsert(openid, None).await {
            // Assert: a dead connection costs one clean "unavailable".
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert_eq!(reason::of(&status), Some(Reason::DependencyUnavailable));
            failed += 1;
        }
    }

    // Assert: never more failures than dead connections, and then the pool
    // works again.
    assert!(
        failed <= dropped,
        "{failed} failures, {dropped} connections"
    );
    for openid in &openids {
        let again = app.upsert(openid, None).await.expect("upsert after");
        assert!(!again.created);
    }
}

#[tokio::test]
async fn the_server_stops_when_asked() {
    // Arrange
    let app = TestApp::spawn().await;
    let addr = app.addr;

    // Act
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.stop()).await;

    // Assert
    stopped.expect("stops in time").expect("stops cleanly");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
