//! Budgets on every path that spends the app's WeChat quota: logins
//! (`jscode2session`) per client address and per app, `checksession` per
//! user, and `getuserphonenumber` per user. WeChat's limits are per app, so
//! without these one abuser could spend them for every user (45011).
//!
//! The algorithm is GCRA (a leaky bucket kept as one timestamp per budget):
//! a budget of `n` per period allows a burst of `n`, then one more every
//! `period / n`; a refused caller is told exactly when the next one fits.
//! Unlike a fixed window it never allows `2n` across a window's edge, and
//! it needs one key per budget, not one per window.
//!
//! With Redis, every auth instance shares the budgets: one Lua script checks
//! every budget a request is charged to and charges them only if all have
//! room (a request refused by one budget costs the others nothing), in one
//! atomic round trip, on Redis's clock (instances' clocks may disagree).
//! With the in-process store, the same arithmetic runs under a mutex.
//!
//! When Redis does not answer, a charge fails like every other Redis call
//! (`DEPENDENCY_UNAVAILABLE`, 503), not open: each charged path needs Redis
//! anyway (a login stores its session after WeChat answers; `checksession`
//! and the phone number read the session first), so failing open would let
//! nothing more succeed, only let WeChat calls through that end in a 503,
//! spending quota while Redis flaps.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use wxlogin_common::redis_guard::RedisGuard;

use crate::store::{SessionStore, StoreError};

/// The period every budget is counted over: the settings say "per minute".
pub const PERIOD: Duration = Duration::from_secs(60);

/// The bucket of calls that do not say which client they serve and whose
/// peer address is unknown.
const INTERNAL: &str = "internal";

/// How often charging also sweeps out the in-process budgets that are full
/// again (and so need no entry).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// At most `limit` calls per `period`, in a burst or spread out; a limit of
/// 0 turns the budget off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u32,
    pub period: Duration,
}

impl Budget {
    pub const fn per_minute(limit: u32) -> Budget {
        Budget {
            limit,
            period: PERIOD,
        }
    }

    fn is_off(self) -> bool {
        self.limit == 0 || self.period.is_zero()
    }

    fn period_us(self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }

    /// The time one call takes out of the budget.
    fn emission_us(self) -> u64 {
        (self.period_us() / u64::from(self.limit.max(1))).max(1)
    }
}

/// Every budget, as configured (`RATE_LIMIT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Logins from one client address (an IPv6 client's /64) to one app.
    pub login_per_ip: Budget,
    /// Logins of one mini-program, from everyone.
    pub login_per_app: Budget,
    /// WeChat `checksession` calls for one user.
    pub check_session_per_user: Budget,
    /// WeChat `getuserphonenumber` calls for one user.
    pub phone_per_user: Budget,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            // Codes WeChat refused (real logins are not counted): a real
            // client sends one now and then (a code that expired while it
            // waited), an abuser thousands.
            login_per_ip: Budget::per_minute(60),
            // A backstop against an abuser with many addresses, above what
            // the refused codes of a million-user app add up to.
            login_per_app: Budget::per_minute(60_000),
            // A real user's data fails to decrypt rarely; WeChat's own limit is
            // about 100 calls per user and minute, and ours must stay below it.
            check_session_per_user: Budget::per_minute(10),
            // One tap of the phone button per verification; WeChat bills these.
            phone_per_user: Budget::per_minute(10),
        }
    }
}

/// Who a login is charged to: the client address the gateway saw, or, for
/// an internal caller that names none, its own peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client(String);

impl Client {
    /// The client at `ip`. IPv6 clients are counted by /64, the block one
    /// subscriber gets: counting single addresses would give each of them
    /// 2^64 budgets.
    pub fn address(ip: IpAddr) -> Client {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Client(v4.to_string()),
            IpAddr::V6(v6) => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                Client(format!("{}/64", std::net::Ipv6Addr::from(segments)))
            }
        }
    }

    /// The one bucket of callers that are neither named nor known by address.
    pub fn internal() -> Client {
        Client(INTERNAL.to_owned())
    }
}

/// A spent budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {} budget is spent for {retry_after:?}", kind.name())]
pub struct Exhausted {
    pub kind: Kind,
    /// When the budget has room for this call again.
    pub retry_after: Duration,
}

/// Which budget refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    LoginPerIp,
    LoginPerApp,
    CheckSessionPerUser,
    PhonePerUser,
}

impl Kind {
    /// The budget's name in its Redis key and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::LoginPerIp => "login_ip",
            Kind::LoginPerApp => "login_app",
            Kind::CheckSessionPerUser => "check_session",
            Kind::PhonePerUser => "phone",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks and charges the budgets; cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    budgets: Budgets,
    backend: Backend,
    /// When this process last warned that the per-app budget refuses
    /// logins (µs since `started`; 0: never).
    warned_app_us: Arc<AtomicU64>,
    started: Instant,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("budgets", &self.budgets)
            .finish_non_exhaustive()
    }
}

/// What a call to the budgets does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Charge every budget if all have room, else none.
    Charge,
    /// Only say whether all have room.
    Check,
    /// Charge every budget, room or not: for what already happened.
    Force,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Charge => "charge",
            Mode::Check => "check",
            Mode::Force => "force",
        }
    }
}

#[derive(Clone)]
enum Backend {
    Redis { redis: RedisGuard, prefix: String },
    Memory(Arc<Mutex<Memory>>),
}

struct Memory {
    /// Budget key → its theoretical arrival time (µs on [`Memory::epoch`]).
    tats: HashMap<String, u64>,
    epoch: Instant,
    last_sweep: u64,
}

/// GCRA in Lua, one key per budget: `gcra(keys, args, mode)` checks every
/// key's timestamp (`args` holds each budget's emission interval and
/// period, in µs, in turn) and charges all of them only if none refuses;
/// answers `{0, 0}`, or the microseconds until the budget that refuses
/// longest has room and that budget's position. `mode` is the [`Mode`]:
/// `check` charges nothing, `force` charges whatever the budgets say. Used
/// by [`CHARGE`] and by the claim of a login's code, which checks the login
/// budgets in its own round trip (see [`Limiter::login`]).
pub(crate) const GCRA_LUA: &str = r"
local function gcra(keys, args, mode)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local wait, refusing = 0, 0
  local tats = {}
  for i, key in ipairs(keys) do
    local emission = tonumber(args[2 * i - 1])
    local period = tonumber(args[2 * i])
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local allow_at = tat + emission - period
    if allow_at - now > wait then wait, refusing = allow_at - now, i end
    tats[i] = tat + emission
  end
  if mode == 'force' then wait = 0 end
  if wait > 0 or mode == 'check' then return {wait, refusing} end
  for i, key in ipairs(keys) do
    redis.call('SET', key, string.format('%d', tats[i]), 'PX',
      math.ceil((tats[i] - now) / 1000))
  end
  return {0, 0}
end
";

/// [`GCRA_LUA`] on every key; the last argument is the mode.
static CHARGE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!("{GCRA_LUA}\nreturn gcra(KEYS, ARGV, ARGV[#ARGV])"))
});

/// The login budgets of one login, to check in Redis in the round trip that
/// claims its code (see [`Limiter::login`]): their keys, and each one's
/// emission interval and period in µs, in turn.
#[derive(Debug, Clone, Default)]
pub struct BudgetCheck {
    pub keys: Vec<String>,
    pub args: Vec<u64>,
    kinds: Vec<Kind>,
}

impl Limiter {
    /// Budgets kept where `store` keeps sessions: in Redis, shared by every
    /// instance, or in this process.
    pub fn new(store: &SessionStore, budgets: Budgets) -> Limiter {
        let backend = match store {
            SessionStore::Redis(redis) => Backend::Redis {
                redis: redis.guard().clone(),
                prefix: redis.prefix().to_owned(),
            },
            SessionStore::Memory(_) => Backend::Memory(Arc::new(Mutex::new(Memory {
                tats: HashMap::new(),
                epoch: Instant::now(),
                last_sweep: 0,
            }))),
        };
        Limiter {
            budgets,
            backend,
            warned_app_us: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        }
    }

    /// Whether a login of `appid` (a configured app: its key must not be
    /// the caller's choice) from `client` may reach WeChat: both login
    /// budgets must have room. It charges nothing: the login budgets count
    /// the codes WeChat refuses ([`Limiter::login_refused`]), which is what
    /// an abuser spends the app's quota with, not the logins of real users,
    /// however many share one address (a carrier-grade NAT, a campus). Bogus
    /// codes sent all at once can overshoot the budget once; the debt they
    /// run up then keeps their address out for as long as it takes to pay.
    ///
    /// A login checks its budgets with [`Limiter::login_budgets`], in the
    /// round trip that claims its code; this checks them on their own.
    pub async fn login(&self, client: &Client, appid: &str) -> Result<(), LimitError> {
        let charges = self.login_charges(client, appid);
        self.call(Mode::Check, &charges.each_ref().map(borrowed))
            .await
    }

    /// The login budgets and whom each one counts. Both subjects carry the
    /// app's hash tag ([`crate::store::app_tag`]), as its codes' slots do,
    /// so that the script that claims a code checks them in the same Redis
    /// Cluster hash slot.
    fn login_charges(&self, client: &Client, appid: &str) -> [(Kind, Budget, String); 2] {
        let app = crate::store::app_tag(appid);
        [
            (
                Kind::LoginPerIp,
                self.budgets.login_per_ip,
                format!("{app}:{}", client.0),
            ),
            (Kind::LoginPerApp, self.budgets.login_per_app, app),
        ]
    }

    /// [`Limiter::login`] for a login about to claim its code. In-process
    /// budgets are checked here (`Ok(None)`). Redis budgets are checked in
    /// the round trip that claims the code: this answers what to check
    /// there, and [`Limiter::refusal`] turns the script's verdict into the
    /// error.
    pub async fn login_budgets(
        &self,
        client: &Client,
        appid: &str,
    ) -> Result<Option<BudgetCheck>, LimitError> {
        match &self.backend {
            Backend::Redis { prefix, .. } => {
                let mut check = BudgetCheck::default();
                for (kind, budget, subject) in self.login_charges(client, appid) {
                    if budget.is_off() {
                        continue;
                    }
                    check.keys.push(format!("{prefix}{}", key(kind, &subject)));
                    check
                        .args
                        .extend([budget.emission_us(), budget.period_us()]);
                    check.kinds.push(kind);
                }
                Ok((!check.keys.is_empty()).then_some(check))
            }
            Backend::Memory(_) => self.login(client, appid).await.map(|()| None),
        }
    }

    /// The error for a login whose `check` refused: the budget at
    /// `position` (from 1, as the script counts) has room again in
    /// `wait_us`.
    pub fn refusal(
        &self,
        check: Option<&BudgetCheck>,
        position: usize,
        wait_us: u64,
    ) -> LimitError {
        let kind = check
            .and_then(|check| check.kinds.get(position.saturating_sub(1)))
            .copied()
            .unwrap_or(Kind::LoginPerIp);
        self.exhausted(kind, wait_us)
    }

    /// Counts a code of `appid` from `client` that WeChat refused.
    pub async fn login_refused(&self, client: &Client, appid: &str) -> Result<(), LimitError> {
        let charges = self.login_charges(client, appid);
        self.call(Mode::Force, &charges.each_ref().map(borrowed))
            .await
    }

    /// Charges a WeChat `checksession` call for the user.
    pub async fn check_session(&self, appid: &str, openid: &str) -> Result<(), LimitError> {
        let user = format!("{appid}:{openid}");
        let budget = self.budgets.check_session_per_user;
        self.call(Mode::Charge, &[(Kind::CheckSessionPerUser, budget, &user)])
            .await
    }

    /// Charges a WeChat `getuserphonenumber` call for the user.
    pub async fn phone(&self, appid: &str, openid: &str) -> Result<(), LimitError> {
        let user = format!("{appid}:{openid}");
        let budget = self.budgets.phone_per_user;
        self.call(Mode::Charge, &[(Kind::PhonePerUser, budget, &user)])
            .await
    }

    async fn call(&self, mode: Mode, charges: &[(Kind, Budget, &str)]) -> Result<(), LimitError> {
        let charges: Vec<_> = charges
            .iter()
            .filter(|(_, budget, _)| !budget.is_off())
            .collect();
        if charges.is_empty() {
            return Ok(());
        }
        let refused = match &self.backend {
            Backend::Redis { redis, prefix } => {
                let mut invocation = CHARGE.prepare_invoke();
                for (kind, budget, subject) in &charges {
                    invocation
                        .key(format!("{prefix}{}", key(*kind, subject)))
                        .arg(budget.emission_us())
                        .arg(budget.period_us());
                }
                invocation.arg(mode.as_str());
                let (wait, index): (u64, usize) = redis
                    .run(async |conn| invocation.invoke_async(conn).await)
                    .await
                    .map_err(StoreError::from)?;
                // Lua counts from 1.
                (wait > 0).then(|| (index.saturating_sub(1), wait))
            }
            Backend::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                memory.charge(mode, &charges)
            }
        };
        let Some((index, wait_us)) = refused else {
            return Ok(());
        };
        let kind = charges
            .get(index)
            .map_or(Kind::LoginPerIp, |(kind, _, _)| *kind);
        Err(self.exhausted(kind, wait_us))
    }

    fn exhausted(&self, kind: Kind, wait_us: u64) -> LimitError {
        metrics::counter!(wxlogin_common::metrics::name::RATE_LIMITED, "budget" => kind.name())
            .increment(1);
        if kind == Kind::LoginPerApp {
            self.warn_app_budget_spent();
        }
        Exhausted {
            kind,
            retry_after: Duration::from_micros(wait_us),
        }
        .into()
    }

    /// A spent per-app budget refuses everyone: worth an operator's look
    /// (an attack, or a budget too small for the app), but once a period,
    /// not once per refused login.
    fn warn_app_budget_spent(&self) {
        let now = u64::try_from(self.started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.warned_app_us.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.budgets.login_per_app.period_us();
        if due
            && self
                .warned_app_us
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                budget = self.budgets.login_per_app.limit,
                "the per-app login budget is spent (RATE_LIMIT_LOGIN_PER_APP): refusing logins"
            );
        }
    }
}

impl Memory {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// As the Redis script: the refusing budget's index and the wait.
    fn charge(&mut self, mode: Mode, charges: &[&(Kind, Budget, &str)]) -> Option<(usize, u64)> {
        let now = self.now_us();
        if now.saturating_sub(self.last_sweep) >= SWEEP_EVERY.as_micros() as u64 {
            // A budget whose timestamp is past is full again: the same as no
            // entry.
            self.tats.retain(|_, tat| *tat > now);
            self.last_sweep = now;
        }
        let keys: Vec<String> = charges
            .iter()
            .map(|(kind, _, subject)| key(*kind, subject))
            .collect();
        let mut refused: Option<(usize, u64)> = None;
        let mut tats = Vec::with_capacity(charges.len());
        for (index, ((_, budget, _), key)) in charges.iter().zip(&keys).enumerate() {
            let tat = self.tats.get(key).copied();
            if mode == Mode::Force {
                tats.push(
                    tat.unwrap_or(now)
                        .max(now)
                        .saturating_add(budget.emission_us()),
                );
                continue;
            }
            match gcra(tat, now, *budget) {
                Ok(tat) => tats.push(tat),
                Err(wait) if refused.is_none_or(|(_, longest)| wait > longest) => {
                    refused = Some((index, wait));
                }
                Err(_) => {}
            }
        }
        if refused.is_none() && mode != Mode::Check {
            for (key, tat) in keys.into_iter().zip(tats) {
                self.tats.insert(key, tat);
            }
        }
        refused
    }
}

fn borrowed((kind, budget, subject): &(Kind, Budget, String)) -> (Kind, Budget, &str) {
    (*kind, *budget, subject.as_str())
}

/// Where a budget's timestamp is kept (under the Redis prefix):
/// `limit:<budget>:<{a:appid}:client address | {a:appid} | appid:openid>`.
fn key(kind: Kind, subject: &str) -> String {
    format!("limit:{}:{subject}", kind.name())
}

/// One GCRA step at `now` (µs) for a budget whose theoretical arrival time
/// is `tat`: the new one if the call fits, else how long until it would.
/// (The Redis script does the same arithmetic.)
fn gcra(tat: Option<u64>, now: u64, budget: Budget) -> Result<u64, u64> {
    let tat = tat.unwrap_or(now).max(now);
    let next = tat.saturating_add(budget.emission_us());
    let allow_at = next.saturating_sub(budget.period_us());
    if allow_at > now {
        Err(allow_at - now)
    } else {
        Ok(next)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn gcra_allows_a_burst_then_one_per_emission_interval() {
        let budget = Budget::per_minute(3);
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(tat, 0, budget).unwrap());
        }
        // Full: the next call fits when one interval (20 s) has passed.
        assert_eq!(gcra(tat, 0, budget), Err(20 * SECOND));
        assert_eq!(gcra(tat, 15 * SECOND, budget), Err(5 * SECOND));
        let after = gcra(tat, 20 * SECOND, budget).unwrap();
        assert_eq!(gcra(Some(after), 20 * SECOND, budget), Err(20 * SECOND));
        // A budget left alone long enough is full again.
        assert!(gcra(tat, 10 * 60 * SECOND, budget).is_ok());
    }

    /// The same promises from either backend.
    async fn budgets_hold(store: SessionStore) {
        let limiter = Limiter::new(
            &store,
            Budgets {
                login_per_ip: Budget::per_minute(3),
                login_per_app: Budget::per_minute(5),
                check_session_per_user: Budget::per_minute(2),
                phone_per_user: Budget::per_minute(0),
            },
        );
        let from = |ip: &str| Client::address(ip.parse().unwrap());
        let refused = |result: Result<(), LimitError>| match result {
            Err(LimitError::Exhausted(exhausted)) => exhausted,
            other => panic!("not refused: {other:?}"),
        };

        // A login is only checked: real ones pass, however many.
        for _ in 0..10 {
            limiter.login(&from("192.0.2.1"), "wxa").await.unwrap();
        }
        // Codes WeChat refused are what is counted: three spend the
        // address's budget.
        for _ in 0..3 {
            limiter.login(&from("192.0.2.1"), "wxa").await.unwrap();
            limiter
                .login_refused(&from("192.0.2.1"), "wxa")
                .await
                .unwrap();
        }
        let spent = refused(limiter.login(&from("192.0.2.1"), "wxa").await);
        assert_eq!(spent.kind, Kind::LoginPerIp);
        // One call's share of a minute, less the time the calls took.
        assert!(spent.retry_after > Duration::from_secs(10), "{spent:?}");
        assert!(spent.retry_after <= Duration::from_secs(20), "{spent:?}");
        // The app's budget of 5 counts every address's refusals.
        limiter.login(&from("192.0.2.2"), "wxa").await.unwrap();
        for ip in ["192.0.2.2", "192.0.2.3"] {
            limiter.login_refused(&from(ip), "wxa").await.unwrap();
        }
        let app = refused(limiter.login(&from("192.0.2.4"), "wxa").await);
        assert_eq!(app.kind, Kind::LoginPerApp);
        // Both budgets are the app's: another app's are untouched.
        limiter.login(&from("192.0.2.4"), "wxb").await.unwrap();
        limiter.login(&from("192.0.2.1"), "wxb").await.unwrap();
        // A refusal already happened: it is counted even past the budget,
        // and the debt keeps the address out longer.
        limiter
            .login_refused(&from("192.0.2.1"), "wxa")
            .await
            .unwrap();
        let longer = refused(limiter.login(&from("192.0.2.1"), "wxa").await);
        assert!(longer.retry_after > spent.retry_after, "{longer:?}");

        limiter.check_session("wxa", "o1").await.unwrap();
        limiter.check_session("wxa", "o1").await.unwrap();
        let user = refused(limiter.check_session("wxa", "o1").await);
        assert_eq!(user.kind, Kind::CheckSessionPerUser);
        limiter.check_session("wxa", "o2").await.unwrap();
        // A budget of 0 is none.
        for _ in 0..100 {
            limiter.phone("wxa", "o1").await.unwrap();
        }
    }

    #[tokio::test]
    async fn budgets_hold_in_redis() {
        let redis = wxlogin_testkit::TestRedisPrefix::new();
        let store = SessionStore::connect(
            &redis.url().to_owned().into(),
            redis.prefix().to_owned(),
            crate::config::SessionPolicy::default(),
        )
        .await
        .unwrap();
        budgets_hold(store).await;
    }

    #[tokio::test]
    async fn budgets_hold_in_process() {
        let store = SessionStore::connect(
            &crate::store::MEMORY_URL.to_owned().into(),
            String::new(),
            crate::config::SessionPolicy::default(),
        )
        .await
        .unwrap();
        budgets_hold(store).await;
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = Client::address("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Client::address("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = Client::address("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            Client::address("::ffff:192.0.2.1".parse().unwrap()),
            Client::address("192.0.2.1".parse().unwrap())
        );
    }
}
