//! Bringing up what is measured and taking it down again: the release
//! build, a database and a Redis key prefix of the benchmark's own, the
//! services (started by `wxlogin_standalone::SystemBuilder`, as processes)
//! and the simulator and floor servers as separate processes on free
//! loopback ports, and, on every way out (success, error, Ctrl-C, panic),
//! killing those processes, dropping the databases and deleting the keys.

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use reqwest::{StatusCode, Url};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, SqlxMySqlConnector,
    sqlx::{
        ConnectOptions as _,
        mysql::{MySqlConnectOptions, MySqlPoolOptions},
    },
};

use wxlogin_standalone::{ProcessOptions, Services, SystemBuilder};
pub use wxlogin_testkit::free_port;

use crate::metrics::{Role, Watched};

/// The packages whose binaries make up the production topology.
const SERVICE_PACKAGES: [&str; 4] = [
    "wxlogin-gateway",
    "wxlogin-auth",
    "wxlogin-user",
    "wxlogin-wechat-sim",
];

/// How long a process may take to answer its readiness probe.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Login codes must outlive the whole run: they are minted before the
/// window in which they are used.
const SIM_CODE_TTL_SECS: &str = "86400";

/// Where things are: the workspace, its target directory, the release
/// binaries, and the benchmark's own output.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Paths {
    /// The workspace this binary was built from, and its target directory
    /// by the tests' rule (`wxlogin_testkit::target_dir`).
    pub fn discover() -> Paths {
        Paths {
            root: wxlogin_testkit::workspace_root(),
            target: wxlogin_testkit::target_dir(),
        }
    }

    pub fn release_bin(&self, name: &str) -> PathBuf {
        self.target.join("release").join(name)
    }

    pub fn bench_dir(&self) -> PathBuf {
        self.target.join("bench")
    }
}

/// `cargo build --release --bins --locked` of the service packages.
pub async fn build(paths: &Paths) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = tokio::process::Command::new(cargo);
    command
        .current_dir(&paths.root)
        .args(["build", "--release", "--bins", "--locked"]);
    for package in SERVICE_PACKAGES {
        command.args(["-p", package]);
    }
    let status = command
        .kill_on_drop(true)
        .status()
        .await
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    Ok(())
}

/// `url` with its password masked, to print.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            if parsed.set_password(Some("***")).is_ok() {
                parsed.to_string()
            } else {
                "<url>".to_owned()
            }
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparsable url>".to_owned(),
    }
}

/// The TCP port of a server URL, when it names this machine.
pub fn local_port(url: &str, default_port: u16) -> Option<u16> {
    let parsed = Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let local = matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1");
    local.then(|| parsed.port().unwrap_or(default_port))
}

/// A process the benchmark started.
struct Spawned {
    name: String,
    role: Role,
    child: Child,
    log: PathBuf,
}

/// Everything the benchmark created, released on drop. Prefer
/// [`Environment::cleanup`], which reports what could not be released; drop
/// does the same on paths that never reach it (a panic).
pub struct Environment {
    children: Vec<Spawned>,
    /// The services, once started.
    services: Option<Services>,
    mysql_server: Url,
    databases: Vec<String>,
    redis_url: String,
    redis_prefix: String,
    logs: PathBuf,
    /// `RUST_LOG` of the processes it starts.
    service_log: String,
    run_id: String,
    cleaned: bool,
}

impl Environment {
    pub fn new(
        mysql_url: &str,
        redis_url: &str,
        logs: PathBuf,
        service_log: &str,
    ) -> anyhow::Result<Environment> {
        let mut mysql_server = Url::parse(mysql_url).context("--mysql is not a URL")?;
        if mysql_server.scheme() != "mysql" {
            bail!("--mysql must be a mysql:// URL");
        }
        mysql_server.set_path("");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let run_id = run_id.get(..12).unwrap_or(&run_id).to_owned();
        Ok(Environment {
            children: Vec::new(),
            services: None,
            mysql_server,
            databases: Vec::new(),
            redis_url: redis_url.to_owned(),
            redis_prefix: format!("wxlogin_bench_{run_id}:"),
            logs,
            service_log: service_log.to_owned(),
            run_id,
            cleaned: false,
        })
    }

    pub fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// The prefix of every Redis key of this run.
    pub fn redis_prefix(&self) -> &str {
        &self.redis_prefix
    }

    /// Creates `wxlogin_bench_<run id>[_<suffix>]`, dropped at cleanup, and
    /// answers its URL.
    pub async fn create_database(&mut self, suffix: &str) -> anyhow::Result<String> {
        let name = if suffix.is_empty() {
            format!("wxlogin_bench_{}", self.run_id)
        } else {
            format!("wxlogin_bench_{}_{suffix}", self.run_id)
        };
        let admin = connect_admin(&self.mysql_server).await?;
        let created = admin
            .execute_unprepared(&format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ))
            .await;
        drop(admin.close().await);
        created.with_context(|| format!("cannot create database {name}"))?;
        self.databases.push(name.clone());
        let mut url = self.mysql_server.clone();
        url.set_path(&format!("/{name}"));
        Ok(url.to_string())
    }

    /// What every process it starts gets besides its own settings.
    fn common_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("RUST_LOG", self.service_log.clone())];
        // `METRICS_ADDR=off cargo run -p wxlogin-bench` measures the
        // services without their metrics (an A/B of what they cost).
        if let Some(addr) = std::env::var_os("METRICS_ADDR") {
            env.push(("METRICS_ADDR", addr.to_string_lossy().into_owned()));
        }
        env
    }

    /// Starts `program` with exactly `env` (and `PATH`), its output going to
    /// a log file; answers its pid.
    pub fn spawn(
        &mut self,
        name: &str,
        role: Role,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<u32> {
        let log = self.logs.join(format!("{name}.log"));
        let stdout =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let stderr = stdout.try_clone()?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
            .envs(self.common_env())
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id();
        self.children.push(Spawned {
            name: name.to_owned(),
            role,
            child,
            log,
        });
        Ok(pid)
    }

    /// Fails, with the end of its log, when a started process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some((name, status)) = self.services.as_mut().and_then(Services::exited) {
            let log = self.logs.join(format!("{name}.log"));
            bail!(
                "{name} exited ({status}); the end of {}:\n{}",
                log.display(),
                log_tail(&log)
            );
        }
        for spawned in &mut self.children {
            if let Ok(Some(status)) = spawned.child.try_wait() {
                bail!(
                    "{} exited ({status}); the end of {}:\n{}",
                    spawned.name,
                    spawned.log.display(),
                    log_tail(&spawned.log)
                );
            }
        }
        Ok(())
    }

    /// Waits until `probe` answers true, failing when a started process
    /// exits or `START_TIMEOUT` passes.
    pub async fn wait_until<F, Fut>(&mut self, what: &str, mut probe: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if probe().await {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let logs: Vec<String> = self
                    .logged()
                    .iter()
                    .map(|(name, log)| format!("--- {name}:\n{}", log_tail(log)))
                    .collect();
                bail!(
                    "{what} not ready after {}s\n{}",
                    START_TIMEOUT.as_secs(),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every started process and its log file.
    fn logged(&self) -> Vec<(String, PathBuf)> {
        let services = self.services.iter().flat_map(Services::processes);
        services
            .filter_map(|(name, _, log)| Some((name, log?.to_owned())))
            .chain(
                self.children
                    .iter()
                    .map(|s| (s.name.clone(), s.log.clone())),
            )
            .collect()
    }

    /// The started processes, to measure.
    pub fn watched(&self) -> Vec<Watched> {
        let services = self.services.iter().flat_map(Services::processes);
        services
            .filter_map(|(name, pid, _)| {
                Some(Watched {
                    name,
                    pid: pid?,
                    role: Role::Service,
                })
            })
            .chain(self.children.iter().map(|spawned| Watched {
                name: spawned.name.clone(),
                pid: spawned.child.id(),
                role: spawned.role,
            }))
            .collect()
    }

    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// Kills the processes, drops the databases and deletes the Redis keys;
    /// answers what could not be done.
    pub async fn cleanup(&mut self) -> Vec<String> {
        self.cleaned = true;
        self.kill_children();
        remove_external(
            self.mysql_server.clone(),
            std::mem::take(&mut self.databases),
            self.redis_url.clone(),
            self.redis_prefix.clone(),
        )
        .await
    }

    fn kill_children(&mut self) {
        // Dropped, the services' processes are killed.
        self.services = None;
        for spawned in &mut self.children {
            // Already gone is fine; SIGKILL because nothing of theirs needs
            // to survive them.
            drop(spawned.child.kill());
            drop(spawned.child.wait());
        }
        self.children.clear();
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        self.kill_children();
        let server = self.mysql_server.clone();
        let databases = std::mem::take(&mut self.databases);
        let redis_url = self.redis_url.clone();
        let prefix = self.redis_prefix.clone();
        // Drop may run inside the runtime, which cannot block on itself: a
        // thread with a small runtime of its own does the cleanup.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                for warning in
                    runtime.block_on(remove_external(server, databases, redis_url, prefix))
                {
                    eprintln!("wxlogin-bench: {warning}");
                }
            }
        });
        drop(cleanup.join());
    }
}

async fn connect_admin(server: &Url) -> anyhow::Result<DatabaseConnection> {
    let options: MySqlConnectOptions = server
        .as_str()
        .parse()
        .context("the MySQL URL is not valid")?;
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.disable_statement_logging())
        .await
        .with_context(|| format!("cannot connect to MySQL at {}", redact(server.as_str())))?;
    Ok(SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
}

async fn remove_external(
    server: Url,
    databases: Vec<String>,
    redis_url: String,
    prefix: String,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if !databases.is_empty() {
        match connect_admin(&server).await {
            Ok(admin) => {
                for name in &databases {
                    if let Err(error) = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS `{name}`"))
                        .await
                    {
                        warnings.push(format!("could not drop database {name}: {error}"));
                    }
                }
                drop(admin.close().await);
            }
            Err(error) => warnings.push(format!(
                "could not drop databases {}: {error:#}",
                databases.join(", ")
            )),
        }
    }
    if let Err(error) = delete_keys(&redis_url, &prefix).await {
        warnings.push(format!(
            "could not delete the Redis keys {prefix}*: {error:#}"
        ));
    }
    warnings
}

async fn delete_keys(redis_url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    const LINES: usize = 20;
    let read = || -> io::Result<Vec<String>> {
        let file = File::open(path)?;
        BufReader::new(file).lines().collect()
    };
    match read() {
        Ok(lines) => lines[lines.len().saturating_sub(LINES)..].join("\n"),
        Err(error) => format!("(cannot read it: {error})"),
    }
}

/// The running system: where to reach the gateway and the simulator.
#[derive(Debug, Clone)]
pub struct Stack {
    pub gateway: String,
    pub sim: String,
}

/// The data keys of the benchmark's user service and gateway (personal
/// data is sealed as in production, so the benchmark counts its cost).
const DATA_ENCRYPTION_KEYS: &str = "bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const DATA_INDEX_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// Starts the simulator, then auth, user and gateway on free loopback
/// ports, against `database_url` and the environment's Redis prefix, and
/// waits until the gateway is ready.
pub async fn start_services(
    env: &mut Environment,
    paths: &Paths,
    database_url: &str,
    client: &reqwest::Client,
) -> anyhow::Result<Stack> {
    let sim_port = free_port();
    let sim = format!("http://127.0.0.1:{sim_port}");
    env.spawn(
        "wechat-sim",
        Role::Service,
        &paths.release_bin("wxlogin-wechat-sim"),
        &[],
        &[
            ("SIM_ADDR", format!("127.0.0.1:{sim_port}")),
            ("SIM_CODE_TTL_SECS", SIM_CODE_TTL_SECS.to_owned()),
        ],
    )?;
    let stats = format!("{sim}/sim/stats");
    env.wait_until("the WeChat simulator", || answers_ok(client, &stats))
        .await?;

    let release = paths.target.join("release");
    // The budgets as deployed: every login checks its two login budgets
    // (in the round trip that claims its code), and none of the
    // benchmark's requests spends one (they count codes WeChat refuses,
    // failed decryptions and phone numbers). The user service shares
    // auth's Redis for its user cache, as in production.
    let services = SystemBuilder::new()?
        .processes(ProcessOptions {
            binary: Arc::new(move |name| release.join(name)),
            free_port,
            logs: Some(env.logs().to_owned()),
        })
        .stores(database_url, env.redis_url(), env.redis_prefix())
        .set_all(env.common_env())
        .set_all([
            ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
            ("WECHAT_API_BASE", sim),
            ("WECHAT_APPID", wxlogin_wechat_sim::DEFAULT_APPID.to_owned()),
            (
                "WECHAT_SECRET",
                wxlogin_wechat_sim::DEFAULT_SECRET.to_owned(),
            ),
            ("DATA_ENCRYPTION_KEYS", DATA_ENCRYPTION_KEYS.to_owned()),
            ("DATA_INDEX_KEY", DATA_INDEX_KEY.to_owned()),
        ])
        .start()
        .await?;
    let gateway = services.gateway_url()?;
    let sim = format!("http://127.0.0.1:{sim_port}");
    env.services = Some(services);
    let readyz = format!("{gateway}/readyz");
    env.wait_until("the gateway", || answers_ok(client, &readyz))
        .await?;
    Ok(Stack { gateway, sim })
}

/// Whether a GET of `url` answers 200.
pub async fn answers_ok(client: &reqwest::Client, url: &str) -> bool {
    matches!(
        client
            .get(url)
            .send()
            .await
            .map(|response| response.status()),
        Ok(StatusCode::OK)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        assert_eq!(
            redact("mysql://root:hunter2@db:3306/x"),
            "mysql://root:***@db:3306/x"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert!(!redact("not a url hunter2").contains("hunter2"));
    }

    #[test]
    fn local_servers_are_recognised() {
        assert_eq!(
            local_port("mysql://root@127.0.0.1:3307/db", 3306),
            Some(3307)
        );
        assert_eq!(local_port("redis://localhost", 6379), Some(6379));
        assert_eq!(local_port("mysql://root@db.internal:3306", 3306), None);
    }
}
