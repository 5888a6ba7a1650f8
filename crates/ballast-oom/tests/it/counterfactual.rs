//! The balloon verdict as a counterfactual with the host's figures: the pages the host
//! measured in the balloon against what the guest lacked at the OOM, on fixture reports.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use ballast_oom::{HostBalloon, OomKind, Verdict};

const BYSTANDER: &[u8] =
    include_bytes!("../fixtures/oom/constructed-6.1-balloon-stalled-bystander-512m.log");
const LAB: &[u8] =
    include_bytes!("../fixtures/oom/lab-debian12-6.1-balloon-200m-of-512m.serial.log");
const MEMCG: &[u8] =
    include_bytes!("../fixtures/oom/constructed-6.1-memcg-v2-in-ballooned-guest.log");

fn report(text: &[u8]) -> ballast_oom::Report {
    ballast_oom::parse(text)
        .reports
        .into_iter()
        .next()
        .expect("the fixture holds a report")
}

fn host(maximum_kb: u64, actual_kb: u64, deflate_on_oom: bool) -> HostBalloon {
    HostBalloon {
        maximum_kb: Some(maximum_kb),
        actual_kb: Some(actual_kb),
        deflate_on_oom: Some(deflate_on_oom),
    }
}

#[test]
fn a_stalled_balloon_holding_a_fifth_of_ram_caused_the_bystanders_oom() {
    // The case: ~408 MiB actual of 512 MiB from the stall until the kill.
    let analysis = ballast_oom::analyze(&report(BYSTANDER), Some(&host(524_288, 417_792, false)));
    assert_eq!(analysis.balloon_excess_kb, Some(106_496));
    assert_eq!(analysis.shortfall_kb, Some(1_400));
    assert_eq!(analysis.fits_without_balloon, Some(true));
    assert_eq!(analysis.verdict, Verdict::Balloon);
    assert!(
        analysis
            .explanation
            .contains("104 MiB (measured on the host before the kill) to the guest would have covered the 1.4 MiB"),
        "{}",
        analysis.explanation
    );
}

#[test]
fn a_host_balloon_smaller_than_the_shortfall_is_not_the_cause() {
    let analysis = ballast_oom::analyze(&report(BYSTANDER), Some(&host(524_288, 523_264, false)));
    assert_eq!(analysis.balloon_excess_kb, Some(1_024));
    assert_eq!(analysis.fits_without_balloon, Some(false));
    assert_eq!(analysis.verdict, Verdict::Overcommit);
    assert!(analysis.explanation.contains("would not have covered"));
}

#[test]
fn an_empty_balloon_measured_on_the_host_overrules_the_reserved_memory() {
    // The host says nothing was in the balloon: the reserved memory is something else.
    let analysis = ballast_oom::analyze(&report(LAB), Some(&host(524_288, 524_288, false)));
    assert_eq!(analysis.balloon_excess_kb, Some(0));
    assert_eq!(analysis.fits_without_balloon, Some(false));
    assert_ne!(analysis.verdict, Verdict::Balloon);
}

#[test]
fn a_memcg_limit_is_never_the_balloons_however_much_it_held() {
    let parsed = report(MEMCG);
    assert_eq!(parsed.kind, OomKind::Memcg);
    let analysis = ballast_oom::analyze(&parsed, Some(&host(524_288, 204_800, false)));
    assert_eq!(analysis.balloon_excess_kb, Some(319_488));
    assert_eq!(analysis.fits_without_balloon, Some(false));
    assert_eq!(analysis.verdict, Verdict::MemcgLimit);
}

/// With deflate-on-oom the kernel's OOM notifier hands the balloon's pages back, and the
/// killer runs only once it hands back none: at the kill the balloon was empty, whatever
/// the host's sample before it says (the real-VM verdict suite's deflate_on_oom row: the
/// OOM came again with the balloon at maximum).
#[test]
fn a_deflate_on_oom_balloon_was_empty_at_a_guest_wide_kill() {
    let analysis = ballast_oom::analyze(&report(BYSTANDER), Some(&host(524_288, 417_792, true)));
    assert!(analysis.balloon.deflated_before_kill);
    assert_eq!(analysis.balloon.host_held_kb, Some(106_496));
    assert_eq!(analysis.balloon_excess_kb, Some(0));
    assert_eq!(analysis.fits_without_balloon, Some(false));
    assert_ne!(analysis.verdict, Verdict::Balloon);
    assert!(
        analysis
            .explanation
            .contains("took its pages back before this OOM"),
        "{}",
        analysis.explanation
    );
    // A memcg OOM calls no notifier: deflate-on-oom changes nothing there.
    let memcg = ballast_oom::analyze(&report(MEMCG), Some(&host(524_288, 204_800, true)));
    assert!(!memcg.balloon.deflated_before_kill);
    assert_eq!(memcg.verdict, Verdict::MemcgLimit);
}
