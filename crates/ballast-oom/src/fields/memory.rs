//! `show_mem` lines: per-node totals, zones and their watermarks, buddy lists,
//! hugepages (with node numbers, and the nodeless zones of kernels before 2.6.27).

use super::*;

/// Lines starting `Node N `: per-node totals, zones, buddy lists, hugepages.
pub(super) fn node_line(rest: &[u8]) -> KernelLine {
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
pub(super) fn nodeless_zone_line(body: &[u8]) -> Option<KernelLine> {
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

pub(super) fn zone_line(node: u32, name: &[u8], tokens: &[u8]) -> Zone {
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

pub(super) fn node_info(node: u32, tokens: &[u8]) -> NodeInfo {
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
pub(super) fn buddy_line(node: u32, zone: &[u8], text: &[u8]) -> KernelLine {
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
