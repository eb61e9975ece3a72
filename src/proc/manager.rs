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

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal as NixSignal;
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::{Instant, sleep_until};
use tokio_util::task::TaskTracker;

use super::record::{Ending, Exit, ExitReason, ProcessId, Record, Snapshot};
use super::spawn::{self, Host, Prepared, Priority, Stack, Stdio};
use super::supervisor;

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
}

impl Default for ManagerConfig {
    /// 64 running, 1024 tracked, nice +5, OOM score 998, 5 s grace: children are the OOM
    /// killer's first choice and yield the CPU to the agent.
    fn default() -> Self {
        Self {
            max_running: 64,
            max_tracked: 1024,
            default_workdir: None,
            nice_increment: 5,
            oom_score_adj: Some(998),
            kill_grace: Duration::from_secs(5),
            tree_tracking: true,
        }
    }
}

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct StartSpec {
    pub command: String,
    pub workdir: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub background: bool,
    pub idempotency_key: Option<String>,
    pub timeout: Option<Duration>,
}

/// Signals the API can send (always to the whole process group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Terminate,
    Interrupt,
    Hangup,
}

impl Signal {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "kill" => Self::Kill,
            "terminate" => Self::Terminate,
            "interrupt" => Self::Interrupt,
            "hangup" => Self::Hangup,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Terminate => "terminate",
            Self::Interrupt => "interrupt",
            Self::Hangup => "hangup",
        }
    }

    /// Kill and terminate reach the whole tree; interrupt and hangup the process group.
    fn is_tree_wide(self) -> bool {
        matches!(self, Self::Kill | Self::Terminate)
    }

    fn to_nix(self) -> NixSignal {
        match self {
            Self::Kill => NixSignal::SIGKILL,
            Self::Terminate => NixSignal::SIGTERM,
            Self::Interrupt => NixSignal::SIGINT,
            Self::Hangup => NixSignal::SIGHUP,
        }
    }
}

/// Errors from the manager. Each maps to one HTTP status in `api`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// Bad request; retrying the same request will not help.
    #[error("Command is required.")]
    EmptyCommand,
    #[error("Invalid environment variable: {0}")]
    InvalidEnv(String),
    #[error("Working directory \"{0}\" does not exist or is not a directory.")]
    WorkdirMissing(PathBuf),
    /// Retry after a process has exited.
    #[error("Too many running processes (limit {0}); wait for one to exit or signal one.")]
    TooManyRunning(usize),
    #[error("Too many tracked processes (limit {0}) and none has exited; try again later.")]
    TooManyTracked(usize),
    #[error("Idempotency key \"{0}\" was already used for a different request.")]
    IdempotencyConflict(String),
    /// The agent is stopping; another agent or a restart is needed.
    #[error("The agent is shutting down.")]
    ShuttingDown,
    #[error("Process \"{0}\" not found.")]
    NotFound(ProcessId),
    #[error("Process \"{0}\" is not running.")]
    NotRunning(ProcessId),
    #[error("Process \"{0}\" is still running; signal it first.")]
    StillRunning(ProcessId),
    /// The OS refused to start the process (a retry may help if it was a resource limit).
    #[error("Failed to start process.")]
    Spawn(#[source] std::io::Error),
    #[error("Failed to signal process.")]
    Signal(#[source] nix::Error),
}

/// The process manager. Cheap to clone; all clones share one table.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ManagerConfig,
    priority: Priority,
    host: Host,
    state: Mutex<State>,
    tracker: TaskTracker,
    /// Supervisors hold the read end; when this write end closes (manager dropped, agent dead
    /// even by SIGKILL) they kill their trees.
    death: Option<(OwnedFd, OwnedFd)>,
    null: Option<OwnedFd>,
}

#[derive(Default)]
struct State {
    records: HashMap<ProcessId, Arc<Record>>,
    /// Start order, oldest first: decides eviction and list order.
    order: VecDeque<ProcessId>,
    by_key: HashMap<String, ProcessId>,
    shutting_down: bool,
    /// The clone child's stack, reused (starts are serialised by this lock).
    stack: Option<Stack>,
}

impl Manager {
    pub fn new(cfg: ManagerConfig) -> Self {
        let priority = Priority::relative_to_agent(cfg.nice_increment, cfg.oom_score_adj);
        let death = spawn::pipe()
            .inspect_err(|e| tracing::error!("creating the supervisors' death pipe failed: {e}"))
            .ok();
        let null = spawn::dev_null()
            .inspect_err(|e| tracing::error!("opening /dev/null failed: {e}"))
            .ok();
        Self {
            inner: Arc::new(Inner {
                cfg,
                priority,
                host: Host::probe(),
                state: Mutex::new(State::default()),
                tracker: TaskTracker::new(),
                death,
                null,
            }),
        }
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.inner.cfg
    }

    /// Starts a process, or returns the one an earlier request with the same idempotency key
    /// started. Must be called inside a tokio runtime.
    pub fn start(&self, spec: StartSpec) -> Result<ProcessId, ProcError> {
        if spec.command.is_empty() {
            return Err(ProcError::EmptyCommand);
        }
        validate_env(&spec.env)?;
        let workdir = self.resolve_workdir(spec.workdir.as_deref())?;
        let fingerprint = fingerprint(&spec, &workdir);

        // The lock is held across the (synchronous) fork/exec so that limits and idempotency
        // keys are decided atomically; it is never held across an `.await`.
        let mut st = self.inner.state.lock();
        if st.shutting_down {
            return Err(ProcError::ShuttingDown);
        }
        if let Some(key) = &spec.idempotency_key
            && let Some(id) = st.by_key.get(key)
        {
            let rec = &st.records[id];
            if rec.request_fingerprint == fingerprint {
                return Ok(id.clone());
            }
            return Err(ProcError::IdempotencyConflict(key.clone()));
        }
        let running = st.records.values().filter(|r| r.is_running()).count();
        if running >= self.inner.cfg.max_running {
            return Err(ProcError::TooManyRunning(self.inner.cfg.max_running));
        }
        if st.records.len() >= self.inner.cfg.max_tracked && !st.evict_oldest_exited() {
            return Err(ProcError::TooManyTracked(self.inner.cfg.max_tracked));
        }

        let spawned = self.spawn(&mut st, &spec, &workdir)?;
        let id = ProcessId::new_random();
        let rec = Arc::new(Record::new(
            id.clone(),
            spec.command,
            workdir,
            spec.background,
            spawned.pid,
            fingerprint,
            spec.idempotency_key.clone(),
            spawned.supervisor,
        ));
        st.records.insert(id.clone(), rec.clone());
        st.order.push_back(id.clone());
        if let Some(key) = spec.idempotency_key {
            st.by_key.insert(key, id.clone());
        }
        drop(st);

        tracing::info!(id = %id, pid = spawned.pid, "process started");
        let grace = self.inner.cfg.kill_grace;
        let deadline = spec.timeout.map(|t| Instant::now() + t);
        self.inner.tracker.spawn(supervise(
            rec,
            spawned.tree,
            spawned.output,
            deadline,
            grace,
        ));
        Ok(id)
    }

    /// Prepares and spawns the command, directly or under a supervisor. Called with the state
    /// lock held (it guards the reused clone stack).
    fn spawn(
        &self,
        st: &mut State,
        spec: &StartSpec,
        workdir: &Path,
    ) -> Result<Spawned, ProcError> {
        let inner = &self.inner;
        let prepared = Prepared::new(
            &inner.host,
            &spec.command,
            workdir,
            &spec.env,
            &[],
            inner.priority,
        )
        .map_err(ProcError::Spawn)?;
        let null = inner
            .null
            .as_ref()
            .ok_or_else(|| ProcError::Spawn(std::io::Error::other("/dev/null is not open")))?;
        let (out_r, out_w) = spawn::pipe().map_err(ProcError::Spawn)?;
        let stdio = Stdio {
            stdin: null.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: out_w.as_raw_fd(),
            tty: false,
        };
        let (pid, report, tree) = match (&inner.death, inner.cfg.tree_tracking) {
            (Some((death_r, _)), true) => {
                let s = supervisor::start(&prepared, stdio, death_r.as_raw_fd(), null.as_raw_fd())
                    .map_err(ProcError::Spawn)?;
                let waiter = spawn::Waiter::new(s.supervisor).map_err(ProcError::Spawn)?;
                spawn::set_nonblocking(s.status.as_raw_fd()).map_err(ProcError::Spawn)?;
                let status = pipe::Receiver::from_owned_fd(s.status).map_err(ProcError::Spawn)?;
                (s.pid, s.report, Tree::Supervised { waiter, status })
            }
            _ => {
                let stack = match &mut st.stack {
                    Some(s) => s,
                    slot => slot.insert(Stack::new().map_err(ProcError::Spawn)?),
                };
                let (pid, report) = spawn::spawn(&prepared, stdio, stack)
                    .map_err(|r| ProcError::Spawn(r.into_error()))?;
                let waiter = spawn::Waiter::new(pid).map_err(ProcError::Spawn)?;
                (pid, report, Tree::Direct { waiter })
            }
        };
        drop(out_w);
        for e in report.adjust_errors(inner.priority) {
            tracing::warn!(pid, "{e}");
        }
        spawn::set_nonblocking(out_r.as_raw_fd()).map_err(ProcError::Spawn)?;
        let output = pipe::Receiver::from_owned_fd(out_r).map_err(ProcError::Spawn)?;
        Ok(Spawned {
            pid: pid as u32,
            supervisor: tree.supervisor(),
            tree,
            output,
        })
    }

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
        if !(rec.is_running() || leftovers && signal.is_tree_wide()) {
            return Err(ProcError::NotRunning(id.clone()));
        }
        if signal.is_tree_wide() {
            return signal_tree(&rec, signal.to_nix()).map_err(ProcError::Signal);
        }
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

    fn resolve_workdir(&self, requested: Option<&Path>) -> Result<PathBuf, ProcError> {
        let base = self
            .inner
            .cfg
            .default_workdir
            .clone()
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
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
    /// Evicts the oldest exited record whose tree is gone; false if there is none.
    fn evict_oldest_exited(&mut self) -> bool {
        let victim = self
            .order
            .iter()
            .find(|id| {
                self.records
                    .get(*id)
                    .is_some_and(|r| !r.is_running() && !r.tree_alive())
            })
            .cloned();
        match victim {
            Some(id) => {
                self.forget(&id);
                true
            }
            None => false,
        }
    }

    fn forget(&mut self, id: &ProcessId) {
        if let Some(rec) = self.records.remove(id)
            && let Some(key) = &rec.idempotency_key
        {
            self.by_key.remove(key);
        }
        self.order.retain(|x| x != id);
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

fn fingerprint(spec: &StartSpec, workdir: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    (
        &spec.command,
        workdir,
        &spec.env,
        spec.background,
        spec.timeout,
    )
        .hash(&mut h);
    h.finish()
}

/// What `spawn` hands to `supervise`.
struct Spawned {
    pid: u32,
    supervisor: Option<i32>,
    tree: Tree,
    output: pipe::Receiver,
}

/// How the shell's exit and the tree's end are observed.
enum Tree {
    /// No tracking: the shell is our child; its exit ends the tree as far as we can know.
    Direct { waiter: spawn::Waiter },
    /// The supervisor reports the shell's status on `status`; its own exit = tree gone.
    Supervised {
        waiter: spawn::Waiter,
        status: pipe::Receiver,
    },
}

impl Tree {
    fn supervisor(&self) -> Option<i32> {
        match self {
            Self::Direct { .. } => None,
            Self::Supervised { waiter, .. } => Some(waiter.pid()),
        }
    }
}

/// Terminates (SIGTERM) or kills (SIGKILL) the process: its supervisor's whole tree with
/// tracking, else the process group. Marks the kill so the record waits for the tree.
fn signal_tree(rec: &Record, sig: NixSignal) -> nix::Result<()> {
    rec.kill_requested.store(true, Ordering::Release);
    let r = match rec.supervisor {
        Some(sup) if rec.tree_alive() => {
            let tree_sig = if sig == NixSignal::SIGKILL {
                NixSignal::try_from(supervisor::KILL_TREE).unwrap_or(NixSignal::SIGUSR1)
            } else {
                sig
            };
            // The supervisor is our child and is reaped only after `tree_alive` turns false,
            // so its pid cannot have been reused.
            spawn::signal_pid(sup, tree_sig)
        }
        Some(_) => Ok(()),
        None => spawn::signal_group(rec.pid, sig),
    };
    match r {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads the output pipe, observes the shell's exit and the tree's end, enforces the deadline,
/// and records the exit once the shell has exited, the pipe reached EOF and, if a kill was
/// asked for, the tree is gone. With tracking it then stays until the tree is gone, so that
/// shutdown can reach leftovers (daemons the command started).
async fn supervise(
    rec: Arc<Record>,
    mut tree: Tree,
    mut pipe: pipe::Receiver,
    deadline: Option<Instant>,
    grace: Duration,
) {
    // Heap buffer: a large array would bloat every supervisor future.
    let mut buf = vec![0u8; 32 * 1024];
    let mut msg = [0u8; supervisor::MSG_LEN];
    let mut status: Option<std::io::Result<std::process::ExitStatus>> = None;
    let mut eof = false;
    let mut tree_gone = false;
    let mut recorded = false;
    let mut deadline = deadline;
    let mut kill_at: Option<Instant> = None;
    // Set when the shell is gone and its group is empty but someone (a daemon that left the
    // group) still holds the pipe: after `grace` we stop waiting for EOF.
    let mut orphan_check: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(86400 * 365);

    let mut status_eof = false;
    // The supervisor reported an empty tree with the shell's exit (it exits right after).
    let mut tree_empty = false;
    loop {
        if tree_gone && status.is_none() && !recorded {
            // The supervisor wrote the shell's status before exiting; it is in the pipe.
            if let Tree::Supervised {
                status: pipe_in, ..
            } = &mut tree
            {
                let got = tokio::time::timeout(
                    Duration::from_millis(100),
                    read_msg(Some(pipe_in), &mut msg),
                )
                .await;
                let f = supervisor::decode(&msg);
                status = Some(match got {
                    Ok(Ok(true)) if f[0] == supervisor::MSG_EXITED => {
                        use std::os::unix::process::ExitStatusExt;
                        tree_empty = f[2] == 1;
                        Ok(std::process::ExitStatus::from_raw(f[1]))
                    }
                    _ => Err(std::io::Error::other("process supervisor exited early")),
                });
            }
        }
        if tree_gone || tree_empty {
            rec.tree_alive.store(false, Ordering::Release);
        }
        if !recorded
            && status.is_some()
            && eof
            && (tree_gone || tree_empty || !rec.kill_requested.load(Ordering::Acquire))
        {
            recorded = true;
            deadline = None;
            kill_at = None;
            record_exit(&rec, status.take());
        }
        if recorded && tree_gone {
            break;
        }
        let (sup_wait, status_pipe) = match &mut tree {
            Tree::Direct { waiter } => (waiter, None),
            Tree::Supervised { waiter, status } => (waiter, Some(status)),
        };
        let direct = status_pipe.is_none();
        tokio::select! {
            st = sup_wait.wait(), if !tree_gone => {
                tree_gone = true;
                if direct {
                    status = Some(st);
                    if !eof {
                        orphan_check = Some(Instant::now() + Duration::from_millis(500));
                    }
                } else if let Err(e) = st {
                    tracing::warn!(id = %rec.id, "waiting for the process supervisor failed: {e}");
                }
            }
            r = read_msg(status_pipe, &mut msg), if !direct && !status_eof && status.is_none() && !recorded => {
                if !matches!(r, Ok(true)) {
                    status_eof = true;
                } else {
                    let f = supervisor::decode(&msg);
                    if f[0] == supervisor::MSG_EXITED {
                        use std::os::unix::process::ExitStatusExt;
                        status = Some(Ok(std::process::ExitStatus::from_raw(f[1])));
                        tree_empty = f[2] == 1;
                        if !eof {
                            orphan_check = Some(Instant::now() + Duration::from_millis(500));
                        }
                    }
                }
            }
            r = pipe.read(&mut buf), if !eof => match r {
                Ok(0) => eof = true,
                Ok(n) => rec.output.write(&buf[..n]),
                Err(e) => {
                    tracing::warn!(id = %rec.id, "reading process output failed: {e}");
                    eof = true;
                }
            },
            _ = sleep_until(deadline.unwrap_or_else(far)), if deadline.is_some() => {
                deadline = None;
                tracing::info!(id = %rec.id, "timeout reached; terminating process tree");
                *rec.ending.lock() = Ending::TimedOut;
                let _ = signal_tree(&rec, NixSignal::SIGTERM);
                kill_at = Some(Instant::now() + grace);
            }
            _ = sleep_until(kill_at.unwrap_or_else(far)), if kill_at.is_some() => {
                kill_at = None;
                let _ = signal_tree(&rec, NixSignal::SIGKILL);
            }
            _ = sleep_until(orphan_check.unwrap_or_else(far)), if orphan_check.is_some() && !eof => {
                if spawn::group_alive(rec.pid) {
                    orphan_check = Some(Instant::now() + Duration::from_millis(500));
                } else {
                    // Give escaped writers a last grace period, then give up on EOF.
                    orphan_check = None;
                    let _ = tokio::time::timeout(grace, drain(&mut pipe, &rec, &mut buf)).await;
                    eof = true;
                }
            }
        }
    }
}

/// Reads one status message; `Ok(false)` on EOF.
async fn read_msg(
    status: Option<&mut pipe::Receiver>,
    msg: &mut [u8; supervisor::MSG_LEN],
) -> std::io::Result<bool> {
    let Some(status) = status else {
        return std::future::pending().await;
    };
    match status.read_exact(msg).await {
        Ok(_) => Ok(true),
        // EOF comes with the supervisor's exit, which its waiter reports.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn record_exit(rec: &Record, status: Option<std::io::Result<std::process::ExitStatus>>) {
    let ending = *rec.ending.lock();
    let exit = match status {
        Some(Ok(st)) => exit_from_status(st, ending),
        Some(Err(e)) => {
            tracing::warn!(id = %rec.id, "waiting for process failed: {e}");
            Exit {
                code: -1,
                signal: None,
                reason: ExitReason::Exited,
                at: SystemTime::now(),
            }
        }
        None => unreachable_exit(),
    };
    tracing::info!(id = %rec.id, code = exit.code, reason = exit.reason.as_str(), "process exited");
    rec.set_exit(exit);
}

async fn drain(pipe: &mut pipe::Receiver, rec: &Record, buf: &mut [u8]) {
    while let Ok(n) = pipe.read(buf).await {
        if n == 0 {
            break;
        }
        rec.output.write(&buf[..n]);
    }
}

fn unreachable_exit() -> Exit {
    // The loop only ends once `status` is Some; kept total rather than panicking.
    Exit {
        code: -1,
        signal: None,
        reason: ExitReason::Exited,
        at: SystemTime::now(),
    }
}

fn exit_from_status(st: std::process::ExitStatus, ending: Ending) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    let forced = match ending {
        Ending::None => None,
        Ending::TimedOut => Some(ExitReason::TimedOut),
        Ending::AgentShutdown => Some(ExitReason::AgentShutdown),
    };
    let (code, signal, natural) = match (st.code(), st.signal()) {
        (Some(c), _) => (c, None, ExitReason::Exited),
        (None, Some(s)) => (-1, Some(signal_name(s)), ExitReason::Signaled),
        (None, None) => (-1, None, ExitReason::Exited),
    };
    Exit {
        code,
        signal,
        reason: forced.unwrap_or(natural),
        at: SystemTime::now(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    NixSignal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("SIGUNKNOWN")
}
