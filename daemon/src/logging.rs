//! Logging: `tracing` to stderr (the journal under systemd), filtered by `RUST_LOG`.

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset or
/// invalid, e.g. `"info"` or `"info,openraft=warn"`. A second call is ignored.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
