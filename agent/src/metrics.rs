//! Prometheus metrics of the agent: per-VM balloon gauges and pressure signals
//! (`ballast_vm_*_per_second`, the guest's PSI), OOM counters by kind,
//! the agent's own health and the sender's delivery counters, served as text on
//! `GET /metrics`.
//!
//! Names follow Prometheus conventions: base units (bytes, seconds), `_total` for
//! counters. The text is the Prometheus text format 0.0.4, written by the
//! `prometheus-client` crate (names, `# HELP`/`# TYPE` lines, value formatting and
//! label escaping are its own); this module only chooses what is exported. Example:
//! ```text
//! # TYPE ballast_vm_balloon_actual_bytes gauge
//! ballast_vm_balloon_actual_bytes{vm_uuid="3f2a...",vm_name="web1"} 209715200
//! # TYPE ballast_guest_ooms_total counter
//! ballast_guest_ooms_total{vm_uuid="3f2a...",vm_name="web1",verdict="balloon"} 1
//! ```
//!
//! Every scrape copies the values into a fresh registry (`AgentScrape`,
//! `SinkScrape`), so a family whose label values come from the fleet has no series
//! left over from a VM that is gone.
//!
//! The listener is hyper's HTTP/1 server with bounds, meant for a loopback or
//! management-network scraper: `GET /metrics` only, one request per connection, at
//! most 64 connections at once, 5 s to send the request head, 10 s per connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ballast_daemon::exposition::{counter, counter_family, gauge};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use ballast_model::PressureSnapshot;

use crate::fleet::{Fleet, VmState};
use crate::shared::SharedLock;
use crate::sink::{Refusal, SinkStats};

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Counters the run loop bumps.
#[derive(Debug, Clone, Default)]
pub struct AgentCounters {
    pub polls: u64,
    pub poll_errors: u64,
    pub last_poll_seconds: f64,
    /// (vm uuid, vm name, verdict) -> OOMs captured.
    pub ooms: BTreeMap<(String, String, ballast_model::ReportVerdict), u64>,
    /// near-miss kind -> count.
    pub near_misses: BTreeMap<ballast_model::NearMissKind, u64>,
    pub flood_suppressed: u64,
    pub spool_bytes: u64,
    pub spool_events: u64,
    pub dropped_rollups: u64,
    /// (vm uuid, vm name) -> pressure episodes started (their start sent).
    pub pressure_episodes: BTreeMap<(String, String), u64>,
    /// Guard outcome -> decisions reported (docs/guard.md).
    pub guard_actions: BTreeMap<ballast_model::GuardOutcome, u64>,
    /// Bytes the guard gave back to guests (targets set in `act`, above `actual`).
    pub guard_deflated_bytes: u64,
}

/// What the exporter reads: the fleet and the counters, shared with the run loop, and
/// the sender's counters (lock-free atomics) when a collector is configured.
#[derive(Debug, Clone)]
pub struct Shared {
    pub fleet: SharedLock<Fleet>,
    pub counters: SharedLock<AgentCounters>,
    /// The sender's delivery counters, when the agent delivers to a collector.
    pub sink: Option<Arc<crate::sink::SinkStats>>,
}

impl Shared {
    /// The exposition text of the current state. One shared lock at a time
    /// ([`crate::shared`]): the counters are copied out, then the fleet's values are
    /// copied under its own lock; the text is written after both are released.
    /// Blocking: async code calls it on a blocking thread.
    pub fn render(&self) -> String {
        let counters = self.counters.lock().clone();
        let agent = {
            let fleet = self.fleet.lock();
            AgentScrape::of(&fleet, counters)
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(agent));
        if let Some(sink) = &self.sink {
            registry.register_collector(Box::new(SinkScrape::of(sink, now_ms())));
        }
        encode(&registry)
    }
}

/// The exposition text of the monitor's families (fleet and counters).
pub fn render(fleet: &Fleet, counters: &AgentCounters) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentScrape::of(fleet, counters.clone())));
    encode(&registry)
}

/// The exposition text of the sender's families at `now_ms` (they follow the
/// monitor's on `/metrics` when a collector is configured).
pub fn render_sink(stats: &SinkStats, now_ms: i64) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SinkScrape::of(stats, now_ms)));
    encode(&registry)
}

/// The registry in the Prometheus text format. Writing to a `String` cannot fail,
/// nor can the values here; were it to, the scrape gets what was written and the
/// log says why.
fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(error) = prometheus_text::encode(&mut text, registry) {
        tracing::warn!(%error, "Encoding the metrics failed.");
    }
    text
}

/// One per-VM gauge: its value for a VM (`None`: no series for that VM).
type VmGauge = (&'static str, &'static str, fn(&VmState) -> Option<u64>);

/// KiB as reported by the hypervisor, in bytes.
fn kib(value: Option<u64>) -> Option<u64> {
    value.map(|kib| kib.saturating_mul(1024))
}

/// The per-VM gauges, in the order of the exposition.
const VM_GAUGES: [VmGauge; 10] = [
    (
        "ballast_vm_balloon_actual_bytes",
        "Memory the balloon leaves the guest (libvirt balloon.current).",
        |vm| kib(vm.history.last().and_then(|p| p.actual_kib)),
    ),
    (
        "ballast_vm_balloon_maximum_bytes",
        "The VM's maximum memory.",
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.maximum_kib)),
    ),
    (
        "ballast_vm_guest_mem_total_bytes",
        "Guest MemTotal (libvirt balloon.available), guest-reported.",
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.available_kib)),
    ),
    (
        "ballast_vm_guest_mem_available_bytes",
        "Guest MemAvailable (libvirt balloon.usable), guest-reported.",
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.usable_kib)),
    ),
    (
        "ballast_vm_guest_mem_free_bytes",
        "Guest MemFree (libvirt balloon.unused), guest-reported.",
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.unused_kib)),
    ),
    (
        "ballast_vm_qemu_rss_bytes",
        "QEMU's resident memory on the host.",
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.rss_kib)),
    ),
    (
        "ballast_vm_balloon_stats_stale",
        "1 when the guest's balloon stats stopped updating.",
        |vm| Some(u64::from(vm.stale)),
    ),
    (
        "ballast_vm_guest_oom_kills",
        "QEMU's stat-oom-kills counter of the guest (Linux >= 6.12), guest-reported.",
        |vm| vm.counters.as_ref().and_then(|c| c.oom_kills),
    ),
    (
        "ballast_vm_pressure_risk",
        "Guest memory pressure risk: 0 ok, 1 elevated, 2 critical; no series when the VM has no pressure signals (unknown).",
        |vm| vm.risk.level().map(|level| u64::from(crate::pressure::risk::rank(level))),
    ),
    (
        "ballast_vm_pressure_exhaustion_seconds",
        "Predicted seconds until guest MemAvailable runs out at its current fall; no series when it is not falling.",
        |vm| vm.risk.assessment().and_then(|a| a.exhaustion_secs),
    ),
];

/// One per-VM pressure signal gauge: its value from the VM's latest snapshot (`None`,
/// or a VM without signals: no series).
type SignalGauge = (
    &'static str,
    &'static str,
    fn(&PressureSnapshot) -> Option<f64>,
);

const KIB: f64 = 1024.0;

/// The per-VM pressure signals (issue 19), in base units: bytes, seconds, ratios.
const SIGNAL_GAUGES: [SignalGauge; 10] = [
    (
        "ballast_vm_alloc_stalls_per_second",
        "Guest allocation stalls per second (balloon stat-alloc-stalls, Linux >= 6.12), guest-reported.",
        |s| s.alloc_stalls_per_s,
    ),
    (
        "ballast_vm_direct_scan_bytes_per_second",
        "Guest memory scanned by direct reclaim per second (stat-direct-scans), guest-reported.",
        |s| s.direct_scan_kib_per_s.map(|kib| kib * KIB),
    ),
    (
        "ballast_vm_direct_reclaim_bytes_per_second",
        "Guest memory reclaimed by direct reclaim per second (stat-direct-reclaims), guest-reported.",
        |s| s.direct_reclaim_kib_per_s.map(|kib| kib * KIB),
    ),
    (
        "ballast_vm_async_scan_bytes_per_second",
        "Guest memory scanned by kswapd per second (stat-async-scans), guest-reported.",
        |s| s.async_scan_kib_per_s.map(|kib| kib * KIB),
    ),
    (
        "ballast_vm_async_reclaim_bytes_per_second",
        "Guest memory reclaimed by kswapd per second (stat-async-reclaims), guest-reported.",
        |s| s.async_reclaim_kib_per_s.map(|kib| kib * KIB),
    ),
    (
        "ballast_vm_major_faults_per_second",
        "Guest major page faults per second (balloon stats), guest-reported.",
        |s| s.major_faults_per_s,
    ),
    (
        "ballast_vm_swap_in_bytes_per_second",
        "Guest memory swapped in per second (balloon stats), guest-reported.",
        |s| s.swap_in_kib_per_s.map(|kib| kib * KIB),
    ),
    (
        "ballast_vm_guest_mem_available_slope_bytes_per_second",
        "Slope of guest MemAvailable over its last reports (negative: falling), guest-reported.",
        |s| s.available_slope_kib_per_s.map(|kib| kib * KIB),
    ),
    (
        "ballast_vm_guest_psi_memory_some_avg10_ratio",
        "Guest /proc/pressure/memory 'some avg10' as a ratio (0.05 = 5 %), read through the guest agent.",
        |s| s.psi_some_avg10.map(|percent| percent / 100.0),
    ),
    (
        "ballast_vm_guest_psi_memory_full_avg10_ratio",
        "Guest /proc/pressure/memory 'full avg10' as a ratio, read through the guest agent.",
        |s| s.psi_full_avg10.map(|percent| percent / 100.0),
    ),
];

/// The guest's PSI stall totals (counters: they restart when the guest reboots).
const PSI_TOTALS: [SignalGauge; 2] = [
    (
        "ballast_vm_guest_psi_memory_some_seconds_total",
        "Guest /proc/pressure/memory 'some total': time some tasks stalled on memory since the guest booted.",
        |s| s.psi_some_total_us.map(|us| us as f64 / 1e6),
    ),
    (
        "ballast_vm_guest_psi_memory_full_seconds_total",
        "Guest /proc/pressure/memory 'full total': time all tasks stalled on memory since the guest booted.",
        |s| s.psi_full_total_us.map(|us| us as f64 / 1e6),
    ),
];

/// The `vm_uuid` and `vm_name` labels of a VM.
type VmLabels = [(&'static str, String); 2];

/// One VM's labels, its [`SIGNAL_GAUGES`] and [`PSI_TOTALS`].
type VmSignals = (
    VmLabels,
    [Option<f64>; SIGNAL_GAUGES.len()],
    [Option<f64>; PSI_TOTALS.len()],
);

/// One scrape of the monitor's state: the fleet's values copied out (under the fleet
/// lock) and the counters, encoded after the locks are released.
#[derive(Debug)]
struct AgentScrape {
    vms: usize,
    /// Per VM: its labels and the value of each of [`VM_GAUGES`].
    values: Vec<(VmLabels, [Option<u64>; VM_GAUGES.len()])>,
    /// Per VM with signals: its labels, [`SIGNAL_GAUGES`] and [`PSI_TOTALS`].
    signals: Vec<VmSignals>,
    counters: AgentCounters,
    pressure_suppressed: u64,
}

impl AgentScrape {
    fn of(fleet: &Fleet, counters: AgentCounters) -> Self {
        let values = fleet
            .vms()
            .map(|vm| {
                let labels = [
                    ("vm_uuid", bounded_label(&vm.id.uuid)),
                    ("vm_name", bounded_label(&vm.id.name)),
                ];
                (labels, VM_GAUGES.map(|(_, _, value)| value(vm)))
            })
            .collect();
        let signals = fleet
            .vms()
            .filter_map(|vm| {
                let snapshot = vm.pressure_snapshot()?;
                let labels = [
                    ("vm_uuid", bounded_label(&vm.id.uuid)),
                    ("vm_name", bounded_label(&vm.id.name)),
                ];
                let finite = |value: Option<f64>| value.filter(|v| v.is_finite());
                Some((
                    labels,
                    SIGNAL_GAUGES.map(|(_, _, value)| finite(value(snapshot))),
                    PSI_TOTALS.map(|(_, _, value)| finite(value(snapshot))),
                ))
            })
            .collect();
        Self {
            vms: fleet.len(),
            values,
            signals,
            counters,
            pressure_suppressed: fleet.pressure_events_suppressed(),
        }
    }
}

impl Collector for AgentScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for (index, (name, help, _)) in VM_GAUGES.iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, values) in &self.values {
                if let Some(value) = values[index] {
                    ConstGauge::new(value).encode(family.encode_family(labels)?)?;
                }
            }
        }
        for (index, (name, help, _)) in SIGNAL_GAUGES.iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, values, _) in &self.signals {
                if let Some(value) = values[index] {
                    ConstGauge::new(value).encode(family.encode_family(labels)?)?;
                }
            }
        }
        for (index, (name, help, _)) in PSI_TOTALS.iter().enumerate() {
            let mut family = counter_family(&mut encoder, name, help)?;
            for (labels, _, totals) in &self.signals {
                if let Some(value) = totals[index] {
                    ConstCounter::new(value).encode(family.encode_family(labels)?)?;
                }
            }
        }
        let c = &self.counters;
        let mut family = counter_family(
            &mut encoder,
            "ballast_guest_ooms_total",
            "Guest OOM reports captured, by verdict.",
        )?;
        for ((uuid, name, verdict), count) in &c.ooms {
            let labels = [
                ("vm_uuid", bounded_label(uuid)),
                ("vm_name", bounded_label(name)),
                ("verdict", verdict.as_str().to_string()),
            ];
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        let mut family = counter_family(
            &mut encoder,
            "ballast_near_misses_total",
            "Balloon near misses (out_of_puff, silent_deflate, usable_low).",
        )?;
        for (kind, count) in &c.near_misses {
            let labels = [("kind", kind.as_str().to_string())];
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        let mut family = counter_family(
            &mut encoder,
            "ballast_pressure_episodes_total",
            "Guest memory pressure episodes started (risk left ok), by VM.",
        )?;
        for ((uuid, name), count) in &c.pressure_episodes {
            let labels = [
                ("vm_uuid", bounded_label(uuid)),
                ("vm_name", bounded_label(name)),
            ];
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        let mut family = counter_family(
            &mut encoder,
            "ballast_guard_actions_total",
            "Guard decisions reported, by outcome (would_deflate in observe mode).",
        )?;
        for outcome in ballast_model::GuardOutcome::KNOWN {
            let count = c.guard_actions.get(outcome).copied().unwrap_or(0);
            let labels = [("outcome", outcome.as_str().to_string())];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        counter(
            &mut encoder,
            "ballast_guard_deflated_bytes_total",
            "Bytes of balloon memory the guard gave back to guests (mode act).",
            c.guard_deflated_bytes,
        )?;
        counter(
            &mut encoder,
            "ballast_agent_pressure_events_suppressed_total",
            "Pressure episode events not sent: a VM over its hourly budget of episode events.",
            self.pressure_suppressed,
        )?;
        gauge(
            &mut encoder,
            "ballast_agent_vms",
            "VMs the agent watches.",
            self.vms as u64,
        )?;
        counter(
            &mut encoder,
            "ballast_agent_polls_total",
            "Balloon polls done.",
            c.polls,
        )?;
        counter(
            &mut encoder,
            "ballast_agent_poll_errors_total",
            "Balloon polls that failed.",
            c.poll_errors,
        )?;
        gauge(
            &mut encoder,
            "ballast_agent_poll_duration_seconds",
            "Duration of the last poll.",
            c.last_poll_seconds,
        )?;
        counter(
            &mut encoder,
            "ballast_agent_flood_suppressed_total",
            "Guest reports dropped by flood control.",
            c.flood_suppressed,
        )?;
        gauge(
            &mut encoder,
            "ballast_agent_spool_bytes",
            "Bytes waiting in the spool.",
            c.spool_bytes,
        )?;
        gauge(
            &mut encoder,
            "ballast_agent_spool_events",
            "Events waiting in the spool.",
            c.spool_events,
        )?;
        counter(
            &mut encoder,
            "ballast_agent_dropped_rollups_total",
            "Rollups dropped because the spool was full.",
            c.dropped_rollups,
        )
    }
}

/// One scrape of the sender's counters (read from its atomics at `now_ms`).
#[derive(Debug)]
struct SinkScrape {
    refusals: [(&'static str, u64); Refusal::COUNT],
    held_seconds: f64,
    last_success_seconds: f64,
    delivered: u64,
    dead_letters: u64,
    send_errors: u64,
}

impl SinkScrape {
    fn of(stats: &SinkStats, now_ms: i64) -> Self {
        let last_success = stats.last_success_ms.load(Ordering::Relaxed);
        Self {
            refusals: Refusal::ALL.map(|reason| {
                let count = stats.refusals[reason.index()].load(Ordering::Relaxed);
                (reason.name(), count)
            }),
            held_seconds: stats.held_secs(now_ms),
            last_success_seconds: last_success.max(0) as f64 / 1000.0,
            delivered: stats.events_sent.load(Ordering::Relaxed),
            dead_letters: stats.dead_letters.load(Ordering::Relaxed),
            send_errors: stats.send_errors.load(Ordering::Relaxed),
        }
    }
}

impl Collector for SinkScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut family = counter_family(
            &mut encoder,
            "ballast_agent_delivery_refusals_total",
            "Deliveries the collector (or whatever answers at collector.url) refused or never answered; the events stay in the spool.",
        )?;
        for (reason, count) in self.refusals {
            ConstCounter::new(count).encode(family.encode_family(&[("reason", reason)])?)?;
        }
        gauge(
            &mut encoder,
            "ballast_agent_delivery_held_seconds",
            "Seconds since delivery to the collector is held (first refusal after the last success); 0 when delivering.",
            self.held_seconds,
        )?;
        gauge(
            &mut encoder,
            "ballast_agent_last_delivery_timestamp_seconds",
            "Unix time of the last batch the collector confirmed; 0 before the first.",
            self.last_success_seconds,
        )?;
        counter(
            &mut encoder,
            "ballast_agent_delivered_events_total",
            "Events the collector confirmed (duplicates included).",
            self.delivered,
        )?;
        counter(
            &mut encoder,
            "ballast_agent_dead_letters_total",
            "Events set aside in the dead-letter file because the collector named them invalid (ballast-agent spool replay-dead-letters sends them again).",
            self.dead_letters,
        )?;
        counter(
            &mut encoder,
            "ballast_agent_send_errors_total",
            "Failed send attempts of any kind.",
            self.send_errors,
        )
    }
}

fn now_ms() -> i64 {
    crate::wire::epoch_ms(std::time::SystemTime::now())
}

/// A label value as exported: at most 256 characters, control characters other than
/// newline shown as `?`. Escaping (`\`, `"`, newline) is the encoder's.
fn bounded_label(value: &str) -> String {
    value
        .chars()
        .take(256)
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

/// Connections served at once; more wait in the kernel's accept queue (no file
/// descriptor of ours) until one ends.
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request head (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection ends after this long, whatever it is doing.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes of request head buffered at most (hyper's minimum is 8 KiB).
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Serves `GET /metrics` on `listen` until the task is dropped.
pub async fn serve(listen: SocketAddr, shared: Shared) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(%listen, "Serving Prometheus metrics.");
    serve_on(listener, shared).await
}

/// Serves `GET /metrics` on a bound listener (tests bind 127.0.0.1:0): hyper's
/// HTTP/1 server, one request per connection, at most [`MAX_CONNECTIONS`] at once,
/// [`HEADER_READ_TIMEOUT`] for the request head, [`CONNECTION_DEADLINE`] in all.
pub async fn serve_on(listener: TcpListener, shared: Shared) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A free slot first: beyond the cap, connections wait in the accept queue.
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, or a connection reset before accept: the
                // listener stays; a short pause so that a persistent error does not spin.
                tracing::warn!(%error, "Metrics listener failed to accept a connection.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| answer(request, shared.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "Metrics request failed."),
                Err(_) => tracing::debug!("Metrics connection closed at its deadline."),
            }
        });
    }
}

/// `GET /metrics`: the exposition text; any other path 404, another method 405.
async fn answer(
    request: Request<Incoming>,
    shared: Shared,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return Ok(reply(StatusCode::NOT_FOUND));
    }
    if request.method() != Method::GET {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Ok(response);
    }
    // The locks are std mutexes the monitor thread also takes: not on a runtime thread.
    match tokio::task::spawn_blocking(move || shared.render()).await {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            Ok(response)
        }
        Err(error) => {
            tracing::warn!(%error, "Rendering the metrics failed.");
            Ok(reply(StatusCode::INTERNAL_SERVER_ERROR))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{BalloonSample, DomainId};
    use ballast_model::ReportVerdict;
    use std::time::UNIX_EPOCH;

    /// The value of the one series `series` (name and labels as written) in `text`.
    fn value(text: &str, series: &str) -> f64 {
        let values: Vec<f64> = text
            .lines()
            .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().expect("a number"))
            .collect();
        assert_eq!(values.len(), 1, "{series} once in\n{text}");
        values[0]
    }

    #[test]
    fn pressure_signals_are_per_vm_gauges_in_base_units_and_a_vm_without_signals_has_none() {
        let mut fleet = Fleet::new(10);
        let with = DomainId {
            uuid: "aaaa".into(),
            name: "pressed".into(),
        };
        let without = DomainId {
            uuid: "bbbb".into(),
            name: "quiet".into(),
        };
        let base = 1_800_000_000;
        for poll in 0..3u64 {
            let at = UNIX_EPOCH + Duration::from_secs(base + poll * 10);
            let stats = BalloonSample {
                major_faults: Some(poll * 100),
                swap_in_kib: Some(poll * 10),
                last_update_epoch_secs: Some(base + poll * 10),
                ..BalloonSample::default()
            };
            fleet.apply_poll(
                at,
                vec![
                    (with.clone(), stats),
                    (without.clone(), BalloonSample::default()),
                ],
            );
            fleet.apply_counters(
                &with,
                crate::hypervisor::GuestCounters {
                    alloc_stalls: Some(poll * 50),
                    direct_reclaims_bytes: Some(poll * 10 * 4096),
                    last_update_epoch_secs: Some(base + poll * 10),
                    ..Default::default()
                },
            );
            fleet.apply_psi(
                &with,
                at,
                crate::pressure::psi::parse(
                    b"some avg10=12.50 avg60=1 avg300=0 total=2500000\nfull avg10=2.00 avg60=0 avg300=0 total=40\n",
                )
                .expect("psi"),
                Duration::from_secs(90),
            );
            fleet.observe_pressure(at);
        }
        let text = render(&fleet, &AgentCounters::default());
        let series = |name: &str| format!("{name}{{vm_uuid=\"aaaa\",vm_name=\"pressed\"}}");
        assert_eq!(
            value(&text, &series("ballast_vm_alloc_stalls_per_second")),
            5.0
        );
        assert_eq!(
            value(&text, &series("ballast_vm_major_faults_per_second")),
            10.0
        );
        assert_eq!(
            value(&text, &series("ballast_vm_swap_in_bytes_per_second")),
            1024.0
        );
        assert_eq!(
            value(&text, &series("ballast_vm_direct_reclaim_bytes_per_second")),
            4096.0
        );
        assert_eq!(
            value(
                &text,
                &series("ballast_vm_guest_psi_memory_some_avg10_ratio")
            ),
            0.125
        );
        assert_eq!(
            value(
                &text,
                &series("ballast_vm_guest_psi_memory_some_seconds_total")
            ),
            2.5
        );
        assert!(
            text.contains("# TYPE ballast_vm_guest_psi_memory_some_seconds_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP ballast_vm_alloc_stalls_per_second "));
        assert!(
            !text.contains("ballast_vm_async_reclaim_bytes_per_second{"),
            "a counter never reported has no series"
        );
        assert!(
            !text
                .lines()
                .any(|line| line.contains("vm_name=\"quiet\"") && line.contains("per_second")),
            "a VM without signals exports none: {text}"
        );
    }

    #[test]
    fn renders_per_vm_gauges_with_escaped_labels() {
        let mut fleet = Fleet::new(10);
        let id = DomainId {
            uuid: "3f2a".into(),
            name: "web \"1\" C:\\vm\n\r".into(),
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        fleet.apply_poll(
            at,
            vec![(
                id,
                BalloonSample {
                    actual_kib: Some(204_800),
                    maximum_kib: Some(524_288),
                    ..BalloonSample::default()
                },
            )],
        );
        let mut counters = AgentCounters::default();
        counters
            .ooms
            .insert(("3f2a".into(), "web".into(), ReportVerdict::Balloon), 2);
        counters.last_poll_seconds = 0.25;
        let text = render(&fleet, &counters);
        assert!(text.contains("ballast_vm_balloon_actual_bytes{vm_uuid=\"3f2a\",vm_name=\"web \\\"1\\\" C:\\\\vm\\n?\"} 209715200\n"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|line| line.starts_with("ballast_vm_"))
                .count(),
            3,
            "one line per series, the newline escaped: {text}"
        );
        assert!(text.contains(
            "ballast_guest_ooms_total{vm_uuid=\"3f2a\",vm_name=\"web\",verdict=\"balloon\"} 2\n"
        ));
        assert!(
            text.contains("# TYPE ballast_guest_ooms_total counter\n"),
            "{text}"
        );
        assert_eq!(value(&text, "ballast_agent_vms"), 1.0);
        assert_eq!(value(&text, "ballast_agent_poll_duration_seconds"), 0.25);
        assert!(
            text.contains("# TYPE ballast_vm_guest_mem_available_bytes gauge\n")
                && !text.contains("ballast_vm_guest_mem_available_bytes{"),
            "missing values are not exported as 0"
        );
    }

    #[test]
    fn pressure_risk_and_exhaustion_are_exported_and_unknown_is_no_series() {
        let mut fleet = Fleet::new(10);
        let vm = |n: u32| DomainId {
            uuid: format!("u{n}"),
            name: format!("vm{n}"),
        };
        // vm1: MemAvailable falls 20 MiB a poll from 200 MiB; vm2 has no guest figures.
        for poll in 0..5u64 {
            let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000 + poll * 10);
            let squeezed = BalloonSample {
                actual_kib: Some(524_288),
                maximum_kib: Some(524_288),
                available_kib: Some(468 * 1024),
                usable_kib: Some((200 - 20 * poll) * 1024),
                last_update_epoch_secs: Some(1_800_000_000 + poll * 10),
                ..BalloonSample::default()
            };
            let blind = BalloonSample {
                actual_kib: Some(524_288),
                ..BalloonSample::default()
            };
            fleet.apply_poll(at, vec![(vm(1), squeezed), (vm(2), blind)]);
            fleet.observe_pressure(at);
        }
        let mut counters = AgentCounters::default();
        counters
            .pressure_episodes
            .insert(("u1".into(), "vm1".into()), 1);
        counters
            .guard_actions
            .insert(ballast_model::GuardOutcome::Deflated, 2);
        counters.guard_deflated_bytes = 256 * 1024 * 1024;
        let text = render(&fleet, &counters);
        assert_eq!(
            value(&text, "ballast_guard_actions_total{outcome=\"deflated\"}"),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "ballast_guard_actions_total{outcome=\"rate_limited\"}"
            ),
            0.0
        );
        assert_eq!(
            value(&text, "ballast_guard_deflated_bytes_total"),
            268_435_456.0
        );
        // 120 MiB left, falling 2 MiB/s: 60 s.
        assert_eq!(
            value(
                &text,
                "ballast_vm_pressure_risk{vm_uuid=\"u1\",vm_name=\"vm1\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "ballast_vm_pressure_exhaustion_seconds{vm_uuid=\"u1\",vm_name=\"vm1\"}"
            ),
            60.0
        );
        assert!(
            !text.contains("ballast_vm_pressure_risk{vm_uuid=\"u2\""),
            "a VM without signals is unknown, not ok: {text}"
        );
        assert_eq!(
            value(
                &text,
                "ballast_pressure_episodes_total{vm_uuid=\"u1\",vm_name=\"vm1\"}"
            ),
            1.0
        );
        assert_eq!(
            value(&text, "ballast_agent_pressure_events_suppressed_total"),
            0.0
        );
    }

    #[test]
    fn long_label_values_are_cut_at_256_characters() {
        let mut counters = AgentCounters::default();
        counters
            .ooms
            .insert(("3f2a".into(), "x".repeat(300), ReportVerdict::Unknown), 1);
        let text = render(&Fleet::new(1), &counters);
        let cut = format!(
            "ballast_guest_ooms_total{{vm_uuid=\"3f2a\",vm_name=\"{}\",verdict=\"unknown\"}} 1\n",
            "x".repeat(256)
        );
        assert!(text.contains(&cut), "{text}");
    }

    #[test]
    fn refusals_hold_until_a_success_and_are_exported_by_reason() {
        use crate::sink::BatchSent;
        let stats = SinkStats::default();
        let text = render_sink(&stats, 5_000);
        assert_eq!(
            value(
                &text,
                "ballast_agent_delivery_refusals_total{reason=\"not_found\"}"
            ),
            0.0
        );
        assert_eq!(value(&text, "ballast_agent_delivery_held_seconds"), 0.0);
        stats.refused(Refusal::NotFound, 10_000);
        stats.refused(Refusal::NotFound, 20_000);
        stats.refused(Refusal::Connect, 30_000);
        let text = render_sink(&stats, 70_000);
        assert_eq!(
            value(
                &text,
                "ballast_agent_delivery_refusals_total{reason=\"not_found\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "ballast_agent_delivery_refusals_total{reason=\"connect\"}"
            ),
            1.0
        );
        assert_eq!(
            value(&text, "ballast_agent_delivery_held_seconds"),
            60.0,
            "held since the first refusal: {text}"
        );
        BatchSent {
            events: 3,
            body_bytes: 100,
            accepted: 3,
            duplicates: 0,
            elapsed: Duration::ZERO,
        }
        .emit(&stats, 80_000);
        let text = render_sink(&stats, 90_000);
        assert_eq!(value(&text, "ballast_agent_delivery_held_seconds"), 0.0);
        assert_eq!(
            value(&text, "ballast_agent_last_delivery_timestamp_seconds"),
            80.0
        );
        assert_eq!(value(&text, "ballast_agent_delivered_events_total"), 3.0);
        assert_eq!(
            text.lines()
                .filter(|line| line.starts_with("ballast_agent_delivery_refusals_total{"))
                .count(),
            Refusal::COUNT,
            "a fixed label set"
        );
    }

    /// A listener on 127.0.0.1 serving an empty fleet, in its own runtime.
    fn listening() -> (tokio::runtime::Runtime, SocketAddr) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let shared = Shared {
            fleet: SharedLock::new("fleet", Fleet::new(10)),
            counters: SharedLock::new("counters", AgentCounters::default()),
            sink: None,
        };
        runtime.spawn(serve_on(listener, shared));
        (runtime, addr)
    }

    /// Sends `request` on a new connection; the whole answer.
    fn exchange(addr: SocketAddr, request: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        answer
    }

    #[test]
    fn only_get_metrics_is_served() {
        let (_runtime, addr) = listening();
        let ok = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{ok}"
        );
        assert!(
            ok.contains("\r\n\r\n# HELP ballast_vm_balloon_actual_bytes"),
            "{ok}"
        );
        assert!(ok.contains("\nballast_agent_vms 0\n"), "{ok}");
        let other = exchange(addr, "GET /other HTTP/1.1\r\nHost: agent\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
        let post = exchange(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: agent\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("allow: GET\r\n"), "{post}");
        let garbage = exchange(addr, "\x16\x03\x01 not http\r\n\r\n");
        assert!(!garbage.contains("ballast_"), "{garbage}");
    }

    #[test]
    fn slow_clients_sending_half_a_request_head_do_not_block_a_scrape() {
        use std::io::{Read, Write};
        let (_runtime, addr) = listening();
        let slow: Vec<std::net::TcpStream> = (0..16)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(addr).expect("connect");
                stream.write_all(b"GET /metr").expect("write");
                stream
            })
            .collect();
        let started = std::time::Instant::now();
        let answer = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the scrape waited {:?} behind slow clients",
            started.elapsed()
        );
        // A slow client is cut off once its head took longer than the header timeout.
        let mut first = slow.into_iter().next().expect("a slow client");
        first
            .set_read_timeout(Some(HEADER_READ_TIMEOUT + Duration::from_secs(5)))
            .expect("timeout");
        let mut rest = Vec::new();
        let closed = first.read_to_end(&mut rest);
        assert!(
            closed.is_ok(),
            "still open {:?} after the slow head began: {closed:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(3),
            "closed only after {:?}",
            started.elapsed()
        );
    }
}
