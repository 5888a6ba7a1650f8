//! The balloon-policy report as HTML: the body the dashboard page shows, and the same
//! as one self-contained file for `ballast-collector report --format html` (its
//! stylesheet inlined, since a file has no server to fetch it from).

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::html::{badge, host_link, kib, vm_link, STYLE_CSS};
use crate::reports::balloon_policy::{BalloonPolicyReport, VmPolicy};
use crate::reports::elastic_policy::{self, ElasticPolicy};
use crate::reports::format::{self, mib_ceil};
use crate::reports::render;

/// The report as one self-contained HTML file.
pub fn standalone(report: &BalloonPolicyReport) -> String {
    standalone_with(report, &ElasticPolicy::default())
}

/// The report and its virtio-mem part (nothing when empty) as one self-contained file.
pub fn standalone_with(report: &BalloonPolicyReport, elastic: &ElasticPolicy) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Balloon policy - ballast" }
                style { (PreEscaped(STYLE_CSS)) }
            }
            body { main { h1 { "Balloon policy" } (body(report, "")) (elastic_policy::html(elastic)) } }
        }
    }
    .into_string()
}

pub fn body(report: &BalloonPolicyReport, since_text: &str) -> Markup {
    let fleet = &report.fleet;
    html! {
        @if !since_text.is_empty() {
            nav.ranges {
                "Period: "
                @for name in ["7d", "30d", "90d"] {
                    @if name == since_text { strong { (name) } } @else { a href={ "/reports/balloon-policy?since=" (name) } { (name) } }
                    " "
                }
                " · " a href={ "/reports/balloon-policy?format=md&since=" (since_text) } { "Markdown" }
                " · " a href={ "/reports/balloon-policy?format=csv&since=" (since_text) } { "CSV" }
                " · " a href={ "/reports/balloon-policy?format=json&since=" (since_text) } { "JSON" }
            }
        }
        p { (format::date(report.since_ms)) " to " (format::date(report.until_ms)) " (UTC)." }
        section.summary #fleet {
            div.stat { span.num { (format::kib(fleet.reclaimed_avg_kib)) } " reclaimed by ballooning on average (" (fleet.vms_with_balloon) " VMs)" }
            div.stat { span.num { (fleet.balloon_ooms) } " OOMs caused by the balloon, " (fleet.balloon_contributed_ooms) " where it contributed" }
            div.stat { span.num { (fleet.near_misses) } " near misses" }
            div.stat { span.num { (fleet.floors_below_working_set) } " floors below the working set" }
            div.stat { span.num { (fleet.shrink_candidates) } " VMs that could shrink" }
            div.stat { span.num { (fleet.starved_vms) } " VMs starved at their balloon floor" }
        }
        p.note { "Recommended floor: " (report.floor_rule) "." }
        @for vm in &report.vms {
            (vm_section(vm))
        }
        @if !report.replay.is_empty() {
            section #replay {
                h2 { "Proxmox auto-balloon replay" }
                p.note { "An approximation: Proxmox's algorithm (target 80 %, at most 100 MiB per 10 s cycle, 10 MiB dead-band, split by shares) replayed over the recorded host and VM series. "
                    (fleet.replay_inflations) " inflations, " (fleet.replay_inflations_before_ooms) " followed by an OOM." }
                @for host in &report.replay {
                    h3 { "Host " (host_link(&host.host)) " (" (host.vms) " VMs, " (host.cycles) " cycles)" }
                    @if host.inflations.is_empty() { p.empty { "No inflations." } } @else {
                        table {
                            thead { tr { th { "VM" } th { "From" } th { "Until" } th.num { "Balloon" } th { "OOM after" } } }
                            tbody {
                                @for inflation in &host.inflations {
                                    tr class=[(!inflation.ooms_after_ms.is_empty()).then_some("pressure")] {
                                        td { (vm_link(&host.host, &inflation.vm_uuid, &inflation.vm_name)) }
                                        td { (format::date_time(inflation.started_ms)) }
                                        td { (format::date_time(inflation.ended_ms)) }
                                        td.num { (format::kib(inflation.from_kib)) " → " (format::kib(inflation.to_kib)) }
                                        td { @for t in &inflation.ooms_after_ms { (format::date_time(*t)) " " } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn vm_section(vm: &VmPolicy) -> Markup {
    html! {
        section.vm-policy {
            h2 { (vm_link(&vm.host, &vm.uuid, &vm.name)) " on " (host_link(&vm.host)) }
            dl.facts {
                dt { "Memory / floor" } dd { (kib(vm.memory_kib)) " / " (kib(vm.floor_kib)) }
                dt { "Balloon held on average" } dd { (kib(vm.reclaimed_avg_kib)) }
                dt { "Balloon OOMs" } dd {
                    @if vm.balloon_ooms.is_empty() { "none" }
                    @for oom in &vm.balloon_ooms {
                        a href={ "/ooms/" (oom.id) } { (format::date_time(oom.time_ms)) } " " (badge(oom.verdict)) " "
                    }
                }
                dt { "Near misses" } dd {
                    @if vm.near_misses.is_empty() { "none" }
                    @for miss in &vm.near_misses {
                        span.miss { (format::date_time(miss.time_ms)) " " (miss.kind) " (MemAvailable " (kib(miss.usable_kib)) ", held " (kib(miss.held_kib)) ")" } " "
                    }
                }
                dt { "Working set" } dd {
                    @match vm.working_set {
                        Some(ws) => { "p50 " (format::kib(ws.p50_kib)) ", p95 " (format::kib(ws.p95_kib)) ", max " (format::kib(ws.max_kib)) " (" (ws.samples) " samples)" }
                        None => { "unknown (no MemAvailable)" }
                    }
                }
                dt { "Recommended floor" } dd.recommended {
                    @match vm.recommended_floor_kib {
                        Some(floor) => { strong { (mib_ceil(floor)) " MiB" }
                            @if vm.floor_below_working_set { " - the configured floor is below the observed working set" } }
                        None => { "-" }
                    }
                }
                @if let Some(check) = &vm.floor_check {
                    dt { "Checked against history" } dd.floor-check { (check.summary) }
                }
                @if let Some(starved) = &vm.starvation {
                    dt { "Starved at the floor" } dd.starvation {
                        "held at " (kib(starved.floor_kib)) " for " (starved.total_secs) " s in "
                        (starved.episodes.len()) " episode(s), no OOM; stalls up to "
                        (render::rate(starved.peak_alloc_stalls_per_s)) "/s, PSI some up to "
                        (render::rate(starved.peak_psi_some_avg10)) " %. Floor that would have ended it: "
                        strong { (starved.floor_to_end_kib.map_or_else(|| "unknown (no deficit estimate)".to_string(), format::kib)) }
                    }
                }
            }
            @if let Some(last) = vm.guard_overridden.last() {
                dl.facts {
                    dt { "Guard overridden by host policy" } dd.guard-overridden {
                        (vm.guard_overridden.len()) " time(s), the latest " (format::date_time(last.at_ms))
                        ": the host's balloon policy took back the guard's " (kib(last.target_kib))
                        " (floor " (kib(last.floor_before_kib)) "). Floor that would hold: "
                        strong { (kib(last.floor_after_kib)) }
                    }
                }
            }
            @if !vm.actions.is_empty() {
                ul.actions {
                    @for action in &vm.actions {
                        li {
                            strong { (action.issue) } ": " (action.why)
                            @for line in &action.fix { br; code { (line) } }
                        }
                    }
                }
            }
        }
    }
}
