//! Decides the verdict from the figures, most specific cause first.
//!
//! 1. no killable task left -> `no_killable`
//! 2. a memory cgroup limit -> `memcg_limit` (the host's balloon is irrelevant)
//! 3. the balloon's pages (host figures, else excess reserved) would have covered the
//!    shortfall at the OOM (`fits_without_balloon`) -> `balloon`, whatever its size
//! 4. one zone empty while another had plenty -> `lowmem_zone`
//! 5. order >= 1 with free memory above the min watermark -> `fragmentation`
//! 6. a large share of managed memory outside every counter -> `kernel_unaccounted`
//! 7. the counters cover managed memory: the working set was too big -> `overcommit`
//! 8. not enough data -> `unknown`

use super::{Analysis, Verdict};
use crate::Report;

/// Unaccounted memory this large (share of managed and absolute) is not normal kernel overhead.
pub(crate) const UNACCOUNTED_SIGNIFICANT_PCT: f64 = 20.0;
pub(crate) const UNACCOUNTED_SIGNIFICANT_KB: u64 = 32 * 1024;

/// A zone "had plenty" with at least this much free (and four times its high watermark).
const PLENTY_FREE_KB: u64 = 32 * 1024;

pub(super) fn decide(report: &Report, analysis: &Analysis) -> Verdict {
    if report.no_killable {
        return Verdict::NoKillable;
    }
    if report.memcg_ran_out() {
        return Verdict::MemcgLimit;
    }
    if balloon_explains(analysis) {
        return Verdict::Balloon;
    }
    if lowmem_zone(analysis) {
        return Verdict::LowmemZone;
    }
    if fragmentation(analysis) {
        return Verdict::Fragmentation;
    }
    if kernel_held_kb(report, analysis).is_some_and(|(kb, pct)| {
        pct >= UNACCOUNTED_SIGNIFICANT_PCT && kb >= UNACCOUNTED_SIGNIFICANT_KB
    }) {
        return Verdict::KernelUnaccounted;
    }
    if analysis.accounted_kb.is_some() && !swap_largely_free(analysis) {
        return Verdict::Overcommit;
    }
    Verdict::Unknown
}

/// Memory the kernel held outside what user space can free: unaccounted memory plus
/// unreclaimable slab (a slab leak is kernel memory too), in kB and % of managed.
pub(crate) fn kernel_held_kb(report: &Report, analysis: &Analysis) -> Option<(u64, f64)> {
    let unaccounted = analysis.unaccounted_kb?;
    let managed = analysis.managed_kb.filter(|managed| *managed > 0)?;
    let unreclaimable_slab = report
        .mem_info
        .as_ref()
        .and_then(|m| m.slab_unreclaimable_pages)
        .unwrap_or(0)
        .saturating_mul(analysis.page_size_kb);
    let held = unaccounted.saturating_add(unreclaimable_slab);
    Some((held, held as f64 * 100.0 / managed as f64))
}

/// Swap with more than a quarter free: the OOM came before swap ran out (a premature OOM).
pub(crate) fn swap_largely_free(analysis: &Analysis) -> bool {
    match (analysis.swap_total_kb, analysis.swap_used_kb) {
        (Some(total), Some(used)) if total > 0 => total.saturating_sub(used) * 4 > total,
        _ => false,
    }
}

/// The balloon explains the OOM when returning its pages would have covered the
/// shortfall at the OOM (a deflate-on-oom balloon had returned them already: it held
/// nothing, see `figures::balloon_evidence`).
pub(super) fn balloon_explains(analysis: &Analysis) -> bool {
    analysis.fits_without_balloon == Some(true)
}

/// A low zone starved while a HIGHER zone had plenty: the request could not use the higher
/// zone. (Free memory in a lower zone next to a starved higher one is held back by
/// `lowmem_reserve` on purpose; that is plain exhaustion, not a lowmem problem.)
fn lowmem_zone(analysis: &Analysis) -> bool {
    let lowest_starved_rank = analysis
        .zones
        .iter()
        .filter(|z| z.below_min == Some(true))
        .filter_map(|z| zone_rank(&z.name))
        .min();
    let Some(starved_rank) = lowest_starved_rank else {
        // No zone the report shows was short, yet the allocation failed: the request could
        // not use those zones (ZONE_MOVABLE for an unmovable request, a cpuset or policy).
        return analysis.order == Some(0)
            && analysis.zones.iter().any(|z| {
                z.below_min == Some(false)
                    && z.free_kb.is_some_and(|free| free >= PLENTY_FREE_KB * 4)
            });
    };
    analysis.zones.iter().any(|z| {
        z.below_min == Some(false)
            && zone_rank(&z.name).is_some_and(|rank| rank > starved_rank)
            && match (z.free_kb, z.high_kb) {
                (Some(free), Some(high)) => {
                    free >= PLENTY_FREE_KB && free >= high.saturating_mul(4)
                }
                _ => false,
            }
    })
}

/// Zones from lowest to highest address range.
fn zone_rank(name: &str) -> Option<u8> {
    match name {
        "DMA" => Some(0),
        "DMA32" => Some(1),
        "Normal" => Some(2),
        "HighMem" => Some(3),
        "Movable" => Some(4),
        _ => None,
    }
}

fn fragmentation(analysis: &Analysis) -> bool {
    let Some(order) = analysis.order.filter(|order| *order > 0) else {
        return false;
    };
    // A usable zone above its min watermark, whose buddy list has no block of the order.
    analysis.zones.iter().any(|z| {
        z.name != "DMA"
            && z.below_min == Some(false)
            && z.managed_kb.is_none_or(|managed| managed > 0)
            && z.largest_free_order.is_none_or(|largest| largest < order)
    })
}
