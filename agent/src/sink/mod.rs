//! The sender: takes batches from the [`spool`](crate::spool) and delivers them to the
//! collector. What it is not: a buffer (the spool is) or a retry queue of its own.
//!
//! Protocol, per batch:
//! 1. At start-up, `GET <url>/api/v1/health` once: a warning names an unreachable
//!    collector or a refused token; the agent runs on either way (events wait in the spool).
//! 2. [`Spool::next_batch`](crate::spool::Spool::next_batch) (OOM events and near misses
//!    first); when it is empty, wait for a push or [`SinkConfig::idle_poll`].
//! 3. `POST <url>/api/v1/ingest`, body: a JSON [`ballast_model::Batch`], gzip-compressed
//!    (`Content-Encoding: gzip`), `Authorization: Bearer <token_file contents>`.
//! 4. 2xx ([`ballast_model::IngestResponse`]): acknowledge in the spool (`BatchSent`).
//!    5xx, 408, timeouts, connection errors, 401/403: retry the same batch after a
//!    jittered exponential backoff capped at [`SinkConfig::backoff_max`]; 429 and 503
//!    wait for `Retry-After` when given (`CollectorSendError{stage}`).
//!    Any other 4xx: the batch is refused; a batch of several events is cut before the
//!    event the collector blamed (`ErrorBody.field` = `events[N]...`), or else split in
//!    halves, until the refused event is alone; it goes to the dead-letter file, so one
//!    bad event never blocks the queue.
//!
//! Duplicates are fine: a batch is acknowledged only after the collector's answer, so a
//! crash in between resends it and the collector dedupes by key.

mod backoff;
mod client;
mod events;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ballast_model::{Batch, SCHEMA_VERSION};
use tracing::{info, warn};

pub use self::backoff::Backoff;
pub use self::client::{ClientBuildError, CollectorClient, Reachability, SendOutcome};
pub use self::events::{BatchSent, CollectorSendError, SendStage, SinkStats};
use crate::collector_tls::CaBundle;
use crate::config::Settings;
use crate::spool::{BatchLimits, PendingBatch, Spool, SpoolError, SpoolHandle};

/// How the sender talks to the collector.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// The collector's base URL, e.g. `https://collector.example:8470`.
    pub url: String,
    pub token_file: PathBuf,
    /// `collector.ca_file`: the only CA trusted for the collector (else web PKI roots).
    pub ca: Option<CaBundle>,
    pub host_id: String,
    pub agent_version: String,
    pub batch: BatchLimits,
    /// Whole request, including the answer.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_max: Duration,
    /// Look at the spool at least this often even without a push (other processes may
    /// have left events there).
    pub idle_poll: Duration,
}

impl SinkConfig {
    /// Defaults for a collector URL.
    pub fn new(url: &str, token_file: PathBuf, host_id: &str) -> Self {
        Self {
            url: url.to_string(),
            token_file,
            ca: None,
            host_id: host_id.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            batch: BatchLimits::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(600),
            idle_poll: Duration::from_secs(5),
        }
    }

    /// `None` when no collector is configured (events stay in the spool).
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let url = settings.collector.url.trim();
        (!url.is_empty()).then(|| {
            let mut config = Self::new(
                url,
                settings.collector.token_file.clone(),
                &settings.host_id,
            );
            config.ca.clone_from(&settings.collector_ca);
            config
        })
    }
}

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
    let mut client = CollectorClient::new(&config)?;
    tokio::pin!(shutdown);
    tokio::select! {
        reachability = client.check_health() => log_reachability(&config.url, &reachability),
        () = &mut shutdown => return Ok(()),
    }
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut limits = config.batch;
    loop {
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
            schema_version: SCHEMA_VERSION,
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
                if response.is_none() {
                    CollectorSendError {
                        stage: SendStage::Decode,
                        error: "2xx answer is not an IngestResponse; taking it as stored",
                        status: None,
                        events: n_events,
                        attempt: 0,
                        retry_in: None,
                    }
                    .emit(&stats);
                }
                let (accepted, duplicates) =
                    response.map_or((0, 0), |response| (response.accepted, response.duplicates));
                BatchSent {
                    events: n_events,
                    body_bytes,
                    accepted,
                    duplicates,
                    elapsed: started.elapsed(),
                }
                .emit(&stats, now_ms());
                acknowledge(&spool, &stats, pending, None).await;
                backoff.reset();
                limits.max_events = (limits.max_events * 2).min(config.batch.max_events);
            }
            SendOutcome::Retry {
                stage,
                status,
                error,
                retry_after,
            } => {
                let delay = match retry_after {
                    Some(wait) => wait.min(config.retry_after_max),
                    None => backoff.next_delay(),
                };
                CollectorSendError {
                    stage,
                    error: &error,
                    status,
                    events: n_events,
                    attempt: backoff.attempts().max(1),
                    retry_in: Some(delay),
                }
                .emit(&stats);
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return Ok(());
                }
            }
            SendOutcome::Refused {
                status,
                error,
                event_index,
            } => {
                let status_code = (status != 0).then_some(status);
                if n_events > 1 {
                    // Send the events before the blamed one, then the blamed one alone;
                    // without a hint, halve the batch until the refused event is alone.
                    limits.max_events = match event_index {
                        Some(index) if index < n_events => index.max(1),
                        _ => n_events / 2,
                    };
                    CollectorSendError {
                        stage: SendStage::Status,
                        error: &error,
                        status: status_code,
                        events: n_events,
                        attempt: 1,
                        retry_in: Some(Duration::ZERO),
                    }
                    .emit(&stats);
                    continue;
                }
                let key = batch
                    .events
                    .first()
                    .map(|event| event.key.as_str())
                    .unwrap_or("");
                warn!(key, status, %error, "Collector refused an event; moving it to the dead-letter file.");
                CollectorSendError {
                    stage: SendStage::Status,
                    error: &error,
                    status: status_code,
                    events: n_events,
                    attempt: 1,
                    retry_in: None,
                }
                .emit(&stats);
                let reason = format!("HTTP {status}: {error}");
                acknowledge(&spool, &stats, pending, Some(reason)).await;
                stats
                    .dead_lettered_batches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                limits = config.batch;
            }
        }
    }
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
    let result = with_spool(spool, move |spool| match dead_letter_reason {
        Some(reason) => spool.dead_letter(&pending, &reason),
        None => spool.ack(&pending),
    })
    .await;
    if let Err(error) = result {
        spool_error(stats, &error, n_events, 1, Duration::ZERO);
    }
}

fn spool_error(
    stats: &SinkStats,
    error: &SpoolError,
    events: usize,
    attempt: u32,
    delay: Duration,
) {
    let text = crate::error_text::error_chain(error);
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
        Reachability::Healthy | Reachability::NoHealthEndpoint => {
            info!(url, "Collector reachable.");
        }
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
