//! Counters for the WireGuard device, shared through an `Arc` so that any task (status API,
//! CLI, tests) can read them while the data-path task owns the [`super::Device`].
//!
//! Writers are the device only (relaxed atomics; the numbers are statistics, not
//! synchronisation). Readers call [`Counters::snapshot`] and get plain numbers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::PublicKey;

/// Live counters of one device; obtain with [`super::Device::counters`].
pub struct Counters {
    pub(crate) device: DeviceCounters,
    pub(crate) peers: Box<[PeerCounters]>,
}

/// A point-in-time copy of [`Counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub device: DeviceStats,
    /// In configuration order ([`super::PeerId`] indexes this).
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
}

/// Traffic and drops of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    pub name: Option<String>,
    pub public_key: PublicKey,
    /// Current endpoint: the configured one until the peer roams.
    pub endpoint: Option<SocketAddr>,
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
}

#[derive(Default)]
pub(crate) struct DeviceCounters {
    pub(crate) no_route: AtomicU64,
    pub(crate) unknown_peer: AtomicU64,
    pub(crate) unknown_index: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) invalid_mac: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
}

pub(crate) struct PeerCounters {
    name: Option<String>,
    public_key: PublicKey,
    endpoint: Mutex<Option<SocketAddr>>,
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
    pub(crate) fn new(peers: Box<[PeerCounters]>) -> Self {
        Counters {
            device: DeviceCounters::default(),
            peers,
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
            },
            peers: self.peers.iter().map(PeerCounters::snapshot).collect(),
        }
    }
}

impl Stats {
    /// The peer with this name, if any.
    pub fn peer(&self, name: &str) -> Option<&PeerStats> {
        self.peers.iter().find(|p| p.name.as_deref() == Some(name))
    }
}

impl PeerCounters {
    pub(crate) fn new(
        name: Option<String>,
        public_key: PublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Self {
        PeerCounters {
            name,
            public_key,
            endpoint: Mutex::new(endpoint),
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
        }
    }

    /// Publishes a new endpoint (called only when it changes, so the lock is cold).
    pub(crate) fn set_endpoint(&self, endpoint: SocketAddr) {
        *self.endpoint.lock() = Some(endpoint);
    }

    /// Publishes the wall-clock time of the current session's handshake.
    pub(crate) fn set_last_handshake(&self, at: SystemTime) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // 0 means "never"; a clock before 1970 is reported as never rather than invented.
        self.last_handshake_ms.store(ms, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PeerStats {
        let ms = get(&self.last_handshake_ms);
        PeerStats {
            name: self.name.clone(),
            public_key: self.public_key,
            endpoint: *self.endpoint.lock(),
            rx_bytes: get(&self.rx_bytes),
            tx_bytes: get(&self.tx_bytes),
            rx_packets: get(&self.rx_packets),
            tx_packets: get(&self.tx_packets),
            handshakes: get(&self.handshakes),
            last_handshake: (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms)),
            drop_no_endpoint: get(&self.drop_no_endpoint),
            drop_allowed_ips: get(&self.drop_allowed_ips),
            drop_decrypt: get(&self.drop_decrypt),
            drop_replay: get(&self.drop_replay),
            drop_malformed: get(&self.drop_malformed),
            drop_rate_limited: get(&self.drop_rate_limited),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::x25519::StaticSecret;

    #[test]
    fn snapshot_reflects_writes() {
        let key = PublicKey::from(&StaticSecret::from([7u8; 32]));
        let c = Counters::new(vec![PeerCounters::new(Some("a".into()), key, None)].into());
        bump(&c.device.no_route);
        add(&c.peers[0].rx_bytes, 148);
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        c.peers[0].set_last_handshake(at);
        c.peers[0].set_endpoint("127.0.0.1:9".parse().unwrap());
        let s = c.snapshot();
        assert_eq!(s.device.no_route, 1);
        let p = s.peer("a").unwrap();
        assert_eq!(p.rx_bytes, 148);
        assert_eq!(p.last_handshake, Some(at));
        assert_eq!(p.endpoint, Some("127.0.0.1:9".parse().unwrap()));
        assert!(s.peer("b").is_none());
    }

    #[test]
    fn never_handshaken_is_none() {
        let key = PublicKey::from(&StaticSecret::from([9u8; 32]));
        let c = Counters::new(vec![PeerCounters::new(None, key, None)].into());
        assert_eq!(c.snapshot().peers[0].last_handshake, None);
        c.peers[0].set_last_handshake(UNIX_EPOCH);
        assert_eq!(c.snapshot().peers[0].last_handshake, None);
    }
}
