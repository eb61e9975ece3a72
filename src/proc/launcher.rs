//! How a prepared command gets started, for concurrent starts: the clone stacks, the
//! supervisors' helper and the fallback to forking.
//!
//! Owns: a small pool of clone stacks (a `CLONE_VM|CLONE_VFORK` child runs on one until it
//! exec'd, so two concurrent spawns need two), the manager's helper and its socket (one round
//! trip at a time), and the switch to forking when the helper cannot be used. Leaves to
//! `manager`: limits, idempotency keys and records (it calls in here without its state lock);
//! to `supexec` and `supervisor` the hand-over and the supervisor itself.
//!
//! Why a separate lock per resource instead of the manager's state lock: a start blocks until
//! the command exec'd (1–2 ms). Held under the state lock, that serialised every start of a
//! manager and every `list`/`get` behind it (BENCHMARKS.md §1.4). Now only the helper's round
//! trip (a message, its fork, the answer) is serialised; the hand-over of the command and its
//! exec overlap with other starts.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use parking_lot::Mutex;

use super::spawn::{Prepared, Stack, Stdio};
use super::supervisor::{self, Started};
use super::supexec::{self, Helper};

/// Stacks kept for reuse; more concurrent spawns than this map their own and unmap them after.
const POOLED_STACKS: usize = 8;

/// Starts commands and supervisors; shared by concurrent starts of one manager.
pub(crate) struct Launcher {
    stacks: Mutex<Vec<Stack>>,
    helper: Mutex<HelperSlot>,
}

struct HelperSlot {
    /// The executable of the supervisors' helper; `None`: supervisors are forked from us.
    exe: Option<CString>,
    /// The helper, started on first use.
    helper: Option<Helper>,
}

impl Launcher {
    /// `exe`: the helper's executable (`None`: fork supervisors from this process).
    pub(crate) fn new(exe: Option<CString>) -> Self {
        Self {
            stacks: Mutex::new(Vec::new()),
            helper: Mutex::new(HelperSlot { exe, helper: None }),
        }
    }

    /// Runs `f` with a clone stack of its own (from the pool, or newly mapped).
    pub(crate) fn with_stack<R>(&self, f: impl FnOnce(&mut Stack) -> R) -> io::Result<R> {
        let pooled = self.stacks.lock().pop();
        let mut stack = match pooled {
            Some(s) => s,
            None => Stack::new()?,
        };
        let r = f(&mut stack);
        let mut pool = self.stacks.lock();
        if pool.len() < POOLED_STACKS {
            pool.push(stack);
        }
        Ok(r)
    }

    /// Starts the supervisor of `cmd`: forked by the manager's helper (exec'd from the wgagent
    /// binary, see `supexec`) when an executable is set, else forked from the agent. A helper
    /// that fails is replaced once; when that fails too, the agent forks from then on. Only the
    /// round trip to the helper is serialised; the rest runs concurrently with other starts.
    pub(crate) fn start_supervisor(
        &self,
        cmd: &Prepared,
        stdio: Stdio,
        death: RawFd,
        null: RawFd,
    ) -> io::Result<Started> {
        let mut slot = self.helper.lock();
        if let Some(exe) = slot.exe.clone() {
            let mut unusable = None;
            for _ in 0..2 {
                let helper = match &mut slot.helper {
                    Some(h) => h,
                    empty => {
                        match self.with_stack(|stack| Helper::start(&exe, death, null, stack))? {
                            Ok(h) => empty.insert(h),
                            Err(e) => {
                                unusable = Some(e);
                                break;
                            }
                        }
                    }
                };
                match helper.request(cmd, stdio) {
                    Ok(handover) => {
                        drop(slot);
                        return handover.finish();
                    }
                    Err(supexec::Error::Other(e)) => return Err(e),
                    Err(supexec::Error::Helper(e)) => {
                        tracing::warn!(
                            "the process supervisor helper failed ({e}); starting another"
                        );
                        // Dropping it kills and reaps it; nothing was started.
                        slot.helper = None;
                        unusable = Some(e);
                    }
                }
            }
            tracing::warn!(
                exe = %exe.to_string_lossy(),
                "starting the process supervisor helper failed ({}); forking supervisors from now on",
                unusable.as_ref().map(ToString::to_string).unwrap_or_default()
            );
            slot.exe = None;
        }
        drop(slot);
        supervisor::start(cmd, stdio, death, null)
    }
}
