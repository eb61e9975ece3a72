//! `[interface]`: this node's identity, tunnel addresses and the netstack's limits. The ranges
//! are the netstack's own constants, so the config refuses exactly what the netstack would.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::keys::{self, PublicKey, StaticSecret};
use crate::netstack;

/// `[interface]`. `private_key[_file]` and `address` are required; the rest have defaults
/// (the `DEFAULT_*` constants).
#[derive(Clone)]
pub struct Interface {
    /// From `private_key_file` (path, relative to the config file) or `private_key` (base64).
    pub private_key: StaticSecret,
    /// Derived from `private_key`.
    pub public_key: PublicKey,
    /// `address`: this node's tunnel addresses (at least one, no duplicates).
    pub addresses: Vec<IpAddr>,
    /// `listen_port`: the WireGuard UDP port; 0 lets the OS pick one.
    pub listen_port: u16,
    /// `mtu`: tunnel MTU (inner IP packet size).
    pub mtu: u16,
    /// `tcp_buffer`: bytes of send and of receive buffer per tunnel TCP connection.
    pub tcp_buffer: usize,
    /// The file the private key was read from (`private_key_file`, resolved, or the
    /// `--private-key-file` given to [`Config::load_with_key`]); `None` for an inline key. A
    /// config watcher watches it too, so a rotated key file is picked up.
    pub private_key_path: Option<PathBuf>,
    /// `max_connections_per_peer`: tunnel TCP connections one WireGuard peer may hold at once
    /// (further connection attempts are refused with RST and counted).
    pub max_connections_per_peer: usize,
    /// `tcp_memory`: budget in bytes for the committed socket buffer memory of all tunnel TCP
    /// connections; new connections are refused while it is spent.
    pub tcp_memory: usize,
    /// `max_connections`: tunnel TCP connections (sockets) of the node in all, ours and
    /// inbound; beyond it connects fail and inbound connections are refused.
    pub max_connections: usize,
    /// `handshake_rate_limit`: WireGuard handshake messages verified per second before the node
    /// answers with cookie replies (the DoS defence of the protocol). `None` = the role's
    /// default: [`Interface::DEFAULT_HANDSHAKE_RATE_LIMIT`] for an agent,
    /// [`Interface::DEFAULT_CONTROL_HANDSHAKE_RATE_LIMIT`] for the control daemon.
    pub handshake_rate_limit: Option<u64>,
    /// `idle_session_timeout`: drop a peer's WireGuard session (~11 KB of keys) after this
    /// long without data (keepalives do not count); its endpoint, counters and last-handshake
    /// time are kept, and the next packet to it handshakes again (one extra round trip).
    /// `Some(ZERO)` = never. `None` = the role's default: never for an agent,
    /// [`Interface::DEFAULT_CONTROL_IDLE_SESSION_TIMEOUT`] for the control daemon.
    pub idle_session_timeout: Option<Duration>,
    /// `threads`: data-path threads. 1 = one task moves every packet (the most CPU-efficient,
    /// bounded by one core); 2 = under bulk traffic WireGuard crypto and the socket run on one
    /// task and the TCP/IP stack on another, so that one stream uses two cores; 3 or more = the
    /// same, with peers sharded over `threads - 1` crypto tasks (one peer's stream stays on one
    /// task; many peers' crypto spreads over cores) (`node::Layout`). Default
    /// [`Interface::default_threads`]. Needs a restart.
    pub threads: usize,
    // -- live peers: the WireGuard UAPI socket and reloads --
    /// `name`: the interface name `wg` knows this node by (`wg show <name>`); the UAPI socket
    /// is `/var/run/wireguard/<name>.sock` unless `uapi_socket` says otherwise. `None` = the
    /// role's default: [`Interface::DEFAULT_NAME`] for an agent, `wgcontrol0` for the control
    /// daemon (so the two can share a machine).
    pub name: Option<String>,
    /// `uapi`: serve the WireGuard UAPI socket (`wg show`/`wg set`). Default true.
    pub uapi: bool,
    /// `uapi_socket`: the socket path (relative to the config file); `None` = the default path
    /// for `name`.
    pub uapi_socket: Option<PathBuf>,
    /// `replace_peers_on_reload`: on reload (SIGHUP), also remove peers that were added live
    /// (through the UAPI) and are not in the file. Default false: they are kept.
    pub replace_peers_on_reload: bool,
}

impl Interface {
    /// Default `listen_port`: 0, any free port (right for NAT'd agents that only dial out; set a
    /// fixed port on nodes that others must reach).
    pub const DEFAULT_LISTEN_PORT: u16 = 0;
    /// Default `mtu`: 1280, the IPv6 minimum, which fits inside almost every path.
    pub const DEFAULT_MTU: u16 = netstack::DEFAULT_MTU as u16;
    /// Allowed `mtu` values: [`netstack::MTU_RANGE`], 1280 (the IPv6 minimum; the userspace
    /// TCP/IP stack does not fragment) to 9000.
    pub const MTU_RANGE: (u16, u16) = (
        *netstack::MTU_RANGE.start() as u16,
        *netstack::MTU_RANGE.end() as u16,
    );
    /// Default `tcp_buffer`: 512 KiB, enough for a few Gbit/s at loopback round-trip times.
    pub const DEFAULT_TCP_BUFFER: usize = netstack::DEFAULT_TCP_BUFFER;
    /// Allowed `tcp_buffer` values: [`netstack::TCP_BUFFER_RANGE`], 64 KiB ..= 64 MiB (memory
    /// per connection is bounded).
    pub const TCP_BUFFER_RANGE: (usize, usize) = (
        *netstack::TCP_BUFFER_RANGE.start(),
        *netstack::TCP_BUFFER_RANGE.end(),
    );
    /// Default `max_connections_per_peer`: 64, far above what one control replica uses (its
    /// SDK pools a few keep-alive connections), far below the 1,024-socket table.
    pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = netstack::DEFAULT_MAX_CONNECTIONS_PER_PEER;
    /// Allowed `max_connections_per_peer` values.
    pub const MAX_CONNECTIONS_PER_PEER_RANGE: (usize, usize) = (1, 1024);
    /// Default `tcp_memory`: 64 MiB. Idle and request/response connections commit a few KiB
    /// each; a bulk transfer commits up to `2 * tcp_buffer`.
    pub const DEFAULT_TCP_MEMORY: usize = netstack::DEFAULT_MEMORY_BUDGET;
    /// Allowed `tcp_memory` values: 1 MiB ..= 64 GiB.
    pub const TCP_MEMORY_RANGE: (usize, usize) = (1 << 20, 64 << 30);
    /// Default `max_connections`: 1,024 sockets.
    pub const DEFAULT_MAX_CONNECTIONS: usize = netstack::DEFAULT_MAX_SOCKETS;
    /// Allowed `max_connections` values.
    pub const MAX_CONNECTIONS_RANGE: (usize, usize) = (16, 65_536);
    /// Default `handshake_rate_limit` of an agent: 200 counted passes per second (each
    /// handshake message is counted twice, so ~100 messages/s): an agent has a few peers.
    pub const DEFAULT_HANDSHAKE_RATE_LIMIT: u64 = crate::wg::DEFAULT_HANDSHAKE_RATE_LIMIT;
    /// Default `handshake_rate_limit` of the control daemon: 4,000 (~2,000 handshake
    /// messages/s, ~40 % of one core here), so that 10,000 agents re-handshake within seconds
    /// after a daemon restart instead of queueing behind cookie replies (BENCHMARKS.md §5.4).
    pub const DEFAULT_CONTROL_HANDSHAKE_RATE_LIMIT: u64 = 4_000;
    /// Allowed `handshake_rate_limit` values.
    pub const HANDSHAKE_RATE_LIMIT_RANGE: (u64, u64) = (10, 1_000_000);
    /// Default `idle_session_timeout` of the control daemon: 2 minutes. A fleet is mostly
    /// idle, and a session costs ~11 KB per peer (BENCHMARKS.md §5.1); an agent in use keeps
    /// its session between commands, and the first request after two quiet minutes pays one
    /// handshake round trip. An agent keeps its few sessions (default: never dropped).
    pub const DEFAULT_CONTROL_IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(120);
    /// Allowed `threads` values. Above 2, peers are sharded over `threads - 1` crypto tasks.
    pub const THREADS_RANGE: (usize, usize) = (1, 64);
    /// Default `threads` cap: more cores than this are left to the processes.
    pub const MAX_DEFAULT_THREADS: usize = 8;

    /// Default `threads`: the number of cores this process may use, at most
    /// [`Interface::MAX_DEFAULT_THREADS`] (1 on a one-core machine: the single task).
    pub fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(Self::MAX_DEFAULT_THREADS)
    }

    /// Default `name` of an agent: `wgagent0` (so `wg show wgagent0`).
    pub const DEFAULT_NAME: &'static str = "wgagent0";
    /// Default `name` of the control daemon.
    pub const DEFAULT_CONTROL_NAME: &'static str = "wgcontrol0";

    /// The interface name, or `default` (the role's) when the file sets none.
    pub fn name_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.name.as_deref().unwrap_or(default)
    }
}

impl fmt::Debug for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interface")
            .field("private_key", &"<redacted>")
            .field("public_key", &keys::encode_public(&self.public_key))
            .field("addresses", &self.addresses)
            .field("listen_port", &self.listen_port)
            .field("mtu", &self.mtu)
            .field("tcp_buffer", &self.tcp_buffer)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field("tcp_memory", &self.tcp_memory)
            .field("max_connections", &self.max_connections)
            .field("handshake_rate_limit", &self.handshake_rate_limit)
            .field("idle_session_timeout", &self.idle_session_timeout)
            .field("threads", &self.threads)
            .field("name", &self.name)
            .field("uapi", &self.uapi)
            .field("uapi_socket", &self.uapi_socket)
            .field("replace_peers_on_reload", &self.replace_peers_on_reload)
            .finish()
    }
}
