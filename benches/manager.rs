//! Start → exit of `true` through the process Manager, against spawning `sh -c true` with
//! `std::process::Command` in the same run, plus the steps in between so the overhead can be
//! attributed: fork (a `pre_exec` closure forces fork instead of posix_spawn) and tokio; the
//! Manager with tree tracking on (a supervisor process per command) and off.
//!
//! Run: `cargo bench --bench manager`

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::os::unix::process::CommandExt;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wgagent::proc::{Manager, ManagerConfig, StartSpec, SupervisorLaunch};

fn spawn_true(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_true");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50);
    g.bench_function("baseline_std_command_sh_c_true", |b| {
        b.iter(|| {
            let st = std::process::Command::new("sh")
                .args(["-c", "true"])
                .status()
                .unwrap();
            assert!(st.success());
        })
    });
    g.bench_function("std_command_with_pre_exec_fork", |b| {
        b.iter(|| {
            // SAFETY: an empty pre_exec closure does nothing between fork and exec.
            let st = unsafe {
                std::process::Command::new("sh")
                    .args(["-c", "true"])
                    .pre_exec(|| Ok(()))
                    .status()
            };
            assert!(st.unwrap().success());
        })
    });
    let runtimes = [
        (
            "multi_thread_2",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        ),
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
    ];
    for (name, rt) in &runtimes {
        g.bench_function(format!("tokio_command_with_pre_exec/{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    // SAFETY: as above.
                    let st = unsafe {
                        tokio::process::Command::new("sh")
                            .args(["-c", "true"])
                            .pre_exec(|| Ok(()))
                            .status()
                            .await
                    };
                    assert!(st.unwrap().success());
                })
            })
        });
        // Supervisors forked from this process, or exec'd from the wgagent binary (the agent's).
        let exec = SupervisorLaunch::Exec(env!("CARGO_BIN_EXE_wgagent").into());
        for (tracking, supervisor, label) in [
            (true, SupervisorLaunch::Fork, "tree_tracking_on"),
            (true, exec, "tree_tracking_on_exec"),
            (false, SupervisorLaunch::Fork, "tree_tracking_off"),
        ] {
            let manager = rt.block_on(async {
                Manager::new(ManagerConfig {
                    tree_tracking: tracking,
                    supervisor,
                    ..ManagerConfig::default()
                })
            });
            g.bench_function(format!("manager_start_wait/{label}/{name}"), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let id = manager
                            .start(StartSpec {
                                command: "true".into(),
                                ..Default::default()
                            })
                            .unwrap();
                        let exit = manager
                            .wait(&id, Duration::from_secs(10))
                            .await
                            .unwrap()
                            .unwrap();
                        assert_eq!(exit.code, 0);
                        // The supervisor reports an empty tree with the exit, so this succeeds.
                        manager.remove(&id).unwrap();
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, spawn_true);
criterion_main!(benches);
