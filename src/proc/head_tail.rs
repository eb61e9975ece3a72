//! TEMPORARY stand-in with the agreed API; replaced by the real buffer from the `headtail` branch.
use parking_lot::Mutex;

pub const DEFAULT_HEAD: usize = 16384;
pub const DEFAULT_TAIL: usize = 16384;

pub struct HeadTailBuffer {
    data: Mutex<Vec<u8>>,
    total: Mutex<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub original_bytes: u64,
    pub retained_bytes: u64,
    pub omitted_bytes: u64,
    pub truncated_lines: u64,
}

pub struct Rendered {
    pub text: String,
    pub truncation: Option<Truncation>,
}

impl Default for HeadTailBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl HeadTailBuffer {
    pub fn new() -> Self {
        Self {
            data: Mutex::new(Vec::new()),
            total: Mutex::new(0),
        }
    }
    pub fn write(&self, d: &[u8]) {
        let mut v = self.data.lock();
        if v.len() < 32768 {
            let n = d.len().min(32768 - v.len());
            v.extend_from_slice(&d[..n]);
        }
        *self.total.lock() += d.len() as u64;
    }
    pub fn render(&self) -> Rendered {
        let v = self.data.lock();
        let t = *self.total.lock();
        let text = String::from_utf8_lossy(&v).into_owned();
        let truncation = (t > v.len() as u64).then(|| Truncation {
            original_bytes: t,
            retained_bytes: v.len() as u64,
            omitted_bytes: t - v.len() as u64,
            truncated_lines: 0,
        });
        Rendered { text, truncation }
    }
    pub fn total_written(&self) -> u64 {
        *self.total.lock()
    }
}
