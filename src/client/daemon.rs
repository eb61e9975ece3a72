//! The control daemon's Unix socket as a transport: [`DaemonConnector`].
//!
//! Owns: connecting to the socket, the path prefix that makes the daemon forward a request to
//! one agent (`/agents/<agent>/...`), and the daemon's own routes (`/v0/status`,
//! `/v0/agents/<agent>`).
//! Leaves to the daemon: which agent a name means, the WireGuard sessions, and the pools of
//! tunnel connections (one per agent). An [`AgentConn`] over this connector behaves as one over a
//! `Node`: the daemon marks its own failures with [`DAEMON_ERROR_HEADER`] and they come back as
//! the same [`ClientError`] variants (`Unreachable` when nothing reached the agent, `Http` when
//! the tunnel connection broke mid-request).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::{AgentConn, AgentOptions, ClientError, Connect, encode_segment, status_error};
use crate::control::types::{AgentInfo, Status};

/// Response header the daemon sets on answers it made itself because the agent could not be
/// reached (`unreachable`: nothing was sent to the agent) or the tunnel connection failed after
/// the request was sent (`broken`). Answers that come from the agent never carry it.
pub const DAEMON_ERROR_HEADER: &str = "wgagent-daemon-error";

/// Largest answer accepted from the daemon's own routes (the status of 10,000 peers is ~4 MB).
const MAX_DAEMON_ANSWER: usize = 64 << 20;

/// Reaches agents through a running `wgagent control` daemon. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DaemonConnector {
    socket: Arc<Path>,
}

impl DaemonConnector {
    /// A connector through the control daemon listening on `socket` (nothing is opened yet).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: Arc::from(socket.into().into_boxed_path()),
        }
    }

    /// The daemon's socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Succeeds when a daemon accepts connections on the socket (within `limit`).
    pub async fn probe(&self, limit: Duration) -> io::Result<()> {
        match tokio::time::timeout(limit, UnixStream::connect(&*self.socket)).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            )),
        }
    }

    /// Asks the daemon which agent `agent` (a peer name, tunnel address or `ADDR:PORT`) is.
    /// An unknown agent is `Status` 404 with the daemon's message.
    pub async fn resolve(&self, agent: &str) -> Result<AgentInfo, ClientError> {
        self.get(&format!("/v0/agents/{}", encode_segment(agent)))
            .await
    }

    /// `GET /v0/status`: the daemon's peers, endpoints, handshakes and counters.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get("/v0/status").await
    }

    /// An [`AgentConn`] for `agent` (resolved by the daemon, so names are the daemon's).
    pub async fn agent(
        &self,
        agent: &str,
        opts: AgentOptions,
    ) -> Result<AgentConn<DaemonConnector>, ClientError> {
        let info = self.resolve(agent).await?;
        Ok(AgentConn::new(self.clone(), info.api, opts))
    }

    /// One request to the daemon's own routes on a connection of its own.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            waited: Duration::ZERO,
            source,
        };
        let stream = UnixStream::connect(&*self.socket)
            .await
            .map_err(|e| unreachable(self.describe(e)))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(Box::new(e)))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, "wgagent-control")
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Http(Box::new(e)))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(Box::new(e)))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_DAEMON_ANSWER)
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        if !status.is_success() {
            return Err(status_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(ClientError::Decode)
    }

    /// Names the socket in a connect error.
    fn describe(&self, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("control daemon socket {}: {e}", self.socket.display()),
        )
    }
}

impl Connect for DaemonConnector {
    type Stream = UnixStream;

    async fn connect(&self, _addr: SocketAddr) -> io::Result<UnixStream> {
        UnixStream::connect(&*self.socket)
            .await
            .map_err(|e| self.describe(e))
    }

    fn base_path(&self, addr: SocketAddr) -> String {
        format!("/agents/{}", encode_segment(&addr.to_string()))
    }
}
