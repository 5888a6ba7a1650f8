//! Guest OOM capture against real guests from the harness (ballast-testvm) and the
//! real libvirt backend:
//!
//! * a loglevel-7 guest inflated to 200 of 512 MiB, then a memory hog: the serial
//!   tailer yields exactly one report, with verdict `balloon`; the guest's
//!   `/dev/kmsg` read through the guest agent's file API (guest-exec not allowed,
//!   so nothing runs in the guest) yields the same report, kill line included;
//!   dedupe makes them one event; a restarted
//!   capture (new tailer from the persisted state) emits nothing again;
//! * a `quiet` guest (loglevel 4): the serial console shows only the kill line, a
//!   partial report that capture holds and the guest agent path completes.
//!
//! Outside CI the tests skip loudly when the machine cannot run guests.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]
#![cfg(feature = "libvirt")]

use std::time::{Duration, Instant};

use ballast_agent::capture::{
    Capture, CaptureEvent, CaptureSettings, CaptureSource, CapturedOom, FetchReason,
};
use ballast_agent::hypervisor::libvirt::{LibvirtHypervisor, LibvirtSettings};
use ballast_agent::hypervisor::{DomainId, Hypervisor};
use ballast_oom::Verdict;
use ballast_testenv::wait_until;
use ballast_testvm::{lab_or_skip, scenario, Guest, GuestSpec};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const OOM_TIMEOUT: Duration = Duration::from_secs(90);

fn backend() -> LibvirtHypervisor {
    LibvirtHypervisor::new(LibvirtSettings {
        uri: std::env::var("BALLAST_LIBVIRT_URI").unwrap_or_else(|_| "qemu:///system".to_owned()),
        ..LibvirtSettings::default()
    })
}

/// A fresh state directory for one test, removed at the end.
struct StateDir(tempfile::TempDir);

impl StateDir {
    fn new(name: &str) -> StateDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ballast-capture-real-{name}-"))
            .tempdir()
            .expect("state dir");
        StateDir(dir)
    }
}

fn settings(dir: &StateDir) -> CaptureSettings {
    CaptureSettings::new(dir.0.path())
}

fn domain_of(hypervisor: &LibvirtHypervisor, guest: &Guest) -> DomainId {
    hypervisor
        .domains()
        .expect("list domains")
        .into_iter()
        .map(|info| info.id)
        .find(|id| id.name == guest.name())
        .expect("the guest is listed")
}

fn ooms(events: Vec<CaptureEvent>) -> Vec<CapturedOom> {
    events
        .into_iter()
        .filter_map(|event| match event {
            CaptureEvent::Oom(oom) => Some(oom),
            _ => None,
        })
        .collect()
}

/// Polls the serial log every 200 ms for `duration`; returns every OOM event.
fn poll_serial_for(
    capture: &mut Capture,
    id: &DomainId,
    log: &std::path::Path,
    duration: Duration,
) -> Vec<CapturedOom> {
    let deadline = Instant::now() + duration;
    let mut found = Vec::new();
    while Instant::now() < deadline {
        let poll = capture
            .poll_serial(id, log, Instant::now())
            .expect("poll serial");
        found.extend(ooms(poll.events));
        // The scenario: polls spread over an observation window (every OOM in it
        // counts, a duplicate too), not a wait for anything.
        std::thread::sleep(Duration::from_millis(200));
    }
    found
}

fn boot(spec: GuestSpec) -> Option<Guest> {
    let lab = lab_or_skip("capture_real_vm")?;
    let guest = lab.boot(spec).expect("boot guest");
    guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
    Some(guest)
}

#[test]
fn serial_and_guest_agent_capture_one_balloon_oom_once() {
    let Some(guest) = boot(GuestSpec::default()) else {
        return;
    };
    let hypervisor = backend();
    let id = domain_of(&hypervisor, &guest);
    let config = hypervisor.domain_config(&id).expect("domain config");
    let log = config
        .serial_log_path
        .expect("the domain logs its serial console");
    assert_eq!(log, guest.serial_log_path());
    let state = StateDir::new("full");
    let mut capture = Capture::new(settings(&state));

    // The boot log holds no OOM.
    assert!(poll_serial_for(&mut capture, &id, &log, Duration::from_millis(400)).is_empty());

    let run = scenario::inflate_then_grow(&guest, 200, OOM_TIMEOUT).expect("balloon OOM");
    assert!(run.kill_line.contains("(memhog)"), "{run:?}");

    // Serial: exactly one report, settled within the grace, verdict balloon.
    let mut serial = wait_until("the OOM on the serial log", Duration::from_secs(30), || {
        let found = poll_serial_for(&mut capture, &id, &log, Duration::from_millis(200));
        (!found.is_empty()).then_some(found)
    });
    serial.extend(poll_serial_for(
        &mut capture,
        &id,
        &log,
        Duration::from_secs(2),
    ));
    assert_eq!(serial.len(), 1, "{serial:#?}");
    let from_serial = &serial[0];
    assert_eq!(from_serial.source, CaptureSource::Serial);
    assert!(
        !from_serial.report.partial,
        "{:?}",
        from_serial.report.missing
    );
    let killed = from_serial.report.killed.as_ref().expect("killed task");
    assert_eq!(killed.comm, "memhog");
    let analysis = ballast_oom::analyze(&from_serial.report, None);
    assert_eq!(analysis.verdict, Verdict::Balloon, "{analysis:#?}");

    // The file API reads the whole ring, its last bytes included (qemu-ga drops
    // the bytes of a read that reaches the end of /dev/kmsg).
    let kmsg =
        ballast_agent::capture::kmsg::read_kmsg(&hypervisor, &id, Duration::from_secs(30), 4 << 20)
            .expect("/dev/kmsg through guest-file-open/read/close");
    let text = String::from_utf8_lossy(&kmsg.bytes);
    assert!(
        text.contains("Killed process") && text.contains("(memhog)"),
        "{} bytes in {} calls, ending {:?}",
        kmsg.bytes.len(),
        kmsg.calls,
        text.chars().rev().take(300).collect::<String>()
    );
    assert!(text.ends_with('\n'), "the last record is whole");
    eprintln!(
        "/dev/kmsg: {} bytes in {} guest agent calls",
        kmsg.bytes.len(),
        kmsg.calls
    );

    // Guest agent alone (a capture with its own state): the same report, through
    // the file API only (guest-exec is not allowed by default).
    let other_state = StateDir::new("agent-only");
    let agent_settings = settings(&other_state);
    assert!(!agent_settings.agent_exec);
    let mut agent_only = Capture::new(agent_settings);
    let events = agent_only
        .fetch_guest_agent(&hypervisor, &id, FetchReason::Periodic, Instant::now())
        .expect("/dev/kmsg through the guest agent");
    let from_agent = ooms(events);
    assert_eq!(from_agent.len(), 1, "{from_agent:#?}");
    assert_eq!(from_agent[0].source, CaptureSource::GuestAgent);
    assert_eq!(from_agent[0].dedupe_key, from_serial.dedupe_key);
    assert_eq!(from_agent[0].report.killed, from_serial.report.killed);
    assert_eq!(
        from_agent[0].report.stamp.monotonic_secs,
        from_serial.report.stamp.monotonic_secs
    );

    // Both paths in one capture: one event.
    let events = capture
        .fetch_guest_agent(
            &hypervisor,
            &id,
            FetchReason::OomKillCounter,
            Instant::now(),
        )
        .expect("dmesg through the guest agent");
    assert!(events.is_empty(), "{events:#?}");

    // Agent restart: new tailer from the persisted state; neither path repeats it.
    let (events, result) = capture.shutdown(Instant::now());
    result.expect("save state");
    assert!(events.is_empty(), "{events:#?}");
    drop(capture);
    let mut restarted = Capture::new(settings(&state));
    assert!(poll_serial_for(&mut restarted, &id, &log, Duration::from_secs(1)).is_empty());
    let events = restarted
        .fetch_guest_agent(&hypervisor, &id, FetchReason::Periodic, Instant::now())
        .expect("dmesg through the guest agent");
    assert!(events.is_empty(), "{events:#?}");
}

#[test]
fn quiet_console_partial_report_is_completed_by_the_guest_agent() {
    let Some(guest) = boot(GuestSpec {
        loglevel: 4,
        ..GuestSpec::default()
    }) else {
        return;
    };
    let hypervisor = backend();
    let id = domain_of(&hypervisor, &guest);
    let log = hypervisor
        .domain_config(&id)
        .expect("domain config")
        .serial_log_path
        .expect("the domain logs its serial console");
    let state = StateDir::new("quiet");
    let mut capture = Capture::new(settings(&state));
    assert!(poll_serial_for(&mut capture, &id, &log, Duration::from_millis(400)).is_empty());

    scenario::inflate_then_grow(&guest, 200, OOM_TIMEOUT).expect("balloon OOM");
    assert_eq!(
        guest.serial_count(ballast_testvm::INVOKED_LINE),
        0,
        "quiet console"
    );

    // The kill line alone: a partial report, held while the guest agent is asked.
    wait_until(
        "a partial report on the quiet console (the guest agent asked for)",
        Duration::from_secs(30),
        || {
            let poll = capture
                .poll_serial(&id, &log, Instant::now())
                .expect("poll serial");
            assert!(ooms(poll.events).is_empty(), "the partial copy is held");
            poll.wants_guest_agent
        },
    );

    let events = capture
        .fetch_guest_agent(&hypervisor, &id, FetchReason::PartialReport, Instant::now())
        .expect("dmesg through the guest agent");
    let found = ooms(events);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].source, CaptureSource::GuestAgent);
    assert!(!found[0].report.partial, "{:?}", found[0].report.missing);
    assert!(found[0].report.trigger.is_some());
    assert_eq!(
        ballast_oom::analyze(&found[0].report, None).verdict,
        Verdict::Balloon
    );
    // The held partial copy never goes out on its own.
    assert!(capture
        .release_held(Instant::now() + Duration::from_secs(3600))
        .is_empty());
}
