//! The scalar values of the raw layer that need more than a kind check: durations, paths,
//! addresses, names, and the words of `[log]`, `[api] isolation` and `allow`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ip_network::IpNetwork;

use super::{Kinds, Reject, Take};
use crate::config::names;

deserialize_kinds!(
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
);

/// A duration: whole seconds as an integer, or a string in the one duration grammar
/// ([`crate::duration`]).
pub(in crate::config) struct Secs(pub Duration);

/// The longest duration any config key takes: a year. Every configured wait ends up added to
/// a clock reading (`Instant::now() + kill_grace`), which panics on overflow, so a value like
/// `kill_grace = 9223372036854775807` must be refused here rather than crash a supervisor.
pub(in crate::config) const MAX_CONFIG_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl Secs {
    fn capped(d: Duration) -> Take<Self> {
        if d > MAX_CONFIG_DURATION {
            return Err(Reject::Invalid(format!(
                "{} is over the limit of 365d (a year)",
                crate::duration::format(d)
            )));
        }
        Ok(Secs(d))
    }
}

impl Kinds for Secs {
    const EXPECTED: &'static str = "seconds (integer) or a string like \"30s\"";

    fn integer(n: i128) -> Take<Self> {
        let secs = u64::try_from(n).map_err(|_| {
            Reject::Invalid(if n < 0 {
                format!("{n} is negative")
            } else {
                format!("{n} is out of range")
            })
        })?;
        Self::capped(Duration::from_secs(secs))
    }

    fn string(s: &str) -> Take<Self> {
        let d = crate::duration::parse(s).map_err(|e| Reject::Invalid(e.to_string()))?;
        Self::capped(d)
    }
}

/// A [`Secs`] above zero: a zero timeout would refuse everything.
pub(in crate::config) struct Positive(pub Duration);

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
pub(in crate::config) struct IdleTimeout(pub Duration);

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
pub(in crate::config) struct FilePath(pub PathBuf);

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
pub(in crate::config) struct AbsPath(pub PathBuf);

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
pub(in crate::config) struct TunnelAddress(pub IpAddr);

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
pub(in crate::config) struct Cidr(pub IpNetwork);

impl Kinds for Cidr {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        names::parse_cidr(s).map(Cidr).map_err(Reject::Invalid)
    }
}

/// `[interface] name`; see [`names::check_interface_name`].
pub(in crate::config) struct InterfaceName(pub String);

impl Kinds for InterfaceName {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        names::check_interface_name(s).map_err(Reject::Invalid)?;
        Ok(InterfaceName(s.to_owned()))
    }
}

/// `[[peer]] name`; see [`names::check_name`].
pub(in crate::config) struct PeerName(pub String);

impl Kinds for PeerName {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        names::check_name(s).map_err(Reject::Invalid)?;
        Ok(PeerName(s.to_owned()))
    }
}

/// A Unix user name (`run_as`, `users`): what `getpwnam` could be asked for.
pub(in crate::config) struct UserName(pub String);

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
pub(in crate::config) struct GroupName(pub String);

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
pub(in crate::config) struct LogLevel(pub String);

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
pub(in crate::config) struct LogFormat(pub crate::config::LogFormat);

impl Kinds for LogFormat {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        let text = s.trim();
        crate::config::LogFormat::parse(text)
            .map(LogFormat)
            .ok_or_else(|| {
                Reject::Invalid(format!(
                    "{text:?} is not a log format; use \"text\" or \"json\""
                ))
            })
    }
}

/// `[api] isolation`.
pub(in crate::config) struct Isolation(pub crate::trust::Isolation);

impl Kinds for Isolation {
    const EXPECTED: &'static str = "a string";

    fn string(s: &str) -> Take<Self> {
        crate::trust::Isolation::parse(s)
            .map(Isolation)
            .ok_or_else(|| Reject::Invalid(format!("{s:?}: use \"none\" or \"peer\"")))
    }
}

/// One `[[peer]] allow` entry.
pub(in crate::config) struct Permission(pub crate::trust::Permission);

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
pub(in crate::config) struct Listen(pub SocketAddr);

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
