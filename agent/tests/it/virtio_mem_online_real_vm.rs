//! `ballast-agent run` against a real libvirt guest whose virtio-mem memory is plugged
//! but not onlined (docs/elastic.md, "Plugged but not onlined"): the guest boots with
//! an empty 256 MiB device, is told to leave hotplugged memory offline
//! (`/sys/devices/system/memory/auto_online_blocks`), and the host asks for all of it.
//! The device plugs it (plugged = requested: no `stuck`), the guest's MemTotal does
//! not grow, and the agent's audit says `virtio_mem_not_onlined` once
//! `elastic.converge_timeout_secs` (5 s here) has passed; onlined by hand in the
//! guest, the finding goes. About 30 s of guest time after boot.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use ballast_testenv::wait_until_showing;
use ballast_testvm::virtio_mem::{self, Settled};
use ballast_testvm::{lab_or_skip, GuestSpec, VirtioMemGuest, VirtioMemSpec, VIRTIO_MEM_ID};
use serde_json::Value;

use crate::status_agent::{vm_status, StatusAgent};

const MIB: u64 = 1024;
const DEVICE_MIB: u64 = 256;

fn has_finding(vm: &Value, finding: &str) -> bool {
    vm["findings"]
        .as_array()
        .is_some_and(|list| list.iter().any(|name| name == finding))
}

/// The guest's MemTotal (KiB) from its own /proc/meminfo.
fn mem_total_kib(guest: &ballast_testvm::Guest) -> u64 {
    let meminfo = guest
        .exec("/bin/cat", &["/proc/meminfo"])
        .expect("meminfo")
        .stdout;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo")
}

fn sh(guest: &ballast_testvm::Guest, line: &str) {
    let output = guest.exec("/bin/sh", &["-c", line]).expect("guest shell");
    assert_eq!(output.exit_code, Some(0), "{line}: {output:?}");
}

#[test]
fn plugged_virtio_mem_memory_the_guest_leaves_offline_is_a_finding_until_onlined() {
    let Some(lab) = lab_or_skip(
        "plugged_virtio_mem_memory_the_guest_leaves_offline_is_a_finding_until_onlined",
    ) else {
        return;
    };
    let guest = lab
        .boot(GuestSpec {
            memory_mib: 384,
            current_mib: 384,
            stats_period_secs: 2,
            virtio_mem: Some(VirtioMemSpec {
                max_mib: DEVICE_MIB,
                requested_mib: 0,
                ..VirtioMemSpec::default()
            }),
            ..GuestSpec::default()
        })
        .expect("guest boots");
    guest
        .wait_ready(Duration::from_secs(180))
        .expect("guest ready");
    // Whatever the kernel argument said, memory added from now on stays offline.
    sh(
        &guest,
        "echo offline > /sys/devices/system/memory/auto_online_blocks",
    );
    let total_before = mem_total_kib(&guest);

    let agent = StatusAgent::start("vmem-online", "elastic:\n  converge_timeout_secs: 5\n");
    let dir = agent.dir.clone();
    let last = RefCell::new(None);
    let status = || {
        let vm = vm_status(&dir, guest.name());
        last.replace(vm.clone());
        vm
    };
    // The agent's anchor: the empty device and the guest's MemTotal in its stats.
    wait_until_showing(
        "the agent to sample the device and the guest's stats",
        Duration::from_secs(60),
        || {
            status().filter(|vm| {
                vm["virtio_mem"].as_array().is_some_and(|d| !d.is_empty())
                    && vm["usable_kib"].as_u64().is_some()
            })
        },
        || format!("the VM's status: {:?}", last.borrow()),
    );
    // Two more polls, so the anchor is one with the guest's stats.
    std::thread::sleep(Duration::from_secs(4));

    let requested_at = Instant::now();
    guest
        .set_virtio_mem_requested_kib(VIRTIO_MEM_ID, DEVICE_MIB * MIB)
        .expect("plug the device");
    let settled = virtio_mem::wait_settled(
        &guest,
        VIRTIO_MEM_ID,
        Duration::from_secs(6),
        Duration::from_secs(60),
    )
    .expect("the plug settles");
    let Settled::Converged { .. } = settled else {
        panic!("the guest plugs offline memory too: {settled:?}");
    };
    let plugged_at = Instant::now();
    let total_after = mem_total_kib(&guest);
    assert!(
        total_after < total_before + 4 * MIB,
        "MemTotal did not take the plugged memory in: {total_before} -> {total_after} KiB"
    );

    let flagged = wait_until_showing(
        "virtio_mem_not_onlined in the agent's status",
        Duration::from_secs(60),
        || status().filter(|vm| has_finding(vm, "virtio_mem_not_onlined")),
        || format!("the VM's status: {:?}", last.borrow()),
    );
    eprintln!(
        "plug settled -> virtio_mem_not_onlined: {:?} (request -> finding {:?})",
        plugged_at.elapsed(),
        requested_at.elapsed()
    );
    // No poll can see plugged memory before the request: the 5 s run from after it.
    assert!(
        requested_at.elapsed() >= Duration::from_secs(5),
        "not before the 5 s timeout: {:?}",
        requested_at.elapsed()
    );
    let device = &flagged["virtio_mem"][0];
    assert_eq!(device["plugged_kib"], DEVICE_MIB * MIB, "{flagged}");
    assert_eq!(device["stuck"], false, "plugged = requested: {flagged}");

    // Onlined by hand (what a udev rule would do): MemTotal takes it in, the finding goes.
    sh(
        &guest,
        "for block in /sys/devices/system/memory/memory*; do \
         if [ \"$(cat $block/state)\" = offline ]; then echo online_movable > $block/state; fi; done",
    );
    assert!(
        mem_total_kib(&guest) >= total_before + (DEVICE_MIB - 16) * MIB,
        "onlined: MemTotal grew by the device"
    );
    wait_until_showing(
        "virtio_mem_not_onlined to go from the agent's status",
        Duration::from_secs(30),
        || status().filter(|vm| !has_finding(vm, "virtio_mem_not_onlined")),
        || format!("the VM's status: {:?}", last.borrow()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
