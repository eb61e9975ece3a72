//! The small sections: `[log]`, `[metrics]`, `[control]`, `[files]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Api;

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// `level`: a tracing filter (`"info"`, `"warn,wgagent::wg=debug"`). `RUST_LOG`, when set,
    /// overrides it. Applied again on reload.
    pub level: String,
    /// `format`: `"text"` (one human line per event) or `"json"` (one JSON object per line,
    /// with the span fields); `--log-format` overrides it. Read at start only.
    pub format: LogFormat,
}

/// `[metrics]` (both roles). The agent always serves `GET /metrics` on its tunnel API; this
/// section only adds a host listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// `listen`: a host TCP address (`"127.0.0.1:9586"`) that serves **only** `GET /metrics`,
    /// for a Prometheus on the host. Default: none (no host TCP socket at all). Read at start.
    pub listen: Option<SocketAddr>,
}

/// How log lines are written (`[log] format`, `--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal; no timestamp under journald, which
    /// adds its own).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, the event's fields, the spans.
    Json,
}

impl LogFormat {
    /// `"text"` or `"json"`.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

impl Default for Log {
    /// Default `level`: `info`; `format`: `text`.
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[control]` (control role only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// `connect_timeout`: WireGuard handshake plus TCP connect, per attempt.
    pub connect_timeout: Duration,
    /// `request_timeout`: one API request (server-side waits extend it by their own wait).
    pub request_timeout: Duration,
    /// `api_port`: the agents' API port, used when an agent is named by peer name or by a bare
    /// tunnel address.
    pub api_port: u16,
    /// `socket`: the control daemon's Unix socket (`wgagent control`); also where the CLI looks
    /// for it. `None` = `$WGAGENT_SOCKET`, else `/run/wgagent/control.sock` as root, else
    /// `$XDG_RUNTIME_DIR/wgagent/control.sock`. A relative path is relative to the config file.
    pub socket: Option<PathBuf>,
    /// `socket_group`: a group (name or gid) whose members may use the socket (mode 0660).
    /// `None` = only the daemon's user (mode 0600). Access to the socket equals access to every
    /// agent.
    pub socket_group: Option<String>,
    /// `max_connections`: local connections the daemon serves at once; more wait until one
    /// closes.
    pub max_connections: usize,
    /// `state_dir`: where the daemon saves the endpoints agents reached it from, so that after
    /// a restart it reaches agents behind NAT at once instead of waiting minutes for their next
    /// handshake. `None` = nothing is saved. Relative to the config file.
    pub state_dir: Option<PathBuf>,
}

impl Control {
    /// Allowed `max_connections`: each connection may hold one tunnel connection, and the
    /// daemon's netstack has 1024 sockets (pooled idle ones included).
    pub const MAX_CONNECTIONS_RANGE: (usize, usize) = (1, 512);
}

impl Default for Control {
    /// Defaults: `connect_timeout` 10 s, `request_timeout` 30 s, `api_port` 4 (the agents'
    /// default `[api] port`), `socket` unset (see [`Control::socket`]), `socket_group` unset,
    /// `max_connections` 256, `state_dir` unset.
    fn default() -> Self {
        // The timeouts are the SDK's own defaults (one source).
        let sdk = crate::client::AgentOptions::default();
        Control {
            connect_timeout: sdk.connect_timeout,
            request_timeout: sdk.request_timeout,
            api_port: Api::DEFAULT_PORT,
            socket: None,
            socket_group: None,
            max_connections: 256,
            state_dir: None,
        }
    }
}

/// `[files]` (agent role only): bounds of the workspace file routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Files {
    /// `max_write_bytes`: largest write-file body and edit-files request; also the largest file
    /// an edit or a line read loads into memory.
    pub max_write_bytes: u64,
    /// `max_edit_files`: files per edit-files request.
    pub max_edit_files: usize,
    /// `fsync`: flush a written file to disk before it replaces the old one.
    pub fsync: bool,
}

impl Default for Files {
    /// Defaults: `max_write_bytes` 16 MiB, `max_edit_files` 32, `fsync` true.
    fn default() -> Self {
        let d = crate::files::Limits::default();
        Files {
            max_write_bytes: d.max_write_bytes,
            max_edit_files: d.max_edit_files,
            fsync: d.fsync,
        }
    }
}

impl From<Files> for crate::files::Limits {
    fn from(f: Files) -> Self {
        Self {
            max_write_bytes: f.max_write_bytes,
            max_edit_files: f.max_edit_files,
            fsync: f.fsync,
        }
    }
}
