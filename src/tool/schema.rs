//! The tools as a model sees them (the file tools' definitions are in `file_schema`): names, descriptions and JSON schemas of the arguments.
//! The descriptions are written for the model: what each argument means, and when to use it.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Tool name: run a shell command, waiting up to a timeout (or not at all, in background).
pub const EXECUTE: &str = "execute";
/// Tool name: a process's output and state, waiting up to `wait` for it to exit.
pub const PROCESS_OUTPUT: &str = "process_output";
/// Tool name: the processes the agent tracks, running and finished.
pub const PROCESS_LIST: &str = "process_list";
/// Tool name: send a signal to a process (its group; kill and terminate reach its tree).
pub const PROCESS_SIGNAL: &str = "process_signal";

/// One tool's definition (MCP `Tool` / function-calling shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolDef {
    /// The name the model calls the tool by (one of the `*` constants here or in `file_schema`).
    pub name: &'static str,
    /// What the tool does and when to use it, written for the model.
    pub description: String,
    /// A JSON Schema object (`{"type": "object", "properties": …, "required": …}`).
    pub input_schema: Value,
}

const EXECUTE_DESC: &str = "Run a shell command on the agent machine and return its output \
    (stdout and stderr merged), exit code and duration as JSON. The command runs under POSIX \
    `sh -c` (not bash; no aliases or shell functions) and non-interactively: stdin is empty, \
    there is no terminal, and editors, pagers and git prompts are disabled (EDITOR=true, \
    PAGER=cat, GIT_TERMINAL_PROMPT=0, TERM=dumb, DEBIAN_FRONTEND=noninteractive), so anything \
    that would wait for input fails or proceeds instead of hanging; pass flags such as -y \
    where a tool asks for confirmation. Every call is a fresh shell: `cd` and `export` do not \
    carry over to the next call, so use `workdir` or `cd dir && command`. Output longer than \
    32768 bytes keeps its beginning and its end with the middle omitted; filter large output \
    (grep, tail) yourself. The call waits up to `timeout` (default 10s) for the command to \
    finish; a command still running then is NOT stopped: you get its output so far and a \
    background_process_id to follow it with process_output or stop it with process_signal.";

const OUTPUT_DESC: &str = "Get the output and state of a process started by execute (its \
    background_process_id) or listed by process_list. Waits up to `wait` (default 10s) for the \
    process to exit and answers as soon as it does, with the final output and exit code; if it \
    is still running after `wait`, answers with the output so far and the note \"process is \
    still running\". Output is the whole output (up to 32768 bytes, beginning and end kept), \
    not only what is new since the last call.";

const LIST_DESC: &str = "List the processes on the agent, running ones first, then the most \
    recently started: id, command, working directory, whether it is running, exit code, exit \
    signal and reason, start and exit times. Use it to find a process id you lost.";

const SIGNAL_DESC: &str = "Send a signal to a running process and its whole process group (its \
    children and pipelines too). \"interrupt\" is Ctrl-C (SIGINT) and \"terminate\" (SIGTERM) \
    ask the process to stop and let it clean up; \"hangup\" is SIGHUP (many daemons reload on \
    it); \"kill\" (SIGKILL) stops it at once and cannot be caught. Waits up to 2s for the \
    process to exit and then returns its final output and exit code; if it is still running, \
    the note says so (send \"kill\" if it ignores the others).";

/// The definitions of all the tools (the four process tools, then the file tools). `agents` lists the agent names when there are several:
/// every tool then takes a required `agent` argument restricted to those names.
///
/// Durations are declared as strings only: some model APIs reject type unions in schemas. A
/// JSON number of seconds is still accepted when a model sends one.
pub fn definitions(agents: Option<&[String]>) -> Vec<ToolDef> {
    vec![
        ToolDef {
            name: EXECUTE,
            description: EXECUTE_DESC.to_owned(),
            input_schema: object(
                agents,
                [
                    (
                        "command",
                        json!({"type": "string", "description":
                            "The command line, run as `sh -c <command>`: pipes, `&&`, redirections \
                             and here-documents work. Ending it with a single `&` is the same as \
                             run_in_background=true."}),
                    ),
                    (
                        "timeout",
                        json!({"type": "string", "description":
                            "How long to wait for the command to finish, e.g. \"30s\", \"5m\", \
                             \"1h30m\", \"500ms\", or a number of seconds. Default \"10s\", maximum \
                             \"24h\". Reaching it does not stop the command: it keeps running and \
                             the result gives its background_process_id. For builds, installs and \
                             test suites, give a longer timeout (e.g. \"10m\") instead of using \
                             run_in_background."}),
                    ),
                    (
                        "workdir",
                        json!({"type": "string", "description":
                            "Directory to run in; an absolute path is safest. Default: the agent's \
                             configured working directory, else the home directory."}),
                    ),
                    (
                        "run_in_background",
                        json!({"type": "boolean", "default": false, "description":
                            "Start the command and return at once with a background_process_id, \
                             without waiting. Only for processes meant to keep running (servers, \
                             watchers, long jobs you will check on later); ordinary commands that \
                             just take a while belong in the foreground with a longer timeout. \
                             Read its output later with process_output, stop it with \
                             process_signal."}),
                    ),
                ],
                &["command"],
            ),
        },
        ToolDef {
            name: PROCESS_OUTPUT,
            description: OUTPUT_DESC.to_owned(),
            input_schema: object(
                agents,
                [
                    (
                        "process_id",
                        json!({"type": "string", "description":
                            "The background_process_id from execute, or an id from process_list."}),
                    ),
                    (
                        "wait",
                        json!({"type": "string", "description":
                            "How long to wait for the process to exit before answering, same \
                             syntax as execute's timeout (\"30s\", \"5m\", a number of seconds). \
                             Default \"10s\"; 0 answers at once with the output so far. The answer \
                             comes as soon as the process exits, so a long wait costs nothing when \
                             it finishes early."}),
                    ),
                ],
                &["process_id"],
            ),
        },
        ToolDef {
            name: PROCESS_LIST,
            description: LIST_DESC.to_owned(),
            input_schema: object(agents, [], &[]),
        },
        ToolDef {
            name: PROCESS_SIGNAL,
            description: SIGNAL_DESC.to_owned(),
            input_schema: object(
                agents,
                [
                    (
                        "process_id",
                        json!({"type": "string", "description":
                            "The id of the process (from execute or process_list)."}),
                    ),
                    (
                        "signal",
                        json!({"type": "string",
                            "enum": ["interrupt", "terminate", "hangup", "kill"],
                            "description":
                            "\"interrupt\" (Ctrl-C), \"terminate\" (polite stop), \"hangup\", or \
                             \"kill\" (immediate, cannot be caught)."}),
                    ),
                ],
                &["process_id", "signal"],
            ),
        },
    ]
    .into_iter()
    .chain(super::file_schema::definitions(agents))
    .collect()
}

pub(crate) fn object<const N: usize>(
    agents: Option<&[String]>,
    props: [(&str, Value); N],
    required: &[&str],
) -> Value {
    let mut properties = Map::new();
    let mut required: Vec<&str> = required.to_vec();
    if let Some(names) = agents {
        properties.insert(
            "agent".to_owned(),
            json!({"type": "string", "enum": names, "description":
                "Which agent (machine) to act on. Process ids belong to the agent that started \
                 them: pass the same agent to process_output and process_signal."}),
        );
        required.insert(0, "agent");
    }
    for (k, v) in props {
        properties.insert(k.to_owned(), v);
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    // An empty `required` is invalid under JSON Schema draft-04, which some clients still use.
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_is_described() {
        for agents in [None, Some(&["a".to_owned(), "b".to_owned()][..])] {
            let defs = definitions(agents);
            assert_eq!(
                defs.iter().map(|d| d.name).collect::<Vec<_>>(),
                [
                    EXECUTE,
                    PROCESS_OUTPUT,
                    PROCESS_LIST,
                    PROCESS_SIGNAL,
                    "read_file",
                    "write_file",
                    "edit_files",
                    "list_directory"
                ]
            );
            for d in defs {
                assert!(d.description.len() > 80, "{}", d.name);
                assert_eq!(d.input_schema["type"], "object");
                let props = d.input_schema["properties"].as_object().unwrap();
                for (name, p) in props {
                    let desc = p["description"].as_str().unwrap_or_default();
                    assert!(desc.len() > 30, "{}.{name}", d.name);
                }
                // `required` is left out when empty (draft-04 forbids an empty array).
                let required = d.input_schema.get("required").and_then(|r| r.as_array());
                assert!(required.is_none_or(|r| !r.is_empty()), "{}", d.name);
                for r in required.into_iter().flatten() {
                    assert!(props.contains_key(r.as_str().unwrap()));
                }
                assert_eq!(props.contains_key("agent"), agents.is_some());
            }
        }
    }

    #[test]
    fn agent_argument_lists_the_names_and_is_required() {
        let names = ["web".to_owned(), "db".to_owned()];
        let defs = definitions(Some(&names));
        let list = &defs[2].input_schema;
        assert_eq!(list["properties"]["agent"]["enum"], json!(["web", "db"]));
        assert_eq!(list["required"], json!(["agent"]));
        assert_eq!(
            defs[0].input_schema["required"],
            json!(["agent", "command"])
        );
    }

    #[test]
    fn descriptions_tell_the_model_the_rules() {
        let defs = definitions(None);
        let exec = &defs[0];
        assert!(exec.description.contains("sh -c"));
        assert!(exec.description.contains("non-interactively"));
        let timeout = exec.input_schema["properties"]["timeout"]["description"]
            .as_str()
            .unwrap();
        assert!(timeout.contains("does not stop the command"));
        let bg = exec.input_schema["properties"]["run_in_background"]["description"]
            .as_str()
            .unwrap();
        assert!(bg.contains("servers"));
    }
}
