//! Control-side verbs: `exec`, `ps`, `output`, `signal`, `rm`. Each joins the overlay with the
//! control config's key, talks to one agent through the SDK, and prints for humans or `--json`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};

use super::stream;
use crate::api::types::{ProcessInfo, StartProcessRequest, TerminalSize};
use crate::client::{AgentConn, AgentOptions, ClientError};
use crate::config::Config;
use crate::node::{Node, NodeConfig, NodeConnector};
use crate::tool::Tools;

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

/// A control replica's view of one agent: the overlay node and an SDK handle.
pub struct Session {
    pub node: Node,
    pub conn: AgentConn<NodeConnector>,
    pub agent: Target,
}

/// Which agent a command addresses, and how to describe it in errors.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: String,
    pub api: SocketAddr,
    /// The WireGuard endpoint configured for the peer that routes `api`, if any.
    pub endpoint: Option<SocketAddr>,
    /// Index of that peer in the config (and in node stats).
    pub peer: Option<usize>,
}

impl Session {
    pub async fn open(config: &Path, agent: &str) -> anyhow::Result<Session> {
        let cfg = load(config)?;
        let target = resolve(&cfg, agent)?;
        let (node, opts) = join(&cfg).await?;
        let conn = AgentConn::new(node.connector(), target.api, opts);
        Ok(Session {
            node,
            conn,
            agent: target,
        })
    }

    /// Turns an SDK error into the one line the user sees.
    pub fn explain(&self, e: ClientError) -> anyhow::Error {
        match &e {
            ClientError::Unreachable { waited, .. } => {
                let handshakes = self
                    .agent
                    .peer
                    .and_then(|i| self.node.stats().wg.peers.get(i).map(|p| p.handshakes));
                let ep = self
                    .agent
                    .endpoint
                    .map_or("no endpoint configured".to_owned(), |e| {
                        format!("endpoint {e}")
                    });
                if handshakes == Some(0) {
                    anyhow!(
                        "agent {}: WireGuard handshake not completed within {:.0?} ({ep}); is the agent running and does it know this key?",
                        self.agent.label,
                        waited
                    )
                } else {
                    anyhow!(
                        "agent {}: cannot connect to the API at {} within {:.0?}: {e}",
                        self.agent.label,
                        self.agent.api,
                        waited
                    )
                }
            }
            ClientError::Status {
                status,
                message,
                detail,
            } => anyhow!(
                "agent {} refused: {message} (HTTP {status}){}",
                self.agent.label,
                detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            _ => anyhow!("agent {}: {e}", self.agent.label),
        }
    }

    pub async fn close(self) {
        self.node.shutdown(Duration::from_secs(1)).await;
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

/// Joins the overlay as this replica; returns the node and the SDK options from `[control]`.
async fn join(cfg: &Config) -> anyhow::Result<(Node, AgentOptions)> {
    let node = Node::start(NodeConfig::from(cfg))
        .await
        .context("joining the overlay")?;
    let opts = AgentOptions {
        connect_timeout: cfg.control.connect_timeout,
        request_timeout: cfg.control.request_timeout,
        ..AgentOptions::default()
    };
    Ok((node, opts))
}

/// `AGENT` is a peer name from the config, a tunnel address, or `address:port`.
pub fn resolve(cfg: &Config, agent: &str) -> anyhow::Result<Target> {
    if let Some(p) = cfg.peer_by_name(agent) {
        let host = p
            .allowed_ips
            .iter()
            .find(|n| n.is_ipv4() && n.netmask() == 32 || !n.is_ipv4() && n.netmask() == 128)
            .map(|n| n.network_address())
            .ok_or_else(|| {
                anyhow!("peer {agent:?} has no single-address allowed_ips entry (/32 or /128); give its tunnel address instead")
            })?;
        let idx = cfg.peers.iter().position(|q| q.public_key == p.public_key);
        return Ok(Target {
            label: agent.to_owned(),
            api: SocketAddr::new(host, cfg.control.api_port),
            endpoint: p.endpoint,
            peer: idx,
        });
    }
    let api: SocketAddr = if let Ok(ip) = agent.parse::<IpAddr>() {
        SocketAddr::new(ip, cfg.control.api_port)
    } else if let Ok(sa) = agent.parse::<SocketAddr>() {
        sa
    } else {
        let names: Vec<&str> = cfg.peers.iter().filter_map(|p| p.name.as_deref()).collect();
        bail!(
            "unknown agent {agent:?}: not a peer name in the config ({}) nor a tunnel address",
            names.join(", ")
        );
    };
    // Longest prefix among peers, as the tunnel routes it.
    let peer = cfg
        .peers
        .iter()
        .enumerate()
        .filter(|(_, p)| p.allowed_ips.iter().any(|n| n.contains(api.ip())))
        .max_by_key(|(_, p)| {
            p.allowed_ips
                .iter()
                .filter(|n| n.contains(api.ip()))
                .map(|n| n.netmask())
                .max()
        });
    let Some((idx, p)) = peer else {
        bail!(
            "no peer in the config routes {} (check the peers' allowed_ips)",
            api.ip()
        );
    };
    Ok(Target {
        label: agent.to_owned(),
        api,
        endpoint: p.endpoint,
        peer: Some(idx),
    })
}

/// `wgagent mcp`: an MCP server on stdio exposing the process and file tools for the config's agents
/// (named peers), or for the one given with `--agent`.
pub async fn mcp(config: &Path, agent: Option<&str>) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let (node, opts) = join(&cfg).await?;
    let tools = match agent {
        Some(a) => Tools::single(AgentConn::new(
            node.connector(),
            resolve(&cfg, a)?.api,
            opts,
        )),
        None => {
            let mut agents = Vec::new();
            for name in cfg.peers.iter().filter_map(|p| p.name.as_deref()) {
                // Peers without a single tunnel address (e.g. a replica's /24) are not agents.
                if let Ok(t) = resolve(&cfg, name) {
                    agents.push((
                        name.to_owned(),
                        AgentConn::new(node.connector(), t.api, opts),
                    ));
                }
            }
            if agents.is_empty() {
                bail!(
                    "no named peer with a /32 or /128 tunnel address in {}; name the agents or use --agent",
                    config.display()
                );
            }
            Tools::new(agents)?
        }
    };
    let served = crate::tool::mcp::serve_stdio(tools).await;
    node.shutdown(Duration::from_secs(1)).await;
    served
}

pub struct ExecArgs {
    pub workdir: Option<String>,
    pub env: Vec<String>,
    pub timeout: Option<Duration>,
    pub background: bool,
    /// Interactive terminal (`-t`).
    pub tty: bool,
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
        println!("{id}");
        return Ok(0);
    }
    // Output live, as it is written (the log, not the head+tail view).
    let streamed = if a.tty {
        stream::interactive(&s.conn, &id).await
    } else {
        stream::copy_output(&s.conn, &id, 0)
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
    if code >= 0 {
        return Ok(u8::try_from(code).unwrap_or(255));
    }
    let info = s
        .conn
        .list()
        .await
        .ok()
        .and_then(|l| l.processes.into_iter().find(|p| p.id == id));
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
        stream::copy_output(&s.conn, id, 0)
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

/// `wgagent logs AGENT ID [--from N] [--follow]`: the raw log from byte N.
pub async fn logs(s: &Session, id: &str, from: u64, follow: bool) -> anyhow::Result<()> {
    if follow {
        stream::copy_output(&s.conn, id, from)
            .await
            .map_err(|e| s.explain(e))?;
    } else {
        stream::print_log(&s.conn, id, from)
            .await
            .map_err(|e| s.explain(e))?;
    }
    Ok(())
}

pub async fn signal(s: &Session, id: &str, sig: &str) -> anyhow::Result<()> {
    let r = s.conn.signal(id, sig).await.map_err(|e| s.explain(e))?;
    println!("{}", r.message);
    Ok(())
}

pub async fn rm(s: &Session, id: &str) -> anyhow::Result<()> {
    let r = s.conn.remove(id).await.map_err(|e| s.explain(e))?;
    println!("{}", r.message);
    Ok(())
}
