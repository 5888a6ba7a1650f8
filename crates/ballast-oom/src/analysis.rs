//! What a kernel memory expert computes from one OOM report, and the verdict.
//!
//! All figures are kB. The accounting follows `show_free_areas`: memory the
//! report accounts for is the LRU lists, slab, page tables, kernel stacks,
//! hugetlb pools, free pages and per-cpu free pages. `shmem` and `mapped` are
//! already inside the LRU figures and are not added again. Managed memory is
//! `pages RAM - pages reserved` (the zones' `managed:` sum when those are
//! missing). What managed memory the report does not account for is held by the
//! kernel elsewhere: network buffers, driver pages, vmalloc, or a balloon with
//! deflate-on-oom.
//!
//! Where the balloon shows (verified in the lab): a virtio balloon WITHOUT
//! deflate-on-oom takes its pages out of managed memory, so they appear as
//! `pages reserved` far above what a machine of that size reserves, and zone
//! `managed:` far below `present:`. A `? virtballoon_oom_notify` frame only
//! proves the driver is loaded.
//!
//! The balloon verdict is a counterfactual, not a threshold: `balloon_excess_kb` is
//! what returning the balloon's pages would have given the guest (the host's
//! maximum - actual when supplied, else reserved memory above what a guest of this
//! RAM size reserves, else the zones' `present - managed` above it). The shortfall at
//! the OOM is what the guest lacked to serve the failed allocation and get back to
//! its watermarks: per zone, `high - free` where free is below high, plus the failed
//! allocation (2^order pages). `fits_without_balloon` is whether the excess covers
//! the shortfall; with it true the balloon caused the OOM, whatever its share of RAM.

mod explain;
mod figures;
mod verdict;

use serde::Serialize;

use crate::Report;

pub use figures::ZoneState;

/// The verdict: why the OOM happened, from the report (and host figures when supplied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// RAM was taken out of the guest by a virtio balloon.
    Balloon,
    /// Much of managed memory is held by the kernel outside the report's counters.
    KernelUnaccounted,
    /// A memory cgroup hit its limit.
    MemcgLimit,
    /// A higher-order request failed while free memory was above the watermarks.
    Fragmentation,
    /// One zone (lowmem, DMA32) ran out while another had plenty.
    LowmemZone,
    /// The working set simply exceeded RAM (and swap).
    Overcommit,
    /// Nothing was left that the OOM killer may kill.
    NoKillable,
    /// The report does not hold enough to say.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Balloon => "balloon",
            Verdict::KernelUnaccounted => "kernel_unaccounted",
            Verdict::MemcgLimit => "memcg_limit",
            Verdict::Fragmentation => "fragmentation",
            Verdict::LowmemZone => "lowmem_zone",
            Verdict::Overcommit => "overcommit",
            Verdict::NoKillable => "no_killable",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Balloon figures measured on the host at the time of the OOM (libvirt or QMP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostBalloon {
    /// The VM's configured maximum memory, kB.
    pub maximum_kb: Option<u64>,
    /// The balloon's `actual` (memory left to the guest), kB.
    pub actual_kb: Option<u64>,
    /// Whether the balloon device negotiated deflate-on-oom (libvirt `autodeflate`).
    pub deflate_on_oom: Option<bool>,
}

impl HostBalloon {
    /// Memory the balloon held: maximum - actual.
    pub fn held_kb(&self) -> Option<u64> {
        Some(self.maximum_kb?.saturating_sub(self.actual_kb?))
    }
}

/// Whether the host's last balloon sample before the kill stands for the balloon at the
/// OOM, against `report_held_kb`: what the report's reserved pages show it held (only
/// meaningful without deflate-on-oom). Not when it holds clearly less (more than
/// `slack_kb`) than the report while the newest sample agrees with the report: the
/// balloon inflated between the two, within one poll of the kill. A host figure that
/// never moved stands against the report (its reserved memory may be something else,
/// a crash kernel). Held figures are maximum - actual, None when unknown.
pub fn sample_before_kill_stands(
    before_held_kb: Option<u64>,
    newest_held_kb: Option<u64>,
    report_held_kb: u64,
    slack_kb: u64,
) -> bool {
    let agrees = |held: Option<u64>| {
        held.is_some_and(|held| held.saturating_add(slack_kb) >= report_held_kb)
    };
    !agrees(newest_held_kb) || agrees(before_held_kb)
}

/// One task of the task table, in kB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consumer {
    pub pid: u32,
    pub name: String,
    pub rss_kb: u64,
}

/// What the balloon evidence says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BalloonEvidence {
    /// A `virtballoon_oom_notify` frame is in the trace (the driver is loaded; nothing more).
    pub driver_in_trace: bool,
    /// Reserved memory above the most a guest of this RAM size reserves without a balloon.
    pub reserved_excess_kb: Option<u64>,
    /// maximum - actual measured on the host, when supplied.
    pub host_held_kb: Option<u64>,
    pub deflate_on_oom: Option<bool>,
    /// deflate-on-oom was on and the OOM was guest-wide: the kernel's OOM notifier had
    /// emptied the balloon before this report, so it held nothing at the OOM (the host's
    /// sample before the kill predates that).
    pub deflated_before_kill: bool,
    /// Best estimate of the memory the balloon held at the OOM.
    pub held_kb: Option<u64>,
    /// Whether the guest would have fit had the balloon been empty: the counterfactual,
    /// the same as [`Analysis::fits_without_balloon`].
    pub would_have_fit: Option<bool>,
}

/// The expert figures and the verdict for one report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub page_size_kb: u64,
    pub ram_kb: Option<u64>,
    pub managed_kb: Option<u64>,
    pub reserved_kb: Option<u64>,
    /// What a machine of this RAM size normally reserves (kernel image, memmap).
    pub reserved_typical_kb: Option<u64>,
    pub lru_kb: Option<u64>,
    pub slab_kb: Option<u64>,
    pub pagetables_kb: Option<u64>,
    pub kernel_stack_kb: Option<u64>,
    pub hugetlb_kb: Option<u64>,
    pub free_kb: Option<u64>,
    pub free_pcp_kb: Option<u64>,
    pub accounted_kb: Option<u64>,
    pub unaccounted_kb: Option<u64>,
    /// Unaccounted as a share of managed memory, in percent.
    pub unaccounted_pct: Option<f64>,
    pub zones: Vec<ZoneState>,
    /// The zones that were below their min watermark.
    pub zones_below_min: Vec<String>,
    /// The allocation order; above 0, fragmentation can matter.
    pub order: Option<u32>,
    pub memcg_usage_pct: Option<f64>,
    pub swap_total_kb: Option<u64>,
    pub swap_used_kb: Option<u64>,
    /// Sum of the task table's rss.
    pub tasks_rss_kb: Option<u64>,
    pub top_consumers: Vec<Consumer>,
    pub balloon: BalloonEvidence,
    /// What returning the balloon's pages would have given the guest, kB: host
    /// maximum - actual when known, else the report's reserved memory above normal.
    pub balloon_excess_kb: Option<u64>,
    /// What the guest lacked at the OOM, kB: the zones' shortfall below their high
    /// watermark plus the failed allocation of its order.
    pub shortfall_kb: Option<u64>,
    /// Whether the balloon's pages would have covered the shortfall (false for a
    /// memcg limit, which returning pages to the guest does not lift).
    pub fits_without_balloon: Option<bool>,
    pub verdict: Verdict,
    /// One paragraph for an admin: what happened, the numbers, what to check or change.
    pub explanation: String,
}

/// Analyzes one report; `host` carries the hypervisor's balloon figures when known.
pub fn analyze(report: &Report, host: Option<&HostBalloon>) -> Analysis {
    let mut analysis = figures::compute(report, host);
    analysis.verdict = verdict::decide(report, &analysis);
    analysis.explanation = explain::paragraph(report, &analysis);
    analysis
}
