//! The user service: owns the `users` table (one row per mini-program user,
//! keyed by appid and openid) and serves it over gRPC as
//! `wxlogin.user.v1.UserService`, with its schema migrations embedded.
//!
//! It opens the user data a login provider sealed through
//! `wxlogin_provider::LoginProvider` (WeChat's offline `MiniProgram`, which
//! asks WeChat nothing). It must not talk to WeChat or hold sessions (that
//! is the auth service's job), and no other service may read or write
//! `users` except through it.

use std::{future::Future, net::SocketAddr, time::Duration};

use sea_orm::{
    DatabaseConnection, SqlxMySqlConnector, SqlxSqliteConnector,
    sqlx::{
        ConnectOptions as _, Connection as _,
        mysql::{MySqlConnectOptions, MySqlPoolOptions},
        sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
    },
};
use sea_orm_migration::MigratorTrait;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::{ServingStatus, server::HealthReporter};
use wxlogin_common::{ExposeSecret, SecretString, grpc::Upstream};
use wxlogin_proto::caller::{Authenticator, Caller};
use wxlogin_proto::user::v1::user_service_server::{SERVICE_NAME, UserServiceServer};

pub mod availability;
pub mod cache;
pub mod config;
pub mod entity;
pub mod error;
pub mod fields;
pub mod journal;
pub mod migration;
pub mod personal;
pub mod repo;
pub mod reseal;
pub mod service;

pub use config::Config;
pub use error::Error;

use availability::Availability;
use migration::Migrator;
use repo::UserRepo;
use service::UserApi;

/// The user service, built and listening but not serving yet.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    db: DatabaseConnection,
    /// A pool of one connection for the availability probe.
    probe_db: DatabaseConnection,
    availability: Availability,
    auth: Upstream,
    callers: Authenticator,
    watermark_max_age: Option<Duration>,
    cache: Option<cache::UserCache>,
    redis_key_prefix: String,
    sealer: personal::Sealer,
}

/// How long stopping waits for the login journal's reader to store the
/// batch in hand.
const JOURNAL_DRAIN: Duration = Duration::from_secs(5);

impl Application {
    /// Binds the listener, connects to the database and brings its schema up
    /// to date. Requests wait in the listen backlog until
    /// [`run_until_stopped`](Self::run_until_stopped).
    pub async fn build(config: Config) -> Result<Application, Error> {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen_addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen_addr,
            source,
        })?;

        let availability = Availability::new();
        let db = connect(
            &config.database_url,
            config.db_max_connections,
            config.db_connect_timeout,
            &availability,
        )
        .await?;
        Migrator::up(&db, None).await.map_err(Error::Migrate)?;
        let probe_db = connect_probe(&config.database_url, &db)?;

        // Lazy: the user service starts (and serves what needs no session
        // key) while auth is still coming up.
        let auth = Upstream::new(
            "auth",
            &config.auth_url,
            config.upstream_connections,
            &config.internal_user_secret,
            service::AUTH_DEADLINE,
        )
        .map_err(|_| Error::InvalidAuthUrl)?;

        Ok(Application {
            listener,
            local_addr,
            db,
            probe_db,
            availability,
            auth,
            callers: Authenticator::new(&[(&config.internal_secret, Caller::Internal)]),
            watermark_max_age: config.watermark_max_age,
            cache: match &config.redis_url {
                Some(url) => Some(
                    cache::UserCache::connect(
                        url.expose_secret(),
                        config.redis_key_prefix.clone(),
                        config.data_keys.clone(),
                    )
                    .map_err(|_| Error::InvalidRedisUrl)?,
                ),
                None => None,
            },
            redis_key_prefix: config.redis_key_prefix,
            sealer: personal::Sealer::new(config.data_keys, config.index_key),
        })
    }

    /// The address the server listens on (the real port when configured
    /// with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves the user service and the gRPC health service until `shutdown`
    /// completes, then stops accepting connections and lets in-flight
    /// requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let repo = UserRepo::new(
            self.db.clone(),
            self.availability.clone(),
            self.sealer.clone(),
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        let readiness = tokio::spawn(report_readiness(health, self.availability.watch()));
        let probe = tokio::spawn(availability::probe(
            self.probe_db.clone(),
            self.availability.clone(),
        ));
        let pool_sampler = tokio::spawn(availability::sample_pool(self.db.clone()));
        // Rows written before encryption are sealed while the service
        // serves; a restart resumes where this stopped.
        let sealing = tokio::spawn(reseal::encrypt_existing_in_background(
            self.db.clone(),
            self.sealer.clone(),
        ));

        // Small messages: answering without Nagle's delay matters more than
        // packet count.
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        tracing::info!(addr = %self.local_addr, "user service listening");
        let (stop_journal, journal_stopped) = tokio::sync::watch::channel(false);
        let journal = self.cache.as_ref().map(|cache| {
            let journal =
                journal::Journal::new(cache.guard().clone(), &self.redis_key_prefix, repo.clone());
            tokio::spawn(journal.run(journal_stopped))
        });
        let api = UserApi {
            repo,
            auth: self.auth,
            watermark_max_age: self.watermark_max_age,
            cache: self.cache,
            keys: self.sealer.keys().clone(),
            // The user service asks WeChat nothing: it only opens data.
            provider: std::sync::Arc::new(wxlogin_wechat::MiniProgram::offline()),
        };
        let served = wxlogin_common::grpc::server()
            .layer(wxlogin_common::metrics::grpc_server_layer("user"))
            .layer(wxlogin_common::request_id::grpc_trace_layer("user"))
            .add_service(health_service)
            .add_service(UserServiceServer::with_interceptor(api, self.callers))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;

        // The journal's reader finishes the batch in hand while the pool is
        // still open; what it has not read waits in Redis for the others.
        let _ = stop_journal.send(true);
        if let Some(journal) = journal
            && tokio::time::timeout(JOURNAL_DRAIN, journal).await.is_err()
        {
            tracing::warn!(
                "the login journal's reader did not stop in time; its batch is taken over by another instance later"
            );
        }
        readiness.abort();
        sealing.abort();
        probe.abort();
        pool_sampler.abort();
        if self.probe_db.get_database_backend() != sea_orm::DbBackend::Sqlite
            && let Err(error) = self.probe_db.close().await
        {
            tracing::warn!(error = %error::report(&error), "closing the probe's pool failed");
        }
        if let Err(error) = self.db.close().await {
            tracing::warn!(error = %error::report(&error), "closing the database pool failed");
        }
        served.map_err(Error::Serve)?;
        tracing::info!("user service stopped");
        Ok(())
    }
}

/// Brings the database schema up to date and returns; what
/// `wxlogin-user migrate` runs. Running it again is a no-op. Gives up when
/// no connection is made within `connect_timeout`.
pub async fn migrate(database_url: &SecretString, connect_timeout: Duration) -> Result<(), Error> {
    let db = connect(database_url, 1, connect_timeout, &Availability::new()).await?;
    let migrated = Migrator::up(&db, None).await.map_err(Error::Migrate);
    if let Err(error) = db.close().await {
        tracing::warn!(error = %error::report(&error), "closing the database connection failed");
    }
    migrated
}

/// Which of the commands that seal stored rows to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reseal {
    /// `wxlogin-user encrypt-existing`: seal rows written before encryption.
    EncryptExisting,
    /// `wxlogin-user rewrap`: seal again under the newest key.
    Rewrap,
}

/// Brings the schema up to date, then runs `command` to the end; what
/// `wxlogin-user encrypt-existing` and `wxlogin-user rewrap` run.
pub async fn reseal(
    command: Reseal,
    database_url: &SecretString,
    connect_timeout: Duration,
    sealer: personal::Sealer,
) -> Result<reseal::Report, Error> {
    let db = connect(database_url, 1, connect_timeout, &Availability::new()).await?;
    let done = async {
        Migrator::up(&db, None).await.map_err(Error::Migrate)?;
        let limit = reseal::Limit::default();
        match command {
            Reseal::EncryptExisting => reseal::encrypt_existing(&db, &sealer, limit).await,
            Reseal::Rewrap => reseal::rewrap(&db, &sealer, limit).await,
        }
    }
    .await;
    if let Err(error) = db.close().await {
        tracing::warn!(error = %error::report(&error), "closing the database connection failed");
    }
    done
}

/// A pool of `max_connections` to the database at `url`.
///
/// The pool is built with sqlx directly rather than `sea_orm::Database::connect`,
/// which records its options (URL and password included) in a trace span.
async fn connect(
    url: &SecretString,
    max_connections: u32,
    timeout: Duration,
    availability: &Availability,
) -> Result<DatabaseConnection, Error> {
    let url = url.expose_secret();
    if url.starts_with("sqlite:") {
        return connect_sqlite(url, max_connections, timeout).await;
    }
    // sqlx's parse errors describe the problem without quoting the URL.
    let options: MySqlConnectOptions = url.parse().map_err(Error::Connect)?;
    let pool = pool_options(max_connections, timeout, availability.clone())
        .connect_with(options.disable_statement_logging())
        .await
        .map_err(Error::Connect)?;
    Ok(SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
}

/// The availability probe's own pool of one connection, made when first
/// needed: it waits for no connection the service's requests hold, and
/// gives up within the probe's timeout. SQLite, a file, has no outage to
/// probe for: the service's pool answers.
fn connect_probe(url: &SecretString, db: &DatabaseConnection) -> Result<DatabaseConnection, Error> {
    let url = url.expose_secret();
    if url.starts_with("sqlite:") {
        return Ok(db.clone());
    }
    let options: MySqlConnectOptions = url.parse().map_err(Error::Connect)?;
    let pool = pool_options(1, availability::PROBE_TIMEOUT, Availability::new())
        .connect_lazy_with(options.disable_statement_logging());
    Ok(SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
}

/// A connection that was idle this long is pinged before it is used again.
const PING_AFTER_IDLE: Duration = Duration::from_secs(30);

/// The options of the service's MySQL pool (the benchmark's MySQL floor uses
/// the same).
pub fn mysql_pool_options(max_connections: u32, acquire_timeout: Duration) -> MySqlPoolOptions {
    pool_options(max_connections, acquire_timeout, Availability::new())
}

/// [`mysql_pool_options`], for a pool whose connections may have been cut
/// while `availability` saw the database down.
///
/// sqlx pings every connection when it goes back to the pool, and by default
/// again when it is taken out: two extra round trips per statement, which
/// cost a login a fifth of its CPU (`wxlogin-bench`: 476-495 µs per
/// returning login without the ping on taking, 548-594 µs with it). A
/// connection is pinged when taken only after `PING_AFTER_IDLE` unused, so
/// one that MySQL dropped in a quiet period is replaced, not used; one that
/// breaks while busy (MySQL restarted) fails its next statement once (the
/// client sees 503) and is closed. After an outage, every connection idle
/// since before it is pinged once too: MySQL (or the network) probably cut
/// them all, and requests would otherwise find them dead one at a time.
fn pool_options(
    max_connections: u32,
    acquire_timeout: Duration,
    availability: Availability,
) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let suspect = meta.idle_for >= PING_AFTER_IDLE
                || availability.idle_across_an_outage(meta.idle_for);
            Box::pin(async move {
                if suspect {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// An embedded SQLite database, for the single-process setup: the file is
/// created when missing, and WAL lets readers go on while one writer writes.
async fn connect_sqlite(
    url: &str,
    max_connections: u32,
    timeout: Duration,
) -> Result<DatabaseConnection, Error> {
    let options: SqliteConnectOptions = url.parse().map_err(Error::Connect)?;
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(timeout)
        .disable_statement_logging();
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .map_err(Error::Connect)?;
    Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// Keeps the health status of the user service in step with whether the
/// database is known down, so that `/readyz` shows an outage within a probe
/// period. Only the named service follows the database: the server as a
/// whole ("") stays SERVING, because the service still answers what needs
/// no database (a returning login from its cached copy).
async fn report_readiness(health: HealthReporter, mut up: tokio::sync::watch::Receiver<bool>) {
    loop {
        let status = if *up.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status(SERVICE_NAME, status).await;
        if up.changed().await.is_err() {
            return;
        }
    }
}
