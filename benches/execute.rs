//! The LLM `execute` tool end to end through a real WireGuard tunnel (two Nodes on loopback UDP,
//! in one process), against spawning `sh -c true` locally in the same run.
//!
//! Run: `cargo bench --bench execute` (prints a table; asserts nothing about times). Both
//! sections run once per data-path layout: `threads = 1` (the single task), then the machine's
//! default (`[interface] threads`), each with its own same-run baseline.
//!
//! 1. Latency: `execute {command: "true"}` one at a time, median and p99, vs
//!    `std::process::Command::new("sh").args(["-c","true"]).status()`.
//! 2. Throughput: 8 control peers (8 WireGuard nodes, like 8 replicas) each calling `execute true`
//!    in a loop for a fixed time against one agent, vs 8 threads spawning `sh -c true` locally.

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
use wgagent::tool::{ExecuteArgs, Tools};

const LATENCY_RUNS: usize = 300;
const THROUGHPUT_FOR: Duration = Duration::from_secs(5);
const CLIENTS: usize = 8;

fn main() {
    for threads in [1, 0] {
        let name = match threads {
            0 => format!(
                "threads = {} (the default)",
                config::Interface::default_threads()
            ),
            n => format!("threads = {n}"),
        };
        println!("== data path: {name} ==");
        common::block_on(run(threads));
    }
}

async fn run(threads: usize) {
    // One agent that knows CLIENTS control peers at 100.64.1.1..=CLIENTS.
    let agent_key = keys::generate();
    let agent_pub = keys::public_key(&agent_key);
    let client_keys: Vec<_> = (0..CLIENTS).map(|_| keys::generate()).collect();
    let peers = client_keys
        .iter()
        .enumerate()
        .map(|(i, k)| peer(keys::public_key(k), &format!("100.64.1.{}/32", i + 1), None))
        .collect();
    let agent = node(agent_key, "100.64.0.10", peers, threads).await;
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
            &format!("100.64.1.{}", i + 1),
            vec![peer(agent_pub, "100.64.0.10/32", ep)],
            threads,
        )
        .await;
        let conn = AgentConn::new(
            n.connector(),
            SocketAddr::new(ip("100.64.0.10"), 4),
            AgentOptions::default(),
        );
        clients.push((n, Tools::single(conn.clone()), conn));
    }

    // Warm up: handshakes, connections, page cache.
    for (_, t, c) in &clients {
        let r = t.execute(c, ExecuteArgs::new("true")).await;
        assert!(r.success, "{r:?}");
    }

    // 1. Latency.
    let (_, tools, conn) = &clients[0];
    let mut ours = Vec::with_capacity(LATENCY_RUNS);
    let mut base = Vec::with_capacity(LATENCY_RUNS);
    for _ in 0..LATENCY_RUNS {
        let t = Instant::now();
        let r = tools.execute(conn, ExecuteArgs::new("true")).await;
        ours.push(t.elapsed());
        assert!(r.success && r.exit_code == 0);
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
    ours.sort();
    base.sort();
    println!(
        "execute latency ({LATENCY_RUNS} sequential runs of `true`, interleaved with the baseline)"
    );
    println!("| path | median | p99 |");
    println!("|---|---|---|");
    println!(
        "| `execute` through WireGuard (tool → SDK → tunnel → API → spawn → wait) | {:.2?} | {:.2?} |",
        pct(&ours, 0.5),
        pct(&ours, 0.99)
    );
    println!(
        "| baseline: local `sh -c true` via std::process::Command | {:.2?} | {:.2?} |",
        pct(&base, 0.5),
        pct(&base, 0.99)
    );
    println!(
        "ratio (median): {:.2}×; overhead over a local spawn: {:.2?}\n",
        pct(&ours, 0.5).as_secs_f64() / pct(&base, 0.5).as_secs_f64(),
        pct(&ours, 0.5).saturating_sub(pct(&base, 0.5))
    );

    // 2. Throughput with CLIENTS concurrent control peers.
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + THROUGHPUT_FOR;
    let mut tasks = Vec::new();
    for (_, t, c) in &clients {
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
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let ours_rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
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
    let base_rate = base_done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("execute throughput ({CLIENTS} control peers, {THROUGHPUT_FOR:?} each)");
    println!("| path | commands/s |");
    println!("|---|---|");
    println!(
        "| `execute true` from {CLIENTS} WireGuard peers against one agent | {ours_rate:.0} (failed: {}) |",
        failed.load(Ordering::Relaxed)
    );
    println!("| baseline: {CLIENTS} local threads spawning `sh -c true` | {base_rate:.0} |");
    println!("ratio: {:.2}", ours_rate / base_rate);
    manager.shutdown(Duration::from_secs(2)).await;
}
