//! A report as a table for people (stdout), and the number formats the
//! progress lines share. Nothing here measures anything.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    model::{Report, RunReport},
    table::Table,
};
use crate::load::{ErrorCount, LatencySummary};

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

pub(super) fn format_seconds(seconds: f64) -> String {
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
