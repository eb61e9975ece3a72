//! Wire types of the process API, defined once and shared by the server (`api`) and the SDK
//! (`client`). Field names and presence rules follow `docs/API.md` (Coder-compatible, with
//! our extensions).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::signal::Signal;

/// `POST /api/v0/processes/start` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartProcessRequest {
    /// Absent is treated like empty, so the answer is "Command is required.", not a JSON error.
    #[serde(default)]
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub background: bool,
    /// Ext: a retried start with the same key returns the original process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Ext: hard deadline; the group is terminated, then killed after a grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Ext: `"null"` (default) or `"pipe"` (fed through `POST /{id}/stdin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Ext: run on a new pseudo-terminal of this size (stdin, stdout and stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<TerminalSize>,
    /// Ext: run as this user (from the peer's `users` list; the agent must run as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Ext: resource limits of this command (each capped by the agent's `[api] max_limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ProcessLimits>,
}

/// Per-command resource limits (ext). Signed on the wire so that a negative value gets an
/// error naming the limit rather than a JSON type error; unknown names are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessLimits {
    /// Address space per process, bytes (`RLIMIT_AS`; with cgroup v2 also `memory.max` for
    /// the whole command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    /// CPU time per process, seconds (`RLIMIT_CPU`: `SIGXCPU`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<i64>,
    /// File descriptors per process (`RLIMIT_NOFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<i64>,
    /// Largest file a process may write, bytes (`RLIMIT_FSIZE`: `SIGXFSZ`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_bytes: Option<i64>,
    /// Processes (`RLIMIT_NPROC` of the user; with cgroup v2 `pids.max` of the command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<i64>,
}

impl From<ProcessLimits> for crate::proc::RequestedLimits {
    fn from(l: ProcessLimits) -> Self {
        use crate::proc::Limit;
        let mut r = Self::default();
        r.set(Limit::MemoryBytes, l.memory_bytes);
        r.set(Limit::CpuSeconds, l.cpu_seconds);
        r.set(Limit::OpenFiles, l.open_files);
        r.set(Limit::FileSizeBytes, l.file_size_bytes);
        r.set(Limit::Processes, l.processes);
        r
    }
}

impl From<crate::proc::Limits> for ProcessLimits {
    fn from(l: crate::proc::Limits) -> Self {
        use crate::proc::Limit;
        let get = |k| l.get(k).map(|v: u64| i64::try_from(v).unwrap_or(i64::MAX));
        Self {
            memory_bytes: get(Limit::MemoryBytes),
            cpu_seconds: get(Limit::CpuSeconds),
            open_files: get(Limit::OpenFiles),
            file_size_bytes: get(Limit::FileSizeBytes),
            processes: get(Limit::Processes),
        }
    }
}

impl ProcessLimits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Who started a process (ext): the WireGuard peer whose session carried the start request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedBy {
    pub peer: String,
    pub public_key: String,
}

/// A terminal size: start field `pty` and `POST /{id}/resize` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartProcessResponse {
    pub id: String,
    pub started: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListProcessesResponse {
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub id: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    pub background: bool,
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub started_at_unix: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at_unix: Option<i64>,
    // Extensions below; absent from Coder agents, so all optional on decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// Ext: first offset still retained in the log (`output_bytes` is its end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_start: Option<u64>,
    /// Ext: why the log stopped (e.g. disk full); the head+tail output is unaffected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_error: Option<String>,
    /// Ext: the peer that started the process (absent when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<StartedBy>,
    /// Ext: the user the process runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Ext: the limits in force (requested, else defaults, else maximums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ProcessLimits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessOutputResponse {
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<ProcessTruncation>,
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessTruncation {
    pub original_bytes: u64,
    pub retained_bytes: u64,
    pub omitted_bytes: u64,
    pub strategy: String,
    /// Ext: lines capped at 2048 bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated_lines: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<crate::proc::Truncation> for ProcessTruncation {
    fn from(t: crate::proc::Truncation) -> Self {
        Self {
            original_bytes: t.original_bytes,
            retained_bytes: t.retained_bytes,
            omitted_bytes: t.omitted_bytes,
            strategy: "head_tail".to_owned(),
            truncated_lines: t.truncated_lines,
        }
    }
}

/// Query of `GET /api/v0/processes/{id}/output` (ext).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputQuery {
    #[serde(default)]
    pub wait: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Body of `POST /api/v0/processes/{id}/signal`. The field stays text on the wire type so the
/// agent can answer an empty and an unknown name with their own messages; both ends type it
/// as [`Signal`] (`SignalProcessRequest::new`, [`Signal::from_wire`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalProcessRequest {
    /// Absent is treated like empty: "Signal is required.".
    #[serde(default)]
    pub signal: String,
}

impl SignalProcessRequest {
    /// The request for `signal`, with its API name.
    pub fn new(signal: Signal) -> Self {
        Self {
            signal: signal.as_str().to_owned(),
        }
    }
}

/// Body of successful signal/delete responses and of every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Body of a 416 from `/log` (ext): the error plus the first retained offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeNotRetained {
    pub message: String,
    pub log_start: u64,
}

/// Body of a 408 from `/stdin` (ext): the error plus the bytes written before the timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinTimedOut {
    pub message: String,
    pub written: u64,
}

/// Query of `GET /api/v0/processes/{id}/log` (ext).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    pub follow: bool,
}

/// Query of `POST /api/v0/processes/{id}/stdin` (ext).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinQuery {
    #[serde(default)]
    pub close: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `POST /api/v0/processes/{id}/stdin` answer (ext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinResponse {
    pub written: u64,
}

/// Header of every `/log` answer: the first retained offset.
pub const LOG_START_HEADER: &str = "wgagent-log-start";
/// Header of a `/log?follow=true` answer: the offset of its first body byte.
pub const LOG_OFFSET_HEADER: &str = "wgagent-log-offset";
/// Default and maximum wait for a child to read its stdin.
pub const STDIN_TIMEOUT_MS: u64 = 30_000;
pub const MAX_STDIN_TIMEOUT_MS: u64 = 300_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub processes_running: usize,
    /// Ext: new at every agent start ("agent restarted" vs "record unknown").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Ext: how per-command limits are enforced: `"cgroup_v2"` (rlimits per process and a
    /// cgroup per command) or `"rlimits"` (per process only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_mode: Option<String>,
    /// Ext: one sentence on the enforcement, with why cgroup v2 is not used when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_detail: Option<String>,
}

/// Longest `wait=true` the server honours, and its default.
pub const MAX_WAIT_MS: u64 = 300_000;
/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
