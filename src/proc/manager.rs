//! The process manager: starts, tracks, waits for, signals and forgets processes.
//!
//! Owns: the bounded table of process records, limits (`max_running`, `max_tracked`),
//! idempotency keys, per-process supervision (output pipe, reaping, timeouts) and shutdown.
//! Leaves to the caller: HTTP, and choosing the configuration.
//!
//! A "process" is the shell `sh -c` and everything it starts: it counts as running until the
//! shell has exited **and** its output pipe reached EOF, so `running: false` always comes with
//! the complete output. With tree tracking on (the default) every process has a supervisor
//! (`supervisor`) that owns its whole descendant tree: `kill`/`terminate`, timeouts and shutdown
//! reach members that left the group or session, and once a kill was asked for the record stays
//! running until the tree is gone. `interrupt`/`hangup` go to the shell's process group, as a
//! terminal's would. With tracking off, every signal goes to the process group only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use nix::sys::signal::Signal as NixSignal;
use parking_lot::{Condvar, Mutex};
use tokio::net::unix::pipe;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::cgroup::{CommandGroup, Enforcement};
use super::fdio;
use super::launcher::Launcher;
use super::limits::{Limit, LimitError, Limits, RequestedLimits};
use super::log::Log;
use super::record::{
    Ending, Exit, Input, NewRecord, ProcessId, Record, Snapshot, StartedBy, StdinMode,
};
use super::spawn::{self, Host, Prepared, Priority, SpawnFailure, Stage, Stdio};
use super::state::StateDir;
use super::supervise::{Spawned, Tree, signal_tree, supervise};
use super::supexec::SupervisorLaunch;
use super::user::{User, UserError};

/// Default `oom_score_adj` of children: 998, so the OOM killer picks them before the agent.
pub const DEFAULT_OOM_SCORE_ADJ: i16 = 998;

/// Default nice increment of children: +5, so they yield the CPU to the agent.
pub const DEFAULT_NICE_INCREMENT: u8 = 5;

/// Limits and defaults for the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Starts beyond this many running processes are refused (HTTP 429).
    pub max_running: usize,
    /// Records kept in all; the oldest *exited* ones are evicted first, running ones never.
    pub max_tracked: usize,
    /// Working directory when a request names none; `None` means `$HOME`.
    pub default_workdir: Option<PathBuf>,
    /// Children run at the agent's nice value plus this (capped at 19); 0 leaves it alone.
    pub nice_increment: i32,
    /// Written to each child's `oom_score_adj`; `None` leaves it alone.
    pub oom_score_adj: Option<i32>,
    /// Time between SIGTERM and SIGKILL when a timeout or shutdown ends a process group.
    pub kill_grace: Duration,
    /// Track every descendant with a per-process supervisor (see the module docs). Off: one
    /// process less per command and a cheaper spawn, but members that leave the process group
    /// escape kills and outlive an agent killed with SIGKILL.
    pub tree_tracking: bool,
    /// Where logs and records of exited processes live (they survive a restart there). `None`:
    /// a private temporary directory, removed with the manager (nothing survives).
    pub state_dir: Option<PathBuf>,
    /// Log bytes kept per process (the newest).
    pub log_max_bytes: u64,
    /// Log bytes kept in all: the oldest exited processes' logs are deleted first; a running
    /// process's log never is.
    pub state_max_bytes: u64,
    /// Limits of commands that ask for none (each one separately).
    pub default_limits: Limits,
    /// Ceilings: a request above one is refused; a command that asks for nothing and has no
    /// default gets the ceiling.
    pub max_limits: Limits,
    /// Use a delegated cgroup v2 subtree when one is found (see `cgroup`). Detection moves the
    /// calling process into a leaf group, so only the agent turns it on.
    pub cgroups: bool,
    /// How supervisors start (tree tracking on): forked by a helper exec'd from the wgagent
    /// binary, by default in that binary; forked from the caller elsewhere (see `supexec`).
    pub supervisor: SupervisorLaunch,
}

impl Default for ManagerConfig {
    /// 64 running, 1024 tracked, nice +5, OOM score 998, 5 s grace: children are the OOM
    /// killer's first choice and yield the CPU to the agent. Tree tracking on; logs of 64 MiB
    /// per process and 1 GiB in all in a temporary state directory.
    fn default() -> Self {
        Self {
            max_running: 64,
            max_tracked: 1024,
            default_workdir: None,
            nice_increment: DEFAULT_NICE_INCREMENT.into(),
            oom_score_adj: Some(DEFAULT_OOM_SCORE_ADJ.into()),
            kill_grace: Duration::from_secs(5),
            tree_tracking: true,
            state_dir: None,
            log_max_bytes: 64 << 20,
            state_max_bytes: 1 << 30,
            default_limits: Limits::default(),
            max_limits: Limits::default(),
            cgroups: false,
            supervisor: SupervisorLaunch::Auto,
        }
    }
}

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct StartSpec {
    /// The command line, run as `sh -c <command>`; must be non-empty.
    pub command: String,
    /// Directory to run in (relative: under the run-as user's home, else `default_workdir`,
    /// else the agent's `$HOME`); `None`: that base itself.
    pub workdir: Option<PathBuf>,
    /// Variables set on top of the agent's environment; names non-empty, no `=` or NUL.
    pub env: BTreeMap<String, String>,
    /// Metadata only: recorded and listed.
    pub background: bool,
    /// A retried start with the same key returns the original process instead of starting
    /// another; the same key with a different request is refused.
    pub idempotency_key: Option<String>,
    /// Hard deadline: the group is terminated, then killed after a grace period; `None`: no
    /// deadline.
    pub timeout: Option<Duration>,
    /// How stdin is connected.
    pub stdin: StdinMode,
    /// Resource limits asked for (resolved against the configured defaults and maximums).
    pub limits: RequestedLimits,
    /// Run as this user (the agent must be root unless it is the agent's own user). `None`:
    /// the agent's user.
    pub user: Option<String>,
    /// The peer whose request this is, recorded with the process.
    pub started_by: Option<StartedBy>,
}

/// What a start is about to do, shown to the gate of [`Manager::start_gated`] just before the
/// spawn (every check has passed).
#[derive(Debug)]
pub struct StartFacts<'a> {
    /// The id the process will have.
    pub id: &'a ProcessId,
    /// The directory, resolved.
    pub workdir: &'a Path,
    /// The user it will run as.
    pub user: &'a str,
    /// The limits in force after defaults and maximums.
    pub limits: &'a Limits,
    /// An earlier request with the same idempotency key started `id`: nothing is spawned.
    pub replayed: bool,
}

/// The signals a caller can send: the one vocabulary of [`crate::signal`], re-exported here
/// where the manager's callers look for it.
pub use crate::signal::Signal;

/// Kill and terminate reach the whole tree; interrupt and hangup the process group.
fn is_tree_wide(signal: Signal) -> bool {
    matches!(signal, Signal::Kill | Signal::Terminate)
}

/// Errors from the manager. Each maps to one HTTP status in `api`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// Bad request; retrying the same request will not help.
    #[error("Command is required.")]
    EmptyCommand,
    /// An environment name that is empty or holds `=` or NUL, or a value with NUL. Fix the
    /// request.
    #[error("Invalid environment variable: {0}")]
    InvalidEnv(String),
    /// Fix the request (or create the directory).
    #[error("Working directory \"{0}\" does not exist or is not a directory.")]
    WorkdirMissing(PathBuf),
    /// The directory exists but the command's user cannot enter it.
    #[error("Working directory \"{dir}\" cannot be entered as user \"{user}\".")]
    WorkdirUnusable {
        /// The resolved directory.
        dir: PathBuf,
        /// The user the command would run as.
        user: String,
        /// Why `chdir` failed.
        #[source]
        source: std::io::Error,
    },
    /// A limit that is negative, zero or above its maximum. Fix the request.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// An unknown user or an agent that cannot switch users (400); a failed lookup (500).
    #[error(transparent)]
    User(#[from] UserError),
    /// The start's gate (the audit log) refused: nothing was started. A retry may help once
    /// the cause (e.g. a full disk) is fixed.
    #[error("The request could not be recorded in the audit log; nothing was done.")]
    Refused(String),
    /// Retry after a process has exited.
    #[error("Too many running processes (limit {0}); wait for one to exit or signal one.")]
    TooManyRunning(usize),
    /// The table is full of running processes (none exited to evict). Retry after one exits.
    #[error("Too many tracked processes (limit {0}) and none has exited; try again later.")]
    TooManyTracked(usize),
    /// The key was used for a different request. Use a new key.
    #[error("Idempotency key \"{0}\" was already used for a different request.")]
    IdempotencyConflict(String),
    /// The agent is stopping; another agent or a restart is needed.
    #[error("The agent is shutting down.")]
    ShuttingDown,
    /// No such id (never started, evicted, or hidden by isolation). Not retryable.
    #[error("Process \"{0}\" not found.")]
    NotFound(ProcessId),
    /// It has exited, so it cannot be signalled or fed. Not retryable.
    #[error("Process \"{0}\" is not running.")]
    NotRunning(ProcessId),
    /// A running process's record cannot be deleted. Retry after it exits.
    #[error("Process \"{0}\" is still running; signal it first.")]
    StillRunning(ProcessId),
    /// The OS refused to start the process (a retry may help if it was a resource limit).
    #[error("Failed to start process.")]
    Spawn(#[source] std::io::Error),
    /// `kill(2)` failed (not because the process had exited). Not retryable.
    #[error("Failed to signal process.")]
    Signal(#[source] nix::Error),
    /// The state directory cannot be used (agent start only).
    #[error("State directory unusable.")]
    State(#[source] std::io::Error),
    /// Stdin was not opened as a pipe or pty, was closed, or the process exited.
    #[error("Process \"{0}\" has no open stdin ({1}).")]
    NoStdin(ProcessId, &'static str),
    /// The child did not read its stdin in time; `written` bytes went in.
    #[error("Process \"{id}\" did not read its stdin within {after:?}.")]
    StdinTimeout {
        /// The process.
        id: ProcessId,
        /// The time waited for the chunk.
        after: Duration,
        /// Bytes of the request written before the timeout; resend from there.
        written: u64,
    },
    /// Writing to stdin failed (the child closed its end).
    #[error("Writing to the stdin of process \"{0}\" failed.")]
    StdinWrite(ProcessId, #[source] std::io::Error),
    /// A resize of a process started without a pty. Not retryable.
    #[error("Process \"{0}\" has no terminal.")]
    NoTerminal(ProcessId),
}

/// The process manager. Cheap to clone; all clones share one table.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ManagerConfig,
    /// `max_running` and `max_tracked` as in force now (a reload may change them).
    limits: Mutex<(usize, usize)>,
    priority: Priority,
    host: Host,
    /// The user the agent runs as.
    me: User,
    enforcement: Enforcement,
    state_dir: StateDir,
    instance_id: String,
    state: Mutex<State>,
    /// Notified whenever a reservation ends (the start completed or failed): starts with the
    /// same idempotency key wait on it.
    settled: Condvar,
    /// Clone stacks and the supervisors' helper, used without the state lock.
    launcher: Launcher,
    tracker: TaskTracker,
    /// Supervisors hold the read end; when this write end closes (manager dropped, agent dead
    /// even by SIGKILL) they kill their trees.
    death: Option<(OwnedFd, OwnedFd)>,
    null: Option<OwnedFd>,
    /// Starts, spawn failures and exits, for metrics.
    counters: super::counters::ProcCounters,
}

#[derive(Default)]
struct State {
    records: HashMap<ProcessId, Arc<Record>>,
    /// Start order, oldest first: decides eviction and list order.
    order: VecDeque<ProcessId>,
    /// Idempotency keys of records and of starts in progress (`pending`).
    by_key: HashMap<String, ProcessId>,
    /// Starts in progress: reserved under this lock (they count against both limits and own
    /// their idempotency key), spawned without it, then moved into `records` (or released).
    /// Never shown by `list`/`get`: a record appears complete or not at all.
    pending: HashMap<ProcessId, u64>,
    shutting_down: bool,
}

impl Manager {
    /// A manager; problems with the configured state directory are logged and a temporary one
    /// is used instead (the agent calls [`Manager::open`] to refuse to start then).
    pub fn new(cfg: ManagerConfig) -> Self {
        match Self::open(cfg.clone()) {
            Ok(m) => m,
            Err(e) => {
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                tracing::error!(
                    "state directory unusable ({}); results will not survive a restart",
                    cause.unwrap_or_default()
                );
                Self::open(ManagerConfig {
                    state_dir: None,
                    ..cfg
                })
                .unwrap_or_else(|_| Self::bare(ManagerConfig::default(), None))
            }
        }
    }

    /// Opens the state directory, loads the records an earlier agent left there (skipping
    /// corrupt or foreign files with a warning) and starts the manager.
    pub fn open(cfg: ManagerConfig) -> Result<Self, ProcError> {
        let dir = StateDir::open(cfg.state_dir.as_deref()).map_err(ProcError::State)?;
        Ok(Self::bare(cfg, Some(dir)))
    }

    fn bare(cfg: ManagerConfig, dir: Option<StateDir>) -> Self {
        let dir = match dir {
            Some(d) => d,
            // Last resort: a temporary directory failed once already; try again or panic-free
            // fall back to the system temp dir root (logs then fail and say so).
            None => StateDir::open(None).unwrap_or_else(|_| StateDir::unusable()),
        };
        let priority = Priority::relative_to_agent(cfg.nice_increment, cfg.oom_score_adj);
        let death = spawn::pipe()
            .inspect_err(|e| tracing::error!("creating the supervisors' death pipe failed: {e}"))
            .ok();
        let null = spawn::dev_null()
            .inspect_err(|e| tracing::error!("opening /dev/null failed: {e}"))
            .ok();
        let (metas, warnings) = dir.load();
        for w in &warnings {
            tracing::warn!("state directory: {w}");
        }
        let mut st = State::default();
        let launcher = Launcher::new(
            cfg.supervisor
                .exe()
                .and_then(|p| CString::new(p.into_os_string().into_vec()).ok()),
        );
        let mut restored: Vec<Arc<Record>> = metas
            .iter()
            .filter_map(|m| {
                let log = Log::reopen(dir.log_path(&m.id), cfg.log_max_bytes, m.log_end, m.log_error.clone());
                let rec = Record::restore(m, log);
                if rec.is_none() {
                    tracing::warn!(id = %m.id, "state directory: skipping a record with an undecodable output");
                }
                rec.map(Arc::new)
            })
            .collect();
        restored.sort_by_key(|r| r.started_at);
        let excess = restored.len().saturating_sub(cfg.max_tracked);
        for old in restored.drain(..excess) {
            dir.remove(old.id.as_str());
        }
        for rec in restored {
            if let Some(k) = &rec.idempotency_key {
                st.by_key.insert(k.clone(), rec.id.clone());
            }
            st.order.push_back(rec.id.clone());
            st.records.insert(rec.id.clone(), rec);
        }
        if !st.records.is_empty() {
            tracing::info!(records = st.records.len(), dir = %dir.root().display(), "restored exited processes");
        }
        let enforcement = Enforcement::detect(cfg.cgroups);
        if cfg.cgroups {
            tracing::info!(
                mode = enforcement.mode(),
                "per-command limits: {}",
                enforcement.describe()
            );
        }
        // Records of processes that were running when the previous agent died are saved as
        // ended by agent_shutdown now that they are restored that way.
        for rec in st.records.values() {
            let _ = dir.save(&rec.meta());
        }
        Self {
            inner: Arc::new(Inner {
                limits: Mutex::new((cfg.max_running, cfg.max_tracked)),
                cfg,
                priority,
                host: Host::probe(),
                me: User::current(),
                enforcement,
                state_dir: dir,
                instance_id: uuid::Uuid::new_v4().to_string(),
                state: Mutex::new(st),
                settled: Condvar::new(),
                launcher,
                tracker: TaskTracker::new(),
                death,
                null,
                counters: Default::default(),
            }),
        }
    }

    /// Lifetime counters (starts, spawn failures, exits by reason), for metrics.
    pub fn counters(&self) -> &super::counters::ProcCounters {
        &self.inner.counters
    }

    /// A UUID new at every manager (agent) start, so a control can tell "agent restarted"
    /// from "record unknown".
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// The state directory in use.
    pub fn state_dir(&self) -> &Path {
        self.inner.state_dir.root()
    }

    /// The configuration the manager started with (see [`Manager::limits`] for the limits in
    /// force now).
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.cfg
    }

    /// How per-command limits are enforced (rlimits, or rlimits and cgroup v2 groups).
    pub fn enforcement(&self) -> &Enforcement {
        &self.inner.enforcement
    }

    /// The user the agent runs as (commands run as this user unless told otherwise).
    pub fn agent_user(&self) -> &User {
        &self.inner.me
    }

    /// `(max_running, max_tracked)` in force now.
    pub fn limits(&self) -> (usize, usize) {
        *self.inner.limits.lock()
    }

    /// Changes the limits live (config reload). Running processes are never stopped and records
    /// never dropped because of a lower limit: it applies to the next start.
    pub fn set_limits(&self, max_running: usize, max_tracked: usize) {
        *self.inner.limits.lock() = (max_running, max_tracked);
    }

    /// Starts a process, or returns the one an earlier request with the same idempotency key
    /// started. Must be called inside a tokio runtime.
    pub fn start(&self, spec: StartSpec) -> Result<ProcessId, ProcError> {
        self.start_gated(spec, &mut |_| Ok(()))
    }

    /// Like [`start`](Self::start), but `gate` sees what is about to happen after every check
    /// passed and right before the spawn (or the idempotent replay), and can refuse: then
    /// nothing is started and the start fails with [`ProcError::Refused`]. The audit log writes
    /// its record here, so no command runs without one.
    pub fn start_gated(
        &self,
        spec: StartSpec,
        gate: &mut dyn FnMut(&StartFacts<'_>) -> Result<(), String>,
    ) -> Result<ProcessId, ProcError> {
        if spec.command.is_empty() {
            return Err(ProcError::EmptyCommand);
        }
        validate_env(&spec.env)?;
        let limits = Limits::resolve(
            &spec.limits,
            &self.inner.cfg.default_limits,
            &self.inner.cfg.max_limits,
        )?;
        let switch_to = self.resolve_user(spec.user.as_deref())?;
        let user_name = switch_to
            .as_ref()
            .map_or_else(|| self.inner.me.name.clone(), |u| u.name.clone());
        let workdir = self.resolve_workdir(spec.workdir.as_deref(), switch_to.as_ref())?;
        let fingerprint = fingerprint(&spec, &workdir, &user_name, &limits);

        // Limits and the idempotency key are decided under the state lock, which is released
        // for the spawn (1–2 ms): concurrent starts overlap, `list`/`get` are not held up.
        let reservation = match self.reserve(spec.idempotency_key.as_deref(), fingerprint)? {
            Reserved::Replay(rec) => {
                gate(&StartFacts {
                    id: &rec.id,
                    workdir: &rec.workdir,
                    user: &rec.user,
                    limits: &rec.limits,
                    replayed: true,
                })
                .map_err(ProcError::Refused)?;
                return Ok(rec.id.clone());
            }
            Reserved::New(r) => r,
        };
        let id = reservation.id.clone();
        gate(&StartFacts {
            id: &id,
            workdir: &workdir,
            user: &user_name,
            limits: &limits,
            replayed: false,
        })
        .map_err(ProcError::Refused)?;
        let cgroup = self.command_group(&id, &limits)?;
        let procs = cgroup.as_ref().map(CommandGroup::procs);
        let target = Target {
            workdir: &workdir,
            user: switch_to.as_ref(),
            limits,
            cgroup_procs: procs.as_deref(),
        };
        let (spawned, input) = match self.spawn(&spec, &target) {
            Ok(s) => s,
            Err(e) => {
                if let Some(g) = &cgroup {
                    g.remove();
                }
                self.inner.counters.spawn_failed();
                return Err(self.spawn_error(e, &workdir, &user_name));
            }
        };
        let log = Log::create(
            self.inner.state_dir.log_path(id.as_str()),
            self.inner.cfg.log_max_bytes,
        );
        let rec = Arc::new(Record::new(NewRecord {
            id: id.clone(),
            command: spec.command,
            workdir,
            background: spec.background,
            pid: spawned.pid,
            fingerprint,
            idempotency_key: spec.idempotency_key.clone(),
            supervisor: spawned.supervisor,
            log,
            input,
            user: user_name,
            limits,
            started_by: spec.started_by.clone(),
            cgroup,
        }));
        let (late, token) = reservation.complete(rec.clone());

        let peer = spec.started_by.as_ref().map_or("-", |b| b.peer.as_str());
        tracing::info!(id = %id, pid = spawned.pid, peer, "process started");
        self.inner.counters.started();
        let grace = self.inner.cfg.kill_grace;
        let deadline = spec.timeout.map(|t| Instant::now() + t);
        let weak = Arc::downgrade(&self.inner);
        if late {
            // Shutdown began while this one was spawning and did not see it: end it as
            // shutdown ends the others (its kill after the grace takes a fresh look).
            *rec.ending.lock() = Ending::AgentShutdown;
            let _ = signal_tree(&rec, NixSignal::SIGTERM);
        }
        self.inner.tracker.spawn(supervise(
            rec,
            spawned.tree,
            spawned.output,
            deadline,
            grace,
            Box::new(move |rec| on_exit(&weak, rec)),
        ));
        drop(token);
        Ok(id)
    }

    /// Decides a start under the state lock: the record an earlier start with the same key
    /// made (after waiting for that start if it is still in progress), or a reservation that
    /// counts against the limits until it completes or is dropped.
    fn reserve(&self, key: Option<&str>, fingerprint: u64) -> Result<Reserved<'_>, ProcError> {
        let mut st = self.inner.state.lock();
        loop {
            if st.shutting_down {
                return Err(ProcError::ShuttingDown);
            }
            let Some(key) = key else { break };
            let Some(id) = st.by_key.get(key) else { break };
            if let Some(rec) = st.records.get(id) {
                if rec.request_fingerprint == fingerprint {
                    return Ok(Reserved::Replay(rec.clone()));
                }
                return Err(ProcError::IdempotencyConflict(key.to_owned()));
            }
            match st.pending.get(id) {
                Some(fp) if *fp != fingerprint => {
                    return Err(ProcError::IdempotencyConflict(key.to_owned()));
                }
                // Its result decides ours: replay it, or start if it failed. A start is bounded
                // (the helper answers within 10 s), so this wait is too.
                Some(_) => self.inner.settled.wait(&mut st),
                None => break,
            }
        }
        let (max_running, max_tracked) = self.limits();
        let running = st.records.values().filter(|r| r.is_running()).count() + st.pending.len();
        if running >= max_running {
            return Err(ProcError::TooManyRunning(max_running));
        }
        if st.records.len() + st.pending.len() >= max_tracked {
            match st.evict_oldest_exited() {
                Some(old) => self.inner.state_dir.remove(old.as_str()),
                None => return Err(ProcError::TooManyTracked(max_tracked)),
            }
        }
        let id = ProcessId::new_random();
        st.pending.insert(id.clone(), fingerprint);
        if let Some(key) = key {
            st.by_key.insert(key.to_owned(), id.clone());
        }
        Ok(Reserved::New(Reservation {
            inner: &self.inner,
            id,
            key: key.map(str::to_owned),
            token: Some(self.inner.tracker.token()),
        }))
    }

    /// The user to switch to for `requested` (`None`: stay the agent's user).
    fn resolve_user(&self, requested: Option<&str>) -> Result<Option<User>, ProcError> {
        let Some(name) = requested.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        if name == self.inner.me.name {
            return Ok(None);
        }
        let user = User::lookup(name)?;
        if user.uid == self.inner.me.uid {
            return Ok(None);
        }
        if !super::user::is_root() {
            return Err(UserError::NotRoot(name.to_owned()).into());
        }
        Ok(Some(user))
    }

    /// A cgroup v2 group for the command when limits apply that a group enforces for the whole
    /// command (memory, processes) and the agent has a delegated subtree.
    fn command_group(
        &self,
        id: &ProcessId,
        limits: &Limits,
    ) -> Result<Option<CommandGroup>, ProcError> {
        let Some(cgroups) = self.inner.enforcement.cgroups() else {
            return Ok(None);
        };
        if limits.get(Limit::MemoryBytes).is_none() && limits.get(Limit::Processes).is_none() {
            return Ok(None);
        }
        cgroups
            .create(id.as_str(), limits)
            .map(Some)
            .map_err(ProcError::Spawn)
    }

    /// A working directory the user could not enter is the caller's mistake; the rest are
    /// OS failures.
    fn spawn_error(&self, e: ProcError, workdir: &Path, user: &str) -> ProcError {
        match e {
            ProcError::Spawn(io) => match SpawnFailure::of(&io) {
                Some(f) if f.stage == Stage::Workdir => ProcError::WorkdirUnusable {
                    dir: workdir.to_owned(),
                    user: user.to_owned(),
                    source: f.os_error(),
                },
                _ => ProcError::Spawn(io),
            },
            other => other,
        }
    }

    /// Prepares and spawns the command, directly or under a supervisor, with its stdin as asked.
    /// Called without the state lock: concurrent calls share only the launcher.
    fn spawn(&self, spec: &StartSpec, target: &Target<'_>) -> Result<(Spawned, Input), ProcError> {
        let inner = &self.inner;
        let sp = ProcError::Spawn;
        let pty = matches!(spec.stdin, StdinMode::Pty { .. });
        let defaults: &[(&str, &str)] = if pty {
            &[("TERM", "xterm-256color")]
        } else {
            &[]
        };
        let prepared = Prepared::new(
            &inner.host,
            &spawn::Command {
                command: &spec.command,
                workdir: target.workdir,
                env: &spec.env,
                defaults,
                priority: inner.priority,
                limits: target.limits,
                user: target.user,
                cgroup_procs: target.cgroup_procs,
            },
        )
        .map_err(sp)?;
        let null = inner
            .null
            .as_ref()
            .ok_or_else(|| sp(std::io::Error::other("/dev/null is not open")))?;
        // (child's stdin, child's stdout+stderr, our output end, our input end, pty master)
        let (child_in, child_out, out_r, in_w, master): (
            Option<OwnedFd>,
            OwnedFd,
            OwnedFd,
            Option<OwnedFd>,
            Option<OwnedFd>,
        ) = match spec.stdin {
            StdinMode::Null => {
                let (r, w) = spawn::pipe().map_err(sp)?;
                (None, w, r, None, None)
            }
            StdinMode::Pipe => {
                let (r, w) = spawn::pipe().map_err(sp)?;
                let (in_r, in_w) = spawn::pipe().map_err(sp)?;
                (Some(in_r), w, r, Some(in_w), None)
            }
            StdinMode::Pty { rows, cols } => {
                let (master, slave) = open_pty(rows, cols).map_err(sp)?;
                let out = master.try_clone().map_err(sp)?;
                let input = master.try_clone().map_err(sp)?;
                (None, slave, out, Some(input), Some(master))
            }
        };
        let stdio = Stdio {
            stdin: child_in.as_ref().map_or(
                if pty {
                    child_out.as_raw_fd()
                } else {
                    null.as_raw_fd()
                },
                |f| f.as_raw_fd(),
            ),
            stdout: child_out.as_raw_fd(),
            stderr: child_out.as_raw_fd(),
            tty: pty,
        };
        let (pid, report, tree) = match (&inner.death, inner.cfg.tree_tracking) {
            (Some((death_r, _)), true) => {
                let s = inner
                    .launcher
                    .start_supervisor(&prepared, stdio, death_r.as_raw_fd(), null.as_raw_fd())
                    .map_err(sp)?;
                let waiter = spawn::Waiter::new(s.supervisor).map_err(sp)?;
                spawn::set_nonblocking(s.status.as_raw_fd()).map_err(sp)?;
                let status = pipe::Receiver::from_owned_fd(s.status).map_err(sp)?;
                (s.pid, s.report, Tree::Supervised { waiter, status })
            }
            _ => {
                let (pid, report) = inner
                    .launcher
                    .with_stack(|stack| spawn::spawn(&prepared, stdio, stack))
                    .map_err(sp)?
                    .map_err(|r| sp(r.into_error()))?;
                let waiter = spawn::Waiter::new(pid).map_err(sp)?;
                (pid, report, Tree::Direct { waiter })
            }
        };
        // Only the child may hold its ends, or EOF never comes.
        drop(child_out);
        drop(child_in);
        for e in report.adjust_errors(inner.priority) {
            tracing::warn!(pid, "{e}");
        }
        spawn::set_nonblocking(out_r.as_raw_fd()).map_err(sp)?;
        let output = fdio::Reader::new(out_r).map_err(sp)?;
        let writer = match in_w {
            Some(w) => {
                spawn::set_nonblocking(w.as_raw_fd()).map_err(sp)?;
                Some(fdio::Writer::new(w).map_err(sp)?)
            }
            None => None,
        };
        let input = Input {
            mode: spec.stdin,
            writer: tokio::sync::Mutex::new(writer),
            pty: master,
        };
        Ok((
            Spawned {
                pid: pid as u32,
                supervisor: tree.supervisor(),
                tree,
                output,
            },
            input,
        ))
    }

    /// Writes `data` to the process's stdin, waiting at most `timeout` for the child to read;
    /// `close` closes stdin afterwards (a pty gets its end-of-file character instead). Returns
    /// the bytes written.
    pub async fn write_stdin(
        &self,
        id: &ProcessId,
        data: &[u8],
        close: bool,
        timeout: Duration,
    ) -> Result<u64, ProcError> {
        let rec = self.get(id)?;
        write_stdin(&rec, data, close, timeout).await
    }

    /// Changes the terminal size of a process started with a pty (SIGWINCH follows).
    pub fn resize(&self, id: &ProcessId, rows: u16, cols: u16) -> Result<(), ProcError> {
        let rec = self.get(id)?;
        if !rec.is_running() {
            return Err(ProcError::NotRunning(id.clone()));
        }
        let Some(master) = &rec.input.pty else {
            return Err(ProcError::NoTerminal(id.clone()));
        };
        set_window_size(master.as_raw_fd(), rows, cols).map_err(ProcError::Spawn)
    }

    /// The record of `id`; [`ProcError::NotFound`] when it is not tracked.
    pub fn get(&self, id: &ProcessId) -> Result<Arc<Record>, ProcError> {
        self.inner
            .state
            .lock()
            .records
            .get(id)
            .cloned()
            .ok_or_else(|| ProcError::NotFound(id.clone()))
    }

    /// Every record: running first, then most recently started first.
    pub fn list(&self) -> Vec<Snapshot> {
        let st = self.inner.state.lock();
        let recs: Vec<_> = st
            .order
            .iter()
            .rev()
            .filter_map(|id| st.records.get(id).cloned())
            .collect();
        drop(st);
        let (mut running, exited): (Vec<_>, Vec<_>) = recs
            .iter()
            .map(|r| r.snapshot())
            .partition(|s| s.exit.is_none());
        running.extend(exited);
        running
    }

    /// Records without an exit yet (what `max_running` bounds).
    pub fn running_count(&self) -> usize {
        self.inner
            .state
            .lock()
            .records
            .values()
            .filter(|r| r.is_running())
            .count()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running then.
    /// Any number of callers may wait at once; one exit releases them all.
    pub async fn wait(&self, id: &ProcessId, timeout: Duration) -> Result<Option<Exit>, ProcError> {
        let rec = self.get(id)?;
        let mut rx = rec.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|e| e.is_some())).await;
        Ok(match waited {
            Ok(Ok(exit)) => exit.clone(),
            // The sender lives in the record we hold, so it cannot be dropped; be safe anyway.
            Ok(Err(_)) | Err(_) => rec.exit(),
        })
    }

    /// Sends `signal`: kill and terminate to the whole tree (with tracking), interrupt and
    /// hangup to the shell's process group. With tracking, a process whose shell exited but
    /// whose descendants live on can still be killed.
    pub fn signal(&self, id: &ProcessId, signal: Signal) -> Result<(), ProcError> {
        let rec = self.get(id)?;
        let leftovers = rec.supervisor.is_some() && rec.tree_alive();
        if !(rec.is_running() || leftovers && is_tree_wide(signal)) {
            return Err(ProcError::NotRunning(id.clone()));
        }
        if is_tree_wide(signal) {
            return signal_tree(&rec, signal.to_nix()).map_err(ProcError::Signal);
        }
        rec.sent_signal(signal.to_nix() as i32);
        match spawn::signal_group(rec.pid, signal.to_nix()) {
            // The group is gone but the record is still draining its pipe: nothing to signal.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(ProcError::Signal(e)),
        }
    }

    /// Forgets an exited process.
    pub fn remove(&self, id: &ProcessId) -> Result<(), ProcError> {
        let mut st = self.inner.state.lock();
        let rec = st
            .records
            .get(id)
            .ok_or_else(|| ProcError::NotFound(id.clone()))?;
        if rec.is_running() || rec.tree_alive() {
            return Err(ProcError::StillRunning(id.clone()));
        }
        st.forget(id);
        drop(st);
        self.inner.state_dir.remove(id.as_str());
        Ok(())
    }

    /// Refuses new starts, terminates every process group, kills what is left after `grace`,
    /// and waits (bounded) until every child has been reaped.
    pub async fn shutdown(&self, grace: Duration) {
        let alive: Vec<Arc<Record>> = {
            let mut st = self.inner.state.lock();
            st.shutting_down = true;
            st.records
                .values()
                .filter(|r| r.is_running() || r.tree_alive())
                .cloned()
                .collect()
        };
        self.inner.tracker.close();
        for rec in &alive {
            if rec.is_running() {
                *rec.ending.lock() = Ending::AgentShutdown;
            }
            let _ = signal_tree(rec, NixSignal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok()
        {
            return;
        }
        // A fresh look: starts that were spawning when shutdown began are records now.
        let alive: Vec<Arc<Record>> = self.inner.state.lock().records.values().cloned().collect();
        for rec in alive.iter().filter(|r| r.is_running() || r.tree_alive()) {
            tracing::warn!(id = %rec.id, pid = rec.pid, "process tree still alive after grace; killing");
            let _ = signal_tree(rec, NixSignal::SIGKILL);
        }
        // SIGKILL cannot be ignored; supervisors finish once pipes close (bounded by kill_grace).
        let bound = self.inner.cfg.kill_grace + Duration::from_secs(5);
        if tokio::time::timeout(bound, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!("process supervisors did not finish within {bound:?}");
        }
    }

    /// The request's directory (relative to the base), else the base: the home of the user
    /// the command switches to, else `default_workdir`, else the agent's `$HOME`.
    fn resolve_workdir(
        &self,
        requested: Option<&Path>,
        user: Option<&User>,
    ) -> Result<PathBuf, ProcError> {
        let base = match user {
            Some(u) => u.home.clone(),
            None => self
                .inner
                .cfg
                .default_workdir
                .clone()
                .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("/")),
        };
        let dir = match requested {
            Some(p) if !p.as_os_str().is_empty() => base.join(p),
            _ => base,
        };
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(ProcError::WorkdirMissing(dir))
        }
    }
}

impl Drop for Inner {
    /// Last handle gone: no process may outlive the manager. Supervisors also see their death
    /// pipe close when `death` drops right after this, and kill their trees.
    fn drop(&mut self) {
        for rec in self
            .state
            .get_mut()
            .records
            .values()
            .filter(|r| r.is_running() || r.tree_alive())
        {
            let _ = signal_tree(rec, NixSignal::SIGKILL);
        }
    }
}

impl State {
    /// Evicts the oldest exited record whose tree is gone; `None` if there is none.
    fn evict_oldest_exited(&mut self) -> Option<ProcessId> {
        let victim = self
            .order
            .iter()
            .find(|id| {
                self.records
                    .get(*id)
                    .is_some_and(|r| !r.is_running() && !r.tree_alive())
            })
            .cloned();
        let id = victim?;
        self.forget(&id);
        Some(id)
    }

    fn forget(&mut self, id: &ProcessId) {
        if let Some(rec) = self.records.remove(id)
            && let Some(key) = &rec.idempotency_key
            && self.by_key.get(key) == Some(id)
        {
            self.by_key.remove(key);
        }
        self.order.retain(|x| x != id);
    }
}

/// What [`Manager::reserve`] decided.
enum Reserved<'a> {
    /// An earlier start with the same key and request made this record.
    Replay(Arc<Record>),
    /// Go ahead: the reservation holds a slot and the key.
    New(Reservation<'a>),
}

/// A start in progress: counts against `max_running` and `max_tracked` and owns its idempotency
/// key until [`complete`](Self::complete) turns it into a record; dropped (the spawn failed or
/// was refused), it releases both and wakes starts waiting for the key.
struct Reservation<'a> {
    inner: &'a Inner,
    id: ProcessId,
    key: Option<String>,
    /// Keeps a concurrent shutdown's wait open until the supervising task exists.
    token: Option<TaskTrackerToken>,
}

impl Reservation<'_> {
    /// Makes `rec` visible (`list`, `get`, `signal`, replays of its key) and returns whether
    /// shutdown began meanwhile (it did not see this process), with the tracker token to
    /// hold until the supervising task is spawned.
    fn complete(mut self, rec: Arc<Record>) -> (bool, Option<TaskTrackerToken>) {
        let mut st = self.inner.state.lock();
        st.pending.remove(&self.id);
        st.order.push_back(self.id.clone());
        st.records.insert(self.id.clone(), rec);
        let late = st.shutting_down;
        drop(st);
        self.inner.settled.notify_all();
        // `drop` then finds nothing pending to release.
        (late, self.token.take())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock();
        if st.pending.remove(&self.id).is_none() {
            return;
        }
        if let Some(key) = &self.key
            && st.by_key.get(key) == Some(&self.id)
        {
            st.by_key.remove(key);
        }
        drop(st);
        self.inner.settled.notify_all();
    }
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), ProcError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ProcError::InvalidEnv(format!(
                "name {k:?} must be non-empty without '=' or NUL"
            )));
        }
        if v.contains('\0') {
            return Err(ProcError::InvalidEnv(format!("value of {k} contains NUL")));
        }
    }
    Ok(())
}

/// Where and how one command runs, resolved.
struct Target<'a> {
    workdir: &'a Path,
    user: Option<&'a User>,
    limits: Limits,
    cgroup_procs: Option<&'a Path>,
}

/// A stable hash of the request (FNV-1a over its JSON form), so idempotency keys keep working
/// across agent versions and restarts. The user and limits count only when set, so records of
/// agents before them keep their fingerprints.
fn fingerprint(spec: &StartSpec, workdir: &Path, user: &str, limits: &Limits) -> u64 {
    let stdin = match spec.stdin {
        StdinMode::Null => "null".to_owned(),
        StdinMode::Pipe => "pipe".to_owned(),
        StdinMode::Pty { rows, cols } => format!("pty {rows}x{cols}"),
    };
    let mut parts = serde_json::json!([
        spec.command,
        workdir,
        spec.env,
        spec.background,
        spec.timeout.map(|t| t.as_millis() as u64),
        stdin,
    ]);
    if spec.user.is_some() || !limits.is_empty() {
        let named: BTreeMap<&str, u64> = limits.iter().map(|(l, v)| (l.name(), v)).collect();
        if let Some(a) = parts.as_array_mut() {
            a.push(serde_json::json!([user, named]));
        }
    }
    let text = parts.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// After a process exited: keep the logs within `state_max_bytes` (oldest exited first) and
/// persist its record.
fn on_exit(inner: &Weak<Inner>, rec: &Arc<Record>) {
    let Some(inner) = inner.upgrade() else { return };
    if let Some(exit) = rec.exit() {
        inner.counters.exited(exit.reason.as_str());
    }
    let mut dropped = Vec::new();
    {
        let st = inner.state.lock();
        let mut total: u64 = st.records.values().map(|r| r.log.disk_bytes()).sum();
        for id in &st.order {
            if total <= inner.cfg.state_max_bytes {
                break;
            }
            let Some(r) = st.records.get(id) else {
                continue;
            };
            if r.is_running() || r.log.disk_bytes() == 0 {
                continue;
            }
            total -= r.log.disk_bytes();
            r.log.drop_file();
            dropped.push(r.clone());
        }
    }
    for r in &dropped {
        tracing::info!(id = %r.id, "log deleted: state_max_bytes reached");
        let _ = inner.state_dir.save(&r.meta());
    }
    if let Err(e) = inner.state_dir.save(&rec.meta()) {
        tracing::warn!(id = %rec.id, "persisting the record failed: {e}");
    }
}

async fn write_stdin(
    rec: &Record,
    data: &[u8],
    close: bool,
    timeout: Duration,
) -> Result<u64, ProcError> {
    let mut lease = StdinLease::open(rec).await?;
    lease.write(data, timeout).await?;
    if close {
        lease.close().await;
    }
    Ok(lease.written)
}

/// Exclusive use of a process's stdin for one request: chunks written in order, each waiting
/// at most the request's timeout for the child to read.
pub struct StdinLease<'a> {
    rec: &'a Record,
    guard: tokio::sync::MutexGuard<'a, Option<fdio::Writer>>,
    /// Bytes written so far.
    pub written: u64,
}

impl<'a> StdinLease<'a> {
    /// Waits for other writers of the same stdin, then checks it is open.
    pub async fn open(rec: &'a Record) -> Result<Self, ProcError> {
        if rec.input.mode == StdinMode::Null {
            return Err(ProcError::NoStdin(
                rec.id.clone(),
                "it was not started with \"stdin\": \"pipe\" or a pty",
            ));
        }
        let guard = rec.input.writer.lock().await;
        if !rec.is_running() {
            return Err(ProcError::NoStdin(rec.id.clone(), "the process exited"));
        }
        if guard.is_none() {
            return Err(ProcError::NoStdin(rec.id.clone(), "stdin was closed"));
        }
        Ok(Self {
            rec,
            guard,
            written: 0,
        })
    }

    /// Writes all of `data`, waiting at most `timeout` for the child to make room; on
    /// [`ProcError::StdinTimeout`] part of it may have gone in (`written` says how much of the
    /// whole request).
    pub async fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), ProcError> {
        let Some(w) = self.guard.as_ref() else {
            return Err(ProcError::NoStdin(self.rec.id.clone(), "stdin was closed"));
        };
        let mut n = 0;
        let r = tokio::time::timeout(timeout, w.write_all(data, &mut n)).await;
        self.written += n as u64;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProcError::StdinWrite(self.rec.id.clone(), e)),
            Err(_) => Err(ProcError::StdinTimeout {
                id: self.rec.id.clone(),
                after: timeout,
                written: self.written,
            }),
        }
    }

    /// Closes stdin: a pipe is closed; a terminal gets its end-of-file character (^D), since
    /// closing the master would hang the terminal up.
    pub async fn close(&mut self) {
        if matches!(self.rec.input.mode, StdinMode::Pty { .. }) {
            if let Some(w) = self.guard.as_ref() {
                let mut n = 0;
                let _ = tokio::time::timeout(Duration::from_secs(1), w.write_all(b"\x04", &mut n))
                    .await;
            }
        } else {
            self.guard.take();
        }
    }
}

/// A new pseudo-terminal of the given size: (master, slave), both close-on-exec and above the
/// standard streams.
fn open_pty(rows: u16, cols: u16) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).map_err(std::io::Error::from)?;
    let mut out = Vec::new();
    for fd in [pty.master, pty.slave] {
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        out.push(spawn::above_stdio(fd)?);
    }
    let slave = out.pop().ok_or_else(|| std::io::Error::other("openpty"))?;
    let master = out.pop().ok_or_else(|| std::io::Error::other("openpty"))?;
    Ok((master, slave))
}

fn set_window_size(fd: std::os::fd::RawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
