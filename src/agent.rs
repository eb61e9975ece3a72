//! [`Agent`] = node + process manager + API servers + the WireGuard UAPI socket: the agent role
//! as a library type. The `agent` verb, `demo`, the integration tests and the benchmarks all
//! assemble the agent through it (there is no second copy of this wiring).
//!
//! Owns: starting the parts in order, serving the API on every tunnel address (only there:
//! [`serve_api`] is the one place the API is served), the UAPI socket, [`Agent::reload`] (the
//! difference between the configuration in force and a new one, applied live), and
//! [`Agent::shutdown`] (processes first, then servers, then the node) under one
//! `CancellationToken` and one `TaskTracker`.
//! Leaves to the caller: reading the configuration file, signals, logging setup (the log level
//! of a reload is the caller's, since the subscriber is process-wide).
//!
//! The reload rule for peers is `node`'s (`Node::file_update`, shared with the control daemon):
//! the file wins for the peers it lists, peers deleted from it are removed, peers added live
//! that no file listed are kept unless `[interface] replace_peers_on_reload = true`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::config::{self, Config};
use crate::keys;
use crate::netstack::TcpListener;
use crate::node::{self, Node, NodeConfig, NodeError};
use crate::proc::{Manager, ManagerConfig};
use crate::trust::{AuditLog, Identify, Policy, Trust};
use crate::wg::uapi::server::{self as uapi, BindError};
use crate::wg::{Applied, PublicKey};

/// A running agent. Dropping it stops the API and UAPI servers (running processes are only
/// ended by [`Agent::shutdown`]).
pub struct Agent {
    node: Node,
    manager: Manager,
    state: AppState,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// The configuration in force, for the next reload's difference; `None` for an agent
    /// attached to a node it did not start (no reload).
    in_force: Mutex<Option<Config>>,
    shutdown_grace: Mutex<Duration>,
    uapi_path: Option<PathBuf>,
    /// Cancels the background lookups of the configuration in force (`node::resolve_later`).
    resolving: Mutex<CancellationToken>,
    /// The host address `[metrics] listen` is served on, if configured.
    metrics_addr: Option<SocketAddr>,
}

/// Why an agent could not start or reload. `Node` and `Uapi` at start are fixed by changing the
/// configuration (or stopping the other process); a refused reload left everything as it was.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The node could not start, or refused the new peers (nothing was changed).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The UAPI socket is served by another live process, or something else is in the way.
    #[error(transparent)]
    Uapi(#[from] BindError),
    /// The process state directory (`[api] state_dir`) cannot be used; fix its permissions or
    /// choose another.
    #[error("process state: {0}")]
    StateDir(#[source] crate::proc::ProcError),
    /// `[metrics] listen` could not be bound (in use, not an address of this host).
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: SocketAddr,
        /// Why it could not be bound.
        #[source]
        source: std::io::Error,
    },
    /// This agent was attached to a node with [`Agent::attach`]; only agents started from a
    /// configuration can reload one.
    #[error("this agent was not started from a configuration; it cannot reload one")]
    NotReloadable,
    /// The audit log (`[audit] path`) cannot be opened; fix the path or its directory.
    #[error("audit log {}: {source}", path.display())]
    Audit {
        /// The configured audit log path.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: std::io::Error,
    },
}

/// What a reload changed, and what it could not change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Peers added, updated, removed; whether the private key changed.
    pub peers: Applied,
    /// `[api]` values applied live (key names, e.g. `api.max_running`).
    pub applied: Vec<&'static str>,
    /// Keys whose new value needs a restart; their old value stays in force.
    pub restart_required: Vec<&'static str>,
}

impl Agent {
    /// Starts the node, binds the UAPI socket (unless `[interface] uapi = false`), starts the
    /// process manager and serves the API on every tunnel address. Must be called inside a
    /// tokio runtime.
    ///
    /// A UAPI directory the agent cannot write is logged once and the agent runs without the
    /// socket; a socket another live node serves is an error naming the path.
    pub async fn start(config: &Config) -> Result<Agent, AgentError> {
        // The socket first: a second node with the same name must fail before it binds UDP.
        let listener = node::bind_uapi(&config.interface, config::Interface::DEFAULT_NAME)?;
        // Process records and logs survive restarts in the state directory; an unusable one
        // is an error at start (never a silent temporary directory).
        let manager = Manager::open(manager_config(
            &config.api,
            Some(config.api.state_dir_or_default()),
        ))
        .map_err(AgentError::StateDir)?;
        tracing::info!(
            state_dir = %manager.state_dir().display(),
            instance_id = manager.instance_id(),
            "process state"
        );
        let audit = match &config.audit {
            None => None,
            Some(a) => Some(
                AuditLog::open(a.clone()).map_err(|source| AgentError::Audit {
                    path: a.path.clone(),
                    source,
                })?,
            ),
        };
        if let Some(a) = &config.audit {
            tracing::info!(path = %a.path.display(), fail_closed = a.fail_closed, "audit log");
        }
        if !crate::proc::is_root()
            && let Some(p) = config
                .peers
                .iter()
                .find(|p| p.access.run_as.is_some() || !p.access.users.is_empty())
        {
            tracing::warn!(
                peer = p.label(),
                "run_as/users are set but the agent is not root: starts as another user will \
                 be refused (400)"
            );
        }
        let node = Node::start(NodeConfig::from(config)).await?;
        let trust = Trust::new(
            Some(Arc::new(node.clone()) as Arc<dyn Identify>),
            policy(config),
            audit,
        );
        let mut agent = Agent::assemble(node, manager, &config.api, &config.files, trust)?;
        if let Some(addr) = config.metrics.listen {
            let metrics = agent.state.metrics.clone();
            let cancel = agent.cancel.clone();
            let bound = crate::metrics::listen::serve(addr, metrics, &agent.tracker, cancel)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?;
            agent.metrics_addr = Some(bound);
        }
        agent.uapi_path = listener.as_ref().map(|l| l.path().to_owned());
        if let Some(listener) = listener {
            let handler = Arc::new(agent.node.clone());
            agent
                .tracker
                .spawn(uapi::serve(listener, handler, agent.cancel.clone()));
        }
        *agent.in_force.lock() = Some(config.clone());
        node::resolve_later(
            &agent.node,
            &config.pending_endpoints,
            &agent.tracker,
            &agent.resolving.lock(),
        );
        tracing::info!(
            public_key = %keys::encode_public(&agent.node.public_key()),
            addresses = ?agent.node.addresses(),
            udp_port = agent.node.udp_addr().port(),
            api_port = config.api.port,
            peers = config.peers.len(),
            "agent up; the API is served on the tunnel addresses only"
        );
        Ok(agent)
    }

    /// Serves the API of an agent on a node started elsewhere (tests, embedding): no UAPI
    /// socket, and no [`reload`](Agent::reload); `[files]` at its defaults; process state in
    /// `api.state_dir`, or in a temporary directory of its own when that is unset. The node's
    /// peers are the caller's business.
    pub fn attach(node: Node, api: &config::Api) -> Result<Agent, AgentError> {
        let manager = Manager::new(manager_config(api, api.state_dir.clone()));
        let trust = Trust::new(
            Some(Arc::new(node.clone()) as Arc<dyn Identify>),
            Policy {
                isolation: api.isolation,
                ..Policy::default()
            },
            None,
        );
        Agent::assemble(node, manager, api, &config::Files::default(), trust)
    }

    fn assemble(
        node: Node,
        manager: Manager,
        api_cfg: &config::Api,
        files: &config::Files,
        trust: Trust,
    ) -> Result<Agent, AgentError> {
        let serve_cfg = api::serve::ServeConfig::from_api(api_cfg);
        let mut state = AppState::new(manager.clone());
        state.metrics = Arc::new(
            crate::metrics::Metrics::new()
                .with_api()
                .with_server(serve_cfg.counters.clone())
                .with_processes(&manager)
                .with_node(&node),
        );
        state.trust = trust;
        *state.allowed_sources.write() = api_cfg.allowed_sources.clone().unwrap_or_default();
        state.files = crate::files::Files::new((*files).into());
        let router = api::router(state.clone());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        for listener in node.listen(api_cfg.port)? {
            tracker.spawn(serve_api(
                listener,
                router.clone(),
                serve_cfg.clone(),
                cancel.clone(),
            ));
        }
        Ok(Agent {
            node,
            manager,
            state,
            resolving: Mutex::new(cancel.child_token()),
            cancel,
            tracker,
            in_force: Mutex::new(None),
            shutdown_grace: Mutex::new(api_cfg.shutdown_grace),
            uapi_path: None,
            metrics_addr: None,
        })
    }

    /// Applies the difference between the configuration in force and `new` while everything
    /// runs: peers (see the module docs for the rule), the private key, the UDP port, and the
    /// `[api]` limits (`max_running`, `max_tracked`, `allowed_sources`, `shutdown_grace`).
    /// Running processes and their records are untouched. Keys that need a restart (`address`,
    /// `api.port`, ...) keep their old value and are listed in the report.
    ///
    /// All or nothing for the peers: if the node refuses the update, nothing changed and the
    /// old configuration stays in force.
    pub async fn reload(&self, new: &Config) -> Result<ReloadReport, AgentError> {
        let Some(old) = self.in_force.lock().clone() else {
            return Err(AgentError::NotReloadable);
        };
        let mut report = ReloadReport::default();
        let mut effective = new.clone();
        keep_restart_only_values(&old, &mut effective, &mut report.restart_required);

        let update = self.node.file_update(&old, &effective);
        report.peers = self.node.update(update).await?;

        let api = &effective.api;
        if api.max_running != old.api.max_running || api.max_tracked != old.api.max_tracked {
            self.manager.set_limits(api.max_running, api.max_tracked);
            report
                .applied
                .extend(["api.max_running", "api.max_tracked"]);
        }
        if api.allowed_sources != old.api.allowed_sources {
            *self.state.allowed_sources.write() = api.allowed_sources.clone().unwrap_or_default();
            report.applied.push("api.allowed_sources");
        }
        if api.shutdown_grace != old.api.shutdown_grace {
            *self.shutdown_grace.lock() = api.shutdown_grace;
            report.applied.push("api.shutdown_grace");
        }
        let resolving = self.cancel.child_token();
        std::mem::replace(&mut *self.resolving.lock(), resolving.clone()).cancel();
        node::resolve_later(
            &self.node,
            &effective.pending_endpoints,
            &self.tracker,
            &resolving,
        );
        let access = |c: &Config| -> Vec<_> { c.peers.iter().map(|p| p.access.clone()).collect() };
        if api.isolation != old.api.isolation || access(&effective) != access(&old) {
            self.state.trust.set_policy(policy(&effective));
            report.applied.push("peer.access");
        }
        // SIGHUP also means "logrotate moved the file" (the usual postrotate).
        if let Some(log) = self.state.trust.audit_log()
            && let Err(e) = log.reopen()
        {
            tracing::error!(path = %log.config().path.display(), "reopening the audit log: {e}");
        }
        *self.in_force.lock() = Some(effective);
        Ok(report)
    }

    /// Stops the agent within `deadline`: process groups get `[api] shutdown_grace` (capped by
    /// the deadline) and are then killed (always, even past the deadline), the API and UAPI
    /// servers stop (in-flight requests finish), then the node. True when everything stopped in
    /// time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        let grace = (*self.shutdown_grace.lock()).min(deadline);
        // Never cut short: the manager's own bound (grace, then SIGKILL and a short wait) is what
        // guarantees that no child outlives the agent; a late finish only makes this return false.
        self.manager.shutdown(grace).await;
        let processes = tokio::time::Instant::now() <= until;
        self.cancel.cancel();
        self.tracker.close();
        let servers = tokio::time::timeout_at(until, self.tracker.wait())
            .await
            .is_ok();
        if !servers {
            tracing::warn!("API connections still open at the shutdown deadline; closing them");
        }
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let node = self.node.shutdown(left).await;
        processes && servers && node
    }

    /// The node this agent serves on (peers, counters, tunnel sockets).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// `[api] shutdown_grace` in force (a reload may change it).
    pub fn shutdown_grace(&self) -> Duration {
        *self.shutdown_grace.lock()
    }

    /// The process manager behind the API.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// The agent's current public key (it changes when the key is rotated).
    pub fn public_key(&self) -> PublicKey {
        self.node.public_key()
    }

    /// The WireGuard UDP socket's local address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.node.udp_addr()
    }

    /// The tunnel addresses the API is served on.
    pub fn addresses(&self) -> &[IpAddr] {
        self.node.addresses()
    }

    /// The host address the metrics listener is bound to (`[metrics] listen`), if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The UAPI socket being served, if any.
    pub fn uapi_socket(&self) -> Option<&Path> {
        self.uapi_path.as_deref()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Serves the API router on one tunnel listener until `cancel` fires; in-flight requests finish.
/// The only place the agent serves the API: [`api::serve::serve`] (hyper HTTP/1 with header,
/// body and idle timeouts, JSON answers to malformed requests, lingering close).
pub async fn serve_api(
    listener: TcpListener,
    router: Router,
    cfg: api::serve::ServeConfig,
    cancel: CancellationToken,
) {
    api::serve::serve(listener, router, cfg, cancel).await;
}

/// The access rules of the configured peers and the isolation mode.
fn policy(config: &Config) -> Policy {
    Policy {
        peers: config
            .peers
            .iter()
            .map(|p| (p.public_key.to_bytes(), p.access.clone()))
            .collect(),
        isolation: config.api.isolation,
    }
}

fn manager_config(api: &config::Api, state_dir: Option<PathBuf>) -> ManagerConfig {
    ManagerConfig {
        max_running: api.max_running,
        max_tracked: api.max_tracked,
        default_workdir: api.default_workdir.clone(),
        nice_increment: i32::from(api.nice_increment),
        oom_score_adj: Some(i32::from(api.oom_score_adj)),
        kill_grace: api.kill_grace,
        tree_tracking: api.tree_tracking,
        state_dir,
        log_max_bytes: api.log_max_bytes,
        state_max_bytes: api.state_max_bytes,
        default_limits: api.default_limits,
        max_limits: api.max_limits,
        cgroups: api.cgroups,
        supervisor: Default::default(),
    }
}

/// Puts back the old value of every key that cannot change while the agent runs, and lists
/// the ones that differed.
fn keep_restart_only_values(old: &Config, new: &mut Config, restart: &mut Vec<&'static str>) {
    if new.interface.addresses != old.interface.addresses {
        new.interface.addresses = old.interface.addresses.clone();
        restart.push("interface.address");
    }
    if new.audit != old.audit {
        new.audit.clone_from(&old.audit);
        restart.push("audit");
    }
    macro_rules! keep {
        ($($section:ident . $field:ident),* $(,)?) => {$(
            if new.$section.$field != old.$section.$field {
                new.$section.$field = old.$section.$field.clone();
                restart.push(concat!(stringify!($section), ".", stringify!($field)));
            }
        )*};
    }
    keep!(
        interface.mtu,
        interface.tcp_buffer,
        interface.max_connections_per_peer,
        interface.tcp_memory,
        interface.max_connections,
        interface.handshake_rate_limit,
        interface.idle_session_timeout,
        interface.threads,
        interface.name,
        interface.uapi,
        interface.uapi_socket,
        api.port,
        api.header_timeout,
        api.body_timeout,
        api.body_min_rate,
        api.idle_timeout,
        api.send_timeout,
        api.default_workdir,
        api.nice_increment,
        api.oom_score_adj,
        api.kill_grace,
        api.tree_tracking,
        api.state_dir,
        api.log_max_bytes,
        api.state_max_bytes,
        api.default_limits,
        api.max_limits,
        api.cgroups,
        files.max_write_bytes,
        files.max_edit_files,
        files.fsync,
        metrics.listen,
    );
}
