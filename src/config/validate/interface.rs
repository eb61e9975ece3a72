//! `[interface]`: the private key (inline, from a file, or from `--private-key-file`) and the
//! tunnel addresses as a set.

use std::net::IpAddr;
use std::path::PathBuf;

use super::Cx;
use crate::config::leaf::Text;
use crate::config::raw::RawInterface;
use crate::config::{ConfigError, Interface};
use crate::keys::{self, StaticSecret};

impl Cx<'_> {
    /// The section and whether the private key was inline.
    pub(super) fn interface(
        &mut self,
        raw: RawInterface,
    ) -> Result<(Interface, bool), ConfigError> {
        let (private_key, inline, private_key_path) =
            self.private_key(raw.private_key_file, raw.private_key)?;
        let addresses = self.addresses(raw.address.0.into_iter().map(|a| a.0).collect())?;
        let interface = Interface {
            public_key: keys::public_key(&private_key),
            private_key,
            addresses,
            listen_port: raw
                .listen_port
                .map_or(Interface::DEFAULT_LISTEN_PORT, |v| v.0),
            mtu: raw.mtu.map_or(Interface::DEFAULT_MTU, |v| v.0),
            tcp_buffer: raw
                .tcp_buffer
                .map_or(Interface::DEFAULT_TCP_BUFFER, |v| v.0),
            private_key_path,
            max_connections_per_peer: raw
                .max_connections_per_peer
                .map_or(Interface::DEFAULT_MAX_CONNECTIONS_PER_PEER, |v| v.0),
            tcp_memory: raw
                .tcp_memory
                .map_or(Interface::DEFAULT_TCP_MEMORY, |v| v.0),
            max_connections: raw
                .max_connections
                .map_or(Interface::DEFAULT_MAX_CONNECTIONS, |v| v.0),
            handshake_rate_limit: raw.handshake_rate_limit.map(|v| v.0),
            idle_session_timeout: raw.idle_session_timeout.map(|v| v.0),
            threads: raw.threads.map_or_else(Interface::default_threads, |v| v.0),
            name: raw.name.map(|v| v.0),
            uapi: raw.uapi.is_none_or(|v| v.0),
            uapi_socket: raw.uapi_socket.map(|p| self.relative(p.0)),
            replace_peers_on_reload: raw.replace_peers_on_reload.is_some_and(|v| v.0),
        };
        Ok((interface, inline))
    }

    /// At least one address, no duplicates, at most one per family: the userspace stack holds
    /// one IPv4 and one IPv6 address.
    fn addresses(&self, addresses: Vec<IpAddr>) -> Result<Vec<IpAddr>, ConfigError> {
        let key = "interface.address";
        if addresses.is_empty() {
            return Err(self.invalid(key, "needs at least one tunnel address"));
        }
        for (i, addr) in addresses.iter().enumerate() {
            let before = &addresses[..i];
            if before.contains(addr) {
                return Err(self.invalid(&format!("{key}[{i}]"), format!("{addr} is listed twice")));
            }
            if before.iter().any(|a| a.is_ipv4() == addr.is_ipv4()) {
                return Err(self.invalid(
                    &format!("{key}[{i}]"),
                    format!("{addr}: at most one IPv4 and one IPv6 tunnel address are supported"),
                ));
            }
        }
        Ok(addresses)
    }

    /// The key from `--private-key-file`, `private_key_file` or `private_key`: the secret,
    /// whether it was inline, and the file it came from.
    fn private_key(
        &mut self,
        file: Option<Text>,
        inline: Option<Text>,
    ) -> Result<(StaticSecret, bool, Option<PathBuf>), ConfigError> {
        if let Some(path) = self.key_override {
            if file.is_some() || inline.is_some() {
                self.warnings.push(format!(
                    "{}: `interface.private_key[_file]` is ignored: the key comes from {}",
                    self.file.display(),
                    path.display()
                ));
            }
            let secret = self.read_key_file("--private-key-file", path.to_owned())?;
            return Ok((secret, false, Some(path.to_owned())));
        }
        match (file, inline) {
            (Some(_), Some(_)) => Err(self.invalid(
                "interface.private_key",
                "set either `private_key_file` or `private_key`, not both",
            )),
            (None, None) => Err(self.invalid(
                "interface",
                "no private key: set `private_key_file` (a path) or `private_key` (base64)",
            )),
            (Some(path), None) => {
                let path = self.relative(path.0.into());
                let secret = self.read_key_file("interface.private_key_file", path.clone())?;
                Ok((secret, false, Some(path)))
            }
            (None, Some(text)) => {
                let key = "interface.private_key";
                let secret = keys::decode_private(&text.0).map_err(|e| self.key_error(key, e))?;
                Ok((secret, true, None))
            }
        }
    }

    /// Reads a private key file, keeping its permission warnings.
    fn read_key_file(&mut self, key: &str, path: PathBuf) -> Result<StaticSecret, ConfigError> {
        let (secret, warnings) =
            keys::read_private_key_file(&path).map_err(|e| self.key_error(key, e))?;
        self.warnings
            .extend(warnings.iter().map(ToString::to_string));
        Ok(secret)
    }
}
