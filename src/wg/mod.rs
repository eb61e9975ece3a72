//! Multi-peer WireGuard on boringtun's `noise` core.
//!
//! This module owns:
//! - [`Device`]: a sans-IO peer table. It finds the peer for every incoming datagram
//!   (handshake initiations by static key after the shared rate limiter, everything else by
//!   receiver index), decrypts with that peer's boringtun `Tunn`, enforces **cryptokey routing**
//!   (an inner source address is accepted only if a longest-prefix match over *all* peers'
//!   allowed IPs names the sending peer), follows roaming peers, routes outgoing IP packets by
//!   destination, drives per-peer timers and keeps [`Counters`]. Peers change live through
//!   [`Device::apply`] with a [`DeviceUpdate`] (all or nothing, between two packets).
//! - [`uapi`]: the cross-platform WireGuard configuration protocol (`wg show`/`wg set`): the
//!   sans-IO parser and serializer, and the Unix-socket server.
//! - [`udp`]: binding the one UDP socket all peers share, and address normalisation helpers.
//! - [`gso`]: UDP GSO sends and GRO receives over that socket (what the driver uses).
//!
//! It leaves to its caller (the data-path driver in `node::driver`): taking every call's
//! [`Output`]s with [`Device::poll_output`], reading and writing the socket,
//! rebinding it when an update changes the port or mark, aborting TCP connections of removed
//! peers, calling [`Device::update_timers`] every 250 ms and [`Device::reset_rate_limiter`] every
//! second, normalising v4-mapped source addresses with [`udp::normalize_addr`] before handing
//! them in, filtering delivered packets by destination (only our tunnel addresses), and the
//! netstack. Keys come from `boringtun::x25519` only; never a direct `x25519-dalek` 3 dependency.
//!
//! Exception to the sans-IO rule: boringtun reads the monotonic clock itself inside `Tunn`.

mod counters;
mod device;
/// UDP GSO/GRO batching of the WireGuard socket.
pub mod gso;
mod index;
mod routing;
mod session;
/// The WireGuard configuration protocol (`wg show`/`wg set`) and its Unix socket.
pub mod uapi;
/// Binding the shared UDP socket; dual-stack address helpers.
pub mod udp;

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod shard_tests;

use std::net::SocketAddr;

pub use boringtun::x25519::{PublicKey, StaticSecret};
pub use counters::{Counters, DeviceStats, PeerStats, Stats};
pub use device::{Device, Forwarded, Replication, Shard};
pub use index::receiver_index;
pub use ip_network::IpNetwork;

/// One configured peer.
#[derive(Clone)]
pub struct PeerConfig {
    /// Optional human name (unique), usable instead of an address; also used in logs.
    pub name: Option<String>,
    /// The peer's static public key (unique, and not our own).
    pub public_key: PublicKey,
    /// Optional pre-shared key; all zeroes means none, as in `wg`.
    pub preshared_key: Option<[u8; 32]>,
    /// Inner addresses this peer may use as source, and the destinations routed to it.
    /// A prefix may belong to one peer only.
    pub allowed_ips: Vec<IpNetwork>,
    /// Where to send until the peer roams; `None` for peers that dial in (NAT'd agents).
    pub endpoint: Option<SocketAddr>,
    /// Seconds between keepalives; set it towards peers that must reach us through a NAT.
    /// A peer with both this and an endpoint is handshaken with on the first timer tick and
    /// re-initiated whenever its session expires.
    pub persistent_keepalive: Option<u16>,
}

impl std::fmt::Debug for PeerConfig {
    // Hand-written so that the pre-shared key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("public_key", &key_label(&self.public_key))
            .field("preshared_key", &self.preshared_key.map(|_| "<redacted>"))
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .finish()
    }
}

/// Default limit of the shared handshake rate limiter, per second. Each handshake message
/// passes the limiter twice (our pre-check, then again inside `Tunn::decapsulate`), so this
/// admits about 100 handshake messages a second before cookies are required (boringtun's device
/// uses 100 with a single pass): right for an agent with a few peers.
pub const DEFAULT_HANDSHAKE_RATE_LIMIT: u64 = 200;

/// Everything [`Device::new`] needs.
pub struct DeviceConfig {
    /// Our static private key.
    pub private_key: StaticSecret,
    /// The peers; their order is the order of [`Stats::peers`].
    pub peers: Vec<PeerConfig>,
    /// Counted handshake passes per second before the device answers with cookie replies
    /// ([`DEFAULT_HANDSHAKE_RATE_LIMIT`]; a control daemon serving thousands of agents needs
    /// more, or a restart makes them queue behind cookies).
    pub handshake_rate_limit: u64,
}

/// A change to a running device, applied by [`Device::apply`] all at once or not at all.
///
/// The semantics are the WireGuard UAPI `set` operation's (wireguard.com/xplatform), which is
/// where most updates come from: peer sections are applied in order; a prefix given to one peer
/// is taken from any other peer that held it; unchanged values change nothing (an update that
/// repeats a peer's settings keeps its session).
#[derive(Clone, Default)]
pub struct DeviceUpdate {
    /// A new static private key: every session is dropped and re-established with it. The same
    /// key as now changes nothing. A peer that has the new public key is removed.
    pub private_key: Option<StaticSecret>,
    /// A new UDP port (0 = any free port). Not the device's business: the driver rebinds.
    pub listen_port: Option<u16>,
    /// A new `SO_MARK` for the UDP socket (0 = none). Applied by the driver, like the port.
    pub fwmark: Option<u32>,
    /// Remove every peer before applying `peers`.
    pub replace_peers: bool,
    /// Peer sections, in order.
    pub peers: Vec<PeerUpdate>,
}

/// One peer section of a [`DeviceUpdate`]. Fields left `None` keep their current value (or
/// the default for a new peer).
#[derive(Clone)]
pub struct PeerUpdate {
    /// Selects the peer (created unless `update_only`).
    pub public_key: PublicKey,
    /// Remove the peer: its session ends and its allowed IPs route nowhere. Other fields are
    /// ignored.
    pub remove: bool,
    /// Only change an existing peer; skip the section if there is none.
    pub update_only: bool,
    /// `Some(name)` sets the name (configuration files only; the UAPI has no names).
    pub name: Option<Option<String>>,
    /// Pre-shared key; all zeroes means none. Changing it starts a new session (boringtun
    /// cannot change the key of a live one).
    pub preshared_key: Option<[u8; 32]>,
    /// Where to send to the peer until it roams.
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive interval in seconds; 0 turns it off. Session kept.
    pub persistent_keepalive: Option<u16>,
    /// Allowed-IP changes, in order. Session kept.
    pub allowed_ips: Vec<AllowedIpChange>,
}

/// One allowed-IP change of a [`PeerUpdate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowedIpChange {
    /// Forget every allowed IP of the peer (UAPI `replace_allowed_ips=true`).
    ReplaceAll,
    /// Add a prefix, taking it from whichever peer holds it (UAPI `allowed_ip=`).
    Add(IpNetwork),
    /// Remove a prefix from the peer if it holds it (UAPI `allowed_ip=-`).
    Remove(IpNetwork),
}

impl PeerUpdate {
    /// A section that selects `public_key` and changes nothing yet.
    pub fn new(public_key: PublicKey) -> Self {
        PeerUpdate {
            public_key,
            remove: false,
            update_only: false,
            name: None,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
        }
    }

    /// A section that removes `public_key`.
    pub fn remove(public_key: PublicKey) -> Self {
        PeerUpdate {
            remove: true,
            ..PeerUpdate::new(public_key)
        }
    }

    /// A section that makes the peer exactly `config` (its endpoint only when one is given, so
    /// a roamed endpoint survives when the configuration names none).
    pub fn from_config(config: &PeerConfig) -> Self {
        let mut allowed_ips = vec![AllowedIpChange::ReplaceAll];
        allowed_ips.extend(config.allowed_ips.iter().copied().map(AllowedIpChange::Add));
        PeerUpdate {
            name: Some(config.name.clone()),
            preshared_key: Some(config.preshared_key.unwrap_or([0; 32])),
            endpoint: config.endpoint,
            persistent_keepalive: Some(config.persistent_keepalive.unwrap_or(0)),
            allowed_ips,
            ..PeerUpdate::new(config.public_key)
        }
    }
}

impl std::fmt::Debug for PeerUpdate {
    // Hand-written so that the pre-shared key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerUpdate")
            .field("public_key", &key_label(&self.public_key))
            .field("remove", &self.remove)
            .field("update_only", &self.update_only)
            .field("name", &self.name)
            .field("preshared_key", &self.preshared_key.map(|_| "<redacted>"))
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("allowed_ips", &self.allowed_ips)
            .finish()
    }
}

impl std::fmt::Debug for DeviceUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceUpdate")
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("listen_port", &self.listen_port)
            .field("fwmark", &self.fwmark)
            .field("replace_peers", &self.replace_peers)
            .field("peers", &self.peers)
            .finish()
    }
}

/// What [`Device::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Peers created.
    pub added: Vec<PublicKey>,
    /// Existing peers whose settings changed (including peers that lost a prefix to another).
    pub updated: Vec<PublicKey>,
    /// Peers removed.
    pub removed: Vec<PublicKey>,
    /// The private key changed: every session was dropped.
    pub key_changed: bool,
}

impl Applied {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.updated.is_empty()
            && self.removed.is_empty()
            && !self.key_changed
    }
}

/// Who a tunnel address belongs to: the peer whose allowed IPs longest-match it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's configured name, if it has one.
    pub name: Option<String>,
    /// The peer's WireGuard public key.
    pub public_key: PublicKey,
}

/// One result of a [`Device`] call, owned by the caller (taken with [`Device::poll_output`]).
pub enum Output {
    /// Send this UDP datagram to `to`. Errors are the caller's to count and log; WireGuard
    /// tolerates loss.
    Transmit {
        /// Where to send it: the peer's endpoint, or the source of the datagram being answered.
        to: SocketAddr,
        /// The UDP payload: a WireGuard message.
        datagram: Vec<u8>,
    },
    /// Hand this authenticated, cryptokey-routed IP packet from `peer` to the netstack.
    Deliver {
        /// The peer it came from (its inner source address is in this peer's allowed IPs).
        peer: PeerId,
        /// The decrypted IP packet.
        packet: Vec<u8>,
    },
    /// Sharded devices ([`Device::into_shards`]) only: this datagram or IP packet belongs to a
    /// peer another shard owns; hand it to that shard's device with
    /// [`Device::handle_forwarded`] (in order: a peer's packets keep their order).
    Forward {
        /// The owning shard (`Shard::index` of its device).
        shard: usize,
        /// The work, classified already (a forwarded initiation is not decrypted twice here).
        item: Forwarded,
    },
}

impl std::fmt::Debug for Output {
    // Lengths only: packet bytes make unreadable logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Transmit { to, datagram } => f
                .debug_struct("Transmit")
                .field("to", to)
                .field("len", &datagram.len())
                .finish(),
            Output::Deliver { peer, packet } => f
                .debug_struct("Deliver")
                .field("peer", peer)
                .field("len", &packet.len())
                .finish(),
            Output::Forward { shard, item } => f
                .debug_struct("Forward")
                .field("shard", shard)
                .field("len", &item.len())
                .finish(),
        }
    }
}

/// A peer's identity inside one device: assigned when the peer is added and never reused,
/// so it stays valid while other peers come and go (a peer removed and added again gets a new
/// one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// Configuration errors from [`Device::new`]. None of them goes away on retry: fix the config.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    /// Two peers share one public key.
    #[error("peer public key {0} is listed more than once")]
    DuplicatePeer(String),
    /// A peer has the device's own public key.
    #[error("peer {0} has this node's own public key")]
    OwnKeyAsPeer(String),
    /// Two peers share one name.
    #[error("peer name {0:?} is used more than once")]
    DuplicateName(String),
    /// The same prefix is listed twice (for one peer or two); routing would be ambiguous.
    #[error("allowed IP {network} is listed for both {first} and {second}")]
    DuplicateAllowedIp {
        /// The prefix listed twice.
        network: IpNetwork,
        /// The peer (name or key) it was listed for first.
        first: String,
        /// The peer (name or key) that lists it again (the same peer for a repeat within one).
        second: String,
    },
    /// More peers than the 24-bit receiver-index space can address (at start or after an
    /// update; an update that would exceed it changes nothing).
    #[error("{0} peers configured; at most {max} are supported", max = device::MAX_PEERS)]
    TooManyPeers(usize),
    /// The OS random source failed while choosing peer indices; a retry may help.
    #[error("random source failed: {0}")]
    Random(getrandom::Error),
}

/// A short, log-safe label for a public key: the first 8 characters of its base64 form.
pub(crate) fn key_label(key: &PublicKey) -> String {
    use base64::Engine as _;
    let mut s = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
    s.truncate(8);
    s.push('…');
    s
}
