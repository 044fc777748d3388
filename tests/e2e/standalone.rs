//! The single-process `wxlogin` binary's wiring: with nothing configured it
//! simulates WeChat and keeps users in SQLite and sessions in memory; given
//! MySQL and Redis URLs it uses them.

use std::collections::HashMap;

use serde_json::{Value, json};
use wxlogin_standalone::{System, banner};
use wxlogin_testkit::{TestDatabase, TestRedisPrefix};
use wxlogin_tests::TestSqlite;

async fn start(env: HashMap<&'static str, String>) -> (System, reqwest::Client) {
    let source = move |name: &str| env.get(name).cloned();
    let system = System::build_from(&source)
        .await
        .expect("the system starts");
    (system, reqwest::Client::new())
}

/// The system with nothing configured but free ports and `sqlite`: SQLite,
/// in-process sessions, the simulator.
async fn start_embedded(sqlite: &TestSqlite) -> (System, reqwest::Client) {
    start(HashMap::from([
        ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("SIM_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", sqlite.url()),
    ]))
    .await
}

/// A fresh code from the simulator's control API.
async fn mint(http: &reqwest::Client, sim: std::net::SocketAddr) -> Value {
    mint_for(http, sim, json!({})).await
}

/// A code for `request` (a `MintCode`) from the simulator's control API.
async fn mint_for(http: &reqwest::Client, sim: std::net::SocketAddr, request: Value) -> Value {
    http.post(format!("http://{sim}/sim/codes"))
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The answer of a login with `minted`'s code.
async fn log_in(http: &reqwest::Client, gateway: std::net::SocketAddr, minted: &Value) -> Value {
    http.post(format!("http://{gateway}/v1/login"))
        .json(&json!({ "code": minted["code"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Mints a code at the simulator's control API and logs in with it.
async fn login_through(
    http: &reqwest::Client,
    system_banner: &str,
    sim: std::net::SocketAddr,
    gateway: std::net::SocketAddr,
) -> Value {
    assert!(
        system_banner.contains(&format!("http://{gateway}")),
        "{system_banner}"
    );
    assert!(system_banner.contains("SIMULATED"), "{system_banner}");
    let minted = mint(http, sim).await;
    let login = log_in(http, gateway, &minted).await;
    assert_eq!(login["user"]["openid"], minted["openid"], "{login}");
    let me = http
        .get(format!("http://{gateway}/v1/me"))
        .bearer_auth(login["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    login
}

#[tokio::test]
async fn with_nothing_configured_it_runs_on_sqlite_memory_and_the_simulator() {
    let sqlite = TestSqlite::create();
    let (system, http) = start_embedded(&sqlite).await;
    let addresses = system.addresses.clone();
    assert_eq!(addresses.sessions, "memory://");
    assert!(addresses.database.starts_with("sqlite://"));
    let text = banner(&addresses);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(system.run_until_stopped(async {
        drop(stopped.await);
    }));

    login_through(
        &http,
        &text,
        addresses.simulator.unwrap(),
        addresses.gateway,
    )
    .await;

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert!(sqlite.path().exists(), "the users live in the SQLite file");
}

#[tokio::test]
async fn given_mysql_and_redis_it_uses_them() {
    let db = TestDatabase::create().await;
    let redis = TestRedisPrefix::new();
    let (system, http) = start(HashMap::from([
        ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("SIM_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url()),
        (
            "DATA_ENCRYPTION_KEYS",
            wxlogin_testkit::credential::DATA_ENCRYPTION_KEYS.to_owned(),
        ),
        (
            "DATA_INDEX_KEY",
            wxlogin_testkit::credential::DATA_INDEX_KEY.to_owned(),
        ),
        ("REDIS_URL", redis.url().to_owned()),
        ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
    ]))
    .await;
    let addresses = system.addresses.clone();
    let text = banner(&addresses);
    tokio::spawn(system.run_until_stopped(std::future::pending()));

    let login = login_through(
        &http,
        &text,
        addresses.simulator.unwrap(),
        addresses.gateway,
    )
    .await;

    let keys = redis.dump().await;
    assert!(
        keys.iter().any(|(key, _)| key.contains(":session:")),
        "{keys:?}"
    );
    let conn = sea_orm::Database::connect(db.url()).await.unwrap();
    use sea_orm::{ConnectionTrait, Statement};
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT COUNT(*) AS n FROM users WHERE openid = ?",
            [login["user"]["openid"].as_str().unwrap().into()],
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);
}

#[tokio::test]
async fn stopping_lets_a_login_in_flight_finish_first() {
    // Arrange: WeChat answers after 600 ms, so the login is still at WeChat
    // when the process is asked to stop.
    let sqlite = TestSqlite::create();
    let (system, http) = start_embedded(&sqlite).await;
    let addresses = system.addresses.clone();
    let sim = addresses.simulator.expect("the simulator runs");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(system.run_until_stopped(async {
        drop(stopped.await);
    }));
    let minted = mint(&http, sim).await;
    let latency = http
        .put(format!("http://{sim}/sim/latency"))
        .json(&json!({ "ms": 600 }))
        .send()
        .await
        .unwrap();
    assert!(latency.status().is_success());

    // Act: log in, and ask the process to stop while WeChat is answering.
    let login = tokio::spawn({
        let (http, gateway) = (http.clone(), addresses.gateway);
        async move {
            http.post(format!("http://{gateway}/v1/login"))
                .json(&json!({ "code": minted["code"] }))
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.send(()).unwrap();

    // Assert: the login got its session and its user; then everything stopped.
    let login = login.await.unwrap();
    let status = login.status();
    let body: Value = login.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["user"]["id"].as_u64().is_some(), "{body}");
    running.await.unwrap().expect("a clean stop");
}

/// Logs `openid` in (minting its code at the simulator) and answers the
/// login's token.
async fn login_as(
    http: &reqwest::Client,
    addresses: &wxlogin_standalone::Addresses,
    openid: &str,
) -> String {
    let sim = addresses.simulator.unwrap();
    let minted = mint_for(http, sim, json!({ "openid": openid })).await;
    let login = log_in(http, addresses.gateway, &minted).await;
    login["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn with_no_keys_configured_it_makes_a_private_key_file_once_and_reuses_it() {
    // Arrange: a first start stores a nickname (sealed with the keys it made).
    let sqlite = TestSqlite::create();
    let mut key_file = sqlite.path().as_os_str().to_owned();
    key_file.push(".keys");
    let (system, http) = start_embedded(&sqlite).await;
    let first = system.addresses.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(system.run_until_stopped(async {
        drop(stopped.await);
    }));
    let token = login_as(&http, &first, "o_keyfile_user").await;
    let stored = http
        .put(format!("http://{}/v1/me/profile", first.gateway))
        .bearer_auth(&token)
        .json(&json!({ "nickname": "Kept-Across-Restarts" }))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let made = std::fs::read_to_string(&key_file).expect("the key file");

    // Act: the second start.
    let (system, http) = start_embedded(&sqlite).await;
    let second = system.addresses.clone();
    tokio::spawn(system.run_until_stopped(std::future::pending()));
    let token = login_as(&http, &second, "o_keyfile_user").await;
    let me: Value = http
        .get(format!("http://{}/v1/me", second.gateway))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Assert
    assert_eq!(me["user"]["nickname"], "Kept-Across-Restarts", "{me}");
    assert!(first.keys.starts_with("created "), "{}", first.keys);
    assert!(second.keys.starts_with("read from "), "{}", second.keys);
    assert!(banner(&second).contains(&second.keys));
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        made,
        "unchanged"
    );
    assert!(made.contains("DATA_ENCRYPTION_KEYS=local1:"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = made
        .lines()
        .find(|line| line.starts_with("DATA_INDEX_KEY="))
        .unwrap();
    let key = &key["DATA_INDEX_KEY=".len()..];
    assert!(!banner(&second).contains(key) && !wxlogin_tests::captured_logs().contains(key));
}

#[tokio::test]
async fn on_mysql_it_refuses_to_start_without_keys() {
    let db = TestDatabase::create().await;
    let source = move |name: &str| match name {
        "GATEWAY_ADDR" | "SIM_ADDR" => Some("127.0.0.1:0".to_owned()),
        "DATABASE_URL" => Some(db.url()),
        _ => None,
    };

    let error = System::build_from(&source).await.err().expect("it refuses");

    assert!(
        error.to_string().contains("DATA_ENCRYPTION_KEYS"),
        "{error}"
    );
}
