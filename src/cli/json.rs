//! `--json`: the objects the verbs print for scripts, defined in one place.
//!
//! Every verb with `--json` prints exactly one JSON object on stdout (pretty-printed; `jq`
//! reads it as one value) and nothing else there; errors stay one line on stderr with the
//! verb's exit code, so `wgagent VERB --json ... | jq` sees either an object or nothing. Where
//! the agent's API already answers with an object (`ps`, `output`, `ls`, `put`), that object is
//! printed as it is. The objects here are for the verbs whose answer is built by the CLI.
//!
//! Leaves to the verbs: when to print (after the work is done, once).

use serde::Serialize;

use crate::api::types::{ProcessInfo, ProcessOutputResponse, ProcessTruncation};

/// Prints `value` as the verb's one JSON object.
pub fn print(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `exec --json`: the finished command (foreground) or its id (`--background`).
#[derive(Debug, Serialize)]
pub struct Exec {
    /// The process id on the agent.
    pub id: String,
    /// `false` with `--background` (only `id` is set then).
    pub finished: bool,
    /// The exit code as the API reports it: -1 when a signal killed the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it (`"SIGTERM"`), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// `exited`, `signaled`, `timed_out`, `agent_shutdown`, `limit_exceeded`, `oom_killed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// Head and tail of the output (at most 32 KiB), as `output` gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Set when the middle of the output was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<ProcessTruncation>,
}

impl Exec {
    /// A background start.
    pub fn started(id: String) -> Self {
        Self {
            id,
            finished: false,
            exit_code: None,
            exit_signal: None,
            exit_reason: None,
            output: None,
            truncated: None,
        }
    }

    /// A finished command: its final output and, when the list still had it, how it ended.
    pub fn finished(id: String, out: ProcessOutputResponse, info: Option<&ProcessInfo>) -> Self {
        Self {
            id,
            finished: true,
            exit_code: out.exit_code,
            exit_signal: info.and_then(|p| p.exit_signal.clone()),
            exit_reason: info.and_then(|p| p.exit_reason.clone()),
            output: Some(out.output),
            truncated: out.truncated,
        }
    }
}

/// `signal --json` and `rm --json`: what was done to which process, and the agent's message.
#[derive(Debug, Serialize)]
pub struct Done {
    /// The process id.
    pub id: String,
    /// The signal sent (`signal` only), by its API name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<crate::signal::Signal>,
    /// The agent's answer, e.g. `Signal "kill" sent to process "…".`.
    pub message: String,
}

/// `cat --json`: the bytes read and what the agent said about the file.
#[derive(Debug, Serialize)]
pub struct File {
    /// The path as given.
    pub path: String,
    /// The first byte read.
    pub offset: u64,
    /// How many bytes were read.
    pub size: u64,
    /// The whole file's size, when the agent said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// The whole file's SHA-256 (hex; `put --if-match` takes it), when the agent computed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// From the file name's extension.
    pub content_type: String,
    /// The bytes as text, when they are UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The bytes in base64 (standard alphabet, padded), when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// `genkey --json` and `pubkey --json`: keys in base64, as `wg` writes them.
#[derive(Debug, Serialize)]
pub struct Keys {
    /// `genkey` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    pub public_key: String,
}

/// `import --json`: the converted configuration and what the user should know.
#[derive(Debug, Serialize)]
pub struct Import {
    /// The TOML (it holds the private key); absent when written to `output`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toml: Option<String>,
    /// The file written (`--output`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Keys without an equivalent, addresses dropped, ... (on stderr without `--json`).
    pub findings: Vec<String>,
}
