//! The data path in both layouts (`[interface] threads` = 1, the single task, and 2, the
//! crypto + netstack pipeline), whatever the machine's default: per-peer order with many peers
//! sending at once, a handshake, a rekey and a roaming event while bulk traffic flows, and
//! shutdown with traffic in flight. (The overlay, interop and NAT suites run in both layouts
//! through `WGAGENT_TEST_THREADS`, see `.ci/run`.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wgagent::node::{Layout, Node};
use wgagent::wg::PeerConfig;

const LAYOUTS: [(usize, Layout); 2] = [(1, Layout::Single), (2, Layout::Pipeline)];
const PORT: u16 = 7000;

/// Word `k` of stream `id`: the stream's id in the top byte, `k` below. A lost, duplicated or
/// reordered segment that TCP did not repair shows up as a wrong word.
fn word(id: u8, k: usize) -> [u8; 4] {
    ((u32::from(id) << 24) | (k as u32 & 0x00ff_ffff)).to_be_bytes()
}

/// Writes `bytes` (a multiple of 4) of stream `id`, then half-closes.
async fn write_stream<W: AsyncWrite + Unpin>(mut w: W, id: u8, bytes: usize) -> W {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut k = 0;
    while k * 4 < bytes {
        buf.clear();
        while buf.len() < 64 * 1024 && k * 4 < bytes {
            buf.extend_from_slice(&word(id, k));
            k += 1;
        }
        w.write_all(&buf).await.unwrap();
    }
    w.shutdown().await.unwrap();
    w
}

/// Reads stream `id` to EOF and checks every byte; returns the byte count.
async fn check_stream<R: AsyncRead + Unpin>(mut r: R, id: u8) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    let mut partial = Vec::with_capacity(4);
    // Bounded: every read brings at least one byte until EOF, and streams are a few MiB.
    for _ in 0..64 << 20 {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            partial.push(b);
            if partial.len() == 4 {
                let k = got / 4;
                assert_eq!(partial[..], word(id, k), "stream {id}: word {k} is wrong");
                got += 4;
                partial.clear();
            }
        }
    }
    assert!(partial.is_empty(), "stream {id}: trailing bytes");
    got
}

/// One agent node and `n` control nodes (100.64.0.1..=n), each control knowing the agent's
/// endpoint; `threads` everywhere.
async fn star(n: u8, threads: usize) -> (Node, Vec<Node>, Vec<Keypair>) {
    let ak = keypair();
    let keys: Vec<Keypair> = (0..n).map(|_| keypair()).collect();
    let peers = keys
        .iter()
        .enumerate()
        .map(|(i, k)| peer(k.public, &format!("100.64.0.{}/32", i + 1), None, None))
        .collect();
    let agent = node_with_threads(ak.secret.clone(), AGENT_IP, 0, peers, threads).await;
    let mut controls = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let to_agent = peer(ak.public, "100.64.0.10/32", Some(loopback(&agent)), None);
        let ip = format!("100.64.0.{}", i + 1);
        controls.push(node_with_threads(k.secret.clone(), &ip, 0, vec![to_agent], threads).await);
    }
    (agent, controls, keys)
}

/// The agent side: accepts `n` connections; each sends stream `100 + id` back while checking
/// the incoming stream `id` (the id is the last octet of the caller's tunnel address).
fn serve_streams(agent: &Node, n: usize, bytes: usize) -> tokio::task::JoinHandle<Vec<usize>> {
    let mut listener = agent.listen(PORT).unwrap().remove(0);
    tokio::spawn(async move {
        let mut handles = Vec::new();
        for _ in 0..n {
            let (s, from) = listener.accept().await.unwrap();
            let id = match from.ip() {
                std::net::IpAddr::V4(v4) => v4.octets()[3],
                other => panic!("unexpected caller {other}"),
            };
            handles.push(tokio::spawn(async move {
                let (r, w) = tokio::io::split(s);
                let writer = tokio::spawn(write_stream(w, 100 + id, bytes));
                let got = check_stream(r, id).await;
                drop(writer.await.unwrap());
                got
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    })
}

/// The control side of one stream pair: sends stream `id`, checks stream `100 + id`.
async fn run_streams(control: Node, id: u8, bytes: usize) -> usize {
    let s = control
        .connect(SocketAddr::new(ip(AGENT_IP), PORT))
        .await
        .unwrap();
    let (r, w) = tokio::io::split(s);
    let writer = tokio::spawn(write_stream(w, id, bytes));
    let got = check_stream(r, 100 + id).await;
    drop(writer.await.unwrap());
    got
}

/// Six peers send and receive sequence-numbered streams at once, in both directions: every
/// byte arrives, in order, in both layouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_peers_streams_arrive_in_order_in_both_layouts() {
    const PEERS: u8 = 6;
    const N: usize = PEERS as usize;
    const BYTES: usize = 1 << 20;
    for (threads, layout) in LAYOUTS {
        tokio::time::timeout(T, async {
            let (agent, controls, _keys) = star(PEERS, threads).await;
            assert_eq!(agent.layout(), layout);
            let server = serve_streams(&agent, N, BYTES);
            let clients: Vec<_> = controls
                .iter()
                .enumerate()
                .map(|(i, c)| tokio::spawn(run_streams(c.clone(), i as u8 + 1, BYTES)))
                .collect();
            for c in clients {
                assert_eq!(c.await.unwrap(), BYTES);
            }
            assert_eq!(server.await.unwrap(), vec![BYTES; N]);
            let stats = agent.stats();
            assert_eq!(stats.wg.peers.len(), N);
            for p in &stats.wg.peers {
                assert!(p.rx_packets > (BYTES / 1240) as u64, "{p:?}");
                assert_eq!((p.drop_decrypt, p.drop_allowed_ips), (0, 0), "{p:?}");
            }
            assert_eq!(stats.send_errors, 0, "{stats:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("{layout:?}: timed out"));
    }
}

/// A UDP port that was free a moment ago.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// While two peers move bulk streams both ways: a third peer is added and handshakes, one
/// streaming peer gets a new pre-shared key on both sides (a new session, so a new handshake:
/// a rekey under load), and the other moves to a new UDP port (the agent follows it on its
/// next authenticated packet). Every byte of both streams still arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_rekey_and_roaming_while_bulk_flows_in_both_layouts() {
    const BYTES: usize = 6 << 20;
    for (threads, layout) in LAYOUTS {
        tokio::time::timeout(T, async {
            let (agent, controls, keys) = star(2, threads).await;
            let agent_key = agent.public_key();
            let server = serve_streams(&agent, 2, BYTES);
            let clients: Vec<_> = controls
                .iter()
                .enumerate()
                .map(|(i, c)| tokio::spawn(run_streams(c.clone(), i as u8 + 1, BYTES)))
                .collect();
            // Wait until bulk traffic flows on both peers.
            let flowing = |agent: &Node| {
                agent
                    .stats()
                    .wg
                    .peers
                    .iter()
                    .all(|p| p.rx_packets > 200 && p.tx_packets > 200)
            };
            for _ in 0..500 {
                if flowing(&agent) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(flowing(&agent), "{:?}", agent.stats().wg.peers);

            // A handshake: a new peer joins live and calls in.
            let newcomer = keypair();
            agent
                .set_peer(&peer(newcomer.public, "100.64.0.3/32", None, None))
                .await
                .unwrap();
            let third = node_with_threads(
                newcomer.secret.clone(),
                "100.64.0.3",
                0,
                vec![peer(
                    agent_key,
                    "100.64.0.10/32",
                    Some(loopback(&agent)),
                    None,
                )],
                threads,
            )
            .await;

            // A rekey: peer 1's new pre-shared key, the agent first (so that peer 1's next
            // initiation meets the new key).
            let handshakes_before = controls[0].stats().wg.peers[0].handshakes;
            let psk = [7u8; 32];
            let mut at_agent: PeerConfig = peer(keys[0].public, "100.64.0.1/32", None, None);
            at_agent.preshared_key = Some(psk);
            agent.set_peer(&at_agent).await.unwrap();
            let mut at_control = peer(agent_key, "100.64.0.10/32", Some(loopback(&agent)), None);
            at_control.preshared_key = Some(psk);
            controls[0].set_peer(&at_control).await.unwrap();

            // Roaming: peer 2 moves to another UDP port.
            let new_port = controls[1]
                .set_listen_port(free_port())
                .await
                .unwrap()
                .port();

            // The newcomer's call goes through while the streams flow.
            let third_stream = third.connect(SocketAddr::new(ip(AGENT_IP), PORT + 1)).await;
            // Nothing listens on PORT + 1: a TCP reset proves the round trip (handshake done).
            assert_eq!(
                third_stream.err().map(|e| e.kind()),
                Some(std::io::ErrorKind::ConnectionRefused),
                "{layout:?}"
            );

            for c in clients {
                assert_eq!(c.await.unwrap(), BYTES, "{layout:?}");
            }
            assert_eq!(server.await.unwrap(), vec![BYTES; 2], "{layout:?}");

            assert!(
                controls[0].stats().wg.peers[0].handshakes > handshakes_before,
                "{layout:?}: no new session after the key change"
            );
            let peers = agent.peers();
            let roamed = peers
                .iter()
                .find(|p| p.public_key == keys[1].public)
                .unwrap();
            assert_eq!(
                roamed.endpoint.map(|e| e.port()),
                Some(new_port),
                "{layout:?}: the agent did not follow the roaming peer"
            );
            let newcomer_stats = peers
                .iter()
                .find(|p| p.public_key == newcomer.public)
                .unwrap();
            assert!(newcomer_stats.handshakes >= 1, "{newcomer_stats:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("{layout:?}: timed out"));
    }
}

/// Shutting a node down while a bulk transfer runs ends every data-path task within the
/// deadline, in both layouts; the heartbeat stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_traffic_in_flight_ends_every_task_in_both_layouts() {
    for (threads, layout) in LAYOUTS {
        tokio::time::timeout(T, async {
            let (agent, controls, _keys) = star(1, threads).await;
            let mut listener = agent.listen(PORT).unwrap().remove(0);
            let reader = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0usize;
                // Bounded in reads; ends with EOF or an error once the nodes stop.
                for _ in 0..1_000_000 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                total
            });
            let mut s = controls[0]
                .connect(SocketAddr::new(ip(AGENT_IP), PORT))
                .await
                .unwrap();
            let writer = tokio::spawn(async move {
                let chunk = vec![0x5au8; 64 * 1024];
                // Until the node stops under it (bounded).
                for _ in 0..100_000 {
                    if s.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            });
            // Traffic in flight.
            for _ in 0..500 {
                if agent.stats().wg.peers[0].rx_packets > 500 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(agent.stats().wg.peers[0].rx_packets > 500);
            assert!(
                agent.shutdown(Duration::from_secs(5)).await,
                "{layout:?}: agent's tasks did not end"
            );
            assert!(
                controls[0].shutdown(Duration::from_secs(5)).await,
                "{layout:?}: control's tasks did not end"
            );
            let beat = agent.heartbeat();
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(agent.heartbeat(), beat, "{layout:?}: a task still ticks");
            writer.abort();
            reader.abort();
        })
        .await
        .unwrap_or_else(|_| panic!("{layout:?}: timed out"));
    }
}
