//! Raw structs → the public types: defaults for absent keys, relative paths anchored at the
//! config file, key files read, endpoints resolved, and every check that needs more than one
//! value (peers against each other, `max_tracked` against `max_running`, …). Each value was
//! already checked on its own by its leaf type; errors here name their key path by hand,
//! spelled the way `serde_path_to_error` spells the others (`peer[1].allowed_ips[0]`).

mod api;
mod interface;
mod peers;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::raw::{RawAudit, RawConfig, RawControl, RawFiles, RawLog, RawMetrics};
use super::{Api, Config, ConfigError, Control, Files, Log, Metrics, PendingEndpoint};
use crate::keys::KeyError;

/// Resolves `host`, `port` to addresses (the system resolver outside tests).
pub(super) type Resolver = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

/// Conversion context: the file for errors, its directory for relative paths, the warnings.
pub(super) struct Cx<'a> {
    /// The config file (named in every error; its directory anchors relative paths).
    pub file: &'a Path,
    /// Resolves endpoint host names.
    pub resolve: &'a Resolver,
    /// Non-fatal findings so far.
    pub warnings: Vec<String>,
    /// `--private-key-file`: replaces `private_key[_file]` (see `Config::load_with_key`).
    pub key_override: Option<&'a Path>,
    /// Endpoints whose host name did not resolve.
    pub pending_endpoints: Vec<PendingEndpoint>,
}

impl Cx<'_> {
    fn invalid(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    fn key_error(&self, key: &str, source: KeyError) -> ConfigError {
        ConfigError::Key {
            file: self.file.to_owned(),
            key: key.to_owned(),
            source,
        }
    }

    /// `path`, anchored at the config file's directory when relative.
    fn relative(&self, path: PathBuf) -> PathBuf {
        match self.file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        }
    }

    /// Converts the whole file; the flag says whether the private key was inline.
    pub(super) fn config(&mut self, raw: RawConfig) -> Result<(Config, bool), ConfigError> {
        let (interface, inline_key) = self.interface(raw.interface.0)?;
        let api = match raw.api {
            Some(api) => self.api(api.0)?,
            None => Api::default(),
        };
        let peers = self.peers(raw.peer.map(|p| p.0), &interface.public_key)?;
        let control = raw
            .control
            .map_or_else(Control::default, |c| self.control(c.0));
        let files = raw.files.map_or_else(Files::default, |f| files(f.0));
        let log = raw.log.map_or_else(Log::default, |l| log(l.0));
        let metrics = raw
            .metrics
            .map_or_else(Metrics::default, |m| self.metrics(m.0));
        let audit = raw.audit.map(|a| self.audit(a.0));
        if peers.is_empty() {
            self.warnings.push(format!(
                "{}: no [[peer]] configured; nothing can reach this node and it can reach nobody",
                self.file.display()
            ));
        }
        let config = Config {
            interface,
            api,
            peers,
            control,
            files,
            log,
            metrics,
            audit,
            warnings: std::mem::take(&mut self.warnings),
            pending_endpoints: std::mem::take(&mut self.pending_endpoints),
        };
        Ok((config, inline_key))
    }

    fn control(&self, raw: RawControl) -> Control {
        let d = Control::default();
        Control {
            connect_timeout: raw.connect_timeout.map_or(d.connect_timeout, |v| v.0),
            request_timeout: raw.request_timeout.map_or(d.request_timeout, |v| v.0),
            api_port: raw.api_port.map_or(d.api_port, |v| v.0),
            socket: raw.socket.map(|p| self.relative(p.0)),
            socket_group: raw.socket_group.map(|g| g.0),
            max_connections: raw.max_connections.map_or(d.max_connections, |v| v.0),
            state_dir: raw.state_dir.map(|p| self.relative(p.0)),
        }
    }

    fn metrics(&mut self, raw: RawMetrics) -> Metrics {
        let listen = raw.listen.map(|l| l.0);
        if let Some(addr) = listen
            && !addr.ip().is_loopback()
        {
            self.warnings.push(format!(
                "{}: `metrics.listen` = {addr} is reachable from outside this machine; \
                 the metrics name every peer and their traffic",
                self.file.display()
            ));
        }
        Metrics { listen }
    }

    fn audit(&self, raw: RawAudit) -> crate::trust::AuditConfig {
        use crate::trust::AuditConfig;
        AuditConfig {
            path: self.relative(raw.path.0),
            max_bytes: raw
                .max_bytes
                .map_or(AuditConfig::DEFAULT_MAX_BYTES, |v| v.0),
            keep: raw.keep.map_or(AuditConfig::DEFAULT_KEEP, |v| v.0),
            fail_closed: raw.fail_closed.is_none_or(|v| v.0),
        }
    }
}

fn files(raw: RawFiles) -> Files {
    let d = Files::default();
    Files {
        max_write_bytes: raw.max_write_bytes.map_or(d.max_write_bytes, |v| v.0),
        max_edit_files: raw.max_edit_files.map_or(d.max_edit_files, |v| v.0),
        fsync: raw.fsync.map_or(d.fsync, |v| v.0),
    }
}

fn log(raw: RawLog) -> Log {
    let d = Log::default();
    Log {
        level: raw.level.map_or(d.level, |v| v.0),
        format: raw.format.map_or(d.format, |v| v.0),
    }
}
