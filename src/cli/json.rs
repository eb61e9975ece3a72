//! `--json`: the objects the verbs print for scripts, defined in one place.
//!
//! Every verb with `--json` prints exactly one JSON object on stdout (pretty-printed; `jq`
//! reads it as one value) and nothing else there; errors stay one line on stderr with the
//! verb's exit code, so `wgagent VERB --json ... | jq` sees either an object or nothing. Where
//! the agent's API already answers with an object (`ps`, `output`, `ls`, `put`), that object is
//! printed as it is. The objects here are for the verbs whose answer is built by the CLI.
//!
//! Streams (`logs --json`, `output --follow --json`) are NDJSON instead, one compact object
//! per line as the bytes arrive ([`Chunks`]), so a reader acts on each line at once.
//!
//! Leaves to the verbs: when to print (after the work is done, once; or per chunk).

use serde::Serialize;

use crate::api::types::{ProcessInfo, ProcessOutputResponse, ProcessTruncation};

/// Prints `value` as the verb's one JSON object.
pub fn print(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `exec --json`: the finished command (foreground) or its id (`--background`).
#[derive(Debug, Serialize)]
pub struct Exec {
    /// The process id on the agent.
    pub id: String,
    /// `false` with `--background` (only `id` is set then).
    pub finished: bool,
    /// The exit code as the API reports it: -1 when a signal killed the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it (`"SIGTERM"`), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// `exited`, `signaled`, `timed_out`, `agent_shutdown`, `limit_exceeded`, `oom_killed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// Head and tail of the output (at most 32 KiB), as `output` gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Set when the middle of the output was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<ProcessTruncation>,
}

impl Exec {
    /// A background start.
    pub fn started(id: String) -> Self {
        Self {
            id,
            finished: false,
            exit_code: None,
            exit_signal: None,
            exit_reason: None,
            output: None,
            truncated: None,
        }
    }

    /// A finished command: its final output and, when the list still had it, how it ended.
    pub fn finished(id: String, out: ProcessOutputResponse, info: Option<&ProcessInfo>) -> Self {
        Self {
            id,
            finished: true,
            exit_code: out.exit_code,
            exit_signal: info.and_then(|p| p.exit_signal.clone()),
            exit_reason: info.and_then(|p| p.exit_reason.clone()),
            output: Some(out.output),
            truncated: out.truncated,
        }
    }
}

/// `signal --json` and `rm --json`: what was done to which process, and the agent's message.
#[derive(Debug, Serialize)]
pub struct Done {
    /// The process id.
    pub id: String,
    /// The signal sent (`signal` only), by its API name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<crate::signal::Signal>,
    /// The agent's answer, e.g. `Signal "kill" sent to process "…".`.
    pub message: String,
}

/// `cat --json`: the bytes read and what the agent said about the file.
#[derive(Debug, Serialize)]
pub struct File {
    /// The path as given.
    pub path: String,
    /// The first byte read.
    pub offset: u64,
    /// How many bytes were read.
    pub size: u64,
    /// The whole file's size, when the agent said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// The whole file's SHA-256 (hex; `put --if-match` takes it), when the agent computed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// From the file name's extension.
    pub content_type: String,
    /// The bytes as text, when they are UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The bytes in base64 (standard alphabet, padded), when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// `demo --json`: what the demo set up, ran and measured (the walk-through's facts).
#[derive(Debug, Serialize)]
pub struct Demo {
    /// The agent node.
    pub agent: DemoNode,
    /// The control node.
    pub control: DemoNode,
    /// The API's TCP port on the agent's tunnel addresses.
    pub api_port: u16,
    /// `false`: nothing accepted a TCP connection on 127.0.0.1 at the API's port (the API is
    /// served inside the tunnel only). `true` would be a defect (or another program there).
    pub api_on_host: bool,
    /// Handshakes the control node completed with the agent.
    pub handshakes: u64,
    /// The first request's time, handshake and TCP connect through the tunnel included.
    pub first_request_ms: f64,
    /// The agent's answer to `GET /api/v0/health`.
    pub health: crate::api::types::HealthResponse,
    /// The command line run on the agent.
    pub command: String,
    /// How it went.
    pub process: DemoProcess,
    /// Processes listed by `GET /api/v0/processes/list` over the agent's IPv6 tunnel address.
    pub listed_over_ipv6: usize,
    /// `GET /api/v0/health` round trips on one keep-alive connection.
    pub round_trips: DemoRoundTrips,
    /// The agent's WireGuard counters for the control peer.
    pub agent_counters: DemoCounters,
    /// `true` when the agent shut down (its processes gone) within its deadline.
    pub stopped: bool,
    /// The whole demo, start to stop.
    pub elapsed_ms: f64,
}

/// One node of the demo.
#[derive(Debug, Serialize)]
pub struct DemoNode {
    /// Its WireGuard public key (base64).
    pub public_key: String,
    /// Its tunnel addresses.
    pub addresses: Vec<std::net::IpAddr>,
    /// Its WireGuard UDP address on the host.
    pub udp: std::net::SocketAddr,
}

/// The demo's command.
#[derive(Debug, Serialize)]
pub struct DemoProcess {
    /// The process id on the agent.
    pub id: String,
    /// Its exit code (-1 if a signal ended it; absent if it had not exited).
    pub exit_code: Option<i32>,
    /// Its output.
    pub output: String,
    /// Start request plus the server-side wait for the exit.
    pub elapsed_ms: f64,
}

/// Round-trip times.
#[derive(Debug, Serialize)]
pub struct DemoRoundTrips {
    /// How many were timed.
    pub count: usize,
    /// The fastest.
    pub min_ms: f64,
    /// The median.
    pub p50_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
}

/// The agent's counters for its one peer (the control node).
#[derive(Debug, Serialize)]
pub struct DemoCounters {
    /// Where the agent saw the control peer (learnt from its handshake: the agent has no
    /// endpoint configured, like one behind NAT).
    pub control_endpoint: Option<std::net::SocketAddr>,
    /// WireGuard bytes received from it.
    pub rx_bytes: u64,
    /// WireGuard bytes sent to it.
    pub tx_bytes: u64,
    /// Packets dropped because their inner source was not in its allowed IPs.
    pub drop_allowed_ips: u64,
    /// Packets dropped because they did not decrypt.
    pub drop_decrypt: u64,
    /// Datagrams from unknown peers (the whole device).
    pub unknown_peer: u64,
}

/// `genkey --json` and `pubkey --json`: keys in base64, as `wg` writes them.
#[derive(Debug, Serialize)]
pub struct Keys {
    /// `genkey` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    pub public_key: String,
}

/// `import --json`: the converted configuration and what the user should know.
#[derive(Debug, Serialize)]
pub struct Import {
    /// The TOML (it holds the private key); absent when written to `output`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toml: Option<String>,
    /// The file written (`--output`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Keys without an equivalent, addresses dropped, ... (on stderr without `--json`).
    pub findings: Vec<String>,
}

/// One NDJSON line of a byte stream (`logs --json`, `output --follow --json`).
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Line {
    /// Bytes from absolute offset `offset`, valid UTF-8.
    Text { offset: u64, text: String },
    /// Bytes from `offset` that are not UTF-8, in base64 (standard alphabet, padded).
    Bytes { offset: u64, base64: String },
    /// Bytes `[from, to)` the agent no longer retains: skipped (a slow reader on a fast writer).
    Skipped { skipped: Range },
    /// The last line: the offset reached (`logs --from` resumes there).
    End { end: u64 },
}

/// A byte range `[from, to)`.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Range {
    pub from: u64,
    pub to: u64,
}

/// Turns a byte stream into [`Line`]s: text where the bytes are UTF-8, base64 where they are
/// not. A character cut between two pieces is carried to the next line, so text stays text.
#[derive(Debug, Default)]
pub struct Chunks {
    /// Offset of the first byte of `pending`.
    at: u64,
    /// The end of the last piece: at most 3 bytes of a character begun but not finished.
    pending: Vec<u8>,
}

impl Chunks {
    /// Starts at absolute offset `at`.
    pub fn new(at: u64) -> Self {
        Self {
            at,
            pending: Vec::new(),
        }
    }

    /// The lines for `bytes`, which follow what came before: the UTF-8 part as text, then,
    /// from the first byte that is not UTF-8, the rest of the piece in base64. Empty when all
    /// of it waits for the rest of a character.
    #[must_use]
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        self.pending.extend_from_slice(bytes);
        let (valid, rest) = match std::str::from_utf8(&self.pending) {
            Ok(_) => (self.pending.len(), Rest::None),
            // An unfinished character at the end: wait for its other bytes.
            Err(e) if e.error_len().is_none() => (e.valid_up_to(), Rest::Wait),
            Err(e) => (e.valid_up_to(), Rest::Bytes),
        };
        let mut lines = Vec::new();
        if valid > 0 {
            lines.push(self.take(valid));
        }
        if rest == Rest::Bytes {
            lines.push(self.take(self.pending.len()));
        }
        lines
    }

    /// Bytes `[from, to)` were skipped; what was pending before them is flushed first.
    #[must_use]
    pub fn skip(&mut self, to: u64) -> Vec<Line> {
        let mut lines: Vec<Line> = self.finish_pending().into_iter().collect();
        lines.push(Line::Skipped {
            skipped: Range { from: self.at, to },
        });
        self.at = to;
        lines
    }

    /// The stream ended: what is pending (an unfinished character, as bytes), then the end.
    #[must_use]
    pub fn finish(mut self) -> Vec<Line> {
        let mut lines: Vec<Line> = self.finish_pending().into_iter().collect();
        lines.push(Line::End { end: self.at });
        lines
    }

    fn finish_pending(&mut self) -> Option<Line> {
        (!self.pending.is_empty()).then(|| self.take(self.pending.len()))
    }

    /// The first `n` pending bytes as a line.
    fn take(&mut self, n: usize) -> Line {
        let offset = self.at;
        let rest = self.pending.split_off(n);
        let bytes = std::mem::replace(&mut self.pending, rest);
        self.at += n as u64;
        match String::from_utf8(bytes) {
            Ok(text) => Line::Text { offset, text },
            Err(e) => {
                use base64::Engine as _;
                let base64 = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                Line::Bytes { offset, base64 }
            }
        }
    }
}

/// What follows the UTF-8 part of a piece.
#[derive(PartialEq)]
enum Rest {
    None,
    /// The start of a character whose other bytes are still to come.
    Wait,
    /// Bytes that are not UTF-8.
    Bytes,
}

/// Prints one NDJSON line.
pub fn print_line(line: &Line) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(offset: u64, t: &str) -> Line {
        Line::Text {
            offset,
            text: t.to_owned(),
        }
    }

    #[test]
    fn a_character_cut_between_pieces_stays_text() {
        let mut c = Chunks::new(10);
        let e = "é".as_bytes();
        assert_eq!(c.push(b"ab"), [text(10, "ab")]);
        assert_eq!(c.push(&[b'c', e[0]]), [text(12, "c")]);
        assert_eq!(c.push(&[e[1], b'\n']), [text(13, "é\n")]);
        let euro = "€".as_bytes();
        assert_eq!(c.push(&euro[..1]), [], "waits for the rest");
        assert_eq!(c.push(&euro[1..2]), []);
        assert_eq!(c.push(&euro[2..]), [text(16, "€")]);
        assert_eq!(c.finish(), [Line::End { end: 19 }]);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_base64_and_offsets_add_up() {
        let mut c = Chunks::new(0);
        assert_eq!(
            c.push(&[0x41, 0xff, 0x00]),
            [
                text(0, "A"),
                Line::Bytes {
                    offset: 1,
                    base64: "/wA=".into()
                }
            ]
        );
        assert_eq!(
            c.push(&[0xff]),
            [Line::Bytes {
                offset: 3,
                base64: "/w==".into()
            }]
        );
        assert_eq!(c.push(b"o"), [text(4, "o")]);
        // An unfinished character at the very end is given as bytes.
        assert_eq!(c.push(&"é".as_bytes()[..1]), []);
        assert_eq!(
            c.skip(100),
            [
                Line::Bytes {
                    offset: 5,
                    base64: "ww==".into()
                },
                Line::Skipped {
                    skipped: Range { from: 6, to: 100 }
                }
            ]
        );
        assert_eq!(c.push(b"x"), [text(100, "x")]);
        assert_eq!(c.finish(), [Line::End { end: 101 }]);
    }

    #[test]
    fn lines_are_the_documented_objects() {
        let json = |l: &Line| serde_json::to_value(l).unwrap();
        assert_eq!(
            json(&text(3, "a")),
            serde_json::json!({"offset": 3, "text": "a"})
        );
        assert_eq!(
            json(&Line::Skipped {
                skipped: Range { from: 1, to: 2 }
            }),
            serde_json::json!({"skipped": {"from": 1, "to": 2}})
        );
        assert_eq!(json(&Line::End { end: 9 }), serde_json::json!({"end": 9}));
    }
}
