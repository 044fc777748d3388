//! Test-only helpers shared by the services' integration tests and the
//! end-to-end suite: a throw-away MySQL database and a private Redis key
//! prefix per test, so tests run in parallel against the real servers, and
//! a [`Proxy`] a test cuts to take MySQL away from a service.
//!
//! Servers come from `DATABASE_URL` and `REDIS_URL` (the test command sets
//! them, starting private servers when needed); the defaults are the local
//! MariaDB and Redis of a developer machine. Nothing here is used in
//! production code.

use sea_orm::{ConnectionTrait, Database};

pub mod credential;
mod proxy;

pub use proxy::Proxy;

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
        let server = mysql_server_url();
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
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test Redis server");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let value: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap_or(None);
            out.push((key, value));
        }
        out
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
        let pattern = format!("{}*", self.prefix);
        let cleanup = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        });
        drop(cleanup.join());
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
