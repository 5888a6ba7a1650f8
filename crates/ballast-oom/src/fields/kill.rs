//! The kill line (`Killed process N (x) total-vm:...` in its spellings across
//! kernels and RHEL) and the victim's pid and name.

use super::*;

/// After `Killed process `: `N (x) total-vm:...`, RHEL 7 `N (x), UID N, total-vm:...`,
/// RHEL 6 `N, UID N, (x) total-vm:...`.
pub(super) fn killed_line(text: &[u8]) -> Option<Killed> {
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
pub(super) fn pid_and_comm(text: &[u8]) -> Option<(u32, String, &[u8])> {
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
pub(super) fn parenthesised(text: &[u8]) -> Option<(String, &[u8])> {
    let inner = text.strip_prefix(b"(")?;
    let close = [&b") total-vm"[..], b"), UID", b") score", b"), "]
        .iter()
        .filter_map(|end| find(inner, end))
        .min()
        .or_else(|| rfind(inner, b")"))?;
    Some((lossy(&inner[..close], MAX_NAME_BYTES), &inner[close + 1..]))
}
