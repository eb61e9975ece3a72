//! Tests of `wg::gso`: the run plan (sans-IO), and real GSO/GRO over loopback.

use super::*;
use crate::wg::udp::bind_udp;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

fn v4(port: u16) -> SocketAddr {
    (Ipv4Addr::LOCALHOST, port).into()
}

/// The run lengths [`Sender`] would send for these (destination, length) datagrams.
fn plan_runs(datagrams: &[(SocketAddr, usize)]) -> Vec<usize> {
    let mut runs = Vec::new();
    let mut plan = RunPlan::default();
    for &(to, len) in datagrams {
        if !plan.push(to, len) {
            runs.push(plan.len());
            plan = RunPlan::default();
            assert!(plan.push(to, len), "an empty plan takes anything");
        }
    }
    if !plan.is_empty() {
        runs.push(plan.len());
    }
    runs
}

#[test]
fn runs_split_on_endpoint_size_and_short_tail() {
    let (a, b) = (v4(1), v4(2));
    // Equal sizes to one endpoint share a run; a shorter one ends it.
    assert_eq!(plan_runs(&[(a, 100), (a, 100), (a, 60), (a, 100)]), [3, 1]);
    // Another endpoint starts a new run, even with the same size.
    assert_eq!(
        plan_runs(&[(a, 100), (b, 100), (a, 100), (a, 100)]),
        [1, 1, 2]
    );
    // A larger datagram cannot join (only the last may differ, and only shorter).
    assert_eq!(plan_runs(&[(a, 100), (a, 120), (a, 120)]), [1, 2]);
    // Same IP, other port: another endpoint.
    assert_eq!(plan_runs(&[(a, 10), (v4(1), 10), (v4(3), 10)]), [2, 1]);
    assert!(plan_runs(&[]).is_empty());
}

#[test]
fn runs_are_capped_by_segments_and_bytes() {
    let a = v4(1);
    // Small datagrams: the segment cap.
    let small = vec![(a, 100); 130];
    assert_eq!(plan_runs(&small), [64, 64, 2]);
    // WireGuard-sized datagrams (MTU 1280 + 32): the byte cap, 49 × 1312 = 64288.
    let big = vec![(a, 1312); 100];
    assert_eq!(plan_runs(&big), [49, 49, 2]);
    const { assert!(49 * 1312 <= MAX_RUN_BYTES && 50 * 1312 > MAX_RUN_BYTES) };
    // A datagram that alone exceeds the cap travels alone; so does an empty one.
    assert_eq!(
        plan_runs(&[(a, 65_600), (a, 65_600), (a, 0), (a, 0)]),
        [1, 1, 1, 1]
    );
}

#[test]
fn plan_refuses_without_changing() {
    let a = v4(1);
    let mut plan = RunPlan::default();
    assert!(plan.push(a, 50));
    let before = plan;
    assert!(!plan.accepts(v4(2), 50));
    assert!(!plan.push(v4(2), 50));
    assert_eq!(plan, before);
}

/// Distinct payloads so that order and splitting are checked, not just counts.
fn payloads(count: usize, len: usize, last: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let n = if i + 1 == count { last } else { len };
            (0..n).map(|j| (i * 7 + j) as u8).collect()
        })
        .collect()
}

/// Flushes until done (bounded), returning the totals.
async fn flush_all(tx: &mut Sender, socket: &UdpSocket) -> Flushed {
    let mut total = Flushed::default();
    for _ in 0..100 {
        socket.writable().await.unwrap();
        let f = tx.flush(socket);
        total.datagrams += f.datagrams;
        total.gso_sends += f.gso_sends;
        total.dropped += f.dropped;
        if !f.blocked {
            return total;
        }
    }
    panic!("flush kept blocking");
}

/// Receives until `want` datagrams arrived (bounded); also the most datagrams one receive gave.
async fn recv_all(socket: &UdpSocket, rx: &mut Receiver, want: usize) -> (Vec<Vec<u8>>, usize) {
    let mut got = Vec::new();
    let mut most = 0;
    for _ in 0..1000 {
        if got.len() >= want {
            break;
        }
        socket.readable().await.unwrap();
        match rx.recv(socket) {
            Ok(r) => {
                assert!(!r.truncated);
                most = most.max(r.datagrams);
                got.extend(rx.datagrams().map(<[u8]>::to_vec));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv failed: {e}"),
        }
    }
    (got, most)
}

/// Sends one run of `count` datagrams from `a` to `to` (plain form) and receives them on `b`.
async fn run_over(
    a: &UdpSocket,
    b: &UdpSocket,
    to: SocketAddr,
    gso: bool,
    gro: bool,
) -> (Flushed, Vec<Vec<u8>>, usize, bool) {
    let gro_on = gro && enable_gro(b);
    let sent = payloads(20, 1312, 700);
    let mut tx = Sender::new(a.local_addr().unwrap().is_ipv6(), gso);
    for d in &sent {
        assert!(tx.push(to, d));
    }
    assert_eq!(tx.len(), sent.len());
    let f = flush_all(&mut tx, a).await;
    assert!(tx.is_empty());
    let mut rx = Receiver::new();
    let (got, most) = recv_all(b, &mut rx, sent.len()).await;
    assert_eq!(got, sent, "every datagram, whole and in order");
    let src = rx.source().unwrap();
    assert_eq!(src.port(), a.local_addr().unwrap().port());
    assert_eq!(src.is_ipv4(), to.is_ipv4(), "sources come out normalised");
    (f, got, most, gro_on)
}

#[tokio::test]
async fn gso_run_arrives_split_with_and_without_gro() {
    tokio::time::timeout(Duration::from_secs(10), async {
        for gro in [false, true] {
            let (a, b) = (bind_udp(0).unwrap(), bind_udp(0).unwrap());
            let to = v4(b.local_addr().unwrap().port());
            assert!(gso_supported(&a), "this kernel has UDP_SEGMENT");
            let (f, _, most, gro_on) = run_over(&a, &b, to, true, gro).await;
            assert_eq!((f.datagrams, f.gso_sends, f.dropped), (20, 1, 0));
            if gro_on {
                // Loopback keeps a GSO run whole for a GRO socket: one receive, 20 datagrams.
                assert_eq!(most, 20);
            } else {
                assert_eq!(most, 1, "without GRO every receive is one datagram");
            }
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn gso_over_ipv6_and_ipv4_only_sockets() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (a, b) = (bind_udp(0).unwrap(), bind_udp(0).unwrap());
        if a.local_addr().unwrap().is_ipv6() && a.send_to(b"probe", "[::1]:9").await.is_ok() {
            let to = SocketAddr::from((Ipv6Addr::LOCALHOST, b.local_addr().unwrap().port()));
            let (f, _, most, _) = run_over(&a, &b, to, true, true).await;
            assert_eq!((f.datagrams, f.gso_sends), (20, 1));
            assert_eq!(most, 20);
        }
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let (f, _, most, _) = run_over(&a, &b, to, true, true).await;
        assert_eq!((f.datagrams, f.gso_sends), (20, 1));
        assert_eq!(most, 20);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn plain_sends_when_gso_is_off() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (a, b) = (bind_udp(0).unwrap(), bind_udp(0).unwrap());
        let to = v4(b.local_addr().unwrap().port());
        let (f, _, _, _) = run_over(&a, &b, to, false, true).await;
        assert_eq!((f.datagrams, f.gso_sends, f.dropped), (20, 0, 0));
    })
    .await
    .expect("test timed out");
}

/// `SO_NO_CHECK` (no UDP checksums) makes the kernel refuse GSO sends with EINVAL, as a
/// device without checksum offload does with EIO: the real fallback path.
fn no_checksums(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is open; we pass a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
}

#[tokio::test]
async fn refused_gso_falls_back_for_good_and_delivers_everything() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (a, b) = (bind_udp(0).unwrap(), bind_udp(0).unwrap());
        no_checksums(&a);
        let to = v4(b.local_addr().unwrap().port());
        let mut tx = Sender::new(a.local_addr().unwrap().is_ipv6(), true);
        let sent = payloads(20, 1312, 700);
        for d in &sent {
            assert!(tx.push(to, d));
        }
        let f = flush_all(&mut tx, &a).await;
        assert_eq!((f.datagrams, f.gso_sends, f.dropped), (20, 0, 0));
        assert!(!tx.gso_enabled(), "GSO is off for good");
        let mut rx = Receiver::new();
        let (got, _) = recv_all(&b, &mut rx, sent.len()).await;
        assert_eq!(got, sent);
        // The next run goes out plain straight away.
        for d in &sent[..3] {
            assert!(tx.push(to, d));
        }
        let f = flush_all(&mut tx, &a).await;
        assert_eq!((f.datagrams, f.gso_sends), (3, 0));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn refused_destination_drops_the_run_but_keeps_gso() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let a = bind_udp(0).unwrap();
        let mut tx = Sender::new(a.local_addr().unwrap().is_ipv6(), true);
        // Port 0 is refused with EINVAL, with or without GSO: not GSO's fault.
        for _ in 0..5 {
            assert!(tx.push(v4(0), &[1u8; 100]));
        }
        let f = flush_all(&mut tx, &a).await;
        assert_eq!((f.datagrams, f.dropped), (0, 5));
        assert!(tx.gso_enabled());
        assert!(tx.is_empty());
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn oversize_receive_is_reported_truncated() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let b = bind_udp(0).unwrap();
        let a = bind_udp(0).unwrap();
        a.writable().await.unwrap();
        // 65507 bytes fit the slot; build a receiver with a smaller slot to force MSG_TRUNC.
        let mut rx = Receiver {
            buf: vec![0u8; 100].into_boxed_slice(),
            ..Receiver::new()
        };
        a.send_to(&[7u8; 200], v4(b.local_addr().unwrap().port()))
            .await
            .unwrap();
        a.send_to(&[8u8; 50], v4(b.local_addr().unwrap().port()))
            .await
            .unwrap();
        b.readable().await.unwrap();
        let r = rx.recv(&b).unwrap();
        assert!(r.truncated && r.datagrams == 0);
        assert_eq!(rx.datagrams().count(), 0);
        let (got, _) = recv_all(&b, &mut rx, 1).await;
        assert_eq!(got, vec![vec![8u8; 50]]);
    })
    .await
    .expect("test timed out");
}

#[test]
fn sender_and_receiver_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Sender>();
    assert_send::<Receiver>();
}
