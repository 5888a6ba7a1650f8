//! Recognises one kernel line of an OOM report and reads its fields.
//!
//! Pure functions over one trimmed line body. The formats come from
//! mm/oom_kill.c, mm/page_alloc.c (`show_free_areas`), lib/show_mem.c and
//! mm/memcontrol.c across kernels 2.6.32 to 6.x. Each recogniser tolerates
//! missing fields: a field it cannot read stays `None`.

use crate::limits::MAX_NAME_BYTES;
use crate::prefix::parse_u64;
use crate::report::{Killed, NodeInfo, Trigger, Zone};

/// What one kernel line is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KernelLine {
    /// `comm invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=N`
    Invoked(Trigger),
    /// `CPU: 0 PID: 1439 Comm: tor Not tainted 4.9.0-4-amd64 #1` (or 2.6.32 `Pid: N, comm: x ...`)
    Cpu {
        pid: Option<u32>,
        comm: Option<String>,
        kernel: Option<String>,
    },
    /// `Call Trace:` or a frame; `balloon` when the frame is `virtballoon_oom_notify`.
    Trace {
        balloon: bool,
    },
    /// `Mem-Info:`
    MemInfoStart,
    /// `Node 0 active_anon:...kB ...` (4.8+ per-node totals)
    Node(NodeInfo),
    /// `Node 0 DMA32 free:...kB min:...`
    Zone(Zone),
    /// `Node 0 DMA32: 2150*4kB (UMEH) ... = 44288kB`
    Buddy {
        node: u32,
        zone: String,
        blocks_by_order: Vec<u64>,
        smallest_block_kb: Option<u64>,
    },
    /// `Node 0 hugepages_total=N hugepages_free=N hugepages_surp=N hugepages_size=NkB`
    Hugepages {
        total: u64,
        size_kb: u64,
    },
    /// `N pages RAM` and friends.
    Counted(Counted, u64),
    /// `Free swap  = NkB` / `Total swap = NkB`
    FreeSwapKb(u64),
    TotalSwapKb(u64),
    /// `[ pid ]   uid  tgid total_vm      rss ... name`: the column names.
    TaskHeader(Vec<String>),
    /// `Tasks state (memory values in pages):` (4.19+), printed right before the header.
    TasksState,
    /// `[ 1439]   109  1439 ...`
    TaskRow,
    /// `Task in /a killed as a result of limit of /b`
    MemcgTaskIn {
        task: String,
        limit_of: String,
    },
    /// `memory: usage NkB, limit NkB, failcnt N` and the swap/kmem variants.
    MemcgCounter {
        counter: MemcgCounter,
        usage_kb: Option<u64>,
        limit_kb: Option<u64>,
        failcnt: Option<u64>,
    },
    /// `Memory cgroup stats for /a: cache:0KB rss:...` (v1 inline) or `... for /a:` (v2, lines follow)
    MemcgStats {
        path: String,
        inline: Vec<(String, u64)>,
    },
    /// `oom-kill:constraint=...,task=x,pid=N,uid=N` (4.19+)
    OomKillSummary(OomKillSummary),
    /// `Out of memory: Kill process N (x) score N or sacrifice child` (pre-5.0)
    KillChoice {
        pid: u32,
        comm: String,
        score: Option<u64>,
        memcg: bool,
    },
    /// `Out of memory: Killed process N (x) total-vm:...`, `Killed process N (x) ...` and RHEL forms.
    Killed {
        killed: Killed,
        memcg: bool,
    },
    /// `oom_reaper: reaped process N (x), now anon-rss:0kB ...`
    Reaped {
        pid: u32,
    },
    /// `Kernel panic - not syncing: Out of memory...`
    Panic {
        text: String,
        no_killable: bool,
    },
    /// `Out of memory and no killable processes...` without a panic (memcg OOMs, newer kernels).
    NoKillable,
    /// `comm: page allocation failure: order:N, mode:...`: a warning, not an OOM.
    AllocationFailure,
    /// `virtio_balloon virtio1: Out of puff! Can't get 1 pages`
    OutOfPuff,
    /// Anything else (may still carry `key:value` tokens that continue a wrapped line).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The single-number lines near the end of `show_mem`; every value is in pages.
pub(crate) enum Counted {
    Ram,
    Reserved,
    Highmem,
    Pagecache,
    SwapCache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemcgCounter {
    Memory,
    MemorySwap,
    Swap,
    Kmem,
    Other,
}

/// The fields of the `oom-kill:` summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OomKillSummary {
    pub constraint: Option<String>,
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    pub task: Option<String>,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub global: bool,
}

/// Classifies one line body.
pub(crate) fn classify(body: &[u8]) -> KernelLine {
    if let Some(at) = find(body, b" invoked oom-killer:") {
        return KernelLine::Invoked(invoked(&body[..at], &body[at + 20..]));
    }
    if let Some(line) = classify_by_opening(body) {
        return line;
    }
    if let Some(line) = classify_kill_lines(body) {
        return line;
    }
    if let Some(line) = counted(body) {
        return line;
    }
    if find(body, b"virtballoon_oom_notify").is_some() {
        return KernelLine::Trace { balloon: true };
    }
    if find(body, b"page allocation failure:").is_some() {
        return KernelLine::AllocationFailure;
    }
    if body.starts_with(b"virtio_balloon") && find(body, b"Out of puff").is_some() {
        return KernelLine::OutOfPuff;
    }
    if is_task_row(body) {
        return KernelLine::TaskRow;
    }
    if looks_like_trace_frame(body) {
        return KernelLine::Trace { balloon: false };
    }
    KernelLine::Other
}

fn classify_by_opening(body: &[u8]) -> Option<KernelLine> {
    if body.starts_with(b"CPU: ") || body.starts_with(b"Pid: ") {
        return Some(cpu_line(body));
    }
    if body.starts_with(b"Call Trace:") || body.starts_with(b"Call trace:") {
        return Some(KernelLine::Trace { balloon: false });
    }
    if body.starts_with(b"Mem-Info:") || body.starts_with(b"Mem-info:") {
        return Some(KernelLine::MemInfoStart);
    }
    if let Some(rest) = body.strip_prefix(b"Node ") {
        return Some(node_line(rest));
    }
    if let Some(line) = nodeless_zone_line(body) {
        return Some(line);
    }
    if body.starts_with(b"Tasks state (memory values in pages)") {
        return Some(KernelLine::TasksState);
    }
    if body.starts_with(b"[") && find(&body[..body.len().min(16)], b"pid").is_some() {
        return Some(KernelLine::TaskHeader(task_header(body)));
    }
    if let Some(rest) = body.strip_prefix(b"oom-kill:") {
        return Some(KernelLine::OomKillSummary(oom_kill_summary(rest)));
    }
    if let Some(rest) = body.strip_prefix(b"oom_reaper: reaped process ") {
        let pid = parse_u64(leading_digits(rest)).and_then(|pid| u32::try_from(pid).ok())?;
        return Some(KernelLine::Reaped { pid });
    }
    if body.starts_with(b"Out of memory and no killable processes") {
        return Some(KernelLine::NoKillable);
    }
    if body.starts_with(b"Out of memory: ") && find(body, b"panic_on_oom is enabled").is_some() {
        // panic()'s message whose `Kernel panic - not syncing: ` was lost (pasted alone).
        return Some(KernelLine::Panic {
            text: lossy(body, MAX_NAME_BYTES),
            no_killable: false,
        });
    }
    if let Some(rest) = body.strip_prefix(b"Kernel panic - not syncing: ") {
        let oom_panic = find(rest, b"Out of memory").is_some()
            || find(rest, b"out of memory").is_some()
            || rest.starts_with(b"System is deadlocked on memory");
        if oom_panic {
            return Some(KernelLine::Panic {
                text: lossy(rest, MAX_NAME_BYTES),
                no_killable: find(rest, b"no killable").is_some(),
            });
        }
        return None;
    }
    if let Some(rest) = body.strip_prefix(b"Task in ") {
        let at = find(rest, b" killed as a result of limit of ")?;
        return Some(KernelLine::MemcgTaskIn {
            task: lossy(&rest[..at], MAX_NAME_BYTES),
            limit_of: lossy(&rest[at + 32..], MAX_NAME_BYTES),
        });
    }
    if let Some(rest) = body.strip_prefix(b"Memory cgroup stats for ") {
        return Some(memcg_stats(rest));
    }
    // `memory+swap: usage ` is the longest counter name (11 bytes).
    if let Some(at) = find(&body[..body.len().min(24)], b": usage ") {
        return Some(memcg_counter(&body[..at], &body[at + 8..]));
    }
    if let Some(rest) = body.strip_prefix(b"Free swap") {
        return Some(KernelLine::FreeSwapKb(number_after(rest, b'=')?));
    }
    if let Some(rest) = body.strip_prefix(b"Total swap") {
        return Some(KernelLine::TotalSwapKb(number_after(rest, b'=')?));
    }
    None
}

fn classify_kill_lines(body: &[u8]) -> Option<KernelLine> {
    let (memcg, rest) = if let Some(rest) = body.strip_prefix(b"Memory cgroup out of memory: ") {
        (true, rest)
    } else if let Some(rest) = body.strip_prefix(b"Out of memory: ") {
        (false, rest)
    } else if let Some(rest) = body.strip_prefix(b"Out of Memory: ") {
        // 2.4 kernels.
        (false, rest)
    } else if let Some(rest) = body.strip_prefix(b"Out of memory (oom_kill_allocating_task): ") {
        (false, rest)
    } else {
        (false, body)
    };
    if let Some(after) = rest.strip_prefix(b"Killed process ") {
        return killed_line(after).map(|killed| KernelLine::Killed { killed, memcg });
    }
    let choice = rest
        .strip_prefix(b"Kill process ")
        .or_else(|| rest.strip_prefix(b"kill process "));
    if let Some(after) = choice {
        let (pid, comm, tail) = pid_and_comm(after)?;
        let score = find(tail, b"score ").and_then(|at| parse_u64(leading_digits(&tail[at + 6..])));
        return Some(KernelLine::KillChoice {
            pid,
            comm,
            score,
            memcg,
        });
    }
    None
}

/// `gfp_mask=0x24201ca(GFP_HIGHUSER_MOVABLE|__GFP_COLD), nodemask=0, order=0, oom_score_adj=0`
fn invoked(comm: &[u8], rest: &[u8]) -> Trigger {
    let mut trigger = Trigger {
        comm: lossy(comm, MAX_NAME_BYTES),
        ..Trigger::default()
    };
    if let Some(mask) = value_after(rest, b"gfp_mask=") {
        let hex_len = mask
            .iter()
            .take_while(|b| b.is_ascii_hexdigit() || **b == b'x')
            .count();
        trigger.gfp_mask = Some(lossy(&mask[..hex_len], 32));
        if let Some(flags) = mask[hex_len..].strip_prefix(b"(") {
            let end = memchr::memchr(b')', flags).unwrap_or(flags.len());
            trigger.gfp_flags = Some(lossy(&flags[..end], 256));
        }
    }
    trigger.order = value_after(rest, b"order=").and_then(parse_u32_prefix);
    trigger.oom_score_adj = value_after(rest, b"oom_score_adj=").and_then(parse_i32_prefix);
    trigger.oom_adj = value_after_word(rest, b"oom_adj=")
        .or_else(|| value_after(rest, b"oomkilladj="))
        .and_then(parse_i32_prefix);
    trigger
}

/// `CPU: 0 PID: 1439 Comm: tor Not tainted 4.9.0-4-amd64 #1 ...` (6.12 adds `UID: 0`),
/// or 2.6.32's `Pid: 1439, comm: tor Not tainted 2.6.32-431.el6.x86_64 #1`.
fn cpu_line(body: &[u8]) -> KernelLine {
    let pid = value_after(body, b"PID: ")
        .or_else(|| value_after(body, b"Pid: "))
        .and_then(parse_u32_prefix);
    let kernel = if let Some(at) = find(body, b" Not tainted ") {
        Some(&body[at + 13..])
    } else if let Some(at) = find(body, b" Tainted: ") {
        // `Tainted: G        W  OE  5.4.0 #1`: flags, then the release.
        let after = &body[at + 10..];
        let mut words = after.split(|b| *b == b' ').filter(|w| !w.is_empty());
        let mut release = None;
        for word in words.by_ref() {
            if word.first().is_some_and(u8::is_ascii_digit) {
                release = Some(word);
                break;
            }
        }
        release
    } else {
        None
    };
    let kernel = kernel.map(|text| {
        let end = text.iter().position(|b| *b == b' ').unwrap_or(text.len());
        lossy(&text[..end], 128)
    });
    let comm = value_after(body, b"Comm: ")
        .or_else(|| value_after(body, b"comm: "))
        .map(|rest| {
            let end = [&b" Not tainted"[..], b" Tainted:", b" Kdump: "]
                .iter()
                .filter_map(|stop| find(rest, stop))
                .min()
                .unwrap_or(rest.len());
            lossy(&rest[..end], MAX_NAME_BYTES)
        });
    KernelLine::Cpu { pid, comm, kernel }
}

/// The release of the last `Linux version 6.1.0-18-amd64 (...) #1 ...` boot banner in
/// `text` (the kernel prints it first at every boot). Searched forward, every banner
/// checked, the last valid one kept: a forward search is several times faster than a
/// reverse one, and this runs over every stream window.
pub(crate) fn last_kernel_banner(text: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    let finder = FINDER.get_or_init(|| memchr::memmem::Finder::new(BANNER));
    let mut last = None;
    for at in finder.find_iter(text) {
        let rest = &text[at + BANNER.len()..];
        let len = rest
            .iter()
            .take(129)
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len().min(129));
        let release = &rest[..len];
        // `Linux version 6.1.0-18-amd64 (debian-kernel@...)`: a release, then the builder.
        let followed_by_builder = rest[len..].starts_with(b" (");
        if followed_by_builder
            && release.first().is_some_and(u8::is_ascii_digit)
            && release.len() <= 128
        {
            last = Some(release);
        }
    }
    last.map(|release| lossy(release, 128))
}

/// Lines starting `Node N `: per-node totals, zones, buddy lists, hugepages.
fn node_line(rest: &[u8]) -> KernelLine {
    let node_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let Some(node) = parse_u64(&rest[..node_len]).and_then(|n| u32::try_from(n).ok()) else {
        return KernelLine::Other;
    };
    let Some(after) = rest[node_len..].strip_prefix(b" ") else {
        return KernelLine::Other;
    };
    if after.starts_with(b"hugepages_total=") {
        let total = value_after(after, b"hugepages_total=").and_then(parse_u64_prefix);
        let size = value_after(after, b"hugepages_size=").and_then(parse_u64_prefix);
        return match (total, size) {
            (Some(total), Some(size_kb)) => KernelLine::Hugepages { total, size_kb },
            _ => KernelLine::Other,
        };
    }
    let word_len = after
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count();
    let word = &after[..word_len];
    let tail = &after[word_len..];
    if let Some(buddy) = tail.strip_prefix(b": ") {
        return buddy_line(node, word, buddy);
    }
    if tail.starts_with(b" free:") {
        return KernelLine::Zone(zone_line(node, word, tail));
    }
    if tail.starts_with(b":") && find(after, b"kB").is_some() {
        // `Node 0 active_anon:...kB ...`: the word was the first key.
        return KernelLine::Node(node_info(node, after));
    }
    KernelLine::Other
}

/// Kernels before 2.6.27 print zones without a node: `Normal free:40136kB ...`, `Normal: 9168*4kB ...`.
fn nodeless_zone_line(body: &[u8]) -> Option<KernelLine> {
    const ZONES: [&[u8]; 6] = [
        b"DMA", b"DMA32", b"Normal", b"HighMem", b"Movable", b"Device",
    ];
    let name = ZONES.iter().rev().find(|zone| body.starts_with(zone))?;
    let tail = &body[name.len()..];
    if tail.starts_with(b" free:") {
        return Some(KernelLine::Zone(zone_line(0, name, tail)));
    }
    let buddy = tail.strip_prefix(b": ")?;
    Some(buddy_line(0, name, buddy))
}

fn zone_line(node: u32, name: &[u8], tokens: &[u8]) -> Zone {
    let mut zone = Zone {
        node,
        name: lossy(name, 32),
        ..Zone::default()
    };
    apply_zone_tokens(&mut zone, tokens);
    zone
}

/// Reads `key:NkB` tokens into a zone (also used for a wrapped zone line's continuation).
pub(crate) fn apply_zone_tokens(zone: &mut Zone, tokens: &[u8]) {
    for (key, value) in key_values(tokens) {
        let slot = match key {
            b"free" => &mut zone.free_kb,
            b"min" => &mut zone.min_kb,
            b"low" => &mut zone.low_kb,
            b"high" => &mut zone.high_kb,
            b"present" => &mut zone.present_kb,
            b"managed" => &mut zone.managed_kb,
            b"kernel_stack" => &mut zone.kernel_stack_kb,
            b"pagetables" => &mut zone.pagetables_kb,
            b"free_pcp" => &mut zone.free_pcp_kb,
            b"free_cma" => &mut zone.free_cma_kb,
            _ => continue,
        };
        *slot = Some(value);
    }
}

fn node_info(node: u32, tokens: &[u8]) -> NodeInfo {
    let mut info = NodeInfo {
        node,
        ..NodeInfo::default()
    };
    apply_node_tokens(&mut info, tokens);
    info
}

pub(crate) fn apply_node_tokens(info: &mut NodeInfo, tokens: &[u8]) {
    for (key, value) in key_values(tokens) {
        match key {
            b"kernel_stack" => info.kernel_stack_kb = Some(value),
            b"pagetables" => info.pagetables_kb = Some(value),
            b"shmem" => info.shmem_kb = Some(value),
            _ => {}
        }
    }
    if let Some(at) = find(tokens, b"all_unreclaimable? ") {
        info.all_unreclaimable = Some(tokens[at + 19..].starts_with(b"yes"));
    }
}

/// `217*4kB (U) 171*8kB (U) 0*32kB ... = 4124kB`
fn buddy_line(node: u32, zone: &[u8], text: &[u8]) -> KernelLine {
    let mut blocks_by_order = Vec::new();
    let mut smallest_block_kb = None;
    for word in text.split(|b| *b == b' ') {
        let Some(star) = memchr::memchr(b'*', word) else {
            continue;
        };
        let (Some(count), Some(size)) = (
            parse_u64(&word[..star]),
            parse_u64_prefix(&word[star + 1..]),
        ) else {
            continue;
        };
        smallest_block_kb.get_or_insert(size);
        if blocks_by_order.len() < 32 {
            blocks_by_order.push(count);
        }
    }
    KernelLine::Buddy {
        node,
        zone: lossy(zone, 32),
        blocks_by_order,
        smallest_block_kb,
    }
}

fn counted(body: &[u8]) -> Option<KernelLine> {
    let digits = leading_digits(body);
    if digits.is_empty() {
        return None;
    }
    let rest = body[digits.len()..].strip_prefix(b" ")?;
    let which = match rest {
        b"pages RAM" | b"pages of RAM" => Counted::Ram,
        b"pages reserved" | b"reserved pages" => Counted::Reserved,
        b"pages HighMem/MovableOnly" | b"pages HighMem" | b"pages of HIGHMEM" => Counted::Highmem,
        b"total pagecache pages" => Counted::Pagecache,
        b"pages in swap cache" => Counted::SwapCache,
        _ => return None,
    };
    Some(KernelLine::Counted(which, parse_u64(digits)?))
}

fn task_header(body: &[u8]) -> Vec<String> {
    let after = memchr::memchr(b']', body).map_or(body, |at| &body[at + 1..]);
    after
        .split(|b| b.is_ascii_whitespace())
        .filter(|word| !word.is_empty())
        .take(24)
        .map(|word| lossy(word, 32))
        .collect()
}

fn is_task_row(body: &[u8]) -> bool {
    let Some(inner) = body.strip_prefix(b"[") else {
        return false;
    };
    let inner = &inner[inner.iter().take_while(|b| **b == b' ').count()..];
    let digits = leading_digits(inner).len();
    digits > 0 && inner[digits..].starts_with(b"]")
}

/// A task row split into its pid, the numeric columns and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRow {
    pub pid: u32,
    pub numbers: Vec<i64>,
    pub name: String,
}

/// Reads a row given how many numeric columns follow the pid (`None`: read all numbers).
pub(crate) fn task_row(body: &[u8], numeric_columns: Option<usize>) -> Option<TaskRow> {
    let inner = body.strip_prefix(b"[")?;
    let close = memchr::memchr(b']', inner)?;
    let pid_text = inner[..close].trim_ascii();
    let pid = u32::try_from(parse_u64(pid_text)?).ok()?;
    let mut rest = &inner[close + 1..];
    let mut numbers = Vec::new();
    loop {
        let trimmed = rest.trim_ascii_start();
        if numeric_columns.is_some_and(|wanted| numbers.len() >= wanted) {
            rest = trimmed;
            break;
        }
        let word_len = trimmed
            .iter()
            .take_while(|b| !b.is_ascii_whitespace())
            .count();
        let Some(number) = parse_i64(&trimmed[..word_len]) else {
            rest = trimmed;
            break;
        };
        if numbers.len() >= 24 {
            rest = trimmed;
            break;
        }
        numbers.push(number);
        rest = &trimmed[word_len..];
    }
    Some(TaskRow {
        pid,
        numbers,
        name: lossy(rest, MAX_NAME_BYTES),
    })
}

fn memcg_counter(name: &[u8], rest: &[u8]) -> KernelLine {
    let counter = match name {
        b"memory" => MemcgCounter::Memory,
        b"memory+swap" => MemcgCounter::MemorySwap,
        b"swap" => MemcgCounter::Swap,
        b"kmem" => MemcgCounter::Kmem,
        _ => MemcgCounter::Other,
    };
    KernelLine::MemcgCounter {
        counter,
        usage_kb: parse_u64_prefix(rest),
        limit_kb: value_after(rest, b"limit ").and_then(parse_u64_prefix),
        failcnt: value_after(rest, b"failcnt ").and_then(parse_u64_prefix),
    }
}

/// `/a: cache:0KB rss:1234KB ...` (v1) or `/a:` (v2).
fn memcg_stats(rest: &[u8]) -> KernelLine {
    // The path ends at the last `:` followed by a space or the end, before any `key:NKB` token.
    let path_end = match find(rest, b": ") {
        Some(at) => at,
        None => rest.strip_suffix(b":").map_or(rest.len(), <[u8]>::len),
    };
    let after = rest.get(path_end + 1..).unwrap_or(&[]);
    let mut inline: Vec<(String, u64)> = key_values(after)
        .take(crate::limits::MAX_MEMCG_STATS)
        .map(|(key, value)| (lossy(key, 64), value))
        .collect();
    if inline.is_empty() {
        // cgroup v2 pasted as one line: `anon 133267456 file 20480 ...`.
        inline = key_number_pairs(after);
    }
    KernelLine::MemcgStats {
        path: lossy(&rest[..path_end], MAX_NAME_BYTES),
        inline,
    }
}

/// `anon 133267456 file 20480 ...` up to the first word that is not such a pair.
fn key_number_pairs(text: &[u8]) -> Vec<(String, u64)> {
    let mut words = text.split(|b| *b == b' ').filter(|word| !word.is_empty());
    let mut pairs = Vec::new();
    while let (Some(key), Some(value)) = (words.next(), words.next()) {
        let is_key = key.iter().all(|b| b.is_ascii_lowercase() || *b == b'_');
        let (true, Some(value)) = (is_key, parse_u64(value)) else {
            break;
        };
        if pairs.len() >= crate::limits::MAX_MEMCG_STATS {
            break;
        }
        pairs.push((lossy(key, 64), value));
    }
    pairs
}

/// `constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=memhog,pid=113,uid=0`
fn oom_kill_summary(rest: &[u8]) -> OomKillSummary {
    let mut summary = OomKillSummary::default();
    // `task=` may hold a comm with commas: take it up to the last `,pid=`.
    let (head, task_and_after) = match find(rest, b",task=") {
        Some(at) => (&rest[..at], Some(&rest[at + 6..])),
        None => (rest, None),
    };
    for field in head.split(|b| *b == b',') {
        if let Some(value) = field.strip_prefix(b"constraint=") {
            summary.constraint = Some(lossy(value, 64));
        } else if let Some(value) = field.strip_prefix(b"oom_memcg=") {
            summary.oom_memcg = Some(lossy(value, MAX_NAME_BYTES));
        } else if let Some(value) = field.strip_prefix(b"task_memcg=") {
            summary.task_memcg = Some(lossy(value, MAX_NAME_BYTES));
        } else if field == b"global_oom" {
            summary.global = true;
        }
    }
    if let Some(tail) = task_and_after {
        let pid_at = rfind(tail, b",pid=");
        let comm_end = pid_at.unwrap_or(tail.len());
        summary.task = Some(lossy(&tail[..comm_end], MAX_NAME_BYTES));
        if let Some(at) = pid_at {
            let after = &tail[at + 5..];
            summary.pid = parse_u32_prefix(after);
            summary.uid = value_after(after, b",uid=").and_then(parse_u32_prefix);
        }
    }
    summary
}

/// After `Killed process `: `N (x) total-vm:...`, RHEL 7 `N (x), UID N, total-vm:...`,
/// RHEL 6 `N, UID N, (x) total-vm:...`.
fn killed_line(text: &[u8]) -> Option<Killed> {
    let (pid, comm, tail, uid) = if let Some((pid, comm, tail)) = pid_and_comm(text) {
        let uid = value_after(tail, b"UID ")
            .or_else(|| value_after(tail, b"UID:"))
            .and_then(parse_u32_prefix);
        (pid, comm, tail, uid)
    } else {
        // RHEL 6: `1234, UID 500, (java) total-vm:...`
        let pid_text = leading_digits(text);
        let pid = u32::try_from(parse_u64(pid_text)?).ok()?;
        let uid = value_after(text, b"UID ").and_then(parse_u32_prefix);
        match memchr::memchr(b'(', text) {
            Some(open) => {
                let (comm, tail) = parenthesised(&text[open..])?;
                (pid, comm, tail, uid)
            }
            // A mail client wrapped the line after the pid: still a kill line (it anchors a
            // report); `unwrap` joins the comm from the next line.
            None if text[pid_text.len()..].trim_ascii().is_empty() => {
                (pid, String::new(), &[][..], None)
            }
            None => return None,
        }
    };
    Some(Killed {
        pid,
        comm,
        uid,
        total_vm_kb: value_after(tail, b"total-vm:").and_then(parse_u64_prefix),
        anon_rss_kb: value_after(tail, b"anon-rss:").and_then(parse_u64_prefix),
        file_rss_kb: value_after(tail, b"file-rss:").and_then(parse_u64_prefix),
        shmem_rss_kb: value_after(tail, b"shmem-rss:").and_then(parse_u64_prefix),
        pgtables_kb: value_after(tail, b"pgtables:").and_then(parse_u64_prefix),
        oom_score_adj: value_after(tail, b"oom_score_adj:").and_then(parse_i32_prefix),
        score: None,
        reaped: false,
    })
}

/// `N (comm) tail`: the comm may itself hold spaces and parentheses.
fn pid_and_comm(text: &[u8]) -> Option<(u32, String, &[u8])> {
    let pid_text = leading_digits(text);
    let pid = u32::try_from(parse_u64(pid_text)?).ok()?;
    let after = text[pid_text.len()..].strip_prefix(b" ")?;
    if !after.starts_with(b"(") {
        return None;
    }
    let (comm, tail) = parenthesised(after)?;
    Some((pid, comm, tail))
}

/// `(x) tail`: ends at the `)` before ` total-vm`, `, UID`, ` score`, `,` or the line end.
fn parenthesised(text: &[u8]) -> Option<(String, &[u8])> {
    let inner = text.strip_prefix(b"(")?;
    let close = [&b") total-vm"[..], b"), UID", b") score", b"), "]
        .iter()
        .filter_map(|end| find(inner, end))
        .min()
        .or_else(|| rfind(inner, b")"))?;
    Some((lossy(&inner[..close], MAX_NAME_BYTES), &inner[close + 1..]))
}

/// A call trace frame. The kernel indents frames (` dump_stack_lvl+0x44/0x5c`,
/// ` ? do_pipe2+0xc3/0x100` after the stamp), so the indent goes first.
fn looks_like_trace_frame(body: &[u8]) -> bool {
    let body = body.trim_ascii_start();
    let text = body.strip_prefix(b"? ").unwrap_or(body);
    if text.starts_with(b"[<") {
        return true;
    }
    // `dump_stack_lvl+0x44/0x5c`
    let name_len = text
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
        .count();
    name_len > 0 && text[name_len..].starts_with(b"+0x")
}

/// Iterates `key:value` tokens; values lose a `kB`/`KB` suffix. `key: value` (4.x node line) also works.
pub(crate) fn key_values(text: &[u8]) -> impl Iterator<Item = (&[u8], u64)> {
    let mut words = text
        .split(|b| b.is_ascii_whitespace() || *b == b',')
        .filter(|word| !word.is_empty())
        .peekable();
    std::iter::from_fn(move || loop {
        let word = words.next()?;
        let Some(colon) = memchr::memchr(b':', word) else {
            continue;
        };
        let key = &word[..colon];
        let mut value = &word[colon + 1..];
        if value.is_empty() {
            match words.peek() {
                Some(next) if next.first().is_some_and(u8::is_ascii_digit) => {
                    value = next;
                    words.next();
                }
                _ => continue,
            }
        }
        if let Some(number) = parse_u64_prefix(value) {
            if !key.is_empty() {
                return Some((key, number));
            }
        }
    })
}

/// Finds the first occurrence of `needle`.
///
/// Haystacks are single lines (at most [`crate::limits::MAX_LINE_BYTES`]) and needles
/// short literals: a search for the first byte and a compare costs less than building
/// a `memmem` searcher per call, and stays linear in the line's length.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, _)) = needle.split_first() else {
        return Some(0);
    };
    memchr::memchr_iter(first, haystack).find(|at| haystack[*at..].starts_with(needle))
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, _)) = needle.split_first() else {
        return Some(haystack.len());
    };
    memchr::memrchr_iter(first, haystack).find(|at| haystack[*at..].starts_with(needle))
}

fn value_after<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    find(text, key).map(|at| &text[at + key.len()..])
}

/// Like [`value_after`] but the key must start a word (`oom_adj=` is inside `oom_score_adj=`).
fn value_after_word<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let first = key.first().copied().unwrap_or(b' ');
    memchr::memchr_iter(first, text)
        .filter(|at| text[*at..].starts_with(key))
        .find(|at| *at == 0 || matches!(text[at - 1], b' ' | b','))
        .map(|at| &text[at + key.len()..])
}

fn number_after(text: &[u8], separator: u8) -> Option<u64> {
    let at = memchr::memchr(separator, text)?;
    parse_u64_prefix(text[at + 1..].trim_ascii_start())
}

fn leading_digits(text: &[u8]) -> &[u8] {
    let n = text.iter().take_while(|b| b.is_ascii_digit()).count();
    &text[..n]
}

pub(crate) fn parse_u64_prefix(text: &[u8]) -> Option<u64> {
    parse_u64(leading_digits(text))
}

fn parse_u32_prefix(text: &[u8]) -> Option<u32> {
    parse_u64_prefix(text).and_then(|value| u32::try_from(value).ok())
}

fn parse_i64(text: &[u8]) -> Option<i64> {
    match text.strip_prefix(b"-") {
        Some(digits) => parse_u64(digits)
            .and_then(|value| i64::try_from(value).ok())
            .map(|value| -value),
        None => parse_u64(text).and_then(|value| i64::try_from(value).ok()),
    }
}

fn parse_i32_prefix(text: &[u8]) -> Option<i32> {
    let negative = text.starts_with(b"-");
    let digits = leading_digits(if negative { &text[1..] } else { text });
    let value = i32::try_from(parse_u64(digits)?).ok()?;
    Some(if negative { -value } else { value })
}

/// Guest bytes as a bounded, valid UTF-8 string (invalid sequences become U+FFFD).
pub(crate) fn lossy(text: &[u8], max_bytes: usize) -> String {
    let cut = &text[..text.len().min(max_bytes)];
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_indented_trace_frame_is_a_frame() {
        for frame in [
            " dump_stack_lvl+0x64/0x80",
            " ? pipe_resize_ring+0x31/0x160",
            "__alloc_pages_noprof+0x2ef/0x310",
            "? do_fcntl+0x133/0x740",
            "  [<ffffffff8117e5a2>] dump_header+0x82/0x214",
        ] {
            assert!(
                matches!(
                    classify(frame.as_bytes()),
                    KernelLine::Trace { balloon: false }
                ),
                "{frame:?}"
            );
        }
        assert!(matches!(classify(b" ? hello world"), KernelLine::Other));
    }

    #[test]
    fn reads_the_invoked_line_of_each_era() {
        let KernelLine::Invoked(new) = classify(
            b"tor invoked oom-killer: gfp_mask=0x24201ca(GFP_HIGHUSER_MOVABLE|__GFP_COLD), nodemask=0, order=0, oom_score_adj=0",
        ) else {
            panic!("not recognised");
        };
        assert_eq!(new.comm, "tor");
        assert_eq!(new.gfp_mask.as_deref(), Some("0x24201ca"));
        assert_eq!(
            new.gfp_flags.as_deref(),
            Some("GFP_HIGHUSER_MOVABLE|__GFP_COLD")
        );
        assert_eq!(
            (new.order, new.oom_score_adj, new.oom_adj),
            (Some(0), Some(0), None)
        );

        let KernelLine::Invoked(old) = classify(
            b"java invoked oom-killer: gfp_mask=0x201da, order=0, oom_adj=0, oom_score_adj=0",
        ) else {
            panic!("not recognised");
        };
        assert_eq!(
            (old.order, old.oom_adj, old.oom_score_adj),
            (Some(0), Some(0), Some(0))
        );
        assert_eq!(old.gfp_flags, None);
    }

    #[test]
    fn finds_the_last_boot_banner_release() {
        let log = b"[    0.000000] Linux version 5.10.0-9-amd64 (debian-kernel@lists.debian.org) (gcc-10) #1 SMP Debian 5.10.70-1\n\
            [ 9.0] reboot: Restarting system\n\
            Jan 2 00:00:00 host kernel: [    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n\
            [ 5.0] audit: Linux version is not a banner\n";
        assert_eq!(last_kernel_banner(log).as_deref(), Some("6.1.0-18-amd64"));
        assert_eq!(
            last_kernel_banner(&log[..100]).as_deref(),
            Some("5.10.0-9-amd64")
        );
        assert_eq!(last_kernel_banner(b"Linux version x (y)\n"), None);
    }

    #[test]
    fn every_out_of_memory_panic_is_a_panic_line() {
        let lines: [(&[u8], &str, bool); 4] = [
            (
                b"Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled",
                "Out of memory: system-wide panic_on_oom is enabled",
                false,
            ),
            (
                b"Kernel panic - not syncing: Out of memory and no killable processes...",
                "Out of memory and no killable processes...",
                true,
            ),
            // The message alone, its `Kernel panic - not syncing: ` lost in a paste.
            (
                b"Out of memory: compulsory panic_on_oom is enabled",
                "Out of memory: compulsory panic_on_oom is enabled",
                false,
            ),
            (
                b"Kernel panic - not syncing: Out of memory: compulsory panic_on_oom is enabled",
                "Out of memory: compulsory panic_on_oom is enabled",
                false,
            ),
        ];
        for (line, want_text, want_no_killable) in lines {
            let KernelLine::Panic { text, no_killable } = classify(line) else {
                panic!("not a panic: {}", String::from_utf8_lossy(line));
            };
            assert_eq!((text.as_str(), no_killable), (want_text, want_no_killable));
        }
        assert!(matches!(
            classify(b"Kernel panic - not syncing: panic_on_warn set ..."),
            KernelLine::Other
        ));
    }

    #[test]
    fn reads_kernel_release_and_pid() {
        let cases: [(&[u8], u32, &str, &str); 5] = [
            (
                b"CPU: 0 PID: 1439 Comm: tor Not tainted 4.9.0-4-amd64 #1 Debian",
                1439,
                "tor",
                "4.9.0-4-amd64",
            ),
            (
                b"CPU: 0 UID: 0 PID: 155 Comm: memhog Not tainted 6.12.95+deb12-amd64 #1",
                155,
                "memhog",
                "6.12.95+deb12-amd64",
            ),
            (
                b"CPU: 3 PID: 9 Comm: java Tainted: G        W  OE     5.4.0-1-generic #2",
                9,
                "java",
                "5.4.0-1-generic",
            ),
            (
                b"Pid: 1234, comm: java Not tainted 2.6.32-431.el6.x86_64 #1",
                1234,
                "java",
                "2.6.32-431.el6.x86_64",
            ),
            // RHEL with kdump armed: the comm ends before `Kdump:`, as the trigger's does.
            (
                b"CPU: 1 PID: 2074 Comm: oom Kdump: loaded Not tainted 4.18.0-477.13.1.el8_8.x86_64 #1",
                2074,
                "oom",
                "4.18.0-477.13.1.el8_8.x86_64",
            ),
        ];
        for (line, pid, comm, kernel) in cases {
            let KernelLine::Cpu {
                pid: got_pid,
                comm: got_comm,
                kernel: got_kernel,
            } = classify(line)
            else {
                panic!("not a CPU line");
            };
            assert_eq!(
                (got_pid, got_comm.as_deref(), got_kernel.as_deref()),
                (Some(pid), Some(comm), Some(kernel))
            );
        }
    }

    #[test]
    fn reads_killed_lines_of_each_era() {
        type Case<'a> = (&'a [u8], u32, &'a str, Option<u32>, Option<u64>);
        let cases: [Case; 5] = [
            (b"Killed process 1439 (tor) total-vm:557104kB, anon-rss:374956kB, file-rss:0kB, shmem-rss:0kB", 1439, "tor", None, Some(374956)),
            (b"Out of memory: Killed process 113 (memhog) total-vm:115676kB, anon-rss:107652kB, file-rss:4kB, shmem-rss:648kB, UID:0 pgtables:252kB oom_score_adj:0", 113, "memhog", Some(0), Some(107652)),
            (b"Killed process 2592 (mysqld), UID 27, total-vm:2068720kB, anon-rss:712020kB, file-rss:0kB", 2592, "mysqld", Some(27), Some(712020)),
            (b"Killed process 4015, UID 500, (java) total-vm:3072456kB, anon-rss:1924888kB, file-rss:116kB", 4015, "java", Some(500), Some(1924888)),
            (b"Memory cgroup out of memory: Killed process 7 (Web Content (x)) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:4kB oom_score_adj:100", 7, "Web Content (x)", Some(1000), Some(5)),
        ];
        for (line, pid, comm, uid, anon) in cases {
            let KernelLine::Killed { killed, .. } = classify(line) else {
                panic!("not recognised: {}", String::from_utf8_lossy(line));
            };
            assert_eq!(
                (
                    killed.pid,
                    killed.comm.as_str(),
                    killed.uid,
                    killed.anon_rss_kb
                ),
                (pid, comm, uid, anon)
            );
        }
    }

    #[test]
    fn reads_zone_and_buddy_lines() {
        let KernelLine::Zone(zone) = classify(b"Node 0 DMA32 free:44288kB min:44336kB low:55420kB high:66504kB present:1032048kB managed:1004452kB kernel_stack:1232kB free_pcp:356kB") else {
            panic!("zone");
        };
        assert_eq!(
            (zone.free_kb, zone.min_kb, zone.managed_kb),
            (Some(44288), Some(44336), Some(1004452))
        );
        let KernelLine::Buddy {
            zone,
            blocks_by_order,
            smallest_block_kb,
            ..
        } = classify(b"Node 0 DMA32: 2150*4kB (UMEH) 2083*8kB (UMEH) 0*16kB = 44288kB")
        else {
            panic!("buddy");
        };
        assert_eq!(
            (zone.as_str(), blocks_by_order, smallest_block_kb),
            ("DMA32", vec![2150, 2083, 0], Some(4))
        );
    }

    #[test]
    fn reads_every_memcg_counter_and_v2_stats_pasted_on_one_line() {
        let counters = [
            (
                "memory: usage 524288kB, limit 524288kB, failcnt 347",
                MemcgCounter::Memory,
            ),
            (
                "memory+swap: usage 2592556kB, limit 9007199254740988kB, failcnt 0",
                MemcgCounter::MemorySwap,
            ),
            (
                "swap: usage 0kB, limit 9007199254740988kB, failcnt 0",
                MemcgCounter::Swap,
            ),
            (
                "kmem: usage 7260kB, limit 9007199254740988kB, failcnt 0",
                MemcgCounter::Kmem,
            ),
        ];
        for (line, want) in counters {
            let KernelLine::MemcgCounter {
                counter, usage_kb, ..
            } = classify(line.as_bytes())
            else {
                panic!("{line}: not a counter");
            };
            assert_eq!(counter, want, "{line}");
            assert!(usage_kb.is_some(), "{line}");
        }
        let KernelLine::MemcgStats { path, inline } =
            classify(b"Memory cgroup stats for /hog.slice: anon 133267456 file 20480 Tasks")
        else {
            panic!("stats");
        };
        assert_eq!(path, "/hog.slice");
        assert_eq!(
            inline,
            [("anon".to_string(), 133267456), ("file".to_string(), 20480)]
        );
    }

    #[test]
    fn reads_the_oom_kill_summary() {
        let KernelLine::OomKillSummary(summary) = classify(b"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods/pod1,task_memcg=/kubepods/pod1/c1,task=a,b,pid=42,uid=1000") else {
            panic!("summary");
        };
        assert_eq!(summary.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(summary.oom_memcg.as_deref(), Some("/kubepods/pod1"));
        assert_eq!(summary.task.as_deref(), Some("a,b"));
        assert_eq!(
            (summary.pid, summary.uid, summary.global),
            (Some(42), Some(1000), false)
        );
    }

    #[test]
    fn task_rows_keep_names_with_spaces() {
        let row = task_row(b"[ 1439]   109  1439   139276    93739     245        3        0             0 Web Content", Some(8))
            .expect("row");
        assert_eq!(
            (row.pid, row.numbers.len(), row.name.as_str()),
            (1439, 8, "Web Content")
        );
        assert_eq!(row.numbers[7], 0);
        let negative = task_row(b"[  467]     0   467    11493      313      24       3        0         -1000 systemd-udevd", Some(8)).expect("row");
        assert_eq!(negative.numbers[7], -1000);
    }

    #[test]
    fn page_allocation_failures_are_not_oom_reports() {
        assert_eq!(
            classify(b"kworker/0:1: page allocation failure: order:4, mode:0x40c0"),
            KernelLine::AllocationFailure
        );
    }
}
