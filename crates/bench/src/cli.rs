//! The command line: the benchmark's settings, and the hidden subcommands
//! that run the floor servers as processes of their own.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Measures wxlogin in production topology (gateway, auth, user and the
/// WeChat simulator as separate release-built processes, against MariaDB and
/// Redis), next to the floors of this machine.
#[derive(Debug, Parser)]
#[command(
    name = "wxlogin-bench",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The floor servers, started by the benchmark itself from its own
/// executable; not meant to be run by hand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A tonic server with one unary RPC that does one Redis GET.
    #[command(hide = true)]
    FloorGrpc(FloorGrpcArgs),
    /// An axum server whose `GET /v1/me` calls the floor gRPC server.
    #[command(hide = true)]
    FloorHttp(FloorHttpArgs),
}

#[derive(Debug, Args)]
pub struct FloorGrpcArgs {
    #[arg(long)]
    pub addr: SocketAddr,
    /// Taken from the environment so that a password never shows in `ps`.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis: String,
    #[arg(long, env = "REDIS_KEY_PREFIX")]
    pub prefix: String,
}

#[derive(Debug, Args)]
pub struct FloorHttpArgs {
    #[arg(long)]
    pub addr: SocketAddr,
    /// The floor gRPC server, `http://host:port`.
    #[arg(long)]
    pub grpc_url: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// How long each scenario and each floor is measured (e.g. 5s, 500ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,

    /// How long each one runs unmeasured first (0 to skip).
    #[arg(long, default_value = "1s", value_parser = parse_warmup)]
    pub warmup: Duration,

    /// Requests in flight at any time (one worker task each).
    #[arg(long, default_value_t = 64, value_parser = parse_concurrency)]
    pub concurrency: usize,

    /// Which scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = Scenario::ALL
    )]
    pub scenarios: Vec<Scenario>,

    /// Measure this machine's floors (the default).
    #[arg(long, overrides_with = "no_floors")]
    floors: bool,

    /// Skip the floors.
    #[arg(long, overrides_with = "floors")]
    no_floors: bool,

    /// Where the JSON report goes [default: target/bench/latest.json].
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Use the release binaries already built instead of running cargo.
    #[arg(long)]
    pub no_build: bool,

    /// MySQL/MariaDB server; the benchmark creates and drops its own
    /// databases there (a database name in the URL is ignored).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "mysql://root@127.0.0.1:3306"
    )]
    pub mysql: String,

    /// Redis server; the benchmark uses its own key prefix and deletes its
    /// keys at the end.
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis: String,

    /// The most login codes minted for one scenario; a scenario that runs
    /// out ends early and says so.
    #[arg(long, default_value_t = 200_000)]
    pub max_codes: usize,

    /// Users registered before the returning-login and mixed scenarios (and
    /// rows before the existing-row MySQL floor).
    #[arg(long, default_value_t = 1000, value_parser = parse_at_least_one)]
    pub users: usize,

    /// The simulator's added latency in the slow-wechat scenario, in ms.
    #[arg(long, default_value_t = 50)]
    pub slow_wechat_ms: u64,

    /// Logins in flight in the slow-wechat scenario.
    #[arg(long, default_value_t = 1024, value_parser = parse_concurrency)]
    pub slow_wechat_in_flight: usize,

    /// `RUST_LOG` of the services: `warn` measures them without their
    /// per-request log lines; `info` (their default) with them.
    #[arg(long, default_value = "warn")]
    pub service_log: String,

    /// Logged-in users whose tokens `/v1/me`, profile and the HTTP floor cycle
    /// through.
    #[arg(long, default_value_t = 256, value_parser = parse_at_least_one)]
    pub tokens: usize,
}

impl RunArgs {
    /// Whether the floors are measured: yes unless `--no-floors` came last.
    pub fn floors(&self) -> bool {
        self.floors || !self.no_floors
    }
}

/// A workload driven through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    /// `POST /v1/login` with a fresh code of a new openid each time.
    FirstLogin,
    /// `POST /v1/login` with fresh codes of already registered users.
    ReturningLogin,
    /// `GET /v1/me` with valid tokens.
    Me,
    /// `GET /v1/verify` (forward authentication) with valid tokens.
    Verify,
    /// `POST /v1/me/profile` with data sealed with the user's session_key.
    Profile,
    /// 10% returning logins, 90% `GET /v1/me`.
    Mixed,
    /// Returning logins with WeChat answering after `--slow-wechat-ms` and
    /// `--slow-wechat-in-flight` logins in flight.
    SlowWechat,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::FirstLogin,
        Scenario::ReturningLogin,
        Scenario::Me,
        Scenario::Verify,
        Scenario::Profile,
        Scenario::Mixed,
        Scenario::SlowWechat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::FirstLogin => "first-login",
            Scenario::ReturningLogin => "returning-login",
            Scenario::Me => "me",
            Scenario::Verify => "verify",
            Scenario::Profile => "profile",
            Scenario::Mixed => "mixed",
            Scenario::SlowWechat => "slow-wechat",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `5s`, `1.5s`, `500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration_text(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s, 500ms or 1m"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_text(text)?;
    if duration < Duration::from_millis(100) {
        return Err("must be at least 100ms".to_owned());
    }
    Ok(duration)
}

fn parse_warmup(text: &str) -> Result<Duration, String> {
    parse_duration_text(text)
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    let value: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(1..=10_000).contains(&value) {
        return Err("must be between 1 and 10000".to_owned());
    }
    Ok(value)
}

fn parse_at_least_one(text: &str) -> Result<usize, String> {
    let value: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wxlogin-bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_a_laptop_sized_run_of_everything() {
        let cli = parse(&[]).unwrap();
        assert!(cli.command.is_none());
        let run = cli.run;
        assert_eq!(run.duration, Duration::from_secs(5));
        assert_eq!(run.warmup, Duration::from_secs(1));
        assert_eq!(run.concurrency, 64);
        assert_eq!(run.scenarios, Scenario::ALL.to_vec());
        assert!(run.floors());
        assert!(!run.no_build);
        assert!(run.out.is_none());
    }

    #[test]
    fn options_are_read() {
        let cli = parse(&[
            "--duration",
            "1.5s",
            "--warmup",
            "0",
            "--concurrency",
            "8",
            "--scenarios",
            "me,first-login",
            "--no-floors",
            "--out",
            "x.json",
            "--no-build",
            "--mysql",
            "mysql://u:p@db:3307/ignored",
            "--redis",
            "redis://cache:6380",
        ])
        .unwrap();
        let run = cli.run;
        assert_eq!(run.duration, Duration::from_millis(1500));
        assert_eq!(run.warmup, Duration::ZERO);
        assert_eq!(run.concurrency, 8);
        assert_eq!(run.scenarios, vec![Scenario::Me, Scenario::FirstLogin]);
        assert!(!run.floors());
        assert_eq!(run.out, Some(PathBuf::from("x.json")));
        assert!(run.no_build);
        assert_eq!(run.mysql, "mysql://u:p@db:3307/ignored");
        assert_eq!(run.redis, "redis://cache:6380");
    }

    #[test]
    fn the_last_of_floors_and_no_floors_wins() {
        assert!(parse(&["--no-floors", "--floors"]).unwrap().run.floors());
        assert!(!parse(&["--floors", "--no-floors"]).unwrap().run.floors());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration_text("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration_text("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration_text("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration_text("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration_text("5h").is_err());
        assert!(parse_duration_text("fast").is_err());
        assert!(parse(&["--duration", "10ms"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--scenarios", "me,bogus"]).is_err());
        assert!(parse(&["--tokens", "0"]).is_err());
    }

    #[test]
    fn floor_servers_are_hidden_subcommands() {
        let cli = parse(&[
            "floor-http",
            "--addr",
            "127.0.0.1:9000",
            "--grpc-url",
            "http://127.0.0.1:9001",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::FloorHttp(_))));
        let help = parse(&["--help"]).unwrap_err().to_string();
        assert!(!help.contains("floor-http"), "{help}");
    }
}
