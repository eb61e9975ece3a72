//! The value types of the raw layer: each says which TOML kinds it takes, checks what it can
//! check on its own (ranges, syntax, the duration grammar) and fails with one sentence.
//!
//! Why not plain `u16`/`String`/`Vec` fields: serde's own wording ("invalid type: string
//! \"big\", expected u16") speaks Rust, not TOML. Every type here goes through one visitor
//! ([`Kinds`]) that answers "expected an integer, found string \"big\"" or the type's own
//! problem ("100 is out of range 1280..=9000"). The error is raised while serde is inside the
//! value, so `serde_path_to_error` names its path (`interface.mtu`, `peer[2].allowed_ips[0]`);
//! no check here repeats a key name by hand. Checks that need another value, the file's
//! directory, the disk or the resolver live in `validate`.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ip_network::IpNetwork;
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

use super::names;

/// A TOML value as messages name it: `integer 3`, `string "x"`, `float 1.5`, `array`, ….
pub(super) enum Found<'a> {
    /// Any integer (TOML's are 64-bit; the parser hands larger ones over as 128-bit).
    Integer(i128),
    /// A float.
    Float(f64),
    /// `true` or `false`.
    Boolean(bool),
    /// A string.
    String(&'a str),
    /// An array.
    Array,
    /// A table.
    Table,
    /// An offset or local date-time, date or time.
    Datetime,
}

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Integer(n) => write!(f, "integer {n}"),
            Found::Float(x) => write!(f, "float {x}"),
            Found::Boolean(b) => write!(f, "boolean {b}"),
            Found::String(s) => write!(f, "string {s:?}"),
            Found::Array => f.write_str("array"),
            Found::Table => f.write_str("table"),
            Found::Datetime => f.write_str("datetime"),
        }
    }
}

/// Why a scalar was refused.
pub(super) enum Reject {
    /// Not a kind this type takes: the visitor says "expected …, found …".
    Kind,
    /// The right kind with a wrong value; the sentence says what is wrong.
    Invalid(String),
}

/// The result of converting one scalar.
pub(super) type Take<T> = Result<T, Reject>;

/// A type of the raw layer. Each method takes one TOML kind; the defaults refuse it.
pub(super) trait Kinds: Sized {
    /// What the key takes, as it reads after "expected " ("an integer", "true or false").
    const EXPECTED: &'static str;

    /// From an integer.
    fn integer(_n: i128) -> Take<Self> {
        Err(Reject::Kind)
    }

    /// From a string.
    fn string(_s: &str) -> Take<Self> {
        Err(Reject::Kind)
    }

    /// From a boolean.
    fn boolean(_b: bool) -> Take<Self> {
        Err(Reject::Kind)
    }

    /// From an array; the elements' errors carry their index in the path.
    fn array<'de, A: SeqAccess<'de>>(_seq: A) -> Result<Self, A::Error> {
        Err(wrong::<Self, _>(Found::Array))
    }

    /// From a table (or a date-time, which the TOML deserializer hands over as a table).
    fn table<'de, M: MapAccess<'de>>(mut map: M) -> Result<Self, M::Error> {
        let found = if is_datetime(&mut map)? {
            Found::Datetime
        } else {
            Found::Table
        };
        Err(wrong::<Self, _>(found))
    }
}

/// "expected <what T takes>, found <found>".
fn wrong<T: Kinds, E: de::Error>(found: Found<'_>) -> E {
    E::custom(format_args!("expected {}, found {found}", T::EXPECTED))
}

/// The key by which the `toml` deserializer marks a date-time handed over as a table.
const DATETIME_KEY: &str = "$__toml_private_datetime";

/// Whether `map` is a TOML date-time (reads its first key; only for refusing it).
fn is_datetime<'de, M: MapAccess<'de>>(map: &mut M) -> Result<bool, M::Error> {
    Ok(map.next_key::<String>()?.as_deref() == Some(DATETIME_KEY))
}

/// Whether an unknown-key error is really a date-time given where a table was expected.
pub(super) fn is_datetime_key(key: &str) -> bool {
    key == DATETIME_KEY
}

/// The one visitor of the raw layer: hands each kind to `T`, words the refusals.
struct KindVisitor<T>(PhantomData<T>);

impl<T: Kinds> KindVisitor<T> {
    fn take<E: de::Error>(taken: Take<T>, found: Found<'_>) -> Result<T, E> {
        taken.map_err(|reject| match reject {
            Reject::Kind => wrong::<T, E>(found),
            Reject::Invalid(problem) => E::custom(problem),
        })
    }
}

impl<'de, T: Kinds> Visitor<'de> for KindVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        Self::take(T::integer(n.into()), Found::Integer(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        Self::take(T::integer(n.into()), Found::Integer(n.into()))
    }

    fn visit_i128<E: de::Error>(self, n: i128) -> Result<T, E> {
        Self::take(T::integer(n), Found::Integer(n))
    }

    fn visit_u128<E: de::Error>(self, n: u128) -> Result<T, E> {
        // Beyond i128: no range of ours comes near it.
        let n = i128::try_from(n).unwrap_or(i128::MAX);
        Self::take(T::integer(n), Found::Integer(n))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<T, E> {
        Err(wrong::<T, E>(Found::Float(x)))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<T, E> {
        Self::take(T::boolean(b), Found::Boolean(b))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        Self::take(T::string(s), Found::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::array(seq)
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
        T::table(map)
    }
}

/// `Deserialize` for raw-layer types: every kind goes to [`Kinds`] (a blanket impl over
/// `T: Kinds` is not allowed for a foreign trait, hence the macro).
macro_rules! deserialize_kinds {
    ($($ty:ident $(<$($g:ident $(: $b:path)?),*>)?),* $(,)?) => {$(
        impl<'de $($(, $g $(: $b)?)*)?> Deserialize<'de> for $ty $(<$($g),*>)? {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(KindVisitor(PhantomData))
            }
        }
    )*};
}

deserialize_kinds!(
    Bool,
    Text,
    Secs,
    Positive,
    IdleTimeout,
    FilePath,
    AbsPath,
    TunnelAddress,
    Cidr,
    InterfaceName,
    PeerName,
    UserName,
    GroupName,
    LogLevel,
    LogFormat,
    Isolation,
    Permission,
    Listen,
    Limits,
    LimitName,
    List<T: DeserializeOwned>,
    Section<T: DeserializeOwned>,
);

/// An integer in `MIN..=MAX`, as `T` (the range fits `T`). The bounds are the public range
/// constants (`Interface::MTU_RANGE`, …), so messages and checks share one source.
pub(super) struct Int<T, const MIN: i64, const MAX: i64>(pub T);

impl<T: TryFrom<i64>, const MIN: i64, const MAX: i64> Kinds for Int<T, MIN, MAX> {
    const EXPECTED: &'static str = "an integer";

    fn integer(n: i128) -> Take<Self> {
        if n < MIN.into() || n > MAX.into() {
            return Err(Reject::Invalid(format!(
                "{n} is out of range {MIN}..={MAX}"
            )));
        }
        // In range, so it is an i64; it fits `T` unless a range was declared wider than `T`.
        let fits = i64::try_from(n).ok().and_then(|n| T::try_from(n).ok());
        fits.map(Int)
            .ok_or_else(|| Reject::Invalid(format!("{n} does not fit")))
    }
}

impl<'de, T: TryFrom<i64>, const MIN: i64, const MAX: i64> Deserialize<'de> for Int<T, MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor(PhantomData))
    }
}

/// [`Int`] with the bounds of a public `(min, max)` range constant, e.g.
/// `ranged!(u16, Interface::MTU_RANGE)`.
macro_rules! ranged {
    ($ty:ty, $range:expr) => {
        $crate::config::leaf::Int<$ty, { $range.0 as i64 }, { $range.1 as i64 }>
    };
}
pub(super) use ranged;

/// `true` or `false`.
pub(super) struct Bool(pub bool);

impl Kinds for Bool {
    const EXPECTED: &'static str = "true or false";

    fn boolean(b: bool) -> Take<Self> {
        Ok(Bool(b))
    }
}

/// Any string (keys, endpoints: checked where their context is known).
pub(super) struct Text(pub String);

impl Kinds for Text {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        Ok(Text(s.to_owned()))
    }
}

/// A duration: whole seconds as an integer, or a string in the one duration grammar
/// ([`crate::duration`]).
pub(super) struct Secs(pub Duration);

impl Kinds for Secs {
    const EXPECTED: &'static str = "seconds (integer) or a string like \"30s\"";

    fn integer(n: i128) -> Take<Self> {
        u64::try_from(n)
            .map(|secs| Secs(Duration::from_secs(secs)))
            .map_err(|_| {
                Reject::Invalid(if n < 0 {
                    format!("{n} is negative")
                } else {
                    format!("{n} is out of range")
                })
            })
    }

    fn string(s: &str) -> Take<Self> {
        crate::duration::parse(s)
            .map(Secs)
            .map_err(|e| Reject::Invalid(e.to_string()))
    }
}

/// A [`Secs`] above zero: a zero timeout would refuse everything.
pub(super) struct Positive(pub Duration);

impl Positive {
    fn check(secs: Secs) -> Take<Self> {
        if secs.0.is_zero() {
            return Err(Reject::Invalid("must be greater than zero".into()));
        }
        Ok(Positive(secs.0))
    }
}

impl Kinds for Positive {
    const EXPECTED: &'static str = Secs::EXPECTED;

    fn integer(n: i128) -> Take<Self> {
        Secs::integer(n).and_then(Self::check)
    }

    fn string(s: &str) -> Take<Self> {
        Secs::string(s).and_then(Self::check)
    }
}

/// `idle_session_timeout`: 0 (never) or at least a second (a shorter one would drop sessions
/// between the packets of one exchange).
pub(super) struct IdleTimeout(pub Duration);

impl IdleTimeout {
    fn check(secs: Secs) -> Take<Self> {
        let t = secs.0;
        if !t.is_zero() && t < Duration::from_secs(1) {
            return Err(Reject::Invalid("must be 0 (never) or at least 1s".into()));
        }
        Ok(IdleTimeout(t))
    }
}

impl Kinds for IdleTimeout {
    const EXPECTED: &'static str = Secs::EXPECTED;

    fn integer(n: i128) -> Take<Self> {
        Secs::integer(n).and_then(Self::check)
    }

    fn string(s: &str) -> Take<Self> {
        Secs::string(s).and_then(Self::check)
    }
}

/// A non-empty path as written; `validate` anchors a relative one at the config file.
pub(super) struct FilePath(pub PathBuf);

impl Kinds for FilePath {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        if s.is_empty() {
            return Err(Reject::Invalid(
                "empty path; remove the key for the default".into(),
            ));
        }
        Ok(FilePath(s.into()))
    }
}

/// An absolute path (directories the agent uses whatever its working directory).
pub(super) struct AbsPath(pub PathBuf);

impl Kinds for AbsPath {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        let path = PathBuf::from(s);
        if !path.is_absolute() {
            return Err(Reject::Invalid(format!("{s:?} is not an absolute path")));
        }
        Ok(AbsPath(path))
    }
}

/// One `[interface] address`: an IP address without a prefix.
pub(super) struct TunnelAddress(pub IpAddr);

impl Kinds for TunnelAddress {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        let text = s.trim();
        text.parse().map(TunnelAddress).map_err(|_| {
            let hint = if text.contains('/') {
                " (write the address without a prefix; routing comes from peers' allowed_ips)"
            } else {
                ""
            };
            Reject::Invalid(format!("{text:?} is not an IP address{hint}"))
        })
    }
}

/// A network (`allowed_ips`, `allowed_sources`); see [`names::parse_cidr`].
pub(super) struct Cidr(pub IpNetwork);

impl Kinds for Cidr {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        names::parse_cidr(s).map(Cidr).map_err(Reject::Invalid)
    }
}

/// `[interface] name`; see [`names::check_interface_name`].
pub(super) struct InterfaceName(pub String);

impl Kinds for InterfaceName {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        names::check_interface_name(s).map_err(Reject::Invalid)?;
        Ok(InterfaceName(s.to_owned()))
    }
}

/// `[[peer]] name`; see [`names::check_name`].
pub(super) struct PeerName(pub String);

impl Kinds for PeerName {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        names::check_name(s).map_err(Reject::Invalid)?;
        Ok(PeerName(s.to_owned()))
    }
}

/// A Unix user name (`run_as`, `users`): what `getpwnam` could be asked for.
pub(super) struct UserName(pub String);

impl Kinds for UserName {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        if s.is_empty() || s.len() > 64 || s.contains(['/', ':', '\0', ' ']) {
            return Err(Reject::Invalid(format!("{s:?} is not a user name")));
        }
        Ok(UserName(s.to_owned()))
    }
}

/// `[control] socket_group`: a group name or gid, trimmed, not empty.
pub(super) struct GroupName(pub String);

impl Kinds for GroupName {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Reject::Invalid(
                "empty group name; remove the key for mode 0600".into(),
            ));
        }
        Ok(GroupName(s.to_owned()))
    }
}

/// `[log] level`: a tracing filter, checked by the filter parser itself.
pub(super) struct LogLevel(pub String);

impl Kinds for LogLevel {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        let text = s.trim();
        tracing_subscriber::EnvFilter::try_new(text).map_err(|e| {
            Reject::Invalid(format!(
                "{text:?} is not a log filter ({e}); use e.g. \"info\" or \"warn,wgagent=debug\""
            ))
        })?;
        Ok(LogLevel(text.to_owned()))
    }
}

/// `[log] format`.
pub(super) struct LogFormat(pub super::LogFormat);

impl Kinds for LogFormat {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        let text = s.trim();
        super::LogFormat::parse(text).map(LogFormat).ok_or_else(|| {
            Reject::Invalid(format!(
                "{text:?} is not a log format; use \"text\" or \"json\""
            ))
        })
    }
}

/// `[api] isolation`.
pub(super) struct Isolation(pub crate::trust::Isolation);

impl Kinds for Isolation {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        crate::trust::Isolation::parse(s)
            .map(Isolation)
            .ok_or_else(|| Reject::Invalid(format!("{s:?}: use \"none\" or \"peer\"")))
    }
}

/// One `[[peer]] allow` entry.
pub(super) struct Permission(pub crate::trust::Permission);

impl Kinds for Permission {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        use crate::trust::Permission as P;
        P::parse(s).map(Permission).ok_or_else(|| {
            let all = P::ALL.map(|p| format!("{:?}", p.as_str())).join(", ");
            Reject::Invalid(format!("{s:?} is not a permission; use {all}"))
        })
    }
}

/// `[metrics] listen`: a socket address (no names: a listener binds one address).
pub(super) struct Listen(pub SocketAddr);

impl Kinds for Listen {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        let text = s.trim();
        text.parse().map(Listen).map_err(|_| {
            Reject::Invalid(format!(
                "{text:?} is not an address:port, e.g. \"127.0.0.1:9586\" or \"[::1]:9586\""
            ))
        })
    }
}

/// `default_limits` / `max_limits`: an inline table of limits by name, each a positive integer.
pub(super) struct Limits(pub crate::proc::Limits);

impl Kinds for Limits {
    const EXPECTED: &'static str = "a table like { memory_bytes = 1073741824 }";

    fn table<'de, M: MapAccess<'de>>(mut map: M) -> Result<Self, M::Error> {
        let mut out = crate::proc::Limits::default();
        while let Some(LimitName(limit)) = map.next_key()? {
            let Int(n) = map.next_value::<Int<u64, 1, { i64::MAX }>>()?;
            out.set(limit, Some(n));
        }
        Ok(Limits(out))
    }
}

/// A key of [`Limits`]; an unknown one is refused in serde's own "unknown field" words, so
/// it reads (and is reported) like any other unknown key.
struct LimitName(crate::proc::Limit);

impl Kinds for LimitName {
    const EXPECTED: &'static str = "a limit name";

    fn string(s: &str) -> Take<Self> {
        use crate::proc::Limit;
        Limit::parse(s).map(LimitName).ok_or_else(|| {
            let all: Vec<String> = Limit::ALL.iter().map(|l| format!("`{l}`")).collect();
            Reject::Invalid(format!(
                "unknown field `{s}`, expected one of {}",
                all.join(", ")
            ))
        })
    }
}

/// A TOML array of `T`.
pub(super) struct List<T>(pub Vec<T>);

impl<T: DeserializeOwned> Kinds for List<T> {
    const EXPECTED: &'static str = "a list";

    fn array<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        // Bounded by the file size (`MAX_CONFIG_BYTES`).
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<T>()? {
            out.push(item);
        }
        Ok(List(out))
    }
}

/// A table deserialized into the raw struct `T` (which refuses unknown keys); anything but a
/// table is "expected a table, found …" instead of serde's "expected struct RawApi".
pub(super) struct Section<T>(pub T);

impl<T: DeserializeOwned> Kinds for Section<T> {
    const EXPECTED: &'static str = "a table";

    fn table<'de, M: MapAccess<'de>>(map: M) -> Result<Self, M::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Section)
    }
}

/// `[[peer]]` blocks: an array of tables.
pub(super) struct Peers(pub Vec<super::raw::RawPeer>);

impl Kinds for Peers {
    const EXPECTED: &'static str = "[[peer]] blocks";

    fn array<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        List::<Section<super::raw::RawPeer>>::array(seq)
            .map(|list| Peers(list.0.into_iter().map(|s| s.0).collect()))
    }

    fn table<'de, M: MapAccess<'de>>(_map: M) -> Result<Self, M::Error> {
        Err(de::Error::custom(
            "write each peer as a [[peer]] block (double brackets)",
        ))
    }
}

impl<'de> Deserialize<'de> for Peers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor(PhantomData))
    }
}
