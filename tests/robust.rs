//! Robustness through a real `wireguard-go` peer (root only): the real `wgagent agent` binary
//! in one network namespace, `wireguard-go` + `wg` peers in others, `curl` and raw sockets
//! through their TUN interfaces.
//!
//! - `lossy_link_start_and_wait`: a UDP relay in the agent's namespace drops and delays the
//!   datagrams between peer B and the agent (this kernel has no `sch_netem`); sequential
//!   start+wait calls (each a new `curl`, so new TCP connections and SYNs) at 0 %, 5 %/20 ms
//!   and 15 %/50 ms all succeed, and so does a 900 KB request body at 15 %/50 ms. Prints the
//!   success rate and median/p99 latency of each phase (`WGAGENT_LOSS_ITERATIONS` sets the
//!   count, 40 by default; BENCHMARKS.md runs more).
//! - `one_peer_cannot_lock_out_another`: peer B opens 1,100 connections with partial requests;
//!   the agent holds at most its per-peer cap, peer C is served meanwhile, the agent closes the
//!   partial requests within its header timeout, and its RSS returns near the idle figure.
//!
//! `WGAGENT_AGENT_BIN` runs another agent binary (e.g. an older build, for a baseline);
//! `WGAGENT_ROBUST_BASELINE=1` makes the lock-out test only print its figures (no new config
//! keys, no assertions), for such a binary.
//! Prints `SKIP robust: <reason>` and passes when not root or a tool is missing.

#[path = "common/lab.rs"]
mod lab;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/relay.rs"]
mod relay;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lab::API;
use netns::{Lab, STEP, wait_for};
use relay::{Impairment, Relay};
use serde_json::Value;

const AGENT_PORT: u16 = 51820;
/// The agent's header timeout in the lock-out test (short, so the test is too).
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// An agent in namespace `a` and one wireguard-go peer per entry of `peers` (each in its own
/// namespace, tunnel address 100.64.0.<k>, reaching the agent at the given endpoint).
struct Setup {
    lab: Lab,
    a: String,
    peers: Vec<String>,
    agent_pid: u32,
}

fn agent_bin() -> String {
    std::env::var("WGAGENT_AGENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wgagent").into())
}

/// Builds the lab, or `None` (after printing why) where it cannot run. `endpoint(k)` is the
/// address peer `k` (1-based) sends to; `api_extra` goes into the agent's `[api]` section.
fn setup(
    prefix: &str,
    n: usize,
    endpoint: impl Fn(usize) -> String,
    api_extra: &str,
) -> Option<Setup> {
    let why_not = lab::tunnel_prerequisites(&["ip", "wg", "wireguard-go", "curl"]);
    let (mut lab, a) = lab::open("robust", why_not, prefix, "a")?;
    let dir = lab.dir.path().to_owned();
    let key = |name: &str| {
        let path = dir.join(format!("{name}.key"));
        lab::genkey("wg", &path);
        let public = lab::pubkey("wg", &path);
        (path.to_str().unwrap().to_owned(), public)
    };
    let (_, agent_pub) = key("agent");
    let mut peers = Vec::new();
    let mut peer_blocks = String::new();
    for k in 1..=n {
        let ns = lab.namespace(&format!("p{k}")).expect("namespace");
        lab.veth(
            &a,
            &format!("va{k}"),
            &format!("10.213.{k}.1/30"),
            &ns,
            "vb",
            &format!("10.213.{k}.2/30"),
        );
        let (priv_path, public) = key(&format!("peer{k}"));
        let ifname = format!("{}w{k}", lab.tag);
        let (ep, address) = (endpoint(k), format!("100.64.0.{k}/24"));
        let peer = lab::Peer {
            ns: &ns,
            ifname: &ifname,
            key_file: &priv_path,
            listen_port: None,
            agent_pub: &agent_pub,
            endpoint: Some(ep.as_str()),
            address: &address,
        };
        lab::wireguard_go_peer(&mut lab, &peer);
        peer_blocks.push_str(&format!(
            "\n[[peer]]\nname = \"peer-{k}\"\npublic_key = \"{public}\"\nallowed_ips = [\"100.64.0.{k}/32\"]\n"
        ));
        peers.push(ns);
    }
    let config = format!(
        "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"100.64.0.10\"]\n\
         listen_port = {AGENT_PORT}\nuapi = false\n\n[api]\nshutdown_grace = \"1s\"\nstate_dir = \"{}\"\n{api_extra}\n{peer_blocks}",
        dir.join("state").display()
    );
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config).unwrap();
    let bin = agent_bin();
    let mut cmd = Lab::command(
        &a,
        &[&bin, "agent", "--config", config_path.to_str().unwrap()],
    );
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    let agent_pid = lab.spawn("agent", cmd);
    let up = wait_for(STEP, || {
        lab.log("agent").contains("agent up") || lab.exited("agent").is_some()
    });
    assert!(up && lab.exited("agent").is_none(), "agent did not start");
    Some(Setup {
        lab,
        a,
        peers,
        agent_pid,
    })
}

/// One API call from `ns`; Err carries curl's complaint (e.g. a reset).
fn call(lab: &Lab, ns: &str, path: &str, body: Option<&str>) -> Result<(u16, Value), String> {
    let out = lab::curl_api(lab, ns, path, body, "90", Duration::from_secs(100));
    if !out.ok() {
        return Err(format!("curl exit {:?}: {}", out.code, out.stderr.trim()));
    }
    Ok(lab::status_and_json(&out)?)
}

/// Starts `echo run-<i>` and waits for it server-side; checks the output.
fn start_and_wait(lab: &Lab, ns: &str, i: usize) -> Result<(), String> {
    let body = format!(r#"{{"command":"echo run-{i}"}}"#);
    let (status, started) = call(lab, ns, "/api/v0/processes/start", Some(&body))?;
    if status != 200 {
        return Err(format!("start: {status} {started}"));
    }
    let id = started["id"].as_str().ok_or("no id")?.to_owned();
    let path = format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=30000");
    let (status, out) = call(lab, ns, &path, None)?;
    if status != 200 || out["output"] != format!("run-{i}\n") || out["exit_code"] != 0 {
        return Err(format!("output: {status} {out}"));
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The impairments of `lossy_link_start_and_wait`: (loss, one-way delay in ms), one peer each.
const PHASES: [(f64, u64); 3] = [(0.0, 0), (0.05, 20), (0.15, 50)];

/// `n` sequential start+wait calls from `ns`: their latencies and failures.
fn phase(lab: &Lab, ns: &str, n: usize) -> (Vec<Duration>, Vec<String>) {
    let mut times = Vec::new();
    let mut errors = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        match start_and_wait(lab, ns, i) {
            Ok(()) => times.push(t.elapsed()),
            Err(e) => errors.push(format!("#{i}: {e}")),
        }
    }
    times.sort();
    (times, errors)
}

/// A 900 KB start request (eight environment values of 112,000 bytes) and its result.
fn big_body(lab: &Lab, ns: &str) -> Result<(), String> {
    let env: serde_json::Map<String, Value> = (0..8)
        .map(|k| (format!("PAD{k}"), Value::String("a".repeat(112_000))))
        .collect();
    let big = serde_json::json!({"command": "printenv | grep -c '^PAD'", "env": env});
    let body_path = lab.dir.path().join(format!("big-{ns}.json"));
    std::fs::write(&body_path, big.to_string()).unwrap();
    let body = format!("@{}", body_path.display());
    let (status, started) = call(lab, ns, "/api/v0/processes/start", Some(&body))?;
    let id = started["id"]
        .as_str()
        .ok_or(format!("{status} {started}"))?;
    let path = format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=30000");
    let (_, out) = call(lab, ns, &path, None)?;
    (out["output"] == "8\n")
        .then_some(())
        .ok_or(format!("{out}"))
}

#[test]
fn lossy_link_start_and_wait() {
    let t0 = Instant::now();
    // Peer k sends to its relay in the agent's namespace, which forwards to the agent.
    let front = |k: usize| format!("10.213.{k}.1:51900");
    let Some(s) = setup("wgl", PHASES.len(), front, "") else {
        return;
    };
    let relays: Vec<Relay> = (1..=PHASES.len())
        .map(|k| {
            let addr: SocketAddr = front(k).parse().unwrap();
            netns::in_namespace(&s.a, move || {
                Relay::start(
                    addr,
                    SocketAddr::from(([127, 0, 0, 1], AGENT_PORT)),
                    k as u64,
                )
                .expect("relay")
            })
            .join()
            .unwrap()
        })
        .collect();
    // The first request also completes each WireGuard handshake (on a clean link).
    for ns in &s.peers {
        let ok = wait_for(Duration::from_secs(30), || {
            call(&s.lab, ns, "/api/v0/health", None).is_ok_and(|(st, _)| st == 200)
        });
        assert!(ok, "{ns}: no answer through the relay");
    }
    let n: usize = std::env::var("WGAGENT_LOSS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    // The phases run at once from their own peers (each phase's calls are sequential), unless
    // WGAGENT_LOSS_SERIAL is set (cleaner latency figures, three times the wall time).
    let serial = std::env::var_os("WGAGENT_LOSS_SERIAL").is_some();
    for (relay, (loss, delay)) in relays.iter().zip(PHASES) {
        relay.set(Impairment {
            loss,
            delay: Duration::from_millis(delay),
        });
    }
    let results: Vec<(Vec<Duration>, Vec<String>)> = std::thread::scope(|scope| {
        if serial {
            return s.peers.iter().map(|ns| phase(&s.lab, ns, n)).collect();
        }
        let handles: Vec<_> = s
            .peers
            .iter()
            .map(|ns| {
                let lab = &s.lab;
                scope.spawn(move || phase(lab, ns, n))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failed = Vec::new();
    for ((loss, delay), (times, errors)) in PHASES.iter().zip(&results) {
        println!(
            "robust: loss {:.0}% delay {delay} ms: {}/{n} start+wait ok, median {:?}, p99 {:?}, max {:?}",
            loss * 100.0,
            times.len(),
            percentile(times, 0.5),
            percentile(times, 0.99),
            times.last().copied().unwrap_or_default(),
        );
        if !errors.is_empty() {
            failed.push(format!("loss {loss}: {errors:?}"));
        }
    }
    let t = Instant::now();
    let lossiest = s.peers.last().expect("peers");
    let result = big_body(&s.lab, lossiest);
    println!(
        "robust: 900 KB body at 15% / 50 ms: {result:?} in {:?}",
        t.elapsed()
    );
    if let Err(e) = result {
        failed.push(format!("900 KB body: {e}"));
    }
    let count = |f: fn(&relay::RelayCounters) -> &std::sync::atomic::AtomicU64| {
        relays
            .iter()
            .map(|r| f(&r.counters).load(std::sync::atomic::Ordering::Relaxed))
            .sum::<u64>()
    };
    println!(
        "robust: relays relayed {} datagrams, dropped {}; done in {:?}",
        count(|c| &c.relayed),
        count(|c| &c.dropped),
        t0.elapsed()
    );
    assert!(failed.is_empty(), "failures: {failed:#?}");
}

#[test]
fn one_peer_cannot_lock_out_another() {
    let t0 = Instant::now();
    // Baseline mode (an older agent through WGAGENT_AGENT_BIN): no new keys, figures only.
    let baseline = std::env::var_os("WGAGENT_ROBUST_BASELINE").is_some();
    let extra = match baseline {
        true => String::new(),
        false => format!("header_timeout = \"{}s\"", HEADER_TIMEOUT.as_secs()),
    };
    let Some(s) = setup("wgk", 2, |k| format!("10.213.{k}.1:{AGENT_PORT}"), &extra) else {
        return;
    };
    let (b, c) = (&s.peers[0], &s.peers[1]);
    for ns in [b, c] {
        let ok = wait_for(Duration::from_secs(30), || {
            call(&s.lab, ns, "/api/v0/health", None).is_ok_and(|(st, _)| st == 200)
        });
        assert!(ok, "{ns}: no answer");
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle = netns::rss(s.agent_pid);

    // Peer B: 1,100 connections, each with a request that stops in the middle of its headers.
    let opened = Instant::now();
    let abuse = netns::in_namespace(b, || {
        let api: SocketAddr = "100.64.0.10:4".parse().unwrap();
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..1100 {
            match TcpStream::connect_timeout(&api, Duration::from_secs(5)) {
                Ok(mut s) => {
                    s.write_all(b"POST /api/v0/processes/start HTTP/1.1\r\nhost: agent\r\ncontent-length: 100\r\n")
                        .unwrap();
                    held.push(s);
                }
                Err(_) => refused += 1,
            }
        }
        (held, refused)
    });
    let (held, refused) = abuse.join().unwrap();
    let opening = opened.elapsed();
    let under = netns::rss(s.agent_pid);
    println!(
        "robust: peer B opened {} of 1100 connections ({refused} refused) in {opening:?}",
        held.len()
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if baseline {
        let out = lab::curl_within(
            &s.lab,
            c,
            &["--max-time", "5", &format!("{API}/api/v0/health")],
            STEP,
        );
        println!("robust (baseline): peer C while B holds its connections: {out:?}");
        drop(held);
        std::thread::sleep(Duration::from_secs(3));
        let after = netns::rss(s.agent_pid);
        println!(
            "robust (baseline): agent RSS idle {:.1} MiB, under 1,100 partial requests {:.1} MiB, after B closed them {:.1} MiB",
            mib(idle),
            mib(under),
            mib(after)
        );
        return;
    }
    assert!(
        held.len() <= 64,
        "more than the per-peer cap: {}",
        held.len()
    );
    if opening < HEADER_TIMEOUT {
        assert_eq!(held.len(), 64, "the cap, all held at once");
    }
    assert!(refused >= 1100 - 64);

    // Peer C is served meanwhile.
    let t = Instant::now();
    let (status, health) = call(&s.lab, c, "/api/v0/health", None).expect("peer C served");
    assert_eq!(status, 200, "{health}");
    println!(
        "robust: peer C served in {:?} while B held its cap",
        t.elapsed()
    );

    // The agent closes every partial request within its header timeout (+ margin).
    let deadline = opened + HEADER_TIMEOUT + Duration::from_secs(3);
    let mut closed = 0;
    for mut h in held {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        h.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 64];
        match h.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            other => panic!("partial request not closed by the agent in time: {other:?}"),
        }
    }
    println!(
        "robust: all {closed} partial requests closed by the agent by {:?}",
        opened.elapsed()
    );
    std::thread::sleep(Duration::from_secs(1));
    let after = netns::rss(s.agent_pid);
    println!(
        "robust: agent RSS idle {:.1} MiB, under 1,100 partial requests {:.1} MiB, after release {:.1} MiB ({:?})",
        mib(idle),
        mib(under),
        mib(after),
        t0.elapsed()
    );
    assert!(
        after <= idle + (4 << 20),
        "RSS not back near idle: {idle} -> {after}"
    );
    // And B can use the agent again.
    start_and_wait(&s.lab, b, 1).expect("peer B served after release");
}
