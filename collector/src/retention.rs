//! Deletes expired rows in bounded batches: rollups and small events after
//! `retention.rollup_days`, OOM events after `retention.oom_days`.
//!
//! Each batch is one short statement (on SQLite a separate job on the writer
//! thread, between ingest groups), followed by a pause, so ingest never waits
//! behind a long delete.

use std::sync::Arc;
use std::time::Duration;

use crate::config::RetentionSettings;
use crate::storage::queries::{delete_expired, Expiring};
use crate::storage::{Store, StoreError};

/// Rows deleted by one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub rollups: u64,
    pub events: u64,
    pub ooms: u64,
}

/// Pause between two delete batches.
const PAUSE: Duration = Duration::from_millis(20);

/// One retention pass at `now_ms`.
pub async fn run_pass(
    store: &dyn Store,
    settings: &RetentionSettings,
    now_ms: i64,
) -> Result<Deleted, StoreError> {
    let cutoff =
        |keep: Duration| now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    let mut deleted = Deleted::default();
    for (what, before) in [
        (Expiring::Rollups, cutoff(settings.rollups)),
        (Expiring::Events, cutoff(settings.rollups)),
        (Expiring::Ooms, cutoff(settings.ooms)),
    ] {
        loop {
            let n = delete_expired(store, what, before, settings.batch_rows).await?;
            match what {
                Expiring::Rollups => deleted.rollups += n,
                Expiring::Events => deleted.events += n,
                Expiring::Ooms => deleted.ooms += n,
            }
            if n < u64::from(settings.batch_rows) {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    Ok(deleted)
}

/// Runs a pass now and then every `settings.interval`, until the task is aborted.
pub fn spawn(store: Arc<dyn Store>, settings: RetentionSettings) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(settings.interval);
        loop {
            ticker.tick().await;
            match run_pass(store.as_ref(), &settings, crate::now_ms()).await {
                Ok(deleted) => tracing::debug!(?deleted, "Retention pass done."),
                Err(error) => tracing::warn!(error = %error, "Retention pass failed."),
            }
        }
    })
}
