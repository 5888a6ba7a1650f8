//! `ballast-agent run` against a real libvirt guest booted WITHOUT the virtio_balloon
//! module (`lab.skip_modules=virtio_balloon`), stats asked for every 2 s: the balloon
//! device answers (QEMU's `actual`), the guest never sends stats, and the agent's
//! audit says `balloon_driver_silent` (not `stale_stats`, not `stats_period_off`),
//! in its status and in the inventory it sends (docs/stats-path.md). About 35 s of
//! guest time: boot, then the 30 s the agent waits before calling a driver silent.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use ballast_testenv::wait_until_showing;
use ballast_testvm::{lab_or_skip, GuestSpec};
use serde_json::Value;

use crate::status_agent::{vm_status, StatusAgent};

const MIB: u64 = 1024;

fn findings(vm: &Value) -> Vec<String> {
    vm["findings"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|name| name.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The findings of `name` in each inventory the agent emitted, oldest first.
fn inventory_findings(dir: &Path, name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["type"] == "inventory")
        .filter_map(|event| {
            event["vms"]
                .as_array()?
                .iter()
                .find(|vm| vm["vm"]["name"] == name)
                .map(findings)
        })
        .collect()
}

#[test]
fn a_guest_without_the_balloon_driver_is_named_silent_not_stale() {
    let Some(lab) = lab_or_skip("a_guest_without_the_balloon_driver_is_named_silent_not_stale")
    else {
        return;
    };
    let guest = lab
        .boot(GuestSpec {
            memory_mib: 512,
            current_mib: 512,
            stats_period_secs: 2,
            extra_cmdline: vec!["lab.skip_modules=virtio_balloon".into()],
            ..GuestSpec::default()
        })
        .expect("guest boots");
    guest
        .wait_ready(Duration::from_secs(120))
        .expect("guest ready");
    guest
        .wait_serial("lab-init: virtio_balloon skipped", Duration::from_secs(5))
        .expect("the guest runs without virtio_balloon");

    let started = Instant::now();
    let agent = StatusAgent::start("stats-path", "");
    let dir = agent.dir.clone();

    let last = RefCell::new(None);
    let silent = wait_until_showing(
        "balloon_driver_silent in the agent's status",
        Duration::from_secs(90),
        || {
            let vm = vm_status(&dir, guest.name());
            last.replace(vm.clone());
            vm.filter(|vm| findings(vm).iter().any(|f| f == "balloon_driver_silent"))
        },
        || format!("the VM's status: {:?}", last.borrow()),
    );
    let took = started.elapsed();
    eprintln!("agent start -> balloon_driver_silent: {took:?}");
    assert!(
        took >= Duration::from_secs(30),
        "never before the 30 s a driver has to load: {took:?}"
    );
    let names = findings(&silent);
    assert!(
        !names
            .iter()
            .any(|f| f == "stale_stats" || f == "stats_period_off"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|f| f == "free_page_reporting_off"),
        "a harness balloon has no freePageReporting: {names:?}"
    );
    // The balloon answers (QEMU's figure, true: nothing inflated it), the guest never did.
    assert_eq!(silent["actual_kib"], 512 * MIB, "{silent}");
    assert_eq!(silent["maximum_kib"], 512 * MIB, "{silent}");
    assert!(
        silent["usable_kib"].is_null(),
        "MemAvailable unknown: {silent}"
    );
    assert_eq!(silent["stale"], false, "{silent}");

    // The change re-sent the inventory: the collector hears of it too.
    let sent = wait_until_showing(
        "an inventory naming balloon_driver_silent",
        Duration::from_secs(10),
        || {
            let sent = inventory_findings(&dir, guest.name());
            sent.last()
                .is_some_and(|last| last.iter().any(|f| f == "balloon_driver_silent"))
                .then_some(sent)
        },
        || {
            format!(
                "inventories sent: {:?}",
                inventory_findings(&dir, guest.name())
            )
        },
    );
    assert!(
        sent.first()
            .is_some_and(|first| !first.iter().any(|f| f == "balloon_driver_silent")),
        "the first inventory, at start, does not call it silent yet: {sent:?}"
    );
}
