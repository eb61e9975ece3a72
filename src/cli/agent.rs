//! `wgagent agent --config FILE`: the agent role.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::keys;
use crate::node::{Node, NodeConfig};
use crate::proc::{Manager, ManagerConfig};

pub async fn run(path: &Path) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives during start-up must still mean a clean exit.
    let signals = Signals::install()?;
    let cfg = Config::load(path)?;
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    let node = Node::start(NodeConfig::from(&cfg))
        .await
        .context("starting the WireGuard node")?;
    tracing::info!(
        public_key = %keys::encode_public(&node.public_key()),
        addresses = ?node.addresses(),
        udp_port = node.udp_addr().port(),
        api_port = cfg.api.port,
        peers = cfg.peers.len(),
        "agent up; the API is served on the tunnel addresses only"
    );

    let manager = Manager::open(manager_config(&cfg)).map_err(|e| {
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        anyhow::anyhow!("{e} {}", cause.unwrap_or_default())
    })?;
    tracing::info!(state_dir = %manager.state_dir().display(), instance_id = manager.instance_id(), "process state");
    let mut state = AppState::new(manager.clone());
    state.allowed_sources = Arc::new(cfg.api.allowed_sources.clone().unwrap_or_default());
    state.files = crate::files::Files::new(cfg.files.into());
    let app = api::router(state);
    let stop = CancellationToken::new();
    let servers = TaskTracker::new();
    for listener in node.listen(cfg.api.port)? {
        let local = listener.local_addr();
        let serve = axum::serve(
            listener,
            app.clone()
                .into_make_service_with_connect_info::<api::CallerAddr>(),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned());
        servers.spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(%local, "API server failed: {e}");
            }
        });
    }
    servers.close();

    let signal = signals.wait().await;
    tracing::info!(signal, "shutting down: terminating process groups");
    manager.shutdown(cfg.api.shutdown_grace).await;
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(5), servers.wait())
        .await
        .is_err()
    {
        tracing::warn!("API connections still open after 5 s; closing them");
    }
    node.shutdown(Duration::from_secs(2)).await;
    tracing::info!("agent stopped");
    Ok(())
}

fn manager_config(cfg: &Config) -> ManagerConfig {
    ManagerConfig {
        max_running: cfg.api.max_running,
        max_tracked: cfg.api.max_tracked,
        default_workdir: cfg.api.default_workdir.clone(),
        nice_increment: i32::from(cfg.api.nice_increment),
        oom_score_adj: Some(i32::from(cfg.api.oom_score_adj)),
        kill_grace: cfg.api.kill_grace,
        tree_tracking: cfg.api.tree_tracking,
        state_dir: Some(cfg.api.state_dir_or_default()),
        log_max_bytes: cfg.api.log_max_bytes,
        state_max_bytes: cfg.api.state_max_bytes,
        default_limits: cfg.api.default_limits,
        max_limits: cfg.api.max_limits,
        cgroups: cfg.api.cgroups,
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
