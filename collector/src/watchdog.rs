//! The systemd watchdog (`WatchdogSec=` in the unit, `$WATCHDOG_USEC` here): a task
//! on the serving runtime sends `WATCHDOG=1` at half that interval, each time only
//! after the store answered a ping (an empty write transaction: on SQLite it goes
//! through the one writer thread, on PostgreSQL through the pool). A hung runtime or
//! a store that stopped answering stops the pings, and systemd restarts the
//! collector. Off (no task) when systemd set no watchdog.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::storage::Store;

/// Starts the pinging task when systemd asked for a watchdog.
pub fn spawn(store: Arc<dyn Store>) -> Option<JoinHandle<()>> {
    let timeout = sd_notify::watchdog_enabled()?;
    let every = timeout / 2;
    tracing::info!(
        every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
        "systemd watchdog on."
    );
    Some(tokio::spawn(run(store, every)))
}

async fn run(store: Arc<dyn Store>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match tokio::time::timeout(every, store.execute_all(Vec::new())).await {
            Ok(Ok(_)) => {
                ballast_daemon::systemd::notify(&[ballast_daemon::systemd::NotifyState::Watchdog])
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "The store did not answer the watchdog ping.");
            }
            Err(_) => tracing::warn!(
                waited_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
                "The store did not answer the watchdog ping in time."
            ),
        }
    }
}
