//! Prometheus metrics of the agent: per-VM balloon gauges, virtio-mem device gauges
//! (`ballast_vm_virtio_mem_*`), pressure signals (`ballast_vm_*_per_second`, the guest's PSI), OOM counters by kind,
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

use crate::elastic::DeviceView;
use crate::fleet::{Fleet, VmState};
use crate::shared::SharedLock;
use crate::sink::{Refusal, SinkStats};

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Counters the run loop bumps.
#[derive(Debug, Clone, Default)]
pub struct AgentCounters {
    pub polls: u64,
    /// The guard's own polls (`guard.poll_interval_secs`) that read at least one VM.
    pub guard_polls: u64,
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
const VM_GAUGES: [VmGauge; 11] = [
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
        "ballast_vm_virtio_mem_not_onlined_bytes",
        "virtio-mem memory plugged but not in the guest's MemTotal past elastic.converge_timeout_secs (not onlined); 0 when all is onlined, no series for a VM without virtio-mem.",
        |vm| {
            vm.elastic
                .as_ref()
                .map(|elastic| elastic.not_onlined_kib().unwrap_or(0).saturating_mul(1024))
        },
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

/// One virtio-mem gauge: its value for a device (`None`: no series for it).
type DeviceGauge = (
    &'static str,
    &'static str,
    fn(&DeviceView<'_>) -> Option<u64>,
);

/// The per-device virtio-mem gauges (issue 20, docs/elastic.md), labelled
/// `vm_uuid`, `vm_name`, `device`.
const DEVICE_GAUGES: [DeviceGauge; 4] = [
    (
        "ballast_vm_virtio_mem_plugged_bytes",
        "Memory the guest has plugged through a virtio-mem device (QEMU size, libvirt <current>).",
        |d| kib(d.device.plugged_kib),
    ),
    (
        "ballast_vm_virtio_mem_requested_bytes",
        "Memory the host asked a virtio-mem device to have plugged (requested-size).",
        |d| kib(d.device.requested_kib),
    ),
    (
        "ballast_vm_virtio_mem_max_bytes",
        "The most a virtio-mem device can give the guest (its memory backend's size).",
        |d| kib(d.device.max_size_kib),
    ),
    (
        "ballast_vm_virtio_mem_stuck",
        "1 while a virtio-mem request is stuck (not met, no progress or past elastic.converge_timeout_secs).",
        |d| Some(u64::from(d.stuck)),
    ),
];

/// One device's labels and the value of each of [`DEVICE_GAUGES`].
type DeviceValues = (
    [(&'static str, String); 3],
    [Option<u64>; DEVICE_GAUGES.len()],
);

/// One scrape of the monitor's state: the fleet's values copied out (under the fleet
/// lock) and the counters, encoded after the locks are released.
#[derive(Debug)]
struct AgentScrape {
    vms: usize,
    /// Per virtio-mem device of every VM: its labels and [`DEVICE_GAUGES`].
    devices: Vec<DeviceValues>,
    /// Per VM: its labels and the value of each of [`VM_GAUGES`].
    values: Vec<(VmLabels, [Option<u64>; VM_GAUGES.len()])>,
    /// Per VM with signals: its labels, [`SIGNAL_GAUGES`] and [`PSI_TOTALS`].
    signals: Vec<VmSignals>,
    counters: AgentCounters,
    pressure_suppressed: u64,
    memory_device_suppressed: u64,
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
        let devices = fleet
            .vms()
            .flat_map(|vm| {
                let elastic = vm.elastic.as_deref();
                elastic.into_iter().flat_map(move |elastic| {
                    elastic.devices().map(move |device| {
                        let labels = [
                            ("vm_uuid", bounded_label(&vm.id.uuid)),
                            ("vm_name", bounded_label(&vm.id.name)),
                            ("device", bounded_label(&device.device.id)),
                        ];
                        (labels, DEVICE_GAUGES.map(|(_, _, value)| value(&device)))
                    })
                })
            })
            .collect();
        Self {
            vms: fleet.len(),
            devices,
            values,
            signals,
            counters,
            pressure_suppressed: fleet.pressure_events_suppressed(),
            memory_device_suppressed: fleet.memory_device_events_suppressed(),
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
        for (index, (name, help, _)) in DEVICE_GAUGES.iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, values) in &self.devices {
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
        counter(
            &mut encoder,
            "ballast_agent_memory_device_events_suppressed_total",
            "virtio-mem resized/stuck/converged events not sent: a VM over its event budget (docs/elastic.md).",
            self.memory_device_suppressed,
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
            "ballast_agent_guard_polls_total",
            "The guard's own polls of the VMs whose balloon holds memory.",
            c.guard_polls,
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
mod tests;
