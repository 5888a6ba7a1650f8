//! The figures of an [`Analysis`]: accounting, watermarks, balloon evidence.

use serde::Serialize;

use super::{Analysis, BalloonEvidence, Consumer, HostBalloon, Verdict};
use crate::Report;

/// How many of the largest tasks an analysis lists.
const TOP_CONSUMERS: usize = 5;

/// One zone's state at the OOM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneState {
    pub node: u32,
    pub name: String,
    pub free_kb: Option<u64>,
    pub min_kb: Option<u64>,
    pub high_kb: Option<u64>,
    pub managed_kb: Option<u64>,
    pub present_kb: Option<u64>,
    /// free < min: the allocator could not serve ordinary requests from this zone.
    pub below_min: Option<bool>,
    /// The highest order with a free block, from the buddy list.
    pub largest_free_order: Option<u32>,
}

/// What a machine normally reserves: ~48 MiB of kernel image and early allocations plus
/// the page map (64 bytes per 4 kB page, 1.6 %). Real guests sit at or below this.
pub(crate) fn typical_reserved_kb(ram_kb: u64) -> u64 {
    48 * 1024 + ram_kb * 16 / 1000
}

/// The most a machine of this RAM size reserves without a balloon: the typical figure,
/// 3 % slack for older kernels and firmware holes, and the largest crash-kernel
/// reservation distributions make by default for that size (Ubuntu 24.04's
/// `crashkernel=2G-4G:320M,4G-32G:512M,32G-64G:1G,64G-128G:2G,128G-:4G`; RHEL's and
/// Debian's are smaller). `pages RAM` sits a little below the nominal size, so the
/// steps start a little early. A balloon smaller than this cannot be told from the
/// report alone; the host's figures can.
pub(crate) fn reserved_ceiling_kb(ram_kb: u64) -> u64 {
    const GIB: u64 = 1024 * 1024;
    let crash_kb = match ram_kb {
        ram if ram < 3 * GIB / 2 => 0,
        ram if ram < 7 * GIB / 2 => 320 * 1024,
        ram if ram < 30 * GIB => 512 * 1024,
        ram if ram < 60 * GIB => GIB,
        ram if ram < 120 * GIB => 2 * GIB,
        _ => 4 * GIB,
    };
    typical_reserved_kb(ram_kb) + ram_kb * 3 / 100 + crash_kb
}

pub(super) fn compute(report: &Report, host: Option<&HostBalloon>) -> Analysis {
    let page_kb = report.page_size_kb.unwrap_or(4);
    let pages = |value: Option<u64>| value.map(|pages| pages.saturating_mul(page_kb));
    let ram_kb = pages(report.ram_pages);
    let reserved_kb = pages(report.reserved_pages);
    let zones_managed: Option<u64> = sum_present(report.zones.iter().map(|z| z.managed_kb));
    let managed_kb = match (report.ram_pages, report.reserved_pages) {
        (Some(ram), Some(reserved)) => Some(ram.saturating_sub(reserved).saturating_mul(page_kb)),
        _ => zones_managed,
    };
    let reserved_typical_kb = ram_kb.map(typical_reserved_kb);

    let info = report.mem_info.as_ref();
    let lru_kb = info.and_then(|m| {
        let parts = [
            m.active_anon_pages,
            m.inactive_anon_pages,
            m.isolated_anon_pages,
            m.active_file_pages,
            m.inactive_file_pages,
            m.isolated_file_pages,
            m.unevictable_pages,
            m.active_pages,
            m.inactive_pages,
        ];
        pages(sum_present(parts.into_iter()))
    });
    let slab_kb = info.and_then(|m| {
        let parts = [
            m.slab_reclaimable_pages,
            m.slab_unreclaimable_pages,
            m.slab_pages,
        ];
        pages(sum_present(parts.into_iter()))
    });
    let pagetables_kb = info.and_then(|m| {
        pages(sum_present(
            [m.pagetables_pages, m.sec_pagetables_pages].into_iter(),
        ))
    });
    let kernel_stack_kb = kernel_stack_kb(report);
    let free_kb = pages(info.and_then(|m| m.free_pages));
    let free_pcp_kb = pages(info.and_then(|m| m.free_pcp_pages));
    let misc_kb = pages(info.and_then(|m| m.kernel_misc_reclaimable_pages)).unwrap_or(0);
    let hugetlb_kb = report.hugetlb_kb;

    let accounted_kb = match (lru_kb, slab_kb, free_kb) {
        (Some(lru), Some(slab), Some(free)) => Some(
            lru + slab
                + pagetables_kb.unwrap_or(0)
                + kernel_stack_kb.unwrap_or(0)
                + free
                + free_pcp_kb.unwrap_or(0)
                + misc_kb
                + hugetlb_kb.unwrap_or(0),
        ),
        _ => None,
    };
    let unaccounted_kb = match (managed_kb, accounted_kb) {
        (Some(managed), Some(accounted)) => Some(managed.saturating_sub(accounted)),
        _ => None,
    };
    let unaccounted_pct = match (unaccounted_kb, managed_kb) {
        (Some(unaccounted), Some(managed)) if managed > 0 => {
            Some(round1(unaccounted as f64 * 100.0 / managed as f64))
        }
        _ => None,
    };

    let zones: Vec<ZoneState> = report.zones.iter().map(zone_state).collect();
    let zones_below_min = zones
        .iter()
        .filter(|z| z.below_min == Some(true))
        .map(|z| z.name.clone())
        .collect();

    let memcg_usage_pct = report
        .memcg
        .as_ref()
        .and_then(|m| match (m.usage_kb, m.limit_kb) {
            (Some(usage), Some(limit)) if limit > 0 && report.memcg_ran_out() => {
                Some(round1(usage as f64 * 100.0 / limit as f64))
            }
            _ => None,
        });
    let swap_used_kb = match (report.total_swap_kb, report.free_swap_kb) {
        (Some(total), Some(free)) => Some(total.saturating_sub(free)),
        _ => None,
    };

    // A row cut before its rss (a paste cut short) adds no figure, not a zero.
    let tasks_rss_kb = if report.top_tasks.iter().all(|t| t.rss_pages.is_none()) {
        None
    } else {
        Some(
            report
                .top_tasks
                .iter()
                .filter_map(|t| t.rss_pages)
                .sum::<u64>()
                * page_kb,
        )
    };
    let top_consumers = report
        .top_tasks
        .iter()
        .filter_map(|task| {
            Some(Consumer {
                pid: task.pid,
                name: task.name.clone(),
                rss_kb: task.rss_pages?.saturating_mul(page_kb),
            })
        })
        .take(TOP_CONSUMERS)
        .collect();

    let reserved_excess_kb = match (reserved_kb, ram_kb) {
        (Some(reserved), Some(ram)) => Some(reserved.saturating_sub(reserved_ceiling_kb(ram))),
        _ => zones_excess_kb(&report.zones),
    };
    let mut balloon = balloon_evidence(report, host, reserved_excess_kb);
    let balloon_excess_kb = balloon.held_kb;
    let order = report.trigger.as_ref().and_then(|t| t.order);
    let shortfall_kb = shortfall_kb(&zones, order, page_kb);
    let fits_without_balloon = if report.memcg_ran_out() {
        // A cgroup limit: pages returned to the guest do not raise it.
        Some(false)
    } else {
        match (balloon_excess_kb, shortfall_kb) {
            (Some(excess), Some(shortfall)) => Some(excess > 0 && excess >= shortfall),
            _ => None,
        }
    };
    balloon.would_have_fit = fits_without_balloon;

    Analysis {
        page_size_kb: page_kb,
        ram_kb,
        managed_kb,
        reserved_kb,
        reserved_typical_kb,
        lru_kb,
        slab_kb,
        pagetables_kb,
        kernel_stack_kb,
        hugetlb_kb,
        free_kb,
        free_pcp_kb,
        accounted_kb,
        unaccounted_kb,
        unaccounted_pct,
        zones,
        zones_below_min,
        order,
        memcg_usage_pct,
        swap_total_kb: report.total_swap_kb,
        swap_used_kb,
        tasks_rss_kb,
        top_consumers,
        balloon,
        balloon_excess_kb,
        shortfall_kb,
        fits_without_balloon,
        verdict: Verdict::Unknown,
        explanation: String::new(),
    }
}

/// Kernel stacks are per node on 4.8+ (`Node 0 ... kernel_stack:`), per zone before.
fn kernel_stack_kb(report: &Report) -> Option<u64> {
    sum_present(report.nodes.iter().map(|n| n.kernel_stack_kb))
        .or_else(|| sum_present(report.zones.iter().map(|z| z.kernel_stack_kb)))
}

fn zone_state(zone: &crate::Zone) -> ZoneState {
    // The watermark check leaves free CMA pages out for all but some movable requests.
    let below_min = match (zone.free_kb, zone.min_kb) {
        (Some(free), Some(min)) => Some(free.saturating_sub(zone.free_cma_kb.unwrap_or(0)) < min),
        _ => None,
    };
    let largest_free_order = zone
        .free_blocks_by_order
        .iter()
        .rposition(|count| *count > 0)
        .and_then(|order| u32::try_from(order).ok());
    ZoneState {
        node: zone.node,
        name: zone.name.clone(),
        free_kb: zone.free_kb,
        min_kb: zone.min_kb,
        high_kb: zone.high_kb,
        managed_kb: zone.managed_kb,
        present_kb: zone.present_kb,
        below_min,
        largest_free_order,
    }
}

/// Without `pages RAM`/`pages reserved`: the zones' `present - managed` above what a
/// guest of that size may reserve (a balloon without deflate-on-oom leaves `managed`).
fn zones_excess_kb(zones: &[crate::Zone]) -> Option<u64> {
    let present = sum_present(zones.iter().map(|z| z.present_kb))?;
    let managed = sum_present(zones.iter().map(|z| z.managed_kb))?;
    Some(
        present
            .saturating_sub(managed)
            .saturating_sub(reserved_ceiling_kb(present)),
    )
}

/// What the guest lacked at the OOM: per zone that has memory, how far free was below
/// the high watermark (the level reclaim restores before the allocator is at ease),
/// plus the failed allocation itself (2^order pages). None without any zone figures.
fn shortfall_kb(zones: &[ZoneState], order: Option<u32>, page_kb: u64) -> Option<u64> {
    let below_high = sum_present(
        zones
            .iter()
            .filter(|z| z.managed_kb != Some(0))
            .map(|z| Some(z.high_kb?.saturating_sub(z.free_kb?))),
    )?;
    let allocation = page_kb.saturating_mul(1u64 << order.unwrap_or(0).min(20));
    Some(below_high.saturating_add(allocation))
}

fn balloon_evidence(
    report: &Report,
    host: Option<&HostBalloon>,
    reserved_excess_kb: Option<u64>,
) -> BalloonEvidence {
    let host_held_kb = host.and_then(HostBalloon::held_kb);
    let deflate_on_oom = host.and_then(|h| h.deflate_on_oom);
    // deflate-on-oom: the guest kernel's OOM notifier takes the balloon's pages back, and
    // the OOM killer runs only once it returned none, so at a guest-wide OOM the balloon
    // was empty, whatever the host sampled before. (A memcg OOM calls no notifier.)
    let deflated_before_kill = deflate_on_oom == Some(true) && !report.memcg_ran_out();
    // Host figures are a measurement; without them, excess reserved memory is the estimate
    // (a balloon with deflate-on-oom does not show there, it hides in unaccounted memory).
    let held_kb = if deflated_before_kill {
        Some(0)
    } else {
        host_held_kb.or(reserved_excess_kb)
    };
    BalloonEvidence {
        driver_in_trace: report.balloon_in_trace,
        reserved_excess_kb,
        host_held_kb,
        deflate_on_oom,
        deflated_before_kill,
        held_kb,
        would_have_fit: None,
    }
}

fn sum_present(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values.fold(None, |total, value| match (total, value) {
        (None, None) => None,
        (total, value) => Some(total.unwrap_or(0).saturating_add(value.unwrap_or(0))),
    })
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
