//! What both long-lived roles (the agent and the control daemon) do with a node and its
//! configuration file: serve the WireGuard UAPI socket, and turn a re-read file into a live
//! update.
//!
//! The reload rule for peers: every `[[peer]]` in the new file is set exactly as written (its
//! endpoint only if the file's endpoint changed or the peer is not live, so a roamed or restored
//! endpoint survives); peers that were in the previous file and are not in the new one are
//! removed; peers added live through the UAPI that no file ever listed are kept, unless
//! `[interface] replace_peers_on_reload = true`, which makes the live peer set exactly the file's.
//! The private key and `listen_port` follow the file too.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::Node;
use crate::config::{Config, Interface};
use crate::wg::uapi::server::{self as uapi, BindError, UapiListener};
use crate::wg::{DeviceUpdate, PeerConfig, PeerUpdate, PublicKey};

/// The UAPI socket path the interface asks for (`None`: `uapi = false`); `default_name` is the
/// role's interface name when the file sets none.
pub fn uapi_path(interface: &Interface, default_name: &str) -> Option<PathBuf> {
    if !interface.uapi {
        return None;
    }
    Some(
        interface
            .uapi_socket
            .clone()
            .unwrap_or_else(|| uapi::default_path(interface.name_or(default_name))),
    )
}

/// Creates the UAPI socket the interface asks for. A directory the node cannot write (it does
/// not run as root) is logged once and means "no socket"; a path another live node serves is
/// an error naming it. Call before starting the node, so a second node fails before it binds
/// its UDP port.
pub fn bind_uapi(
    interface: &Interface,
    default_name: &str,
) -> Result<Option<UapiListener>, BindError> {
    let Some(path) = uapi_path(interface, default_name) else {
        return Ok(None);
    };
    let name = interface.name_or(default_name);
    match uapi::bind(&path) {
        Ok(listener) => {
            tracing::info!(path = %listener.path().display(), "WireGuard UAPI socket ready (`wg show {name}`)");
            Ok(Some(listener))
        }
        Err(BindError::DirUnavailable { dir, source }) => {
            tracing::warn!(
                dir = %dir.display(),
                "cannot create the WireGuard UAPI socket ({source}); running without it: \
                 `wg show {name}` will not see this node (run as root, or set [interface] \
                 uapi_socket to a writable path)"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Node {
    /// The update that takes this node from the peers of `old` (the file in force) to those of
    /// `new` (the file re-read), by the rule in the module docs. Apply it with
    /// [`Node::update`]: all of it or nothing.
    pub fn file_update(&self, old: &Config, new: &Config) -> DeviceUpdate {
        let live_peers = self.peers();
        let live: HashSet<[u8; 32]> = live_peers.iter().map(|p| p.public_key.to_bytes()).collect();
        let old_endpoints: HashMap<[u8; 32], Option<SocketAddr>> = old
            .peers
            .iter()
            .map(|p| (p.public_key.to_bytes(), p.endpoint))
            .collect();
        let in_new: HashSet<[u8; 32]> = new.peers.iter().map(|p| p.public_key.to_bytes()).collect();
        // Removals first, so that a prefix or name moving to another peer is free again.
        let gone: Vec<PublicKey> = if new.interface.replace_peers_on_reload {
            live_peers.iter().map(|p| p.public_key).collect()
        } else {
            old.peers.iter().map(|p| p.public_key).collect()
        };
        let mut peers: Vec<PeerUpdate> = gone
            .into_iter()
            .filter(|k| !in_new.contains(k.as_bytes()))
            .map(PeerUpdate::remove)
            .collect();
        for p in &new.peers {
            let key = p.public_key.to_bytes();
            let mut section = PeerUpdate::from_config(&PeerConfig::from(p));
            if live.contains(&key) && old_endpoints.get(&key) == Some(&p.endpoint) {
                // Keep what roaming learned (or what the daemon restored).
                section.endpoint = None;
            }
            peers.push(section);
        }
        DeviceUpdate {
            private_key: Some(new.interface.private_key.clone()),
            listen_port: (new.interface.listen_port != old.interface.listen_port)
                .then_some(new.interface.listen_port),
            peers,
            ..DeviceUpdate::default()
        }
    }
}
