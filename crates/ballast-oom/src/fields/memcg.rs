//! Memory cgroup lines (`memory: usage`, `Memory cgroup stats for`) and the
//! `oom-kill:` summary line.

use super::*;

pub(super) fn memcg_counter(name: &[u8], rest: &[u8]) -> KernelLine {
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
pub(super) fn memcg_stats(rest: &[u8]) -> KernelLine {
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
pub(super) fn key_number_pairs(text: &[u8]) -> Vec<(String, u64)> {
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
pub(super) fn oom_kill_summary(rest: &[u8]) -> OomKillSummary {
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
