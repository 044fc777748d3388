//! The floors of this machine: the fastest the building blocks go with the
//! client libraries and the concurrency the services use, and nothing of
//! wxlogin in between.
//!
//! - `mysql-upsert-new` / `mysql-upsert-existing`: the user service's
//!   `INSERT … ON DUPLICATE KEY UPDATE` on a `users` table made by its own
//!   migrations, through a sea-orm/sqlx pool of the same size, for new
//!   openids and for existing rows: the statement `wxlogin_user::repo` builds
//!   and a first login runs (a returning login answered from the copy runs
//!   none).
//! - `redis-set-ex` / `redis-get`: one command each, on one multiplexed
//!   connection as auth has.
//! - `http-grpc-redis`: `GET /v1/me` on a minimal axum server whose handler
//!   makes one tonic unary call to a minimal server that does one Redis
//!   GET; both are processes of their own, like the gateway and auth.

pub mod servers;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use rand::distr::{Alphanumeric, SampleString};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, SqlxMySqlConnector, Statement,
    sqlx::{ConnectOptions as _, mysql::MySqlConnectOptions},
};
use wxlogin_common::SecretString;
use wxlogin_user::config::{DEFAULT_DB_CONNECT_TIMEOUT_SECS, DEFAULT_DB_MAX_CONNECTIONS};
use wxlogin_wechat_sim::DEFAULT_APPID;

use crate::{
    Runner,
    cli::RunArgs,
    load::{Cycle, Outcome, Workload},
    metrics::Role,
    orchestrate::{Environment, answers_ok, free_port},
    report::RunReport,
    scenarios::Me,
};

/// About the size of a session record in auth's Redis.
const SESSION_VALUE: &str = r#"{"appid":"wx0123456789abcdef","openid":"oBench000000000000000000000000","unionid":null,"created_at_ms":1764036000000,"absolute_expires_at_ms":1766628000000,"key_version":"0123456789abcdef"}"#;

/// Auth's default idle TTL, for `SET … EX`.
const SESSION_TTL_SECS: u64 = 604_800;

/// Distinct keys the `SET … EX` floor writes in turn.
const SET_KEYS: usize = 10_000;

/// A new openid shaped like WeChat's (28 characters starting with `o`).
fn new_openid() -> String {
    let mut openid = String::with_capacity(28);
    openid.push('o');
    Alphanumeric.append_string(&mut rand::rng(), &mut openid, 27);
    openid
}

/// The user service's upsert of a login of `openid`: the very statement
/// `wxlogin_user::repo` runs.
fn upsert_statement(openid: String) -> Statement {
    wxlogin_user::repo::upsert_statement(
        DbBackend::MySql,
        DEFAULT_APPID,
        &openid,
        None,
        wxlogin_user::repo::now(),
    )
}

/// The upsert, for new openids (`existing` empty) or existing rows in turn.
struct MysqlUpsert {
    db: DatabaseConnection,
    existing: Option<Cycle<String>>,
}

impl Workload for MysqlUpsert {
    type Input = String;

    fn kinds(&self) -> &[&'static str] {
        &["upsert"]
    }

    fn next(&self) -> Option<(usize, String)> {
        let openid = match &self.existing {
            Some(openids) => openids.next()?.clone(),
            None => new_openid(),
        };
        Some((0, openid))
    }

    async fn call(&self, openid: String) -> Outcome {
        match self.db.execute_raw(upsert_statement(openid)).await {
            Ok(_) => Outcome::Ok,
            Err(error) => Outcome::failed("mysql", error.to_string()),
        }
    }
}

/// `SET key value EX ttl` over [`SET_KEYS`] keys in turn.
struct RedisSetEx {
    conn: ConnectionManager,
    keys: Cycle<String>,
}

impl Workload for RedisSetEx {
    type Input = String;

    fn kinds(&self) -> &[&'static str] {
        &["set_ex"]
    }

    fn next(&self) -> Option<(usize, String)> {
        self.keys.next().map(|key| (0, key.clone()))
    }

    async fn call(&self, key: String) -> Outcome {
        let mut conn = self.conn.clone();
        let result = redis::cmd("SET")
            .arg(key)
            .arg(SESSION_VALUE)
            .arg("EX")
            .arg(SESSION_TTL_SECS)
            .query_async::<()>(&mut conn)
            .await;
        redis_outcome(result.map(|()| true))
    }
}

/// `GET key` over keys that exist.
struct RedisGet {
    conn: ConnectionManager,
    keys: Cycle<String>,
}

impl Workload for RedisGet {
    type Input = String;

    fn kinds(&self) -> &[&'static str] {
        &["get"]
    }

    fn next(&self) -> Option<(usize, String)> {
        self.keys.next().map(|key| (0, key.clone()))
    }

    async fn call(&self, key: String) -> Outcome {
        let mut conn = self.conn.clone();
        let result = redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(&mut conn)
            .await;
        redis_outcome(result.map(|value| value.is_some()))
    }
}

fn redis_outcome(result: redis::RedisResult<bool>) -> Outcome {
    match result {
        Ok(true) => Outcome::Ok,
        Ok(false) => Outcome::failed("missing", "the key was not there"),
        Err(error) => Outcome::failed("redis", error.to_string()),
    }
}

/// A multiplexed connection configured as auth configures its own.
pub async fn redis_connection(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("the Redis URL is not valid")?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config)
        .await
        .context("cannot connect to Redis")
}

/// A pool built as the user service builds its own.
async fn mysql_pool(url: &str) -> anyhow::Result<DatabaseConnection> {
    let options: MySqlConnectOptions = url.parse().context("the MySQL URL is not valid")?;
    let pool = wxlogin_user::mysql_pool_options(
        DEFAULT_DB_MAX_CONNECTIONS,
        Duration::from_secs(DEFAULT_DB_CONNECT_TIMEOUT_SECS),
    )
    .connect_with(options.disable_statement_logging())
    .await
    .context("cannot connect to MySQL")?;
    Ok(SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
}

/// Measures every floor.
pub async fn run_all(
    runner: &Runner,
    env: &mut Environment,
    client: &reqwest::Client,
    args: &RunArgs,
) -> anyhow::Result<Vec<RunReport>> {
    let mut reports = Vec::new();
    let concurrency = runner.concurrency;

    eprintln!("» floors: MySQL");
    let url = env.create_database("floor").await?;
    wxlogin_user::migrate(
        &SecretString::from(url.clone()),
        Duration::from_secs(DEFAULT_DB_CONNECT_TIMEOUT_SECS),
    )
    .await
    .context("creating the users table for the MySQL floor")?;
    let db = mysql_pool(&url).await?;
    let pool_note = format!(
        "sqlx pool of {DEFAULT_DB_MAX_CONNECTIONS} connections, as the user service's default"
    );

    let new = Arc::new(MysqlUpsert {
        db: db.clone(),
        existing: None,
    });
    reports.push(
        measure(
            runner,
            "mysql-upsert-new",
            format!(
                "the user service's INSERT … ON DUPLICATE KEY UPDATE for a new (appid, openid) each time; {pool_note}"
            ),
            new,
        )
        .await?,
    );

    let openids: Vec<String> = (0..args.users).map(|_| new_openid()).collect();
    stream::iter(openids.clone())
        .map(|openid| {
            let db = db.clone();
            async move { db.execute_raw(upsert_statement(openid)).await }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .context("inserting the rows of the existing-row floor")?;
    let existing = Arc::new(MysqlUpsert {
        db: db.clone(),
        existing: Some(Cycle::new(openids)),
    });
    reports.push(
        measure(
            runner,
            "mysql-upsert-existing",
            format!(
                "the same statement on {} existing rows in turn (it updates them); {pool_note}",
                args.users
            ),
            existing,
        )
        .await?,
    );
    drop(db.close().await);

    eprintln!("» floors: Redis");
    let conn = redis_connection(env.redis_url()).await?;
    let prefix = env.redis_prefix().to_owned();
    let set_keys = (0..SET_KEYS)
        .map(|index| format!("{prefix}floor:set:{index}"))
        .collect();
    let set = Arc::new(RedisSetEx {
        conn: conn.clone(),
        keys: Cycle::new(set_keys),
    });
    reports.push(
        measure(
            runner,
            "redis-set-ex",
            format!(
                "SET key <{}-byte value> EX {SESSION_TTL_SECS} over {SET_KEYS} keys, one multiplexed connection",
                SESSION_VALUE.len()
            ),
            set,
        )
        .await?,
    );
    let get_keys: Vec<String> = (0..args.tokens)
        .map(|index| format!("{prefix}floor:get:{index}"))
        .collect();
    seed(&conn, &get_keys, |_| SESSION_VALUE.to_owned()).await?;
    let get = Arc::new(RedisGet {
        conn: conn.clone(),
        keys: Cycle::new(get_keys),
    });
    reports.push(
        measure(
            runner,
            "redis-get",
            format!(
                "GET over {} existing keys, one multiplexed connection",
                args.tokens
            ),
            get,
        )
        .await?,
    );

    eprintln!("» floors: axum → tonic → Redis");
    let tokens: Vec<String> = (0..args.tokens)
        .map(|_| Alphanumeric.sample_string(&mut rand::rng(), 43))
        .collect();
    let session_keys: Vec<String> = tokens
        .iter()
        .map(|token| servers::session_key(&prefix, token))
        .collect();
    seed(&conn, &session_keys, |index| {
        format!("oFloorUser{index:018}")
    })
    .await?;
    let http = start_floor_servers(env, client).await?;
    let runner = runner.watching(env);
    let me = Arc::new(Me::new(client, &http, &tokens)?);
    let probe = format!("{http}/v1/me");
    let first_token = tokens.first().cloned().unwrap_or_default();
    env.wait_until("the floor servers", || {
        let request = client.get(&probe).bearer_auth(&first_token);
        async move {
            request
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        }
    })
    .await?;
    reports.push(
        measure(
            &runner,
            "http-grpc-redis",
            format!(
                "GET /v1/me on a minimal axum server → one tonic unary call → one Redis GET, \
                 separate processes (floor-http, floor-grpc), {} tokens",
                args.tokens
            ),
            me,
        )
        .await?,
    );
    Ok(reports)
}

async fn measure<W: Workload>(
    runner: &Runner,
    name: &str,
    description: String,
    workload: Arc<W>,
) -> anyhow::Result<RunReport> {
    eprintln!("  {name}");
    runner.warm_up(&workload).await?;
    let (load, usage) = runner.measure(workload).await?;
    RunReport::new(name, description, &load, usage, Vec::new())
}

async fn seed(
    conn: &ConnectionManager,
    keys: &[String],
    value: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    let mut pipe = redis::pipe();
    for (index, key) in keys.iter().enumerate() {
        pipe.set_ex(key, value(index), SESSION_TTL_SECS).ignore();
    }
    pipe.query_async::<()>(&mut conn.clone())
        .await
        .context("seeding the floor's Redis keys")
}

/// Starts `floor-grpc` and `floor-http` from this executable; answers the
/// HTTP floor's base URL.
async fn start_floor_servers(
    env: &mut Environment,
    client: &reqwest::Client,
) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let grpc_port = free_port();
    let http_port = free_port();
    env.spawn(
        "floor-grpc",
        Role::Floor,
        &exe,
        &[
            "floor-grpc".to_owned(),
            "--addr".to_owned(),
            format!("127.0.0.1:{grpc_port}"),
        ],
        &[
            ("REDIS_URL", env.redis_url().to_owned()),
            ("REDIS_KEY_PREFIX", env.redis_prefix().to_owned()),
        ],
    )?;
    env.spawn(
        "floor-http",
        Role::Floor,
        &exe,
        &[
            "floor-http".to_owned(),
            "--addr".to_owned(),
            format!("127.0.0.1:{http_port}"),
            "--grpc-url".to_owned(),
            format!("http://127.0.0.1:{grpc_port}"),
        ],
        &[],
    )?;
    let http = format!("http://127.0.0.1:{http_port}");
    let healthz = format!("{http}/healthz");
    env.wait_until("floor-http", || answers_ok(client, &healthz))
        .await?;
    Ok(http)
}
