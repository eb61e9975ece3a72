//! Processes: the bounded head-tail output buffer and the process manager.

pub mod head_tail;

pub use head_tail::{HeadTailBuffer, Truncation};
