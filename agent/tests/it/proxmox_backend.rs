//! The Proxmox VE backend against real QEMU guests started the Proxmox way
//! (ballast-testvm `boot_proxmox`: qemu-system-x86_64 without libvirt, the
//! `<vmid>.qmp/.qga/.serial0/.pid` sockets and a `<vmid>.conf`).
//!
//! Two guests, reused across the steps of one test:
//! * A (vmid 100): the harness leaves its serial socket alone; the backend reads it
//!   (opted in). Balloon stats through QMP, inflation seen by the next poll, a
//!   balloon OOM captured through the serial socket AND through the guest agent
//!   with verdict `balloon`, sockets never held, the serial reader giving way to
//!   a `qm terminal` stand-in;
//! * B (vmid 101): a second client holds its QMP socket; the poll skips B within
//!   one call timeout while A is still sampled.
//!
//! Both guests' files are linked into one test root, the node's `/var/run/qemu-server`
//! and `/etc/pve/qemu-server`. Outside CI the test skips loudly when the machine
//! cannot run guests.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_agent::capture::{Capture, CaptureEvent, CaptureSettings, CapturedOom, FetchReason};
use ballast_agent::config::ProxmoxConfig;
use ballast_agent::hypervisor::proxmox::serial::socket_clients;
use ballast_agent::hypervisor::proxmox::{ProxmoxHypervisor, ProxmoxSettings};
use ballast_agent::hypervisor::{BalloonSample, DomainId, DomainState, Hypervisor};
use ballast_oom::{HostBalloon, Verdict};
use ballast_testenv::wait_until;
use ballast_testvm::{lab_or_skip, ProxmoxGuest, ProxmoxSpec, KILL_LINE};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const OOM_TIMEOUT: Duration = Duration::from_secs(90);
const MIB: u64 = 1024;

/// The node's directories, with the guests' files linked in; removed at the end.
pub(crate) struct TestRoot {
    dir: tempfile::TempDir,
}

impl TestRoot {
    pub(crate) fn new(guests: &[&ProxmoxGuest]) -> TestRoot {
        // Short (`/tmp/bpveXXXXXX`): socket paths through the links must stay valid unix
        // paths. One per test: the tests of this binary run in parallel threads.
        let dir = tempfile::Builder::new()
            .prefix("bpve")
            .tempdir()
            .expect("test root");
        let root = TestRoot { dir };
        std::fs::create_dir_all(root.run_dir()).expect("run dir");
        std::fs::create_dir_all(root.config_dir()).expect("config dir");
        for guest in guests {
            let vmid = guest.vmid();
            for (target, name) in [
                (guest.qmp_socket(), format!("{vmid}.qmp")),
                (guest.qga_socket(), format!("{vmid}.qga")),
                (guest.serial_socket(), format!("{vmid}.serial0")),
                (guest.pidfile(), format!("{vmid}.pid")),
            ] {
                std::os::unix::fs::symlink(target, root.run_dir().join(name)).expect("link");
            }
            std::os::unix::fs::symlink(
                guest.conf_path(),
                root.config_dir().join(format!("{vmid}.conf")),
            )
            .expect("link conf");
        }
        root
    }

    pub(crate) fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub(crate) fn config_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// Waits until QEMU has closed its end of every connection to `path`. The
/// backend closes its client when a call returns; QEMU notices the hang-up in its
/// main loop, which a TCG guest busy in an OOM can delay by a moment (CI saw one
/// accepted socket still listed right after a guest-agent call). A socket the
/// backend kept open stays listed and fails this after the timeout.
fn wait_until_released(path: &Path, what: &str) {
    let started = Instant::now();
    wait_until(
        &format!("QEMU to close the {what} connection"),
        Duration::from_secs(5),
        || (attached(path) == 0).then_some(()),
    );
    eprintln!("{what} socket released after {:?}", started.elapsed());
}

fn sample_of(samples: &[(DomainId, BalloonSample)], uuid: &str) -> Option<BalloonSample> {
    samples
        .iter()
        .find(|(id, _)| id.uuid == uuid)
        .map(|(_, sample)| sample.clone())
}

/// Clients attached to (accepted by) the socket at `path` right now.
fn attached(path: &Path) -> usize {
    let text = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    socket_clients(&text, path).attached
}

fn ooms(events: Vec<CaptureEvent>) -> Vec<CapturedOom> {
    events
        .into_iter()
        .filter_map(|event| match event {
            CaptureEvent::Oom(oom) | CaptureEvent::OomCompleted(oom) => Some(oom),
            CaptureEvent::NearMiss(_) => None,
        })
        .collect()
}

#[test]
fn proxmox_backend_against_real_qemu() {
    let Some(lab) = lab_or_skip("proxmox_backend_against_real_qemu") else {
        return;
    };
    let test_started = Instant::now();
    let spec_a = ProxmoxSpec {
        vmid: 100,
        capture_serial: false,
        ..ProxmoxSpec::default()
    };
    let spec_b = ProxmoxSpec {
        vmid: 101,
        ..ProxmoxSpec::default()
    };
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| lab.boot_proxmox(spec_a).expect("boot A"));
        let b = scope.spawn(|| lab.boot_proxmox(spec_b).expect("boot B"));
        (a.join().expect("boot A"), b.join().expect("boot B"))
    });
    let root = TestRoot::new(&[&a, &b]);
    let settings = ProxmoxSettings {
        read_serial_vmids: vec![100],
        ..ProxmoxSettings::from_config(
            &ProxmoxConfig {
                run_dir: root.run_dir(),
                config_dir: root.config_dir(),
                read_serial_vmids: Vec::new(),
            },
            &root.state_dir(),
        )
    };
    let call_timeout = settings.call_timeout;
    let backend = ProxmoxHypervisor::new(settings);
    // The first poll starts A's serial reader, before the guest prints much.
    backend.balloon_samples().expect("first poll");
    a.wait_ready(BOOT_TIMEOUT).expect("A ready");
    b.wait_ready(BOOT_TIMEOUT).expect("B ready");
    eprintln!("booted in {:?}", test_started.elapsed());

    // Domains: both running, named from the conf, the vmid as id (no smbios1 uuid).
    let domains = backend.domains().expect("domains");
    let a_info = domains
        .iter()
        .find(|info| info.id.uuid == "100")
        .expect("A listed");
    assert_eq!(a_info.id.name, a.name());
    assert_eq!(a_info.state, DomainState::Running);
    assert!(domains.iter().any(|info| info.id.uuid == "101"));
    let a_id = a_info.id.clone();

    // Balloon stats through QMP: actual, maximum, MemAvailable, RSS, in KiB.
    let sample = wait_until("A's guest stats", Duration::from_secs(30), || {
        let samples = backend.balloon_samples().expect("poll");
        sample_of(&samples, "100").filter(|sample| sample.usable_kib.is_some())
    });
    let poll = backend.last_poll();
    eprintln!(
        "poll of {} VMs: {:?} ({:?} per VM); sample {sample:?}",
        poll.n_vms,
        poll.elapsed,
        poll.elapsed / u32::try_from(poll.n_vms.max(1)).unwrap_or(1)
    );
    assert_eq!(poll.n_skipped, 0, "{poll:?}");
    assert_eq!(sample.actual_kib, Some(512 * MIB));
    assert_eq!(sample.maximum_kib, Some(512 * MIB));
    let available = sample.available_kib.expect("MemTotal");
    let usable = sample.usable_kib.expect("MemAvailable");
    assert!(usable < available && available <= 512 * MIB, "{sample:?}");
    assert!(sample.rss_kib.is_some_and(|rss| rss > 0), "{sample:?}");
    assert!(sample.last_update_epoch_secs.is_some(), "{sample:?}");

    // Sockets are never held: after the poll nobody is attached to A's QMP, and
    // another client (Proxmox's own `qm`) gets the monitor's greeting.
    wait_until_released(&a.qmp_socket(), "QMP");
    a.qmp().expect("QMP free right after the poll");

    // The config, with the live balloon device's properties.
    let config = backend.domain_config(&a_id).expect("A's config");
    assert!(
        config.balloon_present && config.guest_agent_channel,
        "{config:?}"
    );
    assert_eq!(config.memory_kib, Some(512 * MIB));
    assert_eq!(config.stats_period_secs, Some(2));
    assert_eq!(config.deflate_on_oom, Some(false));
    let serial_log = config.serial_log_path.clone().expect("A's serial is read");
    assert_eq!(
        serial_log,
        root.state_dir().join("proxmox-serial/100.serial0.log")
    );
    let b_id = DomainId {
        uuid: "101".to_owned(),
        name: b.name().to_owned(),
    };
    let b_config = backend.domain_config(&b_id).expect("B's config");
    assert_eq!(b_config.serial_log_path, None, "B is not opted in");

    // A second client holds B's QMP socket: the poll skips B within one call
    // timeout; A is still sampled and B still listed (not gone).
    let mut holder = UnixStream::connect(b.qmp_socket()).expect("hold B's QMP");
    let mut greeting = [0u8; 16];
    holder
        .read_exact(&mut greeting)
        .expect("greeting to the holder");
    let started = Instant::now();
    let samples = backend.balloon_samples().expect("poll with B busy");
    let elapsed = started.elapsed();
    eprintln!("poll with B's QMP held: {elapsed:?}");
    // B costs one call timeout, not more (a second attempt or a wait without end
    // would reach twice that); the slack is A's calls on a loaded 2-core machine.
    assert!(elapsed < call_timeout * 2, "{elapsed:?}");
    assert!(sample_of(&samples, "100").is_some_and(|s| s.usable_kib.is_some()));
    let b_sample = sample_of(&samples, "101").expect("B still listed");
    assert_eq!(b_sample.actual_kib, None);
    assert_eq!(b_sample.maximum_kib, Some(512 * MIB));
    assert_eq!(backend.last_poll().n_skipped, 1);
    drop(holder);
    let samples = backend
        .balloon_samples()
        .expect("poll after the holder left");
    assert!(sample_of(&samples, "101").is_some_and(|s| s.actual_kib.is_some()));

    // Inflation through QMP `balloon` shows in the next samples.
    a.qmp()
        .expect("QMP")
        .balloon_bytes(200 * 1024 * 1024)
        .expect("balloon 200 MiB");
    let inflated = wait_until("A's balloon at 200 MiB", Duration::from_secs(30), || {
        let samples = backend.balloon_samples().expect("poll");
        sample_of(&samples, "100").filter(|s| s.actual_kib.is_some_and(|kib| kib <= 201 * MIB))
    });
    eprintln!("inflated: actual {:?} KiB", inflated.actual_kib);

    // A balloon OOM, captured from the serial socket the backend reads.
    let state = root.state_dir().join("capture-serial");
    let mut capture = Capture::new(CaptureSettings::new(&state));
    a.start_hog(16, 100).expect("memhog");
    let hog_started = Instant::now();
    let mut from_serial = Vec::new();
    while from_serial.is_empty() {
        assert!(
            hog_started.elapsed() < OOM_TIMEOUT,
            "no OOM on A's serial log"
        );
        let poll = capture
            .poll_serial(&a_id, &serial_log, Instant::now())
            .expect("poll serial");
        from_serial.extend(ooms(poll.events));
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "OOM on serial {:?} after the hog started",
        hog_started.elapsed()
    );
    let samples = backend.balloon_samples().expect("poll after the OOM");
    let at_oom = sample_of(&samples, "100").expect("A after the OOM");
    let host = HostBalloon {
        maximum_kb: at_oom.maximum_kib,
        actual_kb: at_oom.actual_kib,
        deflate_on_oom: config.deflate_on_oom,
    };
    let serial_oom = &from_serial[0];
    assert!(serial_oom.raw.contains(KILL_LINE), "{}", serial_oom.raw);
    let analysis = ballast_oom::analyze(&serial_oom.report, Some(&host));
    assert_eq!(analysis.verdict, Verdict::Balloon, "{analysis:#?}");

    // The same OOM through the guest agent: /dev/kmsg through the file API over
    // `<vmid>.qga`, one conversation per call (guest-exec is not allowed).
    let mut agent_capture =
        Capture::new(CaptureSettings::new(root.state_dir().join("capture-agent")));
    let exec_started = Instant::now();
    let from_agent = ooms(
        agent_capture
            .fetch_guest_agent(&backend, &a_id, FetchReason::OomKillCounter, Instant::now())
            .expect("guest agent fetch"),
    );
    eprintln!("guest-agent /dev/kmsg fetch: {:?}", exec_started.elapsed());
    assert_eq!(from_agent.len(), 1, "{from_agent:#?}");
    assert_eq!(from_agent[0].dedupe_key, serial_oom.dedupe_key);
    let analysis = ballast_oom::analyze(&from_agent[0].report, Some(&host));
    assert_eq!(analysis.verdict, Verdict::Balloon, "{analysis:#?}");
    wait_until_released(&a.qga_socket(), "QGA");

    // The serial reader gives way to `qm terminal` (a client waiting in the backlog).
    assert_eq!(
        attached(&a.serial_socket()),
        1,
        "the backend holds A's serial"
    );
    let terminal = UnixStream::connect(a.serial_socket()).expect("qm terminal stand-in");
    let yielded = Instant::now();
    wait_until(
        "the serial reader to let go",
        Duration::from_secs(5),
        || {
            let text = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
            let clients = socket_clients(&text, &a.serial_socket());
            (clients.waiting == 0 && clients.attached == 1).then_some(())
        },
    );
    eprintln!("serial reader let go after {:?}", yielded.elapsed());
    drop(terminal);
    eprintln!("test took {:?}", test_started.elapsed());
}
