//! `wxlogin-bench`: measures wxlogin as it runs in production (gateway,
//! auth, user and the WeChat simulator as separate release-built processes,
//! against MariaDB and Redis), driving the gateway over real HTTP, and
//! measures in the same run the floors of the machine: what MySQL, Redis and
//! a minimal axum → tonic → Redis path deliver with the same client
//! libraries and concurrency. Every scenario is reported next to its floor.
//!
//! It owns measuring and nothing else: it must not change how the services
//! run (they are started by `wxlogin_standalone::SystemBuilder` with only
//! settings a deployment would give them, plus `RUST_LOG`, `warn` unless
//! `--service-log` says otherwise), and it must leave nothing behind (its databases are
//! dropped, its Redis keys deleted, its processes killed, also on Ctrl-C
//! and on a panic).
//!
//! The load generator runs on the same machine as everything it measures
//! and competes with it for CPU; its own CPU time is reported next to the
//! services'.

pub mod cli;
mod floors;
mod load;
mod metrics;
mod orchestrate;
mod report;
mod scenarios;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};

use crate::{
    cli::{Cli, Command, RunArgs},
    load::{LoadResult, Workload},
    metrics::{Machine, Role, Watched, Window, WindowUsage},
    orchestrate::{Environment, Paths, redact},
    report::{PeakMemory, Report, RunReport, Settings},
    scenarios::{Driver, Prepared},
};

/// Runs what the command line asks for.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::FloorGrpc(args)) => floors::servers::serve_grpc(args).await,
        Some(Command::FloorHttp(args)) => floors::servers::serve_http(args).await,
        None => run(cli.run).await,
    }
}

/// How each workload is run: warm-up, then a measured window during which
/// the watched processes' CPU and memory are recorded.
#[derive(Clone)]
pub(crate) struct Runner {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Watched besides the processes the environment started: this process
    /// and the external servers.
    others: Vec<Watched>,
    watched: Arc<[Watched]>,
}

impl Runner {
    fn new(args: &RunArgs, env: &Environment, others: Vec<Watched>) -> Runner {
        let mut runner = Runner {
            concurrency: args.concurrency,
            warmup: args.warmup,
            duration: args.duration,
            others,
            watched: Arc::from(Vec::new()),
        };
        runner.watched = runner.watch(env);
        runner
    }

    fn watch(&self, env: &Environment) -> Arc<[Watched]> {
        let mut watched = env.watched();
        watched.extend(self.others.iter().cloned());
        watched.into()
    }

    /// The wxlogin processes it watches.
    pub fn services(&self) -> impl Iterator<Item = &Watched> {
        self.watched
            .iter()
            .filter(|watched| watched.role == Role::Service)
    }

    /// The same runner, watching every process the environment has now.
    pub fn watching(&self, env: &Environment) -> Runner {
        Runner {
            watched: self.watch(env),
            ..self.clone()
        }
    }

    /// Runs the workload unmeasured for the warm-up time (if any).
    pub async fn warm_up<W: Workload>(
        &self,
        workload: &Arc<W>,
    ) -> anyhow::Result<Option<LoadResult>> {
        if self.warmup.is_zero() {
            return Ok(None);
        }
        load::run(workload.clone(), self.concurrency, self.warmup)
            .await
            .map(Some)
    }

    /// Runs the workload for the measured window.
    pub async fn measure<W: Workload>(
        &self,
        workload: Arc<W>,
    ) -> anyhow::Result<(LoadResult, WindowUsage)> {
        let window = Window::begin(self.watched.clone());
        let load = load::run(workload, self.concurrency, self.duration).await;
        let usage = window.end().await;
        Ok((load?, usage))
    }
}

/// One shared HTTP client: HTTP/1.1 keep-alive, a connection per worker,
/// never through a proxy (everything is on loopback).
fn http_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(concurrency.max(16))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

/// The command line as typed, with passwords in URLs masked.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            let shown = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    format!("{flag}={}", redact(value))
                }
                _ if arg.contains("://") => redact(&arg),
                _ => arg,
            };
            if shown.contains(' ') {
                format!("'{shown}'")
            } else {
                shown
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// MariaDB and Redis, when they listen on this machine and may be watched.
fn external_servers(args: &RunArgs) -> Vec<Watched> {
    let servers = [(&args.mysql, 3306, "mysql"), (&args.redis, 6379, "redis")];
    servers
        .into_iter()
        .filter_map(|(url, default_port, fallback)| {
            let pid = metrics::listener_pid(orchestrate::local_port(url, default_port)?)?;
            Some(Watched {
                name: metrics::process_name(pid).unwrap_or_else(|| fallback.to_owned()),
                pid,
                role: Role::External,
            })
        })
        .collect()
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let paths = Paths::discover();
    let machine = Machine::describe();

    let build_seconds = if args.no_build {
        None
    } else {
        eprintln!("» building the services (cargo build --release)");
        let build_started = Instant::now();
        orchestrate::build(&paths).await?;
        Some(build_started.elapsed().as_secs_f64())
    };

    let mut env = Environment::new(
        &args.mysql,
        &args.redis,
        paths.bench_dir().join("logs"),
        &args.service_log,
    )?;
    let measured = tokio::select! {
        result = measure_all(&args, &paths, &mut env) => result,
        () = wxlogin_common::shutdown::signal() => Err(anyhow!("interrupted")),
    };
    let warnings = env.cleanup().await;
    for warning in &warnings {
        eprintln!("wxlogin-bench: {warning}");
    }
    let measured = measured?;

    let settings = Settings {
        concurrency: args.concurrency,
        duration_seconds: args.duration.as_secs_f64(),
        warmup_seconds: args.warmup.as_secs_f64(),
        scenarios: args.scenarios.iter().map(ToString::to_string).collect(),
        floors: args.floors(),
        mysql: redact(&args.mysql),
        redis: redact(&args.redis),
        users: args.users,
        tokens: args.tokens,
        max_codes: args.max_codes,
        db_pool_size: wxlogin_user::config::DEFAULT_DB_MAX_CONNECTIONS,
        services: format!("services built --release, RUST_LOG={}", args.service_log),
    };
    let report = Report {
        tool: "wxlogin-bench".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
        wall_seconds: started.elapsed().as_secs_f64(),
        build_seconds,
        command_line: command_line(),
        load_average_at_end: metrics::load_average(),
        load_generator_note: format!(
            "the load generator (\"bench\", pid {}) runs on this same {}-core machine and competes \
             with the services for CPU; its CPU time is counted next to theirs",
            std::process::id(),
            machine.cores
        ),
        machine,
        settings,
        comparisons: report::compare(&measured.scenarios, &measured.floors),
        scenarios: measured.scenarios,
        floors: measured.floors,
        peak_memory: measured.peak_memory,
        warnings,
    };

    print!("{}", report::render(&report));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| paths.bench_dir().join("latest.json"));
    write_json(&out, &report)?;
    println!("JSON report: {}", out.display());
    Ok(())
}

fn write_json(out: &PathBuf, report: &Report) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(out, json + "\n").with_context(|| format!("cannot write {}", out.display()))
}

struct Measured {
    scenarios: Vec<RunReport>,
    floors: Vec<RunReport>,
    peak_memory: Vec<PeakMemory>,
}

async fn measure_all(
    args: &RunArgs,
    paths: &Paths,
    env: &mut Environment,
) -> anyhow::Result<Measured> {
    let client = http_client(args.concurrency)?;
    let mut scenarios = Vec::new();
    let mut floors = Vec::new();

    let mut others = vec![Watched {
        name: "bench".to_owned(),
        pid: std::process::id(),
        role: Role::LoadGenerator,
    }];
    others.extend(external_servers(args));

    if !args.scenarios.is_empty() {
        eprintln!("» starting the services (logs in {})", env.logs().display());
        let database_url = env.create_database("").await?;
        let stack = orchestrate::start_services(env, paths, &database_url, &client).await?;
        let runner = Runner::new(args, env, others.clone());
        let driver = Driver {
            client: client.clone(),
            gateway: stack.gateway,
            sim: stack.sim,
            concurrency: args.concurrency,
        };
        let mut prepared = Prepared::default();
        for scenario in &args.scenarios {
            eprintln!("» {scenario}");
            let cx = scenarios::Context {
                driver: &driver,
                runner: &runner,
                args,
            };
            let report = scenarios::run(*scenario, cx, &mut prepared).await?;
            eprintln!(
                "  {} req/s, p50 {}, p99 {}, errors {}",
                report::format_rate(report.ok_per_second),
                report::format_ms(report.latency_ms.p50_ms),
                report::format_ms(report.latency_ms.p99_ms),
                report::format_errors(&report.errors_by_bucket)
            );
            scenarios.push(report);
            env.check_alive()?;
        }
    }
    if args.floors() {
        let runner = Runner::new(args, env, others.clone());
        floors = floors::run_all(&runner, env, &client, args).await?;
        env.check_alive()?;
    }

    let mut everyone = env.watched();
    everyone.extend(others);
    let peak_memory = everyone
        .into_iter()
        .map(|watched| PeakMemory {
            vm_hwm_kib: metrics::status_kib(watched.pid, "VmHWM"),
            name: watched.name,
            role: watched.role,
            pid: watched.pid,
        })
        .collect();
    Ok(Measured {
        scenarios,
        floors,
        peak_memory,
    })
}
