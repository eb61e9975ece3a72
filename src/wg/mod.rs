//! Multi-peer WireGuard on boringtun's `noise` core.
//!
//! This module owns:
//! - [`Device`]: a sans-IO peer table. It finds the peer for every incoming datagram
//!   (handshake initiations by static key after the shared rate limiter, everything else by
//!   receiver index), decrypts with that peer's boringtun `Tunn`, enforces **cryptokey routing**
//!   (an inner source address is accepted only if a longest-prefix match over *all* peers'
//!   allowed IPs names the sending peer), follows roaming peers, routes outgoing IP packets by
//!   destination, drives per-peer timers and keeps [`Counters`].
//! - [`udp`]: binding the one UDP socket all peers share, and address normalisation helpers.
//! - [`gso`]: UDP GSO sends and GRO receives over that socket (what the driver uses).
//!
//! It leaves to its caller (the data-path task in `node`): reading and writing the socket,
//! calling [`Device::update_timers`] every 250 ms and [`Device::reset_rate_limiter`] every
//! second, normalising v4-mapped source addresses with [`udp::normalize_addr`] before handing
//! them in, filtering delivered packets by destination (only our tunnel addresses), and the
//! netstack. Keys come from `boringtun::x25519` only; never a direct `x25519-dalek` 3 dependency.
//!
//! Exception to the sans-IO rule: boringtun reads the monotonic clock itself inside `Tunn`.

mod counters;
mod device;
pub mod gso;
mod routing;
pub mod udp;

#[cfg(test)]
mod device_tests;

use std::net::SocketAddr;

pub use boringtun::x25519::{PublicKey, StaticSecret};
pub use counters::{Counters, DeviceStats, PeerStats, Stats};
pub use device::Device;
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

/// Everything [`Device::new`] needs.
pub struct DeviceConfig {
    /// Our static private key.
    pub private_key: StaticSecret,
    /// The peers; their order defines [`PeerId`]s and the order of [`Stats::peers`].
    pub peers: Vec<PeerConfig>,
}

/// Where a [`Device`] puts its results; implemented by the driver (and by test harnesses).
///
/// Calls happen synchronously inside `Device` methods; the slices are only valid for the call.
pub trait Output {
    /// Send one UDP datagram. Errors are the implementor's to count and log; WireGuard
    /// tolerates loss.
    fn send_datagram(&mut self, to: SocketAddr, datagram: &[u8]);
    /// Hand one authenticated, cryptokey-routed IP packet from `peer` to the netstack.
    fn deliver(&mut self, peer: PeerId, ip_packet: &[u8]);
}

/// Index of a peer in [`DeviceConfig::peers`] (and in [`Stats::peers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

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
        network: IpNetwork,
        first: String,
        second: String,
    },
    /// More peers than the 24-bit receiver-index space can address.
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
