use std::collections::BTreeMap;

use super::{model::*, render::*, table::Table};
use crate::{
    load::{ErrorCount, LatencySummary},
    metrics::{Machine, ProcessUsage, Role, WindowUsage},
};

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
