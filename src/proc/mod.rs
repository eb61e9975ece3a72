//! Processes: the bounded head-tail output buffer and the process manager.
//!
//! `head_tail` is sans-IO; `spawn` does the fork/exec details; `manager` owns the table of
//! records and one supervisor task per running process; `record` is one tracked process.

pub mod head_tail;
pub mod manager;
pub mod record;
pub mod spawn;
pub mod supervisor;

pub use head_tail::{HeadTailBuffer, Rendered, Truncation};
pub use manager::{Manager, ManagerConfig, ProcError, Signal, StartSpec};
pub use record::{Exit, ExitReason, ProcessId, Record, Snapshot};
