//! `[api]` (agent role): the process API's port, callers, process and log bounds, timeouts.

use std::path::PathBuf;
use std::time::Duration;

use ip_network::IpNetwork;

/// `[api]` (agent role only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// `port`: TCP port of the process API on the tunnel addresses.
    pub port: u16,
    /// `allowed_sources`: if set, callers' tunnel addresses must be inside one of these, on top
    /// of WireGuard's own allowed-IPs check. `None` = every configured peer may call.
    pub allowed_sources: Option<Vec<IpNetwork>>,
    /// `max_running`: concurrently running processes; further starts get 429.
    pub max_running: usize,
    /// `max_tracked`: process records kept (running + exited); oldest exited evicted first.
    pub max_tracked: usize,
    /// `default_workdir`: working directory when a request names none; `None` = `$HOME`.
    pub default_workdir: Option<PathBuf>,
    /// `nice_increment`: added to the agent's nice value for children (capped at 19).
    pub nice_increment: u8,
    /// `oom_score_adj`: children's OOM score, so the OOM killer picks them, not the agent.
    pub oom_score_adj: i16,
    /// `kill_grace`: after SIGTERM (timeout), wait this long before SIGKILL.
    pub kill_grace: Duration,
    /// `shutdown_grace`: on agent shutdown, time for children to exit before SIGKILL.
    pub shutdown_grace: Duration,
    /// `tree_tracking`: a supervisor per process owns its whole descendant tree, so kills,
    /// timeouts, shutdown and the agent's own death reach members that left the process group.
    pub tree_tracking: bool,
    /// `state_dir`: where process logs and records of exited processes live (they survive a
    /// restart). `None` = [`Api::default_state_dir`].
    pub state_dir: Option<PathBuf>,
    /// `log_max_bytes`: log bytes kept per process (the newest).
    pub log_max_bytes: u64,
    /// `state_max_bytes`: log bytes kept in all; oldest exited processes' logs go first.
    pub state_max_bytes: u64,
    /// `header_timeout`: a request's line and headers must arrive within this (from the first
    /// byte, or from the connection's start); otherwise the connection is reset.
    pub header_timeout: Duration,
    /// `body_timeout`: longest pause while a request body arrives, and the grace period of
    /// `body_min_rate`; a slower body is answered 408 and the connection closed.
    pub body_timeout: Duration,
    /// `body_min_rate`: bytes per second a request body must average after `body_timeout`.
    pub body_min_rate: u64,
    /// `idle_timeout`: a keep-alive connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// `send_timeout`: a response the client does not read for this long closes the connection.
    pub send_timeout: Duration,
    /// `default_limits`: per-command limits of commands that ask for none (inline table of
    /// `memory_bytes`, `cpu_seconds`, `open_files`, `file_size_bytes`, `processes`).
    pub default_limits: crate::proc::Limits,
    /// `max_limits`: ceilings; a start asking for more is refused (400), and a command that
    /// asks for nothing and has no default gets the ceiling.
    pub max_limits: crate::proc::Limits,
    /// `cgroups`: use a delegated cgroup v2 subtree for per-command groups when one is found
    /// (the agent moves itself into a leaf group `agent` of its own cgroup).
    pub cgroups: bool,
    /// `isolation`: `"none"` (every peer sees every process) or `"peer"` (a peer sees and acts
    /// on only the processes it started; other ids answer 404).
    pub isolation: crate::trust::Isolation,
}

impl Api {
    /// Default `port`: 4 (the control side's `api_port` defaults to it too).
    pub const DEFAULT_PORT: u16 = 4;

    /// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; the first if several), else
    /// `$HOME/.local/state/wgagent`, else `/var/lib/wgagent`.
    pub fn default_state_dir() -> PathBuf {
        if let Some(dirs) = std::env::var_os("STATE_DIRECTORY")
            && let Some(first) = std::env::split_paths(&dirs).next()
            && !first.as_os_str().is_empty()
        {
            return first;
        }
        match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/state/wgagent"),
            _ => PathBuf::from("/var/lib/wgagent"),
        }
    }

    /// The configured state directory or the default one.
    pub fn state_dir_or_default(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(Self::default_state_dir)
    }
}

impl Default for Api {
    /// Defaults: `port` 4, `allowed_sources` unset (all peers), `max_running` 64,
    /// `max_tracked` 1024, `default_workdir` unset (`$HOME`), `nice_increment` 5,
    /// `oom_score_adj` 998, `kill_grace` 5 s, `shutdown_grace` 5 s, `tree_tracking` on,
    /// `state_dir` unset (the default directory), `log_max_bytes` 64 MiB, `state_max_bytes`
    /// 1 GiB, `header_timeout` 10 s, `body_timeout` 10 s, `body_min_rate` 4096 B/s,
    /// `idle_timeout` 75 s (above the SDK's 60 s pool idle time, so clients close idle
    /// connections first), `send_timeout` 60 s, no `default_limits` or `max_limits`, `cgroups`
    /// on (used only where delegated), `isolation` "none".
    fn default() -> Self {
        // The process limits are the manager's own defaults (one source); `cgroups` differs on
        // purpose: the manager leaves it off for in-process use, the agent turns it on.
        let m = crate::proc::ManagerConfig::default();
        Api {
            port: Api::DEFAULT_PORT,
            allowed_sources: None,
            max_running: m.max_running,
            max_tracked: m.max_tracked,
            default_workdir: None,
            nice_increment: crate::proc::manager::DEFAULT_NICE_INCREMENT,
            oom_score_adj: crate::proc::manager::DEFAULT_OOM_SCORE_ADJ,
            kill_grace: m.kill_grace,
            shutdown_grace: Duration::from_secs(5),
            tree_tracking: m.tree_tracking,
            state_dir: None,
            log_max_bytes: m.log_max_bytes,
            state_max_bytes: m.state_max_bytes,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 4096,
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            default_limits: crate::proc::Limits::default(),
            max_limits: crate::proc::Limits::default(),
            cgroups: true,
            isolation: crate::trust::Isolation::None,
        }
    }
}
