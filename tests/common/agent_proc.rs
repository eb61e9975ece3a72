//! The real `wgagent agent` binary as a child process: its config in a temporary directory,
//! every stderr line kept (and echoed, for failing tests), signals, bounded waits. `Drop` kills
//! and reaps it, so a failed assertion leaves nothing running.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct AgentProc {
    pub child: Child,
    pub config: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

impl AgentProc {
    /// Writes `config_text` to `<dir>/agent.toml` (with `@DIR@` replaced by `dir`, for absolute
    /// paths such as `state_dir`) and starts the agent on it with `env` (and no `RUST_LOG`
    /// unless `env` sets one). Does not wait for it to come up.
    pub fn start(dir: &Path, config_text: &str, env: &[(&str, &str)]) -> AgentProc {
        AgentProc::start_args(dir, config_text, &[], env)
    }

    /// [`AgentProc::start`] with more arguments after `agent --config FILE`.
    pub fn start_args(
        dir: &Path,
        config_text: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> AgentProc {
        let config = dir.join("agent.toml");
        let text = config_text.replace("@DIR@", dir.to_str().unwrap());
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgagent"));
        cmd.args(["agent", "--config"])
            .arg(&config)
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("agent: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        AgentProc {
            child,
            config,
            lines,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Number of log lines so far (pass to `wait_log` to look only at what comes after).
    pub fn mark(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits (bounded) for a line after `from` that contains `needle`; returns it. Panics with
    /// the log if none comes.
    pub fn wait_log(&self, from: usize, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.lines.lock().unwrap()[from..]
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "agent never logged {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) of our own child, not yet reaped (we own the Child).
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// `None` while running.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits (bounded) for the agent to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free UDP port on loopback (for `listen_port`).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The parent pid of `pid` (from /proc), if it still exists.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// True if `ancestor` is `pid`'s parent, grandparent, ... (within 8 generations: the agent may
/// run a supervisor between itself and the shell).
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut at = pid;
    for _ in 0..8 {
        match parent_of(at) {
            Some(p) if p == ancestor => return true,
            Some(p) if p > 1 => at = p,
            _ => return false,
        }
    }
    false
}

/// True if `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}
