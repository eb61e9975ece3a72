//! LLM-facing tools (`execute`, `process_output`, `process_list`, `process_signal`, and the file
//! tools `read_file`, `write_file`, `edit_files`, `list_directory`) and the MCP server that
//! exposes them.
//!
//! Owns: the tool semantics of `docs/API.md` "LLM tools": argument parsing ([`args`]), pure
//! rules ([`rules`], [`command`], [`shell`]), the result JSON ([`result`]), schemas
//! ([`schema`]), and [`Tools`], the thin async shell that runs them against agents through the
//! SDK. Foreground commands use the agent's server-side wait, never a polling interval.
//! Leaves to the caller: building the `AgentConn`s (transport, addresses), and how the tools
//! reach a model ([`mcp`] serves them over MCP stdio).

pub mod args;
pub mod command;
mod file_schema;
mod file_tools;
pub mod mcp;
pub mod result;
pub mod rules;
pub mod schema;
pub(crate) mod shell;

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

pub use args::{ExecuteArgs, OutputArgs, SignalArgs};
pub use file_schema::{EDIT_FILES, LIST_DIRECTORY, READ_FILE, WRITE_FILE};
pub use result::ExecuteResult;
pub use schema::ToolDef;

use crate::api::types::{MAX_WAIT_MS, ProcessOutputResponse, StartProcessRequest};
use crate::client::{AgentConn, ClientError, Connect};
use crate::signal::Signal;
use command::{FILE_DUMP_NOTE, is_file_dump, strip_background};
use rules::{MAX_OUTPUT_BYTES, non_interactive_env};

/// How long `process_signal` waits for the process to exit before answering.
pub const SIGNAL_SETTLE: Duration = Duration::from_secs(2);
/// Pause between snapshots for agents that answer a `wait` at once (agents without server-side
/// waits, such as Coder's); ours never need it.
const NO_WAIT_FALLBACK_PAUSE: Duration = Duration::from_millis(200);

/// Why a tool set could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Configuration error: at least one agent is needed.
    #[error("no agents: the tools need at least one")]
    NoAgents,
    /// Configuration error: names must be unique and non-empty.
    #[error("invalid agent name {0:?}: names must be non-empty and unique")]
    BadName(String),
}

/// A tool's answer: the JSON the model reads, and whether the call itself was invalid (bad
/// arguments, unknown tool or agent), which MCP reports as `isError`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolReply {
    pub value: Value,
    pub is_error: bool,
}

impl ToolReply {
    /// The JSON as text (what MCP puts in the text content).
    pub fn text(&self) -> String {
        self.value.to_string()
    }

    fn ok(r: &ExecuteResult) -> Self {
        Self {
            value: serde_json::to_value(r).unwrap_or(Value::Null),
            is_error: false,
        }
    }

    fn invalid(message: String) -> Self {
        Self {
            is_error: true,
            ..Self::ok(&ExecuteResult::failure(message, Duration::ZERO))
        }
    }
}

/// The tools over one or several agents. With one agent it is fixed and the tools take no
/// `agent` argument; with several, every tool requires `agent`, one of the names.
#[derive(Clone)]
pub struct Tools<C: Connect> {
    agents: Vec<(String, AgentConn<C>)>,
}

impl<C: Connect> Tools<C> {
    /// Tools acting on one agent.
    pub fn single(conn: AgentConn<C>) -> Self {
        Self {
            agents: vec![(String::new(), conn)],
        }
    }

    /// Tools acting on named agents (order kept for the schema). One agent behaves as
    /// [`Tools::single`].
    pub fn new(
        agents: impl IntoIterator<Item = (String, AgentConn<C>)>,
    ) -> Result<Self, ToolError> {
        let agents: Vec<_> = agents.into_iter().collect();
        if agents.is_empty() {
            return Err(ToolError::NoAgents);
        }
        for (i, (name, _)) in agents.iter().enumerate() {
            if agents.len() > 1
                && (name.trim().is_empty() || agents[..i].iter().any(|(n, _)| n == name))
            {
                return Err(ToolError::BadName(name.clone()));
            }
        }
        Ok(Self { agents })
    }

    /// The agent names when the tools take an `agent` argument.
    pub fn agent_names(&self) -> Option<Vec<String>> {
        (self.agents.len() > 1).then(|| self.agents.iter().map(|(n, _)| n.clone()).collect())
    }

    /// The tool definitions (names, descriptions, argument schemas).
    pub fn definitions(&self) -> Vec<ToolDef> {
        schema::definitions(self.agent_names().as_deref())
    }

    /// Runs tool `name` with the model's `args` (a JSON object; `null` counts as `{}`).
    pub async fn call(&self, name: &str, args: &Value) -> ToolReply {
        let empty = Map::new();
        let obj = match args {
            Value::Object(m) => m,
            Value::Null => &empty,
            other => {
                return ToolReply::invalid(format!("arguments must be a JSON object, not {other}"));
            }
        };
        if !schema::definitions(None).iter().any(|d| d.name == name) {
            return ToolReply::invalid(format!(
                "unknown tool {name:?}; the tools are execute, process_output, process_list, \
                 process_signal, read_file, write_file, edit_files and list_directory"
            ));
        }
        let conn = match self.pick(obj) {
            Ok(c) => c,
            Err(e) => return ToolReply::invalid(e),
        };
        match name {
            schema::EXECUTE => match ExecuteArgs::parse(obj) {
                Ok(a) => ToolReply::ok(&self.execute(conn, a).await),
                Err(e) => ToolReply::invalid(e),
            },
            schema::PROCESS_OUTPUT => match OutputArgs::parse(obj) {
                Ok(a) => ToolReply::ok(&self.process_output(conn, &a.process_id, a.wait).await),
                Err(e) => ToolReply::invalid(e),
            },
            schema::PROCESS_SIGNAL => match SignalArgs::parse(obj) {
                Ok(a) => ToolReply::ok(&self.process_signal(conn, &a.process_id, a.signal).await),
                Err(e) => ToolReply::invalid(e),
            },
            schema::PROCESS_LIST => self.process_list(conn).await,
            _ => file_tools::call(conn, name, obj).await,
        }
    }

    fn pick(&self, obj: &Map<String, Value>) -> Result<&AgentConn<C>, String> {
        if let [(_, only)] = self.agents.as_slice() {
            return Ok(only);
        }
        let names = || {
            let quoted: Vec<String> = self.agents.iter().map(|(n, _)| format!("{n:?}")).collect();
            quoted.join(", ")
        };
        let name =
            args::required_str(obj, "agent").map_err(|e| format!("{e}: one of {}", names()))?;
        self.agents
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| format!("unknown agent {name:?}: use one of {}", names()))
    }

    /// `execute`: starts the command (in the background for `run_in_background` or a trailing
    /// lone `&`), then waits on the agent for its exit until the timeout. A command still
    /// running then keeps running and is reported with its id.
    pub async fn execute(&self, conn: &AgentConn<C>, args: ExecuteArgs) -> ExecuteResult {
        let t0 = Instant::now();
        let (command, background, promoted) = match strip_background(&args.command) {
            Some(stripped) => (stripped, true, !args.run_in_background),
            None => (args.command, args.run_in_background, false),
        };
        let dump = !background && is_file_dump(&command);
        let req = StartProcessRequest {
            command,
            workdir: args.workdir,
            env: non_interactive_env(),
            background,
            // Makes the one retry below safe: a repeated start returns the same process.
            idempotency_key: Some(uuid::Uuid::new_v4().to_string()),
            timeout_ms: None,
            ..Default::default()
        };
        let started = match conn.start(&req).await {
            // The connection broke or the answer was late: the start may or may not have
            // happened, and the idempotency key makes asking again safe (same process).
            Err(ClientError::Http(_) | ClientError::Timeout { .. }) => conn.start(&req).await,
            other => other,
        };
        let id = match started {
            Ok(r) => r.id,
            Err(e) => return ExecuteResult::failure(format!("start process: {e}"), t0.elapsed()),
        };
        if background {
            return ExecuteResult::background(&id, promoted, t0.elapsed());
        }
        let mut result = match wait_for_exit(conn, &id, t0 + args.timeout).await {
            Ok(r) if !r.running => ExecuteResult::finished(r, t0.elapsed()),
            Ok(r) => ExecuteResult::timed_out(&id, r, args.timeout, t0.elapsed()),
            Err(e) => {
                // One snapshot: a finished process is reported as if nothing happened, a
                // running one with its id. Either way the model keeps track of it.
                let error = format!("lost contact while waiting for the command: {e}");
                match conn.output(&id, None).await {
                    Ok(r) if !r.running => ExecuteResult::finished(r, t0.elapsed()),
                    Ok(r) => ExecuteResult::wait_failed(&id, Some(r), error, t0.elapsed()),
                    Err(_) => ExecuteResult::wait_failed(&id, None, error, t0.elapsed()),
                }
            }
        };
        if dump {
            result.note = Some(match result.note {
                Some(n) => format!("{n} {FILE_DUMP_NOTE}"),
                None => FILE_DUMP_NOTE.to_owned(),
            });
        }
        result
    }

    /// `process_output`: waits up to `wait` for the process to exit, then reports it.
    pub async fn process_output(
        &self,
        conn: &AgentConn<C>,
        id: &str,
        wait: Duration,
    ) -> ExecuteResult {
        let t0 = Instant::now();
        match wait_for_exit(conn, id, t0 + wait).await {
            Ok(r) if !r.running => ExecuteResult::finished(r, t0.elapsed()),
            Ok(r) => ExecuteResult::still_running(r, t0.elapsed()),
            Err(e) => ExecuteResult::failure(format!("get process output: {e}"), t0.elapsed()),
        }
    }

    /// `process_list`: the agent's list, cut to fit the output cap.
    pub async fn process_list(&self, conn: &AgentConn<C>) -> ToolReply {
        let t0 = Instant::now();
        match conn.list().await {
            Ok(list) => ToolReply {
                value: result::list_for_model(list, MAX_OUTPUT_BYTES),
                is_error: false,
            },
            Err(e) => ToolReply::ok(&ExecuteResult::failure(
                format!("list processes: {e}"),
                t0.elapsed(),
            )),
        }
    }

    /// `process_signal`: sends `signal` to the process group, then waits up to
    /// [`SIGNAL_SETTLE`] for the exit so the answer can carry the final output.
    pub async fn process_signal(
        &self,
        conn: &AgentConn<C>,
        id: &str,
        signal: Signal,
    ) -> ExecuteResult {
        let t0 = Instant::now();
        let message = match conn.signal(id, signal).await {
            Ok(r) => r.message,
            Err(e) => return ExecuteResult::failure(format!("signal process: {e}"), t0.elapsed()),
        };
        match wait_for_exit(conn, id, t0 + SIGNAL_SETTLE).await {
            Ok(r) if !r.running => {
                ExecuteResult::signalled(&message, Some(r), id, signal.as_str(), t0.elapsed())
            }
            _ => ExecuteResult::signalled(&message, None, id, signal.as_str(), t0.elapsed()),
        }
    }
}

/// Waits on the agent until the process exits or `deadline` passes, re-issuing server-side
/// waits (each at most the agent's 300 s cap). Returns the last answer: `running: false` on
/// exit, else the state at the deadline.
async fn wait_for_exit<C: Connect>(
    conn: &AgentConn<C>,
    id: &str,
    deadline: Instant,
) -> Result<ProcessOutputResponse, ClientError> {
    // The agent answers `timeout_ms` in whole milliseconds; this much early is "at the deadline".
    const SLACK: Duration = Duration::from_millis(5);
    loop {
        let asked_at = Instant::now();
        let asked = deadline
            .saturating_duration_since(asked_at)
            .min(Duration::from_millis(MAX_WAIT_MS));
        let r = conn.output(id, Some(asked)).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !r.running || left < SLACK {
            return Ok(r);
        }
        if asked_at.elapsed() + NO_WAIT_FALLBACK_PAUSE / 4 < asked {
            // Answered early while still running: this agent ignores `wait`. Pace the polls.
            tokio::time::sleep(NO_WAIT_FALLBACK_PAUSE.min(left)).await;
        }
    }
}
