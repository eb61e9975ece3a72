//! HeadTailBuffer (placeholder).
pub struct HeadTailBuffer;
pub struct Truncation;
