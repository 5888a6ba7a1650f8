//! Deletes expired rows in bounded batches: rollups (with their virtio-mem devices),
//! small events, pressure episodes (by their last phase), guard actions and virtio-mem
//! resize events after `retention.rollup_days`, OOM events after `retention.oom_days`;
//! then compacts minute rollups (and their devices) older than
//! `retention.minute_rollup_hours` into hourly rollups ([`crate::storage::tiers`],
//! [`crate::storage::virtio_mem`]), so a fleet's store holds 30 days of hours, not of
//! minutes.
//!
//! Each batch is one short statement or transaction (on SQLite a separate job on
//! the writer thread, between ingest groups), followed by a pause, so ingest never
//! waits behind a long delete or compaction.

use std::sync::Arc;
use std::time::Duration;

use crate::storage::queries::{delete_expired, Expiring};
use crate::storage::{tiers, virtio_mem, Store, StoreError};

/// `retention:` as checked at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    pub rollups: Duration,
    /// Minute rollups older than this are compacted into hourly rollups.
    pub minute_rollups: Duration,
    pub ooms: Duration,
    pub interval: Duration,
    pub batch_rows: u32,
}

use crate::metrics::Deleted;

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
        (Expiring::Episodes, cutoff(settings.rollups)),
        (Expiring::Guard, cutoff(settings.rollups)),
        (Expiring::VirtioMemRollups, cutoff(settings.rollups)),
        (Expiring::MemoryDevices, cutoff(settings.rollups)),
        (Expiring::Ooms, cutoff(settings.ooms)),
    ] {
        loop {
            let n = delete_expired(store, what, before, settings.batch_rows).await?;
            match what {
                Expiring::Rollups | Expiring::VirtioMemRollups => deleted.rollups += n,
                // An episode is a small event folded into one row; an action is
                // a small event's row.
                Expiring::Events
                | Expiring::Episodes
                | Expiring::Guard
                | Expiring::MemoryDevices => deleted.events += n,
                Expiring::Ooms => deleted.ooms += n,
            }
            if n < u64::from(settings.batch_rows) {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    deleted.compacted = compact(store, settings, now_ms).await?;
    Ok(deleted)
}

/// Folds minute rollups that started before the hour boundary `minute_rollups`
/// ago into hourly rollups, `batch_rows` minute rows per transaction.
async fn compact(
    store: &dyn Store,
    settings: &RetentionSettings,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let keep_ms = i64::try_from(settings.minute_rollups.as_millis()).unwrap_or(i64::MAX);
    let before = tiers::hour_start(now_ms.saturating_sub(keep_ms));
    let mut compacted = 0;
    // The rollups, then their virtio-mem devices (`storage::virtio_mem`), each in
    // batches of `batch_rows` minute rows.
    for batch in [tiers::compact_batch, virtio_mem::compact_devices_batch] {
        loop {
            let affected = store
                .execute_all(batch(before, settings.batch_rows))
                .await?;
            let n = affected.last().copied().unwrap_or(0);
            compacted += n;
            if n < u64::from(settings.batch_rows) {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    Ok(compacted)
}

/// Runs a pass now and then every `settings.interval`, until the task is aborted.
pub fn spawn(store: Arc<dyn Store>, settings: RetentionSettings) -> tokio::task::JoinHandle<()> {
    spawn_observed(store, settings, None)
}

/// [`spawn`], recording each pass in `metrics`.
pub fn spawn_observed(
    store: Arc<dyn Store>,
    settings: RetentionSettings,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(settings.interval);
        loop {
            ticker.tick().await;
            let started = std::time::Instant::now();
            let result = run_pass(store.as_ref(), &settings, crate::now_ms()).await;
            if let Some(metrics) = &metrics {
                metrics.retention_pass(started.elapsed(), result.as_ref().ok().copied());
            }
            match result {
                Ok(deleted) => tracing::debug!(?deleted, "Retention pass done."),
                Err(error) => tracing::warn!(error = %error, "Retention pass failed."),
            }
        }
    })
}
