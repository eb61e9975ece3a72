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
    /// Directory to run in, relative paths under the base: the run-as user's home, else
    /// `[api] default_workdir`, else the agent's `$HOME` (also the directory when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Variables set on top of the agent's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Metadata only: returned in `list`; the process runs the same either way.
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
    /// No limit set (the wire form is `{}`).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Who started a process (ext): the WireGuard peer whose session carried the start request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedBy {
    /// The peer's configured name, else the first 8 characters of its key.
    pub peer: String,
    /// The peer's public key, base64.
    pub public_key: String,
}

/// A terminal size: start field `pty` and `POST /{id}/resize` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Lines; at least 1.
    pub rows: u16,
    /// Columns; at least 1.
    pub cols: u16,
}

/// `POST /api/v0/processes/start` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartProcessResponse {
    /// The process's id (a UUID v4), for every later call about it.
    pub id: String,
    /// Always true in a 200 (Coder's shape); a start that fails is an error status.
    pub started: bool,
}

/// `GET /api/v0/processes/list` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListProcessesResponse {
    /// Running first, then most recently started first; `[]` when there are none.
    pub processes: Vec<ProcessInfo>,
}

/// One process as `list` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// The process's id.
    pub id: String,
    /// The command line as started.
    pub command: String,
    /// The directory it runs in, resolved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    /// As requested at start.
    pub background: bool,
    /// Not exited yet.
    pub running: bool,
    /// Absent while running; -1 when killed by a signal (see `exit_signal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Start time, seconds since the Unix epoch.
    pub started_at_unix: i64,
    /// Exit time, seconds since the Unix epoch; absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at_unix: Option<i64>,
    // Extensions below; absent from Coder agents, so all optional on decode.
    /// Ext: the OS process id of the group leader (`sh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Ext: the signal that killed it (e.g. `"SIGKILL"`), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// Ext: why it ended: `exited`, `signaled`, `timed_out`, `agent_shutdown`,
    /// `limit_exceeded` or `oom_killed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// Ext: total bytes of output written so far (the log's end offset).
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

/// `GET /api/v0/processes/{id}/output` answer. The state is read before the output, so
/// `running: false` always comes with the complete output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessOutputResponse {
    /// stdout and stderr merged, head and tail kept (at most 32768 bytes), valid UTF-8.
    pub output: String,
    /// How `output` differs from what was written; absent when it is all there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<ProcessTruncation>,
    /// Not exited yet.
    pub running: bool,
    /// Absent while running; -1 when killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// How a rendered output was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessTruncation {
    /// Bytes the process wrote.
    pub original_bytes: u64,
    /// Bytes of it kept (head and tail).
    pub retained_bytes: u64,
    /// Bytes dropped from the middle.
    pub omitted_bytes: u64,
    /// Always `"head_tail"` from this agent.
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
    /// Answer only once the process has exited or `timeout_ms` has passed.
    #[serde(default)]
    pub wait: bool,
    /// The longest `wait`, in milliseconds; default and maximum [`MAX_WAIT_MS`].
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
    /// One sentence for a human (Coder's messages where Coder has one).
    pub message: String,
    /// The underlying cause (a JSON or OS error), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Body of a 416 from `/log` (ext): the error plus the first retained offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeNotRetained {
    /// "Output before byte S is no longer retained."
    pub message: String,
    /// The first offset still in the log; resume from here.
    pub log_start: u64,
}

/// Body of a 408 from `/stdin` (ext): the error plus the bytes written before the timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinTimedOut {
    /// What happened, for a human.
    pub message: String,
    /// Bytes of the body the process took before the timeout; resend from there.
    pub written: u64,
}

/// Query of `GET /api/v0/processes/{id}/log` (ext).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Keep the body open and stream bytes as they are written, until the process has
    /// exited and every byte was sent.
    #[serde(default)]
    pub follow: bool,
}

/// Query of `POST /api/v0/processes/{id}/stdin` (ext).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinQuery {
    /// Close stdin after the body (on a pty: write the end-of-file character, ^D).
    #[serde(default)]
    pub close: bool,
    /// How long each chunk may wait for room in the pipe, in milliseconds; default
    /// [`STDIN_TIMEOUT_MS`], at most [`MAX_STDIN_TIMEOUT_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `POST /api/v0/processes/{id}/stdin` answer (ext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinResponse {
    /// Bytes of the body written to the process's stdin.
    pub written: u64,
}

/// Header of every `/log` answer: the first retained offset.
pub const LOG_START_HEADER: &str = "wgagent-log-start";
/// Header of a `/log?follow=true` answer: the offset of its first body byte.
pub const LOG_OFFSET_HEADER: &str = "wgagent-log-offset";
/// Default wait for a child to read its stdin (per chunk), in milliseconds.
pub const STDIN_TIMEOUT_MS: u64 = 30_000;
/// Longest `timeout_ms` a stdin request may ask for, in milliseconds.
pub const MAX_STDIN_TIMEOUT_MS: u64 = 300_000;

/// `GET /api/v0/health` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `"ok"` whenever the agent answers.
    pub status: String,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Seconds since the API state was created (the agent started).
    pub uptime_seconds: u64,
    /// Processes not exited yet.
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
