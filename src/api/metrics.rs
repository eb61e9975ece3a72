//! `GET /metrics` on the tunnel (Prometheus scraping through a control replica that is a peer)
//! and the middleware that counts every API request for it.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use http::HeaderMap;

use super::AppState;

/// `GET /metrics`: `AppState::metrics` as Prometheus text, or OpenMetrics when `Accept` asks.
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(st): State<AppState>, headers: HeaderMap) -> Response {
    crate::metrics::listen::render(&st.metrics, &headers)
}

/// Counts the request by route pattern, method and status, and observes its latency (to the
/// response head).
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let method = req.method().clone();
    let response = next.run(req).await;
    st.metrics.api.record(
        route.as_deref(),
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
