//! The data a kernel OOM report carries, as parsed (no interpretation here).
//!
//! Every figure keeps the unit the kernel printed it in, in its name: `_kb` for
//! kilobytes, `_pages` for pages of the report's page size. Anything the report
//! did not print is `None`: missing is never zero.

use serde::Serialize;

use crate::envelope::Envelope;

/// What kind of OOM the kernel handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OomKind {
    /// The whole machine ran out (`CONSTRAINT_NONE`, `global_oom`).
    Global,
    /// A memory cgroup hit its limit (`CONSTRAINT_MEMCG`, `Memory cgroup out of memory`).
    Memcg,
    /// The allocation was confined to a cpuset's nodes (`CONSTRAINT_CPUSET`).
    Cpuset,
    /// The allocation was confined by a NUMA memory policy (`CONSTRAINT_MEMORY_POLICY`).
    Mempolicy,
    /// The kernel panicked instead of killing (`no killable processes`, `panic_on_oom`).
    Panic,
}

/// Where in the input a report was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceSpan {
    /// Byte offset of the first line of the report.
    pub start_byte: usize,
    /// Byte offset just past the last line that belonged to the report.
    pub end_byte: usize,
    /// 1-based physical line number of the first line.
    pub first_line: usize,
}

/// The time stamps the log prefix of the report's first line carried.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogStamp {
    /// Seconds since the guest booted (`[ 123.456789]`), when printed.
    pub monotonic_secs: Option<f64>,
    /// Wall-clock text as printed by syslog, `dmesg -T` or journalctl (not parsed: its zone is unknown).
    pub wallclock: Option<String>,
    /// Host name from a syslog or journal prefix.
    pub host: Option<String>,
}

/// The task whose allocation failed (`X invoked oom-killer: ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub comm: String,
    /// From the `CPU: N PID: N Comm: X` line that follows; None when it was not printed.
    pub pid: Option<u32>,
    /// Hex text as printed, e.g. `0x24201ca`.
    pub gfp_mask: Option<String>,
    /// The flag names the kernel printed after the mask, e.g. `GFP_HIGHUSER_MOVABLE|__GFP_COLD`.
    pub gfp_flags: Option<String>,
    pub order: Option<u32>,
    pub oom_score_adj: Option<i32>,
    /// Pre-2.6.36 kernels (and RHEL 6) print `oom_adj=`.
    pub oom_adj: Option<i32>,
}

/// The task the OOM killer chose and killed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Killed {
    pub pid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    pub oom_score_adj: Option<i32>,
    /// The badness score of the `Kill process N (x) score N` line (pre-5.0 kernels).
    pub score: Option<u64>,
    /// The oom_reaper confirmed it freed this task's memory.
    pub reaped: bool,
}

/// Memory cgroup details for memcg-constrained reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Memcg {
    /// The cgroup whose limit was hit (`oom_memcg=`, or "as a result of limit of X").
    pub oom: Option<String>,
    /// The cgroup of the killed task (`task_memcg=`, or "Task in X killed").
    pub task: Option<String>,
    pub usage_kb: Option<u64>,
    pub limit_kb: Option<u64>,
    pub failcnt: Option<u64>,
    /// `memory+swap:` (cgroup v1) or `swap:` (cgroup v2) usage and limit.
    pub swap_usage_kb: Option<u64>,
    pub swap_limit_kb: Option<u64>,
    /// The `Memory cgroup stats for X:` dump, in the units printed (bytes on v2, kB on v1 `...KB` keys).
    pub stats: Vec<(String, u64)>,
}

/// One `Node N ZONE free:...` line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Zone {
    pub node: u32,
    /// `DMA`, `DMA32`, `Normal`, `HighMem`, `Movable`, `Device`.
    pub name: String,
    pub free_kb: Option<u64>,
    pub min_kb: Option<u64>,
    pub low_kb: Option<u64>,
    pub high_kb: Option<u64>,
    pub present_kb: Option<u64>,
    pub managed_kb: Option<u64>,
    pub kernel_stack_kb: Option<u64>,
    pub pagetables_kb: Option<u64>,
    pub free_pcp_kb: Option<u64>,
    /// Free pages in CMA areas, which most allocations may not use.
    pub free_cma_kb: Option<u64>,
    /// Free blocks per order from the buddy line (`N*4kB`), index = order.
    pub free_blocks_by_order: Vec<u64>,
}

/// The global `Mem-Info:` counters, in pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemInfo {
    pub active_anon_pages: Option<u64>,
    pub inactive_anon_pages: Option<u64>,
    pub isolated_anon_pages: Option<u64>,
    pub active_file_pages: Option<u64>,
    pub inactive_file_pages: Option<u64>,
    pub isolated_file_pages: Option<u64>,
    pub unevictable_pages: Option<u64>,
    pub dirty_pages: Option<u64>,
    pub writeback_pages: Option<u64>,
    pub slab_reclaimable_pages: Option<u64>,
    pub slab_unreclaimable_pages: Option<u64>,
    pub mapped_pages: Option<u64>,
    pub shmem_pages: Option<u64>,
    pub pagetables_pages: Option<u64>,
    pub sec_pagetables_pages: Option<u64>,
    pub bounce_pages: Option<u64>,
    pub kernel_misc_reclaimable_pages: Option<u64>,
    pub free_pages: Option<u64>,
    pub free_pcp_pages: Option<u64>,
    pub free_cma_pages: Option<u64>,
    /// Kernels before 2.6.28 do not split the LRU into anon and file: `Active:`/`inactive:`.
    pub active_pages: Option<u64>,
    pub inactive_pages: Option<u64>,
    /// Kernels before 2.6.26 print one `slab:` figure.
    pub slab_pages: Option<u64>,
}

/// Per-node figures printed in kB on the `Node N active_anon:...` line (4.8+).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub node: u32,
    pub kernel_stack_kb: Option<u64>,
    pub pagetables_kb: Option<u64>,
    pub shmem_kb: Option<u64>,
    pub all_unreclaimable: Option<bool>,
}

/// One row of the task table (values converted to kB with the report's page size where known).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Task {
    pub pid: u32,
    pub uid: Option<u32>,
    pub tgid: Option<u32>,
    pub total_vm_pages: Option<u64>,
    pub rss_pages: Option<u64>,
    pub swapents_pages: Option<u64>,
    pub oom_score_adj: Option<i32>,
    pub name: String,
}

/// One parsed OOM report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub span: SourceSpan,
    pub stamp: LogStamp,
    /// Kernel release from the `CPU: ... Comm: x Not tainted 4.9.0-4-amd64 #1` line.
    pub kernel: Option<String>,
    pub kind: OomKind,
    /// Lines the full report normally has were not found (console loglevel, truncation).
    pub partial: bool,
    /// What the report lacks, in words (`"no Mem-Info block"`).
    pub missing: Vec<String>,
    pub trigger: Option<Trigger>,
    /// `CONSTRAINT_*` as printed on 4.19+ kernels.
    pub constraint: Option<String>,
    pub memcg: Option<Memcg>,
    pub killed: Option<Killed>,
    /// The number of rows in the task table (every row counted, even past the stored cap).
    pub tasks: Option<u32>,
    /// The largest tasks by rss, at most [`crate::limits::MAX_STORED_TASKS`].
    pub top_tasks: Vec<Task>,
    pub mem_info: Option<MemInfo>,
    pub nodes: Vec<NodeInfo>,
    pub zones: Vec<Zone>,
    pub ram_pages: Option<u64>,
    pub reserved_pages: Option<u64>,
    pub highmem_pages: Option<u64>,
    pub total_pagecache_pages: Option<u64>,
    pub swap_cache_pages: Option<u64>,
    pub free_swap_kb: Option<u64>,
    pub total_swap_kb: Option<u64>,
    /// Memory in hugetlb pools (`hugepages_total` x `hugepages_size`, summed over nodes).
    pub hugetlb_kb: Option<u64>,
    /// Page size in kB, read from the buddy lists or inferred from zone figures; None when
    /// the report does not tell (the analysis then assumes 4 kB).
    pub page_size_kb: Option<u64>,
    /// A `virtballoon_oom_notify` frame appears in the call trace.
    pub balloon_in_trace: bool,
    /// The kernel panicked (`Kernel panic - not syncing: Out of memory...`).
    pub panic: Option<String>,
    /// The panic said there was no killable process left.
    pub no_killable: bool,
    /// `virtio_balloon ...: Out of puff!` lines seen in the report's stream before it.
    pub balloon_out_of_puff: bool,
    /// The kill line was read out of another program's message (a Kubernetes event,
    /// node-problem-detector's log, a JSON or YAML string), not out of the kernel's log:
    /// the report holds only the kill line's figures. `None` for the kernel's own lines.
    pub envelope: Option<Envelope>,
}

impl Report {
    /// A memory cgroup ran out: a memcg OOM, or one the kernel answered with a panic
    /// (`compulsory panic_on_oom` panics on memcg OOMs too).
    pub fn memcg_ran_out(&self) -> bool {
        match self.kind {
            OomKind::Memcg => true,
            OomKind::Panic => self.memcg.as_ref().is_some_and(|m| m.oom.is_some()),
            OomKind::Global | OomKind::Cpuset | OomKind::Mempolicy => false,
        }
    }

    /// The report ended: its kill line, a panic or "no killable process" came. A
    /// report without one was cut (a lost end) or is still being printed.
    pub fn has_end(&self) -> bool {
        self.killed.is_some() || self.panic.is_some() || self.no_killable
    }
}
