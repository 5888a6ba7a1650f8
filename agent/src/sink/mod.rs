//! The sender: takes batches from the [`spool`](crate::spool) and delivers them to the
//! collector. What it is not: a buffer (the spool is) or a retry queue of its own.
//!
//! Protocol, per batch:
//! 1. At start-up (and after a reload changed `collector.url`), `GET
//!    <url>/api/v1/health` once: an unreachable collector, a refused token, or a 404
//!    (a wrong `collector.url`, logged as a configuration error) is logged; the agent
//!    runs on either way (events wait in the spool).
//! 2. [`Spool::next_batch`](crate::spool::Spool::next_batch) (OOM events and near misses
//!    first); when it is empty, wait for a push or [`SinkConfig::idle_poll`].
//! 3. `POST <url>/api/v1/ingest`, body: a JSON [`ballast_model::Batch`], gzip-compressed
//!    (`Content-Encoding: gzip`), `Authorization: Bearer <token_file contents>`.
//! 4. The answer is classified (`classify`):
//!    - 2xx with an [`ballast_model::IngestResponse`]: acknowledge in the spool.
//!    - 422 whose `ErrorBody.field` names `events[N]...`: the collector says that one
//!      event is invalid. A batch of several is cut before it; alone, it goes to the
//!      dead-letter file (counted, replayable with `ballast-agent spool
//!      replay-dead-letters`), so one bad event never blocks the queue.
//!    - Anything else (404/405 from a wrong URL, 400, an HTML page, a 2xx that is not
//!      the collector's, 401/403, 408/429, 5xx, TLS and connection errors): the spool
//!      is **held**, the same batch is retried after a jittered exponential backoff
//!      capped at [`SinkConfig::backoff_max`] (`Retry-After` when given). Loudly: an
//!      error log naming URL, status and reason (at most once a minute while it
//!      lasts), `ballast_agent_delivery_refusals_total{reason}` and
//!      `ballast_agent_delivery_held_seconds` on `/metrics`, and `delivery.json` for
//!      `ballast-agent status`. 413 (and 422 on `events`) first halve the batch.
//!
//! Duplicates are fine: a batch is acknowledged only after the collector's answer, so a
//! crash in between resends it and the collector dedupes by key.

mod backoff;
mod classify;
mod client;
mod config;
mod events;
mod outcome;
mod state;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_model::Batch;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

pub use self::backoff::Backoff;
pub use self::client::{ClientBuildError, CollectorClient, Reachability};
pub use self::config::SinkConfig;
pub use self::events::{BatchSent, CollectorSendError, SinkStats};
pub use self::outcome::{Held, Refusal, SendOutcome, SendStage};
pub use self::state::{DeliveryState, HeldState};
use crate::spool::{replay, PendingBatch, Spool, SpoolError, SpoolHandle};

/// The sender stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Client(#[from] ClientBuildError),
}

/// Runs the sender until `shutdown` resolves. A batch in flight at shutdown stays in
/// the spool and is sent again next time.
pub async fn run(
    config: SinkConfig,
    spool: SpoolHandle,
    stats: Arc<SinkStats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SinkError> {
    // The sender half lives as long as this call: no update ever comes.
    let (_updates_sender, updates) = watch::channel(config);
    run_reloadable(updates, spool, stats, shutdown).await
}

/// [`run`], taking a new [`SinkConfig`] (a SIGHUP that changed `collector.url` or
/// `collector.token_file`) from `updates` between two sends and during a backoff.
pub async fn run_reloadable(
    mut updates: watch::Receiver<SinkConfig>,
    spool: SpoolHandle,
    stats: Arc<SinkStats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SinkError> {
    let mut config = updates.borrow_and_update().clone();
    let mut client = CollectorClient::new(&config)?;
    tokio::pin!(shutdown);
    let mut held = HoldTracker::new(&config);
    held.write_state(&stats, true).await;
    tokio::select! {
        reachability = client.check_health() => log_reachability(&config.url, &reachability),
        () = &mut shutdown => return Ok(()),
    }
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut limits = config.batch;
    let inbox = replay::inbox_dir(&spool.lock().config().dir);
    loop {
        // (`changed()` below marks a new value seen: compare, do not ask `has_changed`.)
        if *updates.borrow() != config {
            let new = updates.borrow_and_update().clone();
            match CollectorClient::new(&new) {
                Ok(new_client) => {
                    info!(old = %config.url, url = %new.url, "Collector settings reloaded; delivering with the new ones.");
                    client = new_client;
                    config = new;
                    held.url.clone_from(&config.url);
                    backoff.reset();
                    limits = config.batch;
                    tokio::select! {
                        reachability = client.check_health() => log_reachability(&config.url, &reachability),
                        () = &mut shutdown => return Ok(()),
                    }
                }
                Err(error) => {
                    error!(url = %new.url, error = %ballast_daemon::error_chain(&error), "Reloaded collector settings unusable; the running ones stay.");
                }
            }
        }
        if inbox.exists() {
            // `ballast-agent spool replay-dead-letters` left events to send again.
            if let Err(error) = with_spool(&spool, replay::import_inbox).await {
                spool_error(&stats, &error, 0, 1, Duration::ZERO);
            }
        }
        if spool.held_count() > 0 {
            // OOM events a full spool disk refused: store them once there is room.
            let handle = spool.clone();
            let _ = tokio::task::spawn_blocking(move || handle.flush_held()).await;
        }
        let fetched = with_spool(&spool, move |spool| spool.next_batch(limits)).await;
        let pending = match fetched {
            Ok(pending) => pending,
            Err(error) => {
                let delay = backoff.next_delay();
                spool_error(&stats, &error, 0, backoff.attempts(), delay);
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        if pending.is_empty() {
            held.write_state(&stats, false).await;
            tokio::select! {
                () = spool.pushed() => {}
                () = tokio::time::sleep(config.idle_poll) => {}
                () = &mut shutdown => return Ok(()),
            }
            continue;
        }
        if pending.events.is_empty() {
            // Only undecodable records (already dead-lettered by the spool).
            acknowledge(&spool, &stats, pending, None).await;
            continue;
        }
        let batch = Batch {
            schema_version: Batch::schema_version_for(&pending.events),
            host_id: config.host_id.clone(),
            agent_version: config.agent_version.clone(),
            events: pending.events.clone(),
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = client.send(&batch) => outcome,
            () = &mut shutdown => return Ok(()),
        };
        let n_events = batch.events.len();
        match outcome {
            SendOutcome::Accepted {
                response,
                body_bytes,
            } => {
                BatchSent {
                    events: n_events,
                    body_bytes,
                    accepted: response.accepted,
                    duplicates: response.duplicates,
                    elapsed: started.elapsed(),
                }
                .emit(&stats, now_ms());
                acknowledge(&spool, &stats, pending, None).await;
                held.resumed(&stats).await;
                backoff.reset();
                limits.max_events = (limits.max_events * 2).min(config.batch.max_events);
            }
            SendOutcome::Hold(refusal) => {
                if refusal.shrink && n_events > 1 {
                    // Too large for the collector or a proxy: try smaller batches first.
                    limits.max_events = n_events / 2;
                    CollectorSendError {
                        stage: refusal.stage,
                        error: &refusal.error,
                        status: refusal.status,
                        events: n_events,
                        attempt: 1,
                        retry_in: Some(Duration::ZERO),
                    }
                    .emit(&stats);
                    continue;
                }
                let delay = match refusal.retry_after {
                    Some(wait) => wait.min(config.retry_after_max),
                    None => backoff.next_delay(),
                };
                stats.refused(refusal.reason, now_ms());
                CollectorSendError {
                    stage: refusal.stage,
                    error: &refusal.error,
                    status: refusal.status,
                    events: n_events,
                    attempt: backoff.attempts().max(1),
                    retry_in: Some(delay),
                }
                .emit(&stats);
                held.refused(&refusal, client.ingest_url(), &stats).await;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    // A reload fixing collector.url takes effect at once.
                    Ok(()) = updates.changed() => {}
                    () = &mut shutdown => return Ok(()),
                }
            }
            SendOutcome::InvalidEvent { index, error } if n_events > 1 => {
                // Send the events before the blamed one, then the blamed one alone.
                limits.max_events = index.max(1);
                CollectorSendError {
                    stage: SendStage::Status,
                    error: &error,
                    status: Some(422),
                    events: n_events,
                    attempt: 1,
                    retry_in: Some(Duration::ZERO),
                }
                .emit(&stats);
            }
            SendOutcome::Unencodable { error } if n_events > 1 => {
                limits.max_events = n_events / 2;
                CollectorSendError {
                    stage: SendStage::Encode,
                    error: &error,
                    status: None,
                    events: n_events,
                    attempt: 1,
                    retry_in: Some(Duration::ZERO),
                }
                .emit(&stats);
            }
            SendOutcome::InvalidEvent { error, .. } => {
                let reason = format!("HTTP 422: {error}");
                set_aside(
                    &spool,
                    &stats,
                    pending,
                    SendStage::Status,
                    Some(422),
                    reason,
                )
                .await;
                limits = config.batch;
            }
            SendOutcome::Unencodable { error } => {
                set_aside(&spool, &stats, pending, SendStage::Encode, None, error).await;
                limits = config.batch;
            }
        }
    }
}

/// Moves the one event of `pending` to the dead-letter file: the collector named it
/// invalid (422), or it cannot be encoded at all.
async fn set_aside(
    spool: &SpoolHandle,
    stats: &SinkStats,
    pending: PendingBatch,
    stage: SendStage,
    status: Option<u16>,
    reason: String,
) {
    let key = pending
        .events
        .first()
        .map_or_else(String::new, |event| event.key.clone());
    warn!(key, status, error = %reason, "Event refused as invalid; moving it to the dead-letter file (ballast-agent spool replay-dead-letters sends it again).");
    CollectorSendError {
        stage,
        error: &reason,
        status,
        events: pending.events.len(),
        attempt: 1,
        retry_in: None,
    }
    .emit(stats);
    acknowledge(spool, stats, pending, Some(reason)).await;
    stats
        .dead_lettered_batches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Delivery held: the loud log (error at the first refusal, when the reason changes,
/// and at most once a minute while it lasts), and `delivery.json` for `status`.
struct HoldTracker {
    url: String,
    state_file: Option<PathBuf>,
    since: Option<(Instant, i64)>,
    attempts: u32,
    last_reason: Option<(Refusal, Option<u16>)>,
    last_log: Option<Instant>,
    last_write: Option<Instant>,
    state: DeliveryState,
}

/// How often the held-delivery error repeats while it lasts.
const HELD_LOG_EVERY: Duration = Duration::from_secs(60);
/// How often `delivery.json` is rewritten while nothing changes.
const STATE_WRITE_EVERY: Duration = Duration::from_secs(5);

impl HoldTracker {
    fn new(config: &SinkConfig) -> Self {
        Self {
            url: config.url.clone(),
            state_file: config.state_file.clone(),
            since: None,
            attempts: 0,
            last_reason: None,
            last_log: None,
            last_write: None,
            state: DeliveryState::default(),
        }
    }

    async fn refused(&mut self, refusal: &Held, target: &str, stats: &SinkStats) {
        let now = Instant::now();
        let (since, since_ms) = *self.since.get_or_insert((now, now_ms()));
        self.attempts = self.attempts.saturating_add(1);
        let key = (refusal.reason, refusal.status);
        let changed = self.last_reason != Some(key);
        let due = self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= HELD_LOG_EVERY);
        if changed || due {
            error!(
                url = target,
                status = refusal.status,
                reason = refusal.reason.name(),
                error = %refusal.error,
                held_secs = now.duration_since(since).as_secs(),
                attempts = self.attempts,
                hint = refusal.reason.hint(),
                "Delivery to the collector is held: it refused or did not answer; every event stays in the spool and is retried."
            );
            self.last_log = Some(now);
        }
        self.last_reason = Some(key);
        self.state.held = Some(HeldState {
            since_epoch_secs: epoch_secs(since_ms),
            reason: refusal.reason.name().to_string(),
            status: refusal.status,
            error: refusal.error.chars().take(500).collect(),
            hint: refusal.reason.hint().to_string(),
            attempts: self.attempts,
        });
        self.write_state(stats, changed).await;
    }

    async fn resumed(&mut self, stats: &SinkStats) {
        if let Some((since, _)) = self.since.take() {
            info!(
                url = %self.url,
                held_secs = since.elapsed().as_secs(),
                attempts = self.attempts,
                "Delivery to the collector resumed."
            );
            self.attempts = 0;
            self.last_reason = None;
            self.last_log = None;
            self.state.held = None;
            self.write_state(stats, true).await;
        } else {
            self.write_state(stats, false).await;
        }
    }

    /// Writes `delivery.json` now (`force`) or when the last write is old enough.
    async fn write_state(&mut self, stats: &SinkStats, force: bool) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        let now = Instant::now();
        if !force
            && self
                .last_write
                .is_some_and(|at| now.duration_since(at) < STATE_WRITE_EVERY)
        {
            return;
        }
        self.last_write = Some(now);
        self.state.url.clone_from(&self.url);
        self.state.updated_at_epoch_secs = epoch_secs(now_ms());
        let last = stats
            .last_success_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        self.state.last_success_epoch_secs = (last > 0).then(|| epoch_secs(last));
        let state = self.state.clone();
        let written = tokio::task::spawn_blocking(move || state.write(&path)).await;
        if let Ok(Err(error)) = written {
            debug!(%error, "Failed to write the delivery state file.");
        }
    }
}

fn epoch_secs(ms: i64) -> u64 {
    u64::try_from(ms / 1000).unwrap_or(0)
}

/// Acknowledges (or dead-letters, with a reason) a batch; errors are logged, never
/// retried: the acknowledgement holds in memory and a crash only causes a resend.
async fn acknowledge(
    spool: &SpoolHandle,
    stats: &SinkStats,
    pending: PendingBatch,
    dead_letter_reason: Option<String>,
) {
    let n_events = pending.events.len();
    let result = with_spool(spool, move |spool| {
        match dead_letter_reason {
            Some(reason) => spool.dead_letter(&pending, &reason)?,
            None => spool.ack(&pending)?,
        }
        Ok(spool.stats().counters.dead_lettered)
    })
    .await;
    match result {
        Ok(dead_lettered) => stats
            .dead_letters
            .store(dead_lettered, std::sync::atomic::Ordering::Relaxed),
        Err(error) => spool_error(stats, &error, n_events, 1, Duration::ZERO),
    }
}

fn spool_error(
    stats: &SinkStats,
    error: &SpoolError,
    events: usize,
    attempt: u32,
    delay: Duration,
) {
    let text = ballast_daemon::error_chain(error);
    CollectorSendError {
        stage: SendStage::Spool,
        error: &text,
        status: None,
        events,
        attempt,
        retry_in: Some(delay),
    }
    .emit(stats);
}

/// Runs a spool call on a blocking thread (spool calls fsync).
async fn with_spool<T: Send + 'static>(
    spool: &SpoolHandle,
    call: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    let spool = spool.clone();
    match tokio::task::spawn_blocking(move || call(&mut spool.lock())).await {
        Ok(result) => result,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

/// `true` when shutdown came first.
async fn sleep_or_shutdown(
    delay: Duration,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = shutdown.as_mut() => true,
    }
}

fn log_reachability(url: &str, reachability: &Reachability) {
    match reachability {
        Reachability::Healthy => {
            info!(url, "Collector reachable.");
        }
        Reachability::WrongUrl => error!(
            url,
            status = 404,
            "Configuration error: collector.url is wrong, {}/api/v1/health answered 404 Not Found (a wrong path prefix or port?). Events stay in the spool and are retried; fix collector.url and reload (systemctl reload ballast-agent).",
            url.trim_end_matches('/')
        ),
        Reachability::TokenRefused { status } => warn!(
            url,
            status,
            "Collector refused this host's token; events stay in the spool until it is fixed."
        ),
        Reachability::Unexpected { status } => warn!(
            url,
            status, "Collector health check answered unexpectedly; sending anyway."
        ),
        Reachability::Unreachable { error } if error.contains("certificate") => warn!(
            url,
            %error,
            "Collector's TLS certificate not trusted (a private CA goes in collector.ca_file); events stay in the spool."
        ),
        Reachability::Unreachable { error } => warn!(
            url,
            %error,
            "Collector unreachable; events stay in the spool and are sent when it is back."
        ),
    }
}

fn now_ms() -> i64 {
    crate::wire::epoch_ms(std::time::SystemTime::now())
}
