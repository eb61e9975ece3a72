//! The text parsers and the output buffer: configuration, the `sh` tokenizer, the head-tail
//! buffer against a model.

use std::path::Path;

use super::Reader;
use crate::config::Config;
use crate::proc::HeadTailBuffer;
use crate::proc::head_tail::{MAX_LINE, MAX_RENDERED};

/// Parses the input as a configuration file (inline keys only: inputs naming a key file are
/// skipped, so the target never reads files). Any error is fine; a panic is not.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("_file") {
        return;
    }
    let _ = Config::parse_offline(text, Path::new("/nonexistent/fuzz/agent.toml"));
}

pub(super) fn config_seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seeds: Vec<Vec<u8>> = ["agent.example.toml", "control.example.toml"]
        .iter()
        .filter_map(|f| std::fs::read(dir.join(f)).ok())
        .collect();
    seeds.push(
        b"[interface]\nprivate_key = \"GCIr1iOf/ayRZYRqbEegDnZyd9r+0R6PTVDIh14tunI=\"\n\
          address = [\"100.64.0.10\"]\n[api]\nkill_grace = \"1m30s\"\n[[peer]]\n\
          public_key = \"vGPRR+1ynWogn9oS6/gHPIMipod6w+ahp9U+HorMpkY=\"\n\
          allowed_ips = [\"100.64.0.1/32\"]\nendpoint = \"[::1]:51820\"\n"
            .to_vec(),
    );
    seeds
}

/// Tokenizes the input as a command line; token offsets must lie on character boundaries of
/// the input, in order.
pub fn shell(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let lexed = crate::tool::shell::lex(src);
    let mut last = 0;
    for t in &lexed.tokens {
        let start = match t {
            crate::tool::shell::Token::Word { start, .. }
            | crate::tool::shell::Token::Op { start, .. }
            | crate::tool::shell::Token::Redirect { start, .. } => *start,
        };
        assert!(start <= src.len() && src.is_char_boundary(start), "{t:?}");
        assert!(start >= last, "offsets out of order: {:?}", lexed.tokens);
        last = start;
    }
}

pub(super) fn shell_seeds() -> Vec<Vec<u8>> {
    [
        "cd /tmp && make -j4 2>&1 | tail -n 20 &",
        "echo \"a & b\" 'c|d' \\& $(date +%s) `uname` ${HOME:-/} >> out.log",
        "cat <<EOF > f\nline & more\nEOF\nls -la &>/dev/null; sleep 1 &",
        "for i in 1 2; do echo $i; done |& grep 1 || true # comment &",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// `[head][tail]` sizes, then records `[repeat][u8 len][bytes]` written `repeat + 1` times, into
/// a small buffer and the default one, checked against the bytes written (the model).
pub fn head_tail(data: &[u8]) {
    let mut r = Reader::new(data);
    let (head, tail) = (usize::from(r.byte()), usize::from(r.byte()));
    let small = HeadTailBuffer::with_sizes(head, tail);
    let full = HeadTailBuffer::new();
    let mut model = Vec::new();
    while !r.is_empty() && model.len() < 1 << 20 {
        let repeat = usize::from(r.byte() % 64) + 1;
        let chunk = r.chunk8();
        for _ in 0..repeat {
            small.write(chunk);
            full.write(chunk);
            model.extend_from_slice(chunk);
        }
    }
    check(&small, &model, head + tail, None);
    check(&full, &model, 2 * 16384, Some(MAX_RENDERED));
}

/// The contract of `API.md` ("HeadTailBuffer") for a buffer that kept `kept` bytes at most.
fn check(buf: &HeadTailBuffer, input: &[u8], kept: usize, max: Option<usize>) {
    assert_eq!(buf.total_written(), input.len() as u64);
    let r = buf.render();
    if let Some(max) = max {
        assert!(r.text.len() <= max, "rendered {} > {max}", r.text.len());
    }
    assert!(r.text.split('\n').all(|l| l.len() <= MAX_LINE));
    match r.truncation {
        None => assert_eq!(r.text.as_bytes(), input, "untruncated text differs"),
        Some(t) => {
            assert_eq!(t.original_bytes, input.len() as u64);
            assert_eq!(t.retained_bytes, r.text.len() as u64);
            assert!(t.omitted_bytes <= t.original_bytes);
            assert_ne!(
                r.text.as_bytes(),
                input,
                "truncation reported for an exact text"
            );
        }
    }
    let Ok(valid) = std::str::from_utf8(input) else {
        return;
    };
    if valid.split('\n').any(|l| l.len() > MAX_LINE) {
        return;
    }
    if input.len() <= kept && max.is_none_or(|m| input.len() <= m) {
        assert_eq!(r.text, valid, "nothing dropped, text must be exact");
        return;
    }
    if r.truncation.is_some_and(|t| t.omitted_bytes > 0) {
        assert!(
            head_marker_tail(&r.text, valid),
            "not head + marker + tail of the input: {:?}",
            r.text
        );
    }
}

/// True when `text` is a prefix of `input`, `\n\n... [omitted N bytes] ...\n\n`, and a suffix
/// of `input`, with N the bytes between them.
fn head_marker_tail(text: &str, input: &str) -> bool {
    const PREFIX: &str = "\n\n... [omitted ";
    const SUFFIX: &str = " bytes] ...\n\n";
    text.match_indices(PREFIX).any(|(i, _)| {
        let after = &text[i + PREFIX.len()..];
        let Some(end) = after.find(SUFFIX) else {
            return false;
        };
        let Ok(n) = after[..end].parse::<usize>() else {
            return false;
        };
        let (head, tail) = (&text[..i], &after[end + SUFFIX.len()..]);
        input.starts_with(head)
            && input.ends_with(tail)
            && head.len() + n + tail.len() == input.len()
    })
}

pub(super) fn head_tail_seeds() -> Vec<Vec<u8>> {
    let mut a = vec![16, 24];
    for (repeat, chunk) in [
        (0u8, &b"hello\n"[..]),
        (9, b"x"),
        (3, "\u{20ac}\u{1f600}\n".as_bytes()),
        (0, b"\xff\xfe"),
    ] {
        a.push(repeat);
        a.push(chunk.len() as u8);
        a.extend_from_slice(chunk);
    }
    let mut b = vec![0, 0, 63, 200];
    b.extend(std::iter::repeat_n(b'y', 200));
    vec![a, b]
}
