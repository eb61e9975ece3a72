//! Logging of the long-lived roles (`agent`, `control`): to stderr, as text or as one JSON
//! object per line (`[log] format`, `--log-format`), with a filter that can be replaced at run
//! time (`[log] level` on reload).
//!
//! boringtun logs its handshake timers at warn and error (`HANDSHAKE(REKEY_TIMEOUT)` every 5 s
//! for 90 s after any peer goes away, e.g. after every short CLI run). Those are normal
//! protocol events, not problems of this node, so [`filter`] hides boringtun's own messages
//! unless the filter is at debug or trace, or names `boringtun` itself.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The process-wide log filter, replaceable at run time.
pub(crate) struct LogControl {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    /// `RUST_LOG` was set: it wins over the file, at start and on reload.
    from_env: bool,
}

impl LogControl {
    /// Logs to stderr at `RUST_LOG` if set, else at `level`, in `format`. Text has colour only
    /// on a terminal; JSON lines carry timestamp, level, target, the event's fields, the
    /// current span and the list of spans with their fields.
    pub(crate) fn init(level: &str, format: LogFormat) -> LogControl {
        use std::io::IsTerminal;
        let env = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let chosen = env
            .as_deref()
            .filter(|v| EnvFilter::try_new(v).is_ok())
            .unwrap_or(level);
        let (filter, handle) = reload::Layer::new(filter(chosen));
        let (text, json) = match format {
            LogFormat::Text => (
                Some(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::stderr().is_terminal()),
                ),
                None,
            ),
            LogFormat::Json => (
                None,
                Some(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_current_span(true)
                        .with_span_list(true)
                        .with_writer(std::io::stderr),
                ),
            ),
        };
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(text)
            .with(json)
            .try_init();
        LogControl {
            handle,
            from_env: env.is_some(),
        }
    }

    /// Applies a new `[log] level` (already validated by the config parser).
    pub(crate) fn set(&self, level: &str) {
        if self.from_env {
            tracing::info!("RUST_LOG is set; it overrides the new [log] level {level:?}");
            return;
        }
        match self.handle.reload(filter(level)) {
            Ok(()) => tracing::info!(level, "log level changed"),
            Err(e) => tracing::warn!("cannot change the log level: {e}"),
        }
    }
}

/// The filter for `spec`, with boringtun's messages hidden unless `spec` asks for them (see
/// the module docs). An invalid `spec` (only possible from `RUST_LOG`) means `info`.
pub(crate) fn filter(spec: &str) -> EnvFilter {
    let spec = if spec.trim().is_empty() { "info" } else { spec };
    EnvFilter::try_new(with_boringtun_quiet(spec)).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// `spec` plus `,boringtun=off` unless its default level is debug or trace or a directive
/// names boringtun.
fn with_boringtun_quiet(spec: &str) -> String {
    let directives: Vec<&str> = spec.split(',').map(str::trim).collect();
    let names_boringtun = directives.iter().any(|d| d.starts_with("boringtun"));
    let verbose_default = directives.iter().any(|d| {
        !d.contains('=')
            && !d.contains("::")
            && matches!(d.to_ascii_lowercase().as_str(), "debug" | "trace")
    });
    if names_boringtun || verbose_default {
        spec.to_owned()
    } else {
        format!("{spec},boringtun=off")
    }
}

#[cfg(test)]
mod tests {
    use super::with_boringtun_quiet;

    #[test]
    fn boringtun_is_quiet_unless_asked_for() {
        assert_eq!(with_boringtun_quiet("info"), "info,boringtun=off");
        assert_eq!(
            with_boringtun_quiet("warn,wgagent::wg=debug"),
            "warn,wgagent::wg=debug,boringtun=off"
        );
        assert_eq!(with_boringtun_quiet("debug"), "debug");
        assert_eq!(with_boringtun_quiet("TRACE"), "TRACE");
        assert_eq!(
            with_boringtun_quiet("info,boringtun=warn"),
            "info,boringtun=warn"
        );
    }
}
