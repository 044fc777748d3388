//! Faults under load: clients that hang up mid-login, a service killed or
//! frozen while requests are in flight. Innocent clients never get a 500;
//! every request is answered; a failure of a neighbour is a 503 with
//! `Retry-After`, and the system recovers when the neighbour does.
//!
//! The kill and freeze tests run the real binaries as processes (the only way
//! to SIGKILL or SIGSTOP a service), started by `wxlogin_standalone`'s
//! builder, against the test's own database, Redis key prefix and an
//! in-process WeChat simulator.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use wxlogin_standalone::{Service, Services, SystemBuilder};
use wxlogin_testkit::{TestDatabase, TestRedisPrefix, free_port};
use wxlogin_tests::{DEFAULT_APPID, DEFAULT_SECRET, TestApp, processes, test_credentials};
use wxlogin_wechat_sim::{MintCode, Minted, RunningSimulator, SimConfig, Simulator};

/// Answers by HTTP status; 0 counts requests that got no answer at all.
type Tally = BTreeMap<u16, u64>;

fn merge(into: &mut Tally, from: Tally) {
    for (status, count) in from {
        *into.entry(status).or_default() += count;
    }
}

/// Logs in with fresh codes, one after the other, until `until`; checks
/// the shape of each answer (a 503 must say when to retry).
async fn keep_logging_in(
    http: reqwest::Client,
    base_url: String,
    sim: Arc<Simulator>,
    until: Instant,
) -> Tally {
    let mut tally = Tally::new();
    while Instant::now() < until {
        let code = sim.mint_code(MintCode::default()).code;
        let answer = http
            .post(format!("{base_url}/v1/login"))
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await;
        let status = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                if status == 503 {
                    assert!(
                        response.headers().contains_key("retry-after"),
                        "a 503 without Retry-After"
                    );
                    let body: serde_json::Value = response.json().await.unwrap();
                    assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
                }
                status
            }
            Err(_) => 0,
        };
        *tally.entry(status).or_default() += 1;
    }
    tally
}

/// `workers` clients logging in until `until`, their answers tallied.
fn load(
    base_url: &str,
    sim: &Arc<Simulator>,
    workers: usize,
    until: Instant,
) -> tokio::task::JoinHandle<Tally> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            tokio::spawn(keep_logging_in(
                http.clone(),
                base_url.to_owned(),
                Arc::clone(sim),
                until,
            ))
        })
        .collect();
    tokio::spawn(async move {
        let mut total = Tally::new();
        for task in tasks {
            merge(&mut total, task.await.unwrap());
        }
        total
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_mid_login_fail_nobody_else() {
    // Arrange: WeChat takes 100 ms, so a client that gives up after 40 ms
    // leaves while its login waits for WeChat.
    let app = TestApp::spawn().await;
    app.simulator().set_latency(Duration::from_millis(100));
    let sim = Arc::new(app.simulator().clone());
    let until = Instant::now() + Duration::from_secs(4);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(40))
        .build()
        .unwrap();

    // The gateway's connections to auth, once it has them.
    app.login_ok(&app.mint().code).await;
    let before = connections_to(app.auth_addr.port());

    // Act: 16 clients that stay, 96 that hang up, at once.
    let staying = load(&app.base_url, &sim, 16, until);
    let hangers: Vec<_> = (0..96)
        .map(|_| {
            let (http, url, sim) = (impatient.clone(), app.url("/v1/login"), Arc::clone(&sim));
            tokio::spawn(async move {
                let mut gave_up = 0u64;
                while Instant::now() < until {
                    let code = sim.mint_code(MintCode::default()).code;
                    let sent = http
                        .post(&url)
                        .json(&serde_json::json!({ "code": code }))
                        .send()
                        .await;
                    gave_up += u64::from(sent.is_err());
                }
                gave_up
            })
        })
        .collect();
    let tally = staying.await.unwrap();
    let mut gave_up = 0;
    for hanger in hangers {
        gave_up += hanger.await.unwrap();
    }

    // Assert
    eprintln!("clients that stayed: {tally:?}; logins abandoned: {gave_up}");
    assert!(
        gave_up > 100,
        "too few hang-ups to prove anything: {gave_up}"
    );
    assert_eq!(
        tally.keys().copied().collect::<Vec<_>>(),
        [200],
        "{tally:?}"
    );
    let code = app.mint().code;
    app.login_ok(&code).await;
    // (More may have opened meanwhile: the gateway opens its connections
    // as it first uses them.)
    let after = connections_to(app.auth_addr.port());
    assert!(!before.is_empty());
    assert!(
        before.is_subset(&after),
        "the gateway's connections to auth were closed: before {before:?}, after {after:?}"
    );
}

/// The local addresses of the established connections to `port` on this
/// machine: the same set before and after a fault means the connections
/// survived it (HTTP/2 did not close them).
fn connections_to(port: u16) -> BTreeSet<String> {
    let output = Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss (iproute2) lists sockets");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

/// The three services as processes, the simulator in this one.
pub(crate) struct Stack {
    pub(crate) base_url: String,
    auth_port: u16,
    /// Where gateway, auth and user serve `/metrics`, when asked for.
    pub(crate) metrics: Option<[SocketAddr; 3]>,
    pub(crate) sim: RunningSimulator,
    services: Services,
    db: TestDatabase,
    _redis: TestRedisPrefix,
}

impl Stack {
    async fn start(upstream_timeout: Duration) -> Stack {
        Stack::start_with(upstream_timeout, &[], false).await
    }

    /// The stack with `auth_overrides` in auth's environment, and each
    /// service's `/metrics` on a free port when `metrics` (else off).
    pub(crate) async fn start_with(
        upstream_timeout: Duration,
        auth_overrides: &[(&'static str, &str)],
        metrics: bool,
    ) -> Stack {
        Stack::start_with_env(upstream_timeout, auth_overrides, metrics, &[]).await
    }

    /// [`Stack::start_with`], with `everywhere` in every service's
    /// environment.
    pub(crate) async fn start_with_env(
        upstream_timeout: Duration,
        auth_overrides: &[(&'static str, &str)],
        metrics: bool,
        everywhere: &[(&'static str, String)],
    ) -> Stack {
        let sim = Simulator::new(SimConfig::default())
            .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let db = TestDatabase::create().await;
        let redis = TestRedisPrefix::new();
        let mut builder = SystemBuilder::new()
            .unwrap()
            .processes(processes())
            .stores(&db.url(), redis.url(), redis.prefix())
            .set_all(test_credentials())
            .set_all([
                ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
                ("RUST_LOG", "warn".to_owned()),
                ("WECHAT_API_BASE", sim.base_url()),
                ("WECHAT_APPID", DEFAULT_APPID.to_owned()),
                ("WECHAT_SECRET", DEFAULT_SECRET.to_owned()),
                // Thousands of logins from 127.0.0.1: the budgets are not what
                // these tests measure.
                ("RATE_LIMIT_LOGIN_PER_IP", "0".to_owned()),
                ("RATE_LIMIT_LOGIN_PER_APP", "0".to_owned()),
            ])
            .set_for(
                Service::Gateway,
                "UPSTREAM_TIMEOUT_MS",
                upstream_timeout.as_millis().to_string(),
            );
        for (name, value) in auth_overrides {
            builder = builder.set_for(Service::Auth, name, *value);
        }
        let metrics =
            metrics.then(|| [(); 3].map(|()| SocketAddr::from(([127, 0, 0, 1], free_port()))));
        for (at, service) in [Service::Gateway, Service::Auth, Service::User]
            .into_iter()
            .enumerate()
        {
            let addr = metrics.map_or_else(|| "off".to_owned(), |addrs| addrs[at].to_string());
            builder = builder.set_for(service, "METRICS_ADDR", addr);
        }
        let builder = builder.set_all(everywhere.iter().cloned());
        let services = builder.start().await.unwrap();
        let stack = Stack {
            base_url: services.gateway_url().unwrap(),
            auth_port: services.addr(Service::Auth, 0).unwrap().port(),
            metrics,
            sim,
            services,
            db,
            _redis: redis,
        };
        stack.wait_ready(Duration::from_secs(30)).await;
        stack
    }

    /// Waits until `/readyz` answers 200; answers how long that took.
    async fn wait_ready(&self, at_most: Duration) -> Duration {
        let started = Instant::now();
        let http = reqwest::Client::new();
        while started.elapsed() < at_most {
            if let Ok(response) = http.get(format!("{}/readyz", self.base_url)).send().await
                && response.status() == 200
            {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the stack did not become ready within {at_most:?}");
    }

    /// Stops the three services as an orchestrator would (SIGTERM: the
    /// gateway first, auth last), and waits for each to exit.
    pub(crate) async fn stop_gracefully(&mut self) {
        self.services.stop_all().await.unwrap();
    }

    /// Posts a profile sealed for `minted`'s session key, as the client of
    /// the session `token` (the user service asks auth for that key).
    pub(crate) async fn post_sealed_profile(
        &self,
        http: &reqwest::Client,
        minted: &Minted,
        token: &str,
    ) -> reqwest::Response {
        let data = serde_json::json!({ "openId": minted.openid, "nickName": "Band" });
        let sealed = self
            .sim
            .sim
            .seal_user_data(&minted.appid, &minted.openid, data)
            .expect("the user has a session key");
        http.post(format!("{}/v1/me/profile", self.base_url))
            .bearer_auth(token)
            .json(&serde_json::json!({ "encryptedData": sealed.encrypted_data, "iv": sealed.iv }))
            .send()
            .await
            .unwrap()
    }

    /// The URL of the user service's database.
    pub(crate) fn database_url(&self) -> String {
        self.db.url()
    }

    fn connections_to_auth(&self) -> BTreeSet<String> {
        connections_to(self.auth_port)
    }

    /// What 8 clients logging in for one more second get.
    async fn one_more_second(&self, sim: &Arc<Simulator>) -> Tally {
        let until = Instant::now() + Duration::from_secs(1);
        load(&self.base_url, sim, 8, until).await.unwrap()
    }

    fn sim(&self) -> Arc<Simulator> {
        Arc::new(self.sim.sim.clone())
    }
}

/// Kills `victim` of a loaded stack, starts it again, and checks every
/// answer.
async fn kill_under_load(victim: Service) {
    // Arrange
    let mut stack = Stack::start(Duration::from_secs(2)).await;
    stack.sim.sim.set_latency(Duration::from_millis(20));
    let sim = stack.sim();

    // Act: 32 clients log in for 4 s; the victim dies after 1 s and comes
    // back after 2 s.
    let until = Instant::now() + Duration::from_secs(4);
    let running = load(&stack.base_url, &sim, 32, until);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.services.kill(victim, 0).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.services.start(victim, 0).await.unwrap();
    let back = stack.wait_ready(Duration::from_secs(20)).await;
    let tally = running.await.unwrap();
    let after = stack.one_more_second(&sim).await;

    // Assert
    eprintln!(
        "answers while the service died and came back: {tally:?}; ready again after {back:?}; then {after:?}"
    );
    assert!(tally.get(&200).copied().unwrap_or(0) > 0, "{tally:?}");
    assert!(
        tally.get(&503).copied().unwrap_or(0) > 0,
        "no outage seen: {tally:?}"
    );
    assert!(
        tally.keys().all(|status| [200, 503].contains(status)),
        "only 200 and 503 (with Retry-After): {tally:?}"
    );
    assert_eq!(
        after.keys().copied().collect::<Vec<_>>(),
        [200],
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_killed_under_load_is_503_never_500() {
    kill_under_load(Service::Auth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_killed_under_load_is_503_never_500() {
    kill_under_load(Service::User).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_auth_costs_deadlines_not_the_connection() {
    // Arrange: calls give up after 300 ms, so a 3 s freeze cancels every
    // call the 48 clients have in flight, well over h2's default of 20
    // reset streams.
    let stack = Stack::start(Duration::from_millis(300)).await;
    let sim = stack.sim();

    // Act
    let until = Instant::now() + Duration::from_secs(4);
    let running = load(&stack.base_url, &sim, 48, until);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = stack.connections_to_auth();
    stack.services.signal(Service::Auth, 0, "-STOP").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.services.signal(Service::Auth, 0, "-CONT").unwrap();
    let tally = running.await.unwrap();
    // Auth first works off what queued up while it was frozen (logins whose
    // codes it had already taken finish, see README), then serves at once
    // again, on the same connections.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = stack.one_more_second(&sim).await;

    let kept = stack.connections_to_auth();

    // Assert
    eprintln!(
        "answers around a 3 s freeze: {tally:?}; after it: {after:?}; \
         connections to auth before {before:?}, after {kept:?}"
    );
    assert!(!before.is_empty());
    assert!(
        before.is_subset(&kept),
        "the gateway's connections to auth were closed"
    );
    assert!(tally.get(&503).copied().unwrap_or(0) >= 48, "{tally:?}");
    assert!(
        tally.keys().all(|status| [200, 503].contains(status)),
        "only 200 and 503: {tally:?}"
    );
    assert_eq!(
        after.keys().copied().collect::<Vec<_>>(),
        [200],
        "{after:?}"
    );
}
