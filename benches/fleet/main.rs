//! Fleet benchmark: one control daemon and N simulated agents, 64 control replicas and one real
//! agent, and the daemon hop. Prints a report; asserts nothing about times.
//!
//! Run (as root for the 10,000-agent file-descriptor limit; under /work/bin/locked here):
//!   cargo bench --bench fleet                               # N = 1000 and 10000, all sections
//!   cargo bench --bench fleet -- --agents 1000 --only fleet # one N, one section
//!
//! Sections:
//! - `fleet`: a real `wgagent::control::Daemon` (node + socket) with N peers, and N simulated
//!   agents in a child process (see `sim.rs` for exactly what is simulated). Time until all N
//!   handshakes completed; control RSS per peer (configured vs handshaked, against the process
//!   before the daemon started); idle CPU of the control process with N handshaked peers (vs the
//!   same N configured and silent); `GET /health` round-robin over all N through the daemon's
//!   socket vs through in-process `AgentConn`s on the same node; handshake storm: the daemon
//!   restarts while the agents keep their keepalives, time until all are reachable again, with
//!   and without the daemon's saved endpoints (`[control] state_dir`).
//! - `replicas`: 64 control nodes (in this process) run the `execute` tool with `true`
//!   concurrently against one real agent (the `wgagent agent` binary in its own process) for a
//!   fixed time: commands/s, p50/p99, failures, vs 64 tasks spawning `sh -c true` locally in the
//!   same run.
//! - `hop`: `execute true` latency through an in-process `AgentConn` on the node, through the
//!   daemon's socket (`AgentConn<DaemonConnector>`), and the `wgagent exec` binary through the
//!   daemon, same agent, same run.

mod idle;
mod sim;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use wgagent::client::{AgentConn, AgentOptions, DaemonConnector};
use wgagent::config::Config;
use wgagent::control::{Daemon, DaemonOptions};
use wgagent::keys;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    raise_nofile();
    if args.first().map(String::as_str) == Some("--simulate") {
        let n: usize = args[1].parse().unwrap();
        let seed: u64 = args[2].parse().unwrap();
        let control: SocketAddr = args[3].parse().unwrap();
        let control_pub = keys::decode_public(&args[4]).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(sim::run(n, seed, control, control_pub));
        return;
    }
    if args.first().map(String::as_str) == Some("--idle-variant") {
        let timeout = args[1].clone();
        let n: usize = args[2].parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(idle::variant(&timeout, n));
        return;
    }
    let mut agents = vec![1000, 10000];
    let mut only: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--agents" => {
                i += 1;
                agents = args[i].split(',').map(|s| s.parse().unwrap()).collect();
            }
            "--only" => {
                i += 1;
                only = Some(args[i].clone());
            }
            _ => {} // `--bench` from cargo
        }
        i += 1;
    }
    let want = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("# fleet benchmark (2 cores; control and simulated agents on loopback)");
    if want("fleet") {
        for n in &agents {
            rt.block_on(fleet(*n));
        }
    }
    if want("idle") {
        for n in &agents {
            idle::compare(*n);
        }
    }
    if want("replicas") {
        rt.block_on(replicas());
    }
    if want("hop") {
        rt.block_on(hop());
    }
}

/// Raises the soft open-files limit to the hard one (10,000 agents = 10,000 UDP sockets).
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// CPU time (user + system) of this process so far.
fn cpu() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// CPU use of this process over `window`, as a percentage of one core.
async fn idle_cpu(window: Duration) -> f64 {
    let c0 = cpu();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    (cpu() - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A control daemon's files, key and UDP port, and its config naming `n` simulated agents
/// (their keys derived from `seed`).
struct ControlSetup {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    state: PathBuf,
    seed: u64,
    control_pub: String,
    /// Where the agents send: the daemon's UDP port on loopback.
    control: SocketAddr,
    cfg: Config,
}

impl ControlSetup {
    /// `interface`: more `[interface]` lines.
    fn new(n: usize, interface: &str) -> ControlSetup {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let state = dir.path().join("state");
        let seed: u64 = getrandom::u64().unwrap();
        let secret = keys::generate();
        let control_pub = keys::encode_public(&keys::public_key(&secret));
        let port = free_udp_port();
        let cfg = fleet_config(n, seed, &secret, port, &state, interface);
        ControlSetup {
            _dir: dir,
            socket,
            state,
            seed,
            control_pub,
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            cfg,
        }
    }

    /// Starts the daemon on this config and socket.
    async fn start(&self) -> Daemon {
        Daemon::start(&self.cfg, daemon_opts_from(&self.cfg, &self.socket))
            .await
            .unwrap()
    }
}

/// The control config for `n` simulated agents, with more `[interface]` lines.
fn fleet_config(
    n: usize,
    seed: u64,
    secret: &keys::StaticSecret,
    port: u16,
    state: &Path,
    interface: &str,
) -> Config {
    let mut text = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.1\"]\nlisten_port = {port}\nuapi = false\n{interface}\n\
         [control]\nstate_dir = \"{}\"\n",
        keys::encode_private(secret),
        state.display()
    );
    for i in 0..n {
        let public = keys::public_key(&sim::agent_secret(seed, i));
        text.push_str(&format!(
            "\n[[peer]]\nname = \"a{i}\"\npublic_key = \"{}\"\nallowed_ips = [\"{}/32\"]\n",
            keys::encode_public(&public),
            sim::agent_ip(i)
        ));
    }
    Config::parse(&text, Path::new("fleet.toml")).unwrap()
}

struct Fleet {
    child: Child,
}

impl Fleet {
    fn spawn(n: usize, seed: u64, control: SocketAddr, control_pub: &str) -> Fleet {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--simulate",
                &n.to_string(),
                &seed.to_string(),
                &control.to_string(),
                control_pub,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("fleet did not start");
        assert!(line.starts_with("ready"), "fleet: {line:?}");
        Fleet { child }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peers of the daemon's node with at least one handshake.
fn handshaked(d: &Daemon) -> usize {
    d.node()
        .stats()
        .wg
        .peers
        .iter()
        .filter(|p| p.handshakes > 0)
        .count()
}

/// Waits (polling every 100 ms, at most `limit`) until all `n` peers handshaked; the time.
async fn until_handshaked(d: &Daemon, n: usize, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if handshaked(d) >= n {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn daemon_opts(socket: &Path) -> DaemonOptions {
    DaemonOptions {
        socket: socket.to_owned(),
        socket_group: None,
        max_connections: 64,
        state_dir: None,
    }
}

const CONCURRENCY: usize = 32;

/// `GET /health` once on each of the `n` agents through the daemon's socket, `CONCURRENCY`
/// keep-alive connections to the socket at once. (rate per second, failures, elapsed).
async fn health_via_daemon(socket: &Path, n: usize) -> (f64, u64, Duration) {
    round(n, |w| {
        let socket = socket.to_owned();
        async move {
            let mut failures = 0;
            let mut send = None;
            for i in (w..n).step_by(CONCURRENCY) {
                let s = match send.as_mut() {
                    Some(s) => s,
                    None => send.insert(daemon_connection(&socket).await),
                };
                match probe(s, i).await {
                    Probe::Answered => continue,
                    Probe::Refused => {}
                    Probe::Broken => send = None,
                }
                failures += 1;
            }
            failures
        }
    })
    .await
}

/// One pass over the `n` agents by `CONCURRENCY` tasks, task `w` taking agents `w`,
/// `w + CONCURRENCY`, ... and returning how many failed. (rate per second, failures, elapsed).
async fn round<F, Fut>(n: usize, task: F) -> (f64, u64, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY).map(|w| tokio::spawn(task(w))).collect();
    let mut failures = 0;
    for t in tasks {
        failures += t.await.unwrap();
    }
    let el = t0.elapsed();
    (n as f64 / el.as_secs_f64(), failures, el)
}

/// A keep-alive HTTP/1 connection to the daemon's socket.
async fn daemon_connection(socket: &Path) -> SendRequest<Empty<Bytes>> {
    let s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("connection to the daemon socket ended: {e:?}");
        }
    });
    send
}

/// What one `GET /health` of agent `i` through a daemon socket connection gave.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// 200, body read.
    Answered,
    /// Another status (printed with the daemon's JSON error, which says why).
    Refused,
    /// The connection is gone: closed, failed, or no answer within 20 s (printed).
    Broken,
}

async fn probe(send: &mut SendRequest<Empty<Bytes>>, i: usize) -> Probe {
    // hyper refuses ("canceled") a request sent before the connection is ready again after
    // the previous response: that counted as failed requests before.
    if send.ready().await.is_err() {
        eprintln!("agent {i}: connection to the daemon socket closed");
        return Probe::Broken;
    }
    let req = hyper::Request::get(format!("/agents/{}:4/api/v0/health", sim::agent_ip(i)))
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(20), send.send_request(req)).await {
        Ok(Ok(r)) => {
            let st = r.status();
            let body = r.into_body().collect().await;
            if st != 200 {
                let b = body.map(|b| b.to_bytes()).unwrap_or_default();
                eprintln!("agent {i}: {st} {}", String::from_utf8_lossy(&b));
                Probe::Refused
            } else if body.is_ok() {
                Probe::Answered
            } else {
                eprintln!("agent {i}: the body was cut");
                Probe::Broken
            }
        }
        Ok(Err(e)) => {
            eprintln!("agent {i}: {e}");
            Probe::Broken
        }
        Err(_) => {
            eprintln!("agent {i}: no answer within 20 s");
            Probe::Broken
        }
    }
}

/// The same round through `AgentConn`s on the daemon's node (no socket, no forwarder).
async fn health_direct(d: &Daemon, n: usize) -> (f64, u64, Duration) {
    round(n, |w| {
        let connector = d.node().connector();
        async move {
            let mut failures = 0;
            for i in (w..n).step_by(CONCURRENCY) {
                let api = SocketAddr::new(sim::agent_ip(i).into(), 4);
                let conn = AgentConn::new(connector.clone(), api, AgentOptions::default());
                if conn.health().await.is_err() {
                    failures += 1;
                }
            }
            failures
        }
    })
    .await
}

async fn fleet(n: usize) {
    println!("\n## 1 control daemon, {n} simulated agents");
    let setup = ControlSetup::new(n, "");
    let socket = &setup.socket;

    let rss0 = rss();
    let d = setup.start().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = rss();
    let cpu_silent = idle_cpu(Duration::from_secs(5)).await;

    let t0 = Instant::now();
    let fleet = Fleet::spawn(n, setup.seed, setup.control, &setup.control_pub);
    let spawned = t0.elapsed();
    let hs = until_handshaked(&d, n, Duration::from_secs(180)).await;
    let stats = d.node().stats();
    println!(
        "handshakes: all {n} after {:.2?} from starting the fleet process (its {n} sockets were up after {spawned:.2?}); {} reached {} within 180 s; cookie replies (rate limiter) {}",
        hs.unwrap_or_default(),
        if hs.is_some() { "all" } else { "NOT all" },
        handshaked(&d),
        stats.wg.device.rate_limited
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_idle = idle_cpu(Duration::from_secs(10)).await;
    let rss2 = rss();
    println!(
        "control RSS: {:.1} MiB before the daemon; +{:.0} B/peer with {n} peers configured; +{:.0} B/peer with all handshaked ({:.1} MiB total)",
        rss0 as f64 / 1048576.0,
        (rss1.saturating_sub(rss0)) as f64 / n as f64,
        (rss2.saturating_sub(rss0)) as f64 / n as f64,
        rss2 as f64 / 1048576.0
    );
    println!(
        "control idle CPU: {cpu_idle:.2} % of one core with {n} handshaked peers (keepalive every {} s each) vs {cpu_silent:.2} % with the same peers configured and silent",
        sim::KEEPALIVE
    );

    // Sessions idle since the handshakes were dropped (the daemon's default): the first pass
    // handshakes with every agent again; the next two find them live.
    let (rate_c, fail_c, el_c) = health_via_daemon(socket, n).await;
    let (rate_n, fail_n, el_n) = health_direct(&d, n).await;
    let (rate_d, fail_d, el_d) = health_via_daemon(socket, n).await;
    println!(
        "GET /health round-robin over all {n} ({CONCURRENCY} at once): through the daemon socket, sessions dropped as idle (a handshake each) {rate_c:.0}/s ({el_c:.2?}, {fail_c} failures); then with live sessions: through the daemon socket {rate_d:.0}/s ({el_d:.2?}, {fail_d} failures), in-process AgentConn on the same node {rate_n:.0}/s ({el_n:.2?}, {fail_n} failures); ratio {:.2}",
        rate_d / rate_n
    );

    // Handshake storm: the daemon restarts (same key, same port) while the agents go on. First
    // without saved endpoints (the agents must re-handshake on their own timers), then with them
    // (the daemon handshakes through the agents' open mappings at the first request).
    let mut d = d;
    for keep_state in [false, true] {
        d.shutdown(Duration::from_secs(10)).await;
        drop(d);
        if !keep_state {
            let _ = std::fs::remove_dir_all(&setup.state);
        }
        let t0 = Instant::now();
        d = setup.start().await;
        if keep_state {
            let (_, fail, el) = health_via_daemon(socket, n).await;
            let stats = d.node().stats();
            println!(
                "storm, daemon restarted with saved endpoints: every agent answered GET /health (one round-robin pass, {CONCURRENCY} at once) {el:.2?} after the restart; {fail} failures; {} handshakes; cookie replies {}",
                handshaked(&d),
                stats.wg.device.rate_limited
            );
        } else {
            let first = until_handshaked(&d, 1, STORM_LIMIT).await;
            let all = until_handshaked(&d, n, STORM_LIMIT.saturating_sub(t0.elapsed())).await;
            let stats = d.node().stats();
            let (_, fail, _) = health_via_daemon(socket, n).await;
            println!(
                "storm, daemon restarted without saved endpoints: first agent back after {:.1?}, {} of {n} after {:.1?}{}; the re-handshake burst itself took {:.1?}; cookie replies {}; then a /health round: {fail} failures",
                first.unwrap_or(STORM_LIMIT),
                handshaked(&d),
                t0.elapsed(),
                if all.is_some() {
                    ""
                } else {
                    " (limit reached)"
                },
                t0.elapsed() - first.unwrap_or_default(),
                stats.wg.device.rate_limited
            );
        }
    }
    d.shutdown(Duration::from_secs(10)).await;
    drop(fleet);
}

/// Bound on waiting for the agents to come back on their own (boringtun initiators re-handshake
/// at the latest when their session is REJECT_AFTER_TIME = 180 s old).
const STORM_LIMIT: Duration = Duration::from_secs(300);

fn daemon_opts_from(cfg: &Config, socket: &Path) -> DaemonOptions {
    DaemonOptions {
        socket: socket.to_owned(),
        max_connections: 64,
        ..DaemonOptions::from_config(cfg)
    }
}

/// One real agent (node + API + process manager), in this process or another.
struct Bench {
    /// The agent when it runs in this process.
    agent: Option<wgagent::node::Node>,
    agent_pub: keys::PublicKey,
    agent_udp: SocketAddr,
}

async fn real_agent(control_pubs: &[keys::PublicKey]) -> Bench {
    use wgagent::wg::PeerConfig;
    let secret = keys::generate();
    let agent_pub = keys::public_key(&secret);
    let peers = control_pubs
        .iter()
        .enumerate()
        .map(|(i, k)| PeerConfig {
            name: None,
            public_key: *k,
            preshared_key: None,
            allowed_ips: vec![format!("100.64.1.{}/32", i + 1).parse().unwrap()],
            endpoint: None,
            persistent_keepalive: None,
        })
        .collect();
    let agent = wgagent::node::Node::start(wgagent::node::NodeConfig {
        threads: 0,
        private_key: secret,
        addresses: vec!["100.64.0.10".parse().unwrap()],
        listen_port: 0,
        mtu: wgagent::netstack::DEFAULT_MTU,
        tcp_buffer: wgagent::netstack::DEFAULT_TCP_BUFFER,
        connect_timeout: Duration::from_secs(10),
        limits: Default::default(),
        peers,
    })
    .await
    .unwrap();
    let manager = wgagent::proc::Manager::new(wgagent::proc::ManagerConfig::default());
    let app = wgagent::api::router(wgagent::api::AppState::new(manager));
    for l in agent.listen(4).unwrap() {
        let app = app.clone();
        tokio::spawn(async move {
            axum::serve(
                l,
                app.into_make_service_with_connect_info::<wgagent::api::CallerAddr>(),
            )
            .await
            .unwrap();
        });
    }
    let agent_udp = SocketAddr::from((Ipv4Addr::LOCALHOST, agent.udp_addr().port()));
    Bench {
        agent: Some(agent),
        agent_pub,
        agent_udp,
    }
}

/// A control node at 100.64.1.`i+1` that knows the agent.
async fn control_node(secret: keys::StaticSecret, i: usize, b: &Bench) -> wgagent::node::Node {
    use wgagent::wg::PeerConfig;
    wgagent::node::Node::start(wgagent::node::NodeConfig {
        threads: 0,
        private_key: secret,
        addresses: vec![format!("100.64.1.{}", i + 1).parse().unwrap()],
        listen_port: 0,
        mtu: wgagent::netstack::DEFAULT_MTU,
        tcp_buffer: wgagent::netstack::DEFAULT_TCP_BUFFER,
        connect_timeout: Duration::from_secs(10),
        limits: Default::default(),
        peers: vec![PeerConfig {
            name: Some("dev".into()),
            public_key: b.agent_pub,
            preshared_key: None,
            allowed_ips: vec!["100.64.0.10/32".parse().unwrap()],
            endpoint: Some(b.agent_udp),
            persistent_keepalive: None,
        }],
    })
    .await
    .unwrap()
}

const REPLICAS: usize = 64;
const REPLICAS_FOR: Duration = Duration::from_secs(10);

async fn replicas() {
    println!(
        "\n## 1 agent (the `wgagent agent` binary, its own process), {REPLICAS} control replicas (nodes in this process) running `execute true` for {REPLICAS_FOR:?}"
    );
    let secrets: Vec<_> = (0..REPLICAS).map(|_| keys::generate()).collect();
    let dir = tempfile::tempdir().unwrap();
    let agent_secret = keys::generate();
    let port = free_udp_port();
    let mut text = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.10\"]\nlisten_port = {port}\nuapi = false\n\n[api]\nmax_running = {REPLICAS}\n",
        keys::encode_private(&agent_secret)
    );
    for (i, s) in secrets.iter().enumerate() {
        text.push_str(&format!(
            "\n[[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"100.64.1.{}/32\"]\n",
            keys::encode_public(&keys::public_key(s)),
            i + 1
        ));
    }
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, text).unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wgagent"))
        .args(["agent", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let b = Bench {
        agent: None,
        agent_pub: keys::public_key(&agent_secret),
        agent_udp: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    };
    let mut nodes = Vec::new();
    for (i, s) in secrets.into_iter().enumerate() {
        nodes.push(control_node(s, i, &b).await);
    }
    let api = SocketAddr::new("100.64.0.10".parse().unwrap(), 4);
    let lat = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + REPLICAS_FOR;
    let mut tasks = Vec::new();
    for n in &nodes {
        let tools = wgagent::tool::Tools::single(AgentConn::new(
            n.connector(),
            api,
            AgentOptions::default(),
        ));
        let lat = lat.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let args = serde_json::json!({"command": "true"});
            // Bounded: by time, and by count (at most one call per millisecond of the run).
            for _ in 0..REPLICAS_FOR.as_millis() {
                if Instant::now() >= stop {
                    break;
                }
                let t = Instant::now();
                let r = tools.call("execute", &args).await;
                let ok = r.value["success"] == true && r.value["exit_code"] == 0;
                if ok {
                    lat.lock().push(t.elapsed());
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("execute failed: {}", r.value);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut l = std::mem::take(&mut *lat.lock());
    l.sort();
    let rate = l.len() as f64 / REPLICAS_FOR.as_secs_f64();

    // Baseline, same run: 64 tasks spawning `sh -c true` locally for the same time.
    let local = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let stop = Instant::now() + REPLICAS_FOR;
    let mut tasks = Vec::new();
    for _ in 0..REPLICAS {
        let local = local.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..REPLICAS_FOR.as_millis() {
                if Instant::now() >= stop {
                    break;
                }
                let t = Instant::now();
                let ok = tokio::process::Command::new("sh")
                    .args(["-c", "true"])
                    .status()
                    .await
                    .is_ok_and(|s| s.success());
                if ok {
                    local.lock().push(t.elapsed());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut ll = std::mem::take(&mut *local.lock());
    ll.sort();
    let local_rate = ll.len() as f64 / REPLICAS_FOR.as_secs_f64();
    println!(
        "execute true through {REPLICAS} replicas: {rate:.0} commands/s, p50 {:.2?}, p99 {:.2?}, {} failures ({} done)",
        pct(&l, 0.5),
        pct(&l, 0.99),
        failures.load(Ordering::Relaxed),
        l.len()
    );
    println!(
        "local spawning (64 tasks, sh -c true, same run): {local_rate:.0}/s, p50 {:.2?}, p99 {:.2?}; ratio {:.2}",
        pct(&ll, 0.5),
        pct(&ll, 0.99),
        rate / local_rate
    );
    drop(nodes);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait();
}

const HOP_RUNS: usize = 300;
const CLI_RUNS: usize = 50;

async fn hop() {
    println!("\n## daemon hop: `execute true` latency, same agent, same run");
    let daemon_secret = keys::generate();
    let b = real_agent(&[keys::public_key(&daemon_secret)]).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.1.1\"]\nuapi = false\n\n\
         [[peer]]\nname = \"dev\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.10/32\"]\nendpoint = \"{}\"\n",
        keys::encode_private(&daemon_secret),
        keys::encode_public(&b.agent_pub),
        b.agent_udp
    );
    let cfg = Config::parse(&text, Path::new("hop.toml")).unwrap();
    let socket = dir.path().join("control.sock");
    let d = Daemon::start(&cfg, daemon_opts(&socket)).await.unwrap();
    let api = SocketAddr::new("100.64.0.10".parse().unwrap(), 4);
    let direct = wgagent::tool::Tools::single(AgentConn::new(
        d.node().connector(),
        api,
        AgentOptions::default(),
    ));
    let via = wgagent::tool::Tools::single(
        DaemonConnector::new(&socket)
            .agent("dev", AgentOptions::default())
            .await
            .unwrap(),
    );
    let args = serde_json::json!({"command": "true"});
    // Warm both (handshake, pooled connections), then alternate so drift hits both alike.
    for _ in 0..10 {
        direct.call("execute", &args).await;
        via.call("execute", &args).await;
    }
    let (mut a, mut v) = (Vec::new(), Vec::new());
    for _ in 0..HOP_RUNS {
        let t = Instant::now();
        assert_eq!(direct.call("execute", &args).await.value["exit_code"], 0);
        a.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(via.call("execute", &args).await.value["exit_code"], 0);
        v.push(t.elapsed());
    }
    a.sort();
    v.sort();
    // The binary, through the daemon (process start included), vs `sh -c true` started the same way.
    let bin = env!("CARGO_BIN_EXE_wgagent");
    let mut c = Vec::new();
    let mut s = Vec::new();
    for _ in 0..CLI_RUNS {
        let t = Instant::now();
        let out = tokio::process::Command::new(bin)
            .args(["exec", "--socket"])
            .arg(&socket)
            .args(["dev", "--", "true"])
            .env("WGAGENT_CONFIG", dir.path().join("absent.toml"))
            .output()
            .await
            .unwrap();
        c.push(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = Instant::now();
        tokio::process::Command::new("sh")
            .args(["-c", "true"])
            .status()
            .await
            .unwrap();
        s.push(t.elapsed());
    }
    c.sort();
    s.sort();
    println!(
        "in-process AgentConn on the node: p50 {:.3?}, p99 {:.3?}; through the daemon socket: p50 {:.3?}, p99 {:.3?}; daemon hop (p50 difference) {:.0} µs",
        pct(&a, 0.5),
        pct(&a, 0.99),
        pct(&v, 0.5),
        pct(&v, 0.99),
        (pct(&v, 0.5).as_secs_f64() - pct(&a, 0.5).as_secs_f64()) * 1e6
    );
    println!(
        "`wgagent exec dev -- true` through the daemon ({CLI_RUNS} runs): p50 {:.2?}, p99 {:.2?}; a local `sh -c true` started the same way: p50 {:.2?}",
        pct(&c, 0.5),
        pct(&c, 0.99),
        pct(&s, 0.5)
    );
    d.shutdown(Duration::from_secs(5)).await;
    drop(b.agent);
}
