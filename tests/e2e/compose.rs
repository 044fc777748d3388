//! docker-compose.yml, run for real without a Docker engine: the services it
//! defines are started as separate processes from the workspace's binaries,
//! each with exactly the `command` and `environment` the file gives it, in the
//! order its `depends_on` conditions impose, and probed with its own
//! `healthcheck`; then a user logs in through the gateway.
//!
//! The test stands in for Docker and changes exactly this, and nothing else:
//! - `${VAR}`, `${VAR:-default}`, `${VAR:?message}` are filled from
//!   `.env.example` alone, as `docker compose --env-file .env.example` would
//!   (never from the test's own environment); its `COMPOSE_PROFILES` selects
//!   the services with a profile.
//! - `mysql` and `redis` are not started: `DATABASE_URL` becomes a fresh test
//!   database and `REDIS_URL` the test Redis (from `wxlogin_testkit`), and
//!   `REDIS_KEY_PREFIX` is added, set to the test's own prefix. First the test
//!   checks that `DATABASE_URL` is the one the `mysql` service's `MYSQL_USER`,
//!   `MYSQL_PASSWORD` and `MYSQL_DATABASE` create, and `REDIS_URL` names the
//!   `redis` service.
//! - Hostnames map to loopback, and ports to free ones. In Compose each service
//!   has its own network namespace, so the fixed ports never meet; here all
//!   services share one host, where those ports may be taken by anything else
//!   (a second run of this test, the services run by hand). So every `0.0.0.0:PORT`
//!   a service listens on becomes `127.0.0.1:FREE`; every `scheme://SERVICE:PORT`
//!   in another service's environment becomes `scheme://127.0.0.1:FREE` of that
//!   service; and `127.0.0.1:PORT` in a service's health check becomes its own
//!   `127.0.0.1:FREE`.
//! - A process's environment holds only `PATH` besides what the file gives:
//!   in a container it is the image's (deploy/Dockerfile sets none of ours)
//!   plus the file's. Health checks are run until they pass, not at the
//!   file's `interval`.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, which
//! `tests/run.sh` does): `cargo test` builds no binary of another package.
//! They are taken from where cargo put them (`wxlogin_testkit::binary`:
//! `CARGO_TARGET_DIR` or `target`, or `WXLOGIN_BIN_DIR`), and run as
//! `wxlogin_standalone::process::Process`es, as the services' builder runs
//! them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value as Json, json};
use serde_yaml_ng::Value;
use wxlogin_standalone::process::Process;
use wxlogin_testkit::{TestDatabase, TestRedisPrefix, free_port, workspace_root};

/// The services the test does not start: its own MariaDB and Redis stand in.
const EXTERNAL: [&str; 2] = ["mysql", "redis"];

/// How long a service may take to become healthy, or to complete.
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often an unhealthy service's health check is run again.
const HEALTH_RETRY: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------
// Reading the compose file as Compose does.

/// An env file: `NAME=value` lines, blank lines and `#` comments skipped,
/// values verbatim.
fn read_env_file(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: {line:?} is not NAME=value", path.display()));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// Compose's variable substitution: `$$`, `$NAME`, `${NAME}`,
/// `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}` and
/// `${NAME?message}`. Where Compose would substitute "" for an unset variable
/// without a default (and warn), the test fails.
fn interpolate(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(braced) = rest.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {text:?}"));
            out.push_str(&substitute(&braced[..end], vars, text));
            rest = &braced[end + 1..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            assert!(end > 0, "a lone $ in {text:?} (write $$)");
            out.push_str(&substitute(&rest[..end], vars, text));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn substitute(expression: &str, vars: &HashMap<String, String>, text: &str) -> String {
    let name_end = expression
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expression.len());
    let (name, modifier) = expression.split_at(name_end);
    let value = vars.get(name);
    let non_empty = value.filter(|value| !value.is_empty());
    let missing = |message: &str| -> String {
        panic!("{name} is required by {text:?} but not set in .env.example: {message}")
    };
    if modifier.is_empty() {
        value.cloned().unwrap_or_else(|| missing("no default"))
    } else if let Some(default) = modifier.strip_prefix(":-") {
        non_empty.cloned().unwrap_or_else(|| default.to_owned())
    } else if let Some(default) = modifier.strip_prefix('-') {
        value.cloned().unwrap_or_else(|| default.to_owned())
    } else if let Some(message) = modifier.strip_prefix(":?") {
        non_empty.cloned().unwrap_or_else(|| missing(message))
    } else if let Some(message) = modifier.strip_prefix('?') {
        value.cloned().unwrap_or_else(|| missing(message))
    } else {
        panic!("unsupported substitution ${{{expression}}} in {text:?}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

/// One service of the compose file, interpolated.
#[derive(Debug)]
struct Service {
    name: String,
    profiles: Vec<String>,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    depends_on: Vec<(String, Condition)>,
    /// `healthcheck.test`, `CMD` / `CMD-SHELL` included.
    healthcheck: Option<Vec<String>>,
    /// The container ports it publishes.
    published: Vec<u16>,
}

fn scalar(value: &Value, what: &str) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => panic!("{what}: expected a string or a number, found {other:?}"),
    }
}

fn list(value: &Value, what: &str, vars: &HashMap<String, String>) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| interpolate(&scalar(item, what), vars))
            .collect(),
        other => panic!("{what}: write it as a list, not {other:?}"),
    }
}

fn parse_service(name: &str, spec: &Value, vars: &HashMap<String, String>) -> Service {
    let what = |field: &str| format!("services.{name}.{field}");
    let environment = match &spec["environment"] {
        Value::Null => BTreeMap::new(),
        Value::Mapping(map) => map
            .iter()
            .map(|(key, value)| {
                let key = scalar(key, &what("environment"));
                // A bare name passes the caller's variable through: the test
                // could not know its value.
                assert!(
                    !value.is_null(),
                    "{}: give {key} a value",
                    what("environment")
                );
                let value = interpolate(&scalar(value, &what(&key)), vars);
                (key, value)
            })
            .collect(),
        other => panic!(
            "{}: write it as a mapping, not {other:?}",
            what("environment")
        ),
    };
    let depends_on = match &spec["depends_on"] {
        Value::Null => Vec::new(),
        Value::Sequence(names) => names
            .iter()
            .map(|dep| (scalar(dep, &what("depends_on")), Condition::Started))
            .collect(),
        Value::Mapping(deps) => deps
            .iter()
            .map(|(dep, how)| {
                let condition = match how["condition"].as_str() {
                    None | Some("service_started") => Condition::Started,
                    Some("service_healthy") => Condition::Healthy,
                    Some("service_completed_successfully") => Condition::CompletedSuccessfully,
                    Some(other) => panic!("{}: unknown condition {other}", what("depends_on")),
                };
                (scalar(dep, &what("depends_on")), condition)
            })
            .collect(),
        other => panic!("{}: unexpected {other:?}", what("depends_on")),
    };
    let healthcheck = match &spec["healthcheck"]["test"] {
        Value::Null => None,
        test => Some(list(test, &what("healthcheck.test"), vars)),
    };
    let published = list(&spec["ports"], &what("ports"), vars)
        .iter()
        .map(|mapping| {
            // [[host_ip:]host_port:]container_port[/protocol]
            let container = mapping.split('/').next().unwrap_or(mapping);
            let container = container.rsplit(':').next().unwrap_or(container);
            container
                .parse()
                .unwrap_or_else(|_| panic!("{}: cannot read {mapping:?}", what("ports")))
        })
        .collect();
    Service {
        name: name.to_owned(),
        profiles: list(&spec["profiles"], &what("profiles"), vars),
        command: list(&spec["command"], &what("command"), vars),
        environment,
        depends_on,
        healthcheck,
        published,
    }
}

/// The services of docker-compose.yml, in the file's order, with `.env.example`'s
/// values; and the profiles `.env.example` enables.
fn load_compose() -> (Vec<Service>, HashMap<String, String>) {
    let root = workspace_root();
    let vars = read_env_file(&root.join(".env.example"));
    let path = root.join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("read docker-compose.yml");
    let mut yaml: Value = serde_yaml_ng::from_str(&text).expect("docker-compose.yml is YAML");
    yaml.apply_merge().expect("docker-compose.yml's merge keys");
    let services = yaml["services"]
        .as_mapping()
        .expect("docker-compose.yml has services")
        .iter()
        .map(|(name, spec)| parse_service(&scalar(name, "service name"), spec, &vars))
        .collect();
    (services, vars)
}

fn service<'a>(services: &'a [Service], name: &str) -> &'a Service {
    services
        .iter()
        .find(|service| service.name == name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

/// Splits `scheme://[userinfo@]host:port[/rest]` into what comes before the
/// host, the host, the port and the rest.
fn split_authority(url: &str) -> Option<(&str, &str, u16, &str)> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find('/')
        .map_or(url.len(), |slash| start + slash);
    let host_start = url[start..end]
        .rfind('@')
        .map_or(start, |at| start + at + 1);
    let (host, port) = url[host_start..end].rsplit_once(':')?;
    Some((&url[..host_start], host, port.parse().ok()?, &url[end..]))
}

/// `value` with its `host:port` replaced by what `to(host, port)` returns,
/// if anything; values that are not such URLs unchanged.
fn rewrite_authority(value: &str, to: impl Fn(&str, u16) -> Option<String>) -> String {
    match split_authority(value) {
        Some((before, host, port, rest)) => match to(host, port) {
            Some(address) => format!("{before}{address}{rest}"),
            None => value.to_owned(),
        },
        None => value.to_owned(),
    }
}

/// The host and port of a URL.
fn host_port(url: &str) -> (String, u16) {
    let (_, host, port, _) =
        split_authority(url).unwrap_or_else(|| panic!("{url:?} has no host:port"));
    (host.to_owned(), port)
}

// ---------------------------------------------------------------------------
// Turning a service into a local process.

/// Each (service, port it listens on) → the free loopback port it listens on
/// here.
#[derive(Debug, Default)]
struct Ports(HashMap<(String, u16), u16>);

impl Ports {
    fn allocate(services: &[&Service]) -> Ports {
        let mut ports = Ports::default();
        for service in services {
            for value in service.environment.values() {
                if let Some(port) = value.strip_prefix("0.0.0.0:") {
                    let port = port.parse().expect("a listen port");
                    ports.0.insert((service.name.clone(), port), free_port());
                }
            }
        }
        ports
    }

    /// The local port of `service`'s `port`; `user` names who expects it
    /// there, for the message when nothing listens.
    fn get(&self, service: &str, port: u16, user: &str) -> u16 {
        *self.0.get(&(service.to_owned(), port)).unwrap_or_else(|| {
            panic!(
                "{user} expects {service}:{port}, but {service} listens on no such port \
                 (no 0.0.0.0:{port} in its environment)"
            )
        })
    }
}

/// A service as the test runs it.
#[derive(Debug)]
struct Local {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// The health check's program and arguments.
    healthcheck: Option<(PathBuf, Vec<String>)>,
}

/// The test's stand-ins for the `mysql` and `redis` services.
struct Stand {
    database_url: String,
    redis_url: String,
    redis_prefix: String,
}

/// One of the workspace's binaries: the compose file names no other.
fn binary(name: &str) -> PathBuf {
    assert!(
        name.starts_with("wxlogin-"),
        "{name} is not one of our binaries"
    );
    wxlogin_testkit::binary(name)
}

fn localize(
    service: &Service,
    services: &[Service],
    ports: &Ports,
    stand: &Stand,
    expected_database_url: &str,
) -> Local {
    let is_service = |host: &str| services.iter().any(|s| s.name == host);
    let mut env = BTreeMap::new();
    for (name, value) in &service.environment {
        let local = if let Some(port) = value.strip_prefix("0.0.0.0:") {
            let port = port.parse().expect("a listen port");
            format!(
                "127.0.0.1:{}",
                ports.get(&service.name, port, "a listen address")
            )
        } else if name == "DATABASE_URL" {
            assert_eq!(
                value, expected_database_url,
                "{}'s DATABASE_URL is not the database the mysql service creates",
                service.name
            );
            stand.database_url.clone()
        } else if name == "REDIS_URL" {
            assert_eq!(
                host_port(value),
                ("redis".to_owned(), 6379),
                "{}'s REDIS_URL does not name the redis service",
                service.name
            );
            stand.redis_url.clone()
        } else {
            rewrite_authority(value, |host, port| {
                assert!(
                    !EXTERNAL.contains(&host),
                    "{}: {name} names {host}, which the test does not stand in for",
                    service.name
                );
                is_service(host).then(|| {
                    let user = format!("{}'s {name}", service.name);
                    format!("127.0.0.1:{}", ports.get(host, port, &user))
                })
            })
        };
        env.insert(name.clone(), local);
    }
    if env.contains_key("REDIS_URL") {
        env.insert("REDIS_KEY_PREFIX".to_owned(), stand.redis_prefix.clone());
    }

    let (program, args) = service
        .command
        .split_first()
        .unwrap_or_else(|| panic!("{}: give it a command", service.name));
    let healthcheck = service.healthcheck.as_ref().map(|test| {
        let Some((kind, test)) = test.split_first() else {
            panic!("{}: an empty healthcheck.test", service.name)
        };
        assert_eq!(
            kind, "CMD",
            "{}: our image has no shell tools; use the CMD form",
            service.name
        );
        let (program, args) = test.split_first().expect("a health check program");
        let args = args
            .iter()
            .map(|arg| {
                rewrite_authority(arg, |host, port| {
                    matches!(host, "127.0.0.1" | "localhost").then(|| {
                        let user = format!("{}'s health check", service.name);
                        format!("127.0.0.1:{}", ports.get(&service.name, port, &user))
                    })
                })
            })
            .collect();
        (binary(program), args)
    });
    Local {
        name: service.name.clone(),
        program: binary(program),
        args: args.to_vec(),
        env,
        healthcheck,
    }
}

// ---------------------------------------------------------------------------
// Running them.

/// The running processes. Dropping it kills them; if the test failed, their
/// logs are printed first.
struct Processes {
    log_dir: PathBuf,
    children: Vec<Process>,
}

impl Processes {
    fn new() -> Processes {
        let log_dir =
            std::env::temp_dir().join(format!("wxlogin-compose-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&log_dir).expect("a log directory");
        Processes {
            log_dir,
            children: Vec::new(),
        }
    }

    fn log(&self, service: &str) -> String {
        self.children
            .iter()
            .find(|child| child.name() == service)
            .map(Process::log)
            .unwrap_or_default()
    }

    fn start(&mut self, service: &Local) {
        let mut child = Process::new(
            &service.name,
            &service.program,
            service.args.clone(),
            service.env.clone().into_iter().collect(),
            Some(self.log_dir.join(format!("{}.log", service.name))),
        );
        child
            .start()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", service.name));
        self.children.push(child);
    }

    /// How `service` exited, once it has.
    fn exited(&mut self, service: &str) -> Option<std::process::ExitStatus> {
        self.children
            .iter_mut()
            .find(|child| child.name() == service)
            .unwrap_or_else(|| panic!("{service} was not started"))
            .exited()
    }

    /// Waits until `service` satisfies `condition`, as `depends_on` asks.
    async fn wait_for(&mut self, service: &Local, condition: Condition) {
        let deadline = Instant::now() + DEPENDENCY_TIMEOUT;
        match condition {
            Condition::Started => {}
            Condition::CompletedSuccessfully => loop {
                if let Some(status) = self.exited(&service.name) {
                    assert!(
                        status.success(),
                        "{} exited with {status}; its log:\n{}",
                        service.name,
                        self.log(&service.name)
                    );
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not complete; its log:\n{}",
                    service.name,
                    self.log(&service.name)
                );
                tokio::time::sleep(HEALTH_RETRY).await;
            },
            Condition::Healthy => {
                let (program, args) = service
                    .healthcheck
                    .clone()
                    .unwrap_or_else(|| panic!("{} has no health check", service.name));
                loop {
                    if let Some(status) = self.exited(&service.name) {
                        panic!(
                            "{} exited with {status}; its log:\n{}",
                            service.name,
                            self.log(&service.name)
                        );
                    }
                    // Inside the container, with the container's environment.
                    let (program, args, env) = (program.clone(), args.clone(), service.env.clone());
                    let output = tokio::task::spawn_blocking(move || {
                        Command::new(program)
                            .args(args)
                            .env_clear()
                            .envs(env)
                            .output()
                    })
                    .await
                    .expect("the health check task")
                    .expect("run the health check");
                    if output.status.success() {
                        return;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} did not become healthy: {}; its log:\n{}",
                        service.name,
                        String::from_utf8_lossy(&output.stderr),
                        self.log(&service.name)
                    );
                    tokio::time::sleep(HEALTH_RETRY).await;
                }
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            child.kill();
        }
        if std::thread::panicking() {
            for child in &self.children {
                eprintln!("----- {} -----\n{}", child.name(), child.log());
            }
        }
        drop(std::fs::remove_dir_all(&self.log_dir));
    }
}

// ---------------------------------------------------------------------------

/// The services `.env.example`'s `COMPOSE_PROFILES` starts.
fn active<'a>(services: &'a [Service], vars: &HashMap<String, String>) -> Vec<&'a Service> {
    let profiles: BTreeSet<&str> = vars
        .get("COMPOSE_PROFILES")
        .map(|list| list.split(',').map(str::trim).collect())
        .unwrap_or_default();
    services
        .iter()
        .filter(|s| s.profiles.is_empty() || s.profiles.iter().any(|p| profiles.contains(&**p)))
        .collect()
}

#[test]
fn the_compose_file_publishes_only_the_gateway_and_checks_every_server() {
    let (services, vars) = load_compose();

    let published: Vec<&str> = services
        .iter()
        .filter(|s| !s.published.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(published, ["gateway"]);
    let gateway = service(&services, "gateway");
    assert_eq!(
        gateway.published,
        [host_port(&format!("http://{}", gateway.environment["GATEWAY_ADDR"])).1],
        "the published port is the one the gateway listens on"
    );
    for service in &services {
        assert!(
            service.healthcheck.is_some() || service.name == "migrate",
            "{} has no health check",
            service.name
        );
    }
    assert!(
        active(&services, &vars)
            .iter()
            .any(|s| s.name == "wechat-sim"),
        ".env.example should enable the sim profile"
    );
}

#[tokio::test]
async fn the_services_log_a_user_in_with_the_compose_files_environment() {
    // Arrange: the stand-ins for mysql and redis, then every service in the
    // order depends_on imposes.
    let (services, vars) = load_compose();
    let ours: Vec<&Service> = active(&services, &vars)
        .into_iter()
        .filter(|s| !EXTERNAL.contains(&s.name.as_str()))
        .collect();
    let mysql = &service(&services, "mysql").environment;
    let expected_database_url = format!(
        "mysql://{}:{}@mysql:3306/{}",
        mysql["MYSQL_USER"], mysql["MYSQL_PASSWORD"], mysql["MYSQL_DATABASE"]
    );
    let db = TestDatabase::create().await;
    let redis = TestRedisPrefix::new();
    let stand = Stand {
        database_url: db.url(),
        redis_url: redis.url().to_owned(),
        redis_prefix: redis.prefix().to_owned(),
    };
    let ports = Ports::allocate(&ours);
    let locals: Vec<Local> = ours
        .iter()
        .map(|s| localize(s, &services, &ports, &stand, &expected_database_url))
        .collect();
    let local = |name: &str| -> &Local {
        locals
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("{name} does not run"))
    };

    let mut processes = Processes::new();
    let mut started: Vec<&str> = Vec::new();
    while started.len() < ours.len() {
        let next = ours
            .iter()
            .find(|s| {
                !started.contains(&s.name.as_str())
                    && s.depends_on.iter().all(|(dep, _)| {
                        EXTERNAL.contains(&dep.as_str()) || started.contains(&dep.as_str())
                    })
            })
            .unwrap_or_else(|| {
                panic!("depends_on has a cycle, or names a service that does not run")
            });
        for (dep, condition) in &next.depends_on {
            // The test's MariaDB and Redis are up: TestDatabase made a database.
            if !EXTERNAL.contains(&dep.as_str()) {
                processes.wait_for(local(dep), *condition).await;
            }
        }
        processes.start(local(&next.name));
        started.push(&next.name);
    }
    // Everything healthy, as `docker compose up --wait` waits for.
    for service in &locals {
        if service.healthcheck.is_some() {
            processes.wait_for(service, Condition::Healthy).await;
        }
    }

    let gateway_port = service(&services, "gateway").published[0];
    let gateway = format!(
        "http://127.0.0.1:{}",
        ports.get("gateway", gateway_port, "the published port")
    );
    let compose_wechat = &service(&services, "auth").environment["WECHAT_API_BASE"];
    assert_eq!(
        host_port(compose_wechat).0,
        "wechat-sim",
        "with .env.example, auth must talk to the simulator"
    );
    // Where auth finds WeChat is where the test mints codes.
    let wechat = &local("auth").env["WECHAT_API_BASE"];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let minted: Json = http
        .post(format!("{wechat}/sim/codes"))
        .json(&json!({}))
        .send()
        .await
        .expect("mint a code")
        .json()
        .await
        .expect("the minted code");

    // Act
    let login = http
        .post(format!("{gateway}/v1/login"))
        .json(&json!({ "code": minted["code"] }))
        .send()
        .await
        .expect("POST /v1/login");
    let login_status = login.status();
    let login: Json = login.json().await.expect("the login answer");
    let token = login["token"].as_str().unwrap_or_default();
    let me = http
        .get(format!("{gateway}/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /v1/me");
    // The user service reaches auth for the session key (AUTH_URL).
    let sealed: Json = http
        .post(format!("{wechat}/sim/seal"))
        .json(&json!({ "openid": minted["openid"], "data": { "nickName": "Compose" } }))
        .send()
        .await
        .expect("seal user data")
        .json()
        .await
        .expect("the sealed data");
    let profile = http
        .post(format!("{gateway}/v1/me/profile"))
        .bearer_auth(token)
        .json(&sealed)
        .send()
        .await
        .expect("POST /v1/me/profile");
    let profile_status = profile.status();
    let profile: Json = profile.json().await.expect("the profile answer");
    let readyz = http
        .get(format!("{gateway}/readyz"))
        .send()
        .await
        .expect("GET /readyz");

    // Assert
    assert_eq!(login_status, 200, "{login}");
    assert_eq!(login["created"], true);
    assert_eq!(login["user"]["appid"], vars["WECHAT_APPID"].as_str());
    assert_eq!(login["user"]["openid"], minted["openid"]);
    assert_eq!(me.status(), 200);
    let me: Json = me.json().await.expect("the /v1/me answer");
    assert_eq!(me["user"]["id"], login["user"]["id"]);
    assert_eq!(profile_status, 200, "{profile}");
    assert_eq!(profile["user"]["nickname"], "Compose");
    assert_eq!(readyz.status(), 200);
    let readyz: Json = readyz.json().await.expect("the /readyz answer");
    assert_eq!(readyz["checks"], json!({"auth": "ok", "user": "ok"}));
    drop(processes);
}

#[test]
fn interpolation_follows_compose() {
    let vars = HashMap::from([
        ("SET".to_owned(), "value".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ]);

    assert_eq!(
        interpolate("a ${SET} $SET $$SET", &vars),
        "a value value $SET"
    );
    assert_eq!(interpolate("${EMPTY:-d} ${EMPTY-d}", &vars), "d ");
    assert_eq!(interpolate("${UNSET:-http://x:1}", &vars), "http://x:1");
    assert_eq!(interpolate("${SET:?needed}", &vars), "value");
    assert!(std::panic::catch_unwind(|| interpolate("${EMPTY:?needed}", &vars)).is_err());
    assert!(std::panic::catch_unwind(|| interpolate("${UNSET}", &vars)).is_err());
}

#[test]
fn urls_are_rewritten_at_their_authority_only() {
    let to_local =
        |host: &str, port: u16| (host == "auth").then(|| format!("127.0.0.1:{}", port + 1));

    assert_eq!(
        rewrite_authority("http://auth:50051", to_local),
        "http://127.0.0.1:50052"
    );
    assert_eq!(
        rewrite_authority("mysql://u:p@auth:1/db", to_local),
        "mysql://u:p@127.0.0.1:2/db"
    );
    assert_eq!(
        rewrite_authority("http://user:50052/x", to_local),
        "http://user:50052/x"
    );
    assert_eq!(rewrite_authority("wxa:secret,", to_local), "wxa:secret,");
    assert_eq!(host_port("redis://redis:6379"), ("redis".to_owned(), 6379));
}
