//! Overhead of the trust layer: per-peer permission checks + isolation + the audit log, on
//! `execute true` and on `GET /api/v0/processes/list`, against the same build with all of it
//! off, in the same run.
//!
//! Run: `cargo bench --bench trust` (prints a table; asserts nothing about times).
//!
//! Two agents in this process, each with its own WireGuard node, and one control node that is a
//! peer of both (its own pooled connection to each):
//! - "off": no `allow` (full access), `isolation = "none"`, no `[audit]`;
//! - "on": `allow = ["run", "read", "signal"]`, `isolation = "peer"`, `[audit]` to a file on
//!   disk (fail closed: every start's line is written before the spawn).
//!
//! Rounds alternate between the two agents so that drift (page cache, CPU frequency, other
//! load) hits both equally. `GET /list` is measured with 100 records on each agent.

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{ip, node, pct, peer};
use wgagent::agent::Agent;
use wgagent::client::{AgentConn, AgentOptions};
use wgagent::config::{self, Config};
use wgagent::keys;
use wgagent::tool::{ExecuteArgs, Tools};
use wgagent::trust::{Access, AuditConfig, Isolation, Permission};
use wgagent::wg::PeerConfig;

const ROUNDS: usize = 10;
const EXECUTES_PER_ROUND: usize = 40;
const LISTS_PER_ROUND: usize = 200;
const RECORDS: usize = 100;

fn main() {
    common::block_on(run());
}

async fn agent(
    addr: &str,
    control: &keys::StaticSecret,
    trust: bool,
    dir: &std::path::Path,
) -> (Agent, keys::PublicKey) {
    let key = keys::generate();
    let public = keys::public_key(&key);
    let mut cfg = Config::new(key, vec![ip(addr)]);
    cfg.interface.uapi = false;
    cfg.interface.listen_port = 0;
    cfg.api.state_dir = Some(dir.join(format!("state-{addr}")));
    cfg.api.max_tracked = 65536;
    let mut p = config::Peer::from(&PeerConfig {
        name: Some("control".into()),
        ..peer(keys::public_key(control), "100.64.1.1/32", None)
    });
    if trust {
        p.access = Access {
            allow: Some(
                [Permission::Run, Permission::Read, Permission::Signal]
                    .into_iter()
                    .collect(),
            ),
            ..Access::default()
        };
        cfg.api.isolation = Isolation::Peer;
        cfg.audit = Some(AuditConfig::new(dir.join("audit.log")));
    }
    cfg.peers.push(p);
    (Agent::start(&cfg).await.unwrap(), public)
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let control_key = keys::generate();
    let (off, off_pub) = agent("100.64.0.10", &control_key, false, dir.path()).await;
    let (on, on_pub) = agent("100.64.0.11", &control_key, true, dir.path()).await;
    let ep = |a: &Agent| Some(SocketAddr::new(ip("127.0.0.1"), a.udp_addr().port()));
    let control = node(
        control_key,
        "100.64.1.1",
        vec![
            peer(off_pub, "100.64.0.10/32", ep(&off)),
            peer(on_pub, "100.64.0.11/32", ep(&on)),
        ],
    )
    .await;
    let conn = |addr: &str| {
        AgentConn::new(
            control.connector(),
            SocketAddr::new(ip(addr), 4),
            AgentOptions::default(),
        )
    };
    let conns = [conn("100.64.0.10"), conn("100.64.0.11")];
    let tools: Vec<_> = conns.iter().map(|c| Tools::single(c.clone())).collect();

    // Warm up and fill each agent with RECORDS exited processes.
    for (t, c) in tools.iter().zip(&conns) {
        for _ in 0..RECORDS {
            let r = t.execute(c, ExecuteArgs::new("true")).await;
            assert!(r.success, "{r:?}");
        }
        assert_eq!(c.list().await.unwrap().processes.len(), RECORDS);
    }

    let mut exec: [Vec<Duration>; 2] = Default::default();
    let mut list: [Vec<Duration>; 2] = Default::default();
    for round in 0..ROUNDS {
        // Alternate which agent goes first.
        for k in [round % 2, 1 - round % 2] {
            for _ in 0..LISTS_PER_ROUND {
                let t = Instant::now();
                let l = conns[k].list().await.unwrap();
                list[k].push(t.elapsed());
                assert!(l.processes.len() >= RECORDS);
            }
            for _ in 0..EXECUTES_PER_ROUND {
                let t = Instant::now();
                let r = tools[k].execute(&conns[k], ExecuteArgs::new("true")).await;
                exec[k].push(t.elapsed());
                assert!(r.success && r.exit_code == 0);
            }
        }
    }
    let audit_lines = std::fs::read_to_string(dir.path().join("audit.log"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(audit_lines, RECORDS + ROUNDS * EXECUTES_PER_ROUND);

    println!(
        "trust overhead ({ROUNDS} alternating rounds; {} `execute true` and {} `GET /list` of \
         {RECORDS}+ records per agent, sequential, one control peer, pooled connection)",
        ROUNDS * EXECUTES_PER_ROUND,
        ROUNDS * LISTS_PER_ROUND
    );
    println!("| operation | off: median | off: p99 | on: median | on: p99 | ratio (median) |");
    println!("|---|---|---|---|---|---|");
    for (name, v) in [("`execute true`", &mut exec), ("`GET /list`", &mut list)] {
        v[0].sort();
        v[1].sort();
        println!(
            "| {name} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.3}× |",
            pct(&v[0], 0.5),
            pct(&v[0], 0.99),
            pct(&v[1], 0.5),
            pct(&v[1], 0.99),
            pct(&v[1], 0.5).as_secs_f64() / pct(&v[0], 0.5).as_secs_f64()
        );
    }
    println!("(audit log: {audit_lines} lines written, one per start)");
    for a in [&off, &on] {
        a.shutdown(Duration::from_secs(10)).await;
    }
}
