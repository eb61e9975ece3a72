//! Spawning one command as `sh -c <command>` in its own session and process group, without
//! `fork`: a `clone(CLONE_VM | CLONE_VFORK)` child on its own small stack (what `posix_spawn`
//! does), so the cost does not grow with the agent's memory.
//!
//! Owns: the prepared command (argv, the merged environment, workdir, priority, the signals to
//! reset, rlimits, the user's credentials, the cgroup to join), the child's steps between clone
//! and `exec` (new session, controlling terminal for a pty, stdio, nice, OOM score, cgroup,
//! rlimits, then groups/gid/uid, workdir as that user, default dispositions, empty signal mask),
//! and reporting their failures back. Leaves to the caller: the pipes or pty, reaping,
//! signalling, looking the user up (`user`, before the clone) and whether a supervisor sits in
//! between (`supervisor`).
//!
//! The child shares the parent's memory until `exec`, so it only makes raw system calls on
//! data prepared beforehand, and writes its errors into a report the parent reads once the
//! clone returns (the parent is suspended until then). All signals are blocked around the
//! clone so that no handler of the agent (tokio's) can run in the child.
//!
//! Credentials are changed with the raw `setgroups`/`setgid`/`setuid` system calls, never the
//! libc wrappers: glibc applies those to every thread of the process (it signals each one), and
//! in a `CLONE_VM` child "every thread" is the agent's. The kernel's calls change only the
//! calling task, which here is the child alone. Order matters: the cgroup and the rlimits are
//! set while still privileged (joining a cgroup needs write access to it; raising nothing is
//! needed, but setting them as the user could fail), the supplementary groups and the gid
//! before the uid (afterwards there is no privilege left to change them), and the working
//! directory is entered as the user, so its permissions are the user's.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::limits::{Limits, Rlimits};
use super::user::User;

mod wire;

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

/// Facts about the agent gathered once (at `Manager::new`), not per spawn.
#[derive(Debug, Clone)]
pub struct Host {
    /// Absolute path of `sh`, found on the agent's `PATH` (else `/bin/sh`).
    pub sh: PathBuf,
    /// Signals the agent ignores (inherited `SIG_IGN`, e.g. under `nohup`, and Rust's SIGPIPE).
    /// Caught signals are reset by `exec` itself; ignored ones would survive it.
    pub ignored: Vec<i32>,
}

impl Host {
    /// Looks at the agent's `PATH` and signal dispositions now; call once at start, before
    /// anything changes them.
    pub fn probe() -> Self {
        let sh = std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("sh"))
                    .find(|c| c.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        let mut ignored = Vec::new();
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // SAFETY: a query (null new action) into a zeroed, valid sigaction.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
            if r == 0 && old.sa_sigaction == libc::SIG_IGN {
                ignored.push(sig);
            }
        }
        if !ignored.contains(&libc::SIGPIPE) {
            ignored.push(libc::SIGPIPE);
        }
        Self { sh, ignored }
    }
}

/// What to spawn, before it is turned into C strings.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// Run as `sh -c command`.
    pub command: &'a str,
    /// The directory to `chdir` to (resolved by the manager).
    pub workdir: &'a Path,
    /// Over the agent's environment (and `defaults`): the request wins.
    pub env: &'a BTreeMap<String, String>,
    /// Over the agent's environment, under `env` (e.g. a pty's `TERM`).
    pub defaults: &'a [(&'a str, &'a str)],
    /// Nice value and OOM score applied in the child before `exec`.
    pub priority: Priority,
    /// Rlimits set in the child before `exec`.
    pub limits: Limits,
    /// Switch to this user (groups, gid, uid) before `exec`; `None` keeps the agent's. Its
    /// `HOME`, `USER`, `LOGNAME` and `SHELL` go under `defaults`, and the agent's private
    /// variables (systemd's notification socket, credentials) are not passed on.
    pub user: Option<&'a User>,
    /// A `cgroup.procs` file the child writes itself into (while still privileged).
    pub cgroup_procs: Option<&'a Path>,
}

/// A command ready to be spawned: every string already a C string, every pointer array built.
/// Raw pointers make it `!Send`: it lives inside one `start` call.
pub struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    workdir: CString,
    nice: i32,
    has_nice: bool,
    oom_text: [u8; 16],
    oom_len: usize,
    ignored: Vec<i32>,
    rlimits: Rlimits,
    /// (uid, gid, supplementary groups) to switch to.
    creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    cgroup_procs: Option<CString>,
}

impl Prepared {
    /// Builds every C string and pointer array the child will use.
    pub fn new(host: &Host, cmd: &Command<'_>) -> io::Result<Self> {
        let cstr =
            |b: &[u8]| CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        let mut merged: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        // The agent's own line to systemd: a command must not report READY or feed the
        // watchdog on the agent's behalf.
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            merged.remove(std::ffi::OsStr::new(k));
        }
        if let Some(user) = cmd.user {
            merged.retain(|k, _| !k.to_str().is_some_and(User::is_agent_private_env));
            for (k, v) in user.identity_env() {
                merged.insert(OsString::from(k), OsString::from(v));
            }
        }
        for (k, v) in cmd.defaults {
            merged.insert(OsString::from(k), OsString::from(v));
        }
        for (k, v) in cmd.env {
            merged.insert(OsString::from(k), OsString::from(v));
        }
        let mut envp = Vec::with_capacity(merged.len());
        for (k, v) in &merged {
            let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstr(&kv)?);
        }
        let argv = vec![cstr(b"sh")?, cstr(b"-c")?, cstr(cmd.command.as_bytes())?];
        let mut oom_text = [0u8; 16];
        let mut oom_len = 0;
        if let Some(v) = cmd.priority.oom_score_adj {
            let s = format!("{v}\n");
            oom_len = s.len().min(oom_text.len());
            oom_text[..oom_len].copy_from_slice(&s.as_bytes()[..oom_len]);
        }
        let cgroup_procs = match cmd.cgroup_procs {
            Some(p) => Some(cstr(p.as_os_str().as_bytes())?),
            None => None,
        };
        Ok(Self {
            path: cstr(host.sh.as_os_str().as_bytes())?,
            argv_ptrs: null_terminated(&argv),
            _argv: argv,
            envp_ptrs: null_terminated(&envp),
            _envp: envp,
            workdir: cstr(cmd.workdir.as_os_str().as_bytes())?,
            nice: cmd.priority.nice.unwrap_or(0),
            has_nice: cmd.priority.nice.is_some(),
            oom_text,
            oom_len,
            ignored: host.ignored.clone(),
            rlimits: cmd.limits.rlimits(),
            creds: cmd.user.map(|u| (u.uid, u.gid, u.groups.clone())),
            cgroup_procs,
        })
    }
}

/// Pointers to `strings` followed by a null pointer (an `execve` argument vector). The pointers
/// stay valid while the strings live, even when the `Vec` holding them moves.
pub(crate) fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    let mut ptrs: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    ptrs
}

/// The child's standard streams. All fds are the parent's and stay open in the parent.
#[derive(Debug, Clone, Copy)]
pub struct Stdio {
    /// Becomes the child's fd 0.
    pub stdin: RawFd,
    /// Becomes the child's fd 1.
    pub stdout: RawFd,
    /// Becomes the child's fd 2 (the same pipe as `stdout` for merged output).
    pub stderr: RawFd,
    /// `stdin` is a pty slave to become the controlling terminal of the new session.
    pub tty: bool,
}

/// Where the child failed, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Stage {
    /// `setsid`.
    Session = 1,
    /// Making the pty the controlling terminal (`TIOCSCTTY`).
    Terminal = 2,
    /// `dup2` of the standard streams.
    Stdio = 3,
    /// `chdir` to the working directory.
    Workdir = 4,
    /// `execve` of `sh`.
    Exec = 5,
    /// `clone` itself (in the parent), and any code the child does not know.
    Clone = 6,
    /// Moving itself into the command's cgroup (`cgroup.procs`).
    Cgroup = 7,
    /// `setrlimit`.
    Limits = 8,
    /// `setgroups`/`setgid`/`setuid`.
    User = 9,
    /// Executing the process supervisor (`supexec`), or the supervisor reading its command.
    Supervisor = 10,
}

impl Stage {
    /// The stage a child reported by number; unknown numbers become [`Stage::Clone`].
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => Self::Session,
            2 => Self::Terminal,
            3 => Self::Stdio,
            4 => Self::Workdir,
            5 => Self::Exec,
            7 => Self::Cgroup,
            8 => Self::Limits,
            9 => Self::User,
            10 => Self::Supervisor,
            _ => Self::Clone,
        }
    }

    /// What the child was doing, for the error message (`"<stage>: <OS error>"`).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Session => "creating a session",
            Self::Terminal => "taking the terminal",
            Self::Stdio => "setting up stdin/stdout",
            Self::Workdir => "entering the working directory",
            Self::Exec => "executing sh",
            Self::Clone => "creating the process",
            Self::Cgroup => "joining the command's cgroup",
            Self::Limits => "setting resource limits",
            Self::User => "switching to the user",
            Self::Supervisor => "starting the process supervisor",
        }
    }
}

/// What the child reported. `stage`/`errno` are non-zero when it failed (and exited 127).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Report {
    /// The [`Stage`] number that failed; 0 when `exec` was reached.
    pub stage: i32,
    /// The OS error of that stage; 0 when `exec` was reached.
    pub errno: i32,
    /// Setting the nice value failed with this errno (non-fatal; 0: fine).
    pub nice_errno: i32,
    /// Writing `oom_score_adj` failed with this errno (non-fatal; 0: fine).
    pub oom_errno: i32,
}

impl Report {
    /// The nice/OOM failures, worded for the agent's log.
    pub fn adjust_errors(&self, priority: Priority) -> Vec<String> {
        let mut errors = Vec::new();
        if self.nice_errno != 0 {
            errors.push(format!(
                "setting nice {} failed: {}",
                priority.nice.unwrap_or_default(),
                io::Error::from_raw_os_error(self.nice_errno)
            ));
        }
        if self.oom_errno != 0 {
            errors.push(format!(
                "setting oom_score_adj {} failed: {}",
                priority.oom_score_adj.unwrap_or_default(),
                io::Error::from_raw_os_error(self.oom_errno)
            ));
        }
        errors
    }

    /// The failure as an `io::Error` carrying a [`SpawnFailure`] (the manager tells a working
    /// directory the user cannot enter, the caller's mistake, from an OS failure).
    pub fn into_error(self) -> io::Error {
        let failure = SpawnFailure {
            stage: Stage::from_i32(self.stage),
            errno: self.errno,
        };
        io::Error::new(failure.os_error().kind(), failure)
    }
}

/// Where and why the child failed before `exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnFailure {
    /// The step that failed.
    pub stage: Stage,
    /// Its OS error number.
    pub errno: i32,
}

impl SpawnFailure {
    /// The OS error, for its kind and message.
    pub fn os_error(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }

    /// The failure inside `e`, if `e` came from [`Report::into_error`].
    pub fn of(e: &io::Error) -> Option<SpawnFailure> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<SpawnFailure>())
            .copied()
    }
}

impl std::fmt::Display for SpawnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage.describe(), self.os_error())
    }
}

impl std::error::Error for SpawnFailure {}

/// A small stack for clone children, with a guard page below it. Reused across spawns.
pub struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value.
unsafe impl Send for Stack {}

const STACK_LEN: usize = 64 * 1024;
const PAGE: usize = 4096;

impl Stack {
    /// Maps a 64 KiB stack plus a guard page; fails only if `mmap` does.
    pub fn new() -> io::Result<Self> {
        let len = STACK_LEN + PAGE;
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the lowest page of our own mapping becomes the guard.
        unsafe { libc::mprotect(base, PAGE, libc::PROT_NONE) };
        Ok(Self { base, len })
    }

    fn top(&mut self) -> *mut libc::c_void {
        // SAFETY: one past the end of our mapping, 16-byte aligned (page aligned).
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping we created.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Clones and execs the command. Returns the child's pid and its report; on failure the child
/// has already been reaped. Async-signal-safe apart from the caller's allocations: the
/// supervisor calls it in a forked child.
pub fn spawn(cmd: &Prepared, stdio: Stdio, stack: &mut Stack) -> Result<(i32, Report), Report> {
    let mut report = Report::default();
    // SAFETY: `child_steps` only makes raw system calls on `cmd` and `report`, which outlive
    // the call.
    let r = unsafe { clone_vfork(stack, &mut || child_steps(cmd, stdio, &mut report)) };
    // SAFETY: the child has exec'd or exited; nobody writes the report any more.
    let report = unsafe { std::ptr::read_volatile(&raw const report) };
    match r {
        Ok(pid) => Ok((pid, report)),
        Err((stage, errno)) => Err(Report {
            stage: stage as i32,
            errno,
            ..report
        }),
    }
}

/// What a `clone_vfork` child runs: raw system calls only, ending in `exec`; it returns only
/// on failure, with the stage and errno to report.
pub(crate) type ChildFn<'a> = dyn FnMut() -> (Stage, i32) + 'a;

struct Trampoline<'a, 'b> {
    f: &'a mut ChildFn<'b>,
    /// (stage, errno) of a child that returned instead of exec'ing.
    failed: (i32, i32),
}

/// Runs `f` in a `clone(CLONE_VM | CLONE_VFORK)` child on `stack` (what `posix_spawn` does: no
/// page tables copied, so the cost does not grow with our memory) and returns the child's pid
/// once it has exec'd. When `f` returns (a failure), the child exits and is reaped, and its
/// (stage, errno) is the error; a failed clone is `(Stage::Clone, errno)`.
///
/// The child inherits an all-blocked signal mask (restored here in the parent), so no handler
/// of ours runs on its stack; `exec` keeps that mask, so `f` must set the mask the new program
/// should start with.
///
/// # Safety
/// `f` runs on `stack` in our memory while we are suspended: it may only make raw system calls
/// on memory that outlives this call (no allocation, no locks, no panics, and no libc wrapper
/// that acts on every thread, such as `setuid`).
pub(crate) unsafe fn clone_vfork(
    stack: &mut Stack,
    f: &mut ChildFn<'_>,
) -> Result<i32, (Stage, i32)> {
    let mut t = Trampoline { f, failed: (0, 0) };
    // SAFETY: all-blocked mask around the clone (restored below), so no signal handler runs on
    // the child's stack; `trampoline` only runs `f`, which makes raw system calls on memory
    // that outlives the clone because CLONE_VFORK suspends us until the child execs or exits.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            trampoline,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut t).cast(),
        );
        let errno = *libc::__errno_location();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid == -1 {
            return Err((Stage::Clone, errno));
        }
        pid
    };
    // SAFETY: the child has exec'd or exited; nobody writes `failed` any more.
    let (stage, errno) = unsafe { std::ptr::read_volatile(&raw const t.failed) };
    if errno != 0 {
        let mut status = 0;
        // SAFETY: reaping our own child that already exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err((Stage::from_i32(stage), errno));
    }
    Ok(pid)
}

extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Trampoline` of `clone_vfork`, alive while the parent is suspended.
    unsafe {
        let t = &mut *arg.cast::<Trampoline<'_, '_>>();
        let (stage, errno) = (t.f)();
        std::ptr::write_volatile(&raw mut t.failed, (stage as i32, errno.max(1)));
        libc::_exit(127)
    }
}

/// The steps between clone and exec; returns only on failure.
unsafe fn child_steps(cmd: &Prepared, stdio: Stdio, report: &mut Report) -> (Stage, i32) {
    let errno = || unsafe { *libc::__errno_location() };
    unsafe {
        // Ignored signals survive exec; caught ones are reset by exec itself.
        for &sig in &cmd.ignored {
            libc::signal(sig, libc::SIG_DFL);
        }
        if libc::setsid() == -1 {
            return (Stage::Session, errno());
        }
        if stdio.tty && libc::ioctl(stdio.stdin, libc::TIOCSCTTY, 0) == -1 {
            return (Stage::Terminal, errno());
        }
        for (src, dst) in [(stdio.stdin, 0), (stdio.stdout, 1), (stdio.stderr, 2)] {
            let r = if src == dst {
                // dup2 onto itself keeps close-on-exec; clear it instead.
                libc::fcntl(src, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, dst)
            };
            if r == -1 {
                return (Stage::Stdio, errno());
            }
        }
        if cmd.has_nice && libc::setpriority(libc::PRIO_PROCESS, 0, cmd.nice) == -1 {
            std::ptr::write_volatile(&raw mut report.nice_errno, errno());
        }
        if cmd.oom_len > 0 {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                std::ptr::write_volatile(&raw mut report.oom_errno, errno());
            } else {
                if libc::write(fd, cmd.oom_text.as_ptr().cast(), cmd.oom_len) < 0 {
                    std::ptr::write_volatile(&raw mut report.oom_errno, errno());
                }
                libc::close(fd);
            }
        }
        if let Some(procs) = &cmd.cgroup_procs {
            // "0" moves the writer itself.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return (Stage::Cgroup, errno());
            }
            let r = libc::write(fd, c"0".as_ptr().cast(), 1);
            let e = errno();
            libc::close(fd);
            if r < 0 {
                return (Stage::Cgroup, e);
            }
        }
        for &(resource, soft, hard) in cmd.rlimits.items.iter().take(cmd.rlimits.len) {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(resource, &lim) == -1 {
                return (Stage::Limits, errno());
            }
        }
        if let Some((uid, gid, groups)) = &cmd.creds {
            // Raw system calls: the libc wrappers would change every thread of the agent.
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == -1
                || libc::syscall(libc::SYS_setgid, *gid) == -1
                || libc::syscall(libc::SYS_setuid, *uid) == -1
            {
                return (Stage::User, errno());
            }
        }
        if libc::chdir(cmd.workdir.as_ptr()) == -1 {
            return (Stage::Workdir, errno());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(
            cmd.path.as_ptr(),
            cmd.argv_ptrs.as_ptr(),
            cmd.envp_ptrs.as_ptr(),
        );
        (Stage::Exec, errno())
    }
}

/// A close-on-exec pipe whose ends are both above the standard streams (an agent started with
/// a closed stdin must not hand a pipe end out as fd 0).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `fd`, moved to a number ≥ 3 if it is a standard stream's number.
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we then own; the old one is closed on drop.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `/dev/null`, read-only, close-on-exec, above the standard streams.
pub fn dev_null() -> io::Result<OwnedFd> {
    let f = std::fs::File::open("/dev/null")?;
    above_stdio(f.into())
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits for a child's exit without tokio's SIGCHLD machinery: the kernel signals a pidfd
/// readable when the process exits, which wakes the I/O driver directly (measured: tokio's
/// `Child::wait` added ~0.25 ms to every start → exit). Kernels without `pidfd_open` (< 5.3)
/// fall back to a blocking `waitpid` on the blocking pool.
pub struct Waiter {
    pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl Waiter {
    /// `pid` must be a child of this process that nobody else reaps.
    pub fn new(pid: i32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = if fd >= 0 {
            // SAFETY: the syscall just returned this fd, and nothing else owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            // SAFETY: the OwnedFd is valid and stays owned (never replaced or closed) by the
            // AsyncFd until it is dropped.
            Some(unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE)? })
        } else {
            None
        };
        Ok(Self {
            pid,
            pidfd,
            status: None,
        })
    }

    /// The child being waited for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Reaps the child once it exits. Cancel-safe: dropping the future and calling again works.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        let Some(pidfd) = &self.pidfd else {
            let st = blocking_wait(self.pid).await?;
            self.status = Some(st);
            return Ok(st);
        };
        loop {
            if let Some(st) = try_wait(self.pid)? {
                self.status = Some(st);
                return Ok(st);
            }
            pidfd.readable().await?.clear_ready();
        }
    }
}

fn try_wait(pid: i32) -> io::Result<Option<ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer to a local int.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match r {
        0 => Ok(None),
        r if r > 0 => Ok(Some(ExitStatus::from_raw(status))),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `waitpid` on the blocking pool, for kernels without pidfds.
async fn blocking_wait(pid: i32) -> io::Result<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    tokio::task::spawn_blocking(move || {
        let mut status = 0;
        loop {
            // SAFETY: waitpid with a valid pointer to a local int.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
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

/// Sends `signal` to the whole process group led by `pgid`.
pub fn signal_group(pgid: u32, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    let pgid = i32::try_from(pgid).map_err(|_| nix::errno::Errno::EINVAL)?;
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal)
}

/// Clock ticks (`_SC_CLK_TCK`) since boot: the clock and unit of a process's start time in
/// `/proc/<pid>/stat` (field 22), rounded down the same way.
pub fn boot_ticks() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into our timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    let ns = (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
    ns / (1_000_000_000 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Sends `signal` to every live member of the process group `pgid` that was started at or
/// after `since_tick` ([`boot_ticks`]); returns how many were signalled.
///
/// Why: a group signal reaches the members that exist when it is sent. A shell that forks
/// with every signal blocked (dash blocks them around its `vfork`) and receives the signal in
/// that window dies of it once it unblocks, but the child it just forked never got it: the
/// signal was pending in the parent only. A process started after the signal was sent cannot
/// have received it, so the caller passes it on to exactly those (and, within one clock tick,
/// possibly to one that did). Scans `/proc`: only called when a shell died of such a signal.
pub fn signal_group_members_since(
    pgid: u32,
    signal: nix::sys::signal::Signal,
    since_tick: u64,
) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut sent = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name (which may contain spaces and parentheses).
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let (Some(state), Some(group), Some(start)) =
            (fields.first(), fields.get(2), fields.get(19))
        else {
            continue;
        };
        if *state == "Z" || group.parse::<u32>() != Ok(pgid) {
            continue;
        }
        if start.parse::<u64>().is_ok_and(|t| t >= since_tick) && signal_pid(pid, signal).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// Sends `signal` to one process.
pub fn signal_pid(pid: i32, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
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
