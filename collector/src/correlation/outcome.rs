//! What the correlation found for one OOM ([`Correlation`]): stored as the OOM row's
//! `correlation_json` at ingest, read back typed by the query API, the OOM page and
//! the balloon-policy report. Plain data, so `records` and `storage` may name it
//! without importing the correlation itself.

use serde::{Deserialize, Serialize};

use ballast_model::{CorrelationVerdict, ElasticMechanism, HostTookVerdict};

/// Where the held figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldSource {
    /// maximum - actual measured by the host at the OOM.
    HostAtOom,
    /// maximum - actual of the newest host sample before the OOM.
    HostHistory,
    /// Estimated from the report (reserved memory far above normal).
    Report,
    /// deflate-on-oom was on: the guest's kernel empties the balloon (its OOM notifier)
    /// before it kills, so it held nothing at a guest-wide OOM, whatever the host's last
    /// sample before it showed.
    DeflatedBeforeKill,
    /// A source this version does not know (a newer collector's, sharing the store).
    #[serde(other)]
    Unknown,
}

/// Everything the correlation found for one OOM; all memory in KiB (= kernel kB).
/// A field an older collector did not store reads as None (or empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    pub verdict: CorrelationVerdict,
    /// Plain-language reasons, most important first.
    #[serde(default)]
    pub reasons: Vec<String>,
    pub maximum_kib: Option<u64>,
    pub actual_kib: Option<u64>,
    pub balloon_held_kb: Option<u64>,
    pub held_source: Option<HeldSource>,
    pub deflate_on_oom: Option<bool>,
    /// The configured floor (libvirt currentMemory, Proxmox `balloon:`).
    pub floor_kib: Option<u64>,
    /// Host samples in the window (history points and rollups).
    #[serde(default)]
    pub window_points: usize,
    /// How far the balloon came down from its peak in the window to the OOM.
    pub inflated_kb_before: Option<u64>,
    pub inflation_started_at_ms: Option<i64>,
    pub seconds_from_inflation: Option<i64>,
    pub inflation_kib_per_sec: Option<u64>,
    /// Guest MemAvailable, newest sample before the OOM.
    pub usable_kib_before: Option<u64>,
    /// Allocation stalls counted in the window (QEMU balloon counters).
    pub alloc_stalls_in_window: Option<u64>,
    pub host_used_pct: Option<f64>,
    pub host_above_target: Option<bool>,
    pub unaccounted_kb: Option<u64>,
    /// Whether the held memory accounts for the report's unaccounted memory.
    pub held_explains_unaccounted: Option<bool>,
    /// What the guest lacked at the OOM: the zones below their high watermark (min from
    /// older agents) plus the failed allocation.
    pub needed_kb: Option<u64>,
    /// The memory in use the report shows: managed memory less the zones' free memory
    /// (the rollups may miss fast growth; the report does not).
    pub in_use_kb: Option<u64>,
    /// Why returning the balloon's pages could not have prevented this kill, if so.
    pub not_preventable: Option<String>,
    /// With the balloon deflated, would the guest have survived?
    pub would_have_survived: Option<bool>,
    /// The host's side over every way it takes memory (the balloon and virtio-mem);
    /// `verdict` above stays the balloon's alone. None when the host sent no figure of
    /// any mechanism (then the JSON is the older collectors' byte for byte); rows
    /// stored before it read it from the balloon's figures ([`Correlation::host_took_or_balloon`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_took: Option<HostTook>,
}

impl Correlation {
    /// `host_took` as stored, else (a row stored before it, or one with no figures) the
    /// balloon's part alone: exact for those rows, whose agents sent no virtio-mem.
    pub fn host_took_or_balloon(&self) -> HostTook {
        self.host_took
            .clone()
            .unwrap_or_else(|| HostTook::from_balloon(self))
    }
}

/// What the host held back from the guest at the OOM, over every mechanism, and
/// whether giving it all back would have prevented the kill. All memory in KiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTook {
    pub verdict: HostTookVerdict,
    /// Every mechanism that held memory at the OOM (its part above 0), whether or not
    /// giving it back would have mattered (`verdict` weighs that).
    #[serde(default)]
    pub mechanisms: Vec<ElasticMechanism>,
    /// The balloon's part: `balloon_held_kb`.
    #[serde(default)]
    pub balloon_kib: Option<u64>,
    /// virtio-mem's part: the devices' size less what the guest had plugged at the OOM
    /// (blocks the host unplugged, or never plugged).
    #[serde(default)]
    pub unplugged_kib: Option<u64>,
    /// Both parts: what the guest would have had more with everything given back.
    #[serde(default)]
    pub total_kib: Option<u64>,
    /// When the host began lowering the virtio-mem request in the window (the first host
    /// sample after the request's peak showing a lower one), if it did.
    #[serde(default)]
    pub requested_lowered_at_ms: Option<i64>,
    /// With the blocks back and the balloon deflated, would the guest have survived?
    #[serde(default)]
    pub would_have_survived: Option<bool>,
    /// How far the request came down from its peak in the window to the OOM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_lowered_kib: Option<u64>,
    /// The virtio-mem devices summed at the OOM (plugged, requested, size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtio_mem: Option<ballast_model::VirtioMemTotals>,
}

impl HostTook {
    /// The balloon's part alone, as its correlation verdict says.
    pub fn from_balloon(c: &Correlation) -> Self {
        Self::balloon_only(c.verdict, c.balloon_held_kb, c.would_have_survived)
    }

    /// The balloon's part from its verdict, what it held and its counterfactual.
    pub fn balloon_only(
        balloon: CorrelationVerdict,
        held_kib: Option<u64>,
        would_have_survived: Option<bool>,
    ) -> Self {
        let verdict = match balloon {
            CorrelationVerdict::Balloon => HostTookVerdict::HostTookMemory,
            CorrelationVerdict::BalloonContributed => HostTookVerdict::HostContributed,
            CorrelationVerdict::NotBalloon => HostTookVerdict::NotHost,
            CorrelationVerdict::Unknown => HostTookVerdict::Unknown,
        };
        Self {
            verdict,
            mechanisms: held_kib
                .filter(|held| *held > 0)
                .map(|_| ElasticMechanism::Balloon)
                .into_iter()
                .collect(),
            balloon_kib: held_kib,
            unplugged_kib: None,
            total_kib: held_kib,
            requested_lowered_at_ms: None,
            would_have_survived,
            requested_lowered_kib: None,
            virtio_mem: None,
        }
    }
}
