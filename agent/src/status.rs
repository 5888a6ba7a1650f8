//! The running agent's per-VM status, written to `<state_dir>/status.json` after
//! every poll and printed as a table by `ballast-agent status`.
//!
//! The file is replaced atomically (temp file + rename) so a reader never sees half
//! of it. VM names come from the hypervisor configuration and may hold anything:
//! the table replaces control characters before printing.

use std::fmt::Write;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use ballast_model::PressureSnapshot;

use crate::fleet::Fleet;
use crate::history::epoch_secs;

/// What `status.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub host_id: String,
    pub backend: String,
    pub updated_at_epoch_secs: u64,
    pub poll_duration_ms: u64,
    pub vms: Vec<VmStatus>,
    /// The sender's state (`delivery.json`, written by the sender, not by the monitor);
    /// `None` without a collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::sink::DeliveryState>,
}

/// One VM's line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    pub uuid: String,
    pub name: String,
    pub maximum_kib: Option<u64>,
    pub actual_kib: Option<u64>,
    /// Guest MemAvailable.
    pub usable_kib: Option<u64>,
    pub stale: bool,
    pub last_oom_epoch_secs: Option<u64>,
    pub oom_count: u64,
    pub findings: Vec<String>,
    /// The memory pressure risk (`ok`, `elevated`, `critical`); None: the VM has no
    /// pressure signals, so the risk is unknown.
    #[serde(default)]
    pub risk: Option<String>,
    /// Predicted seconds until MemAvailable runs out, when it is falling.
    #[serde(default)]
    pub exhaustion_secs: Option<u64>,
    /// The pressure signals at the last poll; None: the VM has none (`signals: none`).
    #[serde(default)]
    pub signals: Option<PressureSnapshot>,
    /// The guard's last decision for this VM (docs/guard.md); None: none yet.
    #[serde(default)]
    pub guard: Option<GuardStatus>,
    /// Its virtio-mem devices (docs/elastic.md); empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtio_mem: Vec<VirtioMemStatus>,
}

/// One virtio-mem device of a VM: what the guest has plugged, what the host asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMemStatus {
    pub device: String,
    pub plugged_kib: Option<u64>,
    pub requested_kib: Option<u64>,
    pub max_size_kib: Option<u64>,
    /// The request is stuck (docs/elastic.md, "The stuck rule").
    pub stuck: bool,
}

/// The guard's last decision for one VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardStatus {
    pub at_epoch_secs: u64,
    /// `deflated`, `would_deflate`, `overridden_by_host`, ...
    pub outcome: String,
    pub target_kib: Option<u64>,
}

impl Status {
    /// The status of every VM the fleet knows.
    pub fn from_fleet(
        fleet: &Fleet,
        host_id: &str,
        backend: &str,
        at: SystemTime,
        poll_duration_ms: u64,
    ) -> Self {
        let vms = fleet
            .vms()
            .map(|vm| {
                let sample = vm.last_sample.as_ref();
                let findings = vm
                    .config
                    .as_ref()
                    .map(|config| {
                        crate::audit::finding_names(config, crate::audit::Observed::from_fleet(vm))
                    })
                    .unwrap_or_default();
                VmStatus {
                    uuid: vm.id.uuid.clone(),
                    name: vm.id.name.clone(),
                    maximum_kib: sample.and_then(|s| s.maximum_kib),
                    actual_kib: vm.history.last().and_then(|p| p.actual_kib),
                    usable_kib: sample.and_then(|s| s.usable_kib),
                    stale: vm.stale,
                    last_oom_epoch_secs: vm.last_oom_at.map(epoch_secs),
                    oom_count: vm.oom_count,
                    findings,
                    risk: vm.risk.level().map(|level| level.as_str().to_string()),
                    exhaustion_secs: vm.risk.assessment().and_then(|a| a.exhaustion_secs),
                    signals: vm.pressure_snapshot().copied(),
                    guard: vm
                        .guard
                        .last()
                        .map(|(at_ms, outcome, target_kib)| GuardStatus {
                            at_epoch_secs: u64::try_from(at_ms / 1000).unwrap_or(0),
                            outcome: outcome.as_str().to_string(),
                            target_kib,
                        }),
                    virtio_mem: vm
                        .elastic
                        .iter()
                        .flat_map(|elastic| elastic.devices())
                        .map(|d| VirtioMemStatus {
                            device: d.device.id.clone(),
                            plugged_kib: d.device.plugged_kib,
                            requested_kib: d.device.requested_kib,
                            max_size_kib: d.device.max_size_kib,
                            stuck: d.stuck,
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            host_id: host_id.to_string(),
            backend: backend.to_string(),
            updated_at_epoch_secs: epoch_secs(at),
            poll_duration_ms,
            vms,
            delivery: None,
        }
    }

    /// Writes the file atomically. Streamed through a small buffer: at 500 VMs the
    /// JSON is ~180 KB, which a whole-text buffer would hold in the heap every poll.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let temp = path.with_extension("json.tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&temp)?);
        serde_json::to_writer_pretty(&mut out, self).map_err(std::io::Error::other)?;
        out.flush()?;
        drop(out);
        std::fs::rename(&temp, path)
    }

    pub fn read(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read(path)?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// The table `ballast-agent status` prints.
    pub fn table(&self, now: SystemTime) -> String {
        let mut out = String::new();
        let age = epoch_secs(now).saturating_sub(self.updated_at_epoch_secs);
        let _ = writeln!(
            out,
            "host {} ({}), {} VMs, updated {age} s ago, last poll {} ms",
            printable(&self.host_id),
            self.backend,
            self.vms.len(),
            self.poll_duration_ms
        );
        if let Some(delivery) = &self.delivery {
            out.push_str(&delivery.lines(epoch_secs(now)));
        }
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>9} {:>10} {:>6} {:>16} {:>20}  findings",
            "NAME", "MAX MiB", "BALLOON", "AVAIL MiB", "STALE", "RISK", "LAST OOM (UTC)"
        );
        for vm in &self.vms {
            let mib = |kib: Option<u64>| {
                kib.map_or_else(|| "-".to_string(), |kib| (kib / 1024).to_string())
            };
            let last_oom = vm.last_oom_epoch_secs.map_or_else(
                || "-".to_string(),
                |secs| format!("{} ({}x)", utc(secs), vm.oom_count),
            );
            let risk = match (&vm.risk, vm.exhaustion_secs) {
                (None, _) => "unknown".to_string(),
                (Some(level), Some(secs)) if level != "ok" => {
                    format!("{} ({secs} s)", printable(level))
                }
                (Some(level), _) => printable(level),
            };
            let _ = writeln!(
                out,
                "{:<24} {:>9} {:>9} {:>10} {:>6} {:>16} {:>20}  {}",
                printable(&vm.name),
                mib(vm.maximum_kib),
                mib(vm.actual_kib),
                mib(vm.usable_kib),
                if vm.stale { "yes" } else { "no" },
                risk,
                last_oom,
                vm.findings.join(",")
            );
            let _ = writeln!(out, "  signals: {}", signals_line(vm.signals.as_ref()));
            if let Some(guard) = &vm.guard {
                let target = guard
                    .target_kib
                    .map(|kib| format!(", target {} MiB", kib / 1024))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  guard: {}{target} at {}",
                    printable(&guard.outcome),
                    utc(guard.at_epoch_secs)
                );
            }
            for device in &vm.virtio_mem {
                let _ = writeln!(
                    out,
                    "  virtio-mem {}: plugged {} of {} MiB, requested {} MiB{}",
                    printable(&device.device),
                    mib(device.plugged_kib),
                    mib(device.max_size_kib),
                    mib(device.requested_kib),
                    if device.stuck { " (stuck)" } else { "" }
                );
            }
        }
        out
    }
}

/// One VM's pressure signals in a line: `none` when it has none (which is not the
/// same as no pressure), else each figure it has.
fn signals_line(signals: Option<&PressureSnapshot>) -> String {
    let Some(s) = signals else {
        return "none".to_string();
    };
    let figures = [
        ("stalls", s.alloc_stalls_per_s, "/s"),
        ("direct scan", s.direct_scan_kib_per_s, " KiB/s"),
        ("direct reclaim", s.direct_reclaim_kib_per_s, " KiB/s"),
        ("kswapd scan", s.async_scan_kib_per_s, " KiB/s"),
        ("kswapd reclaim", s.async_reclaim_kib_per_s, " KiB/s"),
        ("major faults", s.major_faults_per_s, "/s"),
        ("swap-in", s.swap_in_kib_per_s, " KiB/s"),
        ("avail slope", s.available_slope_kib_per_s, " KiB/s"),
        ("psi some", s.psi_some_avg10, " %"),
        ("psi full", s.psi_full_avg10, " %"),
    ];
    let parts: Vec<String> = figures
        .iter()
        .filter_map(|(name, value, unit)| {
            let value = (*value)?;
            Some(if value.abs() >= 100.0 || value == value.trunc() {
                format!("{name} {value:.0}{unit}")
            } else {
                format!("{name} {value:.1}{unit}")
            })
        })
        .collect();
    if parts.is_empty() {
        // PSI totals only.
        "psi totals only".to_string()
    } else {
        parts.join(", ")
    }
}

/// Names without control characters (a VM name could carry terminal escapes), cut at 24.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if crate::terminal::is_unsafe(c) {
                '?'
            } else {
                c
            }
        })
        .take(24)
        .collect()
}

/// `2026-11-26 06:53` from epoch seconds (UTC, no time zone database needed).
fn utc(epoch: u64) -> String {
    let at = i64::try_from(epoch)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        // Checked with `date -u -d @1795658493`.
        assert_eq!(utc(1_795_658_493), "2026-11-26 02:01");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(u64::MAX), "9999-12-31 23:59");
    }

    #[test]
    fn the_table_escapes_hostile_names_and_shows_missing_as_dashes() {
        let status = Status {
            host_id: "pve1".into(),
            backend: "libvirt".into(),
            updated_at_epoch_secs: 100,
            poll_duration_ms: 12,
            vms: vec![VmStatus {
                uuid: "u".into(),
                name: "evil\u{1b}[2Jname".into(),
                maximum_kib: Some(524_288),
                actual_kib: Some(204_800),
                usable_kib: None,
                stale: true,
                last_oom_epoch_secs: Some(1_795_658_493),
                oom_count: 2,
                findings: vec!["deflate_on_oom_off".into()],
                risk: Some("critical".into()),
                exhaustion_secs: Some(40),
                signals: None,
                guard: Some(GuardStatus {
                    at_epoch_secs: 1_795_658_400,
                    outcome: "would_deflate".into(),
                    target_kib: Some(1_179_648),
                }),
                virtio_mem: vec![VirtioMemStatus {
                    device: "virtiomem0".into(),
                    plugged_kib: Some(2048 * 1024),
                    requested_kib: Some(1024 * 1024),
                    max_size_kib: Some(4096 * 1024),
                    stuck: true,
                }],
            }],
            delivery: None,
        };
        let table = status.table(std::time::UNIX_EPOCH + std::time::Duration::from_secs(105));
        assert!(!table.contains('\u{1b}'));
        assert!(table.contains("evil?[2Jname"));
        assert!(table.contains("512"));
        assert!(table.contains("200"));
        assert!(table.contains("2026-11-26 02:01 (2x)"));
        assert!(table.contains("updated 5 s ago"));
        assert!(table.contains("\n  signals: none\n"), "{table}");
        assert!(table.contains("critical (40 s)"), "{table}");
        assert!(
            table.contains("\n  guard: would_deflate, target 1152 MiB at 2026-11-26 02:00\n"),
            "{table}"
        );
        assert!(
            table.contains(
                "\n  virtio-mem virtiomem0: plugged 2048 of 4096 MiB, requested 1024 MiB (stuck)\n"
            ),
            "{table}"
        );
        // No pressure signals: the risk is unknown, never shown as ok.
        let mut blind = status.clone();
        blind.vms[0].risk = None;
        let table = blind.table(std::time::UNIX_EPOCH);
        assert!(table.contains(" unknown "), "{table}");
        assert!(!table.contains(" ok "), "{table}");
    }

    #[test]
    fn each_vm_shows_the_signals_it_has() {
        let line = signals_line(Some(&PressureSnapshot {
            alloc_stalls_per_s: Some(2.0),
            direct_reclaim_kib_per_s: Some(8.25),
            available_slope_kib_per_s: Some(-1024.4),
            psi_some_avg10: Some(12.5),
            ..PressureSnapshot::default()
        }));
        assert_eq!(
            line,
            "stalls 2/s, direct reclaim 8.2 KiB/s, avail slope -1024 KiB/s, psi some 12.5 %"
        );
        assert_eq!(signals_line(None), "none");
    }

    #[test]
    fn the_file_round_trips() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("status.json");
        let status = Status {
            host_id: "h".into(),
            ..Status::default()
        };
        status.write(&path).expect("written");
        assert_eq!(Status::read(&path).expect("read"), status);
    }
}
