//! Start → exit of `true` through the process Manager, against spawning `sh -c true` with
//! `std::process::Command` in the same run.
//!
//! Run: `cargo bench --bench manager`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wgagent::proc::{Manager, ManagerConfig, StartSpec};

fn spawn_true(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let manager = rt.block_on(async { Manager::new(ManagerConfig::default()) });
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
    g.bench_function("manager_start_wait", |b| {
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
                manager.remove(&id).unwrap();
            })
        })
    });
    g.finish();
}

criterion_group!(benches, spawn_true);
criterion_main!(benches);
