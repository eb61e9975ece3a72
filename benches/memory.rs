//! RSS of a Manager tracking 1000 exited processes that each wrote 1 MiB.
//!
//! Run: `cargo bench --bench memory` (prints the figures; asserts nothing about them).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::rss_kib;
use wgagent::proc::{Manager, ManagerConfig, StartSpec};

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    common::block_on(async {
        let manager = Manager::new(ManagerConfig {
            max_running: 64,
            max_tracked: 2000,
            ..Default::default()
        });
        let before = rss_kib();
        let started = Instant::now();
        const N: usize = 1000;
        const BATCH: usize = 32;
        for batch in 0..N / BATCH + 1 {
            let mut ids = Vec::new();
            for _ in 0..BATCH.min(N - (batch * BATCH).min(N)) {
                // 1 MiB of 64-byte lines.
                let spec = StartSpec {
                    command: "yes 'abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxy' | head -c 1048576".into(),
                    ..Default::default()
                };
                ids.push(manager.start(spec).unwrap());
            }
            for id in ids {
                let exit = manager
                    .wait(&id, Duration::from_secs(60))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(exit.code, 0);
                assert_eq!(manager.get(&id).unwrap().output.total_written(), 1 << 20);
            }
        }
        let tracked = manager.list().len();
        let after = rss_kib();
        println!("memory: tracked={tracked} exited processes x 1 MiB output each");
        println!(
            "memory: rss_before_kib={before} rss_after_kib={after} delta_kib={}",
            after.saturating_sub(before)
        );
        println!(
            "memory: per_process_bytes={}",
            (after.saturating_sub(before) * 1024) / tracked.max(1) as u64
        );
        println!("memory: elapsed={:?}", started.elapsed());
    });
}
