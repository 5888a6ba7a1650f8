//! Tests of [`super::Capture`]: serial and guest-agent copies, holds, floods.

use std::time::Duration;

use super::*;
use crate::capture::detect::tests::LAB_LOG;
use crate::capture::state::tests::temp_dir;
use crate::capture::CapturedOom;
use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};

fn domain() -> DomainId {
    DomainId {
        uuid: "4d1c6a8e-0000-4000-8000-000000000001".to_owned(),
        name: "vm1".to_owned(),
    }
}

fn settings(dir: &tempfile::TempDir) -> CaptureSettings {
    CaptureSettings {
        grace: Duration::ZERO,
        ..CaptureSettings::new(dir.path().join("state"))
    }
}

fn fake_with_dmesg(dmesg: &str) -> FakeHypervisor {
    let hypervisor = FakeHypervisor::new();
    hypervisor.set(
        domain(),
        FakeDomain {
            running: true,
            dmesg: Some(dmesg.as_bytes().to_vec()),
            ..FakeDomain::default()
        },
    );
    hypervisor
}

fn ooms(events: &[CaptureEvent]) -> Vec<&CapturedOom> {
    events
        .iter()
        .filter_map(|event| match event {
            CaptureEvent::Oom(oom) => Some(oom),
            _ => None,
        })
        .collect()
}

#[test]
fn serial_and_guest_agent_copies_become_one_event() {
    let dir = temp_dir("hub-dedupe");
    let log = dir.path().join("serial.log");
    std::fs::write(&log, LAB_LOG).expect("write log");
    let hypervisor = fake_with_dmesg(LAB_LOG);
    let now = Instant::now();
    let mut capture = Capture::new(settings(&dir));
    let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
    let found = ooms(&poll.events);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].source, CaptureSource::Serial);
    assert_eq!(found[0].dedupe_key, format!("{}:7410:113", domain().uuid));
    assert!(!poll.wants_guest_agent);
    let events = capture
        .fetch_guest_agent(&hypervisor, &domain(), FetchReason::Periodic, now)
        .expect("agent");
    assert!(events.is_empty(), "{events:?}");
    // The next tick (the event is stored by then) saves the state past it.
    assert!(capture
        .poll_serial(&domain(), &log, now)
        .expect("serial")
        .events
        .is_empty());
    // An agent restart: neither path emits it again.
    drop(capture);
    let mut capture = Capture::new(settings(&dir));
    assert!(capture
        .poll_serial(&domain(), &log, now)
        .expect("serial")
        .events
        .is_empty());
    let events = capture
        .fetch_guest_agent(&hypervisor, &domain(), FetchReason::Periodic, now)
        .expect("agent");
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_serial_report_is_dated_after_the_read_before_it_and_only_then() {
    let dir = temp_dir("hub-printed-after");
    let log = dir.path().join("serial.log");
    std::fs::write(&log, LAB_LOG).expect("write log");
    let now = Instant::now();
    let mut capture = Capture::new(settings(&dir));
    // In the first read: nothing says when it was printed.
    let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
    assert_eq!(ooms(&poll.events)[0].printed_after, None);
    // A second OOM appears after a read that did not hold it.
    std::fs::write(&log, "").expect("truncate");
    let before_read = SystemTime::now();
    assert!(capture
        .poll_serial(&domain(), &log, now)
        .expect("serial")
        .events
        .is_empty());
    let second = LAB_LOG.replace("7.4", "9.4").replace("113", "114");
    std::fs::write(&log, second).expect("write log");
    let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
    let found = ooms(&poll.events);
    assert_eq!(found.len(), 1, "{:?}", poll.events);
    let printed_after = found[0].printed_after.expect("a read came before");
    assert!(printed_after >= before_read && printed_after <= found[0].captured_at);
}

#[test]
fn a_report_cut_by_the_vm_going_away_goes_out_as_it_stands() {
    let dir = temp_dir("hub-gone");
    let log = dir.path().join("serial.log");
    // The report up to its task table: the VM was destroyed while the kernel wrote it.
    let cut: String = LAB_LOG
        .lines()
        .take_while(|line| !line.contains("oom-kill:"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&log, &cut).expect("write log");
    let now = Instant::now();
    let mut capture = Capture::new(settings(&dir));
    let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
    assert!(ooms(&poll.events).is_empty(), "still waiting for the rest");
    capture.forget(&domain().uuid);
    let events = capture.release_held(now);
    let found = ooms(&events);
    assert_eq!(found.len(), 1, "{events:?}");
    assert!(found[0].report.partial);
    assert!(capture.release_held(now).is_empty(), "handed out once");
}

#[test]
fn partial_serial_report_is_completed_by_the_guest_agent() {
    let dir = temp_dir("hub-partial");
    let log = dir.path().join("serial.log");
    let kill_line = LAB_LOG.lines().last().expect("kill line");
    std::fs::write(&log, format!("{kill_line}\n")).expect("write log");
    let hypervisor = fake_with_dmesg(LAB_LOG);
    let now = Instant::now();
    let mut capture = Capture::new(settings(&dir));
    let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
    assert!(poll.events.is_empty(), "the partial copy is held");
    assert!(poll.wants_guest_agent);
    let events = capture
        .fetch_guest_agent(&hypervisor, &domain(), FetchReason::PartialReport, now)
        .expect("agent");
    let found = ooms(&events);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].source, CaptureSource::GuestAgent);
    assert!(!found[0].report.partial);
    assert_eq!(found[0].dedupe_key, format!("{}:7420:113", domain().uuid));
    assert!(capture
        .release_held(now + Duration::from_secs(3600))
        .is_empty());
}

#[test]
fn partial_report_goes_out_after_the_hold_and_is_completed_later() {
    let dir = temp_dir("hub-hold");
    let log = dir.path().join("serial.log");
    let kill_line = LAB_LOG.lines().last().expect("kill line");
    std::fs::write(&log, format!("{kill_line}\n")).expect("write log");
    let now = Instant::now();
    let mut capture = Capture::new(settings(&dir));
    capture.poll_serial(&domain(), &log, now).expect("serial");
    assert!(capture
        .release_held(now + Duration::from_secs(1))
        .is_empty());
    let released = capture.release_held(now + Duration::from_secs(10));
    let found = ooms(&released);
    assert_eq!(found.len(), 1);
    assert!(found[0].report.partial);
    let key = found[0].dedupe_key.clone();
    let hypervisor = fake_with_dmesg(LAB_LOG);
    let events = capture
        .fetch_guest_agent(&hypervisor, &domain(), FetchReason::Periodic, now)
        .expect("agent");
    let [CaptureEvent::OomCompleted(completed)] = &events[..] else {
        panic!("expected one completion, got {events:?}");
    };
    assert_eq!(completed.dedupe_key, key);
    assert!(!completed.report.partial);
}

/// The console stalled after the report's header (a slow or starved guest): past
/// `headless_timeout` the copy settles without a kill line, so without a pid. The
/// guest agent's whole copy is the same OOM: while the cut copy is held it takes
/// its place; once the cut copy went out it is its completion under the same key.
/// Never two OOMs (a real-VM run stored both, with two keys).
#[test]
fn a_copy_cut_before_its_kill_line_and_its_whole_copy_are_one_oom() {
    let cut: String = LAB_LOG
        .lines()
        .take_while(|line| !line.contains("oom-kill:"))
        .map(|line| format!("{line}\n"))
        .collect();
    let hypervisor = fake_with_dmesg(LAB_LOG);
    for completed_while_held in [true, false] {
        let dir = temp_dir("hub-cut-before-kill");
        let log = dir.path().join("serial.log");
        std::fs::write(&log, &cut).expect("write log");
        let now = Instant::now();
        let mut capture = Capture::new(settings(&dir));
        let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
        assert!(poll.events.is_empty(), "{:?}", poll.events);
        let settled = now + capture.settings.headless_timeout + Duration::from_secs(1);
        let poll = capture
            .poll_serial(&domain(), &log, settled)
            .expect("serial");
        assert!(
            poll.events.is_empty(),
            "the cut copy is held: {:?}",
            poll.events
        );
        assert!(poll.wants_guest_agent);
        let mut events = Vec::new();
        if !completed_while_held {
            events = capture.release_held(settled + Duration::from_secs(3600));
            let found = ooms(&events);
            assert_eq!(found.len(), 1, "{events:?}");
            assert!(found[0].report.partial && found[0].report.killed.is_none());
            assert_eq!(found[0].dedupe_key, format!("{}:7410:none", domain().uuid));
        }
        events.extend(
            capture
                .fetch_guest_agent(&hypervisor, &domain(), FetchReason::PartialReport, settled)
                .expect("agent"),
        );
        events.extend(capture.release_held(settled + Duration::from_secs(7200)));
        let whole: Vec<&CapturedOom> = events
            .iter()
            .filter_map(|event| match event {
                CaptureEvent::Oom(oom) | CaptureEvent::OomCompleted(oom) if !oom.report.partial => {
                    Some(oom)
                }
                _ => None,
            })
            .collect();
        assert_eq!(whole.len(), 1, "{events:?}");
        assert_eq!(whole[0].report.killed.as_ref().map(|k| k.pid), Some(113));
        assert_eq!(whole[0].dedupe_key, format!("{}:7410:none", domain().uuid));
        let expected_events = if completed_while_held { 1 } else { 2 };
        assert_eq!(events.len(), expected_events, "{events:?}");
        // The rest of the report reaches the console later: nothing new.
        std::fs::write(&log, LAB_LOG).expect("write log");
        let poll = capture
            .poll_serial(&domain(), &log, settled + Duration::from_secs(7300))
            .expect("serial");
        assert!(ooms(&poll.events).is_empty(), "{:?}", poll.events);
    }
}

/// The lab log's kill line (of pid 113) again for every pid in `pids`, each
/// followed by `also` when given: a guest forging reports.
pub(crate) fn forged_kill_lines(pids: std::ops::Range<u32>, also: Option<&str>) -> String {
    let kill_line = LAB_LOG.lines().last().expect("kill line");
    let mut text = String::new();
    for pid in pids {
        text.push_str(&kill_line.replace("113", &pid.to_string()));
        text.push('\n');
        if let Some(line) = also {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// Appends one more forged kill line (pid 5000) to `log` and polls it at `at`.
fn append_kill_line_and_poll(capture: &mut Capture, log: &Path, at: Instant) -> SerialPoll {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .and_then(|mut file| file.write_all(forged_kill_lines(5000..5001, None).as_bytes()))
        .expect("append");
    capture.poll_serial(&domain(), log, at).expect("serial")
}

#[test]
fn flood_of_forged_reports_is_bounded_and_counted() {
    let dir = temp_dir("hub-flood");
    let log = dir.path().join("serial.log");
    // 1000 forged kill-line-only reports with distinct pids, and Out of puff lines.
    let text = forged_kill_lines(
        1000..2000,
        Some("[    7.5] virtio_balloon virtio1: Out of puff! Can't get 1 pages"),
    );
    std::fs::write(&log, &text).expect("write log");
    let now = Instant::now();
    let mut capture = Capture::new(CaptureSettings {
        partial_hold: Duration::ZERO,
        ..settings(&dir)
    });
    let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
    assert_eq!(ooms(&poll.events).len(), 20);
    let near_misses = poll
        .events
        .iter()
        .filter(|event| matches!(event, CaptureEvent::NearMiss(_)))
        .count();
    assert_eq!(near_misses, 1);
    assert_eq!(capture.flood_suppressed_total(), 980);
    // A minute later one more gets through and carries the count.
    let poll = append_kill_line_and_poll(&mut capture, &log, now + Duration::from_secs(61));
    let found = ooms(&poll.events);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].suppressed_before, 980);
    assert_eq!(found[0].report.killed.as_ref().map(|k| k.pid), Some(5000));
}

#[test]
fn a_flood_that_stops_is_flagged_once_the_bucket_refills() {
    let dir = temp_dir("hub-flood-stops");
    let log = dir.path().join("serial.log");
    let text = forged_kill_lines(1000..1100, None);
    std::fs::write(&log, &text).expect("write log");
    let now = Instant::now();
    let mut capture = Capture::new(CaptureSettings {
        partial_hold: Duration::ZERO,
        ..settings(&dir)
    });
    let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
    assert_eq!(ooms(&poll.events).len(), 20);
    assert_eq!(capture.flood_suppressed_total(), 80);
    // The guest goes quiet: nothing more before the bucket refills...
    assert!(capture
        .release_held(now + Duration::from_secs(59))
        .is_empty());
    // ...then the newest dropped report goes out with the 79 dropped before it.
    let released = capture.release_held(now + Duration::from_secs(60));
    let found = ooms(&released);
    assert_eq!(found.len(), 1, "{released:?}");
    assert_eq!(found[0].suppressed_before, 79);
    assert_eq!(found[0].report.killed.as_ref().map(|k| k.pid), Some(1099));
    // Once only, and the next report starts from zero.
    assert!(capture
        .release_held(now + Duration::from_secs(600))
        .is_empty());
    let poll = append_kill_line_and_poll(&mut capture, &log, now + Duration::from_secs(601));
    let found = ooms(&poll.events);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].suppressed_before, 0);
}

#[test]
fn under_a_flood_partial_reports_are_held_only_while_the_bucket_has_room() {
    let dir = temp_dir("hub-flood-held");
    let log = dir.path().join("serial.log");
    let text = forged_kill_lines(1000..2000, None);
    std::fs::write(&log, &text).expect("write log");
    let now = Instant::now();
    let mut capture = Capture::new(settings(&dir));
    let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
    // 20 tokens: 20 partial copies wait for the guest agent, the rest are counted.
    assert!(poll.events.is_empty());
    assert!(poll.wants_guest_agent);
    assert_eq!(capture.domains[&domain().uuid].held.len(), 20);
    assert_eq!(capture.flood_suppressed_total(), 980);
    let released = capture.release_held(now + Duration::from_secs(10));
    assert_eq!(ooms(&released).len(), 20);
    // Nothing more is held while the bucket is empty, and no fetch is asked for.
    let poll = append_kill_line_and_poll(&mut capture, &log, now + Duration::from_secs(11));
    assert!(poll.events.is_empty());
    assert!(!poll.wants_guest_agent);
    assert!(capture.domains[&domain().uuid].held.is_empty());
    assert_eq!(capture.flood_suppressed_total(), 981);
}
