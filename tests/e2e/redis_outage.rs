//! Redis dies and comes back: while it is down every request that needs it
//! fails fast with 503, and the system recovers on its own soon after Redis
//! answers again. The test runs its own redis-server, which it kills.

use std::time::{Duration, Instant};

use wxlogin_testkit::PrivateRedis;
use wxlogin_tests::{Backend, Options, TestApp, assert_error, captured_logs};

fn median_and_max(mut durations: Vec<Duration>) -> (Duration, Duration) {
    durations.sort();
    (
        durations[durations.len() / 2],
        durations[durations.len() - 1],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_fast_and_redis_back_recovers() {
    // Arrange: the whole system on a Redis of the test's own. (Started
    // first: a missing redis-server fails the test on either backend.)
    let mut redis = PrivateRedis::start();
    if Backend::from_env() == Backend::Embedded {
        eprintln!("skipped: the embedded backend has no Redis");
        return;
    }
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await;
    let before = app.login_ok(&app.mint().code).await;
    let token = before["token"].as_str().unwrap().to_owned();
    assert_eq!(app.get_with_token("/v1/me", &token).await.status(), 200);

    // Act: Redis dies.
    redis.stop();
    let mut timings = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let response = if i % 2 == 0 {
            app.get_with_token("/v1/me", &token).await
        } else {
            app.login(&app.mint().code).await
        };
        timings.push(started.elapsed());
        assert_eq!(response.headers()["retry-after"], "1");
        assert_error(response, 503, "service_unavailable").await;
    }

    // Assert: after the first (which finds the outage), answers are quick.
    let first = timings.remove(0);
    let (median, max) = median_and_max(timings);
    println!("Redis down: first answer {first:?}, then median {median:?}, max {max:?} (19 calls)");
    assert!(
        first < Duration::from_secs(2),
        "first answer took {first:?}"
    );
    assert!(
        max < Duration::from_millis(300),
        "answers took up to {max:?}"
    );

    // Readiness follows.
    let started = Instant::now();
    loop {
        let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
        if ready.status() == 503 {
            println!(
                "Redis down: /readyz not ready after {:?}",
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "/readyz still says ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Act: Redis comes back (empty: it kept nothing).
    redis.restart();
    let restarted = Instant::now();
    let recovered = loop {
        let login = app.login(&app.mint().code).await;
        if login.status() == 200 {
            let body: serde_json::Value = login.json().await.unwrap();
            let token = body["token"].as_str().unwrap().to_owned();
            if app.get_with_token("/v1/me", &token).await.status() == 200 {
                break restarted.elapsed();
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(3),
            "no recovery within 3 s of Redis answering"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("Redis back: logins and /v1/me work again after {recovered:?}");
    app.wait_ready().await;
    println!("Redis back: /readyz ready after {:?}", restarted.elapsed());

    // An outage is an operator's business once, not once per request: no
    // ERROR line about it.
    let logs = captured_logs();
    let errors: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains(" ERROR "))
        .filter(|line| line.contains("Redis") || line.contains("session store"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
