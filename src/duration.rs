//! Durations: one grammar for configuration files, command-line flags and the LLM tools'
//! arguments, and one way to print them.
//!
//! The grammar ([`parse`]): a number of seconds (`90`, `1.5`), or one or more
//! `<number><unit>` parts (`500ms`, `30s`, `5m`, `1h30m`, `1.5h`, `1h 30m`), as Go's
//! `time.ParseDuration` reads them plus bare seconds, spaces and unit words. Units: `ns`,
//! `us`/`µs`, `ms`, `s` (`sec`, `secs`, `second`, `seconds`), `m` (`min`, `mins`, `minute`,
//! `minutes`), `h` (`hr`, `hrs`, `hour`, `hours`), `d` (`day`, `days`). A leading `+` is
//! allowed, a `-` never. Arithmetic is exact to the nanosecond (no floating point), and the
//! result is capped only by [`Duration`] itself: callers apply their own maximum.
//!
//! Leaves to its callers: what a zero or a very long duration means for them, and JSON numbers
//! (the tools turn a JSON number of seconds into text first, or call [`from_secs_f64`]).

use std::time::Duration;

/// A text that is not a duration; the message says why and shows the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}; {FORMS}")]
pub struct DurationError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it, e.g. `unknown unit "x"`.
    pub reason: String,
}

/// The accepted forms, as every error message ends.
pub const FORMS: &str = "write e.g. \"90\" (seconds), \"1.5s\", \"500ms\", \"5m\" or \"1h30m\"";

const NANOS: [(&[&str], u128); 7] = [
    (&["ns"], 1),
    (&["us", "µs", "μs"], 1_000),
    (&["ms"], 1_000_000),
    (&["s", "sec", "secs", "second", "seconds"], 1_000_000_000),
    (&["m", "min", "mins", "minute", "minutes"], 60_000_000_000),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600_000_000_000),
    (&["d", "day", "days"], 86_400_000_000_000),
];

/// Parses a duration (see the module docs for the grammar).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let err = |reason: String| DurationError {
        text: text.to_owned(),
        reason,
    };
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.starts_with('-') {
        return Err(err("must not be negative".into()));
    }
    let body = compact.strip_prefix('+').unwrap_or(&compact);
    if body.is_empty() {
        return Err(err("empty".into()));
    }
    let mut rest = body;
    let mut total: u128 = 0;
    let mut first = true;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if number.is_empty() {
            return Err(err(format!("expected a number before {unit:?}")));
        }
        if number.matches('.').count() > 1 || number == "." {
            return Err(err(format!("{number:?} is not a number")));
        }
        let scale = if unit.is_empty() {
            // Only a lone number means seconds: "1h30" is a mistake, not 1h + 30 s.
            if !(first && rest.is_empty()) {
                return Err(err(format!("missing unit after {number}")));
            }
            NANOS[3].1
        } else {
            NANOS
                .iter()
                .find(|(names, _)| names.contains(&unit))
                .map(|(_, n)| *n)
                .ok_or_else(|| err(format!("unknown unit {unit:?}")))?
        };
        total = nanos(number, scale)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| err("out of range".into()))?;
        first = false;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err("out of range".into()))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// A non-negative, finite number of seconds (a JSON number), with the same errors as [`parse`].
pub fn from_secs_f64(secs: f64) -> Result<Duration, DurationError> {
    let err = |reason: &str| DurationError {
        text: secs.to_string(),
        reason: reason.to_owned(),
    };
    if !secs.is_finite() {
        return Err(err("out of range"));
    }
    if secs < 0.0 {
        return Err(err("must not be negative"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| err("out of range"))
}

/// Go-style rendering: `500ms`, `10s`, `1.5s`, `1m30s`, `2h0m0s`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, (ms / 60_000) % 60);
    let s = (ms % 60_000) as f64 / 1000.0;
    let s = if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    };
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

/// `number` (digits with at most one `.`) times `scale` nanoseconds, truncated to whole
/// nanoseconds; `None` when it is not a number or overflows.
fn nanos(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut result = whole.checked_mul(scale)?;
    // Digits beyond the 30th cannot change a nanosecond count of any unit here.
    let frac = &frac[..frac.len().min(30)];
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let denom = 10u128.checked_pow(frac.len() as u32)?;
        result = result.checked_add(digits.checked_mul(scale)? / denom)?;
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn every_accepted_form() {
        let ms = Duration::from_millis;
        let cases = [
            ("90", s(90)),
            ("0", s(0)),
            ("1.5", ms(1500)),
            (".5", ms(500)),
            (" 45 ", s(45)),
            ("1.5s", ms(1500)),
            ("500ms", ms(500)),
            ("30s", s(30)),
            ("5m", s(300)),
            ("2h", s(7200)),
            ("1d", s(86400)),
            ("1h30m", s(5400)),
            ("1h 30m", s(5400)),
            ("2m30s", s(150)),
            ("1.5h", s(5400)),
            ("90 seconds", s(90)),
            ("2min", s(120)),
            ("+10s", s(10)),
            ("250us", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("0.000000001s", Duration::from_nanos(1)),
            ("1m0.5s", ms(60_500)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            ("", "empty"),
            ("  ", "empty"),
            ("+", "empty"),
            ("-5s", "must not be negative"),
            ("-5", "must not be negative"),
            ("abc", "expected a number before \"abc\""),
            ("s", "expected a number before \"s\""),
            ("10x", "unknown unit \"x\""),
            ("5m-3s", "unknown unit \"m-\""),
            ("1..5s", "\"1..5\" is not a number"),
            ("1h30", "missing unit after 30"),
            ("99999999999999999999999999999999999999999h", "out of range"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.reason.contains(want), "{text:?}: {e}");
            assert_eq!(e.text, text);
        }
        assert!(parse("x").unwrap_err().to_string().contains("\"1h30m\""));
    }

    #[test]
    fn numbers_of_seconds() {
        assert_eq!(from_secs_f64(0.25), Ok(Duration::from_millis(250)));
        assert!(from_secs_f64(-1.0).is_err());
        assert!(from_secs_f64(f64::NAN).is_err());
        assert!(from_secs_f64(1e300).is_err());
    }

    #[test]
    fn formats_like_go() {
        let f = |ms| format(Duration::from_millis(ms));
        assert_eq!(f(500), "500ms");
        assert_eq!(f(10_000), "10s");
        assert_eq!(f(1_500), "1.5s");
        assert_eq!(f(90_000), "1m30s");
        assert_eq!(f(3_600_000), "1h0m0s");
    }
}
