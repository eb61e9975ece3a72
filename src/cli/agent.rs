//! `wgagent agent --config FILE`: the agent role.
//!
//! Signals: SIGTERM and SIGINT shut down gracefully (process groups first, no child left
//! behind); SIGHUP re-reads FILE and applies the difference live (`Agent::reload`), including
//! the log level. An invalid file is logged with the same error as at start and changes nothing.
//! `--watch-config` does the same when FILE or the key file changes (a Kubernetes ConfigMap or
//! Secret update). Under systemd it reports readiness, reloads and shutdown and feeds the
//! watchdog (see `service`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::logging::LogControl;
use super::service::{self, ConfigWatch};
use crate::agent::Agent;
use crate::config::{Config, LogFormat};
use crate::keys;

/// Time the API and UAPI servers and the node get to stop after the processes have.
const SERVERS_STOP: Duration = Duration::from_secs(10);

/// The `agent` verb's options besides the configuration file.
#[derive(Debug, Default)]
pub struct AgentFlags {
    /// `--private-key-file`: the key comes from here, not from the file (systemd credentials).
    pub private_key_file: Option<PathBuf>,
    /// `--log-format`: overrides `[log] format`.
    pub log_format: Option<LogFormat>,
    /// `--watch-config`: reload when the file (or the key file) changes, as on SIGHUP.
    pub watch_config: bool,
}

pub async fn run(path: &Path, flags: AgentFlags) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives during start-up must still mean a clean exit, and
    // a SIGHUP must never kill the agent.
    let mut signals = Signals::install()?;
    let key = flags.private_key_file.as_deref();
    let cfg = Config::load_with_key(path, key)?;
    let log = LogControl::init(&cfg.log.level, flags.log_format.unwrap_or(cfg.log.format));
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    let agent = Agent::start(&cfg).await.context("starting the agent")?;
    let mut watch = flags.watch_config.then(|| {
        ConfigWatch::new(
            path,
            cfg.interface.private_key_path.as_deref(),
            service::WATCH_EVERY,
        )
    });
    let background = tokio_util::sync::CancellationToken::new();
    service::watchdog(agent.node().clone(), background.clone());
    service::ready(&format!(
        "serving the API on {:?}, WireGuard on UDP port {}",
        agent.addresses(),
        agent.udp_addr().port()
    ));
    let mut level = cfg.log.level.clone();
    let stop = loop {
        let why = tokio::select! {
            s = signals.next() => s,
            () = changed(&mut watch) => Received::Reload("the configuration file changed"),
        };
        match why {
            Received::Reload(why) => {
                service::reloading();
                let key_path = reload(&agent, path, key, why, &log, &mut level).await;
                if let (Some(watch), Some(key_path)) = (watch.as_mut(), key_path) {
                    watch.set_key(key_path.as_deref());
                }
                service::ready("running");
            }
            Received::Stop(name) => break name,
        }
    };
    service::stopping();
    tracing::info!(signal = stop, "shutting down: terminating process groups");
    if !agent.shutdown(agent.shutdown_grace() + SERVERS_STOP).await {
        tracing::warn!("shutdown did not finish in time");
    }
    background.cancel();
    tracing::info!("agent stopped");
    Ok(())
}

/// Resolves when the watched files changed; never without `--watch-config`.
async fn changed(watch: &mut Option<ConfigWatch>) {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// SIGHUP (or a watched file changed): re-read the file and apply it; on any error keep what
/// is in force. Returns the key file of the configuration now in force (`None`: unchanged).
async fn reload(
    agent: &Agent,
    path: &Path,
    key: Option<&Path>,
    why: &str,
    log: &LogControl,
    level: &mut String,
) -> Option<Option<PathBuf>> {
    tracing::info!(config = %path.display(), "{why}: reloading the configuration");
    let cfg = match Config::load_with_key(path, key) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("reload refused, the previous configuration stays in force: {e}");
            return None;
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    let report = match agent.reload(&cfg).await {
        Ok(report) => report,
        Err(e) => {
            tracing::error!("reload refused, the previous configuration stays in force: {e}");
            return None;
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
    Some(cfg.interface.private_key_path)
}

/// What a signal the agent received asks of it (not [`crate::signal::Signal`], the
/// vocabulary of signals sent to processes).
enum Received {
    /// Re-read the configuration; why.
    Reload(&'static str),
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

    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received::Stop("SIGTERM"),
            _ = self.int.recv() => Received::Stop("SIGINT"),
            _ = self.hup.recv() => Received::Reload("SIGHUP"),
        }
    }
}
