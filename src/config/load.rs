//! Reading a config: the bounded file read, TOML syntax errors with line and column, the raw
//! layer through `serde_path_to_error`, and its errors turned into [`ConfigError`]s naming
//! their key path.

use std::fs::File;
use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_path_to_error::Segment;

use super::leaf::is_datetime_key;
use super::raw::RawConfig;
use super::validate::{Cx, Resolver};
use super::{Config, ConfigError};

/// A config file larger than this is refused (bounded read).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Config {
    /// Reads and parses `path`; also warns when the file holds an inline `private_key` and is
    /// accessible by group or others.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_key(path, None)
    }

    /// [`Config::load`], with the private key read from `private_key_file` instead of the
    /// file's `private_key[_file]` when it is given (`--private-key-file`, e.g. a systemd
    /// credential): the file then needs no key, and one it has is ignored with a warning.
    pub fn load_with_key(
        path: &Path,
        private_key_file: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            file: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(read_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_CONFIG_BYTES} bytes"),
            )));
        }
        let (mut config, inline_key) =
            parse_inner(&text, path, &system_resolver, private_key_file)?;
        if inline_key && mode & 0o077 != 0 {
            config.warnings.push(format!(
                "{} contains `interface.private_key` and is accessible by group or others \
                 (mode {mode:04o}); run `chmod 600` on it or use `private_key_file`",
                path.display()
            ));
        }
        Ok(config)
    }

    /// Parses `text`; `origin` names the file in errors and anchors a relative
    /// `private_key_file`. Endpoint host names are resolved here.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        parse_inner(text, origin, &system_resolver, None).map(|(config, _)| config)
    }

    /// Like [`Config::parse`] without the network: endpoint host names do not resolve (they
    /// are pending, as for an unknown host). For fuzzing, which must not query DNS.
    #[doc(hidden)]
    pub fn parse_offline(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let offline = |host: &str, _port: u16| -> io::Result<Vec<SocketAddr>> {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: not resolved offline"),
            ))
        };
        parse_inner(text, origin, &offline, None).map(|(config, _)| config)
    }
}

fn system_resolver(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    (host, port).to_socket_addrs().map(Iterator::collect)
}

/// Parses and converts; the flag says whether the private key was inline.
pub(super) fn parse_inner(
    text: &str,
    origin: &Path,
    resolve: &Resolver,
    key_override: Option<&Path>,
) -> Result<(Config, bool), ConfigError> {
    let document = toml::de::Deserializer::parse(text).map_err(|e| {
        let (line, column) = line_column(text, e.span().map_or(0, |span| span.start));
        ConfigError::Syntax {
            file: origin.to_owned(),
            line,
            column,
            message: e.message().trim().replace('\n', "; "),
        }
    })?;
    let raw: RawConfig =
        serde_path_to_error::deserialize(document).map_err(|e| from_serde(origin, e))?;
    let mut cx = Cx {
        file: origin,
        resolve,
        warnings: Vec::new(),
        key_override,
        pending_endpoints: Vec::new(),
    };
    cx.config(raw)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A raw-layer error → the [`ConfigError`] naming its key path. serde words unknown and
/// missing keys itself ("unknown field `x`, expected one of `a`, `b`"; "missing field `x`");
/// those two become [`ConfigError::UnknownKey`] and [`ConfigError::Missing`], every other
/// message is the leaf type's own sentence.
fn from_serde(file: &Path, e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let segments: Vec<&Segment> = e.path().iter().collect();
    let path = key_path(&segments);
    let message = e.inner().message();
    let file = file.to_owned();
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'));
    if let Some((name, rest)) = unknown {
        // The path ends at the unknown key itself (serde_path_to_error records the key before
        // the struct refuses it).
        let parent = match segments.split_last() {
            Some((Segment::Map { key }, parent)) if key == name => key_path(parent),
            _ => path.clone(),
        };
        if is_datetime_key(name) {
            return ConfigError::Invalid {
                file,
                key: parent,
                problem: "expected a table, found datetime".into(),
            };
        }
        return ConfigError::UnknownKey {
            file,
            key: join(&parent, name),
            expected: rest
                .trim_start_matches(',')
                .trim()
                .trim_start_matches("expected ")
                .to_owned(),
        };
    }
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    if let Some(name) = missing {
        return ConfigError::Missing {
            file,
            key: join(&path, name),
        };
    }
    ConfigError::Invalid {
        file,
        key: if path.is_empty() {
            "(top level)".into()
        } else {
            path
        },
        problem: message.to_owned(),
    }
}

/// `peer[2].allowed_ips[0]`: keys joined by dots, array indexes in brackets (the spelling of
/// `serde_path_to_error`'s own `Display`, minus its `.` for the top level).
fn key_path(segments: &[&Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}
