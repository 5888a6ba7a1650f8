//! QEMU's balloon `guest-stats` object (`qom-get /machine/peripheral/balloon0
//! guest-stats`: `{"stats": {"stat-oom-kills": n, ...}, "last-update": secs}`) ->
//! [`GuestCounters`]. Pure; shared by the libvirt backend (through
//! qemu-monitor-command) and the Proxmox backend (QMP).
//!
//! u64::MAX means "never reported" (an older guest, or any stat before the guest's
//! first report) and becomes None, as does anything that is not an integer.

use serde_json::Value;

use super::GuestCounters;

/// A stat as QEMU reports it: None for "never reported" (u64::MAX) and non-integers.
pub fn reported(value: Option<&Value>) -> Option<u64> {
    value
        .and_then(Value::as_u64)
        .filter(|&value| value != u64::MAX)
}

/// `last-update` of a `guest-stats` object, when the guest has reported at all (> 0).
pub fn last_update(guest_stats: Option<&Value>) -> Option<u64> {
    reported(guest_stats.and_then(|value| value.get("last-update"))).filter(|&secs| secs > 0)
}

/// The six kernel-6.12 counters of a `guest-stats` object; None when none of them is
/// reported (older guest or QEMU, or no report yet).
pub fn guest_counters(guest_stats: &Value) -> Option<GuestCounters> {
    let stats = guest_stats.get("stats");
    let stat = |key: &str| reported(stats.and_then(|stats| stats.get(key)));
    let counters = GuestCounters {
        oom_kills: stat("stat-oom-kills"),
        alloc_stalls: stat("stat-alloc-stalls"),
        async_scans_bytes: stat("stat-async-scans"),
        direct_scans_bytes: stat("stat-direct-scans"),
        async_reclaims_bytes: stat("stat-async-reclaims"),
        direct_reclaims_bytes: stat("stat-direct-reclaims"),
        last_update_epoch_secs: last_update(Some(guest_stats)),
    };
    [
        counters.oom_kills,
        counters.alloc_stalls,
        counters.async_scans_bytes,
        counters.direct_scans_bytes,
        counters.async_reclaims_bytes,
        counters.direct_reclaims_bytes,
    ]
    .iter()
    .any(Option::is_some)
    .then_some(counters)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn counters_only_when_a_612_guest_reports_them() {
        let max = u64::MAX;
        let old =
            json!({"stats": {"stat-oom-kills": max, "stat-alloc-stalls": max}, "last-update": 5});
        assert_eq!(guest_counters(&old), None);
        let new = json!({"stats": {"stat-oom-kills": 1, "stat-alloc-stalls": 41, "stat-direct-scans": "x"}, "last-update": 5});
        let counters = guest_counters(&new).expect("counters");
        assert_eq!(counters.oom_kills, Some(1));
        assert_eq!(counters.alloc_stalls, Some(41));
        assert_eq!(counters.direct_scans_bytes, None);
        assert_eq!(counters.last_update_epoch_secs, Some(5));
        assert_eq!(guest_counters(&json!(5)), None);
    }
}
