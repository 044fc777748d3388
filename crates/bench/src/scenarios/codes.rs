//! Running a workload that spends login codes: where the codes come from,
//! and filling the pool for the warm-up, then from the rate the warm-up
//! measured, never beyond `--max-codes`.

use std::sync::Arc;

use super::{
    driver::{Context, Driver},
    pool::CodePool,
    workloads::Login,
};
use crate::{
    load::{Cycle, Workload},
    report::RunReport,
};

/// How far ahead of the measured rate a code pool is filled.
const CODE_MARGIN: f64 = 1.5;

/// Codes minted per scenario when there is no warm-up to learn the rate from.
const CODES_WITHOUT_WARMUP: usize = 20_000;

/// Where a login scenario's codes come from.
pub(super) enum Codes {
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

/// A workload that spends login codes from `pool`, `per_request` codes per
/// request on average.
pub(super) struct SpendsCodes<W> {
    pub workload: Arc<W>,
    pub pool: Arc<CodePool>,
    pub codes: Codes,
    pub per_request: f64,
}

impl SpendsCodes<Login> {
    /// Logins, one code each, from `codes`.
    pub(super) fn logins(driver: &Driver, codes: Codes) -> Self {
        let pool = Arc::new(CodePool::default());
        SpendsCodes {
            workload: Arc::new(Login::new(driver, pool.clone())),
            pool,
            codes,
            per_request: 1.0,
        }
    }
}

/// Runs a workload that spends login codes: its pool is filled for the
/// warm-up, topped up from the rate the warm-up measured, then the window
/// is measured.
pub(super) async fn run_with_codes<W: Workload>(
    name: &str,
    description: String,
    cx: Context<'_>,
    spends: SpendsCodes<W>,
) -> anyhow::Result<RunReport> {
    let (driver, runner, args) = (cx.driver, cx.runner, cx.args);
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
