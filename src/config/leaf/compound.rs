//! The compound values of the raw layer: lists, sections, `[[peer]]` blocks, limit tables.
//! Their elements are read through serde, so an element's error carries its index or key in
//! the path.

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess};

use super::{Found, Int, Kinds, Reject, Take, is_datetime, is_datetime_key, wrong};

deserialize_kinds!(
    Limits,
    LimitName,
    List<T: DeserializeOwned>,
    Section<T: DeserializeOwned>,
    Peers,
);

/// `default_limits` / `max_limits`: an inline table of limits by name, each a positive integer.
pub(in crate::config) struct Limits(pub crate::proc::Limits);

impl Kinds for Limits {
    const EXPECTED: &'static str = "a table like { memory_bytes = 1073741824 }";

    fn table<'de, M: MapAccess<'de>>(mut map: M) -> Result<Self, M::Error> {
        let mut out = crate::proc::Limits::default();
        while let Some(LimitName(limit)) = map.next_key()? {
            // A date-time given for the whole table arrives as a one-key table.
            let Some(limit) = limit else {
                return Err(wrong::<Self, _>(Found::Datetime));
            };
            let Int(n) = map.next_value::<Int<u64, 1, { i64::MAX }>>()?;
            out.set(limit, Some(n));
        }
        Ok(Limits(out))
    }
}

/// A key of [`Limits`] (`None`: the date-time marker key); an unknown one is refused in
/// serde's own "unknown field" words, so it reads (and is reported) like any other unknown key.
struct LimitName(Option<crate::proc::Limit>);

impl Kinds for LimitName {
    const EXPECTED: &'static str = "a limit name";

    fn string(s: &str) -> Take<Self> {
        use crate::proc::Limit;
        if is_datetime_key(s) {
            return Ok(LimitName(None));
        }
        Limit::parse(s).map(|l| LimitName(Some(l))).ok_or_else(|| {
            let all: Vec<String> = Limit::ALL.iter().map(|l| format!("`{l}`")).collect();
            Reject::Invalid(format!(
                "unknown field `{s}`, expected one of {}",
                all.join(", ")
            ))
        })
    }
}

/// A TOML array of `T`.
pub(in crate::config) struct List<T>(pub Vec<T>);

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
pub(in crate::config) struct Section<T>(pub T);

impl<T: DeserializeOwned> Kinds for Section<T> {
    const EXPECTED: &'static str = "a table";

    fn table<'de, M: MapAccess<'de>>(map: M) -> Result<Self, M::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Section)
    }
}

/// `[[peer]]` blocks: an array of tables.
pub(in crate::config) struct Peers(pub Vec<crate::config::raw::RawPeer>);

impl Kinds for Peers {
    const EXPECTED: &'static str = "[[peer]] blocks";

    fn array<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        List::<Section<crate::config::raw::RawPeer>>::array(seq)
            .map(|list| Peers(list.0.into_iter().map(|s| s.0).collect()))
    }

    fn table<'de, M: MapAccess<'de>>(mut map: M) -> Result<Self, M::Error> {
        if is_datetime(&mut map)? {
            return Err(wrong::<Self, _>(Found::Datetime));
        }
        Err(de::Error::custom(
            "write each peer as a [[peer]] block (double brackets)",
        ))
    }
}
