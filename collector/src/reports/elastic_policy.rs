//! The balloon-policy report's virtio-mem part (issue 20): OOMs that followed a
//! virtio-mem unplug, VMs whose virtio-mem sat below its maximum at their OOMs, and
//! the request that would have held. Built from each OOM's stored `host_took` (the
//! correlation's, `crate::correlation::outcome::HostTook`) and the VM's configured
//! devices; pure (the rows come from [`crate::reports::load::elastic_ooms`]). Empty
//! for a fleet without virtio-mem, and then left out of every format, so such a
//! fleet's report reads as it always did. VM names are untrusted: escaped by maud in
//! HTML and for Markdown here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use maud::{html, Markup};
use serde::Serialize;

use ballast_model::{ElasticMechanism, HostTookVerdict, VirtioMemDevice};

use crate::correlation::outcome::HostTook;
use crate::html::{badge, vm_link};
use crate::reports::format::{self, date_time, kib, opt_kib};

/// One stored OOM of a VM with virtio-mem figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ElasticOomFact {
    pub id: i64,
    pub time_ms: i64,
    pub host: String,
    pub vm_uuid: String,
    pub vm_name: String,
    pub host_took: HostTook,
    /// What the guest lacked at the OOM (the correlation's `needed_kb`).
    pub needed_kib: Option<u64>,
    /// The VM's configured virtio-mem devices (inventory), for their block size.
    pub devices: Vec<VirtioMemDevice>,
}

/// An OOM that followed an unplug (the host lowered the request in the window).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomAfterUnplug {
    pub id: i64,
    pub time_ms: i64,
    pub host: String,
    pub vm_uuid: String,
    pub vm_name: String,
    pub host_took: HostTookVerdict,
    pub requested_lowered_kib: Option<u64>,
    /// Seconds from the lowered request to the OOM.
    pub seconds_after_lowering: Option<i64>,
    pub unplugged_kib: Option<u64>,
    pub would_have_survived: Option<bool>,
}

/// A VM whose virtio-mem sat below its maximum at one or more of its OOMs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmBelowMaximum {
    pub host: String,
    pub vm_uuid: String,
    pub vm_name: String,
    /// Its OOMs with memory unplugged, and those of them the host's (`host_took_memory`).
    pub ooms: usize,
    pub host_took_ooms: usize,
    pub max_unplugged_kib: u64,
    pub max_size_kib: Option<u64>,
    /// The lowest request at those OOMs.
    pub lowest_requested_kib: Option<u64>,
    /// The smallest request that would have held at every one of them (plugged plus
    /// what the guest lacked beyond the balloon's part, in whole blocks); None when
    /// the report had no figure of the need, or `beyond_maximum`.
    pub request_that_holds_kib: Option<u64>,
    /// Even the devices' full size would not have held one of them.
    pub beyond_maximum: bool,
}

/// The virtio-mem part of the balloon-policy report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ElasticPolicy {
    /// OOMs of VMs with virtio-mem figures in the period.
    pub virtio_mem_ooms: usize,
    pub ooms_after_unplug: Vec<OomAfterUnplug>,
    pub vms_below_maximum: Vec<VmBelowMaximum>,
}

impl ElasticPolicy {
    /// No OOM of a VM with virtio-mem in the period.
    pub fn is_empty(&self) -> bool {
        self.virtio_mem_ooms == 0
    }
}

/// Builds the part from the period's OOMs (any order).
pub fn build(ooms: &[ElasticOomFact]) -> ElasticPolicy {
    let mut ooms: Vec<&ElasticOomFact> = ooms
        .iter()
        .filter(|oom| oom.host_took.virtio_mem.is_some())
        .collect();
    ooms.sort_by_key(|oom| (oom.time_ms, oom.id));
    let ooms_after_unplug = ooms
        .iter()
        .filter(|oom| oom.host_took.requested_lowered_kib.is_some())
        .map(|oom| OomAfterUnplug {
            id: oom.id,
            time_ms: oom.time_ms,
            host: oom.host.clone(),
            vm_uuid: oom.vm_uuid.clone(),
            vm_name: oom.vm_name.clone(),
            host_took: oom.host_took.verdict,
            requested_lowered_kib: oom.host_took.requested_lowered_kib,
            seconds_after_lowering: oom
                .host_took
                .requested_lowered_at_ms
                .map(|at| oom.time_ms.saturating_sub(at) / 1000),
            unplugged_kib: oom.host_took.unplugged_kib,
            would_have_survived: oom.host_took.would_have_survived,
        })
        .collect();
    let mut vms: BTreeMap<(String, String), VmBelowMaximum> = BTreeMap::new();
    for oom in ooms.iter().filter(|oom| {
        oom.host_took
            .mechanisms
            .contains(&ElasticMechanism::VirtioMem)
    }) {
        let took = &oom.host_took;
        let totals = took.virtio_mem.unwrap_or_default();
        let vm = vms
            .entry((oom.host.clone(), oom.vm_uuid.clone()))
            .or_insert_with(|| VmBelowMaximum {
                host: oom.host.clone(),
                vm_uuid: oom.vm_uuid.clone(),
                vm_name: oom.vm_name.clone(),
                ooms: 0,
                host_took_ooms: 0,
                max_unplugged_kib: 0,
                max_size_kib: None,
                lowest_requested_kib: None,
                request_that_holds_kib: Some(0),
                beyond_maximum: false,
            });
        vm.ooms += 1;
        vm.host_took_ooms += usize::from(took.verdict == HostTookVerdict::HostTookMemory);
        vm.max_unplugged_kib = vm.max_unplugged_kib.max(took.unplugged_kib.unwrap_or(0));
        vm.max_size_kib = vm.max_size_kib.max(totals.max_size_kib);
        vm.lowest_requested_kib = match (vm.lowest_requested_kib, totals.requested_kib) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match holding_request(oom) {
            Holds::Request(kib) => {
                vm.request_that_holds_kib = vm.request_that_holds_kib.map(|r| r.max(kib));
            }
            Holds::BeyondMaximum => {
                vm.beyond_maximum = true;
                vm.request_that_holds_kib = None;
            }
            Holds::Unknown => vm.request_that_holds_kib = None,
        }
    }
    ElasticPolicy {
        virtio_mem_ooms: ooms.len(),
        ooms_after_unplug,
        vms_below_maximum: vms.into_values().collect(),
    }
}

enum Holds {
    Request(u64),
    BeyondMaximum,
    Unknown,
}

/// The request that would have held at one OOM: plugged plus what the guest lacked
/// beyond the balloon's part, rounded up to the devices' largest block.
fn holding_request(oom: &ElasticOomFact) -> Holds {
    let took = &oom.host_took;
    let totals = took.virtio_mem.unwrap_or_default();
    let (Some(needed), Some(plugged)) = (oom.needed_kib, totals.plugged_kib) else {
        return Holds::Unknown;
    };
    let beyond_balloon = needed.saturating_sub(took.balloon_kib.unwrap_or(0));
    let block = oom
        .devices
        .iter()
        .filter_map(|d| d.block_size_kib)
        .max()
        .unwrap_or(1);
    let request = format::round_up(plugged.saturating_add(beyond_balloon), block);
    match totals.max_size_kib {
        Some(max) if request > max => Holds::BeyondMaximum,
        _ => Holds::Request(request),
    }
}

fn md_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => format!("\\{c}"),
            c if c.is_control() => " ".into(),
            c => c.to_string(),
        })
        .collect()
}

fn name(vm_name: &str, uuid: &str) -> String {
    md_text(if vm_name.is_empty() { uuid } else { vm_name })
}

fn request_text(vm: &VmBelowMaximum) -> String {
    match (vm.request_that_holds_kib, vm.beyond_maximum) {
        (_, true) => "none: even the devices' full size would not have held".into(),
        (Some(kib_), false) => format!("at least {}", kib(kib_)),
        (None, false) => "unknown (a report without zone figures)".into(),
    }
}

/// The part as Markdown (empty for a fleet without virtio-mem).
pub fn markdown(part: &ElasticPolicy) -> String {
    let mut out = String::new();
    if part.is_empty() {
        return out;
    }
    let _ = writeln!(out, "## virtio-mem\n");
    let _ = writeln!(
        out,
        "- {} OOMs of VMs with virtio-mem; {} followed an unplug (the host lowered the request before them); {} VMs had memory unplugged at an OOM.\n",
        part.virtio_mem_ooms,
        part.ooms_after_unplug.len(),
        part.vms_below_maximum.len()
    );
    if !part.ooms_after_unplug.is_empty() {
        let _ = writeln!(out, "### OOMs after an unplug\n");
        let _ = writeln!(
            out,
            "| OOM | VM | Host | Request lowered | Before the OOM | Unplugged | Host took |\n|---|---|---|---|---|---|---|"
        );
        for oom in &part.ooms_after_unplug {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                date_time(oom.time_ms),
                name(&oom.vm_name, &oom.vm_uuid),
                md_text(&oom.host),
                opt_kib(oom.requested_lowered_kib),
                oom.seconds_after_lowering
                    .map_or("-".to_string(), |s| format!("{s} s")),
                opt_kib(oom.unplugged_kib),
                oom.host_took
            );
        }
        let _ = writeln!(out);
    }
    if !part.vms_below_maximum.is_empty() {
        let _ = writeln!(out, "### VMs below their virtio-mem maximum at OOMs\n");
        let _ = writeln!(
            out,
            "| VM | Host | OOMs (host's) | Most unplugged | Lowest request | Size | Request that would have held |\n|---|---|---|---|---|---|---|"
        );
        for vm in &part.vms_below_maximum {
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}) | {} | {} | {} | {} |",
                name(&vm.vm_name, &vm.vm_uuid),
                md_text(&vm.host),
                vm.ooms,
                vm.host_took_ooms,
                kib(vm.max_unplugged_kib),
                opt_kib(vm.lowest_requested_kib),
                opt_kib(vm.max_size_kib),
                request_text(vm)
            );
        }
        let _ = writeln!(out);
    }
    out
}

/// The part as HTML (nothing for a fleet without virtio-mem).
pub fn html(part: &ElasticPolicy) -> Markup {
    html! {
        @if !part.is_empty() {
            section #virtio-mem {
                h2 { "virtio-mem" }
                p { (part.virtio_mem_ooms) " OOMs of VMs with virtio-mem; " (part.ooms_after_unplug.len())
                    " followed an unplug; " (part.vms_below_maximum.len()) " VMs had memory unplugged at an OOM." }
                @if !part.ooms_after_unplug.is_empty() {
                    h3 { "OOMs after an unplug" }
                    table.elastic-ooms {
                        thead { tr { th { "OOM" } th { "VM" } th.num { "Request lowered" } th.num { "Before the OOM" } th.num { "Unplugged" } th { "Host took" } } }
                        tbody {
                            @for oom in &part.ooms_after_unplug {
                                tr {
                                    td { a href={ "/ooms/" (oom.id) } { (date_time(oom.time_ms)) } }
                                    td { (vm_link(&oom.host, &oom.vm_uuid, &oom.vm_name)) }
                                    td.num { (opt_kib(oom.requested_lowered_kib)) }
                                    td.num { (oom.seconds_after_lowering.map_or("-".to_string(), |s| format!("{s} s"))) }
                                    td.num { (opt_kib(oom.unplugged_kib)) }
                                    td { (badge(oom.host_took)) }
                                }
                            }
                        }
                    }
                }
                @if !part.vms_below_maximum.is_empty() {
                    h3 { "VMs below their virtio-mem maximum at OOMs" }
                    table.elastic-vms {
                        thead { tr { th { "VM" } th.num { "OOMs (host's)" } th.num { "Most unplugged" } th.num { "Lowest request" } th.num { "Size" } th { "Request that would have held" } } }
                        tbody {
                            @for vm in &part.vms_below_maximum {
                                tr {
                                    td { (vm_link(&vm.host, &vm.vm_uuid, &vm.vm_name)) }
                                    td.num { (vm.ooms) " (" (vm.host_took_ooms) ")" }
                                    td.num { (kib(vm.max_unplugged_kib)) }
                                    td.num { (opt_kib(vm.lowest_requested_kib)) }
                                    td.num { (opt_kib(vm.max_size_kib)) }
                                    td { (request_text(vm)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
