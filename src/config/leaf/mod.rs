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

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// A TOML value as messages name it: `integer 3`, `string "x"`, `float 1.5`, `array`, ….
pub(super) enum Found<'a> {
    /// An integer (TOML's are 64-bit; larger ones are refused before they get here).
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
    /// TOML integers are 64-bit signed: the parser hands larger literals over (as `u64` or
    /// 128-bit) instead of refusing them, so they are refused here, before any type sees
    /// them (a `u64` duration would otherwise take `18446744073709551615`).
    fn integer<E: de::Error>(n: i128) -> Result<T, E> {
        if i64::try_from(n).is_err() {
            return Err(E::custom(format_args!(
                "{n} is not a TOML integer (they are 64-bit: {}..={})",
                i64::MIN,
                i64::MAX
            )));
        }
        Self::take(T::integer(n), Found::Integer(n))
    }

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
        Self::integer(n.into())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        Self::integer(n.into())
    }

    fn visit_i128<E: de::Error>(self, n: i128) -> Result<T, E> {
        Self::integer(n)
    }

    fn visit_u128<E: de::Error>(self, n: u128) -> Result<T, E> {
        // Beyond i128: refused below as beyond 64 bits either way.
        Self::integer(i128::try_from(n).unwrap_or(i128::MAX))
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
        impl<'de $($(, $g $(: $b)?)*)?> ::serde::Deserialize<'de> for $ty $(<$($g),*>)? {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any($crate::config::leaf::KindVisitor(::std::marker::PhantomData))
            }
        }
    )*};
}

mod compound;
mod values;

pub(super) use compound::{Limits, List, Peers, Section};
pub(super) use values::*;

deserialize_kinds!(Bool, Text,);

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
