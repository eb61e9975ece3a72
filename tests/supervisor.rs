//! How supervisors start (`[api] tree_tracking`): exec'd from the wgagent binary (what the agent
//! does) or forked (programs that link the library). An exec'd supervisor is the wgagent binary
//! in its hidden mode, holds none of the agent's memory, passes everything a command needs
//! (environment, stdin modes, nice/OOM, spawn failures with their stage) and falls back to a
//! fork when the executable cannot be exec'd. tests/tree.rs runs its kills with exec'd
//! supervisors; the agent killed by SIGKILL is tests/agent_bin.rs.

#[path = "common/tree.rs"]
mod tree_helpers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tree_helpers::*;
use wgagent::proc::{
    Manager, ManagerConfig, ProcessId, Signal, StartSpec, StdinMode, SupervisorLaunch,
};

const T: Duration = Duration::from_secs(30);

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wgagent"))
}

fn manager(launch: SupervisorLaunch) -> Manager {
    Manager::new(ManagerConfig {
        kill_grace: Duration::from_millis(500),
        nice_increment: 5,
        oom_score_adj: Some(998),
        supervisor: launch,
        ..Default::default()
    })
}

fn spec(cmd: &str) -> StartSpec {
    StartSpec {
        command: cmd.to_owned(),
        ..Default::default()
    }
}

async fn finish(m: &Manager, id: &ProcessId) -> (String, i32) {
    let exit = m.wait(id, T).await.unwrap().expect("process did not exit");
    (m.get(id).unwrap().output.render().text, exit.code)
}

/// The supervisor of a running command: its shell's parent.
fn supervisor_of(m: &Manager, id: &ProcessId) -> u32 {
    let rec = m.get(id).unwrap();
    proc_ppid(rec.pid).expect("the shell runs under its supervisor")
}

/// Anonymous memory `pid` maps (its heap and stacks, or a fork's copy of ours), in KiB: what
/// it holds of the agent whether or not another fork shares the same old pages (the
/// `Private_*` figures would miss those; BENCHMARKS.md §1.4 reports them).
fn anonymous_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

async fn kill(m: &Manager, id: &ProcessId) {
    m.signal(id, Signal::Kill).unwrap();
    m.wait(id, T).await.unwrap().expect("killed command ended");
}

#[tokio::test]
async fn an_exec_supervisor_is_the_wgagent_binary_with_an_empty_environment() {
    let m = manager(SupervisorLaunch::Exec(exe()));
    let id = m
        .start(StartSpec {
            env: [("WGAGENT_TEST_SECRET".to_owned(), "s3cret".to_owned())].into(),
            ..spec("echo $WGAGENT_TEST_SECRET; cat /proc/self/oom_score_adj; nice; sleep 30")
        })
        .unwrap();
    let sup = supervisor_of(&m, &id);
    let link = std::fs::read_link(format!("/proc/{sup}/exe")).unwrap();
    assert_eq!(link, exe().canonicalize().unwrap());
    let cmdline = std::fs::read(format!("/proc/{sup}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert_eq!(args[0], b"wgagent-sup");
    assert_eq!(args[1], wgagent::proc::SUPERVISOR_MODE_ARG.as_bytes());
    let comm = std::fs::read_to_string(format!("/proc/{sup}/comm")).unwrap();
    assert_eq!(comm.trim(), "wgagent-sup");
    // The command's variables went through the pipe, not the supervisor's command line or
    // environment.
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
    assert!(
        std::fs::read(format!("/proc/{sup}/environ"))
            .unwrap()
            .is_empty()
    );
    // The command got them, and its nice value and OOM score.
    // SAFETY: getpriority has no pointer arguments.
    let agent_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let want = format!("s3cret\n998\n{}\n", (agent_nice + 5).min(19));
    for _ in 0..300 {
        if m.get(&id).unwrap().output.render().text == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m.get(&id).unwrap().output.render().text, want);
    kill(&m, &id).await;
}

/// The property the exec is for: a forked supervisor keeps the pages the agent rewrote after
/// the fork (its copy), an exec'd one keeps nothing of the agent.
#[tokio::test]
async fn an_exec_supervisor_holds_none_of_the_agents_memory() {
    const MIB: usize = 32;
    let mut heap = vec![1u8; MIB << 20];
    let mut held = Vec::new();
    for launch in [SupervisorLaunch::Fork, SupervisorLaunch::Exec(exe())] {
        let m = manager(launch.clone());
        let id = m.start(spec("sleep 30")).unwrap();
        let sup = supervisor_of(&m, &id);
        // The agent rewrites its memory: every page it shared with a forked supervisor is
        // copied, and the supervisor's copy becomes private to it.
        for (i, b) in heap.iter_mut().enumerate().step_by(4096) {
            *b = b.wrapping_add(i as u8 | 1);
        }
        held.push((launch, anonymous_kib(sup)));
        kill(&m, &id).await;
    }
    std::hint::black_box(&heap);
    let (fork, exec) = (held[0].1, held[1].1);
    // The measurement can tell: the forked supervisor holds the old copy of the buffer.
    assert!(fork >= (MIB as u64 * 1024) * 9 / 10, "{held:?}");
    // A fresh process of the binary: its own small heap and stacks, whatever the agent holds.
    assert!(exec < 8 * 1024, "{held:?}");
}

#[tokio::test]
async fn stdin_modes_through_an_exec_supervisor() {
    let m = manager(SupervisorLaunch::Exec(exe()));
    // A pipe on stdin.
    let id = m
        .start(StartSpec {
            stdin: StdinMode::Pipe,
            ..spec("cat")
        })
        .unwrap();
    m.write_stdin(&id, b"through the pipe\n", true, T)
        .await
        .unwrap();
    assert_eq!(finish(&m, &id).await, ("through the pipe\n".into(), 0));
    // A pty: the command's stdin is a terminal, and its controlling one.
    let id = m
        .start(StartSpec {
            stdin: StdinMode::Pty { rows: 24, cols: 80 },
            ..spec("test -t 0 && echo is-a-tty; exec </dev/tty && echo has-ctty")
        })
        .unwrap();
    let (out, code) = finish(&m, &id).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("is-a-tty") && out.contains("has-ctty"),
        "{out:?}"
    );
    // A failure between clone and exec comes back with its stage and errno: tests/users.rs
    // (a directory the user cannot enter, through an exec'd supervisor; needs root).
}

/// A missing executable, and one that is not a wgagent binary (it exits without a word):
/// nothing runs twice, the start succeeds with a forked supervisor, and so do later ones.
#[tokio::test]
async fn an_executable_that_cannot_be_execd_falls_back_to_forking() {
    for exe in ["/nonexistent-wgagent/wgagent", "/bin/true"] {
        let m = manager(SupervisorLaunch::Exec(Path::new(exe).into()));
        fell_back(&m).await;
    }
}

async fn fell_back(m: &Manager) {
    for _ in 0..2 {
        let id = m.start(spec("sleep 30")).unwrap();
        let sup = supervisor_of(m, &id);
        // A fork of this test process.
        let link = std::fs::read_link(format!("/proc/{sup}/exe")).unwrap();
        assert_eq!(
            link,
            std::env::current_exe().unwrap().canonicalize().unwrap()
        );
        kill(m, &id).await;
    }
}

/// A command and environment far bigger than a pipe's buffer (the agent writes the hand-over
/// while the supervisor reads it).
#[tokio::test]
async fn a_command_bigger_than_a_pipe_buffer_reaches_an_exec_supervisor() {
    let m = manager(SupervisorLaunch::Exec(exe()));
    let value = "v".repeat(60 << 10);
    let env = (0..5)
        .map(|i| (format!("WGAGENT_BIG_{i}"), value.clone()))
        .collect();
    let id = m
        .start(StartSpec {
            env,
            ..spec(&format!(
                "test ${{#WGAGENT_BIG_4}} = {} && echo ok # {}",
                value.len(),
                "x".repeat(100 << 10)
            ))
        })
        .unwrap();
    assert_eq!(finish(&m, &id).await, ("ok\n".into(), 0));
}

#[test]
fn the_hidden_mode_refuses_a_hand_started_call() {
    let out = std::process::Command::new(exe())
        .arg(wgagent::proc::SUPERVISOR_MODE_ARG)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("started by the agent"));
}

/// Pipe inodes (`pipe:[N]`) among `pid`'s open fds.
fn pipes_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .filter(|l| l.starts_with("pipe:"))
                .collect()
        })
        .unwrap_or_default()
}

/// The helper that forked `sup`: our child named `wgagent-zygote` holding the same death pipe
/// (a pipe every supervisor of one manager and its helper share).
fn helper_of(sup: u32) -> u32 {
    let shared = pipes_of(sup);
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| proc_ppid(p) == Some(me))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "wgagent-zygote")
        })
        .find(|&p| pipes_of(p).iter().any(|x| shared.contains(x)))
        .expect("the supervisor's helper")
}

/// Supervisors are forked by one helper per manager but are the agent's own children; a helper
/// that dies is replaced at the next start, and dropping the manager ends and reaps it.
#[tokio::test]
async fn the_helper_is_replaced_when_it_dies_and_ends_with_the_manager() {
    let m = manager(SupervisorLaunch::Exec(exe()));
    let first = m.start(spec("sleep 30")).unwrap();
    let sup = supervisor_of(&m, &first);
    assert_eq!(proc_ppid(sup), Some(std::process::id()), "CLONE_PARENT");
    let helper = helper_of(sup);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(helper as i32, libc::SIGKILL) };
    let second = m.start(spec("sleep 30")).unwrap();
    let sup2 = supervisor_of(&m, &second);
    assert_eq!(proc_ppid(sup2), Some(std::process::id()));
    let helper2 = helper_of(sup2);
    assert_ne!(helper2, helper);
    assert!(proc_state(helper).is_none(), "the dead helper was reaped");
    // The first command's supervisor outlived its helper and still kills its tree.
    kill(&m, &first).await;
    kill(&m, &second).await;
    drop(m);
    assert!(
        proc_state(helper2).is_none(),
        "the helper ended with the manager"
    );
}

// Concurrent starts: a start is reserved under the manager's lock (its slot against the limits,
// its idempotency key) and spawned without it. These check the guarantees that lock gave.

/// Runs `n` starts of `spec` at once (threads lined up on a barrier, each inside the runtime).
async fn at_once(
    m: &Manager,
    n: usize,
    spec: impl Fn(usize) -> StartSpec + Send + Sync + 'static,
) -> Vec<Result<ProcessId, wgagent::proc::ProcError>> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let spec = std::sync::Arc::new(spec);
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let (m, barrier, spec) = (m.clone(), barrier.clone(), spec.clone());
            tokio::task::spawn_blocking(move || {
                let s = spec(i);
                barrier.wait();
                m.start(s)
            })
        })
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap());
    }
    out
}

/// N concurrent starts with one idempotency key start one process: the others wait for it and
/// get its id (the same request) or a conflict (another request), with either launch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_with_one_key_start_one_process() {
    for launch in [SupervisorLaunch::Exec(exe()), SupervisorLaunch::Fork] {
        let m = manager(launch);
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let cmd = format!("echo once >> {}; sleep 0.2", marker.display());
        let (same, other) = (cmd.clone(), format!("{cmd}; true"));
        let got = at_once(&m, 16, move |i| StartSpec {
            idempotency_key: Some("k".into()),
            ..spec(if i % 4 == 3 { &other } else { &same })
        })
        .await;
        let ids: std::collections::BTreeSet<_> =
            got.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ids.len(), 1, "one process for one key: {got:?}");
        let id = (*ids.iter().next().unwrap()).clone();
        let winner = m.get(&id).unwrap().command.clone();
        for (i, r) in got.iter().enumerate() {
            let mine = if i % 4 == 3 { "other" } else { "same" };
            let won = if winner == cmd { "same" } else { "other" };
            match r {
                Ok(_) => assert_eq!(mine, won, "start {i} replayed another request"),
                Err(wgagent::proc::ProcError::IdempotencyConflict(_)) => assert_ne!(mine, won),
                Err(e) => panic!("start {i}: {e}"),
            }
        }
        assert_eq!(m.list().len(), 1);
        assert_eq!(finish(&m, &id).await.1, 0);
        let lines = std::fs::read_to_string(&marker).unwrap();
        assert_eq!(lines, "once\n", "the command ran once");
    }
}

/// Starts racing `max_running` and `max_tracked` never exceed them, and `list` never shows a
/// half-built record meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_never_exceed_the_limits() {
    for (max_running, max_tracked) in [(3, 100), (100, 4)] {
        let m = Manager::new(ManagerConfig {
            max_running,
            max_tracked,
            kill_grace: Duration::from_millis(200),
            supervisor: SupervisorLaunch::Exec(exe()),
            ..Default::default()
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lister = {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for s in m.list() {
                        assert!(s.pid > 0, "a record without its process");
                        assert!(m.get(&s.id).is_ok());
                        seen += 1;
                    }
                }
                seen
            })
        };
        let got = at_once(&m, 16, |_| spec("sleep 30")).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        lister.join().unwrap();
        let limit = max_running.min(max_tracked);
        let ok: Vec<_> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), limit, "{got:?}");
        for r in &got {
            match r {
                Ok(_) => {}
                Err(wgagent::proc::ProcError::TooManyRunning(n)) => assert_eq!(*n, max_running),
                Err(wgagent::proc::ProcError::TooManyTracked(n)) => assert_eq!(*n, max_tracked),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(m.running_count(), limit);
        assert_eq!(m.list().len(), limit);
        for id in ok {
            kill(&m, id).await;
        }
    }
}

/// A start that fails after its reservation (here refused by the gate, where the audit log
/// writes) releases its slot and its key: the next start with them runs.
#[tokio::test]
async fn a_refused_start_releases_its_slot_and_key() {
    let m = Manager::new(ManagerConfig {
        max_running: 1,
        supervisor: SupervisorLaunch::Exec(exe()),
        ..Default::default()
    });
    let keyed = || StartSpec {
        idempotency_key: Some("k".into()),
        ..spec("echo ran")
    };
    let refused = m.start_gated(keyed(), &mut |_| Err("no".into()));
    assert!(matches!(refused, Err(wgagent::proc::ProcError::Refused(_))));
    assert!(m.list().is_empty());
    let id = m.start(keyed()).unwrap();
    assert_eq!(finish(&m, &id).await, ("ran\n".into(), 0));
    assert_eq!(
        m.start(keyed()).unwrap(),
        id,
        "the key now names the process"
    );
}

/// Shutdown while starts are in flight: every process that started is ended and reaped, and
/// later starts are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_racing_starts_leaves_no_process() {
    let m = manager(SupervisorLaunch::Exec(exe()));
    let starters: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            tokio::task::spawn_blocking(move || {
                let mut pids = Vec::new();
                for _ in 0..200 {
                    match m.start(spec("trap '' TERM; sleep 30")) {
                        Ok(id) => pids.push(m.get(&id).unwrap().pid),
                        Err(
                            wgagent::proc::ProcError::ShuttingDown
                            | wgagent::proc::ProcError::TooManyRunning(_),
                        ) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                pids
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    m.shutdown(Duration::from_millis(300)).await;
    let mut pids = Vec::new();
    for s in starters {
        pids.extend(s.await.unwrap());
    }
    assert!(!pids.is_empty());
    for s in m.list() {
        assert!(s.exit.is_some(), "{} still running after shutdown", s.id);
    }
    for pid in pids {
        assert!(proc_state(pid).is_none(), "process {pid} left behind");
    }
    assert!(matches!(
        m.start(spec("true")),
        Err(wgagent::proc::ProcError::ShuttingDown)
    ));
}
