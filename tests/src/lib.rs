//! The end-to-end harness: [`TestApp`] starts the whole system the way it
//! runs in production, each part on its own port-0 socket: the WeChat
//! simulator, the user service on a throw-away MySQL database, the auth
//! service on a private Redis key prefix, and the gateway in front. Tests
//! then speak HTTP to the gateway, as a mini-program would.
//!
//! The services are started by `wxlogin_standalone::SystemBuilder`, as the
//! `wxlogin` binary starts them: this harness only says what differs for
//! tests (the settings of [`Options`], the test credentials). Tests that
//! must kill or freeze a service run the same builder with processes
//! ([`processes`]).
//!
//! Every log line of the services is captured (see [`captured_logs`]) so that
//! tests can assert that no secret ever reaches one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter, prelude::*};
use wxlogin_testkit::{
    Proxy, TestDatabase, TestRedisPrefix,
    credential::{DATA_ENCRYPTION_KEYS, DATA_INDEX_KEY, INTERNAL_SECRET, INTERNAL_USER_SECRET},
};

use wxlogin_standalone::{ProcessOptions, Service, Services, SystemBuilder};
use wxlogin_wechat_sim::{MintCode, Minted, RunningSimulator, SimConfig, Simulator};

pub use wxlogin_wechat_sim::{DEFAULT_APPID, DEFAULT_SECRET, Fault};

/// A second mini-program, for the multi-app tests.
pub const OTHER_APPID: &str = "wxfedcba9876543210";
pub const OTHER_SECRET: &str = "sim1secret0123456789abcdef012345";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

static LOGS: OnceLock<Captured> = OnceLock::new();

fn install_log_capture() -> &'static Captured {
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        // Everything our services log, at every level, plus the HTTP and gRPC
        // request spans. The simulator stands in for WeChat and is not ours.
        let filter = EnvFilter::new(
            "info,wxlogin_auth=trace,wxlogin_user=trace,wxlogin_gateway=trace,wxlogin_wechat=trace,\
             wxlogin_common=trace,tower_http=debug,wxlogin_wechat_sim=off",
        );
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(captured.clone());
        drop(
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init(),
        );
        captured
    })
}

/// Every log line the services of this test binary have written so far.
pub fn captured_logs() -> String {
    let captured = install_log_capture();
    let bytes = captured.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Where users and sessions are kept during a test run: MySQL and Redis
/// (production), or SQLite and the in-process store (the single-process
/// setup). `WXLOGIN_TEST_BACKEND=embedded` selects the latter; the test
/// command runs the end-to-end suite once with each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    MysqlRedis,
    Embedded,
}

impl Backend {
    pub fn from_env() -> Backend {
        match std::env::var("WXLOGIN_TEST_BACKEND").as_deref() {
            Ok("embedded") => Backend::Embedded,
            Ok("mysql") | Err(_) => Backend::MysqlRedis,
            Ok(other) => panic!("WXLOGIN_TEST_BACKEND={other:?}: use mysql or embedded"),
        }
    }
}

/// The test's own database: a throw-away MySQL database or SQLite file.
pub enum TestDb {
    Mysql(TestDatabase),
    Sqlite(TestSqlite),
}

impl TestDb {
    pub fn url(&self) -> String {
        match self {
            TestDb::Mysql(db) => db.url(),
            TestDb::Sqlite(db) => db.url(),
        }
    }
}

/// A SQLite file removed (with its WAL files) on drop.
pub struct TestSqlite {
    path: std::path::PathBuf,
}

impl TestSqlite {
    pub fn create() -> TestSqlite {
        let name = wxlogin_testkit::unique_name("wxlogin_test");
        TestSqlite {
            path: std::env::temp_dir().join(format!("{name}.sqlite3")),
        }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TestSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", ".keys"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            drop(std::fs::remove_file(path));
        }
    }
}

/// A budget no test spends, but which still goes through the limiter.
const UNLIMITED: u32 = 100_000;

/// Settings a test may change before the system starts.
#[derive(Debug, Clone)]
pub struct Options {
    pub session_ttl_secs: u64,
    pub session_max_lifetime_secs: u64,
    pub body_limit: usize,
    pub wechat_timeout_ms: u64,
    /// The secret auth sends for the default app (the simulator knows the
    /// right one); a wrong one provokes 40125.
    pub secret: String,
    /// Where auth finds WeChat; `None` is the simulator.
    pub wechat_base: Option<String>,
    /// The user service's `WATERMARK_MAX_AGE_SECS`.
    pub watermark_max_age_secs: u64,
    /// The user service reaches MySQL through a [`Proxy`] the test can cut
    /// ([`TestApp::mysql_proxy`]). Implies MySQL and Redis whatever
    /// `WXLOGIN_TEST_BACKEND` says: an outage of MySQL is what it tests.
    pub mysql_proxy: bool,
    /// The MySQL server of the test's database (e.g. a
    /// `wxlogin_testkit::PrivateMariadb`); `None`: `DATABASE_URL` or the
    /// local one. Implies MySQL and Redis, as `mysql_proxy` does.
    pub mysql_server: Option<String>,
    /// Auth's `RATE_LIMIT_*` budgets (per minute; 0 for none). The default
    /// is far above what any test spends (some log in 50 times at once),
    /// so that only the tests of the budgets meet them.
    pub login_per_ip: u32,
    pub login_per_app: u32,
    pub check_session_per_user: u32,
    pub phone_per_user: u32,
    /// The gateway's `TRUSTED_PROXIES`.
    pub trusted_proxies: String,
    /// The gateway's `PROXY_ROUTES` and `PROXY_TIMEOUT_MS`.
    pub proxy_routes: String,
    pub proxy_timeout_ms: u64,
    /// The Redis server of the test's key prefix (e.g. a
    /// `wxlogin_testkit::PrivateRedis`); `None`: `REDIS_URL` or the local one.
    pub redis_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            session_ttl_secs: 3600,
            session_max_lifetime_secs: 86400,
            body_limit: 64 * 1024,
            wechat_timeout_ms: 5000,
            secret: DEFAULT_SECRET.to_owned(),
            wechat_base: None,
            watermark_max_age_secs: 3600,
            mysql_proxy: false,
            mysql_server: None,
            login_per_ip: UNLIMITED,
            login_per_app: UNLIMITED,
            check_session_per_user: UNLIMITED,
            phone_per_user: UNLIMITED,
            trusted_proxies: String::new(),
            proxy_routes: String::new(),
            proxy_timeout_ms: 30_000,
            redis_url: None,
        }
    }
}

/// The whole system, started for one test.
pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    pub sim: RunningSimulator,
    pub backend: Backend,
    pub db: TestDb,
    /// The test's Redis key prefix; `None` with the in-process store.
    pub redis: Option<TestRedisPrefix>,
    pub auth_addr: SocketAddr,
    pub user_addr: SocketAddr,
    /// In front of MySQL when [`Options::mysql_proxy`] asked for it.
    pub mysql_proxy: Option<Proxy>,
    /// What started the services, to start replicas of them.
    builder: SystemBuilder<'static>,
    services: Services,
}

/// Another auth service and gateway in front of the same simulator,
/// database, Redis prefix and user service: a second replica of the
/// stateless services, as behind a load balancer.
pub struct Replica {
    pub base_url: String,
    pub auth_addr: SocketAddr,
    http: reqwest::Client,
    services: Services,
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn login(&self, code: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/login"))
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await
            .expect("POST")
    }

    pub async fn stop(mut self) {
        self.services
            .stop_all()
            .await
            .expect("the replica stops cleanly");
    }
}

/// The settings every test deployment shares: its internal credentials
/// and data keys, those of `wxlogin_testkit::credential`.
pub fn test_credentials() -> [(&'static str, &'static str); 4] {
    [
        ("INTERNAL_SECRET", INTERNAL_SECRET),
        ("INTERNAL_USER_SECRET", INTERNAL_USER_SECRET),
        ("DATA_ENCRYPTION_KEYS", DATA_ENCRYPTION_KEYS),
        ("DATA_INDEX_KEY", DATA_INDEX_KEY),
    ]
}

/// How the tests run the services as processes: the workspace's binaries,
/// on free ports below the ephemeral range, their stderr the test's.
pub fn processes() -> ProcessOptions {
    ProcessOptions {
        binary: Arc::new(wxlogin_testkit::binary),
        free_port: wxlogin_testkit::free_port,
        logs: None,
    }
}

/// What `options` set, as the services' settings.
fn settings(options: &Options, sim_base: &str) -> Vec<(&'static str, String)> {
    let mut settings: Vec<(&'static str, String)> = test_credentials()
        .into_iter()
        .map(|(name, value)| (name, value.to_owned()))
        .collect();
    settings.extend([
        ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("DB_MAX_CONNECTIONS", "8".to_owned()),
        (
            "WATERMARK_MAX_AGE_SECS",
            options.watermark_max_age_secs.to_string(),
        ),
        (
            "WECHAT_API_BASE",
            options
                .wechat_base
                .clone()
                .unwrap_or_else(|| sim_base.to_owned()),
        ),
        ("WECHAT_TIMEOUT_MS", options.wechat_timeout_ms.to_string()),
        ("WECHAT_APPID", DEFAULT_APPID.to_owned()),
        ("WECHAT_SECRET", options.secret.clone()),
        ("WECHAT_APPS", format!("{OTHER_APPID}:{OTHER_SECRET}")),
        ("SESSION_TTL_SECS", options.session_ttl_secs.to_string()),
        (
            "SESSION_MAX_LIFETIME_SECS",
            options.session_max_lifetime_secs.to_string(),
        ),
        ("RATE_LIMIT_LOGIN_PER_IP", options.login_per_ip.to_string()),
        (
            "RATE_LIMIT_LOGIN_PER_APP",
            options.login_per_app.to_string(),
        ),
        (
            "RATE_LIMIT_CHECK_SESSION_PER_USER",
            options.check_session_per_user.to_string(),
        ),
        (
            "RATE_LIMIT_PHONE_PER_USER",
            options.phone_per_user.to_string(),
        ),
        ("BODY_LIMIT_BYTES", options.body_limit.to_string()),
        ("TRUSTED_PROXIES", options.trusted_proxies.clone()),
        ("PROXY_ROUTES", options.proxy_routes.clone()),
        ("PROXY_TIMEOUT_MS", options.proxy_timeout_ms.to_string()),
    ]);
    settings
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        install_log_capture();
        let sim = Simulator::new(SimConfig {
            apps: vec![
                (DEFAULT_APPID.to_owned(), DEFAULT_SECRET.to_owned()),
                (OTHER_APPID.to_owned(), OTHER_SECRET.to_owned()),
            ],
            ..SimConfig::default()
        })
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start the WeChat simulator");
        let backend = if options.mysql_proxy || options.mysql_server.is_some() {
            Backend::MysqlRedis
        } else {
            Backend::from_env()
        };
        let (db, redis) = match backend {
            Backend::MysqlRedis => (
                TestDb::Mysql(match &options.mysql_server {
                    Some(server) => TestDatabase::create_on(server).await,
                    None => TestDatabase::create().await,
                }),
                Some(match &options.redis_url {
                    Some(url) => TestRedisPrefix::on(url),
                    None => TestRedisPrefix::new(),
                }),
            ),
            Backend::Embedded => (TestDb::Sqlite(TestSqlite::create()), None),
        };
        let (redis_url, redis_prefix) = match &redis {
            Some(redis) => (redis.url().to_owned(), redis.prefix().to_owned()),
            None => (wxlogin_auth::store::MEMORY_URL.to_owned(), String::new()),
        };
        let (mysql_proxy, user_database_url) = if options.mysql_proxy {
            let (proxy, url) = Proxy::in_front_of(&db.url()).await;
            (Some(proxy), url)
        } else {
            (None, db.url())
        };

        let builder = SystemBuilder::new()
            .expect("the system's settings")
            .stores(&user_database_url, &redis_url, &redis_prefix)
            .set_all(settings(&options, &sim.base_url()));
        let services = builder.start().await.expect("start the services");
        let address = |service| services.addr(service, 0).expect("it runs");
        let app = TestApp {
            base_url: services.gateway_url().expect("the gateway runs"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            sim,
            backend,
            db,
            redis,
            auth_addr: address(Service::Auth),
            user_addr: address(Service::User),
            mysql_proxy,
            builder,
            services,
        };
        app.wait_ready().await;
        app
    }

    /// Starts another auth service and gateway sharing this app's
    /// simulator, Redis prefix and user service (so its database). Only
    /// with Redis: the in-process store is one process's.
    pub async fn spawn_replica(&self) -> Replica {
        assert!(
            self.redis.is_some(),
            "replicas share sessions through Redis; the embedded backend has none"
        );
        let services = self
            .builder
            .clone()
            .peer(Service::User, self.user_addr)
            .start()
            .await
            .expect("start the replica's auth service and gateway");
        Replica {
            base_url: services.gateway_url().expect("the replica's gateway"),
            auth_addr: services.addr(Service::Auth, 0).expect("its auth"),
            http: self.http.clone(),
            services,
        }
    }

    /// Waits until `/readyz` says every service is up (health probes run
    /// in the background of each service).
    pub async fn wait_ready(&self) {
        for _ in 0..100 {
            if let Ok(response) = self.http.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the system did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A fresh wx.login code for a new user of the default app.
    pub fn mint(&self) -> Minted {
        self.sim.sim.mint_code(MintCode::default())
    }

    /// A fresh wx.login code for the given identity.
    pub fn mint_for(&self, request: MintCode) -> Minted {
        self.sim.sim.mint_code(request)
    }

    pub fn simulator(&self) -> &Simulator {
        &self.sim.sim
    }

    pub async fn login(&self, code: &str) -> reqwest::Response {
        self.post_json("/v1/login", &serde_json::json!({ "code": code }))
            .await
    }

    /// Logs in with a fresh code and returns the body of the 200 answer.
    pub async fn login_ok(&self, code: &str) -> serde_json::Value {
        let response = self.login(code).await;
        let status = response.status();
        let body = response.text().await.expect("login body");
        assert_eq!(status, 200, "login failed: {body}");
        serde_json::from_str(&body).expect("login JSON")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    /// A `method` request with a bearer token and a JSON body.
    pub async fn json_with_token(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("POST")
    }

    /// A connection to the test's own database.
    pub async fn database(&self) -> sea_orm::DatabaseConnection {
        sea_orm::Database::connect(self.db.url())
            .await
            .expect("connect to the test database")
    }

    /// The user's recorded logins (`login_count`), and whether the latest
    /// (`last_login_at`) is later than the registration.
    pub async fn recorded_logins(&self, openid: &str) -> (i64, bool) {
        use sea_orm::{ConnectionTrait, Statement};
        let db = self.database().await;
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                "SELECT CAST(login_count AS SIGNED) AS n, \
                 CASE WHEN last_login_at > created_at THEN 1 ELSE 0 END AS later \
                 FROM users WHERE openid = ?",
                [openid.into()],
            ))
            .await
            .expect("read the user's logins")
            .expect("the user has a row");
        let later: i64 = row.try_get("", "later").expect("later");
        (row.try_get("", "n").expect("login_count"), later == 1)
    }

    /// [`recorded_logins`](Self::recorded_logins) once it counts `count`
    /// logins, or after 10 s.
    pub async fn wait_for_recorded_logins(&self, openid: &str, count: i64) -> (i64, bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let recorded = self.recorded_logins(openid).await;
            if recorded.0 >= count || std::time::Instant::now() > deadline {
                return recorded;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the user service (and waits until it is gone).
    pub async fn stop_user_service(&mut self) {
        self.services
            .stop(Service::User, 0)
            .await
            .expect("the user service stops cleanly");
    }

    /// Starts a user service again where the stopped one listened, with the
    /// same configuration.
    pub async fn restart_user_service(&mut self) {
        self.services
            .start(Service::User, 0)
            .await
            .expect("restart the user service");
    }

    /// Stops everything; dropping the app does the same less politely.
    pub async fn stop(mut self) {
        self.services
            .stop_all()
            .await
            .expect("the services stop cleanly");
    }
}

/// The team's own API, for the tests of what wxlogin puts in front of it:
/// the `wxlogin-echo-upstream` binary (`tests/src/bin/echo-upstream.rs`) as
/// a process of its own, stopped when this is dropped. Start it with
/// [`echo_upstream!`].
pub struct EchoUpstream {
    addr: SocketAddr,
    _process: tokio::process::Child,
}

/// Starts the echo upstream process (only an integration test of this
/// package knows where its binary is).
#[macro_export]
macro_rules! echo_upstream {
    () => {
        $crate::EchoUpstream::start(env!("CARGO_BIN_EXE_wxlogin-echo-upstream"))
    };
}

impl EchoUpstream {
    pub async fn start(binary: &str) -> EchoUpstream {
        use tokio::io::AsyncBufReadExt;
        let mut process = tokio::process::Command::new(binary)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the echo upstream");
        let stdout = process.stdout.take().expect("its stdout");
        let mut line = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .expect("its address");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("the echo upstream said {line:?}"));
        EchoUpstream {
            addr,
            _process: process,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests reached it (this question aside).
    pub async fn seen(&self) -> u64 {
        reqwest::get(format!("http://{}/_echo/seen", self.addr))
            .await
            .expect("ask the echo upstream")
            .text()
            .await
            .expect("its count")
            .parse()
            .expect("a number")
    }
}

/// Asserts that `response` is an error with this status and code, and
/// returns its message.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status, "status for expected {code}");
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message is a string");
    assert!(!message.is_empty());
    message.to_owned()
}
