//! The process HTTP API (axum router) and its wire types.

pub mod types;
