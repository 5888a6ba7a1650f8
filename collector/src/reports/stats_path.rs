//! The balloon-policy report's stats-path section (issue 20 item 3): per VM with a
//! stored inventory, whether its balloon reports free pages, whether the guest's
//! balloon driver answers (stats flowing, period 0, never sent, stopped), and what
//! that means for the figures ballast shows of it. Pure over the stored inventory
//! (`config_json`, `findings_json`): the agent's findings first, its configuration
//! where an older agent sent no finding for it. `reports::build` fills the report's
//! `stats_path` with it (this file knows nothing of the rest of the report, which
//! holds its rows); HTML here, Markdown in `reports::render`.

use ballast_model::{AuditFinding, VmConfig};
use maud::{html, Markup};
use serde::Serialize;

use crate::html::vm_link;
use crate::reports::audit_words::figures_meaning;

/// Which stack's commands fix the VM (the report's platform).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stack {
    Proxmox,
    Libvirt,
    Unknown,
}

/// What the section reads of one VM.
#[derive(Debug, Clone, Copy)]
pub struct InventoryFacts<'a> {
    pub uuid: &'a str,
    pub name: &'a str,
    pub host: &'a str,
    pub stack: Stack,
    /// The Proxmox vmid as a shell word, or a placeholder.
    pub vmid: &'a str,
    /// The VM's name as a shell word.
    pub shell_name: &'a str,
    pub config: Option<&'a VmConfig>,
    pub findings: &'a [String],
}

/// Free page reporting of the VM's balloon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FreePageReporting {
    On,
    Off,
    Unknown,
    NoBalloon,
}

/// The guest's stats path, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsPath {
    /// Asked for, never sent: `balloon_driver_silent`.
    DriverSilent,
    /// Sent, then stopped: `stale_stats`.
    Stopped,
    /// Never asked for: `stats_period_off`.
    PeriodOff,
    /// No balloon device: `no_balloon`.
    NoBalloon,
    /// Stats come.
    Reporting,
}

/// One VM's line of the section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsPathVm {
    pub uuid: String,
    pub name: String,
    pub host: String,
    pub platform: Stack,
    pub stats: StatsPath,
    pub free_page_reporting: FreePageReporting,
    /// What the two mean for the figures ballast shows of the VM.
    pub figures: Vec<String>,
    /// The change that turns free page reporting on, where it is off.
    pub fix: Vec<String>,
}

/// The section: every VM with an inventory, worst stats path first.
pub fn build<'a>(vms: impl IntoIterator<Item = InventoryFacts<'a>>) -> Vec<StatsPathVm> {
    let mut out: Vec<StatsPathVm> = vms
        .into_iter()
        .filter(|vm| vm.config.is_some() || !vm.findings.is_empty())
        .map(|vm| one(&vm))
        .collect();
    out.sort_by(|a, b| {
        (a.stats, &a.host, &a.name, &a.uuid).cmp(&(b.stats, &b.host, &b.name, &b.uuid))
    });
    out
}

fn one(vm: &InventoryFacts<'_>) -> StatsPathVm {
    let has = |finding: AuditFinding| vm.findings.iter().any(|name| finding == name.as_str());
    let config = vm.config;
    let balloon = !has(AuditFinding::NoBalloon) && config.is_none_or(|c| c.balloon_present);
    let stats = stats_path(balloon, config, has);
    let free_page_reporting = if !balloon {
        FreePageReporting::NoBalloon
    } else if has(AuditFinding::FreePageReportingOn) {
        FreePageReporting::On
    } else if has(AuditFinding::FreePageReportingOff) {
        FreePageReporting::Off
    } else if has(AuditFinding::FreePageReportingUnknown) {
        FreePageReporting::Unknown
    } else {
        // An agent before the finding: its configuration's value.
        match config.and_then(|c| c.free_page_reporting) {
            Some(true) => FreePageReporting::On,
            Some(false) => FreePageReporting::Off,
            None => FreePageReporting::Unknown,
        }
    };
    let stats_finding = match stats {
        StatsPath::DriverSilent => Some(AuditFinding::BalloonDriverSilent),
        StatsPath::Stopped => Some(AuditFinding::StaleStats),
        StatsPath::PeriodOff => Some(AuditFinding::StatsPeriodOff),
        StatsPath::NoBalloon => Some(AuditFinding::NoBalloon),
        StatsPath::Reporting => None,
    };
    let fpr_finding = match free_page_reporting {
        FreePageReporting::On => Some(AuditFinding::FreePageReportingOn),
        FreePageReporting::Off => Some(AuditFinding::FreePageReportingOff),
        FreePageReporting::Unknown => Some(AuditFinding::FreePageReportingUnknown),
        FreePageReporting::NoBalloon => None,
    };
    let mut figures = Vec::new();
    if stats == StatsPath::Reporting {
        figures.push("The guest's figures (MemTotal, MemAvailable, faults, swap) are current: the working set, floors, near misses and the OOM correlation use them.".to_string());
    }
    figures.extend(
        [stats_finding, fpr_finding]
            .into_iter()
            .flatten()
            .filter_map(figures_meaning)
            .map(str::to_string),
    );
    let fix = if free_page_reporting == FreePageReporting::Off {
        fix_free_page_reporting(vm)
    } else {
        Vec::new()
    };
    StatsPathVm {
        uuid: vm.uuid.to_string(),
        name: vm.name.to_string(),
        host: vm.host.to_string(),
        platform: vm.stack,
        stats,
        free_page_reporting,
        figures,
        fix,
    }
}

fn stats_path(
    balloon: bool,
    config: Option<&VmConfig>,
    has: impl Fn(AuditFinding) -> bool,
) -> StatsPath {
    if !balloon {
        StatsPath::NoBalloon
    } else if has(AuditFinding::StatsPeriodOff)
        || config.is_some_and(|c| c.stats_period_secs.unwrap_or(0) == 0)
    {
        StatsPath::PeriodOff
    } else if has(AuditFinding::BalloonDriverSilent) {
        StatsPath::DriverSilent
    } else if has(AuditFinding::StaleStats) {
        StatsPath::Stopped
    } else {
        StatsPath::Reporting
    }
}

fn fix_free_page_reporting(vm: &InventoryFacts<'_>) -> Vec<String> {
    let libvirt = format!(
        "virsh edit {}: <memballoon model='virtio' freePageReporting='on'>, then restart the VM (libvirt >= 6.9, a guest kernel >= 5.7)",
        vm.shell_name
    );
    let proxmox = format!(
        "qm set {} --machine <a machine type of version 6.2 or newer, e.g. pc-i440fx-8.1>, then restart the VM (qemu-server turns free page reporting on from 6.2)",
        vm.vmid
    );
    match vm.stack {
        Stack::Libvirt => vec![libvirt],
        Stack::Proxmox => vec![proxmox],
        Stack::Unknown => vec![libvirt, proxmox],
    }
}

impl StatsPath {
    /// In words, for the report.
    pub fn text(self) -> &'static str {
        match self {
            StatsPath::DriverSilent => "balloon driver silent",
            StatsPath::Stopped => "stats stopped",
            StatsPath::PeriodOff => "stats period 0",
            StatsPath::NoBalloon => "no balloon",
            StatsPath::Reporting => "reporting",
        }
    }
}

impl FreePageReporting {
    /// In words, for the report.
    pub fn text(self) -> &'static str {
        match self {
            FreePageReporting::On => "on",
            FreePageReporting::Off => "off",
            FreePageReporting::Unknown => "unknown",
            FreePageReporting::NoBalloon => "no balloon",
        }
    }
}

/// The section as HTML (maud escapes every text).
pub fn html(vms: &[StatsPathVm]) -> Markup {
    html! {
        @if !vms.is_empty() {
            section #stats-path {
                h2 { "Stats path and free page reporting" }
                table {
                    thead { tr { th { "VM" } th { "Stats" } th { "Free page reporting" } th { "What it means for the figures" } } }
                    tbody {
                        @for vm in vms {
                            tr class=[(vm.stats < StatsPath::NoBalloon).then_some("pressure")] {
                                td { (vm_link(&vm.host, &vm.uuid, &vm.name)) }
                                td { (vm.stats.text()) }
                                td { (vm.free_page_reporting.text()) }
                                td { @for line in vm.figures.iter().chain(&vm.fix) { p { (line) } } }
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
