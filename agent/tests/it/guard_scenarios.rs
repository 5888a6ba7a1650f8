//! The risk model's discrimination on a real guest (issue 19 item 4, the CI pair of the
//! scenario suite; the full sweep is scripts/bench-guard.sh): `ballast-agent run` with
//! the Proxmox backend over one Linux 6.12 Proxmox-style guest (TCG or KVM) with a
//! virtio disk, and its balloon lent to the host:
//! * page-cache-heavy reads (the whole disk, larger than the guest, read again and
//!   again) fill hundreds of MiB of reclaimable cache and give no `critical` episode;
//! * a hog growing 8 MiB per guest second under a balloon squeezed to half the VM gets
//!   a `critical` episode before the guest kernel kills it: the lead time a guard has.
//!
//! Outside CI the test skips loudly when the machine cannot run guests.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::time::Duration;

use ballast_testenv::wait_until;
use ballast_testvm::agent_run::{self, AgentRun};
use ballast_testvm::guard_scenario as gs;
use ballast_testvm::{lab_or_skip, GuestKernel, ProxmoxSpec};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const VMID: u32 = 130;
/// Calm time after a balloon move, so the fall it caused is not read as the run's.
const SETTLE: Duration = Duration::from_secs(10);

#[test]
fn page_cache_reads_give_no_critical_episode_and_a_gradual_hog_under_the_balloon_gets_one_before_its_oom(
) {
    let Some(lab) = lab_or_skip(
        "page_cache_reads_give_no_critical_episode_and_a_gradual_hog_under_the_balloon_gets_one_before_its_oom",
    ) else {
        return;
    };
    let guest = lab
        .boot_proxmox(ProxmoxSpec {
            vmid: VMID,
            kernel: GuestKernel::Backports612,
            disk_mib: 768,
            ..ProxmoxSpec::default()
        })
        .expect("boot the 6.12 guest");
    guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
    // Short: the guest's socket paths are linked under it.
    let dir = tempfile::Builder::new()
        .prefix("bgs")
        .tempdir()
        .expect("agent dir");
    let binary = Path::new(env!("CARGO_BIN_EXE_ballast-agent"));
    let agent = AgentRun::start(binary, dir.path(), &[&guest], "").expect("agent starts");
    wait_until(
        "the agent's risk of the guest in status.json",
        Duration::from_secs(90),
        || {
            let status: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("state/status.json")).ok()?,
            )
            .ok()?;
            status["vms"]
                .as_array()?
                .iter()
                .any(|vm| vm["risk"].is_string())
                .then_some(())
        },
    );

    // Control: a quarter of the VM lent, the disk read over and over.
    gs::inflate(&guest, 384, Duration::from_secs(120)).expect("inflate to 384 MiB");
    // The inflation itself is a fall of MemAvailable: its episode ends (3 calm polls)
    // before the run is watched.
    std::thread::sleep(SETTLE);
    let control = gs::page_cache_reads(&guest, Duration::from_secs(24)).expect("cache reads");
    // Anything the reads set off shows within a few polls.
    std::thread::sleep(Duration::from_secs(6));
    eprintln!("page-cache control: {control:?}");
    assert!(
        control.file_lru_peak_kib >= 150 * 1024,
        "the reads filled reclaimable cache: {control:?}"
    );
    assert_eq!(control.kills, 0, "{control:?}");
    let pressure = agent.events("pressure", VMID);
    assert_eq!(
        agent_run::critical_episodes_between(
            &pressure,
            control.started_at_ms,
            control.ended_at_ms + 6_000
        ),
        0,
        "page cache is not an emergency: {pressure:#?}\n{}",
        agent.log_text()
    );

    // The hog: half the VM lent, memory grows until the kernel kills it.
    gs::reset(&guest).expect("reset");
    gs::inflate(&guest, 256, Duration::from_secs(120)).expect("inflate to 256 MiB");
    std::thread::sleep(SETTLE);
    let hog = gs::gradual_hog(&guest, 8, None, Duration::from_secs(240)).expect("hog");
    eprintln!("hog: {hog:?}");
    let killed_at_ms = hog.killed_at_ms.expect("the hog was OOM-killed");
    // The agent may log the last poll's episode event a moment after the harness saw the kill.
    std::thread::sleep(Duration::from_secs(3));
    let pressure = agent.events("pressure", VMID);
    for event in &pressure {
        eprintln!(
            "{} {} at {} exhaustion {} deficit {}",
            event["phase"],
            event["level"],
            event["at_ms"],
            event["exhaustion_secs"],
            event["deficit_kib"]
        );
    }
    let lead_ms = agent_run::critical_lead_ms(&pressure, hog.started_at_ms, killed_at_ms);
    eprintln!(
        "critical {lead_ms:?} ms before the OOM ({:.1} guest s of growth)",
        hog.guest_secs
    );
    assert!(
        lead_ms.is_some_and(|ms| ms > 0),
        "a critical episode before the OOM: {pressure:#?}\n{}",
        agent.log_text()
    );
    drop(agent);
}
