//! [`Device`]: the sans-IO multi-peer WireGuard endpoint.
//!
//! One data-path task owns the device (`&mut self`, no locks). Call order per event:
//! - a UDP datagram arrived → [`Device::handle_datagram`] (source already normalised with
//!   [`super::udp::normalize_addr`]);
//! - the netstack emitted an IP packet → [`Device::send_ip_packet`];
//! - every 250 ms → [`Device::update_timers`]; every second → [`Device::reset_rate_limiter`];
//! - a configuration change → [`Device::apply`] (between two packets: the change is atomic for
//!   the data path, including the routing table).
//!
//! Every call queues its results as owned [`Output`]s (datagrams to send, packets to deliver),
//! which the caller takes with [`Device::poll_output`] after the call, as `quinn-proto`'s
//! `poll_transmit` works: the device never calls back into its caller, so the driver reads as
//! "hand in an event, then act on what came out", and outputs can move to other threads.
//! Nothing here panics on network input: every malformed, unauthenticated or misrouted packet
//! is counted, logged at `debug` and dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{HandshakeInit, Packet, Tunn, TunnResult};

use super::counters::{PeerCounters, add, bump};
use super::routing::RouteTable;
use super::session::{IdlePolicy, Keys, Session};
use super::{
    Counters, DeviceConfig, DeviceUpdate, IpNetwork, Output, PeerId, PeerUpdate, PublicKey,
    StaticSecret, WgError, key_label,
};

mod shard;
mod update;

pub use shard::{Forwarded, Replication, Shard};

/// Peers a device accepts. Receiver indices are 24 bits; staying far below that keeps random
/// unique index selection fast.
pub(crate) const MAX_PEERS: usize = 1 << 16;

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
    /// Peers by receiver index (the upper 24 bits of a session index): one hash lookup per
    /// data datagram.
    peers: HashMap<u32, Peer>,
    /// Static public key → receiver index.
    by_key: HashMap<[u8; 32], u32>,
    /// Allowed-IP prefix → receiver index of its owner.
    routes: RouteTable<u32>,
    rate_limiter: Arc<RateLimiter>,
    /// The limiter's limit, for a new one when the key changes.
    handshake_rate_limit: u64,
    counters: Arc<Counters>,
    /// Reused for every encapsulation and decapsulation: no allocation per packet.
    scratch: Box<[u8]>,
    /// The next [`PeerId`] to hand out.
    next_id: u64,
    /// Drop a peer's session after this long without data (see [`super::session`]).
    idle_session_timeout: Option<Duration>,
    /// Results of the calls since the last [`Device::poll_output`] drained them.
    outputs: Outputs,
    /// Which peers this device runs sessions, timers and traffic for (all, unless sharded:
    /// see [`Device::into_shards`]).
    shard: Shard,
    /// Sharded replicas: the primary's rate limiter, for a private-key change being replayed.
    limiter_next: Option<Arc<RateLimiter>>,
    /// Sessions this device added to the shared session count at its last timer tick.
    sessions_published: usize,
    /// See [`Device::handled`].
    handled: u64,
}

/// The queue behind [`Device::poll_output`]. Bounded by what one call can produce, as long as
/// the caller drains it after every call: one handshake reply plus [`MAX_DRAIN`] queued packets
/// for a datagram, one datagram for an IP packet, a few per peer for a timer tick.
#[derive(Default)]
struct Outputs {
    queue: VecDeque<Output>,
    /// Buffers handed back with [`Device::recycle`]: an output costs a copy, not an allocation
    /// (an A/B run measured 5 % of bulk throughput for the allocation).
    free: Vec<Vec<u8>>,
}

/// Buffers kept for reuse. The driver hands each back right after using it, so a handful are in
/// flight at a time; more only after a handshake flushes its queue, or when other shards hand
/// back the buffers of a batch of forwarded work (up to 256 packets of the netstack's queue).
pub(super) const MAX_FREE: usize = 256;
/// Larger buffers are not kept (only oversized packets need them): the pool stays under
/// `MAX_FREE` × 4 KiB (1 MiB).
const MAX_FREE_CAPACITY: usize = 4096;

impl Outputs {
    fn forward(&mut self, shard: usize, item: Forwarded) {
        self.queue.push_back(Output::Forward { shard, item });
    }

    fn buffer(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        buf
    }

    fn send_datagram(&mut self, to: SocketAddr, datagram: &[u8]) {
        let datagram = self.buffer(datagram);
        self.queue.push_back(Output::Transmit { to, datagram });
    }

    fn deliver(&mut self, peer: PeerId, packet: &[u8]) {
        let packet = self.buffer(packet);
        self.queue.push_back(Output::Deliver { peer, packet });
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.free.len() < MAX_FREE && buf.capacity() <= MAX_FREE_CAPACITY {
            self.free.push(buf);
        }
    }
}

/// One peer's session state, owned by the device.
struct Peer {
    id: PeerId,
    /// The boringtun `Tunn`, created on first use and dropped when idle.
    session: Session,
    /// Configured endpoint, then the source of the latest authenticated datagram.
    endpoint: Option<SocketAddr>,
    name: Option<String>,
    /// Name or short key, for logs.
    label: String,
    allowed_ips: Vec<IpNetwork>,
    preshared_key: Option<[u8; 32]>,
    /// Persistent keepalive interval in seconds.
    keepalive: Option<u16>,
    /// When the next persistent keepalive is due; `None`: at the next timer tick.
    keepalive_due: Option<Instant>,
    /// The first timer tick has run (it starts the handshake of keepalive peers).
    started: bool,
    /// A packet was queued awaiting a handshake that has not completed yet.
    traffic_waiting: bool,
    /// The last timer tick reported an expired connection (log the transition once).
    expired: bool,
    counters: Arc<PeerCounters>,
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
        // Configuration files are strict: a key, name or prefix listed twice is a mistake
        // (live updates instead move a prefix to the peer named last, as `wg` does).
        let mut keys = HashSet::new();
        let mut names = HashSet::new();
        let mut owners: HashMap<IpNetwork, String> = HashMap::new();
        for pc in &cfg.peers {
            let label = pc.name.clone().unwrap_or_else(|| key_label(&pc.public_key));
            if pc.public_key == public_key {
                return Err(WgError::OwnKeyAsPeer(label));
            }
            if !keys.insert(pc.public_key.to_bytes()) {
                return Err(WgError::DuplicatePeer(key_label(&pc.public_key)));
            }
            if let Some(name) = &pc.name
                && !names.insert(name.clone())
            {
                return Err(WgError::DuplicateName(name.clone()));
            }
            for net in &pc.allowed_ips {
                if let Some(first) = owners.insert(*net, label.clone()) {
                    return Err(WgError::DuplicateAllowedIp {
                        network: *net,
                        first,
                        second: label,
                    });
                }
            }
        }
        let mut device = Device {
            rate_limiter: Arc::new(RateLimiter::new(&public_key, cfg.handshake_rate_limit)),
            handshake_rate_limit: cfg.handshake_rate_limit,
            private_key: cfg.private_key,
            public_key,
            peers: HashMap::with_capacity(cfg.peers.len()),
            by_key: HashMap::with_capacity(cfg.peers.len()),
            routes: RouteTable::default(),
            counters: Arc::new(Counters::new()),
            scratch: vec![0u8; SCRATCH_LEN].into_boxed_slice(),
            next_id: 0,
            idle_session_timeout: None,
            outputs: Outputs::default(),
            shard: Shard::ALL,
            limiter_next: None,
            sessions_published: 0,
            handled: 0,
        };
        let update = DeviceUpdate {
            peers: cfg.peers.iter().map(PeerUpdate::from_config).collect(),
            ..DeviceUpdate::default()
        };
        device.apply(update)?;
        Ok(device)
    }

    /// Processes one UDP datagram received from `src`: answers handshakes, delivers
    /// authenticated and cryptokey-routed IP packets, follows roaming peers.
    pub fn handle_datagram(&mut self, src: SocketAddr, datagram: &[u8]) {
        let Device {
            private_key,
            public_key,
            peers,
            by_key,
            rate_limiter,
            counters,
            scratch,
            outputs: out,
            shard,
            ..
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
                    .map(|idx| (Kind::Init, idx))
            }
            Ok(Packet::HandshakeResponse(p)) => {
                by_receiver(peers, p.receiver_idx, src, counters).map(|idx| (Kind::Response, idx))
            }
            Ok(Packet::PacketCookieReply(p)) => {
                by_receiver(peers, p.receiver_idx, src, counters).map(|idx| (Kind::Cookie, idx))
            }
            Ok(Packet::PacketData(p)) => {
                by_receiver(peers, p.receiver_idx, src, counters).map(|idx| (Kind::Data, idx))
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
        let Some((kind, index)) = found else { return };
        if !shard.owns(index) {
            let bytes = out.buffer(datagram);
            out.forward(
                shard.owner(index),
                Forwarded::datagram(src, kind, index, bytes),
            );
            return;
        }
        self.process_datagram(src, kind, index, datagram);
    }

    /// The owner's half of [`Device::handle_datagram`]: `index` names a current peer this
    /// device owns, and `kind` is what the (already checked) datagram is.
    fn process_datagram(&mut self, src: SocketAddr, kind: Kind, index: u32, datagram: &[u8]) {
        self.handled += 1;
        let Device {
            private_key,
            peers,
            routes,
            rate_limiter,
            counters,
            scratch,
            outputs: out,
            ..
        } = self;
        let Some(peer) = peers.get_mut(&index) else {
            // A replica's peer removed by a change applied after the primary forwarded.
            bump(&counters.device.unknown_index);
            return;
        };
        let pc = Arc::clone(&peer.counters);
        let keys = Keys {
            private_key,
            rate_limiter,
        };
        // An initiation creates the session; anything else needs the one it belongs to.
        let new_session = kind == Kind::Init && !peer.session.is_live();
        let tunn = if kind == Kind::Init {
            let key = pc.public_key();
            peer.session
                .get_or_create(&keys, key, peer.preshared_key, index)
        } else if let Some(tunn) = peer.session.tunn() {
            tunn
        } else {
            bump(&pc.drop_no_session);
            tracing::debug!(peer = %peer.label, %src, ?kind, "dropped datagram for a session dropped as idle");
            if kind == Kind::Data {
                probe(peer, &keys, index, src, scratch, out);
            }
            return;
        };

        let mut authenticated = false;
        let mut flush = false;
        match tunn.decapsulate(Some(src.ip()), datagram, scratch) {
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
                transmit(out, &pc, src, reply);
                if matches!(kind, Kind::Init | Kind::Response) {
                    bump(&pc.handshakes);
                    peer.session.handshake_completed();
                    peer.traffic_waiting = false;
                    peer.expired = false;
                    tracing::debug!(peer = %peer.label, %src, ?kind, "handshake completed");
                }
            }
            TunnResult::WriteToTunnelV4(packet, inner) => {
                authenticated = true;
                deliver(out, routes, index, peer, &pc, IpAddr::V4(inner), packet);
            }
            TunnResult::WriteToTunnelV6(packet, inner) => {
                authenticated = true;
                deliver(out, routes, index, peer, &pc, IpAddr::V6(inner), packet);
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
                if kind == Kind::Data
                    && matches!(
                        e,
                        WireGuardError::NoCurrentSession | WireGuardError::WrongIndex
                    )
                {
                    probe(peer, &keys, index, src, scratch, out);
                }
            }
        }

        if new_session && !authenticated {
            // Not a handshake after all: no session is kept for it.
            peer.session.reset();
        }
        if authenticated {
            add(&pc.rx_bytes, datagram.len());
            // A new session has not seen the peer's last initiation timestamp, so this one may
            // be a replay: the endpoint is learnt from the data that follows (the initiator
            // sends a keepalive at once), which only the key's owner can produce.
            if !new_session && peer.endpoint != Some(src) {
                tracing::debug!(peer = %peer.label, from = ?peer.endpoint, to = %src, "peer endpoint changed");
                peer.endpoint = Some(src);
                pc.set_endpoint(Some(src));
            }
        }
        if flush && let Some(tunn) = peer.session.tunn() {
            // Packets queued while the handshake was in progress go out now.
            for _ in 0..MAX_DRAIN {
                match tunn.decapsulate(None, &[], scratch) {
                    TunnResult::WriteToNetwork(d) => transmit(out, &pc, src, d),
                    _ => break,
                }
            }
        }
    }

    /// Encrypts one IP packet from the netstack and sends it to the peer whose allowed IPs
    /// longest-match its destination. Without a route or an endpoint it is dropped and counted.
    /// Without a session it is queued (up to 256 per peer, boringtun's limit) and a handshake
    /// starts.
    pub fn send_ip_packet(&mut self, packet: &[u8]) {
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
        // Every route names a current peer (the update code keeps them in step).
        let Some(&index) = self.routes.lookup(dst) else {
            bump(&dc.no_route);
            tracing::debug!(%dst, "dropped outgoing packet: no peer's allowed IPs contain it");
            return;
        };
        if !self.shard.owns(index) {
            let item = Forwarded::packet(index, self.outputs.buffer(packet));
            self.outputs.forward(self.shard.owner(index), item);
            return;
        }
        self.encapsulate_for(index, packet);
    }

    /// The owner's half of [`Device::send_ip_packet`]: encrypts `packet` for the peer at
    /// `index` (routed already).
    fn encapsulate_for(&mut self, index: u32, packet: &[u8]) {
        self.handled += 1;
        let Device {
            private_key,
            peers,
            rate_limiter,
            counters,
            scratch,
            outputs,
            ..
        } = self;
        let Some(peer) = peers.get_mut(&index) else {
            // A replica's peer removed by a change applied after the primary forwarded.
            bump(&counters.device.no_route);
            return;
        };
        let pc = &peer.counters;
        let Some(endpoint) = peer.endpoint else {
            bump(&pc.drop_no_endpoint);
            tracing::debug!(peer = %peer.label, "dropped outgoing packet: peer has no endpoint yet");
            return;
        };
        let keys = Keys {
            private_key,
            rate_limiter,
        };
        let tunn = peer
            .session
            .get_or_create(&keys, pc.public_key(), peer.preshared_key, index);
        match tunn.encapsulate(packet, scratch) {
            TunnResult::WriteToNetwork(d) => {
                if d.first() == Some(&MSG_INIT) {
                    peer.traffic_waiting = true;
                }
                transmit(outputs, pc, endpoint, d);
            }
            // Queued behind a handshake already in progress.
            TunnResult::Done => peer.traffic_waiting = true,
            other => {
                tracing::debug!(peer = %peer.label, result = ?other, "encapsulate failed");
            }
        }
    }

    /// Runs every peer's timers: handshake retries, rekeys, keepalives. Call every 250 ms with
    /// the monotonic time `now` (persistent keepalives) and the wall-clock time `wall` (only
    /// used to publish [`super::PeerStats::last_handshake`]).
    ///
    /// Peers with a persistent keepalive and an endpoint are handshaken with on the first tick,
    /// and re-initiated whenever their connection expires (a NAT'd agent must dial itself);
    /// so are peers that had traffic queued when the connection expired.
    pub fn update_timers(&mut self, now: Instant, wall: SystemTime) {
        let Device {
            private_key,
            rate_limiter,
            peers,
            counters,
            scratch,
            outputs: out,
            idle_session_timeout,
            shard,
            sessions_published,
            ..
        } = self;
        let keys = Keys {
            private_key,
            rate_limiter,
        };
        let mut live = 0;
        // A sharded device runs the timers of its own peers only.
        for (&index, peer) in peers.iter_mut().filter(|(i, _)| shard.owns(**i)) {
            let pc = Arc::clone(&peer.counters);
            let pc = &*pc;
            if !peer.started {
                peer.started = true;
                if let (Some(secs), Some(ep)) = (peer.keepalive, peer.endpoint)
                    && let TunnResult::WriteToNetwork(d) = peer
                        .session
                        .get_or_create(&keys, pc.public_key(), peer.preshared_key, index)
                        .format_handshake_initiation(scratch, false)
                {
                    tracing::debug!(peer = %peer.label, endpoint = %ep, "initiating handshake");
                    transmit(out, pc, ep, d);
                    peer.keepalive_due = Some(now + Duration::from_secs(secs.into()));
                    live += 1;
                    continue;
                }
            }
            // A handshake started towards an unconfirmed address retries there.
            let handshake_to = peer.session.probe().or(peer.endpoint);
            let Some(tunn) = peer.session.tunn() else {
                // No session: only a persistent keepalive (which creates one) or nothing.
                persistent_keepalive(peer, &keys, index, now, scratch, out);
                live += usize::from(peer.session.is_live());
                continue;
            };
            match tunn.update_timers(scratch) {
                TunnResult::Done => {}
                TunnResult::WriteToNetwork(d) => match handshake_to {
                    Some(ep) => transmit(out, pc, ep, d),
                    None => bump(&pc.drop_no_endpoint),
                },
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    if !peer.expired {
                        peer.expired = true;
                        tracing::debug!(peer = %peer.label, "connection expired");
                    }
                    let wanted = peer.keepalive.is_some() || peer.traffic_waiting;
                    if let (true, Some(ep)) = (wanted, peer.endpoint)
                        && let TunnResult::WriteToNetwork(d) =
                            tunn.format_handshake_initiation(scratch, false)
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
            if let Some(at) = tunn
                .time_since_last_handshake()
                .and_then(|age| wall.checked_sub(age))
            {
                pc.set_last_handshake(at);
            }
            persistent_keepalive(peer, &keys, index, now, scratch, out);
            let policy = IdlePolicy {
                timeout: *idle_session_timeout,
                pinned: peer.keepalive.is_some() || peer.traffic_waiting,
            };
            let packets =
                pc.rx_packets.load(Ordering::Relaxed) + pc.tx_packets.load(Ordering::Relaxed);
            if peer.session.tick(now, packets, policy) {
                bump(&counters.device.sessions_dropped_idle);
                tracing::debug!(peer = %peer.label, "session dropped: idle");
            }
            live += usize::from(peer.session.is_live());
        }
        // Shards share the count: each adds what changed since its last tick.
        counters.device.adjust_sessions(*sessions_published, live);
        *sessions_published = live;
    }

    /// Drops a peer's session (its boringtun `Tunn`, ~11 KB) after this long without data;
    /// `None` (the default) keeps sessions. The next packet to the peer handshakes again.
    /// See [`super::session`].
    pub fn set_idle_session_timeout(&mut self, timeout: Option<Duration>) {
        self.idle_session_timeout = timeout.filter(|t| !t.is_zero());
    }

    /// The next result of the calls so far, oldest first; `None` when all were taken. Drain
    /// it after every call (the queue only stays small that way).
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.queue.pop_front()
    }

    /// Hands an output's buffer back once its bytes were used, so that the next output reuses
    /// it instead of allocating (optional: a dropped buffer is merely freed).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.outputs.recycle(buf);
    }

    /// Buffers kept for reuse (tests check the bound).
    #[cfg(test)]
    pub(crate) fn free_buffers(&self) -> usize {
        self.outputs.free.len()
    }

    /// Resets the shared handshake rate limiter's count. Call about once a second.
    pub fn reset_rate_limiter(&mut self) {
        self.rate_limiter.reset_count();
    }

    /// The live counters and peer view, readable from any task.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Our static public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Our static private key (for the UAPI `get`, which shows it to the socket's owner).
    pub fn private_key(&self) -> &StaticSecret {
        &self.private_key
    }

    /// Number of current peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The peer with this name.
    pub fn peer_by_name(&self, name: &str) -> Option<PeerId> {
        self.peers
            .values()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.id)
    }

    /// The peer with this public key.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key
            .get(key.as_bytes())
            .and_then(|index| self.peers.get(index))
            .map(|p| p.id)
    }

    /// The peer an outgoing packet to `addr` would be sent to (longest-prefix match).
    pub fn route(&self, addr: IpAddr) -> Option<PeerId> {
        self.routes
            .lookup(addr)
            .and_then(|index| self.peers.get(index))
            .map(|p| p.id)
    }

    /// The peer's current endpoint (configured, or learned by roaming). `None` for an unknown
    /// id. A scan: for diagnostics and tests, not the data path.
    pub fn peer_endpoint(&self, id: PeerId) -> Option<SocketAddr> {
        self.peer(id).and_then(|p| p.endpoint)
    }

    /// The peer's current allowed IPs (empty for an unknown id). A scan, like `peer_endpoint`.
    pub fn peer_allowed_ips(&self, id: PeerId) -> &[IpNetwork] {
        self.peer(id).map_or(&[], |p| &p.allowed_ips)
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.values().find(|p| p.id == id)
    }
}

/// Sends a persistent keepalive when one is due. Without a session this starts a handshake
/// (the empty packet waits in the session queue), which is how a NAT'd agent keeps dialling.
fn persistent_keepalive(
    peer: &mut Peer,
    keys: &Keys<'_>,
    index: u32,
    now: Instant,
    scratch: &mut [u8],
    out: &mut Outputs,
) {
    let Some(secs) = peer.keepalive else { return };
    let due = *peer.keepalive_due.get_or_insert(now);
    if now < due {
        return;
    }
    peer.keepalive_due = Some(now + Duration::from_secs(secs.into()));
    let Some(ep) = peer.endpoint else {
        bump(&peer.counters.drop_no_endpoint);
        return;
    };
    let key = peer.counters.public_key();
    let tunn = peer
        .session
        .get_or_create(keys, key, peer.preshared_key, index);
    if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&[], scratch) {
        tracing::trace!(peer = %peer.label, "persistent keepalive");
        transmit(out, &peer.counters, ep, d);
    }
}

/// A peer sent data we hold no session for, from `src`. If we could not reach it there (no
/// endpoint: a restarted node never learnt it; another one: it roamed while its session was
/// dropped), start a handshake to `src`: its authenticated answer moves the endpoint, nothing
/// before it does. At most one handshake is in progress per peer (retries go to `src` too), so
/// a forged datagram costs one initiation per handshake attempt at most.
fn probe(
    peer: &mut Peer,
    keys: &Keys<'_>,
    index: u32,
    src: SocketAddr,
    scratch: &mut [u8],
    out: &mut Outputs,
) {
    if peer.endpoint == Some(src) {
        return;
    }
    let key = peer.counters.public_key();
    let tunn = peer
        .session
        .get_or_create(keys, key, peer.preshared_key, index);
    if let TunnResult::WriteToNetwork(d) = tunn.format_handshake_initiation(scratch, false) {
        tracing::debug!(peer = %peer.label, %src, endpoint = ?peer.endpoint, "peer without a session talks from elsewhere: initiating a handshake there");
        peer.session.set_probe(src);
        transmit(out, &peer.counters, src, d);
    }
}

/// Finds the configured peer that sent a handshake initiation (costs one X25519).
fn identify_initiator(
    private_key: &StaticSecret,
    public_key: &PublicKey,
    by_key: &HashMap<[u8; 32], u32>,
    init: &HandshakeInit<'_>,
    src: SocketAddr,
    counters: &Counters,
) -> Option<u32> {
    let found = parse_handshake_anon(private_key, public_key, init)
        .map_err(
            |e| tracing::debug!(%src, error = ?e, "dropped undecryptable handshake initiation"),
        )
        .ok()
        .and_then(|half| {
            let index = by_key.get(&half.peer_static_public).copied();
            if index.is_none() {
                let key = key_label(&PublicKey::from(half.peer_static_public));
                tracing::debug!(%src, %key, "dropped handshake initiation from unknown key");
            }
            index
        });
    if found.is_none() {
        bump(&counters.device.unknown_peer);
    }
    found
}

/// Finds the peer a response, cookie reply or data message is addressed to.
fn by_receiver(
    peers: &HashMap<u32, Peer>,
    receiver_idx: u32,
    src: SocketAddr,
    counters: &Counters,
) -> Option<u32> {
    let index = receiver_idx >> 8;
    if peers.contains_key(&index) {
        return Some(index);
    }
    bump(&counters.device.unknown_index);
    tracing::debug!(%src, receiver_idx, "dropped message for unknown receiver index");
    None
}

/// Delivers a decrypted packet if cryptokey routing agrees that `inner_src` belongs to the
/// sending peer (global longest-prefix match, so overlapping prefixes cannot be spoofed).
fn deliver(
    out: &mut Outputs,
    routes: &RouteTable<u32>,
    index: u32,
    peer: &Peer,
    pc: &PeerCounters,
    inner_src: IpAddr,
    packet: &[u8],
) {
    match routes.lookup(inner_src) {
        Some(&owner) if owner == index => {
            bump(&pc.rx_packets);
            out.deliver(peer.id, packet);
        }
        owner => {
            bump(&pc.drop_allowed_ips);
            tracing::debug!(peer = %peer.label, %inner_src, ?owner, "dropped packet: source not in the peer's allowed IPs");
        }
    }
}

/// Sends one datagram to a peer and counts it.
fn transmit(out: &mut Outputs, pc: &PeerCounters, to: SocketAddr, datagram: &[u8]) {
    add(&pc.tx_bytes, datagram.len());
    if datagram.first() == Some(&MSG_DATA) && datagram.len() > DATA_OVERHEAD {
        bump(&pc.tx_packets);
    }
    out.send_datagram(to, datagram);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Device>();
    }
}
