//! The cross-platform WireGuard configuration protocol (wireguard.com/xplatform), which `wg`,
//! `wireguard-go` and `boringtun-cli` speak over `/var/run/wireguard/<name>.sock`; with it the
//! real `wg show`, `wg set`, `wg setconf`/`syncconf` work on a wgagent node unchanged.
//!
//! This file is the sans-IO core: [`frame`] finds one request in the bytes read so far and
//! parses it (`get=1` or `set=1` with its `key=value` lines into a [`DeviceUpdate`]);
//! [`format_get`] and [`format_errno`] write the replies. [`server`] is the thin socket shell.
//! Applying a `set` is the node's job (`Device::apply` makes it all-or-nothing).
//!
//! Matches wireguard-go (the reference userspace implementation) where `wg` can tell:
//! - keys are 64 hex characters; `last_handshake_time_*` is Unix time (0 = never);
//!   `protocol_version=1` per peer; `private_key` is shown (only to the socket's owner);
//! - errors are negative errno values: `-EPROTO` for a line without `=` or an unknown operation,
//!   `-EINVAL` for an unknown key or a bad value, `-EADDRINUSE` when the port cannot be bound;
//! - `fwmark=0`, which `wg setconf` always sends, needs no privilege.
//!
//! Deliberate differences, each safer than the reference: a `set` is parsed completely before
//! anything changes, so a bad line anywhere changes nothing (wireguard-go applies the lines
//! before it); a request cut short by end of input is refused rather than applied; a zero
//! `private_key` (which `wg setconf` sends for a file without `PrivateKey`) is refused instead of
//! leaving the node without an identity.

/// The Unix-socket server in front of this protocol.
pub mod server;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{AllowedIpChange, DeviceUpdate, IpNetwork, PeerUpdate, PublicKey, StaticSecret};

/// Largest request accepted (a `set` of ~25,000 peers with two allowed IPs each). Bounds the
/// memory one connection can make the server hold.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// Longest line accepted. The longest legitimate one is a bracketed IPv6 endpoint with a zone
/// (about 70 bytes).
pub const MAX_LINE_BYTES: usize = 256;

/// errno values as the protocol carries them: negated, as wireguard-go writes them and `wg`
/// reads them (`wg` prints "Unable to modify interface: <strerror>").
pub mod errno {
    /// I/O error.
    pub const EIO: i32 = -5;
    /// Invalid argument: unknown key, bad value.
    pub const EINVAL: i32 = -22;
    /// Protocol error: a line without `=`, an unknown operation, a truncated request.
    pub const EPROTO: i32 = -71;
    /// The requested port cannot be bound (or the fwmark cannot be set).
    pub const EADDRINUSE: i32 = -98;
}

/// One parsed request.
#[derive(Debug)]
pub enum Request {
    /// `get=1`: report the device.
    Get,
    /// `set=1`: change the device.
    Set(DeviceUpdate),
}

/// What [`frame`] found at the start of the buffer.
#[derive(Debug)]
pub enum Frame {
    /// No complete request yet: read more (the buffer is within the limits).
    Incomplete,
    /// A complete request of `len` bytes, parsed or refused. Either way the connection stays
    /// usable after consuming `len` bytes.
    Request {
        /// The request, or why it was refused (answered with its errno).
        request: Result<Request, UapiError>,
        /// Bytes the request took in the buffer, including its terminating empty line.
        len: usize,
    },
    /// The bytes cannot be a request (unknown operation, line or request too long): answer
    /// with the error and close the connection, since where the next request starts is lost.
    Invalid(UapiError),
}

/// Why a request was refused. [`UapiError::errno`] is what goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UapiError {
    /// Not the protocol: unknown operation, a line without `=`, not UTF-8, too long.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A key this protocol version does not have, or a value that does not parse.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl UapiError {
    /// The (negative) errno value for the reply.
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::Protocol(_) => errno::EPROTO,
            UapiError::Invalid(_) => errno::EINVAL,
        }
    }
}

/// What `get` reports.
pub struct DeviceState {
    /// Shown only to the socket's owner (`None` otherwise; `wg show` then shows no keys).
    pub private_key: Option<StaticSecret>,
    /// The bound UDP port.
    pub listen_port: u16,
    /// 0 = none.
    pub fwmark: u32,
    /// Every peer, in the order they were added (configuration order at start).
    pub peers: Vec<PeerState>,
}

impl std::fmt::Debug for DeviceState {
    // Hand-written so that the private key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("listen_port", &self.listen_port)
            .field("fwmark", &self.fwmark)
            .field("peers", &self.peers)
            .finish()
    }
}

/// One peer as `get` reports it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The peer's WireGuard public key.
    pub public_key: PublicKey,
    /// `None` when there is none, or when the reader may not see secrets.
    pub preshared_key: Option<[u8; 32]>,
    /// Current endpoint: the configured one until the peer roams (`None`: none yet).
    pub endpoint: Option<SocketAddr>,
    /// Wall-clock time of the last completed handshake; `None` = never.
    pub last_handshake: Option<SystemTime>,
    /// UDP payload bytes of authenticated datagrams from the peer (handshakes included).
    pub rx_bytes: u64,
    /// UDP payload bytes sent to the peer (handshakes and keepalives included).
    pub tx_bytes: u64,
    /// Seconds, 0 = off.
    pub persistent_keepalive: u16,
    /// The peer's allowed IPs (cryptokey routing).
    pub allowed_ips: Vec<IpNetwork>,
}

impl std::fmt::Debug for PeerState {
    // Hand-written so that the pre-shared key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerState")
            .field("public_key", &super::key_label(&self.public_key))
            .field("preshared_key", &self.preshared_key.map(|_| "<redacted>"))
            .field("endpoint", &self.endpoint)
            .field("last_handshake", &self.last_handshake)
            .field("rx_bytes", &self.rx_bytes)
            .field("tx_bytes", &self.tx_bytes)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("allowed_ips", &self.allowed_ips)
            .finish()
    }
}

/// Finds and parses the request at the start of `buf`. Never panics, whatever the bytes.
pub fn frame(buf: &[u8]) -> Frame {
    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE_BYTES {
            Frame::Invalid(UapiError::Protocol("operation line too long".into()))
        } else {
            Frame::Incomplete
        };
    };
    match &buf[..eol] {
        b"get=1" => match buf.get(eol + 1) {
            None => Frame::Incomplete,
            Some(b'\n') => Frame::Request {
                request: Ok(Request::Get),
                len: eol + 2,
            },
            // wireguard-go: EINVAL, and the connection goes on.
            Some(_) => Frame::Invalid(UapiError::Invalid("trailing character in get".into())),
        },
        b"set=1" => {
            // The body ends at the first empty line (which may be the one right after `set=1`).
            let body_start = eol + 1;
            let end = find_blank_line(&buf[eol..]).map(|i| eol + i);
            match end {
                None if buf.len() > MAX_REQUEST_BYTES => Frame::Invalid(UapiError::Protocol(
                    format!("request larger than {MAX_REQUEST_BYTES} bytes"),
                )),
                None => Frame::Incomplete,
                // `end` is the '\n' that ends the last line; the blank line's '\n' follows.
                Some(end) => Frame::Request {
                    request: parse_set(&buf[body_start.min(end + 1)..end + 1]).map(Request::Set),
                    len: end + 2,
                },
            }
        }
        op => Frame::Invalid(UapiError::Protocol(format!(
            "unknown operation {:?}",
            String::from_utf8_lossy(&op[..op.len().min(32)])
        ))),
    }
}

/// Position of the '\n' that is followed by another '\n' (the end of the last line before a
/// blank line), searching from the '\n' that ends the operation line.
fn find_blank_line(from_op_eol: &[u8]) -> Option<usize> {
    from_op_eol.windows(2).position(|w| w == b"\n\n")
}

/// Parses the lines of a `set` (each ending in '\n', without the blank line).
pub fn parse_set(body: &[u8]) -> Result<DeviceUpdate, UapiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| UapiError::Protocol("request is not UTF-8".into()))?;
    let mut update = DeviceUpdate::default();
    let mut peer: Option<PeerUpdate> = None;
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 2; // after `set=1`
        if line.len() > MAX_LINE_BYTES {
            return Err(UapiError::Protocol(format!("line {line_no} too long")));
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(UapiError::Protocol(format!(
                "line {line_no}: expected key=value, got {:?}",
                clip(line)
            )));
        };
        let invalid =
            |what: &str| UapiError::Invalid(format!("line {line_no}: {what}: {:?}", clip(value)));
        if key == "public_key" {
            update.peers.extend(peer.take());
            let key = parse_key(value).ok_or_else(|| invalid("invalid public_key"))?;
            peer = Some(PeerUpdate::new(PublicKey::from(key)));
            continue;
        }
        let Some(p) = peer.as_mut() else {
            match key {
                "private_key" => {
                    let key = parse_key(value).ok_or_else(|| invalid("invalid private_key"))?;
                    if key == [0; 32] {
                        return Err(invalid(
                            "a zero private_key would leave the node without an identity \
                             (wg setconf/syncconf send one for a file without PrivateKey)",
                        ));
                    }
                    update.private_key = Some(StaticSecret::from(key));
                }
                "listen_port" => {
                    update.listen_port =
                        Some(parse_number(value).ok_or_else(|| invalid("invalid listen_port"))?);
                }
                "fwmark" => {
                    update.fwmark =
                        Some(parse_number(value).ok_or_else(|| invalid("invalid fwmark"))?);
                }
                "replace_peers" => {
                    expect_true(value).ok_or_else(|| invalid("replace_peers must be true"))?;
                    update.replace_peers = true;
                }
                _ => return Err(invalid(&format!("unknown device key {:?}", clip(key)))),
            }
            continue;
        };
        match key {
            "remove" => {
                expect_true(value).ok_or_else(|| invalid("remove must be true"))?;
                p.remove = true;
            }
            "update_only" => {
                expect_true(value).ok_or_else(|| invalid("update_only must be true"))?;
                p.update_only = true;
            }
            "preshared_key" => {
                p.preshared_key =
                    Some(parse_key(value).ok_or_else(|| invalid("invalid preshared_key"))?);
            }
            "endpoint" => {
                let ep: SocketAddr = value.parse().map_err(|_| invalid("invalid endpoint"))?;
                if ep.port() == 0 || ep.ip().is_unspecified() {
                    return Err(invalid("endpoint needs an address and a port"));
                }
                p.endpoint = Some(super::udp::normalize_addr(ep));
            }
            "persistent_keepalive_interval" => {
                p.persistent_keepalive = Some(
                    parse_number(value)
                        .ok_or_else(|| invalid("invalid persistent_keepalive_interval"))?,
                );
            }
            "replace_allowed_ips" => {
                expect_true(value).ok_or_else(|| invalid("replace_allowed_ips must be true"))?;
                p.allowed_ips.push(AllowedIpChange::ReplaceAll);
            }
            "allowed_ip" => {
                let (remove, prefix) = match value.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, value),
                };
                let net = parse_prefix(prefix).ok_or_else(|| invalid("invalid allowed_ip"))?;
                p.allowed_ips.push(if remove {
                    AllowedIpChange::Remove(net)
                } else {
                    AllowedIpChange::Add(net)
                });
            }
            "protocol_version" => {
                if value != "1" {
                    return Err(invalid("unsupported protocol_version"));
                }
            }
            _ => return Err(invalid(&format!("unknown peer key {:?}", clip(key)))),
        }
    }
    update.peers.extend(peer);
    Ok(update)
}

/// The reply to `get`: the device, its peers, `errno=0` and the blank line.
pub fn format_get(state: &DeviceState) -> String {
    let mut out = String::with_capacity(256 + state.peers.len() * 400);
    if let Some(key) = &state.private_key {
        line_key(&mut out, "private_key", &key.to_bytes());
    }
    if state.listen_port != 0 {
        let _ = writeln!(out, "listen_port={}", state.listen_port);
    }
    if state.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", state.fwmark);
    }
    for p in &state.peers {
        line_key(&mut out, "public_key", p.public_key.as_bytes());
        if let Some(psk) = &p.preshared_key {
            line_key(&mut out, "preshared_key", psk);
        } else if state.private_key.is_some() {
            // What wireguard-go writes for "none"; hidden keys are left out instead.
            line_key(&mut out, "preshared_key", &[0; 32]);
        }
        out.push_str("protocol_version=1\n");
        if let Some(ep) = p.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        let since = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", since.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", since.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive
        );
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out.push_str("errno=0\n\n");
    out
}

/// The reply to a `set` (or a refused request): `errno=N` and the blank line.
pub fn format_errno(errno: i32) -> String {
    format!("errno={errno}\n\n")
}

/// Lowercase hex, as the protocol writes keys. (A few lines; not worth a dependency. A table
/// rather than `format!` per byte: a 1,000-peer `get` writes 64,000 of them.)
fn line_key(out: &mut String, name: &str, key: &[u8; 32]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(name.len() + 66);
    out.push_str(name);
    out.push('=');
    for b in key {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out.push('\n');
}

/// 64 hex digits (either case, as Go's `hex.DecodeString`) → 32 bytes.
fn parse_key(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(key)
}

/// A decimal number with digits only (Go's `ParseUint`: no sign, no spaces).
fn parse_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn expect_true(value: &str) -> Option<()> {
    (value == "true").then_some(())
}

/// `ADDR/LEN` (the length is required, as Go's `netip.ParsePrefix`); host bits are cleared,
/// as wireguard-go does when it inserts the prefix.
fn parse_prefix(text: &str) -> Option<IpNetwork> {
    let (addr, len) = text.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let len: u8 = parse_number(len)?;
    IpNetwork::new_truncate(addr, len).ok()
}

/// At most 64 characters of untrusted text, for error messages.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests;
