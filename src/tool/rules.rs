//! Pure rules of the LLM tools: argument parsing (durations), the non-interactive
//! environment, and the output cap. No IO, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::api::types::ProcessTruncation;

/// Most bytes of process output a result carries.
pub const MAX_OUTPUT_BYTES: usize = 32768;
/// `execute`'s `timeout` when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// `process_output`'s `wait` when none is given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// Longest accepted `timeout`/`wait`: a day (also keeps `Instant + d` far from overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Set on every run so nothing waits for a human: editors exit at once, pagers print, git never
/// prompts, colours and terminal tricks are off, apt/dpkg never ask.
pub const NON_INTERACTIVE_ENV: [(&str, &str); 11] = [
    ("GIT_EDITOR", "true"),
    ("GIT_SEQUENCE_EDITOR", "true"),
    ("EDITOR", "true"),
    ("VISUAL", "true"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("NO_COLOR", "1"),
    ("TERM", "dumb"),
    ("PAGER", "cat"),
    ("GIT_PAGER", "cat"),
    ("MANPAGER", "cat"),
    ("DEBIAN_FRONTEND", "noninteractive"),
];

/// [`NON_INTERACTIVE_ENV`] as a start request's `env`.
pub fn non_interactive_env() -> BTreeMap<String, String> {
    NON_INTERACTIVE_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `execute`'s `timeout`: absent or null → 10 s; otherwise a duration (see [`parse_duration`])
/// greater than zero.
pub fn parse_timeout(v: Option<&Value>) -> Result<Duration, String> {
    let d = parse_optional(v, DEFAULT_TIMEOUT, "timeout")?;
    if d.is_zero() {
        return Err(
            "invalid timeout: it must be greater than zero (to start a command without \
             waiting, use run_in_background)"
                .to_owned(),
        );
    }
    Ok(d)
}

/// `process_output`'s `wait`: absent or null → 10 s; zero means "answer at once".
pub fn parse_wait(v: Option<&Value>) -> Result<Duration, String> {
    parse_optional(v, DEFAULT_WAIT, "wait")
}

fn parse_optional(v: Option<&Value>, default: Duration, what: &str) -> Result<Duration, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(v) => parse_duration(v).map_err(|e| {
            let shown = match v {
                Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            format!(
                "invalid {what} {shown}: {e}; use a duration such as \"30s\", \"5m\", \"1h30m\", \
                 \"500ms\" or a number of seconds"
            )
        }),
    }
}

/// A duration given as a JSON number of seconds or a string in the grammar of
/// [`crate::duration`] (`"30"`, `"2.5"`, `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"1.5h"`,
/// `"90 seconds"`). At most [`MAX_DURATION`]; never negative.
pub fn parse_duration(v: &Value) -> Result<Duration, String> {
    let d = match v {
        Value::Number(n) => crate::duration::from_secs_f64(n.as_f64().ok_or("not a number")?)
            .map_err(|e| e.reason)?,
        Value::String(s) => crate::duration::parse(s).map_err(|e| e.reason)?,
        _ => return Err("expected a string or a number".to_owned()),
    };
    if d > MAX_DURATION {
        return Err("longer than the 24h maximum".to_owned());
    }
    Ok(d)
}

/// Go-style rendering of a duration for messages: `500ms`, `10s`, `1m30s`, `2h0m0s`.
pub fn format_duration(d: Duration) -> String {
    crate::duration::format(d)
}

/// Caps `text` at `max` bytes without losing its end: when longer, keeps the head and the tail
/// around a `... [omitted N bytes] ...` marker, cut on character boundaries, the whole at most
/// `max` bytes. `truncated` is updated to describe the combined cut. The agent already renders
/// at most 32768 bytes, so this only acts on other (e.g. Coder) agents.
pub fn cap_output(
    text: String,
    truncated: Option<ProcessTruncation>,
    max: usize,
) -> (String, Option<ProcessTruncation>) {
    if text.len() <= max {
        return (text, truncated);
    }
    // Size the marker for the largest count it could show, so the total never exceeds `max`.
    let marker_len = marker(text.len()).len();
    let budget = max.saturating_sub(marker_len);
    let mut head = budget / 2;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - (budget - budget / 2);
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    let omitted = tail - head;
    let out = format!("{}{}{}", &text[..head], marker(omitted), &text[tail..]);
    let kept = out.len() as u64;
    let t = match truncated {
        Some(mut t) => {
            t.omitted_bytes += omitted as u64;
            t.retained_bytes = kept;
            t
        }
        None => ProcessTruncation {
            original_bytes: text.len() as u64,
            retained_bytes: kept,
            omitted_bytes: omitted as u64,
            strategy: "head_tail".to_owned(),
            truncated_lines: 0,
        },
    };
    (out, Some(t))
}

fn marker(omitted: usize) -> String {
    format!("\n\n... [omitted {omitted} bytes] ...\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn dur(v: Value) -> Result<Duration, String> {
        parse_duration(&v)
    }

    #[test]
    fn durations_in_every_accepted_form() {
        let s = Duration::from_secs;
        assert_eq!(dur(json!("30s")), Ok(s(30)));
        assert_eq!(dur(json!("5m")), Ok(s(300)));
        assert_eq!(dur(json!("1h30m")), Ok(s(5400)));
        assert_eq!(dur(json!("500ms")), Ok(Duration::from_millis(500)));
        assert_eq!(dur(json!("1.5s")), Ok(Duration::from_millis(1500)));
        assert_eq!(dur(json!("2m30s")), Ok(s(150)));
        assert_eq!(dur(json!("30")), Ok(s(30)));
        assert_eq!(dur(json!(" 45 ")), Ok(s(45)));
        assert_eq!(dur(json!("2.5")), Ok(Duration::from_millis(2500)));
        assert_eq!(dur(json!(60)), Ok(s(60)));
        assert_eq!(dur(json!(0.25)), Ok(Duration::from_millis(250)));
        assert_eq!(dur(json!("1h 30m")), Ok(s(5400)));
        assert_eq!(dur(json!("90 seconds")), Ok(s(90)));
        assert_eq!(dur(json!("2min")), Ok(s(120)));
        assert_eq!(dur(json!("+10s")), Ok(s(10)));
        assert_eq!(dur(json!("0")), Ok(s(0)));
        assert_eq!(dur(json!("24h")), Ok(s(86400)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for v in [
            json!("abc"),
            json!("10x"),
            json!("s"),
            json!(""),
            json!("-5s"),
            json!("-5"),
            json!(-1),
            json!("5m-3s"),
            json!("1..5s"),
            json!("25h"),
            json!(1e300),
            json!(true),
            json!(["10s"]),
            json!("+"),
            json!(" + "),
        ] {
            assert!(dur(v.clone()).is_err(), "{v}");
        }
        let huge = "9".repeat(400);
        assert_eq!(dur(json!(huge)).unwrap_err(), "out of range");
    }

    #[test]
    fn timeout_and_wait_defaults_and_messages() {
        assert_eq!(parse_timeout(None), Ok(DEFAULT_TIMEOUT));
        assert_eq!(parse_timeout(Some(&Value::Null)), Ok(DEFAULT_TIMEOUT));
        assert_eq!(
            parse_timeout(Some(&json!("1m"))),
            Ok(Duration::from_secs(60))
        );
        let e = parse_timeout(Some(&json!("soon"))).unwrap_err();
        assert!(e.starts_with("invalid timeout \"soon\": "), "{e}");
        assert!(e.contains("\"30s\""), "{e}");
        assert!(
            parse_timeout(Some(&json!("0s")))
                .unwrap_err()
                .contains("run_in_background")
        );
        assert_eq!(parse_wait(Some(&json!(0))), Ok(Duration::ZERO));
        assert_eq!(parse_wait(None), Ok(DEFAULT_WAIT));
        assert!(
            parse_wait(Some(&json!("x")))
                .unwrap_err()
                .starts_with("invalid wait")
        );
    }

    #[test]
    fn formats_durations_like_go() {
        let f = |ms| format_duration(Duration::from_millis(ms));
        assert_eq!(f(500), "500ms");
        assert_eq!(f(10_000), "10s");
        assert_eq!(f(1_500), "1.5s");
        assert_eq!(f(90_000), "1m30s");
        assert_eq!(f(3_600_000), "1h0m0s");
    }

    #[test]
    fn environment_is_complete() {
        let env = non_interactive_env();
        assert_eq!(env.len(), 11);
        assert_eq!(env["GIT_TERMINAL_PROMPT"], "0");
        assert_eq!(env["DEBIAN_FRONTEND"], "noninteractive");
        assert_eq!(env["MANPAGER"], "cat");
    }

    #[test]
    fn short_output_is_untouched() {
        let (out, t) = cap_output("hello\n".to_owned(), None, MAX_OUTPUT_BYTES);
        assert_eq!(out, "hello\n");
        assert_eq!(t, None);
    }

    #[test]
    fn long_output_keeps_both_ends() {
        let text: String = (0..5000).map(|i| format!("line {i:05}\n")).collect();
        let (out, t) = cap_output(text.clone(), None, MAX_OUTPUT_BYTES);
        assert!(out.len() <= MAX_OUTPUT_BYTES);
        assert!(out.starts_with("line 00000\n"));
        assert!(out.ends_with("line 04999\n"), "the tail survives");
        let t = t.unwrap();
        assert_eq!(t.original_bytes, text.len() as u64);
        assert_eq!(t.retained_bytes, out.len() as u64);
        assert!(out.contains(&format!("[omitted {} bytes]", t.omitted_bytes)));
        assert_eq!(
            out.len() as u64 - marker(t.omitted_bytes as usize).len() as u64 + t.omitted_bytes,
            text.len() as u64
        );
    }

    #[test]
    fn cap_respects_character_boundaries() {
        for max in [60, 61, 62, 63, 64, 100] {
            let text = "é€😀".repeat(50);
            let (out, _) = cap_output(text.clone(), None, max);
            assert!(out.len() <= max, "{max}: {}", out.len());
            assert!(text.starts_with(out.split("\n\n...").next().unwrap()));
            assert!(text.ends_with(out.rsplit("...\n\n").next().unwrap()));
        }
    }

    #[test]
    fn cap_updates_agent_metadata() {
        let agent = ProcessTruncation {
            original_bytes: 1_000_000,
            retained_bytes: 40_000,
            omitted_bytes: 960_000,
            strategy: "head_tail".to_owned(),
            truncated_lines: 2,
        };
        let (out, t) = cap_output("x".repeat(40_000), Some(agent), MAX_OUTPUT_BYTES);
        let t = t.unwrap();
        assert_eq!(t.original_bytes, 1_000_000);
        assert_eq!(t.retained_bytes, out.len() as u64);
        assert!(t.omitted_bytes > 960_000);
        assert_eq!(t.truncated_lines, 2);
    }
}
