use sha2::{Digest, Sha256};
use wxlogin_tests::{TestApp, captured_logs};

#[tokio::test]
async fn no_session_key_or_token_leaks_into_responses_logs_or_redis_keys() {
    // Arrange
    let app = TestApp::spawn().await;
    let minted = app.mint();
    let request_id = format!("test-{}", uuid::Uuid::new_v4());

    // Act: a whole session, with errors on the way.
    let login = app
        .http
        .post(app.url("/v1/login"))
        .header("x-request-id", &request_id)
        .json(&serde_json::json!({ "code": minted.code }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.headers()["x-request-id"], request_id.as_str());
    let login_text = login.text().await.unwrap();
    let login: serde_json::Value = serde_json::from_str(&login_text).unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let me_text = app
        .get_with_token("/v1/me", &token)
        .await
        .text()
        .await
        .unwrap();
    let used_text = app.login(&minted.code).await.text().await.unwrap();
    let redis = match &app.redis {
        Some(redis) => Some(redis.dump().await),
        None => None,
    };
    let logout = app.post_with_token("/v1/logout", &token).await;
    assert_eq!(logout.status(), 204);

    // Assert: responses
    for text in [&login_text, &me_text, &used_text] {
        assert!(
            !text.contains(&minted.session_key),
            "session_key in a response: {text}"
        );
        assert!(!text.contains("session_key"), "{text}");
    }
    // Redis (when this run uses it) holds the digest of the token, never
    // the token; the session_key is kept server-side, under its own key.
    if let Some(redis) = redis {
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        assert!(
            redis
                .iter()
                .any(|(key, _)| key.contains(":session:") && key.ends_with(&digest)),
            "{redis:?}"
        );
        for (key, value) in &redis {
            assert!(!key.contains(&token), "raw token in a Redis key");
            assert!(
                !value.as_deref().unwrap_or("").contains(&token),
                "raw token in a Redis value"
            );
        }
        let kept = redis.iter().any(|(key, value)| {
            key.contains(&minted.openid) && value.as_deref() == Some(minted.session_key.as_str())
        });
        assert!(kept, "{redis:?}");
    }
    // Logs: the capture works (the request id reached the auth service's
    // span), and holds neither secret.
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|line| line.contains(&request_id) && line.contains("service=\"auth\"")),
        "the request id did not follow the request into auth"
    );
    assert!(logs.contains(&minted.openid), "the capture saw this login");
    assert!(
        !logs.contains(&minted.session_key),
        "session_key in a log line"
    );
    assert!(!logs.contains(&token), "token in a log line");
    assert!(
        !logs.contains(wxlogin_tests::DEFAULT_SECRET),
        "app secret in a log line"
    );
}
