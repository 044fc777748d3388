//! What a run found, as a table for people (stdout) and as JSON for tools
//! (`--out`). Nothing here measures anything.

use std::{collections::BTreeMap, fmt::Write as _};

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

/// A plain text table: the first column (and any in `left`) left-aligned,
/// the others right-aligned.
#[derive(Debug, Default)]
struct Table {
    rows: Vec<Vec<String>>,
    left: Vec<usize>,
}

impl Table {
    fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }

    fn left_aligned(mut self, column: usize) -> Table {
        self.left.push(column);
        self
    }

    fn render(&self, indent: &str) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = indent.to_owned();
            for (column, cell) in row.iter().enumerate() {
                let width = widths.get(column).copied().unwrap_or(0);
                let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
                if column > 0 {
                    line.push_str("  ");
                }
                if column == 0 || self.left.contains(&column) {
                    line.push_str(cell);
                    line.push_str(&pad);
                } else {
                    line.push_str(&pad);
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Milliseconds with three significant digits or so.
pub fn format_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}ms")
    } else if ms >= 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.2}ms")
    }
}

pub fn format_rate(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

/// `503×12 transport×1`, or `0`.
pub fn format_errors(errors: &BTreeMap<String, ErrorCount>) -> String {
    if errors.is_empty() {
        return "0".to_owned();
    }
    errors
        .iter()
        .map(|(bucket, errors)| format!("{bucket}×{}", errors.count))
        .collect::<Vec<_>>()
        .join(" ")
}

fn format_seconds(seconds: f64) -> String {
    if seconds >= 60.0 {
        format!("{}m{:02.0}s", (seconds / 60.0).floor(), seconds % 60.0)
    } else {
        format!("{seconds:.1}s")
    }
}

fn latency_cells(latency: &LatencySummary) -> [String; 4] {
    [
        format_ms(latency.p50_ms),
        format_ms(latency.p90_ms),
        format_ms(latency.p99_ms),
        format_ms(latency.p999_ms),
    ]
}

fn results_table(runs: &[RunReport]) -> Table {
    let mut table = Table::default();
    table.row(
        ["", "req/s", "p50", "p90", "p99", "p99.9", "errors"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    for run in runs {
        let name = if run.ended_early {
            format!("{} (ended early)", run.name)
        } else {
            run.name.clone()
        };
        let mut row = vec![name, format_rate(run.ok_per_second)];
        row.extend(latency_cells(&run.latency_ms));
        row.push(format_errors(&run.errors_by_bucket));
        table.row(row);
        for kind in &run.kinds {
            let mut row = vec![
                format!("  └ {}", kind.name),
                format_rate(kind.ok_per_second),
            ];
            row.extend(latency_cells(&kind.latency_ms));
            row.push(format_errors(&kind.errors_by_bucket));
            table.row(row);
        }
    }
    table
}

/// Column names of the usage tables: every process seen, in order of first
/// appearance, so that floors and scenarios line up.
fn process_columns(runs: &[&RunReport]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for run in runs {
        for process in &run.usage.processes {
            if !names.contains(&process.name) {
                names.push(process.name.clone());
            }
        }
    }
    names
}

fn usage_tables(runs: &[&RunReport], cores: usize) -> (Table, Table) {
    let columns = process_columns(runs);
    let mut cpu = Table::default();
    let mut rss = Table::default();
    let mut header = vec![String::new()];
    header.extend(columns.iter().cloned());
    rss.row(header.clone());
    header.extend(["other".to_owned(), "machine busy".to_owned()]);
    cpu.row(header);
    for run in runs {
        let find = |name: &String| run.usage.processes.iter().find(|p| &p.name == name);
        let mut cpu_row = vec![run.name.clone()];
        let mut rss_row = vec![run.name.clone()];
        for name in &columns {
            let process = find(name);
            cpu_row.push(
                process
                    .and_then(|p| p.cpu_seconds)
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}")),
            );
            rss_row.push(process.and_then(|p| p.peak_rss_kib).map_or_else(
                || "-".to_owned(),
                |kib| format!("{:.0}", kib as f64 / 1024.0),
            ));
        }
        cpu_row.push(
            run.usage
                .other_cpu_seconds
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}")),
        );
        cpu_row.push(run.usage.machine_busy.map_or_else(
            || "-".to_owned(),
            |busy| format!("{:.0}% of {cores}", busy * 100.0),
        ));
        cpu.row(cpu_row);
        rss.row(rss_row);
    }
    (cpu, rss)
}

/// The human report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let machine = &report.machine;
    let memory = machine.memory_kib.map_or_else(
        || "? GiB".to_owned(),
        |kib| format!("{:.1} GiB", kib as f64 / 1048576.0),
    );
    let settings = &report.settings;
    let _ = writeln!(
        out,
        "wxlogin-bench {} — {}",
        report.version, report.started_at
    );
    let _ = writeln!(out, "command:  {}", report.command_line);
    let _ = writeln!(
        out,
        "machine:  {} cores, {}, {memory} RAM, Linux {}; load average {} at start, {} at end",
        machine.cores,
        machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
        machine.kernel.as_deref().unwrap_or("?"),
        machine.load_average_at_start.as_deref().unwrap_or("?"),
        report.load_average_at_end.as_deref().unwrap_or("?"),
    );
    let _ = writeln!(
        out,
        "settings: {} in flight, {}s warm-up then {}s measured per run; {}; MySQL {} (pool {}), Redis {}",
        settings.concurrency,
        settings.warmup_seconds,
        settings.duration_seconds,
        settings.services,
        settings.mysql,
        settings.db_pool_size,
        settings.redis,
    );
    let _ = writeln!(out, "note:     {}", report.load_generator_note);

    if !report.scenarios.is_empty() {
        let _ = writeln!(
            out,
            "\nScenarios through the gateway (req/s and latencies count successful answers; errors apart)"
        );
        out.push_str(&results_table(&report.scenarios).render("  "));
    }
    if !report.floors.is_empty() {
        let _ = writeln!(
            out,
            "\nFloors of this machine (same client libraries, same concurrency)"
        );
        out.push_str(&results_table(&report.floors).render("  "));
    }
    if !report.comparisons.is_empty() {
        let _ = writeln!(
            out,
            "\nEach scenario against its floor (throughput = scenario req/s ÷ floor req/s; p50, p99 = scenario ÷ floor)"
        );
        let mut table = Table::default().left_aligned(6);
        table.row(
            ["", "throughput", "p50", "p99", "floor req/s", "", "floor"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        let times =
            |ratio: Option<f64>| ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}×"));
        for comparison in &report.comparisons {
            table.row([
                comparison.scenario.clone(),
                format!("{:.1}%", comparison.throughput_ratio * 100.0),
                times(comparison.p50_ratio),
                times(comparison.p99_ratio),
                format_rate(comparison.floor_ok_per_second),
                "←".to_owned(),
                comparison.floor.clone(),
            ]);
        }
        out.push_str(&table.render("  "));
    }

    let runs: Vec<&RunReport> = report.scenarios.iter().chain(&report.floors).collect();
    if !runs.is_empty() {
        let (cpu, rss) = usage_tables(&runs, machine.cores);
        let _ = writeln!(
            out,
            "\nCPU seconds in each measured window (window × {} cores available; \"bench\" is the load generator, \
             \"other\" is the rest of the machine: other processes and the kernel)",
            machine.cores
        );
        out.push_str(&cpu.render("  "));
        let _ = writeln!(
            out,
            "\nPeak RSS in each measured window (MiB, sampled every 100 ms)"
        );
        out.push_str(&rss.render("  "));
    }
    if !report.peak_memory.is_empty() {
        let peaks: Vec<String> = report
            .peak_memory
            .iter()
            .map(|p| {
                let mib = p.vm_hwm_kib.map_or_else(
                    || "-".to_owned(),
                    |kib| format!("{:.0}", kib as f64 / 1024.0),
                );
                format!("{} {mib}", p.name)
            })
            .collect();
        let _ = writeln!(
            out,
            "\nPeak RSS over the whole run (VmHWM, MiB): {}",
            peaks.join(", ")
        );
    }

    let mut details = Vec::new();
    for run in &runs {
        for note in &run.notes {
            details.push(format!("{}: {note}", run.name));
        }
        for (bucket, errors) in &run.errors_by_bucket {
            details.push(format!(
                "{}: {} errors {bucket}, e.g. {}",
                run.name, errors.count, errors.example
            ));
        }
    }
    if !details.is_empty() {
        let _ = writeln!(out, "\nNotes");
        for detail in details {
            let _ = writeln!(out, "  {detail}");
        }
    }
    let _ = writeln!(out, "\nWhat each run does");
    for run in &runs {
        let _ = writeln!(out, "  {}: {}", run.name, run.description);
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "\nwarning: {warning}");
    }
    let build = report
        .build_seconds
        .map(|s| format!(" (build {})", format_seconds(s)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\nwall time {}{build}",
        format_seconds(report.wall_seconds)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ProcessUsage;

    fn latency(p50: f64) -> LatencySummary {
        LatencySummary {
            count: 100,
            mean_ms: p50,
            p50_ms: p50,
            p90_ms: p50 * 2.0,
            p99_ms: p50 * 4.0,
            p999_ms: p50 * 8.0,
            max_ms: p50 * 10.0,
        }
    }

    fn run(name: &str, rate: f64, p50: f64) -> RunReport {
        RunReport {
            name: name.to_owned(),
            description: format!("{name} things"),
            seconds: 5.0,
            ok_per_second: rate,
            ok: (rate * 5.0) as u64,
            errors: 0,
            latency_ms: latency(p50),
            errors_by_bucket: BTreeMap::new(),
            kinds: Vec::new(),
            ended_early: false,
            notes: Vec::new(),
            usage: WindowUsage {
                seconds: 5.0,
                processes: vec![ProcessUsage {
                    name: "gateway".to_owned(),
                    role: Role::Service,
                    cpu_seconds: Some(1.5),
                    peak_rss_kib: Some(20480),
                }],
                machine_cpu_seconds: Some(9.0),
                machine_busy: Some(0.9),
                other_cpu_seconds: Some(0.25),
            },
        }
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(format_ms(0.4567), "0.46ms");
        assert_eq!(format_ms(12.345), "12.3ms");
        assert_eq!(format_ms(1234.5), "1234ms");
        assert_eq!(format_rate(12345.6), "12346");
        assert_eq!(format_rate(12.34), "12.3");
        assert_eq!(format_seconds(83.0), "1m23s");
        let mut errors = BTreeMap::new();
        assert_eq!(format_errors(&errors), "0");
        errors.insert(
            "503".to_owned(),
            ErrorCount {
                count: 12,
                example: "busy".to_owned(),
            },
        );
        errors.insert(
            "transport".to_owned(),
            ErrorCount {
                count: 1,
                example: "reset".to_owned(),
            },
        );
        assert_eq!(format_errors(&errors), "503×12 transport×1");
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::default();
        table.row(["".to_owned(), "ok/s".to_owned()]);
        table.row(["first-login".to_owned(), "12".to_owned()]);
        table.row(["me".to_owned(), "12345".to_owned()]);
        assert_eq!(
            table.render(""),
            "              ok/s\nfirst-login     12\nme           12345\n"
        );
    }

    #[test]
    fn scenarios_are_compared_with_their_floors() {
        let scenarios = [
            run("first-login", 500.0, 20.0),
            run("me", 4000.0, 10.0),
            run("mixed", 3000.0, 10.0),
            run("profile", 1000.0, 10.0),
        ];
        let floors = [
            run("mysql-upsert-new", 2000.0, 5.0),
            run("mysql-upsert-existing", 1000.0, 5.0),
            run("http-grpc-redis", 8000.0, 4.0),
        ];
        let comparisons = compare(&scenarios, &floors);
        assert_eq!(comparisons.len(), 4);
        let first = &comparisons[0];
        assert_eq!(first.floor, "mysql-upsert-new");
        assert!((first.throughput_ratio - 0.25).abs() < 1e-9);
        assert_eq!(first.p50_ratio, Some(4.0));
        let me = &comparisons[1];
        assert!((me.throughput_ratio - 0.5).abs() < 1e-9);
        // 0.1 / 1000 + 0.9 / 8000 seconds per request.
        let mixed = &comparisons[2];
        assert!((mixed.floor_ok_per_second - 1.0 / (0.1 / 1000.0 + 0.9 / 8000.0)).abs() < 1e-6);
        assert_eq!(mixed.p50_ratio, None);
        assert!(
            mixed.floor.contains("0.1×mysql-upsert-existing"),
            "{}",
            mixed.floor
        );
        let profile = &comparisons[3];
        assert!((profile.floor_ok_per_second - 1.0 / (1.0 / 8000.0 + 1.0 / 1000.0)).abs() < 1e-6);
    }

    #[test]
    fn a_scenario_without_its_floor_measured_is_not_compared() {
        let comparisons = compare(&[run("me", 4000.0, 10.0)], &[run("redis-get", 9.0, 1.0)]);
        assert!(comparisons.is_empty());
    }

    #[test]
    fn the_human_report_shows_every_run_and_ratio() {
        let scenarios = vec![run("me", 4000.0, 10.0)];
        let floors = vec![run("http-grpc-redis", 8000.0, 4.0)];
        let report = Report {
            tool: "wxlogin-bench".to_owned(),
            version: "0.1.0".to_owned(),
            started_at: "2026-11-25T00:00:00Z".to_owned(),
            wall_seconds: 83.0,
            build_seconds: Some(2.0),
            command_line: "wxlogin-bench".to_owned(),
            machine: Machine {
                cores: 2,
                cpu_model: Some("Test CPU".to_owned()),
                memory_kib: Some(24 * 1048576),
                kernel: Some("6.1".to_owned()),
                load_average_at_start: Some("0.10 0.20 0.30".to_owned()),
                clock_ticks_per_second: 100,
            },
            load_average_at_end: None,
            settings: Settings {
                concurrency: 64,
                duration_seconds: 5.0,
                warmup_seconds: 1.0,
                scenarios: vec!["me".to_owned()],
                floors: true,
                mysql: "mysql://root@127.0.0.1:3306".to_owned(),
                redis: "redis://127.0.0.1:6379".to_owned(),
                users: 1000,
                tokens: 256,
                max_codes: 200_000,
                db_pool_size: 16,
                services: "release build".to_owned(),
            },
            load_generator_note: "shares the machine".to_owned(),
            comparisons: compare(&scenarios, &floors),
            scenarios,
            floors,
            peak_memory: Vec::new(),
            warnings: vec!["something".to_owned()],
        };
        let text = render(&report);
        for expected in [
            "2 cores, Test CPU, 24.0 GiB RAM",
            "note:     shares the machine",
            "http-grpc-redis",
            "50.0%",
            "2.5×",
            "machine busy",
            "90% of 2",
            "warning: something",
            "wall time 1m23s (build 2.0s)",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenarios"][0]["name"], "me");
        assert_eq!(json["comparisons"][0]["floor"], "http-grpc-redis");
    }
}
