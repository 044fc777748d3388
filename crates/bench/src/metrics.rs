//! What the processes cost: CPU seconds from `/proc/<pid>/stat`, resident
//! memory from `/proc/<pid>/status`, the whole machine's CPU from
//! `/proc/stat`, and a description of the machine.
//!
//! Everything here is best-effort: a value that cannot be read (a process
//! that died, a `/proc` we may not read) is `None` and shows as `-`.

use std::{
    fs,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::{sync::oneshot, task::JoinHandle};

/// How often resident memory is sampled during a measured window.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Clock ticks per second, the unit of `/proc/<pid>/stat` and `/proc/stat`.
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// What a watched process is to the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One of wxlogin's processes, started by the benchmark.
    Service,
    /// A floor server, started by the benchmark.
    Floor,
    /// The benchmark itself: the load generator and the in-process floors.
    LoadGenerator,
    /// MariaDB or Redis, found by its listening port; shared with anyone
    /// else who uses them.
    External,
}

/// A process whose CPU and memory are measured.
#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    pub role: Role,
}

/// CPU time (user + system) the process has used since it started, in
/// clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ticks_of_stat(&stat)
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn cpu_ticks_of_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid (4), ..., utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field of `/proc/<pid>/status`, such as `VmRSS` or `VmHWM`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, field)
}

fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The machine's busy and total CPU ticks so far, over all cores.
#[derive(Debug, Clone, Copy)]
struct SystemTicks {
    busy: u64,
    total: u64,
}

fn system_ticks() -> Option<SystemTicks> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    system_ticks_of(&stat)
}

fn system_ticks_of(stat: &str) -> Option<SystemTicks> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some(SystemTicks {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// The cost of one measured window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowUsage {
    /// Wall time of the window.
    pub seconds: f64,
    pub processes: Vec<ProcessUsage>,
    /// CPU seconds the whole machine spent (all processes, all cores).
    pub machine_cpu_seconds: Option<f64>,
    /// The machine's busy share of all its cores, 0 to 1.
    pub machine_busy: Option<f64>,
    /// Machine CPU seconds not spent by any watched process: other work on
    /// the machine, and the kernel's share of the network traffic.
    pub other_cpu_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    pub name: String,
    pub role: Role,
    pub cpu_seconds: Option<f64>,
    /// The highest resident set size sampled during the window.
    pub peak_rss_kib: Option<u64>,
}

/// A measured window under way: CPU counters at its start and a task that
/// samples resident memory until it ends.
pub struct Window {
    watched: Arc<[Watched]>,
    started: Instant,
    cpu: Vec<Option<u64>>,
    system: Option<SystemTicks>,
    stop: oneshot::Sender<()>,
    sampler: JoinHandle<Vec<Option<u64>>>,
}

impl Window {
    pub fn begin(watched: Arc<[Watched]>) -> Window {
        let (stop, stopped) = oneshot::channel();
        let sampler = tokio::spawn(sample_rss(watched.clone(), stopped));
        let cpu = watched.iter().map(|w| cpu_ticks(w.pid)).collect();
        Window {
            started: Instant::now(),
            system: system_ticks(),
            cpu,
            watched,
            stop,
            sampler,
        }
    }

    pub async fn end(self) -> WindowUsage {
        let seconds = self.started.elapsed().as_secs_f64();
        let system = system_ticks();
        let cpu_after: Vec<Option<u64>> = self.watched.iter().map(|w| cpu_ticks(w.pid)).collect();
        let ticks = clock_ticks_per_second() as f64;
        // The sampler only stops early when its task failed.
        let _ = self.stop.send(());
        let peaks = self.sampler.await.unwrap_or_default();
        let processes: Vec<ProcessUsage> = self
            .watched
            .iter()
            .enumerate()
            .map(|(index, watched)| {
                let before = self.cpu.get(index).copied().flatten();
                let after = cpu_after.get(index).copied().flatten();
                ProcessUsage {
                    name: watched.name.clone(),
                    role: watched.role,
                    cpu_seconds: before
                        .zip(after)
                        .map(|(before, after)| after.saturating_sub(before) as f64 / ticks),
                    peak_rss_kib: peaks.get(index).copied().flatten(),
                }
            })
            .collect();
        let machine = self.system.zip(system).map(|(before, after)| {
            let busy = after.busy.saturating_sub(before.busy) as f64;
            let total = after.total.saturating_sub(before.total) as f64;
            (busy / ticks, if total > 0.0 { busy / total } else { 0.0 })
        });
        let watched_cpu: f64 = processes.iter().filter_map(|p| p.cpu_seconds).sum();
        // Whole ticks are what the kernel counts; the sum of their quotients
        // would print as 0.30000000000000004.
        let round = |seconds: f64| (seconds * ticks).round() / ticks;
        WindowUsage {
            seconds,
            machine_cpu_seconds: machine.map(|(seconds, _)| seconds),
            machine_busy: machine.map(|(_, share)| share),
            other_cpu_seconds: machine.map(|(seconds, _)| round((seconds - watched_cpu).max(0.0))),
            processes,
        }
    }
}

async fn sample_rss(
    watched: Arc<[Watched]>,
    mut stopped: oneshot::Receiver<()>,
) -> Vec<Option<u64>> {
    let mut peaks: Vec<Option<u64>> = vec![None; watched.len()];
    let mut interval = tokio::time::interval(RSS_SAMPLE_INTERVAL);
    loop {
        for (peak, process) in peaks.iter_mut().zip(watched.iter()) {
            if let Some(rss) = status_kib(process.pid, "VmRSS") {
                *peak = Some(peak.map_or(rss, |peak| peak.max(rss)));
            }
        }
        tokio::select! {
            _ = interval.tick() => {}
            _ = &mut stopped => break,
        }
    }
    peaks
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `std::thread::available_parallelism`.
    pub cores: usize,
    pub cpu_model: Option<String>,
    pub memory_kib: Option<u64>,
    pub kernel: Option<String>,
    /// `/proc/loadavg` before the run: other work on the machine shows here.
    pub load_average_at_start: Option<String>,
    pub clock_ticks_per_second: u64,
}

impl Machine {
    pub fn describe() -> Machine {
        let read = |path: &str| fs::read_to_string(path).ok();
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: read("/proc/cpuinfo").and_then(|text| cpu_model_of(&text)),
            memory_kib: read("/proc/meminfo").and_then(|text| kib_field(&text, "MemTotal")),
            kernel: read("/proc/sys/kernel/osrelease").map(|text| text.trim().to_owned()),
            load_average_at_start: load_average(),
            clock_ticks_per_second: clock_ticks_per_second(),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<String> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn cpu_model_of(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        matches!(key.trim(), "model name" | "Model" | "cpu model").then(|| value.trim().to_owned())
    })
}

/// The process listening on TCP `port` of this machine, found through
/// `/proc/net/tcp{,6}` and the processes' open sockets. `None` when the
/// server runs elsewhere, in another network namespace, or its `/proc`
/// entries may not be read.
pub fn listener_pid(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes
        .iter()
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(Path::new("/proc").join(&name).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = fs::read_link(fd.path())
                && targets
                    .iter()
                    .any(|target| link.as_os_str() == target.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Inodes of the sockets listening on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            let inode = fields.get(9)?;
            (local_port == port && *fields.get(3)? == LISTEN).then(|| (*inode).to_owned())
        })
        .filter(|inode| inode != "0")
        .collect()
}

/// The name of a process, from `/proc/<pid>/comm`.
pub fn process_name(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 2165 0 0 0 150 37 0 0 20 0 5 0 100 1000 200";
        assert_eq!(cpu_ticks_of_stat(stat), Some(187));
        assert_eq!(cpu_ticks_of_stat("garbage"), None);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(10240));
        assert_eq!(kib_field(status, "VmHWM"), Some(20480));
        assert_eq!(kib_field(status, "VmSwap"), None);
    }

    #[test]
    fn system_ticks_count_iowait_as_idle() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        let ticks = system_ticks_of(stat).unwrap();
        assert_eq!(ticks.total, 1000);
        assert_eq!(ticks.busy, 150);
    }

    #[test]
    fn listening_sockets_are_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 31337 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:0CEA 0100007F:A000 01 00000000:00000000 00:00000000 00000000   106        0 4242 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 3306), vec!["31337".to_owned()]);
        assert!(listening_inodes(table, 6379).is_empty());
    }

    #[test]
    fn this_process_is_measurable() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(status_kib(pid, "VmRSS").is_some());
        assert!(Machine::describe().cores >= 1);
    }
}
