//! Rust SDK for control replicas (filled in by the control-side issue).
