//! QMP balloon replies -> [`BalloonSample`] / [`crate::hypervisor::GuestCounters`]. Pure.
//!
//! - `query-balloon` returns `actual` in BYTES; Proxmox's patched QEMU adds
//!   `max_mem`, `total_mem`, `free_mem`, `mem_swapped_in`, ... (kept as JSON: new
//!   fields are not dropped, ballast just reads what it knows);
//! - `qom-get /machine/peripheral/balloon0 guest-stats` returns
//!   `{"stats": {"stat-available-memory": bytes, ...}, "last-update": secs}`;
//!   u64::MAX means "never reported" and becomes None.
//!
//! Memory figures are converted to KiB; fault counts stay counts.
//!
//! Example `query-balloon` of a Proxmox VE 8 node:
//! ```json
//! {"actual": 4294967296, "max_mem": 4294967296, "total_mem": 4109365248,
//!  "free_mem": 3260637184, "mem_swapped_in": 0, "mem_swapped_out": 0,
//!  "major_page_faults": 550, "minor_page_faults": 194617, "last_update": 1717000000}
//! ```

use serde_json::Value;

use crate::hypervisor::guest_stats::{last_update, reported};
use crate::hypervisor::BalloonSample;

fn kib(bytes: Option<u64>) -> Option<u64> {
    bytes.map(|bytes| bytes / 1024)
}

/// One VM's sample from the two replies (either may be missing) and the
/// configured `memory:` (MiB).
pub fn balloon_sample(
    query_balloon: Option<&Value>,
    guest_stats: Option<&Value>,
    configured_memory_mib: Option<u64>,
) -> BalloonSample {
    let balloon = |key: &str| reported(query_balloon.and_then(|value| value.get(key)));
    let stats = guest_stats.and_then(|value| value.get("stats"));
    let stat = |key: &str| reported(stats.and_then(|stats| stats.get(key)));
    BalloonSample {
        actual_kib: kib(balloon("actual")),
        maximum_kib: kib(balloon("max_mem"))
            .or_else(|| configured_memory_mib.and_then(|mib| mib.checked_mul(1024))),
        available_kib: kib(stat("stat-total-memory")),
        usable_kib: kib(stat("stat-available-memory")),
        unused_kib: kib(stat("stat-free-memory")),
        disk_caches_kib: kib(stat("stat-disk-caches")),
        swap_in_kib: kib(stat("stat-swap-in")),
        swap_out_kib: kib(stat("stat-swap-out")),
        major_faults: stat("stat-major-faults"),
        minor_faults: stat("stat-minor-faults"),
        hugetlb_allocations: stat("stat-htlb-pgalloc"),
        hugetlb_failures: stat("stat-htlb-pgfail"),
        rss_kib: None,
        last_update_epoch_secs: last_update(guest_stats),
        virtio_mem: Vec::new(),
    }
}

/// `VmRSS` of `/proc/<pid>/status`, KiB.
pub fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|number| number.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn proxmox_query_balloon_and_guest_stats_in_kib() {
        let balloon = json!({"actual": 4_294_967_296_u64, "max_mem": 8_589_934_592_u64,
            "total_mem": 4_109_365_248_u64, "free_mem": 1, "some_future_field": [1, 2]});
        let max = u64::MAX;
        let stats = json!({"stats": {"stat-available-memory": 469_405_696, "stat-total-memory": 494_190_592,
            "stat-free-memory": 412_000_256, "stat-disk-caches": 9_306_112, "stat-swap-in": 4096,
            "stat-swap-out": 0, "stat-major-faults": 7, "stat-minor-faults": 1481,
            "stat-htlb-pgalloc": max, "stat-htlb-pgfail": 0, "stat-oom-kills": max}, "last-update": 1_795_658_493});
        let sample = balloon_sample(Some(&balloon), Some(&stats), Some(4096));
        assert_eq!(
            sample,
            BalloonSample {
                actual_kib: Some(4_194_304),
                maximum_kib: Some(8_388_608),
                available_kib: Some(482_608),
                usable_kib: Some(458_404),
                unused_kib: Some(402_344),
                disk_caches_kib: Some(9088),
                swap_in_kib: Some(4),
                swap_out_kib: Some(0),
                major_faults: Some(7),
                minor_faults: Some(1481),
                hugetlb_allocations: None,
                hugetlb_failures: Some(0),
                rss_kib: None,
                last_update_epoch_secs: Some(1_795_658_493),
                virtio_mem: Vec::new(),
            }
        );
        // Upstream QEMU: no max_mem, the .conf's memory is the maximum.
        let upstream = json!({"actual": 536_870_912});
        let sample = balloon_sample(Some(&upstream), None, Some(512));
        assert_eq!(sample.actual_kib, Some(524_288));
        assert_eq!(sample.maximum_kib, Some(524_288));
        assert_eq!(sample.usable_kib, None);
        assert_eq!(sample.last_update_epoch_secs, None);
        assert_eq!(balloon_sample(None, None, None), BalloonSample::default());
        let never = json!({"stats": {}, "last-update": 0});
        assert_eq!(
            balloon_sample(None, Some(&never), None).last_update_epoch_secs,
            None
        );
    }

    #[test]
    fn rss_from_proc_status() {
        let status = "Name:\tqemu-system-x86\nVmRSS:\t  252740 kB\nThreads:\t5\n";
        assert_eq!(rss_kib(status), Some(252_740));
        assert_eq!(rss_kib("VmRSS: x kB"), None);
        assert_eq!(rss_kib(""), None);
    }
}
