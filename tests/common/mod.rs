//! Shared helpers for integration tests: real Nodes over loopback UDP, agents assembled by
//! `wgagent::agent::Agent` (the same wiring as the binary), a small HTTP client.
#![allow(dead_code)]

mod threads;
#[allow(unused_imports)]
pub use threads::{test_threads, threads_line};

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use wgagent::agent::Agent;
use wgagent::config::{self, Config};
use wgagent::keys;
use wgagent::node::{Node, NodeConfig};
use wgagent::proc::Manager;
use wgagent::wg::{IpNetwork, PeerConfig, PublicKey, StaticSecret};

pub const T: Duration = Duration::from_secs(30);
pub const AGENT_IP: &str = "100.64.0.10";
pub const API_PORT: u16 = 4;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

pub struct Keypair {
    pub secret: StaticSecret,
    pub public: PublicKey,
}

pub fn keypair() -> Keypair {
    let secret = keys::generate();
    let public = keys::public_key(&secret);
    Keypair { secret, public }
}

pub fn peer(
    public: PublicKey,
    allowed: &str,
    endpoint: Option<SocketAddr>,
    keepalive: Option<u16>,
) -> PeerConfig {
    PeerConfig {
        name: None,
        public_key: public,
        preshared_key: None,
        allowed_ips: vec![net(allowed)],
        endpoint,
        persistent_keepalive: keepalive,
    }
}

pub async fn node(secret: StaticSecret, addr: &str, port: u16, peers: Vec<PeerConfig>) -> Node {
    node_with_threads(secret, addr, port, peers, test_threads()).await
}

/// Like `node`, with this many data-path threads (`[interface] threads`; 0 = the default).
pub async fn node_with_threads(
    secret: StaticSecret,
    addr: &str,
    port: u16,
    peers: Vec<PeerConfig>,
    threads: usize,
) -> Node {
    Node::start(NodeConfig {
        threads,
        private_key: secret,
        addresses: vec![ip(addr)],
        listen_port: port,
        mtu: wgagent::netstack::DEFAULT_MTU,
        tcp_buffer: wgagent::netstack::DEFAULT_TCP_BUFFER,
        connect_timeout: std::time::Duration::from_secs(10),
        limits: Default::default(),
        peers,
    })
    .await
    .unwrap()
}

pub fn loopback(node: &Node) -> SocketAddr {
    SocketAddr::new(ip("127.0.0.1"), node.udp_addr().port())
}

/// Serves the API on the agent node's tunnel address (an `Agent` attached to the node, alive
/// as long as the test's runtime); returns the manager.
pub fn serve_api(agent: &Node) -> Manager {
    serve_api_filtered(agent, Vec::new())
}

/// Like `serve_api`, with `api.allowed_sources`.
pub fn serve_api_filtered(agent: &Node, allowed_sources: Vec<IpNetwork>) -> Manager {
    let api = config::Api {
        port: API_PORT,
        allowed_sources: (!allowed_sources.is_empty()).then_some(allowed_sources),
        ..config::Api::default()
    };
    let agent = Agent::attach(agent.clone(), &api).unwrap();
    let manager = agent.manager().clone();
    keep_alive(agent);
    manager
}

/// Keeps an agent running until the test's runtime ends (as the spawned servers it replaces
/// did); dropping an `Agent` stops its servers.
pub fn keep_alive(agent: Agent) {
    keep_alive_with(agent, ());
}

/// Like `keep_alive`, also keeping `also` (e.g. the agent's state directory) until then.
pub fn keep_alive_with<T: Send + 'static>(agent: Agent, also: T) {
    tokio::spawn(async move {
        let _kept = (agent, also);
        std::future::pending::<()>().await;
    });
}

/// A config for an agent at `addr` with these peers: port 0, API on `API_PORT`, no UAPI
/// socket (tests run many agents at once; each that wants one names its own socket), and its
/// process state in the returned temporary directory (keep it as long as the agent runs).
pub fn agent_config(
    secret: StaticSecret,
    addr: &str,
    peers: &[PeerConfig],
) -> (Config, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(secret, vec![ip(addr)]);
    cfg.interface.uapi = false;
    if test_threads() != 0 {
        cfg.interface.threads = test_threads();
    }
    cfg.api.port = API_PORT;
    cfg.api.shutdown_grace = Duration::from_secs(1);
    cfg.api.state_dir = Some(state.path().to_owned());
    cfg.peers = peers.iter().map(config_peer).collect();
    (cfg, state)
}

/// A `[[peer]]` entry for a peer config.
pub fn config_peer(p: &PeerConfig) -> config::Peer {
    config::Peer::from(p)
}

/// A keep-alive HTTP/1 connection through the tunnel.
pub struct Http {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Http {
    pub async fn connect(node: &Node, to: SocketAddr) -> std::io::Result<Http> {
        let stream = node.connect(to).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Http { send })
    }

    pub async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "agent")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = self.exchange(req).await;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

impl Http {
    /// Sends `req` once the connection is ready for it (a keep-alive connection takes the next
    /// request only once the previous exchange is fully done on its side), bounded by `T`.
    async fn exchange(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> hyper::Response<hyper::body::Incoming> {
        tokio::time::timeout(T, self.send.ready())
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(T, self.send.send_request(req))
            .await
            .unwrap()
            .unwrap()
    }

    /// A GET with extra headers; status, `Content-Type` and the body as text.
    pub async fn get_text(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", "agent");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let resp = self.exchange(req).await;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }
}

/// An agent (serving the API) and a control node that knows it, over loopback UDP.
pub struct Pair {
    pub agent: Node,
    pub control: Node,
    pub manager: Manager,
    pub agent_keys: Keypair,
    pub control_keys: Keypair,
}

pub async fn pair() -> Pair {
    pair_with(|_| {}).await
}

/// Like `pair`, with the agent's config changed by `change` before it starts (e.g. a small
/// `api.log_max_bytes`).
pub async fn pair_with(change: impl FnOnce(&mut Config)) -> Pair {
    let agent_keys = keypair();
    let control_keys = keypair();
    let (mut cfg, state) = agent_config(
        agent_keys.secret.clone(),
        AGENT_IP,
        &[peer(control_keys.public, "100.64.0.1/32", None, None)],
    );
    change(&mut cfg);
    let server = Agent::start(&cfg).await.unwrap();
    let agent = server.node().clone();
    let control = node(
        control_keys.secret.clone(),
        "100.64.0.1",
        0,
        vec![peer(
            agent_keys.public,
            "100.64.0.10/32",
            Some(loopback(&agent)),
            None,
        )],
    )
    .await;
    let manager = server.manager().clone();
    keep_alive_with(server, state);
    Pair {
        agent,
        control,
        manager,
        agent_keys,
        control_keys,
    }
}

pub fn api_addr() -> SocketAddr {
    SocketAddr::new(ip(AGENT_IP), API_PORT)
}

/// A control daemon for `cfg` serving its local socket at `socket` (no socket group, 16
/// connections, no state directory).
pub async fn start_daemon(cfg: &Config, socket: &std::path::Path) -> wgagent::control::Daemon {
    let options = wgagent::control::DaemonOptions {
        socket: socket.to_owned(),
        socket_group: None,
        max_connections: 16,
        state_dir: None,
    };
    wgagent::control::Daemon::start(cfg, options).await.unwrap()
}

/// An agent that knows two control peers (100.64.0.1 and 100.64.0.2), and those two peers.
pub async fn agent_and_two_controls() -> (
    wgagent::node::Node,
    wgagent::node::Node,
    wgagent::node::Node,
) {
    let ak = keypair();
    let (c1k, c2k) = (keypair(), keypair());
    let agent = node(
        ak.secret.clone(),
        AGENT_IP,
        0,
        vec![
            peer(c1k.public, "100.64.0.1/32", None, None),
            peer(c2k.public, "100.64.0.2/32", None, None),
        ],
    )
    .await;
    let ep = Some(loopback(&agent));
    let c1 = node(
        c1k.secret.clone(),
        "100.64.0.1",
        0,
        vec![peer(ak.public, "100.64.0.10/32", ep, None)],
    )
    .await;
    let c2 = node(
        c2k.secret.clone(),
        "100.64.0.2",
        0,
        vec![peer(ak.public, "100.64.0.10/32", ep, None)],
    )
    .await;
    (agent, c1, c2)
}

/// Runs `program args…` with `input` on its stdin (closed after it) and returns its output
/// (stdout captured, stderr inherited). `input` must be small: it is written before stdout is
/// read.
pub fn pipe(program: &str, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// [`pipe`], which must succeed; its stdout.
pub fn pipe_ok(program: &str, args: &[&str], input: &str) -> String {
    let out = pipe(program, args, input);
    assert!(out.status.success(), "{program} {args:?}: {:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}
