//! Process I/O through a real WireGuard tunnel on loopback (agent and control in this process),
//! each figure next to a baseline measured in the same run:
//! - follow throughput of a finished 256 MiB log vs reading the same log file locally;
//! - first-byte latency of a line printed by a followed process vs the API round trip;
//! - stdin → output echo through `cat` (pipe), and a keystroke echoed by a pty (what `exec -t`
//!   does per keystroke), vs the API round trip;
//! - RSS with 100 processes writing concurrently and 100 followers.
//!
//! Run: `cargo bench --bench procio` (prints a Markdown table).

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use wgagent::api::types::{StartProcessRequest, TerminalSize};
use wgagent::api::{self, AppState};
use wgagent::client::{AgentConn, AgentOptions};
use wgagent::node::NodeConnector;
use wgagent::proc::{Manager, ManagerConfig};

type Conn = AgentConn<NodeConnector>;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

async fn start(conn: &Conn, req: StartProcessRequest) -> String {
    conn.start(&req).await.unwrap().id
}

fn cmd(c: &str) -> StartProcessRequest {
    StartProcessRequest {
        command: c.into(),
        ..Default::default()
    }
}

/// GET /health round trips on a warm connection (the baseline of every latency).
async fn rtt(conn: &Conn, n: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        conn.health().await.unwrap();
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v
}

/// Waits on the follow stream until `needle` has arrived; returns the bytes seen.
async fn until<
    S: futures_util::Stream<Item = Result<Bytes, wgagent::client::ClientError>> + Unpin,
>(
    s: &mut S,
    seen: &mut Vec<u8>,
    needle: &[u8],
) {
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let chunk = s.next().await.expect("stream ended").unwrap();
        seen.extend_from_slice(&chunk);
    }
}

fn main() {
    common::block_on(run());
}

async fn run() {
    let (agent, control) = common::agent_and_control().await;
    let manager = Manager::new(ManagerConfig {
        max_running: 256,
        log_max_bytes: 512 << 20,
        state_max_bytes: 8 << 30,
        ..ManagerConfig::default()
    });
    let app = api::router(AppState::new(manager.clone()));
    for l in agent.listen(4).unwrap() {
        tokio::spawn(api::serve::serve(
            l,
            app.clone(),
            api::serve::ServeConfig::default(),
            tokio_util::sync::CancellationToken::new(),
        ));
    }
    let conn: Conn = AgentConn::new(
        control.connector(),
        "100.64.0.10:4".parse().unwrap(),
        AgentOptions::default(),
    );
    let mut base = rtt(&conn, 200).await;
    let (rtt50, rtt99) = (pct(&mut base, 0.5), pct(&mut base, 0.99));
    println!("| figure | ours | baseline (same run) | ratio |\n|---|---|---|---|");

    // 1. Follow throughput of a finished log vs a local read of the same file.
    let size: u64 = 256 << 20;
    let id = start(&conn, cmd(&format!("head -c {size} /dev/zero"))).await;
    conn.output(&id, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    let t = Instant::now();
    let mut got = 0u64;
    let mut s = std::pin::pin!(conn.follow(&id, 0));
    while let Some(c) = s.next().await {
        got += c.unwrap().len() as u64;
    }
    let tunnel = got as f64 / t.elapsed().as_secs_f64() / 1e6;
    assert_eq!(got, size);
    let path = manager.state_dir().join("logs").join(format!("{id}.log"));
    let f = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let t = Instant::now();
    let mut off = 0u64;
    while off < size {
        off += f.read_at(&mut buf, off).unwrap() as u64;
    }
    let local = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    println!(
        "| follow a finished 256 MiB log | {tunnel:.0} MB/s through the tunnel | local pread of the log file, 64 KiB chunks: {local:.0} MB/s | {:.3} |",
        tunnel / local
    );
    conn.remove(&id).await.unwrap();

    // 2. First-byte latency of printed lines (the process prints its clock).
    let id = start(
        &conn,
        cmd("for i in $(seq 200); do date +%s%N; sleep 0.01; done"),
    )
    .await;
    let mut s = std::pin::pin!(conn.follow(&id, 0));
    let mut lat = Vec::new();
    let mut pending = Vec::new();
    while let Some(c) = s.next().await {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as f64;
        pending.extend_from_slice(&c.unwrap());
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            if let Ok(ns) = String::from_utf8_lossy(&line).trim().parse::<f64>() {
                lat.push((now - ns) / 1e3);
            }
        }
    }
    let (l50, l99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    println!(
        "| first byte of a printed line (n={}) | p50 {l50:.0} µs, p99 {l99:.0} µs | API round trip `GET /health`: p50 {rtt50:.0} µs, p99 {rtt99:.0} µs | {:.2} / {:.2} |",
        lat.len(),
        l50 / rtt50,
        l99 / rtt99
    );

    // 3. stdin → output echo through `cat`.
    let id = start(
        &conn,
        StartProcessRequest {
            stdin: Some("pipe".into()),
            ..cmd("cat")
        },
    )
    .await;
    let mut s = std::pin::pin!(conn.follow(&id, 0));
    let mut seen = Vec::new();
    let mut echo = Vec::new();
    for i in 0..200 {
        let msg = format!("ping-{i}\n");
        let t = Instant::now();
        conn.stdin(&id, Bytes::from(msg.clone()), false)
            .await
            .unwrap();
        until(&mut s, &mut seen, msg.as_bytes()).await;
        echo.push(t.elapsed().as_secs_f64() * 1e6);
    }
    conn.stdin(&id, Bytes::new(), true).await.unwrap();
    let (e50, e99) = (pct(&mut echo, 0.5), pct(&mut echo, 0.99));
    println!(
        "| stdin → output echo through `cat` (n=200) | p50 {e50:.0} µs, p99 {e99:.0} µs | API round trip: p50 {rtt50:.0} µs, p99 {rtt99:.0} µs | {:.2} / {:.2} |",
        e50 / rtt50,
        e99 / rtt99
    );

    // 4. A keystroke echoed by a terminal (the exec -t path: POST stdin, echo on the follow).
    let id = start(
        &conn,
        StartProcessRequest {
            pty: Some(TerminalSize { rows: 24, cols: 80 }),
            ..cmd("exec cat")
        },
    )
    .await;
    let mut s = std::pin::pin!(conn.follow(&id, 0));
    let mut seen = Vec::new();
    let mut keys_lat = Vec::new();
    for i in 0..200u32 {
        let key = [b'a' + (i % 26) as u8];
        let want = format!("{}{}", seen.len(), "");
        let _ = want;
        let before = seen.len();
        let t = Instant::now();
        conn.stdin(&id, Bytes::copy_from_slice(&key), false)
            .await
            .unwrap();
        while seen.len() == before || !seen[before..].contains(&key[0]) {
            let c = s.next().await.unwrap().unwrap();
            seen.extend_from_slice(&c);
        }
        keys_lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    conn.signal(&id, wgagent::signal::Signal::Kill)
        .await
        .unwrap();
    let (k50, k99) = (pct(&mut keys_lat, 0.5), pct(&mut keys_lat, 0.99));
    println!(
        "| keystroke echoed by a pty (`exec -t` path, n=200) | p50 {k50:.0} µs, p99 {k99:.0} µs | API round trip: p50 {rtt50:.0} µs | {:.2} |",
        k50 / rtt50
    );

    // 5. RSS: 100 processes writing 32 MiB each concurrently, 100 followers through the tunnel.
    let before = rss_mib();
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(start(&conn, cmd("head -c 33554432 /dev/zero")).await);
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for id in ids.clone() {
        let conn = conn.clone();
        let peak = peak.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut s = std::pin::pin!(conn.follow(&id, 0));
            while let Some(c) = s.next().await {
                n += c.unwrap().len() as u64;
                let r = (rss_mib() * 1024.0) as u64;
                peak.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
    println!(
        "| RSS, 100 writers × 32 MiB + 100 followers (agent and control in one process) | peak {peak:.1} MiB, {:.0} MB/s followed in all | idle before: {before:.1} MiB | +{:.1} MiB |",
        total as f64 / secs / 1e6,
        peak - before
    );
    assert_eq!(total, 100 * (32 << 20));
    for id in ids {
        let _ = conn.remove(&id).await;
    }
}
