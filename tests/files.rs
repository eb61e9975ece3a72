//! The workspace file routes: the reference agent's HTTP-level cases through `api::router`
//! (oneshot, real files in temp directories), then every route through a real WireGuard tunnel
//! with the SDK: preconditions between two control nodes, atomicity under a concurrent reader,
//! interrupted and oversized writes, binary files, symlinks and `..`, and the CLI verbs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wgagent::api::file_types::{FileEdit, FileEditRequest, FileEdits, LsRequest};
use wgagent::api::{AppState, router};
use wgagent::client::{AgentConn, AgentOptions, WriteCondition};
use wgagent::files::{Files, Limits};
use wgagent::proc::{Manager, ManagerConfig};

/// The router alone, served by `oneshot`.
struct Api {
    router: axum::Router,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Api {
    fn new() -> Self {
        Self::with(Limits::default())
    }

    fn with(limits: Limits) -> Self {
        let mut st = AppState::new(Manager::new(ManagerConfig::default()));
        st.files = Files::new(limits);
        Self { router: router(st) }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp =
            tokio::time::timeout(T, self.router.clone().oneshot(b.body(body.into()).unwrap()))
                .await
                .unwrap()
                .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Resp {
        self.send(Method::GET, uri, &[], Body::empty()).await
    }

    async fn write(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Resp {
        let uri = format!("/api/v0/write-file?path={}", enc(path));
        self.send(Method::POST, &uri, headers, body.to_vec()).await
    }

    async fn edit(&self, req: Value) -> Resp {
        self.send(Method::POST, "/api/v0/edit-files", &[], req.to_string())
            .await
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A temp dir with its canonical path (symlink resolution compares real paths).
fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = std::fs::canonicalize(d.path()).unwrap();
    (d, p)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn read(p: &Path) -> String {
    String::from_utf8(std::fs::read(p).unwrap()).unwrap()
}

/// Makes `p` immutable (even root gets EPERM renaming over it or creating in it); `None` when
/// the file system or the privileges do not allow it.
fn immutable(p: &Path) -> Option<Immutable> {
    let ok = std::process::Command::new("chattr")
        .arg("+i")
        .arg(p)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Immutable(p.to_owned()))
}

struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

// ---------------------------------------------------------------- reference cases, by route

#[tokio::test]
async fn read_file_reference_cases() {
    let api = Api::new();
    let (_d, dir) = tmp();
    std::fs::create_dir(dir.join("a-directory")).unwrap();
    std::fs::write(dir.join("file"), "content").unwrap();
    std::fs::write(dir.join("file.png"), "not really an image").unwrap();
    let file = s(&dir.join("file"));
    let errors: &[(String, StatusCode, &str)] = &[
        ("".into(), StatusCode::BAD_REQUEST, "\"path\" is required"),
        (
            "./relative".into(),
            StatusCode::BAD_REQUEST,
            "file path must be absolute",
        ),
        (
            "also-relative".into(),
            StatusCode::BAD_REQUEST,
            "file path must be absolute",
        ),
        (
            format!("{file}&limit=-10"),
            StatusCode::BAD_REQUEST,
            "value is negative",
        ),
        (
            format!("{file}&offset=-10"),
            StatusCode::BAD_REQUEST,
            "value is negative",
        ),
        (
            format!("{file}&offset=x"),
            StatusCode::BAD_REQUEST,
            "must be an integer",
        ),
        (
            format!("{file}&bogus=1"),
            StatusCode::BAD_REQUEST,
            "Query parameters have invalid values",
        ),
        (
            s(&dir.join("does-not-exist")),
            StatusCode::NOT_FOUND,
            "file does not exist",
        ),
        (
            s(&dir.join("a-directory")),
            StatusCode::BAD_REQUEST,
            "not a file",
        ),
    ];
    for (q, status, want) in errors {
        let r = api.get(&format!("/api/v0/read-file?path={q}")).await;
        assert_eq!(r.status, *status, "{q}: {:?}", r.json());
        let text = format!(
            "{} {}",
            r.message(),
            r.json()["detail"].as_str().unwrap_or_default()
        );
        assert!(text.contains(want), "{q}: {text}");
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let cases: &[(u64, u64, &str)] = &[
        (0, 0, "content"),
        (0, 1, "c"),
        (1, 0, "ontent"),
        (2, 1, "n"),
        (0, 7, "content"),
        (0, 100, "content"),
        (7, 0, ""),
        (100, 0, ""),
    ];
    for &(offset, limit, want) in cases {
        let r = api
            .get(&format!(
                "/api/v0/read-file?path={file}&offset={offset}&limit={limit}"
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            &r.body[..],
            want.as_bytes(),
            "offset {offset} limit {limit}"
        );
        assert_eq!(r.headers["content-type"], "application/octet-stream");
        assert_eq!(r.headers["content-length"], want.len().to_string().as_str());
        // The ETag is the whole file's hash, whatever the range.
        assert_eq!(
            r.headers["etag"],
            format!("\"{}\"", wgagent::files::ContentHash::of(b"content")).as_str()
        );
        assert_eq!(r.headers["wgagent-file-size"], "7");
    }
    let r = api
        .get(&format!(
            "/api/v0/read-file?path={}",
            s(&dir.join("file.png"))
        ))
        .await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::OK, &b"not really an image"[..])
    );
    assert_eq!(r.headers["content-type"], "image/png");
}

#[tokio::test]
async fn read_file_lines_reference_cases() {
    let api = Api::new();
    let (_d, dir) = tmp();
    std::fs::create_dir(dir.join("d")).unwrap();
    std::fs::write(dir.join("empty"), "").unwrap();
    std::fs::write(dir.join("basic"), "line1\nline2\nline3").unwrap();
    std::fs::write(dir.join("long"), "x".repeat(1025)).unwrap();
    std::fs::write(dir.join("large"), "x".repeat((1 << 20) + 1)).unwrap();
    let lines = |p: &str, offset: i64, limit: i64| {
        format!("/api/v0/read-file-lines?path={p}&offset={offset}&limit={limit}")
    };
    let r = api.get(&lines("", 0, 0)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("is required"));
    let fails: &[(String, i64, &str)] = &[
        ("relative/path".into(), 0, "file path must be absolute"),
        (s(&dir.join("nope")), 0, "file does not exist"),
        (s(&dir.join("d")), 0, "not a file"),
        (
            s(&dir.join("basic")),
            100,
            "offset 100 is beyond the file length of 3 lines",
        ),
        (s(&dir.join("large")), 0, "exceeds the maximum"),
    ];
    for (p, offset, want) in fails {
        let r = api.get(&lines(p, *offset, 0)).await;
        // The reference reports these in the body, with 200.
        assert_eq!(r.status, StatusCode::OK);
        let v = r.json();
        assert_eq!(v["success"], false, "{p}");
        assert!(v["error"].as_str().unwrap().contains(want), "{p}: {v}");
    }
    let basic = s(&dir.join("basic"));
    let ok: &[(String, i64, i64, &str, u64, u64, u64)] = &[
        (s(&dir.join("empty")), 0, 0, "", 0, 0, 0),
        (
            basic.clone(),
            0,
            0,
            "1\tline1\n2\tline2\n3\tline3",
            3,
            3,
            17,
        ),
        (basic.clone(), 2, 0, "2\tline2\n3\tline3", 3, 2, 17),
        (basic.clone(), 0, 1, "1\tline1", 3, 1, 17),
        (basic.clone(), 2, 1, "2\tline2", 3, 1, 17),
    ];
    for (p, offset, limit, content, total, read, size) in ok {
        let r = api.get(&lines(p, *offset, *limit)).await;
        assert_eq!(r.status, StatusCode::OK);
        let v = r.json();
        assert_eq!(v["success"], true, "{v}");
        assert_eq!(v["content"].as_str().unwrap_or(""), *content);
        assert_eq!(v["total_lines"].as_u64().unwrap_or(0), *total);
        assert_eq!(v["lines_read"].as_u64().unwrap_or(0), *read);
        assert_eq!(v["file_size"].as_u64().unwrap_or(0), *size);
    }
    let r = api.get(&lines(&s(&dir.join("long")), 0, 0)).await;
    let v = r.json();
    assert_eq!(
        v["content"],
        format!("1\t{}... [truncated]", "x".repeat(1024))
    );
    assert_eq!(v["file_size"], 1025);
    // Ext: the hash (also the ETag) and where to continue.
    let r = api.get(&lines(&basic, 1, 1)).await;
    let v = r.json();
    let hash = wgagent::files::ContentHash::of(b"line1\nline2\nline3").to_string();
    assert_eq!(v["hash"], hash.as_str());
    assert_eq!(r.headers["etag"], format!("\"{hash}\"").as_str());
    assert_eq!(v["next_offset"], 2);
}

#[tokio::test]
async fn write_file_reference_cases() {
    let api = Api::new();
    let (_d, dir) = tmp();
    std::fs::create_dir(dir.join("directory")).unwrap();
    std::fs::write(dir.join("file"), "content").unwrap();
    for (path, status, want) in [
        (
            String::new(),
            StatusCode::BAD_REQUEST,
            "\"path\" is required",
        ),
        (
            "./relative".into(),
            StatusCode::BAD_REQUEST,
            "file path must be absolute",
        ),
        (
            "also-relative".into(),
            StatusCode::BAD_REQUEST,
            "file path must be absolute",
        ),
        (
            s(&dir.join("directory")),
            StatusCode::BAD_REQUEST,
            "is a directory",
        ),
        (
            s(&dir.join("file/file2")),
            StatusCode::BAD_REQUEST,
            "not a directory",
        ),
    ] {
        let r = api.write(&path, b"x", &[]).await;
        assert_eq!(r.status, status, "{path}: {:?}", r.json());
        assert!(r.message().contains(want), "{path}: {}", r.message());
    }
    // Missing parent directories are created.
    let nested = dir.join("nested/does-not-exist");
    let r = api.write(&s(&nested), b"now it does exist", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(read(&nested), "now it does exist");
    let v = r.json();
    assert_eq!(
        v["message"],
        format!("Successfully wrote to {:?}", s(&nested))
    );
    assert_eq!(v["bytes"], 17);
    let hash = wgagent::files::ContentHash::of(b"now it does exist").to_string();
    assert_eq!(v["hash"], hash.as_str());
    assert_eq!(r.headers["etag"], format!("\"{hash}\"").as_str());
    assert!(temp_files(&dir.join("nested")).is_empty());
}

#[tokio::test]
async fn writes_and_edits_keep_the_mode_and_follow_symlinks() {
    let api = Api::new();
    let (_d, dir) = tmp();
    let script = dir.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = api
        .write(&s(&script), b"#!/bin/sh\necho world\n", &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(read(&script), "#!/bin/sh\necho world\n");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&script), 0o755, "write-file keeps the mode");
    let r = api
        .edit(json!({"files": [{"path": s(&script), "edits": [{"search": "world", "replace": "there"}]}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(read(&script), "#!/bin/sh\necho there\n");
    assert_eq!(mode(&script), 0o755, "edit-files keeps the mode");

    let real = dir.join("real.txt");
    let link = dir.join("link.txt");
    std::fs::write(&real, "hello world").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(
        api.write(&s(&link), b"updated", &[]).await.status,
        StatusCode::OK
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(&real), "updated");
    let r = api
        .edit(json!({"files": [{"path": s(&link), "edits": [{"search": "updated", "replace": "goodbye"}]}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(&real), "goodbye");
    assert!(temp_files(&dir).is_empty());
}

#[tokio::test]
async fn writes_the_os_refuses_are_403_and_change_nothing() {
    let api = Api::new();
    let (_d, dir) = tmp();
    let file = dir.join("locked");
    std::fs::write(&file, "foo bar").unwrap();
    let sub = dir.join("locked-dir");
    std::fs::create_dir(&sub).unwrap();
    let (Some(_f), Some(_s)) = (immutable(&file), immutable(&sub)) else {
        println!("SKIP permission cases: chattr +i not permitted here (needs root on ext4/tmpfs)");
        return;
    };
    let r = api.write(&s(&file), b"new", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.json());
    assert!(r.message().contains("permission denied"), "{}", r.message());
    let r = api.write(&s(&sub.join("within")), b"new", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .edit(
            json!({"files": [{"path": s(&file), "edits": [{"search": "foo", "replace": "bar"}]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.json());
    assert_eq!(read(&file), "foo bar");
}

#[tokio::test]
async fn edit_files_reference_cases() {
    let api = Api::new();
    let (_d, dir) = tmp();
    std::fs::create_dir(dir.join("directory")).unwrap();
    let p = |n: &str| s(&dir.join(n));
    let one = |path: String, search: &str, replace: &str| json!({"path": path, "edits": [{"search": search, "replace": replace}]});
    // (files written first, request files, status, message parts, files expected after)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<Value>,
        StatusCode,
        Vec<String>,
        Vec<(&'a str, &'a str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "NoFiles",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            vec!["must specify at least one file".into()],
            vec![],
        ),
        (
            "NoPath",
            vec![],
            vec![one(String::new(), "foo", "bar")],
            StatusCode::BAD_REQUEST,
            vec!["\"path\" is required".into()],
            vec![],
        ),
        (
            "RelativePathDotSlash",
            vec![],
            vec![one("./relative".into(), "foo", "bar")],
            StatusCode::BAD_REQUEST,
            vec!["file path must be absolute".into()],
            vec![],
        ),
        (
            "RelativePath",
            vec![],
            vec![one("also-relative".into(), "foo", "bar")],
            StatusCode::BAD_REQUEST,
            vec!["file path must be absolute".into()],
            vec![],
        ),
        (
            "NoEdits",
            vec![],
            vec![json!({"path": p("no-edits")})],
            StatusCode::BAD_REQUEST,
            vec!["must specify at least one edit".into()],
            vec![],
        ),
        (
            "NonExistent",
            vec![],
            vec![one(p("does-not-exist"), "foo", "bar")],
            StatusCode::NOT_FOUND,
            vec!["file does not exist".into()],
            vec![],
        ),
        (
            "IsDir",
            vec![],
            vec![one(p("directory"), "foo", "bar")],
            StatusCode::BAD_REQUEST,
            vec!["not a file".into()],
            vec![],
        ),
        (
            "Edit1",
            vec![("edit1", "foo bar")],
            vec![one(p("edit1"), "foo", "bar")],
            StatusCode::OK,
            vec![],
            vec![("edit1", "bar bar")],
        ),
        (
            "EditEditAmbiguous",
            vec![("edit-edit", "foo bar")],
            vec![
                json!({"path": p("edit-edit"), "edits": [{"search": "foo", "replace": "bar"}, {"search": "bar", "replace": "qux"}]}),
            ],
            StatusCode::BAD_REQUEST,
            vec!["matches 2 occurrences".into()],
            vec![("edit-edit", "foo bar")],
        ),
        (
            "Multifile",
            vec![
                ("file1", "file 1"),
                ("file2", "file 2"),
                ("file3", "file 3"),
            ],
            vec![
                one(p("file1"), "file", "edited1"),
                one(p("file2"), "file", "edited2"),
                one(p("file3"), "file", "edited3"),
            ],
            StatusCode::OK,
            vec![],
            vec![
                ("file1", "edited1 1"),
                ("file2", "edited2 2"),
                ("file3", "edited3 3"),
            ],
        ),
        // Several failures: every one reported, the highest status wins, nothing written.
        (
            "MultiError",
            vec![("file8", "file 8")],
            vec![
                one(p("directory"), "file", "edited7"),
                one(p("file8"), "file", "edited8"),
                one(p("file9"), "file", "edited9"),
            ],
            StatusCode::NOT_FOUND,
            vec![
                format!("not a file: {}", p("directory")),
                "file9".into(),
                "file does not exist".into(),
            ],
            vec![("file8", "file 8")],
        ),
        (
            "AtomicMultiFile_OneFailsNoneWritten",
            vec![
                ("atomic-a", "aaa"),
                ("atomic-b", "bbb"),
                ("atomic-c", "ccc"),
            ],
            vec![
                one(p("atomic-a"), "aaa", "AAA"),
                one(p("atomic-b"), "NOTFOUND", "XXX"),
                one(p("atomic-c"), "ccc", "CCC"),
            ],
            StatusCode::BAD_REQUEST,
            vec!["search string not found".into()],
            vec![
                ("atomic-a", "aaa"),
                ("atomic-b", "bbb"),
                ("atomic-c", "ccc"),
            ],
        ),
    ];
    for (name, before, files, status, parts, after) in cases {
        for (f, c) in &before {
            std::fs::write(dir.join(f), c).unwrap();
        }
        let r = api.edit(json!({ "files": files })).await;
        assert_eq!(r.status, status, "{name}: {:?}", r.json());
        for part in &parts {
            assert!(
                r.message().contains(part.as_str()),
                "{name}: {part:?} not in {}",
                r.message()
            );
        }
        if status == StatusCode::OK {
            assert_eq!(r.json(), json!({}), "{name}: no diffs unless asked");
        }
        for (f, c) in after {
            assert_eq!(read(&dir.join(f)), c, "{name}");
        }
    }
    let r = api
        .send(Method::POST, "/api/v0/edit-files", &[], "{not json")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "Request body must be valid JSON.");
    assert!(temp_files(&dir).is_empty());
}

#[tokio::test]
async fn edit_files_merge_duplicates_and_refuse_aliases() {
    let api = Api::new();
    let (_d, dir) = tmp();
    let path = dir.join("dup");
    std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
    let r = api
        .edit(json!({"files": [
            {"path": s(&path), "edits": [{"search": "one", "replace": "CHANGED"}]},
            {"path": s(&path), "edits": [{"search": "CHANGED", "replace": "FINAL"}]},
            {"path": format!("{}/./dup", s(&dir)), "edits": [{"search": "three", "replace": "THREE"}]},
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(read(&path), "FINAL\ntwo\nTHREE\n");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let r = api
        .edit(json!({"files": [
            {"path": s(&path), "edits": [{"search": "FINAL", "replace": "x"}]},
            {"path": s(&link), "edits": [{"search": "two", "replace": "y"}]},
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("aliases"), "{}", r.message());
    assert_eq!(read(&path), "FINAL\ntwo\nTHREE\n");
}

#[tokio::test]
async fn edit_files_diffs() {
    let api = Api::new();
    let (_d, dir) = tmp();
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    std::fs::write(&a, "A\n").unwrap();
    std::fs::write(&b, "same\n").unwrap();
    std::fs::write(&c, "one\ntwo\nthree\n").unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let r = api
        .edit(json!({"include_diff": true, "files": [
            {"path": s(&link), "edits": [{"search": "A", "replace": "a"}]},
            {"path": s(&b), "edits": [{"search": "same", "replace": "same"}]},
            {"path": s(&c), "edits": [{"search": "one", "replace": "ONE"}, {"search": "three", "replace": "THREE"}]},
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let files = r.json()["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 3);
    // Request order, the caller's (symlink) path.
    assert_eq!(files[0]["path"], s(&link).as_str());
    let d0 = files[0]["diff"].as_str().unwrap();
    assert!(
        d0.contains(&format!("--- {}\n+++ {}\n", s(&link), s(&link))),
        "{d0}"
    );
    assert!(d0.contains("-A\n+a\n"), "{d0}");
    assert_eq!(files[1]["diff"], "", "a no-op edit has an empty diff");
    let d2 = files[2]["diff"].as_str().unwrap();
    for part in ["-one", "+ONE", "-three", "+THREE"] {
        assert!(d2.contains(part), "{d2}");
    }
    assert_eq!(
        files[2]["hash"],
        wgagent::files::ContentHash::of(b"ONE\ntwo\nTHREE\n")
            .to_string()
            .as_str()
    );
}

#[tokio::test]
async fn list_directory_reference_cases() {
    let api = Api::new();
    let (_d, dir) = tmp();
    std::fs::create_dir(dir.join("repos")).unwrap();
    std::fs::create_dir(dir.join("Downloads")).unwrap();
    std::fs::write(dir.join("file.txt"), "content").unwrap();
    std::os::unix::fs::symlink(dir.join("repos"), dir.join("zlink")).unwrap();
    let list = |q: String, body: Value| {
        let api = &api;
        async move {
            api.send(
                Method::POST,
                &format!("/api/v0/list-directory{q}"),
                &[],
                body.to_string(),
            )
            .await
        }
    };
    let comps: Vec<String> = dir
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let ups = Path::new(&home).components().count() - 1;
    let mut from_home: Vec<String> = vec!["..".to_owned(); ups];
    from_home.extend(comps.clone());
    for (q, body) in [
        (format!("?path={}", s(&dir)), json!({})),
        (String::new(), json!({"path": comps, "relativity": "root"})),
        (
            String::new(),
            json!({"path": from_home, "relativity": "home"}),
        ),
    ] {
        let r = list(q.clone(), body).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {:?}", r.json());
        let v = r.json();
        assert_eq!(v["absolute_path_string"], s(&dir).as_str());
        let names: Vec<(&str, bool)> = v["contents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap(), f["is_dir"].as_bool().unwrap()))
            .collect();
        // Directories first, then files; a symlink to a directory is not a directory.
        assert_eq!(
            names,
            [
                ("Downloads", true),
                ("repos", true),
                ("file.txt", false),
                ("zlink", false)
            ]
        );
        assert_eq!(
            v["contents"][2]["absolute_path_string"],
            s(&dir.join("file.txt")).as_str()
        );
        assert_eq!(v["contents"][2]["size"], 7);
        assert_eq!(v["contents"][3]["is_symlink"], true);
        assert_eq!(v["total_entries"], 4);
    }
    let r = api
        .send(
            Method::POST,
            &format!("/api/v0/list-directory?path={}", s(&dir)),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "an empty body is {{}}");
    for (q, body, status, want) in [
        (
            "?path=not-absolute".to_owned(),
            json!({}),
            StatusCode::BAD_REQUEST,
            "must be absolute",
        ),
        (
            format!("?path={}", s(&dir.join("file.txt"))),
            json!({}),
            StatusCode::BAD_REQUEST,
            "is not a directory",
        ),
        (
            format!("?path={}", s(&dir.join("nope"))),
            json!({}),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            String::new(),
            json!({}),
            StatusCode::BAD_REQUEST,
            "unsupported relativity",
        ),
    ] {
        let r = list(q.clone(), body).await;
        assert_eq!(r.status, status, "{q}");
        assert!(r.message().contains(want), "{q}: {}", r.message());
    }
}

#[tokio::test]
async fn resolve_path_and_lexical_dot_dot() {
    let api = Api::new();
    let (_d, dir) = tmp();
    std::fs::create_dir(dir.join("real-plans")).unwrap();
    std::fs::write(dir.join("real-plans/PLAN.md"), "plan").unwrap();
    std::os::unix::fs::symlink(dir.join("real-plans"), dir.join("link-plans")).unwrap();
    std::os::unix::fs::symlink(dir.join("real-plans/PLAN.md"), dir.join("link.md")).unwrap();
    let resolve = |p: String| {
        let api = &api;
        async move {
            api.get(&format!("/api/v0/resolve-path?path={}", enc(&p)))
                .await
        }
    };
    for (asked, want) in [
        (dir.join("link.md"), dir.join("real-plans/PLAN.md")),
        (
            dir.join("link-plans/PLAN.md"),
            dir.join("real-plans/PLAN.md"),
        ),
        (dir.join("link-plans/NEW.md"), dir.join("real-plans/NEW.md")),
        (dir.join("x/../link.md"), dir.join("real-plans/PLAN.md")),
    ] {
        let r = resolve(s(&asked)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["resolved_path"], s(&want).as_str(), "{asked:?}");
    }
    assert_eq!(resolve("rel".into()).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(resolve(String::new()).await.status, StatusCode::BAD_REQUEST);
    std::os::unix::fs::symlink(dir.join("loop"), dir.join("loop")).unwrap();
    let r = resolve(s(&dir.join("loop"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("symbolic links"));

    // `..` is removed lexically, the same way on every route, and never climbs above `/`.
    let r = api
        .write(&format!("{}/sub/../lexical", s(&dir)), b"x", &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(read(&dir.join("lexical")), "x");
    assert!(!dir.join("sub").exists());
    let deep = format!("/../../..{}/lexical", s(&dir));
    let r = api
        .get(&format!("/api/v0/read-file?path={}", enc(&deep)))
        .await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"x"[..]));
    // Through a symlinked directory, `..` still means the textual parent.
    let via_link = format!("{}/link-plans/../lexical", s(&dir));
    let r = api
        .get(&format!("/api/v0/read-file?path={}", enc(&via_link)))
        .await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"x"[..]));
}

#[tokio::test]
async fn binary_files_round_trip_and_are_refused_as_text() {
    let api = Api::new();
    let (_d, dir) = tmp();
    let path = dir.join("blob.bin");
    let data: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(data.contains(&0) && String::from_utf8(data.clone()).is_err());
    let r = api.write(&s(&path), &data, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let r = api
        .get(&format!("/api/v0/read-file?path={}", s(&path)))
        .await;
    assert_eq!(r.body.to_vec(), data);
    let r = api
        .get(&format!(
            "/api/v0/read-file?path={}&offset=65536&limit=10",
            s(&path)
        ))
        .await;
    assert_eq!(r.body.to_vec(), data[65536..65546].to_vec());
    let r = api
        .get(&format!("/api/v0/read-file-lines?path={}", s(&path)))
        .await;
    assert!(r.json()["error"].as_str().unwrap().contains("binary"));
    let r = api
        .edit(json!({"files": [{"path": s(&path), "edits": [{"search": "a", "replace": "b"}]}]}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("not UTF-8"), "{}", r.message());
}

#[tokio::test]
async fn preconditions_on_writes_and_edits() {
    let api = Api::new();
    let (_d, dir) = tmp();
    let path = dir.join("f");
    let h = |b: &[u8]| wgagent::files::ContentHash::of(b).to_string();
    // Create only.
    let r = api.write(&s(&path), b"v1", &[("if-none-match", "*")]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.write(&s(&path), b"v2", &[("if-none-match", "*")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.json()["current_hash"], h(b"v1").as_str());
    // Replace only if unchanged.
    let good = format!("\"{}\"", h(b"v1"));
    let stale = format!("\"{}\"", h(b"v0"));
    let r = api.write(&s(&path), b"v2", &[("if-match", &stale)]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{:?}", r.json());
    let v = r.json();
    assert_eq!(v["current_hash"], h(b"v1").as_str());
    assert_eq!(v["path"], s(&path).as_str());
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("changed since it was read")
    );
    assert_eq!(r.headers["etag"], good.as_str());
    assert_eq!(read(&path), "v1");
    let r = api
        .write(
            &s(&path),
            b"v2",
            &[("if-match", &format!("{stale}, {good}"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.write(&s(&path), b"v3", &[("if-match", "*")])
            .await
            .status,
        StatusCode::OK
    );
    let r = api
        .write(&s(&dir.join("missing")), b"x", &[("if-match", "*")])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(r.json().get("current_hash").is_none());
    assert!(!dir.join("missing").exists());
    let r = api
        .write(&s(&path), b"x", &[("if-none-match", "\"abc\"")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Per-file if_match in edits: one stale file stops them all.
    let other = dir.join("g");
    std::fs::write(&other, "g1").unwrap();
    let r = api
        .edit(json!({"files": [
            {"path": s(&other), "edits": [{"search": "g1", "replace": "g2"}], "if_match": h(b"g1")},
            {"path": s(&path), "edits": [{"search": "v3", "replace": "v4"}], "if_match": h(b"v2")},
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{:?}", r.json());
    assert_eq!(r.json()["current_hash"], h(b"v3").as_str());
    assert_eq!((read(&other).as_str(), read(&path).as_str()), ("g1", "v3"));
    let r = api
        .edit(json!({"files": [{"path": s(&path), "edits": [{"search": "v3", "replace": "v4"}], "if_match": h(b"v3")}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(read(&path), "v4");
}

#[tokio::test]
async fn oversized_bodies_are_413_and_leave_the_old_file() {
    let api = Api::with(Limits {
        max_write_bytes: 4096,
        max_edit_files: 2,
        fsync: false,
    });
    let (_d, dir) = tmp();
    let path = dir.join("f");
    std::fs::write(&path, "old").unwrap();
    // Declared too large: refused before anything is created.
    let r = api.write(&s(&path), &[b'x'; 5000], &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.json());
    // Streamed (chunked, no length) past the limit: stops reading, removes its temp file.
    let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 1000])));
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let uri = format!("/api/v0/write-file?path={}", s(&path));
    let r = api.send(Method::POST, &uri, &[], body).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.json());
    assert!(
        r.message().contains("over the limit of 4096 bytes"),
        "{}",
        r.message()
    );
    assert_eq!(read(&path), "old");
    assert!(temp_files(&dir).is_empty());
    // Exactly at the limit is fine.
    assert_eq!(
        api.write(&s(&path), &[b'z'; 4096], &[]).await.status,
        StatusCode::OK
    );
    // Edits: too many files, a request body too large, a file too large.
    let f = |p: &Path| json!({"path": s(p), "edits": [{"search": "z", "replace": "y"}]});
    let r = api
        .edit(json!({"files": [f(&path), f(&path), f(&path)]}))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Counted in files, not bytes.
    assert!(
        r.message()
            .contains("an edit of 3 files is over the limit of 2 files"),
        "{}",
        r.message()
    );
    let r = api
        .edit(json!({"files": [{"path": s(&path), "edits": [{"search": "z".repeat(5000), "replace": ""}]}]}))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    std::fs::write(&path, "z".repeat(5000)).unwrap();
    let r = api.edit(json!({"files": [f(&path)]})).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

// ---------------------------------------------------------------- through the tunnel

/// The agent and two control nodes (two replicas), each with an SDK handle.
struct Replicas {
    agent: wgagent::node::Node,
    control_a: wgagent::node::Node,
    _control_b: wgagent::node::Node,
    a: AgentConn<wgagent::node::NodeConnector>,
    b: AgentConn<wgagent::node::NodeConnector>,
}

async fn replicas() -> Replicas {
    let (agent_keys, ka, kb) = (keypair(), keypair(), keypair());
    let agent = node(
        agent_keys.secret.clone(),
        AGENT_IP,
        0,
        vec![
            peer(ka.public, "100.64.0.1/32", None, None),
            peer(kb.public, "100.64.0.2/32", None, None),
        ],
    )
    .await;
    serve_api(&agent);
    let to_agent = || {
        vec![peer(
            agent_keys.public,
            "100.64.0.10/32",
            Some(loopback(&agent)),
            None,
        )]
    };
    let control_a = node(ka.secret, "100.64.0.1", 0, to_agent()).await;
    let control_b = node(kb.secret, "100.64.0.2", 0, to_agent()).await;
    let a = AgentConn::new(control_a.connector(), api_addr(), AgentOptions::default());
    let b = AgentConn::new(control_b.connector(), api_addr(), AgentOptions::default());
    Replicas {
        agent,
        control_a,
        _control_b: control_b,
        a,
        b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_through_the_tunnel() {
    let r = replicas().await;
    let (_d, dir) = tmp();
    let path = s(&dir.join("notes/todo.txt"));
    let w =
        r.a.write_file(&path, "one\ntwo\nthree\n", WriteCondition::Always)
            .await
            .unwrap();
    assert_eq!(w.bytes, Some(14));
    let listing =
        r.a.list_directory(Some(&s(&dir)), &LsRequest::default())
            .await
            .unwrap();
    assert_eq!(listing.contents.len(), 1);
    assert!(listing.contents[0].is_dir && listing.contents[0].name == "notes");
    assert_eq!(r.a.resolve_path(&path).await.unwrap(), path);
    let lines =
        r.a.read_file_lines(&path, 2, 1, &Default::default(), false)
            .await
            .unwrap();
    assert_eq!(
        (lines.content.as_str(), lines.next_offset),
        ("2\ttwo", Some(3))
    );
    assert_eq!(lines.hash, w.hash);
    let dl = r.b.read_file(&path, 4, 3).await.unwrap();
    assert_eq!(
        (dl.hash.clone(), dl.len, dl.file_size),
        (w.hash.clone(), Some(3), Some(14))
    );
    assert_eq!(dl.bytes(100).await.unwrap(), b"two");
    let e =
        r.b.edit_files(&FileEditRequest {
            files: vec![FileEdits {
                path: path.clone(),
                edits: vec![FileEdit {
                    search: "two".into(),
                    replace: "TWO".into(),
                    replace_all: false,
                }],
                if_match: w.hash.clone(),
            }],
            include_diff: true,
        })
        .await
        .unwrap();
    let files = e.files.unwrap();
    assert!(files[0].diff.contains("-two\n+TWO\n"));
    // A streamed upload (chunked) of 3 MiB in uneven pieces.
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let pieces: Vec<std::io::Result<Bytes>> = big
        .chunks(100_003)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let big_path = s(&dir.join("big.bin"));
    let w =
        r.a.write_file_stream(
            &big_path,
            futures_util::stream::iter(pieces),
            WriteCondition::IfAbsent,
        )
        .await
        .unwrap();
    assert_eq!(w.bytes, Some(3 << 20));
    let mut dl = r.b.read_file(&big_path, 0, 0).await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = dl.chunk().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert!(got == big, "download differs");
    // Errors keep their status and message through the SDK.
    let err =
        r.a.read_file(&s(&dir.join("nope")), 0, 0)
            .await
            .err()
            .unwrap();
    assert_eq!(err.status(), Some(404));
    let err =
        r.a.write_file(&big_path, "x", WriteCondition::IfAbsent)
            .await
            .unwrap_err();
    assert_eq!(err.status(), Some(412));
    // The pooled connection survived the streamed download.
    assert!(r.a.resolve_path("/").await.is_ok());
    drop(r.agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_conflicts_between_two_control_nodes() {
    let r = replicas().await;
    let (_d, dir) = tmp();
    let path = s(&dir.join("shared.txt"));
    r.a.write_file(&path, "base\n", WriteCondition::Always)
        .await
        .unwrap();
    // Both replicas read the same version.
    let ha =
        r.a.read_file_lines(&path, 1, 0, &Default::default(), false)
            .await
            .unwrap()
            .hash
            .unwrap();
    let hb = r.b.read_file(&path, 0, 0).await.unwrap().hash.unwrap();
    assert_eq!(ha, hb);
    // A writes first; B's write based on the old version is refused with the current hash.
    let wa =
        r.a.write_file(&path, "from a\n", WriteCondition::IfMatch(&ha))
            .await
            .unwrap();
    let err =
        r.b.write_file(&path, "from b\n", WriteCondition::IfMatch(&hb))
            .await
            .unwrap_err();
    assert_eq!(err.status(), Some(412));
    let current = wa.hash.clone().unwrap();
    assert!(err.to_string().contains(&current), "{err}");
    // So is B's edit.
    let edit = |m: &str| FileEditRequest {
        files: vec![FileEdits {
            path: path.clone(),
            edits: vec![FileEdit {
                search: "from".into(),
                replace: "by".into(),
                replace_all: false,
            }],
            if_match: Some(m.to_owned()),
        }],
        include_diff: false,
    };
    let err = r.b.edit_files(&edit(&hb)).await.unwrap_err();
    assert_eq!(err.status(), Some(412));
    assert_eq!(read(Path::new(&path)), "from a\n");
    // Racing: both replicas send a conditional write based on the same version at once;
    // exactly one wins, the other gets 412 (the check and the rename are one step).
    for round in 0..10 {
        let base = r.a.read_file(&path, 0, 0).await.unwrap().hash.unwrap();
        let (x, y) = tokio::join!(
            r.a.write_file(&path, format!("a{round}"), WriteCondition::IfMatch(&base)),
            r.b.write_file(&path, format!("b{round}"), WriteCondition::IfMatch(&base)),
        );
        let won: Vec<bool> = [&x, &y].iter().map(|w| w.is_ok()).collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {x:?} {y:?}"
        );
        let loser = if won[0] {
            y.unwrap_err()
        } else {
            x.unwrap_err()
        };
        assert_eq!(loser.status(), Some(412));
        let content = read(Path::new(&path));
        assert_eq!(
            content,
            if won[0] {
                format!("a{round}")
            } else {
                format!("b{round}")
            }
        );
    }
    // An edit with the current hash goes through.
    let now = r.b.read_file(&path, 0, 0).await.unwrap().hash.unwrap();
    assert!(
        r.b.edit_files(&edit(&now)).await.is_err(),
        "no 'from' left to replace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_a_half_written_file() {
    let r = replicas().await;
    let (_d, dir) = tmp();
    let path = dir.join("atomic.bin");
    let size = 2 << 20;
    let versions: Vec<Vec<u8>> = (0..2u8).map(|v| vec![b'a' + v; size]).collect();
    r.a.write_file(&s(&path), versions[0].clone(), WriteCondition::Always)
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let data = std::fs::read(&path).unwrap();
                assert_eq!(data.len(), size, "read a file of {} bytes", data.len());
                let first = data[0];
                assert!(
                    data.iter().all(|&b| b == first),
                    "read a mix of two versions"
                );
                reads += 1;
            }
            reads
        })
    };
    for i in 0..20 {
        r.b.write_file(
            &s(&path),
            versions[(i + 1) % 2].clone(),
            WriteCondition::Always,
        )
        .await
        .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw a torn file");
    assert!(reads > 0);
    assert!(temp_files(&dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_write_leaves_the_old_file() {
    let r = replicas().await;
    let (_d, dir) = tmp();
    let path = dir.join("precious.txt");
    std::fs::write(&path, "old content").unwrap();
    // Announce 4 MiB, send 1 MiB, hang up.
    let mut stream = r.control_a.connect(api_addr()).await.unwrap();
    use tokio::io::AsyncWriteExt;
    let head = format!(
        "POST /api/v0/write-file?path={} HTTP/1.1\r\nhost: agent\r\ncontent-length: {}\r\n\r\n",
        s(&path),
        4 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'n'; 1 << 20]).await.unwrap();
    stream.flush().await.unwrap();
    // The agent has started the write (its temp file exists) before the hang-up.
    let started = Instant::now();
    while temp_files(&dir).is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!temp_files(&dir).is_empty(), "the write never started");
    drop(stream);
    let started = Instant::now();
    while !temp_files(&dir).is_empty() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(temp_files(&dir).is_empty(), "temporary file left behind");
    assert_eq!(read(&path), "old content");
    // The agent still serves.
    assert!(r.a.resolve_path(&s(&path)).await.is_ok());
}

// ---------------------------------------------------------------- CLI verbs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_cat_put_ls() {
    let p = pair().await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.1\"]\n\n\
         [[peer]]\nname = \"dev\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.10/32\"]\nendpoint = \"{}\"\n",
        wgagent::keys::encode_private(&p.control_keys.secret),
        wgagent::keys::encode_public(&p.agent_keys.public),
        loopback(&p.agent),
    );
    let config = cfg_dir.path().join("control.toml");
    std::fs::write(&config, cfg).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = |args: Vec<String>, stdin: Vec<u8>| {
        let config = config.clone();
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wgagent"))
                .args(&args)
                .env("WGAGENT_CONFIG", &config)
                .env_remove("RUST_LOG")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut input = child.stdin.take().unwrap();
            tokio::spawn(async move {
                let _ = input.write_all(&stdin).await;
            });
            let out = tokio::time::timeout(T, child.wait_with_output())
                .await
                .expect("hung")
                .unwrap();
            eprintln!(
                "$ wgagent {}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            out
        }
    };
    let (_d, dir) = tmp();
    let file = s(&dir.join("sub/hello.txt"));
    let content: Vec<u8> = b"hello\0binary\xff\n".repeat(50_000);
    let out = run(
        vec!["put".into(), "dev".into(), file.clone(), "--json".into()],
        content.clone(),
    )
    .await;
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hash = wgagent::files::ContentHash::of(&content).to_string();
    assert_eq!(v["hash"], hash.as_str());
    assert_eq!(std::fs::read(&file).unwrap(), content);
    let out = run(vec!["cat".into(), "dev".into(), file.clone()], vec![]).await;
    assert!(out.status.success());
    assert!(out.stdout == content, "cat returned other bytes");
    let out = run(
        vec![
            "cat".into(),
            "dev".into(),
            file.clone(),
            "--offset".into(),
            "6".into(),
            "--limit".into(),
            "6".into(),
        ],
        vec![],
    )
    .await;
    assert_eq!(out.stdout, b"binary");
    // Conditional: a stale hash is refused, nothing written, exit 1.
    let out = run(
        vec![
            "put".into(),
            "dev".into(),
            file.clone(),
            "--if-match".into(),
            "0".repeat(64),
        ],
        b"new".to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 412"));
    assert_eq!(std::fs::read(&file).unwrap(), content);
    let out = run(
        vec![
            "put".into(),
            "dev".into(),
            file.clone(),
            "--if-match".into(),
            hash,
        ],
        b"new".to_vec(),
    )
    .await;
    assert!(out.status.success());
    assert_eq!(read(Path::new(&file)), "new");
    let out = run(vec!["ls".into(), "dev".into(), s(&dir.join("sub"))], vec![]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with("-rw") && text.contains("hello.txt"),
        "{text}"
    );
    let out = run(
        vec!["ls".into(), "dev".into(), s(&dir), "--json".into()],
        vec![],
    )
    .await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["contents"][0]["name"], "sub");
    let out = run(
        vec!["cat".into(), "dev".into(), s(&dir.join("missing"))],
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("file does not exist") && err.contains("HTTP 404"),
        "{err}"
    );
}
