//! Fuzz target bodies, shared by the cargo-fuzz crate (`fuzz/`) and the `cargo test` replay of
//! its corpora (`tests/fuzz_corpus.rs`), so a corpus file that once crashed keeps failing CI
//! until fixed. Not part of the public API.
//!
//! Each target takes arbitrary bytes, decodes them into operations with a small framing
//! ([`Reader`]) that mutations keep valid, drives one component, and panics only when an
//! invariant the component promises is broken (a panic inside the component is a finding too).
//! Nothing here touches the network, spawns a process or reads a file named by the input.
//!
//! Targets: [`wg_datagram`] (the WireGuard device's datagram path), [`netstack_input`] (inbound
//! IP packets into the TCP/IP stack), [`head_tail`] (the output buffer against a model),
//! [`config`] (configuration parsing), [`shell`] (the tool layer's `sh` tokenizer),
//! [`http_api`] (the API router with arbitrary method, target, headers and body), [`uapi`] (the
//! WireGuard UAPI protocol with every `set` applied to a device).
//! [`seeds`] builds the initial corpora.

mod http;
mod net;
mod text;
mod uapi;

pub use self::http::http_api;
pub use self::net::{netstack_input, wg_datagram};
pub use self::text::{config, head_tail, shell};
pub use self::uapi::uapi;

/// A target body: arbitrary bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its fuzz target and corpus directory.
pub const TARGETS: [(&str, Target); 7] = [
    ("wg_datagram", wg_datagram),
    ("netstack_input", netstack_input),
    ("head_tail", head_tail),
    ("config", config),
    ("shell", shell),
    ("http_api", http_api),
    ("uapi", uapi),
];

/// Initial inputs for `target` (written to `fuzz/corpus/<target>/` by the corpus test's
/// `--ignored write_seeds`).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "wg_datagram" => net::wg_seeds(),
        "netstack_input" => net::netstack_seeds(),
        "head_tail" => text::head_tail_seeds(),
        "config" => text::config_seeds(),
        "shell" => text::shell_seeds(),
        "http_api" => http::seeds(),
        "uapi" => uapi::seeds(),
        _ => Vec::new(),
    }
}

/// Reads the framing every target uses: bytes, and length-prefixed chunks.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, 0 at the end.
    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A chunk prefixed by a big-endian u16 length.
    pub(crate) fn chunk16(&mut self) -> &'a [u8] {
        let n = u16::from_be_bytes([self.byte(), self.byte()]);
        self.take(usize::from(n))
    }

    /// A chunk prefixed by a one-byte length.
    pub(crate) fn chunk8(&mut self) -> &'a [u8] {
        let n = self.byte();
        self.take(usize::from(n))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

/// Appends `chunk` with a u16 length prefix (for seeds).
pub(crate) fn frame16(out: &mut Vec<u8>, chunk: &[u8]) {
    out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
    out.extend_from_slice(chunk);
}
