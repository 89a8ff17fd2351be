//! Logging: `tracing` to stderr (the journal under systemd), filtered by `RUST_LOG`. Colour
//! escapes only when stderr is a terminal and `NO_COLOR` is unset: the journal and log
//! files get plain text.

use std::io::IsTerminal;

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset or
/// invalid, e.g. `"info"` or `"info,openraft=warn"`. A second call is ignored.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .try_init();
}

/// Whether log lines carry colour escapes: on a terminal, unless `NO_COLOR` is set to
/// anything but the empty string (no-color.org).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
