//! The LLM `execute` tool end to end through a real WireGuard tunnel (two Nodes on loopback UDP,
//! in one process), against spawning `sh -c true` locally in the same run.
//!
//! Run: `cargo bench --bench execute` (prints a table; asserts nothing about times). Both
//! data-path layouts are measured in the same run and interleaved, so that neither gets the
//! quieter minutes of the shared machine: `threads = 1` (the single task) and the machine's
//! default (`[interface] threads`), each one agent with its own `CLIENTS` control peers, all
//! alive for the whole run. Their supervisors come from a helper exec'd from the wgagent
//! binary, as the agent's do; a third setup (the second layout with supervisors forked from this
//! process, as before that change) is measured alongside for comparison.
//!
//! 1. Latency: `execute {command: "true"}` one at a time, median and p99, the layouts taking
//!    turns call by call (which goes first alternates), vs
//!    `std::process::Command::new("sh").args(["-c","true"]).status()` after each pair.
//! 2. Throughput: 8 control peers (8 WireGuard nodes, like 8 replicas) each calling `execute true`
//!    in a loop for a fixed time against one agent, `ROUNDS` rounds per layout alternating, vs 8
//!    threads spawning `sh -c true` locally (one round each time).
//!
//! After each section it prints the data path's hand-off counters (pipeline layout: batches the
//! crypto task handed to the netstack task, and the netstack task's own polls), summed over the
//! agent and its control peers.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ip, node_with_threads as node, pct, peer};
use wgagent::agent::Agent;
use wgagent::client::{AgentConn, AgentOptions};
use wgagent::config;
use wgagent::keys;
use wgagent::node::{Node, NodeConnector};
use wgagent::proc::Manager;
use wgagent::tool::{ExecuteArgs, Tools};

const LATENCY_RUNS: usize = 300;
const THROUGHPUT_FOR: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
const CLIENTS: usize = 8;
/// `[interface] threads` of the setups (the single task, and 0 = the machine's default; or
/// `WGAGENT_BENCH_THREADS=A,B`: `threads = B` compared with `threads = A`, the table ratios are
/// to A) and whether their supervisors come from the wgagent binary's helper (what the agent
/// does) or are forked from this process (as before; the last setup, B again, for comparison).
fn layouts() -> [(usize, bool); 3] {
    let pair: Vec<usize> = std::env::var("WGAGENT_BENCH_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_default();
    let [a, b] = match pair[..] {
        [a, b] => [a, b],
        _ => [1, 0],
    };
    [(a, true), (b, true), (b, false)]
}

fn main() {
    common::block_on(run());
}

fn layout_name(threads: usize, exec: bool) -> String {
    let supervisors = if exec { "" } else { ", forked supervisors" };
    match threads {
        0 => format!(
            "threads = {} (default){supervisors}",
            config::Interface::default_threads()
        ),
        n => format!("threads = {n}{supervisors}"),
    }
}

/// One agent and its `CLIENTS` control peers, with one data-path layout.
struct Setup {
    name: String,
    agent: Node,
    _server: Agent,
    manager: Manager,
    clients: Vec<(Node, Tools<NodeConnector>, AgentConn<NodeConnector>)>,
}

impl Setup {
    /// (hand-offs, netstack-task polls) summed over the agent and its clients.
    fn handoffs(&self) -> (u64, u64) {
        let nodes = std::iter::once(&self.agent).chain(self.clients.iter().map(|(n, _, _)| n));
        nodes.fold((0, 0), |(h, p), n| {
            let s = n.stats();
            (h + s.handoffs, p + s.netstack_polls)
        })
    }
}

async fn run() {
    let mut setups = Vec::new();
    for (i, (threads, exec)) in layouts().into_iter().enumerate() {
        // The agent's manager takes the default as it is created.
        let exe = std::path::Path::new(env!("CARGO_BIN_EXE_wgagent"));
        wgagent::proc::set_default_supervisor_exe(exec.then_some(exe));
        setups.push(setup(threads, exec, i as u8).await);
    }

    // 1. Latency, the layouts taking turns call by call.
    let mut ours: Vec<Vec<Duration>> = vec![Vec::with_capacity(LATENCY_RUNS); setups.len()];
    let mut base = Vec::with_capacity(LATENCY_RUNS);
    let before: Vec<_> = setups.iter().map(Setup::handoffs).collect();
    for run in 0..LATENCY_RUNS {
        for k in 0..setups.len() {
            // Which layout goes first alternates.
            let i = (k + run) % setups.len();
            let (_, tools, conn) = &setups[i].clients[0];
            let t = Instant::now();
            let r = tools.execute(conn, ExecuteArgs::new("true")).await;
            ours[i].push(t.elapsed());
            assert!(r.success && r.exit_code == 0);
        }
        let t = Instant::now();
        let st = tokio::task::spawn_blocking(|| {
            std::process::Command::new("sh")
                .args(["-c", "true"])
                .status()
        })
        .await
        .unwrap()
        .unwrap();
        base.push(t.elapsed());
        assert!(st.success());
    }
    let after: Vec<_> = setups.iter().map(Setup::handoffs).collect();
    base.sort();
    println!(
        "execute latency ({LATENCY_RUNS} sequential runs of `true` per layout, interleaved call by call with each other and the baseline)"
    );
    println!(
        "| path | median | p99 | ratio to {} (median) | hand-offs / netstack-task polls per call |",
        layout_name(layouts()[0].0, layouts()[0].1)
    );
    println!("|---|---|---|---|---|");
    for v in &mut ours {
        v.sort();
    }
    for (i, s) in setups.iter().enumerate() {
        println!(
            "| `execute` through WireGuard, {} | {:.2?} | {:.2?} | {:.2}× | {:.2} / {:.2} |",
            s.name,
            pct(&ours[i], 0.5),
            pct(&ours[i], 0.99),
            pct(&ours[i], 0.5).as_secs_f64() / pct(&ours[0], 0.5).as_secs_f64(),
            (after[i].0 - before[i].0) as f64 / LATENCY_RUNS as f64,
            (after[i].1 - before[i].1) as f64 / LATENCY_RUNS as f64,
        );
    }
    println!(
        "| baseline: local `sh -c true` via std::process::Command | {:.2?} | {:.2?} | | |",
        pct(&base, 0.5),
        pct(&base, 0.99)
    );
    println!();

    // 2. Throughput with CLIENTS concurrent control peers, rounds alternating.
    let mut rates = vec![Vec::new(); setups.len()];
    let mut failures = vec![0u64; setups.len()];
    let mut base_rates = Vec::new();
    let before: Vec<_> = setups.iter().map(Setup::handoffs).collect();
    let mut done_calls = vec![0u64; setups.len()];
    // A forked supervisor costs more as this process's memory grows (a helper's does not):
    // printed per round, since it drifts as records and buffers accumulate.
    let mut rss = vec![common::rss_kib()];
    for round in 0..ROUNDS {
        for k in 0..setups.len() {
            let i = (k + round) % setups.len();
            let (done, failed) = concurrent(&setups[i]).await;
            rates[i].push(done as f64 / THROUGHPUT_FOR.as_secs_f64());
            done_calls[i] += done;
            failures[i] += failed;
        }
        base_rates.push(local_rate());
        rss.push(common::rss_kib());
    }
    let after: Vec<_> = setups.iter().map(Setup::handoffs).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!(
        "execute throughput ({CLIENTS} control peers per agent, {THROUGHPUT_FOR:?} per round, {ROUNDS} rounds per layout alternating)"
    );
    println!(
        "| path | commands/s per round | mean | ratio to {} | hand-offs / netstack-task polls per call |",
        layout_name(layouts()[0].0, layouts()[0].1)
    );
    println!("|---|---|---|---|---|");
    for (i, s) in setups.iter().enumerate() {
        let calls = done_calls[i].max(1) as f64;
        println!(
            "| `execute true` from {CLIENTS} WireGuard peers, {} | {} (failed: {}) | {:.0} | {:.2}× | {:.2} / {:.2} |",
            s.name,
            list(&rates[i]),
            failures[i],
            mean(&rates[i]),
            mean(&rates[i]) / mean(&rates[0]),
            (after[i].0 - before[i].0) as f64 / calls,
            (after[i].1 - before[i].1) as f64 / calls,
        );
    }
    println!(
        "| baseline: {CLIENTS} local threads spawning `sh -c true` | {} | {:.0} | | |",
        list(&base_rates),
        mean(&base_rates)
    );
    let rss: Vec<_> = rss
        .iter()
        .map(|k| format!("{:.0}", *k as f64 / 1024.0))
        .collect();
    println!(
        "bench process RSS before and after each round: {} MiB",
        rss.join(" / ")
    );
    for s in &setups {
        s.manager.shutdown(Duration::from_secs(2)).await;
    }
}

/// `CLIENTS` peers calling `execute true` in a loop for `THROUGHPUT_FOR`: (done, failed).
async fn concurrent(s: &Setup) -> (u64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + THROUGHPUT_FOR;
    let mut tasks = Vec::new();
    for (_, t, c) in &s.clients {
        let (t, conn, done, failed) = (t.clone(), c.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if t.execute(&conn, ExecuteArgs::new("true")).await.success {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

/// `CLIENTS` local threads spawning `sh -c true` for `THROUGHPUT_FOR`: commands per second.
fn local_rate() -> f64 {
    let base_done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + THROUGHPUT_FOR;
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let base_done = base_done.clone();
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    if std::process::Command::new("sh")
                        .args(["-c", "true"])
                        .status()
                        .is_ok_and(|s| s.success())
                    {
                        base_done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    base_done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// One agent at 100.64.`net`.10 that knows `CLIENTS` control peers at 100.64.`net`+100.1..,
/// with `threads` data-path threads everywhere, warmed up.
async fn setup(threads: usize, exec: bool, net: u8) -> Setup {
    let agent_addr = format!("100.64.{net}.10");
    let agent_key = keys::generate();
    let agent_pub = keys::public_key(&agent_key);
    let client_keys: Vec<_> = (0..CLIENTS).map(|_| keys::generate()).collect();
    let client_addr = |i: usize| format!("100.64.{}.{}", net + 100, i + 1);
    let peers = client_keys
        .iter()
        .enumerate()
        .map(|(i, k)| peer(keys::public_key(k), &format!("{}/32", client_addr(i)), None))
        .collect();
    let agent = node(agent_key, &agent_addr, peers, threads).await;
    let api_cfg = config::Api {
        max_tracked: 65536,
        max_running: 256,
        ..config::Api::default()
    };
    let server = Agent::attach(agent.clone(), &api_cfg).unwrap();
    let manager = server.manager().clone();
    let ep = Some(SocketAddr::new(ip("127.0.0.1"), agent.udp_addr().port()));
    let mut clients = Vec::new();
    for (i, k) in client_keys.into_iter().enumerate() {
        let n = node(
            k,
            &client_addr(i),
            vec![peer(agent_pub, &format!("{agent_addr}/32"), ep)],
            threads,
        )
        .await;
        let conn = AgentConn::new(
            n.connector(),
            SocketAddr::new(ip(&agent_addr), 4),
            AgentOptions::default(),
        );
        clients.push((n, Tools::single(conn.clone()), conn));
    }
    // Warm up: handshakes, connections, page cache.
    for (_, t, c) in &clients {
        let r = t.execute(c, ExecuteArgs::new("true")).await;
        assert!(r.success, "{r:?}");
    }
    Setup {
        name: layout_name(threads, exec),
        agent,
        _server: server,
        manager,
        clients,
    }
}
