//! The host's own memory: Proxmox inflates balloons when the host passes its target,
//! so every OOM event carries what the host looked like at the time.
//!
//! Reads `/proc/meminfo` (MemTotal, MemAvailable, SwapTotal, SwapFree),
//! `/proc/pressure/memory` (PSI, where the kernel has it) and KSM's
//! `/sys/kernel/mm/ksm/pages_sharing`. Parsing is pure; [`read`] does the I/O
//! under a configurable procfs root.

use std::path::Path;

/// One reading of host memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostMemory {
    pub total_kib: Option<u64>,
    pub available_kib: Option<u64>,
    pub swap_total_kib: Option<u64>,
    pub swap_free_kib: Option<u64>,
    /// PSI `some avg10` (% of time some task stalled on memory, last 10 s).
    pub psi_some_avg10: Option<f64>,
    /// PSI `full avg10`.
    pub psi_full_avg10: Option<f64>,
    /// KSM pages shared (each saves one page), in KiB.
    pub ksm_sharing_kib: Option<u64>,
}

impl HostMemory {
    /// Used share of RAM in percent (what Proxmox's `ballooning-target` compares against).
    pub fn used_pct(&self) -> Option<f64> {
        let total = self.total_kib.filter(|total| *total > 0)?;
        let available = self.available_kib?;
        Some(total.saturating_sub(available) as f64 * 100.0 / total as f64)
    }
}

/// Parses `/proc/meminfo` text.
pub fn parse_meminfo(text: &str, into: &mut HostMemory) {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "MemTotal:" => into.total_kib = Some(value),
            "MemAvailable:" => into.available_kib = Some(value),
            "SwapTotal:" => into.swap_total_kib = Some(value),
            "SwapFree:" => into.swap_free_kib = Some(value),
            _ => {}
        }
    }
}

/// Parses `/proc/pressure/memory`: `some avg10=0.00 avg60=0.00 avg300=0.00 total=0`.
pub fn parse_psi(text: &str, into: &mut HostMemory) {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next();
        let avg10 = words
            .find_map(|word| word.strip_prefix("avg10="))
            .and_then(|value| value.parse::<f64>().ok());
        match kind {
            Some("some") => into.psi_some_avg10 = avg10,
            Some("full") => into.psi_full_avg10 = avg10,
            _ => {}
        }
    }
}

/// Reads the host's figures under `procfs_root` (normally `/proc`; KSM is read from the
/// sibling `sys` of that root, i.e. `/sys`). Missing files leave their fields `None`.
pub fn read(procfs_root: &Path) -> HostMemory {
    let mut memory = HostMemory::default();
    if let Ok(text) = std::fs::read_to_string(procfs_root.join("meminfo")) {
        parse_meminfo(&text, &mut memory);
    }
    if let Ok(text) = std::fs::read_to_string(procfs_root.join("pressure/memory")) {
        parse_psi(&text, &mut memory);
    }
    let sys_root = procfs_root.parent().unwrap_or(Path::new("/")).join("sys");
    if let Ok(text) = std::fs::read_to_string(sys_root.join("kernel/mm/ksm/pages_sharing")) {
        memory.ksm_sharing_kib = text.trim().parse::<u64>().ok().map(|pages| pages * 4);
    }
    memory
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_and_psi() {
        let mut memory = HostMemory::default();
        parse_meminfo(
            "MemTotal:       32768000 kB\nMemFree:  1 kB\nMemAvailable:    6553600 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
            &mut memory,
        );
        parse_psi(
            "some avg10=1.50 avg60=0.20 avg300=0.00 total=123\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=4\n",
            &mut memory,
        );
        assert_eq!(memory.total_kib, Some(32_768_000));
        assert_eq!(memory.available_kib, Some(6_553_600));
        assert_eq!(memory.used_pct().map(|pct| pct.round()), Some(80.0));
        assert_eq!(memory.psi_some_avg10, Some(1.5));
        assert_eq!(memory.psi_full_avg10, Some(0.25));
    }

    #[test]
    fn this_host_has_meminfo() {
        let memory = read(Path::new("/proc"));
        assert!(memory.total_kib.is_some_and(|total| total > 0));
        assert!(memory.available_kib.is_some());
    }

    #[test]
    fn garbage_leaves_fields_missing() {
        let mut memory = HostMemory::default();
        parse_meminfo("MemTotal: lots\n\u{0}\u{1}", &mut memory);
        parse_psi("some avg10=x", &mut memory);
        assert_eq!(memory, HostMemory::default());
    }
}
