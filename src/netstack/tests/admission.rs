//! Admission: one peer cannot take every socket, the table keeps a reserve for light peers, the
//! memory budget refuses new connections and is given back, and a lingering close lets a reply
//! reach a client that is still sending.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::driver::Network;
use super::*;
use crate::netstack::{PeerTag, TcpStream};

const V4_CLIENT3: [u8; 4] = [100, 64, 0, 4];

/// Connects from `stack` until a connection is refused; returns the open ones.
async fn fill(net: &Network, stack: usize, addr: SocketAddr, max: usize) -> Vec<TcpStream> {
    let mut open = Vec::new();
    for _ in 0..max {
        match net.stacks[stack].connect(addr).await {
            Ok(s) => open.push(s),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
                break;
            }
        }
    }
    open
}

/// Waits (bounded) until `stack` has `n` sockets.
async fn sockets_become(net: &Network, stack: usize, n: u64) {
    for _ in 0..500 {
        if net.stacks[stack].counters().sockets_open == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "stack {stack}: {:?}, expected {n} sockets",
        net.stacks[stack].counters()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_is_capped_and_another_is_served() {
    bounded(async {
        let net = Network::new(
            &[&[ip(V4_SERVER)], &[ip(V4_CLIENT)], &[ip(V4_CLIENT2)]],
            |mut c| {
                c.max_connections_per_peer = 3;
                c
            },
        );
        let addr = SocketAddr::new(ip(V4_SERVER), 80);
        let echo = spawn_echo(net.stacks[0].listen(addr).unwrap());
        let a = fill(&net, 1, addr, 10).await;
        assert_eq!(a.len(), 3, "the first peer holds its cap");
        let c = net.stacks[0].counters();
        assert_eq!((c.refused_peer_limit, c.sockets_refused), (1, 1), "{c:?}");
        let b = fill(&net, 2, addr, 2).await;
        assert_eq!(b.len(), 2, "the second peer is served");
        // Closing one of the first peer's connections lets it connect again.
        drop(a.into_iter().next());
        let mut again = None;
        for _ in 0..100 {
            if let Ok(s) = net.stacks[1].connect(addr).await {
                again = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut s = again.expect("a freed slot is usable again");
        s.write_all(b"x").await.unwrap();
        s.read_exact(&mut [0u8; 1]).await.unwrap();
        echo.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_keeps_a_reserve_for_light_peers() {
    bounded(async {
        // 16 sockets, so the last 2 are kept for peers holding fewer than 16 / 4 = 4.
        let net = Network::new(
            &[
                &[ip(V4_SERVER)],
                &[ip(V4_CLIENT)],
                &[ip(V4_CLIENT2)],
                &[ip(V4_CLIENT3)],
            ],
            |mut c| {
                c.max_sockets = 16;
                c.max_connections_per_peer = 16;
                c
            },
        );
        let addr = SocketAddr::new(ip(V4_SERVER), 80);
        let echo = spawn_echo(net.stacks[0].listen(addr).unwrap());
        let heavy = fill(&net, 1, addr, 20).await;
        assert_eq!(heavy.len(), 14, "a heavy peer stops at the reserve");
        let light = fill(&net, 2, addr, 2).await;
        assert_eq!(light.len(), 2, "a light peer gets the reserve");
        let late = fill(&net, 3, addr, 1).await;
        assert!(late.is_empty(), "the table is full");
        let c = net.stacks[0].counters();
        assert_eq!(c.refused_table_full, 2, "{c:?}");
        assert_eq!(c.sockets_open, 16);
        echo.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_refuses_new_connections_and_is_given_back() {
    bounded(async {
        let net = Network::new(&[&[ip(V4_SERVER)], &[ip(V4_CLIENT)]], |mut c| {
            if c.addresses == [ip(V4_SERVER)] {
                c.tcp_buffer = 64 * 1024;
                // A fresh socket is charged 12 KiB (a page of each ring and 4 KiB): 5 fit.
                c.memory_budget = 64 * 1024;
            }
            c
        });
        let addr = SocketAddr::new(ip(V4_SERVER), 80);
        let echo = spawn_echo(net.stacks[0].listen(addr).unwrap());
        let mut open = fill(&net, 1, addr, 10).await;
        assert_eq!(open.len(), 5);
        assert_eq!(net.stacks[0].counters().refused_memory, 1);
        // Data through one connection commits more of its rings: fewer fit now.
        let payload = pattern(7, 40_000);
        open[0].write_all(&payload).await.unwrap();
        let mut back = vec![0u8; payload.len()];
        open[0].read_exact(&mut back).await.unwrap();
        assert_eq!(back, payload);
        let charged = net.stacks[0].socket_memory();
        assert!(charged >= 5 * 12 * 1024 + 2 * 36 * 1024, "{charged}");
        drop(open.split_off(3));
        sockets_become(&net, 0, 3).await;
        assert!(fill(&net, 1, addr, 1).await.is_empty(), "still over budget");
        // Everything closed: the budget is whole again.
        drop(open);
        sockets_become(&net, 0, 0).await;
        assert_eq!(net.stacks[0].socket_memory(), 0);
        assert_eq!(fill(&net, 1, addr, 5).await.len(), 5);
        echo.abort();
    })
    .await;
}

/// The server answers before reading the whole request (as a 413 does) and drops the stream
/// while the client is still sending.
async fn reply_early(lingering: bool) -> io::Result<Vec<u8>> {
    let net = Network::new(&[&[ip(V4_SERVER)], &[ip(V4_CLIENT)]], |c| c);
    let addr = SocketAddr::new(ip(V4_SERVER), 80);
    let mut listener = net.stacks[0].listen(addr).unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 1000];
        s.read_exact(&mut head).await.unwrap();
        s.write_all(b"413 too large").await.unwrap();
        if lingering {
            s.set_lingering_close(Duration::from_secs(5));
        }
        drop(s);
        listener
    });
    let c = net.stacks[1].connect(addr).await.unwrap();
    let (mut r, mut w) = tokio::io::split(c);
    let body = pattern(3, 4 << 20);
    let writer = tokio::spawn(async move {
        let r = w.write_all(&body).await;
        let _ = w.shutdown().await;
        r
    });
    let mut reply = Vec::new();
    let read = r.read_to_end(&mut reply).await;
    let _ = writer.await;
    let _listener = server.await.unwrap();
    read.map(|_| reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lingering_close_delivers_a_reply_to_a_client_still_sending() {
    bounded(async {
        let reply = reply_early(true)
            .await
            .expect("no reset with a lingering close");
        assert_eq!(reply, b"413 too large");
        let plain = reply_early(false).await;
        assert_eq!(
            plain.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset),
            "without it, unread data means RST (as Linux)"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_streams_know_their_peer() {
    bounded(async {
        let net = Network::new(
            &[&[ip(V4_SERVER)], &[ip(V4_CLIENT)], &[ip(V4_CLIENT2)]],
            |c| c,
        );
        let addr = SocketAddr::new(ip(V4_SERVER), 80);
        let mut listener = net.stacks[0].listen(addr).unwrap();
        let out = net.stacks[2].connect(addr).await.unwrap();
        assert_eq!(out.peer_tag(), None, "our own connection has no peer tag");
        let (s, _) = listener.accept().await.unwrap();
        assert_eq!(s.peer_tag(), Some(PeerTag(2)));
    })
    .await;
}
