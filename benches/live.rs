//! Live peers, measured against baselines in the same run:
//!
//! 1. `uapi` (root: `wg` only finds sockets in /var/run/wireguard, and wireguard-go needs a TUN
//!    device, created in a network namespace of its own): a node with 1,000 peers. Time of
//!    `wg set IF peer NEW allowed-ips …` (one peer added), of `wg show IF dump`, and of the same
//!    two operations as raw UAPI requests on the socket (no `wg` process), for the real
//!    `wgagent agent` and for Debian's `wireguard-go`, alternating.
//! 2. `churn` (no root): bulk TCP throughput of one stream between two in-process nodes while
//!    100 other peers are added and removed through the agent's UAPI socket, against the same
//!    stream undisturbed, alternating rounds. Two rates: the 100 peers added and removed once a
//!    second (a busy fleet), and back to back as fast as the socket answers (a stress test).
//!
//! Run: `cargo bench --bench live` (both), or `cargo bench --bench live -- churn`. Prints tables;
//! asserts nothing about times.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wgagent::agent::Agent;
use wgagent::config::{self, Config};
use wgagent::keys;
use wgagent::node::{Node, NodeConfig};
use wgagent::wg::{PeerConfig, PublicKey};

const CHILD_ENV: &str = "WGAGENT_LIVE_BENCH_CHILD";
const PEERS: usize = 1000;
const WG_SET_RUNS: usize = 60;
const WG_SHOW_RUNS: usize = 30;
const RAW_SET_RUNS: usize = 300;
const RAW_GET_RUNS: usize = 60;
/// Rounds of each implementation, interleaved (noise on a shared VM hits both alike).
const UAPI_ROUNDS: usize = 5;
const CHURN: usize = 100;
const STREAM_SECS: u64 = 4;
const STREAM_ROUNDS: usize = 5;
const CHUNK: usize = 128 * 1024;
const SINK_PORT: u16 = 5001;
const AGENT_IP: &str = "100.64.0.10";
const CONTROL_IP: &str = "100.64.0.1";

fn main() -> ExitCode {
    if std::env::var(CHILD_ENV).as_deref() == Ok("agent") {
        return wgagent::cli::main();
    }
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    if want("uapi") {
        match uapi_section() {
            Ok(()) => {}
            Err(e) => println!("uapi: SKIPPED or failed: {e:#}"),
        }
    }
    if want("churn") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        if let Err(e) = rt.block_on(churn_section()) {
            println!("churn: failed: {e:#}");
        }
    }
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------------
// 1. The UAPI with 1,000 peers, ours vs wireguard-go.

fn uapi_section() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("not root (wg only finds sockets in /var/run/wireguard; wireguard-go needs TUN)");
    }
    for tool in ["ip", "wg", "wireguard-go"] {
        if !which(tool) {
            bail!("{tool} not installed");
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("no /dev/net/tun");
    }
    std::fs::create_dir_all("/var/run/wireguard")?;
    let id = std::process::id() % 1_000_000;
    let dir = tempfile::tempdir()?;
    let peers: Vec<(String, String)> = (0..PEERS)
        .map(|i| {
            let public = keys::encode_public(&keys::public_key(&keys::generate()));
            (public, format!("10.{}.{}.1/32", 100 + i / 250, i % 250))
        })
        .collect();

    // Ours: the real agent (this binary as `wgagent agent`) with the peers in its file.
    let ours_if = format!("wgbl{id}a");
    let mut toml = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"{AGENT_IP}\"]\nname = \"{ours_if}\"\n\n\
         [api]\nstate_dir = \"{}\"\n\n[log]\nlevel = \"warn\"\n\n",
        keys::encode_private(&keys::generate()),
        dir.path().join("state").display()
    );
    for (public, allowed) in &peers {
        toml.push_str(&format!(
            "[[peer]]\npublic_key = \"{public}\"\nallowed_ips = [\"{allowed}\"]\n\n"
        ));
    }
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, toml)?;
    std::fs::set_permissions(
        &config_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let ours = Reaped(
        Command::new(std::env::current_exe()?)
            .args(["agent", "--config"])
            .arg(&config_path)
            .env(CHILD_ENV, "agent")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        None,
    );
    wait_socket(&ours_if)?;

    // wireguard-go in a namespace of its own, loaded with the same peers by `wg setconf`.
    let ns = format!("wgbl{id}");
    run("ip", &["netns", "add", &ns])?;
    let theirs_if = format!("wgbl{id}b");
    let theirs = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &ns, "wireguard-go", "-f", &theirs_if])
            .env("WG_PROCESS_FOREGROUND", "1")
            .env("LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        Some(ns),
    );
    wait_socket(&theirs_if)?;
    let mut conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 0\n\n",
        keys::encode_private(&keys::generate())
    );
    for (public, allowed) in &peers {
        conf.push_str(&format!(
            "[Peer]\nPublicKey = {public}\nAllowedIPs = {allowed}\n\n"
        ));
    }
    let conf_path = dir.path().join("wg.conf");
    std::fs::write(&conf_path, conf)?;
    run(
        "wg",
        &["setconf", &theirs_if, conf_path.to_str().context("path")?],
    )?;
    for name in [&ours_if, &theirs_if] {
        let lines = run("wg", &["show", name, "dump"])?.lines().count();
        if lines != PEERS + 1 {
            bail!("{name}: {lines} dump lines, expected {}", PEERS + 1);
        }
    }

    let mut figures = [Figures::default(), Figures::default()];
    for round in 0..UAPI_ROUNDS {
        for (i, name) in [&ours_if, &theirs_if].into_iter().enumerate() {
            measure(name, round, &mut figures[i])?;
        }
    }
    drop((ours, theirs));

    println!(
        "\nUAPI with {PEERS} peers (median of {UAPI_ROUNDS} interleaved rounds; lower is better)\n"
    );
    println!("| operation | wgagent | wireguard-go | ratio |");
    println!("|---|---|---|---|");
    let [o, t] = &figures;
    for (what, a, b) in [
        (
            "`wg set` adding one peer (process included)",
            &o.wg_set,
            &t.wg_set,
        ),
        ("`wg show dump` (process included)", &o.wg_show, &t.wg_show),
        ("raw UAPI `set` adding one peer", &o.raw_set, &t.raw_set),
        ("raw UAPI `get`", &o.raw_get, &t.raw_get),
    ] {
        let (a, b) = (median(a), median(b));
        println!("| {what} | {} | {} | {:.2} |", fmt_us(a), fmt_us(b), a / b);
    }
    println!(
        "\n`get` reply size: wgagent {} bytes, wireguard-go {} bytes",
        o.get_bytes, t.get_bytes
    );
    Ok(())
}

#[derive(Default)]
struct Figures {
    /// Microseconds per operation.
    wg_set: Vec<f64>,
    wg_show: Vec<f64>,
    raw_set: Vec<f64>,
    raw_get: Vec<f64>,
    get_bytes: usize,
}

fn measure(name: &str, round: usize, f: &mut Figures) -> Result<()> {
    let fresh = || keys::encode_public(&keys::public_key(&keys::generate()));
    for i in 0..WG_SET_RUNS {
        let key = fresh();
        let allowed = format!("10.250.{round}.{i}/32");
        let t = Instant::now();
        run("wg", &["set", name, "peer", &key, "allowed-ips", &allowed])?;
        f.wg_set.push(t.elapsed().as_secs_f64() * 1e6);
        run("wg", &["set", name, "peer", &key, "remove"])?;
    }
    for _ in 0..WG_SHOW_RUNS {
        let t = Instant::now();
        let out = run("wg", &["show", name, "dump"])?;
        f.wg_show.push(t.elapsed().as_secs_f64() * 1e6);
        if out.lines().count() != PEERS + 1 {
            bail!("{name}: wrong dump");
        }
    }
    let path = socket(name);
    for i in 0..RAW_SET_RUNS {
        let key = keys::decode_public(&fresh())?;
        let hex = to_hex(&key);
        let add = format!(
            "set=1\npublic_key={hex}\nallowed_ip=10.251.{round}.{}/32\n\n",
            i % 250
        );
        let t = Instant::now();
        let reply = uapi(&path, &add)?;
        f.raw_set.push(t.elapsed().as_secs_f64() * 1e6);
        if reply != "errno=0\n\n" {
            bail!("{name}: set answered {reply:?}");
        }
        uapi(&path, &format!("set=1\npublic_key={hex}\nremove=true\n\n"))?;
    }
    for _ in 0..RAW_GET_RUNS {
        let t = Instant::now();
        let reply = uapi(&path, "get=1\n\n")?;
        f.raw_get.push(t.elapsed().as_secs_f64() * 1e6);
        f.get_bytes = reply.len();
    }
    Ok(())
}

/// One request on a new connection; the reply up to its `errno=` line and blank line.
fn uapi(path: &Path, request: &str) -> Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut out = Vec::with_capacity(1 << 20);
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"\n\n") && out.windows(6).any(|w| w == b"errno=") {
            break;
        }
    }
    Ok(String::from_utf8(out)?)
}

fn to_hex(key: &PublicKey) -> String {
    key.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn socket(name: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{name}.sock"))
}

fn wait_socket(name: &str) -> Result<()> {
    let path = socket(name);
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&path).is_err() {
        if Instant::now() > deadline {
            bail!("no UAPI socket {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Kills and reaps a child on drop; deletes its namespace if it has one.
struct Reaped(Child, Option<String>);

impl Drop for Reaped {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(ns) = &self.1 {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
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

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A stream's throughput while 100 peers come and go.

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

async fn churn_section() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("churn.sock");
    let (ak, ck) = (keys::generate(), keys::generate());
    let mut cfg = Config::new(ak.clone(), vec![ip(AGENT_IP)]);
    cfg.interface.uapi_socket = Some(sock.clone());
    cfg.api.state_dir = Some(dir.path().join("state"));
    cfg.peers.push(config::Peer {
        name: Some("control".into()),
        public_key: keys::public_key(&ck),
        preshared_key: None,
        allowed_ips: vec![format!("{CONTROL_IP}/32").parse()?],
        endpoint: None,
        persistent_keepalive: None,
        access: Default::default(),
    });
    let agent = Agent::start(&cfg).await?;
    let control = Node::start(NodeConfig {
        threads: 0,
        private_key: ck,
        addresses: vec![ip(CONTROL_IP)],
        listen_port: 0,
        mtu: wgagent::netstack::DEFAULT_MTU,
        tcp_buffer: wgagent::netstack::DEFAULT_TCP_BUFFER,
        connect_timeout: Duration::from_secs(10),
        limits: Default::default(),
        peers: vec![PeerConfig {
            name: None,
            public_key: keys::public_key(&ak),
            preshared_key: None,
            allowed_ips: vec![format!("{AGENT_IP}/32").parse()?],
            endpoint: Some(SocketAddr::new(ip("127.0.0.1"), agent.udp_addr().port())),
            persistent_keepalive: None,
        }],
    })
    .await?;
    let churn_keys: Vec<String> = (0..CHURN)
        .map(|_| to_hex(&keys::public_key(&keys::generate())))
        .collect();
    // Warm up: handshake and connection setup out of the measurement.
    stream(agent.node(), &control, 1).await?;

    let mut quiet = Vec::new();
    // (Mbit/s, peer changes per second) per round, for the paced and the back-to-back churn.
    let (mut paced, mut stress) = (Vec::new(), Vec::new());
    for _ in 0..STREAM_ROUNDS {
        quiet.push(stream(agent.node(), &control, STREAM_SECS).await?);
        for (period, into) in [
            (Some(Duration::from_secs(1)), &mut paced),
            (None, &mut stress),
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let churner = {
                let (stop, done, sock, keys) = (
                    Arc::clone(&stop),
                    Arc::clone(&done),
                    sock.clone(),
                    churn_keys.clone(),
                );
                tokio::task::spawn_blocking(move || churn(&sock, &keys, &stop, &done, period))
            };
            let t = Instant::now();
            let rate = stream(agent.node(), &control, STREAM_SECS).await;
            stop.store(true, Ordering::Relaxed);
            let elapsed = t.elapsed();
            churner.await??;
            into.push((
                rate?,
                done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
            ));
            if agent.node().peers().len() != 1 {
                bail!("churn left {} peers", agent.node().peers().len());
            }
        }
    }
    let q = mean(&quiet);
    println!(
        "\nStream throughput while {CHURN} peers are added and removed through the UAPI socket \
         ({STREAM_ROUNDS} rounds × {STREAM_SECS} s each, the three runs alternating)\n"
    );
    println!("| run | peer changes/s | Mbit/s per round | mean | ratio to undisturbed |");
    println!("|---|---|---|---|---|");
    println!("| undisturbed | 0 | {} | {q:.0} | 1.000 |", list(&quiet));
    for (what, runs) in [
        ("100 peers added + removed every second", &paced),
        ("100 peers added + removed back to back", &stress),
    ] {
        let rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let ops: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let m = mean(&rates);
        println!(
            "| {what} | {:.0} | {} | {m:.0} | {:.3} |",
            mean(&ops),
            list(&rates),
            m / q
        );
    }
    println!("\n(each peer change is one UAPI `set` on its own connection to the agent's socket)");
    agent.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Adds the `keys` one by one, then removes them one by one, until `stop`; with a `period`, one
/// such cycle per period.
fn churn(
    sock: &Path,
    keys: &[String],
    stop: &AtomicBool,
    done: &AtomicU64,
    period: Option<Duration>,
) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let cycle = Instant::now();
        for (i, k) in keys.iter().enumerate() {
            let reply = uapi(
                sock,
                &format!(
                    "set=1\npublic_key={k}\nallowed_ip=10.60.{}.{}/32\n\n",
                    i / 250,
                    i % 250
                ),
            )?;
            if reply != "errno=0\n\n" {
                bail!("churn add: {reply:?}");
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
        for k in keys {
            uapi(sock, &format!("set=1\npublic_key={k}\nremove=true\n\n"))?;
            done.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(period) = period {
            // Bounded: at most one period, in short steps so that `stop` is seen promptly.
            while cycle.elapsed() < period && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

/// One stream control → agent for `secs`; Mbit/s as the receiver counted it.
async fn stream(agent: &Node, control: &Node, secs: u64) -> Result<f64> {
    let mut listener = agent.listen(SINK_PORT)?.remove(0);
    let recv = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        let mut first = None;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            got += n as u64;
        }
        let elapsed = first.map_or(Duration::ZERO, |t: Instant| t.elapsed());
        anyhow::Ok((got, elapsed))
    });
    let mut s = control
        .connect(SocketAddr::new(ip(AGENT_IP), SINK_PORT))
        .await?;
    let buf = vec![0x5au8; CHUNK];
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        s.write_all(&buf).await?;
    }
    s.shutdown().await?;
    let (bytes, elapsed) = tokio::time::timeout(Duration::from_secs(30), recv).await???;
    drop(s);
    Ok(bytes as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9) / 1e6)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
