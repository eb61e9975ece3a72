//! The API router with arbitrary method, target, headers and body. Its manager may run no
//! process (`max_running: 0`), so every start is refused after validation and nothing is ever
//! spawned, whatever the input.

use std::sync::OnceLock;

use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::Reader;
use crate::api::{self, AppState};
use crate::proc::{Manager, ManagerConfig};

const METHODS: [&str; 8] = [
    "GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS", "PATCH", "BREW",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn router() -> axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            let manager = Manager::new(ManagerConfig {
                max_running: 0,
                default_workdir: Some(std::env::temp_dir()),
                ..ManagerConfig::default()
            });
            api::router(AppState::new(manager))
        })
        .clone()
}

/// `[method][u8 len][target]`, then `[n]` headers `[u8 len][name][u8 len][value]`, then the
/// body. Every answer must be a status below 500, and every error a JSON `{message}`.
pub fn http_api(data: &[u8]) {
    let mut r = Reader::new(data);
    let method = METHODS[usize::from(r.byte()) % METHODS.len()];
    let target = r.chunk8();
    let mut builder = http::Request::builder().method(method).uri(target);
    for _ in 0..r.byte() % 8 {
        let (name, value) = (r.chunk8(), r.chunk8());
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(Body::from(r.rest().to_vec())) else {
        return; // not a request hyper would have parsed
    };
    let (status, content_type, body) = runtime().block_on(async {
        let Ok(response) = router().oneshot(request).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        (status, content_type, body)
    });
    assert!(!status.is_server_error(), "{method} {target:?}: {status}");
    let body = body.expect("response bodies are in memory");
    if status.is_client_error() && method != "HEAD" {
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{method} {target:?}: {status} {body:?}"
        );
        let v: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{status}: {e}: {body:?}"));
        assert!(v["message"].is_string(), "{v}");
    }
}

pub(super) fn seeds() -> Vec<Vec<u8>> {
    let req = |method: u8, target: &str, headers: &[(&str, &str)], body: &str| {
        let mut out = vec![method, target.len() as u8];
        out.extend_from_slice(target.as_bytes());
        out.push(headers.len() as u8);
        for (n, v) in headers {
            out.push(n.len() as u8);
            out.extend_from_slice(n.as_bytes());
            out.push(v.len() as u8);
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(body.as_bytes());
        out
    };
    let json = [("content-type", "application/json")];
    vec![
        req(
            1,
            "/api/v0/processes/start",
            &json,
            r#"{"command":"echo hi","env":{"A":"b"},"timeout_ms":5}"#,
        ),
        req(
            1,
            "/api/v0/processes/start",
            &json,
            r#"{"command":"x","workdir":"/","idempotency_key":"k"}"#,
        ),
        req(0, "/api/v0/processes/list", &[], ""),
        req(
            0,
            "/api/v0/processes/abc/output?wait=true&timeout_ms=1",
            &[],
            "",
        ),
        req(
            1,
            "/api/v0/processes/abc/signal",
            &json,
            r#"{"signal":"kill"}"#,
        ),
        req(2, "/api/v0/processes/abc", &[], ""),
        req(0, "/api/v0/health", &[("content-length", "5")], ""),
    ]
}
