//! One tracked process: identity, output buffer and exit state.
//!
//! Owns: the per-process facts the API reports, and the one-shot "exited" broadcast that every
//! waiter subscribes to. Leaves to the manager: spawning, reaping, eviction.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::head_tail::HeadTailBuffer;

/// Opaque process id (a UUID v4 in its lower-case text form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId(String);

impl ProcessId {
    pub(crate) fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ProcessId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a process is no longer running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The shell exited on its own.
    Exited,
    /// A signal ended it (sent through the API or from elsewhere).
    Signaled,
    /// `timeout_ms` elapsed and the agent ended the group.
    TimedOut,
    /// The agent shut down and ended the group.
    AgentShutdown,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::Signaled => "signaled",
            Self::TimedOut => "timed_out",
            Self::AgentShutdown => "agent_shutdown",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The shell's exit status, or -1 when a signal killed it (as the Coder API reports it).
    pub code: i32,
    /// Name of the signal that killed the shell (`"SIGKILL"`), if one did.
    pub signal: Option<&'static str>,
    pub reason: ExitReason,
    pub at: SystemTime,
}

/// What the manager decided to do to a process before it exited; decides `ExitReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Ending {
    #[default]
    None,
    TimedOut,
    AgentShutdown,
}

/// One process the manager tracks.
pub struct Record {
    pub id: ProcessId,
    pub command: String,
    pub workdir: PathBuf,
    pub background: bool,
    pub pid: u32,
    pub started_at: SystemTime,
    pub output: HeadTailBuffer,
    /// `None` while running. Set once, after the output pipe reached EOF, so a reader that sees
    /// an exit also sees the complete output.
    exit: watch::Sender<Option<Exit>>,
    pub(crate) ending: Mutex<Ending>,
    /// Fingerprint of the start request, for idempotency-key conflict checks.
    pub(crate) request_fingerprint: u64,
    pub(crate) idempotency_key: Option<String>,
    /// The supervisor that owns the process tree (tree tracking on), else `None`.
    pub(crate) supervisor: Option<i32>,
    /// A kill or terminate of the tree was asked for: the record stays running until the whole
    /// tree is gone.
    pub(crate) kill_requested: AtomicBool,
    /// Some member of the tree is still alive (always false without tree tracking once exited).
    pub(crate) tree_alive: AtomicBool,
}

/// A point-in-time copy of a record's state, for listing.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: ProcessId,
    pub command: String,
    pub workdir: PathBuf,
    pub background: bool,
    pub pid: u32,
    pub started_at: SystemTime,
    pub exit: Option<Exit>,
    pub output_bytes: u64,
}

impl Record {
    #[allow(clippy::too_many_arguments)] // one call site, every field named there
    pub(crate) fn new(
        id: ProcessId,
        command: String,
        workdir: PathBuf,
        background: bool,
        pid: u32,
        request_fingerprint: u64,
        idempotency_key: Option<String>,
        supervisor: Option<i32>,
    ) -> Self {
        Self {
            id,
            command,
            workdir,
            background,
            pid,
            started_at: SystemTime::now(),
            output: HeadTailBuffer::new(),
            exit: watch::Sender::new(None),
            ending: Mutex::new(Ending::None),
            request_fingerprint,
            idempotency_key,
            supervisor,
            kill_requested: AtomicBool::new(false),
            tree_alive: AtomicBool::new(true),
        }
    }

    /// True while the shell runs or, with tree tracking, any descendant is left.
    pub fn tree_alive(&self) -> bool {
        self.tree_alive.load(Ordering::Acquire)
    }

    pub fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    pub fn is_running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    pub(crate) fn set_exit(&self, exit: Exit) {
        self.exit.send_replace(Some(exit));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.subscribe()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            command: self.command.clone(),
            workdir: self.workdir.clone(),
            background: self.background,
            pid: self.pid,
            started_at: self.started_at,
            exit: self.exit(),
            output_bytes: self.output.total_written(),
        }
    }
}
