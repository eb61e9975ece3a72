//! Process I/O through `api::router` (no sockets): the log with byte ranges and follow, stdin,
//! the pty, persistence across a restart of the manager.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wgagent::api::{AppState, router};
use wgagent::proc::{Manager, ManagerConfig};

const T: Duration = Duration::from_secs(30);

struct Api {
    router: axum::Router,
    manager: Manager,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

impl Api {
    fn with(cfg: ManagerConfig) -> Self {
        let manager = Manager::new(cfg);
        Self {
            router: router(AppState::new(manager.clone())),
            manager,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(T, self.router.clone().oneshot(req.body(body).unwrap()))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = tokio::time::timeout(T, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn start(&self, body: Value) -> String {
        let a = self
            .call(
                Method::POST,
                "/api/v0/processes/start",
                &[],
                Body::from(body.to_string()),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
        a.json()["id"].as_str().unwrap().to_owned()
    }

    async fn wait(&self, id: &str) -> Value {
        let a = self
            .call(
                Method::GET,
                &format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=20000"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(a.json()["running"], false, "{:?}", a.json());
        a.json()
    }

    async fn log(&self, id: &str, range: Option<&str>) -> Answer {
        let h: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
        self.call(
            Method::GET,
            &format!("/api/v0/processes/{id}/log"),
            &h,
            Body::empty(),
        )
        .await
    }
}

fn cfg() -> ManagerConfig {
    ManagerConfig::default()
}

#[tokio::test]
async fn log_ranges_follow_rfc_9110() {
    let api = Api::with(cfg());
    let id = api.start(json!({"command": "printf 0123456789"})).await;
    api.wait(&id).await;
    let a = api.log(&id, None).await;
    assert_eq!(
        (a.status, a.body.as_slice()),
        (StatusCode::OK, &b"0123456789"[..])
    );
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert_eq!(a.header("wgagent-log-start"), Some("0"));
    let cases: [(&str, StatusCode, &[u8], Option<&str>); 7] = [
        (
            "bytes=2-",
            StatusCode::PARTIAL_CONTENT,
            b"23456789",
            Some("bytes 2-9/10"),
        ),
        (
            "bytes=2-4",
            StatusCode::PARTIAL_CONTENT,
            b"234",
            Some("bytes 2-4/10"),
        ),
        (
            "bytes=8-100",
            StatusCode::PARTIAL_CONTENT,
            b"89",
            Some("bytes 8-9/10"),
        ),
        (
            "bytes=-3",
            StatusCode::PARTIAL_CONTENT,
            b"789",
            Some("bytes 7-9/10"),
        ),
        (
            "bytes=-30",
            StatusCode::PARTIAL_CONTENT,
            b"0123456789",
            Some("bytes 0-9/10"),
        ),
        (
            "bytes=10-",
            StatusCode::RANGE_NOT_SATISFIABLE,
            b"",
            Some("bytes */10"),
        ),
        ("items=0-1", StatusCode::OK, b"0123456789", None),
    ];
    for (range, status, body, content_range) in cases {
        let a = api.log(&id, Some(range)).await;
        assert_eq!(a.status, status, "{range}");
        if status != StatusCode::RANGE_NOT_SATISFIABLE {
            assert_eq!(a.body, body, "{range}");
        }
        assert_eq!(a.header("content-range"), content_range, "{range}");
    }
    assert_eq!(
        api.log(&id, Some("bytes=5-2")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(api.log("nope", None).await.status, StatusCode::NOT_FOUND);
    // ProcessInfo: the log window.
    let list = api
        .call(Method::GET, "/api/v0/processes/list", &[], Body::empty())
        .await
        .json();
    assert_eq!(list["processes"][0]["log_start"], 0);
    assert_eq!(list["processes"][0]["output_bytes"], 10);
}

#[tokio::test]
async fn ranges_while_running_have_no_total() {
    let api = Api::with(cfg());
    let id = api
        .start(json!({"command": "printf abcdef; exec sleep 300"}))
        .await;
    let mut a = api.log(&id, Some("bytes=1-")).await;
    for _ in 0..200 {
        if a.body.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        a = api.log(&id, Some("bytes=1-")).await;
    }
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(a.body, b"bcdef");
    assert_eq!(a.header("content-range"), Some("bytes 1-5/*"));
    // Past what exists so far, without follow: 416 naming the current end.
    let a = api.log(&id, Some("bytes=6-")).await;
    assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(a.header("content-range"), Some("bytes */6"));
    api.manager
        .signal(&id.as_str().into(), wgagent::proc::Signal::Kill)
        .unwrap();
}

#[tokio::test]
async fn window_moves_and_old_offsets_answer_416() {
    let api = Api::with(ManagerConfig {
        log_max_bytes: 4096,
        ..cfg()
    });
    let id = api.start(json!({"command": "seq 1 5000"})).await;
    let out = api.wait(&id).await;
    assert!(out["output"].as_str().unwrap().starts_with("1\n2\n"));
    let total = 23_893; // bytes of `seq 1 5000`
    let a = api.log(&id, None).await;
    assert_eq!(
        a.header("wgagent-log-start"),
        Some(&*(total - 4096).to_string())
    );
    assert_eq!(a.body.len(), 4096);
    assert!(a.body.ends_with(b"4999\n5000\n"));
    let a = api.log(&id, Some("bytes=0-")).await;
    assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let v = a.json();
    assert_eq!(v["log_start"], total - 4096);
    assert_eq!(
        v["message"],
        format!("Output before byte {} is no longer retained.", total - 4096)
    );
}

#[tokio::test]
async fn follow_streams_until_exit() {
    let api = Api::with(cfg());
    let id = api
        .start(json!({"command": "for i in 1 2 3 4 5; do echo line $i; sleep 0.05; done"}))
        .await;
    let a = api
        .call(
            Method::GET,
            &format!("/api/v0/processes/{id}/log?follow=true"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        String::from_utf8(a.body).unwrap(),
        "line 1\nline 2\nline 3\nline 4\nline 5\n"
    );
    // Resuming mid-way gets exactly the rest.
    let a = api
        .call(
            Method::GET,
            &format!("/api/v0/processes/{id}/log?follow=true"),
            &[("range", "bytes=14-")],
            Body::empty(),
        )
        .await;
    assert_eq!(a.header("wgagent-log-offset"), Some("14"));
    assert_eq!(
        String::from_utf8(a.body).unwrap(),
        "line 3\nline 4\nline 5\n"
    );
}

#[tokio::test]
async fn stdin_pipe_echo_close_and_bounded_wait() {
    let api = Api::with(cfg());
    let id = api.start(json!({"command": "cat", "stdin": "pipe"})).await;
    let post = |q: &'static str, body: &'static str| {
        let id = id.clone();
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &format!("/api/v0/processes/{id}/stdin{q}"),
                &[],
                Body::from(body),
            )
            .await
        }
    };
    let a = post("", "hello\n").await;
    assert_eq!(
        (a.status, a.json()["written"].clone()),
        (StatusCode::OK, json!(6))
    );
    let a = post("?close=true", "bye\n").await;
    assert_eq!(a.status, StatusCode::OK);
    let out = api.wait(&id).await;
    assert_eq!(out["output"], "hello\nbye\n");
    assert_eq!(out["exit_code"], 0);
    // Closed / exited → 409.
    assert_eq!(post("", "x").await.status, StatusCode::CONFLICT);
    // Not started with a pipe → 409.
    let plain = api.start(json!({"command": "sleep 5"})).await;
    let a = api
        .call(
            Method::POST,
            &format!("/api/v0/processes/{plain}/stdin"),
            &[],
            Body::from("x"),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{:?}", a.json());
    // A child that never reads: the pipe fills, the request answers 408 with what went in.
    let stuck = api
        .start(json!({"command": "sleep 300", "stdin": "pipe"}))
        .await;
    let big = vec![b'x'; 1 << 20];
    let a = api
        .call(
            Method::POST,
            &format!("/api/v0/processes/{stuck}/stdin?timeout_ms=300"),
            &[],
            Body::from(big),
        )
        .await;
    assert_eq!(a.status, StatusCode::REQUEST_TIMEOUT, "{:?}", a.json());
    let written = a.json()["written"].as_u64().unwrap();
    assert!(written > 0 && written < 1 << 20, "{written}");
    for p in [plain, stuck] {
        api.manager
            .signal(&p.as_str().into(), wgagent::proc::Signal::Kill)
            .unwrap();
    }
}

#[tokio::test]
async fn pty_is_a_terminal_and_resizes() {
    let api = Api::with(cfg());
    let id = api
        .start(json!({
            "command": "tty; stty size; echo TERM=$TERM; read line; stty size",
            "pty": {"rows": 24, "cols": 80}
        }))
        .await;
    // Wait for the first stty output, then resize and let `read` go on.
    let mut text = String::new();
    for _ in 0..300 {
        text = String::from_utf8_lossy(&api.log(&id, None).await.body).into_owned();
        if text.contains("TERM=") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("24 80"), "{text:?}");
    assert!(text.contains("TERM=xterm-256color"), "{text:?}");
    let a = api
        .call(
            Method::POST,
            &format!("/api/v0/processes/{id}/resize"),
            &[],
            Body::from(r#"{"rows": 40, "cols": 120}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    let a = api
        .call(
            Method::POST,
            &format!("/api/v0/processes/{id}/stdin"),
            &[],
            Body::from("go\n"),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let out = api.wait(&id).await;
    assert!(out["output"].as_str().unwrap().contains("40 120"), "{out}");
    // Not a pty → 409.
    let plain = api.start(json!({"command": "true"})).await;
    let a = api
        .call(
            Method::POST,
            &format!("/api/v0/processes/{plain}/resize"),
            &[],
            Body::from(r#"{"rows": 4, "cols": 4}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn results_survive_a_restart_and_idempotent_starts_do_not_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let state = ManagerConfig {
        state_dir: Some(dir.path().to_owned()),
        ..cfg()
    };
    let marker = dir.path().join("runs");
    let cmd = format!("echo run >> {}; seq 1 3", marker.display());
    let (id, instance) = {
        let api = Api::with(state.clone());
        let id = api
            .start(json!({"command": cmd, "idempotency_key": "k1"}))
            .await;
        api.wait(&id).await;
        let running = api.start(json!({"command": "sleep 300"})).await;
        api.manager.shutdown(Duration::from_secs(2)).await;
        let _ = running;
        (id, api.manager.instance_id().to_owned())
    };
    // A truncated and a foreign file are skipped with a warning, not a crash.
    let bogus = uuid::Uuid::new_v4();
    std::fs::write(
        dir.path().join(format!("procs/{bogus}.json")),
        b"{\"version\":1,\"id",
    )
    .unwrap();
    std::fs::write(dir.path().join("procs/README"), b"not ours").unwrap();

    let api = Api::with(state.clone());
    assert_ne!(api.manager.instance_id(), instance);
    let health = api
        .call(Method::GET, "/api/v0/health", &[], Body::empty())
        .await
        .json();
    assert_eq!(health["instance_id"], api.manager.instance_id());
    let out = api.wait(&id).await;
    assert_eq!(out["output"], "1\n2\n3\n");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(api.log(&id, Some("bytes=2-")).await.body, b"2\n3\n");
    let list = api
        .call(Method::GET, "/api/v0/processes/list", &[], Body::empty())
        .await
        .json();
    let procs = list["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2, "{list}");
    assert!(
        procs.iter().any(|p| p["exit_reason"] == "agent_shutdown"),
        "{list}"
    );
    // The retried start returns the old id and does not run the command again.
    let again = api
        .start(json!({"command": cmd, "idempotency_key": "k1"}))
        .await;
    assert_eq!(again, id);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\n");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A process writing 1 GiB as fast as it can, followed by a reader that stalls after its first
/// chunk: the writer finishes without waiting for the reader (the log is a bounded ring file,
/// nothing is buffered for the follower), memory stays bounded, and the stalled follower
/// learns it was overtaken instead of receiving wrong bytes.
///
/// The writer starts its gigabyte only once the follower has its first chunk: at ~1 GB/s it
/// laps the 1 MiB ring in about a millisecond, so on a loaded machine a follower could be
/// overtaken before its first read (which is right, but not what this test is about; it
/// failed 9 of 15 runs next to three busy loops before the gate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_writer_slow_follower_bounded_and_unslowed() {
    let api = Api::with(ManagerConfig {
        log_max_bytes: 1 << 20,
        ..cfg()
    });
    let before = rss_kib();
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("go");
    // Bounded wait for the gate (10 s), then the gigabyte.
    let command = format!(
        "echo ready; i=0; while [ ! -e {g} ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; \
         head -c 1073741824 /dev/zero",
        g = gate.display()
    );
    let id = api.start(json!({ "command": command })).await;
    let req = Request::builder()
        .uri(format!("/api/v0/processes/{id}/log?follow=true"))
        .body(Body::empty())
        .unwrap();
    let resp = api.router.clone().oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"ready\n"[..]));
    std::fs::write(&gate, b"").unwrap();
    // The follower stalls; the writer must still finish.
    let out = api.wait(&id).await;
    assert_eq!(out["exit_code"], 0);
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    let list = api
        .call(Method::GET, "/api/v0/processes/list", &[], Body::empty())
        .await
        .json();
    let total = (1u64 << 30) + 6;
    assert_eq!(list["processes"][0]["output_bytes"], total);
    assert_eq!(list["processes"][0]["log_start"], total - (1 << 20));
    // Resuming the stalled follower: its next bytes are gone, and it is told so.
    let mut overtaken = false;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            overtaken = true;
            break;
        }
    }
    assert!(
        overtaken,
        "a lapped follower must end with an error, not wrong bytes"
    );
}
