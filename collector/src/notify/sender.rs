//! One task per webhook: claims due notifications from the outbox, posts them, and
//! marks the outcome.
//!
//! The rate limit is the store's (see [`outbox`]): every decision below that takes a
//! message from it counts what every collector sharing the store sent or holds.
//!
//! Each pass, at most every `poll_interval`:
//! 1. While the webhook is backing off after a failure, nothing is tried.
//! 2. If notifications were suppressed and the rate limit allows a message, one
//!    summary ("N more OOMs suppressed") goes first.
//! 3. When the limit is used up, due notifications are marked suppressed (at most
//!    [`SUPPRESS_BATCH`]) instead of being sent late one by one; otherwise they are
//!    claimed (at most what the limit still allows, at most [`CLAIM_BATCH`]) and
//!    posted in order.
//! 4. A failed post (network error, timeout, non-2xx answer) stops the pass: the
//!    claimed rows count an attempt and wait a jittered exponential backoff; after
//!    `max_attempts` a row is given up (`failed`, logged, counted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::notify::config::WebhookSettings;
use crate::notify::message::{self, RateLimit};
use crate::notify::rate::backoff;
use crate::notify::stats::NotifyStats;
use crate::storage::outbox;
use crate::storage::outbox::Limit;
use crate::storage::{Store, StoreError};
use ballast_daemon::error_chain;

/// Notifications claimed per pass at most.
pub const CLAIM_BATCH: usize = 20;
/// Rows marked suppressed per pass at most, once the rate limit is used up.
pub const SUPPRESS_BATCH: usize = 500;
/// Longest answer body kept in an error message.
const MAX_ERROR_BODY: usize = 200;

/// Why a post failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("Request failed: {0}")]
    Request(String),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
}

/// Why a pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("The outbox could not be read or updated")]
    Store(#[from] StoreError),
}

/// A webhook's sender.
pub struct Sender {
    store: Arc<dyn Store>,
    hook: WebhookSettings,
    public_url: String,
    client: reqwest::Client,
    stats: Arc<NotifyStats>,
    limit: Limit,
    /// Nothing is tried before this (backoff after a failure).
    blocked_until_ms: i64,
    /// Failed summaries in a row (their backoff).
    summary_failures: u32,
    instance: u64,
    claims: AtomicU64,
}

impl Sender {
    /// `instance` prefixes this sender's lease tokens ([`lease_prefix`]).
    pub fn new(
        store: Arc<dyn Store>,
        hook: WebhookSettings,
        public_url: String,
        stats: Arc<NotifyStats>,
        instance: u64,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(hook.timeout)
            .connect_timeout(hook.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ballast-collector/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            limit: Limit::new(hook.rate_limit_messages, hook.rate_limit_window),
            store,
            hook,
            public_url,
            client,
            stats,
            blocked_until_ms: 0,
            summary_failures: 0,
            instance,
            claims: AtomicU64::new(0),
        })
    }

    /// Passes every `interval` until the task is aborted.
    pub async fn run(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            ticker.tick().await;
            match self.pass(crate::now_ms()).await {
                Ok(()) => last_error = None,
                Err(error) => {
                    // Once per distinct error, not once per pass while the store is down.
                    let text = error_chain(&error);
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(webhook = %self.hook.name, error = %text, "Notification pass failed.");
                        last_error = Some(text);
                    }
                }
            }
        }
    }

    fn token(&self) -> String {
        let n = self.claims.fetch_add(1, Ordering::Relaxed);
        format!("{}{n}", lease_prefix(self.instance))
    }

    fn lease_until(&self, now_ms: i64, rows: usize) -> i64 {
        let per_row = i64::try_from(self.hook.timeout.as_millis()).unwrap_or(i64::MAX);
        now_ms
            .saturating_add(per_row.saturating_mul(i64::try_from(rows).unwrap_or(i64::MAX)))
            .saturating_add(30_000)
    }

    /// One pass at `now_ms` (see the module doc).
    pub async fn pass(&mut self, now_ms: i64) -> Result<(), PassError> {
        if now_ms < self.blocked_until_ms
            || !outbox::has_work(self.store.as_ref(), &self.hook.name, now_ms).await?
        {
            return Ok(());
        }
        if !self.send_summary(now_ms).await? {
            return Ok(());
        }
        let owner = self.token();
        // The lease covers the most rows one claim can take.
        let lease_rows =
            CLAIM_BATCH.min(usize::try_from(self.limit.messages).unwrap_or(usize::MAX));
        let claim = outbox::claim_pending(
            self.store.as_ref(),
            &self.hook.name,
            &owner,
            self.limit,
            now_ms,
            self.lease_until(now_ms, lease_rows),
            CLAIM_BATCH,
            SUPPRESS_BATCH,
        )
        .await?;
        if claim.suppressed > 0 {
            self.stats
                .suppressed
                .fetch_add(claim.suppressed, Ordering::Relaxed);
            tracing::debug!(webhook = %self.hook.name, suppressed = claim.suppressed, "Rate limit used up; notifications suppressed.");
        }
        if !claim.rows.is_empty() {
            tracing::trace!(webhook = %self.hook.name, %owner, claimed = claim.rows.len(), "Notifications claimed.");
        }
        let result = self.send_claimed(&owner, claim.rows).await;
        // Whatever is still held (an error midway) goes back at once.
        outbox::release(self.store.as_ref(), &owner).await?;
        result
    }

    async fn send_claimed(
        &mut self,
        owner: &str,
        claimed: Vec<outbox::Claimed>,
    ) -> Result<(), PassError> {
        let store = Arc::clone(&self.store);
        let store = store.as_ref();
        for row in claimed {
            let now_ms = crate::now_ms();
            let Some(notice) = row.notice else {
                outbox::mark(
                    store,
                    row.outbox_id,
                    owner,
                    "failed",
                    now_ms,
                    Some("the OOM was deleted before it was notified"),
                )
                .await?;
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let body =
                message::oom_body(self.hook.format, &self.hook.name, &notice, &self.public_url);
            let key = format!("ballast-oom-{}-{}", notice.oom_id, self.hook.name);
            match self.post(&body, &key).await {
                Ok(()) => {
                    outbox::mark_sent(
                        store,
                        &self.hook.name,
                        row.outbox_id,
                        owner,
                        crate::now_ms(),
                    )
                    .await?;
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(webhook = %self.hook.name, oom_id = notice.oom_id, "Notification sent.");
                }
                Err(error) => {
                    let now_ms = crate::now_ms();
                    // The post may have been counted by the receiver (a timeout after it
                    // took the message): record_failure logs it against the rate limit.
                    let attempt = u32::try_from(row.attempts.saturating_add(1)).unwrap_or(u32::MAX);
                    let wait = backoff(
                        attempt,
                        self.hook.backoff_initial,
                        self.hook.backoff_max,
                        0.5 + fastrand::f64() / 2.0,
                    );
                    let next_ms =
                        now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                    let text = error.to_string();
                    let given_up = outbox::record_failure(
                        store,
                        &self.hook.name,
                        owner,
                        self.hook.max_attempts,
                        next_ms,
                        now_ms,
                        &text,
                    )
                    .await?;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.blocked_until_ms = next_ms;
                    if given_up > 0 {
                        self.stats.failed.fetch_add(given_up, Ordering::Relaxed);
                        tracing::warn!(
                            webhook = %self.hook.name,
                            given_up,
                            attempts = self.hook.max_attempts,
                            error = %text,
                            "Notifications given up."
                        );
                    } else {
                        tracing::info!(
                            webhook = %self.hook.name,
                            oom_id = notice.oom_id,
                            attempt,
                            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                            error = %text,
                            "Notification failed; will retry."
                        );
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Sends one summary of suppressed rows if there are any and the rate limit allows
    /// a message. Returns false when the summary failed (the pass stops and backs off).
    async fn send_summary(&mut self, now_ms: i64) -> Result<bool, PassError> {
        let owner = self.token();
        let store = Arc::clone(&self.store);
        let store = store.as_ref();
        let n = outbox::claim_suppressed(
            store,
            &self.hook.name,
            &owner,
            self.limit,
            now_ms,
            self.lease_until(now_ms, 1),
        )
        .await?;
        if n == 0 {
            return Ok(true);
        }
        let summary = outbox::summarize(store, &owner).await?;
        let limit = RateLimit {
            messages: self.hook.rate_limit_messages,
            window_secs: self.hook.rate_limit_window.as_secs(),
        };
        let body = message::suppressed_body(
            self.hook.format,
            &self.hook.name,
            &summary,
            limit,
            &self.public_url,
        );
        let key = format!("ballast-suppressed-{owner}-{}", self.hook.name);
        let result = self.post(&body, &key).await;
        let now_ms = crate::now_ms();
        match result {
            Ok(()) => {
                outbox::mark_summarized(store, &self.hook.name, &owner, now_ms).await?;
                self.summary_failures = 0;
                self.stats.summaries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(webhook = %self.hook.name, suppressed = summary.count, "Suppressed-notifications summary sent.");
                Ok(true)
            }
            Err(error) => {
                outbox::summary_failed(store, &self.hook.name, &owner, now_ms).await?;
                self.summary_failures = self.summary_failures.saturating_add(1);
                let wait = backoff(
                    self.summary_failures,
                    self.hook.backoff_initial,
                    self.hook.backoff_max,
                    0.5 + fastrand::f64() / 2.0,
                );
                self.blocked_until_ms =
                    now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(webhook = %self.hook.name, %error, "Summary failed; will retry.");
                Ok(false)
            }
        }
    }

    async fn post(&self, body: &serde_json::Value, idempotency_key: &str) -> Result<(), PostError> {
        let mut request = self
            .client
            .post(&self.hook.url)
            .header("Idempotency-Key", idempotency_key)
            .json(body);
        if let Some(secret) = &self.hook.secret {
            request = request.header(secret.header.as_str(), secret.value.as_str());
        }
        let response = request
            .send()
            .await
            .map_err(|error| PostError::Request(error_chain(&error)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(PostError::Status {
            status: status.as_u16(),
            body: message::plain(&body.chars().take(MAX_ERROR_BODY).collect::<String>()),
        })
    }
}

/// What every lease token of the sender `instance` starts with.
pub fn lease_prefix(instance: u64) -> String {
    format!("{instance:016x}-")
}
