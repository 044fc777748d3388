//! The workloads driven through the gateway, and everything they need
//! prepared outside the measured window: login codes minted at the
//! simulator, registered users and their tokens, sealed profile data.
//!
//! Login codes are single-use, so a login scenario mints a first pool, runs
//! its warm-up on it to learn the rate, tops the pool up to last the window
//! with a margin (never beyond `--max-codes`), and ends early, saying so, if
//! the pool still runs dry.
//!
//! This module picks and prepares each scenario; `driver` talks to the
//! running system, `workloads` builds the requests, `pool` and `codes`
//! keep login codes coming, and `slow_wechat` is the one scenario that
//! changes the simulator while it runs.

use std::sync::{Arc, atomic::AtomicU64};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use reqwest::header::HeaderValue;
use serde_json::json;

use crate::{cli::Scenario, load::Cycle, report::RunReport};

mod codes;
mod driver;
mod pool;
mod slow_wechat;
mod workloads;

pub use driver::{Context, Driver, Prepared};
pub use workloads::Me;

use codes::{Codes, SpendsCodes, run_with_codes};
use driver::User;
use pool::CodePool;
use workloads::{Login, MIXED_LOGIN_EVERY, Mixed, Profile};

/// The tokens of the first `count` users.
fn tokens(users: &[User], count: usize) -> Vec<String> {
    users.iter().take(count).map(|u| u.token.clone()).collect()
}

/// Prepares and runs one scenario.
pub async fn run(
    scenario: Scenario,
    cx: Context<'_>,
    prepared: &mut Prepared,
) -> anyhow::Result<RunReport> {
    let (driver, runner, args) = (cx.driver, cx.runner, cx.args);
    let name = scenario.name();
    match scenario {
        Scenario::FirstLogin => {
            let description = "POST /v1/login, each with a fresh code of a new openid: \
                               a code exchange at the simulator, a session in Redis and \
                               a new row in MySQL per request"
                .to_owned();
            let spends = SpendsCodes::logins(driver, Codes::NewUsers);
            run_with_codes(name, description, cx, spends).await
        }
        Scenario::ReturningLogin => {
            let users = prepared.registered(driver, args.users).await?;
            let openids = users.iter().map(|u| u.openid.clone()).collect();
            let description = format!(
                "POST /v1/login with fresh codes of {} registered users (the upsert updates their row)",
                users.len()
            );
            let spends = SpendsCodes::logins(driver, Codes::Returning(Cycle::new(openids)));
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
        Scenario::SlowWechat => {
            let users = prepared.registered(driver, args.users).await?;
            slow_wechat::run(cx, &users).await
        }
    }
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
