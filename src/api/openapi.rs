//! `GET /api/v0/openapi.json`: the OpenAPI 3.1 document of this API.
//!
//! The document is `docs/openapi.yaml`, written by hand for people (descriptions, statuses,
//! headers, the Coder-compatibility notes) and converted to JSON at build time by `build.rs`.
//! `tests/openapi.rs` keeps it honest: every route of the router is in it and every path in it
//! is routed, the wire types serialise to values its schemas accept, and schemathesis drives a
//! real agent from it.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

/// The document as JSON (compact).
pub const DOCUMENT: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// The route, merged into `api::router`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v0/openapi.json", get(document))
}

async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
