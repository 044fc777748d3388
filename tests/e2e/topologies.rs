//! The whole system on a Redis Cluster and on a Sentinel-managed primary,
//! each started by the test from the machine's `redis-server`: every path
//! works (the multi-key scripts keep to one hash slot), and a primary killed
//! under load gives only 200 and 503 answers, with logins working again
//! within 5 s of the replica taking over. (The rest of the end-to-end suite
//! runs on a Cluster too: see `tests/run.sh`.)

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use wxlogin_testkit::{PrivateRedisCluster, PrivateRedisSentinel};
use wxlogin_tests::{Backend, Options, TestApp, assert_error};
use wxlogin_wechat_sim::MintPhoneCode;

/// How soon after the replica takes over logins must work again.
const RECOVERY: Duration = Duration::from_secs(5);

fn embedded() -> bool {
    if Backend::from_env() == Backend::Embedded {
        eprintln!("skipped: the embedded backend has no Redis");
        return true;
    }
    false
}

async fn spawn_on(redis_url: String) -> TestApp {
    TestApp::spawn_with(Options {
        redis_url: Some(redis_url),
        // Low enough for a few refused codes to meet it.
        login_per_ip: 3,
        ..Options::default()
    })
    .await
}

/// Login (new and returning), a code sent twice, `/v1/me`, profile, phone,
/// the login budget and logout.
async fn every_path_works(app: &TestApp) {
    let minted = app.mint();
    let first = app.login_ok(&minted.code).await;
    assert_eq!(first["created"], true);
    let token = first["token"].as_str().unwrap().to_owned();
    // The same code again: the same session, from the code's sealed slot.
    let again = app.login_ok(&minted.code).await;
    assert_eq!(again["token"], first["token"]);

    let me: Value = app
        .get_with_token("/v1/me", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["openid"], minted.openid.as_str());

    // A returning login that the user's copy answers (journaled).
    let returning = app.mint_for(wxlogin_wechat_sim::MintCode {
        openid: Some(minted.openid.clone()),
        ..wxlogin_wechat_sim::MintCode::default()
    });
    let second = app.login_ok(&returning.code).await;
    assert_eq!(second["created"], false);
    app.wait_for_recorded_logins(&minted.openid, 2).await;

    let renamed = app
        .json_with_token(
            reqwest::Method::PUT,
            "/v1/me/profile",
            &token,
            &json!({ "nickname": "Cluster" }),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    let me: Value = app
        .get_with_token("/v1/me", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["nickname"], "Cluster");

    let phone = app.simulator().mint_phone_code(MintPhoneCode {
        pure_phone_number: Some("13800138000".into()),
        ..MintPhoneCode::default()
    });
    let bound = app
        .http
        .post(app.url("/v1/me/phone"))
        .bearer_auth(&token)
        .json(&json!({ "code": phone.code }))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), 200);

    // The per-address login budget counts refused codes (checked and
    // charged in the app's slot).
    for n in 0..3 {
        let code = format!("bogus{n:08}");
        assert_error(app.login(&code).await, 401, "invalid_code").await;
    }
    assert_error(app.login("bogus00000003").await, 429, "rate_limited").await;

    let out = app.post_with_token("/v1/logout", &token).await;
    assert_eq!(out.status(), 204);
    assert_error(
        app.get_with_token("/v1/me", &token).await,
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_works_on_a_redis_cluster() {
    let cluster = PrivateRedisCluster::start();
    if embedded() {
        return;
    }
    let app = spawn_on(cluster.url()).await;
    every_path_works(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_works_under_sentinel() {
    let sentinel = PrivateRedisSentinel::start();
    if embedded() {
        return;
    }
    let app = spawn_on(sentinel.url()).await;
    every_path_works(&app).await;
    app.stop().await;
}

/// What a load saw: every status with when it came.
#[derive(Default)]
struct Seen {
    answers: Vec<(Duration, u16)>,
}

/// Logins and `/v1/me` calls from 4 workers until `stop`, recorded in
/// `seen` against `start`.
fn load(
    app: &Arc<TestApp>,
    tokens: Arc<Vec<String>>,
    start: Instant,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|worker| {
            let (app, tokens, stop, seen) =
                (app.clone(), tokens.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    let response = if i % 2 == 0 {
                        app.login(&app.mint().code).await
                    } else {
                        app.get_with_token("/v1/me", &tokens[i % tokens.len()])
                            .await
                    };
                    let status = response.status().as_u16();
                    if status != 200 {
                        let body = response.text().await.unwrap_or_default();
                        assert_eq!(status, 503, "{body}");
                    }
                    seen.lock().unwrap().answers.push((start.elapsed(), status));
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

/// Runs the load, calls `kill` after a second, then `recovered` (blocking:
/// it waits for the store's own failover and answers when it is done),
/// keeps the load on for `RECOVERY` more, and checks: only 200 and 503,
/// and 200s again within `RECOVERY` of the failover.
async fn failover_under_load(
    what: &str,
    app: TestApp,
    kill: impl FnOnce() + Send + 'static,
    recovered: impl FnOnce() + Send + 'static,
) {
    let app = Arc::new(app);
    let mut tokens = Vec::new();
    for _ in 0..8 {
        let login = app.login_ok(&app.mint().code).await;
        tokens.push(login["token"].as_str().unwrap().to_owned());
    }
    // Let the replicas copy the sessions.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let workers = load(&app, Arc::new(tokens), start, stop.clone(), seen.clone());

    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = start.elapsed();
    let failed_over_at = tokio::task::spawn_blocking(move || {
        kill();
        recovered();
        start.elapsed()
    })
    .await
    .unwrap();
    tokio::time::sleep(RECOVERY).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker
            .await
            .expect("a load worker saw an answer other than 200 or 503");
    }

    let answers = std::mem::take(&mut seen.lock().unwrap().answers);
    let unavailable: Vec<Duration> = answers
        .iter()
        .filter(|(_, status)| *status == 503)
        .map(|(at, _)| *at)
        .collect();
    let ok_after_failover = answers
        .iter()
        .filter(|(at, status)| *status == 200 && *at > failed_over_at)
        .count();
    let last_503 = unavailable.last().copied();
    println!(
        "{what}: primary killed at {killed_at:?}, replica took over at {failed_over_at:?}; \
         {} answers, {} of them 503 (first {:?}, last {last_503:?}); {ok_after_failover} \
         answers 200 after the takeover",
        answers.len(),
        unavailable.len(),
        unavailable.first(),
    );
    assert!(
        ok_after_failover > 0,
        "nothing succeeded after the failover"
    );
    if let Some(last_503) = last_503 {
        assert!(
            last_503 < failed_over_at + RECOVERY,
            "503s went on until {last_503:?}, more than {RECOVERY:?} after the takeover at \
             {failed_over_at:?}"
        );
    }
    // And a login now works.
    let app = Arc::into_inner(app).expect("the workers are done");
    app.login_ok(&app.mint().code).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_primary_killed_under_load_gives_only_200_and_503() {
    let cluster = Arc::new(Mutex::new(PrivateRedisCluster::start()));
    if embedded() {
        return;
    }
    let url = cluster.lock().unwrap().url();
    let app = spawn_on(url).await;
    let (killer, watcher) = (cluster.clone(), cluster.clone());
    failover_under_load(
        "Redis Cluster",
        app,
        move || {
            let mut cluster = killer.lock().unwrap();
            let primary = cluster.primaries()[0];
            cluster.kill(primary);
        },
        move || {
            watcher
                .lock()
                .unwrap()
                .wait_healthy(Duration::from_secs(30));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_primary_killed_under_load_gives_only_200_and_503() {
    let sentinel = Arc::new(Mutex::new(PrivateRedisSentinel::start()));
    if embedded() {
        return;
    }
    let url = sentinel.lock().unwrap().url();
    let app = spawn_on(url).await;
    let (killer, watcher) = (sentinel.clone(), sentinel.clone());
    let killed = Arc::new(Mutex::new(0));
    let killed_port = killed.clone();
    failover_under_load(
        "Redis Sentinel",
        app,
        move || *killed_port.lock().unwrap() = killer.lock().unwrap().kill_primary(),
        move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let primary = watcher.lock().unwrap().primary();
                if primary.is_some_and(|port| port != *killed.lock().unwrap()) {
                    return;
                }
                assert!(Instant::now() < deadline, "the sentinels did not fail over");
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    )
    .await;
}
