//! The report's opening lines: the trigger (`invoked oom-killer`), the `CPU:` line
//! (pid, comm, kernel release) and the `Linux version` boot banner.

use super::*;

/// `gfp_mask=0x24201ca(GFP_HIGHUSER_MOVABLE|__GFP_COLD), nodemask=0, order=0, oom_score_adj=0`
pub(super) fn invoked(comm: &[u8], rest: &[u8]) -> Trigger {
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
pub(super) fn cpu_line(body: &[u8]) -> KernelLine {
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
