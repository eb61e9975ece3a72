//! The crypto stage of the sharded data path (`[interface] threads >= 3`), without netstack or
//! socket: does sharding peers over devices scale with cores?
//!
//! A hub device with `PEERS` peers (real boringtun sessions, handshaken in memory) is fed
//! pre-built datagrams, round-robin over the peers (decrypt), or IP packets to every peer
//! (encrypt), and the time to handle all of them is measured for:
//! - **1 shard**: one unsharded device on one thread (what `threads` = 1 and 2 do);
//! - **2 shards**: shard 0 on one OS thread takes every datagram or packet (as the task that
//!   reads the socket and the netstack does), handles its own peers' and forwards the rest in
//!   batches of 64 over a bounded channel to shard 1 on a second OS thread (as
//!   `threads = 3` does).
//!
//! Rounds alternate the two (same run, fresh datagrams each round). Every datagram must come
//! out decrypted (checked), so the figure cannot come from dropped work. The sharded hub's key
//! is picked so that its peers split 32/32 (an uneven split, which the keyed hash gives 64
//! peers as often as not, moves the figure by itself: shard 0 also forwards). A third column
//! runs two independent unsharded hubs on the two threads: the machine's ceiling.
//!
//! Run: `cargo bench --bench shards`. Prints a table; asserts nothing about the figures.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wgagent::wg::{
    Device, DeviceConfig, Forwarded, Output, PeerConfig, PublicKey, StaticSecret, receiver_index,
};

const PEERS: usize = 64;
/// Datagrams (or packets) per peer per measurement.
const PER_PEER: usize = 800;
/// Inner IP packet size (the default tunnel MTU).
const PACKET: usize = 1280;
const ROUNDS: usize = 9;
const BATCH: usize = 64;
const QUEUE: usize = 16;

fn secret() -> StaticSecret {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    StaticSecret::from(b)
}

fn hub_addr() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 40000).into()
}

fn client_addr(i: usize) -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 40001 + i as u16).into()
}

fn tunnel_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 3, (i / 200) as u8, (i % 200 + 1) as u8)
}

const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 255, 1);

/// An IPv4 packet of `PACKET` bytes (protocol 253).
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; PACKET];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(PACKET as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

fn peer(key: PublicKey, ip: Ipv4Addr, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        name: None,
        public_key: key,
        preshared_key: None,
        allowed_ips: vec![format!("{ip}/32").parse().unwrap()],
        endpoint,
        persistent_keepalive: None,
    }
}

fn device(key: &StaticSecret, peers: Vec<PeerConfig>) -> Device {
    Device::new(DeviceConfig {
        private_key: key.clone(),
        peers,
        handshake_rate_limit: 1_000_000,
    })
    .unwrap()
}

/// A hub split into `shards` devices and its `PEERS` clients, every session handshaken.
struct World {
    hub: Vec<Device>,
    clients: Vec<Device>,
}

impl World {
    fn new(shards: usize) -> World {
        let keys: Vec<StaticSecret> = (0..PEERS).map(|_| secret()).collect();
        // A hub key that splits the peers evenly over the shards (bounded tries), so that
        // the figure measures the mechanism rather than the hash's luck with 64 peers.
        let even = |h: &StaticSecret| {
            let on_last = keys
                .iter()
                .filter(|k| receiver_index(h, &PublicKey::from(*k)) as usize % shards == shards - 1)
                .count();
            shards == 1 || on_last == PEERS / shards
        };
        let h = (0..10_000)
            .map(|_| secret())
            .find(even)
            .expect("an even split");
        let mut primary = device(
            &h,
            keys.iter()
                .enumerate()
                .map(|(i, k)| peer(PublicKey::from(k), tunnel_ip(i), None))
                .collect(),
        );
        let mut hub = vec![];
        let replicas = primary.into_shards(shards);
        hub.push(primary);
        hub.extend(replicas);
        let clients = keys
            .iter()
            .map(|k| device(k, vec![peer(PublicKey::from(&h), HUB_IP, Some(hub_addr()))]))
            .collect();
        let mut w = World { hub, clients };
        for i in 0..PEERS {
            w.clients[i].send_ip_packet(&ipv4(tunnel_ip(i), HUB_IP));
            w.pump_client(i);
        }
        w
    }

    /// Moves datagrams between client `i` and the hub until both are quiet.
    fn pump_client(&mut self, i: usize) {
        let mut to_hub: Vec<Vec<u8>> = Vec::new();
        let mut to_client: Vec<Vec<u8>> = Vec::new();
        for _ in 0..20 {
            while let Some(o) = self.clients[i].poll_output() {
                if let Output::Transmit { datagram, .. } = o {
                    to_hub.push(datagram);
                }
            }
            for d in to_hub.drain(..) {
                self.hub[0].handle_datagram(client_addr(i), &d);
                let mut forwarded = Vec::new();
                drain_hub(&mut self.hub[0], &mut to_client, &mut forwarded);
                for (k, item) in forwarded {
                    self.hub[k].handle_forwarded(item);
                    drain_hub(&mut self.hub[k], &mut to_client, &mut Vec::new());
                }
            }
            if to_client.is_empty() {
                return;
            }
            for d in to_client.drain(..) {
                self.clients[i].handle_datagram(hub_addr(), &d);
            }
        }
        panic!("handshake with client {i} did not settle");
    }

    /// `PER_PEER` data datagrams from every client, round-robin over the peers.
    fn datagrams(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut per: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PEERS];
        for (i, c) in self.clients.iter_mut().enumerate() {
            let p = ipv4(tunnel_ip(i), HUB_IP);
            for _ in 0..PER_PEER {
                c.send_ip_packet(&p);
                while let Some(o) = c.poll_output() {
                    if let Output::Transmit { datagram, .. } = o {
                        per[i].push(datagram);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(PEERS * PER_PEER);
        for k in 0..PER_PEER {
            for (i, p) in per.iter_mut().enumerate() {
                out.push((client_addr(i), std::mem::take(&mut p[k])));
            }
        }
        out
    }
}

/// Takes a hub shard's outputs: datagrams to `sent`, forwards to `forwarded`; counts
/// deliveries.
fn drain_hub(
    dev: &mut Device,
    sent: &mut Vec<Vec<u8>>,
    forwarded: &mut Vec<(usize, Forwarded)>,
) -> usize {
    let mut delivered = 0;
    while let Some(o) = dev.poll_output() {
        match o {
            Output::Transmit { datagram, .. } => sent.push(datagram),
            Output::Deliver { packet, .. } => {
                delivered += 1;
                dev.recycle(packet);
            }
            Output::Forward { shard, item } => forwarded.push((shard, item)),
        }
    }
    delivered
}

/// Handles outputs in the measured loop: datagrams and packets are recycled (the socket's
/// and netstack's share is not measured here), forwards batched for shard 1.
/// Shard 0's side of the two channels: batches to shard 1, used buffers back.
type Link<'a> = (
    &'a mpsc::SyncSender<Vec<Forwarded>>,
    &'a mpsc::Receiver<Vec<Vec<u8>>>,
);

fn outputs(dev: &mut Device, batch: &mut Vec<Forwarded>, tx: Option<Link<'_>>) -> usize {
    let mut done = 0;
    while let Some(o) = dev.poll_output() {
        match o {
            Output::Transmit { datagram, .. } => {
                done += 1;
                dev.recycle(datagram);
            }
            Output::Deliver { packet, .. } => {
                done += 1;
                dev.recycle(packet);
            }
            Output::Forward { item, .. } => {
                batch.push(item);
                if batch.len() >= BATCH
                    && let Some((tx, back)) = tx
                {
                    tx.send(std::mem::take(batch)).unwrap();
                    // The buffers shard 1 used come back for reuse, as the driver does it.
                    while let Ok(spent) = back.try_recv() {
                        for b in spent {
                            dev.recycle(b);
                        }
                    }
                }
            }
        }
    }
    done
}

/// Runs `feed` on shard 0 (one thread) and forwarded work on shard 1 (another), if any.
/// Returns the elapsed time and the outputs produced (must equal the input count).
fn run(
    hub: &mut [Device],
    feed: impl FnOnce(&mut Device, &mut dyn FnMut(&mut Device) -> usize) -> usize,
) -> (Duration, usize) {
    let (first, rest) = hub.split_first_mut().unwrap();
    let start = Instant::now();
    let done = if let Some(second) = rest.first_mut() {
        let (tx, rx) = mpsc::sync_channel::<Vec<Forwarded>>(QUEUE);
        let (spent, back) = mpsc::sync_channel::<Vec<Vec<u8>>>(QUEUE);
        std::thread::scope(|s| {
            let worker = s.spawn(move || {
                let mut done = 0;
                let mut none = Vec::new();
                for batch in rx {
                    let mut used = Vec::with_capacity(batch.len());
                    for item in batch {
                        used.push(second.handle_forwarded(item));
                        done += outputs(second, &mut none, None);
                    }
                    let _ = spent.try_send(used);
                }
                done
            });
            let mut batch = Vec::new();
            let mut take = |dev: &mut Device| outputs(dev, &mut batch, Some((&tx, &back)));
            let mine = feed(first, &mut take);
            if !batch.is_empty() {
                tx.send(batch).unwrap();
            }
            drop(tx);
            mine + worker.join().unwrap()
        })
    } else {
        let mut batch = Vec::new();
        let mut take = |dev: &mut Device| outputs(dev, &mut batch, None);
        feed(first, &mut take)
    };
    (start.elapsed(), done)
}

fn decrypt(w: &mut World) -> (Duration, usize) {
    let datagrams = w.datagrams();
    decrypt_prepared(&mut w.hub, &datagrams)
}

fn decrypt_prepared(hub: &mut [Device], datagrams: &[(SocketAddr, Vec<u8>)]) -> (Duration, usize) {
    let n = datagrams.len();
    let (t, done) = run(hub, |dev, take| {
        let mut done = 0;
        for (src, d) in datagrams {
            dev.handle_datagram(*src, d);
            done += take(dev);
        }
        done
    });
    assert_eq!(done, n, "every datagram decrypted and delivered");
    (t, n)
}

fn encrypt(w: &mut World) -> (Duration, usize) {
    encrypt_hub(&mut w.hub)
}

fn encrypt_hub(hub: &mut [Device]) -> (Duration, usize) {
    let packets: Vec<Vec<u8>> = (0..PEERS).map(|i| ipv4(HUB_IP, tunnel_ip(i))).collect();
    let n = PEERS * PER_PEER;
    let (t, done) = run(hub, |dev, take| {
        let mut done = 0;
        for _ in 0..PER_PEER {
            for p in &packets {
                dev.send_ip_packet(p);
                done += take(dev);
            }
        }
        done
    });
    assert_eq!(done, n, "every packet encrypted");
    (t, n)
}

/// The machine's ceiling for two threads: two independent unsharded hubs, one per thread,
/// nothing shared; the aggregate over the wall time of both.
fn independent(a: &mut World, b: &mut World, decrypting: bool) -> (Duration, usize) {
    let inputs = decrypting.then(|| (a.datagrams(), b.datagrams()));
    let start = Instant::now();
    let n = std::thread::scope(|s| {
        let (ia, ib) = match &inputs {
            Some((x, y)) => (Some(x), Some(y)),
            None => (None, None),
        };
        let (ha, hb) = (&mut a.hub, &mut b.hub);
        let ta = s.spawn(move || match ia {
            Some(d) => decrypt_prepared(ha, d).1,
            None => encrypt_hub(ha).1,
        });
        let nb = match ib {
            Some(d) => decrypt_prepared(hb, d).1,
            None => encrypt_hub(hb).1,
        };
        ta.join().unwrap() + nb
    });
    (start.elapsed(), n)
}

fn gbit(t: Duration, n: usize) -> f64 {
    (n * PACKET * 8) as f64 / t.as_secs_f64() / 1e9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

type Figures = (&'static str, Vec<f64>, Vec<f64>, Vec<f64>);

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "crypto stage: {PEERS} peers, {PER_PEER} x {PACKET}-byte packets each per round, {ROUNDS} rounds alternating; {cores} cores"
    );
    let mut one = World::new(1);
    let mut two = World::new(2);
    let mut other = World::new(1);
    let on_one = two.hub[0]
        .counters()
        .snapshot()
        .peers
        .iter()
        .filter(|p| p.shard == 1)
        .count();
    println!(
        "2 shards: {} peers on shard 0, {on_one} on shard 1 (receiver index modulo 2)",
        PEERS - on_one
    );
    let mut figures: Vec<Figures> = vec![
        ("decrypt", vec![], vec![], vec![]),
        ("encrypt", vec![], vec![], vec![]),
    ];
    for _ in 0..ROUNDS {
        for (name, a, b, c) in &mut figures {
            let decrypting = *name == "decrypt";
            let f = if decrypting { decrypt } else { encrypt };
            let (t, n) = f(&mut one);
            a.push(gbit(t, n));
            let (t, n) = f(&mut two);
            b.push(gbit(t, n));
            let (t, n) = independent(&mut one, &mut other, decrypting);
            c.push(gbit(t, n));
        }
    }
    println!(
        "{:<8} {:>15} {:>15} {:>7} {:>21} {:>7}",
        "stage", "1 shard Gbit/s", "2 shards Gbit/s", "ratio", "2 independent Gbit/s", "ratio"
    );
    for (name, a, b, c) in &mut figures {
        let (a, b, c) = (median(a), median(b), median(c));
        println!(
            "{name:<8} {a:>15.2} {b:>15.2} {:>6.2}x {c:>21.2} {:>6.2}x",
            b / a,
            c / a
        );
    }
}
