//! `wgagent health --local`: is the node of this configuration running here, and is its data
//! path alive? For exec probes (Kubernetes) and scripts: no host TCP socket is involved.
//!
//! Asks the node's WireGuard UAPI socket twice: `get` (answered from the node's published
//! state: the socket is served and the node holds the configuration's private key), then an
//! empty `set` (answered by the data-path task itself, so a wedged data path fails the check).
//! Every step is bounded by [`TIMEOUT`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{Config, Interface};
use crate::keys;

/// Bound of each UAPI exchange.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Largest `get` answer read (a node with thousands of peers answers a few hundred KiB).
const MAX_ANSWER: u64 = 16 << 20;

pub fn local(config: &Path, json: bool) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let sockets = candidates(&cfg.interface);
    if sockets.is_empty() {
        bail!(
            "{}: `[interface] uapi = false`: the node serves no UAPI socket to ask",
            config.display()
        );
    }
    let Some(socket) = sockets.iter().find(|p| p.exists()) else {
        bail!(
            "not running: no UAPI socket at {}",
            sockets
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        );
    };
    let got = exchange(socket, b"get=1\n\n").context("UAPI get")?;
    let mut listen_port = None;
    let mut peers = 0usize;
    let mut private_key = None;
    for line in got.lines() {
        match line.split_once('=') {
            Some(("listen_port", v)) => listen_port = v.parse::<u16>().ok(),
            Some(("public_key", _)) => peers += 1,
            Some(("private_key", v)) => private_key = Some(v.to_owned()),
            _ => {}
        }
    }
    if let Some(hex) = private_key {
        let ours = hex_key(&hex).map(|k| keys::public_key(&keys::StaticSecret::from(k)));
        if ours != Some(cfg.interface.public_key) {
            bail!(
                "{} is served by a node with another key than {}",
                socket.display(),
                config.display()
            );
        }
    }
    exchange(socket, b"set=1\n\n").context("the data path did not answer")?;
    let public_key = keys::encode_public(&cfg.interface.public_key);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "status": "ok",
                "socket": socket,
                "public_key": public_key,
                "listen_port": listen_port,
                "peers": peers,
            })
        );
    } else {
        println!(
            "ok: {} (public key {public_key}, UDP port {}, {peers} peers)",
            socket.display(),
            listen_port.map_or("?".into(), |p| p.to_string())
        );
    }
    Ok(())
}

/// Where the node of `interface` serves its UAPI socket: the configured name or socket, else
/// the agent's default, then the control daemon's.
fn candidates(interface: &Interface) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [Interface::DEFAULT_NAME, Interface::DEFAULT_CONTROL_NAME]
        .iter()
        .filter_map(|name| crate::node::uapi_path(interface, name))
        .collect();
    out.dedup();
    out
}

/// One request, the whole answer; an answer with a non-zero errno is an error.
fn exchange(socket: &Path, request: &[u8]) -> anyhow::Result<String> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(request)?;
    let mut answer = Vec::new();
    // The node answers one request, ending with a blank line, and keeps the socket open.
    let mut buf = [0u8; 8192];
    let mut limited = (&mut s).take(MAX_ANSWER);
    loop {
        let n = limited.read(&mut buf).context("reading the answer")?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.ends_with(b"\n\n") {
            break;
        }
    }
    let text = String::from_utf8(answer).context("the answer is not text")?;
    match text.lines().find_map(|l| l.strip_prefix("errno=")) {
        Some("0") => Ok(text),
        Some(errno) => bail!("the node answered errno={errno}"),
        None => bail!("the node's answer ended early"),
    }
}

fn hex_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}
