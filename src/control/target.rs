//! Which agent a name or address means: [`Agents`], built from a control config, shared by the
//! daemon and the CLI's own short-lived node.
//!
//! Owns: resolving `AGENT` (a peer name, a bare tunnel address, or `ADDR:PORT`) to the API
//! address and the peer that routes it (longest prefix, as the tunnel routes it).
//! Leaves to the caller: what to do with an unknown agent (the daemon answers 404, the CLI
//! prints the error).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::config::Config;
use crate::keys::{self, PublicKey};
use crate::wg::IpNetwork;

/// The peers of a control config as agents.
#[derive(Debug, Clone)]
pub struct Agents {
    peers: Vec<AgentPeer>,
    by_key: HashMap<[u8; 32], usize>,
    /// Names and single tunnel addresses (/32, /128), so that a daemon with 10,000 peers finds
    /// an agent without scanning them all (the longest-prefix scan is the fallback).
    by_name: HashMap<String, usize>,
    by_host: HashMap<IpAddr, usize>,
    api_port: u16,
}

#[derive(Debug, Clone)]
struct AgentPeer {
    name: Option<String>,
    public_key: PublicKey,
    allowed_ips: Vec<IpNetwork>,
    endpoint: Option<SocketAddr>,
}

/// One resolved agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What the user wrote, for messages.
    pub label: String,
    /// The API address to connect to.
    pub api: SocketAddr,
    /// The index of the peer that routes `api` (config order; also `NodeStats` order).
    pub peer: usize,
    /// That peer's name, if any.
    pub name: Option<String>,
    /// That peer's public key.
    pub public_key: PublicKey,
    /// The endpoint configured for that peer, if any.
    pub configured_endpoint: Option<SocketAddr>,
}

/// Why `AGENT` names no agent. None is fixed by retrying; fix the name or the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Neither a peer name nor an address.
    #[error(
        "unknown agent {agent:?}: not a peer name in the config ({names}) nor a tunnel address"
    )]
    Unknown {
        /// The name given.
        agent: String,
        /// The peer names the config has, comma-separated.
        names: String,
    },
    /// A peer name whose peer has no /32 or /128 to reach its API on.
    #[error(
        "peer {agent:?} has no single-address allowed_ips entry (/32 or /128); give its tunnel address instead"
    )]
    NoSingleAddress {
        /// The name given.
        agent: String,
    },
    /// An address no peer's allowed IPs contain.
    #[error("no peer in the config routes {ip} (check the peers' allowed_ips)")]
    NoRoute {
        /// The address given.
        ip: IpAddr,
    },
}

impl Agents {
    /// The agents a config names: its peers, with the `[control] api_port`.
    pub fn from_config(cfg: &Config) -> Self {
        Self::new(
            cfg.peers
                .iter()
                .map(|p| AgentPeer {
                    name: p.name.clone(),
                    public_key: p.public_key,
                    allowed_ips: p.allowed_ips.clone(),
                    endpoint: p.endpoint,
                })
                .collect(),
            cfg.control.api_port,
        )
    }

    fn new(peers: Vec<AgentPeer>, api_port: u16) -> Self {
        let mut by_key = HashMap::with_capacity(peers.len());
        let mut by_name = HashMap::new();
        let mut by_host = HashMap::new();
        for (i, p) in peers.iter().enumerate() {
            by_key.insert(p.public_key.to_bytes(), i);
            if let Some(n) = &p.name {
                by_name.insert(n.clone(), i);
            }
            for net in p.allowed_ips.iter().filter(|n| is_host(n)) {
                by_host.insert(net.network_address(), i);
            }
        }
        Self {
            peers,
            by_key,
            by_name,
            by_host,
            api_port,
        }
    }

    /// The index of the peer with this public key.
    pub fn index_of(&self, key: &PublicKey) -> Option<usize> {
        self.by_key.get(key.as_bytes()).copied()
    }

    /// `agent` is a peer name, a tunnel address (API port from `[control] api_port`), or
    /// `ADDR:PORT` (IPv6 in brackets).
    pub fn resolve(&self, agent: &str) -> Result<Target, ResolveError> {
        if let Some(&idx) = self.by_name.get(agent) {
            let host = self
                .api_ip(idx)
                .ok_or_else(|| ResolveError::NoSingleAddress {
                    agent: agent.to_owned(),
                })?;
            return Ok(self.target(agent, idx, SocketAddr::new(host, self.api_port)));
        }
        let api = if let Ok(ip) = agent.parse::<IpAddr>() {
            SocketAddr::new(ip, self.api_port)
        } else if let Ok(sa) = agent.parse::<SocketAddr>() {
            sa
        } else {
            let names: Vec<&str> = self
                .peers
                .iter()
                .filter_map(|p| p.name.as_deref())
                .collect();
            return Err(ResolveError::Unknown {
                agent: agent.to_owned(),
                names: names.join(", "),
            });
        };
        let idx = self
            .route(api.ip())
            .ok_or(ResolveError::NoRoute { ip: api.ip() })?;
        Ok(self.target(agent, idx, api))
    }

    /// The API address of peer `idx` when it has exactly one host address (/32 or /128).
    pub fn api_of(&self, idx: usize) -> Option<SocketAddr> {
        self.api_ip(idx)
            .map(|ip| SocketAddr::new(ip, self.api_port))
    }

    /// Named peers that are agents (a single tunnel address), in config order.
    pub fn named(&self) -> impl Iterator<Item = (&str, SocketAddr)> {
        self.peers.iter().enumerate().filter_map(|(i, p)| {
            let name = p.name.as_deref()?;
            Some((name, self.api_of(i)?))
        })
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No peers at all.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Peer `idx`'s allowed IPs, as text.
    pub fn allowed_ips(&self, idx: usize) -> Vec<String> {
        self.peers
            .get(idx)
            .map(|p| p.allowed_ips.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    fn api_ip(&self, idx: usize) -> Option<IpAddr> {
        self.peers[idx]
            .allowed_ips
            .iter()
            .find(|n| is_host(n))
            .map(|n| n.network_address())
    }

    /// Longest prefix among peers, as the tunnel routes it (a host entry is the longest).
    fn route(&self, ip: IpAddr) -> Option<usize> {
        if let Some(&i) = self.by_host.get(&ip) {
            return Some(i);
        }
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let len = p
                    .allowed_ips
                    .iter()
                    .filter(|n| n.contains(ip))
                    .map(|n| n.netmask())
                    .max()?;
                Some((i, len))
            })
            .max_by_key(|&(_, len)| len)
            .map(|(i, _)| i)
    }

    fn target(&self, label: &str, idx: usize, api: SocketAddr) -> Target {
        let p = &self.peers[idx];
        Target {
            label: label.to_owned(),
            api,
            peer: idx,
            name: p.name.clone(),
            public_key: p.public_key,
            configured_endpoint: p.endpoint,
        }
    }
}

/// A single-address network: /32 or /128.
fn is_host(n: &IpNetwork) -> bool {
    n.is_ipv4() && n.netmask() == 32 || !n.is_ipv4() && n.netmask() == 128
}

impl Target {
    /// The peer's public key in base64.
    pub fn key_text(&self) -> String {
        keys::encode_public(&self.public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> Agents {
        let k = |b: u8| keys::public_key(&keys::StaticSecret::from([b; 32]));
        let peer = |name: Option<&str>, nets: &[&str], b: u8| AgentPeer {
            name: name.map(str::to_owned),
            public_key: k(b),
            allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
            endpoint: None,
        };
        Agents::new(
            vec![
                peer(Some("dev"), &["100.64.0.10/32", "fd00::a/128"], 1),
                peer(Some("lan"), &["100.64.1.0/24"], 2),
                peer(None, &["100.64.1.7/32"], 3),
            ],
            4,
        )
    }

    #[test]
    fn names_addresses_and_longest_prefix() {
        let a = agents();
        let t = a.resolve("dev").unwrap();
        assert_eq!((t.api, t.peer), ("100.64.0.10:4".parse().unwrap(), 0));
        assert_eq!(
            a.resolve("fd00::a").unwrap().api,
            "[fd00::a]:4".parse().unwrap()
        );
        assert_eq!(a.resolve("[fd00::a]:8").unwrap().peer, 0);
        assert_eq!(
            a.resolve("100.64.1.7").unwrap().peer,
            2,
            "longest prefix wins"
        );
        assert_eq!(a.resolve("100.64.1.8:9").unwrap().peer, 1);
        assert!(matches!(
            a.resolve("lan"),
            Err(ResolveError::NoSingleAddress { .. })
        ));
        assert!(matches!(
            a.resolve("10.0.0.1"),
            Err(ResolveError::NoRoute { .. })
        ));
        let e = a.resolve("nosuch").unwrap_err();
        assert!(e.to_string().contains("dev, lan"), "{e}");
        let named: Vec<_> = a.named().map(|(n, _)| n).collect();
        assert_eq!(named, ["dev"]);
        assert_eq!(a.index_of(&t.public_key), Some(0));
    }
}
