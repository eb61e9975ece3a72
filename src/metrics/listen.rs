//! `[metrics] listen`: a host TCP listener that serves only `GET /metrics` (anything else is a
//! 404), never the process API. Off unless configured; loopback is the expected address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Metrics;

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
        .with_state(metrics);
    tracker.spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(cancel.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(%local, "metrics listener failed: {e}");
        }
    });
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
