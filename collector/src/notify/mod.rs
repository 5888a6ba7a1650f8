//! Webhook notifications of new OOMs (the `notify:` configuration section).
//!
//! 1. At ingest, [`filter::targets`] picks the webhooks whose filter a new OOM
//!    matches; the store writes one `notify_outbox` row per (OOM, webhook) in the
//!    transaction that stores the OOM, only when the OOM is new (a re-sent key
//!    queues nothing). A notification exists exactly when its OOM does.
//! 2. [`spawn`] starts one [`sender::Sender`] task per webhook: it claims due rows
//!    with a lease (safe with several collectors on one PostgreSQL), posts the body
//!    ([`message`]: `json`, `slack`, `mattermost`), retries with jittered exponential
//!    backoff, rate-limits with a summary of what it held back, and marks the rows.
//!    The rate limit is counted in the store ([`outbox`]), so collectors sharing one
//!    PostgreSQL share each webhook's limit.
//!    Pending rows survive restarts and receiver outages: they are in the database.
//! 3. A cleanup task deletes finished rows (and the message log the rate limit reads)
//!    after `notify.keep_days`.
//!
//! Counters ([`NotifyStats`]) are per process; [`outbox::counts`] gives the rows per
//! webhook and state (pending included) from the database.

pub mod config;
pub mod filter;
pub mod message;
pub mod rate;
pub mod sender;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

pub use config::{NotifyConfig, NotifyConfigError, NotifySettings, WebhookFormat, WebhookSettings};
pub use filter::{targets, Filter, Route};
pub use stats::NotifyStats;

/// The outbox's store side (kept under its old path for callers).
use crate::storage::outbox;

use crate::storage::Store;

/// How often finished rows are cleaned up ...
const CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);
/// ... in deletes of at most this many rows.
const CLEANUP_BATCH_ROWS: u32 = 5000;

/// The running senders; dropping it (or [`Notifier::abort`]) stops them.
///
/// A sender stopped in the middle of a pass would leave its claimed rows leased
/// until the lease expires (up to `timeout_secs` per row + 30 s), delaying them for
/// the next collector: stopping therefore gives the leases back too, awaited by
/// [`Notifier::shutdown`], in the background by `abort` and `Drop` (not at all when
/// the process dies: then the leases expire).
#[derive(Debug)]
pub struct Notifier {
    pub stats: Arc<NotifyStats>,
    store: Arc<dyn Store>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    lease_prefixes: Vec<String>,
}

impl Notifier {
    /// Stops the senders; their leases are given back by a background task.
    pub fn abort(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let prefixes = std::mem::take(&mut self.lease_prefixes);
        if prefixes.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            runtime.spawn(async move { release(store.as_ref(), &prefixes).await });
        }
    }

    /// Stops the senders and gives their leases back before returning.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        let prefixes = std::mem::take(&mut self.lease_prefixes);
        release(self.store.as_ref(), &prefixes).await;
    }
}

async fn release(store: &dyn Store, prefixes: &[String]) {
    for prefix in prefixes {
        if let Err(error) = outbox::release_prefix(store, prefix).await {
            tracing::warn!(%error, "Failed to give back notification leases; they expire.");
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The webhook names and filters the ingest handler applies.
pub fn routes(settings: &NotifySettings) -> Vec<Route> {
    settings
        .webhooks
        .iter()
        .map(|hook| Route {
            webhook: hook.name.clone(),
            filter: hook.filter.clone(),
        })
        .collect()
}

/// Starts a sender per webhook and the cleanup task (none without webhooks).
pub fn spawn(store: Arc<dyn Store>, settings: &NotifySettings) -> Notifier {
    spawn_with_stats(store, settings, Arc::new(NotifyStats::default()))
}

/// [`spawn`], counting into `stats` (the collector's metrics keep them across reloads).
pub fn spawn_with_stats(
    store: Arc<dyn Store>,
    settings: &NotifySettings,
    stats: Arc<NotifyStats>,
) -> Notifier {
    let mut tasks = Vec::new();
    let mut lease_prefixes = Vec::new();
    for hook in &settings.webhooks {
        let name = hook.name.clone();
        let instance = fastrand::u64(..);
        match sender::Sender::new(
            Arc::clone(&store),
            hook.clone(),
            settings.public_url.clone(),
            Arc::clone(&stats),
            instance,
        ) {
            Ok(sender) => {
                lease_prefixes.push(sender::lease_prefix(instance));
                tasks.push(tokio::spawn(sender.run(settings.poll_interval)));
            }
            Err(error) => {
                tracing::error!(webhook = %name, %error, "Failed to set up the webhook's HTTP client; it gets no notifications.");
            }
        }
    }
    if !settings.webhooks.is_empty() {
        let store = Arc::clone(&store);
        let keep_ms = i64::try_from(settings.keep.as_millis()).unwrap_or(i64::MAX);
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CLEANUP_INTERVAL);
            loop {
                ticker.tick().await;
                let before = crate::now_ms().saturating_sub(keep_ms);
                loop {
                    match outbox::delete_finished(store.as_ref(), before, CLEANUP_BATCH_ROWS).await
                    {
                        Ok(n) if n >= u64::from(CLEANUP_BATCH_ROWS) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(_) => break,
                        Err(error) => {
                            tracing::warn!(%error, "Notification outbox cleanup failed.");
                            break;
                        }
                    }
                }
                // keep_days (>= 1 day) is longer than any rate-limit window (<= 1 day).
                loop {
                    match outbox::delete_messages(store.as_ref(), before, CLEANUP_BATCH_ROWS).await
                    {
                        Ok(n) if n >= u64::from(CLEANUP_BATCH_ROWS) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(_) => break,
                        Err(error) => {
                            tracing::warn!(%error, "Notification message log cleanup failed.");
                            break;
                        }
                    }
                }
            }
        }));
        tracing::info!(
            webhooks = settings.webhooks.len(),
            "Webhook notifications on."
        );
    }
    Notifier {
        stats,
        store,
        tasks,
        lease_prefixes,
    }
}
