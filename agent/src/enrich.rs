//! Turns a captured guest OOM into the wire event: the report re-analyzed with the
//! host's balloon figures, the balloon history before it, and the host's memory.
//!
//! Pure: the caller passes the VM's state and the host reading. The analysis uses
//! the balloon size measured on the host when it has it, so "the balloon was (not)
//! inflated" is a measurement, not an inference: maximum - actual of the last sample
//! taken before the kill was printed (the start of the previous read of the guest's
//! log), never a later one. A balloon that stalled under a resident hog finishes
//! inflating once the kill frees memory; a sample taken then is not the balloon at the
//! OOM. Without such a bound (the report was in the first read, as for a guest-agent
//! read on suspicion) the guest's own report tells the stall from the aftermath: the
//! balloon's pages sit in its `pages reserved`, so the newest sample stands when it
//! holds no more than that shows, an older one only when it agrees with it; without
//! that evidence no sample is used.

use std::time::{Duration, SystemTime};

use ballast_model::{
    BalloonAtOom, BalloonPoint, CaptureSource as WireSource, OomAnalysis, OomEvent, OomKind,
    ParsedReport,
};

use crate::capture::{CaptureSource, CapturedOom};
use crate::fleet::VmState;
use crate::history::HistoryPoint;
use crate::hostmem::HostMemory;
use crate::wire::{epoch_ms, vm_ref, wire_host};

/// How much balloon history an OOM event carries.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(3600);
/// At most this many history points travel with one event (the newest).
const MAX_POINTS: usize = 720;

/// Newest history points later than the capture by more than this mean the wall clock
/// stepped back (held partial reports are captured at most seconds before a poll).
const CLOCK_STEP_BACK: Duration = Duration::from_secs(300);

/// Where the history window of an OOM captured at `captured_at` ends: at the capture,
/// unless the wall clock stepped back since the ring's newest points were taken. The
/// ring keeps its order by not letting time go back (later points get the newest
/// time), so after a step back of more than the window the capture time would select
/// no points at all and the event would lose its balloon history; the window then ends
/// at the newest point: the samples taken last, which are the ones before the OOM.
fn history_end(vm: &VmState, captured_at: SystemTime) -> SystemTime {
    match vm.history.last() {
        Some(last) if last.at > captured_at + CLOCK_STEP_BACK => last.at,
        _ => captured_at,
    }
}

/// The wire event for one captured OOM. `vm` is None when the VM is unknown to the
/// fleet (it went away between the kill and the capture): the report still ships.
/// `kind`: [`OomKind::Guest`] for guest capture; a host kernel report says whether the
/// host ran out ([`OomKind::Host`]) or the VM's cgroup did ([`OomKind::VmCgroup`]); its
/// analysis is of the host's report, so the VM's balloon figures do not go into it.
pub fn oom_event(
    captured: &CapturedOom,
    kind: OomKind,
    vm: Option<&VmState>,
    host: &HostMemory,
) -> OomEvent {
    // A host kernel report is read from the host's own log as it is printed, and the
    // VM it killed stops ballooning: its capture time bounds the kill.
    let bound = captured
        .printed_after
        .or((captured.source == CaptureSource::HostKernel).then_some(captured.captured_at));
    let report_held_kb = report_held_kb(&captured.report, vm);
    let (host_balloon, sampled_at) = match vm.map(|vm| {
        vm.host_balloon_at_oom(
            bound,
            captured.captured_at,
            report_held_kb,
            HELD_EVIDENCE_SLACK_KB,
        )
    }) {
        Some((balloon, at)) => (Some(balloon), at),
        None => (None, None),
    };
    let analysis = ballast_oom::analyze(
        &captured.report,
        host_balloon.as_ref().filter(|_| kind == OomKind::Guest),
    );
    let history = vm
        .map(|vm| {
            vm.history
                .window(history_end(vm, captured.captured_at), HISTORY_WINDOW)
        })
        .unwrap_or_default();
    let skip = history.len().saturating_sub(MAX_POINTS);
    OomEvent {
        vm: vm_ref(&captured.domain),
        kind,
        source: match captured.source {
            CaptureSource::Serial => WireSource::Serial,
            CaptureSource::GuestAgent => WireSource::GuestAgent,
            CaptureSource::HostKernel => WireSource::HostKernel,
        },
        raw_report: captured.raw.clone(),
        raw_truncated: captured.raw.len()
            < captured
                .report
                .span
                .end_byte
                .saturating_sub(captured.report.span.start_byte),
        report: ParsedReport::from(&captured.report),
        analysis: OomAnalysis::from(&analysis),
        balloon_at_oom: BalloonAtOom {
            maximum_kib: host_balloon.and_then(|h| h.maximum_kb),
            actual_kib: host_balloon.and_then(|h| h.actual_kb),
            deflate_on_oom: host_balloon.and_then(|h| h.deflate_on_oom),
            sampled_at_ms: sampled_at.map(epoch_ms),
            kill_after_ms: bound.map(epoch_ms),
            virtio_mem: vm.and_then(|vm| {
                virtio_mem_at_oom(vm, sampled_at, bound.unwrap_or(captured.captured_at))
            }),
        },
        balloon_history: history
            .iter()
            .skip(skip)
            .map(|p| point(p, vm.and_then(|vm| vm.elastic.as_deref())))
            .collect(),
        host: Some(wire_host(host)),
        flood_suppressed: captured.suppressed_before,
    }
}

/// Slack over the report's evidence of the balloon's size (the typical reservation is an
/// estimate; measured within a few MiB in the lab).
const HELD_EVIDENCE_SLACK_KB: u64 = 16 * 1024;

/// What the guest's own report says the balloon held: `pages reserved` above what a
/// guest of that size typically reserves. None when the report lacks those lines, or
/// the balloon may deflate on OOM (its pages do not show as reserved then).
fn report_held_kb(report: &ballast_oom::Report, vm: Option<&VmState>) -> Option<u64> {
    let deflates = vm
        .and_then(|vm| vm.config.as_ref())
        .and_then(|c| c.deflate_on_oom);
    if deflates != Some(false) {
        return None;
    }
    let analysis = ballast_oom::analyze(report, None);
    Some(
        analysis
            .reserved_kb?
            .saturating_sub(analysis.reserved_typical_kb?),
    )
}

/// The VM's virtio-mem sums at the OOM: those of the poll whose balloon sample stands
/// (`sampled_at`), else of the last poll before `bound` (the kill, or the capture).
fn virtio_mem_at_oom(
    vm: &VmState,
    sampled_at: Option<SystemTime>,
    bound: SystemTime,
) -> Option<ballast_model::VirtioMemTotals> {
    let elastic = vm.elastic.as_deref()?;
    match sampled_at {
        Some(at) => elastic
            .totals_at(at)
            .map(|totals| ballast_model::VirtioMemTotals {
                sampled_at_ms: Some(epoch_ms(at)),
                ..totals
            }),
        None => elastic.totals_until(bound),
    }
}

fn point(history: &HistoryPoint, elastic: Option<&crate::elastic::VmElastic>) -> BalloonPoint {
    BalloonPoint {
        at_ms: epoch_ms(history.at),
        actual_kib: history.actual_kib,
        maximum_kib: history.maximum_kib,
        available_kib: history.available_kib,
        usable_kib: history.usable_kib,
        event: history.origin == crate::history::SampleOrigin::BalloonEvent,
        // The sums of the same poll (a balloon event between polls has none).
        virtio_mem: elastic
            .filter(|_| history.origin == crate::history::SampleOrigin::Poll)
            .and_then(|elastic| elastic.totals_at(history.at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::hypervisor::{BalloonSample, DomainConfig, DomainId};
    use ballast_model::ReportVerdict;
    use std::time::UNIX_EPOCH;

    const LAB: &[u8] = include_bytes!("../../crates/ballast-oom/tests/fixtures/oom/lab-debian12-6.1-balloon-200m-of-512m.serial.log");
    const BYSTANDER: &[u8] = include_bytes!(
        "../../crates/ballast-oom/tests/fixtures/oom/constructed-6.1-balloon-stalled-bystander-512m.log"
    );
    const SEED: &[u8] =
        include_bytes!("../../crates/ballast-oom/tests/fixtures/oom/debian9-kvm-1g-tor.log");

    fn captured(id: &DomainId, text: &[u8], at: SystemTime) -> CapturedOom {
        let report = ballast_oom::parse(text)
            .reports
            .into_iter()
            .next()
            .expect("a report");
        CapturedOom {
            domain: id.clone(),
            source: CaptureSource::Serial,
            captured_at: at,
            printed_after: Some(at - Duration::from_secs(1)),
            raw: String::from_utf8_lossy(text).into_owned(),
            report,
            dedupe_key: "k".into(),
            suppressed_before: 0,
        }
    }

    fn fleet_with(id: &DomainId, actuals: &[u64], maximum: u64, start: SystemTime) -> Fleet {
        let mut fleet = Fleet::new(1000);
        for (step, actual) in actuals.iter().enumerate() {
            let at = start + Duration::from_secs(10 * step as u64);
            fleet.apply_poll(
                at,
                vec![(
                    id.clone(),
                    BalloonSample {
                        actual_kib: Some(*actual),
                        maximum_kib: Some(maximum),
                        ..BalloonSample::default()
                    },
                )],
            );
        }
        fleet.set_config(
            id,
            DomainConfig {
                deflate_on_oom: Some(false),
                balloon_present: true,
                ..DomainConfig::default()
            },
        );
        fleet
    }

    #[test]
    fn an_inflated_balloon_measured_on_the_host_gives_a_balloon_verdict_with_history() {
        let id = DomainId {
            uuid: "3f2a".into(),
            name: "lab".into(),
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let fleet = fleet_with(&id, &[524_288, 524_288, 204_800, 204_800], 524_288, start);
        let at = start + Duration::from_secs(35);
        let event = oom_event(
            &captured(&id, LAB, at),
            OomKind::Guest,
            fleet.get("3f2a"),
            &HostMemory::default(),
        );
        assert_eq!(event.analysis.verdict, ReportVerdict::Balloon);
        assert_eq!(event.analysis.balloon_held_kb, Some(524_288 - 204_800));
        assert!(event.analysis.explanation.contains("measured on the host"));
        assert_eq!(event.balloon_at_oom.actual_kib, Some(204_800));
        assert_eq!(event.balloon_history.len(), 4);
        assert_eq!(
            event.balloon_history.first().and_then(|p| p.actual_kib),
            Some(524_288)
        );
    }

    #[test]
    fn after_the_wall_clock_steps_back_the_event_still_carries_the_history_before_it() {
        let id = DomainId {
            uuid: "3f2a".into(),
            name: "lab".into(),
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let fleet = fleet_with(&id, &[524_288, 524_288, 204_800, 204_800], 524_288, start);
        // Captured two hours "before" the samples: the clock was stepped back.
        let at = start - Duration::from_secs(7200);
        let event = oom_event(
            &captured(&id, LAB, at),
            OomKind::Guest,
            fleet.get("3f2a"),
            &HostMemory::default(),
        );
        assert_eq!(event.balloon_history.len(), 4);
        // No sample is known to predate the kill (all are stamped after the stepped-back
        // clock): the report's own evidence stands for the balloon, never a later sample.
        assert_eq!(event.balloon_at_oom.actual_kib, None);
        assert_eq!(event.analysis.balloon_held_kb, Some(301_595));
        assert_eq!(event.analysis.verdict, ReportVerdict::Balloon);
        // A capture a little before the newest sample (a held partial) keeps its window.
        let held = oom_event(
            &captured(&id, LAB, start + Duration::from_secs(15)),
            OomKind::Guest,
            fleet.get("3f2a"),
            &HostMemory::default(),
        );
        assert_eq!(held.balloon_history.len(), 2);
    }

    #[test]
    fn an_oom_carries_the_virtio_mem_sums_of_the_balloons_sample_and_of_each_point() {
        let id = DomainId {
            uuid: "3f2a".into(),
            name: "lab".into(),
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut fleet = Fleet::new(1000);
        // The host lowers the request from 2 GiB to 512 MiB; the guest follows.
        for (step, (requested, plugged)) in [(2048, 2048), (512, 1024), (512, 512)]
            .into_iter()
            .enumerate()
        {
            let sample = BalloonSample {
                actual_kib: Some(524_288),
                maximum_kib: Some(524_288),
                virtio_mem: vec![ballast_model::VirtioMemDevice {
                    id: "virtiomem0".into(),
                    max_size_kib: Some(4096 * 1024),
                    requested_kib: Some(requested * 1024),
                    plugged_kib: Some(plugged * 1024),
                    ..ballast_model::VirtioMemDevice::default()
                }],
                ..BalloonSample::default()
            };
            fleet.apply_poll(
                start + Duration::from_secs(10 * step as u64),
                vec![(id.clone(), sample)],
            );
        }
        let event = oom_event(
            &captured(&id, LAB, start + Duration::from_secs(25)),
            OomKind::Guest,
            fleet.get("3f2a"),
            &HostMemory::default(),
        );
        let at_oom = event
            .balloon_at_oom
            .virtio_mem
            .expect("virtio-mem at the OOM");
        // The kill was printed after 24 s: the poll at 20 s is the host's sample.
        assert_eq!(at_oom.plugged_kib, Some(512 * 1024));
        assert_eq!(at_oom.requested_kib, Some(512 * 1024));
        assert_eq!(at_oom.unplugged_kib(), Some(3584 * 1024));
        assert_eq!(at_oom.sampled_at_ms, event.balloon_at_oom.sampled_at_ms);
        let plugged: Vec<Option<u64>> = event
            .balloon_history
            .iter()
            .map(|p| p.virtio_mem.and_then(|t| t.plugged_kib))
            .collect();
        assert_eq!(
            plugged,
            [Some(2048 * 1024), Some(1024 * 1024), Some(512 * 1024)]
        );
        // A VM without virtio-mem has none.
        let plain = fleet_with(&id, &[524_288], 524_288, start);
        let event = oom_event(
            &captured(&id, LAB, start + Duration::from_secs(5)),
            OomKind::Guest,
            plain.get("3f2a"),
            &HostMemory::default(),
        );
        assert_eq!(event.balloon_at_oom.virtio_mem, None);
        assert!(event.balloon_history.iter().all(|p| p.virtio_mem.is_none()));
    }

    #[test]
    fn a_full_balloon_keeps_the_seed_verdict() {
        let id = DomainId {
            uuid: "100".into(),
            name: "tor".into(),
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let fleet = fleet_with(&id, &[1_048_576; 6], 1_048_576, start);
        let event = oom_event(
            &captured(&id, SEED, start + Duration::from_secs(55)),
            OomKind::Guest,
            fleet.get("100"),
            &HostMemory::default(),
        );
        assert_eq!(event.analysis.verdict, ReportVerdict::KernelUnaccounted);
        assert_eq!(event.analysis.balloon_held_kb, Some(0));
    }

    #[test]
    fn the_balloon_at_the_oom_is_the_last_sample_before_the_kill_never_the_one_after() {
        // The lab case: full, then inflated until it stalled at 408 MiB under a
        // resident hog; the kill freed memory and the inflation reached its 200 MiB
        // target a few seconds later, before the report was read.
        let id = DomainId {
            uuid: "3f2a".into(),
            name: "lab".into(),
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let fleet = fleet_with(
            &id,
            &[524_288, 524_288, 417_792, 417_792, 417_792, 204_800],
            524_288,
            start,
        );
        // Samples at 0..50 s; the kill was printed after the read at 42.5 s (the one
        // before the read that held it) and the report captured at 51 s.
        let mut oom = captured(&id, BYSTANDER, start + Duration::from_secs(51));
        oom.printed_after = Some(start + Duration::from_millis(42_500));
        let event = oom_event(
            &oom,
            OomKind::Guest,
            fleet.get("3f2a"),
            &HostMemory::default(),
        );
        assert_eq!(event.balloon_at_oom.actual_kib, Some(417_792));
        assert_eq!(event.balloon_at_oom.maximum_kib, Some(524_288));
        assert_eq!(
            event.balloon_at_oom.sampled_at_ms,
            Some(epoch_ms(start + Duration::from_secs(40)))
        );
        assert_eq!(event.analysis.balloon_held_kb, Some(106_496));
        assert_eq!(event.analysis.balloon_excess_kb, Some(106_496));
        assert_eq!(event.analysis.fits_without_balloon, Some(true));
        assert_eq!(event.analysis.would_have_fit, Some(true));
        assert_eq!(event.analysis.verdict, ReportVerdict::Balloon);
        assert!(
            event
                .analysis
                .explanation
                .contains("104 MiB (measured on the host before the kill)"),
            "{}",
            event.analysis.explanation
        );
    }

    #[test]
    fn without_a_read_before_the_kill_the_report_tells_the_stall_from_the_aftermath() {
        // A guest-agent capture (its first read held the report): no time bound. The
        // report's reserved pages show ~102 MiB in the balloon; the newest sample (the
        // inflation completed after the kill) holds 312 MiB: it is the aftermath; the
        // stall before it agrees with the report and stands.
        let id = DomainId {
            uuid: "3f2a".into(),
            name: "lab".into(),
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let fleet = fleet_with(&id, &[524_288, 417_792, 417_792, 204_800], 524_288, start);
        let mut oom = captured(&id, BYSTANDER, start + Duration::from_secs(35));
        oom.printed_after = None;
        oom.source = CaptureSource::GuestAgent;
        let event = oom_event(
            &oom,
            OomKind::Guest,
            fleet.get("3f2a"),
            &HostMemory::default(),
        );
        assert_eq!(event.balloon_at_oom.actual_kib, Some(417_792));
        assert_eq!(
            event.balloon_at_oom.sampled_at_ms,
            Some(epoch_ms(start + Duration::from_secs(20)))
        );
        assert_eq!(event.analysis.balloon_excess_kb, Some(106_496));
        assert_eq!(event.analysis.verdict, ReportVerdict::Balloon);
    }

    #[test]
    fn without_a_read_before_the_kill_no_host_sample_stands_for_the_balloon() {
        let id = DomainId {
            uuid: "3f2a".into(),
            name: "lab".into(),
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let fleet = fleet_with(&id, &[524_288, 204_800], 524_288, start);
        let mut oom = captured(&id, BYSTANDER, start + Duration::from_secs(15));
        oom.printed_after = None;
        let event = oom_event(
            &oom,
            OomKind::Guest,
            fleet.get("3f2a"),
            &HostMemory::default(),
        );
        assert_eq!(event.balloon_at_oom.actual_kib, None);
        assert_eq!(event.balloon_at_oom.kill_after_ms, None);
        // The report's own evidence stands in: at least 88603 kB out of managed memory.
        assert_eq!(event.analysis.balloon_excess_kb, Some(88_603));
        assert_eq!(event.analysis.verdict, ReportVerdict::Balloon);
    }
}
