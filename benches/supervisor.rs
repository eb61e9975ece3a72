//! Supervisors forked from the agent vs exec'd from the wgagent binary (`SupervisorLaunch`),
//! in one run. This bench process plays the agent: it runs the Managers, and its memory is the
//! agent's.
//!
//! Run: `cargo bench --bench supervisor` (prints tables; asserts nothing about the figures).
//!
//! 1. Memory: `SLEEPERS` × `sleep 600`, then the agent's memory is rewritten, in three patterns:
//!    (a) all started, then a `HEAP_MIB` buffer rewritten once; (b) the buffer rewritten after
//!    each start (supervisors started at different times keep different copies); (c) no
//!    synthetic buffer: after each start the agent runs `CHURN` commands writing 256 KiB each
//!    (its own buffers, records and logs are what changes). Summed over the supervisors:
//!    private memory (`Private_Clean + Private_Dirty` of `smaps_rollup`), PSS, page tables
//!    (`VmPTE`); the helper's (one per manager, exec only); and the machine's `MemAvailable`
//!    drop.
//! 2. Spawn cost against the agent's size (measured first, while the process is small): `start` → `wait` of `true`, one at a time (median,
//!    p99) and `TASKS` concurrent tasks (commands/s), fork and exec taking turns, with the
//!    process at its small size and again after it allocated and touched 16, 48 and
//!    `BALLAST_MIB` MiB (many 64 KiB blocks, like a heap). Baseline: `sh -c true` via `std::process::Command`.
//! 3. Concurrent starts (`cargo bench --bench supervisor -- concurrent` runs only this): the
//!    rate of `start` → `wait` of `true` from 1 task, from `TASKS` tasks whose `start` calls
//!    are serialised by one lock held across the call (what the manager's state lock did before
//!    starts were reserved under it and spawned without it: the same-run baseline), from `TASKS`
//!    free tasks (the agent's case: `start` runs on the runtime's 2 workers), and from `TASKS`
//!    tasks calling `start` through `spawn_blocking` (more threads than workers: whether
//!    anything but the CPU still caps the rate, e.g. the helper's one socket). Setups take turns
//!    for `ROUNDS` rounds; also the median time inside `start` (1 task). The manager keeps the
//!    agent's default `max_tracked`.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{pct, rss_kib};
use wgagent::proc::{Manager, ManagerConfig, ProcessId, Signal, StartSpec, SupervisorLaunch};

const SLEEPERS: usize = 50;
const HEAP_MIB: usize = 16;
const CHURN: usize = 8;
const BALLAST_MIB: usize = 200;
const LATENCY_RUNS: usize = 200;
const RATE_FOR: Duration = Duration::from_secs(2);
const TASKS: usize = 8;
const T: Duration = Duration::from_secs(60);

fn main() {
    common::block_on(run());
}

fn launches() -> [(&'static str, SupervisorLaunch); 2] {
    [
        ("fork", SupervisorLaunch::Fork),
        (
            "exec",
            SupervisorLaunch::Exec(env!("CARGO_BIN_EXE_wgagent").into()),
        ),
    ]
}

fn manager(launch: &SupervisorLaunch) -> Manager {
    Manager::new(ManagerConfig {
        max_running: 256,
        max_tracked: 65536,
        kill_grace: Duration::from_millis(500),
        supervisor: launch.clone(),
        ..Default::default()
    })
}

async fn run() {
    println!("bench process RSS at start: {:.1} MiB", mib(rss_kib()));
    if std::env::args().any(|a| a == "concurrent") {
        concurrent().await;
        return;
    }
    // Spawn cost first, while this process is small (the memory section leaves records behind).
    spawn_cost().await;
    memory().await;
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One field of a `/proc` file in KiB (`smaps_rollup`, `status`, `meminfo`), 0 if missing.
fn field_kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// (private, PSS, page tables) in KiB summed over `pids`.
fn sum_memory(pids: &[u32]) -> (u64, u64, u64) {
    pids.iter().fold((0, 0, 0), |(p, s, t), pid| {
        let rollup = format!("/proc/{pid}/smaps_rollup");
        let private = field_kib(&rollup, "Private_Clean:") + field_kib(&rollup, "Private_Dirty:");
        let pss = field_kib(&rollup, "Pss:");
        let pte = field_kib(&format!("/proc/{pid}/status"), "VmPTE:");
        (p + private, s + pss, t + pte)
    })
}

fn mem_available_kib() -> u64 {
    field_kib("/proc/meminfo", "MemAvailable:")
}

/// Writes one byte into every page of `buf` (the agent rewriting its memory).
fn rewrite(buf: &mut [u8], round: u8) {
    for b in buf.iter_mut().step_by(4096) {
        *b = b.wrapping_add(round | 1);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    Once,
    EachStart,
    Commands,
}

async fn memory() {
    println!();
    println!(
        "1. supervisor memory: {SLEEPERS} × `sleep 600`; agent buffer {HEAP_MIB} MiB (a, b), or {CHURN} commands of 256 KiB output after each start (c)"
    );
    println!(
        "| pattern | launch | private per supervisor | PSS per supervisor | page tables per supervisor | all supervisors: private / PSS | helper: private / PSS | MemAvailable drop | agent RSS after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, pattern) in [
        ("(a) started, then the buffer rewritten once", Pattern::Once),
        (
            "(b) the buffer rewritten after each start",
            Pattern::EachStart,
        ),
        ("(c) commands after each start", Pattern::Commands),
    ] {
        for (launch_name, launch) in launches() {
            let mut heap = if pattern == Pattern::Commands {
                Vec::new()
            } else {
                vec![1u8; HEAP_MIB << 20]
            };
            let m = manager(&launch);
            let avail = mem_available_kib();
            let mut ids = Vec::new();
            let mut sups = Vec::new();
            for i in 0..SLEEPERS {
                let id = m.start(spec("sleep 600")).unwrap();
                sups.push(supervisor_of(&m, &id));
                ids.push(id);
                match pattern {
                    Pattern::Once => {}
                    Pattern::EachStart => rewrite(&mut heap, i as u8),
                    Pattern::Commands => churn(&m).await,
                }
            }
            if pattern == Pattern::Once {
                rewrite(&mut heap, 7);
            }
            let drop_kib = avail.saturating_sub(mem_available_kib());
            let (private, pss, pte) = sum_memory(&sups);
            let (helper_private, helper_pss, _) = sum_memory(&helpers());
            let n = sups.len() as u64;
            println!(
                "| {name} | {launch_name} | {:.2} MiB | {:.2} MiB | {} KiB | {:.0} / {:.0} MiB | {:.2} / {:.2} MiB | {:.0} MiB | {:.0} MiB |",
                mib(private / n),
                mib(pss / n),
                pte / n,
                mib(private),
                mib(pss),
                mib(helper_private),
                mib(helper_pss),
                mib(drop_kib),
                mib(rss_kib()),
            );
            std::hint::black_box(&heap);
            for id in &ids {
                m.signal(id, Signal::Kill).unwrap();
            }
            for id in &ids {
                m.wait(id, T).await.unwrap();
            }
            m.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// This process's children named `wgagent-zygote`: the supervisor helper of the manager alive
/// now (the previous ones ended with their managers).
fn helpers() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            comm.trim() == "wgagent-zygote"
                && stat
                    .rfind(')')
                    .and_then(|i| stat[i + 2..].split(' ').nth(1))
                    .is_some_and(|pp| pp == me)
        })
        .collect()
}

fn spec(cmd: &str) -> StartSpec {
    StartSpec {
        command: cmd.to_owned(),
        ..Default::default()
    }
}

/// The supervisor of a running command: its shell's parent (`/proc/<pid>/stat`, field 4).
fn supervisor_of(m: &Manager, id: &ProcessId) -> u32 {
    let pid = m.get(id).unwrap().pid;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// `CHURN` commands writing 256 KiB each, their output read back (the agent at work).
async fn churn(m: &Manager) {
    for _ in 0..CHURN {
        let id = m
            .start(spec("head -c 262144 /dev/zero | tr '\\0' x"))
            .unwrap();
        m.wait(&id, T).await.unwrap().unwrap();
        std::hint::black_box(m.get(&id).unwrap().output.render().text.len());
    }
}

async fn spawn_cost() {
    println!();
    println!(
        "2. spawn cost against the agent's size: start → wait of `true` ({LATENCY_RUNS} sequential, fork and exec taking turns) and {TASKS} concurrent tasks for {RATE_FOR:?} per launch"
    );
    println!(
        "| agent RSS | launch | median | p99 | {TASKS} tasks, commands/s | ratio to fork (median / rate) |"
    );
    println!("|---|---|---|---|---|---|");
    let mut ballast: Vec<Vec<u8>> = Vec::new();
    for extra in [0, 16, 48, BALLAST_MIB] {
        while ballast.len() * 64 < extra * 1024 {
            ballast.push(vec![1u8; 64 << 10]);
        }
        let rss = mib(rss_kib());
        let ms: Vec<_> = launches().iter().map(|(_, l)| manager(l)).collect();
        let mut lat = vec![Vec::with_capacity(LATENCY_RUNS); ms.len()];
        let mut base = Vec::with_capacity(LATENCY_RUNS);
        for run in 0..LATENCY_RUNS {
            for k in 0..ms.len() {
                let i = (k + run) % ms.len();
                let t = Instant::now();
                let id = ms[i].start(spec("true")).unwrap();
                ms[i].wait(&id, T).await.unwrap().unwrap();
                lat[i].push(t.elapsed());
            }
            let t = Instant::now();
            let st = std::process::Command::new("sh")
                .args(["-c", "true"])
                .status()
                .unwrap();
            base.push(t.elapsed());
            assert!(st.success());
        }
        let mut rates = Vec::new();
        for m in &ms {
            rates.push(rate(m).await);
        }
        for v in &mut lat {
            v.sort();
        }
        base.sort();
        for (i, (name, _)) in launches().iter().enumerate() {
            println!(
                "| {rss:.0} MiB | {name} | {:.2?} | {:.2?} | {:.0} | {:.2}× / {:.2}× |",
                pct(&lat[i], 0.5),
                pct(&lat[i], 0.99),
                rates[i],
                pct(&lat[i], 0.5).as_secs_f64() / pct(&lat[0], 0.5).as_secs_f64(),
                rates[i] / rates[0],
            );
        }
        println!(
            "| {rss:.0} MiB | baseline: `sh -c true` via std::process::Command | {:.2?} | {:.2?} | | |",
            pct(&base, 0.5),
            pct(&base, 0.99)
        );
        for m in ms {
            m.shutdown(Duration::from_secs(5)).await;
        }
    }
    std::hint::black_box(&ballast);
}

/// `TASKS` tasks starting and waiting for `true` for `RATE_FOR`: commands per second.
async fn rate(m: &Manager) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RATE_FOR;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (m, done) = (m.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let id = m.start(spec("true")).unwrap();
                    if m.wait(&id, T).await.unwrap().is_some_and(|e| e.code == 0) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

const ROUNDS: usize = 3;

/// How the concurrent tasks call `start`.
#[derive(Clone, Copy, PartialEq)]
enum Calls {
    /// One task.
    Single,
    /// `TASKS` tasks, `start` under one shared lock (the old serialisation).
    Serialised,
    /// `TASKS` tasks, `start` on the runtime's workers.
    Free,
    /// `TASKS` tasks, `start` in `spawn_blocking`.
    Blocking,
}

async fn concurrent() {
    println!();
    println!(
        "3. concurrent starts: `start` → `wait` of `true`, commands/s over {RATE_FOR:?} per setup, {ROUNDS} rounds taking turns; 2 runtime workers"
    );
    let setups = [
        ("1 task", Calls::Single),
        ("8 tasks, start serialised (before)", Calls::Serialised),
        ("8 tasks (agent)", Calls::Free),
        ("8 tasks, start in spawn_blocking", Calls::Blocking),
    ];
    for (name, launch) in launches() {
        // The agent's default `max_tracked` (1,024): with section 2's 65,536 the records pile
        // up over the run and `start`'s scans of them (running count, eviction) and the state
        // directory's size, not the spawn, grow to dominate the agent's CPU.
        let m = Manager::new(ManagerConfig {
            max_running: 256,
            kill_grace: Duration::from_millis(500),
            supervisor: launch.clone(),
            ..Default::default()
        });
        let mut inside = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            let id = m.start(spec("true")).unwrap();
            inside.push(t.elapsed());
            m.wait(&id, T).await.unwrap().unwrap();
        }
        inside.sort();
        let mut rates = vec![Vec::new(); setups.len()];
        // Per setup, summed over rounds: machine busy/total jiffies, this process's CPU and its
        // reaped children's (supervisors and their commands), and commands run.
        let mut cpu = vec![(0u64, 0u64, 0u64, 0u64, 0f64); setups.len()];
        for round in 0..ROUNDS {
            for k in 0..setups.len() {
                let i = (k + round) % setups.len();
                let (m0, p0) = (machine_jiffies(), own_jiffies());
                let r = rate_with(&m, setups[i].1).await;
                let (m1, p1) = (machine_jiffies(), own_jiffies());
                let c = &mut cpu[i];
                c.0 += m1.0 - m0.0;
                c.1 += m1.1 - m0.1;
                c.2 += p1.0 - p0.0;
                c.3 += p1.1 - p0.1;
                c.4 += r * RATE_FOR.as_secs_f64();
                rates[i].push(r);
            }
        }
        println!(
            "{name}: time inside `start` (1 task): median {:.2?}, p99 {:.2?}",
            pct(&inside, 0.5),
            pct(&inside, 0.99)
        );
        println!(
            "| launch | setup | commands/s by round | mean | vs serialised | machine CPU busy | CPU per command: agent / children |"
        );
        println!("|---|---|---|---|---|---|---|");
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let before = mean(&rates[1]);
        for (i, (setup, _)) in setups.iter().enumerate() {
            let by_round: Vec<String> = rates[i].iter().map(|r| format!("{r:.0}")).collect();
            let (busy, total, own, kids, n) = cpu[i];
            let per = |j: u64| j as f64 * 10.0 / n.max(1.0);
            println!(
                "| {name} | {setup} | {} | {:.0} | {:.2}× | {:.0} % | {:.2} / {:.2} ms |",
                by_round.join(" / "),
                mean(&rates[i]),
                mean(&rates[i]) / before,
                100.0 * busy as f64 / total.max(1) as f64,
                per(own),
                per(kids),
            );
        }
        m.shutdown(Duration::from_secs(5)).await;
    }
}

/// Like [`rate`], with the calls as `calls` says.
async fn rate_with(m: &Manager, calls: Calls) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let serial = Arc::new(std::sync::Mutex::new(()));
    let deadline = Instant::now() + RATE_FOR;
    let started = Instant::now();
    let n = if calls == Calls::Single { 1 } else { TASKS };
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (m, done, serial) = (m.clone(), done.clone(), serial.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let id = match calls {
                        Calls::Serialised => {
                            let _held = serial.lock().unwrap();
                            m.start(spec("true")).unwrap()
                        }
                        Calls::Blocking => {
                            let m = m.clone();
                            tokio::task::spawn_blocking(move || m.start(spec("true")).unwrap())
                                .await
                                .unwrap()
                        }
                        Calls::Single | Calls::Free => m.start(spec("true")).unwrap(),
                    };
                    if m.wait(&id, T).await.unwrap().is_some_and(|e| e.code == 0) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// (busy, total) jiffies of the whole machine (`/proc/stat`; idle and iowait are not busy).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// (this process, its reaped children) CPU in jiffies (10 ms): utime+stime, cutime+cstime.
fn own_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 2)..]
        .split(' ')
        .collect();
    // Fields 14–17 (utime, stime, cutime, cstime); this slice starts at field 3.
    let g = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (g(14) + g(15), g(16) + g(17))
}
