//! Tool arguments: JSON objects from the model → typed values, with messages a model can act on.
//! Unknown extra arguments are ignored; wrong types and missing required ones are errors.

use std::time::Duration;

use serde_json::{Map, Value};

use super::rules::{parse_timeout, parse_wait};
use crate::signal::Signal;

/// `execute`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteArgs {
    /// The command line, run as `sh -c <command>`. Required.
    pub command: String,
    /// How long the call waits for the command to finish before answering with a
    /// `background_process_id` (the command keeps running). Default 10 s; never zero; at most
    /// 24 h.
    pub timeout: Duration,
    /// Directory to run in; `None` (absent or blank) means the agent's default.
    pub workdir: Option<String>,
    /// Start and answer at once, without waiting for the command. Default false.
    pub run_in_background: bool,
}

impl ExecuteArgs {
    /// Foreground with the default timeout.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            timeout: super::rules::DEFAULT_TIMEOUT,
            workdir: None,
            run_in_background: false,
        }
    }

    /// Reads the model's arguments; `Err` is a message for the model naming the bad argument.
    pub fn parse(obj: &Map<String, Value>) -> Result<Self, String> {
        Ok(Self {
            command: required_str(obj, "command")?,
            timeout: parse_timeout(obj.get("timeout"))?,
            workdir: optional_str(obj, "workdir")?.filter(|w| !w.trim().is_empty()),
            run_in_background: optional_bool(obj, "run_in_background")?.unwrap_or(false),
        })
    }
}

/// `process_output`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputArgs {
    /// The process's id (from `execute`'s `background_process_id` or `process_list`). Required.
    pub process_id: String,
    /// How long to wait for the process to exit before answering with its output so far.
    /// Default 10 s; zero answers at once; at most 24 h.
    pub wait: Duration,
}

impl OutputArgs {
    /// Reads the model's arguments; `Err` is a message for the model naming the bad argument.
    pub fn parse(obj: &Map<String, Value>) -> Result<Self, String> {
        Ok(Self {
            process_id: required_str(obj, "process_id")?,
            wait: parse_wait(obj.get("wait"))?,
        })
    }
}

/// `process_signal`'s arguments; the signal in any spelling [`Signal`] reads (`SIGINT`, `int`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalArgs {
    /// The process's id (from `execute` or `process_list`). Required.
    pub process_id: String,
    /// The signal to send: to the process's group, or its whole tree for kill and terminate
    /// (with tree tracking). Required.
    pub signal: Signal,
}

impl SignalArgs {
    /// Reads the model's arguments; `Err` is a message for the model that lists the accepted
    /// signal names.
    pub fn parse(obj: &Map<String, Value>) -> Result<Self, String> {
        let process_id = required_str(obj, "process_id")?;
        let raw = required_str(obj, "signal")?;
        let signal = raw.parse::<Signal>().map_err(|_| {
            format!(
                "invalid signal {raw:?}: signal must be one of \"interrupt\", \"terminate\", \
                 \"hangup\", \"kill\""
            )
        })?;
        Ok(Self { process_id, signal })
    }
}

/// A required non-empty (after trimming) string.
pub fn required_str(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match optional_str(obj, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(format!("{key} is required")),
    }
}

pub(crate) fn optional_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key} must be a string, not {other}")),
    }
}

/// A boolean; the strings "true"/"false" are accepted too (models sometimes quote them).
pub(crate) fn optional_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(format!("{key} must be true or false, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn execute_arguments() {
        let a = ExecuteArgs::parse(&obj(json!({"command": "ls"}))).unwrap();
        assert_eq!(a, ExecuteArgs::new("ls"));
        let a = ExecuteArgs::parse(&obj(json!({
            "command": "make", "timeout": 90, "workdir": "/src", "run_in_background": "true",
            "model_intent": "ignored"
        })))
        .unwrap();
        assert_eq!(a.timeout, Duration::from_secs(90));
        assert_eq!(a.workdir.as_deref(), Some("/src"));
        assert!(a.run_in_background);
        let a = ExecuteArgs::parse(&obj(json!({"command": "ls", "workdir": ""}))).unwrap();
        assert_eq!(a.workdir, None);
    }

    #[test]
    fn execute_argument_errors() {
        let e = |v| ExecuteArgs::parse(&obj(v)).unwrap_err();
        assert_eq!(e(json!({})), "command is required");
        assert_eq!(e(json!({"command": "  "})), "command is required");
        assert_eq!(e(json!({"command": 5})), "command must be a string, not 5");
        assert!(e(json!({"command": "ls", "timeout": "soon"})).starts_with("invalid timeout"));
        assert!(e(json!({"command": "ls", "run_in_background": 1})).contains("true or false"));
    }

    #[test]
    fn output_and_signal_arguments() {
        let a = OutputArgs::parse(&obj(json!({"process_id": "p", "wait": "0s"}))).unwrap();
        assert_eq!(a.wait, Duration::ZERO);
        assert_eq!(
            OutputArgs::parse(&obj(json!({"process_id": ""}))).unwrap_err(),
            "process_id is required"
        );
        let s = SignalArgs::parse(&obj(json!({"process_id": "p", "signal": "SIGINT"}))).unwrap();
        assert_eq!(s.signal, Signal::Interrupt);
        let e = SignalArgs::parse(&obj(json!({"process_id": "p", "signal": "stop"}))).unwrap_err();
        assert!(e.contains("signal must be one of"), "{e}");
        let e = SignalArgs::parse(&obj(json!({"signal": "kill"}))).unwrap_err();
        assert_eq!(e, "process_id is required");
    }
}
