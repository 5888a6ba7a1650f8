//! virtio-mem end to end (issue 20 item 5): real TCG guests with a virtio-mem device
//! (`ballast_testvm::virtio_mem_scenario`), the real agent and the real collector.
//!
//! * libvirt (Linux 6.1): the host unplugs the whole device from the idle guest; a hog
//!   that fits only with those blocks is OOM-killed. The collector stores the OOM with
//!   the host's side of it: `host_took` names virtio-mem, the blocks unplugged, when the
//!   request went down, and that the guest would have survived with them back; the
//!   balloon's own verdict stays the balloon's. Then the counterfactual: the blocks back,
//!   the same hog holds and the collector gets no second OOM.
//! * Proxmox-style QEMU over QMP (Linux 6.12), the device's memory onlined to the kernel
//!   zone: the host asks for the whole device back, plugged stops above the request;
//!   the collector lists the agent's `stuck` event within two polls of the stall; the
//!   host then asks for what is plugged and the collector lists `converged`.
//!
//! Outside CI the tests skip loudly when the machine cannot run guests. The helpers
//! above the tests serve `virtio_mem_proxmox_e2e` too.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::net::SocketAddr;
use std::time::Duration;

use ballast_tests::stack::{start_agent, start_collector, Collector};
use ballast_tests::{http_get, wait_until};
use ballast_testvm::agent_run::AgentRun;
use ballast_testvm::virtio_mem::{self, Settled};
use ballast_testvm::virtio_mem_scenario as vm;
use ballast_testvm::{
    lab_or_skip, GuestKernel, GuestSpec, ProxmoxGuest, ProxmoxSpec, VirtioMemGuest,
    VirtioMemOnline, VirtioMemSpec, VIRTIO_MEM_ID,
};
use serde_json::Value;

pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Boot memory (NUMA node 0); the guest's kernel keeps ~110 MiB of it for itself.
pub(crate) const BOOT_MIB: u64 = 384;
/// The device's size, plugged at boot.
pub(crate) const DEVICE_MIB: u64 = 512;
/// More than the guest has without the device, well under what it has with it.
pub(crate) const HOG_MIB: u64 = 400;
/// The agents here poll every 2 s.
pub(crate) const POLL: Duration = Duration::from_secs(2);
pub(crate) const MIB: u64 = 1024;

pub(crate) fn device_spec() -> VirtioMemSpec {
    VirtioMemSpec {
        max_mib: DEVICE_MIB,
        requested_mib: DEVICE_MIB,
        ..VirtioMemSpec::default()
    }
}

pub(crate) fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    match http_get(addr, path, None) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The whole device plugged once the guest's driver has loaded.
pub(crate) fn wait_plugged_at_boot<G: VirtioMemGuest>(guest: &G) {
    let at_boot = virtio_mem::wait_settled(
        guest,
        VIRTIO_MEM_ID,
        vm::STALL_AFTER,
        Duration::from_secs(60),
    )
    .expect("the boot request settles");
    assert!(
        at_boot.converged() && at_boot.device().plugged_kib == DEVICE_MIB * MIB,
        "the guest plugged the whole device at boot: {at_boot:?}"
    );
}

/// A real `ballast-agent run` over the Proxmox-style `guest` ([`AgentRun`], its files
/// under `dir`, which must be short), shipping to `collector`.
pub(crate) fn agent_run_shipping_to(
    collector: &Collector,
    dir: &std::path::Path,
    guest: &ProxmoxGuest,
) -> AgentRun {
    std::fs::create_dir_all(dir).expect("agent dir");
    AgentRun::start(
        &ballast_tests::binary("ballast-agent"),
        dir,
        &[guest],
        &format!(
            "collector:\n  url: http://{}\n  token_file: {}\n",
            collector.addr,
            collector.token_file.display()
        ),
    )
    .expect("agent")
}

/// The collector's OOMs of the VM named `name` that killed a task.
pub(crate) fn ooms_of(addr: SocketAddr, name: &str) -> Vec<Value> {
    get_json(addr, "/api/v1/ooms?limit=200")
        .and_then(|list| list["items"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|item| item["vm"]["name"] == name && item["killed"]["comm"].is_string())
        .collect()
}

/// What [`unplug_then_oom`] saw: the unplug, the hog, and the OOM the collector stored.
pub(crate) struct UnplugOom {
    pub resize: vm::ResizeRun,
    pub hog: vm::HogRun,
    pub killed_at_ms: u64,
    /// When the collector first listed the OOM (host epoch ms).
    pub stored_at_ms: u64,
    /// The collector's list item of the OOM, and its `correlation_detail`.
    pub item: Value,
    pub correlation: Value,
}

/// (a) The host takes the whole device back from the idle guest, the agent polls the
/// smaller guest a few times, then the hog that needs the blocks is OOM-killed. The
/// collector stores the OOM with the host's side of it: `host_took` names virtio-mem,
/// the whole device unplugged, when the request went down, and that the guest would
/// have survived with the blocks back; `verdict` keeps its balloon-only meaning; the
/// request is in the VM's memory-device events (`vm_path`: `{host}/{uuid}`).
pub(crate) fn unplug_then_oom<G: VirtioMemGuest>(
    guest: &G,
    name: &str,
    addr: SocketAddr,
    vm_path: impl Fn(&Value) -> String,
) -> UnplugOom {
    let resize = vm::resize(guest, VIRTIO_MEM_ID, 0, vm::STALL_AFTER).expect("unplug");
    assert!(
        matches!(resize.settled, Settled::Converged { .. }),
        "the idle guest gave the whole device back: {resize:?}"
    );
    // The scenario, not a wait: the agent's samples of the smaller guest come before the kill.
    std::thread::sleep(3 * POLL);
    let hog = vm::hog(guest, HOG_MIB, Duration::ZERO).expect("hog");
    let killed_at_ms = hog.killed_at_ms.expect("memhog was OOM-killed");
    assert!(
        hog.kill_line
            .as_deref()
            .is_some_and(|l| l.contains("(memhog)")),
        "{hog:?}"
    );
    let item = wait_until(
        "the collector to store the guest's OOM",
        Duration::from_secs(120),
        || ooms_of(addr, name).into_iter().next(),
    );
    let stored_at_ms = ballast_testvm::guard_scenario::now_ms();
    let link = item["link"].as_str().expect("link").to_owned();
    let detail = get_json(addr, &link).expect("the OOM's detail");
    let correlation = detail["correlation_detail"].clone();
    let took = &correlation["host_took"];
    assert_eq!(took["verdict"], "host_took_memory", "{correlation:#}");
    assert!(
        took["mechanisms"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m == "virtio_mem")),
        "{took:#}"
    );
    let unplugged = took["unplugged_kib"].as_u64().unwrap_or(0);
    assert!(
        ((DEVICE_MIB - 16) * MIB..=DEVICE_MIB * MIB).contains(&unplugged),
        "the whole device counted as taken: {took:#}"
    );
    assert_eq!(took["would_have_survived"], true, "{took:#}");
    let lowered = took["requested_lowered_at_ms"].as_i64().expect("when");
    let requested = i64::try_from(resize.requested_at_ms).expect("ms");
    let killed = i64::try_from(killed_at_ms).expect("ms");
    assert!(
        (requested - 1_000..=killed).contains(&lowered),
        "the request went down at {requested}, the kill at {killed}: {took:#}"
    );
    // `verdict` keeps its balloon-only meaning: the balloon held nothing here.
    assert_ne!(correlation["verdict"], "balloon", "{correlation:#}");
    assert_eq!(
        item["correlation"]["host_took"]["verdict"],
        "host_took_memory"
    );
    // The resize events reached the collector too.
    let path = vm_path(&item);
    let requests = wait_until(
        "the collector to list the request",
        Duration::from_secs(60),
        || {
            get_json(
                addr,
                &format!("/api/v1/vms/{path}/memory-devices?phase=requested"),
            )?["items"]
                .as_array()
                .filter(|items| !items.is_empty())
                .cloned()
        },
    );
    assert!(
        requests
            .iter()
            .any(|e| e["device"] == VIRTIO_MEM_ID && e["requested_kib"] == 0),
        "{requests:#?}"
    );
    UnplugOom {
        resize,
        hog,
        killed_at_ms,
        stored_at_ms,
        item,
        correlation,
    }
}

/// (b) The counterfactual: the blocks back, the same hog holds, and the collector gets
/// no second OOM.
pub(crate) fn blocks_back_the_hog_holds<G: VirtioMemGuest>(
    guest: &G,
    name: &str,
    addr: SocketAddr,
) {
    let back = vm::blocks_back_then_hog(guest, VIRTIO_MEM_ID, HOG_MIB, Duration::from_secs(6))
        .expect("blocks back then hog");
    assert_eq!(back.resize.settled.device().plugged_kib, DEVICE_MIB * MIB);
    assert!(back.hog.survived(), "the hog held without a kill: {back:?}");
    // The scenario, not a wait: time for a second OOM to reach the collector, were there one.
    std::thread::sleep(5 * POLL);
    assert_eq!(ooms_of(addr, name).len(), 1);
}

#[test]
fn libvirt_unplug_oom_is_laid_at_the_hosts_door_and_with_the_blocks_back_the_hog_survives() {
    let Some(lab) = lab_or_skip(
        "libvirt_unplug_oom_is_laid_at_the_hosts_door_and_with_the_blocks_back_the_hog_survives",
    ) else {
        return;
    };
    const HOST: &str = "virtio-mem-e2e-libvirt";
    let root = std::env::temp_dir().join(format!("ballast-vmem-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let collector = start_collector(&root.join("collector"), HOST, "storage:\n  type: sqlite\n");
    let agent_dir = root.join("agent");
    let _agent = start_agent(&agent_dir, HOST, &collector);
    let guest = lab
        .boot(GuestSpec {
            memory_mib: BOOT_MIB,
            current_mib: BOOT_MIB,
            virtio_mem: Some(device_spec()),
            ..GuestSpec::default()
        })
        .expect("boot the virtio-mem guest");
    guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
    wait_plugged_at_boot(&guest);
    wait_until(
        "the agent to sample the guest's virtio-mem device",
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(agent_dir.join("status.json"))
                .ok()
                .filter(|status| status.contains(guest.name()) && status.contains(VIRTIO_MEM_ID))
        },
    );

    unplug_then_oom(&guest, guest.name(), collector.addr, |item| {
        format!("{HOST}/{}", item["vm"]["uuid"].as_str().unwrap_or_default())
    });
    blocks_back_the_hog_holds(&guest, guest.name(), collector.addr);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn proxmox_stuck_unplug_is_flagged_within_two_polls() {
    let Some(lab) = lab_or_skip("proxmox_stuck_unplug_is_flagged_within_two_polls") else {
        return;
    };
    // AgentRun's host id.
    const HOST: &str = "scenario";
    const VMID: u32 = 141;
    let root = std::env::temp_dir().join(format!("bvme{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("scratch dir");
    let collector = start_collector(&root.join("collector"), HOST, "storage:\n  type: sqlite\n");
    let guest = lab
        .boot_proxmox(ProxmoxSpec {
            vmid: VMID,
            memory_mib: BOOT_MIB,
            balloon_min_mib: BOOT_MIB,
            kernel: GuestKernel::Backports612,
            // Onlined to the kernel zone: the guest's own kernel allocations land in
            // the device's blocks, and an unplug of all of it stops short for good,
            // with no hog and so no OOM risk under load (a hog holding the memory
            // instead was OOM-killed during the attempt on a loaded CI host).
            virtio_mem: Some(VirtioMemSpec {
                online: VirtioMemOnline::Kernel,
                ..device_spec()
            }),
            ..ProxmoxSpec::default()
        })
        .expect("boot the Proxmox-style virtio-mem guest");
    guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
    wait_plugged_at_boot(&guest);
    let agent_dir = root.join("a");
    let _agent = agent_run_shipping_to(&collector, &agent_dir, &guest);
    let devices = format!("/api/v1/vms/{HOST}/{VMID}/memory-devices");
    wait_until(
        "the agent to sample the guest's virtio-mem device",
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(agent_dir.join("state/status.json"))
                .ok()
                .filter(|status| status.contains(VIRTIO_MEM_ID))
        },
    );

    // (c) The host asks for the whole device back; plugged stops above the request.
    let kills_before = vm::kill_count(&guest);
    let resize = vm::resize(&guest, VIRTIO_MEM_ID, 0, vm::STALL_AFTER).expect("unplug");
    let Settled::Stalled {
        since_ms,
        ref device,
        ..
    } = resize.settled
    else {
        panic!("the unplug stalled: {resize:?}");
    };
    assert!(
        device.plugged_kib > 0,
        "plugged stopped above 0: {resize:?}"
    );
    assert_eq!(
        vm::kill_count(&guest),
        kills_before,
        "a failed unplug kills nothing"
    );
    let flagged = wait_until(
        "the collector to list the stuck unplug",
        Duration::from_secs(60),
        || {
            get_json(collector.addr, &format!("{devices}?phase=stuck"))?["items"]
                .as_array()?
                .first()
                .cloned()
        },
    );
    assert_eq!(flagged["device"], VIRTIO_MEM_ID, "{flagged:#}");
    assert_eq!(flagged["requested_kib"], 0, "{flagged:#}");
    assert_eq!(flagged["plugged_kib"], device.plugged_kib, "{flagged:#}");
    let at_ms = flagged["at_ms"].as_u64().expect("at_ms");
    // Within two polls of the stall, plus the part of a poll before the stall showed
    // and a second for the 1 Hz size-change notification.
    let bound = since_ms + 3 * 2_000 + 1_000;
    assert!(
        at_ms <= bound,
        "the stall began at {since_ms}, flagged at {at_ms} ({} ms later): {flagged:#}",
        at_ms.saturating_sub(since_ms)
    );

    // (d) The way back: the host gives up and asks for what is plugged. The request is
    // met at once (the guest's driver does nothing), and the agent says the stuck
    // request `converged`. (Waiting for the guest's own retry would take up to 50 s.)
    guest
        .set_virtio_mem_requested_kib(VIRTIO_MEM_ID, device.plugged_kib)
        .expect("raise the request to what is plugged");
    let raised_ms = ballast_testvm::guard_scenario::now_ms();
    let converged = wait_until(
        "the collector to list the convergence",
        Duration::from_secs(60),
        || {
            get_json(collector.addr, &format!("{devices}?phase=converged"))?["items"]
                .as_array()?
                .first()
                .cloned()
        },
    );
    assert_eq!(converged["device"], VIRTIO_MEM_ID, "{converged:#}");
    assert_eq!(
        converged["requested_kib"], device.plugged_kib,
        "{converged:#}"
    );
    assert_eq!(
        converged["plugged_kib"], device.plugged_kib,
        "{converged:#}"
    );
    let converged_ms = converged["at_ms"].as_u64().expect("at_ms");
    eprintln!(
        "request raised to plugged -> converged: {} ms",
        converged_ms.saturating_sub(raised_ms)
    );
    // A poll after the request went up (within two polls and a second of slack: a
    // poll under way when it went up may have read it, or not).
    assert!(
        converged_ms >= raised_ms.saturating_sub(2_000)
            && converged_ms <= raised_ms + 2 * 2_000 + 1_000,
        "raised at {raised_ms}, converged at {converged_ms}: {converged:#}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
