//! MySQL going away and coming back, seen from the gateway: new users get a
//! fast 503, returning users still log in from their Redis copy, `/readyz`
//! follows within 2 s, and everything works again soon after MySQL returns.

use std::time::{Duration, Instant};

use serde_json::Value;
use wxlogin_testkit::{PrivateMariadb, Proxy};
use wxlogin_tests::{Options, TestApp, assert_error};
use wxlogin_wechat_sim::MintCode;

/// Polls `/readyz` until its status is `status`, for at most `limit`;
/// answers how long it took and the last body.
async fn readyz_becomes(app: &TestApp, status: u16, limit: Duration) -> (Duration, Value) {
    let start = Instant::now();
    loop {
        let response = app.http.get(app.url("/readyz")).send().await.unwrap();
        let seen = response.status();
        let body: Value = response.json().await.unwrap();
        if seen == status || start.elapsed() > limit {
            return (start.elapsed(), body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a test takes MySQL away and brings it back.
enum Outage<'a> {
    /// A proxy in front of the server refuses and drops every connection.
    Proxy(&'a Proxy),
    /// The server itself is killed, then started again.
    Server(&'a PrivateMariadb),
}

impl Outage<'_> {
    async fn begin(&self) {
        match self {
            Outage::Proxy(proxy) => proxy.cut().await,
            Outage::Server(server) => tokio::task::block_in_place(|| server.stop()),
        }
    }

    fn end(&self) {
        match self {
            Outage::Proxy(proxy) => proxy.restore(),
            Outage::Server(server) => tokio::task::block_in_place(|| server.restart()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_outage_is_a_fast_503_for_new_users_and_none_for_returning_ones() {
    let app = TestApp::spawn_with(Options {
        mysql_proxy: true,
        ..Options::default()
    })
    .await;
    let proxy = app.mysql_proxy.as_ref().unwrap();
    seen_from_the_gateway(&app, Outage::Proxy(proxy)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_mysql_server_is_the_same_outage() {
    let server = tokio::task::block_in_place(PrivateMariadb::start);
    let app = TestApp::spawn_with(Options {
        mysql_server: Some(server.server_url()),
        ..Options::default()
    })
    .await;
    seen_from_the_gateway(&app, Outage::Server(&server)).await;
}

async fn seen_from_the_gateway(app: &TestApp, outage: Outage<'_>) {
    // Arrange: a registered user, whose copy is in Redis.
    let first = app.mint();
    let registered = app.login_ok(&first.code).await;
    let returning = || {
        app.mint_for(MintCode {
            openid: Some(first.openid.clone()),
            ..MintCode::default()
        })
    };

    // Act: MySQL goes away.
    outage.begin().await;
    let cut_at = Instant::now();
    let (detected, body) = readyz_becomes(app, 503, Duration::from_secs(5)).await;

    // Assert: /readyz shows it within 2 s.
    println!(
        "/readyz 503 {} ms after MySQL went away",
        detected.as_millis()
    );
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["checks"]["user"], "not_serving", "{body}");
    assert_eq!(body["checks"]["auth"], "ok", "{body}");
    assert!(detected < Duration::from_secs(2), "{detected:?}");

    // Act + Assert: new users get a 503 at once.
    let mut took = Vec::new();
    for _ in 0..20 {
        let minted = app.mint();
        let start = Instant::now();
        let response = app.login(&minted.code).await;
        took.push(start.elapsed());
        assert_eq!(response.headers()["retry-after"], "1");
        assert_error(response, 503, "service_unavailable").await;
    }
    took.sort();
    println!(
        "login 503 while down: median {:?}, max {:?} over {} logins",
        took[took.len() / 2],
        took[took.len() - 1],
        took.len()
    );
    assert!(took[took.len() - 1] < Duration::from_secs(1), "{took:?}");

    // The returning user logs in, and the new session works.
    let start = Instant::now();
    let again = app.login_ok(&returning().code).await;
    println!("returning login while down: {:?}", start.elapsed());
    assert_eq!(again["created"], false);
    assert_eq!(again["user"], registered["user"]);
    let me = app
        .get_with_token("/v1/me", again["token"].as_str().unwrap())
        .await;
    assert_eq!(me.status(), 200);
    println!("MySQL away for {:?}", cut_at.elapsed());

    // Act: MySQL is back.
    outage.end();
    let back_at = Instant::now();
    let mut recovered = None;
    while back_at.elapsed() < Duration::from_secs(10) {
        let response = app.login(&app.mint().code).await;
        if response.status() == 200 {
            recovered = Some(back_at.elapsed());
            break;
        }
        assert_error(response, 503, "service_unavailable").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert: within a couple of seconds, all is well again.
    let recovered = recovered.expect("logins work again");
    println!(
        "new users log in {} ms after MySQL came back",
        recovered.as_millis()
    );
    assert!(recovered < Duration::from_secs(3), "{recovered:?}");
    let (_, body) = readyz_becomes(app, 200, Duration::from_secs(2)).await;
    assert_eq!(body["status"], "ready", "{body}");
    let later = app.login_ok(&returning().code).await;
    assert_eq!(later["user"]["id"], registered["user"]["id"]);
    // The login made while MySQL was down is recorded too, now that it is
    // back (it waited in Redis): the registration, that one and the last.
    assert_eq!(
        app.wait_for_recorded_logins(&first.openid, 3).await,
        (3, true)
    );
}
