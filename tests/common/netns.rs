//! A network-namespace lab for root-only integration tests.
//!
//! Owns what a test creates and nothing else: namespaces named after the test process's pid,
//! veth links between them (addresses live only inside those namespaces), processes started
//! inside them with their output in log files, and `wireguard-go` UAPI sockets. `Drop` stops
//! every process (SIGTERM, bounded grace, SIGKILL) and deletes every namespace, so a failed
//! assertion leaves nothing behind. Every wait is bounded.
//!
//! Leaves to its caller: deciding whether to run at all ([`missing_prerequisites`] says why not),
//! and what to configure inside the namespaces.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Limit for one short command (`ip`, `wg`, ...).
pub const STEP: Duration = Duration::from_secs(10);

/// What a bounded command produced. `code` is `None` when it was killed (by us or a signal).
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` to completion, killing it after `limit`. Stdin is the caller's choice (inherited
/// unless set; [`Lab::command`] sets it to `/dev/null`).
pub fn run(cmd: &mut Command, limit: Duration) -> Out {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            return Out {
                code: None,
                stdout: String::new(),
                stderr: format!("spawn {cmd:?}: {e}"),
            };
        }
    };
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let result = match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: plain kill(2) of our own child, which has not been reaped yet (the waiting
            // thread still owns it), so the pid cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            rx.recv_timeout(STEP)
                .unwrap_or_else(|_| Err(std::io::Error::other("unkillable child")))
        }
    };
    match result {
        Ok(o) => Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => Out {
            code: None,
            stdout: String::new(),
            stderr: format!("{cmd:?}: {e}"),
        },
    }
}

/// Waits for a child started by the caller (stdout and stderr piped), killing it after
/// `limit`; like [`run`] for a child that is already running.
pub fn run_child(child: &mut Child, limit: Duration) -> Out {
    let deadline = Instant::now() + limit;
    let mut killed = false;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                killed = true;
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    };
    let stdout = read(child.stdout.as_mut().map(|r| r as &mut dyn std::io::Read));
    let stderr = read(child.stderr.as_mut().map(|r| r as &mut dyn std::io::Read));
    let code = if killed {
        None
    } else {
        child.try_wait().ok().flatten().and_then(|s| s.code())
    };
    Out {
        code,
        stdout,
        stderr,
    }
}

/// Polls `done` every 100 ms until it holds or `limit` passes; true when it held.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(name);
            p.metadata().is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Why a namespace test cannot run here (not root, a tool missing), or `None`.
pub fn missing_prerequisites(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need CAP_NET_ADMIN)".into());
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    if !missing.is_empty() {
        return Some(format!("missing tools: {}", missing.join(", ")));
    }
    None
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Namespaces and processes of one test; see the module docs.
pub struct Lab {
    /// Unique per test process (`<prefix><pid>`); prefixes every namespace name.
    pub tag: String,
    pub dir: tempfile::TempDir,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    uapi_sockets: Vec<PathBuf>,
}

impl Lab {
    /// `prefix` keeps the tag (and interface names built from it) within 15 characters.
    pub fn new(prefix: &str) -> Lab {
        Lab {
            tag: format!("{prefix}{}", std::process::id()),
            dir: tempfile::tempdir().expect("tempdir"),
            namespaces: Vec::new(),
            procs: Vec::new(),
            uapi_sockets: Vec::new(),
        }
    }

    /// Creates namespace `<tag><suffix>` with loopback up. Err carries `ip`'s complaint, so the
    /// caller can skip where namespaces are not permitted (e.g. an unprivileged container).
    pub fn namespace(&mut self, suffix: &str) -> Result<String, String> {
        let name = format!("{}{suffix}", self.tag);
        let out = run(
            Command::new("ip")
                .args(["netns", "add", &name])
                .stdin(Stdio::null()),
            STEP,
        );
        if !out.ok() {
            return Err(format!("ip netns add {name}: {}", out.stderr.trim()));
        }
        self.namespaces.push(name.clone());
        self.must(&name, &["ip", "link", "set", "lo", "up"]);
        Ok(name)
    }

    /// A command run inside namespace `ns` (via `ip netns exec`, which execs in place, so the
    /// child's pid is the program's pid).
    pub fn command(ns: &str, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null());
        c
    }

    /// Runs `argv` inside `ns`, bounded by `limit`.
    pub fn exec(&self, ns: &str, argv: &[&str], limit: Duration) -> Out {
        run(&mut Lab::command(ns, argv), limit)
    }

    /// Runs `argv` inside `ns` and panics (with its stderr) unless it succeeds; returns stdout.
    pub fn must(&self, ns: &str, argv: &[&str]) -> String {
        let out = self.exec(ns, argv, STEP);
        assert!(out.ok(), "in {ns}: {argv:?} failed: {out:?}");
        out.stdout
    }

    /// A veth pair from `a` (interface `a_if`, address `a_addr` with prefix) to `b`, both up.
    /// Created inside `a` and its peer moved straight into `b`: the host never sees either end.
    pub fn veth(&self, a: &str, a_if: &str, a_addr: &str, b: &str, b_if: &str, b_addr: &str) {
        self.must(
            a,
            &[
                "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
            ],
        );
        for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            self.must(ns, &["ip", "addr", "add", addr, "dev", ifname]);
            self.must(ns, &["ip", "link", "set", ifname, "up"]);
        }
    }

    /// Starts a long-running process; stdout and stderr go to `<dir>/<name>.log`.
    /// Returns its pid.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> u32 {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let pid = child.id();
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
        });
        pid
    }

    pub fn log(&self, name: &str) -> String {
        let p = self.procs.iter().find(|p| p.name == name);
        p.and_then(|p| std::fs::read_to_string(&p.log).ok())
            .unwrap_or_default()
    }

    /// `None` while `name` runs, its exit status once it has exited.
    pub fn exited(&mut self, name: &str) -> Option<ExitStatus> {
        let p = self.procs.iter_mut().find(|p| p.name == name)?;
        p.child.try_wait().ok().flatten()
    }

    /// SIGKILL now (no chance to clean up), and reap. False if it was not running.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(p) = self.procs.iter_mut().find(|p| p.name == name) else {
            return false;
        };
        if let Ok(Some(_)) = p.child.try_wait() {
            return false;
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
        true
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns how it exited.
    pub fn stop(&mut self, name: &str, grace: Duration) -> Option<ExitStatus> {
        let p = self.procs.iter_mut().find(|p| p.name == name)?;
        stop_child(&mut p.child, grace)
    }

    /// Starts `wireguard-go -f <ifname>` in `ns` and waits (bounded) for its UAPI socket, so
    /// `wg set` can configure it right after.
    pub fn wireguard_go(&mut self, ns: &str, ifname: &str) {
        let sock = Path::new("/var/run/wireguard").join(format!("{ifname}.sock"));
        self.uapi_sockets.push(sock.clone());
        let mut cmd = Lab::command(ns, &["wireguard-go", "-f", ifname]);
        // Foreground mode without the "use the kernel module" banner; verbose logs, which are
        // printed only if the test fails.
        cmd.env("WG_PROCESS_FOREGROUND", "1")
            .env("LOG_LEVEL", "verbose");
        let name = format!("wireguard-go {ifname}");
        self.spawn(&name, cmd);
        let up = wait_for(STEP, || sock.exists() || self.exited(&name).is_some());
        assert!(
            up && sock.exists(),
            "wireguard-go {ifname} did not come up: {}",
            self.log(&name)
        );
    }
}

/// Runs `f` on a new thread that first joins network namespace `ns` (`setns`), so the sockets
/// `f` creates live there (the socket keeps its namespace wherever its fd is used later).
pub fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = Path::new("/var/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: setns on this thread only, with an fd we own for the duration of the call.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Resident set size of process `pid` in bytes (`VmRSS` of /proc/<pid>/status), 0 if gone.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // SAFETY: kill(2) of our own unreaped child (try_wait just saw it running).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    // After SIGKILL, wait returns promptly.
    child.wait().ok()
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for p in self.procs.iter_mut().rev() {
            stop_child(&mut p.child, Duration::from_secs(3));
            if failing {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(80).collect();
                eprintln!("---- last lines of {} ----", p.name);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        for ns in self.namespaces.iter().rev() {
            let out = run(
                Command::new("ip")
                    .args(["netns", "del", ns])
                    .stdin(Stdio::null()),
                STEP,
            );
            if !out.ok() {
                eprintln!("cleanup: ip netns del {ns}: {}", out.stderr.trim());
            }
        }
        for sock in &self.uapi_sockets {
            let _ = std::fs::remove_file(sock);
        }
    }
}
