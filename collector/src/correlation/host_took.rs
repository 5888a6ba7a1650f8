//! The host's side of one OOM over every way it takes memory ([`HostTook`]): the
//! balloon's part (the correlation's `balloon_held_kb`) plus virtio-mem's (the devices'
//! size less what the guest had plugged at the OOM: blocks the host unplugged, or never
//! plugged), when the host lowered the virtio-mem request in the window, and the
//! counterfactual "with the blocks back and the balloon deflated, would it have fit?"
//! against what the guest lacked at the OOM (`needed_kb`, as for the balloon alone).
//!
//! A guest OOM after an unplug looks, in its report, like a smaller machine (the report
//! verdict reads `overcommit`); here it is the host's. Without virtio-mem figures the
//! balloon's part is the whole story ([`HostTook::from_balloon`]). Pure, never panics.

use ballast_model::{ElasticMechanism, HostTookVerdict, OomEvent, VirtioMemTotals};

use super::outcome::{Correlation, HostTook};
use super::units::{mib, pct_of};

/// The host's side of the OOM `c` describes: None when the host sent no figure of any
/// mechanism (the balloon's verdict is then `unknown` too). A part at most the noise
/// (`noise_kib`, or `noise_pct` of the VM's whole size) names nothing.
pub(super) fn host_took(
    event: &OomEvent,
    oom_at_ms: i64,
    window_start: i64,
    c: &Correlation,
    (noise_kib, noise_pct): (u64, f64),
) -> Option<HostTook> {
    let Some(totals) = virtio_at_oom(event, window_start) else {
        return c.balloon_held_kb.map(|_| HostTook::from_balloon(c));
    };
    let balloon = c.balloon_held_kb;
    let unplugged = totals.unplugged_kib();
    let total = match (balloon, unplugged) {
        (None, None) => None,
        (balloon, unplugged) => Some(balloon.unwrap_or(0).saturating_add(unplugged.unwrap_or(0))),
    };
    let would_have_survived = match (total, c.needed_kb) {
        _ if c.not_preventable.is_some() => Some(false),
        (Some(total), Some(needed)) => Some(total > 0 && total >= needed),
        _ => None,
    };
    let size = c
        .maximum_kib
        .unwrap_or(0)
        .saturating_add(totals.max_size_kib.unwrap_or(0));
    let noise = pct_of(size, noise_pct).max(noise_kib);
    let verdict = match total {
        None => HostTookVerdict::Unknown,
        Some(_) if c.not_preventable.is_some() => HostTookVerdict::NotHost,
        Some(total) if total <= noise => HostTookVerdict::NotHost,
        Some(_) => match would_have_survived {
            Some(true) => HostTookVerdict::HostTookMemory,
            Some(false) => HostTookVerdict::NotHost,
            None => HostTookVerdict::HostContributed,
        },
    };
    let mechanisms = [
        (ElasticMechanism::Balloon, balloon),
        (ElasticMechanism::VirtioMem, unplugged),
    ]
    .into_iter()
    .filter(|(_, part)| part.is_some_and(|kib| kib > 0))
    .map(|(mechanism, _)| mechanism)
    .collect();
    let lowering = lowering(event, window_start, oom_at_ms, totals.requested_kib);
    Some(HostTook {
        verdict,
        mechanisms,
        balloon_kib: balloon,
        unplugged_kib: unplugged,
        total_kib: total,
        requested_lowered_at_ms: lowering.map(|(_, at)| at),
        would_have_survived,
        requested_lowered_kib: lowering.map(|(kib, _)| kib),
        virtio_mem: Some(totals),
    })
}

/// The virtio-mem devices at the OOM: the agent's sample sent with the balloon's (the
/// last before the kill), else the newest history point in the window taken before
/// the kill was printed (never one after: a stalled unplug completes once the kill
/// frees memory). None: the VM has no virtio-mem device, or nothing says.
fn virtio_at_oom(event: &OomEvent, window_start: i64) -> Option<VirtioMemTotals> {
    if let Some(totals) = event.balloon_at_oom.virtio_mem {
        return Some(totals);
    }
    let bound = event.balloon_at_oom.kill_after_ms?;
    event
        .balloon_history
        .iter()
        .filter(|p| p.at_ms >= window_start && p.at_ms < bound)
        .filter_map(|p| p.virtio_mem)
        .next_back()
}

/// How far the virtio-mem request came down from its peak in the window to the OOM,
/// and when the descent began (the first point after the peak with a lower request).
fn lowering(
    event: &OomEvent,
    window_start: i64,
    oom_at_ms: i64,
    requested_at_oom: Option<u64>,
) -> Option<(u64, i64)> {
    let mut points: Vec<(i64, u64)> = event
        .balloon_history
        .iter()
        .filter(|p| p.at_ms >= window_start && p.at_ms <= oom_at_ms)
        .filter_map(|p| Some((p.at_ms, p.virtio_mem?.requested_kib?)))
        .collect();
    points.sort_by_key(|(at, _)| *at);
    let at_oom = requested_at_oom.or_else(|| points.last().map(|(_, kib)| *kib))?;
    // The LATEST point at the peak: the descent starts after it.
    let (peak_index, peak) =
        points
            .iter()
            .enumerate()
            .fold(
                None,
                |best: Option<(usize, u64)>, (index, (_, kib))| match best {
                    Some((_, best_kib)) if best_kib > *kib => best,
                    _ => Some((index, *kib)),
                },
            )?;
    let lowered = peak.checked_sub(at_oom).filter(|kib| *kib > 0)?;
    let at = points
        .iter()
        .skip(peak_index + 1)
        .find(|(_, kib)| *kib < peak)
        .map_or(oom_at_ms, |(at, _)| *at);
    Some((lowered, at))
}

/// The virtio-mem reasons, in plain language; empty without virtio-mem figures.
pub(super) fn reasons(c: &Correlation, oom_at_ms: i64) -> Vec<String> {
    let mut reasons = Vec::new();
    let Some(took) = &c.host_took else {
        return reasons;
    };
    let Some(totals) = took.virtio_mem else {
        return reasons;
    };
    let size = totals.max_size_kib.map(mib).unwrap_or_else(|| "?".into());
    if let (Some(lowered), Some(at)) = (took.requested_lowered_kib, took.requested_lowered_at_ms) {
        let to = totals
            .requested_kib
            .map(|kib| format!(" (to {} of the devices' {size})", mib(kib)))
            .unwrap_or_default();
        reasons.push(format!(
            "The host lowered the virtio-mem request by {} {} s before the OOM{to}.",
            mib(lowered),
            oom_at_ms.saturating_sub(at) / 1000
        ));
    }
    match (took.unplugged_kib, totals.plugged_kib) {
        (Some(0), _) => reasons.push(format!(
            "virtio-mem: the guest had all of the devices' {size} plugged at the OOM; the host took nothing through it."
        )),
        (Some(unplugged), Some(plugged)) => reasons.push(format!(
            "The host held back {} of virtio-mem at the OOM: the guest had {} of the devices' {size} plugged (blocks the host unplugged, or never gave).",
            mib(unplugged),
            mib(plugged)
        )),
        _ => reasons.push(
            "virtio-mem: the host sent the devices without their plugged size or size; what it held back is unknown."
                .into(),
        ),
    }
    if let (Some(plugged), Some(requested)) = (totals.plugged_kib, totals.requested_kib) {
        if plugged < requested {
            reasons.push(format!(
                "The guest had plugged less than the host requested ({} of {}): it had not onlined the rest.",
                mib(plugged),
                mib(requested)
            ));
        }
    }
    let back = if took.balloon_kib.is_some_and(|kib| kib > 0) {
        "the unplugged blocks back and the balloon deflated"
    } else {
        "the unplugged blocks back"
    };
    match (
        c.not_preventable.as_deref(),
        took.would_have_survived,
        took.total_kib,
        c.needed_kb,
    ) {
        (Some(_), _, _, _) => reasons.push(
            "Giving the unplugged blocks back would not have prevented this kill either.".into(),
        ),
        (None, Some(true), Some(total), Some(needed)) => reasons.push(format!(
            "With {back} the guest would have had {} more, {} to spare over the {} it lacked at the OOM{}.",
            mib(total),
            mib(total.saturating_sub(needed)),
            mib(needed),
            if took.verdict == HostTookVerdict::HostTookMemory {
                ": the host took the memory it needed"
            } else {
                ", but what the host held is too little to name"
            }
        )),
        (None, Some(false), Some(total), Some(needed)) => reasons.push(format!(
            "Even with {back} ({}) the guest would have lacked {} of the {} it needed at the OOM.",
            mib(total),
            mib(needed.saturating_sub(total)),
            mib(needed)
        )),
        _ => reasons.push(format!(
            "Cannot tell whether {back} would have prevented the kill: the report has no zone figures to say what the guest lacked."
        )),
    }
    reasons
}

#[cfg(test)]
mod tests;
