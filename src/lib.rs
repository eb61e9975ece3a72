//! wgagent: a process-execution agent that joins a WireGuard overlay entirely in userspace and
//! serves its HTTP API only on its tunnel address.
//!
//! The map (one module per concern):
//! - [`keys`]: x25519 keys, base64 as `wg genkey`/`wg pubkey` write them.
//! - [`config`]: TOML → typed configuration, validation, warnings.
//! - [`duration`]: the one duration grammar of configs, flags and tools.
//! - [`signal`]: the one signal vocabulary (`kill`, `terminate`, ...) of API, tools and CLI.
//! - [`wg`]: multi-peer WireGuard on boringtun's `noise` core: peer table, cryptokey routing,
//!   timers, counters (sans-IO), plus the UDP socket setup and GSO/GRO batching.
//! - [`netstack`]: TCP/IP over smoltcp bridged to tokio `AsyncRead`/`AsyncWrite`.
//! - [`node`]: `Node` = wg + netstack + the one data-path task that drives both; live peer
//!   changes.
//! - [`agent`]: `Agent` = node + process manager + API servers + UAPI socket; start, reload,
//!   shutdown.
//! - [`proc`]: the head-tail output buffer and the process manager (process groups, limits).
//! - [`files`]: workspace files: list, resolve, read (bytes, lines), atomic write, edits.
//! - [`metrics`]: Prometheus metrics of the node, the processes and the API; the opt-in host
//!   listener that serves only `/metrics`.
//! - [`api`]: the axum router for the process API and its wire types (shared with `client`).
//! - [`client`]: the Rust SDK (`AgentConn`) used by control replicas, over a node, the control
//!   daemon's socket, or any connector.
//! - [`control`]: the control daemon (`wgagent control`): a long-lived control node serving
//!   the CLI and local HTTP clients on a Unix socket, forwarding to agents through the tunnel.
//! - [`trust`]: who is calling (the WireGuard peer), per-peer permissions, run-as users,
//!   isolation, the audit log.
//! - [`tool`]: LLM-facing tools and the MCP server.
//! - [`cli`]: the `wgagent` command line.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod duration;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod metrics;
pub mod netstack;
pub mod node;
pub mod proc;
pub mod signal;
pub mod tool;
pub mod trust;
pub mod wg;
