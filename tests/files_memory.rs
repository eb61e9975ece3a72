//! A 1 GiB file read through the tunnel stays bounded in memory: the agent streams the
//! requested range in 64 KiB pieces instead of loading the file, and routes that load files
//! refuse it up front. Its own test binary, so no other test's allocations blur the peak.

mod common;

use std::time::Duration;

use common::*;
use wgagent::api::file_types::{FileEdit, FileEditRequest, FileEdits};
use wgagent::client::{AgentConn, AgentOptions};

const GIB: u64 = 1 << 30;

/// (current RSS, peak RSS) of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1gib_file_read_with_limit_stays_bounded() {
    let p = pair().await;
    let conn = AgentConn::new(p.control.connector(), api_addr(), AgentOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.bin");
    // Sparse: 1 GiB of zeros that take no disk space.
    std::fs::File::create(&path).unwrap().set_len(GIB).unwrap();
    let path = path.display().to_string();
    conn.resolve_path("/").await.unwrap(); // handshake and a warm connection first

    // Reset the peak to the current RSS (Linux >= 4.0); without it, compare to the old peak.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let (before, peak_before) = rss();
    let limit = 64 << 20;
    let mut dl = conn.read_file(&path, GIB / 2, limit).await.unwrap();
    assert_eq!((dl.len, dl.file_size), (Some(limit), Some(GIB)));
    assert!(dl.hash.is_none(), "no hash for files over max_write_bytes");
    let mut got = 0u64;
    let started = std::time::Instant::now();
    while let Some(chunk) = dl.chunk().await {
        let chunk = chunk.unwrap();
        assert!(chunk.iter().all(|&b| b == 0));
        got += chunk.len() as u64;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "read too slow"
        );
    }
    assert_eq!(got, limit);
    // Stop a whole-file read after 16 MiB: the agent stops reading too.
    let mut dl = conn.read_file(&path, 0, 0).await.unwrap();
    assert_eq!(dl.len, Some(GIB));
    let mut partial = 0u64;
    while partial < 16 << 20 {
        partial += dl.chunk().await.unwrap().unwrap().len() as u64;
    }
    drop(dl);
    let (_, peak) = rss();
    let grew = peak.saturating_sub(if reset { before } else { peak_before });
    eprintln!(
        "RSS before {} MiB, peak during the reads {} MiB (+{} MiB; peak reset: {reset})",
        before >> 20,
        peak >> 20,
        grew >> 20
    );
    assert!(
        grew < 48 << 20,
        "reading 1 GiB in ranges grew RSS by {} MiB",
        grew >> 20
    );

    // Routes that load a file whole refuse it without reading it.
    let lines = conn
        .read_file_lines(&path, 1, 10, &Default::default(), false)
        .await
        .unwrap();
    assert!(
        !lines.success && lines.error.contains("exceeds the maximum"),
        "{lines:?}"
    );
    let err = conn
        .edit_files(&FileEditRequest {
            files: vec![FileEdits {
                path: path.clone(),
                edits: vec![FileEdit {
                    search: "a".into(),
                    replace: "b".into(),
                    replace_all: false,
                }],
                if_match: None,
            }],
            include_diff: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(413));
    let (_, peak) = rss();
    assert!(peak.saturating_sub(before) < 48 << 20);
}
