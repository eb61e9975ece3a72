//! Limits, drops and timers: accept queue under a burst, socket limit, backpressure, foreign
//! packets, SYN options, poll delays, half-open and orphan expiry on a simulated clock.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::driver::{Network, smol_now};
use super::*;
use crate::netstack::{Netstack, NetstackConfig, NetstackError, PeerTag};

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
async fn socket_limit_refuses_then_recovers() {
    bounded(async {
        // max 3 sockets on the server (no socket waits in LISTEN: each connection gets one
        // when its SYN arrives), so the fourth SYN is refused until connections close.
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
        let counters = net.stacks[0].counters();
        assert_eq!(counters.sockets_refused, 1);
        assert_eq!(counters.refused_table_full, 1);
        assert_eq!(counters.sockets_open, 3);
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

/// Starts a connect on `client` and returns the SYN it emits (the connect task keeps running
/// until aborted).
async fn emitted_syn(
    client: &Netstack,
    to: SocketAddr,
    now: smoltcp::time::Instant,
) -> (
    Vec<u8>,
    tokio::task::JoinHandle<io::Result<super::super::TcpStream>>,
) {
    let task = tokio::spawn({
        let client = client.clone();
        async move { client.connect(to).await }
    });
    for _ in 0..1000 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        client.poll(now);
        let mut syn = None;
        client.pop_outbound(|p| {
            syn = Some(p.to_vec());
            true
        });
        if let Some(syn) = syn {
            return (syn, task);
        }
    }
    panic!("no SYN emitted");
}

/// Moves packets between two stacks at a fixed simulated time until nothing moves for a few
/// rounds (tasks get to run between rounds).
async fn pump(a: &Netstack, b: &Netstack, now: smoltcp::time::Instant) {
    let mut quiet = 0;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        a.poll(now);
        b.poll(now);
        let mut moved = false;
        a.pop_outbound(|p| {
            moved = true;
            b.push_inbound(PeerTag(0), p).is_ok()
        });
        b.pop_outbound(|p| {
            moved = true;
            a.push_inbound(PeerTag(1), p).is_ok()
        });
        quiet = if moved { 0 } else { quiet + 1 };
        if quiet == 5 {
            return;
        }
    }
    panic!("network never went quiet");
}

fn single(a: [u8; 4]) -> Netstack {
    Netstack::new(NetstackConfig::new(vec![ip(a)])).unwrap()
}

/// A SYN built by a real stack for an address that is not the receiver's.
#[test]
fn packets_for_foreign_addresses_are_dropped_and_counted() {
    current_thread().block_on(bounded(async {
        let (server, client) = (single(V4_SERVER), single(V4_CLIENT));
        let foreign = SocketAddr::from(([100, 64, 0, 99], 80));
        let (syn, connecting) =
            emitted_syn(&client, foreign, smol_now(tokio::time::Instant::now())).await;
        assert_eq!(server.push_inbound(PeerTag(1), &syn), Ok(()));
        assert_eq!(server.push_inbound(PeerTag(1), &[0x45, 0, 1]), Ok(()));
        let mut corrupt = syn.clone();
        corrupt[16..20].copy_from_slice(&V4_SERVER); // now ours, but the TCP checksum is wrong
        smoltcp::wire::Ipv4Packet::new_unchecked(&mut corrupt[..]).fill_checksum();
        assert_eq!(server.push_inbound(PeerTag(1), &corrupt), Ok(()));
        let c = server.counters();
        assert_eq!(
            (c.dropped_not_ours, c.dropped_malformed, c.packets_in),
            (1, 2, 0)
        );
        connecting.abort();
    }));
}

#[test]
fn syn_advertises_window_scaling_and_mss() {
    current_thread().block_on(bounded(async {
        let client = single(V4_CLIENT);
        let to = SocketAddr::new(ip(V4_SERVER), 80);
        let (syn, connecting) = emitted_syn(&client, to, smoltcp::time::Instant::ZERO).await;
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
    }));
}

#[test]
fn half_open_connections_expire() {
    current_thread().block_on(bounded(async {
        let (server, client) = (single(V4_SERVER), single(V4_CLIENT));
        let addr = SocketAddr::new(ip(V4_SERVER), 80);
        let _listener = server.listen(addr).unwrap();
        let t0 = smoltcp::time::Instant::from_secs(1);
        let (syn, connecting) = emitted_syn(&client, addr, t0).await;
        server.push_inbound(PeerTag(1), &syn).unwrap();
        server.poll(t0);
        server.pop_outbound(|_| true); // the SYN-ACK is lost: the handshake never completes
        assert_eq!(
            server.counters().sockets_open,
            1,
            "the half-open connection"
        );
        let delay = server.poll(t0).expect("a timer is pending");
        assert!(delay <= Duration::from_secs(60));
        // Alive through the fifth SYN-ACK retransmission (31 s), reset at 60 s.
        server.poll(t0 + smoltcp::time::Duration::from_secs(59));
        assert_eq!(server.counters().sockets_open, 1, "still half-open at 59 s");
        let later = t0 + smoltcp::time::Duration::from_secs(60);
        server.poll(later);
        server.poll(later);
        let c = server.counters();
        assert_eq!(c.sockets_open, 0, "half-open socket reset and removed");
        assert!(c.resets_sent >= 1);
        connecting.abort();
    }));
}

#[test]
fn dropped_stream_whose_peer_never_closes_is_reset_after_linger() {
    current_thread().block_on(bounded(async {
        let (server, client) = (single(V4_SERVER), single(V4_CLIENT));
        let addr = SocketAddr::new(ip(V4_SERVER), 80);
        let mut listener = server.listen(addr).unwrap();
        let accepting =
            tokio::spawn(async move { listener.accept().await.map(|(s, _)| (s, listener)) });
        let connecting = tokio::spawn({
            let client = client.clone();
            async move { client.connect(addr).await }
        });
        let t0 = smoltcp::time::Instant::from_secs(1);
        pump(&server, &client, t0).await;
        let (accepted, _listener) = accepting.await.unwrap().unwrap();
        let _client_stream = connecting.await.unwrap().unwrap();
        drop(accepted); // FIN; the client never closes its side
        pump(&server, &client, t0).await;
        assert_eq!(server.counters().sockets_open, 1, "the closing orphan");
        let later = t0 + smoltcp::time::Duration::from_secs(61);
        server.poll(later);
        server.poll(later);
        assert_eq!(
            server.counters().sockets_open,
            0,
            "orphan reset and removed"
        );
    }));
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
