//! [`Device`]: the sans-IO multi-peer WireGuard endpoint.
//!
//! One data-path task owns the device (`&mut self`, no locks). Call order per event:
//! - a UDP datagram arrived → [`Device::handle_datagram`] (source already normalised with
//!   [`super::udp::normalize_addr`]);
//! - the netstack emitted an IP packet → [`Device::send_ip_packet`];
//! - every 250 ms → [`Device::update_timers`]; every second → [`Device::reset_rate_limiter`].
//!
//! Results go to an [`Output`]. Nothing here panics on network input: every malformed,
//! unauthenticated or misrouted packet is counted, logged at `debug` and dropped.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{HandshakeInit, Packet, Tunn, TunnResult};

use super::counters::{PeerCounters, add, bump};
use super::routing::RouteTable;
use super::{
    Counters, DeviceConfig, IpNetwork, Output, PeerId, PublicKey, StaticSecret, WgError, key_label,
};

/// Peers a device accepts. Receiver indices are 24 bits; staying far below that keeps random
/// unique index selection fast.
pub(crate) const MAX_PEERS: usize = 1 << 16;

/// Limit of the shared handshake rate limiter, per second. Each handshake message passes the
/// limiter twice (our pre-check, then again inside `Tunn::decapsulate`), so this admits about
/// 100 handshake messages a second before cookies are required (boringtun's device uses 100
/// with a single pass).
const HANDSHAKE_RATE_LIMIT: u64 = 200;

/// Size of the one reusable scratch buffer. boringtun panics if its destination is smaller
/// than the source plus 32 bytes or smaller than 148 bytes; a UDP datagram is at most 65,507
/// bytes, and we refuse anything larger than this buffer before calling into boringtun.
const SCRATCH_LEN: usize = 1 << 16;

/// Largest IP packet we encapsulate (data overhead is 32 bytes).
const MAX_IP_PACKET: usize = SCRATCH_LEN - 32;

/// Upper bound on packets flushed after one handshake; boringtun queues at most 256.
const MAX_DRAIN: usize = 512;

/// WireGuard message types (first byte of the little-endian type word).
const MSG_INIT: u8 = 1;
const MSG_COOKIE: u8 = 3;
const MSG_DATA: u8 = 4;
/// Size of a data message that carries no payload (a keepalive).
const DATA_OVERHEAD: usize = 32;

/// A multi-peer WireGuard device. See the module docs for the call order.
pub struct Device {
    private_key: StaticSecret,
    public_key: PublicKey,
    peers: Vec<Peer>,
    by_key: HashMap<[u8; 32], PeerId>,
    /// Receiver index (upper 24 bits of a session index) → peer.
    by_index: HashMap<u32, PeerId>,
    routes: RouteTable,
    rate_limiter: Arc<RateLimiter>,
    counters: Arc<Counters>,
    /// Reused for every encapsulation and decapsulation: no allocation per packet.
    scratch: Box<[u8]>,
}

/// One peer's session state, owned by the device.
struct Peer {
    tunn: Tunn,
    /// Configured endpoint, then the source of the latest authenticated datagram.
    endpoint: Option<SocketAddr>,
    name: Option<String>,
    /// Name or short key, for logs.
    label: String,
    allowed_ips: Vec<IpNetwork>,
    persistent_keepalive: bool,
    /// The first timer tick has run (it starts the handshake of keepalive peers).
    started: bool,
    /// A packet was queued awaiting a handshake that has not completed yet.
    traffic_waiting: bool,
    /// The last timer tick reported an expired connection (log the transition once).
    expired: bool,
}

/// What kind of message a datagram is (decided before decapsulation consumes it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Init,
    Response,
    Cookie,
    Data,
}

impl Device {
    /// Builds the peer table. Fails on duplicate keys, names or allowed-IP prefixes, on our own
    /// key listed as a peer, and on too many peers.
    pub fn new(cfg: DeviceConfig) -> Result<Self, WgError> {
        let public_key = PublicKey::from(&cfg.private_key);
        if cfg.peers.len() > MAX_PEERS {
            return Err(WgError::TooManyPeers(cfg.peers.len()));
        }
        let rate_limiter = Arc::new(RateLimiter::new(&public_key, HANDSHAKE_RATE_LIMIT));
        let indices = unique_indices(cfg.peers.len()).map_err(WgError::Random)?;

        let mut peers = Vec::with_capacity(cfg.peers.len());
        let mut counters = Vec::with_capacity(cfg.peers.len());
        let mut by_key = HashMap::new();
        let mut by_index = HashMap::new();
        let mut names = HashSet::new();
        let mut routes = RouteTable::default();
        let mut labels: Vec<String> = Vec::new();

        for (i, (pc, index)) in cfg.peers.into_iter().zip(indices).enumerate() {
            let id = PeerId(i);
            let label = pc.name.clone().unwrap_or_else(|| key_label(&pc.public_key));
            if pc.public_key == public_key {
                return Err(WgError::OwnKeyAsPeer(label));
            }
            if by_key.insert(pc.public_key.to_bytes(), id).is_some() {
                return Err(WgError::DuplicatePeer(key_label(&pc.public_key)));
            }
            if let Some(name) = &pc.name
                && !names.insert(name.clone())
            {
                return Err(WgError::DuplicateName(name.clone()));
            }
            for net in &pc.allowed_ips {
                if let Some(prev) = routes.insert(*net, id) {
                    let first = labels.get(prev.0).unwrap_or(&label).clone();
                    return Err(WgError::DuplicateAllowedIp {
                        network: *net,
                        first,
                        second: label,
                    });
                }
            }
            by_index.insert(index, id);
            // An all-zero pre-shared key means "none" (wg convention).
            let psk = pc.preshared_key.filter(|k| k != &[0u8; 32]);
            let keepalive = pc.persistent_keepalive.filter(|&s| s > 0);
            let tunn = Tunn::new(
                cfg.private_key.clone(),
                pc.public_key,
                psk,
                keepalive,
                index,
                Some(Arc::clone(&rate_limiter)),
            );
            counters.push(PeerCounters::new(
                pc.name.clone(),
                pc.public_key,
                pc.endpoint,
            ));
            labels.push(label.clone());
            peers.push(Peer {
                tunn,
                endpoint: pc.endpoint,
                name: pc.name,
                label,
                allowed_ips: pc.allowed_ips,
                persistent_keepalive: keepalive.is_some(),
                started: false,
                traffic_waiting: false,
                expired: false,
            });
        }

        Ok(Device {
            private_key: cfg.private_key,
            public_key,
            peers,
            by_key,
            by_index,
            routes,
            rate_limiter,
            counters: Arc::new(Counters::new(counters.into_boxed_slice())),
            scratch: vec![0u8; SCRATCH_LEN].into_boxed_slice(),
        })
    }

    /// Processes one UDP datagram received from `src`: answers handshakes, delivers
    /// authenticated and cryptokey-routed IP packets, follows roaming peers.
    pub fn handle_datagram(&mut self, src: SocketAddr, datagram: &[u8], out: &mut impl Output) {
        let Device {
            private_key,
            public_key,
            peers,
            by_key,
            by_index,
            routes,
            rate_limiter,
            counters,
            scratch,
        } = self;
        let dc = &counters.device;
        if datagram.len() > scratch.len() {
            bump(&dc.malformed);
            tracing::debug!(%src, len = datagram.len(), "dropped oversized datagram");
            return;
        }

        // Cheap checks first: mac1 (and mac2 under load) before any Diffie-Hellman.
        let found = match rate_limiter.verify_packet(Some(src.ip()), datagram, scratch) {
            Ok(Packet::HandshakeInit(init)) => {
                identify_initiator(private_key, public_key, by_key, &init, src, counters)
                    .map(|id| (Kind::Init, id))
            }
            Ok(Packet::HandshakeResponse(p)) => {
                by_receiver(by_index, p.receiver_idx, src, counters).map(|id| (Kind::Response, id))
            }
            Ok(Packet::PacketCookieReply(p)) => {
                by_receiver(by_index, p.receiver_idx, src, counters).map(|id| (Kind::Cookie, id))
            }
            Ok(Packet::PacketData(p)) => {
                by_receiver(by_index, p.receiver_idx, src, counters).map(|id| (Kind::Data, id))
            }
            Err(TunnResult::WriteToNetwork(cookie)) => {
                bump(&dc.rate_limited);
                tracing::debug!(%src, "under load: answered handshake with a cookie reply");
                out.send_datagram(src, cookie);
                None
            }
            Err(TunnResult::Err(WireGuardError::InvalidMac)) => {
                bump(&dc.invalid_mac);
                tracing::debug!(%src, "dropped handshake message with invalid mac1");
                None
            }
            Err(TunnResult::Err(WireGuardError::UnderLoad)) => {
                bump(&dc.rate_limited);
                tracing::debug!(%src, "dropped handshake message: under load");
                None
            }
            Err(e) => {
                bump(&dc.malformed);
                tracing::debug!(%src, len = datagram.len(), result = ?e, "dropped malformed datagram");
                None
            }
        };
        let Some((kind, id)) = found else { return };
        let peer = &mut peers[id.0];
        let pc = &counters.peers[id.0];

        let mut authenticated = false;
        let mut flush = false;
        match peer.tunn.decapsulate(Some(src.ip()), datagram, scratch) {
            TunnResult::Done => {
                // A keepalive (authenticated) or a stored cookie reply (not authenticated).
                authenticated = kind == Kind::Data;
            }
            TunnResult::WriteToNetwork(reply) if reply.first() == Some(&MSG_COOKIE) => {
                // The session's own limiter pass asked for a cookie: not authenticated.
                bump(&pc.drop_rate_limited);
                tracing::debug!(peer = %peer.label, %src, "answered handshake with a cookie reply");
                out.send_datagram(src, reply);
            }
            TunnResult::WriteToNetwork(reply) => {
                authenticated = true;
                flush = true;
                transmit(out, pc, src, reply);
                if matches!(kind, Kind::Init | Kind::Response) {
                    bump(&pc.handshakes);
                    peer.traffic_waiting = false;
                    peer.expired = false;
                    tracing::debug!(peer = %peer.label, %src, ?kind, "handshake completed");
                }
            }
            TunnResult::WriteToTunnelV4(packet, inner) => {
                authenticated = true;
                deliver(out, routes, id, peer, pc, IpAddr::V4(inner), packet);
            }
            TunnResult::WriteToTunnelV6(packet, inner) => {
                authenticated = true;
                deliver(out, routes, id, peer, pc, IpAddr::V6(inner), packet);
            }
            TunnResult::Err(e) => {
                let counter = match e {
                    WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => {
                        &pc.drop_replay
                    }
                    WireGuardError::InvalidPacket => &pc.drop_malformed,
                    WireGuardError::UnderLoad => &pc.drop_rate_limited,
                    _ => &pc.drop_decrypt,
                };
                bump(counter);
                tracing::debug!(peer = %peer.label, %src, ?kind, error = ?e, "dropped datagram");
            }
        }

        if authenticated {
            add(&pc.rx_bytes, datagram.len());
            if peer.endpoint != Some(src) {
                tracing::debug!(peer = %peer.label, from = ?peer.endpoint, to = %src, "peer endpoint changed");
                peer.endpoint = Some(src);
                pc.set_endpoint(src);
            }
        }
        if flush {
            // Packets queued while the handshake was in progress go out now.
            for _ in 0..MAX_DRAIN {
                match peer.tunn.decapsulate(None, &[], scratch) {
                    TunnResult::WriteToNetwork(d) => transmit(out, pc, src, d),
                    _ => break,
                }
            }
        }
    }

    /// Encrypts one IP packet from the netstack and sends it to the peer whose allowed IPs
    /// longest-match its destination. Without a route or an endpoint it is dropped and counted.
    /// Without a session it is queued (up to 256 per peer, boringtun's limit) and a handshake
    /// starts.
    pub fn send_ip_packet(&mut self, packet: &[u8], out: &mut impl Output) {
        let dc = &self.counters.device;
        let Some(dst) = Tunn::dst_address(packet) else {
            bump(&dc.malformed);
            tracing::debug!(
                len = packet.len(),
                "dropped outgoing buffer: not an IP packet"
            );
            return;
        };
        if packet.len() > MAX_IP_PACKET {
            bump(&dc.malformed);
            tracing::debug!(%dst, len = packet.len(), "dropped outgoing packet: too large");
            return;
        }
        let Some(id) = self.routes.lookup(dst) else {
            bump(&dc.no_route);
            tracing::debug!(%dst, "dropped outgoing packet: no peer's allowed IPs contain it");
            return;
        };
        let peer = &mut self.peers[id.0];
        let pc = &self.counters.peers[id.0];
        let Some(endpoint) = peer.endpoint else {
            bump(&pc.drop_no_endpoint);
            tracing::debug!(peer = %peer.label, %dst, "dropped outgoing packet: peer has no endpoint yet");
            return;
        };
        match peer.tunn.encapsulate(packet, &mut self.scratch) {
            TunnResult::WriteToNetwork(d) => {
                if d.first() == Some(&MSG_INIT) {
                    peer.traffic_waiting = true;
                }
                transmit(out, pc, endpoint, d);
            }
            // Queued behind a handshake already in progress.
            TunnResult::Done => peer.traffic_waiting = true,
            other => {
                tracing::debug!(peer = %peer.label, %dst, result = ?other, "encapsulate failed");
            }
        }
    }

    /// Runs every peer's timers: handshake retries, rekeys, keepalives. Call every 250 ms.
    /// `now` is only used to publish [`super::PeerStats::last_handshake`] as wall-clock time.
    ///
    /// Peers with a persistent keepalive and an endpoint are handshaken with on the first tick,
    /// and re-initiated whenever their connection expires (a NAT'd agent must dial itself);
    /// so are peers that had traffic queued when the connection expired.
    pub fn update_timers(&mut self, now: SystemTime, out: &mut impl Output) {
        for (i, peer) in self.peers.iter_mut().enumerate() {
            let pc = &self.counters.peers[i];
            let scratch = &mut self.scratch;
            if !peer.started {
                peer.started = true;
                if let (true, Some(ep)) = (peer.persistent_keepalive, peer.endpoint)
                    && let TunnResult::WriteToNetwork(d) =
                        peer.tunn.format_handshake_initiation(scratch, false)
                {
                    tracing::debug!(peer = %peer.label, endpoint = %ep, "initiating handshake");
                    transmit(out, pc, ep, d);
                    continue;
                }
            }
            match peer.tunn.update_timers(scratch) {
                TunnResult::Done => {}
                TunnResult::WriteToNetwork(d) => match peer.endpoint {
                    Some(ep) => transmit(out, pc, ep, d),
                    None => bump(&pc.drop_no_endpoint),
                },
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    if !peer.expired {
                        peer.expired = true;
                        tracing::debug!(peer = %peer.label, "connection expired");
                    }
                    let wanted = peer.persistent_keepalive || peer.traffic_waiting;
                    if let (true, Some(ep)) = (wanted, peer.endpoint)
                        && let TunnResult::WriteToNetwork(d) =
                            peer.tunn.format_handshake_initiation(scratch, false)
                    {
                        // Queued traffic earns one more attempt; keepalive peers retry forever.
                        peer.traffic_waiting = false;
                        peer.expired = false;
                        tracing::debug!(peer = %peer.label, endpoint = %ep, "re-initiating handshake");
                        transmit(out, pc, ep, d);
                    }
                }
                other => {
                    tracing::debug!(peer = %peer.label, result = ?other, "timer error");
                }
            }
            if let Some(at) = peer
                .tunn
                .time_since_last_handshake()
                .and_then(|age| now.checked_sub(age))
            {
                pc.set_last_handshake(at);
            }
        }
    }

    /// Resets the shared handshake rate limiter's count. Call about once a second.
    pub fn reset_rate_limiter(&mut self) {
        self.rate_limiter.reset_count();
    }

    /// The live counters, readable from any task.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Our static public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Number of configured peers; valid [`PeerId`]s are `0..peer_count()`.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The peer with this configured name.
    pub fn peer_by_name(&self, name: &str) -> Option<PeerId> {
        self.peers
            .iter()
            .position(|p| p.name.as_deref() == Some(name))
            .map(PeerId)
    }

    /// The peer with this public key.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key.as_bytes()).copied()
    }

    /// The peer an outgoing packet to `addr` would be sent to (longest-prefix match).
    pub fn route(&self, addr: IpAddr) -> Option<PeerId> {
        self.routes.lookup(addr)
    }

    /// The peer's current endpoint (configured, or learned by roaming). `None` for an unknown id.
    pub fn peer_endpoint(&self, id: PeerId) -> Option<SocketAddr> {
        self.peers.get(id.0).and_then(|p| p.endpoint)
    }

    /// The peer's configured allowed IPs (empty for an unknown id).
    pub fn peer_allowed_ips(&self, id: PeerId) -> &[IpNetwork] {
        self.peers.get(id.0).map_or(&[], |p| &p.allowed_ips)
    }
}

/// Finds the configured peer that sent a handshake initiation (costs one X25519).
fn identify_initiator(
    private_key: &StaticSecret,
    public_key: &PublicKey,
    by_key: &HashMap<[u8; 32], PeerId>,
    init: &HandshakeInit<'_>,
    src: SocketAddr,
    counters: &Counters,
) -> Option<PeerId> {
    let found = parse_handshake_anon(private_key, public_key, init)
        .map_err(
            |e| tracing::debug!(%src, error = ?e, "dropped undecryptable handshake initiation"),
        )
        .ok()
        .and_then(|half| {
            let id = by_key.get(&half.peer_static_public).copied();
            if id.is_none() {
                let key = key_label(&PublicKey::from(half.peer_static_public));
                tracing::debug!(%src, %key, "dropped handshake initiation from unknown key");
            }
            id
        });
    if found.is_none() {
        bump(&counters.device.unknown_peer);
    }
    found
}

/// Finds the peer a response, cookie reply or data message is addressed to.
fn by_receiver(
    by_index: &HashMap<u32, PeerId>,
    receiver_idx: u32,
    src: SocketAddr,
    counters: &Counters,
) -> Option<PeerId> {
    let found = by_index.get(&(receiver_idx >> 8)).copied();
    if found.is_none() {
        bump(&counters.device.unknown_index);
        tracing::debug!(%src, receiver_idx, "dropped message for unknown receiver index");
    }
    found
}

/// Delivers a decrypted packet if cryptokey routing agrees that `inner_src` belongs to the
/// sending peer (global longest-prefix match, so overlapping prefixes cannot be spoofed).
fn deliver(
    out: &mut impl Output,
    routes: &RouteTable,
    id: PeerId,
    peer: &Peer,
    pc: &PeerCounters,
    inner_src: IpAddr,
    packet: &[u8],
) {
    match routes.lookup(inner_src) {
        Some(owner) if owner == id => {
            bump(&pc.rx_packets);
            out.deliver(id, packet);
        }
        owner => {
            bump(&pc.drop_allowed_ips);
            tracing::debug!(peer = %peer.label, %inner_src, ?owner, "dropped packet: source not in the peer's allowed IPs");
        }
    }
}

/// Sends one datagram to a peer and counts it.
fn transmit(out: &mut impl Output, pc: &PeerCounters, to: SocketAddr, datagram: &[u8]) {
    add(&pc.tx_bytes, datagram.len());
    if datagram.first() == Some(&MSG_DATA) && datagram.len() > DATA_OVERHEAD {
        bump(&pc.tx_packets);
    }
    out.send_datagram(to, datagram);
}

/// `n` distinct random non-zero 24-bit receiver indices.
fn unique_indices(n: usize) -> Result<Vec<u32>, getrandom::Error> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let idx = getrandom::u32()? & 0x00ff_ffff;
        if idx != 0 && seen.insert(idx) {
            out.push(idx);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_distinct_nonzero_24_bit() {
        let v = unique_indices(5000).unwrap();
        let set: HashSet<_> = v.iter().copied().collect();
        assert_eq!(set.len(), 5000);
        assert!(v.iter().all(|&i| i != 0 && i <= 0x00ff_ffff));
    }

    #[test]
    fn device_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Device>();
    }
}
