//! Helpers for process-tree tests: commands that escape their process group in every usual
//! way, each with a marker unique to this test process so parallel tests never see each other's.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Sleepers whose command lines carry a unique marker (`sleep 3000.<pid><tag><n>`).
pub struct Escapes {
    tag: String,
}

impl Escapes {
    pub fn new(tag: usize) -> Self {
        Self {
            tag: format!("{}{:02}", std::process::id(), tag),
        }
    }

    /// `sleep` with a unique fractional duration: the marker.
    pub fn sleeper(&self, n: usize) -> String {
        format!("sleep 3000.{}{n}", self.tag)
    }

    /// One command with the four classic escapes, then a foreground sleep:
    /// `setsid`, a double fork, `nohup … &`, and a daemonizing script (fork, setsid, fork,
    /// chdir /, close stdio).
    pub fn command(&self) -> String {
        format!(
            "setsid {s0} >/dev/null 2>&1 & \
             ( ( {s1} >/dev/null 2>&1 & ) & ) ; \
             nohup {s2} >/dev/null 2>&1 & \
             sh -c 'cd / && setsid sh -c \"{s3} & exit 0\" </dev/null >/dev/null 2>&1 & exit 0' ; \
             {s4}",
            s0 = self.sleeper(0),
            s1 = self.sleeper(1),
            s2 = self.sleeper(2),
            s3 = self.sleeper(3),
            s4 = self.sleeper(4),
        )
    }

    /// Pids and states ("pid:S") of live processes carrying our marker.
    pub fn alive(&self) -> Vec<String> {
        let marker = format!("3000.{}", self.tag);
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name();
            let Ok(pid) = name.to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            // Only the sleepers themselves, not the shells whose command text names them.
            let mut args = cmd.split(|&b| b == 0);
            let is_sleep = args.next().is_some_and(|a| a.ends_with(b"sleep"));
            if !is_sleep
                || !args
                    .next()
                    .is_some_and(|a| String::from_utf8_lossy(a).contains(&marker))
            {
                continue;
            }
            let state = proc_state(pid).unwrap_or('?');
            out.push(format!("{pid}:{state}"));
        }
        out
    }

    /// Waits (bounded) until `n` markers run.
    pub async fn wait_n(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.alive().len() < n {
            assert!(
                Instant::now() < deadline,
                "escapees never started: {:?}",
                self.alive()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// All five sleepers of [`Escapes::command`] run.
    pub async fn wait_started(&self) {
        self.wait_n(5).await;
    }

    pub async fn wait_gone(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.alive().is_empty() {
            assert!(
                Instant::now() < deadline,
                "escapees survived: {:?}",
                self.alive()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill_all(&self) {
        for p in self.alive() {
            if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                // SAFETY: signalling a process by pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The state letter of `/proc/<pid>/stat` (R, S, Z, …).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Parent pid from `/proc/<pid>/stat`.
pub fn proc_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// No zombie whose parent is `sup` (one command's supervisor, which reaps every member
/// before it reports the tree empty).
pub fn assert_no_zombies_under(sup: u32) {
    let mut zombies = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if proc_state(pid) == Some('Z') && proc_ppid(pid) == Some(sup) {
            zombies.push(pid);
        }
    }
    assert!(
        zombies.is_empty(),
        "zombies under supervisor {sup}: {zombies:?}"
    );
}

/// No zombie whose parent is `parent` or one of its descendants named `wgagent-sup`.
pub fn assert_no_zombies_of(parent: u32) {
    let mut zombies = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if proc_state(pid) != Some('Z') {
            continue;
        }
        let Some(pp) = proc_ppid(pid) else { continue };
        let comm = std::fs::read_to_string(format!("/proc/{pp}/comm")).unwrap_or_default();
        if comm.trim() == "wgagent-sup" && proc_ppid(pp) == Some(parent) {
            zombies.push(pid);
        }
    }
    assert!(zombies.is_empty(), "zombies under supervisors: {zombies:?}");
}
