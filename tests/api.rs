//! The process API driven through `api::router` with `tower::ServiceExt::oneshot`: every case of
//! the reference implementation's suite, plus our extensions. Real processes, no sockets.

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

impl Api {
    fn new() -> Self {
        Self::with(ManagerConfig::default())
    }

    fn with(cfg: ManagerConfig) -> Self {
        let manager = Manager::new(cfg);
        Self {
            router: router(AppState::new(manager.clone())),
            manager,
        }
    }

    async fn raw(&self, method: Method, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let resp = tokio::time::timeout(T, self.router.clone().oneshot(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            ct.as_deref(),
            Some("application/json"),
            "{status} {:?}",
            String::from_utf8_lossy(&bytes)
        );
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.raw(Method::POST, uri, body.to_string()).await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.raw(Method::GET, uri, Body::empty()).await
    }

    async fn start(&self, body: Value) -> String {
        let (s, v) = self.post("/api/v0/processes/start", body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["started"], true);
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(!id.is_empty());
        id
    }

    /// Server-side wait: no polling loop.
    async fn wait_exit(&self, id: &str) -> Value {
        let (s, v) = self
            .get(&format!(
                "/api/v0/processes/{id}/output?wait=true&timeout_ms=20000"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["running"], false, "process {id} still running: {v}");
        v
    }

    async fn run(&self, cmd: &str) -> Value {
        let id = self.start(json!({"command": cmd})).await;
        self.wait_exit(&id).await
    }
}

#[tokio::test]
async fn start_returns_id() {
    let api = Api::new();
    api.start(json!({"command": "echo hello"})).await;
    api.start(json!({"command": "echo hello", "background": true}))
        .await;
}

#[tokio::test]
async fn start_validation() {
    let api = Api::new();
    let (s, v) = api
        .post("/api/v0/processes/start", json!({"command": ""}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["message"], "Command is required.");
    let (s, v) = api
        .raw(Method::POST, "/api/v0/processes/start", "{invalid json")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("valid JSON"));
    assert!(v["detail"].is_string());
    // Valid JSON of the wrong type is a JSON error too (as API.md and the Coder agent say),
    // not an empty request.
    for body in ["[]", "[\"true\"]", "\"true\"", " 7"] {
        let (s, v) = api.raw(Method::POST, "/api/v0/processes/start", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["message"], "Request body must be valid JSON.", "{body}");
    }
    let (s, v) = api
        .post(
            "/api/v0/processes/start",
            json!({"command": "true", "env": {"A": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = api.raw(Method::POST, "/api/v0/processes/start", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = api
        .post(
            "/api/v0/processes/start",
            json!({"command": "true", "env": {"A=B": "x"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api
        .post(
            "/api/v0/processes/start",
            json!({"command": "true", "workdir": "/does/not/exist"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("/does/not/exist"));
}

#[tokio::test]
async fn workdir_and_env() {
    let api = Api::new();
    let dir = tempfile::tempdir().unwrap();
    let id = api
        .start(json!({"command": "touch marker.txt && ls marker.txt", "workdir": dir.path()}))
        .await;
    let v = api.wait_exit(&id).await;
    assert_eq!(v["exit_code"], 0);
    assert!(v["output"].as_str().unwrap().contains("marker.txt"));
    assert!(dir.path().join("marker.txt").exists());

    let id = api
        .start(json!({"command": "printenv KEY", "env": {"KEY": "value"}}))
        .await;
    assert_eq!(api.wait_exit(&id).await["output"], "value\n");
    // Request env wins over the agent's own environment.
    let id = api
        .start(json!({"command": "printenv PATH", "env": {"PATH": "/custom:/usr/bin:/bin"}}))
        .await;
    assert_eq!(
        api.wait_exit(&id).await["output"],
        "/custom:/usr/bin:/bin\n"
    );
}

#[tokio::test]
async fn list_empty_is_array() {
    let api = Api::new();
    let (s, v) = api.get("/api/v0/processes/list").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["processes"], json!([]));
}

#[tokio::test]
async fn list_running_and_exited() {
    let api = Api::new();
    let done = api.start(json!({"command": "echo done"})).await;
    api.wait_exit(&done).await;
    let running = api.start(json!({"command": "sleep 300"})).await;
    let (_, v) = api.get("/api/v0/processes/list").await;
    let procs = v["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2);
    // Running first.
    assert_eq!(procs[0]["id"], running.as_str());
    assert_eq!(procs[0]["running"], true);
    assert!(procs[0].get("exit_code").is_none());
    assert_eq!(procs[1]["id"], done.as_str());
    assert_eq!(procs[1]["running"], false);
    assert_eq!(procs[1]["exit_code"], 0);
    assert_eq!(procs[1]["exit_reason"], "exited");
    assert_eq!(procs[1]["output_bytes"], 5);
    assert!(
        procs[1]["exited_at_unix"].as_i64().unwrap()
            >= procs[1]["started_at_unix"].as_i64().unwrap()
    );
}

#[tokio::test]
async fn output_cases() {
    let api = Api::new();
    let v = api.run("echo hello-output").await;
    assert_eq!(v["exit_code"], 0);
    assert!(v["output"].as_str().unwrap().contains("hello-output"));
    assert!(v.get("truncated").is_none());

    let id = api.start(json!({"command": "sleep 300"})).await;
    let (s, v) = api.get(&format!("/api/v0/processes/{id}/output")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["running"], true);
    // A bounded wait on a running process returns `running: true` when it times out.
    let (s, v) = api
        .get(&format!(
            "/api/v0/processes/{id}/output?wait=true&timeout_ms=100"
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["running"], true);

    let (s, v) = api.get("/api/v0/processes/nope/output").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], "Process \"nope\" not found.");
}

#[tokio::test]
async fn signal_cases() {
    let api = Api::new();
    for sig in ["kill", "terminate", "interrupt", "hangup"] {
        let id = api.start(json!({"command": "exec sleep 300"})).await;
        // Let the shell exec `sleep` first: `sh -c` catches SIGINT while it starts up.
        let pid = api.manager.get(&id.as_str().into()).unwrap().pid;
        for _ in 0..250 {
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (s, v) = api
            .post(
                &format!("/api/v0/processes/{id}/signal"),
                json!({"signal": sig}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            v["message"],
            format!("Signal \"{sig}\" sent to process \"{id}\".")
        );
        let v = api.wait_exit(&id).await;
        assert_eq!(v["exit_code"], -1, "{sig}: {v}");
    }
    let (s, _) = api
        .post("/api/v0/processes/nope/signal", json!({"signal": "kill"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let done = api.start(json!({"command": "true"})).await;
    api.wait_exit(&done).await;
    let (s, v) = api
        .post(
            &format!("/api/v0/processes/{done}/signal"),
            json!({"signal": "kill"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["message"], format!("Process \"{done}\" is not running."));

    let (s, v) = api
        .post(
            &format!("/api/v0/processes/{done}/signal"),
            json!({"signal": ""}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["message"], "Signal is required.");
    // Body validation comes before the lookup.
    let (s, v) = api
        .post("/api/v0/processes/nope/signal", json!({"signal": "SIGFOO"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Unsupported signal \"SIGFOO\".")
    );
    let (s, _) = api
        .raw(Method::POST, "/api/v0/processes/nope/signal", "{")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn killed_process_reports_signal() {
    let api = Api::new();
    let id = api.start(json!({"command": "sleep 300"})).await;
    api.post(
        &format!("/api/v0/processes/{id}/signal"),
        json!({"signal": "kill"}),
    )
    .await;
    api.wait_exit(&id).await;
    let (_, v) = api.get("/api/v0/processes/list").await;
    let p = &v["processes"][0];
    assert_eq!(p["exit_signal"], "SIGKILL");
    assert_eq!(p["exit_reason"], "signaled");
}

#[tokio::test]
async fn lifecycle() {
    let api = Api::new();
    let v = api.run("echo line1 && echo line2").await;
    assert_eq!(v["output"], "line1\nline2\n");
    let v = api.run("exit 42").await;
    assert_eq!(v["exit_code"], 42);
    let v = api.run("echo stdout-msg && echo stderr-msg >&2").await;
    let out = v["output"].as_str().unwrap();
    assert!(out.contains("stdout-msg") && out.contains("stderr-msg"));
}

#[tokio::test]
async fn large_output_is_truncated_head_tail() {
    let api = Api::new();
    // 1155 lines of ~65 bytes, about 75 KB.
    let v = api
        .run("i=0; while [ $i -lt 1155 ]; do printf 'line %04d: abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRS\\n' $i; i=$((i+1)); done")
        .await;
    assert_eq!(v["exit_code"], 0);
    let t = &v["truncated"];
    assert_eq!(t["strategy"], "head_tail");
    assert!(t["omitted_bytes"].as_u64().unwrap() > 0);
    assert!(t["original_bytes"].as_u64().unwrap() > t["retained_bytes"].as_u64().unwrap());
    let out = v["output"].as_str().unwrap();
    assert!(out.contains("... [omitted"));
    assert!(out.len() <= 32768);
    assert!(out.starts_with("line 0000:"));
    assert!(out.ends_with("line 1154: abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRS\n"));
}

#[tokio::test]
async fn delete_and_health() {
    let api = Api::new();
    let running = api.start(json!({"command": "sleep 300"})).await;
    let (s, v) = api.get("/api/v0/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["processes_running"], 1);
    let (s, _) = api
        .raw(
            Method::DELETE,
            &format!("/api/v0/processes/{running}"),
            Body::empty(),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let done = api.start(json!({"command": "true"})).await;
    api.wait_exit(&done).await;
    let (s, _) = api
        .raw(
            Method::DELETE,
            &format!("/api/v0/processes/{done}"),
            Body::empty(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .raw(
            Method::DELETE,
            &format!("/api/v0/processes/{done}"),
            Body::empty(),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_route_wrong_method_and_large_body() {
    let api = Api::new();
    let (s, v) = api.get("/api/v0/nothing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["message"].is_string());
    let (s, v) = api.get("/api/v0/processes/start").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["message"].is_string());
    let big = format!("{{\"command\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (s, v) = api.raw(Method::POST, "/api/v0/processes/start", big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
}

#[tokio::test]
async fn idempotency_key() {
    let api = Api::new();
    let body = json!({"command": "echo once >> marker; cat marker", "idempotency_key": "k1", "workdir": "/tmp"});
    let dir = tempfile::tempdir().unwrap();
    let mut body = body;
    body["workdir"] = json!(dir.path());
    let a = api.start(body.clone()).await;
    let b = api.start(body.clone()).await;
    assert_eq!(a, b);
    assert_eq!(api.wait_exit(&a).await["output"], "once\n");
    let mut other = body.clone();
    other["command"] = json!("echo different");
    let (s, v) = api.post("/api/v0/processes/start", other).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (_, v) = api.get("/api/v0/processes/list").await;
    assert_eq!(v["processes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn timeout_ms_terminates_group() {
    let api = Api::new();
    let id = api
        .start(json!({"command": "sleep 300 | cat", "timeout_ms": 200}))
        .await;
    api.wait_exit(&id).await;
    let (_, v) = api.get("/api/v0/processes/list").await;
    assert_eq!(v["processes"][0]["exit_reason"], "timed_out");
    let pid = v["processes"][0]["pid"].as_u64().unwrap() as u32;
    assert!(group_gone(pid).await);
}

/// True once no process (zombies included) is left in the group; bounded wait because orphaned
/// members are reaped by init a moment after they die.
async fn group_gone(pgid: u32) -> bool {
    for _ in 0..250 {
        if !wgagent::proc::spawn::group_alive(pgid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn limits_max_running_and_tracked() {
    let api = Api::with(ManagerConfig {
        max_running: 2,
        max_tracked: 3,
        ..Default::default()
    });
    let a = api.start(json!({"command": "sleep 300"})).await;
    let _b = api.start(json!({"command": "sleep 300"})).await;
    let (s, v) = api
        .post("/api/v0/processes/start", json!({"command": "sleep 300"}))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(v["message"].as_str().unwrap().contains("limit 2"));
    api.post(
        &format!("/api/v0/processes/{a}/signal"),
        json!({"signal": "kill"}),
    )
    .await;
    api.wait_exit(&a).await;
    let c = api.start(json!({"command": "true"})).await;
    api.wait_exit(&c).await;
    // 3 tracked (a exited, b running, c exited): the next start evicts a, the oldest exited.
    let _d = api.start(json!({"command": "true"})).await;
    let (s, _) = api.get(&format!("/api/v0/processes/{a}/output")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.get(&format!("/api/v0/processes/{c}/output")).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = api.get("/api/v0/processes/list").await;
    assert_eq!(v["processes"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn shutdown_refuses_starts_and_leaves_no_child() {
    let api = Api::new();
    let ids = [
        api.start(json!({"command": "sleep 300 | cat"})).await,
        api.start(json!({"command": "sleep 300 & wait"})).await,
        api.start(json!({"command": "trap '' TERM; sleep 300"}))
            .await,
    ];
    let (_, v) = api.get("/api/v0/processes/list").await;
    let pids: Vec<u32> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect();
    tokio::time::timeout(T, api.manager.shutdown(Duration::from_millis(500)))
        .await
        .unwrap();
    let (s, _) = api
        .post("/api/v0/processes/start", json!({"command": "true"}))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    for pid in pids {
        assert!(group_gone(pid).await, "group {pid} survived shutdown");
    }
    for id in ids {
        let (_, v) = api.get(&format!("/api/v0/processes/{id}/output")).await;
        assert_eq!(v["running"], false);
    }
    let (_, v) = api.get("/api/v0/processes/list").await;
    assert!(
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["exit_reason"] == "agent_shutdown")
    );
}
