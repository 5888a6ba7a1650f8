//! A parsed OOM report and its analysis as they cross the wire (a stable subset of
//! `ballast_oom`'s types; the collector can always re-parse `raw_report`).

use serde::{Deserialize, Serialize};

/// The allocation that failed (guest-reported).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerInfo {
    pub comm: String,
    pub pid: Option<u32>,
    pub gfp_mask: Option<String>,
    pub order: Option<u32>,
    pub oom_score_adj: Option<i32>,
}

/// The task that was killed (guest-reported).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KilledInfo {
    pub pid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
}

/// Memory cgroup figures (guest-reported).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemcgInfo {
    pub oom: Option<String>,
    pub task: Option<String>,
    pub usage_kb: Option<u64>,
    pub limit_kb: Option<u64>,
}

/// One zone at the OOM (guest-reported).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneInfo {
    pub node: u32,
    pub name: String,
    pub free_kb: Option<u64>,
    pub min_kb: Option<u64>,
    pub managed_kb: Option<u64>,
    pub present_kb: Option<u64>,
    /// The high watermark (absent from older agents).
    #[serde(default)]
    pub high_kb: Option<u64>,
}

/// One of the largest tasks (guest-reported).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub pid: u32,
    pub name: String,
    pub rss_kb: u64,
}

/// The parsed report (guest-reported).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedReport {
    pub kernel: Option<String>,
    /// `global`, `memcg`, `cpuset`, `mempolicy`, `panic` ([`crate::ReportKind`]).
    pub kind: crate::ReportKind,
    pub partial: bool,
    #[serde(default)]
    pub missing: Vec<String>,
    pub trigger: Option<TriggerInfo>,
    pub constraint: Option<String>,
    pub memcg: Option<MemcgInfo>,
    pub killed: Option<KilledInfo>,
    pub tasks: Option<u32>,
    #[serde(default)]
    pub top_tasks: Vec<TaskInfo>,
    #[serde(default)]
    pub zones: Vec<ZoneInfo>,
    pub ram_pages: Option<u64>,
    pub reserved_pages: Option<u64>,
    pub page_size_kb: Option<u64>,
    pub balloon_in_trace: bool,
    /// The guest kernel's time stamp of the report (seconds since the guest booted).
    pub monotonic_secs: Option<f64>,
}

/// The analysis of a report, possibly with host-side balloon figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OomAnalysis {
    pub managed_kb: Option<u64>,
    pub reserved_kb: Option<u64>,
    pub accounted_kb: Option<u64>,
    pub unaccounted_kb: Option<u64>,
    pub unaccounted_pct: Option<f64>,
    /// `balloon`, `kernel_unaccounted`, `memcg_limit`, `fragmentation`, `lowmem_zone`,
    /// `overcommit`, `no_killable`, `unknown` ([`crate::ReportVerdict`]).
    pub verdict: crate::ReportVerdict,
    pub explanation: String,
    /// Best estimate of the memory the balloon held at the OOM.
    pub balloon_held_kb: Option<u64>,
    /// Whether the guest would have fit with the balloon deflated (the counterfactual:
    /// `fits_without_balloon`; kept under this name for older collectors).
    pub would_have_fit: Option<bool>,
    /// What returning the balloon's pages would have given the guest (host maximum -
    /// actual before the kill, else reserved memory above normal). Absent from older agents.
    #[serde(default)]
    pub balloon_excess_kb: Option<u64>,
    /// What the guest lacked at the OOM: the zones below their high watermark plus the
    /// failed allocation.
    #[serde(default)]
    pub shortfall_kb: Option<u64>,
    /// Whether the balloon's pages would have covered the shortfall (false for a memcg).
    #[serde(default)]
    pub fits_without_balloon: Option<bool>,
}

/// The guest wrote these figures: one beyond any machine's memory becomes missing
/// ([`crate::plausible_kib`]) here, where a report becomes a wire type, so the
/// collector's bounds check never sets a real report aside for a guest's forgery.
impl From<&ballast_oom::Report> for ParsedReport {
    fn from(report: &ballast_oom::Report) -> Self {
        use crate::plausible_kib as kib;
        let page_kb = report.page_size_kb.unwrap_or(4);
        Self {
            kernel: report.kernel.clone(),
            kind: report_kind(report.kind),
            partial: report.partial,
            missing: report.missing.clone(),
            trigger: report.trigger.as_ref().map(|t| TriggerInfo {
                comm: t.comm.clone(),
                pid: t.pid,
                gfp_mask: t.gfp_mask.clone(),
                order: t.order,
                oom_score_adj: t.oom_score_adj,
            }),
            constraint: report.constraint.clone(),
            memcg: report.memcg.as_ref().map(|m| MemcgInfo {
                oom: m.oom.clone(),
                task: m.task.clone(),
                usage_kb: kib(m.usage_kb),
                limit_kb: kib(m.limit_kb),
            }),
            killed: report.killed.as_ref().map(|k| KilledInfo {
                pid: k.pid,
                comm: k.comm.clone(),
                uid: k.uid,
                total_vm_kb: kib(k.total_vm_kb),
                anon_rss_kb: kib(k.anon_rss_kb),
                file_rss_kb: kib(k.file_rss_kb),
                shmem_rss_kb: kib(k.shmem_rss_kb),
            }),
            tasks: report.tasks,
            top_tasks: report
                .top_tasks
                .iter()
                .filter_map(|t| {
                    Some(TaskInfo {
                        pid: t.pid,
                        name: t.name.clone(),
                        rss_kb: kib(Some(t.rss_pages.unwrap_or(0).saturating_mul(page_kb)))?,
                    })
                })
                .take(10)
                .collect(),
            zones: report
                .zones
                .iter()
                .map(|z| ZoneInfo {
                    node: z.node,
                    name: z.name.clone(),
                    free_kb: kib(z.free_kb),
                    min_kb: kib(z.min_kb),
                    managed_kb: kib(z.managed_kb),
                    present_kb: kib(z.present_kb),
                    high_kb: kib(z.high_kb),
                })
                .collect(),
            ram_pages: kib(report.ram_pages),
            reserved_pages: kib(report.reserved_pages),
            page_size_kb: report.page_size_kb,
            balloon_in_trace: report.balloon_in_trace,
            monotonic_secs: report.stamp.monotonic_secs,
        }
    }
}

/// Figures derived from the guest's report: bounded as in `ParsedReport::from`.
impl From<&ballast_oom::Analysis> for OomAnalysis {
    fn from(analysis: &ballast_oom::Analysis) -> Self {
        use crate::plausible_kib as kib;
        Self {
            managed_kb: kib(analysis.managed_kb),
            reserved_kb: kib(analysis.reserved_kb),
            accounted_kb: kib(analysis.accounted_kb),
            unaccounted_kb: kib(analysis.unaccounted_kb),
            unaccounted_pct: analysis.unaccounted_pct,
            verdict: report_verdict(analysis.verdict),
            explanation: analysis.explanation.clone(),
            balloon_held_kb: kib(analysis.balloon.held_kb),
            would_have_fit: analysis.balloon.would_have_fit,
            balloon_excess_kb: kib(analysis.balloon_excess_kb),
            shortfall_kb: kib(analysis.shortfall_kb),
            fits_without_balloon: analysis.fits_without_balloon,
        }
    }
}

/// A report kind as the wire names it: the one place `ballast_oom`'s kinds become
/// the wire vocabulary.
pub fn report_kind(kind: ballast_oom::OomKind) -> crate::ReportKind {
    use crate::ReportKind as Wire;
    match kind {
        ballast_oom::OomKind::Global => Wire::Global,
        ballast_oom::OomKind::Memcg => Wire::Memcg,
        ballast_oom::OomKind::Cpuset => Wire::Cpuset,
        ballast_oom::OomKind::Mempolicy => Wire::Mempolicy,
        ballast_oom::OomKind::Panic => Wire::Panic,
    }
}

/// An analysis verdict as the wire names it: the one place `ballast_oom`'s verdicts
/// become the wire vocabulary (its `Unknown`, "the report does not say", is the wire's
/// `unknown`).
pub fn report_verdict(verdict: ballast_oom::Verdict) -> crate::ReportVerdict {
    use crate::ReportVerdict as Wire;
    match verdict {
        ballast_oom::Verdict::Balloon => Wire::Balloon,
        ballast_oom::Verdict::KernelUnaccounted => Wire::KernelUnaccounted,
        ballast_oom::Verdict::MemcgLimit => Wire::MemcgLimit,
        ballast_oom::Verdict::Fragmentation => Wire::Fragmentation,
        ballast_oom::Verdict::LowmemZone => Wire::LowmemZone,
        ballast_oom::Verdict::Overcommit => Wire::Overcommit,
        ballast_oom::Verdict::NoKillable => Wire::NoKillable,
        ballast_oom::Verdict::Unknown => Wire::Unknown,
    }
}
