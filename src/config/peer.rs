//! `[[peer]]`: who this node talks to, and what each peer may do on an agent.

use std::fmt;
use std::net::SocketAddr;

use ip_network::IpNetwork;

use crate::keys::{self, PublicKey};

/// One `[[peer]]`. `public_key` and `allowed_ips` are required; everything else is optional.
#[derive(Clone, PartialEq, Eq)]
pub struct Peer {
    /// `name`: unique, usable in the CLI instead of an address. Default: none.
    pub name: Option<String>,
    /// `public_key`: the peer's static key (never our own).
    pub public_key: PublicKey,
    /// `preshared_key`: optional extra symmetric key (base64). Default: none.
    pub preshared_key: Option<[u8; keys::KEY_LEN]>,
    /// `allowed_ips`: inner source addresses accepted from this peer and destinations routed
    /// to it (longest prefix wins between peers). Bare addresses mean /32 or /128.
    pub allowed_ips: Vec<IpNetwork>,
    /// `endpoint`: `host:port` or `[v6]:port`, resolved at load. Default: none (the peer
    /// dials us; we reply to its latest authenticated address).
    pub endpoint: Option<SocketAddr>,
    /// `persistent_keepalive` in seconds; 0 or absent = off (`None`).
    pub persistent_keepalive: Option<u16>,
    /// `allow`, `run_as`, `users`: what this peer may do on an agent (absent `allow` = all).
    pub access: crate::trust::Access,
}

impl Peer {
    /// The name if set, else the first 8 characters of the base64 public key (for logs).
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => keys::encode_public(&self.public_key)[..8].to_owned(),
        }
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("public_key", &keys::encode_public(&self.public_key))
            .field("preshared_key", &self.preshared_key.map(|_| "<redacted>"))
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("access", &self.access)
            .finish()
    }
}
