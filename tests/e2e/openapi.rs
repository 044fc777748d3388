use serde_json::Value;
use wxlogin_tests::TestApp;

/// The document the gateway serves is the one in the repository (which the
/// gateway's unit test compares with the code), as JSON.
#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = TestApp::spawn().await;

    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/gateway/openapi.json"
    ))
    .unwrap();
    let committed: Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(served, committed);
    assert_eq!(served["openapi"], "3.1.0");
    for path in ["/v1/login", "/v1/me", "/v1/verify", "/v1/me/phone"] {
        assert!(served["paths"][path].is_object(), "{path} is documented");
    }
}
