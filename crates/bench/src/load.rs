//! The load generator: a fixed number of worker tasks, each sending one
//! request after the other (a closed loop, so `concurrency` requests are in
//! flight at any time), recording latencies in an HDR histogram of its own;
//! the histograms are merged at the end.
//!
//! A request counts when it completes inside the window; the ones still in
//! flight at its end are let finish and thrown away. A workload whose input
//! runs out (login codes are single-use) ends the window early; the window
//! then lasts until the last counted completion.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;

/// Latencies are kept in microseconds, up to a minute, to 3 significant digits.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// How long a request may go on after the window closed before its worker
/// gives up on it (it is not counted either way).
const STRAGGLER_GRACE: Duration = Duration::from_secs(10);

/// How one request ended. Errors are bucketed by a short label (an HTTP
/// status, `transport`, `mysql`, ...) with the detail of an example kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed { bucket: String, detail: String },
}

impl Outcome {
    pub fn failed(bucket: impl Into<String>, detail: impl Into<String>) -> Outcome {
        Outcome::Failed {
            bucket: bucket.into(),
            detail: detail.into(),
        }
    }
}

/// Something to send requests of, from many workers at once.
pub trait Workload: Send + Sync + 'static {
    type Input: Send;

    /// The kinds of request it sends (one for most workloads), indexed by
    /// what [`next`](Self::next) answers.
    fn kinds(&self) -> &[&'static str];

    /// The next request's kind and input; `None` when the input ran out.
    fn next(&self) -> Option<(usize, Self::Input)>;

    /// Sends one request and waits for its whole answer.
    fn call(&self, input: Self::Input) -> impl Future<Output = Outcome> + Send;
}

/// Latencies of successful requests.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Latencies {
    pub fn new() -> anyhow::Result<Latencies> {
        Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
            .map(Latencies)
            .context("latency histogram")
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn merge(&mut self, other: &Latencies) -> anyhow::Result<()> {
        self.0.add(&other.0).context("merging latency histograms")
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> LatencySummary {
        let millis = |micros: u64| micros as f64 / 1000.0;
        let at = |quantile: f64| millis(self.0.value_at_quantile(quantile));
        LatencySummary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: millis(self.0.max()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Failed requests of one bucket.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub count: u64,
    /// What the first one said.
    pub example: String,
}

/// What one kind of request did in a window.
#[derive(Debug, Clone)]
pub struct KindResult {
    pub name: &'static str,
    pub latencies: Latencies,
    pub errors: BTreeMap<String, ErrorCount>,
}

impl KindResult {
    fn new(name: &'static str) -> anyhow::Result<KindResult> {
        Ok(KindResult {
            name,
            latencies: Latencies::new()?,
            errors: BTreeMap::new(),
        })
    }

    fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok => self.latencies.record(latency),
            Outcome::Failed { bucket, detail } => {
                self.errors
                    .entry(bucket)
                    .and_modify(|errors| errors.count += 1)
                    .or_insert(ErrorCount {
                        count: 1,
                        example: detail,
                    });
            }
        }
    }

    fn merge(&mut self, other: &KindResult) -> anyhow::Result<()> {
        self.latencies.merge(&other.latencies)?;
        for (bucket, errors) in &other.errors {
            self.errors
                .entry(bucket.clone())
                .and_modify(|mine| mine.count += errors.count)
                .or_insert_with(|| errors.clone());
        }
        Ok(())
    }

    pub fn ok(&self) -> u64 {
        self.latencies.count()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|errors| errors.count).sum()
    }
}

/// What a workload did in a window.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Per kind of request, in the workload's order.
    pub kinds: Vec<KindResult>,
    pub elapsed: Duration,
    /// The input ran out before the window's end.
    pub exhausted: bool,
}

impl LoadResult {
    /// All kinds together.
    pub fn total(&self) -> anyhow::Result<KindResult> {
        let mut total = KindResult::new("all")?;
        for kind in &self.kinds {
            total.merge(kind)?;
        }
        Ok(total)
    }
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Runs `workload` with `concurrency` workers for `duration`, or until its
/// input runs out.
pub async fn run<W: Workload>(
    workload: Arc<W>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(worker(workload.clone(), deadline));
    }
    let mut kinds: Vec<KindResult> = workload
        .kinds()
        .iter()
        .map(|name| KindResult::new(name))
        .collect::<anyhow::Result<_>>()?;
    let mut exhausted = false;
    let mut last_completion = started;
    while let Some(joined) = workers.join_next().await {
        let done = joined.context("a load worker panicked")??;
        exhausted |= done.exhausted;
        last_completion = last_completion.max(done.last_completion);
        for (mine, theirs) in kinds.iter_mut().zip(&done.kinds) {
            mine.merge(theirs)?;
        }
    }
    let elapsed = if exhausted {
        last_completion.duration_since(started)
    } else {
        duration
    };
    Ok(LoadResult {
        kinds,
        elapsed,
        exhausted,
    })
}

struct WorkerDone {
    kinds: Vec<KindResult>,
    exhausted: bool,
    last_completion: Instant,
}

async fn worker<W: Workload>(workload: Arc<W>, deadline: Instant) -> anyhow::Result<WorkerDone> {
    let mut kinds: Vec<KindResult> = workload
        .kinds()
        .iter()
        .map(|name| KindResult::new(name))
        .collect::<anyhow::Result<_>>()?;
    let give_up = tokio::time::Instant::from_std(deadline + STRAGGLER_GRACE);
    let mut exhausted = false;
    let mut last_completion = Instant::now();
    while Instant::now() < deadline {
        let Some((kind, input)) = workload.next() else {
            exhausted = true;
            break;
        };
        let sent = Instant::now();
        let Ok(outcome) = tokio::time::timeout_at(give_up, workload.call(input)).await else {
            break;
        };
        let completed = Instant::now();
        if completed > deadline {
            break;
        }
        if let Some(kind) = kinds.get_mut(kind) {
            kind.record(outcome, completed.duration_since(sent));
        }
        last_completion = completed;
    }
    Ok(WorkerDone {
        kinds,
        exhausted,
        last_completion,
    })
}

/// Hands out items round-robin to any number of workers.
#[derive(Debug)]
pub struct Cycle<T> {
    items: Vec<T>,
    next: AtomicUsize,
}

impl<T> Cycle<T> {
    pub fn new(items: Vec<T>) -> Cycle<T> {
        Cycle {
            items,
            next: AtomicUsize::new(0),
        }
    }

    /// The next item; `None` only when there are none.
    pub fn next(&self) -> Option<&T> {
        if self.items.is_empty() {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.items.len();
        self.items.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latencies(millis: impl IntoIterator<Item = u64>) -> Latencies {
        let mut latencies = Latencies::new().unwrap();
        for ms in millis {
            latencies.record(Duration::from_millis(ms));
        }
        latencies
    }

    #[test]
    fn merged_histograms_give_the_percentiles_of_all_samples() {
        // Two workers: one saw 1..=900 ms, the other 901..=1000 ms.
        let mut merged = latencies(1..=900);
        merged.merge(&latencies(901..=1000)).unwrap();
        let summary = merged.summary();
        assert_eq!(summary.count, 1000);
        let close = |actual: f64, expected: f64| (actual - expected).abs() <= expected * 0.002;
        assert!(close(summary.p50_ms, 500.0), "{summary:?}");
        assert!(close(summary.p90_ms, 900.0), "{summary:?}");
        assert!(close(summary.p99_ms, 990.0), "{summary:?}");
        assert!(close(summary.p999_ms, 999.0), "{summary:?}");
        assert!(close(summary.max_ms, 1000.0), "{summary:?}");
    }

    #[test]
    fn errors_are_counted_by_bucket_keeping_the_first_example() {
        let mut kind = KindResult::new("login").unwrap();
        kind.record(Outcome::Ok, Duration::from_millis(3));
        kind.record(Outcome::failed("503", "first"), Duration::ZERO);
        kind.record(Outcome::failed("503", "second"), Duration::ZERO);
        kind.record(Outcome::failed("transport", "reset"), Duration::ZERO);
        let mut other = KindResult::new("login").unwrap();
        other.record(Outcome::failed("503", "third"), Duration::ZERO);
        kind.merge(&other).unwrap();
        assert_eq!(kind.ok(), 1);
        assert_eq!(kind.error_count(), 4);
        assert_eq!(kind.errors["503"].count, 3);
        assert_eq!(kind.errors["503"].example, "first");
        assert_eq!(kind.errors["transport"].count, 1);
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut latencies = Latencies::new().unwrap();
        latencies.record(Duration::from_secs(3600));
        latencies.record(Duration::ZERO);
        assert_eq!(latencies.count(), 2);
    }

    #[test]
    fn a_cycle_goes_round() {
        let cycle = Cycle::new(vec!['a', 'b', 'c']);
        let taken: String = (0..7).filter_map(|_| cycle.next()).collect();
        assert_eq!(taken, "abcabca");
        assert!(Cycle::<char>::new(Vec::new()).next().is_none());
    }

    struct Countdown(std::sync::Mutex<u32>);

    impl Workload for Countdown {
        type Input = ();

        fn kinds(&self) -> &[&'static str] {
            &["tick"]
        }

        fn next(&self) -> Option<(usize, ())> {
            let mut left = self.0.lock().unwrap();
            *left = left.checked_sub(1)?;
            Some((0, ()))
        }

        async fn call(&self, (): ()) -> Outcome {
            Outcome::Ok
        }
    }

    #[tokio::test]
    async fn a_workload_that_runs_out_ends_the_window_early() {
        let result = run(
            Arc::new(Countdown(std::sync::Mutex::new(100))),
            4,
            Duration::from_secs(600),
        )
        .await
        .unwrap();
        assert!(result.exhausted);
        assert_eq!(result.total().unwrap().ok(), 100);
        assert!(result.elapsed < Duration::from_secs(600));
    }
}
