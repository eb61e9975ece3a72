//! What the long-lived roles tell their service manager, and how they notice a changed
//! configuration without a signal.
//!
//! systemd (`Type=notify`): `READY=1` once the node is up and the API listens, `RELOADING=1`
//! then `READY=1` around a reload, `STOPPING=1` at shutdown, `STATUS=` lines saying what the
//! node is doing, and `WATCHDOG=1` while the data path makes progress (its timer heartbeat,
//! [`crate::node::Node::heartbeat`], moved since the last ping), so a wedged data path is
//! restarted by `WatchdogSec=`. Without `$NOTIFY_SOCKET` every call does nothing.
//!
//! `--watch-config`: Kubernetes updates a mounted ConfigMap or Secret by swapping a symlink, and
//! sends no signal. [`ConfigWatch`] looks at the configuration file and the private key file
//! every [`WATCH_EVERY`] (one `stat` each, following symlinks) and reports a change, which the
//! caller treats like SIGHUP.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// How often `--watch-config` looks at the files. kubelet itself syncs mounted ConfigMaps
/// about once a minute, so a few seconds add nothing noticeable.
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(2);

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("cannot notify the service manager: {e}");
    }
}

/// `READY=1` with a status line.
pub(crate) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (a `READY=1` must follow; [`ready`]).
pub(crate) fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    // Type=notify-reload wants the time with RELOADING=1; Type=notify ignores it.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// `STOPPING=1`.
pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pings the watchdog at half its period while `node`'s data path keeps ticking, until
/// `cancel`. Does nothing when the service manager set no watchdog for this process.
pub(crate) fn watchdog(node: Node, cancel: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(500));
    tracing::info!(period = ?period, "systemd watchdog on: fed while the data path ticks");
    tokio::spawn(async move {
        let mut last = node.heartbeat();
        let mut interval = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = interval.tick() => {}
            }
            let now = node.heartbeat();
            if now != last {
                notify(&[NotifyState::Watchdog]);
                last = now;
            } else {
                tracing::warn!(
                    "the data path made no progress for {every:?}; not feeding the watchdog"
                );
            }
        }
    });
}

/// Watches the configuration (and key) files for a change of content or identity.
pub(crate) struct ConfigWatch {
    paths: Vec<PathBuf>,
    seen: Vec<Option<Fingerprint>>,
    interval: tokio::time::Interval,
}

/// What a `stat` through the symlinks says about a file; `None`: it cannot be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        modified: m.modified().ok(),
    })
}

impl ConfigWatch {
    /// Watches `config` and, when given, the private key file, every `every`
    /// ([`WATCH_EVERY`]).
    pub(crate) fn new(config: &Path, key: Option<&Path>, every: Duration) -> ConfigWatch {
        let paths: Vec<PathBuf> = std::iter::once(config)
            .chain(key)
            .map(Path::to_owned)
            .collect();
        let seen = paths.iter().map(|p| fingerprint(p)).collect();
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ConfigWatch {
            paths,
            seen,
            interval,
        }
    }

    /// Also watch `key` from now on (the key file of a reloaded configuration).
    pub(crate) fn set_key(&mut self, key: Option<&Path>) {
        self.paths.truncate(1);
        self.seen.truncate(1);
        if let Some(key) = key {
            self.paths.push(key.to_owned());
            self.seen.push(fingerprint(key));
        }
    }

    /// Resolves at the first look that finds a file changed (a file that vanished, as during
    /// a ConfigMap update, is not a change until it is back).
    pub(crate) async fn changed(&mut self) {
        loop {
            self.interval.tick().await;
            let mut changed = false;
            for (path, seen) in self.paths.iter().zip(self.seen.iter_mut()) {
                let now = fingerprint(path);
                if now.is_some() && now != *seen {
                    changed = true;
                }
                if now.is_some() {
                    *seen = now;
                }
            }
            if changed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replaced_file_is_a_change_a_missing_one_is_not() {
        const EVERY: Duration = Duration::from_millis(20);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "a").unwrap();
        let mut watch = ConfigWatch::new(&config, None, EVERY);
        // Nothing changed: no report within a few periods.
        let quiet = tokio::time::timeout(EVERY * 5, watch.changed()).await;
        assert!(quiet.is_err());
        // Gone (mid-update): still no report.
        std::fs::remove_file(&config).unwrap();
        let quiet = tokio::time::timeout(EVERY * 5, watch.changed()).await;
        assert!(quiet.is_err());
        // Back with other content, through a symlink swap as kubelet does.
        let data = dir.path().join("data-2");
        std::fs::write(&data, "bb").unwrap();
        std::os::unix::fs::symlink(&data, &config).unwrap();
        tokio::time::timeout(EVERY * 5, watch.changed())
            .await
            .expect("the change is seen");
    }
}
