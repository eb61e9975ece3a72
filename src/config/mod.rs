//! TOML configuration → typed values, for both roles (agent and control peer).
//!
//! Three layers:
//! - `raw`: serde structs that mirror the file (one per section, unknown keys refused), whose
//!   fields are typed by what each key takes (`leaf`: kinds, ranges, syntax, the duration
//!   grammar). `load` runs them through `serde_path_to_error`, so every error found while
//!   reading a value names its key path (`interface.mtu`, `peer[2].allowed_ips[0]`) without a
//!   key name being spelled twice.
//! - `validate`: raw → the public types below: defaults, relative paths, key files, endpoint
//!   resolution, and the checks between values (peers against each other, limits against
//!   ceilings), whose errors name their path the same way.
//! - the public types ([`Config`] and one per section), which the agent, the control daemon and
//!   the CLI use.
//!
//! Every error names the file, the key path and the problem; non-fatal findings go to
//! [`Config::warnings`]. It leaves to its caller: printing the warnings, picking the section
//! that matters for its role (the agent reads [`Api`], a control peer reads [`Control`]; the
//! other one is parsed, checked and ignored), and retrying endpoint host names that did not
//! resolve at load ([`Config::pending_endpoints`]; resolved names are not looked up again).
//!
//! Adding a key: a field in its section's raw struct (`raw.rs`), typed by a leaf that checks
//! the value on its own (`leaf/`; `Int` with a public range constant, `Secs`/`Positive` for
//! durations, or a new leaf); the public field with its doc and default (`api.rs`,
//! `interface.rs`, `sections.rs`, …); one line in `validate/` (default, and any check that
//! involves another key); the example file documents it; a test.

mod api;
mod error;
mod interface;
mod leaf;
mod load;
mod names;
mod peer;
mod raw;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

use std::net::IpAddr;

pub use api::Api;
pub use error::ConfigError;
pub use interface::Interface;
pub use peer::Peer;
pub use sections::{Control, Files, Log, LogFormat, Metrics};

/// Durations in the configuration use the one grammar of [`crate::duration`] (`"90"`, `"1.5s"`,
/// `"500ms"`, `"5m"`, `"1h30m"`), as the CLI and the tools do.
pub use crate::duration::{DurationError, parse as parse_duration};

use crate::keys::{self, PublicKey, StaticSecret};

/// A whole configuration file, typed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[interface]`: this node's identity and tunnel addresses.
    pub interface: Interface,
    /// `[api]`: the process API (agent role); defaults when the section is absent.
    pub api: Api,
    /// `[[peer]]` blocks in file order.
    pub peers: Vec<Peer>,
    /// `[control]`: client timeouts (control role); defaults when the section is absent.
    pub control: Control,
    /// `[files]`: bounds of the workspace file API (agent role); defaults when absent.
    pub files: Files,
    /// `[log]`: what the node logs; defaults when the section is absent.
    pub log: Log,
    /// `[metrics]`: the opt-in host listener for Prometheus; off when the section is absent.
    pub metrics: Metrics,
    /// `[audit]`: the audit log of who did what (agent role); `None` without the section.
    pub audit: Option<crate::trust::AuditConfig>,
    /// Non-fatal findings (loose key permissions, no peers), one sentence each, to be logged.
    pub warnings: Vec<String>,
    /// Peers whose `endpoint` host name did not resolve at load (their `endpoint` is `None`
    /// for now): the node's owner retries them in the background
    /// (`crate::node::resolve_later`), as `wg` does, instead of refusing the file.
    pub pending_endpoints: Vec<PendingEndpoint>,
}

/// An endpoint host name to resolve later (see [`Config::pending_endpoints`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEndpoint {
    /// The peer it belongs to.
    pub public_key: PublicKey,
    /// The peer's name or key prefix, for logs.
    pub label: String,
    /// The host name as written in `endpoint`.
    pub host: String,
    /// The endpoint's UDP port.
    pub port: u16,
}

impl Config {
    /// A configuration built in code (the agent as a library): these keys and addresses, every
    /// other value at its default, no peers. Fields are public; set what you need.
    pub fn new(private_key: StaticSecret, addresses: Vec<IpAddr>) -> Config {
        let public_key = keys::public_key(&private_key);
        Config {
            interface: Interface {
                private_key,
                public_key,
                addresses,
                listen_port: Interface::DEFAULT_LISTEN_PORT,
                mtu: Interface::DEFAULT_MTU,
                tcp_buffer: Interface::DEFAULT_TCP_BUFFER,
                private_key_path: None,
                max_connections_per_peer: Interface::DEFAULT_MAX_CONNECTIONS_PER_PEER,
                tcp_memory: Interface::DEFAULT_TCP_MEMORY,
                max_connections: Interface::DEFAULT_MAX_CONNECTIONS,
                handshake_rate_limit: None,
                idle_session_timeout: None,
                threads: Interface::default_threads(),
                name: None,
                uapi: true,
                uapi_socket: None,
                replace_peers_on_reload: false,
            },
            api: Api::default(),
            peers: Vec::new(),
            control: Control::default(),
            files: Files::default(),
            log: Log::default(),
            metrics: Metrics::default(),
            audit: None,
            warnings: Vec::new(),
            pending_endpoints: Vec::new(),
        }
    }

    /// The peer whose `name` is `name`.
    pub fn peer_by_name(&self, name: &str) -> Option<&Peer> {
        self.peers
            .iter()
            .find(|peer| peer.name.as_deref() == Some(name))
    }
}
