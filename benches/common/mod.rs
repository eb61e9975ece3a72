//! Helpers shared by the benches: addresses, peers and in-process nodes on loopback UDP.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use wgagent::netstack;
use wgagent::node::{Node, NodeConfig};
use wgagent::wg::{IpNetwork, PeerConfig, PublicKey, StaticSecret};

/// `s` as an address (panics on a typo in the bench).
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A peer with these allowed IPs (`"100.64.0.10/32"`) and optional endpoint; nothing else set.
pub fn peer(key: PublicKey, allowed: &str, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        name: None,
        public_key: key,
        preshared_key: None,
        allowed_ips: vec![allowed.parse::<IpNetwork>().unwrap()],
        endpoint,
        persistent_keepalive: None,
    }
}

/// A node on an ephemeral loopback UDP port with the netstack's default MTU and TCP buffer.
pub async fn node(secret: StaticSecret, addr: &str, peers: Vec<PeerConfig>) -> Node {
    Node::start(NodeConfig {
        private_key: secret,
        addresses: vec![ip(addr)],
        listen_port: 0,
        mtu: netstack::DEFAULT_MTU,
        tcp_buffer: netstack::DEFAULT_TCP_BUFFER,
        connect_timeout: Duration::from_secs(10),
        limits: Default::default(),
        peers,
    })
    .await
    .unwrap()
}
