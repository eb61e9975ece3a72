//! In-memory pair tests: real netstacks wired together by the reference driver.

mod driver;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use self::driver::{Network, smol_now};
use super::{Netstack, NetstackConfig, NetstackError, TcpListener};

const V4_SERVER: [u8; 4] = [100, 64, 0, 1];
const V4_CLIENT: [u8; 4] = [100, 64, 0, 2];
const V4_CLIENT2: [u8; 4] = [100, 64, 0, 3];
const V6_SERVER: [u16; 8] = [0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1];
const V6_CLIENT: [u16; 8] = [0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 2];

fn ip<T: Into<IpAddr>>(a: T) -> IpAddr {
    a.into()
}

/// Server (v4+v6) and client (v4+v6) with default settings.
fn pair() -> Network {
    Network::new(
        &[
            &[ip(V4_SERVER), ip(V6_SERVER)],
            &[ip(V4_CLIENT), ip(V6_CLIENT)],
        ],
        |c| c,
    )
}

/// Every async test body runs under this bound.
async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

/// Accepts forever; each connection echoes until EOF, then shuts down its write half.
fn spawn_echo(mut listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    })
}

/// Deterministic pseudo-random bytes (position-dependent, so reordering or loss shows).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn echo_roundtrip(server_ip: IpAddr) {
    let net = pair();
    let addr = SocketAddr::new(server_ip, 7);
    let echo = spawn_echo(net.stacks[0].listen(addr).unwrap());
    let mut c = net.stacks[1].connect(addr).await.unwrap();
    assert_eq!(c.peer_addr(), addr);
    assert_eq!(c.local_addr().is_ipv4(), server_ip.is_ipv4());
    for msg in [&b"hello"[..], b"world", &[7u8; 5000]] {
        c.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_ipv4() {
    bounded(echo_roundtrip(ip(V4_SERVER))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_ipv6() {
    bounded(echo_roundtrip(ip(V6_SERVER))).await;
}

/// Sends `len` bytes each way at once over one connection and checks both arrive intact.
/// Returns the elapsed time.
async fn transfer_both_ways(net: &Network, len: usize) -> Duration {
    let addr = SocketAddr::new(ip(V4_SERVER), 9000);
    let mut listener = net.stacks[0].listen(addr).unwrap();
    let started = tokio::time::Instant::now();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        exchange(s, 2, 1, len).await
    });
    let c = net.stacks[1].connect(addr).await.unwrap();
    exchange(c, 1, 2, len).await;
    server.await.unwrap();
    started.elapsed()
}

/// Writes pattern(`send_seed`) while reading and verifying pattern(`recv_seed`).
async fn exchange(s: super::TcpStream, send_seed: u64, recv_seed: u64, len: usize) {
    let (mut r, mut w) = tokio::io::split(s);
    let writer = async {
        let data = pattern(send_seed, len);
        for chunk in data.chunks(64 * 1024) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::with_capacity(len);
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), len, "stream truncated or padded");
        assert!(got == pattern(recv_seed, len), "stream corrupted");
    };
    tokio::join!(writer, reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_each_way_arrives_intact() {
    bounded(async {
        let net = pair();
        let len = 10 * 1024 * 1024;
        let took = transfer_both_ways(&net, len).await;
        let mbs = 2.0 * len as f64 / took.as_secs_f64() / 1e6;
        println!("netstack in-memory: 2 x 10 MiB in {took:?} = {mbs:.1} MB/s total");
        let c = net.stacks[0].counters();
        assert_eq!(c.dropped_malformed + c.dropped_not_ours, 0);
    })
    .await;
}

/// Throughput in one direction (run with `--release --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run in release"]
async fn throughput_one_way() {
    bounded(async {
        let net = pair();
        let addr = SocketAddr::new(ip(V4_SERVER), 9001);
        let mut listener = net.stacks[0].listen(addr).unwrap();
        let len = 64 * 1024 * 1024;
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break total;
                }
                total += n;
            }
        });
        let mut c = net.stacks[1].connect(addr).await.unwrap();
        let chunk = pattern(3, 256 * 1024);
        let started = tokio::time::Instant::now();
        for _ in 0..len / chunk.len() {
            c.write_all(&chunk).await.unwrap();
        }
        c.shutdown().await.unwrap();
        assert_eq!(server.await.unwrap(), len);
        let took = started.elapsed();
        let mbs = len as f64 / took.as_secs_f64() / 1e6;
        println!("netstack in-memory one-way: 64 MiB in {took:?} = {mbs:.1} MB/s");
        println!("server {:?}", net.stacks[0].counters());
        println!("client {:?}", net.stacks[1].counters());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_connections_from_two_addresses() {
    bounded(async {
        let net = Network::new(
            &[&[ip(V4_SERVER)], &[ip(V4_CLIENT)], &[ip(V4_CLIENT2)]],
            |c| c,
        );
        let addr = SocketAddr::new(ip(V4_SERVER), 80);
        let echo = spawn_echo(net.stacks[0].listen(addr).unwrap());
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let client = net.stacks[1 + (i % 2) as usize].clone();
            tasks.push(tokio::spawn(async move {
                let mut s = client.connect(addr).await?;
                let msg = format!("connection {i}");
                s.write_all(msg.as_bytes()).await?;
                s.shutdown().await?;
                let mut back = String::new();
                s.read_to_string(&mut back).await?;
                assert_eq!(back, msg);
                io::Result::Ok(s.local_addr().ip())
            }));
        }
        let mut sources = Vec::new();
        for t in tasks {
            sources.push(
                t.await
                    .unwrap()
                    .expect("every connection is accepted and served"),
            );
        }
        assert_eq!(sources.iter().filter(|a| **a == ip(V4_CLIENT)).count(), 25);
        assert_eq!(sources.iter().filter(|a| **a == ip(V4_CLIENT2)).count(), 25);
        let c = net.stacks[0].counters();
        assert_eq!(c.sockets_refused, 0);
        assert_eq!(c.resets_sent, 0, "no SYN may be answered with RST");
        echo.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_still_reads_the_full_reply() {
    bounded(async {
        let net = pair();
        let addr = SocketAddr::new(ip(V4_SERVER), 8080);
        let mut listener = net.stacks[0].listen(addr).unwrap();
        let reply = pattern(9, 3 * 1024 * 1024);
        let expected = reply.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            s.read_to_end(&mut request).await.unwrap(); // ends at the client's FIN
            s.write_all(&request).await.unwrap();
            s.write_all(&reply).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let mut c = net.stacks[1].connect(addr).await.unwrap();
        c.write_all(b"request").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(
            c.write(b"more").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..7], b"request");
        assert!(
            got[7..] == expected[..],
            "reply truncated after our shutdown"
        );
        server.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_close_gives_eof_and_sockets_are_freed() {
    bounded(async {
        let net = pair();
        let addr = SocketAddr::new(ip(V4_SERVER), 9);
        let mut listener = net.stacks[0].listen(addr).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"bye").await.unwrap();
            drop(s); // close without shutdown: drop must send FIN after the data
            listener
        });
        let mut c = net.stacks[1].connect(addr).await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        assert_eq!(c.read(&mut [0u8; 8]).await.unwrap(), 0, "EOF again");
        let listener = server.await.unwrap();
        drop(c);
        // Both ends reach CLOSED/TIME-WAIT and are removed: the server keeps only its LISTEN
        // socket, the client none.
        for _ in 0..200 {
            if net.stacks[0].counters().sockets_open == 1
                && net.stacks[1].counters().sockets_open == 0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(net.stacks[0].counters().sockets_open, 1);
        assert_eq!(net.stacks[1].counters().sockets_open, 0);
        drop(listener);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_is_reported_as_connection_reset() {
    bounded(async {
        let net = pair();
        let addr = SocketAddr::new(ip(V4_SERVER), 10);
        let mut listener = net.stacks[0].listen(addr).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
            // Wait until more unread data sits in the buffer, then drop: that resets.
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(s);
        });
        let mut c = net.stacks[1].connect(addr).await.unwrap();
        c.write_all(b"abc").await.unwrap();
        server.await.unwrap();
        let err = c.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_closed_port_is_refused() {
    bounded(async {
        let net = pair();
        let err = net.stacks[1]
            .connect(SocketAddr::new(ip(V4_SERVER), 4444))
            .await
            .expect_err("nobody listens");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            net.stacks[1].counters().sockets_open,
            0,
            "failed connect frees its socket"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_limit_refuses_then_recovers() {
    bounded(async {
        // max 3 sockets on the server: each connection consumes the LISTEN socket and a fresh
        // one replaces it while the limit allows, so the third connection takes the last LISTEN
        // socket and the fourth SYN is refused until connections close.
        let net = Network::new(&[&[ip(V4_SERVER)], &[ip(V4_CLIENT)]], |mut c| {
            if c.addresses == [ip(V4_SERVER)] {
                c.max_sockets = 3;
            }
            c
        });
        let addr = SocketAddr::new(ip(V4_SERVER), 80);
        let echo = spawn_echo(net.stacks[0].listen(addr).unwrap());
        let a = net.stacks[1].connect(addr).await.unwrap();
        let b = net.stacks[1].connect(addr).await.unwrap();
        let c = net.stacks[1].connect(addr).await.unwrap();
        let err = net.stacks[1]
            .connect(addr)
            .await
            .expect_err("over the limit");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert!(net.stacks[0].counters().sockets_refused >= 1);
        assert!(net.stacks[0].counters().sockets_open <= 3);
        drop((a, b, c));
        let mut ok = None;
        for _ in 0..100 {
            if let Ok(s) = net.stacks[1].connect(addr).await {
                ok = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut s = ok.expect("closed sockets are recycled");
        s.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        echo.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_queues_apply_backpressure_without_loss() {
    bounded(async {
        let net = Network::new(&[&[ip(V4_SERVER)], &[ip(V4_CLIENT)]], |mut c| {
            c.queue_packets = 4;
            c
        });
        transfer_both_ways(&net, 1024 * 1024).await;
        let (s, c) = (net.stacks[0].counters(), net.stacks[1].counters());
        assert!(s.inbound_full + c.inbound_full + s.outbound_full + c.outbound_full > 0);
        assert_eq!(s.dropped_malformed + s.dropped_not_ours, 0);
    })
    .await;
}

/// A SYN built by a real stack for an address that is not the receiver's.
#[test]
fn packets_for_foreign_addresses_are_dropped_and_counted() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bounded(async {
        let cfg = |a: [u8; 4]| NetstackConfig::new(vec![ip(a)]);
        let server = Netstack::new(cfg(V4_SERVER)).unwrap();
        let client = Netstack::new(cfg(V4_CLIENT)).unwrap();
        let start = tokio::time::Instant::now();
        let connecting = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .connect(SocketAddr::from(([100, 64, 0, 99], 80)))
                    .await
            }
        });
        let mut syn = None;
        for _ in 0..1000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            client.poll(smol_now(start));
            client.pop_outbound(|p| {
                syn = Some(p.to_vec());
                true
            });
            if syn.is_some() {
                break;
            }
        }
        let syn = syn.expect("client emits a SYN");
        assert_eq!(server.push_inbound(&syn), Ok(()));
        assert_eq!(server.push_inbound(&[0x45, 0, 1]), Ok(()));
        let c = server.counters();
        assert_eq!(
            (c.dropped_not_ours, c.dropped_malformed, c.packets_in),
            (1, 1, 0)
        );
        connecting.abort();
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn_advertises_window_scaling_and_mss() {
    bounded(async {
        let client = Netstack::new(NetstackConfig::new(vec![ip(V4_CLIENT)])).unwrap();
        let start = tokio::time::Instant::now();
        let connecting = tokio::spawn({
            let client = client.clone();
            async move { client.connect(SocketAddr::new(ip(V4_SERVER), 80)).await }
        });
        let mut syn = None;
        for _ in 0..1000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            client.poll(smol_now(start));
            client.pop_outbound(|p| {
                syn = Some(p.to_vec());
                true
            });
            if syn.is_some() {
                break;
            }
        }
        let syn = syn.expect("SYN");
        let ip4 = smoltcp::wire::Ipv4Packet::new_checked(&syn[..]).unwrap();
        let tcp = smoltcp::wire::TcpPacket::new_checked(ip4.payload()).unwrap();
        let repr = smoltcp::wire::TcpRepr::parse(
            &tcp,
            &ip4.src_addr().into(),
            &ip4.dst_addr().into(),
            &smoltcp::phy::ChecksumCapabilities::default(),
        )
        .unwrap();
        // 512 KiB buffers → shift 4; MSS = 1280 - 20 - 20.
        assert_eq!(repr.window_scale, Some(4));
        assert_eq!(repr.max_seg_size, Some(1240));
        connecting.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_needs_no_frequent_polls() {
    bounded(async {
        let net = pair();
        let addr = SocketAddr::new(ip(V4_SERVER), 7);
        let echo = spawn_echo(net.stacks[0].listen(addr).unwrap());
        let mut c = net.stacks[1].connect(addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        c.read_exact(&mut [0u8; 4]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await; // delayed ACKs settle
        let now = smol_now(tokio::time::Instant::now()) + smoltcp::time::Duration::from_secs(1);
        for s in &net.stacks {
            // The next deadline is the keep-alive (25 s), not a millisecond tick.
            let d = s.poll(now);
            assert!(d.is_none_or(|d| d > Duration::from_secs(5)), "delay {d:?}");
        }
        echo.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_router_served_over_the_listener() {
    use axum::{Router, routing::get};
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;

    bounded(async {
        let net = pair();
        let addr = SocketAddr::new(ip(V6_SERVER), 4);
        let listener = net.stacks[0].listen(addr).unwrap();
        let router = Router::new().route("/hello", get(|| async { "world" }));
        let server = tokio::spawn(async move { axum::serve(listener, router).await });

        let stream = net.stacks[1].connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        for _ in 0..3 {
            let req = http::Request::get("/hello")
                .header("host", "agent")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            sender.ready().await.unwrap(); // http1: one request at a time
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"world");
        }
        server.abort();
    })
    .await;
}

#[test]
fn config_is_validated() {
    let ok = NetstackConfig::new(vec![ip(V4_SERVER)]);
    assert_ne!(
        ok.seed,
        NetstackConfig::default().seed,
        "seed comes from the OS RNG"
    );
    let bad = |f: fn(&mut NetstackConfig)| {
        let mut c = ok.clone();
        f(&mut c);
        Netstack::new(c).err()
    };
    assert!(matches!(
        bad(|c| c.addresses.clear()),
        Some(NetstackError::NoAddresses)
    ));
    assert!(matches!(
        bad(|c| c.mtu = 500),
        Some(NetstackError::InvalidMtu(500))
    ));
    assert!(matches!(
        bad(|c| c.tcp_buffer = 8192),
        Some(NetstackError::InvalidBuffer(_))
    ));
    assert!(matches!(
        bad(|c| c.addresses = vec![ip(V4_SERVER), ip(V4_CLIENT), ip(V4_CLIENT2)]),
        Some(NetstackError::TooManyAddresses { .. })
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = Netstack::new(ok.clone()).unwrap();
        assert!(matches!(
            s.listen(SocketAddr::new(ip(V4_CLIENT), 80)).err(),
            Some(NetstackError::AddressNotLocal(_))
        ));
        assert!(matches!(
            s.listen(SocketAddr::new(ip(V4_SERVER), 0)).err(),
            Some(NetstackError::PortZero)
        ));
        let _l = s.listen(SocketAddr::new(ip(V4_SERVER), 80)).unwrap();
        assert!(matches!(
            s.listen(SocketAddr::new(ip(V4_SERVER), 80)).err(),
            Some(NetstackError::AddrInUse(_))
        ));
    });
}
