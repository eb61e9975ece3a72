//! The file as serde sees it: one struct per section, one field per key, each field typed by
//! what the key takes (its TOML kinds, range and syntax, see [`super::leaf`]). Unknown keys are
//! refused (`deny_unknown_fields`): a typo must not silently fall back to a default.
//!
//! Absent optional keys are `None` here; the defaults live with the public types
//! (`Api::default()`, `Interface::DEFAULT_*`), applied in `validate`. Integer ranges come from
//! the public range constants where there is one (netstack's limits among them), so the check
//! and the docs share one source.

use serde::Deserialize;

use super::leaf::{
    AbsPath, Bool, Cidr, FilePath, GroupName, IdleTimeout, Int, InterfaceName, Isolation, Limits,
    List, Listen, LogFormat, LogLevel, PeerName, Peers, Permission, Positive, Secs, Section, Text,
    TunnelAddress, UserName, ranged,
};
use super::{Control, Interface};

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub interface: Section<RawInterface>,
    pub api: Option<Section<RawApi>>,
    pub peer: Option<Peers>,
    pub control: Option<Section<RawControl>>,
    pub files: Option<Section<RawFiles>>,
    pub log: Option<Section<RawLog>>,
    pub metrics: Option<Section<RawMetrics>>,
    pub audit: Option<Section<RawAudit>>,
}

/// `[interface]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    pub private_key_file: Option<Text>,
    pub private_key: Option<Text>,
    pub address: List<TunnelAddress>,
    pub listen_port: Option<Int<u16, 0, 65535>>,
    pub mtu: Option<ranged!(u16, Interface::MTU_RANGE)>,
    pub tcp_buffer: Option<ranged!(usize, Interface::TCP_BUFFER_RANGE)>,
    pub max_connections_per_peer: Option<ranged!(usize, Interface::MAX_CONNECTIONS_PER_PEER_RANGE)>,
    pub tcp_memory: Option<ranged!(usize, Interface::TCP_MEMORY_RANGE)>,
    pub max_connections: Option<ranged!(usize, Interface::MAX_CONNECTIONS_RANGE)>,
    pub handshake_rate_limit: Option<ranged!(u64, Interface::HANDSHAKE_RATE_LIMIT_RANGE)>,
    pub idle_session_timeout: Option<IdleTimeout>,
    pub threads: Option<ranged!(usize, Interface::THREADS_RANGE)>,
    pub name: Option<InterfaceName>,
    pub uapi: Option<Bool>,
    pub uapi_socket: Option<FilePath>,
    pub replace_peers_on_reload: Option<Bool>,
}

/// `[api]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub port: Option<Int<u16, 1, 65535>>,
    pub allowed_sources: Option<List<Cidr>>,
    pub max_running: Option<Int<usize, 1, 65536>>,
    pub max_tracked: Option<Int<usize, 1, 65536>>,
    pub default_workdir: Option<AbsPath>,
    pub nice_increment: Option<Int<u8, 0, 19>>,
    pub oom_score_adj: Option<Int<i16, -1000, 1000>>,
    pub kill_grace: Option<Secs>,
    pub shutdown_grace: Option<Secs>,
    pub tree_tracking: Option<Bool>,
    pub state_dir: Option<AbsPath>,
    pub log_max_bytes: Option<Int<u64, 4096, { i64::MAX }>>,
    pub state_max_bytes: Option<Int<u64, 4096, { i64::MAX }>>,
    pub header_timeout: Option<Positive>,
    pub body_timeout: Option<Positive>,
    pub body_min_rate: Option<Int<u64, 0, { 1 << 40 }>>,
    pub idle_timeout: Option<Positive>,
    pub send_timeout: Option<Positive>,
    pub default_limits: Option<Limits>,
    pub max_limits: Option<Limits>,
    pub cgroups: Option<Bool>,
    pub isolation: Option<Isolation>,
}

/// One `[[peer]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub name: Option<PeerName>,
    pub public_key: Text,
    pub preshared_key: Option<Text>,
    pub preshared_key_file: Option<FilePath>,
    pub allowed_ips: List<Cidr>,
    pub endpoint: Option<Text>,
    pub persistent_keepalive: Option<Int<u16, 0, 65535>>,
    pub allow: Option<List<Permission>>,
    pub run_as: Option<UserName>,
    pub users: Option<List<UserName>>,
}

/// `[control]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub connect_timeout: Option<Positive>,
    pub request_timeout: Option<Positive>,
    pub api_port: Option<Int<u16, 1, 65535>>,
    pub socket: Option<FilePath>,
    pub socket_group: Option<GroupName>,
    pub max_connections: Option<ranged!(usize, Control::MAX_CONNECTIONS_RANGE)>,
    pub state_dir: Option<FilePath>,
}

/// `[files]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFiles {
    /// 1 KiB ..= 4 GiB: a file this size may be held in memory by an edit.
    pub max_write_bytes: Option<Int<u64, 1024, { 4 << 30 }>>,
    pub max_edit_files: Option<Int<usize, 1, 1024>>,
    pub fsync: Option<Bool>,
}

/// `[log]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub level: Option<LogLevel>,
    pub format: Option<LogFormat>,
}

/// `[metrics]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Option<Listen>,
}

/// `[audit]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub path: FilePath,
    pub max_bytes: Option<Int<u64, 4096, { i64::MAX }>>,
    pub keep: Option<Int<u32, 0, 1000>>,
    pub fail_closed: Option<Bool>,
}
