//! TOML configuration → typed values, for both roles (agent and control peer).
//!
//! This module owns reading the file, the raw layer (serde structs of `toml::Value`s that reject
//! unknown keys), converting every value into its type in one place (keys, `IpNetwork`,
//! `IpAddr`, `Duration`, resolved `SocketAddr` endpoints), cross-checks between peers, and
//! non-fatal findings ([`Config::warnings`]). Every error names the file, the key path (e.g.
//! `peer[2].allowed_ips[0]`) and the problem.
//!
//! It leaves to its caller: printing the warnings, picking the section that matters for its role
//! (the agent reads [`Api`], a control peer reads [`Control`]; the other one is parsed, checked
//! and ignored), and retrying endpoint host names that did not resolve at load
//! ([`Config::pending_endpoints`]; resolved names are not looked up again).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ip_network::{IpNetwork, IpNetworkError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Value;

use crate::keys::{self, KeyError, PublicKey, StaticSecret};
use crate::netstack;

/// A config file larger than this is refused (bounded read).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

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
    /// bounded by one core); 2 or more = under bulk traffic WireGuard crypto and the socket run
    /// on one task and the TCP/IP stack on another, so that one stream uses two cores
    /// (`node::Layout`). Default [`Interface::default_threads`]. Needs a restart.
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
    /// Allowed `threads` values. Above 2 the data path currently runs the same two tasks as 2
    /// (peers are not sharded over more crypto tasks yet).
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

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// `level`: a tracing filter (`"info"`, `"warn,wgagent::wg=debug"`). `RUST_LOG`, when set,
    /// overrides it. Applied again on reload.
    pub level: String,
    /// `format`: `"text"` (one human line per event) or `"json"` (one JSON object per line,
    /// with the span fields); `--log-format` overrides it. Read at start only.
    pub format: LogFormat,
}

/// `[metrics]` (both roles). The agent always serves `GET /metrics` on its tunnel API; this
/// section only adds a host listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// `listen`: a host TCP address (`"127.0.0.1:9586"`) that serves **only** `GET /metrics`,
    /// for a Prometheus on the host. Default: none (no host TCP socket at all). Read at start.
    pub listen: Option<SocketAddr>,
}

/// How log lines are written (`[log] format`, `--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal; no timestamp under journald, which
    /// adds its own).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, the event's fields, the spans.
    Json,
}

impl LogFormat {
    /// `"text"` or `"json"`.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

impl Default for Log {
    /// Default `level`: `info`; `format`: `text`.
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
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
}

/// `[api]` (agent role only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// `port`: TCP port of the process API on the tunnel addresses.
    pub port: u16,
    /// `allowed_sources`: if set, callers' tunnel addresses must be inside one of these, on top
    /// of WireGuard's own allowed-IPs check. `None` = every configured peer may call.
    pub allowed_sources: Option<Vec<IpNetwork>>,
    /// `max_running`: concurrently running processes; further starts get 429.
    pub max_running: usize,
    /// `max_tracked`: process records kept (running + exited); oldest exited evicted first.
    pub max_tracked: usize,
    /// `default_workdir`: working directory when a request names none; `None` = `$HOME`.
    pub default_workdir: Option<PathBuf>,
    /// `nice_increment`: added to the agent's nice value for children (capped at 19).
    pub nice_increment: u8,
    /// `oom_score_adj`: children's OOM score, so the OOM killer picks them, not the agent.
    pub oom_score_adj: i16,
    /// `kill_grace`: after SIGTERM (timeout), wait this long before SIGKILL.
    pub kill_grace: Duration,
    /// `shutdown_grace`: on agent shutdown, time for children to exit before SIGKILL.
    pub shutdown_grace: Duration,
    /// `tree_tracking`: a supervisor per process owns its whole descendant tree, so kills,
    /// timeouts, shutdown and the agent's own death reach members that left the process group.
    pub tree_tracking: bool,
    /// `state_dir`: where process logs and records of exited processes live (they survive a
    /// restart). `None` = [`Api::default_state_dir`].
    pub state_dir: Option<PathBuf>,
    /// `log_max_bytes`: log bytes kept per process (the newest).
    pub log_max_bytes: u64,
    /// `state_max_bytes`: log bytes kept in all; oldest exited processes' logs go first.
    pub state_max_bytes: u64,
    /// `header_timeout`: a request's line and headers must arrive within this (from the first
    /// byte, or from the connection's start); otherwise the connection is reset.
    pub header_timeout: Duration,
    /// `body_timeout`: longest pause while a request body arrives, and the grace period of
    /// `body_min_rate`; a slower body is answered 408 and the connection closed.
    pub body_timeout: Duration,
    /// `body_min_rate`: bytes per second a request body must average after `body_timeout`.
    pub body_min_rate: u64,
    /// `idle_timeout`: a keep-alive connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// `send_timeout`: a response the client does not read for this long closes the connection.
    pub send_timeout: Duration,
    /// `default_limits`: per-command limits of commands that ask for none (inline table of
    /// `memory_bytes`, `cpu_seconds`, `open_files`, `file_size_bytes`, `processes`).
    pub default_limits: crate::proc::Limits,
    /// `max_limits`: ceilings; a start asking for more is refused (400), and a command that
    /// asks for nothing and has no default gets the ceiling.
    pub max_limits: crate::proc::Limits,
    /// `cgroups`: use a delegated cgroup v2 subtree for per-command groups when one is found
    /// (the agent moves itself into a leaf group `agent` of its own cgroup).
    pub cgroups: bool,
    /// `isolation`: `"none"` (every peer sees every process) or `"peer"` (a peer sees and acts
    /// on only the processes it started; other ids answer 404).
    pub isolation: crate::trust::Isolation,
}

impl Api {
    /// Default `port`: 4 (the control side's `api_port` defaults to it too).
    pub const DEFAULT_PORT: u16 = 4;

    /// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; the first if several), else
    /// `$HOME/.local/state/wgagent`, else `/var/lib/wgagent`.
    pub fn default_state_dir() -> PathBuf {
        if let Some(dirs) = std::env::var_os("STATE_DIRECTORY")
            && let Some(first) = std::env::split_paths(&dirs).next()
            && !first.as_os_str().is_empty()
        {
            return first;
        }
        match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/state/wgagent"),
            _ => PathBuf::from("/var/lib/wgagent"),
        }
    }

    /// The configured state directory or the default one.
    pub fn state_dir_or_default(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(Self::default_state_dir)
    }
}

impl Default for Api {
    /// Defaults: `port` 4, `allowed_sources` unset (all peers), `max_running` 64,
    /// `max_tracked` 1024, `default_workdir` unset (`$HOME`), `nice_increment` 5,
    /// `oom_score_adj` 998, `kill_grace` 5 s, `shutdown_grace` 5 s, `tree_tracking` on,
    /// `state_dir` unset (the default directory), `log_max_bytes` 64 MiB, `state_max_bytes`
    /// 1 GiB, `header_timeout` 10 s, `body_timeout` 10 s, `body_min_rate` 4096 B/s,
    /// `idle_timeout` 75 s (above the SDK's 60 s pool idle time, so clients close idle
    /// connections first), `send_timeout` 60 s, no `default_limits` or `max_limits`, `cgroups`
    /// on (used only where delegated), `isolation` "none".
    fn default() -> Self {
        // The process limits are the manager's own defaults (one source); `cgroups` differs on
        // purpose: the manager leaves it off for in-process use, the agent turns it on.
        let m = crate::proc::ManagerConfig::default();
        Api {
            port: Api::DEFAULT_PORT,
            allowed_sources: None,
            max_running: m.max_running,
            max_tracked: m.max_tracked,
            default_workdir: None,
            nice_increment: crate::proc::manager::DEFAULT_NICE_INCREMENT,
            oom_score_adj: crate::proc::manager::DEFAULT_OOM_SCORE_ADJ,
            kill_grace: m.kill_grace,
            shutdown_grace: Duration::from_secs(5),
            tree_tracking: m.tree_tracking,
            state_dir: None,
            log_max_bytes: m.log_max_bytes,
            state_max_bytes: m.state_max_bytes,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 4096,
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            default_limits: crate::proc::Limits::default(),
            max_limits: crate::proc::Limits::default(),
            cgroups: true,
            isolation: crate::trust::Isolation::None,
        }
    }
}

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

/// `[control]` (control role only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// `connect_timeout`: WireGuard handshake plus TCP connect, per attempt.
    pub connect_timeout: Duration,
    /// `request_timeout`: one API request (server-side waits extend it by their own wait).
    pub request_timeout: Duration,
    /// `api_port`: the agents' API port, used when an agent is named by peer name or by a bare
    /// tunnel address.
    pub api_port: u16,
    /// `socket`: the control daemon's Unix socket (`wgagent control`); also where the CLI looks
    /// for it. `None` = `$WGAGENT_SOCKET`, else `/run/wgagent/control.sock` as root, else
    /// `$XDG_RUNTIME_DIR/wgagent/control.sock`. A relative path is relative to the config file.
    pub socket: Option<PathBuf>,
    /// `socket_group`: a group (name or gid) whose members may use the socket (mode 0660).
    /// `None` = only the daemon's user (mode 0600). Access to the socket equals access to every
    /// agent.
    pub socket_group: Option<String>,
    /// `max_connections`: local connections the daemon serves at once; more wait until one
    /// closes.
    pub max_connections: usize,
    /// `state_dir`: where the daemon saves the endpoints agents reached it from, so that after
    /// a restart it reaches agents behind NAT at once instead of waiting minutes for their next
    /// handshake. `None` = nothing is saved. Relative to the config file.
    pub state_dir: Option<PathBuf>,
}

impl Control {
    /// Allowed `max_connections`: each connection may hold one tunnel connection, and the
    /// daemon's netstack has 1024 sockets (pooled idle ones included).
    pub const MAX_CONNECTIONS_RANGE: (usize, usize) = (1, 512);
}

impl Default for Control {
    /// Defaults: `connect_timeout` 10 s, `request_timeout` 30 s, `api_port` 4 (the agents'
    /// default `[api] port`), `socket` unset (see [`Control::socket`]), `socket_group` unset,
    /// `max_connections` 256, `state_dir` unset.
    fn default() -> Self {
        // The timeouts are the SDK's own defaults (one source).
        let sdk = crate::client::AgentOptions::default();
        Control {
            connect_timeout: sdk.connect_timeout,
            request_timeout: sdk.request_timeout,
            api_port: Api::DEFAULT_PORT,
            socket: None,
            socket_group: None,
            max_connections: 256,
            state_dir: None,
        }
    }
}

/// `[files]` (agent role only): bounds of the workspace file routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Files {
    /// `max_write_bytes`: largest write-file body and edit-files request; also the largest file
    /// an edit or a line read loads into memory.
    pub max_write_bytes: u64,
    /// `max_edit_files`: files per edit-files request.
    pub max_edit_files: usize,
    /// `fsync`: flush a written file to disk before it replaces the old one.
    pub fsync: bool,
}

impl Default for Files {
    /// Defaults: `max_write_bytes` 16 MiB, `max_edit_files` 32, `fsync` true.
    fn default() -> Self {
        let d = crate::files::Limits::default();
        Files {
            max_write_bytes: d.max_write_bytes,
            max_edit_files: d.max_edit_files,
            fsync: d.fsync,
        }
    }
}

impl From<Files> for crate::files::Limits {
    fn from(f: Files) -> Self {
        Self {
            max_write_bytes: f.max_write_bytes,
            max_edit_files: f.max_edit_files,
            fsync: f.fsync,
        }
    }
}

/// Why a configuration could not be loaded. Every variant names the file; none is fixed by
/// retrying without editing the file (or its key file) except [`ConfigError::Read`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, permissions, too large).
    #[error("{}: cannot read config: {source}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", file.display())]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// A key this version does not know (typo, or a key of another tool).
    #[error("{}: unknown key `{key}` (expected {expected})", file.display())]
    UnknownKey {
        /// The config file.
        file: PathBuf,
        /// Full key path, e.g. `peer[1].lisen_port`.
        key: String,
        /// The keys allowed there.
        expected: String,
    },
    /// A required key or section is absent.
    #[error("{}: missing required key `{key}`", file.display())]
    Missing {
        /// The config file.
        file: PathBuf,
        /// Full key path, e.g. `peer[0].public_key`.
        key: String,
    },
    /// A value has the wrong type, is out of range, or conflicts with another value.
    #[error("{}: `{key}`: {problem}", file.display())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Full key path, e.g. `peer[2].allowed_ips[0]`.
        key: String,
        /// One sentence saying what is wrong and, where possible, what would be right.
        problem: String,
    },
    /// A key (inline or in the key file) could not be read or decoded.
    #[error("{}: `{key}`: {source}", file.display())]
    Key {
        /// The config file.
        file: PathBuf,
        /// Full key path, e.g. `interface.private_key_file`.
        key: String,
        /// What was wrong with the key.
        #[source]
        source: KeyError,
    },
}

/// Durations in the configuration use the one grammar of [`crate::duration`] (`"90"`, `"1.5s"`,
/// `"500ms"`, `"5m"`, `"1h30m"`), as the CLI and the tools do.
pub use crate::duration::{DurationError, parse as parse_duration};

impl Config {
    /// Reads and parses `path`; also warns when the file holds an inline `private_key` and is
    /// accessible by group or others.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_key(path, None)
    }

    /// [`Config::load`], with the private key read from `private_key_file` instead of the
    /// file's `private_key[_file]` when it is given (`--private-key-file`, e.g. a systemd
    /// credential): the file then needs no key, and one it has is ignored with a warning.
    pub fn load_with_key(
        path: &Path,
        private_key_file: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            file: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(read_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_CONFIG_BYTES} bytes"),
            )));
        }
        let (mut config, inline_key) =
            parse_inner(&text, path, &system_resolver, private_key_file)?;
        if inline_key && mode & 0o077 != 0 {
            config.warnings.push(format!(
                "{} contains `interface.private_key` and is accessible by group or others \
                 (mode {mode:04o}); run `chmod 600` on it or use `private_key_file`",
                path.display()
            ));
        }
        Ok(config)
    }

    /// Parses `text`; `origin` names the file in errors and anchors a relative
    /// `private_key_file`. Endpoint host names are resolved here.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        parse_inner(text, origin, &system_resolver, None).map(|(config, _)| config)
    }

    /// Like [`Config::parse`] without the network: endpoint host names do not resolve (they
    /// are pending, as for an unknown host). For fuzzing, which must not query DNS.
    #[doc(hidden)]
    pub fn parse_offline(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let offline = |host: &str, _port: u16| -> io::Result<Vec<SocketAddr>> {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: not resolved offline"),
            ))
        };
        parse_inner(text, origin, &offline, None).map(|(config, _)| config)
    }

    /// The peer whose `name` is `name`.
    pub fn peer_by_name(&self, name: &str) -> Option<&Peer> {
        self.peers
            .iter()
            .find(|peer| peer.name.as_deref() == Some(name))
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

// ---- raw layer: structure and key names only; every leaf is converted below ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: Option<Value>,
    api: Option<Value>,
    peer: Option<Value>,
    control: Option<Value>,
    files: Option<Value>,
    log: Option<Value>,
    metrics: Option<Value>,
    audit: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    private_key_file: Option<Value>,
    private_key: Option<Value>,
    address: Option<Value>,
    listen_port: Option<Value>,
    mtu: Option<Value>,
    tcp_buffer: Option<Value>,
    max_connections_per_peer: Option<Value>,
    tcp_memory: Option<Value>,
    max_connections: Option<Value>,
    handshake_rate_limit: Option<Value>,
    idle_session_timeout: Option<Value>,
    threads: Option<Value>,
    name: Option<Value>,
    uapi: Option<Value>,
    uapi_socket: Option<Value>,
    replace_peers_on_reload: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    port: Option<Value>,
    allowed_sources: Option<Value>,
    max_running: Option<Value>,
    max_tracked: Option<Value>,
    default_workdir: Option<Value>,
    nice_increment: Option<Value>,
    oom_score_adj: Option<Value>,
    kill_grace: Option<Value>,
    shutdown_grace: Option<Value>,
    tree_tracking: Option<Value>,
    state_dir: Option<Value>,
    log_max_bytes: Option<Value>,
    state_max_bytes: Option<Value>,
    header_timeout: Option<Value>,
    body_timeout: Option<Value>,
    body_min_rate: Option<Value>,
    idle_timeout: Option<Value>,
    send_timeout: Option<Value>,
    default_limits: Option<Value>,
    max_limits: Option<Value>,
    cgroups: Option<Value>,
    isolation: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Option<Value>,
    public_key: Option<Value>,
    preshared_key: Option<Value>,
    preshared_key_file: Option<Value>,
    allowed_ips: Option<Value>,
    endpoint: Option<Value>,
    persistent_keepalive: Option<Value>,
    allow: Option<Value>,
    run_as: Option<Value>,
    users: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<Value>,
    max_bytes: Option<Value>,
    keep: Option<Value>,
    fail_closed: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    max_write_bytes: Option<Value>,
    max_edit_files: Option<Value>,
    fsync: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Value>,
    format: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    connect_timeout: Option<Value>,
    request_timeout: Option<Value>,
    api_port: Option<Value>,
    socket: Option<Value>,
    socket_group: Option<Value>,
    max_connections: Option<Value>,
    state_dir: Option<Value>,
}

/// `(key path, value)` of a raw field; the key path is spelled from the field name itself, so
/// messages cannot drift from the struct.
macro_rules! field {
    ($section:ident, $raw:ident . $field:ident) => {
        (
            concat!(stringify!($section), ".", stringify!($field)),
            $raw.$field.as_ref(),
        )
    };
}

/// Resolves `host`, `port` to addresses (the system resolver outside tests).
type Resolver = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

fn system_resolver(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    (host, port).to_socket_addrs().map(Iterator::collect)
}

/// Conversion context: the file for errors, its directory for relative paths, the warnings.
struct Cx<'a> {
    file: &'a Path,
    resolve: &'a Resolver,
    warnings: Vec<String>,
    /// `--private-key-file`: replaces `private_key[_file]` (see [`Config::load_with_key`]).
    key_override: Option<&'a Path>,
    pending_endpoints: Vec<PendingEndpoint>,
}

/// Parses and converts; the flag says whether the private key was inline.
fn parse_inner(
    text: &str,
    origin: &Path,
    resolve: &Resolver,
    key_override: Option<&Path>,
) -> Result<(Config, bool), ConfigError> {
    let mut cx = Cx {
        file: origin,
        resolve,
        warnings: Vec::new(),
        key_override,
        pending_endpoints: Vec::new(),
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = line_column(text, e.span().map_or(0, |span| span.start));
        ConfigError::Syntax {
            file: origin.to_owned(),
            line,
            column,
            message: e.message().trim().replace('\n', "; "),
        }
    })?;
    let raw: RawConfig = cx.section("", Value::Table(table))?;
    let Some(interface) = raw.interface else {
        return Err(cx.missing("interface"));
    };
    let (interface, inline_key) = cx.interface(interface)?;
    let api = match raw.api {
        Some(api) => cx.api(api)?,
        None => Api::default(),
    };
    let peers = cx.peers(raw.peer, &interface.public_key)?;
    let control = match raw.control {
        Some(control) => cx.control(control)?,
        None => Control::default(),
    };
    let files = match raw.files {
        Some(files) => cx.files(files)?,
        None => Files::default(),
    };
    let log = match raw.log {
        Some(log) => cx.log(log)?,
        None => Log::default(),
    };
    let metrics = match raw.metrics {
        Some(metrics) => cx.metrics(metrics)?,
        None => Metrics::default(),
    };
    let audit = match raw.audit {
        Some(audit) => Some(cx.audit(audit)?),
        None => None,
    };
    if peers.is_empty() {
        cx.warnings.push(format!(
            "{}: no [[peer]] configured; nothing can reach this node and it can reach nobody",
            origin.display()
        ));
    }
    let config = Config {
        interface,
        api,
        peers,
        control,
        files,
        log,
        metrics,
        audit,
        warnings: cx.warnings,
        pending_endpoints: cx.pending_endpoints,
    };
    Ok((config, inline_key))
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

impl Cx<'_> {
    fn invalid(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    fn missing(&self, key: &str) -> ConfigError {
        ConfigError::Missing {
            file: self.file.to_owned(),
            key: key.to_owned(),
        }
    }

    fn key_error(&self, key: &str, source: KeyError) -> ConfigError {
        ConfigError::Key {
            file: self.file.to_owned(),
            key: key.to_owned(),
            source,
        }
    }

    /// Deserializes one table into its raw struct; `path` is "" for the top level.
    fn section<T: DeserializeOwned>(&self, path: &str, value: Value) -> Result<T, ConfigError> {
        if !value.is_table() {
            return Err(self.invalid(
                path,
                format!("expected a table, found {}", describe(&value)),
            ));
        }
        T::deserialize(value).map_err(|e| {
            let message = e.message();
            // serde's wording: "unknown field `x`, expected one of `a`, `b`".
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split_once('`'));
            match unknown {
                Some((name, rest)) => ConfigError::UnknownKey {
                    file: self.file.to_owned(),
                    key: join(path, name),
                    expected: rest
                        .trim_start_matches(',')
                        .trim()
                        .trim_start_matches("expected ")
                        .to_owned(),
                },
                None => self.invalid(if path.is_empty() { "(top level)" } else { path }, message),
            }
        })
    }

    fn string<'v>(&self, key: &str, value: &'v Value) -> Result<&'v str, ConfigError> {
        value.as_str().ok_or_else(|| {
            self.invalid(key, format!("expected a string, found {}", describe(value)))
        })
    }

    fn int(&self, key: &str, value: &Value, min: i64, max: i64) -> Result<i64, ConfigError> {
        let Some(n) = value.as_integer() else {
            return Err(self.invalid(
                key,
                format!("expected an integer, found {}", describe(value)),
            ));
        };
        if n < min || n > max {
            return Err(self.invalid(key, format!("{n} is out of range {min}..={max}")));
        }
        Ok(n)
    }

    /// An optional integer in `min..=max`, converted to `T` (the range fits `T`).
    fn int_or<T: TryFrom<i64>>(
        &self,
        (key, value): (&str, Option<&Value>),
        default: T,
        min: i64,
        max: i64,
    ) -> Result<T, ConfigError> {
        match value {
            None => Ok(default),
            Some(value) => {
                let n = self.int(key, value, min, max)?;
                T::try_from(n).map_err(|_| self.invalid(key, format!("{n} does not fit")))
            }
        }
    }

    fn bool_or(
        &self,
        (key, value): (&str, Option<&Value>),
        default: bool,
    ) -> Result<bool, ConfigError> {
        match value {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(other) => Err(self.invalid(
                key,
                format!("expected true or false, found {}", describe(other)),
            )),
        }
    }

    fn list<'v>(&self, key: &str, value: &'v Value) -> Result<&'v [Value], ConfigError> {
        value
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| self.invalid(key, format!("expected a list, found {}", describe(value))))
    }

    fn duration_or(
        &self,
        (key, value): (&str, Option<&Value>),
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(Value::Integer(secs)) => u64::try_from(*secs)
                .map(Duration::from_secs)
                .map_err(|_| self.invalid(key, format!("{secs} is negative"))),
            Some(Value::String(text)) => {
                parse_duration(text).map_err(|e| self.invalid(key, e.to_string()))
            }
            Some(other) => Err(self.invalid(
                key,
                format!(
                    "expected seconds (integer) or a string like \"30s\", found {}",
                    describe(other)
                ),
            )),
        }
    }

    /// An optional non-empty path; a relative one is relative to the config file.
    fn path_or(
        &self,
        (key, value): (&str, Option<&Value>),
    ) -> Result<Option<PathBuf>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        let text = self.string(key, value)?;
        if text.is_empty() {
            return Err(self.invalid(key, "empty path; remove the key for the default"));
        }
        let path = Path::new(text);
        Ok(Some(match self.file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }))
    }

    fn cidr_list(&self, key: &str, value: &Value) -> Result<Vec<IpNetwork>, ConfigError> {
        let items = self.list(key, value)?;
        let mut out: Vec<IpNetwork> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let text = self.string(&item_key, item)?;
            let net = parse_cidr(text).map_err(|problem| self.invalid(&item_key, problem))?;
            if let Some(j) = out.iter().position(|seen| *seen == net) {
                return Err(
                    self.invalid(&item_key, format!("{net} is already listed at {key}[{j}]"))
                );
            }
            out.push(net);
        }
        Ok(out)
    }

    fn interface(&mut self, value: Value) -> Result<(Interface, bool), ConfigError> {
        let raw: RawInterface = self.section("interface", value)?;
        if let Some(path) = self.key_override
            && (raw.private_key_file.is_some() || raw.private_key.is_some())
        {
            self.warnings.push(format!(
                "{}: `interface.private_key[_file]` is ignored: the key comes from {}",
                self.file.display(),
                path.display()
            ));
        }
        let (private_key, inline, private_key_path) =
            match (self.key_override, &raw.private_key_file, &raw.private_key) {
                (Some(path), _, _) => {
                    let key = "--private-key-file";
                    let (secret, warnings) =
                        keys::read_private_key_file(path).map_err(|e| self.key_error(key, e))?;
                    self.warnings
                        .extend(warnings.iter().map(ToString::to_string));
                    (secret, false, Some(path.to_owned()))
                }
                (None, file, inline) => {
                    let (secret, inline, path) = self.private_key(file, inline)?;
                    (secret, inline, path)
                }
            };
        let public_key = keys::public_key(&private_key);

        let key = "interface.address";
        let items = match &raw.address {
            Some(value) => self.list(key, value)?,
            None => return Err(self.missing(key)),
        };
        if items.is_empty() {
            return Err(self.invalid(key, "needs at least one tunnel address"));
        }
        let mut addresses: Vec<IpAddr> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let text = self.string(&item_key, item)?.trim();
            let addr: IpAddr = text.parse().map_err(|_| {
                let hint = if text.contains('/') {
                    " (write the address without a prefix; routing comes from peers' allowed_ips)"
                } else {
                    ""
                };
                self.invalid(&item_key, format!("{text:?} is not an IP address{hint}"))
            })?;
            if addresses.contains(&addr) {
                return Err(self.invalid(&item_key, format!("{addr} is listed twice")));
            }
            // The userspace stack holds two addresses: one of each family.
            if addresses.iter().any(|a| a.is_ipv4() == addr.is_ipv4()) {
                return Err(self.invalid(
                    &item_key,
                    format!("{addr}: at most one IPv4 and one IPv6 tunnel address are supported"),
                ));
            }
            addresses.push(addr);
        }

        let listen_port = self.int_or(
            field!(interface, raw.listen_port),
            Interface::DEFAULT_LISTEN_PORT,
            0,
            65535,
        )?;
        let (min, max) = Interface::MTU_RANGE;
        let mtu: u16 = self.int_or(
            field!(interface, raw.mtu),
            Interface::DEFAULT_MTU,
            min.into(),
            max.into(),
        )?;
        let (min, max) = Interface::TCP_BUFFER_RANGE;
        let tcp_buffer = self.int_or(
            field!(interface, raw.tcp_buffer),
            Interface::DEFAULT_TCP_BUFFER,
            min as i64,
            max as i64,
        )?;
        let (min, max) = Interface::MAX_CONNECTIONS_PER_PEER_RANGE;
        let max_connections_per_peer = self.int_or(
            field!(interface, raw.max_connections_per_peer),
            Interface::DEFAULT_MAX_CONNECTIONS_PER_PEER,
            min as i64,
            max as i64,
        )?;
        let (min, max) = Interface::TCP_MEMORY_RANGE;
        let tcp_memory = self.int_or(
            field!(interface, raw.tcp_memory),
            Interface::DEFAULT_TCP_MEMORY,
            min as i64,
            max as i64,
        )?;
        let (min, max) = Interface::MAX_CONNECTIONS_RANGE;
        let max_connections = self.int_or(
            field!(interface, raw.max_connections),
            Interface::DEFAULT_MAX_CONNECTIONS,
            min as i64,
            max as i64,
        )?;
        let (min, max) = Interface::HANDSHAKE_RATE_LIMIT_RANGE;
        let handshake_rate_limit = match &raw.handshake_rate_limit {
            None => None,
            Some(_) => Some(self.int_or(
                field!(interface, raw.handshake_rate_limit),
                Interface::DEFAULT_HANDSHAKE_RATE_LIMIT,
                min as i64,
                max as i64,
            )?),
        };
        let idle_session_timeout = match &raw.idle_session_timeout {
            None => None,
            Some(_) => {
                let field = field!(interface, raw.idle_session_timeout);
                let key = field.0;
                let t = self.duration_or(field, Duration::ZERO)?;
                if !t.is_zero() && t < Duration::from_secs(1) {
                    return Err(self.invalid(key, "must be 0 (never) or at least 1s"));
                }
                Some(t)
            }
        };
        let (min, max) = Interface::THREADS_RANGE;
        let threads = self.int_or(
            field!(interface, raw.threads),
            Interface::default_threads(),
            min as i64,
            max as i64,
        )?;
        let name = match &raw.name {
            None => None,
            Some(value) => {
                let key = "interface.name";
                let name = self.string(key, value)?;
                check_interface_name(name).map_err(|problem| self.invalid(key, problem))?;
                Some(name.to_owned())
            }
        };
        let uapi = self.bool_or(field!(interface, raw.uapi), true)?;
        let uapi_socket = self.path_or(field!(interface, raw.uapi_socket))?;
        let replace_peers_on_reload =
            self.bool_or(field!(interface, raw.replace_peers_on_reload), false)?;
        let interface = Interface {
            private_key,
            public_key,
            addresses,
            listen_port,
            mtu,
            tcp_buffer,
            private_key_path,
            max_connections_per_peer,
            tcp_memory,
            max_connections,
            handshake_rate_limit,
            idle_session_timeout,
            threads,
            name,
            uapi,
            uapi_socket,
            replace_peers_on_reload,
        };
        Ok((interface, inline))
    }

    /// The key from `private_key_file` or `private_key`: the secret, whether it was inline,
    /// and the file it came from.
    fn private_key(
        &mut self,
        file: &Option<Value>,
        inline: &Option<Value>,
    ) -> Result<(StaticSecret, bool, Option<PathBuf>), ConfigError> {
        Ok(match (file, inline) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "interface.private_key",
                    "set either `private_key_file` or `private_key`, not both",
                ));
            }
            (None, None) => {
                return Err(self.invalid(
                    "interface",
                    "no private key: set `private_key_file` (a path) or `private_key` (base64)",
                ));
            }
            (Some(path), None) => {
                let key = "interface.private_key_file";
                let path = Path::new(self.string(key, path)?);
                let path = match self.file.parent() {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path.to_owned(),
                };
                let (secret, warnings) =
                    keys::read_private_key_file(&path).map_err(|e| self.key_error(key, e))?;
                self.warnings
                    .extend(warnings.iter().map(ToString::to_string));
                (secret, false, Some(path))
            }
            (None, Some(text)) => {
                let key = "interface.private_key";
                let text = self.string(key, text)?;
                let secret = keys::decode_private(text).map_err(|e| self.key_error(key, e))?;
                (secret, true, None)
            }
        })
    }

    fn metrics(&mut self, value: Value) -> Result<Metrics, ConfigError> {
        let raw: RawMetrics = self.section("metrics", value)?;
        let listen = match &raw.listen {
            None => None,
            Some(value) => {
                let key = "metrics.listen";
                let text = self.string(key, value)?.trim();
                let addr: SocketAddr = text.parse().map_err(|_| {
                    self.invalid(
                        key,
                        format!(
                            "{text:?} is not an address:port, e.g. \"127.0.0.1:9586\" or \"[::1]:9586\""
                        ),
                    )
                })?;
                if !addr.ip().is_loopback() {
                    self.warnings.push(format!(
                        "{}: `metrics.listen` = {addr} is reachable from outside this machine; \
                         the metrics name every peer and their traffic",
                        self.file.display()
                    ));
                }
                Some(addr)
            }
        };
        Ok(Metrics { listen })
    }

    fn log(&mut self, value: Value) -> Result<Log, ConfigError> {
        let raw: RawLog = self.section("log", value)?;
        let level = match &raw.level {
            None => Log::default().level,
            Some(value) => {
                let key = "log.level";
                let text = self.string(key, value)?.trim();
                tracing_subscriber::EnvFilter::try_new(text).map_err(|e| {
                    self.invalid(
                        key,
                        format!("{text:?} is not a log filter ({e}); use e.g. \"info\" or \"warn,wgagent=debug\""),
                    )
                })?;
                text.to_owned()
            }
        };
        let format = match &raw.format {
            None => LogFormat::default(),
            Some(value) => {
                let key = "log.format";
                let text = self.string(key, value)?.trim();
                LogFormat::parse(text).ok_or_else(|| {
                    self.invalid(
                        key,
                        format!("{text:?} is not a log format; use \"text\" or \"json\""),
                    )
                })?
            }
        };
        Ok(Log { level, format })
    }

    fn api(&mut self, value: Value) -> Result<Api, ConfigError> {
        let raw: RawApi = self.section("api", value)?;
        let d = Api::default();
        let allowed_sources = match &raw.allowed_sources {
            None => None,
            Some(value) => {
                let list = self.cidr_list("api.allowed_sources", value)?;
                if list.is_empty() {
                    return Err(self.invalid(
                        "api.allowed_sources",
                        "an empty list would refuse every caller; remove the key to allow all peers",
                    ));
                }
                Some(list)
            }
        };
        let default_workdir = match &raw.default_workdir {
            None => None,
            Some(value) => {
                let key = "api.default_workdir";
                let path = PathBuf::from(self.string(key, value)?);
                if !path.is_absolute() {
                    return Err(self.invalid(
                        key,
                        format!("{:?} is not an absolute path", path.display().to_string()),
                    ));
                }
                if !path.is_dir() {
                    self.warnings.push(format!(
                        "{}: api.default_workdir {} is not a directory (yet); starts without a \
                         workdir will fail until it exists",
                        self.file.display(),
                        path.display()
                    ));
                }
                Some(path)
            }
        };
        let max_running = self.int_or(field!(api, raw.max_running), d.max_running, 1, 65536)?;
        let max_tracked = self.int_or(field!(api, raw.max_tracked), d.max_tracked, 1, 65536)?;
        let state_dir = match &raw.state_dir {
            None => None,
            Some(value) => {
                let key = "api.state_dir";
                let path = PathBuf::from(self.string(key, value)?);
                if !path.is_absolute() {
                    return Err(self.invalid(
                        key,
                        format!("{:?} is not an absolute path", path.display().to_string()),
                    ));
                }
                Some(path)
            }
        };
        let log_max_bytes: u64 = self.int_or(
            field!(api, raw.log_max_bytes),
            d.log_max_bytes,
            4096,
            i64::MAX,
        )?;
        let state_max_bytes: u64 = self.int_or(
            field!(api, raw.state_max_bytes),
            d.state_max_bytes,
            4096,
            i64::MAX,
        )?;
        let default_limits = self.limits(field!(api, raw.default_limits))?;
        let max_limits = self.limits(field!(api, raw.max_limits))?;
        for (limit, value) in default_limits.iter() {
            if let Some(max) = max_limits.get(limit).filter(|max| value > *max) {
                return Err(self.invalid(
                    &format!("api.default_limits.{limit}"),
                    format!("{value} is above api.max_limits.{limit} ({max})"),
                ));
            }
        }
        if max_tracked < max_running {
            return Err(self.invalid(
                "api.max_tracked",
                format!("{max_tracked} is below api.max_running ({max_running}); running processes are tracked too"),
            ));
        }
        Ok(Api {
            port: self.int_or(field!(api, raw.port), d.port, 1, 65535)?,
            allowed_sources,
            max_running,
            max_tracked,
            default_workdir,
            nice_increment: self.int_or(
                field!(api, raw.nice_increment),
                d.nice_increment,
                0,
                19,
            )?,
            oom_score_adj: self.int_or(
                field!(api, raw.oom_score_adj),
                d.oom_score_adj,
                -1000,
                1000,
            )?,
            kill_grace: self.duration_or(field!(api, raw.kill_grace), d.kill_grace)?,
            shutdown_grace: self.duration_or(field!(api, raw.shutdown_grace), d.shutdown_grace)?,
            tree_tracking: self.bool_or(field!(api, raw.tree_tracking), d.tree_tracking)?,
            state_dir,
            log_max_bytes,
            state_max_bytes,
            header_timeout: self
                .positive_duration(field!(api, raw.header_timeout), d.header_timeout)?,
            body_timeout: self.positive_duration(field!(api, raw.body_timeout), d.body_timeout)?,
            body_min_rate: self.int_or(
                field!(api, raw.body_min_rate),
                d.body_min_rate,
                0,
                1 << 40,
            )?,
            idle_timeout: self.positive_duration(field!(api, raw.idle_timeout), d.idle_timeout)?,
            send_timeout: self.positive_duration(field!(api, raw.send_timeout), d.send_timeout)?,
            default_limits,
            max_limits,
            cgroups: self.bool_or(field!(api, raw.cgroups), d.cgroups)?,
            isolation: match &raw.isolation {
                None => d.isolation,
                Some(value) => {
                    let key = "api.isolation";
                    let text = self.string(key, value)?;
                    crate::trust::Isolation::parse(text).ok_or_else(|| {
                        self.invalid(key, format!("{text:?}: use \"none\" or \"peer\""))
                    })?
                }
            },
        })
    }

    fn audit(&mut self, value: Value) -> Result<crate::trust::AuditConfig, ConfigError> {
        use crate::trust::AuditConfig;
        let raw: RawAudit = self.section("audit", value)?;
        let key = "audit.path";
        let Some(path) = self.path_or(field!(audit, raw.path))? else {
            return Err(self.missing(key));
        };
        Ok(AuditConfig {
            path,
            max_bytes: self.int_or(
                field!(audit, raw.max_bytes),
                AuditConfig::DEFAULT_MAX_BYTES,
                4096,
                i64::MAX,
            )?,
            keep: self.int_or(field!(audit, raw.keep), AuditConfig::DEFAULT_KEEP, 0, 1000)?,
            fail_closed: self.bool_or(field!(audit, raw.fail_closed), true)?,
        })
    }

    /// `allow`, `run_as` and `users` of one `[[peer]]`.
    fn access(&self, path: &str, raw: &RawPeer) -> Result<crate::trust::Access, ConfigError> {
        use crate::trust::{Access, Permission, Permissions};
        let allow = match &raw.allow {
            None => None,
            Some(value) => {
                let key = join(path, "allow");
                let mut set = Permissions::default();
                for (i, item) in self.list(&key, value)?.iter().enumerate() {
                    let item_key = format!("{key}[{i}]");
                    let text = self.string(&item_key, item)?;
                    let p = Permission::parse(text).ok_or_else(|| {
                        self.invalid(
                            &item_key,
                            format!(
                                "{text:?} is not a permission; use {}",
                                Permission::ALL
                                    .map(|p| format!("{:?}", p.as_str()))
                                    .join(", ")
                            ),
                        )
                    })?;
                    set.insert(p);
                }
                Some(set)
            }
        };
        let user_name = |key: &str, value: &Value| -> Result<String, ConfigError> {
            let text = self.string(key, value)?;
            if text.is_empty() || text.len() > 64 || text.contains(['/', ':', '\0', ' ']) {
                return Err(self.invalid(key, format!("{text:?} is not a user name")));
            }
            Ok(text.to_owned())
        };
        let run_as = match &raw.run_as {
            None => None,
            Some(value) => Some(user_name(&join(path, "run_as"), value)?),
        };
        let mut users = Vec::new();
        if let Some(value) = &raw.users {
            let key = join(path, "users");
            for (i, item) in self.list(&key, value)?.iter().enumerate() {
                let name = user_name(&format!("{key}[{i}]"), item)?;
                if !users.contains(&name) {
                    users.push(name);
                }
            }
        }
        Ok(Access {
            allow,
            run_as,
            users,
        })
    }

    /// An inline table of limits by name, each a positive integer.
    fn limits(
        &self,
        (key, value): (&str, Option<&Value>),
    ) -> Result<crate::proc::Limits, ConfigError> {
        let mut out = crate::proc::Limits::default();
        let Some(value) = value else { return Ok(out) };
        let Some(table) = value.as_table() else {
            return Err(self.invalid(
                key,
                format!(
                    "expected a table like {{ memory_bytes = 1073741824 }}, found {}",
                    describe(value)
                ),
            ));
        };
        for (name, v) in table {
            let Some(limit) = crate::proc::Limit::parse(name) else {
                return Err(ConfigError::UnknownKey {
                    file: self.file.to_owned(),
                    key: join(key, name),
                    expected: crate::proc::Limit::ALL
                        .iter()
                        .map(|l| format!("`{l}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let n = self.int(&join(key, name), v, 1, i64::MAX)?;
            out.set(limit, Some(n as u64));
        }
        Ok(out)
    }

    /// A duration that must be above zero (a zero timeout would refuse everything).
    fn positive_duration(
        &self,
        field: (&str, Option<&Value>),
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let value = self.duration_or(field, default)?;
        if value.is_zero() {
            return Err(self.invalid(field.0, "must be greater than zero"));
        }
        Ok(value)
    }

    fn control(&mut self, value: Value) -> Result<Control, ConfigError> {
        let raw: RawControl = self.section("control", value)?;
        let d = Control::default();
        let connect_timeout =
            self.duration_or(field!(control, raw.connect_timeout), d.connect_timeout)?;
        let request_timeout =
            self.duration_or(field!(control, raw.request_timeout), d.request_timeout)?;
        for (key, value) in [
            ("control.connect_timeout", connect_timeout),
            ("control.request_timeout", request_timeout),
        ] {
            if value.is_zero() {
                return Err(self.invalid(key, "must be greater than zero"));
            }
        }
        let api_port = self.int_or(field!(control, raw.api_port), d.api_port, 1, 65535)?;
        let socket = self.path_or(field!(control, raw.socket))?;
        let state_dir = self.path_or(field!(control, raw.state_dir))?;
        let socket_group = match &raw.socket_group {
            None => None,
            Some(value) => {
                let key = "control.socket_group";
                let text = self.string(key, value)?.trim();
                if text.is_empty() {
                    return Err(self.invalid(key, "empty group name; remove the key for mode 0600"));
                }
                Some(text.to_owned())
            }
        };
        let (min, max) = Control::MAX_CONNECTIONS_RANGE;
        let max_connections = self.int_or(
            field!(control, raw.max_connections),
            d.max_connections,
            min as i64,
            max as i64,
        )?;
        Ok(Control {
            connect_timeout,
            request_timeout,
            api_port,
            socket,
            socket_group,
            max_connections,
            state_dir,
        })
    }

    fn files(&mut self, value: Value) -> Result<Files, ConfigError> {
        let raw: RawFiles = self.section("files", value)?;
        let d = Files::default();
        let fsync = match &raw.fsync {
            None => d.fsync,
            Some(v) => v.as_bool().ok_or_else(|| {
                self.invalid(
                    "files.fsync",
                    format!("expected true or false, found {}", describe(v)),
                )
            })?,
        };
        Ok(Files {
            // 1 KiB ..= 4 GiB: a file this size may be held in memory by an edit.
            max_write_bytes: self.int_or(
                field!(files, raw.max_write_bytes),
                d.max_write_bytes,
                1024,
                4 << 30,
            )?,
            max_edit_files: self.int_or(
                field!(files, raw.max_edit_files),
                d.max_edit_files,
                1,
                1024,
            )?,
            fsync,
        })
    }

    fn peers(&mut self, value: Option<Value>, own: &PublicKey) -> Result<Vec<Peer>, ConfigError> {
        let items = match value {
            None => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(Value::Table(_)) => {
                return Err(self.invalid(
                    "peer",
                    "write each peer as a [[peer]] block (double brackets)",
                ));
            }
            Some(other) => {
                return Err(self.invalid(
                    "peer",
                    format!("expected [[peer]] blocks, found {}", describe(&other)),
                ));
            }
        };
        let mut peers: Vec<Peer> = Vec::with_capacity(items.len());
        let mut cidr_owner: HashMap<IpNetwork, String> = HashMap::new();
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("peer[{i}]");
            let peer = self.peer(&path, item, own)?;
            if let Some(j) = peers.iter().position(|p| p.public_key == peer.public_key) {
                return Err(self.invalid(
                    &format!("{path}.public_key"),
                    format!("same public key as peer[{j}]"),
                ));
            }
            if let Some(name) = &peer.name
                && let Some(j) = peers.iter().position(|p| p.name.as_ref() == Some(name))
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

    fn peer(&mut self, path: &str, value: Value, own: &PublicKey) -> Result<Peer, ConfigError> {
        let raw: RawPeer = self.section(path, value)?;
        let name = match &raw.name {
            None => None,
            Some(value) => {
                let key = join(path, "name");
                let name = self.string(&key, value)?;
                check_name(name).map_err(|problem| self.invalid(&key, problem))?;
                Some(name.to_owned())
            }
        };
        let who = match &name {
            Some(name) => format!("{path} ({name:?})"),
            None => path.to_owned(),
        };

        let key = join(path, "public_key");
        let public_key = match &raw.public_key {
            None => return Err(self.missing(&key)),
            Some(value) => keys::decode_public(self.string(&key, value)?)
                .map_err(|e| self.key_error(&key, e))?,
        };
        if public_key == *own {
            return Err(self.invalid(
                &key,
                "this is our own public key; a node is not its own peer",
            ));
        }

        let preshared_key = match (&raw.preshared_key, &raw.preshared_key_file) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    &join(path, "preshared_key"),
                    "set either `preshared_key_file` or `preshared_key`, not both",
                ));
            }
            (Some(value), None) => {
                let key = join(path, "preshared_key");
                Some(
                    keys::decode_key(self.string(&key, value)?)
                        .map_err(|e| self.key_error(&key, e))?,
                )
            }
            (None, Some(value)) => {
                // Like `wg`'s PresharedKey from a file (`wg genpsk > f`); read again on reload.
                let key = join(path, "preshared_key_file");
                // `path_or` of a present value is always `Some`.
                let file = self.path_or((&key, Some(value)))?.unwrap_or_default();
                let (psk, warnings) =
                    keys::read_key_file(&file).map_err(|e| self.key_error(&key, e))?;
                self.warnings
                    .extend(warnings.iter().map(ToString::to_string));
                Some(psk)
            }
        };

        let key = join(path, "allowed_ips");
        let allowed_ips = match &raw.allowed_ips {
            None => return Err(self.missing(&key)),
            Some(value) => self.cidr_list(&key, value)?,
        };
        if allowed_ips.is_empty() {
            return Err(self.invalid(
                &key,
                format!("{who} needs at least one allowed IP (its tunnel address)"),
            ));
        }

        let endpoint = match &raw.endpoint {
            None => None,
            Some(value) => {
                let key = join(path, "endpoint");
                let text = self.string(&key, value)?;
                match self
                    .endpoint(text, &who)
                    .map_err(|problem| self.invalid(&key, problem))?
                {
                    Endpoint::Address(addr) => Some(addr),
                    Endpoint::Unresolved { host, port, why } => {
                        self.warnings.push(format!(
                            "{}: `{key}`: {why}; retrying in the background (the peer has no \
                             endpoint until it resolves or the peer dials in)",
                            self.file.display()
                        ));
                        self.pending_endpoints.push(PendingEndpoint {
                            public_key,
                            label: name.clone().unwrap_or_else(|| {
                                keys::encode_public(&public_key)[..8].to_owned()
                            }),
                            host,
                            port,
                        });
                        None
                    }
                }
            }
        };
        let keepalive: u16 = self.int_or(
            (
                &join(path, "persistent_keepalive"),
                raw.persistent_keepalive.as_ref(),
            ),
            0,
            0,
            65535,
        )?;
        let access = self.access(path, &raw)?;
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

    /// `host:port` or `[v6]:port` → the first address the host resolves to; a valid host name
    /// that does not resolve (now) is [`Endpoint::Unresolved`], a syntax error is an error.
    fn endpoint(&self, text: &str, who: &str) -> Result<Endpoint, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("{text:?} for {who}: expected \"[IPv6]:port\""))?;
            let ip: Ipv6Addr = host
                .parse()
                .map_err(|_| format!("{text:?} for {who}: {host:?} is not an IPv6 address"))?;
            (IpAddr::V6(ip).to_string(), port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?} for {who}: expected \"host:port\""))?;
            if host.contains(':') {
                return Err(format!(
                    "{text:?} for {who}: IPv6 endpoints need brackets, e.g. \"[fd00::1]:51820\""
                ));
            }
            (host.to_owned(), port)
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{text:?} for {who}: port {port:?} is not in 1..=65535"))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Endpoint::Address(SocketAddr::new(ip, port)));
        }
        check_host_name(&host).map_err(|problem| format!("{text:?} for {who}: {problem}"))?;
        let why = match (self.resolve)(&host, port) {
            Ok(addrs) => match addrs.into_iter().next() {
                Some(addr) => return Ok(Endpoint::Address(addr)),
                None => format!("{host:?} for {who} resolved to no addresses"),
            },
            Err(e) => format!("cannot resolve {host:?} for {who}: {e}"),
        };
        Ok(Endpoint::Unresolved { host, port, why })
    }
}

/// What an `endpoint` value came to.
enum Endpoint {
    Address(SocketAddr),
    /// A valid host name the resolver could not answer for (yet).
    Unresolved {
        host: String,
        port: u16,
        why: String,
    },
}

/// `"10.0.0.0/8"`, or a bare address meaning /32 or /128. Host bits set is an error (with the
/// network it probably meant), since a silently truncated entry routes more than intended.
fn parse_cidr(text: &str) -> Result<IpNetwork, String> {
    let t = text.trim();
    let (addr, prefix) = match t.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (t, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("invalid CIDR {t:?}: {addr:?} is not an IP address"))?;
    let Some(prefix) = prefix else {
        return Ok(IpNetwork::from(ip));
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = prefix
        .parse()
        .ok()
        .filter(|len| *len <= max)
        .ok_or_else(|| {
            format!("invalid CIDR {t:?}: prefix length {prefix:?} is not in 0..={max}")
        })?;
    IpNetwork::new(ip, len).map_err(|e| match e {
        IpNetworkError::HostBitsSet => match IpNetwork::new_truncate(ip, len) {
            Ok(net) => format!("invalid CIDR {t:?}: host bits are set; did you mean \"{net}\"?"),
            Err(e) => format!("invalid CIDR {t:?}: {e}"),
        },
        IpNetworkError::NetmaskError(_) => format!("invalid CIDR {t:?}: {e}"),
    })
}

/// Peer names are used on the command line instead of addresses, so they must be simple and
/// must not look like an address.
fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > 64 || !ok_chars {
        return Err(format!(
            "{name:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'"
        ));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!("{name:?} looks like an address; names must not"));
    }
    Ok(())
}

/// What wg-quick accepts as an interface name (`[a-zA-Z0-9_=+.-]{1,15}`): `wg` finds the node
/// by it, and the kernel's limit is 15 bytes.
fn check_interface_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | '+' | '.' | '-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1 to 15 characters of A-Z, a-z, 0-9, '_', '=', '+', '.', '-'"
        ))
    }
}

/// RFC 1123 host name syntax, checked before asking the resolver.
fn check_host_name(host: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// "integer 3", "string \"x\"", "table", … for type errors.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(n) => format!("integer {n}"),
        Value::Float(x) => format!("float {x}"),
        Value::Boolean(b) => format!("boolean {b}"),
        other => other.type_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/wgagent/test.toml";
    const OWN: &str = "GCIr1iOf/ayRZYRqbEegDnZyd9r+0R6PTVDIh14tunI=";
    const OWN_PUB: &str = "oZL7+S7zwULla3XcnpzMP7hnfarsi/QkgoVJ45j3cSo=";
    const P1: &str = "vGPRR+1ynWogn9oS6/gHPIMipod6w+ahp9U+HorMpkY=";
    const P2: &str = "lQyo/6Qm74UwPvsrCT7LB5gDm3JRcw51GbXW/rpSN3A=";
    const PSK: &str = "BhODDsqHaKX1fWrJIffPqvbXouv1MPKsGELLTRWYgOs=";

    /// Knows one name; everything else fails like an NXDOMAIN, without touching the network.
    fn fake_resolver(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        match host {
            "control.test" => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        }
    }

    #[test]
    fn private_key_file_flag_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let write_key = |name: &str| {
            let key = keys::generate();
            let path = dir.path().join(name);
            std::fs::write(&path, keys::encode_private(&key)).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            (keys::public_key(&key), path)
        };
        let (in_file, _) = write_key("file.key");
        let (flag, flag_path) = write_key("flag.key");
        let peer = format!(
            "[[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.1/32\"]\n",
            keys::encode_public(&keys::public_key(&keys::generate()))
        );
        // The file names its own key: the flag's wins, with a warning.
        let with_key = dir.path().join("with.toml");
        std::fs::write(
            &with_key,
            format!(
                "[interface]\nprivate_key_file = \"file.key\"\naddress = [\"100.64.0.10\"]\n{peer}"
            ),
        )
        .unwrap();
        let cfg = Config::load(&with_key).unwrap();
        assert_eq!(cfg.interface.public_key, in_file);
        assert_eq!(
            cfg.interface.private_key_path,
            Some(dir.path().join("file.key"))
        );
        let cfg = Config::load_with_key(&with_key, Some(&flag_path)).unwrap();
        assert_eq!(cfg.interface.public_key, flag);
        assert_eq!(
            cfg.interface.private_key_path.as_deref(),
            Some(flag_path.as_path())
        );
        assert!(
            cfg.warnings.iter().any(|w| w.contains("is ignored")),
            "{:?}",
            cfg.warnings
        );
        // The file has no key at all: fine with the flag, an error without.
        let without = dir.path().join("without.toml");
        std::fs::write(
            &without,
            format!("[interface]\naddress = [\"100.64.0.10\"]\n{peer}"),
        )
        .unwrap();
        let cfg = Config::load_with_key(&without, Some(&flag_path)).unwrap();
        assert_eq!(cfg.interface.public_key, flag);
        assert!(!cfg.warnings.iter().any(|w| w.contains("is ignored")));
        let e = Config::load(&without).err().unwrap().to_string();
        assert!(e.contains("no private key"), "{e}");
        // An unreadable flag file is an error naming the flag.
        let e = Config::load_with_key(&with_key, Some(&dir.path().join("missing.key")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--private-key-file"), "{e}");
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_inner(text, Path::new(FILE), &fake_resolver, None).map(|(config, _)| config)
    }

    fn interface(extra: &str) -> String {
        format!("[interface]\nprivate_key = \"{OWN}\"\naddress = [\"100.64.0.10\"]\n{extra}\n")
    }

    fn peer(extra: &str) -> String {
        format!("[[peer]]\npublic_key = \"{P1}\"\nallowed_ips = [\"100.64.0.1\"]\n{extra}\n")
    }

    /// The error's Display, checked to name the file and the key path.
    #[track_caller]
    fn error(text: &str, key: &str) -> String {
        let message = match parse(text) {
            Ok(_) => panic!("expected an error at `{key}` for:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(message.starts_with(FILE), "no file in: {message}");
        assert!(
            message.contains(&format!("`{key}`")),
            "no `{key}` in: {message}"
        );
        message
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(&(interface("") + &peer(""))).unwrap();
        assert_eq!(keys::encode_public(&config.interface.public_key), OWN_PUB);
        assert_eq!(
            config.interface.addresses,
            vec!["100.64.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(config.interface.listen_port, 0);
        assert_eq!(config.interface.mtu, 1280);
        assert_eq!(config.interface.tcp_buffer, 524_288);
        assert_eq!(config.interface.max_connections_per_peer, 64);
        assert_eq!(config.interface.tcp_memory, 64 << 20);
        assert_eq!(config.interface.max_connections, 1024);
        assert_eq!(config.interface.handshake_rate_limit, None);
        assert_eq!(config.interface.idle_session_timeout, None);
        assert_eq!(config.api, Api::default());
        assert_eq!(config.control, Control::default());
        assert_eq!(config.files, Files::default());
        let peer = &config.peers[0];
        assert_eq!(
            peer.allowed_ips,
            vec!["100.64.0.1/32".parse::<IpNetwork>().unwrap()]
        );
        assert_eq!(
            (peer.endpoint, peer.persistent_keepalive, peer.preshared_key),
            (None, None, None)
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn full_config_becomes_typed_values() {
        let text = format!(
            "{}[api]\nport = 8\nallowed_sources = [\"100.64.0.0/24\"]\nmax_running = 2\n\
             max_tracked = 3\ndefault_workdir = \"/\"\nnice_increment = 0\noom_score_adj = -5\n\
             kill_grace = \"250ms\"\nshutdown_grace = 7\ntree_tracking = false\n\
             state_dir = \"/var/lib/x\"\nlog_max_bytes = 8192\nstate_max_bytes = 65536\n\
             header_timeout = \"2s\"\n\
             body_timeout = 3\nbody_min_rate = 0\nidle_timeout = \"1m\"\nsend_timeout = 9\n\
             [control]\nconnect_timeout = \"1m30s\"\nrequest_timeout = 2\n\
             socket = \"run/control.sock\"\nsocket_group = \"wgagent\"\nmax_connections = 8\n\
             state_dir = \"/var/lib/wgagent-control\"\n\
             [files]\nmax_write_bytes = 2048\nmax_edit_files = 3\nfsync = false\n\
             {}[[peer]]\nname = \"c2\"\npublic_key = \"{P2}\"\nallowed_ips = [\"fd00::/64\", \"10.0.0.0/8\"]\n\
             endpoint = \"[::1]:51821\"\npersistent_keepalive = 0\n",
            interface("listen_port = 51820\nmtu = 1420\ntcp_buffer = 65536\nmax_connections_per_peer = 8\ntcp_memory = 1048576\nmax_connections = 64\nhandshake_rate_limit = 5000\nidle_session_timeout = \"5m\""),
            peer("name = \"c1\"\npreshared_key = \"PSK\"\nendpoint = \"control.test:51820\"\npersistent_keepalive = 25")
                .replace("\"PSK\"", &format!("\"{PSK}\"")),
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            (config.interface.listen_port, config.interface.mtu),
            (51820, 1420)
        );
        assert_eq!(config.interface.tcp_buffer, 65536);
        assert_eq!(config.interface.max_connections_per_peer, 8);
        assert_eq!(config.interface.tcp_memory, 1 << 20);
        assert_eq!(config.interface.max_connections, 64);
        assert_eq!(config.interface.handshake_rate_limit, Some(5000));
        assert_eq!(
            config.interface.idle_session_timeout,
            Some(Duration::from_secs(300))
        );
        let api = &config.api;
        assert_eq!(api.port, 8);
        assert_eq!(
            api.allowed_sources,
            Some(vec!["100.64.0.0/24".parse().unwrap()])
        );
        assert_eq!((api.max_running, api.max_tracked), (2, 3));
        assert_eq!(api.default_workdir.as_deref(), Some(Path::new("/")));
        assert_eq!((api.nice_increment, api.oom_score_adj), (0, -5));
        assert_eq!(api.kill_grace, Duration::from_millis(250));
        assert_eq!(api.shutdown_grace, Duration::from_secs(7));
        assert!(!api.tree_tracking);
        assert_eq!(api.state_dir.as_deref(), Some(Path::new("/var/lib/x")));
        assert_eq!((api.log_max_bytes, api.state_max_bytes), (8192, 65536));
        assert_eq!(
            (
                api.header_timeout,
                api.body_timeout,
                api.idle_timeout,
                api.send_timeout
            ),
            (
                Duration::from_secs(2),
                Duration::from_secs(3),
                Duration::from_secs(60),
                Duration::from_secs(9)
            )
        );
        assert_eq!(api.body_min_rate, 0);
        assert_eq!(config.control.connect_timeout, Duration::from_secs(90));
        assert_eq!(config.control.request_timeout, Duration::from_secs(2));
        assert_eq!(
            config.control.socket.as_deref(),
            Some(
                Path::new(FILE)
                    .parent()
                    .unwrap()
                    .join("run/control.sock")
                    .as_path()
            ),
            "relative to the config file"
        );
        assert_eq!(config.control.socket_group.as_deref(), Some("wgagent"));
        assert_eq!(config.control.max_connections, 8);
        assert_eq!(
            config.control.state_dir.as_deref(),
            Some(Path::new("/var/lib/wgagent-control"))
        );
        assert_eq!(
            config.files,
            Files {
                max_write_bytes: 2048,
                max_edit_files: 3,
                fsync: false
            }
        );
        let c1 = config.peer_by_name("c1").unwrap();
        assert_eq!(c1.endpoint, Some("127.0.0.1:51820".parse().unwrap()));
        assert_eq!(c1.persistent_keepalive, Some(25));
        assert_eq!(c1.preshared_key, Some(keys::decode_key(PSK).unwrap()));
        let c2 = config.peer_by_name("c2").unwrap();
        assert_eq!(c2.endpoint, Some("[::1]:51821".parse().unwrap()));
        assert_eq!(c2.persistent_keepalive, None);
        assert_eq!(c2.allowed_ips.len(), 2);
        assert!(config.peer_by_name("c3").is_none());
        // Debug never shows secrets.
        let debug = format!("{config:?}");
        assert!(!debug.contains(OWN) && !debug.contains(PSK) && debug.contains(OWN_PUB));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = parse("[interface]\naddress = = 1\n").unwrap_err();
        let ConfigError::Syntax { line, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*line, 2, "{err}");
        assert!(err.to_string().starts_with(&format!("{FILE}:2:")), "{err}");
    }

    #[test]
    fn unknown_keys_name_the_key_path() {
        let cases = [
            (interface("") + "[bogus]\n", "bogus"),
            (interface("lisen_port = 1"), "interface.lisen_port"),
            (interface("") + "[api]\nmax_procs = 1\n", "api.max_procs"),
            (
                interface("") + &peer("") + &peer("keepalive = 1"),
                "peer[1].keepalive",
            ),
            (
                interface("") + "[control]\ntimeout = 1\n",
                "control.timeout",
            ),
            (interface("") + "[interface.sub]\n", "interface.sub"),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err();
            assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
            let message = error(&text, key);
            assert!(message.contains("expected"), "{message}");
        }
    }

    /// (config text, key path, problem substring) for every kind of invalid value.
    #[rustfmt::skip]
    fn invalid_cases() -> Vec<(String, &'static str, &'static str)> {
        let addr = |list: &str| format!("[interface]\nprivate_key = \"{OWN}\"\naddress = {list}\n");
        let with_peer = |find: &str, replace: &str| interface("") + &peer("").replace(find, replace);
        let with_api = |extra: &str| interface(&format!("[api]\n{extra}"));
        vec![
            ("[api]\n".into(), "interface", "missing"),
            (format!("[interface]\nprivate_key = \"{OWN}\"\n"), "interface.address", "missing"),
            (addr("[]"), "interface.address", "at least one"),
            (addr("\"100.64.0.1\""), "interface.address", "expected a list, found string"),
            (addr("[\"100.64.0.1/24\"]"), "interface.address[0]", "without a prefix"),
            (addr("[\"1.1.1.1\", \"1.1.1.1\"]"), "interface.address[1]", "twice"),
            ("[interface]\naddress = [\"1.1.1.1\"]\n".into(), "interface", "no private key"),
            (interface("private_key_file = \"k\""), "interface.private_key", "not both"),
            (interface("").replace(OWN, "abc"), "interface.private_key", "44 base64 characters"),
            (interface("mtu = \"big\""), "interface.mtu", "expected an integer, found string \"big\""),
            (interface("mtu = 100"), "interface.mtu", "out of range 1280..=9000"),
            (interface("mtu = 1000"), "interface.mtu", "out of range 1280..=9000"),
            (addr("[\"fd00::1\"]") + "mtu = 1000\n", "interface.mtu", "out of range 1280..=9000"),
            (addr("[\"10.0.0.1\", \"10.0.0.2\"]"), "interface.address[1]", "at most one IPv4"),
            (interface("listen_port = 70000"), "interface.listen_port", "70000"),
            (interface("tcp_buffer = 1024"), "interface.tcp_buffer", "out of range"),
            (interface("max_connections_per_peer = 0"), "interface.max_connections_per_peer", "out of range 1..=1024"),
            (interface("tcp_memory = 1000"), "interface.tcp_memory", "out of range"),
            (interface("max_connections = 8"), "interface.max_connections", "out of range 16..=65536"),
            (interface("handshake_rate_limit = 0"), "interface.handshake_rate_limit", "out of range 10..=1000000"),
            (interface("idle_session_timeout = \"500ms\""), "interface.idle_session_timeout", "0 (never) or at least 1s"),
            (interface("idle_session_timeout = -1"), "interface.idle_session_timeout", "negative"),
            (with_api("header_timeout = 0"), "api.header_timeout", "greater than zero"),
            (with_api("idle_timeout = \"0s\""), "api.idle_timeout", "greater than zero"),
            (with_api("body_min_rate = -1"), "api.body_min_rate", "out of range"),
            (interface("api = 3"), "interface.api", "unknown key"),
            ("api = 3\n".to_owned() + &interface(""), "api", "expected a table, found integer 3"),
            ("control = [1]\n".to_owned() + &interface(""), "control", "found array"),
            (with_api("port = 0"), "api.port", "out of range 1..=65535"),
            (with_api("allowed_sources = []"), "api.allowed_sources", "empty list"),
            (with_api("allowed_sources = [\"10.1.2.3/8\"]"), "api.allowed_sources[0]", "did you mean \"10.0.0.0/8\""),
            (with_api("max_running = 10\nmax_tracked = 5"), "api.max_tracked", "below api.max_running"),
            (with_api("default_workdir = \"work\""), "api.default_workdir", "absolute"),
            (with_api("oom_score_adj = 1001"), "api.oom_score_adj", "-1000..=1000"),
            (with_api("nice_increment = -1"), "api.nice_increment", "0..=19"),
            (interface("[files]\nmax_write_bytes = 10"), "files.max_write_bytes", "out of range 1024..="),
            (interface("[files]\nmax_edit_files = 0"), "files.max_edit_files", "out of range 1..=1024"),
            (interface("[files]\nfsync = \"yes\""), "files.fsync", "expected true or false"),
            (interface("[files]\nmax_bytes = 1"), "files.max_bytes", "unknown key"),
            (with_api("kill_grace = \"5x\""), "api.kill_grace", "unknown unit"),
            (with_api("kill_grace = -5"), "api.kill_grace", "negative"),
            (with_api("shutdown_grace = 1.5"), "api.shutdown_grace", "found float 1.5"),
            (with_api("tree_tracking = 1"), "api.tree_tracking", "expected true or false, found integer 1"),
            (with_api("state_dir = \"state\""), "api.state_dir", "absolute"),
            (with_api("log_max_bytes = 10"), "api.log_max_bytes", "out of range"),
            (with_api("state_max_bytes = \"1G\""), "api.state_max_bytes", "expected an integer"),
            (interface("[control]\nconnect_timeout = 0"), "control.connect_timeout", "greater than zero"),
            (interface("[control]\nrequest_timeout = \"3w\""), "control.request_timeout", "unknown unit"),
            (interface("[control]\nmax_connections = 0"), "control.max_connections", "out of range"),
            (interface("[control]\nsocket = \"\""), "control.socket", "empty path"),
            (interface("[control]\nsocket_group = 5"), "control.socket_group", "expected a string"),
            (interface("") + "[peer]\npublic_key = \"x\"\n", "peer", "[[peer]]"),
            (interface("") + "[[peer]]\nallowed_ips = [\"1.2.3.4\"]\n", "peer[0].public_key", "missing"),
            (with_peer("allowed_ips = [\"100.64.0.1\"]", ""), "peer[0].allowed_ips", "missing"),
            (with_peer("[\"100.64.0.1\"]", "[]"), "peer[0].allowed_ips", "at least one"),
            (with_peer("100.64.0.1", "10.0.0.300/32"), "peer[0].allowed_ips[0]",
                "invalid CIDR \"10.0.0.300/32\": \"10.0.0.300\" is not an IP address"),
            (with_peer("100.64.0.1", "10.0.0.1/33"), "peer[0].allowed_ips[0]", "prefix length \"33\""),
            (with_peer("[\"100.64.0.1\"]", "[\"1.1.1.1\", 7]"), "peer[0].allowed_ips[1]", "found integer 7"),
            (with_peer(P1, &P1.replace('v', "-")), "peer[0].public_key", "invalid base64 character '-'"),
            (with_peer(P1, OWN_PUB), "peer[0].public_key", "our own public key"),
            (interface("") + &peer("preshared_key = \"short\""), "peer[0].preshared_key", "44 base64"),
            (interface("") + &peer("persistent_keepalive = 65536"), "peer[0].persistent_keepalive", "0..=65535"),
            (interface("") + &peer("name = \"has space\""), "peer[0].name", "1 to 64 characters"),
            (interface("") + &peer("name = \"10.0.0.1\""), "peer[0].name", "looks like an address"),
            (interface("") + &peer("name = 5"), "peer[0].name", "expected a string"),
        ]
    }

    #[test]
    fn invalid_values_name_key_and_problem() {
        for (text, key, problem) in invalid_cases() {
            let message = error(&text, key);
            assert!(
                message.contains(problem),
                "expected {problem:?} in: {message}"
            );
        }
    }

    #[test]
    fn peers_are_cross_checked() {
        let two = |a: &str, b: &str| interface("") + &peer(a) + &peer(b).replace(P1, P2);
        let message = error(
            &(interface("") + &peer("") + &peer("")),
            "peer[1].public_key",
        );
        assert!(message.contains("same public key as peer[0]"), "{message}");
        let message = error(&two("name = \"x\"", "name = \"x\""), "peer[1].name");
        assert!(message.contains("already used by peer[0]"), "{message}");
        let message = error(&two("", ""), "peer[1].allowed_ips[0]");
        assert!(
            message.contains("also at peer[0].allowed_ips[0]"),
            "{message}"
        );
        let same_peer = peer("").replace("[\"100.64.0.1\"]", "[\"100.64.0.1\", \"100.64.0.1/32\"]");
        let message = error(&(interface("") + &same_peer), "peer[0].allowed_ips[1]");
        assert!(message.contains("already listed"), "{message}");
        // Overlapping but not identical networks are fine: longest prefix match decides.
        let overlap = two("", "").replacen("[\"100.64.0.1\"]", "[\"100.64.0.0/24\"]", 1);
        let config = parse(&overlap).unwrap();
        assert_eq!(config.peers.len(), 2);
        // No peers at all is only a warning.
        let config = parse(&interface("")).unwrap();
        assert!(
            config.warnings[0].contains("no [[peer]]"),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn endpoints_parse_resolve_and_name_the_peer() {
        let with = |endpoint: &str| {
            interface("") + &peer(&format!("name = \"c1\"\nendpoint = \"{endpoint}\""))
        };
        let key = "peer[0].endpoint";
        for (endpoint, problem) in [
            ("10.0.0.1", "expected \"host:port\""),
            ("10.0.0.1:0", "not in 1..=65535"),
            ("10.0.0.1:http", "not in 1..=65535"),
            ("::1:51820", "need brackets"),
            ("[::1]51820", "[IPv6]:port"),
            ("[10.0.0.1]:51820", "not an IPv6 address"),
            ("bad host:51820", "not a valid host name"),
            ("a..b:51820", "not a valid host name"),
        ] {
            let message = error(&with(endpoint), key);
            assert!(
                message.contains(problem),
                "{endpoint}: expected {problem:?} in: {message}"
            );
        }
        // A name that does not resolve is not an error: a warning, and the peer waits for it.
        let config = parse(&with("nowhere.test:51820")).unwrap();
        assert_eq!(config.peers[0].endpoint, None);
        assert_eq!(
            config.pending_endpoints,
            vec![PendingEndpoint {
                public_key: config.peers[0].public_key,
                label: "c1".into(),
                host: "nowhere.test".into(),
                port: 51820,
            }]
        );
        assert!(
            config.warnings.iter().any(|w| w.contains(
                "cannot resolve \"nowhere.test\" for peer[0] (\"c1\"): no such host; retrying"
            )),
            "{:?}",
            config.warnings
        );
        let config = parse(&with("[fe80::1]:1")).unwrap();
        assert_eq!(
            config.peers[0].endpoint,
            Some("[fe80::1]:1".parse().unwrap())
        );
        // The real resolver, for a name /etc/hosts answers (no DNS traffic).
        let config = Config::parse(&with("localhost:51820"), Path::new(FILE)).unwrap();
        let endpoint = config.peers[0].endpoint.unwrap();
        assert!(
            endpoint.ip().is_loopback() && endpoint.port() == 51820,
            "{endpoint}"
        );
    }

    #[test]
    fn key_files_resolve_relative_to_the_config_and_warn() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("agent.key");
        std::fs::write(&key_path, format!("{OWN}\n")).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"100.64.0.10\"]\n"
            .to_owned()
            + &peer("");
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, &text).unwrap();
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let config = Config::load(&config_path).unwrap();
        assert_eq!(keys::encode_public(&config.interface.public_key), OWN_PUB);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);

        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let config = Config::load(&config_path).unwrap();
        assert!(
            config.warnings[0].contains("chmod 600"),
            "{:?}",
            config.warnings
        );

        std::fs::remove_file(&key_path).unwrap();
        let err = Config::load(&config_path).unwrap_err();
        assert!(matches!(err, ConfigError::Key { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("`interface.private_key_file`") && message.contains("agent.key"),
            "{message}"
        );

        // Inline key in a config readable by others: warning; in a 0600 config: none.
        std::fs::write(&config_path, interface("") + &peer("")).unwrap();
        let config = Config::load(&config_path).unwrap();
        assert!(
            config.warnings[0].contains("interface.private_key"),
            "{:?}",
            config.warnings
        );
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Config::load(&config_path).unwrap().warnings.is_empty());

        let err = Config::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(
            matches!(err, ConfigError::Read { .. }) && err.to_string().contains("missing.toml")
        );
    }

    #[test]
    fn threads_default_to_the_cores_capped_and_take_one_to_64() {
        let config = parse(&(interface("") + &peer(""))).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.interface.threads, cores.min(8));
        assert_eq!(Interface::default_threads(), cores.min(8));
        for n in [1, 2, 64] {
            let config = parse(&(interface(&format!("threads = {n}")) + &peer(""))).unwrap();
            assert_eq!(config.interface.threads, n);
        }
        for bad in ["0", "65", "\"two\""] {
            error(
                &(interface(&format!("threads = {bad}")) + &peer("")),
                "interface.threads",
            );
        }
    }

    #[test]
    fn live_peer_keys_uapi_reload_psk_file_and_log() {
        let config = parse(&(interface("") + &peer(""))).unwrap();
        let i = &config.interface;
        assert_eq!(i.name, None);
        assert_eq!(i.name_or(Interface::DEFAULT_NAME), "wgagent0");
        assert!(i.uapi && i.uapi_socket.is_none() && !i.replace_peers_on_reload);
        assert_eq!(config.log, Log::default());

        let text = interface(
            "name = \"wg-a.1\"\nuapi = false\nuapi_socket = \"run/a.sock\"\n\
             replace_peers_on_reload = true",
        ) + "[log]\nlevel = \"warn,wgagent::wg=debug\"\n";
        let config = parse(&text).unwrap();
        let i = &config.interface;
        assert_eq!(i.name.as_deref(), Some("wg-a.1"));
        assert!(!i.uapi && i.replace_peers_on_reload);
        assert_eq!(
            i.uapi_socket.as_deref(),
            Some(Path::new("/etc/wgagent/run/a.sock"))
        );
        assert_eq!(config.log.level, "warn,wgagent::wg=debug");
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.metrics.listen, None);
        let m = parse(&(interface("") + "[metrics]\nlisten = \"127.0.0.1:9586\"\n")).unwrap();
        assert_eq!(m.metrics.listen, Some("127.0.0.1:9586".parse().unwrap()));
        assert!(!m.warnings.iter().any(|w| w.contains("metrics")));
        let m = parse(&(interface("") + "[metrics]\nlisten = \"0.0.0.0:9586\"\n")).unwrap();
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("reachable from outside"))
        );
        let json = parse(&(interface("") + "[log]\nformat = \"json\"\n")).unwrap();
        assert_eq!(json.log.format, LogFormat::Json);

        for (text, key, problem) in [
            (interface("name = \"\""), "interface.name", "1 to 15"),
            (
                interface("name = \"sixteen-chars-xx\""),
                "interface.name",
                "1 to 15",
            ),
            (interface("name = \"a/b\""), "interface.name", "1 to 15"),
            (
                interface("uapi = \"yes\""),
                "interface.uapi",
                "true or false",
            ),
            (
                interface("uapi_socket = \"\""),
                "interface.uapi_socket",
                "empty",
            ),
            (
                interface("replace_peers_on_reload = 1"),
                "interface.replace_peers_on_reload",
                "true or false",
            ),
            (
                interface("") + "[log]\nlevel = \"info,[\"\n",
                "log.level",
                "not a log filter",
            ),
            (
                interface("") + "[log]\nlevl = 1\n",
                "log.levl",
                "unknown key",
            ),
            (
                interface("") + "[log]\nformat = \"xml\"\n",
                "log.format",
                "not a log format",
            ),
            (
                interface("") + "[metrics]\nlisten = \"localhost\"\n",
                "metrics.listen",
                "not an address:port",
            ),
            (
                interface("")
                    + &peer(&format!(
                        "preshared_key = \"{PSK}\"\npreshared_key_file = \"p\""
                    )),
                "peer[0].preshared_key",
                "not both",
            ),
            (
                interface("") + &peer("preshared_key_file = \"/nonexistent/psk\""),
                "peer[0].preshared_key_file",
                "cannot read",
            ),
        ] {
            let message = error(&text, key);
            assert!(message.contains(problem), "{problem:?} not in: {message}");
        }

        // A pre-shared key from a file (relative to the config), with the permission warning.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c1.psk"), format!("{PSK}\n")).unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            interface("") + &peer("preshared_key_file = \"c1.psk\""),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let psk_path = dir.path().join("c1.psk");
        std::fs::set_permissions(&psk_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.peers[0].preshared_key,
            Some(keys::decode_key(PSK).unwrap())
        );
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("c1.psk") && w.contains("chmod 600")),
            "{:?}",
            config.warnings
        );

        // Built in code: defaults, no peers.
        let built = Config::new(
            keys::decode_private(OWN).unwrap(),
            vec!["100.64.0.10".parse().unwrap()],
        );
        assert_eq!(keys::encode_public(&built.interface.public_key), OWN_PUB);
        assert_eq!(built.interface.name, None);
        assert_eq!((built.api.clone(), built.peers.len()), (Api::default(), 0));
    }

    #[test]
    fn durations() {
        // The grammar itself is tested in `crate::duration`; here, that config values use it.
        let ok = [
            ("250ms", 250),
            ("30s", 30_000),
            ("90", 90_000),
            ("1.5s", 1_500),
            ("1h1m1s1ms", 3_661_001),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for text in ["", "s", "-1s", "1h30", "18446744073709551615h"] {
            assert!(parse_duration(text).is_err(), "{text:?} should fail");
        }
    }

    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let agent = Config::load(&dir.join("agent.example.toml")).unwrap();
        assert_eq!(agent.interface.addresses.len(), 2);
        assert_eq!(agent.interface.listen_port, 51820);
        assert_eq!(agent.interface.mtu, Interface::DEFAULT_MTU);
        assert_eq!(agent.interface.tcp_buffer, Interface::DEFAULT_TCP_BUFFER);
        assert_eq!(
            agent.interface.max_connections_per_peer,
            Interface::DEFAULT_MAX_CONNECTIONS_PER_PEER
        );
        assert_eq!(agent.interface.tcp_memory, Interface::DEFAULT_TCP_MEMORY);
        assert_eq!(
            agent.interface.name.as_deref(),
            Some(Interface::DEFAULT_NAME)
        );
        assert!(agent.interface.uapi && agent.interface.uapi_socket.is_none());
        assert!(!agent.interface.replace_peers_on_reload);
        assert_eq!(agent.interface.idle_session_timeout, Some(Duration::ZERO));
        assert_eq!(agent.log, Log::default());
        // Every documented default in the example matches `Api::default()`.
        let sources = vec![
            "100.64.0.0/24".parse().unwrap(),
            "fd7a:115c:a1e0::/64".parse().unwrap(),
        ];
        assert_eq!(
            agent.api,
            Api {
                allowed_sources: Some(sources),
                isolation: crate::trust::Isolation::Peer,
                ..Api::default()
            }
        );
        let audit = agent.audit.as_ref().unwrap();
        assert_eq!(
            (audit.max_bytes, audit.keep, audit.fail_closed),
            (
                crate::trust::AuditConfig::DEFAULT_MAX_BYTES,
                crate::trust::AuditConfig::DEFAULT_KEEP,
                true
            )
        );
        assert_eq!(agent.peers.len(), 2);
        {
            use crate::trust::Permission::*;
            let a = &agent.peer_by_name("control-1").unwrap().access;
            assert!([Run, Read, Signal, Files].into_iter().all(|p| a.allows(p)));
            assert!(!a.allows(Metrics));
            let b = &agent.peer_by_name("control-2").unwrap().access;
            assert!(b.allows(Read) && !b.allows(Run) && !b.allows(Signal));
        }
        let control_1 = agent.peer_by_name("control-1").unwrap();
        assert_eq!(control_1.persistent_keepalive, Some(25));
        assert!(control_1.endpoint.is_some());
        assert_eq!(
            agent.peer_by_name("control-2").unwrap().endpoint,
            Some("[2001:db8::2]:51820".parse().unwrap())
        );

        let control = Config::load(&dir.join("control.example.toml")).unwrap();
        assert_eq!(control.control, Control::default());
        assert_eq!(
            control.interface.idle_session_timeout,
            Some(Interface::DEFAULT_CONTROL_IDLE_SESSION_TIMEOUT)
        );
        assert_eq!(control.interface.listen_port, 51820);
        assert_eq!(
            control.interface.name.as_deref(),
            Some(Interface::DEFAULT_CONTROL_NAME)
        );
        let nat = control.peer_by_name("agent-nat-1").unwrap();
        assert_eq!((nat.endpoint, nat.persistent_keepalive), (None, None));
        assert!(control.peer_by_name("agent-db").unwrap().endpoint.is_some());

        // The two examples are a matching pair: each side's peer key is the other's public key.
        assert_eq!(nat.public_key, agent.interface.public_key);
        assert_eq!(control_1.public_key, control.interface.public_key);
        assert!(
            control_1
                .allowed_ips
                .iter()
                .any(|net| net.contains(control.interface.addresses[0]))
        );
        assert!(
            nat.allowed_ips
                .iter()
                .any(|net| net.contains(agent.interface.addresses[0]))
        );
    }

    #[test]
    fn trust_keys() {
        use crate::trust::{Isolation, Permission};
        let key = keys::encode_public(&keys::public_key(&keys::generate()));
        let text = |extra_api: &str, peer: &str, audit: &str| {
            format!(
                "[interface]\nprivate_key = \"{}\"\naddress = [\"10.0.0.1\"]\n[api]\n{extra_api}\n\
                 [[peer]]\npublic_key = \"{key}\"\nallowed_ips = [\"10.0.0.2\"]\n{peer}\n{audit}",
                keys::encode_private(&keys::generate())
            )
        };
        let parse = |t: String| Config::parse(&t, Path::new("/etc/wgagent/a.toml"));
        let c = parse(text(
            "isolation = \"peer\"",
            "allow = [\"read\", \"signal\", \"read\"]\nrun_as = \"sandbox\"\nusers = [\"a\", \"b\", \"a\"]",
            "[audit]\npath = \"audit.log\"\nmax_bytes = 4096\nkeep = 0\nfail_closed = false",
        ))
        .unwrap();
        assert_eq!(c.api.isolation, Isolation::Peer);
        let a = &c.peers[0].access;
        assert!(a.allows(Permission::Read) && a.allows(Permission::Signal));
        assert!(!a.allows(Permission::Run));
        assert_eq!(a.run_as.as_deref(), Some("sandbox"));
        assert_eq!(a.users, ["a", "b"]);
        let audit = c.audit.unwrap();
        assert_eq!(
            audit.path,
            Path::new("/etc/wgagent/audit.log"),
            "relative to the file"
        );
        assert_eq!(
            (audit.max_bytes, audit.keep, audit.fail_closed),
            (4096, 0, false)
        );

        // Defaults: full access, no run-as, no isolation, no audit log.
        let c = parse(text("", "", "")).unwrap();
        assert_eq!(c.peers[0].access, crate::trust::Access::default());
        assert_eq!(c.api.isolation, Isolation::None);
        assert!(c.audit.is_none());

        let err = |t: String| parse(t).unwrap_err().to_string();
        let e = err(text("", "allow = [\"write\"]", ""));
        assert!(
            e.contains("peer[0].allow[0]") && e.contains("\"write\" is not a permission"),
            "{e}"
        );
        let e = err(text("isolation = \"tenant\"", "", ""));
        assert!(
            e.contains("api.isolation") && e.contains("\"none\" or \"peer\""),
            "{e}"
        );
        let e = err(text("", "run_as = \"a b\"", ""));
        assert!(e.contains("peer[0].run_as"), "{e}");
        let e = err(text("", "", "[audit]\nkeep = 3"));
        assert!(e.contains("audit.path"), "{e}");
        let e = err(text("", "", "[audit]\npath = \"/x\"\nmax_bytes = 10"));
        assert!(e.contains("audit.max_bytes"), "{e}");
        let e = err(text("", "", "[audit]\npath = \"/x\"\nrotate = 1"));
        assert!(e.contains("audit.rotate"), "{e}");
    }
}
