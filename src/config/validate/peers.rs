//! `[[peer]]` blocks: keys decoded (errors keep their typed [`crate::keys::KeyError`]),
//! pre-shared key files read, endpoints resolved (or left pending), and the peers checked
//! against each other and against our own key.

use std::collections::HashMap;
use std::net::SocketAddr;

use ip_network::IpNetwork;

use super::Cx;
use crate::config::names::{self, EndpointSpec};
use crate::config::raw::RawPeer;
use crate::config::{ConfigError, Peer, PendingEndpoint};
use crate::keys::{self, PublicKey};
use crate::trust::{Access, Permissions};

impl Cx<'_> {
    /// Every peer, then the checks between them: distinct keys, names and exact networks.
    pub(super) fn peers(
        &mut self,
        raw: Option<Vec<RawPeer>>,
        own: &PublicKey,
    ) -> Result<Vec<Peer>, ConfigError> {
        let raw = raw.unwrap_or_default();
        let mut peers: Vec<Peer> = Vec::with_capacity(raw.len());
        let mut key_owner: HashMap<PublicKey, usize> = HashMap::with_capacity(raw.len());
        let mut name_owner: HashMap<String, usize> = HashMap::new();
        let mut cidr_owner: HashMap<IpNetwork, String> = HashMap::new();
        for (i, raw) in raw.into_iter().enumerate() {
            let path = format!("peer[{i}]");
            let peer = self.peer(&path, raw, own)?;
            if let Some(j) = key_owner.insert(peer.public_key, i) {
                return Err(self.invalid(
                    &format!("{path}.public_key"),
                    format!("same public key as peer[{j}]"),
                ));
            }
            if let Some(name) = &peer.name
                && let Some(j) = name_owner.insert(name.clone(), i)
            {
                return Err(self.invalid(
                    &format!("{path}.name"),
                    format!("name {name:?} is already used by peer[{j}]"),
                ));
            }
            for (k, net) in peer.allowed_ips.iter().enumerate() {
                let here = format!("{path}.allowed_ips[{k}]");
                if let Some(there) = cidr_owner.get(net) {
                    return Err(self.invalid(
                        &here,
                        format!("{net} is also at {there}; each exact network belongs to one peer (overlapping networks are fine: the longest prefix wins)"),
                    ));
                }
                cidr_owner.insert(*net, here);
            }
            peers.push(peer);
        }
        Ok(peers)
    }

    /// One peer; `path` is `peer[i]`.
    fn peer(&mut self, path: &str, raw: RawPeer, own: &PublicKey) -> Result<Peer, ConfigError> {
        let name = raw.name.map(|n| n.0);
        let who = match &name {
            Some(name) => format!("{path} ({name:?})"),
            None => path.to_owned(),
        };

        let key = format!("{path}.public_key");
        let public_key =
            keys::decode_public(&raw.public_key.0).map_err(|e| self.key_error(&key, e))?;
        if public_key == *own {
            return Err(self.invalid(
                &key,
                "this is our own public key; a node is not its own peer",
            ));
        }

        let preshared_key = match (raw.preshared_key, raw.preshared_key_file) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    &format!("{path}.preshared_key"),
                    "set either `preshared_key_file` or `preshared_key`, not both",
                ));
            }
            (Some(text), None) => {
                let key = format!("{path}.preshared_key");
                Some(keys::decode_key(&text.0).map_err(|e| self.key_error(&key, e))?)
            }
            (None, Some(file)) => {
                // Like `wg`'s PresharedKey from a file (`wg genpsk > f`); read again on reload.
                let key = format!("{path}.preshared_key_file");
                let (psk, warnings) = keys::read_key_file(&self.relative(file.0))
                    .map_err(|e| self.key_error(&key, e))?;
                self.warnings
                    .extend(warnings.iter().map(ToString::to_string));
                Some(psk)
            }
        };

        let key = format!("{path}.allowed_ips");
        let allowed_ips =
            self.distinct(&key, raw.allowed_ips.0.into_iter().map(|c| c.0).collect())?;
        if allowed_ips.is_empty() {
            return Err(self.invalid(
                &key,
                format!("{who} needs at least one allowed IP (its tunnel address)"),
            ));
        }

        let endpoint = match raw.endpoint {
            None => None,
            Some(text) => {
                let label = name
                    .clone()
                    .unwrap_or_else(|| keys::encode_public(&public_key)[..8].to_owned());
                self.endpoint(
                    &format!("{path}.endpoint"),
                    &text.0,
                    &who,
                    public_key,
                    label,
                )?
            }
        };
        let keepalive = raw.persistent_keepalive.map_or(0, |v| v.0);
        let access = Access {
            allow: raw.allow.map(|list| {
                let mut set = Permissions::default();
                list.0.into_iter().for_each(|p| set.insert(p.0));
                set
            }),
            run_as: raw.run_as.map(|u| u.0),
            users: raw.users.map_or_else(Vec::new, |list| {
                let mut users: Vec<String> = Vec::with_capacity(list.0.len());
                for user in list.0 {
                    if !users.contains(&user.0) {
                        users.push(user.0);
                    }
                }
                users
            }),
        };
        Ok(Peer {
            name,
            public_key,
            preshared_key,
            allowed_ips,
            endpoint,
            persistent_keepalive: (keepalive != 0).then_some(keepalive),
            access,
        })
    }

    /// `host:port` or `[v6]:port` → the first address the host resolves to. A valid host name
    /// that does not resolve (now) is not an error: a warning, and a [`PendingEndpoint`] the
    /// node retries in the background, as `wg` does.
    fn endpoint(
        &mut self,
        key: &str,
        text: &str,
        who: &str,
        public_key: PublicKey,
        label: String,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let (host, port) = match names::split_endpoint(text, who) {
            Err(problem) => return Err(self.invalid(key, problem)),
            Ok(EndpointSpec::Address(ip, port)) => return Ok(Some(SocketAddr::new(ip, port))),
            Ok(EndpointSpec::Host(host, port)) => (host, port),
        };
        let why = match (self.resolve)(&host, port) {
            Ok(addrs) => match addrs.into_iter().next() {
                Some(addr) => return Ok(Some(addr)),
                None => format!("{host:?} for {who} resolved to no addresses"),
            },
            Err(e) => format!("cannot resolve {host:?} for {who}: {e}"),
        };
        self.warnings.push(format!(
            "{}: `{key}`: {why}; retrying in the background (the peer has no \
             endpoint until it resolves or the peer dials in)",
            self.file.display()
        ));
        self.pending_endpoints.push(PendingEndpoint {
            public_key,
            label,
            host,
            port,
        });
        Ok(None)
    }
}
