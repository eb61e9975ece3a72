//! Control-side verbs: `exec`, `ps`, `output`, `signal`, `rm`, `mcp`, and `control` (the daemon).
//!
//! How a verb reaches its agent is decided in one place, [`Session::open`]: through the control
//! daemon when its socket answers, else (or with `--direct`) with a short-lived node of its own.
//! The verbs themselves only see an `AgentConn` and print for humans or `--json`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};

use super::{json, stream};
use crate::api::types::{ProcessInfo, StartProcessRequest, TerminalSize};
use crate::client::{AgentConn, AgentOptions, BoxConnector, ClientError, DaemonConnector};
use crate::config::Config;
use crate::control::{self, Agents, Daemon, DaemonOptions, Target};
use crate::keys;
use crate::node::{Node, NodeConfig, NodeError};
use crate::tool::Tools;

/// How long the CLI waits for the daemon's socket to accept a connection.
const PROBE: Duration = Duration::from_secs(2);

/// The config file: `--config`, else `$WGAGENT_CONFIG` (clap reads it), else
/// `~/.config/wgagent/control.toml`.
pub fn config_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow!("no --config given, $WGAGENT_CONFIG unset and $HOME unset"))?;
    Ok(PathBuf::from(home).join(".config/wgagent/control.toml"))
}

/// What the user said about reaching agents (the shared control options).
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// `--config` / `$WGAGENT_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--socket`: this daemon socket, which must answer.
    pub socket: Option<PathBuf>,
    /// `--direct`: never use a daemon.
    pub direct: bool,
}

/// How a verb reaches its agent.
pub struct Session {
    pub conn: AgentConn<BoxConnector>,
    /// What the user called the agent, for messages.
    pub agent: String,
    via: Via,
}

enum Via {
    Daemon,
    Direct { node: Box<Node>, target: Target },
}

/// Where the verb goes: a daemon's socket, or its own node with this config.
enum Route {
    Daemon(DaemonConnector, Option<Config>),
    Direct(PathBuf, Config),
}

impl Session {
    /// The one function that decides how a verb reaches `agent`: the daemon when its socket
    /// answers (`--socket`, `$WGAGENT_SOCKET`, `[control] socket`, the default path), else a
    /// short-lived node of its own (`--direct` forces that).
    pub async fn open(link: &Link, agent: &str) -> anyhow::Result<Session> {
        match route(link).await? {
            Route::Daemon(daemon, cfg) => {
                let opts = cfg.as_ref().map(options).unwrap_or_default();
                let socket = daemon.socket().to_owned();
                let info = daemon
                    .resolve(agent)
                    .await
                    .map_err(|e| explain_daemon(&socket, agent, e))?;
                let conn = AgentConn::new(BoxConnector::new(daemon), info.api, opts);
                Ok(Session {
                    conn,
                    agent: agent.to_owned(),
                    via: Via::Daemon,
                })
            }
            Route::Direct(path, cfg) => {
                let target = Agents::from_config(&cfg).resolve(agent)?;
                if target.configured_endpoint.is_none() {
                    bail!(no_endpoint(&target, &path));
                }
                let node = join(&cfg).await?;
                let conn = AgentConn::new(
                    BoxConnector::new(node.connector()),
                    target.api,
                    options(&cfg),
                );
                Ok(Session {
                    conn,
                    agent: agent.to_owned(),
                    via: Via::Direct {
                        node: Box::new(node),
                        target,
                    },
                })
            }
        }
    }

    /// Turns an SDK error into the one line the user sees.
    pub fn explain(&self, e: ClientError) -> anyhow::Error {
        match (&e, &self.via) {
            // The daemon's message says what it knows (endpoint, handshake, what to check).
            (ClientError::Unreachable { source, .. }, Via::Daemon) => anyhow!("{source}"),
            (ClientError::Unreachable { waited, .. }, Via::Direct { node, target }) => {
                let handshakes = node.stats().wg.peers.get(target.peer).map(|p| p.handshakes);
                let ep = target
                    .configured_endpoint
                    .map_or("no endpoint configured".to_owned(), |e| {
                        format!("endpoint {e}")
                    });
                if handshakes == Some(0) {
                    anyhow!(
                        "agent {}: WireGuard handshake not completed within {:.0?} ({ep}); is the agent running and does it know this key?",
                        self.agent,
                        waited
                    )
                } else {
                    anyhow!(
                        "agent {}: cannot connect to the API at {} within {:.0?}: {e}",
                        self.agent,
                        target.api,
                        waited
                    )
                }
            }
            (
                ClientError::Status {
                    status,
                    message,
                    detail,
                },
                _,
            ) => anyhow!(
                "agent {} refused: {message} (HTTP {status}){}",
                self.agent,
                detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            _ => anyhow!("agent {}: {e}", self.agent),
        }
    }

    pub async fn close(self) {
        if let Via::Direct { node, .. } = self.via {
            node.shutdown(Duration::from_secs(1)).await;
        }
    }
}

/// Decides between the daemon and a node of our own; see [`Session::open`].
async fn route(link: &Link) -> anyhow::Result<Route> {
    let path = config_path(link.config.clone())?;
    if link.direct {
        return Ok(Route::Direct(path.clone(), load(&path)?));
    }
    if let Some(socket) = &link.socket {
        let daemon = DaemonConnector::new(socket);
        daemon.probe(PROBE).await.map_err(|e| {
            anyhow!(
                "no control daemon answers on {}: {e} (start one with `wgagent control`, or use --direct)",
                socket.display()
            )
        })?;
        return Ok(Route::Daemon(daemon, load_if_present(&path)));
    }
    let env = std::env::var_os("WGAGENT_SOCKET").filter(|s| !s.is_empty());
    let cfg = load_if_present(&path);
    let socket = match (env, cfg.as_ref().and_then(|c| c.control.socket.clone())) {
        (Some(s), _) => PathBuf::from(s),
        (None, Some(s)) => s,
        (None, None) => control::socket::fallback_path(),
    };
    let daemon = DaemonConnector::new(&socket);
    match daemon.probe(PROBE).await {
        Ok(()) => Ok(Route::Daemon(daemon, cfg)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => bail!(
            "cannot use the control daemon at {}: permission denied (the socket is for the daemon's user and its socket_group; or use --direct)",
            socket.display()
        ),
        Err(e) => {
            tracing::debug!(
                "no control daemon at {}: {e}; running a node of our own",
                socket.display()
            );
            match cfg {
                Some(cfg) => Ok(Route::Direct(path, cfg)),
                // Report the config error (missing file, syntax) rather than the socket.
                None => Ok(Route::Direct(path.clone(), load(&path)?)),
            }
        }
    }
}

/// The error for an agent a short-lived node can never reach.
fn no_endpoint(target: &Target, config: &Path) -> String {
    format!(
        "agent {}: no endpoint in {} and it has not reached this node: an agent behind NAT dials its control replicas, \
         and a short-lived CLI node has no session with it. Run the control daemon (`wgagent control --config {}`) \
         so that the agent's keepalives reach a long-lived node, or give the peer an `endpoint`.",
        target.label,
        config.display(),
        config.display()
    )
}

/// A daemon's refusal to resolve an agent, or a failure to talk to it, as one line.
fn explain_daemon(socket: &Path, agent: &str, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Status { message, .. } => {
            anyhow!(
                "agent {agent}: {message} (control daemon at {})",
                socket.display()
            )
        }
        other => anyhow!("control daemon at {}: {other}", socket.display()),
    }
}

/// Loads the control config and logs its warnings.
fn load(path: &Path) -> anyhow::Result<Config> {
    let cfg = Config::load(path)?;
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    Ok(cfg)
}

/// The config when the file exists (daemon users may have none); its errors are reported only
/// when it is needed.
fn load_if_present(path: &Path) -> Option<Config> {
    if !path.exists() {
        return None;
    }
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::debug!("{e}");
            None
        }
    }
}

/// SDK options from `[control]`.
fn options(cfg: &Config) -> AgentOptions {
    AgentOptions {
        connect_timeout: cfg.control.connect_timeout,
        request_timeout: cfg.control.request_timeout,
        ..AgentOptions::default()
    }
}

/// Joins the overlay as a short-lived replica, on the configured UDP port (where agents send
/// their keepalives). A busy port means another node with this key runs: one key can be one
/// WireGuard peer at one endpoint only (two nodes with it take each other's sessions), so that is
/// an error that points to the daemon, not a reason to pick another port.
async fn join(cfg: &Config) -> anyhow::Result<Node> {
    match Node::start(NodeConfig::from(cfg)).await {
        Ok(n) => Ok(n),
        Err(NodeError::Bind { port, source }) if source.kind() == io::ErrorKind::AddrInUse => {
            bail!(
                "cannot bind the WireGuard UDP port {port}: another node with this key is running \
             (a control daemon whose socket this run did not use, or another --direct run). One key is one \
             WireGuard peer: run `wgagent control` once and let every CLI run go through its socket"
            )
        }
        Err(e) => Err(e).context("joining the overlay"),
    }
}

/// Command-line overrides of `[control]` for `wgagent control`.
pub struct DaemonFlags {
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// `--log-format`: overrides `[log] format`.
    pub log_format: Option<crate::config::LogFormat>,
    /// `--watch-config`: reload when the file (or its key file) changes, as on SIGHUP.
    pub watch_config: bool,
}

/// `wgagent control`: runs the daemon until SIGTERM or SIGINT.
pub async fn daemon(config: &Path, flags: DaemonFlags) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: a signal during start-up must not kill the daemon without its cleanup.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let cfg = load(config)?;
    let log = super::logging::LogControl::init(
        &cfg.log.level,
        flags.log_format.unwrap_or(cfg.log.format),
    );
    let mut opts = DaemonOptions::from_config(&cfg);
    if let Some(s) = flags.socket {
        opts.socket = s;
    }
    if flags.socket_group.is_some() {
        opts.socket_group = flags.socket_group;
    }
    if flags.state_dir.is_some() {
        opts.state_dir = flags.state_dir;
    }
    let d = Daemon::start(&cfg, opts).await?;
    tracing::info!(
        public_key = %keys::encode_public(&d.node().public_key()),
        addresses = ?d.node().addresses(),
        udp_port = d.node().udp_addr().port(),
        peers = cfg.peers.len(),
        socket = %d.socket().display(),
        "control daemon up"
    );
    let mut watch = flags.watch_config.then(|| {
        super::service::ConfigWatch::new(
            config,
            cfg.interface.private_key_path.as_deref(),
            super::service::WATCH_EVERY,
        )
    });
    let background = tokio_util::sync::CancellationToken::new();
    super::service::watchdog(d.node().clone(), background.clone());
    super::service::ready(&format!("control daemon up on {}", d.socket().display()));
    let mut level = cfg.log.level.clone();
    let signal = loop {
        let watched = async {
            match watch.as_mut() {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {}
            () = watched => {}
        }
        super::service::reloading();
        if let Some(new) = reload(config, &d).await {
            if new.log.level != level {
                log.set(&new.log.level);
                level = new.log.level.clone();
            }
            if let Some(w) = watch.as_mut() {
                w.set_key(new.interface.private_key_path.as_deref());
            }
        }
        super::service::ready("running");
    };
    super::service::stopping();
    tracing::info!(signal, "control daemon shutting down");
    let clean = d.shutdown(Duration::from_secs(10)).await;
    background.cancel();
    tracing::info!(clean, "control daemon stopped");
    Ok(())
}

/// SIGHUP: re-reads the config and applies it live: peers (added, updated, removed by the same
/// rule as an agent's reload), private key, port, agent names and addresses. An invalid file,
/// or peers the node refuses, are logged with the precise error and the running config stays.
/// Returns the configuration now in force, `None` if the reload was refused.
async fn reload(config: &Path, d: &Daemon) -> Option<Config> {
    let cfg = match Config::load(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keeping the running configuration");
            return None;
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", config.display());
    }
    match d.reload(&cfg).await {
        Ok(p) => {
            tracing::info!(
                added = p.added.len(),
                updated = p.updated.len(),
                removed = p.removed.len(),
                key_changed = p.key_changed,
                "SIGHUP: configuration reloaded from {}",
                config.display()
            );
            Some(cfg)
        }
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keeping the running configuration");
            None
        }
    }
}

/// `wgagent mcp`: an MCP server on stdio exposing the process and file tools for the agents
/// (named peers), or for the one given with `--agent`; through the daemon when it answers.
pub async fn mcp(link: &Link, agent: Option<&str>) -> anyhow::Result<()> {
    let (agents, node): (Vec<(String, AgentConn<BoxConnector>)>, Option<Node>) = match route(link)
        .await?
    {
        Route::Daemon(daemon, cfg) => {
            let opts = cfg.as_ref().map(options).unwrap_or_default();
            let socket = daemon.socket().to_owned();
            let list: Vec<(String, std::net::SocketAddr)> = match agent {
                Some(a) => {
                    let info = daemon
                        .resolve(a)
                        .await
                        .map_err(|e| explain_daemon(&socket, a, e))?;
                    vec![(a.to_owned(), info.api)]
                }
                None => daemon
                    .status()
                    .await
                    .map_err(|e| anyhow!("control daemon at {}: {e}", socket.display()))?
                    .peers
                    .into_iter()
                    .filter_map(|p| Some((p.name?, p.api?)))
                    .collect(),
            };
            let conns = list
                .into_iter()
                .map(|(n, api)| {
                    (
                        n,
                        AgentConn::new(BoxConnector::new(daemon.clone()), api, opts),
                    )
                })
                .collect();
            (conns, None)
        }
        Route::Direct(path, cfg) => {
            let node = join(&cfg).await?;
            let all = Agents::from_config(&cfg);
            let list: Vec<(String, std::net::SocketAddr)> = match agent {
                Some(a) => vec![(a.to_owned(), all.resolve(a)?.api)],
                None => all.named().map(|(n, api)| (n.to_owned(), api)).collect(),
            };
            if list.is_empty() {
                bail!(
                    "no named peer with a /32 or /128 tunnel address in {}; name the agents or use --agent",
                    path.display()
                );
            }
            let conns = list
                .into_iter()
                .map(|(n, api)| {
                    let c = BoxConnector::new(node.connector());
                    (n, AgentConn::new(c, api, options(&cfg)))
                })
                .collect();
            (conns, Some(node))
        }
    };
    let mut agents = agents.into_iter();
    let tools = match (agent, agents.next()) {
        (_, None) => bail!(
            "the control daemon knows no named agent; name the agents in its config or use --agent"
        ),
        (Some(_), Some((_, conn))) => Tools::single(conn),
        (None, Some(first)) => Tools::new(std::iter::once(first).chain(agents))?,
    };
    let served = crate::tool::mcp::serve_stdio(tools).await;
    if let Some(node) = node {
        node.shutdown(Duration::from_secs(1)).await;
    }
    served
}

pub struct ExecArgs {
    pub workdir: Option<String>,
    pub env: Vec<String>,
    pub timeout: Option<Duration>,
    pub background: bool,
    /// Interactive terminal (`-t`).
    pub tty: bool,
    /// Print one JSON object ([`super::json::Exec`]) instead of the live output.
    pub json: bool,
    pub command: Vec<String>,
}
/// Runs a command; returns the exit code to exit with (the process's, 128+signal if killed).
pub async fn exec(s: &Session, a: ExecArgs) -> anyhow::Result<u8> {
    let env = parse_env(&a.env)?;
    if a.command.is_empty() {
        bail!("no command given (usage: wgagent exec AGENT [OPTIONS] -- COMMAND...)");
    }
    // One argument is a command line as it is; several are quoted for `sh -c` so that they
    // arrive as the separate words they were here.
    let mut env = env;
    let pty = a.tty.then(|| {
        let (rows, cols) = stream::terminal_size().unwrap_or((24, 80));
        if let Ok(term) = std::env::var("TERM") {
            env.entry("TERM".to_owned()).or_insert(term);
        }
        TerminalSize { rows, cols }
    });
    let req = StartProcessRequest {
        command: stream::command_line(&a.command)?,
        workdir: a.workdir,
        env,
        background: a.background,
        idempotency_key: Some(uuid::Uuid::new_v4().to_string()),
        timeout_ms: a.timeout.map(|t| t.as_millis() as u64),
        pty,
        ..Default::default()
    };
    let id = s.conn.start(&req).await.map_err(|e| s.explain(e))?.id;
    if a.background {
        if a.json {
            json::print(&json::Exec::started(id))?;
        } else {
            println!("{id}");
        }
        return Ok(0);
    }
    // Output live, as it is written (the log, not the head+tail view); with --json only the
    // final object.
    let streamed = if a.json {
        Ok(())
    } else if a.tty {
        stream::interactive(&s.conn, &id).await
    } else {
        stream::copy_output(&s.conn, &id, 0, false)
            .await
            .map(|_| ())
            .map_err(|e| s.explain(e))
    };
    let out = loop {
        // Server-side waits of up to 5 minutes each; no polling interval.
        let out = s
            .conn
            .output(&id, Some(Duration::from_secs(300)))
            .await
            .map_err(|e| s.explain(e))?;
        if !out.running {
            break out;
        }
    };
    if let Err(e) = streamed {
        // The log could not be followed (e.g. the agent's disk is full): the head+tail view.
        eprintln!("wgagent: live output failed ({e}); the head and tail of the output follow");
        print!("{}", out.output);
    }
    let code = out.exit_code.unwrap_or(-1);
    if code >= 0 && !a.json {
        return Ok(u8::try_from(code).unwrap_or(255));
    }
    let info = s
        .conn
        .list()
        .await
        .ok()
        .and_then(|l| l.processes.into_iter().find(|p| p.id == id));
    if a.json {
        json::print(&json::Exec::finished(id, out, info.as_ref()))?;
    }
    if code >= 0 {
        return Ok(u8::try_from(code).unwrap_or(255));
    }
    let sig = info
        .as_ref()
        .and_then(|p| p.exit_signal.as_deref())
        .and_then(|n| n.parse::<nix::sys::signal::Signal>().ok());
    if let Some(reason) = info.as_ref().and_then(|p| p.exit_reason.as_deref())
        && reason == "timed_out"
    {
        eprintln!(
            "wgagent: command timed out after {:?} and was terminated",
            a.timeout.unwrap_or_default()
        );
    }
    Ok(sig.map_or(255, |s| 128 + s as u8))
}

fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("--env {p:?}: expected KEY=VALUE"))?;
        if k.is_empty() {
            bail!("--env {p:?}: empty variable name");
        }
        env.insert(k.to_owned(), v.to_owned());
    }
    Ok(env)
}

pub async fn ps(s: &Session, json: bool) -> anyhow::Result<()> {
    let list = s.conn.list().await.map_err(|e| s.explain(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<36}  {:>7}  {:<18}  {:>8}  COMMAND",
        "ID", "PID", "STATE", "AGE"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for p in &list.processes {
        let mut cmd = p.command.replace('\n', " ");
        if cmd.chars().count() > 60 {
            cmd = cmd.chars().take(57).collect::<String>() + "...";
        }
        println!(
            "{:<36}  {:>7}  {:<18}  {:>8}  {cmd}",
            p.id,
            p.pid.map_or("-".into(), |x| x.to_string()),
            state(p),
            age(now - p.started_at_unix)
        );
    }
    Ok(())
}

fn state(p: &ProcessInfo) -> String {
    if p.running {
        return "running".into();
    }
    match (
        p.exit_reason.as_deref(),
        p.exit_signal.as_deref(),
        p.exit_code,
    ) {
        (Some("timed_out"), _, _) => "timed out".into(),
        (Some("agent_shutdown"), _, _) => "agent shutdown".into(),
        (_, Some(sig), _) => format!("killed {sig}"),
        (_, _, Some(c)) => format!("exited {c}"),
        _ => "exited".into(),
    }
}

fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub async fn output(
    s: &Session,
    id: &str,
    wait: bool,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    if follow {
        stream::copy_output(&s.conn, id, 0, json)
            .await
            .map_err(|e| s.explain(e))?;
        return Ok(());
    }
    let out = s
        .conn
        .output(id, wait.then(|| Duration::from_secs(300)))
        .await
        .map_err(|e| s.explain(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", out.output);
        if out.running {
            eprintln!("wgagent: process {id} is still running (use --wait to wait for it)");
        }
    }
    Ok(())
}

/// `wgagent logs AGENT ID [--from N] [--follow] [--json]`: the raw log from byte N (NDJSON
/// lines with `--json`).
pub async fn logs(
    s: &Session,
    id: &str,
    from: u64,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    if follow {
        stream::copy_output(&s.conn, id, from, json)
            .await
            .map_err(|e| s.explain(e))?;
    } else {
        stream::print_log(&s.conn, id, from, json)
            .await
            .map_err(|e| s.explain(e))?;
    }
    Ok(())
}

pub async fn signal(
    s: &Session,
    id: &str,
    sig: crate::signal::Signal,
    as_json: bool,
) -> anyhow::Result<()> {
    let r = s.conn.signal(id, sig).await.map_err(|e| s.explain(e))?;
    done(id, Some(sig), r.message, as_json)
}

pub async fn rm(s: &Session, id: &str, as_json: bool) -> anyhow::Result<()> {
    let r = s.conn.remove(id).await.map_err(|e| s.explain(e))?;
    done(id, None, r.message, as_json)
}

fn done(
    id: &str,
    signal: Option<crate::signal::Signal>,
    message: String,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        let id = id.to_owned();
        return json::print(&json::Done {
            id,
            signal,
            message,
        });
    }
    println!("{message}");
    Ok(())
}
