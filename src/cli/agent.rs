//! `wgagent agent --config FILE`: the agent role.
//!
//! Signals: SIGTERM and SIGINT shut down gracefully (process groups first, no child left
//! behind); SIGHUP re-reads FILE and applies the difference live (`Agent::reload`), including
//! the log level. An invalid file is logged with the same error as at start and changes nothing.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

use crate::agent::Agent;
use crate::config::Config;
use crate::keys;

/// Time the API and UAPI servers and the node get to stop after the processes have.
const SERVERS_STOP: Duration = Duration::from_secs(10);

pub async fn run(path: &Path) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives during start-up must still mean a clean exit, and
    // a SIGHUP must never kill the agent.
    let mut signals = Signals::install()?;
    let cfg = Config::load(path)?;
    let log = LogControl::init(&cfg.log.level);
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    let agent = Agent::start(&cfg).await.context("starting the agent")?;
    let mut level = cfg.log.level.clone();
    let stop = loop {
        match signals.next().await {
            Signal::Reload => reload(&agent, path, &log, &mut level).await,
            Signal::Stop(name) => break name,
        }
    };
    tracing::info!(signal = stop, "shutting down: terminating process groups");
    if !agent.shutdown(agent.shutdown_grace() + SERVERS_STOP).await {
        tracing::warn!("shutdown did not finish in time");
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// SIGHUP: re-read the file and apply it; on any error keep what is in force.
async fn reload(agent: &Agent, path: &Path, log: &LogControl, level: &mut String) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("reload refused, the previous configuration stays in force: {e}");
            return;
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    let report = match agent.reload(&cfg).await {
        Ok(report) => report,
        Err(e) => {
            tracing::error!("reload refused, the previous configuration stays in force: {e}");
            return;
        }
    };
    if cfg.log.level != *level {
        log.set(&cfg.log.level);
        level.clone_from(&cfg.log.level);
    }
    let labels = |keys: &[crate::wg::PublicKey]| -> Vec<String> {
        keys.iter()
            .map(|k| keys::encode_public(k)[..8].to_owned())
            .collect()
    };
    let p = &report.peers;
    tracing::info!(
        added = ?labels(&p.added),
        updated = ?labels(&p.updated),
        removed = ?labels(&p.removed),
        key_changed = p.key_changed,
        applied = ?report.applied,
        "configuration reloaded"
    );
    for key in &report.restart_required {
        tracing::warn!(
            "{key} changed in {}; it takes effect after a restart (the old value stays in force)",
            path.display()
        );
    }
}

/// The process-wide log filter, replaceable at run time.
struct LogControl {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    /// `RUST_LOG` was set: it wins over the file, at start and on reload.
    from_env: bool,
}

impl LogControl {
    /// Logs to stderr (colour only on a terminal) at `RUST_LOG` if set, else at `level`.
    fn init(level: &str) -> LogControl {
        use std::io::IsTerminal;
        let env = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let filter = env
            .as_deref()
            .and_then(|v| EnvFilter::try_new(v).ok())
            .unwrap_or_else(|| EnvFilter::new(level));
        let (filter, handle) = reload::Layer::new(filter);
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init();
        LogControl {
            handle,
            from_env: env.is_some(),
        }
    }

    fn set(&self, level: &str) {
        if self.from_env {
            tracing::info!("RUST_LOG is set; it overrides the new [log] level {level:?}");
            return;
        }
        // Validated when the file was loaded.
        match self.handle.reload(EnvFilter::new(level)) {
            Ok(()) => tracing::info!(level, "log level changed"),
            Err(e) => tracing::warn!("cannot change the log level: {e}"),
        }
    }
}

enum Signal {
    Reload,
    Stop(&'static str),
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
