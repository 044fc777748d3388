//! What a run found, as data: each measured window, its floor and the
//! ratio between them, the settings and the whole report (serialized as
//! the `--out` JSON). Nothing here measures or prints anything.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    load::{ErrorCount, KindResult, LatencySummary, LoadResult, per_second},
    metrics::{Machine, Role, WindowUsage},
};

/// One measured window: a scenario or a floor.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub name: String,
    pub description: String,
    pub seconds: f64,
    /// Successful answers per second (errors excluded).
    pub ok_per_second: f64,
    pub ok: u64,
    pub errors: u64,
    /// Latencies of the successful answers.
    pub latency_ms: LatencySummary,
    pub errors_by_bucket: BTreeMap<String, ErrorCount>,
    /// Per kind of request, for workloads of more than one kind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<KindReport>,
    pub ended_early: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub usage: WindowUsage,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub name: String,
    pub ok_per_second: f64,
    pub ok: u64,
    pub errors: u64,
    pub latency_ms: LatencySummary,
    pub errors_by_bucket: BTreeMap<String, ErrorCount>,
}

impl KindReport {
    fn of(kind: &KindResult, load: &LoadResult) -> KindReport {
        KindReport {
            name: kind.name.to_owned(),
            ok_per_second: per_second(kind.ok(), load.elapsed),
            ok: kind.ok(),
            errors: kind.error_count(),
            latency_ms: kind.latencies.summary(),
            errors_by_bucket: kind.errors.clone(),
        }
    }
}

impl RunReport {
    pub fn new(
        name: &str,
        description: String,
        load: &LoadResult,
        usage: WindowUsage,
        notes: Vec<String>,
    ) -> anyhow::Result<RunReport> {
        let total = load.total()?;
        let kinds = if load.kinds.len() > 1 {
            load.kinds.iter().map(|k| KindReport::of(k, load)).collect()
        } else {
            Vec::new()
        };
        Ok(RunReport {
            name: name.to_owned(),
            description,
            seconds: load.elapsed.as_secs_f64(),
            ok_per_second: per_second(total.ok(), load.elapsed),
            ok: total.ok(),
            errors: total.error_count(),
            latency_ms: total.latencies.summary(),
            errors_by_bucket: total.errors,
            kinds,
            ended_early: load.exhausted,
            notes,
            usage,
        })
    }
}

/// The floor a scenario is compared with: one floor, or several composed
/// as `1 / Σ weight / rate` (the rate if each request spent `weight` of a
/// request of each floor, one after the other).
#[derive(Debug, Clone, PartialEq)]
pub struct FloorRef {
    pub parts: Vec<(f64, &'static str)>,
    pub how: &'static str,
}

/// Which floor each scenario is compared with.
pub fn floor_of(scenario: &str) -> Option<FloorRef> {
    let one = |floor| FloorRef {
        parts: vec![(1.0, floor)],
        how: "",
    };
    match scenario {
        "first-login" => Some(one("mysql-upsert-new")),
        "returning-login" => Some(one("mysql-upsert-existing")),
        "me" | "verify" => Some(one("http-grpc-redis")),
        // gateway → user → auth for the key (Redis) → a MySQL write.
        "profile" => Some(FloorRef {
            parts: vec![(1.0, "http-grpc-redis"), (1.0, "mysql-upsert-existing")],
            how: "in series",
        }),
        "mixed" => Some(FloorRef {
            parts: vec![(0.1, "mysql-upsert-existing"), (0.9, "http-grpc-redis")],
            how: "weighted as in the mix",
        }),
        _ => None,
    }
}

impl FloorRef {
    pub fn label(&self) -> String {
        match self.parts.as_slice() {
            [(_, floor)] => (*floor).to_owned(),
            parts => {
                let names: Vec<String> = parts
                    .iter()
                    .map(|(weight, floor)| {
                        if (*weight - 1.0).abs() < f64::EPSILON {
                            (*floor).to_owned()
                        } else {
                            format!("{weight}×{floor}")
                        }
                    })
                    .collect();
                format!("{} ({})", names.join(" + "), self.how)
            }
        }
    }

    /// The composed rate, when every part was measured.
    pub fn rate(&self, floors: &[RunReport]) -> Option<f64> {
        let mut seconds_per_request = 0.0;
        for (weight, name) in &self.parts {
            let floor = floors.iter().find(|f| f.name == *name)?;
            if floor.ok_per_second <= 0.0 {
                return None;
            }
            seconds_per_request += weight / floor.ok_per_second;
        }
        (seconds_per_request > 0.0).then(|| 1.0 / seconds_per_request)
    }

    /// The floor's latencies, when it is a single floor.
    fn latency(&self, floors: &[RunReport]) -> Option<LatencySummary> {
        match self.parts.as_slice() {
            [(_, name)] => floors
                .iter()
                .find(|f| f.name == *name)
                .map(|f| f.latency_ms),
            _ => None,
        }
    }
}

/// A scenario next to its floor.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub scenario: String,
    pub floor: String,
    pub scenario_ok_per_second: f64,
    pub floor_ok_per_second: f64,
    /// scenario rate ÷ floor rate: the share of the floor's throughput the
    /// scenario reaches.
    pub throughput_ratio: f64,
    /// scenario p50 ÷ floor p50 (single floors only).
    pub p50_ratio: Option<f64>,
    /// scenario p99 ÷ floor p99 (single floors only).
    pub p99_ratio: Option<f64>,
}

pub fn compare(scenarios: &[RunReport], floors: &[RunReport]) -> Vec<Comparison> {
    scenarios
        .iter()
        .filter_map(|scenario| {
            let floor = floor_of(&scenario.name)?;
            let rate = floor.rate(floors)?;
            let latency = floor.latency(floors);
            let ratio = |mine: f64, theirs: f64| (theirs > 0.0).then(|| mine / theirs);
            Some(Comparison {
                scenario: scenario.name.clone(),
                floor: floor.label(),
                scenario_ok_per_second: scenario.ok_per_second,
                floor_ok_per_second: rate,
                throughput_ratio: scenario.ok_per_second / rate,
                p50_ratio: latency.and_then(|l| ratio(scenario.latency_ms.p50_ms, l.p50_ms)),
                p99_ratio: latency.and_then(|l| ratio(scenario.latency_ms.p99_ms, l.p99_ms)),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub concurrency: usize,
    pub duration_seconds: f64,
    pub warmup_seconds: f64,
    pub scenarios: Vec<String>,
    pub floors: bool,
    /// Passwords masked.
    pub mysql: String,
    pub redis: String,
    pub users: usize,
    pub tokens: usize,
    pub max_codes: usize,
    pub db_pool_size: u32,
    pub services: String,
}

/// A process's peak resident memory over its whole life (`VmHWM`).
#[derive(Debug, Clone, Serialize)]
pub struct PeakMemory {
    pub name: String,
    pub role: Role,
    pub pid: u32,
    pub vm_hwm_kib: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub started_at: String,
    pub wall_seconds: f64,
    pub build_seconds: Option<f64>,
    pub command_line: String,
    pub machine: Machine,
    pub load_average_at_end: Option<String>,
    pub settings: Settings,
    pub load_generator_note: String,
    pub scenarios: Vec<RunReport>,
    pub floors: Vec<RunReport>,
    pub comparisons: Vec<Comparison>,
    pub peak_memory: Vec<PeakMemory>,
    pub warnings: Vec<String>,
}
