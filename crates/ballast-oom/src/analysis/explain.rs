//! Writes the verdict as one paragraph a Proxmox or libvirt admin can act on.

use std::fmt::Write;

use super::{Analysis, Verdict};
use crate::{OomKind, Report};

/// Memory in MiB, one decimal below 10 MiB.
pub(crate) fn mib(kb: u64) -> String {
    let value = kb as f64 / 1024.0;
    if value < 10.0 {
        format!("{value:.1} MiB")
    } else {
        format!("{value:.0} MiB")
    }
}

pub(super) fn paragraph(report: &Report, analysis: &Analysis) -> String {
    let mut text = String::new();
    match analysis.verdict {
        Verdict::Balloon => balloon(&mut text, analysis),
        Verdict::KernelUnaccounted => kernel_unaccounted(&mut text, report, analysis),
        Verdict::MemcgLimit => memcg(&mut text, report, analysis),
        Verdict::Fragmentation => fragmentation(&mut text, analysis),
        Verdict::LowmemZone => lowmem(&mut text, analysis),
        Verdict::Overcommit => overcommit(&mut text, report, analysis),
        Verdict::NoKillable => no_killable(&mut text),
        Verdict::Unknown => unknown(&mut text, report, analysis),
    }
    host_measurement(&mut text, analysis);
    if analysis.verdict != Verdict::Balloon && !report.memcg_ran_out() {
        counterfactual(&mut text, analysis);
    }
    victim_sentence(&mut text, report);
    text
}

/// With host figures, "the balloon was not inflated" is a measurement: say so.
fn host_measurement(text: &mut String, analysis: &Analysis) {
    if analysis.verdict == Verdict::Balloon {
        return;
    }
    if analysis.balloon.deflated_before_kill {
        let _ = write!(
            text,
            "The balloon has deflate-on-oom, so the guest's kernel took its pages back before this OOM (its OOM notifier runs first; the killer runs only once it returns nothing){}: the balloon held nothing at the OOM, and the guest ran out with the VM's whole memory. ",
            analysis
                .balloon
                .host_held_kb
                .filter(|held| *held > 0)
                .map(|held| format!(", although the host's last sample before it showed {} held", mib(held)))
                .unwrap_or_default()
        );
        return;
    }
    if let Some(held) = analysis.balloon.host_held_kb {
        let _ = write!(
            text,
            "Measured on the host, the balloon held {} of this guest's memory at the time{}. ",
            mib(held),
            if held == 0 {
                ", so it took none of it"
            } else {
                ""
            }
        );
    }
}

fn balloon(text: &mut String, analysis: &Analysis) {
    let balloon = &analysis.balloon;
    if let Some(host_held) = balloon.host_held_kb {
        let _ = write!(
            text,
            "The host's balloon held {} of this guest's memory when it ran out (measured on the host). ",
            mib(host_held)
        );
    }
    if let (Some(ram), Some(reserved), Some(typical)) = (
        analysis.ram_kb,
        analysis.reserved_kb,
        analysis.reserved_typical_kb,
    ) {
        let _ = write!(
            text,
            "The guest has {} of RAM but {} of it ({:.1} %) is reserved, about {} more than a guest of this size reserves (~{}). ",
            mib(ram),
            mib(reserved),
            reserved as f64 * 100.0 / ram.max(1) as f64,
            mib(reserved.saturating_sub(typical)),
            mib(typical),
        );
        if balloon.host_held_kb.is_none() {
            text.push_str(
                "That is the signature of a virtio balloon inflated without deflate-on-oom: the driver takes its pages out of the guest's managed memory (a large crashkernel= reservation looks the same; the host's balloon figures tell them apart). ",
            );
        }
    }
    if let Some(managed) = analysis.managed_kb {
        let _ = write!(text, "The guest was left with {} to manage", mib(managed));
        zone_clause(text, analysis);
        text.push_str(". ");
    }
    counterfactual(text, analysis);
    text.push_str(
        "Fix: keep the balloon above the guest's working set (Proxmox: raise the VM's `balloon:` minimum; libvirt: do not `virsh setmem` below it), or enable deflate-on-oom (libvirt `<memballoon model='virtio' autodeflate='on'>`, QEMU `-device virtio-balloon-pci,deflate-on-oom=on`) so the guest takes memory back before killing.",
    );
}

/// What returning the balloon's pages would have done: the sentence behind the verdict.
fn counterfactual(text: &mut String, analysis: &Analysis) {
    let (Some(excess), Some(shortfall), Some(fits)) = (
        analysis.balloon_excess_kb,
        analysis.shortfall_kb,
        analysis.fits_without_balloon,
    ) else {
        return;
    };
    if excess == 0 {
        return;
    }
    let order = analysis.order.unwrap_or(0);
    let pages = if analysis.balloon.host_held_kb.is_some() {
        format!("{} (measured on the host before the kill)", mib(excess))
    } else {
        format!(
            "pages (at least {}: reserved memory beyond what any guest of this size reserves, crash kernel included)",
            mib(excess)
        )
    };
    let _ = write!(
        text,
        "Returning the balloon's {} to the guest {} the {} it lacked at the OOM (free memory below the zones' high watermarks plus the failed order-{order} allocation){} ",
        pages,
        if fits { "would have covered" } else { "would not have covered" },
        mib(shortfall),
        if fits {
            ", so the balloon caused this OOM, whatever its share of RAM."
        } else {
            ": the working set was larger than the guest's full memory, so the balloon did not cause it."
        },
    );
}

fn kernel_unaccounted(text: &mut String, report: &Report, analysis: &Analysis) {
    let managed = analysis.managed_kb.unwrap_or(0);
    let accounted = analysis.accounted_kb.unwrap_or(0);
    let unaccounted = analysis.unaccounted_kb.unwrap_or(0);
    let unreclaimable_slab = report
        .mem_info
        .as_ref()
        .and_then(|m| m.slab_unreclaimable_pages)
        .unwrap_or(0)
        .saturating_mul(analysis.page_size_kb);
    if unreclaimable_slab > unaccounted {
        let _ = write!(
            text,
            "The kernel itself held the memory: {} of {} managed ({:.1} %) sits in unreclaimable slab, which no process owns and the OOM killer cannot free. That is a kernel object leak or runaway cache; `slabtop` and `/proc/slabinfo` name the cache, and a newer kernel or the driver's fix usually ends it. ",
            mib(unreclaimable_slab),
            mib(managed),
            unreclaimable_slab as f64 * 100.0 / managed.max(1) as f64,
        );
        order_sentence(text, analysis);
        return;
    }
    let _ = write!(
        text,
        "Of {} managed memory the report accounts for only {} (LRU {}, slab {}, page tables, kernel stacks, free); {} ({:.1} %) is held by the kernel outside those counters. ",
        mib(managed),
        mib(accounted),
        mib(analysis.lru_kb.unwrap_or(0)),
        mib(analysis.slab_kb.unwrap_or(0)),
        mib(unaccounted),
        analysis.unaccounted_pct.unwrap_or(0.0),
    );
    if let (Some(reserved), Some(ram)) = (analysis.reserved_kb, analysis.ram_kb) {
        let _ = write!(
            text,
            "The balloon is excluded as the cause: reserved memory is normal ({}, {:.1} % of RAM), where a balloon without deflate-on-oom would show. ",
            mib(reserved),
            reserved as f64 * 100.0 / ram.max(1) as f64
        );
    }
    if report.balloon_in_trace {
        text.push_str(
            "The `virtballoon_oom_notify` frame in the trace only shows that the balloon driver is loaded; a deflate-on-oom balloon would have given its pages back before any kill. ",
        );
    }
    order_sentence(text, analysis);
    if !analysis.zones_below_min.is_empty() {
        text.push_str("Memory was truly exhausted");
        zone_clause(text, analysis);
        text.push_str(". ");
    }
    text.push_str(
        "The usual holders of memory no counter shows are network buffers (socket queues), driver allocations and vmalloc: check `/proc/net/sockstat` (TCP mem), `ss -tm`, `net.ipv4.tcp_mem`, `/proc/vmallocinfo` and `slabtop`; for a busy network service, cap the data it lets queue.",
    );
}

fn memcg(text: &mut String, report: &Report, analysis: &Analysis) {
    let memcg = report.memcg.as_ref();
    let group = memcg
        .and_then(|m| m.oom.as_deref())
        .unwrap_or("a memory cgroup");
    let _ = write!(text, "The memory cgroup `{group}` hit its limit");
    if let (Some(usage), Some(limit)) = (
        memcg.and_then(|m| m.usage_kb),
        memcg.and_then(|m| m.limit_kb),
    ) {
        let _ = write!(text, " ({} used of {}", mib(usage), mib(limit));
        if let Some(pct) = analysis.memcg_usage_pct {
            let _ = write!(text, ", {pct:.1} %");
        }
        text.push(')');
    }
    text.push_str(
        ". The machine as a whole was not out of memory, so the host's balloon did not cause this kill. Raise the cgroup's limit (memory.max, a container's or service's MemoryMax=/memory limit) or reduce what runs in it.",
    );
}

fn fragmentation(text: &mut String, analysis: &Analysis) {
    let order = analysis.order.unwrap_or(0);
    let _ = write!(
        text,
        "The request was order {order} ({} contiguous pages) and failed although free memory was above the min watermark: no free block was large enough. This is fragmentation. Check `/proc/buddyinfo`; raise `vm.min_free_kbytes`, enable compaction (`vm.compaction_proactiveness`), or find the driver or task making high-order requests. ",
        1u64 << order.min(20)
    );
}

fn lowmem(text: &mut String, analysis: &Analysis) {
    let starved = analysis.zones_below_min.join(", ");
    let _ = write!(
        text,
        "Zone {starved} ran out while another zone still had plenty of free memory: the request could only be served from the exhausted zone (32-bit lowmem, or a DMA/DMA32-restricted allocation). A 64-bit kernel, or finding what pins lowmem, fixes this; more RAM does not. "
    );
}

fn overcommit(text: &mut String, report: &Report, analysis: &Analysis) {
    if let (Some(managed), Some(lru)) = (analysis.managed_kb, analysis.lru_kb) {
        let _ = write!(
            text,
            "The counters account for nearly all of the {} managed memory ({} on the LRU lists, {} unaccounted): the working set simply exceeded RAM",
            mib(managed),
            mib(lru),
            mib(analysis.unaccounted_kb.unwrap_or(0))
        );
    } else {
        text.push_str("The working set exceeded RAM");
    }
    match (analysis.swap_total_kb, analysis.swap_used_kb) {
        (Some(0), _) | (None, _) => text.push_str(" and there is no swap"),
        (Some(total), Some(used)) => {
            let _ = write!(text, " and swap ({} used of {})", mib(used), mib(total));
        }
        _ => {}
    }
    text.push_str(". ");
    if matches!(report.kind, OomKind::Cpuset | OomKind::Mempolicy) {
        text.push_str("The allocation was confined to some NUMA nodes (cpuset or memory policy), and those nodes were full. ");
    }
    if let Some(top) = analysis.top_consumers.first() {
        let _ = write!(
            text,
            "The largest task was {} (pid {}, {}). ",
            top.name,
            top.pid,
            mib(top.rss_kb)
        );
    }
    text.push_str("Give the guest more memory, limit the biggest consumer, or add swap. ");
}

fn no_killable(text: &mut String) {
    text.push_str(
        "The kernel panicked because no task was left that the OOM killer may kill (every remaining task is unkillable or has oom_score_adj -1000). Check which services set OOMScoreAdjust=-1000 and give the machine more memory. ",
    );
}

fn unknown(text: &mut String, report: &Report, analysis: &Analysis) {
    if super::verdict::swap_largely_free(analysis) && analysis.accounted_kb.is_some() {
        let _ = write!(
            text,
            "The OOM killer ran while swap still had {} of {} free: a premature OOM. Reclaim could not keep up or could not use swap (a slow swap device, anon memory that could not be swapped such as mlock or shmem pinned by a GPU, or swappiness 0 in a memory cgroup). Check `vmstat 1` during load, `/proc/pressure/memory`, and the swap device's latency. ",
            mib(analysis.swap_total_kb.unwrap_or(0).saturating_sub(analysis.swap_used_kb.unwrap_or(0))),
            mib(analysis.swap_total_kb.unwrap_or(0))
        );
    } else if report.partial {
        let _ = write!(
            text,
            "The report is incomplete ({}), so the cause cannot be read from it. A guest booted with `quiet` or a console loglevel below 7 hides the report's body: boot without `quiet` (or set `loglevel=7`), or read the full report from `dmesg` inside the guest. ",
            report.missing.join(", ")
        );
    } else {
        text.push_str("The report's figures do not point at one cause. ");
    }
}

fn order_sentence(text: &mut String, analysis: &Analysis) {
    if analysis.order == Some(0) {
        text.push_str("The request was order 0 (one page), so fragmentation is not the cause. ");
    }
}

/// `; zone DMA32 was below its min watermark (2.5 MiB free, min 2.5 MiB)`
fn zone_clause(text: &mut String, analysis: &Analysis) {
    let starved: Vec<String> = analysis
        .zones
        .iter()
        .filter(|z| z.below_min == Some(true) && z.name != "DMA")
        .filter_map(|z| {
            Some(format!(
                "zone {} was below its min watermark ({} free, min {})",
                z.name,
                mib(z.free_kb?),
                mib(z.min_kb?)
            ))
        })
        .collect();
    if !starved.is_empty() {
        let _ = write!(text, "; {}", starved.join(", "));
    }
}

fn victim_sentence(text: &mut String, report: &Report) {
    let Some(killed) = &report.killed else {
        return;
    };
    let trigger = report.trigger.as_ref().map(|t| t.comm.as_str());
    let _ = write!(text, " Killed: {} (pid {}", killed.comm, killed.pid);
    if let Some(anon) = killed.anon_rss_kb {
        let _ = write!(text, ", {} anonymous", mib(anon));
    }
    text.push(')');
    if let Some(trigger) = trigger.filter(|t| *t != killed.comm) {
        let _ = write!(
            text,
            "; the allocation that failed was {trigger}'s, an innocent bystander"
        );
    }
    text.push('.');
}
