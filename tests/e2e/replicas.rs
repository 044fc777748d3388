
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
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let slot_key = |code: &str| {
        let secrets = wxlogin_auth::sealed_outcome::CodeSecrets::derive(
            wxlogin_tests::DEFAULT_APPID,
            code,
        );
        format!(
            "{}login:{}:{}",
            redis.prefix(),
            wxlogin_tests::DEFAULT_APPID,
            secrets.slot()
        )
    };

    // An instance claimed the code and died: once its claim expires the
    // code is exchanged here.
    let minted = app.mint();
    let _: () = redis::cmd("SET")
        .arg(slot_key(&minted.code))
        .arg("pending:crashed")
        .arg("PX")
        .arg(500)
        .query_async(&mut conn)
        .await
        .unwrap();
    let body = app.login_ok(&minted.code).await;
    assert_eq!(body["user"]["openid"], minted.openid.as_str());

    // A claim that never ends (a wedged instance): 503, within the bound.
    let wedged = app.mint();
    let _: () = redis::cmd("SET")
        .arg(slot_key(&wedged.code))
        .arg("pending:wedged")
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let response = app.login(&wedged.code).await;
    let waited = started.elapsed();
    assert_eq!(response.headers()["retry-after"], "1");
    assert_error(response, 503, "service_unavailable").await;
    println!("a wedged claim answered 503 after {waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(app.simulator().code2session_calls(), 1);
}
