//! Starting the user service for a test: a fresh database, the real server
//! on an ephemeral port, and a client connected to it.

#![allow(dead_code)] // Each test binary uses a different part of this.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Mutex, oneshot},
    task::{AbortHandle, JoinHandle},
};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use wxlogin_common::SecretString;
use wxlogin_proto::user::v1::{
    GetUserRequest, OpenId, UpsertUserRequest, get_user_request::Key,
    user_service_client::UserServiceClient,
};
use wxlogin_testkit::TestDatabase;
use wxlogin_testkit::credential::{
    Authed, Credential, INTERNAL_SECRET, INTERNAL_USER_SECRET, channel,
};
use wxlogin_user::{Application, Config};

pub const APPID: &str = "wx-test-app";

/// The user service running against its own throw-away database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: UserServiceClient<Authed>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), wxlogin_user::Error>>,
    pub database: TestDatabase,
}

impl TestApp {
    /// Starts the service on a fresh database.
    pub async fn spawn() -> TestApp {
        let database = TestDatabase::create().await;
        let url = database.url();
        TestApp::spawn_with(database, url, Duration::from_secs(5)).await
    }

    /// Starts the service on `database`, reaching it through `url`.
    pub async fn spawn_with(database: TestDatabase, url: String, timeout: Duration) -> TestApp {
        let config = Config {
            listen_addr: "127.0.0.1:0".parse().expect("a socket address"),
            database_url: SecretString::from(url),
            db_max_connections: 16,
            db_connect_timeout: timeout,
            auth_url: "http://127.0.0.1:9".into(),
            watermark_max_age: None,
            redis_url: None,
            redis_key_prefix: String::new(),
            internal_secret: SecretString::from(INTERNAL_SECRET),
            internal_user_secret: SecretString::from(INTERNAL_USER_SECRET),
            upstream_connections: 1,
        };
        let app = Application::build(config)
            .await
            .expect("the user service builds");
        let addr = app.local_addr();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            drop(stopped.await);
        }));
        let client = UserServiceClient::new(channel(addr, Credential::internal()));
        TestApp {
            addr,
            client,
            shutdown: Some(shutdown),
            server,
            database,
        }
    }

    /// Starts the service on a fresh database that it reaches through a
    /// proxy the test can cut.
    pub async fn behind_proxy(timeout: Duration) -> (TestApp, Proxy) {
        let database = TestDatabase::create().await;
        let proxy = Proxy::start(upstream_of(&database.url())).await;
        let url = via(&database.url(), proxy.addr);
        (TestApp::spawn_with(database, url, timeout).await, proxy)
    }

    /// A client of the gRPC health service on the same server.
    pub async fn health(&self) -> HealthClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect()
            .await
            .expect("connect to the health service");
        HealthClient::new(channel)
    }

    /// Asks the server to stop and waits for it.
    pub async fn stop(mut self) -> Result<(), wxlogin_user::Error> {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may have stopped already.
            let _ = shutdown.send(());
        }
        (&mut self.server).await.expect("the server task ends")
    }

    pub async fn upsert(
        &self,
        openid: &str,
        unionid: Option<&str>,
    ) -> Result<wxlogin_proto::user::v1::UpsertUserResponse, tonic::Status> {
        self.client
            .clone()
            .upsert_user(UpsertUserRequest {
                appid: APPID.into(),
                openid: openid.into(),
                unionid: unionid.map(str::to_owned),
                cached: None,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get_by_id(&self, id: u64) -> Result<wxlogin_proto::user::v1::User, tonic::Status> {
        self.get(Key::Id(id)).await
    }

    pub async fn get_by_openid(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<wxlogin_proto::user::v1::User, tonic::Status> {
        self.get(Key::Openid(OpenId {
            appid: appid.into(),
            openid: openid.into(),
        }))
        .await
    }

    async fn get(&self, key: Key) -> Result<wxlogin_proto::user::v1::User, tonic::Status> {
        let response = self
            .client
            .clone()
            .get_user(GetUserRequest { key: Some(key) })
            .await?
            .into_inner();
        Ok(response.user.expect("GetUser answers with a user"))
    }

    /// A connection of the test's own to the service's database.
    pub async fn sql(&self) -> DatabaseConnection {
        Database::connect(self.database.url())
            .await
            .expect("connect to the test database")
    }

    /// One number from `sql` with `values` bound.
    pub async fn count(&self, sql: &str, values: Vec<sea_orm::Value>) -> i64 {
        let db = self.sql().await;
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::MySql,
                sql,
                values,
            ))
            .await
            .expect("the query runs")
            .expect("the query returns a row");
        let n: i64 = row.try_get_by_index(0).expect("a number");
        drop(db.close().await);
        n
    }
}

/// A TCP proxy in front of the MySQL server, which a test can cut to make
/// the database unreachable for the service.
pub struct Proxy {
    pub addr: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            drop(tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await);
                        }
                    });
                    tasks.lock().await.push(task.abort_handle());
                }
            }
        });
        Proxy {
            addr,
            tasks,
            accept,
        }
    }

    /// Closes every proxied connection, as a restarted MySQL server would,
    /// and answers how many there were; new connections still get through.
    pub async fn drop_connections(&self) -> usize {
        let mut tasks = self.tasks.lock().await;
        let open = tasks.iter().filter(|task| !task.is_finished()).count();
        for task in tasks.drain(..) {
            task.abort();
        }
        open
    }

    /// Closes the listener and every proxied connection.
    pub async fn cut(&self) {
        self.accept.abort();
        for task in self.tasks.lock().await.drain(..) {
            task.abort();
        }
    }
}

/// `url` with its host and port replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (before, _, after) = split_host(url);
    format!("{before}{addr}{after}")
}

/// The `host:port` that `url` points to.
pub fn upstream_of(url: &str) -> String {
    let (_, host, _) = split_host(url);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:3306")
    }
}

/// `scheme://user@`, `host:port`, `/database`.
fn split_host(url: &str) -> (&str, &str, &str) {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let host_start = url[scheme_end..authority_end]
        .rfind('@')
        .map_or(scheme_end, |i| scheme_end + i + 1);
    (
        &url[..host_start],
        &url[host_start..authority_end],
        &url[authority_end..],
    )
}
