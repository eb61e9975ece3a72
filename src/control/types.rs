//! Wire types of the control daemon's own routes (`/v0/status`, `/v0/agents/{agent}`), shared by
//! the daemon and [`crate::client::DaemonConnector`].

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// `GET /v0/agents/{agent}`: which agent a name or address means to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The peer's name in the daemon's config, if it has one.
    pub name: Option<String>,
    /// The peer's public key (base64).
    pub public_key: String,
    /// The agent's API address (tunnel address and API port).
    pub api: SocketAddr,
    /// Where the daemon sends the agent's packets: configured, or learned from the agent.
    pub endpoint: Option<SocketAddr>,
    /// Unix time (seconds) of the current session's handshake; `None` if there is none.
    pub latest_handshake_unix: Option<u64>,
}

/// `GET /v0/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The daemon's WireGuard public key (base64).
    pub public_key: String,
    /// The daemon's tunnel addresses.
    pub addresses: Vec<IpAddr>,
    /// The WireGuard UDP port (agents behind NAT dial it).
    pub listen_port: u16,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// The control socket.
    pub socket: String,
    /// Every configured peer, in config order.
    pub peers: Vec<PeerStatus>,
    /// What the socket served.
    pub requests: RequestCounters,
    /// The WireGuard node's counters.
    pub node: NodeCounters,
}

/// One WireGuard peer as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's `name` in the config, if any.
    pub name: Option<String>,
    /// The peer's public key (base64).
    pub public_key: String,
    /// The peer's allowed IPs (CIDR).
    pub allowed_ips: Vec<String>,
    /// The API address when the peer has a single tunnel address (an agent).
    pub api: Option<SocketAddr>,
    /// Current endpoint: configured, or learned from the peer's latest authenticated packet.
    pub endpoint: Option<SocketAddr>,
    /// Unix time of the latest completed handshake, if any.
    pub latest_handshake_unix: Option<u64>,
    /// Seconds since `latest_handshake_unix`.
    pub handshake_age_seconds: Option<u64>,
    /// Completed handshakes since start.
    pub handshakes: u64,
    /// Bytes received from the peer (WireGuard datagrams).
    pub rx_bytes: u64,
    /// Bytes sent to the peer (WireGuard datagrams).
    pub tx_bytes: u64,
    /// Datagrams received from the peer.
    pub rx_packets: u64,
    /// Datagrams sent to the peer.
    pub tx_packets: u64,
    /// Packets dropped for this peer, all reasons together (no endpoint, failed decryption,
    /// replays, allowed-IPs violations, malformed, rate-limited).
    pub dropped: u64,
}

/// What the daemon's socket has served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounters {
    /// Local connections open now.
    pub connections_open: u64,
    /// The limit (`[control] max_connections`).
    pub connections_max: u64,
    /// Local connections accepted since start.
    pub connections_total: u64,
    /// Requests received on the socket.
    pub requests: u64,
    /// Requests forwarded to an agent that answered (any status).
    pub forwarded: u64,
    /// Requests naming no known agent (404).
    pub unknown_agent: u64,
    /// Requests whose agent could not be reached (502/504; nothing was sent to it).
    pub unreachable: u64,
    /// Requests whose tunnel connection failed after the request was sent (502).
    pub broken: u64,
    /// Agents with a pool of tunnel connections now.
    pub pooled_agents: u64,
}

/// The daemon's WireGuard node, all peers together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
    /// UDP datagrams received.
    pub datagrams_in: u64,
    /// UDP datagrams sent.
    pub datagrams_out: u64,
    /// UDP sends that failed.
    pub send_errors: u64,
    /// Handshake initiations from keys that are not peers.
    pub unknown_peer: u64,
    /// Handshake messages answered with a cookie (the rate limiter was under load).
    pub rate_limited: u64,
    /// Tunnel TCP connections refused for lack of sockets.
    pub sockets_refused: u64,
}
