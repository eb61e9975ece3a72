//! Per-command limits through the API (`api::router`, real processes): each limit stops what it
//! should, values above the agent's maximum or negative are refused naming the limit, and
//! defaults and maximums apply to commands that ask for nothing. The cgroup v2 path runs only
//! where this process may manage a delegated cgroup v2 subtree (it says why it skips).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wgagent::api::{AppState, router};
use wgagent::proc::{Limit, Limits, Manager, ManagerConfig};

const T: Duration = Duration::from_secs(30);

struct Api {
    router: axum::Router,
}

impl Api {
    fn with(default_limits: Limits, max_limits: Limits) -> Self {
        let manager = Manager::new(ManagerConfig {
            default_limits,
            max_limits,
            ..ManagerConfig::default()
        });
        Self {
            router: router(AppState::new(manager)),
        }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = tokio::time::timeout(T, self.router.clone().oneshot(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Starts `command` with `limits`, waits for its exit; (output, process info).
    async fn run(&self, command: &str, limits: Value) -> (String, Value) {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v0/processes/start",
                Some(json!({"command": command, "limits": limits})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let (s, out) = self
            .call(
                Method::GET,
                &format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=20000"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{out}");
        assert_eq!(out["running"], false, "{out}");
        let (_, list) = self.call(Method::GET, "/api/v0/processes/list", None).await;
        let info = list["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id.as_str())
            .cloned()
            .unwrap();
        (out["output"].as_str().unwrap().to_owned(), info)
    }

    async fn refused(&self, limits: Value) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v0/processes/start",
                Some(json!({"command": "true", "limits": limits})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        v["message"].as_str().unwrap().to_owned()
    }
}

fn open() -> Api {
    Api::with(Limits::default(), Limits::default())
}

#[tokio::test]
async fn memory_bytes_makes_an_allocation_fail() {
    let api = open();
    let alloc =
        |mib: u32| format!("perl -e '$x = \"a\" x ({mib}*1024*1024); print \"allocated\\n\"'");
    // 64 MiB of address space: a 16 MiB string fits, a 256 MiB one does not.
    let (out, info) = api.run(&alloc(16), json!({"memory_bytes": 64 << 20})).await;
    assert_eq!(out.trim(), "allocated", "{info}");
    let (out, info) = api
        .run(&alloc(256), json!({"memory_bytes": 64 << 20}))
        .await;
    assert!(out.contains("Out of memory"), "{out:?}");
    assert_ne!(info["exit_code"], 0, "{info}");
    assert_eq!(info["limits"], json!({"memory_bytes": 64 << 20}));
}

#[tokio::test]
async fn cpu_seconds_ends_a_busy_loop() {
    let api = open();
    let started = std::time::Instant::now();
    let (_, info) = api
        .run("while :; do :; done", json!({"cpu_seconds": 1}))
        .await;
    assert_eq!(info["exit_reason"], "limit_exceeded", "{info}");
    assert_eq!(info["exit_signal"], "SIGXCPU", "{info}");
    assert_eq!(info["exit_code"], -1);
    // Bounded by the limit (plus scheduling on a busy machine), not by the test's timeout.
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn file_size_bytes_stops_a_large_write() {
    let api = open();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let cmd = format!("exec head -c 10000000 /dev/zero > {}", big.display());
    let (_, info) = api.run(&cmd, json!({"file_size_bytes": 1 << 20})).await;
    assert_eq!(info["exit_reason"], "limit_exceeded", "{info}");
    assert_eq!(info["exit_signal"], "SIGXFSZ", "{info}");
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 1 << 20);
    // Without the limit the same write completes.
    let (_, info) = api.run(&cmd, json!({})).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 10_000_000);
}

#[tokio::test]
async fn open_files_caps_descriptors() {
    let api = open();
    // Descriptors 0..=7 fit under 8; the ninth open fails.
    let cmd = "exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null 7</dev/null; echo seven; \
               exec 8</dev/null; echo eight";
    let (out, info) = api.run(cmd, json!({"open_files": 8})).await;
    assert!(out.contains("seven"), "{out:?}");
    assert!(!out.contains("eight"), "{out:?}");
    assert!(out.contains("Too many open files"), "{out:?}");
    assert_ne!(info["exit_code"], 0);
    let (out, _) = api.run(cmd, json!({"open_files": 64})).await;
    assert!(out.contains("eight"), "{out:?}");
}

/// The soft value of `/proc/self/limits` line `name` in `text` (a command's output).
fn soft(text: &str, name: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} not in {text:?}"));
    line[name.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn processes_sets_the_users_process_limit() {
    // The kernel exempts root from RLIMIT_NPROC, so only the value is checked here.
    let api = open();
    let (out, _) = api
        .run("cat /proc/self/limits", json!({"processes": 77}))
        .await;
    assert_eq!(soft(&out, "Max processes"), "77");
}

#[tokio::test]
async fn values_above_the_maximum_or_negative_are_refused_by_name() {
    let max = Limits::default()
        .with(Limit::MemoryBytes, 1 << 30)
        .with(Limit::CpuSeconds, 60);
    let api = Api::with(Limits::default(), max);
    let m = api.refused(json!({"memory_bytes": (1u64 << 30) + 1})).await;
    assert_eq!(
        m,
        "Limit \"memory_bytes\" (1073741825) is above this agent's maximum (1073741824)."
    );
    let m = api.refused(json!({"cpu_seconds": 61})).await;
    assert!(m.contains("\"cpu_seconds\""), "{m}");
    for name in [
        "memory_bytes",
        "cpu_seconds",
        "open_files",
        "file_size_bytes",
        "processes",
    ] {
        let m = api.refused(json!({ name: -1 })).await;
        assert_eq!(
            m,
            format!("Limit \"{name}\" must not be negative (got -1).")
        );
        let m = api.refused(json!({ name: 0 })).await;
        assert!(m.contains(&format!("\"{name}\" must be at least 1")), "{m}");
    }
    // An unknown limit is named too (JSON error with the serde detail).
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v0/processes/start",
            Some(json!({"command": "true", "limits": {"memory": 5}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("memory"), "{v}");
}

#[tokio::test]
async fn defaults_and_maximums_apply_to_commands_that_ask_for_nothing() {
    let defaults = Limits::default().with(Limit::OpenFiles, 100);
    let max = Limits::default()
        .with(Limit::OpenFiles, 200)
        .with(Limit::FileSizeBytes, 4096 * 1024);
    let api = Api::with(defaults, max);
    let (out, info) = api.run("cat /proc/self/limits", json!({})).await;
    assert_eq!(soft(&out, "Max open files"), "100");
    assert_eq!(soft(&out, "Max file size"), (4096 * 1024).to_string());
    assert_eq!(
        info["limits"],
        json!({"open_files": 100, "file_size_bytes": 4096 * 1024})
    );
    let (out, _) = api
        .run("cat /proc/self/limits", json!({"open_files": 150}))
        .await;
    assert_eq!(soft(&out, "Max open files"), "150");
    // No limits configured or asked for: none in force, none reported.
    let (out, info) = open().run("cat /proc/self/limits", json!({})).await;
    assert_eq!(soft(&out, "Max file size"), "unlimited");
    assert!(info.get("limits").is_none(), "{info}");
}

#[tokio::test]
async fn health_says_how_limits_are_enforced() {
    let (s, v) = open().call(Method::GET, "/api/v0/health", None).await;
    assert_eq!(s, StatusCode::OK);
    // A manager that was not asked to use cgroups says so.
    assert_eq!(v["limits_mode"], "rlimits");
    assert!(
        v["limits_detail"].as_str().unwrap().contains("turned off"),
        "{v}"
    );
}
