//! The settings of a netstack ([`NetstackConfig`], the node-level [`Limits`]), their defaults and
//! allowed ranges (the one source `config` checks a file's `[interface]` keys against), and the
//! [`PeerTag`] packets and connections carry.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::error::NetstackError;

/// Default IP MTU of the tunnel: 1280, the IPv6 minimum, which fits inside almost every path.
pub const DEFAULT_MTU: usize = 1280;
/// Allowed MTUs. The floor is the IPv6 minimum (smoltcp does not fragment TCP, and smaller
/// tunnels are not worth supporting); the ceiling is a jumbo frame: every packet buffer of the
/// two queues is MTU-sized, so it bounds their memory.
pub const MTU_RANGE: RangeInclusive<usize> = 1280..=9000;
/// Default TCP buffer: 512 KiB each way, enough for a few Gbit/s at loopback round-trip times.
pub const DEFAULT_TCP_BUFFER: usize = 512 * 1024;
/// Allowed TCP buffer sizes: below 64 KiB there is no window scaling; 64 MiB bounds the memory
/// of one connection (smoltcp itself panics above 1 GiB).
pub const TCP_BUFFER_RANGE: RangeInclusive<usize> = 64 * 1024..=64 * 1024 * 1024;
/// Default socket table size: 1,024 sockets.
pub const DEFAULT_MAX_SOCKETS: usize = 1024;
/// Default inbound connections per peer: 64, far above what one control replica uses (its SDK
/// pools a few keep-alive connections), far below the socket table.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;
/// Default socket buffer memory budget: 64 MiB. Idle and request/response connections commit a
/// few KiB each; a bulk transfer commits up to `2 * tcp_buffer`.
pub const DEFAULT_MEMORY_BUDGET: usize = 64 << 20;

/// Identifies the WireGuard peer an inbound packet (and so an accepted connection) came from.
/// Opaque to the netstack: the data-path driver chooses the values (a `wg::PeerId`'s index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerTag(pub u64);

/// The admission limits a node's configuration sets (the rest of [`NetstackConfig`] comes from
/// elsewhere or keeps its default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`NetstackConfig::max_sockets`].
    pub max_connections: usize,
    /// See [`NetstackConfig::max_connections_per_peer`].
    pub max_connections_per_peer: usize,
    /// See [`NetstackConfig::memory_budget`].
    pub memory_budget: usize,
}

impl Default for Limits {
    /// 1,024 connections, 64 per peer, a 64 MiB memory budget (as [`NetstackConfig::default`]).
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_SOCKETS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

/// Settings of one netstack.
#[derive(Debug, Clone)]
pub struct NetstackConfig {
    /// Our tunnel addresses (at most two: smoltcp's `IFACE_MAX_ADDR_COUNT`). Only packets to
    /// these are accepted; outgoing connections use the first address of the remote's family.
    pub addresses: Vec<IpAddr>,
    /// IP MTU of the tunnel; the same on both ends (smoltcp does not fragment TCP).
    pub mtu: usize,
    /// Receive and send buffer of every TCP socket, in bytes. Above 64 KiB window scaling is
    /// negotiated; the send buffer bounds the bytes in flight (bandwidth × RTT).
    pub tcp_buffer: usize,
    /// Sockets of all kinds (half-open, connected, closing). Beyond it `connect` fails and
    /// listeners answer SYNs with RST; both are counted in `sockets_refused`. The last eighth is
    /// kept for peers holding fewer than a quarter of `max_connections_per_peer`.
    pub max_sockets: usize,
    /// Inbound connections (half-open, connected or closing) one peer may hold at once.
    pub max_connections_per_peer: usize,
    /// Budget for socket buffer memory (committed pages of the rings, bounded as in
    /// `memory::committed_bound`, plus a fixed cost per socket). New connections are refused
    /// while it is spent; connections already open may still grow to `2 * tcp_buffer` each.
    pub memory_budget: usize,
    /// Per listener: connections in the handshake plus those waiting for `accept`.
    pub backlog: usize,
    /// Packets each of the inbound and outbound queues holds.
    pub queue_packets: usize,
    /// Idle time after which a keep-alive probe is sent.
    pub keep_alive: Duration,
    /// A connection whose peer sends nothing for this long (while we send data or probes) is
    /// aborted.
    pub idle_timeout: Duration,
    /// `connect` gives up after this long without an answer to its SYN.
    pub connect_timeout: Duration,
    /// Seeds smoltcp's RNG (initial sequence numbers) and ephemeral port choice.
    pub seed: u64,
}

impl Default for NetstackConfig {
    /// MTU 1280 (safe on any path, the IPv6 minimum), 512 KiB TCP buffers, 1024 sockets, 64
    /// connections per peer, a 64 MiB memory budget, a backlog of 128, 256-packet queues,
    /// keep-alive 25 s, idle timeout 120 s, connect timeout 10 s, and a seed from the OS RNG.
    /// No addresses: set them.
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            mtu: DEFAULT_MTU,
            tcp_buffer: DEFAULT_TCP_BUFFER,
            max_sockets: DEFAULT_MAX_SOCKETS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            backlog: 128,
            queue_packets: 256,
            keep_alive: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            seed: os_seed(),
        }
    }
}

impl NetstackConfig {
    /// Defaults with these addresses.
    pub fn new(addresses: Vec<IpAddr>) -> Self {
        Self {
            addresses,
            ..Self::default()
        }
    }

    /// Checks the ranges ([`MTU_RANGE`], [`TCP_BUFFER_RANGE`]) and that no limit is zero.
    pub(super) fn validate(&self) -> Result<(), NetstackError> {
        let cfg = self;
        if cfg.addresses.is_empty() {
            return Err(NetstackError::NoAddresses);
        }
        if !MTU_RANGE.contains(&cfg.mtu) {
            return Err(NetstackError::InvalidMtu(cfg.mtu));
        }
        if !TCP_BUFFER_RANGE.contains(&cfg.tcp_buffer) {
            return Err(NetstackError::InvalidBuffer(cfg.tcp_buffer));
        }
        for (name, v) in [
            ("max_sockets", cfg.max_sockets),
            ("max_connections_per_peer", cfg.max_connections_per_peer),
            ("memory_budget", cfg.memory_budget),
            ("backlog", cfg.backlog),
            ("queue_packets", cfg.queue_packets),
        ] {
            if v == 0 {
                return Err(NetstackError::ZeroLimit { name });
            }
        }
        Ok(())
    }

    /// These settings with `limits` applied.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self {
            max_sockets: limits.max_connections,
            max_connections_per_peer: limits.max_connections_per_peer,
            memory_budget: limits.memory_budget,
            ..self
        }
    }
}

/// A seed from the OS RNG; the clock if that fails (smoltcp only needs it to differ per boot).
fn os_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5EED)
    })
}
