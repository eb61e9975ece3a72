//! The task that watches one process: reads its output (into the head+tail buffer and the
//! log), observes the shell's exit and the end of its tree, enforces the deadline, and records
//! the exit. One task per process, on the manager's task tracker.
//!
//! Leaves to the manager: the table, signals asked for through the API, persistence budgets
//! (it calls back through [`Hooks`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal as NixSignal;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::{Instant, sleep_until};

use super::fdio;
use super::record::{Ending, Exit, ExitReason, Record};
use super::spawn;
use super::supervisor;

/// Called when a process has exited (persist it, enforce disk budgets).
pub(crate) type Hooks = Box<dyn Fn(&Arc<Record>) + Send + Sync>;

/// What `spawn` hands to `supervise`.
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) supervisor: Option<i32>,
    pub(crate) tree: Tree,
    pub(crate) output: fdio::Reader,
}

/// How the shell's exit and the tree's end are observed.
pub(crate) enum Tree {
    /// No tracking: the shell is our child; its exit ends the tree as far as we can know.
    Direct { waiter: spawn::Waiter },
    /// The supervisor reports the shell's status on `status`; its own exit = tree gone.
    Supervised {
        waiter: spawn::Waiter,
        status: pipe::Receiver,
    },
}

impl Tree {
    pub(crate) fn supervisor(&self) -> Option<i32> {
        match self {
            Self::Direct { .. } => None,
            Self::Supervised { waiter, .. } => Some(waiter.pid()),
        }
    }
}

/// Terminates (SIGTERM) or kills (SIGKILL) the process: its supervisor's whole tree with
/// tracking, else the process group. Marks the kill so the record waits for the tree.
pub(crate) fn signal_tree(rec: &Record, sig: NixSignal) -> nix::Result<()> {
    rec.kill_requested.store(true, Ordering::Release);
    rec.sent_signal(sig as i32);
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
pub(crate) async fn supervise(
    rec: Arc<Record>,
    mut tree: Tree,
    mut pipe: fdio::Reader,
    deadline: Option<Instant>,
    grace: Duration,
    on_exit: Hooks,
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
                // The tree is gone: nobody left to pass a signal on to.
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
            // Stdin of an exited process: nobody reads it any more.
            rec.input.writer.lock().await.take();
            record_exit(&rec, status.take());
            on_exit(&rec);
        }
        if recorded && tree_gone {
            if let Some(group) = &rec.cgroup {
                group.remove();
            }
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
                    if let Ok(st) = &st {
                        pass_on_signal(&rec, *st);
                    }
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
                        let st = std::process::ExitStatus::from_raw(f[1]);
                        tree_empty = f[2] == 1;
                        if !tree_empty {
                            pass_on_signal(&rec, st);
                        }
                        status = Some(Ok(st));
                        if !eof {
                            orphan_check = Some(Instant::now() + Duration::from_millis(500));
                        }
                    }
                }
            }
            r = pipe.read(&mut buf), if !eof => match r {
                Ok(0) => eof = true,
                Ok(n) => {
                    rec.output.write(&buf[..n]);
                    rec.log.append(&buf[..n]);
                }
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

/// When the shell died of the signal the agent last sent, passes that signal on to the members
/// of its group started since: they missed it (see `spawn::signal_group_members_since`).
/// Without this, `signal hangup` right after a start could end `sh` and leave the command it
/// was forking running.
fn pass_on_signal(rec: &Record, st: std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    let Some(sent) = *rec.sent.lock() else {
        return;
    };
    if st.signal() != Some(sent.signo) {
        return;
    }
    let Ok(sig) = NixSignal::try_from(sent.signo) else {
        return;
    };
    let (pgid, id) = (rec.pid, rec.id.clone());
    // A /proc scan: off the async workers.
    tokio::task::spawn_blocking(move || {
        let n = spawn::signal_group_members_since(pgid, sig, sent.since_tick);
        if n > 0 {
            tracing::info!(
                %id,
                processes = n,
                "{sig} ended the shell while it was starting a command; passed on to its group"
            );
        }
    });
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
    let oom_kills = rec.cgroup.as_ref().map_or(0, |g| g.oom_kills());
    let exit = match status {
        Some(Ok(st)) => exit_from_status(st, ending, oom_kills),
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
    let peer = rec.started_by.as_ref().map_or("-", |b| b.peer.as_str());
    tracing::info!(
        id = %rec.id,
        pid = rec.pid,
        peer,
        code = exit.code,
        signal = exit.signal,
        reason = exit.reason.as_str(),
        "process exited"
    );
    rec.set_exit(exit);
}

async fn drain(pipe: &mut fdio::Reader, rec: &Record, buf: &mut [u8]) {
    while let Ok(n) = pipe.read(buf).await {
        if n == 0 {
            break;
        }
        rec.output.write(&buf[..n]);
        rec.log.append(&buf[..n]);
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

/// The exit as reported: a deadline or shutdown the agent enforced comes first, then an OOM
/// kill in the command's cgroup (when the shell did not succeed), then a limit's signal.
fn exit_from_status(st: std::process::ExitStatus, ending: Ending, oom_kills: u64) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    let forced = match ending {
        Ending::None => None,
        Ending::TimedOut => Some(ExitReason::TimedOut),
        Ending::AgentShutdown => Some(ExitReason::AgentShutdown),
    };
    let (code, signal, mut natural) = match (st.code(), st.signal()) {
        (Some(c), _) => (c, None, ExitReason::Exited),
        (None, Some(s)) if s == libc::SIGXCPU || s == libc::SIGXFSZ => {
            (-1, Some(signal_name(s)), ExitReason::LimitExceeded)
        }
        (None, Some(s)) => (-1, Some(signal_name(s)), ExitReason::Signaled),
        (None, None) => (-1, None, ExitReason::Exited),
    };
    if oom_kills > 0 && code != 0 {
        natural = ExitReason::OomKilled;
    }
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
