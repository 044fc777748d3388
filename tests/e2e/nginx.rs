//! Forward authentication through a real nginx (Debian's, started on a free
//! port) configured with the files in `deploy/nginx/`, in front of a small
//! upstream that echoes the headers it gets.

use std::{net::SocketAddr, path::PathBuf};

use serde_json::Value;
use wxlogin_gateway::routes::identity;
use wxlogin_testkit::PrivateNginx;
use wxlogin_tests::{TestApp, assert_error};

fn deploy_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/nginx")
        .join(name)
}

/// nginx with the deploy files, `/api/` protected, in front of `upstream`.
fn nginx_in_front(gateway: &str, upstream: SocketAddr) -> PrivateNginx {
    let gateway = gateway.trim_start_matches("http://").to_owned();
    let auth = deploy_file("wxlogin-auth.conf");
    let protect = deploy_file("wxlogin-protect.conf");
    tokio::task::block_in_place(|| {
        PrivateNginx::start(|port, _| {
            format!(
                "  upstream wxlogin {{ server {gateway}; keepalive 8; }}\n\
                 upstream team_api {{ server {upstream}; }}\n\
                 server {{\n\
                   listen 127.0.0.1:{port};\n\
                   include {auth};\n\
                   location /api/ {{\n\
                     include {protect};\n\
                     proxy_pass http://team_api;\n\
                   }}\n\
                 }}",
                auth = auth.display(),
                protect = protect.display(),
            )
        })
    })
}

/// `GET /api/orders` through nginx with `token`.
async fn orders(app: &TestApp, nginx: &PrivateNginx, token: &str) -> reqwest::Response {
    app.http
        .get(nginx.url("/api/orders"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_lets_signed_in_users_through_with_their_identity_and_nothing_forged() {
    let app = TestApp::spawn().await;
    let upstream = wxlogin_tests::echo_upstream!().await;
    let nginx = nginx_in_front(&app.base_url, upstream.addr());
    let minted = app.mint();
    let login = app.login_ok(&minted.code).await;
    let token = login["token"].as_str().unwrap().to_owned();
    let user_id = login["user"]["id"].as_u64().unwrap().to_string();

    // A signed-in call, with forged identity headers of its own.
    let response = app
        .http
        .post(nginx.url("/api/orders?page=2"))
        .bearer_auth(&token)
        .header("X-Wx-Openid", "o-forged")
        .header("X-Wx-User-Id", "1")
        .header("X-Wx-Unionid", "u-forged")
        .body("the order")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", nginx.error_log());
    let echoed: Value = response.json().await.unwrap();
    let headers = &echoed["headers"];
    assert_eq!(headers[identity::OPENID], minted.openid.as_str());
    assert_eq!(headers[identity::USER_ID], user_id.as_str());
    assert_eq!(headers[identity::APPID], minted.appid.as_str());
    assert_eq!(headers[identity::SESSION_ID].as_str().unwrap().len(), 32);
    // No unionid is known: the forged one is dropped, not passed on.
    assert!(headers.get(identity::UNIONID).is_none(), "{headers}");
    // The upstream never sees the token.
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert!(!echoed.to_string().contains(&token));
    assert_eq!(echoed["body"], "the order");
    assert_eq!(upstream.seen().await, 1);

    // No token, or a bad one: wxlogin's own answer, and the upstream is
    // never called.
    let bare = app
        .http
        .get(nginx.url("/api/orders"))
        .header("X-Wx-Openid", minted.openid.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(bare.headers()["www-authenticate"], "Bearer");
    assert_error(bare, 401, "missing_token").await;
    let forged = orders(&app, &nginx, &"x".repeat(43)).await;
    assert_error(forged, 401, "invalid_token").await;
    assert_eq!(upstream.seen().await, 1);

    // After a logout, the same token is refused at the door.
    let logout = app.post_with_token("/v1/logout", &token).await;
    assert_eq!(logout.status(), 204);
    let after = orders(&app, &nginx, &token).await;
    assert_error(after, 401, "invalid_token").await;
    assert_eq!(upstream.seen().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_answers_503_not_500_when_wxlogin_is_down() {
    let app = TestApp::spawn().await;
    let upstream = wxlogin_tests::echo_upstream!().await;
    // A gateway address where nothing listens.
    let (_held, closed) = wxlogin_testkit::refusing_addr();
    let nowhere = closed.to_string();
    let nginx = nginx_in_front(&nowhere, upstream.addr());

    let response = orders(&app, &nginx, &"x".repeat(43)).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_error(response, 503, "service_unavailable").await;
    assert_eq!(upstream.seen().await, 0);
}
