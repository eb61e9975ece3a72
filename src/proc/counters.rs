//! What the process manager counts over its lifetime, for metrics: starts, spawn failures and
//! exits by reason. Running and tracked numbers are read from the manager's state instead.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Lifetime counters of one [`super::Manager`]; read with [`ProcCounters::snapshot`].
#[derive(Debug, Default)]
pub struct ProcCounters {
    started: AtomicU64,
    spawn_failures: AtomicU64,
    /// By `exit_reason` as the API names it; the keys are the reasons' static names, so the
    /// map holds at most one entry per reason.
    exited: Mutex<BTreeMap<&'static str, u64>>,
}

/// A copy of [`ProcCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// Processes spawned.
    pub started: u64,
    /// Starts refused because the command could not be spawned (fork, exec, pty, pipes).
    pub spawn_failures: u64,
    /// Exits by reason (`exited`, `signaled`, `timed_out`, `agent_shutdown`, ...).
    pub exited: BTreeMap<&'static str, u64>,
}

impl ProcCounters {
    pub(crate) fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn spawn_failed(&self) {
        self.spawn_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn exited(&self, reason: &'static str) {
        *self.exited.lock().entry(reason).or_default() += 1;
    }

    /// The counts now (each read on its own, not one atomic view).
    pub fn snapshot(&self) -> ProcStats {
        ProcStats {
            started: self.started.load(Ordering::Relaxed),
            spawn_failures: self.spawn_failures.load(Ordering::Relaxed),
            exited: self.exited.lock().clone(),
        }
    }
}
