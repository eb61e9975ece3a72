//! The bounded output buffer of one process: the first bytes it wrote (head), the last bytes it
//! wrote (tail, a ring), and the rendering of both as text an LLM or a human can read.
//!
//! Owns: storage bounded by `head + tail` bytes whatever the process writes (the ring is allocated
//! once, on the first overflow); the rendering rules (omission marker, per-line cap, UTF-8 repair,
//! the rendered-size cap of [`MAX_RENDERED`]) and the [`Truncation`] metadata that says exactly
//! what the rendering left out.
//!
//! Leaves to its caller: reading the pipe and calling [`HeadTailBuffer::write`], mapping
//! [`Truncation`] to wire JSON, and deciding when to render. Sans-IO: no tokio, no clock.
//!
//! Rendering (see `API.md`, "HeadTailBuffer"):
//! - nothing dropped → the text exactly as written (one segment, no inserted bytes);
//! - bytes dropped → head, `\n\n... [omitted N bytes] ...\n\n`, tail. N counts every input byte
//!   between the last head byte shown and the first tail byte shown, including tail bytes given up
//!   to make room for the marker (N and the marker length are solved as a fixed point);
//! - every line longer than [`MAX_LINE`] bytes (after UTF-8 repair, `\n` excluded) becomes its
//!   first bytes plus [`LINE_SUFFIX`], at most [`MAX_LINE`] bytes in all;
//! - cuts fall on character boundaries; invalid input bytes become U+FFFD (one per maximal invalid
//!   sequence, as `String::from_utf8_lossy` does).

use std::fmt::Write as _;
use std::ops::Range;

use parking_lot::Mutex;

/// Bytes kept from the start of the output by [`HeadTailBuffer::new`].
pub const DEFAULT_HEAD: usize = 16384;
/// Bytes kept from the end of the output by [`HeadTailBuffer::new`].
pub const DEFAULT_TAIL: usize = 16384;
/// Longest rendered line, in bytes, `\n` excluded; longer lines are capped to this length.
pub const MAX_LINE: usize = 2048;
/// Appended to a capped line.
pub const LINE_SUFFIX: &str = " ... [truncated]";
/// Bound on the rendered text of [`HeadTailBuffer::new`], marker and repairs included, so no
/// client ever has to cut the tail.
pub const MAX_RENDERED: usize = 32768;

/// Bytes of a capped line kept before [`LINE_SUFFIX`] (fewer when a character straddles it).
const LINE_KEEP: usize = MAX_LINE - LINE_SUFFIX.len();
const MARKER_PREFIX: &str = "\n\n... [omitted ";
const MARKER_SUFFIX: &str = " bytes] ...\n\n";
/// Rounds of the marker fixed point; the marker grows by one digit at most 20 times (u64), and a
/// round without a new digit ends the loop.
const MAX_FIXPOINT_ROUNDS: usize = 24;

/// Head-and-tail capture of a process's combined output. `Send + Sync`; every method takes
/// `&self` and holds the internal lock only for a copy.
pub struct HeadTailBuffer {
    inner: Mutex<Inner>,
    /// Bound on the rendered text; `None` for [`HeadTailBuffer::with_sizes`].
    max_rendered: Option<usize>,
}

/// One rendering of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Always valid UTF-8; at most [`MAX_RENDERED`] bytes for [`HeadTailBuffer::new`].
    pub text: String,
    /// `Some` exactly when `text` differs from the bytes written.
    pub truncation: Option<Truncation>,
}

/// What a rendering left out or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Every byte ever written.
    pub original_bytes: u64,
    /// Length of the rendered text in bytes (marker, suffixes and U+FFFD included).
    pub retained_bytes: u64,
    /// Input bytes not shown: the omitted middle (the marker's N) plus bytes removed by line caps.
    pub omitted_bytes: u64,
    /// Lines capped at [`MAX_LINE`] bytes.
    pub truncated_lines: u64,
}

impl HeadTailBuffer {
    /// The default buffer: 16 KiB head, 16 KiB tail, rendered text capped at [`MAX_RENDERED`].
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_HEAD, DEFAULT_TAIL, Some(MAX_RENDERED))
    }

    /// A buffer with custom sizes and no cap on the rendered text (head + marker + tail), so small
    /// test sizes render exactly.
    pub fn with_sizes(head: usize, tail: usize) -> Self {
        Self::with_limits(head, tail, None)
    }

    /// `max_rendered` must leave room for a marker (> 64 bytes) to be honoured.
    fn with_limits(head: usize, tail: usize, max_rendered: Option<usize>) -> Self {
        let inner = Inner {
            head_cap: head,
            tail_cap: tail,
            head: Vec::new(),
            ring: Vec::new(),
            ring_pos: 0,
            ring_len: 0,
            total: 0,
        };
        Self {
            inner: Mutex::new(inner),
            max_rendered,
        }
    }

    /// Appends output. Never fails, never waits for more than a copy of at most
    /// `head + tail` bytes; allocates only while the head grows and once for the ring.
    pub fn write(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.inner.lock().push(data);
    }

    /// Renders the current contents (see the module docs). The lock is held only to copy at most
    /// `head + tail` bytes; formatting happens outside it.
    pub fn render(&self) -> Rendered {
        let snap = self.inner.lock().snapshot();
        render(&snap, self.max_rendered)
    }

    /// Every byte ever written.
    pub fn total_written(&self) -> u64 {
        self.inner.lock().total
    }

    /// The contents, for persisting: head, tail (oldest first) and the total.
    pub fn export(&self) -> Saved {
        let inner = self.inner.lock();
        let snap = inner.snapshot();
        let (head, tail) = snap.bytes.split_at(snap.head_len);
        Saved {
            head: head.to_vec(),
            tail: tail.to_vec(),
            total: snap.total,
        }
    }

    /// A default-sized buffer holding what [`HeadTailBuffer::export`] returned, so it renders
    /// exactly as the exported one did. Oversized parts are cut to the buffer's sizes.
    pub fn restore(saved: &Saved) -> Self {
        let buf = Self::new();
        {
            let mut inner = buf.inner.lock();
            let head = &saved.head[..saved.head.len().min(inner.head_cap)];
            inner.head = head.to_vec();
            let cap = inner.tail_cap;
            let tail = &saved.tail[saved.tail.len().saturating_sub(cap)..];
            if !tail.is_empty() {
                let mut ring = vec![0; cap];
                ring[..tail.len()].copy_from_slice(tail);
                inner.ring = ring;
                inner.ring_len = tail.len();
                inner.ring_pos = tail.len() % cap;
            }
            let held = (inner.head.len() + inner.ring_len) as u64;
            inner.total = saved.total.max(held);
        }
        buf
    }
}

/// What [`HeadTailBuffer::export`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The first bytes kept.
    pub head: Vec<u8>,
    /// The last bytes kept, oldest first.
    pub tail: Vec<u8>,
    /// Bytes written in all (at least `head` + `tail`).
    pub total: u64,
}

impl Default for HeadTailBuffer {
    /// Same as [`HeadTailBuffer::new`].
    fn default() -> Self {
        Self::new()
    }
}

struct Inner {
    head_cap: usize,
    tail_cap: usize,
    /// Grows up to `head_cap`, never beyond (capacity included).
    head: Vec<u8>,
    /// Empty until the head overflows, then exactly `tail_cap` bytes.
    ring: Vec<u8>,
    /// Next write position; when the ring is full, also its oldest byte.
    ring_pos: usize,
    /// Bytes held by the ring; `ring_pos == ring_len` until it first wraps.
    ring_len: usize,
    total: u64,
}

/// A copy of the contents: `bytes` = head followed by the ring from oldest to newest.
struct Snapshot {
    bytes: Vec<u8>,
    head_len: usize,
    total: u64,
}

impl Inner {
    fn push(&mut self, data: &[u8]) {
        self.total = self.total.saturating_add(data.len() as u64);
        let room = self.head_cap - self.head.len();
        let (to_head, rest) = data.split_at(room.min(data.len()));
        if !to_head.is_empty() {
            let needed = self.head.len() + to_head.len();
            if self.head.capacity() < needed {
                // Grow geometrically but never past head_cap, so memory stays head + tail.
                let want = (self.head.capacity() * 2).clamp(needed, self.head_cap);
                self.head.reserve_exact(want - self.head.len());
            }
            self.head.extend_from_slice(to_head);
        }
        let cap = self.tail_cap;
        if rest.is_empty() || cap == 0 {
            return;
        }
        if self.ring.is_empty() {
            self.ring = vec![0; cap];
        }
        if rest.len() >= cap {
            self.ring.copy_from_slice(&rest[rest.len() - cap..]);
            self.ring_pos = 0;
            self.ring_len = cap;
            return;
        }
        let first = (cap - self.ring_pos).min(rest.len());
        self.ring[self.ring_pos..self.ring_pos + first].copy_from_slice(&rest[..first]);
        let second = rest.len() - first;
        self.ring[..second].copy_from_slice(&rest[first..]);
        self.ring_pos = (self.ring_pos + rest.len()) % cap;
        self.ring_len = (self.ring_len + rest.len()).min(cap);
    }

    fn snapshot(&self) -> Snapshot {
        let mut bytes = Vec::with_capacity(self.head.len() + self.ring_len);
        bytes.extend_from_slice(&self.head);
        if self.tail_cap > 0 && self.ring_len == self.tail_cap {
            bytes.extend_from_slice(&self.ring[self.ring_pos..]);
            bytes.extend_from_slice(&self.ring[..self.ring_pos]);
        } else {
            bytes.extend_from_slice(&self.ring[..self.ring_len]);
        }
        Snapshot {
            bytes,
            head_len: self.head.len(),
            total: self.total,
        }
    }
}

fn render(snap: &Snapshot, max_rendered: Option<usize>) -> Rendered {
    if snap.total == 0 {
        return Rendered {
            text: String::new(),
            truncation: None,
        };
    }
    if snap.bytes.len() as u64 == snap.total {
        // Nothing dropped: one segment, so no cut and no line split at the head/tail seam.
        let whole = Decoded::new(&snap.bytes);
        let mut text = String::with_capacity(whole.text.len());
        let caps = push_capped(&mut text, &whole, 0..whole.text.len());
        if max_rendered.is_none_or(|max| text.len() <= max) {
            let truncation = (text.as_bytes() != snap.bytes).then_some(Truncation {
                original_bytes: snap.total,
                retained_bytes: text.len() as u64,
                omitted_bytes: caps.dropped_input,
                truncated_lines: caps.lines,
            });
            return Rendered { text, truncation };
        }
        // Only U+FFFD growth gets here; the split path below drops enough to fit.
    }
    render_split(snap, max_rendered)
}

/// Head, marker, tail. The head keeps at most half the cap (it only loses bytes when U+FFFD
/// growth would make it bigger); the tail gives up its oldest bytes until everything fits.
fn render_split(snap: &Snapshot, max_rendered: Option<usize>) -> Rendered {
    let (head_raw, tail_raw) = snap.bytes.split_at(snap.head_len);
    let head_raw = &head_raw[..head_raw.len() - incomplete_suffix_len(head_raw)];
    // Continuation bytes at the ring start belong to a character whose lead byte was dropped.
    let skip = tail_raw
        .iter()
        .take(3)
        .take_while(|b| is_continuation(**b))
        .count();
    let tail_base = snap.total - (tail_raw.len() - skip) as u64;
    let head = Decoded::new(head_raw);
    let tail = Decoded::new(&tail_raw[skip..]);

    let head_end = max_rendered.map_or(head.text.len(), |max| fit_head(&head.text, max / 2));
    let head_end_input = head.input_offset(head_end) as u64;
    let gap_at =
        |tail_start: usize| tail_base + tail.input_offset(tail_start) as u64 - head_end_input;
    let mut tail_start = 0;
    if let Some(max) = max_rendered {
        let head_len = rendered_len(&head.text[..head_end]);
        for _ in 0..MAX_FIXPOINT_ROUNDS {
            let budget = max.saturating_sub(head_len + marker_len(gap_at(tail_start)));
            let next = fit_tail(&tail.text, budget).max(tail_start);
            if next == tail_start {
                break;
            }
            tail_start = next;
        }
    }
    let gap = gap_at(tail_start);

    let mut text = String::with_capacity(max_rendered.unwrap_or(snap.bytes.len() * 3 + 64));
    let head_caps = push_capped(&mut text, &head, 0..head_end);
    // Writing to a String cannot fail.
    let _ = write!(text, "{MARKER_PREFIX}{gap}{MARKER_SUFFIX}");
    let tail_caps = push_capped(&mut text, &tail, tail_start..tail.text.len());
    debug_assert!(max_rendered.is_none_or(|max| text.len() <= max));
    let truncation = Truncation {
        original_bytes: snap.total,
        retained_bytes: text.len() as u64,
        omitted_bytes: gap + head_caps.dropped_input + tail_caps.dropped_input,
        truncated_lines: head_caps.lines + tail_caps.lines,
    };
    Rendered {
        text,
        truncation: Some(truncation),
    }
}

/// Input bytes decoded to valid UTF-8, remembering where each U+FFFD came from so text offsets
/// map back to input offsets (for exact byte accounting).
struct Decoded {
    text: String,
    repairs: Vec<Repair>,
}

#[derive(Clone, Copy)]
struct Repair {
    /// End of this U+FFFD in `text`.
    text_end: usize,
    /// Replacements up to and including this one.
    count: usize,
    /// Input bytes those replacements stand for.
    input_len: usize,
}

impl Decoded {
    fn new(bytes: &[u8]) -> Self {
        let mut text = String::with_capacity(bytes.len());
        let mut repairs = Vec::new();
        let (mut count, mut input_len) = (0, 0);
        for chunk in bytes.utf8_chunks() {
            text.push_str(chunk.valid());
            if !chunk.invalid().is_empty() {
                text.push(char::REPLACEMENT_CHARACTER);
                count += 1;
                input_len += chunk.invalid().len();
                repairs.push(Repair {
                    text_end: text.len(),
                    count,
                    input_len,
                });
            }
        }
        Self { text, repairs }
    }

    /// Input offset of the text offset `pos` (a character boundary).
    fn input_offset(&self, pos: usize) -> usize {
        let before = self.repairs.partition_point(|r| r.text_end <= pos);
        match before.checked_sub(1).map(|i| self.repairs[i]) {
            // Each replacement occupies 3 text bytes at or before `pos`.
            Some(r) => pos - 3 * r.count + r.input_len,
            None => pos,
        }
    }
}

#[derive(Default)]
struct CapStats {
    lines: u64,
    dropped_input: u64,
}

/// Appends `d.text[range]` with long lines capped; returns what the caps removed.
fn push_capped(out: &mut String, d: &Decoded, range: Range<usize>) -> CapStats {
    let mut stats = CapStats::default();
    let base = range.start;
    for (i, (s, e)) in line_spans(&d.text[range]).enumerate() {
        let (s, e) = (base + s, base + e);
        if i > 0 {
            out.push('\n');
        }
        let line = &d.text[s..e];
        if line.len() <= MAX_LINE {
            out.push_str(line);
            continue;
        }
        let cut = s + line.floor_char_boundary(LINE_KEEP);
        out.push_str(&d.text[s..cut]);
        out.push_str(LINE_SUFFIX);
        stats.lines += 1;
        stats.dropped_input += (d.input_offset(e) - d.input_offset(cut)) as u64;
    }
    stats
}

/// `(start, end)` of each `\n`-separated line, newline excluded; a trailing `\n` yields a last
/// empty line, so joining the lines with `\n` gives back the text.
fn line_spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    text.split('\n').map(move |line| {
        let s = start;
        start += line.len() + 1;
        (s, s + line.len())
    })
}

fn rendered_line_len(line: &str) -> usize {
    if line.len() <= MAX_LINE {
        line.len()
    } else {
        line.floor_char_boundary(LINE_KEEP) + LINE_SUFFIX.len()
    }
}

/// Length of `push_capped` output for `text`.
fn rendered_len(text: &str) -> usize {
    line_spans(text)
        .map(|(s, e)| rendered_line_len(&text[s..e]) + 1)
        .sum::<usize>()
        - 1
}

/// Largest `end` such that `text[..end]` renders in at most `budget` bytes. A line cut here is
/// shorter than the budget left, hence shorter than [`MAX_LINE`] and shown uncapped.
fn fit_head(text: &str, budget: usize) -> usize {
    let mut used = 0;
    for (s, e) in line_spans(text) {
        let line = rendered_line_len(&text[s..e]);
        let newline = usize::from(e < text.len());
        if used + line + newline <= budget {
            used += line + newline;
        } else if used + line <= budget {
            return e;
        } else {
            return text.floor_char_boundary(s + (budget - used));
        }
    }
    text.len()
}

/// Smallest `start` (found line by line from the oldest) such that `text[start..]` renders in at
/// most `budget` bytes. A line entered part-way keeps its newest bytes, fewer than the budget left,
/// so it is shown uncapped.
fn fit_tail(text: &str, budget: usize) -> usize {
    let mut from_here = rendered_len(text);
    for (s, e) in line_spans(text) {
        if from_here <= budget {
            return s;
        }
        let rest = from_here - rendered_line_len(&text[s..e]);
        if rest <= budget {
            return text.ceil_char_boundary(e - (budget - rest));
        }
        from_here = rest - 1;
    }
    text.len()
}

fn marker_len(gap: u64) -> usize {
    let digits = gap.checked_ilog10().map_or(1, |d| d as usize + 1);
    MARKER_PREFIX.len() + digits + MARKER_SUFFIX.len()
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Length of a character cut short at the end of `b` (a valid prefix of a multi-byte sequence),
/// or 0. Invalid bytes at the end are kept (they become U+FFFD).
fn incomplete_suffix_len(b: &[u8]) -> usize {
    for i in 1..=b.len().min(3) {
        let lead = b[b.len() - i];
        if is_continuation(lead) {
            continue;
        }
        let needed = match lead {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        let cut_short =
            matches!(std::str::from_utf8(&b[b.len() - i..]), Err(e) if e.error_len().is_none());
        return if needed > i && cut_short { i } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn marker(n: u64) -> String {
        format!("{MARKER_PREFIX}{n}{MARKER_SUFFIX}")
    }

    fn write_all(buf: &HeadTailBuffer, chunks: &[&[u8]]) -> Vec<u8> {
        let mut input = Vec::new();
        for c in chunks {
            buf.write(c);
            input.extend_from_slice(c);
        }
        input
    }

    /// For input that is valid UTF-8 without long lines: the text is a prefix of the input, the
    /// marker, and a suffix of the input, and the three account for every input byte.
    #[track_caller]
    fn assert_head_marker_tail(r: &Rendered, input: &str) -> (usize, usize) {
        let t = r.truncation.expect("truncation metadata");
        assert_eq!(t.original_bytes, input.len() as u64);
        assert_eq!(t.retained_bytes, r.text.len() as u64);
        assert_eq!(t.truncated_lines, 0);
        let m = marker(t.omitted_bytes);
        let at = r.text.find(&m).expect("marker with N = omitted_bytes");
        let (head, tail) = (&r.text[..at], &r.text[at + m.len()..]);
        assert!(input.starts_with(head), "head is not a prefix of the input");
        assert!(input.ends_with(tail), "tail is not a suffix of the input");
        assert_eq!(
            head.len() as u64 + t.omitted_bytes + tail.len() as u64,
            input.len() as u64
        );
        (head.len(), tail.len())
    }

    #[test]
    fn empty_buffer_renders_nothing() {
        let buf = HeadTailBuffer::new();
        assert_eq!(
            buf.render(),
            Rendered {
                text: String::new(),
                truncation: None
            }
        );
        assert_eq!(buf.total_written(), 0);
    }

    #[test]
    fn small_output_is_exact() {
        let buf = HeadTailBuffer::default();
        buf.write(b"hello world\n");
        assert_eq!(
            buf.render(),
            Rendered {
                text: "hello world\n".into(),
                truncation: None
            }
        );
        assert_eq!(buf.total_written(), 12);
    }

    #[test]
    fn exactly_head_size_is_exact() {
        let mut input = format!("{}\n", "x".repeat(79)).repeat(DEFAULT_HEAD / 80);
        input.push_str(&"y".repeat(DEFAULT_HEAD - input.len()));
        assert_eq!(input.len(), DEFAULT_HEAD);
        let buf = HeadTailBuffer::new();
        buf.write(input.as_bytes());
        assert_eq!(
            buf.render(),
            Rendered {
                text: input,
                truncation: None
            }
        );
    }

    #[test]
    fn head_plus_tail_without_drop_is_exact() {
        for len in [
            DEFAULT_HEAD + 1,
            20_000,
            24_577,
            DEFAULT_HEAD + DEFAULT_TAIL,
        ] {
            let input: String = (0..len)
                .map(|i| if i % 61 == 60 { '\n' } else { 'a' })
                .collect();
            let buf = HeadTailBuffer::new();
            buf.write(input.as_bytes());
            assert_eq!(
                buf.render(),
                Rendered {
                    text: input,
                    truncation: None
                },
                "len {len}"
            );
        }
        // The reference inserted "\n" here and reported a truncation.
        let buf = HeadTailBuffer::with_sizes(10, 10);
        buf.write(b"0123456789abcdefghij");
        assert_eq!(buf.render().text, "0123456789abcdefghij");
        assert_eq!(buf.render().truncation, None);
    }

    #[test]
    fn large_output_keeps_head_and_tail() {
        let buf = HeadTailBuffer::with_sizes(10, 10);
        buf.write(&[b'A'; 50]);
        buf.write(&[b'Z'; 50]);
        let r = buf.render();
        assert_eq!(
            r.text,
            format!("{}{}{}", "A".repeat(10), marker(80), "Z".repeat(10))
        );
        assert!(r.text.contains("... [omitted 80 bytes] ..."));
        let t = r.truncation.unwrap();
        assert_eq!(
            (t.original_bytes, t.omitted_bytes, t.truncated_lines),
            (100, 80, 0)
        );
        assert_eq!(t.retained_bytes, r.text.len() as u64);
        assert_eq!(buf.total_written(), 100);
    }

    #[test]
    fn multi_mib_output_stays_bounded() {
        let chunk: Vec<u8> = (0..4097u32)
            .map(|i| {
                if i % 73 == 72 {
                    b'\n'
                } else {
                    b'0' + (i % 10) as u8
                }
            })
            .collect();
        let buf = HeadTailBuffer::new();
        let mut input = Vec::new();
        while input.len() < 5 << 20 {
            buf.write(&chunk);
            input.extend_from_slice(&chunk);
        }
        assert_eq!(buf.total_written(), input.len() as u64);
        let r = buf.render();
        assert_eq!(r.text.len(), MAX_RENDERED, "ASCII fills the cap exactly");
        let (head, _) = assert_head_marker_tail(&r, std::str::from_utf8(&input).unwrap());
        assert_eq!(head, DEFAULT_HEAD);
    }

    #[test]
    fn marker_digits_are_a_fixed_point() {
        // Totals whose omitted count crosses 10, 100, 1000 and 10000 as the tail makes room.
        let overs = (1..=40)
            .chain(60..=120)
            .chain(950..=1010)
            .chain(9950..=10010);
        for over in overs {
            let input: String = (0..MAX_RENDERED + over)
                .map(|i| if i % 50 == 49 { '\n' } else { 'q' })
                .collect();
            let buf = HeadTailBuffer::new();
            buf.write(input.as_bytes());
            let r = buf.render();
            assert_eq!(r.text.len(), MAX_RENDERED, "over {over}");
            assert_head_marker_tail(&r, &input);
        }
    }

    #[test]
    fn long_line_is_capped() {
        let buf = HeadTailBuffer::new();
        buf.write(format!("{}\n", "x".repeat(2548)).as_bytes());
        let r = buf.render();
        assert_eq!(r.text, format!("{}{LINE_SUFFIX}\n", "x".repeat(LINE_KEEP)));
        assert_eq!(r.text.lines().next().unwrap().len(), MAX_LINE);
        let t = r.truncation.unwrap();
        assert_eq!(
            (
                t.original_bytes,
                t.retained_bytes,
                t.omitted_bytes,
                t.truncated_lines
            ),
            (2549, 2049, 2548 - 2032, 1)
        );
    }

    #[test]
    fn line_of_exactly_max_is_kept() {
        let input = format!("{}\n{}", "x".repeat(MAX_LINE), "y".repeat(MAX_LINE));
        let buf = HeadTailBuffer::new();
        buf.write(input.as_bytes());
        assert_eq!(
            buf.render(),
            Rendered {
                text: input,
                truncation: None
            }
        );
    }

    #[test]
    fn long_line_in_tail_is_capped() {
        let buf = HeadTailBuffer::with_sizes(20, 5000);
        let mut input = String::from("0123456789abcdefghi\n");
        input.push_str(&"short\n".repeat(1000));
        input.push_str(&format!("{}\nend\n", "z".repeat(2148)));
        buf.write(input.as_bytes());
        let r = buf.render();
        let t = r.truncation.unwrap();
        assert_eq!(t.truncated_lines, 1);
        let capped = format!("\n{}{LINE_SUFFIX}\nend\n", "z".repeat(LINE_KEEP));
        assert!(
            r.text.ends_with(&capped),
            "{:?}",
            &r.text[r.text.len() - 60..]
        );
        let gap = input.len() as u64 - 20 - 5000;
        assert!(
            r.text
                .starts_with(&format!("0123456789abcdefghi\n{}", marker(gap)))
        );
        assert_eq!(t.omitted_bytes, gap + (2148 - 2032));
        assert_eq!(t.retained_bytes, r.text.len() as u64);
    }

    #[test]
    fn one_huge_line_is_capped_in_head_and_tail() {
        let buf = HeadTailBuffer::new();
        buf.write(&[b'x'; 100_000]);
        let r = buf.render();
        let capped = format!("{}{LINE_SUFFIX}", "x".repeat(LINE_KEEP));
        assert_eq!(r.text, format!("{capped}{}{capped}", marker(67_232)));
        let t = r.truncation.unwrap();
        assert_eq!(
            (t.retained_bytes, t.omitted_bytes, t.truncated_lines),
            (4129, 100_000 - 2 * 2032, 2)
        );
    }

    #[test]
    fn concurrent_writes_keep_exact_totals() {
        let buf = HeadTailBuffer::new();
        std::thread::scope(|s| {
            for t in 0..10 {
                let buf = &buf;
                s.spawn(move || {
                    for i in 0..1000 {
                        buf.write(format!("thread {t} line {i:04} ........\n").as_bytes());
                    }
                });
            }
        });
        let line_len = "thread 0 line 0000 ........\n".len();
        assert_eq!(buf.total_written(), (10 * 1000 * line_len) as u64);
        let r = buf.render();
        assert!(r.text.len() <= MAX_RENDERED);
        assert_eq!(r.truncation.unwrap().original_bytes, buf.total_written());
        // Each write is atomic: every whole line shown is one written line.
        let tail = r.text.split("] ...\n\n").nth(1).unwrap();
        for line in tail.lines().skip(1).chain(r.text.lines().take(100)) {
            assert!(
                line.starts_with("thread ") && line.ends_with("........"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn byte_at_a_time_is_exact() {
        let buf = HeadTailBuffer::new();
        for b in b"hello world" {
            buf.write(&[*b]);
        }
        assert_eq!(
            buf.render(),
            Rendered {
                text: "hello world".into(),
                truncation: None
            }
        );
        // Past the head and around the ring several times: same as one big write.
        let input: Vec<u8> = (0..70_000u32).map(|i| b'a' + (i % 23) as u8).collect();
        let (one, many) = (
            HeadTailBuffer::with_sizes(100, 300),
            HeadTailBuffer::with_sizes(100, 300),
        );
        one.write(&input);
        input.iter().for_each(|b| many.write(&[*b]));
        assert_eq!(one.render(), many.render());
        assert!(
            one.render()
                .text
                .ends_with(std::str::from_utf8(&input[70_000 - 300..]).unwrap())
        );
    }

    #[test]
    fn empty_write_changes_nothing() {
        let buf = HeadTailBuffer::new();
        buf.write(b"");
        assert_eq!((buf.total_written(), buf.render().text.as_str()), (0, ""));
        buf.write(b"abc");
        buf.write(b"");
        assert_eq!(buf.total_written(), 3);
        assert_eq!(
            buf.render(),
            Rendered {
                text: "abc".into(),
                truncation: None
            }
        );
    }

    #[test]
    fn ring_wraparound_keeps_newest() {
        let buf = HeadTailBuffer::with_sizes(5, 10);
        write_all(&buf, &[b"HEADD", b"0123456789", b"abcdefghij", b"ABCDE"]);
        let r = buf.render();
        assert!(r.text.ends_with("fghijABCDE"));
        assert_eq!(r.text, format!("HEADD{}fghijABCDE", marker(15)));
        assert_eq!(r.truncation.unwrap().omitted_bytes, 15);
    }

    #[test]
    fn only_long_lines_are_capped() {
        let buf = HeadTailBuffer::new();
        buf.write(format!("short line\n{}\nshort line", "m".repeat(2148)).as_bytes());
        let r = buf.render();
        let lines: Vec<&str> = r.text.split('\n').collect();
        assert_eq!(lines.len(), 3);
        assert_eq!((lines[0], lines[2]), ("short line", "short line"));
        assert_eq!(lines[1].len(), MAX_LINE);
        assert!(lines[1].ends_with(LINE_SUFFIX));
        assert_eq!(r.truncation.unwrap().truncated_lines, 1);
    }

    #[test]
    fn multibyte_cuts_fall_on_char_boundaries() {
        // "€" is 3 bytes: the head ends inside one, the ring starts inside another.
        let buf = HeadTailBuffer::with_sizes(5, 8);
        let input = format!("abcd{}", "€".repeat(20));
        buf.write(input.as_bytes());
        let r = buf.render();
        assert!(!r.text.contains('\u{FFFD}'));
        let (head, tail) = assert_head_marker_tail(&r, &input);
        assert_eq!((head, tail), (4, 6));
        // Same with the defaults and a cap: 4-byte characters straddling every cut.
        let buf = HeadTailBuffer::new();
        let input = format!(
            "{}{}",
            "a\n".repeat((DEFAULT_HEAD - 2) / 2),
            "😀😀😀😀😀😀😀\n".repeat(2_000)
        );
        buf.write(input.as_bytes());
        let r = buf.render();
        assert!(!r.text.contains('\u{FFFD}') && r.text.len() <= MAX_RENDERED);
        assert_head_marker_tail(&r, &input);
    }

    #[test]
    fn invalid_bytes_become_replacement_chars() {
        let buf = HeadTailBuffer::new();
        buf.write(b"ok \xff\xfe end \xe2\x82\n");
        let r = buf.render();
        assert_eq!(r.text, "ok \u{FFFD}\u{FFFD} end \u{FFFD}\n");
        let t = r.truncation.unwrap();
        assert_eq!(
            (t.original_bytes, t.retained_bytes, t.omitted_bytes),
            (13, r.text.len() as u64, 0)
        );
    }

    #[test]
    fn replacement_growth_respects_the_cap() {
        // Nothing dropped by the buffer, but 0xFF → U+FFFD triples the size.
        for ascii in [0, 100, DEFAULT_HEAD] {
            let mut input = vec![b'a'; ascii];
            input.resize(DEFAULT_HEAD + DEFAULT_TAIL, 0xFF);
            (100..input.len())
                .step_by(100)
                .for_each(|i| input[i] = b'\n');
            let buf = HeadTailBuffer::new();
            buf.write(&input);
            let r = buf.render();
            assert!(
                r.text.len() <= MAX_RENDERED && r.text.len() > MAX_RENDERED - 64,
                "{}",
                r.text.len()
            );
            assert!(
                r.text.starts_with(&"a".repeat(ascii.min(100))) && r.text.ends_with('\u{FFFD}')
            );
            assert_eq!(r.truncation.unwrap().truncated_lines, 0);
            let t = r.truncation.unwrap();
            // Every shown input byte is one char: ASCII or a U+FFFD standing for one 0xFF.
            let shown = r.text.chars().count() as u64 - (marker(t.omitted_bytes).len() as u64);
            assert_eq!(t.omitted_bytes + shown, input.len() as u64);
        }
    }

    #[test]
    fn final_line_survives_large_output() {
        let buf = HeadTailBuffer::new();
        let mut input = String::new();
        for i in 0..3000 {
            input.push_str(&format!("line {i:05} {}\n", "-".repeat(54)));
        }
        assert_eq!(input.len(), 3000 * 66);
        buf.write(input.as_bytes());
        let r = buf.render();
        assert!(r.text.len() <= MAX_RENDERED);
        assert!(
            r.text
                .ends_with(&format!("line 02999 {}\n", "-".repeat(54)))
        );
        assert_head_marker_tail(&r, &input);
    }

    #[test]
    fn fits_pick_exact_cuts() {
        let long = format!("{}\nab", "x".repeat(3000));
        let cases = [
            ("abc\ndef", 7, 7),
            ("abc\ndef", 4, 4),
            ("abc\ndef", 3, 3),
            ("abc\ndef", 5, 5),
            ("€€", 4, 3),
        ];
        for (text, budget, end) in cases
            .into_iter()
            .chain([(long.as_str(), 2048, 3000), (long.as_str(), 2047, 2047)])
        {
            assert_eq!(fit_head(text, budget), end, "head {text:.10?} {budget}");
        }
        let long = format!("ab\n{}", "x".repeat(3000));
        let cases = [
            ("abc\ndef", 7, 0),
            ("abc\ndef", 5, 2),
            ("abc\ndef", 4, 3),
            ("abc\ndef", 3, 4),
            ("abc\ndef", 0, 7),
            ("€€", 4, 3),
        ];
        for (text, budget, start) in cases
            .into_iter()
            .chain([(long.as_str(), 2048, 3), (long.as_str(), 2047, 956)])
        {
            assert_eq!(fit_tail(text, budget), start, "tail {text:.10?} {budget}");
        }
    }

    /// One write: arbitrary bytes, text with multi-byte characters, long lines or bulk.
    fn chunk() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            "[a-zé€😀 \n]{0,400}".prop_map(String::into_bytes),
            (2000..5000usize, "[a-z€]")
                .prop_map(|(n, s)| format!("{}\n", s.repeat(n / s.len())).into_bytes()),
            ("[a-z€😀 ]{1,60}\n", 1..600usize).prop_map(|(s, n)| s.repeat(n).into_bytes()),
        ]
    }

    fn writes() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(chunk(), 0..40)
    }

    fn check_invariants(
        buf: &HeadTailBuffer,
        input: &[u8],
        cap: Option<usize>,
    ) -> Result<(), TestCaseError> {
        let r = buf.render();
        prop_assert_eq!(buf.total_written(), input.len() as u64);
        prop_assert!(
            cap.is_none_or(|c| r.text.len() <= c),
            "len {}",
            r.text.len()
        );
        prop_assert!(r.text.split('\n').all(|l| l.len() <= MAX_LINE));
        prop_assert_eq!(r.truncation.is_none(), r.text.as_bytes() == input);
        if let Some(t) = r.truncation {
            prop_assert_eq!(t.original_bytes, input.len() as u64);
            prop_assert_eq!(t.retained_bytes, r.text.len() as u64);
            prop_assert!(t.omitted_bytes <= t.original_bytes);
        }
        let Ok(valid) = std::str::from_utf8(input) else {
            return Ok(());
        };
        // Cuts on char boundaries: no U+FFFD that the input did not have.
        prop_assert_eq!(r.text.contains('\u{FFFD}'), valid.contains('\u{FFFD}'));
        if valid.split('\n').all(|l| l.len() <= MAX_LINE) {
            if r.truncation.is_some() {
                assert_head_marker_tail(&r, valid);
            } else {
                prop_assert_eq!(&r.text, valid);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn rendering_invariants_hold(writes in writes()) {
            let (capped, small) = (HeadTailBuffer::new(), HeadTailBuffer::with_sizes(64, 200));
            let mut input = Vec::new();
            for w in &writes {
                capped.write(w);
                small.write(w);
                input.extend_from_slice(w);
            }
            check_invariants(&capped, &input, Some(MAX_RENDERED))?;
            check_invariants(&small, &input, None)?;
            if input.len() <= DEFAULT_HEAD + DEFAULT_TAIL && std::str::from_utf8(&input).is_ok() {
                // Nothing dropped: only the line caps change anything.
                let r = capped.render();
                let lines = std::str::from_utf8(&input).unwrap().split('\n').filter(|l| l.len() > MAX_LINE).count();
                prop_assert_eq!(r.truncation.map_or(0, |t| t.truncated_lines), lines as u64);
                prop_assert!(!r.text.contains(MARKER_PREFIX));
            }
        }

        #[test]
        fn fits_respect_the_budget(text in "([a-c€😀\n]{0,40}|[x€😀]{680,1100}){0,8}", budget in 0..9000usize) {
            let d = Decoded::new(text.as_bytes());
            let mut out = String::new();
            push_capped(&mut out, &d, 0..text.len());
            prop_assert_eq!(out.len(), rendered_len(&text));
            let end = fit_head(&text, budget);
            prop_assert!(rendered_len(&text[..end]) <= budget);
            prop_assert!(end == text.len() || rendered_len(&text) > budget);
            let start = fit_tail(&text, budget);
            prop_assert!(rendered_len(&text[start..]) <= budget);
            prop_assert!(start == 0 || rendered_len(&text) > budget);
        }

        #[test]
        fn lossy_text_without_drops_is_from_utf8_lossy(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
            let buf = HeadTailBuffer::new();
            buf.write(&bytes);
            let r = buf.render();
            let lossy = String::from_utf8_lossy(&bytes);
            if lossy.split('\n').all(|l| l.len() <= MAX_LINE) {
                prop_assert_eq!(&r.text, &lossy);
                prop_assert_eq!(r.truncation.map_or(0, |t| t.omitted_bytes), 0);
            }
        }
    }

    #[test]
    fn export_restore_renders_the_same() {
        for n in [0usize, 10, 16384, 20000, 40000, 100_000] {
            let b = HeadTailBuffer::new();
            let data: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            for chunk in data.chunks(3000) {
                b.write(chunk);
            }
            let r = HeadTailBuffer::restore(&b.export());
            assert_eq!(r.render(), b.render(), "n={n}");
            assert_eq!(r.total_written(), b.total_written());
        }
    }
}
