//! The workloads driven through the gateway, and everything they need
//! prepared outside the measured window: login codes minted at the
//! simulator, registered users and their tokens, sealed profile data.
//!
//! Login codes are single-use, so a login scenario mints a first pool, runs
//! its warm-up on it to learn the rate, tops the pool up to last the window
//! with a margin (never beyond `--max-codes`), and ends early, saying so, if
//! the pool still runs dry.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use std::time::Duration;

use crate::{
    Runner,
    cli::{RunArgs, Scenario},
    load::{Cycle, Outcome, Workload},
    metrics::status_kib,
    report::RunReport,
};

/// How far ahead of the measured rate a code pool is filled.
const CODE_MARGIN: f64 = 1.5;

/// Codes minted per scenario when there is no warm-up to learn the rate from.
const CODES_WITHOUT_WARMUP: usize = 20_000;

/// The share of logins in the mixed workload: one request in ten.
const MIXED_LOGIN_EVERY: u64 = 10;

/// Talks to the running system: the gateway under test and the simulator's
/// control API.
#[derive(Debug, Clone)]
pub struct Driver {
    pub client: reqwest::Client,
    pub gateway: String,
    pub sim: String,
    pub concurrency: usize,
}

/// One HTTP request and its whole answer. A 4xx or 5xx is an error bucketed
/// by its status; a failure to connect, send or read is `transport`.
pub async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Outcome::failed("transport", error_chain(&error)),
    };
    let status = response.status();
    match response.bytes().await {
        Ok(body) if status.as_u16() >= 400 => Outcome::failed(
            status.as_str(),
            String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        ),
        Ok(_) => Outcome::Ok,
        Err(error) => Outcome::failed("transport", error_chain(&error)),
    }
}

use wxlogin_common::error_report as error_chain;

/// Single-use login codes, taken by any number of workers.
#[derive(Debug, Default)]
pub struct CodePool {
    codes: Mutex<Vec<String>>,
    taken: AtomicU64,
}

impl CodePool {
    fn take(&self) -> Option<String> {
        let code = self
            .codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(code)
    }

    fn extend(&self, codes: Vec<String>) {
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(codes);
    }

    fn len(&self) -> usize {
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}

/// `POST /v1/login`, each request with a code from the pool.
struct Login {
    client: reqwest::Client,
    url: String,
    codes: Arc<CodePool>,
}

impl Login {
    fn new(driver: &Driver, codes: Arc<CodePool>) -> Login {
        Login {
            client: driver.client.clone(),
            url: format!("{}/v1/login", driver.gateway),
            codes,
        }
    }

    fn request(&self, code: &str) -> reqwest::RequestBuilder {
        self.client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(format!(r#"{{"code":"{code}"}}"#))
    }
}

impl Workload for Login {
    type Input = String;

    fn kinds(&self) -> &[&'static str] {
        &["login"]
    }

    fn next(&self) -> Option<(usize, String)> {
        self.codes.take().map(|code| (0, code))
    }

    async fn call(&self, code: String) -> Outcome {
        send(self.request(&code)).await
    }
}

/// `GET /v1/me` (of the gateway, or of the HTTP floor), or `GET
/// /v1/verify`, cycling tokens.
pub struct Me {
    client: reqwest::Client,
    url: String,
    kinds: [&'static str; 1],
    bearers: Cycle<HeaderValue>,
}

impl Me {
    pub fn new(client: &reqwest::Client, base: &str, tokens: &[String]) -> anyhow::Result<Me> {
        Me::at(client, base, "me", "/v1/me", tokens)
    }

    /// Forward authentication's `GET /v1/verify`.
    pub fn verify(client: &reqwest::Client, base: &str, tokens: &[String]) -> anyhow::Result<Me> {
        Me::at(client, base, "verify", "/v1/verify", tokens)
    }

    fn at(
        client: &reqwest::Client,
        base: &str,
        kind: &'static str,
        path: &str,
        tokens: &[String],
    ) -> anyhow::Result<Me> {
        let bearers = tokens
            .iter()
            .map(|token| HeaderValue::from_str(&format!("Bearer {token}")))
            .collect::<Result<Vec<_>, _>>()
            .context("a token is not a valid header value")?;
        Ok(Me {
            client: client.clone(),
            url: format!("{base}{path}"),
            kinds: [kind],
            bearers: Cycle::new(bearers),
        })
    }

    fn request(&self, bearer: HeaderValue) -> reqwest::RequestBuilder {
        self.client.get(&self.url).header(AUTHORIZATION, bearer)
    }
}

impl Workload for Me {
    type Input = HeaderValue;

    fn kinds(&self) -> &[&'static str] {
        &self.kinds
    }

    fn next(&self) -> Option<(usize, HeaderValue)> {
        self.bearers.next().map(|bearer| (0, bearer.clone()))
    }

    async fn call(&self, bearer: HeaderValue) -> Outcome {
        send(self.request(bearer)).await
    }
}

/// `POST /v1/me/profile` with each user's sealed data.
struct Profile {
    client: reqwest::Client,
    url: String,
    sealed: Cycle<(HeaderValue, String)>,
}

impl Workload for Profile {
    type Input = (HeaderValue, String);

    fn kinds(&self) -> &[&'static str] {
        &["profile"]
    }

    fn next(&self) -> Option<(usize, (HeaderValue, String))> {
        self.sealed.next().map(|item| (0, item.clone()))
    }

    async fn call(&self, (bearer, body): (HeaderValue, String)) -> Outcome {
        let request = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, bearer)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        send(request).await
    }
}

/// One login in [`MIXED_LOGIN_EVERY`] requests, `GET /v1/me` otherwise.
struct Mixed {
    login: Login,
    me: Me,
    sent: AtomicU64,
}

enum MixedInput {
    Login(String),
    Me(HeaderValue),
}

impl Workload for Mixed {
    type Input = MixedInput;

    fn kinds(&self) -> &[&'static str] {
        &["login", "me"]
    }

    fn next(&self) -> Option<(usize, MixedInput)> {
        if self
            .sent
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(MIXED_LOGIN_EVERY)
        {
            self.login
                .next()
                .map(|(_, code)| (0, MixedInput::Login(code)))
        } else {
            self.me
                .next()
                .map(|(_, bearer)| (1, MixedInput::Me(bearer)))
        }
    }

    async fn call(&self, input: MixedInput) -> Outcome {
        match input {
            MixedInput::Login(code) => send(self.login.request(&code)).await,
            MixedInput::Me(bearer) => send(self.me.request(bearer)).await,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Minted {
    code: String,
    openid: String,
}

#[derive(Debug, Deserialize)]
struct LoginAnswer {
    token: String,
}

/// A registered user with a live session.
#[derive(Debug, Clone)]
pub struct User {
    pub openid: String,
    pub token: String,
}

impl Driver {
    /// Sets the latency the simulator adds to every WeChat call.
    async fn set_latency(&self, latency: Duration) -> anyhow::Result<()> {
        self.client
            .put(format!("{}/sim/latency", self.sim))
            .json(&json!({ "ms": latency.as_millis() }))
            .send()
            .await?
            .error_for_status()
            .context("setting the simulator's latency")?;
        Ok(())
    }

    /// Mints one code per entry: for that openid, or for a new user.
    async fn mint(&self, openids: Vec<Option<String>>) -> anyhow::Result<Vec<Minted>> {
        let url = format!("{}/sim/codes", self.sim);
        stream::iter(openids)
            .map(|openid| {
                let body = openid.map_or_else(|| json!({}), |openid| json!({ "openid": openid }));
                let request = self.client.post(&url).json(&body);
                async move {
                    let minted: Minted = request.send().await?.error_for_status()?.json().await?;
                    anyhow::Ok(minted)
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await
            .context("minting codes at the simulator")
    }

    /// Registers `count` new users, each logged in once.
    pub async fn register(&self, count: usize) -> anyhow::Result<Vec<User>> {
        let minted = self.mint(vec![None; count]).await?;
        let url = format!("{}/v1/login", self.gateway);
        stream::iter(minted)
            .map(|minted| {
                let request = self.client.post(&url).json(&json!({ "code": minted.code }));
                async move {
                    let response = request.send().await?;
                    let status = response.status();
                    if !status.is_success() {
                        let body = response.text().await.unwrap_or_default();
                        anyhow::bail!("login answered {status}: {body}");
                    }
                    let answer: LoginAnswer = response.json().await?;
                    Ok(User {
                        openid: minted.openid,
                        token: answer.token,
                    })
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await
            .context("registering users through the gateway")
    }

    /// `data` sealed with the user's current session_key, as the body of
    /// `POST /v1/me/profile`.
    async fn seal(&self, openid: &str, data: serde_json::Value) -> anyhow::Result<String> {
        let sealed: serde_json::Value = self
            .client
            .post(format!("{}/sim/seal", self.sim))
            .json(&json!({ "openid": openid, "data": data }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(json!({ "encryptedData": sealed["encryptedData"], "iv": sealed["iv"] }).to_string())
    }
}

/// Where a login scenario's codes come from.
enum Codes {
    /// A new openid per code.
    NewUsers,
    /// Codes of registered users, in turn.
    Returning(Cycle<String>),
}

impl Codes {
    async fn mint(&self, driver: &Driver, count: usize) -> anyhow::Result<Vec<String>> {
        let openids = match self {
            Codes::NewUsers => vec![None; count],
            Codes::Returning(openids) => (0..count).map(|_| openids.next().cloned()).collect(),
        };
        Ok(driver
            .mint(openids)
            .await?
            .into_iter()
            .map(|minted| minted.code)
            .collect())
    }
}

/// What scenarios share, prepared on first use.
#[derive(Default)]
pub struct Prepared {
    registered: Option<Arc<Vec<User>>>,
}

impl Prepared {
    async fn registered(
        &mut self,
        driver: &Driver,
        count: usize,
    ) -> anyhow::Result<Arc<Vec<User>>> {
        if let Some(users) = &self.registered {
            return Ok(users.clone());
        }
        eprintln!("  registering {count} users");
        let users = Arc::new(driver.register(count).await?);
        self.registered = Some(users.clone());
        Ok(users)
    }
}

/// The tokens of the first `count` users.
fn tokens(users: &[User], count: usize) -> Vec<String> {
    users.iter().take(count).map(|u| u.token.clone()).collect()
}

/// What running a scenario needs.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub driver: &'a Driver,
    pub runner: &'a Runner,
    pub args: &'a RunArgs,
}

/// A workload that spends login codes from `pool`, `per_request` codes per
/// request on average.
struct SpendsCodes<W> {
    workload: Arc<W>,
    pool: Arc<CodePool>,
    codes: Codes,
    per_request: f64,
}

/// Prepares and runs one scenario.
pub async fn run(
    scenario: Scenario,
    cx: Context<'_>,
    prepared: &mut Prepared,
) -> anyhow::Result<RunReport> {
    let Context {
        driver,
        runner,
        args,
    } = cx;
    let name = scenario.name();
    match scenario {
        Scenario::FirstLogin => {
            let description = "POST /v1/login, each with a fresh code of a new openid: \
                               a code exchange at the simulator, a session in Redis and \
                               a new row in MySQL per request"
                .to_owned();
            let pool = Arc::new(CodePool::default());
            let spends = SpendsCodes {
                workload: Arc::new(Login::new(driver, pool.clone())),
                pool,
                codes: Codes::NewUsers,
                per_request: 1.0,
            };
            run_with_codes(name, description, cx, spends).await
        }
        Scenario::ReturningLogin => {
            let users = prepared.registered(driver, args.users).await?;
            let openids = users.iter().map(|u| u.openid.clone()).collect();
            let description = format!(
                "POST /v1/login with fresh codes of {} registered users (the upsert updates their row)",
                users.len()
            );
            let pool = Arc::new(CodePool::default());
            let spends = SpendsCodes {
                workload: Arc::new(Login::new(driver, pool.clone())),
                pool,
                codes: Codes::Returning(Cycle::new(openids)),
                per_request: 1.0,
            };
            run_with_codes(name, description, cx, spends).await
        }
        Scenario::Me | Scenario::Verify => {
            let users = prepared.registered(driver, args.users).await?;
            let tokens = tokens(&users, args.tokens);
            let (path, workload) = match scenario {
                Scenario::Me => ("/v1/me", Me::new(&driver.client, &driver.gateway, &tokens)?),
                _ => (
                    "/v1/verify",
                    Me::verify(&driver.client, &driver.gateway, &tokens)?,
                ),
            };
            let description = format!("GET {path} cycling {} valid tokens", tokens.len());
            let workload = Arc::new(workload);
            runner.warm_up(&workload).await?;
            let (load, usage) = runner.measure(workload).await?;
            RunReport::new(name, description, &load, usage, Vec::new())
        }
        Scenario::Profile => {
            // Users of their own: a later login of theirs would make their
            // sealed data stale (a new session_key).
            eprintln!(
                "  registering {} users and sealing their profiles",
                args.tokens
            );
            let users = driver.register(args.tokens).await?;
            let sealed = seal_profiles(driver, &users).await?;
            let description = format!(
                "POST /v1/me/profile with encryptedData sealed for each of {} users: \
                 session_key from auth, AES-CBC decryption, a MySQL update",
                users.len()
            );
            let workload = Arc::new(Profile {
                client: driver.client.clone(),
                url: format!("{}/v1/me/profile", driver.gateway),
                sealed: Cycle::new(sealed),
            });
            runner.warm_up(&workload).await?;
            let (load, usage) = runner.measure(workload).await?;
            RunReport::new(name, description, &load, usage, Vec::new())
        }
        Scenario::Mixed => {
            let users = prepared.registered(driver, args.users).await?;
            let tokens = tokens(&users, args.tokens);
            let openids = users.iter().map(|u| u.openid.clone()).collect();
            let description = format!(
                "1 in {MIXED_LOGIN_EVERY} requests POST /v1/login of one of {} registered users, \
                 the others GET /v1/me with one of {} tokens",
                users.len(),
                tokens.len()
            );
            let pool = Arc::new(CodePool::default());
            let spends = SpendsCodes {
                workload: Arc::new(Mixed {
                    login: Login::new(driver, pool.clone()),
                    me: Me::new(&driver.client, &driver.gateway, &tokens)?,
                    sent: AtomicU64::new(0),
                }),
                pool,
                codes: Codes::Returning(Cycle::new(openids)),
                per_request: 1.0 / MIXED_LOGIN_EVERY as f64,
            };
            run_with_codes(name, description, cx, spends).await
        }
        Scenario::SlowWechat => slow_wechat(cx, prepared).await,
    }
}

/// Returning logins with WeChat slow and many logins in flight: what the
/// services hold per waiting login, and whether throughput keeps up with
/// what the latency allows.
async fn slow_wechat(cx: Context<'_>, prepared: &mut Prepared) -> anyhow::Result<RunReport> {
    let Context {
        driver,
        runner,
        args,
    } = cx;
    let users = prepared.registered(driver, args.users).await?;
    let openids = users.iter().map(|u| u.openid.clone()).collect();
    let in_flight = args.slow_wechat_in_flight;
    let latency = Duration::from_millis(args.slow_wechat_ms);
    let driver = Driver {
        client: crate::http_client(in_flight)?,
        concurrency: in_flight,
        ..driver.clone()
    };
    let runner = Runner {
        concurrency: in_flight,
        ..runner.clone()
    };
    let description = format!(
        "POST /v1/login of {} registered users with {in_flight} logins in flight and the \
         simulator answering jscode2session after {} ms",
        users.len(),
        latency.as_millis()
    );
    let idle_rss: Vec<(String, Option<u64>)> = runner
        .services()
        // WeChat's stand-in is not ours to count.
        .filter(|watched| watched.name != "wechat-sim")
        .map(|watched| (watched.name.clone(), status_kib(watched.pid, "VmRSS")))
        .collect();
    driver.set_latency(latency).await?;
    let pool = Arc::new(CodePool::default());
    let spends = SpendsCodes {
        workload: Arc::new(Login::new(&driver, pool.clone())),
        pool,
        codes: Codes::Returning(Cycle::new(openids)),
        per_request: 1.0,
    };
    let cx = Context {
        driver: &driver,
        runner: &runner,
        args,
    };
    let report = run_with_codes(Scenario::SlowWechat.name(), description, cx, spends).await;
    driver.set_latency(Duration::ZERO).await?;
    let mut report = report?;
    let allowed = in_flight as f64 / latency.as_secs_f64().max(0.001);
    report.notes.push(format!(
        "{in_flight} in flight ÷ {} ms allows {allowed:.0}/s; measured {:.1} % of it",
        latency.as_millis(),
        100.0 * report.ok_per_second / allowed
    ));
    let mut grew = Vec::new();
    let mut total = 0_u64;
    for (name, idle) in idle_rss {
        let peak = report
            .usage
            .processes
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.peak_rss_kib);
        if let (Some(idle), Some(peak)) = (idle, peak) {
            let delta = peak.saturating_sub(idle);
            total += delta;
            grew.push(format!("{name} +{delta} KiB"));
        }
    }
    report.notes.push(format!(
        "memory per in-flight login: {:.1} KiB ({} over the idle RSS before the scenario)",
        total as f64 / in_flight as f64,
        grew.join(", ")
    ));
    Ok(report)
}

/// Seals a WeChat-shaped profile for each user.
async fn seal_profiles(
    driver: &Driver,
    users: &[User],
) -> anyhow::Result<Vec<(HeaderValue, String)>> {
    stream::iter(users.iter().enumerate())
        .map(|(index, user)| async move {
            let data = json!({
                "openId": user.openid,
                "nickName": format!("bench user {index}"),
                "gender": 1 + index % 2,
                "language": "zh_CN",
                "city": "Shenzhen",
                "province": "Guangdong",
                "country": "China",
                "avatarUrl": format!("https://thirdwx.qlogo.cn/mmopen/vi_32/bench{index}/132"),
            });
            let body = driver.seal(&user.openid, data).await?;
            let bearer = HeaderValue::from_str(&format!("Bearer {}", user.token))?;
            anyhow::Ok((bearer, body))
        })
        .buffer_unordered(driver.concurrency)
        .try_collect()
        .await
        .context("sealing profiles at the simulator")
}

/// Runs a workload that spends login codes: its pool is filled for the
/// warm-up, topped up from the rate the warm-up measured, then the window
/// is measured.
async fn run_with_codes<W: Workload>(
    name: &str,
    description: String,
    cx: Context<'_>,
    spends: SpendsCodes<W>,
) -> anyhow::Result<RunReport> {
    let Context {
        driver,
        runner,
        args,
    } = cx;
    let SpendsCodes {
        workload,
        pool,
        codes,
        per_request,
    } = spends;
    let max_codes = args.max_codes.max(1);
    let first = if runner.warmup.is_zero() {
        CODES_WITHOUT_WARMUP as f64
    } else {
        // About a second's worth on a fast machine.
        (driver.concurrency * 64).max(4000) as f64
    };
    let first = ((first * per_request).ceil() as usize).clamp(1, max_codes);
    eprintln!("  minting {first} codes");
    pool.extend(codes.mint(driver, first).await?);
    let mut minted = first;
    let mut notes = Vec::new();

    if let Some(warm_up) = runner.warm_up(&workload).await? {
        let rate = pool.taken() as f64 / warm_up.elapsed.as_secs_f64().max(0.001);
        let wanted = (rate * runner.duration.as_secs_f64() * CODE_MARGIN).ceil() as usize
            + driver.concurrency;
        let more = wanted
            .saturating_sub(pool.len())
            .min(max_codes.saturating_sub(minted));
        if more > 0 {
            eprintln!("  minting {more} more codes (the warm-up used {rate:.0}/s)");
            pool.extend(codes.mint(driver, more).await?);
            minted += more;
        }
        notes.push(format!(
            "the warm-up spent {rate:.0} codes/s; {minted} codes were minted outside the window"
        ));
    }

    let (load, usage) = runner.measure(workload).await?;
    if load.exhausted {
        notes.push(format!(
            "ENDED EARLY: the code pool ran dry after {:.2}s of the window (raise --max-codes, now {})",
            load.elapsed.as_secs_f64(),
            args.max_codes
        ));
    }
    RunReport::new(name, description, &load, usage, notes)
}
