//! The query API's records: the stable JSON of `GET /api/v1/*` (documented in
//! docs/collector.md). Both storage engines build them with the same decoders
//! (`storage::queries`), so SQLite and PostgreSQL give the same answers.
//!
//! These are the collector's own output format, not wire types between agent and
//! collector. Text in them that came from a guest (VM names, command names, the raw
//! report) is untrusted: JSON-escaped here, and must be escaped again wherever shown.
//!
//! Example list item (`GET /api/v1/ooms`):
//! ```json
//! {"id":7,"host":"pve1","vm":{"uuid":"3f2a...","name":"web1"},"time_ms":1795658493123,
//!  "kind":"guest","killed":{"pid":113,"comm":"memhog","anon_rss_kb":107652},
//!  "report_verdict":"balloon","correlation":{"verdict":"balloon","balloon_held_kb":319488,
//!  "inflated_kb_before":319488,"seconds_from_inflation":95},"link":"/api/v1/ooms/7"}
//! ```

use serde::Serialize;

use ballast_model::{
    GuardMode, GuardOutcome, MinMaxLast, OomKind, PressureRollup, PressureSignal, PressureSnapshot,
    ReportVerdict, RiskLevel, VmState,
};

use crate::correlation::outcome::{Correlation, HostTook};

/// A VM as named in records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmName {
    pub uuid: String,
    pub name: String,
}

/// The killed task, short form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KilledShort {
    pub pid: Option<i64>,
    pub comm: Option<String>,
    pub anon_rss_kb: Option<i64>,
}

/// The correlation, short form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorrelationShort {
    /// `balloon`, `balloon_contributed`, `not_balloon`, `unknown`.
    pub verdict: ballast_model::CorrelationVerdict,
    pub balloon_held_kb: Option<i64>,
    pub inflated_kb_before: Option<i64>,
    pub seconds_from_inflation: Option<i64>,
    /// The host's side over every mechanism (balloon, virtio-mem): as stored, else
    /// (rows stored before it) the balloon's part. Read this, not `verdict`, to know
    /// whether the host took memory.
    pub host_took: HostTook,
}

/// `host_took` of a stored correlation (`correlation_json`), else the balloon's part;
/// one that does not decode (the detail fails on it) reads as its row's balloon
/// `verdict` and `held_kib` say.
pub fn host_took_of(
    correlation_json: &str,
    verdict: ballast_model::CorrelationVerdict,
    held_kib: Option<u64>,
) -> HostTook {
    serde_json::from_str::<Correlation>(correlation_json)
        .map(|c| c.host_took_or_balloon())
        .unwrap_or_else(|_| HostTook::balloon_only(verdict, held_kib, None))
}

/// Serves `host_took` for every stored correlation: an older row's is the balloon's part.
pub fn fill_host_took(correlation: &mut Correlation) {
    correlation.host_took = Some(correlation.host_took_or_balloon());
}

/// One OOM in a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomSummary {
    pub id: i64,
    pub host: String,
    pub vm: VmName,
    /// When the agent captured the report (host clock), Unix ms.
    pub time_ms: i64,
    /// `guest`, `vm_cgroup`, `host`.
    pub kind: OomKind,
    pub killed: Option<KilledShort>,
    /// The report analysis' verdict (`balloon`, `kernel_unaccounted`, ...).
    pub report_verdict: ReportVerdict,
    pub correlation: CorrelationShort,
    /// `/api/v1/ooms/{id}`.
    pub link: String,
}

/// One page of OOMs, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OomPage {
    pub items: Vec<OomSummary>,
    /// Pass as `cursor=` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One OOM with everything stored about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomDetail {
    #[serde(flatten)]
    pub summary: OomSummary,
    /// `serial`, `guest_agent`, `host_kernel`.
    pub source: String,
    /// The report text as captured (guest-reported, untrusted).
    pub raw_report: String,
    pub raw_truncated: bool,
    /// Reports of this VM the agent's flood control dropped before this one (a
    /// guest printing OOM reports in a loop); 0 = no flood.
    pub flood_suppressed: u64,
    /// The agent's parse of the report.
    pub report: ballast_model::ParsedReport,
    /// The agent's analysis.
    pub analysis: ballast_model::OomAnalysis,
    /// The balloon as the host saw it at the OOM.
    pub balloon_at_oom: ballast_model::BalloonAtOom,
    /// The agent's balloon history before the OOM (oldest first).
    pub balloon_history: Vec<ballast_model::BalloonPoint>,
    pub host_memory: Option<ballast_model::HostMemory>,
    /// The full correlation as stored: a stored correlation that does not decode is
    /// an error, never an empty one.
    pub correlation_detail: Correlation,
    /// Rollups of this VM in the correlation window before the OOM.
    pub rollups: Vec<RollupPoint>,
}

/// One balloon rollup of a VM: the series behind `GET /api/v1/vms/{host}/{uuid}/memory`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RollupPoint {
    pub period_start_ms: i64,
    pub period_secs: i64,
    pub samples: i64,
    pub maximum_kib: Option<u64>,
    pub actual_kib: MinMaxLast,
    pub available_kib: MinMaxLast,
    pub usable_kib: MinMaxLast,
    pub unused_kib: MinMaxLast,
    pub rss_kib: MinMaxLast,
    pub oom_kills: Option<u64>,
    pub alloc_stalls: Option<u64>,
    pub stale: bool,
    pub host_total_kib: Option<u64>,
    pub host_available_kib: Option<u64>,
    /// `none` when the period had no pressure signal (no source answered, or an agent
    /// before schema version 2): not the same as no pressure. `measured` otherwise.
    pub signals: Signals,
    /// The period's pressure (`ballast_model::PressureRollup`: sources, peak rates,
    /// risk), null when `signals` is `none`.
    pub pressure: Option<PressureRollup>,
    /// The period's virtio-mem figures summed over the VM's devices (issue 20); every
    /// one absent when the period had no device.
    #[serde(flatten)]
    pub virtio_mem: VirtioMemSums,
    /// Each virtio-mem device over the period, by device id (only when asked for:
    /// `devices=true`; `storage::virtio_mem_reads::attach_devices`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<VirtioMemDevicePoint>,
}

/// A period's virtio-mem devices summed ([`RollupPoint::virtio_mem`], storage
/// migration 0011): each min/max/last the sum over the devices of the device's
/// min/max/last (so a summed min is at most the true smallest total, a summed max
/// at least the largest), the devices' maximum sizes summed. All None: no device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VirtioMemSums {
    /// What the guest had plugged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugged_kib: Option<MinMaxLast>,
    /// What the host asked the guest to have plugged (`requested-size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_kib: Option<MinMaxLast>,
    /// The most the devices could provide.
    #[serde(rename = "virtio_mem_max_kib", skip_serializing_if = "Option::is_none")]
    pub max_kib: Option<u64>,
    /// The longest any device had been unconverged (plugged != requested) at the
    /// period's end, seconds.
    #[serde(
        rename = "virtio_mem_unconverged_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub unconverged_secs: Option<u64>,
}

impl VirtioMemSums {
    /// The sums over a rollup's devices.
    pub fn of(devices: &[ballast_model::VirtioMemRollup]) -> Self {
        if devices.is_empty() {
            return Self::default();
        }
        let sum = |values: &mut dyn Iterator<Item = Option<u64>>| {
            values.flatten().fold(None, |total: Option<u64>, v| {
                Some(total.unwrap_or(0).saturating_add(v))
            })
        };
        let mml = |pick: fn(&ballast_model::VirtioMemRollup) -> &MinMaxLast| {
            let total = MinMaxLast {
                min: sum(&mut devices.iter().map(|d| pick(d).min)),
                max: sum(&mut devices.iter().map(|d| pick(d).max)),
                last: sum(&mut devices.iter().map(|d| pick(d).last)),
            };
            (total != MinMaxLast::default()).then_some(total)
        };
        Self {
            plugged_kib: mml(|d| &d.plugged_kib),
            requested_kib: mml(|d| &d.requested_kib),
            max_kib: sum(&mut devices.iter().map(|d| d.max_size_kib)),
            unconverged_secs: devices
                .iter()
                .filter_map(|d| d.unconverged_secs.map(u64::from))
                .max(),
        }
    }

    /// Whether the period had any virtio-mem figure.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One virtio-mem resize of a VM (`GET /api/v1/vms/{host}/{uuid}/memory-devices`, the
/// VM page's chart markers), as stored from its `memory_device` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryDeviceRecord {
    pub id: i64,
    pub host: String,
    pub uuid: String,
    /// Guest-controlled text: escape wherever shown.
    pub name: String,
    /// The device's id (QEMU id, libvirt alias): configuration text, escape wherever
    /// shown.
    pub device: String,
    /// When the agent saw it (host clock), Unix ms.
    pub at_ms: i64,
    /// `requested`, `resized`, `stuck`, `converged`.
    pub phase: ballast_model::ResizePhase,
    pub requested_kib: Option<u64>,
    pub plugged_kib: Option<u64>,
    pub previous_requested_kib: Option<u64>,
    pub previous_plugged_kib: Option<u64>,
    pub block_size_kib: Option<u64>,
    pub max_size_kib: Option<u64>,
    /// Since when plugged has differed from requested (host clock), Unix ms.
    pub unconverged_since_ms: Option<i64>,
}

/// One page of a VM's resize events, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmMemoryDevices {
    pub host: String,
    pub uuid: String,
    pub items: Vec<MemoryDeviceRecord>,
    /// Pass as `cursor=` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One virtio-mem device of a VM over one stored period (minute or hour), from
/// `virtio_mem_rollups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtioMemDevicePoint {
    pub period_start_ms: i64,
    pub period_secs: i64,
    /// Configuration text: escape wherever shown.
    pub device: String,
    pub node: Option<u32>,
    pub block_size_kib: Option<u64>,
    pub max_size_kib: Option<u64>,
    pub requested_kib: MinMaxLast,
    pub plugged_kib: MinMaxLast,
    pub unconverged_secs: Option<u64>,
}

/// Whether a memory point had pressure signals ([`RollupPoint::signals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signals {
    /// No source gave a pressure figure in the period.
    #[default]
    None,
    /// At least one source did (`pressure.sources`).
    Measured,
}

impl Signals {
    /// `measured` when `pressure` names a source.
    pub fn of(pressure: Option<&PressureRollup>) -> Self {
        match pressure {
            Some(pressure) if !pressure.sources.is_empty() => Signals::Measured,
            _ => Signals::None,
        }
    }
}

/// A pressure episode of a VM (`GET /api/v1/vms/{host}/{uuid}/pressure`, the
/// overview's "VMs under pressure now"), folded from its start, peak and end events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeRecord {
    pub host: String,
    pub uuid: String,
    /// Guest-controlled text: escape wherever shown.
    pub name: String,
    pub started_at_ms: i64,
    /// The newest phase's time.
    pub last_at_ms: i64,
    /// Null while the episode is open (no end received).
    pub ended_at_ms: Option<i64>,
    /// The worst level of the episode so far.
    pub level: RiskLevel,
    /// The newest start/peak's drivers, strongest first.
    pub drivers: Vec<PressureSignal>,
    /// The newest start/peak's predicted seconds to exhaustion.
    pub exhaustion_secs: Option<u64>,
    /// The newest start/peak's signals.
    pub signals: PressureSnapshot,
    /// The highest of any phase.
    pub peak_alloc_stalls_per_s: Option<f64>,
    pub peak_psi_some_avg10: Option<f64>,
    pub peak_psi_full_avg10: Option<f64>,
    /// The largest deficit any phase estimated.
    pub deficit_kib: Option<u64>,
    /// Some phase found the balloon at its floor.
    pub at_balloon_floor: bool,
    pub balloon_floor_kib: Option<u64>,
    pub actual_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
}

/// A VM's pressure episodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmPressure {
    pub host: String,
    pub uuid: String,
    pub episodes: Vec<EpisodeRecord>,
}

/// One decision of a VM's guard (`GET /api/v1/vms/{host}/{uuid}/guard`,
/// `GET /api/v1/guard`, the VM page's chart and list): what it did or, in `observe`,
/// would have done, the sizes before and after, the signals that triggered it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardRecord {
    pub id: i64,
    pub host: String,
    pub uuid: String,
    /// Guest-controlled text: escape wherever shown.
    pub name: String,
    /// When it was decided (Unix ms, the host's clock).
    pub at_ms: i64,
    pub mode: GuardMode,
    pub outcome: GuardOutcome,
    /// The risk that triggered it.
    pub level: RiskLevel,
    /// The pressure episode it answered, when one was under way.
    pub episode_started_at_ms: Option<i64>,
    /// The balloon's `actual` before, and the target set or that would have been set.
    pub actual_before_kib: Option<u64>,
    pub target_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    pub deficit_kib: Option<u64>,
    pub exhaustion_secs: Option<u64>,
    /// The host's MemAvailable when it decided, and the reserve the guard keeps.
    pub host_available_kib: Option<u64>,
    pub host_reserve_kib: Option<u64>,
    /// The VM's balloon floor before and after (for `overridden_by_host`, the floor
    /// that would hold).
    pub floor_before_kib: Option<u64>,
    pub floor_after_kib: Option<u64>,
    pub drivers: Vec<PressureSignal>,
    pub signals: PressureSnapshot,
    /// Agent-written explanation: escape wherever shown.
    pub detail: String,
}

/// A VM's guard actions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmGuard {
    pub host: String,
    pub uuid: String,
    pub actions: Vec<GuardRecord>,
}

/// A VM's memory series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmMemory {
    pub host: String,
    pub uuid: String,
    pub points: Vec<RollupPoint>,
}

/// A VM from the inventory (or first seen in an OOM).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmRecord {
    pub uuid: String,
    pub name: String,
    pub host: String,
    /// `running`, `paused`, `shut_off`, `crashed`, `other`; `unknown` when only an OOM named it.
    pub state: VmState,
    /// `ballast_model::VmConfig`, null when no inventory named the VM.
    pub config: serde_json::Value,
    pub findings: serde_json::Value,
    pub updated_ms: i64,
    pub oom_count: i64,
}

/// The VM list (one page of it from `GET /api/v1/vms`), by host, name, uuid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmList {
    pub items: Vec<VmRecord>,
    /// Pass as `cursor=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// OOM counts per time bucket and group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OomCount {
    pub bucket_start_ms: i64,
    /// The host, `host/uuid` of a VM or verdict, per `group_by`.
    pub group: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OomCounts {
    pub group_by: String,
    pub bucket_secs: i64,
    pub items: Vec<OomCount>,
}

/// A VM with repeated balloon-induced OOMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepeatOffender {
    pub vm: VmName,
    pub host: String,
    pub count: i64,
    pub first_ms: i64,
    pub last_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepeatOffenders {
    pub items: Vec<RepeatOffender>,
}

/// A host's ingest token, without the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub host: String,
    pub created_ms: i64,
}
