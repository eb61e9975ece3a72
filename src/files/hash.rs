//! Content hashes and the optimistic-concurrency vocabulary: `ContentHash` (SHA-256 of a file's
//! bytes, shown as 64 lowercase hex digits — the same text `sha256sum` prints, so a caller can
//! compute one locally), its `ETag` form, and [`Precondition`] (`If-Match`, `If-None-Match`,
//! per-file `if_match`). Sans-IO: hashing takes bytes, checking takes the current hash.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// SHA-256 of a file's content.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }

    /// The strong entity tag for this content: the hex digest in double quotes.
    pub fn etag(&self) -> String {
        format!("\"{self}\"")
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// Not 64 hex digits (optionally quoted, optionally prefixed `sha256:`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a content hash (64 hex digits, as sha256sum prints)")]
pub struct BadHash(pub String);

impl FromStr for ContentHash {
    type Err = BadHash;

    /// Accepts `abc…`, `"abc…"` (an ETag) and `sha256:abc…`, any case.
    fn from_str(s: &str) -> Result<Self, BadHash> {
        let t = s.trim();
        let t = t
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(t);
        let t = t.strip_prefix("sha256:").unwrap_or(t);
        if t.len() != 64 {
            return Err(BadHash(s.to_owned()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in t.as_bytes().chunks(2).enumerate() {
            let hex = |c: u8| {
                (c as char)
                    .to_digit(16)
                    .ok_or_else(|| BadHash(s.to_owned()))
            };
            out[i] = (hex(pair[0])? * 16 + hex(pair[1])?) as u8;
        }
        Ok(Self(out))
    }
}

/// Incremental hashing, for content that arrives in pieces (a streamed upload).
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A hasher that has seen nothing yet.
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// Feeds the next piece of content.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hash of everything fed, equal to [`ContentHash::of`] the whole content.
    pub fn finish(self) -> ContentHash {
        ContentHash(self.0.finalize().into())
    }
}

/// What a write requires of the file it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Nothing: write whatever is there.
    #[default]
    None,
    /// `If-Match: *`: the file must exist.
    Exists,
    /// `If-None-Match: *`: the file must not exist (create only).
    Absent,
    /// `If-Match: "h1", "h2"` or `if_match: "h"`: the file's current hash must be one of these.
    /// `raw` is what the caller sent, for messages. Weak tags (`W/"…"`) and tags that are not
    /// content hashes are kept out of `hashes`: they never match (RFC 9110 strong comparison).
    OneOf {
        /// The acceptable hashes; empty when none of the tags was a strong content hash.
        hashes: Vec<ContentHash>,
        /// The header or argument value as sent.
        raw: String,
    },
}

impl Precondition {
    /// From the `If-Match` and `If-None-Match` header values (either may be absent). Only
    /// `If-None-Match: *` is understood; another `If-None-Match` is an error, as is a
    /// combination of both headers.
    pub fn from_headers(
        if_match: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Result<Self, String> {
        match (if_match, if_none_match) {
            (None, None) => Ok(Self::None),
            (Some(_), Some(_)) => Err("send If-Match or If-None-Match, not both".to_owned()),
            (None, Some(v)) if v.trim() == "*" => Ok(Self::Absent),
            (None, Some(v)) => Err(format!(
                "If-None-Match {v:?}: only \"*\" (create only if absent) is supported"
            )),
            (Some(v), None) => Ok(Self::if_match(v)),
        }
    }

    /// An `If-Match` list (or one per-file `if_match` value).
    pub fn if_match(v: &str) -> Self {
        let v = v.trim();
        if v == "*" {
            return Self::Exists;
        }
        let hashes = v
            .split(',')
            .map(str::trim)
            .filter(|t| !t.starts_with("W/"))
            .filter_map(|t| t.parse().ok())
            .collect();
        Self::OneOf {
            hashes,
            raw: v.to_owned(),
        }
    }

    /// Whether a file whose content hash is `current` (`None`: absent) satisfies this.
    pub fn holds(&self, current: Option<&ContentHash>) -> bool {
        match self {
            Self::None => true,
            Self::Exists => current.is_some(),
            Self::Absent => current.is_none(),
            Self::OneOf { hashes, .. } => current.is_some_and(|c| hashes.contains(c)),
        }
    }

    /// Whether checking needs the current content's hash (not just its existence).
    pub fn needs_hash(&self) -> bool {
        matches!(self, Self::OneOf { .. })
    }

    /// What the caller expected, for messages.
    pub fn expected(&self) -> String {
        match self {
            Self::None => "anything".to_owned(),
            Self::Exists => "an existing file (If-Match: *)".to_owned(),
            Self::Absent => "no file (If-None-Match: *)".to_owned(),
            Self::OneOf { raw, .. } => raw.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn hashes_print_like_sha256sum() {
        assert_eq!(ContentHash::of(b"hello").to_string(), HELLO);
        let mut h = Hasher::new();
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.finish(), ContentHash::of(b"hello"));
        assert_eq!(ContentHash::of(b"hello").etag(), format!("\"{HELLO}\""));
    }

    #[test]
    fn hashes_parse_plain_quoted_prefixed_any_case() {
        let h = ContentHash::of(b"hello");
        for s in [
            HELLO.to_owned(),
            format!("\"{HELLO}\""),
            format!("sha256:{HELLO}"),
            HELLO.to_uppercase(),
            format!("  {HELLO} "),
        ] {
            assert_eq!(s.parse::<ContentHash>(), Ok(h), "{s}");
        }
        for bad in ["", "abc", &HELLO[1..], &format!("{}zz", &HELLO[2..])] {
            assert!(bad.parse::<ContentHash>().is_err(), "{bad}");
        }
    }

    #[test]
    fn preconditions_follow_rfc_9110() {
        let h = ContentHash::of(b"hello");
        let other = ContentHash::of(b"other");
        let p = Precondition::from_headers(None, None).unwrap();
        assert!(p.holds(None) && p.holds(Some(&h)));
        let p = Precondition::from_headers(Some("*"), None).unwrap();
        assert!(!p.holds(None) && p.holds(Some(&h)));
        let p = Precondition::from_headers(None, Some("*")).unwrap();
        assert!(p.holds(None) && !p.holds(Some(&h)));
        let p =
            Precondition::from_headers(Some(&format!("\"{other}\", \"{HELLO}\"")), None).unwrap();
        assert!(p.holds(Some(&h)) && p.holds(Some(&other)) && !p.holds(None));
        assert!(p.needs_hash());
        // A weak tag never matches a strong comparison; garbage never matches.
        let p = Precondition::if_match(&format!("W/\"{HELLO}\""));
        assert!(!p.holds(Some(&h)));
        assert!(!Precondition::if_match("nonsense").holds(Some(&h)));
        assert!(Precondition::from_headers(Some("*"), Some("*")).is_err());
        assert!(Precondition::from_headers(None, Some("\"x\"")).is_err());
    }
}
