//! The virtio-mem lab on real guests (issue 20 item 5, the harness half): the
//! scenarios of `ballast_testvm::virtio_mem_scenario` do what they say on a TCG guest
//! whose kernel onlines the device's memory movable. The agent and collector tests
//! build on them; these prove the ground they stand on:
//! * libvirt (Linux 6.1): the host unplugs the whole device from an idle guest, a hog
//!   that fits only with those blocks is OOM-killed; with the blocks back the same hog
//!   holds and nothing is killed;
//! * Proxmox-style QEMU over QMP (Linux 6.12): a hog holds most of the guest, the host
//!   asks for everything back, and plugged stops above requested without a kill.
//!
//! Outside CI the tests skip loudly when the machine cannot run guests.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::time::Duration;

use ballast_testvm::virtio_mem::{self, Settled};
use ballast_testvm::virtio_mem_scenario as vm;
use ballast_testvm::{
    lab_or_skip, GuestKernel, GuestSpec, ProxmoxSpec, VirtioMemGuest, VirtioMemSpec, VIRTIO_MEM_ID,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Boot memory (NUMA node 0); the guest's kernel keeps ~110 MiB of it for itself
/// (swiotlb included: the device's range lies above 4 GiB).
const BOOT_MIB: u64 = 384;
/// The device's size, plugged at boot.
const DEVICE_MIB: u64 = 512;
/// More than the guest has without the device, well under what it has with it.
const HOG_MIB: u64 = 400;

fn device_spec() -> VirtioMemSpec {
    VirtioMemSpec {
        max_mib: DEVICE_MIB,
        requested_mib: DEVICE_MIB,
        ..VirtioMemSpec::default()
    }
}

/// The guest's MemTotal in KiB, and whether it has a populated movable zone.
fn guest_memory<G: VirtioMemGuest>(guest: &G) -> (u64, bool) {
    let out = guest
        .guest_exec(
            "/bin/sh",
            &[
                "-c",
                "grep MemTotal /proc/meminfo; cat /sys/devices/system/memory/memory*/valid_zones",
            ],
        )
        .expect("meminfo and zones through the agent")
        .stdout;
    let total = out
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (total, out.lines().any(|line| line.trim() == "Movable"))
}

#[test]
fn libvirt_unplug_then_hog_is_oom_killed_and_with_the_blocks_back_the_same_hog_survives() {
    let Some(lab) = lab_or_skip(
        "libvirt_unplug_then_hog_is_oom_killed_and_with_the_blocks_back_the_same_hog_survives",
    ) else {
        return;
    };
    let guest = lab
        .boot(GuestSpec {
            memory_mib: BOOT_MIB,
            current_mib: BOOT_MIB,
            virtio_mem: Some(device_spec()),
            ..GuestSpec::default()
        })
        .expect("boot the virtio-mem guest");
    let boot = guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
    let plugged_at_boot = virtio_mem::wait_settled(
        &guest,
        VIRTIO_MEM_ID,
        vm::STALL_AFTER,
        Duration::from_secs(60),
    )
    .expect("the boot request settles");
    eprintln!("libvirt virtio-mem guest ready after {boot:?}; {plugged_at_boot:?}");
    assert!(
        plugged_at_boot.converged() && plugged_at_boot.device().plugged_kib == DEVICE_MIB * 1024,
        "the guest plugged the whole device at boot: {plugged_at_boot:?}"
    );
    let (total_plugged, movable) = guest_memory(&guest);
    assert!(movable, "the plugged memory is onlined movable");

    // (a) The host takes the whole device back from the idle guest, then the hog.
    let unplugged = vm::unplug_then_hog(&guest, VIRTIO_MEM_ID, 0, HOG_MIB, Duration::ZERO)
        .expect("unplug then hog");
    eprintln!("unplug then hog: {unplugged:?}");
    let (total_unplugged, _) = guest_memory(&guest);
    assert_eq!(unplugged.resize.settled.device().plugged_kib, 0);
    assert_eq!(
        total_plugged - total_unplugged,
        DEVICE_MIB * 1024,
        "MemTotal fell by the unplugged blocks"
    );
    assert!(
        total_unplugged < HOG_MIB * 1024 && HOG_MIB * 1024 < total_plugged,
        "the hog fits only with the blocks: MemTotal {total_unplugged} / {total_plugged} KiB"
    );
    let Settled::Converged { at_ms, .. } = unplugged.resize.settled else {
        panic!("the idle guest's unplug converged: {unplugged:?}");
    };
    let kill_line = unplugged.hog.kill_line.as_deref().unwrap_or_default();
    assert!(
        kill_line.contains("(memhog)"),
        "memhog was OOM-killed: {unplugged:?}"
    );
    let killed_at_ms = unplugged.hog.killed_at_ms.unwrap_or(0);
    assert!(
        unplugged.resize.requested_at_ms <= at_ms
            && at_ms <= unplugged.hog.started_at_ms
            && unplugged.hog.started_at_ms <= killed_at_ms,
        "request, convergence, hog start and kill in that order: {unplugged:?}"
    );

    // (b) The counterfactual: the blocks back, the same hog holds.
    let back = vm::blocks_back_then_hog(&guest, VIRTIO_MEM_ID, HOG_MIB, Duration::from_secs(6))
        .expect("blocks back then hog");
    eprintln!("blocks back then hog: {back:?}");
    assert_eq!(
        back.resize.settled.device().plugged_kib,
        DEVICE_MIB * 1024,
        "the guest plugged the whole device again"
    );
    assert!(back.hog.survived(), "the hog held without a kill: {back:?}");
    assert_eq!(
        vm::kill_count(&guest),
        1,
        "one kill in all: the unplugged run's"
    );
}

#[test]
fn proxmox_unplug_under_a_holding_hog_stalls_above_the_request_without_a_kill() {
    let Some(lab) =
        lab_or_skip("proxmox_unplug_under_a_holding_hog_stalls_above_the_request_without_a_kill")
    else {
        return;
    };
    let guest = lab
        .boot_proxmox(ProxmoxSpec {
            vmid: 140,
            memory_mib: BOOT_MIB,
            balloon_min_mib: BOOT_MIB,
            kernel: GuestKernel::Backports612,
            virtio_mem: Some(device_spec()),
            ..ProxmoxSpec::default()
        })
        .expect("boot the Proxmox-style virtio-mem guest");
    let boot = guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
    let at_boot = virtio_mem::wait_settled(
        &guest,
        VIRTIO_MEM_ID,
        vm::STALL_AFTER,
        Duration::from_secs(60),
    )
    .expect("the boot request settles");
    eprintln!("Proxmox-style virtio-mem guest ready after {boot:?}; {at_boot:?}");
    assert!(
        at_boot.converged() && at_boot.device().plugged_kib == DEVICE_MIB * 1024,
        "the guest plugged the whole device at boot: {at_boot:?}"
    );
    assert!(
        guest_memory(&guest).1,
        "the plugged memory is onlined movable"
    );

    // (c) A hog holds all but ~200 MiB of the guest; the host asks for the whole device.
    let stuck =
        vm::stuck_unplug(&guest, VIRTIO_MEM_ID, 560, 0, vm::STALL_AFTER).expect("stuck unplug");
    eprintln!("stuck unplug: {stuck:?}");
    let Settled::Stalled {
        since_ms,
        declared_at_ms,
        ref device,
    } = stuck.resize.settled
    else {
        panic!("the unplug stalled: {stuck:?}");
    };
    assert_eq!(device.requested_kib, 0);
    assert!(
        device.plugged_kib > device.requested_kib,
        "plugged stopped above requested: {stuck:?}"
    );
    assert_eq!(stuck.kills, 0, "a failed unplug kills nothing: {stuck:?}");
    assert!(
        stuck.resize.requested_at_ms <= since_ms && since_ms < declared_at_ms,
        "the stall began after the request: {stuck:?}"
    );
    // It stays stuck: QMP still reads plugged above requested a few seconds on.
    std::thread::sleep(Duration::from_secs(3));
    let later = virtio_mem::device(&guest, VIRTIO_MEM_ID).expect("device over QMP");
    assert_eq!(
        later.plugged_kib, device.plugged_kib,
        "still stuck: {later:?}"
    );

    // Once the hog is gone, the request back at the maximum converges again.
    let reset = vm::reset(&guest, VIRTIO_MEM_ID).expect("reset");
    eprintln!("reset: {reset:?}");
    assert_eq!(reset.settled.device().plugged_kib, DEVICE_MIB * 1024);
}
