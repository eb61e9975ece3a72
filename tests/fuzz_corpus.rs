//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through the same target
//! body the fuzzer runs (`wgagent::fuzzing`), so an input that once crashed a target, or found
//! a new path, keeps being checked by `cargo test`. See `fuzz/README.md`.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` (re)writes the seed inputs.

use std::path::{Path, PathBuf};

use wgagent::fuzzing::{TARGETS, seeds};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_file_replays_cleanly() {
    for (target, run) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {target}");
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
        }
        println!("fuzz corpus: {target}: {} inputs replayed", files.len());
    }
}

#[test]
#[ignore = "writes the seed corpora into the source tree"]
fn write_seeds() {
    for (target, _) in TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}
