//! Starting a command's supervisor as a process of its own: `clone(CLONE_VM | CLONE_VFORK)` +
//! `exec` of the agent's own executable in a hidden mode, instead of a `fork` of the agent.
//!
//! Owns: which way supervisors start ([`SupervisorLaunch`], the process-wide default), the
//! exec and the hand-over of the command, and the hidden mode's entry point
//! ([`run_supervisor_if_asked`]). Leaves to `supervisor`: the supervisor's life (the same code
//! in both ways), the status messages.
//!
//! Why: a forked supervisor shares every page of the agent copy-on-write for as long as the
//! command runs. The fork copies the agent's page tables (its cost grows with the agent's
//! memory), the agent then takes a fault on the first write to each shared page, and every
//! page the agent rewrites while a supervisor lives is kept twice: a supervisor started at a
//! different time keeps a different copy, so N long-running commands can hold up to N times
//! the agent's rewritten memory (measured in BENCHMARKS.md §1.4). An exec'd supervisor shares
//! nothing but the executable's file pages: its memory and its start cost do not depend on the
//! agent's.
//!
//! ```text
//! agent ──clone(VM|VFORK) + execve(exe, ["wgagent-sup", MODE_ARG, fds…], [])──► supervisor
//!   └─ spec pipe: length + `Prepared::encode` ──► supervisor rebuilds the command, then
//!      `supervisor::run` as in a forked supervisor (status pipe, death pipe, signals)
//! ```
//!
//! Which executable: the wgagent binary calls [`run_supervisor_if_asked`] first thing in
//! `main`, which makes `/proc/self/exe` the default. That link names the running executable's
//! file even after an upgrade replaced or deleted it on disk, so the supervisor is always the
//! same build as the agent (the hand-over format is not versioned beyond [`MODE_ARG`]). A
//! program that links the library without that call (tests, benches, embedders) forks, unless
//! it names a binary that has the mode ([`set_default_supervisor_exe`] or
//! [`SupervisorLaunch::Exec`], e.g. the built `wgagent`). If the exec fails (no `/proc`, a
//! security policy) or the program does not answer that it runs the mode (not a wgagent
//! binary, a dynamic loader that cannot start it with the empty environment), nothing was
//! started: the manager logs it, forks this supervisor and every later one.
//!
//! Nothing secret is on the supervisor's command line: the command's environment travels on
//! the pipe, and the supervisor runs with an empty environment of its own (a command's
//! `LD_PRELOAD` must not reach a process that runs as the agent's user).

use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use super::spawn::{self, Prepared, Stack, Stage, Stdio};
use super::supervisor::{self, MSG_FAILED, MSG_LEN, MSG_READY, Started};

/// `argv[1]` of a supervisor: the hidden mode, and the version of the hand-over format.
pub const MODE_ARG: &str = "--wgagent-supervisor-v1";

/// `argv[0]` of a supervisor (what `ps` shows; `comm` is set to `wgagent-sup` as well).
const ARGV0: &CStr = c"wgagent-sup";

/// How long the agent waits for a new supervisor's first word before it calls the executable
/// unusable (a wrong binary could run for ever).
const READY_WITHIN_MS: libc::c_int = 10_000;

/// The largest command hand-over accepted (a command line and environment are far smaller:
/// `execve` itself refuses more than a few MiB).
const MAX_SPEC: u64 = 64 << 20;

/// How a manager starts a command's supervisor (tree tracking on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SupervisorLaunch {
    /// The process-wide default: exec the executable registered by
    /// [`run_supervisor_if_asked`] (`/proc/self/exe` in the wgagent binary) or
    /// [`set_default_supervisor_exe`]; fork when none was.
    #[default]
    Auto,
    /// `fork` the agent (the supervisor shares the agent's memory copy-on-write).
    Fork,
    /// Exec this executable, which must call [`run_supervisor_if_asked`] first in `main` (the
    /// wgagent binary does).
    Exec(PathBuf),
}

impl SupervisorLaunch {
    /// The executable to exec, or `None` to fork.
    pub fn exe(&self) -> Option<PathBuf> {
        match self {
            Self::Auto => DEFAULT_EXE.read().clone(),
            Self::Fork => None,
            Self::Exec(p) => Some(p.clone()),
        }
    }
}

static DEFAULT_EXE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Makes `exe` (a wgagent binary; `None`: fork) the supervisor executable of managers configured
/// with [`SupervisorLaunch::Auto`] that start after this call. For programs that link the
/// library and ship the wgagent binary (tests and benches use `env!("CARGO_BIN_EXE_wgagent")`).
pub fn set_default_supervisor_exe(exe: Option<&Path>) {
    *DEFAULT_EXE.write() = exe.map(Path::to_owned);
}

/// Call first thing in `main`, before any thread starts. When this process was started as a
/// command's supervisor, it becomes that supervisor and never returns. Otherwise it returns at
/// once, and managers of this process exec `/proc/self/exe` as their supervisors.
pub fn run_supervisor_if_asked() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(OsStr::new(MODE_ARG)) {
        set_default_supervisor_exe(Some(Path::new("/proc/self/exe")));
        return;
    }
    let fds: Vec<RawFd> = args
        .filter_map(|a| a.to_str().and_then(|s| s.parse().ok()))
        .collect();
    let Ok::<[RawFd; 8], _>([status, death, spec, null, stdin, stdout, stderr, tty]) =
        fds.try_into()
    else {
        eprintln!("wgagent: {MODE_ARG} is started by the agent itself, with its pipes");
        std::process::exit(2);
    };
    // Tells the agent that this binary has the mode (an executable without it would exit
    // without a word, and the agent then forks instead).
    supervisor::send(status, [MSG_READY, 0, 0, 0]);
    let e = serve(status, death, spec, null, stdin, stdout, stderr, tty != 0);
    supervisor::send(
        status,
        [
            MSG_FAILED,
            Stage::Supervisor as i32,
            e.raw_os_error().unwrap_or(libc::EINVAL),
            0,
        ],
    );
    std::process::exit(127);
}

/// The hidden mode: reads the command, then lives as its supervisor. Returns only on failure.
#[allow(clippy::too_many_arguments)]
fn serve(
    status: RawFd,
    death: RawFd,
    spec: RawFd,
    null: RawFd,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    tty: bool,
) -> io::Error {
    // SAFETY: signal mask and dispositions of this single-threaded process. The agent cloned
    // us with every signal blocked, which exec kept; the supervisor reads the ones it wants
    // from a signalfd. SIGCHLD must not be ignored (children would be reaped by the kernel).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        for sig in [libc::SIGCHLD, libc::SIGTERM, supervisor::KILL_TREE] {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let cmd = match read_spec(spec).and_then(|b| Prepared::decode(&b)) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut stack = match Stack::new() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let stdio = Stdio {
        stdin,
        stdout,
        stderr,
        tty,
    };
    let keep = [stdin, stdout, stderr, death, status, null];
    // SAFETY: the fds are the ones the agent passed (open: they were inherited); this process
    // is single-threaded.
    unsafe { supervisor::run(&cmd, stdio, &keep, death, status, null, &mut stack) }
}

/// Reads the length-prefixed command from `fd` and closes it.
fn read_spec(fd: RawFd) -> io::Result<Vec<u8>> {
    // SAFETY: the spec pipe's read end, passed to us alone; the File closes it.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut len = [0u8; 8];
    pipe.read_exact(&mut len)?;
    let len = u64::from_ne_bytes(len);
    if len > MAX_SPEC {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    let mut buf = vec![0u8; len as usize];
    pipe.read_exact(&mut buf)?;
    Ok(buf)
}

/// Why [`start`] failed.
pub(crate) enum Error {
    /// The executable could not be exec'd, or it ended without saying it runs the supervisor
    /// mode; nothing was started (the manager forks instead).
    Exe(io::Error),
    /// Anything else: the supervisor ran and reported, or a pipe failed.
    Other(io::Error),
}

/// Clones and execs `exe` as the supervisor of `cmd`, and hands the command over. Blocks until
/// the command was exec'd (or failed), like [`supervisor::start`]. `stack` is only used until
/// the supervisor has exec'd.
pub(crate) fn start(
    exe: &CStr,
    cmd: &Prepared,
    stdio: Stdio,
    death: RawFd,
    null: RawFd,
    stack: &mut Stack,
) -> Result<Started, Error> {
    let spec = cmd.encode();
    let (status_r, status_w) = spawn::pipe().map_err(Error::Other)?;
    let (spec_r, spec_w) = spawn::pipe().map_err(Error::Other)?;
    let pass = [
        status_w.as_raw_fd(),
        death,
        spec_r.as_raw_fd(),
        null,
        stdio.stdin,
        stdio.stdout,
        stdio.stderr,
    ];
    let number = |v: i32| CString::new(v.to_string()).unwrap_or_default();
    let mut args = vec![ARGV0.to_owned(), CString::new(MODE_ARG).unwrap_or_default()];
    args.extend(pass.iter().map(|&fd| number(fd)));
    args.push(number(i32::from(stdio.tty)));
    let argv = spawn::null_terminated(&args);
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: errno is readable at any time.
    let errno = || unsafe { *libc::__errno_location() };
    // SAFETY: the child only makes raw system calls on memory prepared above, which outlives
    // the call. It has its own fd table (no CLONE_FILES): clearing close-on-exec there leaves
    // the agent's fds alone.
    let pid = unsafe {
        spawn::clone_vfork(stack, &mut || {
            for fd in pass {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return (Stage::Supervisor, errno());
                }
            }
            libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
            (Stage::Supervisor, errno())
        })
    };
    let pid = match pid {
        Ok(pid) => pid,
        Err((Stage::Supervisor, e)) => return Err(Error::Exe(io::Error::from_raw_os_error(e))),
        Err((stage, e)) => {
            return Err(Error::Other(
                spawn::Report {
                    stage: stage as i32,
                    errno: e,
                    ..Default::default()
                }
                .into_error(),
            ));
        }
    };
    drop(status_w);
    drop(spec_r);
    // A supervisor that dies before reading it all makes this fail (EPIPE); its status pipe
    // then says why, or ends without a word.
    let mut pipe = std::fs::File::from(spec_w);
    let _ = pipe
        .write_all(&(spec.len() as u64).to_ne_bytes())
        .and_then(|()| pipe.write_all(&spec));
    drop(pipe);
    let mut msg = [0u8; MSG_LEN];
    let mut ready = libc::pollfd {
        fd: status_r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd of ours.
    let r = match unsafe { libc::poll(&mut ready, 1, READY_WITHIN_MS) } {
        1 => supervisor::read_full(status_r.as_raw_fd(), &mut msg),
        _ => Err(io::Error::from(io::ErrorKind::TimedOut)),
    };
    if !matches!(r, Ok(true) if supervisor::decode(&msg)[0] == MSG_READY) {
        let mut st = 0;
        // SAFETY: our own child, not reaped yet, so the pid is still its own: whatever program
        // it runs, it ends here.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut st, 0);
        }
        let why = match r {
            Err(e) => e.to_string(),
            Ok(_) => "it is not a wgagent binary with the supervisor mode".to_owned(),
        };
        return Err(Error::Exe(io::Error::other(why)));
    }
    supervisor::await_started(pid, status_r).map_err(Error::Other)
}
