//! The state the monitor shares with the metrics exporter and the daemon.

use std::sync::Arc;

use crate::config::Settings;
use crate::fleet::Fleet;
use crate::metrics::AgentCounters;
use crate::shared::SharedLock;

/// Shared with the metrics exporter and the caller.
///
/// Lock rule ([`crate::shared`]): a thread holds at most one of `fleet` and
/// `counters` at a time; copy out under one lock, release, then take the next.
#[derive(Debug, Clone)]
pub struct Handles {
    pub fleet: SharedLock<Fleet>,
    pub counters: SharedLock<AgentCounters>,
    /// Notified once the first poll is done (systemd readiness).
    pub first_poll: Arc<tokio::sync::Notify>,
}

impl Handles {
    pub fn new(settings: &Settings) -> Self {
        Self {
            fleet: SharedLock::new("fleet", Fleet::new(settings.history_samples)),
            counters: SharedLock::new("counters", AgentCounters::default()),
            first_poll: Arc::new(tokio::sync::Notify::new()),
        }
    }
}
