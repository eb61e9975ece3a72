//! `ClientError`: everything that can go wrong talking to one agent.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// A failed SDK call. Each variant says whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be opened (refused, no route, no WireGuard session, or the connect
    /// timeout passed). Nothing was sent, so retrying any request is safe; it helps once the
    /// agent or the tunnel is back.
    #[error("agent {addr} unreachable after {waited:.1?}: {source}")]
    Unreachable {
        /// The agent's API address.
        addr: SocketAddr,
        /// How long connecting was tried.
        waited: Duration,
        /// The last connect error.
        #[source]
        source: io::Error,
    },
    /// The agent answered with an error status and its JSON `{message, detail}`. Retrying the
    /// same request gives the same answer, except for 429 and 503.
    #[error("{message} (HTTP {status}{})", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        /// The HTTP status.
        status: u16,
        /// The error body's `message`.
        message: String,
        /// The error body's `detail`, if any.
        detail: Option<String>,
    },
    /// No complete answer within the request timeout. The request may or may not have taken
    /// effect (use an idempotency key to retry a start safely).
    #[error("no answer from the agent within {after:.1?}")]
    Timeout {
        /// The timeout that passed.
        after: Duration,
    },
    /// The agent answered 2xx with a body that is not the expected JSON (version mismatch?).
    #[error("unexpected response body: {0}")]
    Decode(#[source] serde_json::Error),
    /// A log range starts before what the agent still retains (`log_start`). Retrying the same
    /// range never helps; ask from `log_start` (the bytes before it are gone).
    #[error("{message} (HTTP 416)")]
    NotRetained {
        /// The agent's message.
        message: String,
        /// The first log offset the agent still has.
        log_start: u64,
    },
    /// The connection failed after it was opened (reset, closed mid-answer, malformed HTTP).
    /// The request may or may not have taken effect.
    #[error("HTTP error: {0}")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ClientError {
    /// The HTTP status, when the agent answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
