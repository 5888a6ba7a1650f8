//! The daemon's log: `tracing` to standard error, filtered by `log_level` (or
//! `BALLAST_LOG`, which then wins across reloads too), the filter changeable live.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The live log filter: what a reload may change.
pub(super) struct LogFilter {
    handle: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    /// BALLAST_LOG is set: `log_level` changes are logged, not applied.
    from_env: bool,
}

impl LogFilter {
    /// Installs the process's subscriber with `log_level`, unless BALLAST_LOG is set.
    pub(super) fn init(log_level: &str) -> Self {
        let env_filter = std::env::var("BALLAST_LOG")
            .ok()
            .filter(|value| !value.trim().is_empty());
        let filter = EnvFilter::try_new(env_filter.as_deref().unwrap_or(log_level))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
        Self {
            handle,
            from_env: env_filter.is_some(),
        }
    }

    /// A reloaded `log_level` (already validated with the whole file).
    pub(super) fn set_level(&self, log_level: &str) {
        if self.from_env {
            tracing::warn!("log_level changed, but BALLAST_LOG is set and overrides it.");
        } else if let Err(error) = EnvFilter::try_new(log_level)
            .map_err(|error| error.to_string())
            .and_then(|filter| {
                self.handle
                    .reload(filter)
                    .map_err(|error| error.to_string())
            })
        {
            tracing::error!(%error, "Failed to change the log filter.");
        }
    }
}
