//! Counters and the live view of the peer table, shared through an `Arc` so that any task
//! (status API, UAPI `get`, CLI, tests, permission checks) can read them while the data-path
//! task owns the [`super::Device`].
//!
//! Writers are the device only: relaxed atomics for traffic (the numbers are statistics, not
//! synchronisation), and short locks for what changes rarely (a peer joins or leaves, its
//! configuration changes, it roams). The data path never takes a lock per packet: each peer
//! holds its own `Arc<PeerCounters>`. Readers call [`Counters::snapshot`],
//! [`Counters::uapi_peers`] or [`Counters::owner`] and get plain values.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use super::routing::RouteTable;
use super::uapi::PeerState;
use super::{IpNetwork, PeerId, PeerIdentity, PublicKey};

/// How far a recomputed handshake time may move and still be the same handshake (see
/// [`PeerCounters::set_last_handshake`]): well above the wobble of reading two clocks, well
/// below the time between two handshakes.
const HANDSHAKE_TIME_SLACK: Duration = Duration::from_millis(100);

/// Live counters and peer view of one device; obtain with [`super::Device::counters`].
pub struct Counters {
    pub(crate) device: DeviceCounters,
    /// Current peers in the order they were added.
    peers: RwLock<Vec<Arc<PeerCounters>>>,
    /// Who owns each allowed-IP prefix: the same longest-prefix table the data path routes
    /// with, kept in step by the device, for identity lookups from other tasks.
    owners: RwLock<RouteTable<Arc<PeerCounters>>>,
    /// Current peers by their stable id, for identifying the peer a connection arrived from.
    by_id: RwLock<std::collections::HashMap<PeerId, Arc<PeerCounters>>>,
}

/// A point-in-time copy of [`Counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Drops that belong to no configured peer, and the session count.
    pub device: DeviceStats,
    /// Current peers, in the order they were added (configuration order at start).
    pub peers: Vec<PeerStats>,
}

/// Drops that cannot be attributed to a configured peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Outgoing IP packets whose destination is in no peer's allowed IPs.
    pub no_route: u64,
    /// Handshake initiations (valid mac1) from a static key that is not configured, or whose
    /// static key could not be decrypted.
    pub unknown_peer: u64,
    /// Responses, cookie replies and data whose receiver index names no peer.
    pub unknown_index: u64,
    /// Datagrams that are not WireGuard messages, and outgoing buffers that are not IP packets
    /// or too large to encapsulate.
    pub malformed: u64,
    /// Handshake messages whose mac1 is wrong (not meant for our public key).
    pub invalid_mac: u64,
    /// Handshake messages refused by the shared rate limiter (answered with a cookie reply).
    pub rate_limited: u64,
    /// Peers holding a session (a boringtun `Tunn`) now, as of the last timer tick: peers get
    /// one on first use and lose it after `idle_session_timeout` without data.
    pub sessions: u64,
    /// Sessions dropped because their peer carried no data for `idle_session_timeout`.
    pub sessions_dropped_idle: u64,
}

/// Traffic, drops and current settings of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's configured name, if it has one.
    pub name: Option<String>,
    /// The peer's WireGuard public key (its identity).
    pub public_key: PublicKey,
    /// Current endpoint: the configured one until the peer roams.
    pub endpoint: Option<SocketAddr>,
    /// Current allowed IPs.
    pub allowed_ips: Vec<IpNetwork>,
    /// Current persistent keepalive interval in seconds (`None` = off).
    pub persistent_keepalive: Option<u16>,
    /// UDP payload bytes of authenticated datagrams from this peer (handshakes included).
    pub rx_bytes: u64,
    /// UDP payload bytes sent to this peer (handshakes and keepalives included).
    pub tx_bytes: u64,
    /// Inner IP packets delivered from this peer.
    pub rx_packets: u64,
    /// Data datagrams carrying an IP packet sent to this peer.
    pub tx_packets: u64,
    /// Handshakes completed from our side: as initiator, responses accepted; as responder,
    /// responses sent (the initiator's first data or keepalive then confirms the session).
    pub handshakes: u64,
    /// Wall-clock time the current session was established, as of the last timer tick.
    pub last_handshake: Option<SystemTime>,
    /// Outgoing packets dropped because the peer has no endpoint yet.
    pub drop_no_endpoint: u64,
    /// Decrypted packets whose inner source is routed to another peer (or to none).
    pub drop_allowed_ips: u64,
    /// Datagrams that failed authentication or arrived with no usable session.
    pub drop_decrypt: u64,
    /// Data datagrams with a repeated or too old counter.
    pub drop_replay: u64,
    /// Decrypted payloads that are not valid IP packets.
    pub drop_malformed: u64,
    /// Handshake messages from this peer answered with a cookie reply by its session.
    pub drop_rate_limited: u64,
    /// Data (keepalives mostly), responses and cookie replies that arrived after this node
    /// dropped the peer's session as idle; the peer's next handshake replaces it.
    pub drop_no_session: u64,
    /// The crypto shard that runs this peer's session (`[interface] threads >= 3`; 0 otherwise).
    pub shard: usize,
}

#[derive(Default)]
pub(crate) struct DeviceCounters {
    pub(crate) no_route: AtomicU64,
    pub(crate) unknown_peer: AtomicU64,
    pub(crate) unknown_index: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) invalid_mac: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    sessions: AtomicU64,
    pub(crate) sessions_dropped_idle: AtomicU64,
}

impl DeviceCounters {
    /// Publishes the number of peers holding a session: the caller's count went from `was` to
    /// `now` (several shards of one device add up to one count).
    pub(crate) fn adjust_sessions(&self, was: usize, now: usize) {
        if now >= was {
            self.sessions
                .fetch_add((now - was) as u64, Ordering::Relaxed);
        } else {
            self.sessions
                .fetch_sub((was - now) as u64, Ordering::Relaxed);
        }
    }
}

/// One peer's counters and published settings. Created when the peer is added, dropped from
/// the view when it is removed (a reader holding a snapshot keeps its copy).
pub(crate) struct PeerCounters {
    public_key: PublicKey,
    /// Changed only by configuration and roaming: cold.
    info: Mutex<PeerInfo>,
    /// The crypto shard that owns the peer (set once by the device that creates it).
    pub(crate) shard: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_packets: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) handshakes: AtomicU64,
    /// Milliseconds since the Unix epoch; 0 = never.
    last_handshake_ms: AtomicU64,
    pub(crate) drop_no_endpoint: AtomicU64,
    pub(crate) drop_allowed_ips: AtomicU64,
    pub(crate) drop_decrypt: AtomicU64,
    pub(crate) drop_replay: AtomicU64,
    pub(crate) drop_malformed: AtomicU64,
    pub(crate) drop_rate_limited: AtomicU64,
    pub(crate) drop_no_session: AtomicU64,
}

/// The settings of a peer that other tasks may read.
#[derive(Clone, Default)]
pub(crate) struct PeerInfo {
    pub(crate) name: Option<String>,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) allowed_ips: Vec<IpNetwork>,
    pub(crate) preshared_key: Option<[u8; 32]>,
    pub(crate) persistent_keepalive: Option<u16>,
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Counters {
    /// No peers yet; the device adds them.
    pub(crate) fn new() -> Self {
        Counters {
            device: DeviceCounters::default(),
            peers: RwLock::new(Vec::new()),
            owners: RwLock::new(RouteTable::default()),
            by_id: RwLock::default(),
        }
    }

    /// Copies every counter. Values are individually consistent, not a global atomic cut.
    pub fn snapshot(&self) -> Stats {
        let d = &self.device;
        Stats {
            device: DeviceStats {
                no_route: get(&d.no_route),
                unknown_peer: get(&d.unknown_peer),
                unknown_index: get(&d.unknown_index),
                malformed: get(&d.malformed),
                invalid_mac: get(&d.invalid_mac),
                rate_limited: get(&d.rate_limited),
                sessions: get(&d.sessions),
                sessions_dropped_idle: get(&d.sessions_dropped_idle),
            },
            peers: self.peers.read().iter().map(|p| p.snapshot()).collect(),
        }
    }

    /// Every peer as the UAPI `get` reports it (pre-shared keys included: only for the
    /// socket's owner).
    pub fn uapi_peers(&self) -> Vec<PeerState> {
        self.peers.read().iter().map(|p| p.uapi_state()).collect()
    }

    /// The peer whose allowed IPs longest-match `addr`: the peer that owns a tunnel address,
    /// i.e. the only peer whose session may carry packets from it. Live: follows every change.
    pub fn owner(&self, addr: IpAddr) -> Option<PeerIdentity> {
        let owner = self.owners.read().lookup(addr).cloned()?;
        let name = owner.info.lock().name.clone();
        Some(PeerIdentity {
            name,
            public_key: owner.public_key,
        })
    }

    /// The current peer with this id (`None` once it was removed). Live, like [`owner`].
    ///
    /// [`owner`]: Counters::owner
    pub fn peer_by_id(&self, id: PeerId) -> Option<PeerIdentity> {
        let peer = self.by_id.read().get(&id).cloned()?;
        let name = peer.info.lock().name.clone();
        Some(PeerIdentity {
            name,
            public_key: peer.public_key,
        })
    }

    /// Number of current peers.
    pub fn peer_count(&self) -> usize {
        self.peers.read().len()
    }

    /// The current peer with this key (a sharded replica shares the primary's counters).
    pub(crate) fn find_peer(&self, key: &PublicKey) -> Option<Arc<PeerCounters>> {
        self.peers
            .read()
            .iter()
            .find(|p| p.public_key == *key)
            .cloned()
    }

    pub(crate) fn add_peer(&self, peer: Arc<PeerCounters>) {
        self.peers.write().push(peer);
    }

    pub(crate) fn set_id(&self, id: PeerId, peer: &Arc<PeerCounters>) {
        self.by_id.write().insert(id, Arc::clone(peer));
    }

    pub(crate) fn remove_peer(&self, peer: &Arc<PeerCounters>) {
        self.peers.write().retain(|p| !Arc::ptr_eq(p, peer));
        self.by_id.write().retain(|_, p| !Arc::ptr_eq(p, peer));
    }

    pub(crate) fn set_owner(&self, network: IpNetwork, peer: &Arc<PeerCounters>) {
        self.owners.write().set(network, Arc::clone(peer));
    }

    pub(crate) fn remove_owner(&self, network: IpNetwork) {
        self.owners.write().remove(network);
    }
}

impl Stats {
    /// The peer with this name, if any.
    pub fn peer(&self, name: &str) -> Option<&PeerStats> {
        self.peers.iter().find(|p| p.name.as_deref() == Some(name))
    }

    /// The peer with this public key, if any.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<&PeerStats> {
        self.peers.iter().find(|p| p.public_key == *key)
    }
}

impl PeerCounters {
    pub(crate) fn new(public_key: PublicKey, info: PeerInfo) -> Self {
        PeerCounters {
            public_key,
            info: Mutex::new(info),
            shard: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            last_handshake_ms: AtomicU64::new(0),
            drop_no_endpoint: AtomicU64::new(0),
            drop_allowed_ips: AtomicU64::new(0),
            drop_decrypt: AtomicU64::new(0),
            drop_replay: AtomicU64::new(0),
            drop_malformed: AtomicU64::new(0),
            drop_rate_limited: AtomicU64::new(0),
            drop_no_session: AtomicU64::new(0),
        }
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Publishes a new endpoint (called only when it changes, so the lock is cold).
    pub(crate) fn set_endpoint(&self, endpoint: Option<SocketAddr>) {
        self.info.lock().endpoint = endpoint;
    }

    /// The published endpoint (the owner shard's, which follows roaming).
    pub(crate) fn endpoint(&self) -> Option<SocketAddr> {
        self.info.lock().endpoint
    }

    /// Publishes changed settings.
    pub(crate) fn set_info(&self, info: PeerInfo) {
        *self.info.lock() = info;
    }

    /// Publishes the wall-clock time of the current session's handshake. The device derives
    /// it every tick as "wall clock now minus the handshake's age", and the two clocks are read
    /// a moment apart, so the result wobbles by a millisecond from tick to tick: a value within
    /// [`HANDSHAKE_TIME_SLACK`] of the published one is the same handshake and is not
    /// republished (`wg show` and the stats stay stable). A new handshake (seconds later) or a
    /// stepped wall clock moves it further and is.
    pub(crate) fn set_last_handshake(&self, at: SystemTime) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let old = self.last_handshake_ms.load(Ordering::Relaxed);
        if old != 0 && ms != 0 && ms.abs_diff(old) <= HANDSHAKE_TIME_SLACK.as_millis() as u64 {
            return;
        }
        // 0 means "never"; a clock before 1970 is reported as never rather than invented.
        self.last_handshake_ms.store(ms, Ordering::Relaxed);
    }

    fn last_handshake(&self) -> Option<SystemTime> {
        let ms = get(&self.last_handshake_ms);
        (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
    }

    fn snapshot(&self) -> PeerStats {
        let info = self.info.lock().clone();
        PeerStats {
            name: info.name,
            public_key: self.public_key,
            endpoint: info.endpoint,
            allowed_ips: info.allowed_ips,
            persistent_keepalive: info.persistent_keepalive,
            rx_bytes: get(&self.rx_bytes),
            tx_bytes: get(&self.tx_bytes),
            rx_packets: get(&self.rx_packets),
            tx_packets: get(&self.tx_packets),
            handshakes: get(&self.handshakes),
            last_handshake: self.last_handshake(),
            drop_no_endpoint: get(&self.drop_no_endpoint),
            drop_allowed_ips: get(&self.drop_allowed_ips),
            drop_decrypt: get(&self.drop_decrypt),
            drop_replay: get(&self.drop_replay),
            drop_malformed: get(&self.drop_malformed),
            drop_rate_limited: get(&self.drop_rate_limited),
            drop_no_session: get(&self.drop_no_session),
            shard: get(&self.shard) as usize,
        }
    }

    fn uapi_state(&self) -> PeerState {
        let info = self.info.lock().clone();
        PeerState {
            public_key: self.public_key,
            preshared_key: info.preshared_key,
            endpoint: info.endpoint,
            last_handshake: self.last_handshake(),
            rx_bytes: get(&self.rx_bytes),
            tx_bytes: get(&self.tx_bytes),
            persistent_keepalive: info.persistent_keepalive.unwrap_or(0),
            allowed_ips: info.allowed_ips,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::x25519::StaticSecret;

    fn peer(seed: u8, name: Option<&str>) -> Arc<PeerCounters> {
        let key = PublicKey::from(&StaticSecret::from([seed; 32]));
        let info = PeerInfo {
            name: name.map(str::to_owned),
            ..PeerInfo::default()
        };
        Arc::new(PeerCounters::new(key, info))
    }

    #[test]
    fn snapshot_reflects_writes() {
        let c = Counters::new();
        let a = peer(7, Some("a"));
        c.add_peer(Arc::clone(&a));
        bump(&c.device.no_route);
        add(&a.rx_bytes, 148);
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        a.set_last_handshake(at);
        a.set_endpoint(Some("127.0.0.1:9".parse().unwrap()));
        let s = c.snapshot();
        assert_eq!(s.device.no_route, 1);
        let p = s.peer("a").unwrap();
        assert_eq!(p.rx_bytes, 148);
        assert_eq!(p.last_handshake, Some(at));
        assert_eq!(p.endpoint, Some("127.0.0.1:9".parse().unwrap()));
        assert!(s.peer("b").is_none());
        assert_eq!(s.peer_by_key(&a.public_key).unwrap().rx_bytes, 148);
    }

    /// The per-tick recomputation's millisecond wobble does not change the published time; a
    /// new handshake does.
    #[test]
    fn last_handshake_ignores_tick_wobble() {
        let c = Counters::new();
        let a = peer(8, None);
        c.add_peer(Arc::clone(&a));
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_694);
        a.set_last_handshake(at);
        a.set_last_handshake(at + Duration::from_millis(1));
        a.set_last_handshake(at - Duration::from_millis(2));
        assert_eq!(c.snapshot().peers[0].last_handshake, Some(at));
        let next = at + Duration::from_secs(120);
        a.set_last_handshake(next);
        assert_eq!(c.snapshot().peers[0].last_handshake, Some(next));
    }

    #[test]
    fn never_handshaken_is_none() {
        let c = Counters::new();
        let a = peer(9, None);
        c.add_peer(Arc::clone(&a));
        assert_eq!(c.snapshot().peers[0].last_handshake, None);
        a.set_last_handshake(UNIX_EPOCH);
        assert_eq!(c.snapshot().peers[0].last_handshake, None);
    }

    #[test]
    fn peers_come_and_go_in_insertion_order() {
        let c = Counters::new();
        let (a, b, d) = (peer(1, Some("a")), peer(2, Some("b")), peer(3, Some("d")));
        for p in [&a, &b, &d] {
            c.add_peer(Arc::clone(p));
        }
        c.remove_peer(&b);
        let names: Vec<_> = c.snapshot().peers.into_iter().map(|p| p.name).collect();
        assert_eq!(names, [Some("a".to_owned()), Some("d".to_owned())]);
        assert_eq!(c.peer_count(), 2);
    }

    #[test]
    fn peer_by_id_follows_add_and_remove() {
        let c = Counters::new();
        let a = peer(1, Some("a"));
        c.add_peer(Arc::clone(&a));
        c.set_id(PeerId(7), &a);
        assert_eq!(c.peer_by_id(PeerId(7)).unwrap().name.as_deref(), Some("a"));
        assert!(c.peer_by_id(PeerId(8)).is_none());
        c.remove_peer(&a);
        assert!(c.peer_by_id(PeerId(7)).is_none());
    }

    #[test]
    fn owner_is_the_longest_prefix_match() {
        let c = Counters::new();
        let (a, b) = (peer(1, Some("a")), peer(2, None));
        c.set_owner("10.0.0.0/24".parse().unwrap(), &a);
        c.set_owner("10.0.0.5/32".parse().unwrap(), &b);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.owner(ip("10.0.0.6")).unwrap().name.as_deref(), Some("a"));
        let five = c.owner(ip("10.0.0.5")).unwrap();
        assert_eq!((five.name, five.public_key), (None, b.public_key));
        assert!(c.owner(ip("10.0.1.1")).is_none());
        c.remove_owner("10.0.0.5/32".parse().unwrap());
        assert_eq!(c.owner(ip("10.0.0.5")).unwrap().public_key, a.public_key);
        // Renaming is visible at once.
        a.set_info(PeerInfo {
            name: Some("a2".into()),
            ..PeerInfo::default()
        });
        assert_eq!(c.owner(ip("10.0.0.5")).unwrap().name.as_deref(), Some("a2"));
    }
}
