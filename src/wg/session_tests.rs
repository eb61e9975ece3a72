//! Sessions created on first use and dropped when idle ([`super::session`]), on real
//! [`Device`]s through the in-memory network of `device_tests`. Time is the `now` handed to
//! `update_timers`, so nothing sleeps.

use std::time::{Duration, Instant, SystemTime};

use super::device_tests::{Drive, Net, addr, ipv4, net, node, pair, peer, secret};
use super::session::HANDSHAKE_GRACE;

const A: usize = 0;
/// B plays the control daemon: A (the agent) dials in, B has no endpoint for it.
const B: usize = 1;

fn tick(n: &mut Net, i: usize, now: Instant) {
    let node = &mut n.nodes[i];
    node.dev
        .update_timers_to(now, SystemTime::now(), &mut node.wire);
}

fn sessions(n: &Net, i: usize) -> u64 {
    n.nodes[i].stats().device.sessions
}

/// A pair where B drops idle sessions after `timeout`, handshaken by A's first packet.
fn handshaken(timeout: Duration) -> (Net, Instant) {
    let mut n = pair();
    n.nodes[B].dev.set_idle_session_timeout(Some(timeout));
    let t0 = Instant::now();
    tick(&mut n, A, t0);
    tick(&mut n, B, t0);
    assert_eq!((sessions(&n, A), sessions(&n, B)), (0, 0), "created lazily");
    let p = ipv4("10.0.0.1", "10.0.0.2", b"first");
    n.nodes[A].send(&p);
    n.pump();
    assert_eq!(n.nodes[B].take_delivered(), vec![p]);
    tick(&mut n, A, t0);
    tick(&mut n, B, t0);
    assert_eq!((sessions(&n, A), sessions(&n, B)), (1, 1));
    (n, t0)
}

#[test]
fn configured_peers_hold_no_session_until_used() {
    let mut n = pair();
    let t0 = Instant::now();
    for s in 0..3 {
        tick(&mut n, A, t0 + Duration::from_secs(s));
        tick(&mut n, B, t0 + Duration::from_secs(s));
    }
    assert_eq!((sessions(&n, A), sessions(&n, B)), (0, 0));
    // Nothing was sent: a peer without a keepalive never handshakes on its own.
    assert!(n.nodes[A].wire.sent.is_empty() && n.nodes[B].wire.sent.is_empty());
}

#[test]
fn idle_session_is_dropped_and_the_next_packet_handshakes_to_the_kept_endpoint() {
    let timeout = Duration::from_secs(30);
    let (mut n, t0) = handshaken(timeout);
    let before = n.nodes[B].stats().peer("a").unwrap().clone();
    assert_eq!(before.endpoint, Some(addr(1001)));
    assert!(before.last_handshake.is_some());

    // Still within the timeout: kept.
    tick(&mut n, B, t0 + timeout - Duration::from_secs(1));
    assert_eq!(sessions(&n, B), 1);
    tick(&mut n, B, t0 + timeout);
    let s = n.nodes[B].stats();
    assert_eq!(s.device.sessions, 0);
    assert_eq!(s.device.sessions_dropped_idle, 1);
    // Endpoint, counters and the last handshake survive the session.
    let after = s.peer("a").unwrap();
    assert_eq!(after.endpoint, before.endpoint);
    assert_eq!(after.last_handshake, before.last_handshake);
    assert_eq!(
        (after.handshakes, after.rx_bytes, after.rx_packets),
        (before.handshakes, before.rx_bytes, before.rx_packets)
    );

    // B sends again: a handshake initiation to the kept endpoint first, then the packet.
    let back = ipv4("10.0.0.2", "10.0.0.1", b"after idle");
    n.nodes[B].send(&back);
    assert_eq!(n.nodes[B].wire.sent.len(), 1);
    assert_eq!(n.nodes[B].wire.sent[0].0, addr(1001));
    assert_eq!(n.nodes[B].wire.sent[0].1.len(), 148);
    n.pump();
    assert_eq!(n.nodes[A].take_delivered(), vec![back]);
    let p = n.nodes[B].stats();
    let p = p.peer("a").unwrap();
    assert_eq!(p.handshakes, before.handshakes + 1);
    assert_eq!(p.tx_packets, before.tx_packets + 1);
    assert!(n.lost.is_empty());
}

#[test]
fn keepalives_into_a_dropped_session_are_counted_not_delivered() {
    let timeout = Duration::from_secs(5);
    let (mut n, t0) = handshaken(timeout);
    tick(&mut n, B, t0 + HANDSHAKE_GRACE);
    assert_eq!(sessions(&n, B), 0);
    // A (whose session is fine on its side) sends data into it, from the known endpoint.
    let b_sent = n.nodes[B].sent_log.len();
    n.nodes[A].send(&ipv4("10.0.0.1", "10.0.0.2", b"lost"));
    n.pump();
    assert!(n.nodes[B].take_delivered().is_empty());
    let p = n.nodes[B].stats();
    assert_eq!(p.peer("a").unwrap().drop_no_session, 1);
    assert_eq!(p.peer("a").unwrap().drop_decrypt, 0);
    // No answer (B can reach A where it is), and no session created for it.
    assert_eq!(n.nodes[B].sent_log.len(), b_sent);
    tick(&mut n, B, t0 + HANDSHAKE_GRACE * 2);
    assert_eq!(sessions(&n, B), 0);
}

#[test]
fn data_keeps_the_session_and_keepalive_peers_are_never_dropped() {
    let timeout = Duration::from_secs(20);
    let (mut n, t0) = handshaken(timeout);
    // Data every 15 s: never 20 s quiet.
    for i in 1..=6u64 {
        let now = t0 + Duration::from_secs(15 * i);
        n.nodes[A].send(&ipv4("10.0.0.1", "10.0.0.2", b"busy"));
        n.pump();
        tick(&mut n, B, now);
        assert_eq!(sessions(&n, B), 1, "dropped at {i}");
    }
    tick(&mut n, B, t0 + Duration::from_secs(15 * 6 + 20));
    assert_eq!(sessions(&n, B), 0);

    // A peer with a persistent keepalive keeps its session however quiet it is.
    let mut n = pair();
    n.nodes[A].dev.set_idle_session_timeout(Some(timeout));
    let mut up = crate::wg::PeerUpdate::new(crate::wg::PublicKey::from(
        n.nodes[B].dev.public_key().to_bytes(),
    ));
    up.persistent_keepalive = Some(25);
    n.nodes[A]
        .dev
        .apply(crate::wg::DeviceUpdate {
            peers: vec![up],
            ..Default::default()
        })
        .unwrap();
    let t0 = Instant::now();
    tick(&mut n, A, t0);
    n.pump();
    tick(&mut n, A, t0 + Duration::from_secs(3600));
    assert_eq!(sessions(&n, A), 1);
    assert_eq!(n.nodes[A].stats().device.sessions_dropped_idle, 0);
}

#[test]
fn without_a_timeout_sessions_stay() {
    let mut n = pair();
    let t0 = Instant::now();
    n.nodes[A].send(&ipv4("10.0.0.1", "10.0.0.2", b"x"));
    n.pump();
    tick(&mut n, B, t0);
    tick(&mut n, B, t0 + Duration::from_secs(86_400));
    assert_eq!(sessions(&n, B), 1);
}

#[test]
fn a_replayed_initiation_to_a_new_session_does_not_move_the_endpoint() {
    let timeout = Duration::from_secs(5);
    let (mut n, t0) = handshaken(timeout);
    // The initiation A sent, as an on-path observer recorded it.
    let init = n.nodes[A]
        .sent_log
        .iter()
        .find(|(_, d)| d.len() == 148)
        .map(|(_, d)| d.clone())
        .unwrap();
    tick(&mut n, B, t0 + HANDSHAKE_GRACE);
    assert_eq!(sessions(&n, B), 0);
    // Replayed from elsewhere: the new session answers (it cannot know the timestamp), but the
    // endpoint stays where A really is.
    let attacker = addr(6666);
    let node = &mut n.nodes[B];
    node.dev.handle_datagram_to(attacker, &init, &mut node.wire);
    assert_eq!(node.wire.sent.len(), 1);
    assert_eq!(node.wire.sent[0].0, attacker);
    node.wire.sent.clear();
    assert_eq!(
        n.nodes[B].stats().peer("a").unwrap().endpoint,
        Some(addr(1001))
    );
    // The real A still gets B's next packet.
    let back = ipv4("10.0.0.2", "10.0.0.1", b"still yours");
    n.nodes[B].send(&back);
    assert_eq!(n.nodes[B].wire.sent[0].0, addr(1001));
    n.pump();
    assert_eq!(n.nodes[A].take_delivered(), vec![back]);
}

#[test]
fn the_peer_initiating_again_gets_a_new_session() {
    let (a, b) = (secret(), secret());
    let agent = |port| node(&a, port, vec![peer("b", &b, &["10.0.0.2/32"], Some(1002))]);
    let mut n = net(vec![
        agent(1001),
        node(&b, 1002, vec![peer("a", &a, &["10.0.0.1/32"], None)]),
    ]);
    n.nodes[B]
        .dev
        .set_idle_session_timeout(Some(Duration::from_secs(5)));
    let t0 = Instant::now();
    n.nodes[A].send(&ipv4("10.0.0.1", "10.0.0.2", b"one"));
    n.pump();
    assert_eq!(n.nodes[B].take_delivered().len(), 1);
    tick(&mut n, B, t0);
    tick(&mut n, B, t0 + HANDSHAKE_GRACE);
    assert_eq!(sessions(&n, B), 0);
    // The agent restarts behind a new NAT port: its first packet initiates, B answers with a new
    // session and follows it to the new address once its data proves the key.
    n.nodes[A] = agent(1003);
    let p = ipv4("10.0.0.1", "10.0.0.2", b"two");
    n.nodes[A].send(&p);
    n.pump();
    assert_eq!(n.nodes[B].take_delivered(), vec![p]);
    tick(&mut n, B, t0 + HANDSHAKE_GRACE * 2);
    let s = n.nodes[B].stats();
    assert_eq!(s.device.sessions, 1);
    assert_eq!(s.peer("a").unwrap().handshakes, 2);
    assert_eq!(s.peer("a").unwrap().endpoint, Some(addr(1003)));
}

#[test]
fn a_peer_that_roamed_while_its_session_was_dropped_is_found_again() {
    let timeout = Duration::from_secs(5);
    let (mut n, t0) = handshaken(timeout);
    tick(&mut n, B, t0 + HANDSHAKE_GRACE);
    assert_eq!(sessions(&n, B), 0);
    // A's NAT mapping changed: its next datagram (data on its old session) comes from elsewhere.
    n.nodes[A].addr = addr(1005);
    n.nodes[A].send(&ipv4("10.0.0.1", "10.0.0.2", b"lost, but it finds me"));
    n.pump();
    assert!(n.nodes[B].take_delivered().is_empty());
    // B answered with a handshake to the new address; A's response proved it and moved it.
    let s = n.nodes[B].stats();
    let p = s.peer("a").unwrap();
    assert_eq!(p.endpoint, Some(addr(1005)));
    assert_eq!((p.drop_no_session, p.handshakes), (1, 2));
    let back = ipv4("10.0.0.2", "10.0.0.1", b"found you");
    n.nodes[B].send(&back);
    n.pump();
    assert_eq!(n.nodes[A].take_delivered(), vec![back]);
}

#[test]
fn a_restarted_node_recognises_keepalives_and_handshakes_back() {
    let (a, b) = (secret(), secret());
    let mut to_b = peer("b", &b, &["10.0.0.2/32"], Some(1002));
    to_b.persistent_keepalive = Some(25);
    let control = || node(&b, 1002, vec![peer("a", &a, &["10.0.0.1/32"], None)]);
    let mut n = net(vec![node(&a, 1001, vec![to_b]), control()]);
    let t0 = Instant::now();
    // A (behind NAT) dials in with its keepalive peer's first tick.
    tick(&mut n, A, t0);
    n.pump();
    assert_eq!(n.nodes[B].stats().peer("a").unwrap().handshakes, 1);
    // B restarts: same key, same peers, no saved endpoint, no session.
    n.nodes[B] = control();
    assert_eq!(n.nodes[B].stats().peer("a").unwrap().endpoint, None);
    // A's next persistent keepalive is on the old session; B knows whose it is (the same
    // receiver index), cannot read it, and starts a handshake to where it came from.
    tick(&mut n, A, t0 + Duration::from_secs(26));
    n.pump();
    let s = n.nodes[B].stats();
    let p = s.peer("a").unwrap();
    assert_eq!(p.endpoint, Some(addr(1001)));
    assert_eq!(p.handshakes, 1);
    assert_eq!(s.device.unknown_index, 0);
    let hello = ipv4("10.0.0.2", "10.0.0.1", b"back after a restart");
    n.nodes[B].send(&hello);
    n.pump();
    assert_eq!(n.nodes[A].take_delivered(), vec![hello]);
}

#[test]
fn a_forged_keepalive_gets_one_initiation_and_moves_nothing() {
    let timeout = Duration::from_secs(5);
    let (mut n, t0) = handshaken(timeout);
    tick(&mut n, B, t0 + HANDSHAKE_GRACE);
    // A datagram A really sent, replayed from elsewhere several times.
    let data = n.nodes[A]
        .sent_log
        .iter()
        .rev()
        .find(|(_, d)| d[0] == 4)
        .map(|(_, d)| d.clone())
        .unwrap();
    let node = &mut n.nodes[B];
    for _ in 0..5 {
        node.dev
            .handle_datagram_to(addr(6666), &data, &mut node.wire);
    }
    // One initiation (a handshake is then in progress), nothing delivered, endpoint unchanged.
    assert_eq!(node.wire.sent.len(), 1);
    assert_eq!(node.wire.sent[0], (addr(6666), node.wire.sent[0].1.clone()));
    assert_eq!(node.wire.sent[0].1.len(), 148);
    assert!(node.wire.delivered.is_empty());
    assert_eq!(
        n.nodes[B].stats().peer("a").unwrap().endpoint,
        Some(addr(1001))
    );
}
