//! The user service on the embedded SQLite backend of the single-process
//! setup: the same migrations and the same upsert guarantees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures::future::join_all;
use wxlogin_proto::user::v1::{UpsertUserRequest, user_service_client::UserServiceClient};
use wxlogin_testkit::credential::{Credential, channel};
use wxlogin_user::Application;

#[tokio::test]
async fn upserts_on_sqlite_keep_their_guarantees() {
    drop(tracing_subscriber::fmt().with_test_writer().try_init());
    let path = std::env::temp_dir().join(format!("wxlogin-user-{}.sqlite3", std::process::id()));
    let config = support::config(
        format!("sqlite://{}", path.display()),
        8,
        Duration::from_secs(5),
    );
    let app = Application::build(config).await.unwrap();
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let client = UserServiceClient::new(channel(addr, Credential::internal()));
    let upsert = |unionid: Option<&str>| {
        let mut client = client.clone();
        let request = UpsertUserRequest {
            appid: "wxa".into(),
            openid: "o_sqlite".into(),
            unionid: unionid.map(str::to_owned),
            cached_copy: Vec::new(),
        };
        async move { client.upsert_user(request).await.unwrap().into_inner() }
    };

    let results = join_all((0..20).map(|_| upsert(None))).await;
    assert_eq!(results.iter().filter(|r| r.created).count(), 1);
    let id = results[0].user.as_ref().unwrap().id;
    assert!(results.iter().all(|r| r.user.as_ref().unwrap().id == id));

    let backfilled = upsert(Some("u1")).await;
    assert!(!backfilled.created);
    assert_eq!(backfilled.user.unwrap().unionid.as_deref(), Some("u1"));
    let kept = upsert(None).await;
    assert_eq!(kept.user.unwrap().unionid.as_deref(), Some("u1"));

    for suffix in ["", "-wal", "-shm"] {
        drop(std::fs::remove_file(format!("{}{suffix}", path.display())));
    }
}
