//! The `wgagent` command line: argument parsing and one function per verb.
//!
//! Owns: clap definitions, tracing setup, exit codes, human and `--json` output.
//! Leaves to the library: everything else. `anyhow` is used here only.

mod agent;
mod check;
mod control;
mod demo;
mod docs;
mod files;
mod fish;
mod health;
mod import;
mod json;
mod keys;
mod logging;
mod service;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Userspace WireGuard agent serving a process-execution API on its tunnel address only.
#[derive(Debug, Parser)]
#[command(name = "wgagent", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: join the overlay and serve the process API on the tunnel address.
    Agent {
        /// Agent configuration file (TOML).
        #[arg(long, short, env = "WGAGENT_CONFIG")]
        config: PathBuf,
        /// Read the private key from this file instead of the configuration's
        /// `private_key[_file]` (e.g. a systemd credential: `%d/agent.key`).
        #[arg(long, value_name = "FILE")]
        private_key_file: Option<PathBuf>,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Start an agent and a control peer in this process over a real WireGuard tunnel on
    /// 127.0.0.1, run a command through the API, print what happened, exit.
    Demo {
        /// Print one JSON object at the end (keys, addresses, the command's output and exit
        /// code, round-trip times, counters) instead of the walk-through.
        #[arg(long)]
        json: bool,
    },
    /// Run a command on an agent, print its output, exit with its exit code (128+signal if
    /// killed; 255 if wgagent itself failed).
    Exec {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(help = AGENT_HELP)]
        agent: String,
        /// Working directory on the agent (default: the agent's default directory or $HOME).
        #[arg(long)]
        workdir: Option<String>,
        /// Extra environment variable for the command (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Terminate the command's process tree after this long: seconds ("90", "1.5") or
        /// units ("500ms", "30s", "5m", "1h30m").
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Start it and print its process id instead of waiting.
        #[arg(long)]
        background: bool,
        /// Interactive terminal, like `ssh -t`: the command runs on a pseudo-terminal, this
        /// terminal is put in raw mode, keystrokes and window-size changes are forwarded.
        #[arg(short = 't', long = "tty")]
        tty: bool,
        /// Print one JSON object when the command has finished (id, exit code, signal, reason,
        /// head and tail of the output) instead of the live output; with --background, the id.
        #[arg(long, conflicts_with = "tty")]
        json: bool,
        /// The command: one argument is run with `sh -c` as it is; several are quoted and
        /// joined first, so they arrive as the words they are here.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List an agent's processes.
    Ps {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(help = AGENT_HELP)]
        agent: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a process's output (head and tail, at most 32 KiB).
    Output {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(help = AGENT_HELP)]
        agent: String,
        #[arg(help = ID_HELP)]
        id: String,
        /// Wait (server-side, up to 5 minutes) until the process exits.
        #[arg(long)]
        wait: bool,
        /// Print the full output live from the start, until the process exits.
        #[arg(long, short = 'f', conflicts_with = "wait")]
        follow: bool,
        /// Print the API's JSON (output, truncation, running, exit code) instead of the text;
        /// with --follow, NDJSON lines as the output arrives (like logs --json).
        #[arg(long)]
        json: bool,
    },
    /// Print a process's full log (raw bytes) from a byte offset, optionally following it.
    Logs {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(help = AGENT_HELP)]
        agent: String,
        #[arg(help = ID_HELP)]
        id: String,
        /// First byte to print (absolute offset since the process started).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep printing as the process writes, until it exits.
        #[arg(long, short = 'f')]
        follow: bool,
        /// NDJSON, one line per piece: {"offset", "text"} (or "base64" for bytes that are not
        /// UTF-8), {"skipped": {"from", "to"}} for bytes no longer retained, last {"end"}.
        #[arg(long)]
        json: bool,
    },
    /// Send a signal to a process's whole process group.
    Signal {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(help = AGENT_HELP)]
        agent: String,
        #[arg(help = ID_HELP)]
        id: String,
        /// kill, terminate, interrupt or hangup; also as kill(1) spells them, in any case
        /// (SIGTERM, TERM, 15).
        signal: crate::signal::Signal,
        /// Print {id, signal, message} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget an exited process.
    Rm {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(help = AGENT_HELP)]
        agent: String,
        #[arg(help = ID_HELP)]
        id: String,
        /// Print {id, message} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a file of an agent (raw bytes, streamed).
    Cat {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(help = AGENT_HELP)]
        agent: String,
        /// Absolute path on the agent.
        path: String,
        /// Start at this byte.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Print at most this many bytes (0: to the end).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Print one JSON object: the content (text, or base64 when not UTF-8; at most 16 MiB),
        /// size, the file's size and SHA-256.
        #[arg(long)]
        json: bool,
    },
    /// Write stdin into a file of an agent, atomically (readers see the old or the new file).
    Put {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(help = AGENT_HELP)]
        agent: String,
        /// Absolute path on the agent; missing parent directories are created.
        path: String,
        /// Only if the file's content hash is still this one (sha256 hex, as `sha256sum` or a
        /// read's ETag gives it); `*`: only if it exists.
        #[arg(long, value_name = "HASH")]
        if_match: Option<String>,
        /// Only if the file does not exist yet.
        #[arg(long)]
        create: bool,
        /// Print the agent's answer (with the new content hash) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a directory of an agent.
    Ls {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(help = AGENT_HELP)]
        agent: String,
        /// Absolute path on the agent.
        path: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve the LLM tools (execute, process_*, read_file, write_file, edit_files,
    /// list_directory) as a Model
    /// Context Protocol server on stdin/stdout.
    Mcp {
        #[command(flatten)]
        control: ControlArgs,
        /// Fix the tools to this agent; otherwise every named agent in the config is offered
        /// and each tool takes an `agent` argument.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Run the control daemon: a long-lived control node that holds the WireGuard sessions
    /// (agents behind NAT dial it) and serves the CLI, `mcp` and local HTTP clients on a Unix
    /// socket. Access to the socket equals access to every agent.
    Control {
        /// Control configuration (TOML).
        #[arg(long, short, env = "WGAGENT_CONFIG")]
        config: PathBuf,
        /// Unix socket to serve. Default: [control] socket, else $WGAGENT_SOCKET, else
        /// /run/wgagent/control.sock as root, else $XDG_RUNTIME_DIR/wgagent/control.sock.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Group allowed to use the socket (mode 0660); default: the daemon's user only (0600).
        #[arg(long)]
        socket_group: Option<String>,
        /// Directory where learned agent endpoints are kept across restarts (overrides
        /// [control] state_dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Check a running node: with --local, ask the agent or control daemon of the
    /// configuration on this machine, through its WireGuard UAPI socket, whether it is up and
    /// its data path is alive (exit 0) or not (exit 1). For probes (Kubernetes exec probes,
    /// scripts).
    Health {
        /// Check the node running on this machine (the only mode so far).
        #[arg(long, required = true)]
        local: bool,
        /// Its configuration file: says where the UAPI socket is.
        #[arg(long, short, env = "WGAGENT_CONFIG")]
        config: PathBuf,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate a private key (base64), like `wg genkey`; warns when stdout is a file others
    /// can read.
    Genkey {
        /// Print {private_key, public_key} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (e.g. `wgagent completions bash >
    /// /etc/bash_completion.d/wgagent`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, or write one page per verb into a directory.
    Man {
        /// Write wgagent.1 and wgagent-VERB.1 here (e.g. /usr/local/share/man/man1) instead of
        /// printing wgagent.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Convert a wg-quick configuration (wg0.conf) to a wgagent configuration (TOML).
    Import {
        /// The wg-quick file (`[Interface]` and `[Peer]` sections).
        file: PathBuf,
        /// Write the TOML here (a new file, mode 0600: it holds the private key) instead of
        /// to stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print {toml, output, findings} as JSON (findings then go there, not to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Read a private key on stdin and print its public key, like `wg pubkey`.
    Pubkey {
        /// Print {public_key} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration file without starting anything: print the public key,
    /// addresses, peers, warnings and what the node would listen on; exit 1 with the precise
    /// error when the file is invalid.
    Check {
        /// The configuration file (agent or control).
        #[arg(long, short, env = "WGAGENT_CONFIG")]
        config: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Help of every verb's AGENT argument.
const AGENT_HELP: &str =
    "Agent: a peer name from the config, or a tunnel address (optionally ADDR:PORT).";
/// Help of every verb's process ID argument.
const ID_HELP: &str = "Process id, as `exec --background` or `ps` print it.";

/// Options shared by the control-side verbs.
#[derive(Debug, clap::Args)]
struct ControlArgs {
    /// Control configuration (TOML). Default: $WGAGENT_CONFIG, then ~/.config/wgagent/control.toml.
    /// Not needed when a control daemon answers.
    #[arg(long, short, env = "WGAGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Go through the control daemon on this socket (it must answer). Default: the daemon on
    /// $WGAGENT_SOCKET, [control] socket or the default path when it answers, else a node of
    /// our own.
    #[arg(long, conflicts_with = "direct")]
    socket: Option<PathBuf>,
    /// Never use a control daemon: join the overlay with a short-lived node of our own (which
    /// can only reach agents that have an endpoint in the config).
    #[arg(long)]
    direct: bool,
}

/// Options of the long-lived roles (`agent`, `control`).
#[derive(Debug, clap::Args)]
struct ServiceArgs {
    /// Log lines as human text or as one JSON object per line (overrides `[log] format`).
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Reload when the configuration file or the private key file changes (checked every
    /// 2 s; for Kubernetes ConfigMaps and Secrets), as on SIGHUP.
    #[arg(long)]
    watch_config: bool,
}

impl ServiceArgs {
    fn log_format(&self) -> Option<crate::config::LogFormat> {
        self.log_format
            .as_deref()
            .and_then(crate::config::LogFormat::parse)
    }
}

impl ControlArgs {
    fn link(self) -> control::Link {
        control::Link {
            config: self.config,
            socket: self.socket,
            direct: self.direct,
        }
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

/// Opens a session to `agent` and runs `f` on it; the node is shut down afterwards.
fn with_session<T>(
    control: ControlArgs,
    agent: &str,
    f: impl AsyncFnOnce(&control::Session) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    init_tracing_quiet();
    let rt = runtime()?;
    rt.block_on(async {
        let session = control::Session::open(&control.link(), agent).await?;
        let r = f(&session).await;
        session.close().await;
        r
    })
}

/// Parses arguments, runs the verb, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version to stdout, usage errors to stderr, as clap prints them.
            let _ = e.print();
            let verb = std::env::args_os().nth(1);
            return ExitCode::from(usage_exit_code(e.kind(), verb.as_deref()));
        }
    };
    match cli.command {
        Command::Genkey { json } => {
            warn_if_stdout_world_accessible();
            report(keys::genkey(json))
        }
        Command::Completions { shell } => report(docs::completions(shell)),
        Command::Man { dir } => report(docs::man(dir.as_deref())),
        Command::Import { file, output, json } => {
            report(import::run(&file, output.as_deref(), json))
        }
        Command::Check { config, json } => report(check::run(&config, json)),
        Command::Pubkey { json } => report(keys::pubkey(json)),
        Command::Exec {
            control,
            agent,
            workdir,
            env,
            timeout,
            background,
            tty,
            json,
            command,
        } => {
            let args = control::ExecArgs {
                workdir,
                env,
                timeout,
                background,
                tty,
                json,
                command,
            };
            match with_session(control, &agent, async |s| control::exec(s, args).await) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("wgagent: {}", one_line(&e));
                    ExitCode::from(EXEC_FAILED)
                }
            }
        }
        Command::Ps {
            control,
            agent,
            json,
        } => report(with_session(control, &agent, async |s| {
            control::ps(s, json).await
        })),
        Command::Output {
            control,
            agent,
            id,
            wait,
            follow,
            json,
        } => report(with_session(control, &agent, async |s| {
            control::output(s, &id, wait, follow, json).await
        })),
        Command::Logs {
            control,
            agent,
            id,
            from,
            follow,
            json,
        } => report(with_session(control, &agent, async |s| {
            control::logs(s, &id, from, follow, json).await
        })),
        Command::Signal {
            control,
            agent,
            id,
            signal,
            json,
        } => report(with_session(control, &agent, async |s| {
            control::signal(s, &id, signal, json).await
        })),
        Command::Rm {
            control,
            agent,
            id,
            json,
        } => report(with_session(control, &agent, async |s| {
            control::rm(s, &id, json).await
        })),
        Command::Cat {
            control,
            agent,
            path,
            offset,
            limit,
            json,
        } => report(with_session(control, &agent, async |s| {
            files::cat(s, &path, offset, limit, json).await
        })),
        Command::Put {
            control,
            agent,
            path,
            if_match,
            create,
            json,
        } => report(with_session(control, &agent, async |s| {
            files::put(s, &path, if_match.as_deref(), create, json).await
        })),
        Command::Ls {
            control,
            agent,
            path,
            json,
        } => report(with_session(control, &agent, async |s| {
            files::ls(s, &path, json).await
        })),
        Command::Mcp { control, agent } => {
            // stdout carries the protocol: logs go to stderr only, warnings and errors by default.
            init_tracing_quiet();
            report(runtime().and_then(|rt| {
                rt.block_on(async { control::mcp(&control.link(), agent.as_deref()).await })
            }))
        }
        Command::Control {
            config,
            socket,
            socket_group,
            state_dir,
            service,
        } => {
            let overrides = control::DaemonFlags {
                socket,
                socket_group,
                state_dir,
                log_format: service.log_format(),
                watch_config: service.watch_config,
            };
            report(runtime().and_then(|rt| rt.block_on(control::daemon(&config, overrides))))
        }
        Command::Demo { json } => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_tracing();
            }
            report(runtime().and_then(|rt| rt.block_on(demo::run(json))))
        }
        // The agent sets up its own (reloadable) logging from its config.
        Command::Agent {
            config,
            private_key_file,
            service,
        } => {
            let flags = agent::AgentFlags {
                private_key_file,
                log_format: service.log_format(),
                watch_config: service.watch_config,
            };
            report(runtime().and_then(|rt| rt.block_on(agent::run(&config, flags))))
        }
        Command::Health {
            local: _,
            config,
            json,
        } => {
            init_tracing_quiet();
            report(health::local(&config, json))
        }
    }
}

/// The exit code of a command line clap did not run: 0 for `--help`/`--version` (and `help`);
/// 2 for a usage error (an unknown, missing or invalid argument), as clap, grep and most Unix
/// tools do; but 255 under `exec`, whose other codes are the command's own: a 2 there could be
/// the command's, and scripts tell "wgagent failed" by 255 (as with ssh).
fn usage_exit_code(kind: clap::error::ErrorKind, verb: Option<&std::ffi::OsStr>) -> u8 {
    use clap::error::ErrorKind;
    match kind {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
        _ if verb.is_some_and(|v| v == "exec") => EXEC_FAILED,
        _ => USAGE,
    }
}

/// `exec`'s code when wgagent itself failed (not the command).
const EXEC_FAILED: u8 = 255;
/// Any verb's code for a command line it cannot run (`exec`: [`EXEC_FAILED`]).
const USAGE: u8 = 2;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Agent and demo logging: `info` unless `RUST_LOG` says otherwise.
pub(crate) fn init_tracing() {
    init_tracing_with("info");
}

/// For client verbs: only warnings and errors unless `RUST_LOG` says otherwise, so that
/// stdout/stderr carry the command's output and our one-line errors.
fn init_tracing_quiet() {
    init_tracing_with("warn");
}

/// Logs go to stderr, colour only on a terminal; `RUST_LOG` overrides `default`.
fn init_tracing_with(default: &str) {
    use std::io::IsTerminal;
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = logging::filter(spec.as_deref().unwrap_or(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// `wg genkey`'s warning, word for word: a private key written to a regular file that others
/// may read.
fn warn_if_stdout_world_accessible() {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    if let Ok(st) = nix::sys::stat::fstat(stdout.as_fd()) {
        let mode = st.st_mode;
        if mode & libc::S_IFMT == libc::S_IFREG && mode & libc::S_IRWXO != 0 {
            eprintln!(
                "Warning: writing to world accessible file.\n\
                 Consider setting the umask to 077 and trying again."
            );
        }
    }
}

/// One clear line on stderr and exit code 1 for any error.
fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgagent: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the line already holds
/// (many error types print their source in their own message too).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    /// Walks the whole command tree as users see it (built: with `help`, `--help`,
    /// `--version`): every verb has an about, every shown flag and positional a help text.
    #[test]
    fn every_verb_and_argument_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        let mut seen = 0;
        walk(&cmd, "wgagent", &mut missing, &mut seen);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
        assert!(seen > 60, "the walk saw only {seen} arguments");
    }

    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>, seen: &mut usize) {
        let has = |s: Option<&clap::builder::StyledStr>| {
            s.is_some_and(|s| !s.to_string().trim().is_empty())
        };
        if !has(cmd.get_about()) && !has(cmd.get_long_about()) {
            missing.push(path.to_owned());
        }
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            *seen += 1;
            if !has(arg.get_help()) && !has(arg.get_long_help()) {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing, seen);
        }
    }

    /// `--json` on every verb but those README.md names as without it, by design.
    #[test]
    fn every_verb_has_json_but_the_documented_ones() {
        let without = ["completions", "man", "mcp", "agent", "control", "help"];
        let mut cmd = Cli::command();
        cmd.build();
        for verb in cmd.get_subcommands() {
            let has = verb.get_arguments().any(|a| a.get_long() == Some("json"));
            let name = verb.get_name();
            assert_eq!(has, !without.contains(&name), "{name}: --json {has}");
        }
    }

    #[test]
    fn usage_errors_exit_2_but_255_under_exec() {
        let exec = Some(std::ffi::OsStr::new("exec"));
        let ps = Some(std::ffi::OsStr::new("ps"));
        assert_eq!(usage_exit_code(ErrorKind::DisplayHelp, exec), 0);
        assert_eq!(usage_exit_code(ErrorKind::DisplayVersion, None), 0);
        assert_eq!(usage_exit_code(ErrorKind::UnknownArgument, ps), 2);
        assert_eq!(usage_exit_code(ErrorKind::InvalidSubcommand, None), 2);
        assert_eq!(
            usage_exit_code(ErrorKind::MissingRequiredArgument, exec),
            255
        );
        assert_eq!(usage_exit_code(ErrorKind::ValueValidation, exec), 255);
    }
}
