//! The libvirt backend against real libvirt: `test:///default` (no guests, fast) and
//! three real guests from the harness (ballast-testvm), reused across assertions:
//!
//! * A: Linux 6.1, autodeflate off: stats, domain XML, guest-exec, setmem + event, the
//!   guard's `set_balloon_target`, destroy;
//! * B: Linux 6.1, autodeflate on: XML, events after a libvirtd restart;
//! * C: Linux 6.12: the balloon's `stat-oom-kills` through the QEMU monitor.
//!
//! Outside CI the real-guest test skips loudly when the machine cannot run guests.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]
#![cfg(feature = "libvirt")]

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ballast_agent::hypervisor::libvirt::{LibvirtHypervisor, LibvirtSettings};
use ballast_agent::hypervisor::{
    BalloonSample, DomainEvent, DomainId, DomainState, Hypervisor, HypervisorError,
};
use ballast_testenv::wait_until;
use ballast_testvm::{lab_or_skip, scenario, GuestKernel, GuestSpec};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const MIB: u64 = 1024;

fn backend(uri: &str) -> LibvirtHypervisor {
    LibvirtHypervisor::new(LibvirtSettings {
        uri: uri.to_owned(),
        ..LibvirtSettings::default()
    })
}

/// Every event received so far, plus a way to wait for one.
struct Events {
    receiver: Receiver<DomainEvent>,
    seen: Vec<DomainEvent>,
}

impl Events {
    /// Waits for an event (already seen or new) that `matches`.
    fn wait(&mut self, what: &str, timeout: Duration, matches: impl Fn(&DomainEvent) -> bool) {
        if self.seen.iter().any(&matches) {
            return;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.receiver.recv_timeout(remaining) {
                Ok(event) => {
                    let found = matches(&event);
                    self.seen.push(event);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("no {what} event within {timeout:?}; seen: {:#?}", self.seen)
                }
            }
        }
    }

    fn forget(&mut self) {
        while self.receiver.try_recv().is_ok() {}
        self.seen.clear();
    }
}

fn sample_of<'a>(
    samples: &'a [(DomainId, BalloonSample)],
    id: &DomainId,
) -> Option<&'a BalloonSample> {
    samples
        .iter()
        .find(|(sample_id, _)| sample_id == id)
        .map(|(_, sample)| sample)
}

#[test]
fn test_driver_without_guests() {
    let hypervisor = backend("test:///default");
    hypervisor.connect().expect("connect to test:///default");
    let domains = hypervisor.domains().expect("domains");
    let test = domains
        .iter()
        .find(|domain| domain.id.name == "test")
        .expect("the test driver's domain");
    assert_eq!(test.state, DomainState::Running);
    assert_eq!(test.id.uuid.len(), 36, "{:?}", test.id);
    // The test driver returns a record without balloon params: all None, not 0.
    let samples = hypervisor.balloon_samples().expect("balloon samples");
    let sample = sample_of(&samples, &test.id).expect("a record for the test domain");
    assert_eq!(sample.last_update_epoch_secs, None);
    assert_eq!(sample.usable_kib, None);
    let config = hypervisor.domain_config(&test.id).expect("domain config");
    assert!(config.memory_kib.is_some_and(|kib| kib > 0), "{config:?}");
    let unknown = DomainId {
        uuid: "00000000-0000-0000-0000-000000000001".to_owned(),
        name: "nope".to_owned(),
    };
    assert!(matches!(
        hypervisor.domain_config(&unknown),
        Err(HypervisorError::Unavailable { .. })
    ));
    // The guard's live balloon target (virDomainSetMemoryFlags(AFFECT_LIVE)).
    let maximum = config.memory_kib.expect("maximum");
    hypervisor
        .set_balloon_target(&test.id, maximum / 2)
        .expect("set the balloon target");
    let live = hypervisor.domain_config(&test.id).expect("domain config");
    assert_eq!(live.current_memory_kib, Some(maximum / 2), "{live:?}");
    // Beyond the maximum: libvirt refuses, and the error names the domain.
    let refused = hypervisor
        .set_balloon_target(&test.id, maximum * 2)
        .expect_err("above the maximum");
    assert!(refused.to_string().contains("test"), "{refused}");
    // No QEMU behind the test driver: an error, not a panic.
    assert!(hypervisor.guest_counters(&test.id).is_err());
    assert_eq!(hypervisor.qemu_pid(&test.id), None);
    let unreachable = backend("qemu+unix:///system?socket=/nonexistent/libvirt-sock");
    assert!(matches!(
        unreachable.domains(),
        Err(HypervisorError::Connect { .. })
    ));
}

/// A domain with a virtio-mem device in the test driver (no guest: its `<current>` is 0).
const VIRTIO_MEM_DOMAIN: &str = "<domain type='test'><name>ballast-vmem</name>\
    <maxMemory slots='16' unit='KiB'>9437184</maxMemory><memory unit='KiB'>5242880</memory>\
    <currentMemory unit='KiB'>1048576</currentMemory><vcpu>2</vcpu>\
    <os><type arch='x86_64' machine='pc'>hvm</type></os>\
    <cpu><numa><cell id='0' cpus='0-1' memory='1048576' unit='KiB'/></numa></cpu>\
    <devices><memory model='virtio-mem'><target><size unit='GiB'>4</size><node>0</node>\
    <block unit='KiB'>2048</block><requested unit='MiB'>1024</requested></target></memory>\
    </devices></domain>";

#[test]
fn test_driver_virtio_mem_domain_is_read_at_discovery_and_every_poll() {
    let hypervisor = backend("test:///default");
    // The events, the memory-device-size-change one with them, register on libvirt 9.
    let (sender, _receiver) = std::sync::mpsc::channel();
    hypervisor.subscribe(sender).expect("subscribe");
    // test:///default is one in-memory driver per process: define the domain there.
    let connect = virt::connect::Connect::open(Some("test:///default")).expect("open");
    let domain = connect
        .define_domain_xml(VIRTIO_MEM_DOMAIN)
        .expect("define a virtio-mem domain");
    domain.create().expect("start it");
    let id = hypervisor
        .domains()
        .expect("domains")
        .into_iter()
        .find(|d| d.id.name == "ballast-vmem")
        .expect("listed")
        .id;
    let samples = hypervisor.balloon_samples().expect("poll");
    assert!(
        sample_of(&samples, &id)
            .expect("sampled")
            .virtio_mem
            .is_empty(),
        "not read before discovery"
    );
    let config = hypervisor.domain_config(&id).expect("domain config");
    assert_eq!(config.virtio_mem.len(), 1, "{config:?}");
    let device = &config.virtio_mem[0];
    assert_eq!(
        device.id, "virtiomem0",
        "no alias in the test driver: by index"
    );
    assert_eq!(device.max_size_kib, Some(4 * 1024 * 1024));
    assert_eq!(device.requested_kib, Some(1024 * 1024));
    assert_eq!(device.block_size_kib, Some(2048));
    assert_eq!(device.node, Some(0));
    assert_eq!(device.plugged_kib, Some(0), "the live XML's <current>");
    let samples = hypervisor.balloon_samples().expect("poll");
    assert_eq!(
        sample_of(&samples, &id).expect("sampled").virtio_mem,
        config.virtio_mem
    );
    domain.destroy().expect("destroy");
    domain.undefine().expect("undefine");
}

#[test]
fn real_guests_stats_config_exec_events_counters_and_restart() {
    let test_start = Instant::now();
    let Some(lab) = lab_or_skip("real_guests_stats_config_exec_events_counters_and_restart") else {
        return;
    };
    // It restarts libvirtd: no other test's libvirt guest may exist meanwhile.
    let exclusive = lab
        .exclusive_libvirtd()
        .expect("the lab's libvirtd to this test alone");
    let hypervisor = backend(&lab.settings().libvirt_uri);
    let (sender, receiver) = std::sync::mpsc::channel();
    hypervisor.subscribe(sender).expect("subscribe");
    let mut events = Events {
        receiver,
        seen: Vec::new(),
    };

    let guests = lab
        .boot_many(vec![
            GuestSpec::default(),
            GuestSpec {
                autodeflate: true,
                ..GuestSpec::default()
            },
            GuestSpec {
                kernel: GuestKernel::Backports612,
                ..GuestSpec::default()
            },
        ])
        .expect("boot guests");
    for guest in &guests {
        guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
    }
    let (guest_a, guest_b, guest_c) = (&guests[0], &guests[1], &guests[2]);
    eprintln!("3 guests ready after {:?}", test_start.elapsed());

    let domains = hypervisor.domains().expect("domains");
    let id_of = |name: &str| {
        let domain = domains
            .iter()
            .find(|domain| domain.id.name == name)
            .unwrap_or_else(|| panic!("{name} not in {domains:?}"));
        assert_eq!(domain.state, DomainState::Running, "{domain:?}");
        domain.id.clone()
    };
    let (id_a, id_b, id_c) = (
        id_of(guest_a.name()),
        id_of(guest_b.name()),
        id_of(guest_c.name()),
    );
    let ids = [&id_a, &id_b, &id_c];

    // Each guest's QEMU process (host OOM attribution): three live, distinct QEMUs.
    let pids: Vec<u32> = ids
        .iter()
        .map(|id| {
            hypervisor
                .qemu_pid(id)
                .unwrap_or_else(|| panic!("no QEMU pid for {id:?}"))
        })
        .collect();
    for pid in &pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
        assert!(comm.starts_with("qemu-system"), "pid {pid}: {comm}");
    }
    assert!(
        pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2],
        "{pids:?}"
    );

    // Lifecycle and agent events of the boots.
    events.wait("lifecycle started (A)", Duration::from_secs(5), |event| {
        matches!(event, DomainEvent::Lifecycle { id, state: DomainState::Running, .. } if *id == id_a)
    });
    events.wait("agent connected (C)", Duration::from_secs(10), |event| {
        matches!(event, DomainEvent::AgentLifecycle { id, connected: true, .. } if *id == id_c)
    });

    // ONE bulk poll carries all three guests, with guest-reported stats.
    let first = wait_until(
        "guest stats of all three guests",
        Duration::from_secs(30),
        || {
            let samples = hypervisor.balloon_samples().expect("balloon samples");
            ids.iter()
                .all(|id| {
                    sample_of(&samples, id).is_some_and(|s| s.last_update_epoch_secs.is_some())
                })
                .then_some(samples)
        },
    );
    for id in ids {
        let sample = sample_of(&first, id).expect("sample");
        assert_eq!(sample.actual_kib, Some(512 * MIB), "{id:?}: {sample:?}");
        assert_eq!(sample.maximum_kib, Some(512 * MIB), "{id:?}: {sample:?}");
        assert!(
            sample.usable_kib.is_some_and(|kib| kib > 100 * MIB),
            "{sample:?}"
        );
        assert!(
            sample.available_kib.is_some_and(|kib| kib > 300 * MIB),
            "{sample:?}"
        );
        assert!(sample.rss_kib.is_some_and(|kib| kib > 0), "{sample:?}");
    }
    let polls = 20;
    let poll_start = Instant::now();
    for _ in 0..polls {
        hypervisor.balloon_samples().expect("balloon samples");
    }
    eprintln!(
        "bulk poll of {} active domains: {:?} per call",
        first.len(),
        poll_start.elapsed() / polls
    );
    let last_update_a = sample_of(&first, &id_a).and_then(|s| s.last_update_epoch_secs);
    wait_until(
        "last-update of A to advance",
        Duration::from_secs(15),
        || {
            let samples = hypervisor.balloon_samples().expect("balloon samples");
            let now = sample_of(&samples, &id_a).and_then(|s| s.last_update_epoch_secs);
            (now > last_update_a).then_some(())
        },
    );

    // Domain XML of harness domains.
    let config_a = hypervisor.domain_config(&id_a).expect("domain config A");
    assert!(config_a.balloon_present);
    assert_eq!(config_a.stats_period_secs, Some(2));
    assert_eq!(config_a.deflate_on_oom, Some(false));
    assert_eq!(
        config_a.serial_log_path.as_deref(),
        Some(guest_a.serial_log_path())
    );
    assert!(config_a.guest_agent_channel);
    assert_eq!(config_a.memory_kib, Some(512 * MIB));
    assert_eq!(config_a.current_memory_kib, Some(512 * MIB));
    assert!(
        config_a
            .kernel_cmdline
            .as_deref()
            .is_some_and(|line| line.contains("console=ttyS0")),
        "{config_a:?}"
    );
    let config_b = hypervisor.domain_config(&id_b).expect("domain config B");
    assert_eq!(config_b.deflate_on_oom, Some(true));

    // The live stats period.
    hypervisor
        .set_memory_stats_period(&id_b, 1)
        .expect("set stats period");
    let config_b = hypervisor.domain_config(&id_b).expect("domain config B");
    assert_eq!(config_b.stats_period_secs, Some(1));

    // guest-exec: the guest's kernel log, whole and capped.
    let dmesg = hypervisor
        .guest_exec(&id_a, "/bin/dmesg", &[], Duration::from_secs(30), 1 << 20)
        .expect("guest-exec dmesg");
    assert_eq!(dmesg.exit_code, Some(0));
    assert!(!dmesg.truncated);
    let text = String::from_utf8_lossy(&dmesg.stdout);
    assert!(text.contains("Linux version 6.1"), "{text}");
    let capped = hypervisor
        .guest_exec(&id_a, "/bin/dmesg", &[], Duration::from_secs(30), 100)
        .expect("guest-exec dmesg capped");
    assert_eq!(capped.stdout.len(), 100);
    assert!(capped.truncated);
    assert_eq!(capped.stdout, dmesg.stdout[..100]);
    // 512 KiB of output, 1000 bytes kept: cut before decoding, not an error.
    let big = hypervisor
        .guest_exec(
            &id_a,
            "/bin/sh",
            &["-c", "dd if=/dev/zero bs=1024 count=512 2>/dev/null"],
            Duration::from_secs(30),
            1000,
        )
        .expect("guest-exec with large output");
    assert_eq!(big.exit_code, Some(0));
    assert!(big.truncated);
    assert_eq!(big.stdout, vec![0_u8; 1000]);
    let slow = hypervisor.guest_exec(&id_a, "/bin/sleep", &["5"], Duration::from_millis(500), 100);
    assert!(matches!(slow, Err(HypervisorError::Timeout(_))), "{slow:?}");

    // setmem: the next samples show the inflation, and an event says so.
    events.forget();
    guest_a.setmem_mib(200).expect("setmem");
    wait_until(
        "A's balloon at 200 MiB in a sample",
        Duration::from_secs(20),
        || {
            let samples = hypervisor.balloon_samples().expect("balloon samples");
            (sample_of(&samples, &id_a)?.actual_kib == Some(200 * MIB)).then_some(())
        },
    );
    events.wait(
        "balloon change to 200 MiB (A)",
        Duration::from_secs(5),
        |event| {
            matches!(event, DomainEvent::BalloonChange { id, actual_kib, .. }
            if *id == id_a && actual_kib.abs_diff(200 * MIB) <= MIB)
        },
    );

    // The guard's call in `act` (issue 19): the balloon's target raised live gives the
    // guest its memory back (virDomainSetMemoryFlags, VIR_DOMAIN_AFFECT_LIVE).
    hypervisor
        .set_balloon_target(&id_a, 320 * MIB)
        .expect("set_balloon_target");
    wait_until(
        "A's balloon deflated to 320 MiB by set_balloon_target",
        Duration::from_secs(20),
        || {
            let samples = hypervisor.balloon_samples().expect("balloon samples");
            (sample_of(&samples, &id_a)?.actual_kib == Some(320 * MIB)).then_some(())
        },
    );
    let refused = hypervisor.set_balloon_target(&id_a, 64 * 1024 * MIB);
    assert!(
        refused.is_err(),
        "a target above the maximum must be refused: {refused:?}"
    );

    // 6.12 guest: stat-oom-kills through the monitor rises by one per OOM kill.
    assert_eq!(
        hypervisor.guest_counters(&id_a).expect("counters A"),
        None,
        "6.1 guest"
    );
    let before = wait_until("C's guest counters", Duration::from_secs(20), || {
        hypervisor
            .guest_counters(&id_c)
            .expect("counters C")?
            .oom_kills
    });
    let oom = scenario::inflate_then_grow(guest_c, 200, Duration::from_secs(90)).expect("OOM in C");
    eprintln!("C: OOM kill {:?} after the hog started", oom.hog_to_kill);
    let after = wait_until("C's oom_kills to rise", Duration::from_secs(15), || {
        let kills = hypervisor
            .guest_counters(&id_c)
            .expect("counters C")?
            .oom_kills?;
        (kills > before).then_some(kills)
    });
    assert_eq!(after, before + 1);

    // libvirtd restart: the next calls work again, on a new connection, and events resume.
    let connects_before = hypervisor.n_connects();
    let restart = lab.restart_libvirtd(&exclusive).expect("restart libvirtd");
    eprintln!("libvirtd restarted in {restart:?}");
    let samples = hypervisor
        .balloon_samples()
        .expect("balloon samples after the restart");
    assert!(
        ids.iter().all(|id| sample_of(&samples, id).is_some()),
        "{samples:?}"
    );
    assert!(hypervisor.n_connects() > connects_before);
    hypervisor
        .domain_config(&id_b)
        .expect("domain config after the restart");
    events.forget();
    guest_b.setmem_mib(256).expect("setmem B");
    events.wait(
        "balloon change after the restart (B)",
        Duration::from_secs(15),
        |event| matches!(event, DomainEvent::BalloonChange { id, .. } if *id == id_b),
    );

    // Destroy A: a stop event, and the bulk poll (active domains only) leaves it out.
    guest_a.destroy().expect("destroy A");
    events.wait("lifecycle stopped (A)", Duration::from_secs(10), |event| {
        matches!(event, DomainEvent::Lifecycle { id, state: DomainState::ShutOff, .. } if *id == id_a)
    });
    let samples = hypervisor.balloon_samples().expect("balloon samples");
    assert!(sample_of(&samples, &id_a).is_none(), "{samples:?}");
    assert_eq!(hypervisor.qemu_pid(&id_a), None, "A's QEMU is gone");
    assert!(sample_of(&samples, &id_b).is_some());
    eprintln!("real-guest test took {:?}", test_start.elapsed());
}
