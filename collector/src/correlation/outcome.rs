//! What the correlation found for one OOM ([`Correlation`]): stored as the OOM row's
//! `correlation_json` at ingest, read back typed by the query API, the OOM page and
//! the balloon-policy report. Plain data, so `records` and `storage` may name it
//! without importing the correlation itself.

use serde::{Deserialize, Serialize};

use ballast_model::CorrelationVerdict;

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
}
