//! In-memory pair tests: real netstacks wired together by the reference driver.

mod admission;
pub(crate) mod driver;
mod limits;
mod loss;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use self::driver::Network;
use super::TcpListener;

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

/// A single-threaded runtime for tests that drive stacks by hand.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every async test body runs under this bound.
async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

/// Runs `f` on a single-threaded runtime with a simulated clock: tokio's paused time, which
/// jumps to the next timer only when every task waits. The [`Network`] driver and the stacks'
/// timers (retransmission, keep-alive, idle, connect) then count simulated seconds, so however
/// slowly a loaded machine runs the test, no timer fires early relative to the work done and
/// every run sees the same packets in the same order. Bounded by `sim_limit` of simulated time
/// and, against a livelock that never lets the clock advance, by 120 s of real time.
fn simulated<F>(sim_limit: Duration, f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    use std::sync::mpsc::{RecvTimeoutError, channel};
    let (done, result) = channel();
    let name = std::thread::current()
        .name()
        .unwrap_or("simulated")
        .to_owned();
    let runner = std::thread::Builder::new().name(name).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let out = rt.block_on(async {
            timeout(sim_limit, f)
                .await
                .expect("test exceeded its simulated time")
        });
        let _ = done.send(out);
    });
    let runner = runner.expect("spawn the runtime thread");
    match result.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out,
        Err(RecvTimeoutError::Disconnected) => match runner.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the runner sends before it ends"),
        },
        Err(RecvTimeoutError::Timeout) => panic!("test exceeded 120 s of real time"),
    }
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
/// Returns the time from connect to both ends seeing EOF (data generated beforehand).
async fn transfer_both_ways(net: &Network, len: usize) -> Duration {
    let addr = SocketAddr::new(ip(V4_SERVER), 9000);
    let mut listener = net.stacks[0].listen(addr).unwrap();
    let (up, down) = (Arc::new(pattern(1, len)), Arc::new(pattern(2, len)));
    let started = tokio::time::Instant::now();
    let server = tokio::spawn({
        let (up, down) = (up.clone(), down.clone());
        async move {
            let (s, _) = listener.accept().await.unwrap();
            exchange(s, down, up).await
        }
    });
    let c = net.stacks[1].connect(addr).await.unwrap();
    exchange(c, up, down).await;
    server.await.unwrap();
    started.elapsed()
}

/// Writes `send` while reading and comparing against `expect`, concurrently.
async fn exchange(s: super::TcpStream, send: Arc<Vec<u8>>, expect: Arc<Vec<u8>>) {
    let (mut r, mut w) = tokio::io::split(s);
    let writer = async {
        for chunk in send.chunks(64 * 1024) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::with_capacity(expect.len());
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), expect.len(), "stream truncated or padded");
        assert!(got == *expect, "stream corrupted");
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
        // Both ends reach CLOSED/TIME-WAIT and are removed (no socket waits in LISTEN).
        for _ in 0..200 {
            if net.stacks[0].counters().sockets_open == 0
                && net.stacks[1].counters().sockets_open == 0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(net.stacks[0].counters().sockets_open, 0);
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
