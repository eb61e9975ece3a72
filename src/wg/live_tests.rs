//! Live changes to a running [`Device`], in memory with real sessions (the harness of
//! `device_tests`): what an update keeps, what it ends, and that a refused update changes
//! nothing.

use std::net::IpAddr;
use std::time::SystemTime;

use boringtun::noise::{Tunn, TunnResult};

use super::device_tests::{Net, Node, addr, ipv4, net, node, peer, secret};
use super::*;

const HUB: usize = 0;
const A: usize = 1;
const C: usize = 2;

/// A hub (10.0.0.10, port 2000) that knows peers "a" (10.0.0.1, port 2001) and "c" (10.0.0.3,
/// port 2002) without endpoints; both know the hub's endpoint and dial in, like control
/// replicas... or agents behind NAT.
fn hub_a_c() -> (Net, [StaticSecret; 3]) {
    let keys = [secret(), secret(), secret()];
    let [h, a, c] = &keys;
    let n = net(vec![
        node(
            h,
            2000,
            vec![
                peer("a", a, &["10.0.0.1/32"], None),
                peer("c", c, &["10.0.0.3/32"], None),
            ],
        ),
        node(a, 2001, vec![peer("hub", h, &["10.0.0.10/32"], Some(2000))]),
        node(c, 2002, vec![peer("hub", h, &["10.0.0.10/32"], Some(2000))]),
    ]);
    (n, keys)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn apply(node: &mut Node, peers: Vec<PeerUpdate>) -> Applied {
    node.dev
        .apply(DeviceUpdate {
            peers,
            ..DeviceUpdate::default()
        })
        .unwrap()
}

/// `from` sends a packet from `src` to the hub; returns how many the hub delivered.
fn to_hub(n: &mut Net, from: usize, src: &str) -> usize {
    n.nodes[from].send(&ipv4(src, "10.0.0.10", b"to the hub"));
    n.pump();
    n.nodes[HUB].take_delivered().len()
}

fn handshakes(n: &Net, at: usize, name: &str) -> u64 {
    n.nodes[at].stats().peer(name).map_or(0, |p| p.handshakes)
}

#[test]
fn adding_a_peer_keeps_the_other_session() {
    let (mut n, [_, a, _]) = hub_a_c();
    // Start with the hub knowing only "c"; "a" is added while c's session is up.
    let removed = apply(
        &mut n.nodes[HUB],
        vec![PeerUpdate::remove(PublicKey::from(&a))],
    );
    assert_eq!(removed.removed, [PublicKey::from(&a)]);
    assert_eq!(to_hub(&mut n, C, "10.0.0.3"), 1);
    assert_eq!(handshakes(&n, HUB, "c"), 1);

    let added = apply(
        &mut n.nodes[HUB],
        vec![PeerUpdate::from_config(&peer(
            "a",
            &a,
            &["10.0.0.1/32"],
            None,
        ))],
    );
    assert_eq!(added.added, [PublicKey::from(&a)]);
    assert!(added.updated.is_empty() && added.removed.is_empty());
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    assert_eq!(to_hub(&mut n, C, "10.0.0.3"), 1);
    assert_eq!(handshakes(&n, HUB, "c"), 1, "c was not re-handshaken");
    assert_eq!(handshakes(&n, C, "hub"), 1);
    assert_eq!(handshakes(&n, HUB, "a"), 1);
    // The hub reaches both.
    for (dst, at) in [("10.0.0.1", A), ("10.0.0.3", C)] {
        n.nodes[HUB].send(&ipv4("10.0.0.10", dst, b"back"));
        n.pump();
        assert_eq!(n.nodes[at].take_delivered().len(), 1, "{dst}");
    }
}

#[test]
fn removing_a_peer_ends_its_session_only() {
    let (mut n, [_, a, _]) = hub_a_c();
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    assert_eq!(to_hub(&mut n, C, "10.0.0.3"), 1);
    let a_id = n.nodes[HUB].dev.route(ip("10.0.0.1")).unwrap();

    let removed = apply(
        &mut n.nodes[HUB],
        vec![PeerUpdate::remove(PublicKey::from(&a))],
    );
    assert_eq!(removed.removed, [PublicKey::from(&a)]);
    let hub = &n.nodes[HUB];
    assert_eq!(hub.dev.route(ip("10.0.0.1")), None);
    assert_eq!(hub.dev.peer_endpoint(a_id), None);
    assert_eq!(hub.dev.peer_count(), 1);
    assert!(hub.stats().peer("a").is_none());
    assert!(hub.dev.counters().owner(ip("10.0.0.1")).is_none());

    // a's data (on its still-valid session) no longer reaches anything.
    let unknown = hub.stats().device.unknown_index;
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 0);
    assert_eq!(n.nodes[HUB].stats().device.unknown_index, unknown + 1);
    // Nothing routes to a's address any more.
    n.nodes[HUB].send(&ipv4("10.0.0.10", "10.0.0.1", b"x"));
    assert_eq!(n.nodes[HUB].stats().device.no_route, 1);
    // c is untouched.
    assert_eq!(to_hub(&mut n, C, "10.0.0.3"), 1);
    assert_eq!(handshakes(&n, HUB, "c"), 1);
}

#[test]
fn changing_allowed_ips_keeps_the_session() {
    let (mut n, [_, a, _]) = hub_a_c();
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    let id = n.nodes[HUB].dev.route(ip("10.0.0.1")).unwrap();
    let mut section = PeerUpdate::new(PublicKey::from(&a));
    section.allowed_ips = vec![
        AllowedIpChange::ReplaceAll,
        AllowedIpChange::Add("10.0.0.7/32".parse().unwrap()),
    ];
    let applied = apply(&mut n.nodes[HUB], vec![section]);
    assert_eq!(applied.updated, [PublicKey::from(&a)]);
    assert!(applied.added.is_empty() && applied.removed.is_empty());

    // The old source is refused, the new one accepted, on the same session.
    let drops = n.nodes[HUB].stats().peer("a").unwrap().drop_allowed_ips;
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 0);
    assert_eq!(
        n.nodes[HUB].stats().peer("a").unwrap().drop_allowed_ips,
        drops + 1
    );
    assert_eq!(to_hub(&mut n, A, "10.0.0.7"), 1);
    assert_eq!((handshakes(&n, HUB, "a"), handshakes(&n, A, "hub")), (1, 1));
    let hub = &n.nodes[HUB];
    assert_eq!(hub.dev.route(ip("10.0.0.7")), Some(id), "same peer id");
    assert_eq!(hub.dev.route(ip("10.0.0.1")), None);
    let stats = hub.stats();
    let a_stats = stats.peer("a").unwrap();
    assert_eq!(
        a_stats.allowed_ips,
        ["10.0.0.7/32".parse::<IpNetwork>().unwrap()]
    );
    let owner = hub.dev.counters().owner(ip("10.0.0.7")).unwrap();
    assert_eq!(
        (owner.name.as_deref(), owner.public_key),
        (Some("a"), PublicKey::from(&a))
    );
}

#[test]
fn a_prefix_given_to_another_peer_moves_to_it() {
    let (mut n, [_, a, c]) = hub_a_c();
    let mut section = PeerUpdate::new(PublicKey::from(&c));
    section.allowed_ips = vec![AllowedIpChange::Add("10.0.0.1/32".parse().unwrap())];
    let applied = apply(&mut n.nodes[HUB], vec![section]);
    assert_eq!(applied.updated.len(), 2, "both peers changed: {applied:?}");
    assert!(applied.updated.contains(&PublicKey::from(&a)));
    let hub = &n.nodes[HUB];
    let c_id = hub.dev.peer_by_key(&PublicKey::from(&c)).unwrap();
    let a_id = hub.dev.peer_by_key(&PublicKey::from(&a)).unwrap();
    assert_eq!(hub.dev.route(ip("10.0.0.1")), Some(c_id));
    assert!(hub.dev.peer_allowed_ips(a_id).is_empty());
    assert_eq!(hub.dev.peer_allowed_ips(c_id).len(), 2);
    // a may no longer use the address; c may.
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 0);
    assert_eq!(to_hub(&mut n, C, "10.0.0.1"), 1);
    // Removing a prefix the peer does not hold changes nothing.
    let mut section = PeerUpdate::new(PublicKey::from(&a));
    section.allowed_ips = vec![AllowedIpChange::Remove("10.0.0.3/32".parse().unwrap())];
    assert!(apply(&mut n.nodes[HUB], vec![section]).is_empty());
    assert_eq!(n.nodes[HUB].dev.route(ip("10.0.0.3")), Some(c_id));
}

#[test]
fn repeating_the_same_settings_changes_nothing() {
    let (mut n, [h, a, c]) = hub_a_c();
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    // What `wg syncconf` does with an unchanged file: private key, every peer, same values
    // (the UAPI carries no names).
    let update = DeviceUpdate {
        private_key: Some(h.clone()),
        listen_port: Some(2000),
        peers: vec![
            PeerUpdate {
                name: None,
                ..PeerUpdate::from_config(&peer("a", &a, &["10.0.0.1/32"], None))
            },
            PeerUpdate {
                name: None,
                ..PeerUpdate::from_config(&peer("c", &c, &["10.0.0.3/32"], None))
            },
        ],
        ..DeviceUpdate::default()
    };
    let applied = n.nodes[HUB].dev.apply(update).unwrap();
    assert!(applied.is_empty(), "{applied:?}");
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    assert_eq!(handshakes(&n, HUB, "a"), 1, "session kept");
}

#[test]
fn keepalive_can_be_turned_on_without_a_new_session() {
    let (mut n, [h, _, _]) = hub_a_c();
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    let now = SystemTime::now();
    n.nodes[A].tick(now);
    n.pump();
    let rx = n.nodes[HUB].stats().peer("a").unwrap().rx_bytes;

    let mut section = PeerUpdate::new(PublicKey::from(&h));
    section.update_only = true;
    section.persistent_keepalive = Some(1);
    let applied = apply(&mut n.nodes[A], vec![section]);
    assert_eq!(applied.updated, [PublicKey::from(&h)]);
    assert_eq!(
        n.nodes[A].stats().peer("hub").unwrap().persistent_keepalive,
        Some(1)
    );
    // Turned on: the first keepalive goes out at the next tick, on the existing session.
    n.nodes[A].tick(now);
    let sent = std::mem::take(&mut n.nodes[A].wire.sent);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].0, sent[0].1[0], sent[0].1.len()),
        (addr(2000), 4, 32)
    );
    n.nodes[A].wire.sent = sent;
    n.pump();
    assert_eq!(n.nodes[HUB].stats().peer("a").unwrap().rx_bytes, rx + 32);
    // Not due again yet.
    n.nodes[A].tick(now);
    assert!(n.nodes[A].wire.sent.is_empty());
    assert_eq!((handshakes(&n, HUB, "a"), handshakes(&n, A, "hub")), (1, 1));
}

#[test]
fn rotating_the_private_key_re_establishes_sessions() {
    let (mut n, [h, a, _]) = hub_a_c();
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    let new = secret();
    let applied = n.nodes[HUB]
        .dev
        .apply(DeviceUpdate {
            private_key: Some(new.clone()),
            ..DeviceUpdate::default()
        })
        .unwrap();
    assert!(applied.key_changed);
    assert_eq!(n.nodes[HUB].dev.public_key(), PublicKey::from(&new));
    // a's old session is gone on the hub's side.
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 0);
    assert!(n.nodes[HUB].stats().peer("a").unwrap().drop_decrypt >= 1);
    // A handshake with the old public key fails its mac1 check.
    let mut old = Tunn::new(a.clone(), PublicKey::from(&h), None, None, 9, None);
    let mut buf = vec![0u8; 256];
    let TunnResult::WriteToNetwork(init) = old.format_handshake_initiation(&mut buf, false) else {
        panic!("no initiation")
    };
    let mut wire = super::device_tests::Wire::default();
    n.nodes[HUB]
        .dev
        .handle_datagram(addr(2001), init, &mut wire);
    assert!(wire.sent.is_empty());
    assert_eq!(n.nodes[HUB].stats().device.invalid_mac, 1);

    // a learns the new key (the old peer goes, the new one comes): a new session works.
    let applied = apply(
        &mut n.nodes[A],
        vec![
            PeerUpdate::remove(PublicKey::from(&h)),
            PeerUpdate::from_config(&peer("hub", &new, &["10.0.0.10/32"], Some(2000))),
        ],
    );
    assert_eq!((applied.removed.len(), applied.added.len()), (1, 1));
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    assert_eq!(handshakes(&n, HUB, "a"), 2);
    // The same key again changes nothing.
    let same = n.nodes[HUB]
        .dev
        .apply(DeviceUpdate {
            private_key: Some(new),
            ..DeviceUpdate::default()
        })
        .unwrap();
    assert!(same.is_empty());
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
}

#[test]
fn preshared_keys_set_live_interoperate() {
    let (mut n, [h, a, _]) = hub_a_c();
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    let psk = [0x42; 32];
    for (at, key) in [(HUB, &a), (A, &h)] {
        let mut section = PeerUpdate::new(PublicKey::from(key));
        section.preshared_key = Some(psk);
        assert_eq!(apply(&mut n.nodes[at], vec![section]).updated.len(), 1);
    }
    // New sessions, with the key, on both sides.
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    assert_eq!(handshakes(&n, HUB, "a"), 2);
    let state = n.nodes[HUB].dev.counters().uapi_peers();
    let a_state = state
        .iter()
        .find(|p| p.public_key == PublicKey::from(&a))
        .unwrap();
    assert_eq!(a_state.preshared_key, Some(psk));
    // Only one side changes it: handshakes fail, nothing is delivered.
    let mut section = PeerUpdate::new(PublicKey::from(&a));
    section.preshared_key = Some([0x43; 32]);
    apply(&mut n.nodes[HUB], vec![section]);
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 0);
    n.nodes[A].send(&ipv4("10.0.0.1", "10.0.0.10", b"retry"));
    n.pump();
    assert!(n.nodes[HUB].take_delivered().is_empty());
}

#[test]
fn a_refused_update_changes_nothing() {
    let (mut n, [_, a, c]) = hub_a_c();
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    let d = secret();
    let mut rename_c = PeerUpdate::new(PublicKey::from(&c));
    rename_c.name = Some(Some("a".into()));
    let err = n.nodes[HUB]
        .dev
        .apply(DeviceUpdate {
            private_key: Some(secret()),
            peers: vec![
                PeerUpdate::remove(PublicKey::from(&a)),
                PeerUpdate::from_config(&peer("d", &d, &["10.0.0.4/32"], None)),
                PeerUpdate::from_config(&peer("d2", &c, &["10.0.0.4/32"], None)),
                PeerUpdate::from_config(&peer("a", &a, &["10.0.0.1/32"], None)),
                rename_c,
            ],
            ..DeviceUpdate::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, WgError::DuplicateName(ref name) if name == "a"),
        "{err}"
    );
    let hub = &n.nodes[HUB];
    assert_eq!(hub.dev.peer_count(), 2);
    assert!(hub.dev.peer_by_key(&PublicKey::from(&d)).is_none());
    assert_eq!(hub.dev.route(ip("10.0.0.4")), None);
    assert_eq!(hub.stats().peer("c").unwrap().allowed_ips.len(), 1);
    // The key did not change and a's session is intact.
    assert_eq!(to_hub(&mut n, A, "10.0.0.1"), 1);
    assert_eq!(handshakes(&n, HUB, "a"), 1);
}

#[test]
fn uapi_flags_behave_as_wireguard_go() {
    let (mut n, [h, a, c]) = hub_a_c();
    let hub = &mut n.nodes[HUB];
    let a_id = hub.dev.peer_by_key(&PublicKey::from(&a)).unwrap();
    let d = secret();
    // Own key: ignored. update_only for an unknown key: skipped. remove of an unknown key:
    // nothing.
    let mut only = PeerUpdate::new(PublicKey::from(&d));
    only.update_only = true;
    let applied = apply(
        hub,
        vec![
            PeerUpdate::from_config(&peer("me", &h, &["10.9.9.9/32"], None)),
            only,
            PeerUpdate::remove(PublicKey::from(&secret())),
        ],
    );
    assert!(applied.is_empty(), "{applied:?}");
    assert_eq!(hub.dev.route(ip("10.9.9.9")), None);
    // Removed and added again in one update: a new peer (new id, fresh session).
    let applied = apply(
        hub,
        vec![
            PeerUpdate::remove(PublicKey::from(&a)),
            PeerUpdate::from_config(&peer("a", &a, &["10.0.0.1/32"], None)),
        ],
    );
    assert_eq!((applied.removed.len(), applied.added.len()), (1, 1));
    let new_id = hub.dev.route(ip("10.0.0.1")).unwrap();
    assert_ne!(new_id, a_id);
    // replace_peers: only the listed peers remain.
    let applied = hub
        .dev
        .apply(DeviceUpdate {
            replace_peers: true,
            peers: vec![PeerUpdate::from_config(&peer(
                "c",
                &c,
                &["10.0.0.3/32"],
                None,
            ))],
            ..DeviceUpdate::default()
        })
        .unwrap();
    assert_eq!(applied.removed.len(), 2);
    assert_eq!(applied.added, [PublicKey::from(&c)]);
    assert_eq!(hub.dev.peer_count(), 1);
    assert_eq!(hub.dev.route(ip("10.0.0.1")), None);
    assert_eq!(hub.stats().peers.len(), 1);
}
