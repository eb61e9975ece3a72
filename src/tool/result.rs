//! `ExecuteResult`, the JSON every tool answers with, and the pure rules that build it from the
//! agent's answers.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::rules::{MAX_OUTPUT_BYTES, cap_output, format_duration};
use crate::api::types::{ListProcessesResponse, ProcessOutputResponse, ProcessTruncation};

/// A tool result as the model sees it (field order as serialised, per `docs/API.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResult {
    /// Foreground: exit code 0. Background start, signal sent, or a process still running
    /// (`process_output`): true. Timeouts and errors: false.
    pub success: bool,
    /// stdout and stderr merged, at most 32768 bytes, head and tail kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The exit code; -1 when killed by a signal or when the command has not finished (timeout);
    /// 0 for a still-running process in `process_output` and when nothing ran.
    pub exit_code: i32,
    /// Time the tool call took, in milliseconds.
    pub wall_duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<ProcessTruncation>,
    /// Advice for the model: how to follow up, or a better tool to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Set whenever a process keeps running after the call: background starts and timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_process_id: Option<String>,
}

/// The note that accompanies every process left running.
pub fn follow_up_note(id: &str) -> String {
    format!(
        "The process keeps running on the agent (id \"{id}\"); nothing was stopped. To wait for \
         it and get its final output, call process_output with process_id \"{id}\" and a wait \
         such as \"60s\". To stop it, call process_signal with signal \"interrupt\" (or \"kill\")."
    )
}

/// `process_output`'s note for a process that has not exited yet.
pub const STILL_RUNNING_NOTE: &str = "process is still running. To wait for it to finish, call \
    process_output again with a wait such as \"60s\"; to stop it, use process_signal.";

impl ExecuteResult {
    /// A failure before or without any process output (bad arguments, agent unreachable…).
    pub fn failure(error: impl Into<String>, elapsed: Duration) -> Self {
        Self {
            error: Some(error.into()),
            wall_duration_ms: millis(elapsed),
            ..Self::default()
        }
    }

    /// A process that has exited: success is exit code 0.
    pub fn finished(resp: ProcessOutputResponse, elapsed: Duration) -> Self {
        let (output, truncated) = cap_output(resp.output, resp.truncated, MAX_OUTPUT_BYTES);
        let exit_code = resp.exit_code.unwrap_or(-1);
        Self {
            success: exit_code == 0,
            output: Some(output),
            exit_code,
            wall_duration_ms: millis(elapsed),
            truncated,
            ..Self::default()
        }
    }

    /// A foreground command still running at its timeout: partial output, its id, and how to
    /// follow it up. It was not stopped.
    pub fn timed_out(
        id: &str,
        resp: ProcessOutputResponse,
        timeout: Duration,
        elapsed: Duration,
    ) -> Self {
        let (output, truncated) = cap_output(resp.output, resp.truncated, MAX_OUTPUT_BYTES);
        Self {
            success: false,
            output: Some(output),
            exit_code: -1,
            wall_duration_ms: millis(elapsed),
            error: Some(format!(
                "command did not finish within the {} timeout; it is still running",
                format_duration(timeout)
            )),
            truncated,
            note: Some(follow_up_note(id)),
            background_process_id: Some(id.to_owned()),
        }
    }

    /// `process_output` on a process that has not exited (yet): not a failure.
    pub fn still_running(resp: ProcessOutputResponse, elapsed: Duration) -> Self {
        let (output, truncated) = cap_output(resp.output, resp.truncated, MAX_OUTPUT_BYTES);
        Self {
            success: true,
            output: Some(output),
            exit_code: 0,
            wall_duration_ms: millis(elapsed),
            truncated,
            note: Some(STILL_RUNNING_NOTE.to_owned()),
            ..Self::default()
        }
    }

    /// Contact with the agent was lost while waiting for a started process: report what is
    /// known, and never lose its id.
    pub fn wait_failed(
        id: &str,
        snapshot: Option<ProcessOutputResponse>,
        error: String,
        elapsed: Duration,
    ) -> Self {
        let (output, truncated) = match snapshot {
            Some(r) => {
                let (o, t) = cap_output(r.output, r.truncated, MAX_OUTPUT_BYTES);
                (Some(o), t)
            }
            None => (None, None),
        };
        Self {
            success: false,
            output,
            exit_code: -1,
            wall_duration_ms: millis(elapsed),
            error: Some(error),
            truncated,
            note: Some(follow_up_note(id)),
            background_process_id: Some(id.to_owned()),
        }
    }

    /// A signal was delivered. With `exited`, the process's final state and output; without, it
    /// is still running after the settle time and the note says what to do next.
    pub fn signalled(
        message: &str,
        exited: Option<ProcessOutputResponse>,
        id: &str,
        signal: &str,
        elapsed: Duration,
    ) -> Self {
        match exited {
            Some(r) => Self {
                success: true,
                note: Some(format!("{message} The process has exited.")),
                ..Self::finished(r, elapsed)
            },
            None => Self {
                success: true,
                wall_duration_ms: millis(elapsed),
                note: Some(format!(
                    "{message} The process is still running: check it with process_output (with \
                     a wait), or send \"kill\" if it ignores \"{signal}\"."
                )),
                background_process_id: Some(id.to_owned()),
                ..Self::default()
            },
        }
    }

    /// A background start.
    pub fn background(id: &str, promoted: bool, elapsed: Duration) -> Self {
        let how = if promoted {
            "The command ended with a lone `&`, so it was started as a tracked background \
             process (the `&` was removed)."
        } else {
            "Started in the background."
        };
        Self {
            success: true,
            exit_code: 0,
            wall_duration_ms: millis(elapsed),
            note: Some(format!(
                "{how} Read its output with process_output (process_id \"{id}\"; its wait \
                 returns early when the process exits); stop it with process_signal."
            )),
            background_process_id: Some(id.to_owned()),
            ..Self::default()
        }
    }
}

/// `process_list`'s answer: the agent's list verbatim when it fits in `max` bytes of JSON;
/// otherwise the first entries that fit (running first, then newest: the oldest exited ones are
/// left out) and a `note` saying how many are shown.
pub fn list_for_model(resp: ListProcessesResponse, max: usize) -> Value {
    let total = resp.processes.len();
    let mut kept = Vec::new();
    let mut size = 200; // the envelope and the note
    for p in resp.processes {
        let v = serde_json::to_value(&p).unwrap_or(Value::Null);
        size += v.to_string().len() + 1;
        if size > max {
            break;
        }
        kept.push(v);
    }
    let shown = kept.len();
    let mut out = json!({ "processes": kept });
    if shown < total {
        out["note"] = Value::String(format!(
            "showing {shown} of {total} processes (running first, then newest); the oldest \
             exited ones are left out"
        ));
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ProcessInfo;

    fn resp(output: &str, running: bool, exit_code: Option<i32>) -> ProcessOutputResponse {
        ProcessOutputResponse {
            output: output.to_owned(),
            truncated: None,
            running,
            exit_code,
        }
    }

    #[test]
    fn finished_serialises_with_required_fields_only() {
        let r = ExecuteResult::finished(resp("hi\n", false, Some(0)), Duration::from_millis(7));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"success": true, "output": "hi\n", "exit_code": 0, "wall_duration_ms": 7})
        );
        let r = ExecuteResult::finished(resp("", false, Some(3)), Duration::ZERO);
        assert!(!r.success);
        assert_eq!(r.exit_code, 3);
        let r = ExecuteResult::finished(resp("", false, None), Duration::ZERO);
        assert!(!r.success, "an unknown exit is not a success");
    }

    #[test]
    fn field_order_matches_the_contract() {
        let r = ExecuteResult::timed_out(
            "abc",
            resp("partial", true, None),
            Duration::from_secs(10),
            Duration::from_millis(10_004),
        );
        let text = serde_json::to_string(&r).unwrap();
        let keys = [
            "\"success\"",
            "\"output\"",
            "\"exit_code\"",
            "\"wall_duration_ms\"",
            "\"error\"",
            "\"note\"",
            "\"background_process_id\"",
        ];
        let pos: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn timeout_keeps_id_output_and_explains() {
        let r = ExecuteResult::timed_out(
            "abc",
            resp("partial", true, None),
            Duration::from_secs(10),
            Duration::from_secs(10),
        );
        assert!(!r.success);
        assert_eq!(r.exit_code, -1);
        assert_eq!(r.output.as_deref(), Some("partial"));
        assert_eq!(r.background_process_id.as_deref(), Some("abc"));
        assert!(r.error.as_deref().unwrap().contains("10s timeout"));
        let note = r.note.unwrap();
        assert!(note.contains("process_output") && note.contains("process_signal"));
        assert!(note.contains("\"abc\""));
    }

    #[test]
    fn still_running_is_a_success_with_a_note() {
        let r = ExecuteResult::still_running(resp("so far", true, None), Duration::ZERO);
        assert!(r.success);
        assert_eq!(r.exit_code, 0);
        assert!(r.note.unwrap().starts_with("process is still running"));
    }

    #[test]
    fn wait_failure_never_loses_the_id() {
        let r = ExecuteResult::wait_failed("id1", None, "boom".into(), Duration::ZERO);
        assert_eq!(r.background_process_id.as_deref(), Some("id1"));
        assert_eq!(r.output, None);
        assert_eq!(r.error.as_deref(), Some("boom"));
    }

    #[test]
    fn background_result_says_how_to_follow_up() {
        let r = ExecuteResult::background("x", true, Duration::from_millis(3));
        assert!(r.success);
        assert_eq!(r.exit_code, 0);
        assert!(r.note.as_deref().unwrap().contains("lone `&`"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["background_process_id"], "x");
        assert!(v.get("output").is_none());
    }

    #[test]
    fn long_lists_are_cut_to_fit_with_a_note() {
        let info = |i: usize| ProcessInfo {
            id: format!("id-{i}"),
            command: "x".repeat(200),
            workdir: "/w".into(),
            background: false,
            running: false,
            exit_code: Some(0),
            started_at_unix: 1,
            exited_at_unix: Some(2),
            pid: Some(10),
            exit_signal: None,
            exit_reason: Some("exited".into()),
            output_bytes: Some(0),
            ..Default::default()
        };
        let small = ListProcessesResponse {
            processes: (0..3).map(info).collect(),
        };
        let v = list_for_model(small.clone(), MAX_OUTPUT_BYTES);
        assert_eq!(
            v,
            serde_json::to_value(&small).unwrap(),
            "verbatim when it fits"
        );
        let big = ListProcessesResponse {
            processes: (0..1000).map(info).collect(),
        };
        let v = list_for_model(big, MAX_OUTPUT_BYTES);
        assert!(v.to_string().len() <= MAX_OUTPUT_BYTES);
        let shown = v["processes"].as_array().unwrap().len();
        assert!(shown > 50 && shown < 1000, "{shown}");
        assert_eq!(
            v["processes"][0]["id"], "id-0",
            "the first (newest) ones are kept"
        );
        assert!(
            v["note"]
                .as_str()
                .unwrap()
                .contains(&format!("showing {shown} of 1000"))
        );
    }
}
