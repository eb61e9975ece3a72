//! The overlay end to end, each figure against a baseline measured in the same run:
//!
//! 1. Bulk TCP throughput through the tunnel (one connection, control → agent sink):
//!    our two Nodes in one process over loopback UDP; our two Nodes as two processes in two
//!    network namespaces joined by a veth pair; `wireguard-go` + `iperf3` in the same kind of
//!    namespaces (the baseline); plain loopback TCP (the ceiling).
//! 2. API request rate: keep-alive `GET /api/v0/processes/list` on 16 HTTP/1 connections,
//!    through the tunnel vs the same router on plain loopback TCP.
//! 3. Round-trip latency of `GET /api/v0/health` on one warm connection, tunnel vs loopback TCP.
//! 5. (`metrics`, named only) the cost of Prometheus scraping on the API rate: the 16-connection
//!    rate with a scraper fetching `GET /metrics` through the tunnel every second vs without,
//!    rounds alternating in the same run.
//! 4. RSS of a real agent process (`wgagent agent` code path, this binary re-executed): idle,
//!    and with 100 open keep-alive connections from a control node; idle `wireguard-go` as a
//!    reference.
//!
//! Every bulk figure is measured for both data-path layouts (`[interface] threads`): 1, the
//! single task, and the machine's default (the crypto + netstack pipeline on a multi-core
//! machine), alternating in each round. `pinned` (only named) repeats the namespace pair with
//! each process pinned to a core of its own. `fanout` (only named): 1 control node -> 8 agents
//! with the netstack's per-destination grouping of its output off and on, rounds alternating.
//!
//! Run: `cargo bench --bench overlay` (as root for the namespace parts; otherwise they print a
//! skip reason). Prints a table; asserts nothing about the figures. Takes about two minutes.
//!
//! The bench re-executes itself for its child processes; `CHILD_ENV` selects the role.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wgagent::agent::Agent;
use wgagent::api::{self, AppState};
use wgagent::config;
use wgagent::keys;
use wgagent::node::{Node, NodeConfig, NodeStats};
use wgagent::proc::StartSpec;
use wgagent::wg::{PeerConfig, PublicKey, StaticSecret};

/// Selects a child role: `agent` (the real agent CLI), `sink` or `source` (netns throughput).
const CHILD_ENV: &str = "WGAGENT_OVERLAY_BENCH_CHILD";
/// Duration of every throughput run (ours, wireguard-go's iperf3, loopback).
const BULK_SECS: u64 = 5;
/// Rounds of the bulk runs (ours and wireguard-go alternate).
const BULK_ROUNDS: usize = 2;
/// Duration of each request-rate run, split into rounds that alternate tunnel and loopback.
const RATE_SECS: u64 = 5;
const RATE_ROUNDS: u32 = 5;
const RATE_CONNS: usize = 16;
const LATENCY_WARMUP: usize = 200;
const LATENCY_SAMPLES: usize = 2000;
const RSS_CONNS: usize = 100;
const MTU: usize = 1280;
/// Bytes per write/read call in the bulk tests (as iperf3's default 128 KiB).
const CHUNK: usize = 128 * 1024;
const SINK_PORT: u16 = 5001;
const API_PORT: u16 = 4;
const AGENT_IP: &str = "100.64.0.10";
const CONTROL_IP: &str = "100.64.0.1";
/// Bound on any single section, so a bug makes the bench report instead of hang.
const SECTION_LIMIT: Duration = Duration::from_secs(60);

/// `threads` of the nodes started next (0: the machine's default); set per run.
static THREADS: AtomicUsize = AtomicUsize::new(0);
/// The two layouts every bulk figure is measured in: `threads = 1` (the baseline) and the
/// default; `WGAGENT_BENCH_THREADS=A,B` measures `threads = B` against `threads = A` instead
/// (e.g. `2,3`: the sharded layout against the pipeline).
static LAYOUTS: std::sync::LazyLock<[usize; 2]> = std::sync::LazyLock::new(|| {
    let pair: Vec<usize> = std::env::var("WGAGENT_BENCH_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_default();
    match pair[..] {
        [a, b] => [a, b],
        _ => [1, 0],
    }
});

/// The baseline column's name: "same, threads=1" unless `WGAGENT_BENCH_THREADS` says otherwise.
fn base_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| format!("same, threads={}", LAYOUTS[0]))
}

fn layout_name(threads: usize) -> String {
    match threads {
        0 => format!(
            "threads={} (default)",
            wgagent::config::Interface::default_threads()
        ),
        n => format!("threads={n}"),
    }
}

fn main() -> ExitCode {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("agent") => wgagent::cli::main(),
        Ok(role @ ("sink" | "source")) => match child_bulk(role) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("overlay bench child {role}: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ => {
            parent();
            ExitCode::SUCCESS
        }
    }
}

/// One row of the final table.
struct Row {
    name: &'static str,
    ours: Option<f64>,
    baseline_name: &'static str,
    baseline: Option<f64>,
    unit: &'static str,
    goal: &'static str,
}

/// Sections can be selected by name: `cargo bench --bench overlay -- bulk aggregate api rss`;
/// `fanout` (only named) measures 1 -> 8 with the netstack's output grouping off and on;
/// `inproc`
/// (only named) runs one in-process bulk transfer, e.g. under `perf record`.
fn parent() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    print_machine();
    let mut rows = Vec::new();
    let mut wg_go_rss = None;
    if only.iter().any(|o| o == "inproc") {
        // Not part of the default run: one in-process bulk transfer per layout, for profiling.
        for threads in *LAYOUTS {
            THREADS.store(threads, Ordering::Relaxed);
            let r = rt.block_on(limited(ours_bulk()));
            let what = format!("ours, in-process, {}", layout_name(threads));
            push_tput((&mut Vec::new(), &mut Vec::new()), &what, r);
        }
    }
    if want("bulk") {
        let b = bulk(&rt, false);
        wg_go_rss = b.wg_go_rss_kib;
        let wg = mean(&b.wg_go);
        let wg_eff = mean(&b.wg_go_eff);
        let (single, default) = (0, 1);
        rows.push(Row {
            name: "bulk TCP, in-process, threads=1",
            ours: mean(&b.in_process[single]),
            baseline_name: "wireguard-go netns",
            baseline: wg,
            unit: "Mbit/s",
            goal: "-",
        });
        rows.push(Row {
            name: "bulk TCP, 2 procs in netns, threads=1",
            ours: mean(&b.netns[single]),
            baseline_name: "wireguard-go netns",
            baseline: wg,
            unit: "Mbit/s",
            goal: ">= 1.5",
        });
        rows.push(Row {
            name: "bulk TCP, in-process, default threads",
            ours: mean(&b.in_process[default]),
            baseline_name: base_name(),
            baseline: mean(&b.in_process[single]),
            unit: "Mbit/s",
            goal: ">= 1.5",
        });
        rows.push(Row {
            name: "bulk TCP, netns, default threads",
            ours: mean(&b.netns[default]),
            baseline_name: base_name(),
            baseline: mean(&b.netns[single]),
            unit: "Mbit/s",
            goal: ">= 1.5",
        });
        rows.push(Row {
            name: "bulk TCP, netns, default threads",
            ours: mean(&b.netns[default]),
            baseline_name: "wireguard-go netns",
            baseline: wg,
            unit: "Mbit/s",
            goal: ">= 1.5",
        });
        rows.push(Row {
            name: "bulk, in-process, threads=1, Mb/CPU-s",
            ours: mean(&b.in_process_eff[single]),
            baseline_name: "wireguard-go netns",
            baseline: wg_eff,
            unit: "Mb/CPUs",
            goal: "-",
        });
        rows.push(Row {
            name: "bulk, netns, threads=1, Mb/CPU-s",
            ours: mean(&b.netns_eff[single]),
            baseline_name: "wireguard-go netns",
            baseline: wg_eff,
            unit: "Mb/CPUs",
            goal: "-",
        });
        // CPU per bit of the default relative to threads=1 is the inverse of this ratio.
        rows.push(Row {
            name: "bulk, in-process, default, Mb/CPU-s",
            ours: mean(&b.in_process_eff[default]),
            baseline_name: base_name(),
            baseline: mean(&b.in_process_eff[single]),
            unit: "Mb/CPUs",
            goal: ">= 0.83",
        });
        rows.push(Row {
            name: "bulk, netns, default, Mb/CPU-s",
            ours: mean(&b.netns_eff[default]),
            baseline_name: base_name(),
            baseline: mean(&b.netns_eff[single]),
            unit: "Mb/CPUs",
            goal: ">= 0.83",
        });
        rows.push(Row {
            name: "bulk TCP, in-process, threads=1 vs ceiling",
            ours: mean(&b.in_process[single]),
            baseline_name: "loopback TCP",
            baseline: mean(&b.ceiling),
            unit: "Mbit/s",
            goal: "-",
        });
    }
    if only.iter().any(|o| o == "pinned") {
        // Each namespace process on a core of its own: what one end does with one core.
        let b = bulk(&rt, true);
        rows.push(Row {
            name: "bulk TCP, netns pinned 1 core/end, default",
            ours: mean(&b.netns[1]),
            baseline_name: base_name(),
            baseline: mean(&b.netns[0]),
            unit: "Mbit/s",
            goal: "-",
        });
        rows.push(Row {
            name: "bulk, netns pinned, default, Mb/CPU-s",
            ours: mean(&b.netns_eff[1]),
            baseline_name: base_name(),
            baseline: mean(&b.netns_eff[0]),
            unit: "Mb/CPUs",
            goal: "-",
        });
    }
    if want("aggregate") {
        // One agent node serving 8 peers, and one control node 8 agents, in both layouts.
        for (name, fan_in) in [
            ("8 control nodes -> 1 agent, in-process", true),
            ("1 control node -> 8 agents, in-process", false),
        ] {
            let mut got = [Vec::new(), Vec::new()];
            let mut eff = [Vec::new(), Vec::new()];
            for (i, threads) in LAYOUTS.into_iter().enumerate() {
                THREADS.store(threads, Ordering::Relaxed);
                let r = rt.block_on(limited(aggregate_bulk(fan_in)));
                let what = format!("{name}, {}", layout_name(threads));
                push_tput((&mut got[i], &mut eff[i]), &what, r);
            }
            rows.push(Row {
                name: if fan_in {
                    "aggregate 8 -> 1, default threads"
                } else {
                    "aggregate 1 -> 8, default threads"
                },
                ours: mean(&got[1]),
                baseline_name: base_name(),
                baseline: mean(&got[0]),
                unit: "Mbit/s",
                goal: "-",
            });
            rows.push(Row {
                name: if fan_in {
                    "aggregate 8 -> 1, default, Mb/CPU-s"
                } else {
                    "aggregate 1 -> 8, default, Mb/CPU-s"
                },
                ours: mean(&eff[1]),
                baseline_name: base_name(),
                baseline: mean(&eff[0]),
                unit: "Mb/CPUs",
                goal: "-",
            });
        }
        THREADS.store(0, Ordering::Relaxed);
    }
    if only.iter().any(|o| o == "fanout") {
        // Only named: 1 control node -> 8 agents with the netstack's per-destination grouping
        // of its output off and on (same code otherwise), rounds alternating, both layouts.
        for threads in *LAYOUTS {
            THREADS.store(threads, Ordering::Relaxed);
            let mut got = [Vec::new(), Vec::new()];
            let mut eff = [Vec::new(), Vec::new()];
            for _round in 0..2 {
                for (i, grouping) in [false, true].into_iter().enumerate() {
                    wgagent::netstack::set_output_grouping(grouping);
                    let r = rt.block_on(limited(aggregate_bulk(false)));
                    let what = format!(
                        "1 control node -> 8 agents, {}, output grouping {}",
                        layout_name(threads),
                        if grouping { "on" } else { "off" }
                    );
                    push_tput((&mut got[i], &mut eff[i]), &what, r);
                }
            }
            rows.push(Row {
                name: if threads == 1 {
                    "1 -> 8 grouping on, threads=1"
                } else {
                    "1 -> 8 grouping on, default threads"
                },
                ours: mean(&got[1]),
                baseline_name: "same, grouping off",
                baseline: mean(&got[0]),
                unit: "Mbit/s",
                goal: "-",
            });
            rows.push(Row {
                name: if threads == 1 {
                    "1 -> 8 grouping on, threads=1, Mb/CPU-s"
                } else {
                    "1 -> 8 grouping on, default, Mb/CPU-s"
                },
                ours: mean(&eff[1]),
                baseline_name: "same, grouping off",
                baseline: mean(&eff[0]),
                unit: "Mb/CPUs",
                goal: "-",
            });
        }
        wgagent::netstack::set_output_grouping(true);
        THREADS.store(0, Ordering::Relaxed);
    }
    if want("api") {
        match rt.block_on(limited(api_benches())) {
            Ok(a) => {
                rows.push(Row {
                    name: "API GET processes/list, 16 conns",
                    ours: Some(a.tunnel_rps),
                    baseline_name: "loopback TCP",
                    baseline: Some(a.loopback_rps),
                    unit: "req/s",
                    goal: ">= 0.5",
                });
                rows.push(Row {
                    name: "API GET health RTT p50 (1 conn)",
                    ours: Some(a.tunnel.0),
                    baseline_name: "loopback TCP",
                    baseline: Some(a.loopback.0),
                    unit: "us",
                    goal: "-",
                });
                rows.push(Row {
                    name: "API GET health RTT p99 (1 conn)",
                    ours: Some(a.tunnel.1),
                    baseline_name: "loopback TCP",
                    baseline: Some(a.loopback.1),
                    unit: "us",
                    goal: "-",
                });
            }
            Err(e) => println!("  API benches FAILED: {e:#}"),
        }
    }
    if only.iter().any(|o| o == "metrics") {
        match rt.block_on(limited(metrics_cost())) {
            Ok((quiet, scraped)) => rows.push(Row {
                name: "API GET processes/list, 16 conns, scrape /metrics every 1 s",
                ours: Some(scraped),
                baseline_name: "same, no scrape",
                baseline: Some(quiet),
                unit: "req/s",
                goal: ">= 0.95",
            }),
            Err(e) => println!("  metrics cost FAILED: {e:#}"),
        }
    }
    if only.iter().any(|o| o == "metrics_rss") {
        match rt.block_on(limited(metrics_rss())) {
            Ok(r) => {
                let mib = |k: u64| Some(k as f64 / 1024.0);
                rows.push(Row {
                    name: "agent RSS after load, metrics listener on + scraped",
                    ours: mib(r.on.0),
                    baseline_name: "same agent, metrics off",
                    baseline: mib(r.off.0),
                    unit: "MiB",
                    goal: "-",
                });
                rows.push(Row {
                    name: "agent peak RSS (VmHWM), metrics on + scraped",
                    ours: mib(r.on.1),
                    baseline_name: "same agent, metrics off",
                    baseline: mib(r.off.1),
                    unit: "MiB",
                    goal: "-",
                });
            }
            Err(e) => println!("  metrics RSS FAILED: {e:#}"),
        }
    }
    if want("rss") {
        match rt.block_on(limited(agent_rss())) {
            Ok(r) => {
                let go = wg_go_rss.map(|k| k as f64 / 1024.0);
                rows.push(Row {
                    name: "agent RSS, idle",
                    ours: Some(r.idle_kib as f64 / 1024.0),
                    baseline_name: "wireguard-go idle",
                    baseline: go,
                    unit: "MiB",
                    goal: "-",
                });
                rows.push(Row {
                    name: "agent RSS, 100 keep-alive conns",
                    ours: Some(r.conns_kib as f64 / 1024.0),
                    baseline_name: "wireguard-go idle",
                    baseline: go,
                    unit: "MiB",
                    goal: "-",
                });
                rows.push(Row {
                    name: "agent RSS, 100 conns after churn",
                    ours: Some(r.churn_kib as f64 / 1024.0),
                    baseline_name: "wireguard-go idle",
                    baseline: go,
                    unit: "MiB",
                    goal: "-",
                });
            }
            Err(e) => println!("  agent RSS FAILED: {e:#}"),
        }
    }
    println!("load average at the end: {}", load_average());
    print_table(&rows);
}

/// Throughput samples in Mbit/s, one per round; ours per layout (index into [`LAYOUTS`]).
#[derive(Default)]
struct Bulk {
    ceiling: Vec<f64>,
    in_process: [Vec<f64>; 2],
    netns: [Vec<f64>; 2],
    wg_go: Vec<f64>,
    /// Mbit moved per CPU-second, one per round (see [`Tput`]).
    in_process_eff: [Vec<f64>; 2],
    netns_eff: [Vec<f64>; 2],
    wg_go_eff: Vec<f64>,
    wg_go_rss_kib: Option<u64>,
}

/// One throughput run: the rate and the CPU it cost. `cpu` is the user + system time of every
/// process that does the work, both ends: for ours the node processes (WireGuard, netstack,
/// and the bulk application in the same process); for wireguard-go both `wireguard-go`
/// processes (from `/proc/<pid>/stat`) plus both `iperf3` processes (whose CPU time holds the
/// kernel TCP work that our netstack does in userspace).
struct Tput {
    mbps: f64,
    /// Seconds the transfer took (the rate's denominator).
    secs: f64,
    cpu: f64,
}

impl Tput {
    /// Mbit moved per CPU-second.
    fn per_cpu(&self) -> f64 {
        self.mbps * self.secs / self.cpu.max(1e-9)
    }
}

/// Rounds alternate ours (both layouts) and the baseline so that load from other work on the
/// machine hits all alike. `pinned`: only our namespace pair, each process on its own core.
fn bulk(rt: &tokio::runtime::Runtime, pinned: bool) -> Bulk {
    let mut b = Bulk::default();
    let netns = Netns::create();
    let wg_go = match &netns {
        Ok(_) if pinned => None,
        Ok(ns) => match WgGo::start(ns) {
            Ok(w) => Some(w),
            Err(e) => {
                println!("  wireguard-go setup FAILED: {e:#}");
                None
            }
        },
        Err(e) => {
            println!("  SKIP namespace runs (ours in netns, wireguard-go baseline): {e:#}");
            None
        }
    };
    for round in 1..=BULK_ROUNDS {
        println!("bulk round {round}/{BULK_ROUNDS}");
        if round == 1 && !pinned {
            push(
                &mut b.ceiling,
                "loopback TCP ceiling",
                rt.block_on(limited(loopback_bulk())),
            );
        }
        for (i, threads) in LAYOUTS.into_iter().enumerate() {
            THREADS.store(threads, Ordering::Relaxed);
            let name = layout_name(threads);
            if !pinned {
                push_tput(
                    (&mut b.in_process[i], &mut b.in_process_eff[i]),
                    &format!("ours, in-process, {name}"),
                    rt.block_on(limited(ours_bulk())),
                );
            }
            if let Ok(ns) = &netns {
                push_tput(
                    (&mut b.netns[i], &mut b.netns_eff[i]),
                    &format!(
                        "ours, 2 processes in netns{}, {name}",
                        if pinned { " (pinned)" } else { "" }
                    ),
                    with_machine_load(|| ours_bulk_netns(ns, threads, pinned)),
                );
            }
        }
        THREADS.store(0, Ordering::Relaxed);
        if let (Ok(ns), Some(w)) = (&netns, &wg_go) {
            push_tput(
                (&mut b.wg_go, &mut b.wg_go_eff),
                "wireguard-go + iperf3 in netns",
                with_machine_load(|| w.iperf(ns)),
            );
        }
    }
    if let Some(w) = &wg_go {
        b.wg_go_rss_kib = rss_kib(w.pid_b);
    }
    b
}

fn push(into: &mut Vec<f64>, what: &str, r: Result<f64>) {
    match r {
        Ok(mbps) => {
            println!("  {what}: {mbps:.0} Mbit/s");
            into.push(mbps);
        }
        Err(e) => println!("  {what}: FAILED: {e:#}"),
    }
}

/// Jiffies of the whole machine from `/proc/stat`'s `cpu` line: (busy, softirq, total).
fn machine_jiffies() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, *v.get(6)?, total))
}

/// Runs `f` and prints how busy the whole machine was meanwhile (every process and the
/// kernel's softirq work; all cores = 100 %): the headroom a parallel data path could use.
fn with_machine_load<T>(f: impl FnOnce() -> T) -> T {
    let a = machine_jiffies();
    let out = f();
    if let (Some(a), Some(b)) = (a, machine_jiffies()) {
        let total = (b.2 - a.2).max(1) as f64;
        println!(
            "    machine: {:.0} % busy, of which softirq {:.0} points (all cores = 100 %)",
            (b.0 - a.0) as f64 * 100.0 / total,
            (b.1 - a.1) as f64 * 100.0 / total
        );
    }
    out
}

fn push_tput(into: (&mut Vec<f64>, &mut Vec<f64>), what: &str, r: Result<Tput>) {
    match r {
        Ok(t) => {
            println!(
                "  {what}: {:.0} Mbit/s, {:.2} CPU-s in {:.2} s: {:.0} Mbit per CPU-second",
                t.mbps,
                t.cpu,
                t.secs,
                t.per_cpu()
            );
            into.0.push(t.mbps);
            into.1.push(t.per_cpu());
        }
        Err(e) => println!("  {what}: FAILED: {e:#}"),
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn limited<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(SECTION_LIMIT, f)
        .await
        .map_err(|_| anyhow!("timed out after {SECTION_LIMIT:?}"))?
}

fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "overlay bench: {cores} cores, {cpu}; MTU {MTU}; load average {}",
        load_average()
    );
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<42} | {:>10} | {:<19} | {:>10} | {:>6} | {:>6} | {:<6} |",
        "measurement", "ours", "baseline", "value", "unit", "ratio", "goal"
    );
    println!(
        "|{:-<44}|{:->12}|{:-<21}|{:->12}|{:->8}|{:->8}|{:-<8}|",
        "", "", "", "", "", "", ""
    );
    let fmt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
    for r in rows {
        let ratio = match (r.ours, r.baseline) {
            (Some(o), Some(b)) if b > 0.0 => format!("{:.2}", o / b),
            _ => "n/a".into(),
        };
        println!(
            "| {:<42} | {:>10} | {:<19} | {:>10} | {:>6} | {:>6} | {:<6} |",
            r.name,
            fmt(r.ours),
            r.baseline_name,
            fmt(r.baseline),
            r.unit,
            ratio,
            r.goal
        );
    }
    println!("(ratio = ours / baseline; for RTT and RSS lower is better)");
}

// ---------------------------------------------------------------------------------------------
// Bulk transfer helpers (any stream type).

/// Writes for `secs`, then half-closes and waits for the peer's EOF (so every byte was taken).
async fn source<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, secs: u64) -> Result<u64> {
    let buf = vec![0x5au8; CHUNK];
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        s.write_all(&buf).await.context("bulk write")?;
        sent += buf.len() as u64;
    }
    s.shutdown().await.context("bulk shutdown")?;
    let mut rest = [0u8; 16];
    while s.read(&mut rest).await.context("bulk drain")? > 0 {}
    Ok(sent)
}

/// Reads to EOF; returns bytes and the time from the first byte to EOF. Closes its side after.
async fn sink<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<(u64, Duration)> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    let mut first: Option<Instant> = None;
    loop {
        let n = s.read(&mut buf).await.context("sink read")?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        got += n as u64;
    }
    let elapsed = first.map_or(Duration::ZERO, |t| t.elapsed());
    s.shutdown().await.ok();
    Ok((got, elapsed))
}

/// User + system CPU time of this process so far, in seconds. Under load from other work on
/// the machine, throughput per CPU-second is steadier than throughput.
fn cpu_secs() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9) / 1e6
}

async fn loopback_bulk() -> Result<f64> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let recv = tokio::spawn(async move {
        let (s, _) = l.accept().await?;
        sink(s).await
    });
    let s = tokio::net::TcpStream::connect(addr).await?;
    source(s, BULK_SECS.min(3)).await?;
    let (bytes, elapsed) = recv.await??;
    Ok(mbps(bytes, elapsed))
}

// ---------------------------------------------------------------------------------------------
// Our nodes.

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn peer(public: PublicKey, allowed: &str, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        name: None,
        public_key: public,
        preshared_key: None,
        allowed_ips: vec![allowed.parse().expect("literal network")],
        endpoint,
        persistent_keepalive: None,
    }
}

async fn start_node(
    secret: StaticSecret,
    addr: &str,
    port: u16,
    peers: Vec<PeerConfig>,
) -> Result<Node> {
    Ok(Node::start(NodeConfig {
        threads: THREADS.load(Ordering::Relaxed),
        private_key: secret,
        addresses: vec![ip(addr)],
        listen_port: port,
        mtu: MTU,
        tcp_buffer: wgagent::netstack::DEFAULT_TCP_BUFFER,
        connect_timeout: std::time::Duration::from_secs(10), // the configuration default
        limits: Default::default(),
        peers,
    })
    .await?)
}

/// Agent and control nodes in this process, over loopback UDP.
async fn node_pair() -> Result<(Node, Node)> {
    let (ak, ck) = (keys::generate(), keys::generate());
    let agent = start_node(
        ak.clone(),
        AGENT_IP,
        0,
        vec![peer(keys::public_key(&ck), "100.64.0.1/32", None)],
    )
    .await?;
    let endpoint = SocketAddr::new(ip("127.0.0.1"), agent.udp_addr().port());
    let control = start_node(
        ck,
        CONTROL_IP,
        0,
        vec![peer(
            keys::public_key(&ak),
            "100.64.0.10/32",
            Some(endpoint),
        )],
    )
    .await?;
    Ok((agent, control))
}

/// What went wrong on the way, if anything: the counters that explain a low figure.
fn stats_line(who: &str, before: &NodeStats, after: &NodeStats) -> String {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let wg_drops: u64 = after
        .wg
        .peers
        .iter()
        .map(|p| {
            p.drop_decrypt
                + p.drop_replay
                + p.drop_allowed_ips
                + p.drop_malformed
                + p.drop_no_endpoint
                + p.drop_rate_limited
        })
        .sum::<u64>()
        - before
            .wg
            .peers
            .iter()
            .map(|p| {
                p.drop_decrypt
                    + p.drop_replay
                    + p.drop_allowed_ips
                    + p.drop_malformed
                    + p.drop_no_endpoint
                    + p.drop_rate_limited
            })
            .sum::<u64>();
    let (a, b) = (&after.netstack, &before.netstack);
    format!(
        "{who}: udp in {} out {} send_errors {} inbound_dropped {} | netstack in {} out {} \
         inbound_full {} outbound_full {} | wg peer drops {} | hand-offs {} netstack-task polls {} \
         zero-delay back-offs {}",
        d(after.datagrams_in, before.datagrams_in),
        d(after.datagrams_out, before.datagrams_out),
        d(after.send_errors, before.send_errors),
        d(after.inbound_dropped, before.inbound_dropped),
        d(a.packets_in, b.packets_in),
        d(a.packets_out, b.packets_out),
        d(a.inbound_full, b.inbound_full),
        d(a.outbound_full, b.outbound_full),
        wg_drops,
        d(after.handoffs, before.handoffs),
        d(after.netstack_polls, before.netstack_polls),
        d(after.zero_delay_backoffs, before.zero_delay_backoffs),
    )
}

/// Data segments the sender emitted per MSS of payload: 1.0 means no retransmissions (the few
/// pure ACKs and handshake packets the sender also emits push it slightly above).
fn segments_per_mss(bytes: u64, sender_packets_out: u64) -> f64 {
    let mss = (MTU - 40) as f64;
    sender_packets_out as f64 / (bytes as f64 / mss).max(1.0)
}

async fn ours_bulk() -> Result<Tput> {
    let (agent, control) = node_pair().await?;
    let mut listeners = agent.listen(SINK_PORT)?;
    let mut l = listeners.pop().context("no listener")?;
    let recv = tokio::spawn(async move {
        let (s, _) = l.accept().await?;
        sink(s).await
    });
    let s = control
        .connect(SocketAddr::new(ip(AGENT_IP), SINK_PORT))
        .await?;
    let (a0, c0) = (agent.stats(), control.stats());
    let cpu0 = cpu_secs();
    source(s, BULK_SECS).await?;
    let (bytes, elapsed) = recv.await??;
    let cpu = cpu_secs() - cpu0;
    let (a1, c1) = (agent.stats(), control.stats());
    println!("    {}", stats_line("agent  ", &a0, &a1));
    println!("    {}", stats_line("control", &c0, &c1));
    let rate = mbps(bytes, elapsed);
    println!(
        "    control segments per MSS of payload: {:.3}; process CPU {cpu:.2} s in {:.2} s \
         ({:.0} Mbit per CPU-second, both nodes and both ends)",
        segments_per_mss(bytes, c1.netstack.packets_out - c0.netstack.packets_out),
        elapsed.as_secs_f64(),
        bytes as f64 * 8.0 / 1e6 / cpu.max(1e-9),
    );
    Ok(Tput {
        mbps: rate,
        secs: elapsed.as_secs_f64(),
        cpu,
    })
}

/// Streams of the aggregate figures.
const AGGREGATE_STREAMS: usize = 8;

/// `AGGREGATE_STREAMS` concurrent bulk streams in this process, for `BULK_SECS`: from that many
/// control nodes into one agent node (`fan_in`), or from one control node to that many agents.
/// The rate is the sum over the streams (each counted by its receiver, first byte to EOF).
async fn aggregate_bulk(fan_in: bool) -> Result<Tput> {
    let n = AGGREGATE_STREAMS;
    let hub_key = keys::generate();
    let keys: Vec<StaticSecret> = (0..n).map(|_| keys::generate()).collect();
    // The hub is 100.64.1.1; spoke i is 100.64.1.(10 + i). Spokes know the hub's endpoint.
    let spoke_ip = |i: usize| format!("100.64.1.{}", 10 + i);
    let hub_peers = (0..n)
        .map(|i| {
            peer(
                keys::public_key(&keys[i]),
                &format!("{}/32", spoke_ip(i)),
                None,
            )
        })
        .collect();
    let hub = start_node(hub_key.clone(), "100.64.1.1", 0, hub_peers).await?;
    let hub_ep = SocketAddr::new(ip("127.0.0.1"), hub.udp_addr().port());
    let mut spokes = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let mut p = peer(keys::public_key(&hub_key), "100.64.1.1/32", Some(hub_ep));
        // The hub has no endpoints (agents dial in): a keepalive peer handshakes on the first
        // timer tick, which is how the hub learns where each spoke is.
        p.persistent_keepalive = Some(25);
        spokes.push(start_node(k.clone(), &spoke_ip(i), 0, vec![p]).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.peers().iter().any(|p| p.endpoint.is_none()) {
        if Instant::now() > deadline {
            bail!("spokes did not handshake with the hub within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Receivers: the hub listens once (fan-in), or every spoke listens (fan-out).
    let mut receivers = Vec::new();
    let mut listeners = if fan_in {
        vec![hub.listen(SINK_PORT)?.pop().context("no listener")?]
    } else {
        let mut v = Vec::new();
        for s in &spokes {
            v.push(s.listen(SINK_PORT)?.pop().context("no listener")?);
        }
        v
    };
    if fan_in {
        let mut l = listeners.pop().context("no listener")?;
        receivers.push(tokio::spawn(async move {
            let mut sinks = Vec::new();
            for _ in 0..n {
                let (s, _) = l.accept().await?;
                sinks.push(tokio::spawn(sink(s)));
            }
            let mut out = Vec::new();
            for h in sinks {
                out.push(h.await??);
            }
            anyhow::Ok(out)
        }));
    } else {
        for mut l in listeners {
            receivers.push(tokio::spawn(async move {
                let (s, _) = l.accept().await?;
                Ok(vec![sink(s).await?])
            }));
        }
    }
    let cpu0 = cpu_secs();
    let mut sources = Vec::new();
    for (i, s) in spokes.iter().enumerate() {
        let stream = if fan_in {
            s.connect(SocketAddr::new(ip("100.64.1.1"), SINK_PORT))
                .await?
        } else {
            hub.connect(SocketAddr::new(ip(&spoke_ip(i)), SINK_PORT))
                .await?
        };
        sources.push(tokio::spawn(source(stream, BULK_SECS)));
    }
    for h in sources {
        h.await??;
    }
    let mut bytes = 0u64;
    let mut longest = Duration::ZERO;
    for h in receivers {
        for (b, e) in h.await?? {
            bytes += b;
            longest = longest.max(e);
        }
    }
    let cpu = cpu_secs() - cpu0;
    let hub_stats = hub.stats();
    println!(
        "    hub: udp in {} out {} gso sends {} gro receives {} send_errors {} inbound_dropped {}",
        hub_stats.datagrams_in,
        hub_stats.datagrams_out,
        hub_stats.gso_sends,
        hub_stats.gro_receives,
        hub_stats.send_errors,
        hub_stats.inbound_dropped
    );
    Ok(Tput {
        mbps: mbps(bytes, longest),
        secs: longest.as_secs_f64(),
        cpu,
    })
}

// ---------------------------------------------------------------------------------------------
// Network namespaces (root only): two namespaces, a veth pair, addresses only inside them.

struct Netns {
    a: String,
    b: String,
    /// Underlay (veth) addresses.
    a_ip: &'static str,
    b_ip: &'static str,
    dir: tempfile::TempDir,
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

impl Netns {
    fn create() -> Result<Netns> {
        if !nix::unistd::geteuid().is_root() {
            bail!("not root");
        }
        for tool in ["ip", "wireguard-go", "wg", "iperf3"] {
            if !which(tool) {
                bail!("{tool} not installed");
            }
        }
        let id = std::process::id();
        let ns = Netns {
            a: format!("obench-a-{id}"),
            b: format!("obench-b-{id}"),
            a_ip: "10.231.0.1",
            b_ip: "10.231.0.2",
            dir: tempfile::tempdir()?,
        };
        run("ip", &["netns", "add", &ns.a])?;
        run("ip", &["netns", "add", &ns.b])?;
        let (va, vb) = (
            format!("obva{}", id % 100_000),
            format!("obvb{}", id % 100_000),
        );
        run(
            "ip",
            &[
                "link", "add", &va, "netns", &ns.a, "type", "veth", "peer", "name", &vb, "netns",
                &ns.b,
            ],
        )?;
        for (n, dev, addr) in [(&ns.a, &va, ns.a_ip), (&ns.b, &vb, ns.b_ip)] {
            run("ip", &["-n", n, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &["-n", n, "addr", "add", &format!("{addr}/24"), "dev", dev],
            )?;
            run("ip", &["-n", n, "link", "set", dev, "up"])?;
        }
        Ok(ns)
    }

    /// `ip netns exec <ns> <program> args…`
    fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth end (and so the pair) and its TUN devices.
        let _ = run("ip", &["netns", "del", &self.a]);
        let _ = run("ip", &["netns", "del", &self.b]);
    }
}

/// Kills and reaps a child on drop (the bench never leaves processes behind).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reads lines from a child's pipe until one starts with `prefix` (or `limit` passes).
fn wait_line(r: &mut impl BufRead, prefix: &str, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("child closed its output before {prefix:?}");
        }
        if line.contains(prefix) {
            return Ok(line.trim().to_owned());
        }
    }
    bail!("no {prefix:?} within {limit:?}")
}

/// Our nodes as two processes (this binary re-executed), one per namespace, like wireguard-go,
/// with `threads` (0: the default); `pinned`: the sink on CPU 0, the source on CPU 1.
fn ours_bulk_netns(ns: &Netns, threads: usize, pinned: bool) -> Result<Tput> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("non-UTF-8 executable path")?;
    let (sk, ck) = (keys::generate(), keys::generate());
    let port = "51830";
    let common = |c: &mut Command, me: &StaticSecret, other: &StaticSecret| {
        c.env("OB_KEY", keys::encode_private(me))
            .env("OB_PEER", keys::encode_public(&keys::public_key(other)))
            .env("OB_PORT", port)
            .env("OB_SECS", BULK_SECS.to_string())
            // Pinned, the default would be 1 (one CPU allowed): ask for the pipeline itself.
            .env(
                "OB_THREADS",
                if pinned && threads == 0 { 2 } else { threads }.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
    };
    let mut c = ns.command(&ns.b, exe);
    c.env(CHILD_ENV, "sink")
        .env("OB_ADDR", AGENT_IP)
        .env("OB_PEER_ADDR", CONTROL_IP);
    if pinned {
        c.env("OB_CPU", "0");
    }
    common(&mut c, &sk, &ck);
    let mut sink_child = Reaped(c.spawn().context("spawning the sink node")?);
    let mut sink_out = BufReader::new(sink_child.0.stdout.take().context("sink stdout")?);
    wait_line(&mut sink_out, "ready", Duration::from_secs(10))?;

    let mut c = ns.command(&ns.a, exe);
    c.env(CHILD_ENV, "source")
        .env("OB_ADDR", CONTROL_IP)
        .env("OB_PEER_ADDR", AGENT_IP)
        .env("OB_ENDPOINT", format!("{}:{port}", ns.b_ip));
    if pinned {
        c.env("OB_CPU", "1");
    }
    common(&mut c, &ck, &sk);
    let drops0 = udp_rcvbuf_errors(ns, &ns.b);
    let mut source_child = Reaped(c.spawn().context("spawning the source node")?);
    let mut source_out = BufReader::new(source_child.0.stdout.take().context("source stdout")?);
    let sent = wait_line(&mut source_out, "sent", Duration::from_secs(BULK_SECS + 30))?;
    let result = wait_line(&mut sink_out, "result", Duration::from_secs(10))?;
    println!("    {sent}");
    println!("    {result}");
    let drops1 = udp_rcvbuf_errors(ns, &ns.b);
    println!(
        "    receiver-side UDP RcvbufErrors {}",
        delta(drops0, drops1)
    );
    // "result <bytes> <micros> ..."
    let mut it = result.split_whitespace().skip(1);
    let bytes: u64 = it.next().context("bytes")?.parse()?;
    let micros: u64 = it.next().context("micros")?.parse()?;
    let elapsed = Duration::from_micros(micros);
    Ok(Tput {
        mbps: mbps(bytes, elapsed),
        secs: elapsed.as_secs_f64(),
        cpu: reported_cpu(&sent)? + reported_cpu(&result)?,
    })
}

/// The `cpu <secs> s` a child reports: its own user + system time (`getrusage`, the same
/// figure as `/proc/self/stat`), the whole process life, measured just before it ends.
fn reported_cpu(line: &str) -> Result<f64> {
    let rest = line
        .split("cpu ")
        .nth(1)
        .with_context(|| format!("no cpu figure in {line:?}"))?;
    let secs = rest.split_whitespace().next().context("cpu value")?;
    Ok(secs.parse()?)
}

/// User + system CPU time of a live process from `/proc/<pid>/stat` (fields 14 and 15, in
/// clock ticks).
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3, so fields 14 and 15 are at 11 and 12.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / hz.max(1) as f64)
}

/// User + system CPU time of this process's reaped children (`RUSAGE_CHILDREN`), in seconds.
fn children_cpu_secs() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// Child role `sink` or `source`: one Node, one bulk connection, results on stdout.
fn child_bulk(role: &str) -> Result<()> {
    let env = |k: &str| std::env::var(k).with_context(|| format!("{k} not set"));
    let me = keys::decode_private(&env("OB_KEY")?)?;
    let other = keys::decode_public(&env("OB_PEER")?)?;
    let addr = env("OB_ADDR")?;
    let peer_addr = env("OB_PEER_ADDR")?;
    let port: u16 = env("OB_PORT")?.parse()?;
    let secs: u64 = env("OB_SECS")?.parse()?;
    let endpoint: Option<SocketAddr> = match std::env::var("OB_ENDPOINT") {
        Ok(e) => Some(e.parse()?),
        Err(_) => None,
    };
    THREADS.store(env("OB_THREADS")?.parse()?, Ordering::Relaxed);
    if let Ok(cpu) = std::env::var("OB_CPU") {
        pin_to_cpu(cpu.parse()?)?;
    }
    // The agent's runtime: multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(limited(async move {
        let listen = if role == "sink" { port } else { 0 };
        let node = start_node(
            me,
            &addr,
            listen,
            vec![peer(other, &format!("{peer_addr}/32"), endpoint)],
        )
        .await?;
        let s0 = node.stats();
        if role == "sink" {
            let mut l = node.listen(SINK_PORT)?.pop().context("no listener")?;
            println!("ready");
            let (s, _) = l.accept().await?;
            let (bytes, elapsed) = sink(s).await?;
            println!(
                "result {bytes} {} | cpu {:.2} s | {}",
                elapsed.as_micros(),
                cpu_secs(),
                stats_line("sink", &s0, &node.stats())
            );
            // Let the FIN go out before the process (and the node) ends.
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            let s = node
                .connect(SocketAddr::new(ip(&peer_addr), SINK_PORT))
                .await?;
            let c0 = node.stats();
            let sent = source(s, secs).await?;
            let c1 = node.stats();
            println!(
                "sent {sent} segments/MSS {:.3} | cpu {:.2} s | {}",
                segments_per_mss(sent, c1.netstack.packets_out - c0.netstack.packets_out),
                cpu_secs(),
                stats_line("source", &s0, &c1)
            );
        }
        Ok(())
    }))
}

/// Pins this process (the threads it starts later inherit it) to one CPU.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only
    // touch the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `Udp: RcvbufErrors` of a namespace: datagrams the kernel dropped on a full receive buffer.
fn udp_rcvbuf_errors(ns: &Netns, which: &str) -> Option<u64> {
    let out = ns
        .command(which, "cat")
        .arg("/proc/net/snmp")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// A wireguard-go pair, one per namespace, configured with `wg` (the baseline).
struct WgGo {
    _procs: Vec<Reaped>,
    pid_a: u32,
    pid_b: u32,
}

/// Tunnel addresses of the wireguard-go pair (a, b).
const WG_GO_TUN: (&str, &str) = ("10.232.0.1", "10.232.0.2");

impl WgGo {
    fn start(ns: &Netns) -> Result<WgGo> {
        let id = std::process::id() % 100_000;
        let (ka, kb) = (keys::generate(), keys::generate());
        let mut procs = Vec::new();
        let sides = [
            (
                &ns.a,
                format!("obwa{id}"),
                &ka,
                &kb,
                WG_GO_TUN.0,
                ns.b_ip,
                WG_GO_TUN.1,
            ),
            (
                &ns.b,
                format!("obwb{id}"),
                &kb,
                &ka,
                WG_GO_TUN.1,
                ns.a_ip,
                WG_GO_TUN.0,
            ),
        ];
        for (n, ifname, me, other, tun_ip, peer_underlay, peer_tun) in &sides {
            let child = ns
                .command(n, "wireguard-go")
                .args(["-f", ifname])
                .env("LOG_LEVEL", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("spawning wireguard-go")?;
            procs.push(Reaped(child));
            let deadline = Instant::now() + Duration::from_secs(5);
            while run("ip", &["-n", n, "link", "show", ifname]).is_err() {
                if Instant::now() > deadline {
                    bail!("wireguard-go did not create {ifname}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let key_path = ns.dir.path().join(format!("{ifname}.key"));
            std::fs::write(&key_path, keys::encode_private(me))?;
            let key_path = key_path.to_str().context("temp path")?.to_owned();
            let peer_pub = keys::encode_public(&keys::public_key(other));
            let endpoint = format!("{peer_underlay}:51820");
            let allowed = format!("{peer_tun}/32");
            let out = ns
                .command(n, "wg")
                .args([
                    "set",
                    ifname,
                    "private-key",
                    &key_path,
                    "listen-port",
                    "51820",
                ])
                .args([
                    "peer",
                    &peer_pub,
                    "allowed-ips",
                    &allowed,
                    "endpoint",
                    &endpoint,
                ])
                .output()?;
            if !out.status.success() {
                bail!("wg set: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let tun = format!("{tun_ip}/24");
            run("ip", &["-n", n, "addr", "add", &tun, "dev", ifname])?;
            let mtu = MTU.to_string();
            run("ip", &["-n", n, "link", "set", ifname, "mtu", &mtu, "up"])?;
        }
        // `ip netns exec` execs the program, so these are wireguard-go's own pids.
        let (pid_a, pid_b) = (procs[0].0.id(), procs[1].0.id());
        Ok(WgGo {
            _procs: procs,
            pid_a,
            pid_b,
        })
    }

    /// CPU time of both wireguard-go processes so far.
    fn cpu_secs(&self) -> Result<f64> {
        let cpu = |pid| proc_cpu_secs(pid).with_context(|| format!("/proc/{pid}/stat"));
        Ok(cpu(self.pid_a)? + cpu(self.pid_b)?)
    }

    /// One iperf3 run a → b over the tunnel; Mbit/s as the receiver counted it, and the CPU
    /// of both wireguard-go processes and both iperf3 processes during it.
    fn iperf(&self, ns: &Netns) -> Result<Tput> {
        let (wg0, iperf0) = (self.cpu_secs()?, children_cpu_secs());
        let server = Reaped(
            ns.command(&ns.b, "iperf3")
                .args(["-s", "-1", "-B", WG_GO_TUN.1])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("spawning iperf3 -s")?,
        );
        let drops0 = udp_rcvbuf_errors(ns, &ns.b);
        let secs = BULK_SECS.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        let json = loop {
            let out = ns
                .command(&ns.a, "iperf3")
                .args(["-c", WG_GO_TUN.1, "-t", &secs, "-l", "128K", "-J"])
                .stdin(Stdio::null())
                .output()?;
            if out.status.success() {
                break out.stdout;
            }
            // The server may not be listening yet (or the first handshake is still going).
            if Instant::now() > deadline {
                let why: String = String::from_utf8_lossy(&out.stdout)
                    .chars()
                    .take(300)
                    .collect();
                bail!("iperf3 -c failed: {why}");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        drop(server);
        // Both iperf3 processes have been reaped now (the client by `output`, the server by
        // the drop), so their CPU is in RUSAGE_CHILDREN; a failed first attempt adds a little.
        let (wg1, iperf1) = (self.cpu_secs()?, children_cpu_secs());
        let drops1 = udp_rcvbuf_errors(ns, &ns.b);
        let v: serde_json::Value = serde_json::from_slice(&json)?;
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3 JSON without end.sum_received")?;
        println!(
            "    iperf3 TCP retransmits {}, receiver-side UDP RcvbufErrors {}",
            v["end"]["sum_sent"]["retransmits"],
            delta(drops0, drops1)
        );
        let secs = v["end"]["sum_received"]["seconds"]
            .as_f64()
            .context("iperf3 JSON without end.sum_received.seconds")?;
        println!(
            "    CPU: wireguard-go {:.2} s, iperf3 {:.2} s",
            wg1 - wg0,
            iperf1 - iperf0
        );
        Ok(Tput {
            mbps: bps / 1e6,
            secs,
            cpu: (wg1 - wg0) + (iperf1 - iperf0),
        })
    }
}

fn delta(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a).to_string(),
        _ => "?".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// API rate and latency.

/// A keep-alive HTTP/1 client connection over any stream.
struct Http {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Http {
    async fn over<S>(stream: S) -> Result<Http>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Http { send })
    }

    /// GET `path`, whole body read; errors on a non-200 status.
    async fn get(&mut self, path: &str) -> Result<usize> {
        let req = hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", "agent")
            .body(Empty::new())?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != 200 {
            bail!("{path}: status {status}");
        }
        Ok(body.len())
    }
}

struct ApiFigures {
    tunnel_rps: f64,
    loopback_rps: f64,
    /// (p50, p99) in µs.
    tunnel: (f64, f64),
    loopback: (f64, f64),
}

/// Every connection a task issuing GET `path` back to back for `dur`; returns the connections
/// (for the next round), the requests done and the time taken.
async fn request_round(
    conns: Vec<Http>,
    path: &'static str,
    dur: Duration,
) -> Result<(Vec<Http>, u64, Duration)> {
    let start = Instant::now();
    let end = start + dur;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    c.get(path).await?;
                    n += 1;
                }
                anyhow::Ok((c, n))
            })
        })
        .collect();
    let mut back = Vec::new();
    let mut total = 0;
    for t in tasks {
        let (c, n) = t.await??;
        back.push(c);
        total += n;
    }
    Ok((back, total, start.elapsed()))
}

/// (p50, p99) in µs.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (pct(0.50), pct(0.99))
}

async fn api_benches() -> Result<ApiFigures> {
    let (agent, control) = node_pair().await?;
    // The API on the tunnel exactly as the agent serves it.
    let api_cfg = config::Api {
        port: API_PORT,
        ..config::Api::default()
    };
    let server = Agent::attach(agent.clone(), &api_cfg)?;
    let manager = server.manager().clone();
    // A list with a few entries, so the response is not trivially empty.
    for i in 0..8 {
        let id = manager.start(StartSpec {
            command: format!("echo process-{i}"),
            ..Default::default()
        })?;
        manager.wait(&id, Duration::from_secs(10)).await?;
    }
    // The baseline: the same router (same manager) on a host TCP socket.
    let app = api::router(AppState::new(manager));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tcp_addr = tcp.local_addr()?;
    // The same serving layer as the tunnel, so the baseline differs only in the transport.
    tokio::spawn(api::serve::serve(
        tcp,
        app.clone(),
        api::serve::ServeConfig::default(),
        tokio_util::sync::CancellationToken::new(),
    ));
    // The serving layer's own cost: the same router on loopback TCP through plain axum::serve
    // (no timeouts, no lingering close, no parse-error rewrite).
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plain_addr = plain.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(
            plain,
            app.into_make_service_with_connect_info::<api::CallerAddr>(),
        )
        .await;
    });
    let open_plain = || async move {
        let s = tokio::net::TcpStream::connect(plain_addr).await?;
        s.set_nodelay(true)?;
        Http::over(s).await
    };
    let api_addr = SocketAddr::new(ip(AGENT_IP), API_PORT);
    let open_tunnel = || async { Http::over(control.connect(api_addr).await?).await };
    let open_tcp = || async move {
        let s = tokio::net::TcpStream::connect(tcp_addr).await?;
        s.set_nodelay(true)?;
        Http::over(s).await
    };

    // Request rate: rounds alternate loopback and tunnel, connections stay open throughout.
    let list = "/api/v0/processes/list";
    let (mut tcp_conns, mut tun_conns, mut plain_conns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RATE_CONNS {
        tcp_conns.push(open_tcp().await?);
        tun_conns.push(open_tunnel().await?);
        plain_conns.push(open_plain().await?);
    }
    let body = tcp_conns[0].get(list).await?;
    println!("API: list response body {body} bytes, {RATE_CONNS} connections each");
    let (a0, c0) = (agent.stats(), control.stats());
    let round = Duration::from_secs(RATE_SECS) / RATE_ROUNDS;
    let (mut tcp_n, mut tcp_t, mut tun_n, mut tun_t) = (0, Duration::ZERO, 0, Duration::ZERO);
    let (mut plain_n, mut plain_t) = (0, Duration::ZERO);
    for _ in 0..RATE_ROUNDS {
        let (c, n, t) = request_round(tcp_conns, list, round).await?;
        (tcp_conns, tcp_n, tcp_t) = (c, tcp_n + n, tcp_t + t);
        let (c, n, t) = request_round(tun_conns, list, round).await?;
        (tun_conns, tun_n, tun_t) = (c, tun_n + n, tun_t + t);
        let (c, n, t) = request_round(plain_conns, list, round).await?;
        (plain_conns, plain_n, plain_t) = (c, plain_n + n, plain_t + t);
    }
    let (a1, c1) = (agent.stats(), control.stats());
    let loopback_rps = tcp_n as f64 / tcp_t.as_secs_f64();
    let tunnel_rps = tun_n as f64 / tun_t.as_secs_f64();
    println!("  loopback TCP: {loopback_rps:.0} req/s");
    let plain_rps = plain_n as f64 / plain_t.as_secs_f64();
    println!(
        "  loopback TCP through plain axum::serve: {plain_rps:.0} req/s (api::serve / axum::serve = {:.2})",
        loopback_rps / plain_rps
    );
    println!("  tunnel:       {tunnel_rps:.0} req/s");
    println!("    {}", stats_line("agent  ", &a0, &a1));
    println!("    {}", stats_line("control", &c0, &c1));
    drop((tcp_conns, tun_conns, plain_conns));

    // Latency: one warm connection each, samples interleaved.
    let health = "/api/v0/health";
    let (mut t, mut u) = (open_tcp().await?, open_tunnel().await?);
    for _ in 0..LATENCY_WARMUP {
        t.get(health).await?;
        u.get(health).await?;
    }
    let (mut ts, mut us) = (Vec::new(), Vec::new());
    let (a0, c0) = (agent.stats(), control.stats());
    for _ in 0..LATENCY_SAMPLES {
        let start = Instant::now();
        t.get(health).await?;
        ts.push(start.elapsed().as_secs_f64() * 1e6);
        let start = Instant::now();
        u.get(health).await?;
        us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let (a1, c1) = (agent.stats(), control.stats());
    let per_req = |a: u64, b: u64| a.saturating_sub(b) as f64 / LATENCY_SAMPLES as f64;
    println!(
        "  tunnel datagrams per sequential request: control -> agent {:.2}, agent -> control {:.2}",
        per_req(c1.datagrams_out, c0.datagrams_out),
        per_req(a1.datagrams_out, a0.datagrams_out)
    );
    let (loopback, tunnel) = (percentiles(ts), percentiles(us));
    println!(
        "API: GET health round trip, {LATENCY_SAMPLES} samples, p50/p99: loopback TCP {:.0}/{:.0} \
         us, tunnel {:.0}/{:.0} us",
        loopback.0, loopback.1, tunnel.0, tunnel.1
    );
    Ok(ApiFigures {
        tunnel_rps,
        loopback_rps,
        tunnel,
        loopback,
    })
}

/// Rounds of the metrics-cost comparison (each: one round without, one with scraping).
const METRICS_ROUNDS: u32 = 4;
const METRICS_ROUND: Duration = Duration::from_secs(3);

/// (req/s without scraping, req/s with a scrape of `/metrics` through the tunnel every second).
async fn metrics_cost() -> Result<(f64, f64)> {
    let (agent, control) = node_pair().await?;
    let api_cfg = config::Api {
        port: API_PORT,
        ..config::Api::default()
    };
    let server = Agent::attach(agent.clone(), &api_cfg)?;
    let manager = server.manager().clone();
    for i in 0..8 {
        let id = manager.start(StartSpec {
            command: format!("echo process-{i}"),
            ..Default::default()
        })?;
        manager.wait(&id, Duration::from_secs(10)).await?;
    }
    let api_addr = SocketAddr::new(ip(AGENT_IP), API_PORT);
    let mut conns = Vec::new();
    for _ in 0..RATE_CONNS {
        conns.push(Http::over(control.connect(api_addr).await?).await?);
    }
    let mut scraper = Http::over(control.connect(api_addr).await?).await?;
    let list = "/api/v0/processes/list";
    let (mut quiet_n, mut quiet_t, mut busy_n, mut busy_t) = (0, Duration::ZERO, 0, Duration::ZERO);
    let mut scrapes = 0u32;
    let mut scrape_bytes = 0;
    for _ in 0..METRICS_ROUNDS {
        let (c, n, t) = request_round(conns, list, METRICS_ROUND).await?;
        (conns, quiet_n, quiet_t) = (c, quiet_n + n, quiet_t + t);
        let end = Instant::now() + METRICS_ROUND;
        let scraping = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            let (mut k, mut bytes) = (0u32, 0usize);
            loop {
                every.tick().await;
                if Instant::now() >= end {
                    break;
                }
                bytes = scraper.get("/metrics").await?;
                k += 1;
            }
            anyhow::Ok((scraper, k, bytes))
        });
        let (c, n, t) = request_round(conns, list, METRICS_ROUND).await?;
        (conns, busy_n, busy_t) = (c, busy_n + n, busy_t + t);
        let (s, k, bytes) = scraping.await??;
        (scraper, scrapes, scrape_bytes) = (s, scrapes + k, bytes);
    }
    let quiet = quiet_n as f64 / quiet_t.as_secs_f64();
    let busy = busy_n as f64 / busy_t.as_secs_f64();
    println!(
        "metrics: {scrapes} scrapes of {scrape_bytes} bytes; API rate without {quiet:.0} req/s, \
         with {busy:.0} req/s"
    );
    drop(server);
    Ok((quiet, busy))
}

// ---------------------------------------------------------------------------------------------
// Agent RSS: the real agent code path in a child process.

struct RssFigures {
    idle_kib: u64,
    conns_kib: u64,
    /// With as many connections again after all of the first ones closed.
    churn_kib: u64,
}

fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn write_agent_config(
    dir: &Path,
    agent: &StaticSecret,
    control: &PublicKey,
    port: u16,
) -> Result<std::path::PathBuf> {
    let path = dir.join("agent.toml");
    // One control node opens the 100 connections of the RSS figures: above the default
    // per-peer cap (64), so the cap is raised for this measurement.
    let text = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"{AGENT_IP}\"]\nlisten_port = {port}\n\
         mtu = {MTU}\nmax_connections_per_peer = 256\nuapi = false\n\n[api]\nport = {API_PORT}\n\n[[peer]]\npublic_key = \"{}\"\n\
         allowed_ips = [\"{CONTROL_IP}/32\"]\n",
        keys::encode_private(agent),
        keys::encode_public(control),
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn agent_rss() -> Result<RssFigures> {
    let dir = tempfile::tempdir()?;
    let (ak, ck) = (keys::generate(), keys::generate());
    let port = free_udp_port()?;
    let config = write_agent_config(dir.path(), &ak, &keys::public_key(&ck), port)?;
    let mut child = Reaped(
        Command::new(std::env::current_exe()?)
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .env(CHILD_ENV, "agent")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning the agent")?,
    );
    let pid = child.0.id();
    let mut err = BufReader::new(child.0.stderr.take().context("agent stderr")?);
    let up = tokio::task::spawn_blocking(move || {
        let r = wait_line(&mut err, "agent up", Duration::from_secs(10));
        // Keep draining so the agent never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        r
    })
    .await?;
    up?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = rss_kib(pid).context("agent RSS")?;

    let control = start_node(
        ck,
        CONTROL_IP,
        0,
        vec![peer(
            keys::public_key(&ak),
            &format!("{AGENT_IP}/32"),
            Some(SocketAddr::new(ip("127.0.0.1"), port)),
        )],
    )
    .await?;
    let api_addr = SocketAddr::new(ip(AGENT_IP), API_PORT);
    let open_all = || async {
        let mut conns = Vec::new();
        for _ in 0..RSS_CONNS {
            let mut c = Http::over(control.connect(api_addr).await?).await?;
            c.get("/api/v0/health").await?;
            c.get("/api/v0/processes/list").await?;
            conns.push(c);
        }
        anyhow::Ok(conns)
    };
    let conns = open_all().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let conns_kib = rss_kib(pid).context("agent RSS")?;
    // Churn: close them all, open as many again. Freed socket buffers are reused by the
    // allocator, which is where growth per connection would show.
    drop(conns);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let closed_kib = rss_kib(pid).context("agent RSS")?;
    let conns = open_all().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let churn_kib = rss_kib(pid).context("agent RSS")?;
    let per = |kib: u64| (kib as f64 - idle_kib as f64) / RSS_CONNS as f64;
    println!(
        "agent RSS: idle {idle_kib} KiB; {RSS_CONNS} keep-alive connections {conns_kib} KiB \
         ({:.1} KiB each); all closed {closed_kib} KiB; {RSS_CONNS} opened again {churn_kib} KiB \
         ({:.1} KiB each)",
        per(conns_kib),
        per(churn_kib),
    );
    drop(conns);
    drop(child); // SIGTERM, reaped
    Ok(RssFigures {
        idle_kib,
        conns_kib,
        churn_kib,
    })
}

// ---------------------------------------------------------------------------------------------
// Agent RSS with metrics on vs off: two agent processes in one run.

/// (VmRSS, VmHWM) in KiB of each agent after the same load.
struct MetricsRss {
    on: (u64, u64),
    off: (u64, u64),
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Two real agents (child processes), identical but for `[metrics] listen` on a loopback port,
/// peers of one control node. Both get the same load, alternating `METRICS_ROUNDS` rounds of
/// `METRICS_ROUND`: 16 keep-alive connections listing processes. During the
/// "on" agent's rounds its host listener and its tunnel `/metrics` are each scraped every
/// second. RSS and peak RSS of both are read at the end.
async fn metrics_rss() -> Result<MetricsRss> {
    let dir = tempfile::tempdir()?;
    let ck = keys::generate();
    let control_public = keys::public_key(&ck);
    let mut agents = Vec::new();
    for (i, (addr, metrics)) in [(AGENT_IP, false), ("100.64.0.12", true)]
        .into_iter()
        .enumerate()
    {
        let ak = keys::generate();
        let port = free_udp_port()?;
        let sub = dir.path().join(format!("agent{i}"));
        std::fs::create_dir_all(&sub)?;
        let listen = if metrics {
            "[metrics]\nlisten = \"127.0.0.1:0\"\n\n"
        } else {
            ""
        };
        let path = sub.join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "[interface]\nprivate_key = \"{}\"\naddress = [\"{addr}\"]\nlisten_port = {port}\n\
                 mtu = {MTU}\nuapi = false\n\n[api]\nport = {API_PORT}\nstate_dir = \"{}\"\n\n{listen}\
                 [[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"{CONTROL_IP}/32\"]\n",
                keys::encode_private(&ak),
                sub.join("state").display(),
                keys::encode_public(&control_public),
            ),
        )?;
        let mut child = Reaped(
            Command::new(std::env::current_exe()?)
                .args(["agent", "--config"])
                .arg(&path)
                .env(CHILD_ENV, "agent")
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("spawning an agent")?,
        );
        let mut err = BufReader::new(child.0.stderr.take().context("agent stderr")?);
        // The host listener's address is logged before "agent up".
        let host = tokio::task::spawn_blocking(move || {
            let mut host = None;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut line = String::new();
            while Instant::now() < deadline {
                line.clear();
                if err.read_line(&mut line)? == 0 {
                    bail!("the agent closed its output before it was up");
                }
                if line.contains("metrics served on the host") {
                    host = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("local="))
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                }
                if line.contains("agent up") {
                    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
                    return Ok(host);
                }
            }
            bail!("the agent was not up within 10 s")
        })
        .await??;
        if metrics && host.is_none() {
            bail!("the metrics agent logged no host listener address");
        }
        agents.push((ak, addr, port, child, host));
    }
    let peers = agents
        .iter()
        .map(|(ak, addr, port, _, _)| {
            peer(
                keys::public_key(ak),
                &format!("{addr}/32"),
                Some(SocketAddr::new(ip("127.0.0.1"), *port)),
            )
        })
        .collect();
    let control = start_node(ck, CONTROL_IP, 0, peers).await?;
    let list = "/api/v0/processes/list";
    let mut conns = Vec::new();
    for (_, addr, _, _, _) in &agents {
        let api = SocketAddr::new(ip(addr), API_PORT);
        let mut set = Vec::new();
        for _ in 0..RATE_CONNS {
            set.push(Http::over(control.connect(api).await?).await?);
        }
        conns.push(set);
    }
    let host = agents[1].4.context("host listener")?;
    let tunnel_api = SocketAddr::new(ip(agents[1].1), API_PORT);
    let mut scraper = Http::over(control.connect(tunnel_api).await?).await?;
    let (mut scrapes, mut n_off, mut n_on) = (0u32, 0u64, 0u64);
    for _ in 0..METRICS_ROUNDS {
        let (c, n, _) = request_round(std::mem::take(&mut conns[0]), list, METRICS_ROUND).await?;
        (conns[0], n_off) = (c, n_off + n);
        let end = Instant::now() + METRICS_ROUND;
        let scraping = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            let mut k = 0u32;
            loop {
                every.tick().await;
                if Instant::now() >= end {
                    break;
                }
                scraper.get("/metrics").await?;
                let got = tokio::task::spawn_blocking(move || host_scrape(host)).await??;
                if got == 0 {
                    bail!("empty host scrape");
                }
                k += 1;
            }
            anyhow::Ok((scraper, k))
        });
        let (c, n, _) = request_round(std::mem::take(&mut conns[1]), list, METRICS_ROUND).await?;
        (conns[1], n_on) = (c, n_on + n);
        let (s, k) = scraping.await??;
        (scraper, scrapes) = (s, scrapes + k);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = |child: &Reaped| -> Result<(u64, u64)> {
        let pid = child.0.id();
        Ok((
            status_kib(pid, "VmRSS:").context("VmRSS")?,
            status_kib(pid, "VmHWM:").context("VmHWM")?,
        ))
    };
    let off = read(&agents[0].3)?;
    let on = read(&agents[1].3)?;
    println!(
        "metrics RSS: off {} KiB (peak {}), {n_off} requests; on {} KiB (peak {}), {n_on} \
         requests, {scrapes} scrapes each of the host listener and the tunnel /metrics",
        off.0, off.1, on.0, on.1
    );
    drop(conns);
    drop(agents); // SIGTERM, reaped
    Ok(MetricsRss { on, off })
}

/// `GET /metrics` on the host listener (HTTP/1.0); the body's length.
fn host_scrape(addr: SocketAddr) -> Result<usize> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("no HTTP answer")?;
    if !head.starts_with("HTTP/1.0 200") {
        bail!("host scrape: {head}");
    }
    Ok(body.len())
}
