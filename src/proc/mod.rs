//! Processes: the bounded head-tail output buffer and the process manager.
//!
//! `head_tail` is sans-IO; `spawn` does the clone/exec details; `supervisor` is the process that
//! owns a command's tree, `supexec` starts it from a helper that shares
//! nothing with the agent; `manager` owns the table of records and `supervise` the task per
//! process; `record` is one tracked process; `log` its full output on disk; `state` the state
//! directory (logs and persisted records); `fdio` async reads/writes on pipes and ptys;
//! `limits` per-command resource limits, `cgroup` their cgroup v2 groups, `user` the users
//! commands run as.

pub mod cgroup;
pub mod counters;
pub mod fdio;
pub mod head_tail;
mod launcher;
pub mod limits;
pub mod log;
pub mod manager;
pub mod record;
pub mod spawn;
pub(crate) mod state;
mod supervise;
pub(crate) mod supervisor;
mod supexec;
pub mod user;

pub use cgroup::Enforcement;
pub use head_tail::{HeadTailBuffer, Rendered, Truncation};
pub use limits::{Limit, LimitError, Limits, RequestedLimits};
pub use log::{Gone, Log};
pub use manager::{Manager, ManagerConfig, ProcError, Signal, StartSpec, StdinLease};
pub use record::{Exit, ExitReason, ProcessId, Record, Snapshot, StartedBy, StdinMode};
pub use supexec::{
    MODE_ARG as SUPERVISOR_MODE_ARG, SupervisorLaunch, run_supervisor_if_asked,
    set_default_supervisor_exe,
};
pub use user::{User, UserError, is_root};
