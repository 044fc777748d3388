//! Test-only helpers shared by the services' integration tests and the
//! end-to-end suite: a throw-away MySQL database and a private Redis key
//! prefix per test, so tests run in parallel against the real servers, and
//! a [`Proxy`] a test cuts to take MySQL away from a service.
//!
//! Servers come from `DATABASE_URL` and `REDIS_URL` (the test command sets
//! them, starting private servers when needed); the defaults are the local
//! MariaDB and Redis of a developer machine. Nothing here is used in
//! production code.
//!
//! Tests that must stop Redis start their own ([`PrivateRedis`]): the
//! machine's server is shared by every test.
//!
//! It also owns two rules every harness follows (the benchmark too): which
//! port is free for a server another process binds ([`free_port`]), and
//! where the workspace's binaries are ([`binary`]).

use sea_orm::{ConnectionTrait, Database};
use wxlogin_redis::guard::RedisGuard;

pub mod credential;
mod proxy;
mod topology;
mod workspace;

pub use proxy::Proxy;
pub use topology::{PrivateRedisCluster, PrivateRedisSentinel, SENTINEL_SERVICE};
pub use workspace::{binary, target_dir, workspace_root};

/// The MySQL server URL tests use, without a database name.
pub fn mysql_server_url() -> String {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    strip_database(&url)
}

/// The Redis URL tests use.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn strip_database(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    match url[scheme_end..].find('/') {
        Some(slash) => url[..scheme_end + slash].to_owned(),
        None => url.trim_end_matches('/').to_owned(),
    }
}

/// A short random name, unique per test.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A database created for one test and dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
}

impl TestDatabase {
    /// Creates an empty database on the test server.
    pub async fn create() -> Self {
        TestDatabase::create_on(&mysql_server_url()).await
    }

    /// Creates an empty database on the MySQL server at `server` (a URL
    /// without a database name), e.g. a [`PrivateMariadb`].
    pub async fn create_on(server: &str) -> Self {
        let server = server.to_owned();
        let name = unique_name("wxlogin_test");
        let admin = Database::connect(server.clone())
            .await
            .unwrap_or_else(|error| {
                panic!("cannot connect to the test MySQL server {server}: {error}")
            });
        admin
            .execute_unprepared(&format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ))
            .await
            .expect("create the test database");
        drop(admin.close().await);
        TestDatabase { server, name }
    }

    /// The URL of the database, as a service's `DATABASE_URL`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot block on itself:
        // a thread of its own with a small runtime does the cleanup.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for cleanup");
            runtime.block_on(async move {
                if let Ok(admin) = Database::connect(server).await {
                    drop(
                        admin
                            .execute_unprepared(&format!("DROP DATABASE IF EXISTS `{name}`"))
                            .await,
                    );
                    drop(admin.close().await);
                }
            });
        });
        drop(cleanup.join());
    }
}

/// A Redis key prefix owned by one test; its keys are deleted on drop.
#[derive(Debug)]
pub struct TestRedisPrefix {
    url: String,
    prefix: String,
}

impl TestRedisPrefix {
    pub fn new() -> Self {
        TestRedisPrefix {
            url: redis_url(),
            prefix: format!("{}:", unique_name("wxlogin_test")),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every key under the prefix, with the values of string keys.
    pub async fn dump(&self) -> Vec<(String, Option<String>)> {
        let redis = connect(&self.url).await;
        let keys = keys(&redis, &self.prefix).await;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let kind: String = redis
                .run(async |conn| redis::cmd("TYPE").arg(&key).query_async(conn).await)
                .await
                .expect("TYPE");
            let value = match kind.as_str() {
                "string" => redis
                    .run(async |conn| {
                        redis::cmd("GET")
                            .arg(&key)
                            .query_async::<Option<Vec<u8>>>(conn)
                            .await
                    })
                    .await
                    .expect("GET")
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                "stream" => {
                    let entries: redis::streams::StreamRangeReply = redis
                        .run(async |conn| {
                            redis::cmd("XRANGE")
                                .arg(&key)
                                .arg("-")
                                .arg("+")
                                .query_async(conn)
                                .await
                        })
                        .await
                        .expect("XRANGE");
                    Some(render_stream(&entries))
                }
                // Gone meanwhile (expired), or a type wxlogin does not write.
                _ => None,
            };
            out.push((key, value));
        }
        out
    }

    /// The raw bytes of one string key (under the prefix or not).
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let redis = connect(&self.url).await;
        redis
            .run(async |conn| redis::cmd("GET").arg(key).query_async(conn).await)
            .await
            .expect("GET")
    }

    /// Deletes one key (under the prefix or not).
    pub async fn delete(&self, key: &str) {
        let redis = connect(&self.url).await;
        let _: () = redis
            .run(async |conn| redis::cmd("DEL").arg(key).query_async(conn).await)
            .await
            .expect("DEL");
    }
}

/// A connection to the Redis of `url`, whatever its topology.
async fn connect(url: &str) -> RedisGuard {
    RedisGuard::connect(url)
        .await
        .expect("connect to the test Redis")
}

/// Every key that starts with `prefix` (on every primary of a Cluster).
async fn keys(redis: &RedisGuard, prefix: &str) -> Vec<String> {
    redis
        .run(async |conn| {
            redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(conn)
                .await
        })
        .await
        .expect("KEYS")
}

/// A stream's entries as text: `id field=value ...`, one line each.
fn render_stream(entries: &redis::streams::StreamRangeReply) -> String {
    let mut text = String::new();
    for entry in &entries.ids {
        text.push_str(&entry.id);
        let mut fields: Vec<_> = entry.map.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (field, value) in fields {
            let value = match value {
                redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                other => format!("{other:?}"),
            };
            text.push_str(&format!(" {field}={value}"));
        }
        text.push('\n');
    }
    text
}

impl TestRedisPrefix {
    /// A prefix on the Redis server at `url` (e.g. a [`PrivateRedis`]).
    pub fn on(url: &str) -> Self {
        TestRedisPrefix {
            url: url.to_owned(),
            prefix: format!("{}:", unique_name("wxlogin_test")),
        }
    }
}

impl Default for TestRedisPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedisPrefix {
    fn drop(&mut self) {
        let url = self.url.clone();
        let prefix = self.prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(redis) = RedisGuard::connect(&url).await else {
                    return;
                };
                let Ok(keys) = redis
                    .run(async |conn| {
                        redis::cmd("KEYS")
                            .arg(format!("{prefix}*"))
                            .query_async::<Vec<String>>(conn)
                            .await
                    })
                    .await
                else {
                    return;
                };
                // One key per command: a Cluster deletes several at once
                // only within one hash slot.
                for key in keys {
                    let _: redis::RedisResult<()> = redis
                        .run(async |conn| redis::cmd("DEL").arg(&key).query_async(conn).await)
                        .await;
                }
            });
        });
        drop(cleanup.join());
    }
}

/// A `redis-server` of the test's own on a free loopback port, without
/// persistence, that the test may stop and start again on the same port.
/// Killed on drop. Panics (so the test fails, rather than passing without
/// having run) when `redis-server` cannot be started.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
    server: Option<std::process::Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let (port, dir) = port_and_dir("wxlogin_redis");
        let mut redis = PrivateRedis {
            port,
            dir,
            server: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits
    /// until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            drop(server.kill());
            drop(server.wait());
        }
    }

    /// Starts the server again on the same port (stopping it first if it
    /// runs), and waits until it answers PING.
    pub fn restart(&mut self) {
        self.stop();
        let server = std::process::Command::new(redis_server_binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.server = Some(server);
        let client = redis::Client::open(self.url()).expect("redis url");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let pong = client
                .get_connection_with_timeout(std::time::Duration::from_millis(200))
                .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn));
            if pong.is_ok() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the private redis-server on port {} does not answer: {pong:?}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The machine's `redis-server`; panics (failing the test) without one.
fn redis_server_binary() -> &'static str {
    [
        "redis-server",
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
    ]
    .into_iter()
    .find(|candidate| {
        std::process::Command::new(candidate)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
    .expect("redis-server is not installed (apt-get install redis-server)")
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

#[cfg(test)]
mod tests {
    use super::strip_database;

    #[test]
    fn the_server_url_loses_its_database() {
        assert_eq!(
            strip_database("mysql://root@127.0.0.1:3306/wxlogin"),
            "mysql://root@127.0.0.1:3306"
        );
        assert_eq!(
            strip_database("mysql://root@127.0.0.1:3306/"),
            "mysql://root@127.0.0.1:3306"
        );
        assert_eq!(
            strip_database("mysql://root@127.0.0.1:3306"),
            "mysql://root@127.0.0.1:3306"
        );
    }
}

/// A MariaDB server of the test's own, on a free loopback port with a data
/// directory in a temp dir, that the test may kill and start again on the
/// same port and data. Killed and removed on drop. Panics (so the test
/// fails, rather than passing without having run) when MariaDB's binaries
/// (`mariadb-install-db`, `mariadbd`; Debian's `mariadb-server`) are missing.
#[derive(Debug)]
pub struct PrivateMariadb {
    port: u16,
    dir: std::path::PathBuf,
    server: std::sync::Mutex<Option<std::process::Child>>,
}

impl PrivateMariadb {
    pub fn start() -> PrivateMariadb {
        let (port, dir) = port_and_dir("wxlogin_mariadb");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let installed = std::process::Command::new(server_binary("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--user={user}"))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run mariadb-install-db");
        assert!(installed.success(), "mariadb-install-db failed");
        let mariadb = PrivateMariadb {
            port,
            dir,
            server: std::sync::Mutex::new(None),
        };
        mariadb.restart();
        mariadb
    }

    /// The server's URL, without a database name.
    pub fn server_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: a crash, no goodbye to its clients) and
    /// waits until it is gone.
    pub fn stop(&self) {
        let taken = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut server) = taken {
            drop(server.kill());
            drop(server.wait());
        }
    }

    /// Starts the server (again) on the same port and data, and waits until
    /// it accepts connections.
    pub fn restart(&self) {
        self.stop();
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let server = std::process::Command::new(server_binary("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--user={user}"))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--socket={}",
                self.dir.join("mysql.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("mysql.pid").display()
            ))
            .args(["--skip-name-resolve", "--skip-log-bin"])
            .args([
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mariadbd");
        *self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the private MariaDB on port {} did not start",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        self.stop();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

/// An nginx of the test's own, on a free loopback port, with the `http`
/// block the test gives (it is told the port and a directory for temp
/// files). Killed on drop. Panics (so the test fails rather than passing
/// without having run) when nginx is missing or does not start;
/// `tests/run.sh` installs Debian's `nginx-light`.
#[derive(Debug)]
pub struct PrivateNginx {
    port: u16,
    dir: std::path::PathBuf,
    server: std::process::Child,
}

impl PrivateNginx {
    pub fn start(http: impl FnOnce(u16, &std::path::Path) -> String) -> PrivateNginx {
        let (port, dir) = port_and_dir("wxlogin_nginx");
        // Workers may run as another user (nginx started by root): they
        // must be able to write their temp files.
        use std::os::unix::fs::PermissionsExt;
        drop(std::fs::set_permissions(
            &dir,
            std::fs::Permissions::from_mode(0o777),
        ));
        let config = format!(
            "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
             error_log {dir}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n\
             proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n\
             uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n{}\n}}\n",
            http(port, &dir),
            dir = dir.display(),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).expect("write nginx.conf");
        let server = std::process::Command::new(server_binary("nginx"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = PrivateNginx { port, dir, server };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.server.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.error_log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not listen within 10 s: {}",
                nginx.error_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What nginx logged (warnings and errors).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for PrivateNginx {
    fn drop(&mut self) {
        // SIGTERM, so that the master stops its workers too (SIGKILL would
        // leave them running).
        drop(
            std::process::Command::new("kill")
                .args(["-TERM", &self.server.id().to_string()])
                .status(),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while matches!(self.server.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(self.server.kill());
        drop(self.server.wait());
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

/// Where a server binary is: on the PATH or in the sbin directories that
/// Debian's packages put it in.
fn server_binary(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed (tests/run.sh installs it)"))
}

/// A free loopback port and a fresh directory, for a private server.
fn port_and_dir(name: &str) -> (u16, std::path::PathBuf) {
    (free_port(), temp_dir(name))
}

/// A loopback port nothing is bound to now, for a server another process
/// will bind. It is below Linux's ephemeral range (32768 and up), as
/// tests/run.sh picks its servers' ports: there the kernel hands ports to
/// other tests' `:0` binds and outgoing connections, which could take it
/// before the server binds it.
pub fn free_port() -> u16 {
    loop {
        let [a, b, ..] = *uuid::Uuid::new_v4().as_bytes();
        let port = 10_000 + u16::from_le_bytes([a, b]) % 22_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A loopback address that refuses connections for as long as the returned
/// socket lives: the socket holds the port (bound, not listening), so no
/// server of another test can take it meanwhile, as it could a port merely
/// found free.
pub fn refusing_addr() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("a loopback port");
    let addr = socket.local_addr().expect("the socket's address");
    (socket, addr)
}

/// A fresh directory in the temp dir, named after `name`.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_name(name));
    std::fs::create_dir_all(&dir).expect("a directory in the temp dir");
    dir
}
