//! Sharded devices ([`Device::into_shards`]) in the in-memory harness of `device_tests`: real
//! boringtun sessions, the work a shard forwards run on its owner at once (as a shard task
//! would). Cryptokey routing across shards, live changes replayed on every shard, the shared
//! counters.

use super::device_tests::{Node, ipv4, net, node, peer, secret};
use super::*;

/// The shard a hub with `hub` and `count` shards gives the peer `key` (no index collisions
/// among a test's few peers).
fn shard_of(hub: &StaticSecret, key: &StaticSecret, count: usize) -> usize {
    receiver_index(hub, &PublicKey::from(key)) as usize % count
}

/// A key whose peer lands on `shard` of a hub with `hub` and `count` shards.
fn key_on(hub: &StaticSecret, shard: usize, count: usize) -> StaticSecret {
    (0..1000)
        .map(|_| secret())
        .find(|k| shard_of(hub, k, count) == shard)
        .unwrap()
}

impl Node {
    /// A change as the driver applies it: on shard 0, then replayed on every other shard.
    fn apply(&mut self, update: DeviceUpdate) -> Applied {
        let (applied, replay) = self.dev.apply_replicated(update).unwrap();
        if let Some(replay) = replay {
            for r in &mut self.replicas {
                r.apply_replication(replay.clone());
            }
        }
        applied
    }
}

/// Peer A (10.0.0.0/24) and peer B (10.0.0.5/32) on different shards: A cannot use B's
/// address (the global longest-prefix match holds on A's shard too), each delivers its own.
#[test]
fn a_peer_cannot_spoof_an_address_owned_by_a_peer_of_another_shard() {
    let h = secret();
    let (a, b) = (key_on(&h, 1, 2), key_on(&h, 0, 2));
    let mut n = net(vec![
        node(
            &h,
            2000,
            vec![
                peer("a", &a, &["10.0.0.0/24"], None),
                peer("b", &b, &["10.0.0.5/32"], None),
            ],
        ),
        node(
            &a,
            2001,
            vec![peer("h", &h, &["10.0.0.254/32"], Some(2000))],
        ),
        node(
            &b,
            2002,
            vec![peer("h", &h, &["10.0.0.254/32"], Some(2000))],
        ),
    ]);
    n.nodes[0].shard(2);
    let legit_a = ipv4("10.0.0.7", "10.0.0.254", b"a");
    let spoof_b = ipv4("10.0.0.5", "10.0.0.254", b"pretending to be b");
    for p in [&legit_a, &spoof_b] {
        n.nodes[1].send(p);
    }
    n.pump();
    let legit_b = ipv4("10.0.0.5", "10.0.0.254", b"really b");
    n.nodes[2].send(&legit_b);
    n.pump();

    assert_eq!(n.nodes[0].take_delivered(), vec![legit_a, legit_b]);
    let s = n.nodes[0].stats();
    let (sa, sb) = (s.peer("a").unwrap(), s.peer("b").unwrap());
    assert_eq!((sa.shard, sb.shard), (1, 0));
    assert_eq!((sa.drop_allowed_ips, sa.rx_packets), (1, 1), "{sa:?}");
    assert_eq!((sb.drop_allowed_ips, sb.rx_packets), (0, 1), "{sb:?}");
    // The hub answers A from A's shard: the reply is routed there and encrypted there.
    let reply = ipv4("10.0.0.254", "10.0.0.7", b"reply");
    n.nodes[0].send(&reply);
    n.pump();
    assert_eq!(n.nodes[1].take_delivered(), vec![reply]);
    assert!(n.nodes[0].replicas[0].handled() >= 3);
    assert!(n.nodes[0].dev.handled() >= 1);
}

/// Peers added, changed and removed live reach every shard: the same receiver indices, ids
/// and routes everywhere, one registration in the shared view, a removed peer of shard 2 is
/// gone on every shard, and the session count adds up over the shards.
#[test]
fn live_changes_are_replayed_identically_on_every_shard() {
    const SHARDS: usize = 3;
    let h = secret();
    let mut hub = node(&h, 3000, Vec::new());
    hub.shard(SHARDS);
    // Two peers per shard, in one update.
    let keys: Vec<StaticSecret> = (0..SHARDS * 2)
        .map(|i| key_on(&h, i % SHARDS, SHARDS))
        .collect();
    let applied = hub.apply(DeviceUpdate {
        peers: keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                PeerUpdate::from_config(&peer(
                    &format!("p{i}"),
                    k,
                    &[&format!("10.1.0.{}/32", i + 1)],
                    None,
                ))
            })
            .collect(),
        ..DeviceUpdate::default()
    });
    assert_eq!(applied.added.len(), keys.len());
    let stats = hub.stats();
    assert_eq!(stats.peers.len(), keys.len(), "registered once");
    for (i, k) in keys.iter().enumerate() {
        let key = PublicKey::from(k);
        let id = hub.dev.peer_by_key(&key).unwrap();
        let dst: std::net::IpAddr = format!("10.1.0.{}", i + 1).parse().unwrap();
        for r in &hub.replicas {
            assert_eq!(r.peer_by_key(&key), Some(id));
            assert_eq!(r.route(dst), Some(id));
        }
        assert_eq!(stats.peer_by_key(&key).unwrap().shard, i % SHARDS);
    }

    // Every peer handshakes and sends one packet.
    let mut nodes = vec![hub];
    for (i, k) in keys.iter().enumerate() {
        nodes.push(node(
            k,
            3001 + i as u16,
            vec![peer("h", &h, &["10.1.0.254/32"], Some(3000))],
        ));
    }
    let mut n = net(nodes);
    for i in 0..keys.len() {
        n.nodes[i + 1].send(&ipv4(&format!("10.1.0.{}", i + 1), "10.1.0.254", b"hi"));
    }
    n.pump();
    assert_eq!(n.nodes[0].take_delivered().len(), keys.len());
    n.nodes[0].tick(std::time::SystemTime::now());
    assert_eq!(n.nodes[0].stats().device.sessions, keys.len() as u64);
    let work: Vec<u64> = std::iter::once(&n.nodes[0].dev)
        .chain(&n.nodes[0].replicas)
        .map(Device::handled)
        .collect();
    assert!(work.iter().all(|&w| w >= 2), "{work:?}");

    // A peer of shard 2 changes its allowed IPs, then is removed.
    let gone = PublicKey::from(&keys[2]);
    n.nodes[0].apply(DeviceUpdate {
        peers: vec![PeerUpdate {
            allowed_ips: vec![AllowedIpChange::Add("10.2.0.0/16".parse().unwrap())],
            ..PeerUpdate::from_config(&peer("p2", &keys[2], &["10.1.0.3/32"], None))
        }],
        ..DeviceUpdate::default()
    });
    let probe: std::net::IpAddr = "10.2.3.4".parse().unwrap();
    let id = n.nodes[0].dev.route(probe).unwrap();
    assert!(
        n.nodes[0]
            .replicas
            .iter()
            .all(|r| r.route(probe) == Some(id))
    );
    let applied = n.nodes[0].apply(DeviceUpdate {
        peers: vec![PeerUpdate::remove(gone)],
        ..DeviceUpdate::default()
    });
    assert_eq!(applied.removed, vec![gone]);
    assert!(n.nodes[0].dev.peer_by_key(&gone).is_none());
    assert!(
        n.nodes[0]
            .replicas
            .iter()
            .all(|r| r.peer_by_key(&gone).is_none() && r.route(probe).is_none())
    );
    assert_eq!(n.nodes[0].stats().peers.len(), keys.len() - 1);
    // Its next packet names an index no shard has.
    let unknown = n.nodes[0].stats().device.unknown_index;
    n.nodes[3].send(&ipv4("10.1.0.3", "10.1.0.254", b"still here?"));
    n.pump();
    assert!(n.nodes[0].take_delivered().is_empty());
    assert_eq!(n.nodes[0].stats().device.unknown_index, unknown + 1);
    n.nodes[0].tick(std::time::SystemTime::now());
    assert_eq!(n.nodes[0].stats().device.sessions, keys.len() as u64 - 1);

    // A new private key reaches every shard.
    let h2 = secret();
    let applied = n.nodes[0].apply(DeviceUpdate {
        private_key: Some(h2.clone()),
        ..DeviceUpdate::default()
    });
    assert!(applied.key_changed);
    let public = PublicKey::from(&h2);
    assert!(n.nodes[0].replicas.iter().all(|r| r.public_key() == public));
}
