//! The stale-resource sweeper: removes leftovers of harness processes that died.
//!
//! Only names of the form `ballast-test-<pid>-<n>` whose `<pid>` is no longer alive
//! are touched: libvirt domains (destroy + undefine), run folders, and the QEMU of a
//! Proxmox-style guest (killed only when its command line names that run folder).

use std::path::Path;
use std::time::Duration;

use crate::cmd;
use crate::names;
use crate::settings::Settings;
use crate::virsh::Virsh;

/// What one sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub domains: Vec<String>,
    pub run_dirs: Vec<String>,
    pub qemu_pids: Vec<u32>,
}

/// Sweeps dead harness processes' domains and run folders.
pub(crate) fn sweep(settings: &Settings, virsh: &Virsh) -> SweepReport {
    let mut report = SweepReport::default();
    let is_stale = |name: &str| names::owner_pid(name).is_some_and(|pid| !cmd::pid_alive(pid));
    for name in virsh.all_domain_names().unwrap_or_default() {
        if is_stale(&name) {
            let _ = virsh.run(["destroy", &name]);
            if virsh.run(["undefine", &name]).is_ok() {
                report.domains.push(name);
            }
        }
    }
    let run_dir = settings.run_dir();
    let Ok(entries) = std::fs::read_dir(&run_dir) else {
        return report;
    };
    for entry in entries.filter_map(|entry| entry.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_stale(&name) {
            continue;
        }
        report.qemu_pids.extend(kill_orphan_qemus(&entry.path()));
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            report.run_dirs.push(name);
        }
    }
    report
}

/// Kills QEMUs recorded in `<dir>/*.pid` whose command line mentions `dir`.
fn kill_orphan_qemus(dir: &Path) -> Vec<u32> {
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return killed;
    };
    let dir_text = dir.to_string_lossy().into_owned();
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if path.extension().is_none_or(|ext| ext != "pid") {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        if cmd::pid_alive(pid)
            && cmdline.contains(&dir_text)
            && cmd::stop_pid(pid, Duration::from_secs(10))
        {
            killed.push(pid);
        }
    }
    killed
}
