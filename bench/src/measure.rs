//! What the benchmark reads off processes and servers: CPU time and RSS from /proc,
//! CPU split by stage between two snapshots, figures from a `/metrics` page.

use std::alloc::System;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sccr_tests::http_get;
use serde_json::{json, Value};

/// CPU time of a process in seconds (utime + stime), from /proc.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Pids of every process whose command name is `comm`.
fn pids_of(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// CPU seconds of every process whose command name is `comm`.
pub(crate) fn cpu_secs_of(comm: &str) -> f64 {
    pids_of(comm).into_iter().map(cpu_secs).sum()
}

/// What a PostgreSQL server process does, from the title it shows in its command line
/// (`postgres: 15/main: checkpointer`, `postgres: sccr db 127.0.0.1(4711) COPY`, …).
fn postgres_kind(pid: u32) -> &'static str {
    let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let title = String::from_utf8_lossy(&title);
    if !title.starts_with("postgres:") {
        // The postmaster keeps its own command line.
        return "other";
    }
    [
        ("autovacuum worker", "autovacuum"),
        ("checkpointer", "checkpointer"),
        ("background writer", "background_writer"),
        ("walwriter", "wal_writer"),
        ("autovacuum launcher", "other"),
        ("logical replication", "other"),
        ("walsender", "other"),
        ("walreceiver", "other"),
        ("startup", "other"),
        ("archiver", "other"),
        ("logger", "other"),
    ]
    .iter()
    .find(|(needle, _)| title.contains(needle))
    .map_or("backends", |(_, kind)| kind)
}

/// PostgreSQL's CPU seconds so far, by kind of server process (`backends`: the
/// connections' own work and their parallel workers; `wal_writer`, `checkpointer`,
/// `background_writer`, `autovacuum`, `other`), counted from when the benchmark first
/// asked.
#[derive(Clone, Default)]
pub(crate) struct PgCpu(pub(crate) BTreeMap<&'static str, f64>);

impl PgCpu {
    pub(crate) fn total(&self) -> f64 {
        self.0.values().sum()
    }

    /// Seconds by kind between `earlier` and this reading.
    pub(crate) fn since(&self, earlier: &PgCpu) -> BTreeMap<&'static str, f64> {
        self.0.iter().map(|(k, v)| (*k, v - earlier.0.get(k).unwrap_or(&0.0))).collect()
    }
}

#[derive(Default)]
struct PgCpuState {
    /// Each live server process's CPU seconds at the last sweep.
    seen: HashMap<u32, f64>,
    totals: BTreeMap<&'static str, f64>,
    swept: bool,
}

impl PgCpuState {
    fn sweep(&mut self) {
        let mut now = HashMap::new();
        for pid in pids_of("postgres") {
            let cpu = cpu_secs(pid);
            // A process first seen after the first sweep started after it; one whose CPU
            // went back is a new process under a reused pid.
            let before = match self.seen.get(&pid) {
                Some(&b) if b <= cpu => b,
                _ if !self.swept => cpu,
                _ => 0.0,
            };
            *self.totals.entry(postgres_kind(pid)).or_default() += cpu - before;
            now.insert(pid, cpu);
        }
        self.seen = now;
        self.swept = true;
    }
}

/// The sampler's own thread: a period, not a wait for a condition.
#[expect(clippy::disallowed_methods, reason = "a sampling period on a dedicated thread")]
fn sweep_forever(state: &'static Mutex<PgCpuState>) {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        state.lock().unwrap_or_else(|e| e.into_inner()).sweep();
    }
}

/// PostgreSQL's CPU so far. A sampler sweeps every server process every 100 ms, so that
/// processes which start and exit between two readings (autovacuum workers, parallel
/// workers, closed connections) still count: a sum over the processes alive at two
/// readings misses them, or counts them negative. At most the last 100 ms of an exited
/// process is missed.
pub(crate) fn pg_cpu() -> PgCpu {
    static STATE: OnceLock<&'static Mutex<PgCpuState>> = OnceLock::new();
    let state = *STATE.get_or_init(|| {
        let state: &'static Mutex<PgCpuState> = Box::leak(Box::default());
        std::thread::spawn(move || sweep_forever(state));
        state
    });
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.sweep();
    PgCpu(state.totals.clone())
}

/// Busy CPU seconds of the whole machine (every core, every process), from /proc/stat:
/// what the processes a figure names do not account for is someone else's.
pub(crate) fn machine_busy_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy: f64 =
        f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy / 100.0
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU in cores used by each stage between two snapshots.
#[derive(Clone)]
pub(crate) struct CpuSnapshot {
    pub(crate) at: Instant,
    pub(crate) sccr: Vec<f64>,
    pub(crate) broker: f64,
    pub(crate) postgres: PgCpu,
    pub(crate) load: f64,
    pub(crate) machine: f64,
}

pub(crate) fn cpu_snapshot(sccr: &[u32], broker: u32) -> CpuSnapshot {
    CpuSnapshot {
        at: Instant::now(),
        sccr: sccr.iter().map(|p| cpu_secs(*p)).collect(),
        broker: cpu_secs(broker),
        postgres: pg_cpu(),
        load: cpu_secs(std::process::id()),
        machine: machine_busy_secs(),
    }
}

/// [`cpu_split`] for a bridge under test (its process in the `sccr` slot).
pub(crate) fn bridge_cpu_split(a: &CpuSnapshot, b: &CpuSnapshot) -> Value {
    let mut cpu = cpu_split(a, b);
    if let Some(o) = cpu.as_object_mut() {
        if let Some(v) = o.remove("sccr_cores") {
            o.insert("bridge_cores".into(), v);
        }
    }
    cpu
}

pub(crate) fn cpu_split(a: &CpuSnapshot, b: &CpuSnapshot) -> Value {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let sccr: f64 = b.sccr.iter().zip(&a.sccr).map(|(x, y)| x - y).sum();
    json!({
        "sccr_cores": round2(sccr / secs),
        "broker_cores": round2((b.broker - a.broker) / secs),
        "postgres_cores": round2((b.postgres.total() - a.postgres.total()) / secs),
        "postgres_cores_by_kind": b.postgres.since(&a.postgres).into_iter()
            .map(|(k, v)| (k.to_string(), json!(round2(v / secs))))
            .collect::<serde_json::Map<_, _>>(),
        "load_generator_cores": round2((b.load - a.load) / secs),
        "machine_busy_cores": round2((b.machine - a.machine) / secs),
    })
}

pub(crate) fn round2(v: f64) -> f64 {
    // Adding 0.0 turns a -0.0 into 0.0.
    (v * 100.0).round() / 100.0 + 0.0
}

pub(crate) fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

pub(crate) async fn scrape(port: u16) -> String {
    http_get(port, "/metrics").await.map(|(_, b)| b).unwrap_or_default()
}

/// The system allocator, counting the bytes held: lets a stage of the benchmark weigh the
/// state it builds (the stream core's bytes per device).
#[global_allocator]
static ALLOCATOR: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

/// Heap bytes held by the whole process now (requested sizes, without the allocator's
/// own overhead). Differences taken on one thread while other threads are quiet weigh
/// what that thread built.
pub(crate) fn heap_bytes() -> isize {
    isize::try_from(ALLOCATOR.allocated()).unwrap_or(isize::MAX)
}
