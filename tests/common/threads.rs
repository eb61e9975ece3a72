//! Which data-path layout the tests' nodes and agents use (`[interface] threads`). Shared by
//! `common` and the namespace tests that include single helper files.
#![allow(dead_code)]

/// The data-path threads of the nodes and agents these helpers build: `WGAGENT_TEST_THREADS`
/// (CI runs the overlay, interop and NAT tests once more with `1`, the single-task layout, and
/// with `3`, peers sharded over two crypto tasks), or 0 = the machine's default (the pipeline on
/// a 2-core machine).
pub fn test_threads() -> usize {
    std::env::var("WGAGENT_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A `threads = N` line for agent config files the tests write (empty for the default).
pub fn threads_line() -> String {
    match test_threads() {
        0 => String::new(),
        n => format!("threads = {n}\n"),
    }
}
