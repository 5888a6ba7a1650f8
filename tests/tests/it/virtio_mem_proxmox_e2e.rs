//! virtio-mem end to end on a Proxmox-style QEMU (issue 20 item 5, "the same on the
//! Proxmox-style QEMU over QMP"): a real TCG guest (Linux 6.12, `numa: 1`, a
//! virtio-mem device onlined movable, the balloon beside it), a real `ballast-agent
//! run` on the Proxmox backend and a real `ballast-collector serve` on SQLite.
//!
//! The host takes the whole device back over QMP (`qom-set requested-size`), the idle
//! guest unplugs it, and a hog that fits only with the blocks is OOM-killed. What a user
//! reads from the collector: the OOM listed once, its correlation laying it at the
//! host's door (`host_took`: virtio-mem, the unplugged KiB, would have survived), the
//! request in the VM's memory-device events. Then the counterfactual: the blocks back,
//! the same hog holds and no second OOM arrives.
//!
//! The harness holds the guest's serial socket (one client at a time) to see the kill,
//! so the agent runs with serial capture off (`ballast_testvm::agent_run::AgentRun`)
//! and gets the report the way it does on any Proxmox VM whose serial console it does
//! not read: on suspicion
//! (`capture.guest_agent: on_suspicion`, the default) through the guest agent's file
//! API on `/dev/kmsg`, asked once the 6.12 balloon's `stat-oom-kills` went up or the
//! guest's usable memory collapsed. The test asserts that source.
//!
//! `BALLAST_VIRTIO_MEM_SCREENSHOT=<file.png>` (scripts/screenshot-virtio-mem.sh; not
//! in CI) then lets both devices move for ten more minutes ([`chart_story`]: the chart
//! has a point a minute), waits for the last minute's rollup and saves a
//! headless-Chromium screenshot of the VM page, balloon and virtio-mem charted, there.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ballast_tests::stack::start_collector;
use ballast_tests::{http_get, wait_until};
use ballast_testvm::virtio_mem::Settled;
use ballast_testvm::virtio_mem_scenario as vm;
use ballast_testvm::{lab_or_skip, GuestKernel, ProxmoxSpec, VIRTIO_MEM_ID};

use crate::virtio_mem_e2e::{
    agent_run_shipping_to, blocks_back_the_hog_holds, device_spec, unplug_then_oom,
    wait_plugged_at_boot, UnplugOom, BOOT_MIB, BOOT_TIMEOUT, DEVICE_MIB, MIB,
};

/// AgentRun's host id.
const HOST: &str = "scenario";
const VMID: u32 = 142;

#[test]
fn proxmox_unplug_oom_is_laid_at_the_hosts_door_and_with_the_blocks_back_the_hog_survives() {
    let Some(lab) = lab_or_skip(
        "proxmox_unplug_oom_is_laid_at_the_hosts_door_and_with_the_blocks_back_the_hog_survives",
    ) else {
        return;
    };
    let started = Instant::now();
    // Short: the guest's sockets are linked under the agent's folder (108-byte limit).
    let root = std::env::temp_dir().join(format!("bvpe{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("scratch dir");
    let collector = start_collector(&root.join("collector"), HOST, "storage:\n  type: sqlite\n");
    let guest = lab
        .boot_proxmox(ProxmoxSpec {
            vmid: VMID,
            memory_mib: BOOT_MIB,
            balloon_min_mib: BOOT_MIB,
            // 6.12: the balloon's stats carry `stat-oom-kills`, the agent's sign to
            // read the kernel log through the guest agent.
            kernel: GuestKernel::Backports612,
            virtio_mem: Some(device_spec()),
            ..ProxmoxSpec::default()
        })
        .expect("boot the Proxmox-style virtio-mem guest");
    guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
    wait_plugged_at_boot(&guest);
    let booted = started.elapsed();
    let agent_dir = root.join("a");
    let agent = agent_run_shipping_to(&collector, &agent_dir, &guest);
    wait_until(
        "the agent to sample the guest's virtio-mem device",
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(agent_dir.join("state/status.json"))
                .ok()
                .filter(|status| status.contains(VIRTIO_MEM_ID))
        },
    );

    // (a) The host takes the whole device back from the idle guest over QMP; the agent
    // polls the smaller guest a few times; then the hog that needs the blocks.
    let UnplugOom {
        resize,
        hog,
        killed_at_ms,
        stored_at_ms,
        item,
        correlation,
    } = unplug_then_oom(&guest, guest.name(), collector.addr, |_| {
        format!("{HOST}/{VMID}")
    });
    let stored_after = Duration::from_millis(stored_at_ms.saturating_sub(killed_at_ms));
    assert_eq!(item["vm"]["uuid"], VMID.to_string(), "{item:#}");
    // Only virtio-mem: the balloon sat at its maximum.
    assert_eq!(
        correlation["host_took"]["mechanisms"],
        serde_json::json!(["virtio_mem"]),
        "{correlation:#}"
    );
    // The report came through the guest agent (the harness holds the serial socket),
    // once: the agent's journal has one OOM event for the VM.
    let journal_ooms = agent.events("oom", VMID);
    assert_eq!(journal_ooms.len(), 1, "{journal_ooms:#?}");
    assert_eq!(
        journal_ooms[0]["source"], "guest_agent",
        "{journal_ooms:#?}"
    );
    // (b) The counterfactual: the blocks back, the same hog holds, no second OOM.
    blocks_back_the_hog_holds(&guest, guest.name(), collector.addr);
    let log = agent.log_text();
    let suspicions: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("Guest OOM suspected"))
        .collect();
    eprintln!(
        "virtio_mem_proxmox_e2e: boot+plug {booted:?}, unplug {:?}, hog killed {} ms after \
         its start, OOM stored {stored_after:?} after the kill, whole test {:?}; the \
         agent's suspicions: {suspicions:#?}",
        resize.took,
        killed_at_ms.saturating_sub(hog.started_at_ms),
        started.elapsed()
    );

    if let Some(shot) = std::env::var_os("BALLAST_VIRTIO_MEM_SCREENSHOT") {
        chart_story(&guest);
        screenshot_vm_page(collector.addr, Path::new(&shot));
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&root);
}

/// For the screenshot only (the 1 h chart has one point a minute): after the test's
/// minute of unplug, OOM and blocks back, a few minutes of both devices moving, each
/// step held for a few rollups: all plugged; the host takes half the device; then the
/// balloon takes 96 MiB of the boot memory as well; then both give everything back.
fn chart_story(guest: &ballast_testvm::ProxmoxGuest) {
    const STEP: Duration = Duration::from_secs(150);
    vm::kill_hogs(guest).expect("hogs killed");
    std::thread::sleep(STEP);
    let half = vm::resize(guest, VIRTIO_MEM_ID, DEVICE_MIB / 2 * MIB, vm::STALL_AFTER)
        .expect("half the device back to the host");
    assert!(
        matches!(half.settled, Settled::Converged { .. }),
        "{half:?}"
    );
    std::thread::sleep(STEP);
    let balloon_mib = BOOT_MIB - 96;
    guest
        .qmp()
        .and_then(|mut qmp| qmp.balloon_bytes(balloon_mib << 20))
        .expect("inflate the balloon");
    std::thread::sleep(STEP);
    let back = vm::resize(guest, VIRTIO_MEM_ID, DEVICE_MIB * MIB, vm::STALL_AFTER)
        .expect("the device back");
    assert!(
        matches!(back.settled, Settled::Converged { .. }),
        "{back:?}"
    );
    guest
        .qmp()
        .and_then(|mut qmp| qmp.balloon_bytes(BOOT_MIB << 20))
        .expect("deflate the balloon");
    std::thread::sleep(STEP);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Waits until the agent's rollup of the current minute (60 s periods, sent after the
/// period ends) shows on the VM page's chart, then saves a headless-Chromium screenshot
/// of the page to `out`.
fn screenshot_vm_page(addr: SocketAddr, out: &Path) {
    let page = format!("/vms/{HOST}/{VMID}?range=1h");
    let minute_ends = (now_ms() / 60_000 + 1) * 60_000;
    wait_until(
        "the VM page to chart the rollup of the counterfactual's minute",
        Duration::from_secs(150),
        || {
            let (status, body) = http_get(addr, &page, None).ok()?;
            (status == 200
                && now_ms() > minute_ends + 3 * 2_000
                && body.contains("virtio-mem plugged"))
            .then_some(())
        },
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("screenshot folder");
    }
    let profile = std::env::temp_dir().join(format!("bvpe-chromium-{}", std::process::id()));
    let status = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("http://{addr}{page}"))
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        status.success() && out.exists(),
        "chromium saved no screenshot at {}: {status}",
        out.display()
    );
    eprintln!("screenshot: {}", out.display());
}
