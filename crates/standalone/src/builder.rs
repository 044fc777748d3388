//! The one way wxlogin's three services are started and wired together:
//! [`SystemBuilder`] starts the user, auth and gateway services, one or more
//! replicas of each, in this process or as processes of their binaries
//! (`wxlogin-user`, `wxlogin-auth`, `wxlogin-gateway`), and [`Services`]
//! stops, kills and starts them again. The `wxlogin` binary, the end-to-end
//! harness, the fault tests and the benchmark all start the system here.
//!
//! It owns the mapping from the system's settings to each service's: the
//! settings are environment variables, in layers (the builder's defaults,
//! the caller's environment, the caller's settings, then settings of one
//! service alone); every service reads its own variables from them, and the
//! builder adds the wiring: where each replica listens and, for the user
//! service and the gateway, where they find the other services.
//!
//! It must not start anything but the three services: the WeChat
//! simulator, the database and Redis are the caller's, named in the
//! settings. It gives a service nothing but its settings (a process gets no
//! other variable than `PATH`).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use wxlogin_common::{
    config::{Source, optional},
    grpc,
};

use crate::{
    error::Error,
    in_process::{EndedRun, InProcess},
    process::Process,
    service::Service,
};

/// How the services are run as processes.
#[derive(Clone)]
pub struct ProcessOptions {
    /// Where a binary is, by name (`wxlogin-auth`).
    pub binary: Arc<dyn Fn(&str) -> PathBuf + Send + Sync>,
    /// A free loopback port, for a service whose settings say port 0: the
    /// builder must know the port before the process binds it.
    pub free_port: fn() -> u16,
    /// A directory for one log file per process (`auth.log`, `auth.1.log`
    /// for a second replica); without one, their stdout is discarded and
    /// their stderr is this process's.
    pub logs: Option<PathBuf>,
}

#[derive(Clone)]
enum Mode {
    InProcess,
    Processes(ProcessOptions),
}

/// What to start, and with which settings. Cloning it keeps the settings,
/// the generated secrets included: a clone starts more replicas of the same
/// system (see [`SystemBuilder::peer`]).
#[derive(Clone)]
pub struct SystemBuilder<'a> {
    defaults: BTreeMap<String, String>,
    environment: Option<&'a (dyn Source + Sync)>,
    settings: BTreeMap<String, String>,
    per_service: BTreeMap<(Service, String), String>,
    replicas: BTreeMap<Service, usize>,
    peers: BTreeMap<Service, SocketAddr>,
    mode: Mode,
}

impl<'a> SystemBuilder<'a> {
    /// One replica of each service, in this process, with the builder's
    /// defaults: the internal services on loopback ports of their own
    /// (`127.0.0.1:0`), and internal credentials made for this system
    /// alone (the services speak to each other only).
    pub fn new() -> Result<SystemBuilder<'a>, Error> {
        let mut defaults = BTreeMap::new();
        for service in [Service::Auth, Service::User] {
            defaults.insert(service.addr_var().to_owned(), "127.0.0.1:0".to_owned());
        }
        for name in [grpc::INTERNAL_SECRET, grpc::INTERNAL_USER_SECRET] {
            let secret = wxlogin_auth::token::Token::generate()
                .map_err(|error| Error::Random(error.to_string()))?;
            defaults.insert(name.to_owned(), secret.expose().to_owned());
        }
        Ok(SystemBuilder {
            defaults,
            environment: None,
            settings: BTreeMap::new(),
            per_service: BTreeMap::new(),
            replicas: Service::ALL.into_iter().map(|s| (s, 1)).collect(),
            peers: BTreeMap::new(),
            mode: Mode::InProcess,
        })
    }

    /// `environment` over the builder's defaults and under the settings:
    /// the `wxlogin` binary's process environment. Only services in this
    /// process read it; [`start`](Self::start) refuses it with
    /// [`processes`](Self::processes), whose environment is exactly their
    /// settings.
    pub fn over(mut self, environment: &'a (dyn Source + Sync)) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Sets one setting of every service.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.settings.insert(name.to_owned(), value.into());
        self
    }

    /// Sets several settings of every service.
    pub fn set_all<N: AsRef<str>, V: Into<String>>(
        mut self,
        settings: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        for (name, value) in settings {
            self.settings.insert(name.as_ref().to_owned(), value.into());
        }
        self
    }

    /// Sets one setting of `service` alone, over the others.
    pub fn set_for(mut self, service: Service, name: &str, value: impl Into<String>) -> Self {
        self.per_service
            .insert((service, name.to_owned()), value.into());
        self
    }

    /// Where users and sessions are kept: `DATABASE_URL`, `REDIS_URL` and
    /// `REDIS_KEY_PREFIX`.
    pub fn stores(self, database_url: &str, redis_url: &str, redis_key_prefix: &str) -> Self {
        self.set("DATABASE_URL", database_url)
            .set("REDIS_URL", redis_url)
            .set("REDIS_KEY_PREFIX", redis_key_prefix)
    }

    /// How many replicas of `service` to start (1 unless said).
    pub fn replicas(mut self, service: Service, count: usize) -> Self {
        self.replicas.insert(service, count);
        self
    }

    /// `service` already runs at `addr` (started by another builder):
    /// none is started, and the others call that one.
    pub fn peer(mut self, service: Service, addr: SocketAddr) -> Self {
        self.peers.insert(service, addr);
        self.replicas.insert(service, 0);
        self
    }

    /// Runs the services as processes rather than in this one.
    pub fn processes(mut self, options: ProcessOptions) -> Self {
        self.mode = Mode::Processes(options);
        self
    }

    /// The setting `name` of `service`, as the layers give it (the wiring
    /// aside).
    fn setting(&self, service: Service, name: &str) -> Option<String> {
        self.per_service
            .get(&(service, name.to_owned()))
            .or_else(|| self.settings.get(name))
            .cloned()
            .or_else(|| self.environment.and_then(|env| optional(env, name)))
            .or_else(|| self.defaults.get(name).cloned())
    }

    /// Every setting of `service` that the builder can list (the
    /// environment of [`over`](Self::over) cannot be listed).
    fn listed(&self, service: Service) -> BTreeMap<String, String> {
        let mut all = self.defaults.clone();
        all.extend(self.settings.clone());
        for ((of, name), value) in &self.per_service {
            if *of == service {
                all.insert(name.clone(), value.clone());
            }
        }
        all
    }

    /// Starts the services, each after those it calls, and answers once
    /// each has started (in this process: listens; a process: was spawned,
    /// its readiness is the caller's to wait for).
    pub async fn start(&self) -> Result<Services, Error> {
        if matches!(self.mode, Mode::Processes(_)) && self.environment.is_some() {
            return Err(Error::Wiring(
                "processes get their settings alone, not an environment to read".into(),
            ));
        }
        let mut services = Services::new();
        let mut at: BTreeMap<Service, Vec<SocketAddr>> = self
            .peers
            .iter()
            .map(|(service, addr)| (*service, vec![*addr]))
            .collect();
        for service in Service::ALL {
            let count = self.replicas.get(&service).copied().unwrap_or(1);
            for index in 0..count {
                let mut wiring = BTreeMap::new();
                for callee in service.calls() {
                    let addrs = at.get(callee).filter(|addrs| !addrs.is_empty());
                    let addrs = addrs.ok_or_else(|| {
                        Error::Wiring(format!(
                            "{} calls {}, which neither runs nor is a peer",
                            service.name(),
                            callee.name()
                        ))
                    })?;
                    let addr = addrs[index % addrs.len()];
                    if let Some(var) = callee.url_var() {
                        wiring.insert(var.to_owned(), format!("http://{addr}"));
                    }
                }
                // Boxed: the services' futures are deep, and a caller's future
                // holds this one.
                let instance = Box::pin(self.start_one(service, index, wiring, &services)).await?;
                at.entry(service).or_default().push(instance.addr);
                services.instances.push(instance);
            }
        }
        Ok(services)
    }

    async fn start_one(
        &self,
        service: Service,
        index: usize,
        mut wiring: BTreeMap<String, String>,
        services: &Services,
    ) -> Result<Instance, Error> {
        let name = match index {
            0 => service.name().to_owned(),
            n => format!("{}.{n}", service.name()),
        };
        match &self.mode {
            Mode::InProcess => {
                let source = Wired {
                    builder: self,
                    service,
                    wiring: &wiring,
                };
                let (addr, run) =
                    InProcess::start(service, index, &source, services.ended.clone()).await?;
                Ok(Instance {
                    service,
                    index,
                    addr,
                    run: Run::InProcess(Box::new(run)),
                })
            }
            Mode::Processes(options) => {
                let addr_var = service.addr_var();
                let configured = self.setting(service, addr_var).ok_or_else(|| {
                    Error::Wiring(format!(
                        "{addr_var}: a process must be told where to listen (127.0.0.1:0 for any free port)"
                    ))
                })?;
                let mut addr: SocketAddr = configured.parse().map_err(|_| {
                    Error::Wiring(format!("{addr_var}: {configured:?} is not host:port"))
                })?;
                if addr.port() == 0 {
                    addr.set_port((options.free_port)());
                }
                wiring.insert(addr_var.to_owned(), addr.to_string());
                let mut env = self.listed(service);
                env.extend(wiring);
                let log = options
                    .logs
                    .as_ref()
                    .map(|dir| dir.join(format!("{name}.log")));
                let mut process = Process::new(
                    name,
                    (options.binary)(service.binary()),
                    Vec::new(),
                    env.into_iter().collect(),
                    log,
                );
                process.start().map_err(Error::Process)?;
                Ok(Instance {
                    service,
                    index,
                    // Where its callers reach it: a wildcard address is
                    // reached on loopback.
                    addr: reachable(addr),
                    run: Run::Process(process),
                })
            }
        }
    }
}

/// `addr`, or loopback where it names every interface.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// What a service in this process reads: the wiring over its settings.
struct Wired<'b, 'a> {
    builder: &'b SystemBuilder<'a>,
    service: Service,
    wiring: &'b BTreeMap<String, String>,
}

impl Source for Wired<'_, '_> {
    fn get(&self, name: &str) -> Option<String> {
        self.wiring
            .get(name)
            .cloned()
            .or_else(|| self.builder.setting(self.service, name))
    }
}

/// One replica of a service, started.
struct Instance {
    service: Service,
    index: usize,
    /// Where it listens (as its callers reach it).
    addr: SocketAddr,
    run: Run,
}

enum Run {
    // Boxed: it holds a service's whole configuration.
    InProcess(Box<InProcess>),
    Process(Process),
}

/// How long a process may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The started services. Dropping it stops them: in this process they stop
/// gracefully in the background, processes are killed.
pub struct Services {
    instances: Vec<Instance>,
    ended: tokio::sync::mpsc::UnboundedSender<EndedRun>,
    ended_rx: tokio::sync::mpsc::UnboundedReceiver<EndedRun>,
}

impl Services {
    fn new() -> Services {
        let (ended, ended_rx) = tokio::sync::mpsc::unbounded_channel();
        Services {
            instances: Vec::new(),
            ended,
            ended_rx,
        }
    }

    fn instance(&self, service: Service, index: usize) -> Result<&Instance, Error> {
        self.instances
            .iter()
            .find(|i| i.service == service && i.index == index)
            .ok_or_else(|| Error::Wiring(format!("no {} #{index} was started", service.name())))
    }

    fn instance_mut(&mut self, service: Service, index: usize) -> Result<&mut Instance, Error> {
        self.instances
            .iter_mut()
            .find(|i| i.service == service && i.index == index)
            .ok_or_else(|| Error::Wiring(format!("no {} #{index} was started", service.name())))
    }

    /// Where replica `index` of `service` listens.
    pub fn addr(&self, service: Service, index: usize) -> Result<SocketAddr, Error> {
        Ok(self.instance(service, index)?.addr)
    }

    /// The first gateway's base URL (`http://host:port`).
    pub fn gateway_url(&self) -> Result<String, Error> {
        Ok(format!("http://{}", self.addr(Service::Gateway, 0)?))
    }

    /// Stops replica `index` of `service` gracefully (a process: SIGTERM,
    /// and up to 15 s to exit) and answers how its run ended.
    pub async fn stop(&mut self, service: Service, index: usize) -> Result<(), Error> {
        match &mut self.instance_mut(service, index)?.run {
            Run::InProcess(run) => run.stop().await,
            // Killed, or never started again: nothing to stop.
            Run::Process(process) if process.pid().is_none() => Ok(()),
            Run::Process(process) => process
                .stop(STOP_TIMEOUT)
                .await
                .map(drop)
                .map_err(Error::Process),
        }
    }

    /// Kills replica `index` of `service` at once: a process gets SIGKILL,
    /// a service in this process is dropped where it stands.
    pub fn kill(&mut self, service: Service, index: usize) -> Result<(), Error> {
        match &mut self.instance_mut(service, index)?.run {
            Run::InProcess(run) => run.abort(),
            Run::Process(process) => process.kill(),
        }
        Ok(())
    }

    /// Starts a stopped (or killed) replica again, where it listened and
    /// with the same settings.
    pub async fn start(&mut self, service: Service, index: usize) -> Result<(), Error> {
        let ended = self.ended.clone();
        match &mut self.instance_mut(service, index)?.run {
            Run::InProcess(run) => run.restart(ended).await,
            Run::Process(process) => process.start().map_err(Error::Process),
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) to the process of replica
    /// `index` of `service`.
    pub fn signal(&self, service: Service, index: usize, signal: &str) -> Result<(), Error> {
        match &self.instance(service, index)?.run {
            Run::InProcess(_) => Err(Error::Wiring(format!(
                "{} runs in this process: it cannot be sent {signal}",
                service.name()
            ))),
            Run::Process(process) => process.signal(signal).map_err(Error::Process),
        }
    }

    /// Stops everything: the gateways first (a login in flight has spent
    /// its code at WeChat and must still find auth and user to finish),
    /// then the user services (which call auth), then auth. Answers the
    /// first failure, after trying every stop.
    pub async fn stop_all(&mut self) -> Result<(), Error> {
        let mut first = Ok(());
        for service in [Service::Gateway, Service::User, Service::Auth] {
            let indexes: Vec<usize> = self
                .instances
                .iter()
                .filter(|i| i.service == service)
                .map(|i| i.index)
                .collect();
            for index in indexes {
                let stopped = self.stop(service, index).await;
                if first.is_ok() {
                    first = stopped;
                }
            }
        }
        first
    }

    /// Waits until a service in this process stops by itself (it failed:
    /// nothing asked it to), and answers which and how.
    pub async fn stopped_by_itself(&mut self) -> String {
        loop {
            let Some((service, index, generation)) = self.ended_rx.recv().await else {
                return std::future::pending().await;
            };
            if let Ok(Instance {
                run: Run::InProcess(run),
                ..
            }) = self.instance_mut(service, index)
                && let Some(how) = run.ended_by_itself(generation).await
            {
                return format!("{}: {how}", service.name());
            }
        }
    }

    /// The first process that has exited, and how.
    pub fn exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.instances
            .iter_mut()
            .find_map(|instance| match &mut instance.run {
                Run::Process(process) => Some((process.name().to_owned(), process.exited()?)),
                Run::InProcess(_) => None,
            })
    }

    /// The processes: name, pid (while running) and log file.
    pub fn processes(&self) -> Vec<(String, Option<u32>, Option<&Path>)> {
        self.instances
            .iter()
            .filter_map(|instance| match &instance.run {
                Run::Process(process) => {
                    Some((process.name().to_owned(), process.pid(), process.log_path()))
                }
                Run::InProcess(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicU16, Ordering},
        time::Instant,
    };

    use super::*;

    /// Ports for processes that never listen: they need only be distinct.
    fn next_port() -> u16 {
        static NEXT: AtomicU16 = AtomicU16::new(20_000);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// The environment `env(1)`, started as a service, printed to its log.
    fn printed(log: &std::path::Path) -> BTreeMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("PATH=") || Instant::now() > deadline {
                return text
                    .lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn each_process_gets_the_settings_and_the_wiring_of_its_replica() {
        // Arrange: env(1) stands in for every binary and prints what it got.
        let logs = std::env::temp_dir().join(format!(
            "wxlogin-builder-{}-{}",
            std::process::id(),
            next_port()
        ));
        std::fs::create_dir_all(&logs).expect("a log directory");
        let builder = SystemBuilder::new()
            .expect("the builder")
            .processes(ProcessOptions {
                binary: Arc::new(|_| PathBuf::from("env")),
                free_port: next_port,
                logs: Some(logs.clone()),
            })
            .stores("mysql://db/x", "redis://r:6379", "p:")
            .set("GATEWAY_ADDR", "127.0.0.1:0")
            .set("SHARED", "everywhere")
            .set_for(Service::Gateway, "SHARED", "the gateway's")
            .replicas(Service::Auth, 2)
            .replicas(Service::Gateway, 2);

        // Act
        let services = builder.start().await.expect("the processes start");
        let env = |name: &str| printed(&logs.join(format!("{name}.log")));
        let (auth, auth_1, user) = (env("auth"), env("auth.1"), env("user"));
        let (gateway, gateway_1) = (env("gateway"), env("gateway.1"));
        drop(std::fs::remove_dir_all(&logs));

        // Assert
        let at = |service, index| services.addr(service, index).expect("it was started");
        let url = |service, index| format!("http://{}", at(service, index));
        assert_eq!(auth["AUTH_ADDR"], at(Service::Auth, 0).to_string());
        assert_eq!(auth_1["AUTH_ADDR"], at(Service::Auth, 1).to_string());
        assert_ne!(auth["AUTH_ADDR"], auth_1["AUTH_ADDR"]);
        assert_eq!(user["AUTH_URL"], url(Service::Auth, 0));
        assert_eq!(gateway["AUTH_URL"], url(Service::Auth, 0));
        assert_eq!(gateway_1["AUTH_URL"], url(Service::Auth, 1));
        assert_eq!(gateway_1["USER_URL"], url(Service::User, 0));
        assert_eq!(
            gateway_1["GATEWAY_ADDR"],
            at(Service::Gateway, 1).to_string()
        );
        for env in [&auth, &auth_1, &user] {
            assert_eq!(env["SHARED"], "everywhere");
            assert_eq!(env["DATABASE_URL"], "mysql://db/x");
            assert_eq!(env["REDIS_KEY_PREFIX"], "p:");
        }
        assert_eq!(gateway["SHARED"], "the gateway's");
        assert!(!auth["INTERNAL_SECRET"].is_empty());
        assert_eq!(auth["INTERNAL_SECRET"], gateway_1["INTERNAL_SECRET"]);
        assert_eq!(auth["INTERNAL_USER_SECRET"], user["INTERNAL_USER_SECRET"]);
        // Nothing of this process's environment but PATH.
        assert!(
            !user.contains_key("HOME") && user.contains_key("PATH"),
            "{user:?}"
        );
    }

    #[tokio::test]
    async fn processes_get_no_environment_to_read() {
        let environment = |_: &str| Some("x".to_owned());
        let options = ProcessOptions {
            binary: Arc::new(|_| PathBuf::from("env")),
            free_port: next_port,
            logs: None,
        };

        let started = SystemBuilder::new()
            .expect("the builder")
            .over(&environment)
            .processes(options)
            .start()
            .await;

        assert!(started.is_err());
    }
}
