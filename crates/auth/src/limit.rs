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
//! The budgets are kept in a [`BudgetStore`]: with Redis, every auth
//! instance shares them (one Lua script checks every budget a request is
//! charged to and charges them only if all have room, in one atomic round
//! trip, on Redis's clock); in process, the same arithmetic runs under a
//! mutex. A request refused by one budget costs the others nothing.
//!
//! When Redis does not answer, a charge fails like every other Redis call
//! (`DEPENDENCY_UNAVAILABLE`, 503), not open: each charged path needs Redis
//! anyway (a login stores its session after WeChat answers; `checksession`
//! and the phone number read the session first), so failing open would let
//! nothing more succeed, only let WeChat calls through that end in a 503,
//! spending quota while Redis flaps.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use wxlogin_common::clock::Clock;
use wxlogin_redis::keys::budget;

use crate::store::{BudgetStore, BudgetSubject, Charge, ChargeMode, StoreError};

/// The period every budget is counted over: the settings say "per minute".
pub const PERIOD: Duration = Duration::from_secs(60);

/// The bucket of calls that do not say which client they serve and whose
/// peer address is unknown.
const INTERNAL: &str = "internal";

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

    /// This budget for `subject`.
    fn charge(self, subject: BudgetSubject<'_>) -> Charge<'_> {
        Charge {
            subject,
            emission_us: self.emission_us(),
            period_us: self.period_us(),
        }
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
            Kind::LoginPerIp => budget::LOGIN_PER_IP,
            Kind::LoginPerApp => budget::LOGIN_PER_APP,
            Kind::CheckSessionPerUser => budget::CHECK_SESSION,
            Kind::PhonePerUser => budget::PHONE,
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
    store: Arc<dyn BudgetStore>,
    clock: Clock,
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

/// The login budgets of one login that its code's claim checks in the
/// round trip that claims it (see [`Limiter::login_budgets`]).
#[derive(Debug, Clone)]
pub struct LoginBudgets {
    appid: String,
    client: String,
    /// Which budgets, in the order the claim checks them.
    kinds: Vec<Kind>,
    budgets: Budgets,
}

impl LoginBudgets {
    /// The budgets to check, in order.
    pub fn charges(&self) -> Vec<Charge<'_>> {
        self.kinds
            .iter()
            .map(|kind| login_charge(&self.budgets, *kind, &self.appid, &self.client))
            .collect()
    }
}

/// A login budget of `appid` for `client`.
fn login_charge<'a>(budgets: &Budgets, kind: Kind, appid: &'a str, client: &'a str) -> Charge<'a> {
    match kind {
        Kind::LoginPerApp => budgets
            .login_per_app
            .charge(BudgetSubject::LoginApp { appid }),
        _ => budgets
            .login_per_ip
            .charge(BudgetSubject::LoginClient { appid, client }),
    }
}

impl Limiter {
    /// Budgets kept in `store`.
    pub fn new(store: Arc<dyn BudgetStore>, budgets: Budgets, clock: Clock) -> Limiter {
        Limiter {
            budgets,
            store,
            warned_app_us: Arc::new(AtomicU64::new(0)),
            started: clock.now(),
            clock,
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
        let budgets = self.login_kinds(client, appid);
        self.call(ChargeMode::Check, &budgets.charges(), &budgets.kinds)
            .await
    }

    /// The login budgets that are on. Both carry the app's hash tag, as
    /// its codes' slots do, so that the script that claims a code checks
    /// them in the same Redis Cluster hash slot.
    fn login_kinds(&self, client: &Client, appid: &str) -> LoginBudgets {
        let kinds = [
            (Kind::LoginPerIp, self.budgets.login_per_ip),
            (Kind::LoginPerApp, self.budgets.login_per_app),
        ]
        .into_iter()
        .filter(|(_, budget)| !budget.is_off())
        .map(|(kind, _)| kind)
        .collect();
        LoginBudgets {
            appid: appid.to_owned(),
            client: client.0.clone(),
            kinds,
            budgets: self.budgets,
        }
    }

    /// [`Limiter::login`] for a login about to claim its code. Where the
    /// store checks budgets in the claim's round trip (Redis), this answers
    /// what to check there, and [`Limiter::refusal`] turns the claim's
    /// verdict into the error; elsewhere it checks them now (`Ok(None)`).
    pub async fn login_budgets(
        &self,
        client: &Client,
        appid: &str,
    ) -> Result<Option<LoginBudgets>, LimitError> {
        if !self.store.checked_at_claim() {
            return self.login(client, appid).await.map(|()| None);
        }
        let budgets = self.login_kinds(client, appid);
        Ok((!budgets.kinds.is_empty()).then_some(budgets))
    }

    /// The error for a login whose claim refused: the budget at `position`
    /// (from 1, as the script counts) has room again in `wait_us`.
    pub fn refusal(
        &self,
        budgets: Option<&LoginBudgets>,
        position: usize,
        wait_us: u64,
    ) -> LimitError {
        let kind = budgets
            .and_then(|budgets| budgets.kinds.get(position.saturating_sub(1)))
            .copied()
            .unwrap_or(Kind::LoginPerIp);
        self.exhausted(kind, wait_us)
    }

    /// Counts a code of `appid` from `client` that WeChat refused.
    pub async fn login_refused(&self, client: &Client, appid: &str) -> Result<(), LimitError> {
        let budgets = self.login_kinds(client, appid);
        self.call(ChargeMode::Force, &budgets.charges(), &budgets.kinds)
            .await
    }

    /// Charges a WeChat `checksession` call for the user.
    pub async fn check_session(&self, appid: &str, openid: &str) -> Result<(), LimitError> {
        self.charge_user(Kind::CheckSessionPerUser, appid, openid)
            .await
    }

    /// Charges a WeChat `getuserphonenumber` call for the user.
    pub async fn phone(&self, appid: &str, openid: &str) -> Result<(), LimitError> {
        self.charge_user(Kind::PhonePerUser, appid, openid).await
    }

    async fn charge_user(&self, kind: Kind, appid: &str, openid: &str) -> Result<(), LimitError> {
        let budget = match kind {
            Kind::PhonePerUser => self.budgets.phone_per_user,
            _ => self.budgets.check_session_per_user,
        };
        if budget.is_off() {
            return Ok(());
        }
        let charge = budget.charge(BudgetSubject::User {
            budget: kind.name(),
            appid,
            openid,
        });
        self.call(ChargeMode::Charge, &[charge], &[kind]).await
    }

    async fn call(
        &self,
        mode: ChargeMode,
        charges: &[Charge<'_>],
        kinds: &[Kind],
    ) -> Result<(), LimitError> {
        if charges.is_empty() {
            return Ok(());
        }
        let Some(refused) = self.store.charge(mode, charges).await? else {
            return Ok(());
        };
        let kind = kinds
            .get(refused.index)
            .copied()
            .unwrap_or(Kind::LoginPerIp);
        Err(self.exhausted(kind, refused.wait_us))
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
        let now = u64::try_from((self.clock.now() - self.started).as_micros())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{SessionPolicy, Stores};

    /// The same promises from either backend.
    async fn budgets_hold(stores: Stores) {
        let limiter = Limiter::new(
            stores.budgets,
            Budgets {
                login_per_ip: Budget::per_minute(3),
                login_per_app: Budget::per_minute(5),
                check_session_per_user: Budget::per_minute(2),
                phone_per_user: Budget::per_minute(0),
            },
            Clock::system(),
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
        let stores = Stores::connect(
            &redis.url().to_owned().into(),
            redis.prefix(),
            SessionPolicy::default(),
            Clock::system(),
        )
        .await
        .unwrap();
        budgets_hold(stores).await;
    }

    #[tokio::test]
    async fn budgets_hold_in_process() {
        budgets_hold(crate::store::memory::stores(
            SessionPolicy::default(),
            Clock::system(),
        ))
        .await;
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
