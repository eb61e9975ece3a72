//! One tracked process: identity, output buffer and exit state.
//!
//! Owns: the per-process facts the API reports, and the one-shot "exited" broadcast that every
//! waiter subscribes to. Leaves to the manager: spawning, reaping, eviction.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::watch;

use serde::{Deserialize, Serialize};

use super::cgroup::CommandGroup;
use super::fdio;
use super::head_tail::HeadTailBuffer;
use super::limits::{Limit, Limits};
use super::log::Log;
use super::state::{Meta, MetaExit, SavedOutput};

/// Opaque process id (a UUID v4 in its lower-case text form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId(String);

impl ProcessId {
    pub(crate) fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id's text, as the API carries it.
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
    /// A limit's signal ended it (`SIGXCPU`: `cpu_seconds`, `SIGXFSZ`: `file_size_bytes`).
    LimitExceeded,
    /// The OOM killer ended it inside its cgroup (`memory_bytes` with cgroup v2 only).
    OomKilled,
}

impl ExitReason {
    /// The reason named `s` ([`Self::as_str`]'s spelling, as saved in state files); `None`
    /// for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exited" => Self::Exited,
            "signaled" => Self::Signaled,
            "timed_out" => Self::TimedOut,
            "agent_shutdown" => Self::AgentShutdown,
            "limit_exceeded" => Self::LimitExceeded,
            "oom_killed" => Self::OomKilled,
            _ => return None,
        })
    }

    /// The API's `exit_reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::Signaled => "signaled",
            Self::TimedOut => "timed_out",
            Self::AgentShutdown => "agent_shutdown",
            Self::LimitExceeded => "limit_exceeded",
            Self::OomKilled => "oom_killed",
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
    /// Why it ended.
    pub reason: ExitReason,
    /// When the exit was recorded (after the output pipe reached EOF).
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

/// The WireGuard peer whose request started a process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StartedBy {
    /// The peer's configured name, else the first characters of its key.
    pub peer: String,
    /// The peer's public key, base64.
    pub public_key: String,
}

/// How a process's stdin is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum StdinMode {
    /// `/dev/null` (the default).
    #[default]
    Null,
    /// A pipe fed through `POST /stdin`.
    Pipe,
    /// A pseudo-terminal of this size (rows, cols) is stdin, stdout and stderr.
    Pty {
        /// Lines; at least 1.
        rows: u16,
        /// Columns; at least 1.
        cols: u16,
    },
}

/// The process's side of its stdin, for `POST /stdin` and `/resize`.
pub struct Input {
    /// How stdin was connected at start.
    pub mode: StdinMode,
    /// `None` once closed (or never opened).
    pub(crate) writer: tokio::sync::Mutex<Option<fdio::Writer>>,
    /// The pty master, for window-size changes.
    pub(crate) pty: Option<OwnedFd>,
}

/// One process the manager tracks.
pub struct Record {
    /// The id the API knows it by.
    pub id: ProcessId,
    /// The command line, run as `sh -c <command>`.
    pub command: String,
    /// The directory it runs in, resolved.
    pub workdir: PathBuf,
    /// As requested at start (metadata only).
    pub background: bool,
    /// The shell's pid, which is also its session and process-group id (`setsid`).
    pub pid: u32,
    /// When the agent started it.
    pub started_at: SystemTime,
    /// stdout and stderr merged, head and tail kept (what `/output` renders).
    pub output: HeadTailBuffer,
    /// Every byte written, in the state directory.
    pub log: Log,
    /// Its stdin, for `POST /stdin` and `/resize`.
    pub input: Input,
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
    /// The user the command runs as.
    pub user: String,
    /// The effective limits.
    pub limits: Limits,
    /// The peer that started it; `None` when the caller was not a WireGuard peer (the router
    /// called directly) or the record comes from an older agent.
    pub started_by: Option<StartedBy>,
    /// Its cgroup v2 group, if it has one (removed once the tree is gone).
    pub(crate) cgroup: Option<CommandGroup>,
    /// The last signal sent to the shell's group (or tree) through the API, timeout or
    /// shutdown, with when it was sent: see [`Record::sent_signal`].
    pub(crate) sent: Mutex<Option<SentSignal>>,
}

/// A signal the agent sent, and when (clock ticks since boot, the clock of a process's start
/// time in `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SentSignal {
    pub signo: i32,
    pub since_tick: u64,
}

/// A point-in-time copy of a record's state, for listing.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// [`Record::id`].
    pub id: ProcessId,
    /// [`Record::command`].
    pub command: String,
    /// [`Record::workdir`].
    pub workdir: PathBuf,
    /// [`Record::background`].
    pub background: bool,
    /// [`Record::pid`].
    pub pid: u32,
    /// [`Record::started_at`].
    pub started_at: SystemTime,
    /// `None` while running.
    pub exit: Option<Exit>,
    /// Bytes of output written so far (the log's end offset).
    pub output_bytes: u64,
    /// First offset still retained in the log.
    pub log_start: u64,
    /// Why the log stopped (e.g. a full disk), if it did.
    pub log_error: Option<String>,
    /// [`Record::user`].
    pub user: String,
    /// [`Record::limits`].
    pub limits: Limits,
    /// [`Record::started_by`].
    pub started_by: Option<StartedBy>,
}

/// Everything a new record is made of.
pub(crate) struct NewRecord {
    pub id: ProcessId,
    pub command: String,
    pub workdir: PathBuf,
    pub background: bool,
    pub pid: u32,
    pub fingerprint: u64,
    pub idempotency_key: Option<String>,
    pub supervisor: Option<i32>,
    pub log: Log,
    pub input: Input,
    pub user: String,
    pub limits: Limits,
    pub started_by: Option<StartedBy>,
    pub cgroup: Option<CommandGroup>,
}

impl Record {
    pub(crate) fn new(n: NewRecord) -> Self {
        Self {
            id: n.id,
            command: n.command,
            workdir: n.workdir,
            background: n.background,
            pid: n.pid,
            started_at: SystemTime::now(),
            output: HeadTailBuffer::new(),
            log: n.log,
            input: n.input,
            exit: watch::Sender::new(None),
            ending: Mutex::new(Ending::None),
            request_fingerprint: n.fingerprint,
            idempotency_key: n.idempotency_key,
            supervisor: n.supervisor,
            kill_requested: AtomicBool::new(false),
            tree_alive: AtomicBool::new(true),
            user: n.user,
            limits: n.limits,
            started_by: n.started_by,
            cgroup: n.cgroup,
            sent: Mutex::new(None),
        }
    }

    /// Notes that `signo` is about to be sent, for the shell's exit to check (a shell that dies
    /// of it while forking leaves a child that never got it: `supervise` passes it on). A
    /// repeated signal keeps the earliest time.
    pub(crate) fn sent_signal(&self, signo: i32) {
        let now = super::spawn::boot_ticks();
        let mut sent = self.sent.lock();
        match &mut *sent {
            Some(s) if s.signo == signo => s.since_tick = s.since_tick.min(now),
            other => {
                *other = Some(SentSignal {
                    signo,
                    since_tick: now,
                })
            }
        }
    }

    /// A record persisted by an earlier agent. One that was still running when that agent died
    /// is reported as ended by `agent_shutdown`.
    pub(crate) fn restore(m: &Meta, log: Log) -> Option<Self> {
        let output = HeadTailBuffer::restore(&m.output.decode()?);
        let exit = match &m.exit {
            Some(e) => Exit {
                code: e.code,
                signal: e.signal.as_deref().and_then(signal_static),
                reason: ExitReason::parse(&e.reason).unwrap_or(ExitReason::Exited),
                at: from_ms(e.at_ms),
            },
            None => Exit {
                code: -1,
                signal: None,
                reason: ExitReason::AgentShutdown,
                at: SystemTime::now(),
            },
        };
        Some(Self {
            id: ProcessId::from(m.id.as_str()),
            command: m.command.clone(),
            workdir: m.workdir.clone(),
            background: m.background,
            pid: m.pid,
            started_at: from_ms(m.started_at_ms),
            output,
            log,
            input: Input {
                mode: StdinMode::Null,
                writer: tokio::sync::Mutex::new(None),
                pty: None,
            },
            exit: watch::Sender::new(Some(exit)),
            ending: Mutex::new(Ending::None),
            request_fingerprint: m.fingerprint,
            idempotency_key: m.idempotency_key.clone(),
            supervisor: None,
            kill_requested: AtomicBool::new(false),
            tree_alive: AtomicBool::new(false),
            user: m.user.clone().unwrap_or_default(),
            limits: limits_from_names(&m.limits),
            started_by: m.started_by.clone(),
            cgroup: None,
            sent: Mutex::new(None),
        })
    }

    /// What to persist.
    pub(crate) fn meta(&self) -> Meta {
        Meta {
            version: Meta::VERSION,
            id: self.id.to_string(),
            command: self.command.clone(),
            workdir: self.workdir.clone(),
            background: self.background,
            pid: self.pid,
            started_at_ms: to_ms(self.started_at),
            exit: self.exit().map(|e| MetaExit {
                code: e.code,
                signal: e.signal.map(str::to_owned),
                reason: e.reason.as_str().to_owned(),
                at_ms: to_ms(e.at),
            }),
            output: SavedOutput::from(&self.output.export()),
            log_end: self.log.end(),
            log_error: self.log.error(),
            idempotency_key: self.idempotency_key.clone(),
            fingerprint: self.request_fingerprint,
            user: Some(self.user.clone()).filter(|u| !u.is_empty()),
            started_by: self.started_by.clone(),
            limits: self
                .limits
                .iter()
                .map(|(l, v)| (l.name().to_owned(), v))
                .collect(),
        }
    }

    /// True while the shell runs or, with tree tracking, any descendant is left.
    pub fn tree_alive(&self) -> bool {
        self.tree_alive.load(Ordering::Acquire)
    }

    /// How it ended; `None` while running. Once set, the output is complete.
    pub fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// No exit recorded yet (descendants may outlive the shell: see [`Self::tree_alive`]).
    pub fn is_running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    pub(crate) fn set_exit(&self, exit: Exit) {
        self.exit.send_replace(Some(exit));
    }

    /// A receiver that sees the exit once it is recorded.
    pub fn subscribe(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.subscribe()
    }

    /// Copies the state now, for listing.
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
            log_start: self.log.start(),
            log_error: self.log.error(),
            user: self.user.clone(),
            limits: self.limits,
            started_by: self.started_by.clone(),
        }
    }
}

fn limits_from_names(names: &std::collections::BTreeMap<String, u64>) -> Limits {
    let mut out = Limits::default();
    for (name, v) in names {
        if let Some(l) = Limit::parse(name) {
            out.set(l, Some(*v));
        }
    }
    out
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The `&'static str` name of a signal given by name (`"SIGKILL"`).
fn signal_static(name: &str) -> Option<&'static str> {
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s.as_str())
}
