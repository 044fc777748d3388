//! Starting the user service for a test: a fresh database, the real server
//! on an ephemeral port, and a client connected to it.

#![allow(dead_code)] // Each test binary uses a different part of this.

use std::{net::SocketAddr, time::Duration};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use wxlogin_common::SecretString;
use wxlogin_proto::user::v1::{
    GetUserRequest, OpenId, UpsertUserRequest, get_user_request::Key,
    user_service_client::UserServiceClient,
};
pub use wxlogin_testkit::Proxy;
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

/// The user service's configuration for a test on the database at `url`,
/// on a free port, with no auth service and no Redis.
pub fn config(url: String, max_connections: u32, connect_timeout: Duration) -> Config {
    Config {
        listen_addr: "127.0.0.1:0".parse().expect("a socket address"),
        database_url: SecretString::from(url),
        db_max_connections: max_connections,
        db_connect_timeout: connect_timeout,
        auth_url: "http://127.0.0.1:9".into(),
        watermark_max_age: None,
        redis_url: None,
        redis_key_prefix: String::new(),
        internal_secret: SecretString::from(INTERNAL_SECRET),
        internal_user_secret: SecretString::from(INTERNAL_USER_SECRET),
        upstream_connections: 1,
        data_keys: wxlogin_testkit::credential::data_keys(),
        index_key: wxlogin_testkit::credential::index_key(),
    }
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
        let config = config(url, 16, timeout);
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
        let (proxy, url) = Proxy::in_front_of(&database.url()).await;
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
                cached_copy: Vec::new(),
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

/// Runs the `wxlogin-user` binary with `args`, in an environment without
/// the settings tests give (`env` adds its own).
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wxlogin-user"))
        .args(args)
        .env_remove("USER_ADDR")
        .env_remove("DB_MAX_CONNECTIONS")
        .env_remove("DB_CONNECT_TIMEOUT_SECS")
        .env_remove("DATA_ENCRYPTION_KEYS")
        .env_remove("DATA_INDEX_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("run wxlogin-user")
}
