//! The envelope, the batch and every event an agent sends.

use serde::{Deserialize, Serialize};

use crate::report::{OomAnalysis, ParsedReport};

/// What an agent sends in one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub schema_version: u32,
    /// The sending host; must match the host the bearer token belongs to.
    pub host_id: String,
    pub agent_version: String,
    pub events: Vec<Envelope>,
}

/// One event with its idempotency key and capture time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Fixed when the agent captured the event; the collector stores each key once.
    pub key: String,
    /// Host clock at capture, Unix epoch milliseconds.
    pub captured_at_ms: i64,
    #[serde(flatten)]
    pub event: Event,
}

/// Every kind of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Hello(AgentHello),
    Inventory(Inventory),
    Rollup(Box<BalloonRollup>),
    BalloonChange(BalloonChange),
    Oom(Box<OomEvent>),
    NearMiss(NearMiss),
    Health(AgentHealth),
    /// Schema version 2.
    Pressure(Box<crate::PressureEpisode>),
    /// Schema version 2.
    Guard(Box<crate::GuardAction>),
    /// A virtio-mem resize (schema version 3).
    MemoryDevice(Box<crate::MemoryDeviceChange>),
}

impl Event {
    /// A stable name for logs and metrics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Event::Hello(_) => "hello",
            Event::Inventory(_) => "inventory",
            Event::Rollup(_) => "rollup",
            Event::BalloonChange(_) => "balloon_change",
            Event::Oom(_) => "oom",
            Event::NearMiss(_) => "near_miss",
            Event::Health(_) => "health",
            Event::Pressure(_) => "pressure",
            Event::Guard(_) => "guard",
            Event::MemoryDevice(_) => "memory_device",
        }
    }

    /// The lowest schema version that has this event: a batch says the highest of its
    /// events', so a collector of an older version still takes every batch it can read.
    pub fn schema_version(&self) -> u32 {
        match self {
            Event::Pressure(_) | Event::Guard(_) => 2,
            Event::MemoryDevice(_) => 3,
            _ => 1,
        }
    }
}

impl Batch {
    /// The schema version a batch of `events` needs ([`Event::schema_version`]).
    pub fn schema_version_for(events: &[Envelope]) -> u32 {
        events
            .iter()
            .map(|envelope| envelope.event.schema_version())
            .max()
            .unwrap_or(1)
    }
}

/// Sent when an agent starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHello {
    /// `libvirt` or `proxmox`.
    pub backend: String,
    /// e.g. `serial_capture`, `guest_agent_capture`, `qemu_balloon_counters`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub host_memory_kib: Option<u64>,
}

/// A VM as the agent names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRef {
    pub uuid: String,
    pub name: String,
}

/// The VMs of a host and their configuration audit, sent on start and on change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub vms: Vec<VmInventory>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmInventory {
    pub vm: VmRef,
    /// `running`, `paused`, `shut_off`, `crashed`, `other` ([`crate::VmState`]).
    pub state: crate::VmState,
    pub config: VmConfig,
    /// Audit findings (`stats_period_off`, `deflate_on_oom_off`, ...).
    #[serde(default)]
    pub findings: Vec<String>,
    /// The OpenStack instance this domain is (nova's domain metadata); None elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack: Option<crate::NovaInstance>,
}

/// What the VM's configuration says about memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    pub memory_kib: Option<u64>,
    /// libvirt currentMemory; Proxmox `balloon:` (the floor auto-ballooning may go down to).
    pub balloon_floor_kib: Option<u64>,
    pub balloon_present: bool,
    pub stats_period_secs: Option<u32>,
    pub deflate_on_oom: Option<bool>,
    pub free_page_reporting: Option<bool>,
    pub guest_agent_channel: bool,
    pub serial_log: bool,
    /// Proxmox `shares` (auto-ballooning weight).
    #[serde(default)]
    pub shares: Option<u32>,
    /// The VM's virtio-mem devices as configured (their sizes when the inventory was
    /// taken); empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtio_mem: Vec<crate::VirtioMemDevice>,
}

/// min / max / last of one figure over a rollup period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinMaxLast {
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub last: Option<u64>,
}

impl MinMaxLast {
    /// Folds one value in (None leaves the figure as it was: missing is not 0).
    pub fn add(&mut self, value: Option<u64>) {
        let Some(value) = value else {
            return;
        };
        self.min = Some(self.min.map_or(value, |min| min.min(value)));
        self.max = Some(self.max.map_or(value, |max| max.max(value)));
        self.last = Some(value);
    }
}

/// One VM's balloon over one period (normally a minute).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BalloonRollup {
    pub vm: VmRef,
    pub period_start_ms: i64,
    pub period_secs: u32,
    pub samples: u32,
    pub maximum_kib: Option<u64>,
    pub actual_kib: MinMaxLast,
    /// Guest MemTotal (guest-reported).
    pub available_kib: MinMaxLast,
    /// Guest MemAvailable (guest-reported).
    pub usable_kib: MinMaxLast,
    /// Guest MemFree (guest-reported).
    pub unused_kib: MinMaxLast,
    pub rss_kib: MinMaxLast,
    /// QEMU balloon counters (guest-reported), last value in the period.
    #[serde(default)]
    pub oom_kills: Option<u64>,
    #[serde(default)]
    pub alloc_stalls: Option<u64>,
    /// The guest's stats stopped updating during the period.
    #[serde(default)]
    pub stale: bool,
    /// Host memory at the end of the period.
    #[serde(default)]
    pub host: Option<HostMemory>,
    /// The VM's pressure signals in the period (schema version 2); None: it had none.
    #[serde(default)]
    pub pressure: Option<crate::PressureRollup>,
    /// Each virtio-mem device over the period (issue 20); empty: the VM has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtio_mem: Vec<crate::VirtioMemRollup>,
}

/// The balloon moved (between polls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonChange {
    pub vm: VmRef,
    pub actual_kib: u64,
    pub previous_kib: Option<u64>,
}

/// The host's memory at a moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMemory {
    pub total_kib: Option<u64>,
    pub available_kib: Option<u64>,
    pub psi_some_avg10: Option<f64>,
    pub ksm_sharing_kib: Option<u64>,
}

/// Where the OOM happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OomKind {
    /// The guest kernel killed a process inside the VM.
    Guest,
    /// The host killed inside the VM's cgroup (its QEMU process hit the cgroup limit).
    VmCgroup,
    /// The host ran out and killed a QEMU process.
    Host,
    /// A kind this version does not know (a newer agent's): decodes instead of failing
    /// the whole batch; [`crate::validate()`] refuses it.
    #[serde(other)]
    Unknown,
}

/// How the agent got the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureSource {
    Serial,
    GuestAgent,
    HostKernel,
}

/// One point of the balloon history before an OOM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonPoint {
    pub at_ms: i64,
    pub actual_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    pub available_kib: Option<u64>,
    pub usable_kib: Option<u64>,
    /// `true` for a balloon-change event between polls (only `actual_kib` is fresh).
    #[serde(default)]
    pub event: bool,
    /// The VM's virtio-mem devices summed at this point; None: it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtio_mem: Option<crate::VirtioMemTotals>,
}

/// The balloon as the host saw it when the OOM was captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonAtOom {
    pub maximum_kib: Option<u64>,
    /// From the last host sample taken before the kill was printed: never a sample
    /// taken after it (a stalled balloon finishes inflating once the kill frees
    /// memory), never a target.
    pub actual_kib: Option<u64>,
    pub deflate_on_oom: Option<bool>,
    /// When that sample was taken (Unix ms, host clock).
    #[serde(default)]
    pub sampled_at_ms: Option<i64>,
    /// The kill was printed after this host time (Unix ms): the start of the guest log
    /// read before the one that held the report. None when unknown; the collector then
    /// takes no host sample for the balloon at the OOM.
    #[serde(default)]
    pub kill_after_ms: Option<i64>,
    /// The VM's virtio-mem devices summed, from the same host sample; None: it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtio_mem: Option<crate::VirtioMemTotals>,
}

/// A guest (or VM) OOM with everything the collector needs to correlate it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OomEvent {
    pub vm: VmRef,
    pub kind: OomKind,
    pub source: CaptureSource,
    /// The report text (guest-reported), at most [`crate::Limits::max_raw_report_bytes`].
    pub raw_report: String,
    #[serde(default)]
    pub raw_truncated: bool,
    pub report: ParsedReport,
    pub analysis: OomAnalysis,
    #[serde(default)]
    pub balloon_at_oom: BalloonAtOom,
    /// The balloon before the OOM, oldest first.
    #[serde(default)]
    pub balloon_history: Vec<BalloonPoint>,
    #[serde(default)]
    pub host: Option<HostMemory>,
    /// Reports this VM sent that the agent's flood control dropped before this one.
    #[serde(default)]
    pub flood_suppressed: u64,
}

/// Signs of memory distress without a kill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearMiss {
    pub vm: VmRef,
    /// `out_of_puff` (balloon stalled), `silent_deflate` (deflate-on-oom gave memory
    /// back), `usable_low` (MemAvailable under the threshold while inflated)
    /// ([`crate::NearMissKind`]).
    pub kind: crate::NearMissKind,
    /// The guest line or a short description (guest-reported where it is a line).
    pub detail: String,
    #[serde(default)]
    pub actual_kib: Option<u64>,
    #[serde(default)]
    pub usable_kib: Option<u64>,
}

/// The agent's own health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub vms: u32,
    pub poll_duration_ms: u64,
    pub poll_errors: u64,
    pub spool_bytes: u64,
    pub spool_events: u64,
    /// Rollups dropped because the spool was full (OOM events are never dropped while there is room).
    pub dropped_rollups: u64,
    pub flood_suppressed: u64,
}

/// The collector's answer to a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Keys stored now.
    pub accepted: u32,
    /// Keys that were already stored (a re-sent batch).
    pub duplicates: u32,
}

/// The collector's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The JSON path of the offending field, when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
