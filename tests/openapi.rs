//! `docs/openapi.yaml` against the code, without a network:
//! - every route the router serves is in the document and every (path, method) in the document
//!   is routed (probed through `api::router`; the routes are also read from `src/api/`);
//! - `GET /api/v0/openapi.json` serves the document, for this version;
//! - the wire types, serialised by the Rust code (fully populated values, and real answers of
//!   the router to real requests), validate against the document's schemas made strict, and
//!   the document validates as OpenAPI 3.1 (`tests/openapi/check.py`, which needs the Python
//!   packages of `.ci/python-requirements.txt`; that part prints `SKIP openapi: <reason>`
//!   elsewhere).
//!
//! Schemathesis against a real agent through a real tunnel is `tests/schemathesis.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wgagent::api::file_types::*;
use wgagent::api::types::*;
use wgagent::api::{AppState, router};
use wgagent::proc::{Manager, ManagerConfig};

const T: Duration = Duration::from_secs(30);
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn document() -> Value {
    serde_json::from_str(wgagent::api::openapi::DOCUMENT).expect("the served document is JSON")
}

/// (path, methods) of the document, methods upper case.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let doc = document();
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| METHODS.contains(&k.to_uppercase().as_str()))
                .map(|k| k.to_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

struct App {
    router: axum::Router,
}

impl App {
    fn new() -> App {
        App {
            router: router(AppState::new(Manager::new(ManagerConfig::default()))),
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(
            T,
            self.router.clone().oneshot(req.body(body.into()).unwrap()),
        )
        .await
        .expect("answered in time")
        .unwrap();
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, bytes)
    }

    async fn json(&self, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let (status, bytes) = self
            .call(method, uri, &[("content-type", "application/json")], body)
            .await;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {uri}: {status}: not JSON ({e}): {bytes:?}"));
        (status, value)
    }

    /// A JSON call that must answer `status`; its JSON body.
    async fn expect(&self, method: &str, uri: &str, body: Value, status: StatusCode) -> Value {
        let (s, value) = self.json(method, uri, body).await;
        assert_eq!(s, status, "{method} {uri}: {value}");
        value
    }

    /// A call with these headers and body that must answer `status` with JSON; that JSON.
    async fn raw(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
        status: StatusCode,
    ) -> Value {
        let (s, bytes) = self.call(method, uri, headers, body).await;
        assert_eq!(
            s,
            status,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).unwrap()
    }
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_exists() {
    let app = App::new();
    let documented = documented();
    assert!(documented.len() >= 12, "{documented:?}");
    for (path, methods) in &documented {
        let uri = path.replace("{id}", "no-such-process");
        for method in METHODS {
            let (status, body) = app.call(method, &uri, &[], Vec::new()).await;
            let text = String::from_utf8_lossy(&body);
            let routed =
                status != StatusCode::METHOD_NOT_ALLOWED && !text.contains("Route not found");
            if methods.contains(method) {
                assert!(
                    routed,
                    "{method} {path} is documented but not routed: {status} {text}"
                );
            } else {
                assert!(
                    !routed,
                    "{method} {path} is routed ({status} {text}) but not documented"
                );
            }
        }
    }

    // Routes declared in the code, read from the source: none may be missing from the document.
    let mut declared = BTreeSet::new();
    for file in rust_files(&repo().join("src/api")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for piece in text.split(".route(").skip(1) {
            let Some(literal) = piece.trim_start().strip_prefix('"') else {
                continue;
            };
            let route = &literal[..literal.find('"').unwrap()];
            declared.insert(route.to_owned());
        }
    }
    assert!(declared.len() >= 12, "{declared:?}");
    for route in &declared {
        assert!(
            documented.contains_key(route),
            "route {route} (src/api) is not in docs/openapi.yaml"
        );
    }
    for path in documented.keys() {
        assert!(
            declared.contains(path),
            "{path} is documented but no `.route(\"{path}\"` exists in src/api"
        );
    }
}

#[tokio::test]
async fn the_document_is_served_for_this_version() {
    let app = App::new();
    let (status, served) = app.json("GET", "/api/v0/openapi.json", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, document());
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn wire_types_match_the_schemas() {
    let examples = examples().await;
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served.json");
    std::fs::write(&served, wgagent::api::openapi::DOCUMENT).unwrap();
    let examples_path = dir.path().join("examples.json");
    std::fs::write(&examples_path, serde_json::to_vec(&examples).unwrap()).unwrap();
    let probe = Command::new("python3")
        .args([
            "-c",
            "import openapi_spec_validator, jsonschema, referencing, yaml",
        ])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        println!(
            "SKIP openapi: python3 lacks openapi-spec-validator/jsonschema/PyYAML \
             (pip install -r .ci/python-requirements.txt)"
        );
        return;
    }
    let out = Command::new("python3")
        .arg(repo().join("tests/openapi/check.py"))
        .arg(repo().join("docs/openapi.yaml"))
        .arg(&served)
        .arg(&examples_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "docs/openapi.yaml does not match the code:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The check can fail: a field the document does not know is refused.
    let mut wrong = examples.clone();
    wrong.insert(
        "HealthResponse".into(),
        vec![json!({"status": "ok", "version": "x", "uptime_seconds": 1,
                    "processes_running": 0, "undocumented": true})],
    );
    std::fs::write(&examples_path, serde_json::to_vec(&wrong).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(repo().join("tests/openapi/check.py"))
        .arg(repo().join("docs/openapi.yaml"))
        .arg(&served)
        .arg(&examples_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("undocumented"));
}

fn full_limits() -> ProcessLimits {
    ProcessLimits {
        memory_bytes: Some(1 << 30),
        cpu_seconds: Some(60),
        open_files: Some(1024),
        file_size_bytes: Some(1 << 20),
        processes: Some(64),
    }
}

/// Example values per schema name: every wire type fully populated (struct literals, so a new
/// field is a compile error here until it is added, and then a schema error until the document
/// has it), minimal values, and real answers of the router.
async fn examples() -> BTreeMap<String, Vec<Value>> {
    let mut ex: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut add = |name: &str, v: Value| ex.entry(name.to_owned()).or_default().push(v);

    // Requests, full and minimal.
    add(
        "StartProcessRequest",
        val(StartProcessRequest {
            command: "echo hi".into(),
            workdir: Some("/tmp".into()),
            env: [("A".to_owned(), "b".to_owned())].into(),
            background: true,
            idempotency_key: Some("k".into()),
            timeout_ms: Some(1000),
            stdin: Some("pipe".into()),
            pty: Some(TerminalSize { rows: 24, cols: 80 }),
            user: Some("alice".into()),
            limits: Some(full_limits()),
        }),
    );
    add(
        "StartProcessRequest",
        val(StartProcessRequest {
            command: "true".into(),
            ..Default::default()
        }),
    );
    add(
        "SignalProcessRequest",
        val(SignalProcessRequest {
            signal: "terminate".into(),
        }),
    );
    add(
        "LsRequest",
        val(LsRequest {
            path: vec!["etc".into()],
            relativity: LsRelativity::Root,
        }),
    );
    add("LsRequest", json!({"path": null, "relativity": ""}));
    add(
        "FileEditRequest",
        val(FileEditRequest {
            files: vec![FileEdits {
                path: "/a".into(),
                edits: vec![FileEdit {
                    search: "x".into(),
                    replace: "y".into(),
                    replace_all: true,
                }],
                if_match: Some("0".repeat(64)),
            }],
            include_diff: true,
        }),
    );
    add(
        "FileEditRequest",
        json!({"files": [{"path": "/a", "edits": null}]}),
    );

    // Responses, fully populated.
    let info = ProcessInfo {
        id: "i".into(),
        command: "c".into(),
        workdir: "/".into(),
        background: false,
        running: false,
        exit_code: Some(-1),
        started_at_unix: 1,
        exited_at_unix: Some(2),
        pid: Some(3),
        exit_signal: Some("SIGKILL".into()),
        exit_reason: Some("signaled".into()),
        output_bytes: Some(4),
        log_start: Some(0),
        log_error: Some("disk full".into()),
        started_by: Some(StartedBy {
            peer: "control-0".into(),
            public_key: "k".into(),
        }),
        user: Some("alice".into()),
        limits: Some(full_limits()),
    };
    add(
        "ListProcessesResponse",
        val(ListProcessesResponse {
            processes: vec![info],
        }),
    );
    add(
        "ProcessOutputResponse",
        val(ProcessOutputResponse {
            output: "o".into(),
            truncated: Some(ProcessTruncation {
                original_bytes: 9,
                retained_bytes: 5,
                omitted_bytes: 4,
                strategy: "head_tail".into(),
                truncated_lines: 1,
            }),
            running: false,
            exit_code: Some(0),
        }),
    );
    add("TerminalSize", val(TerminalSize { rows: 1, cols: 2 }));
    add("StdinResponse", val(StdinResponse { written: 3 }));
    add(
        "StdinTimedOut",
        val(StdinTimedOut {
            message: "m".into(),
            written: 3,
        }),
    );
    add(
        "RangeNotRetained",
        val(RangeNotRetained {
            message: "m".into(),
            log_start: 5,
        }),
    );
    add(
        "Message",
        val(Response {
            message: "m".into(),
            detail: Some("d".into()),
        }),
    );
    add(
        "LsResponse",
        val(LsResponse {
            absolute_path: vec!["tmp".into()],
            absolute_path_string: "/tmp".into(),
            contents: vec![LsFile {
                name: "a".into(),
                absolute_path_string: "/tmp/a".into(),
                is_dir: false,
                is_symlink: true,
                size: Some(1),
                mode: Some("0644".into()),
                modified_unix: Some(1),
            }],
            total_entries: Some(1),
            truncated: true,
        }),
    );
    add(
        "ReadFileLinesResponse",
        val(ReadFileLinesResponse {
            success: true,
            file_size: 2,
            total_lines: 1,
            lines_read: 1,
            content: "1\tx".into(),
            error: "e".into(),
            hash: Some("h".into()),
            next_offset: Some(2),
        }),
    );
    add(
        "WriteFileResponse",
        val(WriteFileResponse {
            message: "m".into(),
            hash: Some("h".into()),
            bytes: Some(1),
        }),
    );
    add(
        "FileEditResponse",
        val(FileEditResponse {
            files: Some(vec![FileEditResult {
                path: "/a".into(),
                diff: "d".into(),
                hash: Some("h".into()),
            }]),
        }),
    );
    add(
        "FileError",
        val(FileErrorResponse {
            message: "m".into(),
            detail: Some("d".into()),
            path: Some("/a".into()),
            current_hash: Some("h".into()),
        }),
    );

    // Real answers of a real router to real requests.
    let app = App::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let null = || Value::Null;
    let started = app
        .expect(
            "POST",
            "/api/v0/processes/start",
            json!({"command": "printf 'x%.0s' $(seq 1 40000); kill -9 $$", "workdir": d}),
            StatusCode::OK,
        )
        .await;
    add("StartProcessResponse", started.clone());
    let id = started["id"].as_str().unwrap().to_owned();
    let wait = |id: &str| format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=20000");
    let out = app.expect("GET", &wait(&id), null(), StatusCode::OK).await;
    assert_eq!(out["running"], json!(false), "{out}");
    assert!(out["truncated"].is_object(), "{out}");
    add("ProcessOutputResponse", out);
    let (_, list) = app.json("GET", "/api/v0/processes/list", null()).await;
    assert!(list["processes"][0]["exit_signal"].is_string(), "{list}");
    add("ListProcessesResponse", list);
    let (_, health) = app.json("GET", "/api/v0/health", null()).await;
    add("HealthResponse", health);
    let uri = format!("/api/v0/processes/{id}");
    add(
        "Message",
        app.expect("DELETE", &uri, null(), StatusCode::OK).await,
    );
    // Process I/O: a piped stdin fed and closed, a range past the end, a terminal resized.
    let start = |body: Value| app.expect("POST", "/api/v0/processes/start", body, StatusCode::OK);
    let cat = start(json!({"command": "cat", "stdin": "pipe", "workdir": d})).await;
    let cat = cat["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/v0/processes/{cat}/stdin?close=true");
    let fed = app.raw("POST", &uri, &[], "fed\n", StatusCode::OK).await;
    add("StdinResponse", fed);
    let out = app.expect("GET", &wait(&cat), null(), StatusCode::OK).await;
    assert_eq!(out["output"], json!("fed\n"), "{out}");
    let (uri, range) = (
        format!("/api/v0/processes/{cat}/log"),
        [("range", "bytes=100-")],
    );
    let past = app
        .raw(
            "GET",
            &uri,
            &range,
            Vec::new(),
            StatusCode::RANGE_NOT_SATISFIABLE,
        )
        .await;
    add("RangeNotRetained", past);
    let pty = json!({"command": "sleep 30", "pty": {"rows": 24, "cols": 80}, "workdir": d});
    let tty = start(pty).await;
    let tty = tty["id"].as_str().unwrap().to_owned();
    let (uri, size) = (
        format!("/api/v0/processes/{tty}/resize"),
        json!({"rows": 50, "cols": 132}),
    );
    add(
        "Message",
        app.expect("POST", &uri, size, StatusCode::OK).await,
    );
    let (uri, kill) = (
        format!("/api/v0/processes/{tty}/signal"),
        json!({"signal": "kill"}),
    );
    app.expect("POST", &uri, kill, StatusCode::OK).await;
    for (method, uri, body) in [
        ("GET", "/api/v0/processes/nope/output", null()),
        ("POST", "/api/v0/processes/start", json!({"command": ""})),
        (
            "POST",
            "/api/v0/processes/nope/signal",
            json!({"signal": "sigh"}),
        ),
        ("GET", "/api/v0/no-such-route", null()),
    ] {
        let (s, e) = app.json(method, uri, body).await;
        assert!(s.is_client_error(), "{s} {e}");
        add("Error", e);
    }

    std::fs::write(dir.path().join("f.txt"), "one\ntwo\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("f.txt", dir.path().join("link")).unwrap();
    for (name, method, uri) in [
        (
            "LsResponse",
            "POST",
            format!("/api/v0/list-directory?path={d}"),
        ),
        (
            "ResolvePathResponse",
            "GET",
            format!("/api/v0/resolve-path?path={d}/link"),
        ),
        (
            "ReadFileLinesResponse",
            "GET",
            format!("/api/v0/read-file-lines?path={d}/f.txt"),
        ),
        (
            "ReadFileLinesResponse",
            "GET",
            format!("/api/v0/read-file-lines?path={d}/f.txt&offset=9"),
        ),
    ] {
        add(name, app.expect(method, &uri, null(), StatusCode::OK).await);
    }
    let uri = format!("/api/v0/write-file?path={d}/new.txt");
    let written = app.raw("POST", &uri, &[], "new\n", StatusCode::OK).await;
    add("WriteFileResponse", written);
    let stale = format!("\"{}\"", "0".repeat(64));
    let refused = app
        .raw(
            "POST",
            &uri,
            &[("if-match", &stale)],
            "newer\n",
            StatusCode::PRECONDITION_FAILED,
        )
        .await;
    add("FileError", refused);
    let edits = json!({"files": [{"path": format!("{d}/f.txt"),
                       "edits": [{"search": "two", "replace": "2"}]}], "include_diff": true});
    let edited = app
        .expect("POST", "/api/v0/edit-files", edits, StatusCode::OK)
        .await;
    add("FileEditResponse", edited);
    ex
}

fn val<T: serde::Serialize>(x: T) -> Value {
    serde_json::to_value(x).unwrap()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            // Unit-test modules build routers of their own (`src/api/serve/tests.rs`).
            && !path.file_name().is_some_and(|n| n.to_string_lossy().ends_with("tests.rs"))
        {
            out.push(path);
        }
    }
    out
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
