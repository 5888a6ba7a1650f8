//! Recognises one kernel line of an OOM report and reads its fields.
//!
//! Pure functions over one trimmed line body. The formats come from
//! mm/oom_kill.c, mm/page_alloc.c (`show_free_areas`), lib/show_mem.c and
//! mm/memcontrol.c across kernels 2.6.32 to 6.x. Each recogniser tolerates
//! missing fields: a field it cannot read stays `None`.
//!
//! [`classify`] (here) dispatches on a line's opening; the readers sit by subject:
//! `header` (trigger, `CPU:` line, boot banner), `memory` (`show_mem`), `tasks`, `memcg`
//! (and the `oom-kill:` summary), `kill`, and `tokens` (the byte helpers they share).

use crate::limits::MAX_NAME_BYTES;
use crate::prefix::parse_u64;
use crate::report::{Killed, NodeInfo, Trigger, Zone};

mod header;
mod kill;
mod memcg;
mod memory;
mod tasks;
mod tokens;

pub(crate) use header::*;
use kill::*;
use memcg::*;
pub(crate) use memory::*;
pub(crate) use tasks::*;
pub(crate) use tokens::*;

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

#[cfg(test)]
mod tests;
