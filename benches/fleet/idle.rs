//! `--only idle`: the control daemon with idle sessions dropped (`[interface]
//! idle_session_timeout`, the daemon's default 2 minutes) against the same daemon keeping every
//! session (`idle_session_timeout = 0`), same run, N simulated agents each.
//!
//! Each variant runs in its own child process (`fleet --idle-variant T N`), so that neither
//! inherits the other's heap: control RSS per peer once every agent handshaked and the fleet
//! idled for a while (as the allocator holds it, and after `malloc_trim`), peers holding a
//! session, idle CPU, and the latency of a first request to an agent (new tunnel TCP
//! connection; with sessions dropped, one WireGuard handshake more) and of a second one (pooled
//! connection, live session).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    ControlSetup, Fleet, Probe, daemon_connection, handshaked, idle_cpu, pct, probe, rss,
    until_handshaked,
};

/// Agents asked for the latency figures (fewer than the daemon's 128 pooled agents, so the
/// second request finds its connection pooled).
const PROBES: usize = 100;
/// How long the fleet idles after the last handshake before memory is read: longer than the
/// handshake grace (10 s), after which a session that carried no data is dropped.
const SETTLE: Duration = Duration::from_secs(25);

/// Runs both variants for `n` agents and prints the comparison.
pub fn compare(n: usize) {
    println!("\n## idle sessions: dropped after idle_session_timeout vs kept, {n} agents");
    let mut results = Vec::new();
    for (label, timeout) in [("kept (0)", "0"), ("dropped (default 2m)", "")] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--idle-variant", timeout, &n.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut r = HashMap::new();
        for line in BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(kv) = line.strip_prefix("RESULT ") {
                for pair in kv.split_whitespace() {
                    if let Some((k, v)) = pair.split_once('=') {
                        r.insert(k.to_owned(), v.parse::<f64>().unwrap_or(f64::NAN));
                    }
                }
            } else {
                println!("[{label}] {line}");
            }
        }
        let _ = child.wait();
        results.push((label, r));
    }
    let get = |i: usize, k: &str| results[i].1.get(k).copied().unwrap_or(f64::NAN);
    println!(
        "| | sessions kept | sessions dropped when idle (default) | ratio |\n|---|---|---|---|"
    );
    for (k, what, unit) in [
        (
            "configured_b",
            "RSS per peer, configured, none talking",
            "B",
        ),
        (
            "idle_b",
            "RSS per peer, all handshaked, then idle 25 s",
            "B",
        ),
        ("idle_trim_b", "same, after malloc_trim", "B"),
        ("sessions", "peers holding a session then", ""),
        ("cpu_idle", "idle CPU, % of one core", ""),
        ("first_p50_ms", "first request to an agent, p50 ms", ""),
        ("first_p99_ms", "first request to an agent, p99 ms", ""),
        (
            "warm_p50_ms",
            "second request (pooled, live session), p50 ms",
            "",
        ),
        ("handshake_s", "all handshakes completed, s", ""),
    ] {
        let (a, b) = (get(0, k), get(1, k));
        println!("| {what} | {a:.2}{unit} | {b:.2}{unit} | {:.2} |", b / a);
    }
}

/// One variant (the child process): `timeout` is the `idle_session_timeout` value ("" = the
/// daemon's default).
pub async fn variant(timeout: &str, n: usize) {
    let line = if timeout.is_empty() {
        String::new()
    } else {
        format!("idle_session_timeout = \"{timeout}\"\n")
    };
    let setup = ControlSetup::new(n, &line);

    trim();
    let rss0 = rss();
    let d = setup.start().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = rss();

    let t0 = Instant::now();
    let fleet = Fleet::spawn(n, setup.seed, setup.control, &setup.control_pub);
    let hs = until_handshaked(&d, n, Duration::from_secs(180)).await;
    println!(
        "all {n} handshaked: {}",
        hs.map_or("NO (180 s limit)".into(), |t| format!("{t:.2?}"))
    );
    let t_hs = t0.elapsed();
    tokio::time::sleep(SETTLE).await;
    let wg = d.node().stats().wg;
    let rss2 = rss();
    trim();
    let rss3 = rss();
    let no_session: u64 = wg.peers.iter().map(|p| p.drop_no_session).sum();
    println!(
        "{SETTLE:?} after: {} of {n} peers hold a session ({} dropped idle; {no_session} keepalives into dropped sessions); RSS {:.1} MiB ({:.1} MiB after malloc_trim), {:.1} MiB before the daemon",
        wg.device.sessions,
        wg.device.sessions_dropped_idle,
        rss2 as f64 / 1048576.0,
        rss3 as f64 / 1048576.0,
        rss0 as f64 / 1048576.0,
    );
    let cpu = idle_cpu(Duration::from_secs(10)).await;

    // Latency: PROBES agents spread over the fleet, one after another through one keep-alive
    // connection to the daemon's socket; then the same agents again.
    let probes: Vec<usize> = (0..PROBES).map(|k| k * n / PROBES).collect();
    let mut send = daemon_connection(&setup.socket).await;
    let mut passes = Vec::new();
    let mut failures = 0;
    for _ in 0..2 {
        let mut lat = Vec::new();
        for &i in &probes {
            let t = Instant::now();
            if probe(&mut send, i).await == Probe::Answered {
                lat.push(t.elapsed());
            } else {
                failures += 1;
            }
        }
        lat.sort();
        passes.push(lat);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "first request to each of {PROBES} agents: p50 {:.2?}, p99 {:.2?}; second: p50 {:.2?}, p99 {:.2?}; {failures} failures; idle CPU {cpu:.2} %; {} handshakes in all",
        pct(&passes[0], 0.5),
        pct(&passes[0], 0.99),
        pct(&passes[1], 0.5),
        pct(&passes[1], 0.99),
        handshaked(&d),
    );
    let per = |r: u64| r.saturating_sub(rss0) as f64 / n as f64;
    println!(
        "RESULT configured_b={:.0} idle_b={:.0} idle_trim_b={:.0} sessions={} cpu_idle={cpu:.3} first_p50_ms={:.3} first_p99_ms={:.3} warm_p50_ms={:.3} handshake_s={:.2} failures={failures}",
        per(rss1),
        per(rss2),
        per(rss3),
        wg.device.sessions,
        ms(pct(&passes[0], 0.5)),
        ms(pct(&passes[0], 0.99)),
        ms(pct(&passes[1], 0.5)),
        hs.unwrap_or(t_hs).as_secs_f64(),
    );
    d.shutdown(Duration::from_secs(10)).await;
    drop(fleet);
}

/// Hands the allocator's free pages back to the OS (glibc), so RSS shows live memory.
fn trim() {
    // SAFETY: malloc_trim has no preconditions; it locks the arenas itself.
    unsafe {
        libc::malloc_trim(0);
    }
}
