//! The guard (issue 19 item 3) on a real guest: `ballast-agent run` with the Proxmox
//! backend over one Proxmox-style QEMU (ballast-testvm `boot_proxmox`, TCG, Linux
//! 6.12), its balloon inflated from 512 to 200 MiB before the agent starts, then a hog
//! growing 2 MiB every 500 ms to 260 MiB (it fits the VM's maximum, not the inflated
//! balloon). With
//! `guard.mode: act` and a host with memory to give, the agent deflates the balloon
//! (a `deflated` guard event) and the guest never OOMs: the hog reaches its hold.
//! No pvestatd runs here, so nothing re-inflates the balloon (the re-inflation path
//! is covered with the fake backend: guard::decide::tests).
//!
//! Outside CI the test skips loudly when the machine cannot run guests.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ballast_testenv::wait_until;
use ballast_testvm::{lab_or_skip, GuestKernel, ProxmoxSpec, KILL_LINE};
use serde_json::Value;

use crate::pressure_real_vm::{journal_events, Agent};
use crate::proxmox_backend::TestRoot;

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const MIB: u64 = 1024 * 1024;

/// The guard events of the VM `vmid` in the agent's journal.
fn guard_events(journal: &Path, vmid: &str) -> Vec<Value> {
    journal_events(journal, "guard", vmid)
}

/// A squeezed 6.12 guest (balloon 512 -> 200 MiB) watched by `ballast-agent run`
/// with `guard.mode: <mode>`, its signals already in status.json.
struct Squeezed {
    guest: ballast_testvm::ProxmoxGuest,
    agent: Agent,
    journal: std::path::PathBuf,
    log: std::path::PathBuf,
    _root: TestRoot,
    _state: tempfile::TempDir,
}

impl Squeezed {
    fn start(lab: &'static ballast_testvm::Lab, vmid: u32, mode: &str) -> Squeezed {
        let started = Instant::now();
        let guest = lab
            .boot_proxmox(ProxmoxSpec {
                vmid,
                kernel: GuestKernel::Backports612,
                stats_period_secs: 2,
                ..ProxmoxSpec::default()
            })
            .expect("boot the 6.12 guest");
        guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
        eprintln!("{mode}: booted in {:?}", started.elapsed());
        // The balloon is inflated before the agent starts: the guard answers the hog,
        // not the inflation (a fast inflation that squeezes a guest is answered too).
        guest
            .qmp()
            .expect("QMP")
            .balloon_bytes(200 * MIB)
            .expect("inflate");
        wait_until(
            "the balloon to reach 200 MiB",
            Duration::from_secs(60),
            || {
                let bytes = guest.qmp().ok()?.query_balloon_bytes().ok()?;
                (bytes <= 210 * MIB).then_some(())
            },
        );
        let root = TestRoot::new(&[&guest]);
        let state = tempfile::tempdir().expect("state dir");
        let journal = state.path().join("journal.jsonl");
        let config = state.path().join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "backend: proxmox\nproxmox:\n  run_dir: {run}\n  config_dir: {conf}\n\
                 state_dir: {state}\njournal_file: {journal}\nhost_id: guard-test\n\
                 poll_interval_secs: 2\ncapture:\n  host_kernel: false\n  serial: false\n\
                 pressure:\n  guest_psi_interval_secs: 5\n\
                 guard:\n  mode: {mode}\n  host_reserve_mib: 256\n",
                run = root.run_dir().display(),
                conf = root.config_dir().display(),
                state = state.path().join("state").display(),
                journal = journal.display(),
            ),
        )
        .expect("config");
        let log = state.path().join("agent.log");
        let agent = Agent(
            Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
                .args(["run", "--config"])
                .arg(&config)
                .env("BALLAST_LOG", "info,ballast_agent=debug")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("ballast-agent starts"),
        );
        let status_path = state.path().join("state").join("status.json");
        wait_until(
            "the guest's balloon-stats signals in status.json",
            Duration::from_secs(90),
            || {
                let status: Value =
                    serde_json::from_str(&std::fs::read_to_string(&status_path).ok()?).ok()?;
                status["vms"][0]["signals"]["major_faults_per_s"]
                    .is_number()
                    .then_some(())
            },
        );
        Squeezed {
            guest,
            agent,
            journal,
            log,
            _root: root,
            _state: state,
        }
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The journal's pressure and guard events, the serial and agent log tails.
    fn dump(&self) -> String {
        let text = std::fs::read_to_string(&self.journal).unwrap_or_default();
        let events: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.contains("\"type\":\"pressure\"") || line.contains("\"type\":\"guard\"")
            })
            .collect();
        let tail = |text: String, n: usize| -> String {
            let start = text.len().saturating_sub(n);
            text.get(start..).unwrap_or_default().to_string()
        };
        format!(
            "pressure/guard events: {events:#?}\nserial tail:\n{}\nagent log tail:\n{}",
            tail(self.guest.serial_text(), 3000),
            tail(self.agent_log(), 6000)
        )
    }

    fn start_hog(&self, line: &str) -> Instant {
        let hog = self
            .guest
            .exec("/bin/sh", &["-c", line])
            .expect("hog starts");
        assert!(hog.success(), "{hog:?}");
        Instant::now()
    }
}

#[test]
fn act_deflates_a_squeezed_612_guest_before_it_ooms() {
    let Some(lab) = lab_or_skip("act_deflates_a_squeezed_612_guest_before_it_ooms") else {
        return;
    };
    let started = Instant::now();
    let run = Squeezed::start(lab, 130, "act");
    let guest = &run.guest;
    let journal = &run.journal;
    let hog_started = run.start_hog("/bin/memhog 2 500 260 >/dev/console 2>&1 &");
    let deadline = Instant::now() + Duration::from_secs(90);
    let deflated = loop {
        if let Some(event) = guard_events(journal, "130")
            .into_iter()
            .find(|event| event["outcome"] == "deflated")
        {
            break event;
        }
        if Instant::now() > deadline {
            panic!("no deflated guard event within 90 s\n{}", run.dump());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "deflated {:?} after the hog started: {deflated}",
        hog_started.elapsed()
    );
    assert_eq!(deflated["mode"], "act");
    assert_eq!(deflated["level"], "critical");
    let before = deflated["actual_before_kib"].as_u64().expect("before");
    let target = deflated["target_kib"].as_u64().expect("target");
    assert!(target > before && target <= 512 * 1024, "{deflated}");
    // The hog reaches its hold, and no OOM kill shows on the serial console.
    let held = guest.wait_serial("memhog: holding", Duration::from_secs(120));
    let serial = guest.serial_text();
    for event in guard_events(journal, "130") {
        eprintln!(
            "guard {} target {} detail {}",
            event["outcome"], event["target_kib"], event["detail"]
        );
    }
    assert!(
        !serial.contains(KILL_LINE),
        "the guest OOMed despite the guard:\n{}",
        run.dump()
    );
    held.unwrap_or_else(|error| panic!("the hog did not reach its hold: {error}\n{serial}"));
    let balloon = guest
        .qmp()
        .expect("QMP")
        .query_balloon_bytes()
        .expect("balloon");
    assert!(balloon > 260 * MIB, "balloon at {} MiB", balloon / MIB);
    eprintln!(
        "hog held after {:?}; balloon {} MiB",
        hog_started.elapsed(),
        balloon / MIB
    );
    drop(run.agent);
    eprintln!("done in {:?}", started.elapsed());
}

#[test]
fn observe_reports_would_deflate_before_a_squeezed_612_guest_ooms() {
    let Some(lab) = lab_or_skip("observe_reports_would_deflate_before_a_squeezed_612_guest_ooms")
    else {
        return;
    };
    let started = Instant::now();
    let run = Squeezed::start(lab, 131, "observe");
    // No hold: under the 200 MiB balloon this hog ends in the OOM killer.
    let hog_started = run.start_hog("/bin/memhog 2 500 >/dev/console 2>&1 &");
    let deadline = Instant::now() + Duration::from_secs(120);
    let would = loop {
        // Read the serial first: a would_deflate seen after it is still "before".
        let killed = run.guest.serial_text().contains(KILL_LINE);
        if let Some(event) = guard_events(&run.journal, "131")
            .into_iter()
            .find(|event| event["outcome"] == "would_deflate")
        {
            break event;
        }
        assert!(
            !killed,
            "the guest OOMed before any would_deflate\n{}",
            run.dump()
        );
        if Instant::now() > deadline {
            panic!("no would_deflate within 120 s\n{}", run.dump());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "would_deflate {:?} after the hog started: {would}",
        hog_started.elapsed()
    );
    assert_eq!(would["mode"], "observe");
    let before = would["actual_before_kib"].as_u64().expect("before");
    let target = would["target_kib"].as_u64().expect("target");
    assert!(target > before && target <= 512 * 1024, "{would}");
    // Observe changes nothing: the guest goes on to its OOM, the balloon untouched.
    run.guest
        .wait_serial(KILL_LINE, Duration::from_secs(120))
        .unwrap_or_else(|error| panic!("no OOM kill: {error}\n{}", run.dump()));
    eprintln!("OOM kill {:?} after the hog started", hog_started.elapsed());
    let balloon = run
        .guest
        .qmp()
        .expect("QMP")
        .query_balloon_bytes()
        .expect("balloon");
    assert!(balloon <= 210 * MIB, "balloon at {} MiB", balloon / MIB);
    assert!(
        !guard_events(&run.journal, "131")
            .iter()
            .any(|event| event["outcome"] == "deflated"),
        "{}",
        run.dump()
    );
    drop(run.agent);
    eprintln!("done in {:?}", started.elapsed());
}

/// Proxmox's pvestatd sets its balloon targets again every cycle: a loop in the test
/// stands in for it (QMP `balloon` to 200 MiB every 10 s; no pvestatd runs here). The
/// guard's deflation is taken back, and it says so with the floor that would hold.
#[test]
fn a_pvestatd_like_loop_taking_the_deflation_back_is_overridden_by_host() {
    let Some(lab) =
        lab_or_skip("a_pvestatd_like_loop_taking_the_deflation_back_is_overridden_by_host")
    else {
        return;
    };
    let started = Instant::now();
    let run = Squeezed::start(lab, 132, "act");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let overridden = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut qmp) = run.guest.qmp() {
                    let _ = qmp.balloon_bytes(200 * MIB);
                }
                for _ in 0..100 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let hog_started = run.start_hog("/bin/memhog 2 500 >/dev/console 2>&1 &");
        let deadline = Instant::now() + Duration::from_secs(90);
        let found = loop {
            if let Some(event) = guard_events(&run.journal, "132")
                .into_iter()
                .find(|event| event["outcome"] == "overridden_by_host")
            {
                break Some(event);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("after {:?} of hog", hog_started.elapsed());
        found
    });
    let overridden =
        overridden.unwrap_or_else(|| panic!("no overridden_by_host within 90 s\n{}", run.dump()));
    eprintln!("overridden: {overridden}");
    for event in guard_events(&run.journal, "132") {
        eprintln!(
            "guard {} target {} floor_after {} detail {}",
            event["outcome"], event["target_kib"], event["floor_after_kib"], event["detail"]
        );
    }
    let events = guard_events(&run.journal, "132");
    let deflated = events
        .iter()
        .find(|event| event["outcome"] == "deflated")
        .expect("a deflation came first");
    assert_eq!(
        overridden["floor_after_kib"], deflated["target_kib"],
        "the floor that would hold is the guard's target"
    );
    assert!(
        overridden["detail"]
            .as_str()
            .is_some_and(|d| d.contains("proxmox_raise_floor is off")),
        "{overridden}"
    );
    drop(run.agent);
    eprintln!("done in {:?}", started.elapsed());
}
