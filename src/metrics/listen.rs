//! `[metrics] listen`: a host TCP listener that serves only `GET /metrics` (anything else is a
//! 404), never the process API. Off unless configured; loopback is the expected address.
//!
//! Bounded like the tunnel API: served by the same connection loop ([`crate::api::serve`]:
//! header, body, idle and send timeouts from the `[api]` defaults), and at most
//! [`MAX_CONNECTIONS`] at once; one more is closed unserved (and counted in
//! `wgagent_metrics_listener_refused_connections_total`, exported once the listener serves), so
//! a client holding connections open cannot exhaust the agent's file descriptors or memory
//! through it.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Metrics;
use crate::api::serve::{ServeConfig, ServeCounters};

/// Connections the host listener serves at once. A Prometheus server keeps one per target; a
/// few more leave room for a human with `curl` and a restarting scraper.
pub const MAX_CONNECTIONS: usize = 16;

/// Binds `addr` and serves `metrics` there until `cancel`; returns the bound address (port 0
/// picks one). A bind error is returned (the caller decides whether that ends the node).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics is served here\n") })
        .with_state(metrics.clone());
    let cfg = ServeConfig {
        max_connections: Some(MAX_CONNECTIONS),
        ..ServeConfig::default()
    };
    // Exported from now on (a node serves one host listener; were there a second, the first's
    // counters would stay the exported ones).
    let _ = metrics.host_listener.set(cfg.counters.clone());
    tracker.spawn(crate::api::serve::serve(listener, router, cfg, cancel));
    tracing::info!(%local, "Prometheus metrics served on the host at /metrics (only)");
    Ok(local)
}

/// `GET /metrics`: OpenMetrics when the scraper asks for it, else the Prometheus text format.
pub async fn scrape(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    render(&metrics, &headers)
}

/// The response for a scrape with these request headers.
pub fn render(metrics: &Metrics, headers: &HeaderMap) -> axum::response::Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let open = Metrics::wants_openmetrics(accept);
    let content_type = if open {
        super::OPENMETRICS_CONTENT_TYPE
    } else {
        super::TEXT_CONTENT_TYPE
    };
    ([(header::CONTENT_TYPE, content_type)], metrics.render(open)).into_response()
}

/// The host listener's own counters at scrape time, once it serves.
pub(super) struct ListenerCollector {
    counters: Arc<OnceLock<Arc<ServeCounters>>>,
}

impl ListenerCollector {
    pub(super) fn new(counters: Arc<OnceLock<Arc<ServeCounters>>>) -> Self {
        ListenerCollector { counters }
    }
}

impl std::fmt::Debug for ListenerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCollector").finish_non_exhaustive()
    }
}

impl Collector for ListenerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(counters) = self.counters.get() else {
            return Ok(());
        };
        super::counter(
            &mut enc,
            "wgagent_metrics_listener_refused_connections",
            &format!(
                "Connections to the host metrics listener ([metrics] listen) closed unserved \
                 because it already served {MAX_CONNECTIONS} at once"
            ),
            counters.snapshot().refused_connections,
        )
    }
}
