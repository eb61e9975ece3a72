//! The data path in every layout (`[interface] threads` = 1, the single task; 2, the crypto +
//! netstack pipeline; 3 and 4, peers sharded over 2 and 3 crypto tasks), whatever the
//! machine's default: per-peer order with many peers sending at once (every shard used), a
//! handshake, a rekey and a roaming event while bulk traffic flows, shutdown with traffic in
//! flight, and for the sharded layout: live add/remove of a peer of shard 1 while traffic
//! flows, and every shard's timers under a flood that keeps every shard busy. (The overlay,
//! interop and NAT suites run in the other layouts through `WGAGENT_TEST_THREADS`, see
//! `.ci/run`.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wgagent::node::{Layout, Node};
use wgagent::wg::{PeerConfig, PublicKey, StaticSecret, receiver_index};

const LAYOUTS: [(usize, Layout); 3] = [
    (1, Layout::Single),
    (2, Layout::Pipeline),
    (3, Layout::Sharded(2)),
];
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
    let (agent, controls, keys, _) = star_with_key(n, threads).await;
    (agent, controls, keys)
}

/// [`star`], also returning the agent's key pair.
async fn star_with_key(n: u8, threads: usize) -> (Node, Vec<Node>, Vec<Keypair>, Keypair) {
    let keys: Vec<Keypair> = (0..n).map(|_| keypair()).collect();
    let ak = covering_key(&keys, threads);
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
    (agent, controls, keys, ak)
}

/// The crypto shard a node with `secret` and `threads` gives the peer `key`.
fn shard_of(secret: &StaticSecret, key: &PublicKey, threads: usize) -> usize {
    let shards = Layout::for_threads(threads).crypto_shards();
    receiver_index(secret, key) as usize % shards
}

/// An agent key that spreads `peers` over every crypto shard of `threads` (when there are
/// enough peers), so that a test's traffic uses every shard. Bounded tries; each has a chance
/// of at least 1 - shards * (1 - 1/shards)^peers.
fn covering_key(peers: &[Keypair], threads: usize) -> Keypair {
    let shards = Layout::for_threads(threads).crypto_shards();
    for _ in 0..200 {
        let ak = keypair();
        let mut used = vec![false; shards];
        for k in peers {
            used[shard_of(&ak.secret, &k.public, threads)] = true;
        }
        if peers.len() < shards || used.iter().all(|&u| u) {
            return ak;
        }
    }
    panic!(
        "no agent key spreads {} peers over {shards} shards",
        peers.len()
    );
}

/// Sharded layouts: every shard handled packets, and every peer's shard is one of them.
fn assert_every_shard_used(agent: &Node, layout: Layout) {
    let stats = agent.stats();
    assert_eq!(stats.shard_work.len(), layout.crypto_shards(), "{stats:?}");
    if let Layout::Sharded(k) = layout {
        for (shard, &work) in stats.shard_work.iter().enumerate() {
            assert!(work > 100, "{layout:?}: shard {shard} idle: {stats:?}");
        }
        assert!(stats.forwarded > 100, "{stats:?}");
        assert!(stats.wg.peers.iter().all(|p| p.shard < k), "{stats:?}");
    }
}

/// The agent side: accepts `n` connections; each sends stream `100 + id` back while checking
/// the incoming stream `id` (the id is the last octet of the caller's tunnel address).
fn serve_streams(agent: &Node, n: usize, bytes: usize) -> tokio::task::JoinHandle<Vec<usize>> {
    serve_streams_on(agent, PORT, n, bytes)
}

/// [`serve_streams`] on another port.
fn serve_streams_on(
    agent: &Node,
    port: u16,
    n: usize,
    bytes: usize,
) -> tokio::task::JoinHandle<Vec<usize>> {
    let mut listener = agent.listen(port).unwrap().remove(0);
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
    run_streams_to(control, PORT, id, bytes).await
}

/// [`run_streams`] to another port.
async fn run_streams_to(control: Node, port: u16, id: u8, bytes: usize) -> usize {
    let s = control
        .connect(SocketAddr::new(ip(AGENT_IP), port))
        .await
        .unwrap();
    let (r, w) = tokio::io::split(s);
    let writer = tokio::spawn(write_stream(w, id, bytes));
    let got = check_stream(r, 100 + id).await;
    drop(writer.await.unwrap());
    got
}

/// Six peers send and receive sequence-numbered streams at once, in both directions: every
/// byte arrives, in order, in every layout (sharded: every shard used, and `wg show` counts
/// each peer's bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_peers_streams_arrive_in_order_in_every_layout() {
    const PEERS: u8 = 6;
    const N: usize = PEERS as usize;
    const BYTES: usize = 1 << 20;
    for (threads, layout) in LAYOUTS.into_iter().chain([(4, Layout::Sharded(3))]) {
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
            assert_every_shard_used(&agent, layout);
            // What `wg show` reads: each peer's traffic as its control counted it, whichever
            // shard carried it (bytes the agent sent, the control received, and back).
            let wg_show = agent.uapi_state(false).peers;
            for (i, c) in controls.iter().enumerate() {
                let key = c.public_key();
                let shown = wg_show.iter().find(|p| p.public_key == key).unwrap();
                let theirs = &c.stats().wg.peers[0];
                let label = format!("{layout:?} peer {i}");
                assert!(shown.rx_bytes > BYTES as u64, "{label}: {shown:?}");
                assert!(shown.tx_bytes > BYTES as u64, "{label}: {shown:?}");
                // Keepalives and the last ACKs may still be in flight: within 1 %.
                assert!(shown.rx_bytes <= theirs.tx_bytes, "{label}");
                assert!(shown.rx_bytes * 100 >= theirs.tx_bytes * 99, "{label}");
                assert!(theirs.rx_bytes * 100 >= shown.tx_bytes * 99, "{label}");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{layout:?}: timed out"));
    }
}

/// A UDP port that was free a moment ago.
/// Accepts one connection and reads it to EOF or an error (bounded in reads); the bytes read.
/// Gives 0 if the accept fails (the node stopped first).
fn sink(mut listener: wgagent::netstack::TcpListener) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return 0;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        for _ in 0..1_000_000 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    })
}

/// Writes 64 KiB chunks until the connection fails under it (bounded in writes).
fn flood(mut s: wgagent::netstack::TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let chunk = vec![0x5au8; 64 * 1024];
        for _ in 0..100_000 {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
        }
    })
}

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
async fn handshake_rekey_and_roaming_while_bulk_flows_in_every_layout() {
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
/// deadline, in every layout (sharded: every shard task too); the heartbeat stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_traffic_in_flight_ends_every_task_in_every_layout() {
    for (threads, layout) in LAYOUTS {
        tokio::time::timeout(T, async {
            let (agent, controls, _keys) = star(1, threads).await;
            let listener = agent.listen(PORT).unwrap().remove(0);
            let reader = sink(listener);
            let s = controls[0]
                .connect(SocketAddr::new(ip(AGENT_IP), PORT))
                .await
                .unwrap();
            let writer = flood(s);
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

/// Waits (bounded) until every peer of `agent` moved more than 200 packets each way.
async fn wait_flowing(agent: &Node) {
    let flowing = |agent: &Node| {
        agent
            .stats()
            .wg
            .peers
            .iter()
            .all(|p| p.rx_packets > 200 && p.tx_packets > 200)
    };
    for _ in 0..500 {
        if flowing(agent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(flowing(agent), "{:?}", agent.stats().wg.peers);
}

/// Sharded layout: while two peers (one per shard) stream both ways, a peer owned by shard 1
/// is added live, handshakes and exchanges a checked stream, then is removed while it still
/// sends: its traffic stops being accepted (unknown receiver index), it leaves the peer view,
/// and the other streams finish intact. Then the agent moves its UDP port: every shard lets go
/// of the old socket, and both peers are answered on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_live_add_and_remove_of_a_shard_1_peer_while_traffic_flows() {
    const BYTES: usize = 6 << 20;
    const THREADS: usize = 3;
    tokio::time::timeout(T, async {
        let (agent, controls, _keys, ak) = star_with_key(2, THREADS).await;
        let server = serve_streams(&agent, 2, BYTES);
        let clients: Vec<_> = controls
            .iter()
            .enumerate()
            .map(|(i, c)| tokio::spawn(run_streams(c.clone(), i as u8 + 1, BYTES)))
            .collect();
        wait_flowing(&agent).await;

        // A newcomer that shard 1 owns.
        let newcomer = (0..200)
            .map(|_| keypair())
            .find(|k| shard_of(&ak.secret, &k.public, THREADS) == 1)
            .unwrap();
        let applied = agent
            .set_peer(&peer(newcomer.public, "100.64.0.3/32", None, None))
            .await
            .unwrap();
        assert_eq!(applied.added, vec![newcomer.public]);
        let third = node_with_threads(
            newcomer.secret.clone(),
            "100.64.0.3",
            0,
            vec![peer(
                ak.public,
                "100.64.0.10/32",
                Some(loopback(&agent)),
                None,
            )],
            THREADS,
        )
        .await;
        let side = serve_streams_on(&agent, PORT + 2, 1, 256 << 10);
        assert_eq!(
            run_streams_to(third.clone(), PORT + 2, 3, 256 << 10).await,
            256 << 10
        );
        assert_eq!(side.await.unwrap(), vec![256 << 10]);
        let shown = agent
            .peers()
            .into_iter()
            .find(|p| p.public_key == newcomer.public)
            .unwrap();
        assert_eq!(shown.shard, 1, "{shown:?}");
        assert!(shown.rx_packets > 100 && shown.handshakes >= 1, "{shown:?}");

        // Removed while it sends.
        let listener = agent.listen(PORT + 3).unwrap().remove(0);
        let sink = sink(listener);
        let s = third
            .connect(SocketAddr::new(ip(AGENT_IP), PORT + 3))
            .await
            .unwrap();
        let writer = flood(s);
        for _ in 0..300 {
            let rx = agent
                .peers()
                .into_iter()
                .find(|p| p.public_key == newcomer.public)
                .map_or(0, |p| p.rx_packets);
            if rx > shown.rx_packets + 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let unknown_before = agent.stats().wg.device.unknown_index;
        assert!(agent.remove_peer(&newcomer.public).await.unwrap());
        assert!(
            agent
                .peers()
                .iter()
                .all(|p| p.public_key != newcomer.public)
        );
        // Its retransmissions and keepalives now name an index no shard has.
        let mut unknown = unknown_before;
        for _ in 0..300 {
            unknown = agent.stats().wg.device.unknown_index;
            if unknown > unknown_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(unknown > unknown_before, "{:?}", agent.stats().wg.device);

        for c in clients {
            assert_eq!(c.await.unwrap(), BYTES);
        }
        assert_eq!(server.await.unwrap(), vec![BYTES; 2]);
        assert_every_shard_used(&agent, Layout::Sharded(2));
        assert_eq!(agent.stats().wg.peers.len(), 2);
        writer.abort();
        sink.abort();

        // The agent moves its port: every shard takes the new socket (the old port is free
        // again only once no shard holds it), and each peer, on either shard, is answered.
        let old = agent.udp_addr().port();
        let new = agent.set_listen_port(free_port()).await.unwrap();
        let mut freed = false;
        for _ in 0..200 {
            if std::net::UdpSocket::bind(("::", old)).is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "a shard still holds the old socket (port {old})");
        for (i, c) in controls.iter().enumerate() {
            let to_agent = SocketAddr::from(([127, 0, 0, 1], new.port()));
            c.set_peer(&peer(ak.public, "100.64.0.10/32", Some(to_agent), None))
                .await
                .unwrap();
            let r = c.connect(SocketAddr::new(ip(AGENT_IP), PORT + 9)).await;
            assert_eq!(
                r.err().map(|e| e.kind()),
                Some(std::io::ErrorKind::ConnectionRefused),
                "control {i} after the agent moved its port"
            );
        }
    })
    .await
    .expect("timed out");
}

/// Sharded layout: a flood of forged data datagrams naming each peer's receiver index keeps
/// every shard busy (shard 0 classifies and forwards, the owners fail to decrypt them); every
/// shard's timers still run (the heartbeat counts the slowest task) and send each peer its
/// persistent keepalives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_timers_keep_firing_under_a_flood_that_busies_every_shard() {
    const THREADS: usize = 3;
    tokio::time::timeout(T, async {
        let (agent, controls, keys, ak) = star_with_key(2, THREADS).await;
        // Sessions first (a refused connection is a full round trip), then keepalives.
        for c in &controls {
            let r = c.connect(SocketAddr::new(ip(AGENT_IP), PORT + 9)).await;
            assert_eq!(
                r.err().map(|e| e.kind()),
                Some(std::io::ErrorKind::ConnectionRefused)
            );
        }
        for (i, k) in keys.iter().enumerate() {
            let allowed = format!("100.64.0.{}/32", i + 1);
            agent
                .set_peer(&peer(k.public, &allowed, None, Some(1)))
                .await
                .unwrap();
        }
        let indices: Vec<u32> = keys
            .iter()
            .map(|k| receiver_index(&ak.secret, &k.public))
            .collect();
        let target = loopback(&agent);
        let (before, beat) = (agent.stats(), agent.heartbeat());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let floods: Vec<_> = (0..2)
            .map(|t| {
                let (stop, indices) = (stop.clone(), indices.clone());
                std::thread::spawn(move || {
                    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    let mut junk = [0u8; 32];
                    junk[0] = 4;
                    let deadline = std::time::Instant::now() + Duration::from_secs(4);
                    let mut n = t as u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && std::time::Instant::now() < deadline
                    {
                        let idx = indices[n as usize % indices.len()];
                        junk[4..8].copy_from_slice(&((idx << 8) | (n & 0xff)).to_le_bytes());
                        junk[8..16].copy_from_slice(&u64::from(n).to_le_bytes());
                        let _ = sock.send_to(&junk, target);
                        n = n.wrapping_add(1);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (after, beat_after) = (agent.stats(), agent.heartbeat());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for f in floods {
            f.join().unwrap();
        }
        for k in 0..2 {
            let work = after.shard_work[k] - before.shard_work[k];
            assert!(work > 1000, "shard {k} was not flooded: {after:?}");
        }
        // 250 ms ticks: 12 in 3 s; the slowest task must have run most of them.
        assert!(beat_after >= beat + 8, "heartbeat {beat} -> {beat_after}");
        for (p, q) in before.wg.peers.iter().zip(&after.wg.peers) {
            // Persistent keepalive every second: at least two 32-byte keepalives in 3 s.
            assert!(
                q.tx_bytes - p.tx_bytes >= 64,
                "shard {}: keepalives starved: {p:?} -> {q:?}",
                q.shard
            );
        }
    })
    .await
    .expect("timed out");
}

/// Sharded layout, real sockets and sessions: peer A uses an inner source inside peer B's
/// allowed IPs while A and B sit on different crypto shards (both ways round: A's packets
/// forwarded to shard 1 and B owned by shard 0, then the reverse). A gets no connection,
/// its packets are counted as `drop_allowed_ips` on A and none reaches the netstack; B, the
/// address's owner, still streams both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_a_peer_cannot_use_the_address_of_a_peer_of_another_shard() {
    const THREADS: usize = 3;
    const BYTES: usize = 64 << 10;
    tokio::time::timeout(T, async {
        for (shard_a, shard_b) in [(1, 0), (0, 1)] {
            let ak = keypair();
            let on = |shard| {
                (0..200)
                    .map(|_| keypair())
                    .find(|k| shard_of(&ak.secret, &k.public, THREADS) == shard)
                    .unwrap()
            };
            let (a, b) = (on(shard_a), on(shard_b));
            let agent = node_with_threads(
                ak.secret.clone(),
                AGENT_IP,
                0,
                vec![
                    peer(a.public, "100.64.0.1/32", None, None),
                    peer(b.public, "100.64.0.2/32", None, None),
                ],
                THREADS,
            )
            .await;
            let port = PORT + 20;
            let server = serve_streams_on(&agent, port, 1, BYTES);
            let to_agent = peer(ak.public, "100.64.0.10/32", Some(loopback(&agent)), None);
            // A's own tunnel address is B's.
            let spoofer = node_with_threads(
                a.secret.clone(),
                "100.64.0.2",
                0,
                vec![to_agent.clone()],
                THREADS,
            )
            .await;
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                spoofer.connect(SocketAddr::new(ip(AGENT_IP), port)),
            )
            .await;
            assert!(
                !matches!(r, Ok(Ok(_))),
                "A (shard {shard_a}) got a connection with B's address"
            );
            let stats = agent.stats();
            let pa = stats
                .wg
                .peers
                .iter()
                .find(|p| p.public_key == a.public)
                .unwrap();
            assert_eq!(pa.shard, shard_a, "{pa:?}");
            assert!(
                pa.handshakes >= 1,
                "A's session itself is authentic: {pa:?}"
            );
            assert!(pa.drop_allowed_ips >= 1, "{pa:?}");
            assert_eq!(pa.rx_packets, 0, "{pa:?}");
            assert_eq!(
                stats.netstack.packets_in, 0,
                "nothing of A's may reach the netstack"
            );

            let owner =
                node_with_threads(b.secret.clone(), "100.64.0.2", 0, vec![to_agent], THREADS).await;
            // Kept alive until the agent has read B's stream to its end (FIN included).
            assert_eq!(run_streams_to(owner.clone(), port, 2, BYTES).await, BYTES);
            assert_eq!(server.await.unwrap(), vec![BYTES]);
            let stats = agent.stats();
            let pb = stats
                .wg
                .peers
                .iter()
                .find(|p| p.public_key == b.public)
                .unwrap();
            assert_eq!(pb.shard, shard_b, "{pb:?}");
            assert!(pb.rx_packets > 0 && pb.drop_allowed_ips == 0, "{pb:?}");
            let pa = stats
                .wg
                .peers
                .iter()
                .find(|p| p.public_key == a.public)
                .unwrap();
            assert_eq!(pa.rx_packets, 0, "{pa:?}");
            assert!(stats.shard_work.iter().all(|&w| w > 0), "{stats:?}");
            assert!(agent.shutdown(Duration::from_secs(5)).await);
        }
    })
    .await
    .expect("timed out");
}
