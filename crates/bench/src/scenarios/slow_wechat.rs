//! The slow-WeChat scenario: returning logins while the simulator answers
//! late and many logins are in flight, with what the services hold per
//! waiting login.

use std::time::Duration;

use super::{
    codes::{Codes, SpendsCodes, run_with_codes},
    driver::{Context, Driver, User},
};
use crate::{Runner, cli::Scenario, load::Cycle, metrics::status_kib, report::RunReport};

/// Returning logins with WeChat slow and many logins in flight: what the
/// services hold per waiting login, and whether throughput keeps up with
/// what the latency allows.
pub(super) async fn run(cx: Context<'_>, users: &[User]) -> anyhow::Result<RunReport> {
    let (driver, runner, args) = (cx.driver, cx.runner, cx.args);
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
    let spends = SpendsCodes::logins(&driver, Codes::Returning(Cycle::new(openids)));
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
