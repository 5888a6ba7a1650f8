//! Accumulates the lines of one OOM report into a [`Report`].
//!
//! The builder is fed logical lines in order and answers whether the report
//! goes on. It keeps a small "section" state so that the kernel's own multi-line
//! items (Mem-Info, cgroup v2 stats, a zone line printed over several prefixed
//! lines) continue the item they belong to. Lines an editor, terminal or mailer
//! wrapped arrive joined already (`unwrap`).

use crate::fields::{self, Counted, KernelLine, MemcgCounter};
use crate::limits::{MAX_MEMCG_STATS, MAX_STORED_TASKS, MAX_ZONES};
use crate::lines::LogicalLine;
use crate::report::{Killed, LogStamp, MemInfo, Memcg, OomKind, Report, SourceSpan, Task};

/// What the builder wants after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The line belonged to the report; keep feeding.
    Continue,
    /// The line belonged to the report and was its last.
    EndAfter,
    /// The line starts something else: the report ended before it.
    EndBefore,
}

/// Where continuation tokens go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Header,
    MemInfo,
    Node(usize),
    Zone(usize),
    Tasks,
    MemcgStats,
    /// After the kill line: waiting a few lines for `oom_reaper`.
    AfterKill {
        lines_seen: usize,
    },
}

/// Unrecognised lines in a row after which a report whose end was lost is closed.
const MAX_IDLE_LINES: usize = 48;
/// The same for a headless (partial) report, which is only a few kill lines.
const MAX_IDLE_LINES_HEADLESS: usize = 8;

/// Lines after the kill line in which an `oom_reaper` confirmation is still attached.
const REAPER_GRACE_LINES: usize = 8;

pub(crate) struct ReportBuilder {
    report: Report,
    section: Section,
    task_columns: Option<Vec<String>>,
    hugetlb_kb: u64,
    smallest_block_kb: Option<u64>,
    memcg_evidence: bool,
    memcg_kill_line: bool,
    no_killable: bool,
    lines: usize,
    /// The report shows it came from an x86 kernel (4 kB pages).
    x86: bool,
    /// A `Call Trace:` or frame was seen.
    saw_trace: bool,
    /// The poster cut task rows out (`...` inside the table).
    rows_elided: bool,
    /// Victim pid and uid from the `oom-kill:` line, for kill lines that omit the uid.
    summary_victim: Option<(u32, Option<u32>)>,
    /// The trigger came from a CPU line, not an `invoked oom-killer` header.
    headless_trigger: bool,
    /// Consecutive lines that added nothing: a report whose end was lost stops after a few.
    idle_lines: usize,
}

impl ReportBuilder {
    pub fn new(first: &LogicalLine<'_>) -> Self {
        let stamp = LogStamp {
            monotonic_secs: first.prefix.monotonic_secs,
            wallclock: first.prefix.wallclock.map(|w| fields::lossy(w, 64)),
            host: first.prefix.host.map(|h| fields::lossy(h, 255)),
        };
        let report = Report {
            span: SourceSpan {
                start_byte: first.start,
                end_byte: first.end,
                first_line: first.line_no,
            },
            stamp,
            kernel: None,
            kind: OomKind::Global,
            partial: false,
            missing: Vec::new(),
            trigger: None,
            constraint: None,
            memcg: None,
            killed: None,
            tasks: None,
            top_tasks: Vec::new(),
            mem_info: None,
            nodes: Vec::new(),
            zones: Vec::new(),
            ram_pages: None,
            reserved_pages: None,
            highmem_pages: None,
            total_pagecache_pages: None,
            swap_cache_pages: None,
            free_swap_kb: None,
            total_swap_kb: None,
            hugetlb_kb: None,
            page_size_kb: None,
            balloon_in_trace: false,
            panic: None,
            no_killable: false,
            balloon_out_of_puff: false,
            envelope: None,
        };
        Self {
            report,
            section: Section::Header,
            task_columns: None,
            hugetlb_kb: 0,
            smallest_block_kb: None,
            memcg_evidence: false,
            memcg_kill_line: false,
            no_killable: false,
            lines: 0,
            idle_lines: 0,
            headless_trigger: false,
            summary_victim: None,
            saw_trace: false,
            x86: false,
            rows_elided: false,
        }
    }

    /// The host the report's first line named, used to skip other hosts' interleaved lines.
    pub fn host(&self) -> Option<&str> {
        self.report.stamp.host.as_deref()
    }

    pub fn has_header(&self) -> bool {
        self.report.trigger.is_some() && !self.headless_trigger
    }

    /// Feeds one line of the report's stream.
    pub fn feed(&mut self, line: &LogicalLine<'_>) -> Step {
        let classified = fields::classify(line.body);
        if !self.x86
            && matches!(
                classified,
                KernelLine::Trace { .. } | KernelLine::Other | KernelLine::Cpu { .. }
            )
        {
            self.x86 = shows_x86(line.body);
        }
        if let Section::AfterKill { lines_seen } = self.section {
            return self.after_kill(line, classified, lines_seen);
        }
        let idle = matches!(classified, KernelLine::Other) && !self.section_takes_tokens();
        let step = self.apply(line.body, classified);
        self.idle_lines = if idle { self.idle_lines + 1 } else { 0 };
        let idle_limit = if self.has_header() {
            MAX_IDLE_LINES
        } else {
            MAX_IDLE_LINES_HEADLESS
        };
        if self.idle_lines > idle_limit {
            return Step::EndBefore;
        }
        if step != Step::EndBefore {
            self.lines += 1;
            self.report.span.end_byte = line.end;
        }
        step
    }

    fn after_kill(&mut self, line: &LogicalLine<'_>, classified: KernelLine, seen: usize) -> Step {
        match classified {
            KernelLine::Reaped { pid }
                if self.report.killed.as_ref().is_some_and(|k| k.pid == pid) =>
            {
                if let Some(killed) = self.report.killed.as_mut() {
                    killed.reaped = true;
                }
                self.report.span.end_byte = line.end;
                self.lines += 1;
                Step::EndAfter
            }
            KernelLine::Panic { text, no_killable } if self.report.panic.is_none() => {
                self.set_panic(text, no_killable);
                self.report.span.end_byte = line.end;
                self.section = Section::AfterKill { lines_seen: 0 };
                Step::Continue
            }
            KernelLine::NoKillable => {
                self.no_killable = true;
                Step::Continue
            }
            KernelLine::Cpu { pid, comm, kernel } if self.report.panic.is_none() => {
                // A later warning of the same task still names the kernel release.
                self.report.kernel = self.report.kernel.take().or(kernel);
                let _ = (pid, comm);
                self.section = Section::AfterKill {
                    lines_seen: seen + 1,
                };
                Step::Continue
            }
            KernelLine::Cpu { pid, comm, kernel } => {
                // panic() prints the CPU line and trace after its message.
                self.apply_cpu_line(pid, comm);
                self.report.kernel = self.report.kernel.take().or(kernel);
                self.report.span.end_byte = line.end;
                self.section = Section::AfterKill {
                    lines_seen: seen + 1,
                };
                Step::Continue
            }
            // Another CPU's lines (a balloon stalling) may come between the message and
            // panic() or the reaper.
            KernelLine::Other | KernelLine::Trace { .. } | KernelLine::OutOfPuff
                if seen + 1 < REAPER_GRACE_LINES =>
            {
                self.section = Section::AfterKill {
                    lines_seen: seen + 1,
                };
                Step::Continue
            }
            _ => Step::EndBefore,
        }
    }

    fn apply(&mut self, body: &[u8], classified: KernelLine) -> Step {
        match classified {
            KernelLine::Invoked(trigger) => {
                if self.report.trigger.is_some() || self.lines > 0 {
                    return Step::EndBefore;
                }
                self.report.trigger = Some(trigger);
                self.section = Section::Header;
            }
            KernelLine::Cpu { pid, comm, kernel } => {
                self.apply_cpu_line(pid, comm);
                if self.report.kernel.is_none() {
                    self.report.kernel = kernel;
                }
                self.section = Section::Header;
            }
            KernelLine::Trace { balloon } => {
                self.report.balloon_in_trace |= balloon;
                self.saw_trace = true;
                self.section = Section::Header;
            }
            KernelLine::MemInfoStart => {
                self.section = Section::MemInfo;
                self.apply_mem_info_tokens(body);
            }
            KernelLine::Node(info) => {
                if self.report.nodes.len() < MAX_ZONES {
                    self.report.nodes.push(info);
                    self.section = Section::Node(self.report.nodes.len() - 1);
                }
            }
            KernelLine::Zone(zone) => {
                if self.report.zones.len() < MAX_ZONES {
                    self.report.zones.push(zone);
                    self.section = Section::Zone(self.report.zones.len() - 1);
                }
            }
            KernelLine::Buddy {
                node,
                zone,
                blocks_by_order,
                smallest_block_kb,
            } => {
                if let Some(target) = self
                    .report
                    .zones
                    .iter_mut()
                    .find(|z| z.node == node && z.name == zone)
                {
                    target.free_blocks_by_order = blocks_by_order;
                }
                self.smallest_block_kb = self.smallest_block_kb.or(smallest_block_kb);
                self.section = Section::Header;
            }
            KernelLine::Hugepages { total, size_kb } => {
                self.hugetlb_kb = self
                    .hugetlb_kb
                    .saturating_add(total.saturating_mul(size_kb));
                self.report.hugetlb_kb = Some(self.hugetlb_kb);
            }
            KernelLine::Counted(which, value) => {
                let slot = match which {
                    Counted::Ram => &mut self.report.ram_pages,
                    Counted::Reserved => &mut self.report.reserved_pages,
                    Counted::Highmem => &mut self.report.highmem_pages,
                    Counted::Pagecache => &mut self.report.total_pagecache_pages,
                    Counted::SwapCache => &mut self.report.swap_cache_pages,
                };
                // Multi-node machines print `pages RAM` once, but be safe: keep the first.
                slot.get_or_insert(value);
                self.section = Section::Header;
            }
            KernelLine::FreeSwapKb(kb) => self.report.free_swap_kb = Some(kb),
            KernelLine::TotalSwapKb(kb) => self.report.total_swap_kb = Some(kb),
            // The table was printed, even if its header or rows are lost: not null.
            KernelLine::TasksState => {
                self.report.tasks.get_or_insert(0);
                self.section = Section::Tasks;
            }
            KernelLine::TaskHeader(columns) => {
                self.task_columns = Some(columns);
                self.report.tasks.get_or_insert(0);
                self.section = Section::Tasks;
            }
            KernelLine::TaskRow => self.add_task(body),
            KernelLine::MemcgTaskIn { task, limit_of } => {
                self.memcg_evidence = true;
                let memcg = self.memcg();
                memcg.task.get_or_insert(task);
                memcg.oom.get_or_insert(limit_of);
            }
            KernelLine::MemcgCounter {
                counter,
                usage_kb,
                limit_kb,
                failcnt,
            } => self.apply_memcg_counter(counter, usage_kb, limit_kb, failcnt),
            KernelLine::MemcgStats { path, inline } => {
                let memcg = self.memcg();
                memcg.stats.extend(inline);
                memcg.stats.truncate(MAX_MEMCG_STATS);
                if memcg.oom.is_none() {
                    memcg.oom = Some(path);
                }
                self.section = Section::MemcgStats;
            }
            KernelLine::OomKillSummary(summary) => {
                self.report.constraint = summary.constraint;
                self.summary_victim = summary.pid.map(|pid| (pid, summary.uid));
                if summary.oom_memcg.is_some() {
                    self.memcg_evidence = true;
                    self.memcg().oom = summary.oom_memcg;
                }
                // The killed task's cgroup for every kind: for a global OOM it names the
                // service or container that died.
                if let Some(task_memcg) = summary.task_memcg {
                    self.memcg().task = Some(task_memcg);
                }
                self.section = Section::Header;
            }
            KernelLine::KillChoice {
                pid,
                comm,
                score,
                memcg,
            } => {
                self.memcg_kill_line |= memcg;
                self.report.killed = Some(Killed {
                    pid,
                    comm,
                    score,
                    ..Killed::default()
                });
                self.section = Section::Header;
            }
            KernelLine::Killed { mut killed, memcg } => {
                self.memcg_kill_line |= memcg;
                if let Some(choice) = self.report.killed.take() {
                    if choice.pid == killed.pid {
                        killed.score = choice.score;
                    }
                }
                self.report.killed = Some(killed);
                self.section = Section::AfterKill { lines_seen: 0 };
            }
            KernelLine::Reaped { .. } => {}
            KernelLine::Panic { text, no_killable } => {
                self.set_panic(text, no_killable);
                // Keep a few lines: panic() prints the CPU line (kernel, task) after its message.
                self.section = Section::AfterKill { lines_seen: 0 };
            }
            KernelLine::AllocationFailure => return Step::EndBefore,
            KernelLine::OutOfPuff => self.report.balloon_out_of_puff = true,
            KernelLine::NoKillable => {
                self.no_killable = true;
                self.section = Section::AfterKill { lines_seen: 0 };
            }
            KernelLine::Other => {
                if self.section == Section::Tasks && matches!(body, b"..." | b"[...]" | b"<snip>") {
                    self.rows_elided = true;
                }
                self.continue_section(body);
            }
        }
        Step::Continue
    }

    /// The CPU line names the allocating task; a report with no header takes it as the trigger.
    fn apply_cpu_line(&mut self, pid: Option<u32>, comm: Option<String>) {
        match self.report.trigger.as_mut() {
            // Another CPU's line interleaved in the report names another task.
            Some(trigger) if comm.as_ref().is_some_and(|comm| *comm != trigger.comm) => {}
            Some(trigger) => trigger.pid = trigger.pid.or(pid),
            None => {
                if let Some(comm) = comm {
                    self.report.trigger = Some(crate::Trigger {
                        comm,
                        pid,
                        ..crate::Trigger::default()
                    });
                    self.headless_trigger = true;
                }
            }
        }
    }

    fn section_takes_tokens(&self) -> bool {
        matches!(
            self.section,
            Section::MemInfo | Section::Zone(_) | Section::Node(_) | Section::MemcgStats
        )
    }

    fn set_panic(&mut self, text: String, no_killable: bool) {
        self.report.panic = Some(text);
        self.no_killable |= no_killable;
    }

    fn memcg(&mut self) -> &mut Memcg {
        self.report.memcg.get_or_insert_with(Memcg::default)
    }

    fn apply_memcg_counter(
        &mut self,
        counter: MemcgCounter,
        usage_kb: Option<u64>,
        limit_kb: Option<u64>,
        failcnt: Option<u64>,
    ) {
        // Usage and limit lines are printed for memory cgroup OOMs only.
        self.memcg_evidence |= counter == MemcgCounter::Memory;
        let memcg = self.memcg();
        match counter {
            MemcgCounter::Memory => {
                memcg.usage_kb = usage_kb;
                memcg.limit_kb = limit_kb;
                memcg.failcnt = failcnt;
            }
            MemcgCounter::MemorySwap | MemcgCounter::Swap => {
                memcg.swap_usage_kb = usage_kb;
                memcg.swap_limit_kb = limit_kb;
            }
            MemcgCounter::Kmem | MemcgCounter::Other => {}
        }
        self.section = Section::Header;
    }

    fn continue_section(&mut self, body: &[u8]) {
        match self.section {
            Section::MemInfo => self.apply_mem_info_tokens(body),
            Section::MemcgStats => {
                // cgroup v2: `anon 1069170688` per line.
                let mut words = body.split(|b| *b == b' ').filter(|w| !w.is_empty());
                if let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) {
                    if key.iter().all(|b| b.is_ascii_lowercase() || *b == b'_') {
                        if let Some(value) = crate::prefix::parse_u64(value) {
                            let memcg = self.memcg();
                            if memcg.stats.len() < MAX_MEMCG_STATS {
                                memcg.stats.push((fields::lossy(key, 64), value));
                            }
                        }
                    }
                }
            }
            // A zone or node line printed over several lines, each with its prefix (an
            // unprefixed wrap was joined to it already, see `unwrap`).
            Section::Zone(index) => {
                if let Some(zone) = self.report.zones.get_mut(index) {
                    fields::apply_zone_tokens(zone, body);
                }
            }
            Section::Node(index) => {
                if let Some(node) = self.report.nodes.get_mut(index) {
                    fields::apply_node_tokens(node, body);
                }
            }
            Section::Header | Section::Tasks | Section::AfterKill { .. } => {}
        }
    }

    fn apply_mem_info_tokens(&mut self, body: &[u8]) {
        let info = self.report.mem_info.get_or_insert_with(MemInfo::default);
        for (key, value) in fields::key_values(body) {
            let mut lower = [0u8; 32];
            let Some(lower) = lower.get_mut(..key.len()) else {
                continue;
            };
            lower.copy_from_slice(key);
            lower.make_ascii_lowercase();
            let slot = match &*lower {
                b"active" => &mut info.active_pages,
                b"inactive" => &mut info.inactive_pages,
                b"slab" => &mut info.slab_pages,
                b"active_anon" => &mut info.active_anon_pages,
                b"inactive_anon" => &mut info.inactive_anon_pages,
                b"isolated_anon" => &mut info.isolated_anon_pages,
                b"active_file" => &mut info.active_file_pages,
                b"inactive_file" => &mut info.inactive_file_pages,
                b"isolated_file" => &mut info.isolated_file_pages,
                b"unevictable" => &mut info.unevictable_pages,
                b"dirty" => &mut info.dirty_pages,
                b"writeback" => &mut info.writeback_pages,
                b"slab_reclaimable" => &mut info.slab_reclaimable_pages,
                b"slab_unreclaimable" => &mut info.slab_unreclaimable_pages,
                b"mapped" => &mut info.mapped_pages,
                b"shmem" => &mut info.shmem_pages,
                b"pagetables" => &mut info.pagetables_pages,
                b"sec_pagetables" => &mut info.sec_pagetables_pages,
                b"bounce" => &mut info.bounce_pages,
                b"kernel_misc_reclaimable" => &mut info.kernel_misc_reclaimable_pages,
                b"free" => &mut info.free_pages,
                b"free_pcp" => &mut info.free_pcp_pages,
                b"free_cma" => &mut info.free_cma_pages,
                _ => continue,
            };
            *slot = Some(value);
        }
    }

    fn add_task(&mut self, body: &[u8]) {
        let columns = self.task_columns.as_deref();
        // The header's last column is the name; every other one is a number.
        let numeric = columns.map(|c| c.len().saturating_sub(1));
        let Some(row) = fields::task_row(body, numeric) else {
            return;
        };
        let column = |name: &str| -> Option<i64> {
            let index = match columns {
                Some(columns) => columns.iter().position(|c| c == name)?,
                // No header seen: uid tgid total_vm rss come first on every kernel.
                None => ["uid", "tgid", "total_vm", "rss"]
                    .iter()
                    .position(|c| *c == name)?,
            };
            row.numbers.get(index).copied()
        };
        let as_u64 = |value: Option<i64>| value.and_then(|v| u64::try_from(v).ok());
        let task = Task {
            pid: row.pid,
            uid: as_u64(column("uid")).and_then(|v| u32::try_from(v).ok()),
            tgid: as_u64(column("tgid")).and_then(|v| u32::try_from(v).ok()),
            total_vm_pages: as_u64(column("total_vm")),
            rss_pages: as_u64(column("rss")),
            swapents_pages: as_u64(column("swapents")),
            oom_score_adj: column("oom_score_adj").and_then(|v| i32::try_from(v).ok()),
            name: row.name,
        };
        let count = self.report.tasks.get_or_insert(0);
        *count = count.saturating_add(1);
        self.keep_if_large(task);
        self.section = Section::Tasks;
    }

    /// Keeps the [`MAX_STORED_TASKS`] largest tasks by rss.
    fn keep_if_large(&mut self, task: Task) {
        let tasks = &mut self.report.top_tasks;
        let rss = task.rss_pages.unwrap_or(0);
        if tasks.len() < MAX_STORED_TASKS {
            tasks.push(task);
            return;
        }
        if let Some((smallest_index, smallest)) = tasks
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| t.rss_pages.unwrap_or(0))
        {
            if smallest.rss_pages.unwrap_or(0) < rss {
                tasks[smallest_index] = task;
            }
        }
    }

    /// Finishes the report: kind, page size, what is missing.
    pub fn finish(mut self) -> Report {
        let report = &mut self.report;
        report
            .top_tasks
            .sort_by_key(|task| std::cmp::Reverse(task.rss_pages.unwrap_or(0)));
        report.kind = decide_kind(report, self.memcg_evidence || self.memcg_kill_line);
        if let (Some(killed), Some((pid, uid))) = (report.killed.as_mut(), self.summary_victim) {
            if killed.pid == pid && killed.uid.is_none() {
                killed.uid = uid;
            }
        }
        if report.kind != OomKind::Memcg {
            // `Task in /x killed` without a memcg constraint: keep the paths, they still help.
            if let Some(memcg) = &report.memcg {
                if memcg.usage_kb.is_none() && memcg.oom.is_none() && memcg.task.is_none() {
                    report.memcg = None;
                }
            }
        }
        report.page_size_kb = infer_page_size(report, self.smallest_block_kb).or(if self.x86 {
            Some(4)
        } else {
            None
        });
        report.no_killable = self.no_killable;
        report.missing = missing_parts(report, self.no_killable, self.headless_trigger);
        if report.trigger.is_some() && !self.headless_trigger && !self.saw_trace {
            report.missing.push("no call trace".to_string());
        }
        if self.rows_elided {
            report.missing.push("task rows elided".to_string());
        }
        report.partial = !report.missing.is_empty();

        self.report
    }
}

/// Text only x86 kernels print: their base page is always 4 kB.
fn shows_x86(body: &[u8]) -> bool {
    const MARKERS: [&[u8]; 6] = [
        b"RIP: ",
        b"EIP: ",
        b"page_fault",
        b"do_syscall_64",
        b"entry_SYSCALL_64",
        b"x86_64",
    ];
    MARKERS
        .iter()
        .any(|marker| fields::find(body, marker).is_some())
}

fn decide_kind(report: &Report, memcg_evidence: bool) -> OomKind {
    if report.panic.is_some() {
        return OomKind::Panic;
    }
    match report.constraint.as_deref() {
        Some("CONSTRAINT_MEMCG") => return OomKind::Memcg,
        Some("CONSTRAINT_CPUSET") => return OomKind::Cpuset,
        Some("CONSTRAINT_MEMORY_POLICY") => return OomKind::Mempolicy,
        Some("CONSTRAINT_NONE") => return OomKind::Global,
        _ => {}
    }
    if memcg_evidence {
        OomKind::Memcg
    } else {
        OomKind::Global
    }
}

/// The buddy lists print the order-0 block size: that is the page size. Otherwise compare
/// the zone figures (kB) with the Mem-Info ones (pages).
fn infer_page_size(report: &Report, smallest_block_kb: Option<u64>) -> Option<u64> {
    const SIZES: [u64; 4] = [4, 8, 16, 64];
    if let Some(size) = smallest_block_kb.filter(|size| SIZES.contains(size)) {
        return Some(size);
    }
    let ratio_size = |kb: u64, pages: u64| -> Option<u64> {
        if pages < 64 {
            return None;
        }
        let ratio = kb as f64 / pages as f64;
        SIZES
            .iter()
            .copied()
            .find(|size| (ratio / *size as f64 - 1.0).abs() < 0.1)
    };
    let free_kb: u64 = report.zones.iter().filter_map(|z| z.free_kb).sum();
    let free_pages = report.mem_info.as_ref().and_then(|m| m.free_pages);
    if let Some(size) = free_pages.and_then(|pages| ratio_size(free_kb, pages)) {
        return Some(size);
    }
    let present_kb: u64 = report.zones.iter().filter_map(|z| z.present_kb).sum();
    report
        .ram_pages
        .and_then(|pages| ratio_size(present_kb, pages))
}

fn missing_parts(report: &Report, no_killable: bool, headless: bool) -> Vec<String> {
    let mut missing = Vec::new();
    if report.trigger.is_none() || headless {
        missing.push("no 'invoked oom-killer' header".to_string());
    }
    let memcg_report = report.memcg_ran_out();
    if memcg_report {
        if report.memcg.as_ref().and_then(|m| m.usage_kb).is_none() {
            missing.push("no memcg usage lines".to_string());
        }
    } else if report.mem_info.is_none() {
        missing.push("no Mem-Info block".to_string());
    }
    if report.tasks.is_none() {
        missing.push("no task table".to_string());
    }
    if report.killed.is_none() && !no_killable && report.panic.is_none() {
        missing.push("no kill line".to_string());
    }
    missing
}
