//! The control daemon (`wgagent control`): a long-lived control node that holds the WireGuard
//! sessions and the agents' learned endpoints, and serves the CLI, `wgagent mcp` and any local
//! HTTP client on a Unix socket.
//!
//! Why: a short-lived CLI node has no session and no endpoint for an agent behind NAT, so it can
//! only wait until the agent's own timers start a handshake towards it. The daemon is where the
//! agents' keepalives arrive; it answers in one round trip.
//!
//! Owns: the node, the socket ([`socket`]: path, mode, bounded accept loop), the forwarder and
//! the daemon's own routes ([`forward`]), resolving agent names ([`target`]), the wire types of
//! its routes ([`types`]), the WireGuard UAPI socket (`wg show wgcontrol0`; the node serves it,
//! as on an agent) and live peer reloads ([`Daemon::reload`]), and shutdown (one cancellation
//! token, one task tracker).
//! Leaves to the caller: loading the config, signals, logging.
//!
//! Access to the socket equals access to every agent the daemon can reach (like `docker.sock`):
//! it is mode 0600, or 0660 with `socket_group`.

mod forward;
pub mod socket;
mod state;
pub mod target;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use forward::{MAX_IDLE_PER_AGENT, MAX_POOLED_AGENTS};
pub use target::{Agents, ResolveError, Target};

use crate::client::AgentOptions;
use crate::config::Config;
use crate::node::{self, Node, NodeConfig, NodeError};
use crate::wg::Applied;
use crate::wg::uapi::server::{self as uapi, BindError};

/// Where and how the daemon serves; see `[control]` in `config/control.example.toml`.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The Unix socket path.
    pub socket: PathBuf,
    /// Group allowed to use the socket (mode 0660); `None` = the daemon's user only (0600).
    pub socket_group: Option<String>,
    /// Local connections served at once; more wait until one closes.
    pub max_connections: usize,
    /// Where the agents' learned endpoints are saved across restarts; `None` = nowhere.
    pub state_dir: Option<PathBuf>,
}

impl DaemonOptions {
    /// The options a config asks for: `[control] socket` (else [`socket::default_path`]),
    /// `socket_group`, `max_connections`.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            socket: cfg
                .control
                .socket
                .clone()
                .unwrap_or_else(socket::default_path),
            socket_group: cfg.control.socket_group.clone(),
            max_connections: cfg.control.max_connections,
            state_dir: cfg.control.state_dir.clone(),
        }
    }
}

/// Why the daemon could not start. Only `InUse` goes away by itself (when the other daemon
/// stops); the rest need a config or filesystem fix.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The control socket could not be bound or given its mode and group.
    #[error("control socket {}: {source}", path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("control socket {} is served by a running daemon; stop it first or choose another --socket", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// `socket_group` names no group, or one this user cannot hand the socket to.
    #[error("socket_group {group:?}: {problem}")]
    Group {
        /// The configured group.
        group: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The WireGuard node could not start (UDP port, keys, addresses).
    #[error("starting the WireGuard node: {0}")]
    Node(#[from] NodeError),
    /// The WireGuard UAPI socket is served by another live node, or something is in the way.
    #[error(transparent)]
    Uapi(#[from] BindError),
    /// `[metrics] listen` could not be bound.
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why it could not be bound.
        #[source]
        source: std::io::Error,
    },
}

/// A running daemon. Dropping it stops serving (use [`Daemon::shutdown`] to wait for that).
pub struct Daemon {
    shared: Arc<forward::Shared>,
    socket: PathBuf,
    state_dir: Option<PathBuf>,
    /// The config file in force, for the next reload's difference.
    in_force: parking_lot::Mutex<Config>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Where `[metrics] listen` is bound, if set.
    metrics_addr: Option<std::net::SocketAddr>,
}

impl Daemon {
    /// Starts the node (on the config's `listen_port`: the port agents dial) and serves the
    /// socket. Must be called inside a tokio runtime.
    pub async fn start(cfg: &Config, opts: DaemonOptions) -> Result<Daemon, ControlError> {
        let gid = opts
            .socket_group
            .as_deref()
            .map(socket::group_id)
            .transpose()?;
        // Bind the socket first: a second daemon must fail on it before touching the UDP port.
        let listener = socket::bind(&opts.socket, gid)?;
        let uapi_listener = match node::bind_uapi(
            &cfg.interface,
            crate::config::Interface::DEFAULT_CONTROL_NAME,
        ) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(&opts.socket);
                return Err(e.into());
            }
        };
        let mut node_cfg = NodeConfig::from(cfg);
        // Thousands of agents handshake with the daemon (all at once after a restart).
        node_cfg.limits.handshake_rate_limit = cfg
            .interface
            .handshake_rate_limit
            .unwrap_or(crate::config::Interface::DEFAULT_CONTROL_HANDSHAKE_RATE_LIMIT);
        // Most of a fleet is idle most of the time: sessions cost ~11 KB each.
        node_cfg.limits.idle_session_timeout = cfg
            .interface
            .idle_session_timeout
            .or(Some(
                crate::config::Interface::DEFAULT_CONTROL_IDLE_SESSION_TIMEOUT,
            ))
            .filter(|t| !t.is_zero());
        if let Some(dir) = &opts.state_dir {
            let saved = state::load(dir);
            let mut seeded = 0;
            for p in node_cfg.peers.iter_mut().filter(|p| p.endpoint.is_none()) {
                p.endpoint = state::lookup(&saved, &p.public_key);
                seeded += usize::from(p.endpoint.is_some());
            }
            if seeded > 0 {
                tracing::info!(seeded, "endpoints saved by the previous run restored");
            }
        }
        let node = match Node::start(node_cfg).await {
            Ok(n) => Arc::new(n),
            Err(e) => {
                let _ = std::fs::remove_file(&opts.socket);
                return Err(e.into());
            }
        };
        let agent_opts = AgentOptions {
            connect_timeout: cfg.control.connect_timeout,
            request_timeout: cfg.control.request_timeout,
            max_idle: MAX_IDLE_PER_AGENT,
            ..AgentOptions::default()
        };
        let shared = Arc::new(forward::Shared::new(
            node,
            Agents::from_config(cfg),
            agent_opts,
            opts.socket.display().to_string(),
            opts.max_connections,
        ));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        if let Some(dir) = opts.state_dir.clone() {
            tracker.spawn(save_endpoints(shared.clone(), dir, cancel.clone()));
        }
        node::resolve_later(&shared.node, &cfg.pending_endpoints, &tracker, &cancel);
        // The same per-peer families as an agent's, on the host only (no tunnel API here).
        let mut metrics_addr = None;
        if let Some(addr) = cfg.metrics.listen {
            let metrics = crate::metrics::Metrics::new().with_node(&shared.node);
            let served =
                crate::metrics::listen::serve(addr, Arc::new(metrics), &tracker, cancel.clone())
                    .await;
            match served {
                Ok(bound) => metrics_addr = Some(bound),
                Err(source) => {
                    cancel.cancel();
                    let _ = std::fs::remove_file(&opts.socket);
                    return Err(ControlError::Metrics { addr, source });
                }
            }
        }
        if let Some(l) = uapi_listener {
            let handler = Arc::new(shared.node.as_ref().clone());
            tracker.spawn(uapi::serve(l, handler, cancel.clone()));
        }
        let s = shared.clone();
        tracker.spawn(socket::serve(
            listener,
            opts.max_connections.max(1),
            cancel.clone(),
            tracker.clone(),
            shared.counters.clone(),
            move |req, uid| forward::handle(s.clone(), req, uid),
        ));
        Ok(Daemon {
            shared,
            socket: opts.socket,
            state_dir: opts.state_dir,
            in_force: parking_lot::Mutex::new(cfg.clone()),
            cancel,
            tracker,
            metrics_addr,
        })
    }

    /// The host address the metrics listener is bound to (`[metrics] listen`), if any.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// The control socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's WireGuard node.
    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    /// Takes the agents of a new config (names, addresses, API port). Peers themselves are the
    /// node's: see [`Daemon::reload`].
    pub fn set_agents(&self, cfg: &Config) {
        self.shared.set_agents(Agents::from_config(cfg));
    }

    /// Applies a re-read config live: the node's peers, private key and port by the same rule
    /// as an agent's reload (`Node::file_update`), then the agent names. All or nothing for the
    /// peers: on error nothing changed and the old config stays in force. Keys that need a
    /// restart (tunnel addresses, MTU, the UAPI socket) keep their old value and are logged.
    pub async fn reload(&self, cfg: &Config) -> Result<Applied, NodeError> {
        let old = self.in_force.lock().clone();
        let i = (&old.interface, &cfg.interface);
        if i.0.addresses != i.1.addresses
            || i.0.mtu != i.1.mtu
            || i.0.tcp_buffer != i.1.tcp_buffer
            || i.0.name != i.1.name
            || i.0.uapi != i.1.uapi
            || i.0.uapi_socket != i.1.uapi_socket
        {
            tracing::warn!(
                "the tunnel addresses, MTU, TCP buffer or UAPI socket changed; they take effect \
                 after a restart"
            );
        }
        let applied = self
            .shared
            .node
            .update(self.shared.node.file_update(&old, cfg))
            .await?;
        self.set_agents(cfg);
        // Names still unresolved in the new file (a task per name ends once it resolves or
        // its peer has an endpoint, so earlier reloads' tasks for the same name stop too).
        node::resolve_later(
            &self.shared.node,
            &cfg.pending_endpoints,
            &self.tracker,
            &self.cancel,
        );
        *self.in_force.lock() = cfg.clone();
        Ok(applied)
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), stops the node and removes
    /// the socket file. True if everything stopped within `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        let served = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
        let _ = std::fs::remove_file(&self.socket);
        if let Some(dir) = &self.state_dir
            && let Err(e) = state::save(dir, &self.shared.node.stats().wg)
        {
            tracing::warn!("cannot save endpoints in {}: {e}", dir.display());
        }
        let node = self.shared.node.shutdown(Duration::from_secs(2)).await;
        served && node
    }
}

/// How often learned endpoints are saved (and at shutdown).
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// Saves the endpoints every [`SAVE_EVERY`] when they changed, until `cancel`.
async fn save_endpoints(shared: Arc<forward::Shared>, dir: PathBuf, cancel: CancellationToken) {
    let mut last: Vec<Option<std::net::SocketAddr>> = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(SAVE_EVERY) => {}
        }
        let stats = shared.node.stats().wg;
        let now: Vec<_> = stats.peers.iter().map(|p| p.endpoint).collect();
        if now == last {
            continue;
        }
        match state::save(&dir, &stats) {
            Ok(()) => last = now,
            Err(e) => tracing::warn!("cannot save endpoints in {}: {e}", dir.display()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
