//! Signals: the one vocabulary of the signals a caller can send to a process, shared by the API
//! (server and client), the process manager, the LLM tools and the CLI.
//!
//! Two spellings, on purpose:
//! - **On the wire** (the `signal` of `POST /api/v0/processes/{id}/signal`, and this type's
//!   serde form) exactly the four names of the Coder-compatible API: `kill`, `terminate`,
//!   `interrupt`, `hangup`, lower case ([`Signal::from_wire`]). The agent answers anything else
//!   with a 400, as docs/API.md and docs/openapi.yaml say.
//! - **From people and models** (CLI arguments, tool arguments: [`FromStr`]) the spellings of
//!   `kill(1)` too, in any case: the API name, the short name with or without `SIG`
//!   (`TERM`, `SIGTERM`, `sigterm`) or the number (`15`). Clients parse with this and send
//!   the API name, so the wire never sees the other spellings.
//!
//! Leaves to its callers: who receives the signal (the manager sends `kill` and `terminate`
//! to the whole tree, the others to the process group) and the names of signals a process
//! died of (any signal, reported as `"SIGSEGV"` etc., which is not this vocabulary).

use std::fmt;
use std::str::FromStr;

/// A signal a caller may send to a process through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `SIGKILL` (9): cannot be caught.
    Kill,
    /// `SIGTERM` (15): asks the process to end.
    Terminate,
    /// `SIGINT` (2): what Ctrl-C sends (**ext**).
    Interrupt,
    /// `SIGHUP` (1): the terminal went away; many daemons reload on it (**ext**).
    Hangup,
}

/// A text that names none of the four signals; the message lists the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown signal {0:?}: use kill, terminate, interrupt or hangup (or SIGKILL/KILL/9, \
     SIGTERM/TERM/15, SIGINT/INT/2, SIGHUP/HUP/1)"
)]
pub struct SignalError(pub String);

impl Signal {
    /// Every signal, in the order the API lists them.
    pub const ALL: [Signal; 4] = [
        Signal::Kill,
        Signal::Terminate,
        Signal::Interrupt,
        Signal::Hangup,
    ];

    /// The API's name (`"terminate"`): what goes on the wire and into messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Terminate => "terminate",
            Self::Interrupt => "interrupt",
            Self::Hangup => "hangup",
        }
    }

    /// The API's name exactly (lower case, no other spelling): how the agent reads a request.
    pub fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sig| sig.as_str() == s)
    }

    /// The C name (`"SIGTERM"`).
    pub fn sig_name(self) -> &'static str {
        match self {
            Self::Kill => "SIGKILL",
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
            Self::Hangup => "SIGHUP",
        }
    }

    /// The OS signal.
    pub fn to_nix(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal as S;
        match self {
            Self::Kill => S::SIGKILL,
            Self::Terminate => S::SIGTERM,
            Self::Interrupt => S::SIGINT,
            Self::Hangup => S::SIGHUP,
        }
    }

    /// The signal number (the same on every Linux architecture for these four).
    pub fn number(self) -> i32 {
        self.to_nix() as i32
    }
}

impl FromStr for Signal {
    type Err = SignalError;

    /// Any case; the API name, `SIG`-prefixed or bare short name, or the number.
    fn from_str(s: &str) -> Result<Self, SignalError> {
        let lower = s.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("sig").unwrap_or(&lower);
        Ok(match bare {
            "kill" | "9" => Self::Kill,
            "terminate" | "term" | "15" => Self::Terminate,
            "interrupt" | "int" | "2" => Self::Interrupt,
            "hangup" | "hup" | "1" => Self::Hangup,
            _ => return Err(SignalError(s.to_owned())),
        })
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Strict, like the wire: only the API's four names.
impl<'de> serde::Deserialize<'de> for Signal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_wire(&s).ok_or_else(|| {
            serde::de::Error::unknown_variant(&s, &["kill", "terminate", "interrupt", "hangup"])
        })
    }
}

/// clap reads a `Signal` argument with [`FromStr`] and offers the four API names to help
/// texts, man pages and completions (the other spellings are accepted, not advertised).
#[derive(Debug, Clone, Copy)]
pub struct SignalParser;

impl clap::builder::ValueParserFactory for Signal {
    type Parser = SignalParser;
    fn value_parser() -> SignalParser {
        SignalParser
    }
}

impl clap::builder::TypedValueParser for SignalParser {
    type Value = Signal;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Signal, clap::Error> {
        clap::builder::StringValueParser::new()
            .try_map(|s| s.parse::<Signal>())
            .parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(Signal::ALL.into_iter().map(|s| {
            clap::builder::PossibleValue::new(s.as_str()).help(s.sig_name())
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_may_spell_it_as_kill_1_does() {
        for (text, sig) in [
            ("kill", Signal::Kill),
            ("KILL", Signal::Kill),
            ("SIGKILL", Signal::Kill),
            ("9", Signal::Kill),
            ("terminate", Signal::Terminate),
            ("TERM", Signal::Terminate),
            ("SigTerm", Signal::Terminate),
            ("15", Signal::Terminate),
            (" int ", Signal::Interrupt),
            ("SIGINT", Signal::Interrupt),
            ("2", Signal::Interrupt),
            ("hup", Signal::Hangup),
            ("Hangup", Signal::Hangup),
            ("1", Signal::Hangup),
        ] {
            assert_eq!(text.parse::<Signal>(), Ok(sig), "{text}");
        }
        for bad in ["", "stop", "SIGSTOP", "19", "0", "sig", "kill9", "-9"] {
            let e = bad.parse::<Signal>().unwrap_err();
            assert!(e.to_string().contains("use kill, terminate"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_wire_takes_only_the_api_names() {
        for sig in Signal::ALL {
            assert_eq!(Signal::from_wire(sig.as_str()), Some(sig));
            assert_eq!(sig.to_string(), sig.as_str());
            assert_eq!(sig.as_str().parse::<Signal>(), Ok(sig), "round trip");
            let json = serde_json::to_string(&sig).unwrap();
            assert_eq!(json, format!("\"{}\"", sig.as_str()));
            assert_eq!(serde_json::from_str::<Signal>(&json).unwrap(), sig);
        }
        for other in ["KILL", "SIGTERM", "15", "int", ""] {
            assert_eq!(Signal::from_wire(other), None, "{other}");
            assert!(serde_json::from_str::<Signal>(&format!("{other:?}")).is_err());
        }
    }

    #[test]
    fn numbers_and_names_are_the_os_ones() {
        assert_eq!(Signal::Kill.number(), libc::SIGKILL);
        assert_eq!(Signal::Terminate.number(), libc::SIGTERM);
        assert_eq!(Signal::Interrupt.number(), libc::SIGINT);
        assert_eq!(Signal::Hangup.number(), libc::SIGHUP);
        for sig in Signal::ALL {
            assert_eq!(sig.to_nix().as_str(), sig.sig_name());
        }
    }

    #[test]
    fn clap_reads_every_spelling_and_offers_the_api_names() {
        #[derive(clap::Parser)]
        struct Args {
            signal: Signal,
        }
        use clap::Parser as _;
        assert_eq!(
            Args::try_parse_from(["x", "SIGTERM"]).unwrap().signal,
            Signal::Terminate
        );
        assert_eq!(
            Args::try_parse_from(["x", "9"]).unwrap().signal,
            Signal::Kill
        );
        let e = Args::try_parse_from(["x", "stop"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("unknown signal \"stop\""), "{e}");
        let cmd = <Args as clap::CommandFactory>::command();
        let arg = cmd.get_arguments().find(|a| a.get_id() == "signal");
        let names: Vec<String> = arg
            .unwrap()
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(names, ["kill", "terminate", "interrupt", "hangup"]);
    }
}
