//! Supervisors that share nothing with the agent: one helper process per manager, exec'd from
//! the agent's own executable in a hidden mode, forks every supervisor from its own small image
//! with `clone(CLONE_PARENT)`, so each supervisor is still the agent's child.
//!
//! Owns: which way supervisors start ([`SupervisorLaunch`], the process-wide default), the
//! helper (its exec, its loop, its end) and the hand-over of a command, and the hidden mode's
//! entry point ([`run_supervisor_if_asked`]). Leaves to `supervisor`: the supervisor's life
//! (the same code however it started), the status messages.
//!
//! Why: a supervisor forked from the agent shares every page of the agent copy-on-write for as
//! long as the command runs. The fork copies the agent's page tables (its cost grows with the
//! agent's memory), the agent then takes a fault on the first write to each shared page, and
//! every page the agent rewrites while a supervisor lives is kept twice: supervisors started at
//! different times keep different copies, so N long commands can hold up to N times the agent's
//! rewritten memory (823 MiB for 50 commands and a 16 MiB working set, BENCHMARKS.md §1.4).
//! Exec'ing the 87 MB binary per command instead costs about 1 ms of CPU each (the dynamic
//! loader relocating it), more than a fork of a small agent; the helper pays that once and then
//! forks a process of well under 1 MiB. Its supervisors share only the helper's pages, which
//! the helper hardly writes.
//!
//! ```text
//! agent ──clone(VM|VFORK) + execve(exe, ["wgagent-sup", MODE_ARG, sock, death, null], [])──► helper
//!   ├─ per command on `sock` (SOCK_SEQPACKET): tty byte + SCM_RIGHTS [status, spec, stdin,
//!   │  stdout, stderr] ──► helper: clone(CLONE_PARENT) ──► supervisor (the agent's child)
//!   │  ◄── [pid, errno]
//!   └─ spec pipe: length + `Prepared::encode` ──► supervisor rebuilds the command, then
//!      `supervisor::run` (status pipe, death pipe, signals, as when forked from the agent)
//! ```
//!
//! Which executable: the wgagent binary calls [`run_supervisor_if_asked`] first thing in
//! `main`, which makes `/proc/self/exe` the default. That link names the running executable's
//! file even after an upgrade replaced or deleted it on disk, so the helper is always the same
//! build as the agent (the hand-over format is not versioned beyond [`MODE_ARG`]). A program
//! that links the library without that call (tests, benches, embedders) forks its supervisors,
//! unless it names a binary that has the mode ([`set_default_supervisor_exe`] or
//! [`SupervisorLaunch::Exec`], e.g. the built `wgagent`). If the exec fails (no `/proc`, a
//! security policy) or the program does not say within 10 s that it runs the mode (not a
//! wgagent binary, a dynamic loader that cannot start it with the empty environment), nothing
//! was started: the manager logs it and forks from then on. A helper that dies is replaced at
//! the next start (nothing of that start ran); its supervisors live on (the agent's children).
//! The manager's drop kills and reaps it; when the agent dies, its socket closes and it exits.
//!
//! Nothing secret is on a command line: the command's environment travels on the pipe, and the
//! helper and supervisors run with an empty environment of their own (a command's `LD_PRELOAD`
//! must not reach a process that runs as the agent's user).

use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use super::spawn::{self, Prepared, Stack, Stage, Stdio};
use super::supervisor::{self, MSG_FAILED, MSG_READY, Started};

/// `argv[1]` of the helper (and so of the supervisors it forks): the hidden mode, and the
/// version of the hand-over format.
pub const MODE_ARG: &str = "--wgagent-supervisor-v1";

/// `argv[0]` of the helper and its supervisors (what `ps` shows; `comm` is `wgagent-zygote` for
/// the helper, `wgagent-sup` for a supervisor).
const ARGV0: &CStr = c"wgagent-sup";

/// How long the agent waits for the helper's answer before it calls it unusable (a wrong
/// binary could run for ever).
const READY_WITHIN_MS: libc::c_int = 10_000;

/// The largest command hand-over accepted (a command line and environment are far smaller:
/// `execve` itself refuses more than a few MiB).
const MAX_SPEC: u64 = 64 << 20;

/// How a manager starts a command's supervisor (tree tracking on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SupervisorLaunch {
    /// The process-wide default: a helper exec'd from the executable registered by
    /// [`run_supervisor_if_asked`] (`/proc/self/exe` in the wgagent binary) or
    /// [`set_default_supervisor_exe`]; fork when none was.
    #[default]
    Auto,
    /// `fork` the agent (the supervisor shares the agent's memory copy-on-write).
    Fork,
    /// A helper exec'd from this executable forks them; it must call
    /// [`run_supervisor_if_asked`] first in `main` (the wgagent binary does).
    Exec(PathBuf),
}

impl SupervisorLaunch {
    /// The executable of the helper, or `None` to fork from the agent.
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
/// manager's supervisor helper, it becomes that helper and never returns. Otherwise it returns
/// at once, and managers of this process exec `/proc/self/exe` for their supervisors.
pub fn run_supervisor_if_asked() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(OsStr::new(MODE_ARG)) {
        set_default_supervisor_exe(Some(Path::new("/proc/self/exe")));
        return;
    }
    let fds: Vec<RawFd> = args
        .filter_map(|a| a.to_str().and_then(|s| s.parse().ok()))
        .collect();
    let Ok::<[RawFd; 3], _>([sock, death, null]) = fds.try_into() else {
        eprintln!("wgagent: {MODE_ARG} is started by the agent itself, with its sockets");
        std::process::exit(2);
    };
    helper(sock, death, null)
}

/// The helper's life: forks one supervisor per request on `sock`, until the agent closes it.
fn helper(sock: RawFd, death: RawFd, null: RawFd) -> ! {
    // SAFETY: signal mask and dispositions of this single-threaded process, inherited by every
    // supervisor it forks. The agent cloned us with every signal blocked, which exec kept; a
    // supervisor reads the ones it wants from a signalfd. SIGCHLD must not be ignored (its
    // children would be reaped by the kernel).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        for sig in [libc::SIGCHLD, libc::SIGTERM, supervisor::KILL_TREE] {
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::prctl(libc::PR_SET_NAME, c"wgagent-zygote".as_ptr(), 0, 0, 0);
        // Nothing of the agent's but these three (its terminal or log pipe must not be held
        // open by us).
        supervisor::close_all_but(&[sock, death, null, -1, -1, -1]);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
    }
    // Tells the agent that this binary has the mode (an executable without it would exit
    // without a word, and the agent then forks instead).
    let _ = send_words(sock, &[MSG_READY, 0]);
    loop {
        let Some(req) = receive(sock) else {
            // The agent closed its end (dropped the manager, or died).
            std::process::exit(0);
        };
        // SAFETY: clone without CLONE_VM: a fork whose child's parent is our parent (the
        // agent), so the agent reaps it, waits for it by pidfd and signals it as its own child.
        // This process is single-threaded, so the child may do anything.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_PARENT | libc::SIGCHLD,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if pid == 0 {
            // SAFETY: closing our copy of the helper's socket in the child.
            unsafe { libc::close(sock) };
            let e = serve(&req, death, null);
            supervisor::send(
                req.status,
                [
                    MSG_FAILED,
                    Stage::Supervisor as i32,
                    e.raw_os_error().unwrap_or(libc::EINVAL),
                    0,
                ],
            );
            // SAFETY: ends the child at once (no exit handlers of the helper's).
            unsafe { libc::_exit(127) };
        }
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let reply = if pid > 0 {
            [pid as i32, 0]
        } else {
            [-1, errno]
        };
        drop(req);
        if send_words(sock, &reply).is_err() {
            std::process::exit(0);
        }
    }
}

/// One supervisor to fork: the fds the agent passed.
struct Request {
    status: RawFd,
    spec: RawFd,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    tty: bool,
    /// Every fd received, closed on drop (in the helper, once the child has its copies).
    _fds: Vec<OwnedFd>,
}

/// The next request on `sock`; `None` when the agent closed it (or sent garbage).
fn receive(sock: RawFd) -> Option<Request> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    loop {
        let mut byte = [0u8; 1];
        let mut iov = [io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; PASSED_FDS]);
        let msg = match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        };
        if msg.bytes == 0 {
            return None;
        }
        let mut fds = Vec::new();
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: fds the kernel just installed for us; nobody else owns them.
                fds.extend(
                    got.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let Ok::<[RawFd; PASSED_FDS], _>([status, spec, stdin, stdout, stderr]) = raw.try_into()
        else {
            return None;
        };
        return Some(Request {
            status,
            spec,
            stdin,
            stdout,
            stderr,
            tty: byte[0] != 0,
            _fds: fds,
        });
    }
}

/// Native-endian `i32`s as one message on the helper's socket.
fn send_words(sock: RawFd, words: &[i32]) -> io::Result<()> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    nix::sys::socket::send(sock, &bytes, nix::sys::socket::MsgFlags::MSG_NOSIGNAL)
        .map(drop)
        .map_err(io::Error::from)
}

/// In a forked supervisor: reads the command, then lives as its supervisor. Returns only on
/// failure.
fn serve(req: &Request, death: RawFd, null: RawFd) -> io::Error {
    let cmd = match read_spec(req.spec).and_then(|b| Prepared::decode(&b)) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut stack = match Stack::new() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let stdio = Stdio {
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
        tty: req.tty,
    };
    let keep = [req.stdin, req.stdout, req.stderr, death, req.status, null];
    // SAFETY: the fds are open (received or inherited); this process is single-threaded.
    unsafe { supervisor::run(&cmd, stdio, &keep, death, req.status, null, &mut stack) }
}

/// Reads the length-prefixed command from `fd`.
fn read_spec(fd: RawFd) -> io::Result<Vec<u8>> {
    // SAFETY: a borrowed view of the spec pipe: ManuallyDrop keeps the fd open (the request
    // owns it).
    let mut pipe = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
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

/// Fds passed per supervisor: status pipe, spec pipe, stdin, stdout, stderr.
const PASSED_FDS: usize = 5;

/// Why starting a supervisor through the helper failed.
pub(crate) enum Error {
    /// The helper is unusable (died, not a wgagent binary, no answer); nothing was started. The
    /// manager starts a new helper, or forks.
    Helper(io::Error),
    /// Anything else: the supervisor ran and reported, or a pipe failed.
    Other(io::Error),
}

/// The agent's end of a supervisor helper: a process of the wgagent binary, exec'd once per
/// manager, that forks each supervisor from its own small image. Dropping it ends the helper
/// (its supervisors live on: they are the agent's children).
pub(crate) struct Helper {
    sock: OwnedFd,
    pid: i32,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let mut st = 0;
        // SAFETY: our own child, not reaped yet, so the pid is still its own.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, &mut st, 0);
        }
    }
}

impl Helper {
    /// Clones and execs `exe` as the helper, and waits (bounded) until it says it runs.
    /// `death` and `null` are inherited by every supervisor it forks; `stack` is only used until
    /// the helper has exec'd.
    pub(crate) fn start(
        exe: &CStr,
        death: RawFd,
        null: RawFd,
        stack: &mut Stack,
    ) -> io::Result<Helper> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let (ours, theirs) = (spawn::above_stdio(ours)?, spawn::above_stdio(theirs)?);
        let pass = [theirs.as_raw_fd(), death, null];
        let number = |v: i32| CString::new(v.to_string()).unwrap_or_default();
        let mut args = vec![ARGV0.to_owned(), CString::new(MODE_ARG).unwrap_or_default()];
        args.extend(pass.iter().map(|&fd| number(fd)));
        let argv = spawn::null_terminated(&args);
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        // SAFETY: errno is readable at any time.
        let errno = || unsafe { *libc::__errno_location() };
        // SAFETY: the child only makes raw system calls on memory prepared above, which
        // outlives the call. It has its own fd table (no CLONE_FILES): clearing close-on-exec
        // there leaves the agent's fds alone.
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
        }
        .map_err(|(_, e)| io::Error::from_raw_os_error(e))?;
        drop(theirs);
        let helper = Helper { sock: ours, pid };
        match helper.read_words::<2>() {
            Ok([MSG_READY, _]) => Ok(helper),
            // Dropping `helper` kills and reaps whatever program that was.
            Ok(_) => Err(io::Error::other(
                "it is not a wgagent binary with the supervisor mode",
            )),
            Err(e) => Err(e),
        }
    }

    /// Reads one message of `N` words, waiting at most [`READY_WITHIN_MS`].
    fn read_words<const N: usize>(&self) -> io::Result<[i32; N]> {
        let mut fd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd of ours.
        if unsafe { libc::poll(&mut fd, 1, READY_WITHIN_MS) } != 1 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the supervisor helper did not answer",
            ));
        }
        let mut buf = [0u8; 64];
        let n = nix::sys::socket::recv(
            self.sock.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        if n != N * 4 {
            return Err(io::Error::other(
                "the supervisor helper ended without a word",
            ));
        }
        let mut out = [0i32; N];
        for (i, w) in out.iter_mut().enumerate() {
            *w = i32::from_ne_bytes([buf[i * 4], buf[i * 4 + 1], buf[i * 4 + 2], buf[i * 4 + 3]]);
        }
        Ok(out)
    }

    /// Has the helper fork a supervisor for `cmd`: one round trip on the helper's socket (the
    /// fds go over, the supervisor's pid comes back). The caller serialises round trips (one
    /// socket, answers in order) and finishes with [`Handover::finish`] without that lock: the
    /// command's hand-over and its exec then overlap with other starts.
    pub(crate) fn request(&self, cmd: &Prepared, stdio: Stdio) -> Result<Handover, Error> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let (status_r, status_w) = spawn::pipe().map_err(Error::Other)?;
        let (spec_r, spec_w) = spawn::pipe().map_err(Error::Other)?;
        let fds = [
            status_w.as_raw_fd(),
            spec_r.as_raw_fd(),
            stdio.stdin,
            stdio.stdout,
            stdio.stderr,
        ];
        let tty = [u8::from(stdio.tty)];
        sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[io::IoSlice::new(&tty)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| Error::Helper(e.into()))?;
        drop(status_w);
        drop(spec_r);
        // The helper answers as soon as it forked; the supervisor then waits for the spec.
        let [pid, errno] = self.read_words::<2>().map_err(Error::Helper)?;
        if pid <= 0 {
            return Err(Error::Other(
                spawn::Report {
                    stage: Stage::Clone as i32,
                    errno,
                    ..Default::default()
                }
                .into_error(),
            ));
        }
        Ok(Handover {
            pid,
            spec: cmd.encode(),
            spec_w,
            status_r,
        })
    }
}

/// A supervisor the helper forked, still waiting for its command: [`Handover::finish`] needs no
/// lock (its pipes are its own).
pub(crate) struct Handover {
    pid: i32,
    spec: Vec<u8>,
    spec_w: OwnedFd,
    status_r: OwnedFd,
}

impl Handover {
    /// Hands the command over and blocks until it was exec'd (or failed), like
    /// [`supervisor::start`].
    pub(crate) fn finish(self) -> io::Result<Started> {
        // A supervisor that dies before reading it all makes this fail (EPIPE); its status pipe
        // then says why, or ends without a word.
        let mut pipe = std::fs::File::from(self.spec_w);
        let _ = pipe
            .write_all(&(self.spec.len() as u64).to_ne_bytes())
            .and_then(|()| pipe.write_all(&self.spec));
        drop(pipe);
        supervisor::await_started(self.pid, self.status_r)
    }
}
