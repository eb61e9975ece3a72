//! [`ConfigError`]: why a configuration could not be loaded, always naming the file and,
//! for a value, its key path.

use std::io;
use std::path::PathBuf;

use crate::keys::KeyError;

/// Why a configuration could not be loaded. Every variant names the file; none is fixed by
/// retrying without editing the file (or its key file) except [`ConfigError::Read`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, permissions, too large).
    #[error("{}: cannot read config: {source}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", file.display())]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// A key this version does not know (typo, or a key of another tool).
    #[error("{}: unknown key `{key}` (expected {expected})", file.display())]
    UnknownKey {
        /// The config file.
        file: PathBuf,
        /// Full key path, e.g. `peer[1].lisen_port`.
        key: String,
        /// The keys allowed there.
        expected: String,
    },
    /// A required key or section is absent.
    #[error("{}: missing required key `{key}`", file.display())]
    Missing {
        /// The config file.
        file: PathBuf,
        /// Full key path, e.g. `peer[0].public_key`.
        key: String,
    },
    /// A value has the wrong type, is out of range, or conflicts with another value.
    #[error("{}: `{key}`: {problem}", file.display())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Full key path, e.g. `peer[2].allowed_ips[0]`.
        key: String,
        /// One sentence saying what is wrong and, where possible, what would be right.
        problem: String,
    },
    /// A key (inline or in the key file) could not be read or decoded.
    #[error("{}: `{key}`: {source}", file.display())]
    Key {
        /// The config file.
        file: PathBuf,
        /// Full key path, e.g. `interface.private_key_file`.
        key: String,
        /// What was wrong with the key.
        #[source]
        source: KeyError,
    },
}
