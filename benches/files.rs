//! The file tools end to end through a real WireGuard tunnel (two Nodes on loopback UDP, one
//! process) against the same operations done locally, in the same run.
//!
//! Run: `cargo bench --bench files` (prints tables; asserts nothing about times).
//!
//! 1. `read_file` of one 200-line page of a 10,000-line file: the tool through the tunnel vs
//!    `Files::read_lines` called locally (same code, no network).
//! 2. `edit_files` of 3 files (one search/replace each, diffs on): the tool through the tunnel
//!    vs `Files::edit` locally.
//! 3. write-file of a 16 MiB body through the SDK (atomic, fsync'd) vs local `cp` of the same
//!    file, and `cp` followed by `sync FILE` (what our write also does).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{ip, pct};
use serde_json::json;
use wgagent::agent::Agent;
use wgagent::client::{AgentConn, AgentOptions, WriteCondition};
use wgagent::config;
use wgagent::files::lines::{LineLimits, LineRange};
use wgagent::files::{EditSpec, Files, OwnedEdit};
use wgagent::tool::Tools;

const RUNS: usize = 300;
const WRITE_RUNS: usize = 15;

fn row(name: &str, ours: &mut [Duration], base: &mut [Duration], base_name: &str) {
    ours.sort();
    base.sort();
    let (om, bm) = (pct(ours, 0.5), pct(base, 0.5));
    println!(
        "| {name} | {:.2?} | {:.2?} | {base_name}: {:.2?} | {:.2?} | {:.2}x (+{:.2?}) |",
        om,
        pct(ours, 0.99),
        bm,
        pct(base, 0.99),
        om.as_secs_f64() / bm.as_secs_f64(),
        om.saturating_sub(bm)
    );
}

fn main() {
    common::block_on(run());
}

async fn run() {
    let (agent, control) = common::agent_and_control().await;
    // The agent's API exactly as the binary serves it (`[files]` at its defaults); the local
    // baseline runs the same `Files` code with the same default limits.
    let files = Files::default();
    let _server = Agent::attach(agent.clone(), &config::Api::default()).unwrap();
    let conn = AgentConn::new(
        control.connector(),
        SocketAddr::new(ip("100.64.0.10"), 4),
        AgentOptions::default(),
    );
    let tools = Tools::single(conn.clone());
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let d = dir.path().to_owned();

    // 1. read_file page.
    let big = d.join("big.rs");
    let text: String = (1..=10_000)
        .map(|i| format!("    let value_{i} = compute({i}, \"some text on line {i}\");\n"))
        .collect();
    std::fs::write(&big, &text).unwrap();
    let big_s = big.display().to_string();
    let args = json!({"path": big_s, "offset": 5000, "limit": 200});
    let r = tools.call("read_file", &args).await;
    assert_eq!(r.value["lines_read"], 200, "{}", r.value);
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let range = LineRange {
        offset: 5000,
        limit: 200,
        partial: true,
    };
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = tools.call("read_file", &args).await;
        ours.push(t.elapsed());
        assert!(r.value["success"] == true);
        let t = Instant::now();
        let page = files
            .read_lines(&big_s, range, LineLimits::default())
            .await
            .unwrap();
        base.push(t.elapsed());
        assert_eq!(page.page.lines_read, 200);
    }
    println!(
        "file tools, {RUNS} sequential runs each, interleaved with the local baseline ({} bytes, 10,000 lines)",
        text.len()
    );
    println!("| operation | median | p99 | local baseline, median | p99 | ratio (median) |");
    println!("|---|---|---|---|---|---|");
    row(
        "`read_file` 200-line page through WireGuard",
        &mut ours,
        &mut base,
        "`Files::read_lines`",
    );

    // 2. edit_files of 3 files.
    let paths: Vec<String> = (0..3)
        .map(|i| {
            let p = d.join(format!("mod{i}.rs"));
            let body: String = (0..200)
                .map(|l| format!("fn f{l}() -> u32 {{\n    {l}\n}}\n"))
                .collect::<String>()
                + "const VALUE: &str = \"a\";\n";
            std::fs::write(&p, body).unwrap();
            p.display().to_string()
        })
        .collect();
    let edit_args = |from: &str, to: &str| {
        json!({"files": paths.iter().map(|p| json!({"path": p, "edits": [{
            "search": format!("const VALUE: &str = \"{from}\";"),
            "replace": format!("const VALUE: &str = \"{to}\";")}]})).collect::<Vec<_>>()})
    };
    let specs = |from: &str, to: &str| -> Vec<EditSpec> {
        paths
            .iter()
            .map(|p| EditSpec {
                path: p.clone(),
                edits: vec![OwnedEdit {
                    search: format!("const VALUE: &str = \"{from}\";"),
                    replace: format!("const VALUE: &str = \"{to}\";"),
                    replace_all: false,
                }],
                if_match: None,
            })
            .collect()
    };
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..RUNS / 2 {
        let t = Instant::now();
        let r = tools.call("edit_files", &edit_args("a", "b")).await;
        ours.push(t.elapsed());
        assert!(r.value["success"] == true, "{}", r.value);
        let t = Instant::now();
        files.edit(specs("b", "a"), true).await.unwrap();
        base.push(t.elapsed());
    }
    row(
        "`edit_files` of 3 files through WireGuard (diffs on)",
        &mut ours,
        &mut base,
        "`Files::edit`",
    );

    // 3. write-file 16 MiB.
    let size = 16usize << 20;
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let src = d.join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let dst = d.join("dst.bin");
    let dst_s = dst.display().to_string();
    let data = bytes::Bytes::from(data);
    conn.write_file(&dst_s, data.clone(), WriteCondition::Always)
        .await
        .unwrap();
    let (mut ours, mut cp, mut cp_sync) = (Vec::new(), Vec::new(), Vec::new());
    let sh = |cmd: String| {
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let ok = std::process::Command::new("sh")
                .args(["-c", &cmd])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            t.elapsed()
        })
    };
    let local = d.join("copy.bin").display().to_string();
    let src_s = src.display().to_string();
    for _ in 0..WRITE_RUNS {
        let t = Instant::now();
        conn.write_file(&dst_s, data.clone(), WriteCondition::Always)
            .await
            .unwrap();
        ours.push(t.elapsed());
        cp.push(sh(format!("cp {src_s} {local}")).await.unwrap());
        cp_sync.push(
            sh(format!("cp {src_s} {local} && sync {local}"))
                .await
                .unwrap(),
        );
    }
    let mbps = |v: &mut Vec<Duration>| {
        v.sort();
        size as f64 / pct(v, 0.5).as_secs_f64() / (1 << 20) as f64
    };
    let (o, c, cs) = (mbps(&mut ours), mbps(&mut cp), mbps(&mut cp_sync));
    println!();
    println!("write-file of a 16 MiB body, {WRITE_RUNS} runs each (median throughput)");
    println!("| path | MiB/s | ratio to `cp` | ratio to `cp && sync` |");
    println!("|---|---|---|---|");
    println!(
        "| SDK `write_file` through WireGuard (atomic, fsync'd) | {o:.0} | {:.2} | {:.2} |",
        o / c,
        o / cs
    );
    println!("| local `cp` | {c:.0} | 1.00 | |");
    println!("| local `cp && sync FILE` | {cs:.0} | | 1.00 |");
}
