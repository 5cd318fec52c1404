//! Capacity of one machine: idle workspaces in steps, then agent tasks on top.
//!
//! One real `berth server` (release build, the default reconcile interval of 2 s) on the real
//! engine. At each step of the list (default 10, 50, 100, 150, 200 workspaces, default limits,
//! created 4 at a time), once the step is reached:
//!
//! 1. idle, over a window (default 20 s) without any API call: the server's RSS and CPU, the
//!    reconciler's passes in that window (from the server's debug log line `reconcile pass`: its
//!    engine calls and wall time), the engine service's CPU, and the machine's load;
//! 2. inside every workspace container: the RSS of the workspace daemon, and of the container's
//!    init and its `conmon` (which run per container, outside the workspace's memory limit);
//! 3. latency of `GET /api/v1/workspaces` (200 requests) and `GET /api/v1/workspaces/{ws}` (50,
//!    round-robin over the workspaces), one keep-alive client, one request at a time;
//! 4. 20 agent tasks at once (one per workspace, `codex` on the scripted mock upstream), with the
//!    server's peak RSS, its CPU, and `GET /api/v1/workspaces` latency measured while they run.
//!
//! Creation stops early when the machine's `MemAvailable` falls under a reserve (default 3 GiB),
//! and the whole run is bounded in time (default 45 min); what was measured until then is
//! printed as it comes. Every object the run creates (containers, volumes, the data directory,
//! the server process) is removed at the end, on failure and on Ctrl-C / SIGTERM; a run that was
//! killed outright leaves a marker in `/var/tmp/berth-density/`, which the next run's cleanup
//! pass (at its start) finds and removes.
//!
//! `cargo bench -p berth-bin --bench density`. Environment: `BERTH_DENSITY_STEPS` (e.g.
//! `10,50,100,200`), `BERTH_DENSITY_TASKS` (20; 0 skips the tasks), `BERTH_DENSITY_WINDOW_SECS`
//! (20), `BERTH_DENSITY_RESERVE_MIB` (3072), `BERTH_DENSITY_MINUTES` (45), `BERTH_DENSITY_AGENT`
//! (`codex`). Prints markdown tables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use common::{env_or, percentile, rss_kib, strip_ansi};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::Runtime;
use berth_test_support::mock_llm::MockLlm;
use berth_test_support::{cleanup_engine, ensure_image, ServerOptions, TestServer};
use serde_json::{json, Value};

const PROMPT: &str = "Create hello.txt containing hi, then say DONE.";
const MARKERS: &str = "/var/tmp/berth-density";
const NAME_PREFIX: &str = "density-";
/// Workspaces created at once while filling a step.
const CREATE_PARALLEL: usize = 4;
const TASK_TIMEOUT: Duration = Duration::from_secs(300);

fn steps() -> Vec<usize> {
    let raw = std::env::var("BERTH_DENSITY_STEPS").unwrap_or_else(|_| "10,50,100,150,200".into());
    let mut v: Vec<usize> = raw
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("BERTH_DENSITY_STEPS: {s:?} is not a count"))
        })
        .filter(|n| *n > 0)
        .collect();
    v.sort();
    v.dedup();
    assert!(!v.is_empty(), "BERTH_DENSITY_STEPS is empty");
    v
}

// --- /proc -----------------------------------------------------------------------------------

fn clk_tck() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The fields of `/proc/<pid>/stat` after the command name (field 3 = index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Memory private to a process (`Private_Clean` + `Private_Dirty`, its USS), KiB: what it
/// costs on top of what it shares with other processes (the binary's pages, for daemons).
fn uss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |key: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(field("Private_Clean:")? + field("Private_Dirty:")?)
}

/// utime + stime, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
}

/// Parent → children, for every process now.
fn children_map() -> HashMap<u32, Vec<u32>> {
    let mut m: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in pids() {
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse().ok()) {
            m.entry(ppid).or_default().push(pid);
        }
    }
    m
}

fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The process whose environment holds `KEY=value` exactly.
fn pid_with_env(entry: &str) -> Option<u32> {
    pids().find(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|b| *b == 0).any(|e| e == entry.as_bytes()))
            .unwrap_or(false)
    })
}

/// The engine's API service (`podman system service`), if it runs on this machine.
fn engine_service_pid() -> Option<u32> {
    pids().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.len() >= 3 && args[1] == b"system" && args[2] == b"service"
            })
            .unwrap_or(false)
    })
}

/// Busy and total jiffies of the whole machine.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mem_available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

// --- statistics --------------------------------------------------------------------------------

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median_u64(v: &[u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

// --- cleanup -----------------------------------------------------------------------------------

/// A run's marker: what the next run removes if this one was killed before its own cleanup.
struct Marker {
    path: PathBuf,
}

impl Marker {
    fn write(server_id: &str, data_dir: &Path) -> Self {
        std::fs::create_dir_all(MARKERS).unwrap();
        let path = Path::new(MARKERS).join(format!("{server_id}.json"));
        let body = json!({"server_id": server_id, "data_dir": data_dir});
        std::fs::write(&path, body.to_string()).unwrap();
        Self { path }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes what earlier runs left behind: their server process (found by its data directory),
/// engine objects (by their server id) and data directory.
async fn sweep_leftovers() -> usize {
    let Ok(entries) = std::fs::read_dir(MARKERS) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let Ok(v) = std::fs::read_to_string(e.path())
            .map_err(|_| ())
            .and_then(|s| serde_json::from_str::<Value>(&s).map_err(|_| ()))
        else {
            continue;
        };
        let (Some(id), Some(dir)) = (v["server_id"].as_str(), v["data_dir"].as_str()) else {
            continue;
        };
        // Only the server of that run: the process whose environment names its data directory.
        if let Some(pid) = pid_with_env(&format!("BERTH_DATA_DIR={dir}")) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        cleanup_engine(id).await;
        if dir.starts_with("/var/tmp/berth-test-") {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_file(e.path());
        n += 1;
    }
    n
}

/// What is left of a run in the engine and on disk (all zero after a clean end).
async fn leftovers(server_id: &str, data_dir: &Path) -> (usize, usize, bool) {
    let rt = berth_runtime::DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap();
    let containers = rt
        .list_container_states(&format!("berth.server={server_id}"))
        .await
        .map(|l| l.len())
        .unwrap_or(usize::MAX);
    let prefix = format!("berth-{server_id}-");
    let volumes = rt
        .client()
        .list_volumes(None::<bollard::volume::ListVolumesOptions<String>>)
        .await
        .map(|v| {
            v.volumes
                .unwrap_or_default()
                .iter()
                .filter(|v| v.name.starts_with(&prefix))
                .count()
        })
        .unwrap_or(usize::MAX);
    (containers, volumes, data_dir.exists())
}

// --- measurements -----------------------------------------------------------------------------

/// One parsed `reconcile pass` log line.
#[derive(Default, Clone, Copy)]
struct Pass {
    workspaces: u64,
    engine_calls: u64,
    inspected: u64,
    elapsed_us: u64,
}

fn log_field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn passes_in(log_tail: &str) -> Vec<Pass> {
    log_tail
        .lines()
        .filter(|l| l.contains("reconcile pass"))
        .map(|l| {
            let l = strip_ansi(l);
            Pass {
                workspaces: log_field(&l, "workspaces").unwrap_or(0),
                engine_calls: log_field(&l, "engine_calls").unwrap_or(0),
                inspected: log_field(&l, "inspected").unwrap_or(0),
                elapsed_us: log_field(&l, "elapsed_us").unwrap_or(0),
            }
        })
        .collect()
}

struct Idle {
    server_cpu_pct: f64,
    engine_cpu_pct: Option<f64>,
    machine_busy_pct: f64,
    load: String,
    passes: Vec<Pass>,
    cpu_ms_per_pass: f64,
}

/// A quiet window: no API call; CPU of the server, the engine service and the machine.
async fn idle_window(s: &TestServer, server: u32, engine: Option<u32>, window: Duration) -> Idle {
    let tck = clk_tck();
    let log_at = s.log().len();
    let (s0, e0, m0) = (
        cpu_ticks(server).unwrap(),
        engine.and_then(cpu_ticks),
        machine_jiffies(),
    );
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    let (s1, e1, m1) = (
        cpu_ticks(server).unwrap(),
        engine.and_then(cpu_ticks),
        machine_jiffies(),
    );
    let log = s.log();
    let passes = passes_in(log.get(log_at..).unwrap_or(""));
    let server_cpu_s = (s1 - s0) as f64 / tck;
    Idle {
        server_cpu_pct: server_cpu_s / secs * 100.0,
        engine_cpu_pct: match (e0, e1) {
            (Some(a), Some(b)) => Some((b - a) as f64 / tck / secs * 100.0),
            _ => None,
        },
        machine_busy_pct: (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64 * 100.0,
        load: loadavg(),
        cpu_ms_per_pass: server_cpu_s * 1000.0 / passes.len().max(1) as f64,
        passes,
    }
}

struct Inside {
    containers: usize,
    daemon_kib: Vec<u64>,
    daemon_uss_kib: Vec<u64>,
    daemon_comm: String,
    /// conmon + init, per container.
    overhead_kib: Vec<u64>,
    other_processes: usize,
}

/// RSS of the processes of every workspace container: the daemon (the init's child), the
/// init (the container's pid 1) and its conmon (the init's parent).
async fn inside(rt: &berth_runtime::DockerRuntime, server_id: &str) -> Inside {
    let list = rt
        .list_containers(&format!("berth.server={server_id}"))
        .await
        .unwrap();
    let kids = children_map();
    let mut r = Inside {
        containers: 0,
        daemon_kib: Vec::new(),
        daemon_uss_kib: Vec::new(),
        daemon_comm: String::new(),
        overhead_kib: Vec::new(),
        other_processes: 0,
    };
    for c in list {
        let Some(init) = c.pid else { continue };
        r.containers += 1;
        let conmon = ppid(init).filter(|p| comm(*p) == "conmon");
        r.overhead_kib
            .push(rss_kib(init).unwrap_or(0) + conmon.and_then(rss_kib).unwrap_or(0));
        let mut daemon = 0;
        for child in kids.get(&init).into_iter().flatten() {
            if daemon == 0 {
                daemon = rss_kib(*child).unwrap_or(0);
                r.daemon_uss_kib.push(uss_kib(*child).unwrap_or(0));
                r.daemon_comm = comm(*child);
            } else {
                r.other_processes += 1;
            }
        }
        r.daemon_kib.push(daemon);
    }
    r
}

/// `n` sequential GETs on one keep-alive client; latencies in ms.
async fn latencies(s: &TestServer, paths: &[String], n: usize) -> Vec<f64> {
    let client = reqwest::Client::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let path = &paths[i % paths.len()];
        let t0 = Instant::now();
        let r = client
            .get(format!("{}{path}", s.url))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        r.bytes().await.unwrap();
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

struct Tasks {
    started: usize,
    completed: usize,
    wall_s: f64,
    per_task_ms: Vec<f64>,
    server_rss_peak_kib: u64,
    server_cpu_pct: f64,
    list_ms: Vec<f64>,
}

async fn run_task(s: &TestServer, ws: &str, agent: &str) -> (bool, f64) {
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": ws, "agent": agent, "prompt": PROMPT})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    loop {
        let t: Value = client
            .get(format!("{}/api/v1/tasks/{id}", s.url))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match t["state"].as_str().unwrap_or("") {
            "completed" => return (true, t0.elapsed().as_secs_f64() * 1000.0),
            "failed" | "cancelled" | "interrupted" => {
                eprintln!("task {id} in {ws} ended {}", t["state"]);
                return (false, t0.elapsed().as_secs_f64() * 1000.0);
            }
            _ if t0.elapsed() > TASK_TIMEOUT => {
                eprintln!("task {id} in {ws} did not end in {TASK_TIMEOUT:?}");
                return (false, t0.elapsed().as_secs_f64() * 1000.0);
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `n` tasks at once, one per workspace, while sampling the server and the list latency.
async fn tasks_on_top(s: &TestServer, server: u32, names: &[String], agent: &str) -> Tasks {
    let tck = clk_tck();
    let c0 = cpu_ticks(server).unwrap();
    let t0 = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let runs = async {
        let r = futures_util::future::join_all(names.iter().map(|ws| run_task(s, ws, agent))).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    };
    let sample = async {
        let client = reqwest::Client::new();
        let (mut peak, mut list) = (0, Vec::new());
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            peak = peak.max(rss_kib(server).unwrap_or(0));
            let t = Instant::now();
            let r = client
                .get(format!("{}/api/v1/workspaces", s.url))
                .bearer_auth(&s.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.bytes().await.unwrap();
            list.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (peak, list)
    };
    let (results, (peak, list_ms)) = tokio::join!(runs, sample);
    let wall = t0.elapsed().as_secs_f64();
    let c1 = cpu_ticks(server).unwrap();
    Tasks {
        started: results.len(),
        completed: results.iter().filter(|(ok, _)| *ok).count(),
        wall_s: wall,
        per_task_ms: results.iter().map(|(_, ms)| *ms).collect(),
        server_rss_peak_kib: peak,
        server_cpu_pct: (c1 - c0) as f64 / tck / wall * 100.0,
        list_ms,
    }
}

// --- the run -----------------------------------------------------------------------------------

struct Step {
    target: usize,
    reached: usize,
    server_rss_kib: u64,
    idle: Idle,
    inside: Inside,
    list_ms: Vec<f64>,
    show_ms: Vec<f64>,
    tasks: Option<Tasks>,
}

fn print_step(st: &Step, base_rss_kib: u64) {
    let per_ws = if st.reached > 0 {
        (st.server_rss_kib as f64 - base_rss_kib as f64) / st.reached as f64
    } else {
        f64::NAN
    };
    let calls: Vec<u64> = st.idle.passes.iter().map(|p| p.engine_calls).collect();
    let inspected: u64 = st.idle.passes.iter().map(|p| p.inspected).sum();
    let wall: Vec<f64> = st
        .idle
        .passes
        .iter()
        .map(|p| p.elapsed_us as f64 / 1000.0)
        .collect();
    let seen = st
        .idle
        .passes
        .iter()
        .map(|p| p.workspaces)
        .max()
        .unwrap_or(0);
    let d = &st.inside.daemon_kib;
    let o = &st.inside.overhead_kib;
    println!(
        "| {}{} | {:.1} | {:.0} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {:.2} | {} ({}) / {:.1} / {:.1} / {:.1} | {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} % · {} |",
        st.reached,
        if st.reached < st.target { format!(" (of {})", st.target) } else { String::new() },
        mib(st.server_rss_kib),
        per_ws,
        mib(d.iter().sum()),
        mib(median_u64(d)),
        mib(median_u64(&st.inside.daemon_uss_kib)),
        mib(o.iter().sum()),
        mib(median_u64(o)),
        st.idle.server_cpu_pct,
        st.idle.passes.len(),
        seen,
        st.idle.cpu_ms_per_pass,
        percentile(&wall, 50.0),
        percentile(&wall, 100.0),
        if calls.is_empty() {
            "–".to_owned()
        } else {
            format!(
                "{}–{} (inspects {inspected})",
                calls.iter().min().unwrap(),
                calls.iter().max().unwrap()
            )
        },
        st.idle
            .engine_cpu_pct
            .map_or("–".to_owned(), |p| format!("{p:.1}")),
        percentile(&st.list_ms, 50.0),
        percentile(&st.list_ms, 99.0),
        percentile(&st.show_ms, 50.0),
        percentile(&st.show_ms, 99.0),
        st.idle.machine_busy_pct,
        st.idle.load,
    );
}

fn print_header() {
    println!("| workspaces | server RSS (MiB) | server RSS / ws (KiB) | daemon RSS sum / median / USS median (MiB) | conmon + init sum / median (MiB) | server CPU idle (% of a core) | passes (ws) / CPU ms per pass / pass wall p50 / max (ms) | engine calls per pass | engine service CPU (%) | list p50 / p99 (ms) | show p50 / p99 (ms) | machine busy · load |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn print_tasks(rows: &[(usize, &Tasks)]) {
    println!();
    println!("| workspaces | tasks completed | wall (s) | per task p50 / max (ms) | server RSS peak (MiB) | server CPU (% of a core) | list p50 / p99 during (ms) |");
    println!("|---|---|---|---|---|---|---|");
    for (n, t) in rows {
        println!(
            "| {n} | {}/{} | {:.1} | {:.0} / {:.0} | {:.1} | {:.0} | {:.1} / {:.1} |",
            t.completed,
            t.started,
            t.wall_s,
            percentile(&t.per_task_ms, 50.0),
            percentile(&t.per_task_ms, 100.0),
            mib(t.server_rss_peak_kib),
            t.server_cpu_pct,
            percentile(&t.list_ms, 50.0),
            percentile(&t.list_ms, 99.0),
        );
    }
}

async fn create_one(s: &TestServer, name: &str) {
    let (st, v) = s
        .call("POST", "/api/v1/workspaces", Some(json!({"name": name})))
        .await;
    assert_eq!(st, 201, "create {name}: {v}");
}

async fn run(s: &TestServer, server: u32, base_rss: u64, steps: &[usize]) -> Vec<Step> {
    let window = Duration::from_secs(env_or("BERTH_DENSITY_WINDOW_SECS", 20));
    let reserve = env_or("BERTH_DENSITY_RESERVE_MIB", 3072u64);
    let n_tasks = env_or("BERTH_DENSITY_TASKS", 20usize);
    let agent: String = env_or("BERTH_DENSITY_AGENT", "codex".to_owned());
    let engine = engine_service_pid();
    let rt = berth_runtime::DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap();
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    print_header();
    for &target in steps {
        let mut stopped = None;
        while names.len() < target {
            let avail = mem_available_mib();
            if avail < reserve {
                stopped = Some(avail);
                break;
            }
            let batch: Vec<String> = (names.len()..target.min(names.len() + CREATE_PARALLEL))
                .map(|i| format!("{NAME_PREFIX}{i:03}"))
                .collect();
            futures_util::future::join_all(batch.iter().map(|n| create_one(s, n))).await;
            names.extend(batch);
        }
        if let Some(avail) = stopped {
            println!(
                "\nstopped creating at {} of {target}: MemAvailable {avail} MiB < reserve {reserve} MiB\n",
                names.len()
            );
        }
        // Let the reconciler see the step (and learn the new containers) before the window.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle = idle_window(s, server, engine, window).await;
        let server_rss_kib = rss_kib(server).unwrap();
        let inside = inside(&rt, s.server_id()).await;
        let list_ms = latencies(s, &["/api/v1/workspaces".to_owned()], 200).await;
        let shows: Vec<String> = names
            .iter()
            .map(|n| format!("/api/v1/workspaces/{n}"))
            .collect();
        let show_ms = latencies(s, &shows, 50).await;
        let tasks = if n_tasks > 0 {
            let on: Vec<String> = names.iter().take(n_tasks).cloned().collect();
            Some(tasks_on_top(s, server, &on, &agent).await)
        } else {
            None
        };
        let step = Step {
            target,
            reached: names.len(),
            server_rss_kib,
            idle,
            inside,
            list_ms,
            show_ms,
            tasks,
        };
        print_step(&step, base_rss);
        eprintln!(
            "step {}: {} containers, daemon process `{}`",
            step.reached, step.inside.containers, step.inside.daemon_comm
        );
        if step.inside.other_processes > 0 {
            eprintln!(
                "note: {} process(es) besides the daemon under the containers' inits",
                step.inside.other_processes
            );
        }
        out.push(step);
        if stopped.is_some() {
            break;
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let steps = steps();
    let minutes: u64 = env_or("BERTH_DENSITY_MINUTES", 45);
    let swept = sweep_leftovers().await;
    if swept > 0 {
        eprintln!("removed what {swept} earlier run(s) left behind");
    }
    let image = ensure_image().await;
    let mock = MockLlm::start().await;
    let mut env = Vec::new();
    for p in ["ANTHROPIC", "OPENAI", "GEMINI"] {
        env.push((format!("BERTH_{p}_BASE_URL"), mock.url()));
        env.push((format!("BERTH_{p}_API_KEY"), format!("real-{p}-key")));
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    let s = TestServer::start_with(
        &bin,
        ServerOptions {
            reconcile_seconds: 2,
            env,
            ..Default::default()
        },
    )
    .await;
    let server_id = s.server_id().to_owned();
    let data_dir = s.data_dir.path().to_owned();
    let marker = Marker::write(&server_id, &data_dir);
    let server = pid_with_env(&format!("BERTH_DATA_DIR={}", data_dir.display()))
        .expect("the server process");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let base_rss = rss_kib(server).unwrap();

    let rt = berth_runtime::DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap();
    let info = rt.info().await.unwrap();
    println!(
        "engine: {} {} (cgroup v{}); image {image}; {} cores; MemAvailable at start {} MiB; server RSS with no workspace {:.1} MiB; steps {steps:?}",
        info.engine,
        info.version,
        info.cgroup_version,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_available_mib(),
        mib(base_rss),
    );
    println!();

    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    let outcome = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(minutes * 60), run(&s, server, base_rss, &steps)) => match r {
            Ok(steps) => Ok(steps),
            Err(_) => Err(format!("time bound of {minutes} min reached")),
        },
        _ = tokio::signal::ctrl_c() => Err("interrupted (SIGINT)".to_owned()),
        _ = term.recv() => Err("interrupted (SIGTERM)".to_owned()),
    };
    match &outcome {
        Ok(steps) => {
            let rows: Vec<(usize, &Tasks)> = steps
                .iter()
                .filter_map(|st| st.tasks.as_ref().map(|t| (st.reached, t)))
                .collect();
            if !rows.is_empty() {
                print_tasks(&rows);
            }
        }
        Err(why) => println!("\nstopped early: {why}"),
    }

    let t0 = Instant::now();
    drop(s);
    drop(marker);
    let (c, v, d) = leftovers(&server_id, &data_dir).await;
    println!();
    println!(
        "cleanup: {:.0} s; left behind: {c} containers, {v} volumes, data directory {}",
        t0.elapsed().as_secs_f64(),
        if d { "still there" } else { "removed" }
    );
    drop(mock);
    if outcome.is_err() {
        std::process::exit(1);
    }
}
