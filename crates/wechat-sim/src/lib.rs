//! Our WeChat simulator: a real HTTP server that speaks WeChat's server API
//! contract (see `docs/wechat.md`), for tests, benchmarks and local runs.
//!
//! It owns the imitation of WeChat (login and phone codes, session keys,
//! access_tokens, sealed user data, WeChat's errcodes, scripted faults and
//! latency) and nothing else. It must not depend on our WeChat client
//! (`wxlogin-wechat`) or on our services' code: they are tested against it,
//! so sharing code would let both sides agree on a mistake. It is test
//! infrastructure, yet it must not panic on any input, and it must stay cheap
//! per request because benchmarks hammer it.
//!
//! # WeChat endpoints
//!
//! - `GET /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code`
//! - `POST /cgi-bin/stable_token` `{"grant_type": "client_credential", "appid",
//!   "secret", "force_refresh"?: false}` → `{"access_token", "expires_in"}`:
//!   the app's current stable token while it is valid (`expires_in` is what
//!   is left of it); a new one when forced.
//! - `GET /cgi-bin/token?grant_type=client_credential&appid&secret`: the
//!   classic API, a new token on every call.
//! - `POST /wxa/business/getuserphonenumber?access_token=...` `{"code",
//!   "openid"?}` → `{"errcode": 0, "errmsg": "ok", "phone_info":
//!   {"phoneNumber", "purePhoneNumber", "countryCode", "watermark":
//!   {"timestamp", "appid"}}}` for a phone code minted with
//!   [`Simulator::mint_phone_code`].
//! - `GET /wxa/checksession?access_token&openid&signature&sig_method=hmac_sha256`:
//!   errcode 0 when `signature` is the lowercase hex HMAC-SHA256 keyed with
//!   the user's *current* session_key string over the empty message, else
//!   87009 `invalid signature` (also for another `sig_method` or a user
//!   without a session_key).
//!
//! Answers are HTTP 200 with a JSON body labelled `text/plain`, errcodes
//! included, as WeChat does; a query that cannot be read is HTTP 400 with
//! errcode 40097, a POST body that is not the expected JSON HTTP 400 with
//! 47001. Login and phone codes are single-use (40163 on reuse), live
//! [`SimConfig::code_ttl`] and belong to one appid (another app's code is
//! 40029). Credentials are checked as WeChat does (41002 / 40013 / 41004 /
//! 40125; a `grant_type` other than the endpoint's is 40002).
//!
//! Access tokens belong to one app and live
//! [`SimConfig::access_token_ttl`]. A token replaced by a newer one of its
//! kind (a forced stable_token, any classic token call; the two kinds never
//! retire each other) stays valid [`SimConfig::access_token_grace`] more. A
//! missing, unknown, invalidated or retired token is 40001 `invalid
//! credential, access_token is invalid or not latest`; one past its TTL is
//! 42001 `access_token expired`.
//!
//! # Control API (JSON in and out; errors are 400 `{"error": "..."}`)
//!
//! - `POST /sim/codes` with a [`MintCode`] body, every field optional
//!   (`{"appid", "openid", "unionid", "session_key"}`; an empty body is
//!   `{}`): mints a code as `wx.login` would, answers a [`Minted`]
//!   `{"code", "appid", "openid", "unionid"?, "session_key"}`.
//! - `POST /sim/phone-codes` with a [`MintPhoneCode`] body, every field
//!   optional (`{"appid", "phone_number", "pure_phone_number",
//!   "country_code", "country_code_as_number": false}`): mints a phone code
//!   as the `getPhoneNumber` button would, answers a [`MintedPhoneCode`]
//!   `{"code", "appid", "phone_number", "pure_phone_number", "country_code"}`.
//! - `POST /sim/access-tokens/invalidate` `{"appid"?}`: every access_token of
//!   the app (the first app by default) is invalid from now on (40001);
//!   answers `{"appid", "invalidated": N}`, N counting the live ones.
//! - `PUT /sim/access-tokens/ttl` and `PUT /sim/access-tokens/grace`
//!   `{"ms": N}`: the lifetime and the grace of tokens issued from now on
//!   (`GET` reads them back).
//! - `POST /sim/seal` `{"appid"?, "openid", "data": {...}}`: seals `data` with
//!   the user's current session_key as WeChat seals `encryptedData`
//!   (AES-128-CBC, PKCS#7, random iv; a `watermark` `{appid, timestamp}` is
//!   added to an object that has none) and answers `{"encryptedData", "iv"}`;
//!   404 when the user has no session_key, 400 when it is not base64 of 16
//!   bytes.
//! - `POST /sim/faults` with a [`Fault`] body
//!   `{"errcode": -1, "errmsg"?, "delay_ms"?, "times"?: 1, "consume_code"?: false,
//!   "endpoint"?}`: queues a fault. Each call of a WeChat endpoint takes one
//!   use of the first queued fault that is scoped to it (`endpoint`, one of
//!   [`endpoint::ALL`]: `jscode2session`, `stable_token`, `token`,
//!   `getuserphonenumber`, `checksession`) or to no endpoint. `{"delay_ms":
//!   N}` alone delays one normal answer. Answers 204.
//! - `PUT /sim/latency` `{"ms": N}`: latency added to every WeChat-endpoint
//!   call (`GET` reads it back).
//! - `GET /sim/session-key?openid=...&appid=...`: the user's current
//!   session_key (appid defaults to the first app), 404 when none.
//! - `GET /sim/stats`: [`Stats`] `{"code2session_calls", "stable_token_calls",
//!   "token_calls", "phone_number_calls", "check_session_calls",
//!   "pending_faults", "latency_ms"}`.
//!
//! ```text
//! curl -s -X POST http://127.0.0.1:8090/sim/codes -d '{"openid":"o_alice"}'
//! curl -s -X POST http://127.0.0.1:8090/sim/faults -d '{"errcode":45011,"times":2}'
//! curl -s -X POST http://127.0.0.1:8090/sim/faults -d '{"errcode":40001,"endpoint":"getuserphonenumber"}'
//! curl -s -X POST http://127.0.0.1:8090/sim/phone-codes -d '{"country_code_as_number":true}'
//! curl -s -X POST http://127.0.0.1:8090/sim/seal -d '{"openid":"o_alice","data":{"nickName":"Alice"}}'
//! ```
//!
//! In-process, tests use the same operations through [`Simulator`] and
//! start it on an ephemeral port with [`Simulator::spawn`]. [`seal`] and
//! [`raw_data_signature`] are also there for tests that forge user data.

mod config;
mod control;
mod crypto;
mod ids;
mod state;
mod wechat;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{Router, response::IntoResponse};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_http::trace::TraceLayer;
use wxlogin_common::request_id::RequestSpan;

pub use config::{
    ACCESS_TOKEN_GRACE_VAR, ACCESS_TOKEN_TTL_VAR, APPS_VAR, CODE_TTL_VAR,
    DEFAULT_ACCESS_TOKEN_GRACE, DEFAULT_ACCESS_TOKEN_TTL, DEFAULT_APPID, DEFAULT_CODE_TTL,
    DEFAULT_SECRET, SimConfig,
};
pub use crypto::{SealError, Sealed, raw_data_signature, seal};
pub use state::{Fault, MintCode, MintPhoneCode, Minted, MintedPhoneCode, Stats, endpoint};
pub use wxlogin_common::config::ConfigError;

use state::{CountryCode, PhoneRecord, State, TokenLifetimes};

/// The address the binary listens on when `SIM_ADDR` is unset.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8090);

/// The variable that names the binary's listening address.
pub const ADDR_VAR: &str = "SIM_ADDR";

/// A simulated WeChat. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    /// appid → secret. Fixed at start, so it is read without the lock.
    apps: HashMap<String, String>,
    default_appid: String,
    code_ttl: Duration,
    state: Mutex<State>,
    calls: Calls,
    latency_nanos: AtomicU64,
    access_token_ttl_nanos: AtomicU64,
    access_token_grace_nanos: AtomicU64,
}

/// Calls received per WeChat endpoint, faulted or not.
#[derive(Default)]
struct Calls {
    code2session: AtomicU64,
    stable_token: AtomicU64,
    token: AtomicU64,
    phone_number: AtomicU64,
    check_session: AtomicU64,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut appids: Vec<&str> = self.inner.apps.keys().map(String::as_str).collect();
        appids.sort_unstable();
        f.debug_struct("Simulator")
            .field("appids", &appids)
            .field("code_ttl", &self.inner.code_ttl)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A simulator knowing `config.apps`. With no apps at all it knows none,
    /// and codes minted without an appid are for [`DEFAULT_APPID`].
    pub fn new(config: SimConfig) -> Self {
        let default_appid = config
            .apps
            .first()
            .map_or_else(|| DEFAULT_APPID.to_owned(), |(appid, _)| appid.clone());
        Simulator {
            inner: Arc::new(Inner {
                apps: config.apps.into_iter().collect(),
                default_appid,
                code_ttl: config.code_ttl,
                state: Mutex::new(State::new()),
                calls: Calls::default(),
                latency_nanos: AtomicU64::new(0),
                access_token_ttl_nanos: AtomicU64::new(nanos(config.access_token_ttl)),
                access_token_grace_nanos: AtomicU64::new(nanos(config.access_token_grace)),
            }),
        }
    }

    /// The simulator's HTTP API: WeChat's endpoints and `/sim/` control.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(wechat::routes(self.clone()))
            .merge(control::routes(self.clone()))
            .fallback(|| async {
                control::ControlError::not_found("no such endpoint").into_response()
            })
            .layer(TraceLayer::new_for_http().make_span_with(RequestSpan {
                service: "wechat-sim",
            }))
    }

    /// Binds `addr` (port 0 picks a free port) and serves in a tokio task
    /// until the returned handle is shut down or dropped.
    pub async fn spawn(self, addr: SocketAddr) -> io::Result<RunningSimulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // A dropped sender stops the server as well.
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "wechat simulator listening");
        Ok(RunningSimulator {
            addr,
            sim: self,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Mints a login code as `wx.login` would, and makes its session_key the
    /// user's current one. An appid the simulator does not know is minted
    /// anyway; exchanging the code then fails with 40013.
    pub fn mint_code(&self, request: MintCode) -> Minted {
        let present = |value: Option<String>| value.filter(|value| !value.is_empty());
        let minted = Minted {
            code: ids::code(),
            appid: present(request.appid).unwrap_or_else(|| self.inner.default_appid.clone()),
            openid: present(request.openid).unwrap_or_else(ids::openid),
            unionid: present(request.unionid),
            session_key: present(request.session_key).unwrap_or_else(ids::session_key),
        };
        let now = Instant::now();
        let expires_at = now.checked_add(self.inner.code_ttl);
        self.with_state(|state| state.insert_code(&minted, expires_at, now));
        minted
    }

    /// Mints a phone code as the `getPhoneNumber` button would. An appid the
    /// simulator does not know is minted anyway; no access_token can
    /// exchange the code then.
    pub fn mint_phone_code(&self, request: MintPhoneCode) -> MintedPhoneCode {
        let present = |value: Option<String>| value.filter(|value| !value.is_empty());
        let appid = present(request.appid).unwrap_or_else(|| self.inner.default_appid.clone());
        let pure_phone_number =
            present(request.pure_phone_number).unwrap_or_else(ids::phone_number);
        let country_code = present(request.country_code).unwrap_or_else(|| "86".to_owned());
        // WeChat prefixes the country code to numbers outside mainland China only.
        let phone_number = present(request.phone_number).unwrap_or_else(|| {
            if country_code == "86" {
                pure_phone_number.clone()
            } else {
                format!("+{country_code} {pure_phone_number}")
            }
        });
        let wire_country_code = match numeric_country_code(&country_code) {
            Some(number) if request.country_code_as_number => CountryCode::Number(number),
            _ => CountryCode::Text(country_code.clone()),
        };
        let minted = MintedPhoneCode {
            code: ids::phone_code(),
            appid,
            phone_number,
            pure_phone_number,
            country_code,
        };
        let record = PhoneRecord {
            phone_number: minted.phone_number.clone(),
            pure_phone_number: minted.pure_phone_number.clone(),
            country_code: wire_country_code,
            timestamp: unix_now(),
        };
        let now = Instant::now();
        let expires_at = now.checked_add(self.inner.code_ttl);
        self.with_state(|state| {
            state.insert_phone_code(
                minted.code.clone(),
                minted.appid.clone(),
                record,
                expires_at,
                now,
            );
        });
        minted
    }

    /// Makes every access_token of `appid` invalid (40001) at once, as when
    /// another party fetched tokens behind our back. Answers how many live
    /// tokens it invalidated.
    pub fn invalidate_access_tokens(&self, appid: &str) -> usize {
        let now = Instant::now();
        self.with_state(|state| state.tokens.invalidate(appid, now))
    }

    /// The lifetime of access_tokens issued from now on (tokens already
    /// issued keep theirs).
    pub fn set_access_token_ttl(&self, ttl: Duration) {
        self.inner
            .access_token_ttl_nanos
            .store(nanos(ttl), Ordering::Relaxed);
    }

    /// How long a replaced access_token stays valid, for replacements from
    /// now on.
    pub fn set_access_token_grace(&self, grace: Duration) {
        self.inner
            .access_token_grace_nanos
            .store(nanos(grace), Ordering::Relaxed);
    }

    /// Seals `data` for the user as WeChat seals `encryptedData`, with the
    /// user's current session_key; a JSON object without a `watermark` gets
    /// `{"appid": appid, "timestamp": now}`. `None` when the user has no
    /// session_key, or it is not base64 of 16 bytes (minted by hand).
    pub fn seal_user_data(
        &self,
        appid: &str,
        openid: &str,
        data: serde_json::Value,
    ) -> Option<Sealed> {
        let session_key = self.session_key(appid, openid)?;
        crypto::seal_user_data(appid, &session_key, data, unix_now()).ok()
    }

    /// Queues `fault` behind the ones already queued. A fault with
    /// `times == 0` answers nothing and is dropped; one scoped to an
    /// endpoint the simulator does not have is never taken.
    pub fn push_fault(&self, fault: Fault) {
        self.with_state(|state| state.faults.push(fault));
    }

    /// Adds `latency` to every WeChat-endpoint call from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.inner
            .latency_nanos
            .store(nanos(latency), Ordering::Relaxed);
    }

    /// The user's current session_key: the one from the latest code minted
    /// for them.
    pub fn session_key(&self, appid: &str, openid: &str) -> Option<String> {
        self.with_state(|state| state.session_key(appid, openid))
    }

    /// How many jscode2session calls arrived, faulted or not.
    pub fn code2session_calls(&self) -> u64 {
        self.inner.calls.code2session.load(Ordering::Relaxed)
    }

    /// How many stable_token calls arrived, faulted or not.
    pub fn stable_token_calls(&self) -> u64 {
        self.inner.calls.stable_token.load(Ordering::Relaxed)
    }

    /// How many classic token calls arrived, faulted or not.
    pub fn token_calls(&self) -> u64 {
        self.inner.calls.token.load(Ordering::Relaxed)
    }

    /// How many getuserphonenumber calls arrived, faulted or not.
    pub fn phone_number_calls(&self) -> u64 {
        self.inner.calls.phone_number.load(Ordering::Relaxed)
    }

    /// How many checksession calls arrived, faulted or not.
    pub fn check_session_calls(&self) -> u64 {
        self.inner.calls.check_session.load(Ordering::Relaxed)
    }

    /// All counters at once.
    pub fn stats(&self) -> Stats {
        Stats {
            code2session_calls: self.code2session_calls(),
            stable_token_calls: self.stable_token_calls(),
            token_calls: self.token_calls(),
            phone_number_calls: self.phone_number_calls(),
            check_session_calls: self.check_session_calls(),
            pending_faults: self.with_state(|state| state.faults.pending()),
            latency_ms: u64::try_from(self.latency().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The appid codes are minted for when none is given.
    pub fn default_appid(&self) -> &str {
        &self.inner.default_appid
    }

    fn latency(&self) -> Duration {
        Duration::from_nanos(self.inner.latency_nanos.load(Ordering::Relaxed))
    }

    fn token_lifetimes(&self) -> TokenLifetimes {
        TokenLifetimes {
            ttl: Duration::from_nanos(self.inner.access_token_ttl_nanos.load(Ordering::Relaxed)),
            grace: Duration::from_nanos(
                self.inner.access_token_grace_nanos.load(Ordering::Relaxed),
            ),
        }
    }

    fn secret_of(&self, appid: &str) -> Option<&str> {
        self.inner.apps.get(appid).map(String::as_str)
    }

    fn calls(&self) -> &Calls {
        &self.inner.calls
    }

    /// Runs `f` under the state lock. `f` is synchronous, so the lock is
    /// never held across an await. Nothing panics while holding it, so a
    /// poisoned lock still guards consistent state.
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }
}

/// `duration` in nanoseconds, saturating (about 584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Counts one call.
fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The Unix time in seconds, as WeChat stamps watermarks.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// `country_code` as a number, when it is all digits and fits.
fn numeric_country_code(country_code: &str) -> Option<u64> {
    if country_code.bytes().all(|b| b.is_ascii_digit()) {
        country_code.parse().ok()
    } else {
        None
    }
}

/// A simulator serving on a socket. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningSimulator {
    /// The bound address (the real port when bound to port 0).
    pub addr: SocketAddr,
    /// The served simulator, to mint codes and script faults.
    pub sim: Simulator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl RunningSimulator {
    /// `http://ip:port`, the base URL to point a WeChat client at. An
    /// unspecified bind address (`0.0.0.0`) is given as loopback.
    pub fn base_url(&self) -> String {
        let ip = match self.addr {
            SocketAddr::V4(addr) if addr.ip().is_unspecified() => {
                std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            SocketAddr::V6(addr) if addr.ip().is_unspecified() => {
                std::net::IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
            addr => addr.ip(),
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Stops accepting connections and waits for in-flight calls (scripted
    /// delays included) to finish.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs a simulator for `config` on `addr` until `shutdown` completes: what
/// the binary does.
pub async fn serve(
    addr: SocketAddr,
    config: SimConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let running = Simulator::new(config).spawn(addr).await?;
    let base_url = running.base_url();
    tracing::info!(
        %base_url,
        appid = running.sim.default_appid(),
        "mint a code with: curl -s -X POST {base_url}/sim/codes -d '{{}}'"
    );
    shutdown.await;
    running.shutdown().await
}
