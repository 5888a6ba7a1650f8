//! The daemon's log: `tracing` to standard error, filtered by `log_level` (or
//! `BALLAST_LOG`, which then wins across reloads too), the filter changeable live.

use ballast_daemon::logging::{self, FilterHandle};
use tracing_subscriber::EnvFilter;

/// The live log filter: what a reload may change.
pub(super) struct LogFilter {
    handle: FilterHandle,
    /// BALLAST_LOG is set: `log_level` changes are logged, not applied.
    from_env: bool,
}

impl LogFilter {
    /// Installs the process's subscriber with `log_level`, unless BALLAST_LOG is set.
    pub(super) fn init(log_level: &str) -> Self {
        let from_env = logging::env_filter("BALLAST_LOG");
        let handle = logging::init(logging::filter_or(from_env.as_deref(), log_level));
        Self {
            handle,
            from_env: from_env.is_some(),
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
