//! The sender's internal events: one struct per event, `emit()` = log + counter
//! (exported through [`SinkStats`] for the Health event and `/metrics`, whose text
//! `crate::metrics` writes).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tracing::{debug, warn};

use super::outcome::{Refusal, SendStage};

/// Counters of the sender, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub batches_sent: AtomicU64,
    pub events_sent: AtomicU64,
    /// Events the collector already had (resends).
    pub duplicates: AtomicU64,
    pub send_errors: AtomicU64,
    pub dead_lettered_batches: AtomicU64,
    /// Events written to the dead-letter file since start (the spool's count).
    pub dead_letters: AtomicU64,
    /// Unix ms of the last confirmed batch (0 = none yet).
    pub last_success_ms: AtomicI64,
    /// Refusals that held the spool, by [`Refusal::index`].
    pub refusals: [AtomicU64; Refusal::COUNT],
    /// Unix ms since delivery is held (the first refusal after the last success;
    /// 0 = not held).
    pub held_since_ms: AtomicI64,
}

impl SinkStats {
    /// Counts one refusal and marks delivery held from `now_ms` on (if not already).
    pub fn refused(&self, reason: Refusal, now_ms: i64) {
        self.refusals[reason.index()].fetch_add(1, Ordering::Relaxed);
        let _ = self.held_since_ms.compare_exchange(
            0,
            now_ms.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Seconds delivery has been held at `now_ms` (0 when it is not).
    pub fn held_secs(&self, now_ms: i64) -> f64 {
        match self.held_since_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            since => (now_ms.saturating_sub(since).max(0) as f64) / 1000.0,
        }
    }
}

/// A batch was confirmed by the collector.
#[derive(Debug)]
pub struct BatchSent {
    pub events: usize,
    pub body_bytes: usize,
    pub accepted: u32,
    pub duplicates: u32,
    pub elapsed: Duration,
}

impl BatchSent {
    pub fn emit(&self, stats: &SinkStats, now_ms: i64) {
        debug!(
            events = self.events,
            body_bytes = self.body_bytes,
            accepted = self.accepted,
            duplicates = self.duplicates,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "BatchSent"
        );
        stats.batches_sent.fetch_add(1, Ordering::Relaxed);
        stats
            .events_sent
            .fetch_add(self.events as u64, Ordering::Relaxed);
        stats
            .duplicates
            .fetch_add(u64::from(self.duplicates), Ordering::Relaxed);
        stats.last_success_ms.store(now_ms, Ordering::Relaxed);
        stats.held_since_ms.store(0, Ordering::Relaxed);
    }
}

/// A send attempt failed; `retry_in` is `None` when the batch is given up on.
#[derive(Debug)]
pub struct CollectorSendError<'a> {
    pub stage: SendStage,
    pub error: &'a str,
    pub status: Option<u16>,
    pub events: usize,
    pub attempt: u32,
    pub retry_in: Option<Duration>,
}

impl CollectorSendError<'_> {
    /// Logs at warn on the first failure and every 10th retry after, debug otherwise,
    /// so a collector that is down for an hour does not flood the journal.
    pub fn emit(&self, stats: &SinkStats) {
        stats.send_errors.fetch_add(1, Ordering::Relaxed);
        let retry_in_ms = self.retry_in.map(|delay| delay.as_millis() as u64);
        if self.attempt <= 1 || self.attempt.is_multiple_of(10) || self.retry_in.is_none() {
            warn!(
                stage = self.stage.name(),
                status = self.status,
                error = self.error,
                events = self.events,
                attempt = self.attempt,
                retry_in_ms,
                "CollectorSendError"
            );
        } else {
            debug!(
                stage = self.stage.name(),
                status = self.status,
                error = self.error,
                events = self.events,
                attempt = self.attempt,
                retry_in_ms,
                "CollectorSendError"
            );
        }
    }
}
