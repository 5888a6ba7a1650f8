//! Typed parameters of `virConnectGetAllDomainStats` -> [`BalloonSample`] / [`DomainState`].
//!
//! Pure mapping, no libvirt calls. A parameter that is absent (or negative, or of a
//! non-integer type) stays `None`: missing is not 0.

use super::ffi::ParamValue;
use crate::hypervisor::{BalloonSample, DomainState};

/// The balloon group's parameters (`VIR_DOMAIN_STATS_BALLOON`), KiB unless counts.
pub(crate) fn balloon_sample(params: &[(String, ParamValue)]) -> BalloonSample {
    let mut sample = BalloonSample::default();
    for (name, value) in params {
        let slot = match name.as_str() {
            "balloon.current" => &mut sample.actual_kib,
            "balloon.maximum" => &mut sample.maximum_kib,
            "balloon.swap_in" => &mut sample.swap_in_kib,
            "balloon.swap_out" => &mut sample.swap_out_kib,
            "balloon.major_fault" => &mut sample.major_faults,
            "balloon.minor_fault" => &mut sample.minor_faults,
            "balloon.unused" => &mut sample.unused_kib,
            "balloon.available" => &mut sample.available_kib,
            "balloon.usable" => &mut sample.usable_kib,
            "balloon.last-update" => &mut sample.last_update_epoch_secs,
            "balloon.disk_caches" => &mut sample.disk_caches_kib,
            "balloon.hugetlb_pgalloc" => &mut sample.hugetlb_allocations,
            "balloon.hugetlb_pgfail" => &mut sample.hugetlb_failures,
            "balloon.rss" => &mut sample.rss_kib,
            _ => continue,
        };
        *slot = value.as_u64();
    }
    // libvirt reports last-update=0 until the guest sent its first stats.
    if sample.last_update_epoch_secs == Some(0) {
        sample.last_update_epoch_secs = None;
    }
    sample
}

/// The state group's `state.state` (`virDomainState`); None when absent.
pub(crate) fn domain_state(params: &[(String, ParamValue)]) -> Option<DomainState> {
    let (_, value) = params.iter().find(|(name, _)| name == "state.state")?;
    Some(match value.as_u64()? {
        // RUNNING, BLOCKED (on a resource; still running).
        1 | 2 => DomainState::Running,
        // PAUSED, PMSUSPENDED.
        3 | 7 => DomainState::Paused,
        5 => DomainState::ShutOff,
        6 => DomainState::Crashed,
        // NOSTATE, SHUTDOWN (being shut down), anything newer.
        _ => DomainState::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ullong(name: &str, value: u64) -> (String, ParamValue) {
        (name.to_owned(), ParamValue::ULLong(value))
    }

    /// `virsh domstats --balloon` of a freshly booted harness guest (LAB-NOTES §5).
    #[test]
    fn maps_every_balloon_param_of_a_real_guest() {
        let params = vec![
            ullong("balloon.current", 524_288),
            ullong("balloon.maximum", 524_288),
            ullong("balloon.swap_in", 0),
            ullong("balloon.swap_out", 0),
            ullong("balloon.major_fault", 0),
            ullong("balloon.minor_fault", 1481),
            ullong("balloon.unused", 430_668),
            ullong("balloon.available", 468_416),
            ullong("balloon.usable", 430_348),
            ullong("balloon.last-update", 1_795_658_493),
            ullong("balloon.disk_caches", 9088),
            ullong("balloon.hugetlb_pgalloc", 0),
            ullong("balloon.hugetlb_pgfail", 0),
            ullong("balloon.rss", 252_740),
        ];
        let expected = BalloonSample {
            actual_kib: Some(524_288),
            maximum_kib: Some(524_288),
            available_kib: Some(468_416),
            usable_kib: Some(430_348),
            unused_kib: Some(430_668),
            disk_caches_kib: Some(9088),
            swap_in_kib: Some(0),
            swap_out_kib: Some(0),
            major_faults: Some(0),
            minor_faults: Some(1481),
            hugetlb_allocations: Some(0),
            hugetlb_failures: Some(0),
            rss_kib: Some(252_740),
            last_update_epoch_secs: Some(1_795_658_493),
            virtio_mem: Vec::new(),
        };
        assert_eq!(balloon_sample(&params), expected);
    }

    #[test]
    fn absent_params_stay_none_and_unknown_ones_are_ignored() {
        // A guest without the balloon driver: libvirt has only current/maximum/rss.
        let params = vec![
            ullong("balloon.current", 1024),
            ullong("balloon.maximum", 2048),
            ullong("balloon.rss", 999),
            ullong("balloon.something_new", 5),
            ("state.state".to_owned(), ParamValue::Int(1)),
        ];
        let sample = balloon_sample(&params);
        assert_eq!(sample.actual_kib, Some(1024));
        assert_eq!(sample.maximum_kib, Some(2048));
        assert_eq!(sample.rss_kib, Some(999));
        assert_eq!(sample.usable_kib, None);
        assert_eq!(sample.available_kib, None);
        assert_eq!(sample.last_update_epoch_secs, None);
        assert_eq!(balloon_sample(&[]), BalloonSample::default());
    }

    #[test]
    fn odd_types_and_never_reported_last_update() {
        let params = vec![
            ("balloon.current".to_owned(), ParamValue::LLong(-5)),
            ("balloon.usable".to_owned(), ParamValue::UInt(7)),
            (
                "balloon.unused".to_owned(),
                ParamValue::String("x".to_owned()),
            ),
            ullong("balloon.last-update", 0),
        ];
        let sample = balloon_sample(&params);
        assert_eq!(sample.actual_kib, None);
        assert_eq!(sample.usable_kib, Some(7));
        assert_eq!(sample.unused_kib, None);
        assert_eq!(sample.last_update_epoch_secs, None);
    }

    #[test]
    fn state_param_maps_to_domain_state() {
        let state = |value| vec![("state.state".to_owned(), ParamValue::Int(value))];
        assert_eq!(domain_state(&state(1)), Some(DomainState::Running));
        assert_eq!(domain_state(&state(3)), Some(DomainState::Paused));
        assert_eq!(domain_state(&state(5)), Some(DomainState::ShutOff));
        assert_eq!(domain_state(&state(6)), Some(DomainState::Crashed));
        assert_eq!(domain_state(&state(0)), Some(DomainState::Other));
        assert_eq!(domain_state(&[]), None);
    }
}
