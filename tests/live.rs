//! Live peers, in process over real WireGuard on loopback UDP: peers added, updated and removed
//! while traffic flows; pre-shared keys; reloads; the UAPI socket under hostile input.
//! No root needed (the UAPI socket lives in a temporary directory here; the real `wg` tool is
//! exercised in `uapi_wg.rs`).

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use wgagent::agent::{Agent, AgentError};
use wgagent::node::{Node, NodeConfig};
use wgagent::wg::uapi::format_get;
use wgagent::wg::{AllowedIpChange, DeviceUpdate, PeerUpdate};

const AGENT_V6: &str = "fd7a:115c:a1e0::a";
/// A connection attempt that must fail fails within this (the nodes' own timeout is 10 s).
const REFUSED_WITHIN: Duration = Duration::from_secs(2);

fn to(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

/// A control node at `addr` that knows the agent (both agent addresses) at its UDP port.
async fn control(keys: &Keypair, addr: &str, agent: &Agent, psk: Option<[u8; 32]>) -> Node {
    let mut to_agent = peer(
        agent.public_key(),
        "100.64.0.10/32",
        Some(loopback(agent.node())),
        None,
    );
    to_agent.allowed_ips.push(net(&format!("{AGENT_V6}/128")));
    to_agent.preshared_key = psk;
    node(keys.secret.clone(), addr, 0, vec![to_agent]).await
}

/// Fails unless connecting to `addr` from `node` fails within `REFUSED_WITHIN`.
async fn assert_unreachable(node: &Node, addr: SocketAddr) {
    match tokio::time::timeout(REFUSED_WITHIN, node.connect(addr)).await {
        Err(_) | Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("{addr} is reachable"),
    }
}

async fn health(node: &Node, addr: SocketAddr) -> u16 {
    let mut http = Http::connect(node, addr).await.expect("connect");
    http.call("GET", "/api/v0/health", None).await.0
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[tokio::test]
async fn adding_a_peer_while_another_streams_10_mib() {
    tokio::time::timeout(T, async {
        const TOTAL: usize = 10 << 20;
        let (ak, c1, c2) = (keypair(), keypair(), keypair());
        let (cfg, _state) = agent_config(
            ak.secret.clone(),
            AGENT_IP,
            &[peer(c1.public, "100.64.0.1/32", None, None)],
        );
        let agent = Agent::start(&cfg).await.unwrap();
        let n1 = control(&c1, "100.64.0.1", &agent, None).await;
        let mut listener = agent.node().listen(7000).unwrap().remove(0);
        let (progress, mut seen) = tokio::sync::watch::channel(0usize);
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0usize;
            // Bounded: at least one byte per read until EOF.
            for _ in 0..=TOTAL {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                for (i, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, pattern(got + i), "byte {} corrupted", got + i);
                }
                got += n;
                progress.send_replace(got);
            }
            got
        });
        let mut s = n1.connect(to(AGENT_IP, 7000)).await.unwrap();
        let writer = tokio::spawn(async move {
            let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
            for chunk in data.chunks(64 * 1024) {
                s.write_all(chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
            s
        });
        seen.wait_for(|&got| got >= 1 << 20).await.unwrap();

        let applied = agent
            .node()
            .set_peer(&peer(c2.public, "100.64.0.2/32", None, None))
            .await
            .unwrap();
        assert_eq!(applied.added, [c2.public]);
        let during = *seen.borrow();
        let n2 = control(&c2, "100.64.0.2", &agent, None).await;
        assert_eq!(health(&n2, api_addr()).await, 200);

        let _s = writer.await.unwrap();
        assert_eq!(reader.await.unwrap(), TOTAL);
        assert!(during < TOTAL, "the peer was added after the stream ended");
        assert_eq!(
            n1.stats().wg.peers[0].handshakes,
            1,
            "the streaming peer re-handshook"
        );
        let agent_stats = agent.node().stats();
        assert_eq!(
            agent_stats.wg.peer_by_key(&c1.public).unwrap().handshakes,
            1
        );
        assert_eq!(
            agent_stats.wg.peer_by_key(&c2.public).unwrap().handshakes,
            1
        );
    })
    .await
    .expect("test timed out");
}

/// Echoes until the connection ends; returns how it ended.
async fn echo(mut s: wgagent::netstack::TcpStream) -> io::ErrorKind {
    let mut buf = [0u8; 1024];
    // Bounded by the test's timeout; each round needs a message from the client.
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return io::ErrorKind::UnexpectedEof,
            Ok(n) => {
                if let Err(e) = s.write_all(&buf[..n]).await {
                    return e.kind();
                }
            }
            Err(e) => return e.kind(),
        }
    }
}

async fn ping(s: &mut wgagent::netstack::TcpStream) {
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test]
async fn removing_a_peer_ends_its_connections_and_only_those() {
    tokio::time::timeout(T, async {
        let (ak, c1, c2) = (keypair(), keypair(), keypair());
        let (cfg, _state) = agent_config(
            ak.secret.clone(),
            AGENT_IP,
            &[
                peer(c1.public, "100.64.0.1/32", None, None),
                peer(c2.public, "100.64.0.2/32", None, None),
            ],
        );
        let agent = Agent::start(&cfg).await.unwrap();
        let (n1, n2) = (
            control(&c1, "100.64.0.1", &agent, None).await,
            control(&c2, "100.64.0.2", &agent, None).await,
        );
        let mut listener = agent.node().listen(7001).unwrap().remove(0);
        let mut s1 = n1.connect(to(AGENT_IP, 7001)).await.unwrap();
        let (a1, from1) = listener.accept().await.unwrap();
        let mut s2 = n2.connect(to(AGENT_IP, 7001)).await.unwrap();
        let (a2, from2) = listener.accept().await.unwrap();
        assert_eq!(
            (from1.ip(), from2.ip()),
            (ip("100.64.0.1"), ip("100.64.0.2"))
        );
        let (e1, e2) = (tokio::spawn(echo(a1)), tokio::spawn(echo(a2)));
        ping(&mut s1).await;
        ping(&mut s2).await;
        let who = agent.node().peer_for_address(ip("100.64.0.1")).unwrap();
        assert_eq!(who.public_key, c1.public);

        assert!(agent.node().remove_peer(&c1.public).await.unwrap());
        // The agent's side of c1's connection is reset at once.
        assert_eq!(e1.await.unwrap(), io::ErrorKind::ConnectionReset);
        assert!(agent.node().peer_for_address(ip("100.64.0.1")).is_none());
        // c2 goes on, on the same session.
        ping(&mut s2).await;
        assert!(!e2.is_finished());
        assert_eq!(n2.stats().wg.peers[0].handshakes, 1);
        assert_eq!(health(&n2, api_addr()).await, 200);
        // c1 gets nothing any more.
        assert_unreachable(&n1, api_addr()).await;
        assert!(agent.node().stats().wg.peer_by_key(&c1.public).is_none());
        drop(s1);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn updating_allowed_ips_refuses_the_old_range_and_keeps_the_session() {
    tokio::time::timeout(T, async {
        let (ak, c) = (keypair(), keypair());
        let (mut cfg, _state) = agent_config(
            ak.secret.clone(),
            AGENT_IP,
            &[peer(c.public, "100.64.0.1/32", None, None)],
        );
        cfg.interface.addresses.push(ip(AGENT_V6));
        let agent = Agent::start(&cfg).await.unwrap();
        // The control node has a v4 and a v6 tunnel address.
        let mut to_agent = peer(
            agent.public_key(),
            "100.64.0.10/32",
            Some(loopback(agent.node())),
            None,
        );
        to_agent.allowed_ips.push(net(&format!("{AGENT_V6}/128")));
        let n = Node::start(NodeConfig {
            threads: 0,
            private_key: c.secret.clone(),
            addresses: vec![ip("100.64.0.1"), ip("fd7a:115c:a1e0::1")],
            listen_port: 0,
            mtu: wgagent::netstack::DEFAULT_MTU,
            tcp_buffer: 256 * 1024,
            connect_timeout: Duration::from_secs(10),
            limits: Default::default(),
            peers: vec![to_agent],
        })
        .await
        .unwrap();
        assert_eq!(health(&n, api_addr()).await, 200);

        let mut section = PeerUpdate::new(c.public);
        section.allowed_ips = vec![
            AllowedIpChange::ReplaceAll,
            AllowedIpChange::Add(net("fd7a:115c:a1e0::1/128")),
        ];
        let applied = agent
            .node()
            .update(DeviceUpdate {
                peers: vec![section],
                ..DeviceUpdate::default()
            })
            .await
            .unwrap();
        assert_eq!(applied.updated, [c.public]);
        let drops = |n: &Node| {
            n.stats()
                .wg
                .peer_by_key(&c.public)
                .unwrap()
                .drop_allowed_ips
        };
        let before = drops(agent.node());
        assert_unreachable(&n, api_addr()).await;
        assert!(
            drops(agent.node()) > before,
            "the old source was not refused by cryptokey routing"
        );
        assert_eq!(health(&n, to(AGENT_V6, API_PORT)).await, 200);
        assert_eq!(n.stats().wg.peers[0].handshakes, 1, "session kept");
        let stats = agent.node().stats();
        let p = stats.wg.peer_by_key(&c.public).unwrap();
        assert_eq!(
            (p.handshakes, p.allowed_ips.clone()),
            (1, vec![net("fd7a:115c:a1e0::1/128")])
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn preshared_key_peers_interoperate() {
    tokio::time::timeout(T, async {
        let (ak, good, bad) = (keypair(), keypair(), keypair());
        let psk = [0x5a; 32];
        let mut with_psk = peer(good.public, "100.64.0.1/32", None, None);
        with_psk.preshared_key = Some(psk);
        let mut wrong = peer(bad.public, "100.64.0.2/32", None, None);
        wrong.preshared_key = Some(psk);
        let (cfg, _state) = agent_config(ak.secret.clone(), AGENT_IP, &[with_psk, wrong]);
        let agent = Agent::start(&cfg).await.unwrap();
        let n = control(&good, "100.64.0.1", &agent, Some(psk)).await;
        assert_eq!(health(&n, api_addr()).await, 200);
        let m = control(&bad, "100.64.0.2", &agent, Some([0x5b; 32])).await;
        assert_unreachable(&m, api_addr()).await;
        // The key shows in the UAPI view (for the socket's owner) and nowhere in Debug output.
        let state = agent.node().uapi_state(true);
        let p = state
            .peers
            .iter()
            .find(|p| p.public_key == good.public)
            .unwrap();
        assert_eq!(p.preshared_key, Some(psk));
        assert!(!format!("{state:?}").contains("5a5a5a"));
        assert!(
            agent
                .node()
                .uapi_state(false)
                .peers
                .iter()
                .all(|p| p.preshared_key.is_none())
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn reload_applies_the_difference_and_keeps_live_peers() {
    tokio::time::timeout(T, async {
        let (ak, c1, c2, c3, c4) = (keypair(), keypair(), keypair(), keypair(), keypair());
        let p = |k: &Keypair, a: &str| {
            let mut p = peer(k.public, a, None, None);
            p.name = Some(a.replace(['.', '/'], "-"));
            p
        };
        let (cfg0, _state0) = agent_config(
            ak.secret.clone(),
            AGENT_IP,
            &[p(&c1, "100.64.0.1/32"), p(&c2, "100.64.0.2/32")],
        );
        let agent = Agent::start(&cfg0).await.unwrap();
        let n1 = control(&c1, "100.64.0.1", &agent, None).await;
        assert_eq!(health(&n1, api_addr()).await, 200);
        // A peer added live (as `wg set` would), never in the file.
        agent
            .node()
            .set_peer(&peer(c3.public, "100.64.0.3/32", None, None))
            .await
            .unwrap();

        let (mut cfg1, _state1) = agent_config(
            ak.secret.clone(),
            "100.64.0.99",
            &[p(&c1, "100.64.0.1/32"), p(&c4, "100.64.0.4/32")],
        );
        cfg1.api.state_dir = cfg0.api.state_dir.clone();
        cfg1.api.max_running = 2;
        cfg1.api.max_tracked = 2;
        cfg1.api.port = 8;
        let report = agent.reload(&cfg1).await.unwrap();
        assert_eq!(report.peers.added, [c4.public]);
        assert_eq!(report.peers.removed, [c2.public]);
        assert!(
            report.peers.updated.is_empty() && !report.peers.key_changed,
            "{report:?}"
        );
        assert_eq!(report.applied, ["api.max_running", "api.max_tracked"]);
        assert_eq!(report.restart_required, ["interface.address", "api.port"]);
        assert_eq!(agent.manager().limits(), (2, 2));
        let live = |agent: &Agent| -> Vec<_> {
            agent
                .node()
                .peers()
                .into_iter()
                .map(|p| p.public_key)
                .collect()
        };
        assert_eq!(live(&agent), [c1.public, c3.public, c4.public]);
        // The old address and port stay in force; c1's session too.
        assert_eq!(health(&n1, api_addr()).await, 200);
        assert_eq!(n1.stats().wg.peers[0].handshakes, 1);

        // The same file again: nothing changes (restart-only keys are still reported).
        let again = agent.reload(&cfg1).await.unwrap();
        assert!(
            again.peers.is_empty() && again.applied.is_empty(),
            "{again:?}"
        );

        // A file the node refuses (two peers named alike) changes nothing.
        let mut bad = cfg1.clone();
        bad.peers[1].name = bad.peers[0].name.clone();
        bad.peers.push(config_peer(&p(&c2, "100.64.0.2/32")));
        let err = agent.reload(&bad).await.unwrap_err();
        assert!(matches!(err, AgentError::Node(_)), "{err}");
        assert_eq!(live(&agent), [c1.public, c3.public, c4.public]);

        // replace_peers_on_reload: the live set becomes the file's.
        let mut cfg2 = cfg1.clone();
        cfg2.interface.replace_peers_on_reload = true;
        let report = agent.reload(&cfg2).await.unwrap();
        assert_eq!(report.peers.removed, [c3.public]);
        assert_eq!(live(&agent), [c1.public, c4.public]);

        // An agent attached to a node it did not start cannot reload.
        let other = node(keypair().secret, "100.64.0.50", 0, vec![]).await;
        let attached = Agent::attach(other, &cfg0.api).unwrap();
        assert!(matches!(
            attached.reload(&cfg0).await,
            Err(AgentError::NotReloadable)
        ));
        assert!(agent.shutdown(Duration::from_secs(5)).await);
    })
    .await
    .expect("test timed out");
}

/// A tiny deterministic generator (xorshift64*), so a failing request can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One random or malformed request; none of them may change anything.
fn hostile_request(rng: &mut Rng, peer_hex: &str) -> Vec<u8> {
    const KEYS: &[&str] = &[
        "private_key",
        "listen_port",
        "fwmark",
        "replace_peers",
        "public_key",
        "remove",
        "update_only",
        "preshared_key",
        "endpoint",
        "persistent_keepalive_interval",
        "replace_allowed_ips",
        "allowed_ip",
        "protocol_version",
        "bogus",
        "",
    ];
    const VALUES: &[&str] = &[
        "true",
        "false",
        "0",
        "-1",
        "65536",
        "1.2.3.4",
        "1.2.3.4:0",
        "[::1]:51820",
        "10.0.0.0/33",
        "fd00::/129",
        "zz",
        "",
        "=",
        "\u{0}",
        "0000",
        "99999999999999999999",
    ];
    match rng.below(6) {
        // Random bytes.
        0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        // Random key=value lines, with at least one bad line somewhere (lines that happen to be
        // valid, such as `replace_peers=true`, must not take effect either).
        1 | 2 => {
            let mut lines = Vec::new();
            for _ in 0..rng.below(12) {
                let key = rng.pick(KEYS);
                let value = if key == "public_key" && rng.below(2) == 0 {
                    peer_hex.to_owned()
                } else {
                    rng.pick(VALUES).to_owned()
                };
                lines.push(format!("{key}={value}"));
            }
            let bad = rng.pick(&[
                "bogus=1",
                "noequals",
                "listen_port=x",
                "fwmark=",
                "private_key=00",
            ]);
            lines.insert(rng.below(lines.len() + 1), bad.to_owned());
            format!("set=1\n{}\n\n", lines.join("\n")).into_bytes()
        }
        // A valid set that would add a peer and remove the real one, spoiled by its last line.
        3 => format!(
            "set=1\nreplace_peers=true\npublic_key={:064x}\nallowed_ip=10.9.0.0/16\n\
             public_key={peer_hex}\nremove=true\n{}\n\n",
            rng.next() | 1,
            rng.pick(&[
                "allowed_ip=300.0.0.0/8",
                "nokey",
                "endpoint=x",
                "protocol_version=2"
            ]),
        )
        .into_bytes(),
        // Truncated: no blank line, connection closed.
        4 => format!(
            "set=1\npublic_key={:064x}\nallowed_ip=10.8.0.0/16\n",
            rng.next() | 1
        )
        .into_bytes(),
        // A get with trailing junk, or an unknown operation, or an overlong line.
        _ => match rng.below(3) {
            0 => b"get=1\nx\n\n".to_vec(),
            1 => b"del=1\n\n".to_vec(),
            _ => vec![b'a'; 1000],
        },
    }
}

#[tokio::test]
async fn uapi_survives_1000_hostile_requests_unchanged() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("fuzz.sock");
        let (ak, c1) = (keypair(), keypair());
        let (mut cfg, _state) = agent_config(
            ak.secret.clone(),
            AGENT_IP,
            &[peer(c1.public, "100.64.0.1/32", None, None)],
        );
        cfg.interface.uapi = true;
        cfg.interface.uapi_socket = Some(sock.clone());
        let agent = Agent::start(&cfg).await.unwrap();
        assert_eq!(agent.uapi_socket(), Some(sock.as_path()));
        // A second node never takes a live socket over; the error names it.
        let (second, _state2) = agent_config(keypair().secret, "100.64.0.11", &[]);
        let mut second = second;
        second.interface.uapi = true;
        second.interface.uapi_socket = Some(sock.clone());
        let err = Agent::start(&second)
            .await
            .err()
            .expect("second agent on a live socket");
        assert!(matches!(err, AgentError::Uapi(_)), "{err}");
        assert!(err.to_string().contains(sock.to_str().unwrap()), "{err}");

        let before = format_get(&agent.node().uapi_state(true));
        let peer_hex: String = c1
            .public
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut refused = 0;
        for i in 0..1000 {
            let request = hostile_request(&mut rng, &peer_hex);
            let reply = tokio::time::timeout(Duration::from_secs(5), async {
                let mut s = UnixStream::connect(&sock).await?;
                // The server may close early on garbage; a failed write is an answer too.
                let _ = s.write_all(&request).await;
                let _ = s.shutdown().await;
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out).await;
                io::Result::Ok(out)
            })
            .await
            .unwrap_or_else(|_| panic!("request {i} hung: {:?}", String::from_utf8_lossy(&request)))
            .unwrap();
            let text = String::from_utf8_lossy(&reply);
            if text.starts_with("errno=-") {
                refused += 1;
            }
            assert!(
                !text.contains("errno=0"),
                "request {i} accepted: {:?} -> {text:?}",
                String::from_utf8_lossy(&request)
            );
        }
        // Every request but the odd empty one gets a non-zero errno.
        assert!(
            refused >= 990,
            "only {refused} of 1000 requests were answered with an errno"
        );
        assert_eq!(
            format_get(&agent.node().uapi_state(true)),
            before,
            "the configuration changed"
        );
        // Alive: a control peer gets an answer, and a plain get still works.
        let n = control(&c1, "100.64.0.1", &agent, None).await;
        assert_eq!(health(&n, api_addr()).await, 200);
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"get=1\n\n").await.unwrap();
        let mut out = vec![0u8; 4096];
        let got = s.read(&mut out).await.unwrap();
        assert!(String::from_utf8_lossy(&out[..got]).contains("public_key="));
        assert!(agent.shutdown(Duration::from_secs(5)).await);
        assert!(!sock.exists(), "socket removed at shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_peer_added_through_the_uapi_socket_reaches_the_api() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("add.sock");
        let (ak, c) = (keypair(), keypair());
        let (mut cfg, _state) = agent_config(ak.secret.clone(), AGENT_IP, &[]);
        cfg.interface.uapi = true;
        cfg.interface.uapi_socket = Some(sock.clone());
        let agent = Agent::start(&cfg).await.unwrap();
        let hex: String = c
            .public
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(
            format!(
                "set=1\npublic_key={hex}\nreplace_allowed_ips=true\nallowed_ip=100.64.0.1/32\n\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = [0u8; 64];
        let n = s.read(&mut out).await.unwrap();
        assert_eq!(&out[..n], b"errno=0\n\n");
        let n1 = control(&c, "100.64.0.1", &agent, None).await;
        assert_eq!(health(&n1, api_addr()).await, 200);
        let who = agent.node().peer_for_address(ip("100.64.0.1")).unwrap();
        assert_eq!((who.name, who.public_key), (None, c.public));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn an_unwritable_socket_directory_is_a_warning_not_a_failure() {
    tokio::time::timeout(T, async {
        let (ak, c) = (keypair(), keypair());
        let (mut cfg, _state) = agent_config(
            ak.secret.clone(),
            AGENT_IP,
            &[peer(c.public, "100.64.0.1/32", None, None)],
        );
        cfg.interface.uapi = true;
        // Nobody, not even root, can create a directory in /proc.
        cfg.interface.uapi_socket = Some("/proc/wgagent-no-such-dir/x.sock".into());
        let agent = Agent::start(&cfg).await.unwrap();
        assert_eq!(agent.uapi_socket(), None);
        let n = control(&c, "100.64.0.1", &agent, None).await;
        assert_eq!(health(&n, api_addr()).await, 200);
    })
    .await
    .expect("test timed out");
}

/// A raw UAPI `get` on `sock`.
async fn uapi_get(sock: &std::path::Path) -> String {
    let mut s = UnixStream::connect(sock).await.unwrap();
    s.write_all(b"get=1\n\n").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn hex(key: &wgagent::wg::PublicKey) -> String {
    key.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_control_daemon_serves_the_uapi_and_reloads_its_peers() {
    use wgagent::control::{Daemon, DaemonOptions};
    tokio::time::timeout(T, async {
        let (a1k, a2k, ck) = (keypair(), keypair(), keypair());
        let (c1, _s1) = agent_config(
            a1k.secret.clone(),
            AGENT_IP,
            &[peer(ck.public, "100.64.0.1/32", None, None)],
        );
        let (c2, _s2) = agent_config(
            a2k.secret.clone(),
            "100.64.0.11",
            &[peer(ck.public, "100.64.0.1/32", None, None)],
        );
        let (a1, a2) = (
            Agent::start(&c1).await.unwrap(),
            Agent::start(&c2).await.unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let uapi = dir.path().join("wgcontrol.sock");
        let named = |name: &str, k: &Keypair, ip: &str, agent: &Agent| {
            let mut p = config_peer(&peer(k.public, ip, Some(loopback(agent.node())), None));
            p.name = Some(name.into());
            p
        };
        let mut cfg = wgagent::config::Config::new(ck.secret.clone(), vec![ip("100.64.0.1")]);
        cfg.interface.uapi_socket = Some(uapi.clone());
        cfg.peers.push(named("a1", &a1k, "100.64.0.10/32", &a1));
        let daemon = Daemon::start(
            &cfg,
            DaemonOptions {
                socket: dir.path().join("control.sock"),
                socket_group: None,
                max_connections: 16,
                state_dir: None,
            },
        )
        .await
        .unwrap();
        let got = uapi_get(&uapi).await;
        assert!(
            got.contains(&hex(&a1k.public)) && !got.contains(&hex(&a2k.public)),
            "{got}"
        );
        assert_eq!(health(daemon.node(), api_addr()).await, 200);

        // SIGHUP's work: a2 joins the file and becomes reachable, a1's session stays.
        let mut cfg2 = cfg.clone();
        cfg2.peers.push(named("a2", &a2k, "100.64.0.11/32", &a2));
        let applied = daemon.reload(&cfg2).await.unwrap();
        assert_eq!(applied.added, [a2k.public]);
        assert!(
            applied.updated.is_empty() && applied.removed.is_empty(),
            "{applied:?}"
        );
        assert_eq!(
            health(daemon.node(), to("100.64.0.11", API_PORT)).await,
            200
        );
        assert!(uapi_get(&uapi).await.contains(&hex(&a2k.public)));
        let stats = daemon.node().stats();
        assert_eq!(stats.wg.peer_by_key(&a1k.public).unwrap().handshakes, 1);
        // And out again.
        let applied = daemon.reload(&cfg).await.unwrap();
        assert_eq!(applied.removed, [a2k.public]);
        assert!(daemon.shutdown(Duration::from_secs(5)).await);
        assert!(!uapi.exists());
    })
    .await
    .expect("test timed out");
}
