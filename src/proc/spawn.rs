//! Spawning one command as `sh -c <command>` in its own session and process group.
//!
//! Owns: the fork/exec details (new session, default signal dispositions, nice and OOM score set
//! in the child before `exec`, stdin `/dev/null`, stdout+stderr merged into one pipe).
//! Leaves to the caller: reading the pipe, reaping the child, signalling the group.
//!
//! The child cannot log, so it reports failures of the nice/OOM adjustments back through a
//! close-on-exec pipe; the agent logs them. Nothing is ever written into the process's output.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use tokio::net::unix::pipe;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Priority adjustments applied in the child before `exec`.
#[derive(Debug, Clone, Copy)]
pub struct Priority {
    /// Absolute nice value for the child (already capped at 19), or `None` to leave it.
    pub nice: Option<i32>,
    /// Value written to `/proc/self/oom_score_adj`, or `None` to leave it.
    pub oom_score_adj: Option<i32>,
}

impl Priority {
    /// Children run at the agent's nice + `increment` (max 19) with the given OOM score, so
    /// that under memory pressure the kernel kills a child rather than the agent.
    pub fn relative_to_agent(increment: i32, oom_score_adj: Option<i32>) -> Self {
        // getpriority can legitimately return -1, so errno must be cleared and checked.
        // SAFETY: plain libc calls with no pointers; errno is thread-local.
        let current = unsafe {
            *libc::__errno_location() = 0;
            let p = libc::getpriority(libc::PRIO_PROCESS, 0);
            if p == -1 && *libc::__errno_location() != 0 {
                0
            } else {
                p
            }
        };
        let nice = (increment != 0).then(|| (current + increment).clamp(-20, 19));
        Self {
            nice,
            oom_score_adj,
        }
    }
}

/// A spawned child: the process handle and the read end of its merged output pipe.
pub struct Spawned {
    pub child: Waiter,
    pub pid: u32,
    pub output: pipe::Receiver,
    /// Failures of the priority adjustments, for the agent's log.
    pub adjust_errors: Vec<String>,
}

/// Starts `sh -c command` in `workdir` with the agent's environment plus `env` (request wins).
pub fn spawn(
    command: &str,
    workdir: &Path,
    env: &BTreeMap<String, String>,
    priority: Priority,
) -> io::Result<Spawned> {
    let (out_read, out_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let (report_read, report_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let stderr: OwnedFd = out_write.try_clone()?;

    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(workdir)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(out_write)
        .stderr(stderr);

    // Everything the closure needs is prepared here: after fork only async-signal-safe calls.
    let oom_text: Option<Vec<u8>> = priority
        .oom_score_adj
        .map(|v| format!("{v}\n").into_bytes());
    let nice = priority.nice;
    let report_fd = report_write.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (setsid, sigaction via signal, sigprocmask, setpriority, open, write, close).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            // Default dispositions and an empty mask whatever the agent inherited, so an agent
            // started with SIGINT ignored can still interrupt its children.
            for sig in 1..libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

            let mut report = [0i32; 2];
            if let Some(n) = nice
                && libc::setpriority(libc::PRIO_PROCESS, 0, n) == -1
            {
                report[0] = *libc::__errno_location();
            }
            if let Some(text) = &oom_text {
                let fd = libc::open(
                    c"/proc/self/oom_score_adj".as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC,
                );
                if fd < 0 {
                    report[1] = *libc::__errno_location();
                } else {
                    if libc::write(fd, text.as_ptr().cast(), text.len()) < 0 {
                        report[1] = *libc::__errno_location();
                    }
                    libc::close(fd);
                }
            }
            if report != [0, 0] {
                libc::write(
                    report_fd,
                    report.as_ptr().cast(),
                    std::mem::size_of_val(&report),
                );
            }
            Ok(())
        });
    }

    let spawn_result = cmd.spawn();
    // Our copies of the write ends must be closed, or EOF never arrives. The Command holds the
    // output write ends; dropping it closes them.
    drop(cmd);
    drop(report_write);
    let child = spawn_result?;
    let pid = child.id();

    let adjust_errors = read_report(report_read, priority);
    let output = pipe::Receiver::from_owned_fd(out_read)?;
    Ok(Spawned {
        child: Waiter::new(child)?,
        pid,
        output,
        adjust_errors,
    })
}

/// Waits for a child's exit without tokio's SIGCHLD machinery: the kernel signals a pidfd
/// readable when the process exits, which wakes the I/O driver directly (measured: tokio's
/// `Child::wait` added ~0.25 ms to every start → exit). Kernels without `pidfd_open` (< 5.3)
/// fall back to a blocking `waitpid` on the blocking pool.
pub struct Waiter {
    child: Child,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl Waiter {
    fn new(child: Child) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        let pidfd = if fd >= 0 {
            // SAFETY: the syscall just returned this fd, and nothing else owns it.
            let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
            // SAFETY: the OwnedFd is valid and stays owned (never replaced or closed) by the
            // AsyncFd until it is dropped.
            Some(unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE)? })
        } else {
            None
        };
        Ok(Self { child, pidfd })
    }

    /// Reaps the child once it exits. Cancel-safe: dropping the future and calling again works.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(pidfd) = &self.pidfd else {
            let pid = self.child.id();
            return blocking_wait(pid).await;
        };
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            pidfd.readable().await?.clear_ready();
        }
    }
}

/// `waitpid` on the blocking pool, for kernels without pidfds.
async fn blocking_wait(pid: u32) -> io::Result<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    tokio::task::spawn_blocking(move || {
        let mut status = 0;
        loop {
            // SAFETY: waitpid with a valid pointer to a local int.
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
            if r >= 0 {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    })
    .await
    .map_err(io::Error::other)?
}

/// Reads what the child reported before `exec`. `spawn` returns only after `exec` succeeded, so
/// the write end is already closed in the child and this never blocks.
fn read_report(fd: OwnedFd, priority: Priority) -> Vec<String> {
    let mut buf = [0u8; 8];
    let mut file = std::fs::File::from(fd);
    let n = file.read(&mut buf).unwrap_or(0);
    if n < buf.len() {
        return Vec::new();
    }
    let nice_errno = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let oom_errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let mut errors = Vec::new();
    if nice_errno != 0 {
        errors.push(format!(
            "setting nice {} failed: {}",
            priority.nice.unwrap_or_default(),
            io::Error::from_raw_os_error(nice_errno)
        ));
    }
    if oom_errno != 0 {
        errors.push(format!(
            "setting oom_score_adj {} failed: {}",
            priority.oom_score_adj.unwrap_or_default(),
            io::Error::from_raw_os_error(oom_errno)
        ));
    }
    errors
}

/// Sends `signal` to the whole process group led by `pgid`.
pub fn signal_group(pgid: u32, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    let pgid = i32::try_from(pgid).map_err(|_| nix::errno::Errno::EINVAL)?;
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal)
}

/// True while any process of the group `pgid` is alive (zombies included).
pub fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}
