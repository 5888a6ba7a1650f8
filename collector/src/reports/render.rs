//! Text renderings of the balloon-policy report: Markdown (for people and tickets)
//! and CSV (one row per VM, for spreadsheets). JSON is the report serialized as is;
//! HTML is rendered by the dashboard. Pure. VM names are untrusted: escaped for
//! Markdown, quoted for CSV and guarded against spreadsheet formulas.

use std::fmt::Write as _;

use crate::reports::balloon_policy::{BalloonPolicyReport, VmPolicy};
use crate::reports::format::{date, date_time, kib, mib_ceil, opt_kib};
use crate::reports::stats_path::StatsPathVm;

/// The report as Markdown.
pub fn markdown(report: &BalloonPolicyReport) -> String {
    let mut out = String::new();
    let fleet = &report.fleet;
    let _ = writeln!(
        out,
        "# Balloon policy report, {} to {} (UTC)\n",
        date(report.since_ms),
        date(report.until_ms)
    );
    let _ = writeln!(out, "## Fleet\n");
    let _ = writeln!(
        out,
        "- Ballooning reclaimed **{}** on average (sum over {} VMs of maximum - actual), and caused **{}** OOMs (plus {} where it contributed) and {} near misses.",
        kib(fleet.reclaimed_avg_kib),
        fleet.vms_with_balloon,
        fleet.balloon_ooms,
        fleet.balloon_contributed_ooms,
        fleet.near_misses
    );
    let _ = writeln!(
        out,
        "- {} VMs have a floor below their observed working set; {} never use most of their memory.",
        fleet.floors_below_working_set, fleet.shrink_candidates
    );
    if fleet.starved_vms > 0 {
        let _ = writeln!(
            out,
            "- **{}** VMs starved at their balloon floor (sustained allocation stalls or memory pressure, no OOM).",
            fleet.starved_vms
        );
    }
    if fleet.replay_inflations > 0 || !report.replay.is_empty() {
        let _ = writeln!(
            out,
            "- Proxmox auto-balloon replay (an approximation): {} inflations, {} of them followed by an OOM.",
            fleet.replay_inflations, fleet.replay_inflations_before_ooms
        );
    }
    let _ = writeln!(out, "- Recommended floor: {}.\n", report.floor_rule);
    for vm in &report.vms {
        vm_markdown(&mut out, vm);
    }
    stats_path_markdown(&mut out, &report.stats_path);
    if !report.replay.is_empty() {
        let _ = writeln!(out, "## Proxmox auto-balloon replay (approximation)\n");
        let _ = writeln!(
            out,
            "Target 80 %, at most 100 MiB per 10 s cycle, 10 MiB dead-band, split by shares, run over the recorded host and VM series.\n"
        );
        for host in &report.replay {
            let _ = writeln!(
                out,
                "### Host {} ({} VMs, {} cycles)\n",
                md(&host.host),
                host.vms,
                host.cycles
            );
            if host.inflations.is_empty() {
                let _ = writeln!(out, "No inflations.\n");
            }
            for inflation in &host.inflations {
                let _ = writeln!(
                    out,
                    "- {} {}: {} -> {} until {}{}",
                    date_time(inflation.started_ms),
                    md(&inflation.vm_name),
                    kib(inflation.from_kib),
                    kib(inflation.to_kib),
                    date_time(inflation.ended_ms),
                    if inflation.ooms_after_ms.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; **followed by OOM at {}**",
                            inflation
                                .ooms_after_ms
                                .iter()
                                .map(|&t| date_time(t))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                );
            }
            let _ = writeln!(out);
        }
    }
    out
}

fn vm_markdown(out: &mut String, vm: &VmPolicy) {
    let _ = writeln!(
        out,
        "## {} on {} ({})\n",
        md(&vm.name),
        md(&vm.host),
        md(&vm.uuid)
    );
    let _ = writeln!(
        out,
        "- Memory {}, floor {}, balloon held {} on average.",
        opt_kib(vm.memory_kib),
        opt_kib(vm.floor_kib),
        opt_kib(vm.reclaimed_avg_kib)
    );
    if vm.balloon_ooms.is_empty() {
        let _ = writeln!(out, "- No balloon-induced OOMs.");
    } else {
        let _ = writeln!(
            out,
            "- **{} balloon-induced OOMs**: {}.",
            vm.balloon_ooms.len(),
            vm.balloon_ooms
                .iter()
                .map(|oom| format!(
                    "{} ({}, balloon held {})",
                    date_time(oom.time_ms),
                    oom.verdict,
                    opt_kib(oom.balloon_held_kb)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if !vm.near_misses.is_empty() {
        let _ = writeln!(
            out,
            "- {} near misses: {}.",
            vm.near_misses.len(),
            vm.near_misses
                .iter()
                .map(|miss| format!(
                    "{} {} (MemAvailable {}, balloon held {})",
                    date_time(miss.time_ms),
                    miss.kind,
                    opt_kib(miss.usable_kib),
                    opt_kib(miss.held_kib)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if let Some(last) = vm.guard_overridden.last() {
        let _ = writeln!(
            out,
            "- **Guard overridden by host policy** {} time(s), the latest {}: the host's balloon policy took back the guard's {} (floor {}). Floor that would hold: **{}**.",
            vm.guard_overridden.len(),
            date_time(last.at_ms),
            opt_kib(last.target_kib),
            opt_kib(last.floor_before_kib),
            opt_kib(last.floor_after_kib)
        );
    }
    if let Some(starved) = &vm.starvation {
        let _ = writeln!(
            out,
            "- **Starved at its balloon floor** {} ({} episodes, {} s in all, the longest {} s; no OOM): {}. Floor that would have ended it: **{}**.",
            opt_kib(starved.floor_kib),
            starved.episodes.len(),
            starved.total_secs,
            starved.longest_secs,
            starved
                .episodes
                .iter()
                .map(|episode| format!(
                    "{} for {} s{} (stalls {}/s, PSI some {} %, full {} %)",
                    date_time(episode.started_at_ms),
                    episode.secs,
                    if episode.open { ", still open" } else { "" },
                    rate(episode.peak_alloc_stalls_per_s),
                    rate(episode.peak_psi_some_avg10),
                    rate(episode.peak_psi_full_avg10)
                ))
                .collect::<Vec<_>>()
                .join("; "),
            starved
                .floor_to_end_kib
                .map_or_else(|| "unknown (no deficit estimate)".to_string(), kib)
        );
    }
    match vm.working_set {
        Some(ws) => {
            let _ = writeln!(
                out,
                "- Working set over {} samples: p50 {}, p95 {}, max {}.",
                ws.samples,
                kib(ws.p50_kib),
                kib(ws.p95_kib),
                kib(ws.max_kib)
            );
        }
        None => {
            let _ = writeln!(out, "- Working set unknown (no MemAvailable: stats off?).");
        }
    }
    if let Some(floor) = vm.recommended_floor_kib {
        let _ = writeln!(
            out,
            "- Recommended floor: **{} MiB**{}.",
            mib_ceil(floor),
            if vm.floor_below_working_set {
                " (the configured floor is BELOW the observed working set)"
            } else {
                ""
            }
        );
    }
    if let Some(check) = &vm.floor_check {
        let mut summary = check.summary.clone();
        if let Some(first) = summary.get(..1) {
            summary.replace_range(..1, &first.to_uppercase());
        }
        let _ = writeln!(out, "- {}.", md(&summary));
    }
    for action in &vm.actions {
        let _ = writeln!(out, "- Fix `{}`: {}", action.issue, md(&action.why));
        for line in &action.fix {
            let _ = writeln!(out, "  - `{}`", line.replace('`', "'"));
        }
    }
    let _ = writeln!(out);
}

/// The stats-path section (`reports::stats_path`): one line per VM, then what it means.
fn stats_path_markdown(out: &mut String, vms: &[StatsPathVm]) {
    if vms.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Stats path and free page reporting\n");
    for vm in vms {
        let _ = writeln!(
            out,
            "- **{}** on {}: stats path {}; free page reporting {}.",
            md(&vm.name),
            md(&vm.host),
            vm.stats.text(),
            vm.free_page_reporting.text()
        );
        for line in vm.figures.iter().chain(&vm.fix) {
            let _ = writeln!(out, "  - {}", md(line));
        }
    }
    let _ = writeln!(out);
}

/// An optional rate, one decimal.
pub fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| format!("{value:.1}"))
}

/// Escapes text for Markdown (and for HTML inside Markdown).
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' | '(' | ')' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// The CSV header.
pub const CSV_HEADER: &str = "host,vm,uuid,platform,memory_mib,floor_mib,ws_samples,ws_p50_mib,ws_p95_mib,ws_max_mib,recommended_floor_mib,floor_below_working_set,balloon_ooms,near_misses,reclaimed_avg_mib,shrink_to_mib,actions";

/// The report as CSV, one row per VM.
pub fn csv(report: &BalloonPolicyReport) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let mib = |value: Option<u64>| value.map(|v| mib_ceil(v).to_string()).unwrap_or_default();
    for vm in &report.vms {
        let ws = vm.working_set;
        let fields = [
            csv_field(&vm.host),
            csv_field(&vm.name),
            csv_field(&vm.uuid),
            format!("{:?}", vm.platform).to_lowercase(),
            mib(vm.memory_kib),
            mib(vm.floor_kib),
            ws.map(|ws| ws.samples.to_string()).unwrap_or_default(),
            mib(ws.map(|ws| ws.p50_kib)),
            mib(ws.map(|ws| ws.p95_kib)),
            mib(ws.map(|ws| ws.max_kib)),
            mib(vm.recommended_floor_kib),
            vm.floor_below_working_set.to_string(),
            vm.balloon_ooms.len().to_string(),
            vm.near_misses.len().to_string(),
            mib(vm.reclaimed_avg_kib),
            mib(vm.shrink_to_kib),
            csv_field(
                &vm.actions
                    .iter()
                    .map(|a| a.issue.as_str())
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn csv_field(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_escaped() {
        assert_eq!(
            md("<script>a|b</script>"),
            "&lt;script&gt;a\\|b&lt;/script&gt;"
        );
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}
