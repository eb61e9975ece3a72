//! Rust SDK for control replicas: [`AgentConn`] calls one agent's process API.
//!
//! Owns: request building (percent-encoded ids), a keep-alive connection pool per agent (hyper 1
//! over any [`Connect`]), connect and request timeouts, and the mapping of every failure to a
//! typed [`ClientError`] (the agent's JSON error included).
//! Leaves to the caller: the transport (a [`Connect`], shared by all agents of a replica),
//! retries (starts can carry an `idempotency_key` to make them safe) and what to do with the
//! results. The wire types are `crate::api::types`, shared with the server.

mod connect;
mod daemon;
mod error;
mod files;
mod pool;
mod procio;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body::Body;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

/// The signal vocabulary of [`AgentConn::signal`].
pub use crate::signal::Signal;
pub use connect::{BoxConnector, Connect, Stream, TcpConnector};
pub use daemon::{DAEMON_ERROR_HEADER, DaemonConnector};
pub use error::ClientError;
pub use files::{FileDownload, WriteCondition};
pub use pool::{BoxError, RequestBody, ResponseBody};
pub use procio::LogChunk;

use crate::api::types::{
    HealthResponse, ListProcessesResponse, MAX_WAIT_MS, ProcessOutputResponse, Response,
    SignalProcessRequest, StartProcessRequest, StartProcessResponse,
};
use pool::{Call, Pool};

/// Timeouts and pool limits of an [`AgentConn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentOptions {
    /// Longest wait for a new connection (covers a WireGuard handshake and its retries).
    pub connect_timeout: Duration,
    /// Longest wait for a whole answer, connecting included. A request with a server-side wait
    /// gets that wait on top.
    pub request_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub idle_timeout: Duration,
    /// Idle connections kept per agent.
    pub max_idle: usize,
    /// Answers larger than this are refused (the agent's are far smaller: output is ≤ 32 KiB).
    pub max_response_bytes: usize,
}

impl Default for AgentOptions {
    /// 10 s to connect (two WireGuard handshake attempts), 30 s per request, idle connections
    /// kept 60 s, at most 8 of them, answers up to 16 MiB.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_idle: 8,
            max_response_bytes: 16 << 20,
        }
    }
}

/// A handle on one agent's process API. Cheap to clone; clones share the connection pool, and
/// dropping the last clone closes its connections.
#[derive(Clone)]
pub struct AgentConn<C: Connect> {
    addr: SocketAddr,
    opts: AgentOptions,
    pool: Arc<Pool<C>>,
}

impl<C: Connect> AgentConn<C> {
    /// A handle on the agent whose API listens at `agent_addr` (its tunnel address and API
    /// port). Opens nothing until the first call.
    pub fn new(connector: C, agent_addr: SocketAddr, opts: AgentOptions) -> Self {
        let pool = Pool::new(
            connector,
            agent_addr,
            opts.connect_timeout,
            opts.idle_timeout,
            opts.max_idle,
            opts.max_response_bytes,
        );
        let pool = Arc::new(pool);
        pool::spawn_reaper(&pool);
        Self {
            addr: agent_addr,
            opts,
            pool,
        }
    }

    /// The agent's API address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The timeouts and pool limits in force.
    pub fn options(&self) -> &AgentOptions {
        &self.opts
    }

    /// `POST /api/v0/processes/start`.
    pub async fn start(
        &self,
        req: &StartProcessRequest,
    ) -> Result<StartProcessResponse, ClientError> {
        let body = serde_json::to_vec(req).map_err(ClientError::Decode)?;
        self.call(
            Method::POST,
            "/api/v0/processes/start".to_owned(),
            Some(body),
            None,
        )
        .await
    }

    /// `GET /api/v0/processes/list`.
    pub async fn list(&self) -> Result<ListProcessesResponse, ClientError> {
        self.call(Method::GET, "/api/v0/processes/list".to_owned(), None, None)
            .await
    }

    /// `GET /api/v0/processes/{id}/output`. With `wait`, the agent holds the answer until the
    /// process exits or `wait` passes (capped at the agent's 300 s maximum), so a caller needs
    /// no polling loop; `Some(Duration::ZERO)` is a plain snapshot.
    pub async fn output(
        &self,
        id: &str,
        wait: Option<Duration>,
    ) -> Result<ProcessOutputResponse, ClientError> {
        let mut path = format!("/api/v0/processes/{}/output", encode_segment(id));
        let wait = wait.map(|w| w.min(Duration::from_millis(MAX_WAIT_MS)));
        if let Some(w) = wait {
            path.push_str(&format!("?wait=true&timeout_ms={}", w.as_millis()));
        }
        self.call(Method::GET, path, None, wait).await
    }

    /// `POST /api/v0/processes/{id}/signal` (`"kill".parse()`, `"SIGTERM".parse()`, ... give
    /// a [`Signal`]; its API name is sent).
    pub async fn signal(&self, id: &str, signal: Signal) -> Result<Response, ClientError> {
        let body =
            serde_json::to_vec(&SignalProcessRequest::new(signal)).map_err(ClientError::Decode)?;
        let path = format!("/api/v0/processes/{}/signal", encode_segment(id));
        self.call(Method::POST, path, Some(body), None).await
    }

    /// `DELETE /api/v0/processes/{id}`: forgets an exited process.
    pub async fn remove(&self, id: &str) -> Result<Response, ClientError> {
        let path = format!("/api/v0/processes/{}", encode_segment(id));
        self.call(Method::DELETE, path, None, None).await
    }

    /// `GET /api/v0/health`.
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.call(Method::GET, "/api/v0/health".to_owned(), None, None)
            .await
    }

    /// Sends any request (path relative to the agent, e.g. `/api/v0/processes/{id}/log`, any
    /// body, streamed) on a pooled connection and returns once the answer's head arrived; its
    /// body streams (read it to the end to give the connection back to the pool). Only
    /// connecting is bounded (by the connect timeout): bound the whole exchange yourself, as
    /// follow-mode reads and uploads last as long as they last. Error statuses from the agent
    /// are answers here, not errors; the control daemon's failures to reach the agent are
    /// errors, as on a `Node`.
    pub async fn send<B>(
        &self,
        req: Request<B>,
    ) -> Result<http::Response<ResponseBody>, ClientError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let body = body.map_err(Into::into).boxed_unsync();
        self.pool
            .send_raw(Request::from_parts(parts, body), Instant::now())
            .await
    }

    /// Sends one request and decodes the answer, all within the request timeout (plus `wait`).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        wait: Option<Duration>,
    ) -> Result<T, ClientError> {
        let limit = self.opts.request_timeout + wait.unwrap_or_default();
        let started = Instant::now();
        let call = Call {
            method,
            path: &path,
            body: body.map(Bytes::from),
            headers: http::HeaderMap::new(),
        };
        let (status, bytes) = tokio::time::timeout(limit, self.pool.send(&call, started))
            .await
            .map_err(|_| ClientError::Timeout { after: limit })??;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(ClientError::Decode);
        }
        Err(status_error(status, &bytes))
    }
}

/// The agent's `{message, detail}` error body, or the best description of a body that is not.
pub(crate) fn status_error(status: http::StatusCode, body: &[u8]) -> ClientError {
    let (message, detail) = match serde_json::from_slice::<Response>(body) {
        Ok(r) => (r.message, r.detail),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(200).collect();
            let reason = status.canonical_reason().unwrap_or("error").to_owned();
            (reason, (!text.is_empty()).then_some(text))
        }
    };
    ClientError::Status {
        status: status.as_u16(),
        message,
        detail,
    }
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters, so an id
/// can never add a segment, a query or a fragment.
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // "." and ".." are unreserved yet would be normalised away as path segments.
    if out == "." || out == ".." {
        return out.replace('.', "%2E");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(
            encode_segment("0b9c-4f2e_X.y~z"),
            "0b9c-4f2e_X.y~z",
            "uuids and safe ids stay as they are"
        );
        assert_eq!(encode_segment("a/b?c#d"), "a%2Fb%3Fc%23d");
        assert_eq!(encode_segment("a b%"), "a%20b%25");
        assert_eq!(encode_segment(".."), "%2E%2E");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn status_error_uses_agent_json_or_falls_back() {
        let e = status_error(
            http::StatusCode::NOT_FOUND,
            br#"{"message":"Process \"x\" not found."}"#,
        );
        assert!(
            matches!(&e, ClientError::Status { status: 404, message, detail: None }
            if message == "Process \"x\" not found.")
        );
        let e = status_error(http::StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert!(
            matches!(&e, ClientError::Status { status: 502, message, detail: Some(d) }
            if message == "Bad Gateway" && d == "<html>oops</html>")
        );
        assert_eq!(e.to_string(), "Bad Gateway (HTTP 502: <html>oops</html>)");
    }
}
