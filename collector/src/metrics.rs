//! Prometheus metrics of the collector, served as text on `GET /metrics` (behind
//! the read token, like the query API).
//!
//! Only counts, durations and timestamps: no label carries a host, VM or any
//! guest-written string, and every label value comes from a fixed list
//! ([`REJECT_REASONS`], event types, OOM kinds, correlation verdicts, outbox states),
//! so the series count is bounded whatever agents send. Counters live in memory and
//! restart from 0 with the process; the outbox and under-pressure gauges are read
//! from the store at scrape time. docs/metrics.md lists every family.
//!
//! The text is the Prometheus text format 0.0.4, written by the `prometheus-client`
//! crate from a fresh registry per scrape (`Scrape`), histogram included. A scrape
//! is one consistent snapshot: the ingest latency's buckets (`Latency`) are counted
//! under the counters' lock with the request counts, and copied out with them (the
//! crate's own `Histogram` has a lock of its own and its clone shares it, so it would
//! be read later, outside that snapshot, or under two locks at once).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ballast_daemon::exposition::{counter, counter_family, gauge};
use ballast_model::RiskLevel;
use ballast_model::{CorrelationVerdict, GuardOutcome, OomKind, ResizePhase};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::notify::stats::NotifyStats;
use crate::storage::rows::PreparedBatch;

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the ingest latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `reason` label of a rejected (4xx) ingest request.
pub const REJECT_REASONS: [&str; 8] = [
    "unauthorized",
    "forbidden",
    "bad_request",
    "invalid",
    "too_large",
    "unsupported_encoding",
    "timeout",
    "rate_limited",
];

const OUTBOX_STATES: [&str; 5] = ["pending", "suppressed", "sent", "failed", "summarized"];

/// Rows deleted by one retention pass (`crate::retention`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub rollups: u64,
    pub events: u64,
    pub ooms: u64,
    /// Minute rollups folded into hourly rollups.
    pub compacted: u64,
}

/// How one ingest request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed, at least one key new.
    Accepted,
    /// Committed, every key already stored (a re-sent batch).
    Duplicate,
    /// 4xx, with its reason from [`REJECT_REASONS`].
    Rejected(&'static str),
    /// 5xx.
    Error,
}

/// Rows of one committed batch, by type, counted before the batch is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchShape {
    pub rollups: u64,
    pub others: u64,
    /// (kind, correlation verdict) -> OOMs.
    pub ooms: BTreeMap<(OomKind, CorrelationVerdict), u64>,
    /// Guard actions by outcome.
    pub guard: BTreeMap<GuardOutcome, u64>,
    /// virtio-mem resize events by phase.
    pub memory_devices: BTreeMap<ResizePhase, u64>,
}

impl BatchShape {
    pub fn of(batch: &PreparedBatch) -> Self {
        let mut ooms = BTreeMap::new();
        for oom in &batch.ooms {
            *ooms.entry((oom.kind, oom.corr_verdict)).or_insert(0) += 1;
        }
        let mut guard = BTreeMap::new();
        for action in batch.events.iter().filter_map(|event| event.guard.as_ref()) {
            *guard.entry(action.outcome).or_insert(0) += 1;
        }
        let mut memory_devices = BTreeMap::new();
        for change in batch
            .events
            .iter()
            .filter_map(|event| event.memory_device.as_ref())
        {
            *memory_devices.entry(change.phase).or_insert(0) += 1;
        }
        Self {
            rollups: batch.rollups.len() as u64,
            others: batch.events.len() as u64,
            ooms,
            guard,
            memory_devices,
        }
    }
}

/// `value` when it is one of `known`, else `"other"`.
fn bounded(value: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|k| **k == value)
        .copied()
        .unwrap_or("other")
}

/// The ingest latency histogram's values (seconds, bounds [`LATENCY_BUCKETS`] and
/// `+Inf`): plain numbers kept in [`Counters`], written by the crate's encoder.
#[derive(Debug, Clone, Default)]
struct Latency {
    sum: f64,
    count: u64,
    /// Observations per bucket (not cumulative; the encoder adds them up), the last
    /// one `+Inf`.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
}

impl Latency {
    fn observe(&mut self, seconds: f64) {
        self.sum += seconds;
        self.count += 1;
        // The first bound at or above the value; above them all (or NaN): +Inf.
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| *bound >= seconds)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket] += 1;
    }
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.buckets).collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Debug, Clone, Default)]
struct Counters {
    requests: BTreeMap<&'static str, u64>,
    rejected: BTreeMap<&'static str, u64>,
    events_accepted: u64,
    events_duplicate: u64,
    rollups: u64,
    others: u64,
    ooms: BTreeMap<(OomKind, CorrelationVerdict), u64>,
    guard: BTreeMap<GuardOutcome, u64>,
    memory_devices: BTreeMap<ResizePhase, u64>,
    storage_errors: u64,
    last_ingest_secs: Option<f64>,
    retention_passes: u64,
    retention_failures: u64,
    retention_last_secs: Option<f64>,
    deleted: Deleted,
    /// Ingest latency, every outcome.
    latency: Latency,
}

/// The collector's counters, shared by the handlers, retention and the senders.
#[derive(Debug)]
pub struct Metrics {
    started_at_secs: f64,
    counters: Mutex<Counters>,
    /// Handed to every notifier this process spawns (reloads included), so the
    /// webhook counters survive a SIGHUP.
    pub notify: Arc<NotifyStats>,
    /// Failed ingest authentications and token table loads.
    pub auth: Arc<AuthStats>,
}

/// Counters of the ingest token check (`crate::api` health and ingest).
#[derive(Debug, Default)]
pub struct AuthStats {
    /// No bearer token.
    pub missing: AtomicU64,
    /// A token that is no host's.
    pub unknown: AtomicU64,
    /// Refused with 429 before any lookup: the address failed too often.
    pub rate_limited: AtomicU64,
    /// Reads of the token table from the store (`crate::token_table`).
    pub token_table_loads: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            started_at_secs: now_secs(),
            counters: Mutex::new(Counters::default()),
            notify: Arc::new(NotifyStats::default()),
            auth: Arc::new(AuthStats::default()),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One finished ingest request. `stored` is the committed batch's shape and
    /// the store's answer (accepted keys, duplicate keys).
    pub fn ingest(
        &self,
        outcome: IngestOutcome,
        elapsed: Duration,
        stored: Option<(&BatchShape, u32, u32)>,
    ) {
        let seconds = elapsed.as_secs_f64();
        let mut c = self.counters();
        match outcome {
            IngestOutcome::Accepted => *c.requests.entry("accepted").or_insert(0) += 1,
            IngestOutcome::Duplicate => *c.requests.entry("duplicate").or_insert(0) += 1,
            IngestOutcome::Error => {
                *c.requests.entry("error").or_insert(0) += 1;
            }
            IngestOutcome::Rejected(reason) => {
                *c.requests.entry("rejected").or_insert(0) += 1;
                *c.rejected.entry(reason).or_insert(0) += 1;
            }
        }
        c.latency.observe(seconds);
        if let Some((shape, accepted, duplicates)) = stored {
            c.events_accepted += u64::from(accepted);
            c.events_duplicate += u64::from(duplicates);
            c.last_ingest_secs = Some(now_secs());
            // A batch re-sent whole stores nothing; per-type counts follow the
            // batch otherwise (a batch mixing new and re-sent keys is counted whole).
            if accepted > 0 {
                c.rollups += shape.rollups;
                c.others += shape.others;
                for (key, n) in &shape.ooms {
                    *c.ooms.entry(*key).or_insert(0) += n;
                }
                for (outcome, n) in &shape.guard {
                    *c.guard.entry(*outcome).or_insert(0) += n;
                }
                for (phase, n) in &shape.memory_devices {
                    *c.memory_devices.entry(*phase).or_insert(0) += n;
                }
            }
        }
    }

    /// A store operation failed (ingest, retention, the scrape's outbox query).
    pub fn storage_error(&self) {
        self.counters().storage_errors += 1;
    }

    /// One retention pass: its duration and what it deleted, or that it failed.
    pub fn retention_pass(&self, elapsed: Duration, result: Option<Deleted>) {
        let mut c = self.counters();
        match result {
            Some(deleted) => {
                c.retention_passes += 1;
                c.retention_last_secs = Some(elapsed.as_secs_f64());
                c.deleted.rollups += deleted.rollups;
                c.deleted.events += deleted.events;
                c.deleted.ooms += deleted.ooms;
                c.deleted.compacted += deleted.compacted;
            }
            None => {
                c.retention_failures += 1;
                c.storage_errors += 1;
            }
        }
    }

    /// The exposition text; `outbox` is (state, rows) from the store, `None` when
    /// it could not be read (the family is then absent). The counters (latency
    /// histogram included) are copied out under their lock, which is released before
    /// anything else is read; the text is written after.
    pub fn render(&self, outbox: Option<&[(String, i64)]>) -> String {
        self.render_with(outbox, None)
    }

    /// [`Metrics::render`] with the VMs under pressure counted in the store at scrape
    /// time: (elevated, critical), `None` when that read failed (the family is absent).
    pub fn render_with(
        &self,
        outbox: Option<&[(String, i64)]>,
        under_pressure: Option<(u64, u64)>,
    ) -> String {
        self.render_scrape(outbox, under_pressure, None)
    }

    /// [`Metrics::render_with`] with the VMs that have a virtio-mem resize stuck now,
    /// counted in the store at scrape time (`None`: that read failed; absent).
    pub fn render_scrape(
        &self,
        outbox: Option<&[(String, i64)]>,
        under_pressure: Option<(u64, u64)>,
        stuck_resizes: Option<u64>,
    ) -> String {
        let counters = self.counters().clone();
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let scrape = Scrape {
            started_at_secs: self.started_at_secs,
            counters,
            notify: [
                load(&self.notify.sent),
                load(&self.notify.failed),
                load(&self.notify.suppressed),
                load(&self.notify.summaries),
                load(&self.notify.retries),
            ],
            auth: [
                ("missing_token", load(&self.auth.missing)),
                ("unknown_token", load(&self.auth.unknown)),
                ("rate_limited", load(&self.auth.rate_limited)),
            ],
            token_table_loads: load(&self.auth.token_table_loads),
            outbox: outbox.map(|rows| {
                let mut by_state: BTreeMap<&'static str, i64> =
                    OUTBOX_STATES.iter().map(|s| (*s, 0)).collect();
                for (state, n) in rows {
                    *by_state.entry(bounded(state, &OUTBOX_STATES)).or_insert(0) += n;
                }
                by_state
            }),
            under_pressure,
            stuck_resizes,
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut text = String::new();
        if let Err(error) = prometheus_text::encode(&mut text, &registry) {
            // Writing to a String does not fail, nor do these values.
            tracing::warn!(%error, "Encoding the metrics failed.");
        }
        text
    }
}

/// One scrape's values, encoded by `prometheus-client` in the order of the families
/// in docs/metrics.md.
#[derive(Debug)]
struct Scrape {
    started_at_secs: f64,
    counters: Counters,
    /// sent, failed, suppressed, summaries, retries.
    notify: [u64; 5],
    auth: [(&'static str, u64); 3],
    token_table_loads: u64,
    outbox: Option<BTreeMap<&'static str, i64>>,
    /// VMs with an open pressure episode: (elevated, critical).
    under_pressure: Option<(u64, u64)>,
    /// VMs with a virtio-mem resize stuck now.
    stuck_resizes: Option<u64>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let c = &self.counters;
        let mut family = encoder.encode_descriptor(
            "ballast_collector_build_info",
            "Always 1; the version label is the collector's.",
            None,
            MetricType::Gauge,
        )?;
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        ConstGauge::new(1).encode(family.encode_family(&version)?)?;
        gauge(
            &mut encoder,
            "ballast_collector_start_time_seconds",
            "When the process started, Unix seconds.",
            self.started_at_secs,
        )?;

        let mut family = counter_family(
            &mut encoder,
            "ballast_collector_ingest_requests_total",
            "POST /api/v1/ingest requests by outcome: accepted, duplicate (every key already stored), rejected (4xx, by reason), error (5xx).",
        )?;
        for outcome in ["accepted", "duplicate", "error"] {
            let n = c.requests.get(outcome).copied().unwrap_or(0);
            ConstCounter::new(n).encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        for reason in REJECT_REASONS {
            let n = c.rejected.get(reason).copied().unwrap_or(0);
            let labels = [("outcome", "rejected"), ("reason", reason)];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }

        c.latency.encode(encoder.encode_descriptor(
            "ballast_collector_ingest_duration_seconds",
            "Time from the request to the answer of POST /api/v1/ingest (commit included), every outcome.",
            None,
            MetricType::Histogram,
        )?)?;

        counter(
            &mut encoder,
            "ballast_collector_events_accepted_total",
            "Event keys stored by ingest (new).",
            c.events_accepted,
        )?;
        counter(
            &mut encoder,
            "ballast_collector_events_duplicate_total",
            "Event keys an agent sent again, already stored (not stored twice).",
            c.events_duplicate,
        )?;
        let mut family = counter_family(
            &mut encoder,
            "ballast_collector_events_stored_total",
            "Events of committed batches by type: oom, rollup, other (hello, inventory, balloon change, near miss, health, pressure episode, guard action, virtio-mem resize).",
        )?;
        let ooms: u64 = c.ooms.values().sum();
        for (kind, n) in [("oom", ooms), ("rollup", c.rollups), ("other", c.others)] {
            ConstCounter::new(n).encode(family.encode_family(&[("type", kind)])?)?;
        }
        let mut family = counter_family(
            &mut encoder,
            "ballast_collector_ooms_stored_total",
            "OOM events stored, by kind (guest, vm_cgroup, host) and correlation verdict.",
        )?;
        // Fixed lists: the known kinds (ingest refuses an unknown one), every verdict.
        for kind in OomKind::ALL {
            for verdict in CorrelationVerdict::KNOWN
                .iter()
                .copied()
                .chain([CorrelationVerdict::Unknown])
            {
                let n = c.ooms.get(&(kind, verdict)).copied().unwrap_or(0);
                let labels = [("kind", kind.as_str()), ("verdict", verdict.as_str())];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = counter_family(
            &mut encoder,
            "ballast_collector_guard_actions_total",
            "Guard actions stored (agents' guard decisions, or in observe what it would have done), by outcome.",
        )?;
        // A fixed list: the known outcomes (ingest refuses an unknown one).
        for outcome in GuardOutcome::KNOWN {
            let n = c.guard.get(outcome).copied().unwrap_or(0);
            ConstCounter::new(n).encode(family.encode_family(&[("outcome", outcome.as_str())])?)?;
        }
        let mut family = counter_family(
            &mut encoder,
            "ballast_collector_memory_device_events_total",
            "virtio-mem resize events stored (issue 20), by phase: requested, resized, stuck, converged.",
        )?;
        // A fixed list: the known phases (ingest refuses an unknown one).
        for phase in ResizePhase::KNOWN {
            let n = c.memory_devices.get(phase).copied().unwrap_or(0);
            ConstCounter::new(n).encode(family.encode_family(&[("phase", phase.as_str())])?)?;
        }
        counter(
            &mut encoder,
            "ballast_collector_storage_errors_total",
            "Store operations that failed (ingest, retention, the scrape's outbox query).",
            c.storage_errors,
        )?;
        if let Some(at) = c.last_ingest_secs {
            gauge(
                &mut encoder,
                "ballast_collector_last_ingest_timestamp_seconds",
                "When a batch was last committed, Unix seconds (absent before the first).",
                at,
            )?;
        }

        counter(
            &mut encoder,
            "ballast_collector_retention_passes_total",
            "Retention passes completed.",
            c.retention_passes,
        )?;
        counter(
            &mut encoder,
            "ballast_collector_retention_failures_total",
            "Retention passes that failed (the store refused).",
            c.retention_failures,
        )?;
        if let Some(seconds) = c.retention_last_secs {
            gauge(
                &mut encoder,
                "ballast_collector_retention_last_duration_seconds",
                "Duration of the last completed retention pass.",
                seconds,
            )?;
        }
        let mut family = counter_family(
            &mut encoder,
            "ballast_collector_retention_deleted_rows_total",
            "Expired rows deleted by retention, by table.",
        )?;
        for (table, n) in [
            ("rollups", c.deleted.rollups),
            ("events", c.deleted.events),
            ("ooms", c.deleted.ooms),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&[("table", table)])?)?;
        }
        counter(
            &mut encoder,
            "ballast_collector_retention_compacted_rows_total",
            "Minute rollups folded into hourly rollups by retention.",
            c.deleted.compacted,
        )?;

        let [sent, failed, suppressed, summaries, retries] = self.notify;
        for (name, help, value) in [
            (
                "ballast_collector_notifications_sent_total",
                "OOM notifications delivered to a webhook (2xx).",
                sent,
            ),
            (
                "ballast_collector_notifications_failed_total",
                "Notifications given up (attempts exhausted, or their OOM deleted first).",
                failed,
            ),
            (
                "ballast_collector_notifications_suppressed_total",
                "Notifications held back by a webhook's rate limit.",
                suppressed,
            ),
            (
                "ballast_collector_notification_summaries_total",
                "\"N more suppressed\" summaries delivered.",
                summaries,
            ),
            (
                "ballast_collector_notification_retries_total",
                "Failed webhook posts that will be retried.",
                retries,
            ),
        ] {
            counter(&mut encoder, name, help, value)?;
        }
        let mut family = counter_family(
            &mut encoder,
            "ballast_collector_auth_failures_total",
            "Ingest and agent health requests refused at the token check, by reason: missing_token, unknown_token, rate_limited (429: the address failed too often).",
        )?;
        for (reason, n) in self.auth {
            ConstCounter::new(n).encode(family.encode_family(&[("reason", reason)])?)?;
        }
        counter(
            &mut encoder,
            "ballast_collector_token_table_loads_total",
            "Reads of the ingest token table from the store (at most about one a second whatever the rate of bad tokens).",
            self.token_table_loads,
        )?;
        if let Some(by_state) = &self.outbox {
            let mut family = encoder.encode_descriptor(
                "ballast_collector_notify_outbox_rows",
                "Notification outbox rows by state, all webhooks (pending: not yet delivered).",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in by_state {
                ConstGauge::new(*n).encode(family.encode_family(&[("state", *state)])?)?;
            }
        }
        if let Some((elevated, critical)) = self.under_pressure {
            let mut family = encoder.encode_descriptor(
                "ballast_collector_vms_under_pressure",
                "VMs with an open pressure episode (no end received), by the episode's worst level: elevated, critical.",
                None,
                MetricType::Gauge,
            )?;
            for (level, n) in [
                (RiskLevel::Elevated, elevated),
                (RiskLevel::Critical, critical),
            ] {
                ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&[("level", level.as_str())])?)?;
            }
        }
        if let Some(stuck) = self.stuck_resizes {
            gauge(
                &mut encoder,
                "ballast_collector_vms_with_stuck_resize",
                "VMs with a virtio-mem device whose stuck resize no converged or new request followed.",
                i64::try_from(stuck).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

fn now_secs() -> f64 {
    crate::now_ms() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_outcomes_buckets_and_bounded_labels() {
        let metrics = Metrics::new();
        let mut shape = BatchShape::default();
        shape
            .ooms
            .insert((OomKind::Guest, CorrelationVerdict::Balloon), 2);
        shape.rollups = 3;
        shape.guard.insert(GuardOutcome::WouldDeflate, 2);
        metrics.ingest(
            IngestOutcome::Accepted,
            Duration::from_millis(30),
            Some((&shape, 5, 0)),
        );
        metrics.ingest(
            IngestOutcome::Duplicate,
            Duration::from_millis(3),
            Some((&shape, 0, 5)),
        );
        metrics.ingest(
            IngestOutcome::of_error(&crate::api::AppError::Unauthorized),
            Duration::from_millis(1),
            None,
        );
        let text = metrics.render(Some(&[("pending".into(), 4), ("weird".into(), 1)]));
        for line in [
            "ballast_collector_ingest_requests_total{outcome=\"accepted\"} 1",
            "ballast_collector_ingest_requests_total{outcome=\"duplicate\"} 1",
            "ballast_collector_ingest_requests_total{outcome=\"rejected\",reason=\"unauthorized\"} 1",
            "ballast_collector_ingest_duration_seconds_bucket{le=\"0.005\"} 2",
            "ballast_collector_ingest_duration_seconds_bucket{le=\"0.05\"} 3",
            "ballast_collector_ingest_duration_seconds_count 3",
            "ballast_collector_ooms_stored_total{kind=\"guest\",verdict=\"balloon\"} 2",
            "ballast_collector_events_stored_total{type=\"rollup\"} 3",
            "ballast_collector_events_duplicate_total 5",
            "ballast_collector_guard_actions_total{outcome=\"would_deflate\"} 2",
            "ballast_collector_guard_actions_total{outcome=\"deflated\"} 0",
            "ballast_collector_notify_outbox_rows{state=\"pending\"} 4",
            "ballast_collector_notify_outbox_rows{state=\"other\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert_eq!(bounded("vm \"x\"", &OUTBOX_STATES), "other");
        assert!(
            !text.contains("ballast_collector_vms_under_pressure"),
            "absent when the store was not read"
        );
    }

    #[test]
    fn vms_under_pressure_are_a_gauge_by_level() {
        let text = Metrics::new().render_with(Some(&[]), Some((3, 1)));
        for line in [
            "# TYPE ballast_collector_vms_under_pressure gauge",
            "ballast_collector_vms_under_pressure{level=\"elevated\"} 3",
            "ballast_collector_vms_under_pressure{level=\"critical\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_value_on_a_bound_counts_in_its_bucket_and_one_above_all_in_inf() {
        let metrics = Metrics::new();
        for millis in [10, 10_001] {
            metrics.ingest(IngestOutcome::Accepted, Duration::from_millis(millis), None);
        }
        let text = metrics.render(None);
        for line in [
            "ballast_collector_ingest_duration_seconds_bucket{le=\"0.005\"} 0",
            "ballast_collector_ingest_duration_seconds_bucket{le=\"0.01\"} 1",
            "ballast_collector_ingest_duration_seconds_bucket{le=\"10\"} 1",
            "ballast_collector_ingest_duration_seconds_bucket{le=\"+Inf\"} 2",
            "ballast_collector_ingest_duration_seconds_sum 10.011",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    /// The value of the sample line `name` (labels included) in `text`.
    fn sample(text: &str, name: &str) -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[test]
    fn every_scrape_is_one_snapshot_the_latency_count_equals_the_requests() {
        let metrics = Arc::new(Metrics::new());
        let ingesting: Vec<_> = (0..2)
            .map(|_| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        metrics.ingest(IngestOutcome::Accepted, Duration::from_millis(2), None);
                    }
                })
            })
            .collect();
        let mut scrapes = 0;
        while scrapes < 50 || !ingesting.iter().all(|thread| thread.is_finished()) {
            let text = metrics.render(None);
            assert_eq!(
                sample(&text, "ballast_collector_ingest_duration_seconds_count"),
                sample(
                    &text,
                    "ballast_collector_ingest_requests_total{outcome=\"accepted\"}"
                ),
                "one scrape, two answers to \"how many requests\""
            );
            scrapes += 1;
        }
        for thread in ingesting {
            thread.join().expect("ingest thread");
        }
        let text = metrics.render(None);
        assert_eq!(
            sample(&text, "ballast_collector_ingest_duration_seconds_count"),
            40_000
        );
    }
}
