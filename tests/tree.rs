//! Kills that no descendant escapes (issue 9, point 3): members that left the process group or
//! session (`setsid`, double fork, `nohup … &`, a daemonizing script) are gone after a kill, a
//! terminate, `timeout_ms` and the manager's shutdown, the record stays running until they are,
//! and nothing is left as a zombie.

#[path = "common/tree.rs"]
mod tree_helpers;

use std::time::{Duration, Instant};

use tree_helpers::*;
use wgagent::proc::{Manager, ManagerConfig, Signal, StartSpec, SupervisorLaunch};

const T: Duration = Duration::from_secs(30);

fn spec(cmd: String) -> StartSpec {
    StartSpec {
        command: cmd,
        ..Default::default()
    }
}

/// Supervisors exec'd from the wgagent binary, as the agent starts them (tests/supervisor.rs
/// covers the forked ones).
fn manager(tracking: bool) -> Manager {
    Manager::new(ManagerConfig {
        kill_grace: Duration::from_millis(500),
        tree_tracking: tracking,
        supervisor: SupervisorLaunch::Exec(env!("CARGO_BIN_EXE_wgagent").into()),
        ..Default::default()
    })
}

#[tokio::test]
async fn kill_and_terminate_reach_every_escape() {
    let m = manager(true);
    for (i, sig) in [Signal::Kill, Signal::Terminate].into_iter().enumerate() {
        let esc = Escapes::new(i);
        let id = m.start(spec(esc.command())).unwrap();
        esc.wait_started().await;
        let rec = m.get(&id).unwrap();
        let sup = proc_ppid(rec.pid).expect("the shell runs under its supervisor");
        m.signal(&id, sig).unwrap();
        let Some(exit) = m.wait(&id, T).await.unwrap() else {
            panic!("{sig:?}: still running; escapees: {:?}", esc.alive());
        };
        // The record said "not running" only once every escapee was gone.
        assert_eq!(
            esc.alive(),
            Vec::<String>::new(),
            "{sig:?}: escapees survived"
        );
        assert_eq!(exit.code, -1, "{sig:?}: {exit:?}");
        // Only this command's supervisor: other tests' supervisors run in parallel and may
        // hold a child that just died and is not reaped yet.
        assert_no_zombies_under(sup);
    }
}

#[tokio::test]
async fn timeout_reaches_every_escape() {
    let m = manager(true);
    let esc = Escapes::new(10);
    let id = m
        .start(StartSpec {
            timeout: Some(Duration::from_millis(700)),
            ..spec(esc.command())
        })
        .unwrap();
    esc.wait_started().await;
    let exit = m.wait(&id, T).await.unwrap().expect("still running");
    assert_eq!(exit.reason.as_str(), "timed_out");
    assert_eq!(esc.alive(), Vec::<String>::new());
}

#[tokio::test]
async fn shutdown_reaches_every_escape_and_leftovers_of_exited_processes() {
    let m = manager(true);
    let esc = Escapes::new(20);
    let id = m.start(spec(esc.command())).unwrap();
    // A command that exits at once but leaves a daemon: exited, yet killed at shutdown.
    let daemon = Escapes::new(21);
    let left = m
        .start(spec(format!(
            "setsid {} >/dev/null 2>&1 &",
            daemon.sleeper(0)
        )))
        .unwrap();
    esc.wait_started().await;
    daemon.wait_n(1).await;
    let exit = m.wait(&left, T).await.unwrap();
    assert!(
        exit.is_some(),
        "the shell exited; its daemon must not pin the record"
    );
    m.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        m.wait(&id, T).await.unwrap().unwrap().reason.as_str(),
        "agent_shutdown"
    );
    assert_eq!(esc.alive(), Vec::<String>::new());
    assert_eq!(daemon.alive(), Vec::<String>::new());
}

#[tokio::test]
async fn leftover_daemon_can_be_killed_after_the_shell_exited() {
    let m = manager(true);
    let daemon = Escapes::new(30);
    let id = m
        .start(spec(format!(
            "setsid {} >/dev/null 2>&1 & echo started",
            daemon.sleeper(0)
        )))
        .unwrap();
    daemon.wait_n(1).await;
    assert!(m.wait(&id, T).await.unwrap().is_some());
    // Not running, but its tree is: a delete is refused, a kill reaches the daemon.
    assert!(m.remove(&id).is_err());
    m.signal(&id, Signal::Kill).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.alive().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(daemon.alive(), Vec::<String>::new());
    // Once the tree is gone the record can be forgotten, and a second kill is a conflict.
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.remove(&id).is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        m.get(&id).is_err(),
        "record not removable after its tree died"
    );
}

#[tokio::test]
async fn dropping_the_manager_kills_every_escape() {
    let m = manager(true);
    let esc = Escapes::new(40);
    m.start(spec(esc.command())).unwrap();
    esc.wait_started().await;
    drop(m);
    esc.wait_gone(Duration::from_secs(10)).await;
}

/// The switch: without tracking, a member that left the group survives a kill (what issue 9
/// reported), which is why tracking is the default.
#[tokio::test]
async fn without_tracking_setsid_escapes() {
    let m = manager(false);
    let esc = Escapes::new(50);
    let id = m
        .start(spec(format!(
            "setsid {} >/dev/null 2>&1 & sleep 300",
            esc.sleeper(0)
        )))
        .unwrap();
    esc.wait_n(1).await;
    m.signal(&id, Signal::Kill).unwrap();
    m.wait(&id, T).await.unwrap().expect("still running");
    let survivors = esc.alive();
    esc.kill_all();
    assert_eq!(survivors.len(), 1, "expected the setsid sleeper to escape");
}
