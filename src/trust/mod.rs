//! Trust boundaries: who is calling (the WireGuard peer whose session carried the request),
//! what that peer may do (`[[peer]] allow`, `run_as`, `users`), whether peers see each other's
//! processes (`[api] isolation`), and the audit log of who did what ([`audit`]).
//!
//! Owns: the permission vocabulary ([`Permission`], [`Permissions`]), a peer's access rules
//! ([`Access`]), the live policy table keyed by public key ([`Policy`]), the caller identity
//! ([`Caller`]) and the shared handle the API holds ([`Trust`]).
//! Leaves to `api::trust` the HTTP side (which route needs which permission, 403/404 bodies,
//! writing audit lines around handlers) and to `agent` building the policy from the
//! configuration and replacing it on reload.

pub mod audit;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::keys;
use crate::wg::{PeerIdentity, PublicKey};

pub use audit::{AuditConfig, AuditLog};

/// One thing a peer may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Start processes, feed their stdin, resize their terminal, delete their records.
    Run,
    /// List processes, read output and logs, health; read and list files.
    Read,
    /// Signal processes.
    Signal,
    /// Write and edit files.
    Files,
    /// Read the Prometheus metrics.
    Metrics,
}

impl Permission {
    /// Every permission, in the order they are listed and printed.
    pub const ALL: [Permission; 5] = [
        Self::Run,
        Self::Read,
        Self::Signal,
        Self::Files,
        Self::Metrics,
    ];

    /// The name used in `[[peer]] allow`, 403 bodies and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Read => "read",
            Self::Signal => "signal",
            Self::Files => "files",
            Self::Metrics => "metrics",
        }
    }

    /// The permission named `s` ([`Self::as_str`]'s spelling, lower case only); `None` for
    /// anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// Every permission (what a peer without `allow` has).
    pub fn all() -> Self {
        Self::ALL_SET
    }

    const ALL_SET: Permissions = Permissions(0b1_1111);

    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Adds `p` (a no-op when it is already in).
    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    /// The permissions in the set, in [`Permission::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut out = Permissions::default();
        for p in iter {
            out.insert(p);
        }
        out
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What one peer may do (`[[peer]] allow`, `run_as`, `users`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// `allow`: `None` (the key is absent) means every permission, as before permissions
    /// existed; `Some` lists exactly what the peer may do.
    pub allow: Option<Permissions>,
    /// `run_as`: the user this peer's commands and file operations run as by default (the
    /// agent must be root). `None`: the agent's own user.
    pub run_as: Option<String>,
    /// `users`: users a start request of this peer may name in `"user"` (besides `run_as`).
    pub users: Vec<String>,
}

impl Access {
    /// Whether the peer may do `p`: always when `allow` is absent.
    pub fn allows(&self, p: Permission) -> bool {
        self.allow.is_none_or(|a| a.contains(p))
    }

    /// True when a start request of this peer may ask for `user`.
    pub fn may_run_as(&self, user: &str) -> bool {
        self.run_as.as_deref() == Some(user) || self.users.iter().any(|u| u == user)
    }
}

/// `[api] isolation`: whether a peer sees the processes other peers started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Every peer sees every process (the default).
    #[default]
    None,
    /// A peer sees and acts on only the processes it started; other ids answer 404.
    Peer,
}

impl Isolation {
    /// The mode named by the config value (`"none"` or `"peer"`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "peer" => Some(Self::Peer),
            _ => None,
        }
    }

    /// The config spelling ([`Self::parse`]'s inverse).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Peer => "peer",
        }
    }
}

/// The rules in force: access per peer public key, isolation. Replaced as a whole on reload.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The configured peers' access, by raw public key. Peers absent here have full access.
    pub peers: HashMap<[u8; 32], Access>,
    /// Whether peers see each other's processes.
    pub isolation: Isolation,
}

impl Policy {
    /// The access of the peer with `key`; a peer the policy does not list (added live over the
    /// UAPI socket, or an agent without configured peers) has full access and no `run_as`.
    pub fn access(&self, key: &PublicKey) -> Access {
        self.peers.get(key.as_bytes()).cloned().unwrap_or_default()
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A WireGuard peer (the one whose session carried the connection), with its rules.
    Peer {
        /// The peer's key and configured name.
        identity: PeerIdentity,
        /// The connection's source: the peer's tunnel address and port.
        addr: SocketAddr,
        /// The peer's rules, as they were when the request was identified.
        access: Access,
    },
    /// The router was called without a tunnel behind it (in-process use, tests, the plain-TCP
    /// baseline bench): there is no peer, and nothing to restrict.
    Local {
        /// The connection's source, when the transport reports one (a plain TCP socket).
        addr: Option<SocketAddr>,
    },
}

impl Caller {
    /// The name used in messages and records: the peer's name, else the start of its key.
    pub fn label(&self) -> String {
        match self {
            Self::Peer { identity, .. } => peer_label(identity),
            Self::Local { .. } => "local".to_owned(),
        }
    }

    /// Whether the caller may do `p`; a local caller may do everything.
    pub fn allows(&self, p: Permission) -> bool {
        match self {
            Self::Peer { access, .. } => access.allows(p),
            Self::Local { .. } => true,
        }
    }

    /// The peer's public key, base64; `None` for a local caller.
    pub fn public_key(&self) -> Option<String> {
        match self {
            Self::Peer { identity, .. } => Some(keys::encode_public(&identity.public_key)),
            Self::Local { .. } => None,
        }
    }

    /// The connection's source address, when known.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Peer { addr, .. } => Some(*addr),
            Self::Local { addr } => *addr,
        }
    }

    /// The peer's rules; `None` for a local caller, who has no restrictions.
    pub fn access(&self) -> Option<&Access> {
        match self {
            Self::Peer { access, .. } => Some(access),
            Self::Local { .. } => None,
        }
    }

    /// The record of a process this caller starts.
    pub fn started_by(&self) -> Option<crate::proc::StartedBy> {
        match self {
            Self::Peer { identity, .. } => Some(crate::proc::StartedBy {
                peer: peer_label(identity),
                public_key: keys::encode_public(&identity.public_key),
            }),
            Self::Local { .. } => None,
        }
    }
}

fn peer_label(identity: &PeerIdentity) -> String {
    match &identity.name {
        Some(name) => name.clone(),
        None => keys::encode_public(&identity.public_key)[..8].to_owned(),
    }
}

/// Finds the peer behind a connection: by the WireGuard peer id the connection arrived with
/// when the transport knows it, else by the caller's tunnel address (cryptokey routing already
/// guarantees that only that peer's session can carry packets from it).
pub trait Identify: Send + Sync {
    /// The peer for a connection from `addr` that arrived through peer `peer_id` (when the
    /// transport knows it); `None` when no current peer matches.
    fn identify(&self, addr: IpAddr, peer_id: Option<u64>) -> Option<PeerIdentity>;
}

impl Identify for crate::node::Node {
    fn identify(&self, addr: IpAddr, peer_id: Option<u64>) -> Option<PeerIdentity> {
        match peer_id {
            // The peer whose session carried the connection's packets.
            Some(id) => self.peer_by_id(crate::wg::PeerId(id)),
            None => self.peer_for_address(addr),
        }
    }
}

/// The trust state the API holds. Cheap to clone.
#[derive(Clone, Default)]
pub struct Trust {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// `None`: the router is not behind a tunnel; every caller is [`Caller::Local`].
    identify: Option<Arc<dyn Identify>>,
    policy: RwLock<Arc<Policy>>,
    audit: Option<Arc<AuditLog>>,
}

/// Why a connection has no caller identity behind a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unidentified {
    /// The connection's source address, for the log line.
    pub addr: SocketAddr,
}

impl Trust {
    /// `identify`: `None` when the router is not behind a tunnel (every caller is then
    /// [`Caller::Local`]); `audit`: the opened log, `None` when `[audit]` is not configured.
    pub fn new(
        identify: Option<Arc<dyn Identify>>,
        policy: Policy,
        audit: Option<AuditLog>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                identify,
                policy: RwLock::new(Arc::new(policy)),
                audit: audit.map(Arc::new),
            }),
        }
    }

    /// The caller of a connection from `addr` (`None`: no connection info) carried by the
    /// WireGuard peer `peer_id` when known. A tunnel connection whose peer is gone (removed
    /// while the connection was open) has no identity: refused.
    pub fn caller(
        &self,
        addr: Option<SocketAddr>,
        peer_id: Option<u64>,
    ) -> Result<Caller, Unidentified> {
        let (Some(identify), Some(addr)) = (&self.inner.identify, addr) else {
            return Ok(Caller::Local { addr });
        };
        let Some(identity) = identify.identify(addr.ip(), peer_id) else {
            return Err(Unidentified { addr });
        };
        let access = self.inner.policy.read().access(&identity.public_key);
        Ok(Caller::Peer {
            identity,
            addr,
            access,
        })
    }

    /// The rules in force now (a snapshot: a later reload does not change it).
    pub fn policy(&self) -> Arc<Policy> {
        self.inner.policy.read().clone()
    }

    /// Replaces the rules in force (config reload); requests already past their check finish
    /// under the old rules.
    pub fn set_policy(&self, policy: Policy) {
        *self.inner.policy.write() = Arc::new(policy);
    }

    /// The isolation mode in force now.
    pub fn isolation(&self) -> Isolation {
        self.inner.policy.read().isolation
    }

    /// The audit log; `None` when auditing is off.
    pub fn audit_log(&self) -> Option<Arc<AuditLog>> {
        self.inner.audit.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse_and_sets() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("write"), None);
        let set: Permissions = [Permission::Read, Permission::Signal].into_iter().collect();
        assert!(set.contains(Permission::Read) && !set.contains(Permission::Run));
        assert_eq!(format!("{set:?}"), "[Read, Signal]");
        assert_eq!(Permissions::all().iter().count(), 5);
    }

    #[test]
    fn absent_allow_is_full_access_and_users_need_listing() {
        let full = Access::default();
        assert!(Permission::ALL.into_iter().all(|p| full.allows(p)));
        assert!(!full.may_run_as("root"));
        let some = Access {
            allow: Some([Permission::Read].into_iter().collect()),
            run_as: Some("ci".into()),
            users: vec!["build".into()],
        };
        assert!(some.allows(Permission::Read) && !some.allows(Permission::Run));
        assert!(some.may_run_as("ci") && some.may_run_as("build") && !some.may_run_as("root"));
        let none = Access {
            allow: Some(Permissions::default()),
            ..Access::default()
        };
        assert!(Permission::ALL.into_iter().all(|p| !none.allows(p)));
    }
}
