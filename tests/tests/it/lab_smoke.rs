//! Smoke tests of the real-VM harness (ballast-testvm) against real libvirt/QEMU guests.
//!
//! * a libvirt guest: balloon stats through libvirt, inflation, an OOM kill seen on
//!   the serial console and through the guest agent's dmesg;
//! * a Proxmox-style QEMU (no libvirt): the socket layout and the balloon via QMP;
//! * a Linux 6.12 guest: the balloon's `stat-oom-kills` counts the OOM kill;
//! * an autodeflate balloon: emptied silently before the OOM kill;
//! * the lifecycle actions: libvirtd restart, reboot, the hold-then-inflate scenario;
//! * cleanup: a panicking test's guest is removed; the sweeper touches only dead harness resources.
//!
//! Outside CI they skip loudly when the machine cannot run guests; in CI they fail.

#[cfg(test)]
mod smoke {
    use std::time::{Duration, Instant};

    use ballast_testvm::scenario::{hold_then_inflate, inflate_then_grow};
    use ballast_testvm::{
        lab_or_skip, GuestKernel, GuestSpec, ProxmoxSpec, INVOKED_LINE, KILL_LINE,
    };

    const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
    const OOM_TIMEOUT: Duration = Duration::from_secs(90);

    /// The text of a kernel line after its `[ seconds]` stamp.
    fn without_stamp(line: &str) -> &str {
        line.split_once("] ").map_or(line, |(_, rest)| rest).trim()
    }

    #[test]
    fn libvirt_guest_balloon_stats_inflation_and_oom() {
        let Some(lab) = lab_or_skip("libvirt_guest_balloon_stats_inflation_and_oom") else {
            return;
        };
        let guest = lab.boot(GuestSpec::default()).expect("boot guest");
        let ready = guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
        eprintln!(
            "{}: ready after {ready:?} ({:?}, kernel {})",
            guest.name(),
            guest.accel(),
            guest.image().release
        );

        // Balloon stats through libvirt: full size, usable memory, a report time that advances.
        let wait_start = Instant::now();
        let first = loop {
            let stats = guest.domstats_balloon().expect("domstats");
            if stats.get("balloon.last-update").copied().unwrap_or(0) > 0 {
                break stats;
            }
            assert!(
                wait_start.elapsed() < Duration::from_secs(30),
                "no balloon stats report: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(
            first.get("balloon.current"),
            Some(&(512 * 1024)),
            "{first:?}"
        );
        assert_eq!(
            first.get("balloon.maximum"),
            Some(&(512 * 1024)),
            "{first:?}"
        );
        let usable = first["balloon.usable"];
        assert!(
            usable > 100 * 1024 && usable < 512 * 1024,
            "usable {usable} KiB"
        );
        let advanced = loop {
            let stats = guest.domstats_balloon().expect("domstats");
            if stats["balloon.last-update"] > first["balloon.last-update"] {
                break stats;
            }
            assert!(
                wait_start.elapsed() < Duration::from_secs(30),
                "last-update never advanced"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!("balloon stats: {advanced:?}");

        // Inflate to 200 MiB, then let the hog grow into the OOM killer.
        let outcome = inflate_then_grow(&guest, 200, OOM_TIMEOUT).expect("inflate then grow");
        eprintln!("inflate_then_grow: {outcome:?}");
        // The guest reports stats on its period: read the first report sent after the
        // inflation (right after the OOM the last one may still predate it, as a loaded
        // CI machine showed).
        let inflated_at = wait_start.elapsed();
        let inflated = guest.domstats_balloon().expect("domstats");
        let after = loop {
            let stats = guest.domstats_balloon().expect("domstats");
            if stats["balloon.last-update"] > inflated["balloon.last-update"] {
                break stats;
            }
            assert!(
                wait_start.elapsed() < inflated_at + Duration::from_secs(30),
                "last-update never advanced after the inflation: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(after["balloon.current"], 200 * 1024, "{after:?}");
        assert!(
            after["balloon.available"] < 250 * 1024,
            "without autodeflate MemTotal shrinks with the balloon: {after:?}"
        );
        assert!(
            outcome.kill_line.contains("(memhog)"),
            "{}",
            outcome.kill_line
        );

        // The full report is on the serial console and in the guest's dmesg.
        let serial = guest.serial_text();
        let invoked = serial
            .lines()
            .find(|line| line.contains(INVOKED_LINE))
            .expect("`invoked oom-killer` in the serial log");
        assert!(serial.contains("Mem-Info:"), "report body missing");
        assert!(
            serial.contains("pages reserved"),
            "show_mem summary missing"
        );
        let dmesg = guest
            .dmesg_via_agent()
            .expect("dmesg through the guest agent");
        assert!(
            dmesg.contains(without_stamp(invoked)),
            "dmesg lacks {invoked:?}"
        );
        assert!(
            dmesg.contains(without_stamp(&outcome.kill_line)),
            "dmesg lacks the kill line"
        );
    }

    #[test]
    fn proxmox_style_qemu_balloon_via_qmp() {
        let Some(lab) = lab_or_skip("proxmox_style_qemu_balloon_via_qmp") else {
            return;
        };
        let guest = lab
            .boot_proxmox(ProxmoxSpec::default())
            .expect("start QEMU");
        let ready = guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
        eprintln!(
            "{} (vmid {}): ready after {ready:?}",
            guest.name(),
            guest.vmid()
        );

        // The Proxmox layout: <vmid>.qmp/.qga/.serial0/.pid and etc/pve/qemu-server/<vmid>.conf.
        for path in [
            guest.qmp_socket(),
            guest.qga_socket(),
            guest.serial_socket(),
            guest.pidfile(),
        ] {
            assert!(path.exists(), "{} missing", path.display());
            assert!(path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("100.")));
        }
        let conf = std::fs::read_to_string(guest.conf_path()).expect("pve config");
        for line in ["memory: 512", "balloon: 256", "agent: 1", "serial0: socket"] {
            assert!(
                conf.lines().any(|l| l == line),
                "{line:?} missing in\n{conf}"
            );
        }
        assert!(guest.conf_path().ends_with("etc/pve/qemu-server/100.conf"));

        let mut qmp = guest.qmp().expect("QMP connect");
        assert_eq!(qmp.query_balloon_bytes().expect("query-balloon"), 512 << 20);
        let deadline = Instant::now() + Duration::from_secs(30);
        let stats = loop {
            let stats = qmp.guest_stats().expect("qom-get guest-stats");
            if stats.last_update > 0 && stats.get("stat-total-memory").is_some() {
                break stats;
            }
            assert!(Instant::now() < deadline, "no guest stats: {stats:?}");
            std::thread::sleep(Duration::from_millis(250));
        };
        eprintln!("guest-stats: {stats:?}");
        // Linux 6.1 under QEMU 10: the 6.12 counters exist but are "never reported" (u64 -1).
        assert_eq!(stats.stats.get("stat-oom-kills"), Some(&u64::MAX));
        assert_eq!(stats.get("stat-oom-kills"), None);

        // Inflate through QMP and watch the balloon follow (with BALLOON_CHANGE events).
        let inflate_start = Instant::now();
        qmp.balloon_bytes(256 << 20).expect("balloon");
        while qmp.query_balloon_bytes().expect("query-balloon") != 256 << 20 {
            assert!(
                inflate_start.elapsed() < Duration::from_secs(60),
                "balloon never reached 256 MiB"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "QMP balloon 512 -> 256 MiB in {:?}",
            inflate_start.elapsed()
        );
        assert!(
            qmp.events
                .iter()
                .any(|event| event["event"] == "BALLOON_CHANGE"),
            "no BALLOON_CHANGE event: {:?}",
            qmp.events
        );

        // A hog through the <vmid>.qga socket ends in an OOM kill on the serial socket.
        guest.start_hog(16, 100).expect("start hog");
        let kill = guest
            .wait_serial(KILL_LINE, OOM_TIMEOUT)
            .expect("OOM kill on serial0");
        assert!(kill.contains("(memhog)"), "{kill}");
    }

    #[test]
    fn kernel_612_balloon_counts_oom_kills() {
        let Some(lab) = lab_or_skip("kernel_612_balloon_counts_oom_kills") else {
            return;
        };
        let spec = GuestSpec {
            kernel: GuestKernel::Backports612,
            ..GuestSpec::default()
        };
        let guest = lab.boot(spec).expect("boot 6.12 guest");
        let ready = guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");
        eprintln!(
            "{}: ready after {ready:?} (kernel {})",
            guest.name(),
            guest.image().release
        );
        assert!(guest.image().release.starts_with("6.12."));

        let deadline = Instant::now() + Duration::from_secs(30);
        while guest
            .balloon_guest_stats()
            .expect("guest-stats")
            .get("stat-oom-kills")
            != Some(0)
        {
            assert!(
                Instant::now() < deadline,
                "stat-oom-kills never reported as 0"
            );
            std::thread::sleep(Duration::from_millis(250));
        }

        let outcome = inflate_then_grow(&guest, 200, OOM_TIMEOUT).expect("inflate then grow");
        eprintln!("6.12 inflate_then_grow: {outcome:?}");
        let kill_seen = Instant::now();
        let stats = loop {
            let stats = guest.balloon_guest_stats().expect("guest-stats");
            if stats.get("stat-oom-kills") == Some(1) {
                break stats;
            }
            assert!(
                kill_seen.elapsed() < Duration::from_secs(15),
                "stat-oom-kills stayed: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        eprintln!(
            "stat-oom-kills=1 {:?} after the kill line: {stats:?}",
            kill_seen.elapsed()
        );
        assert!(guest.serial_text().contains(INVOKED_LINE));
    }

    #[test]
    fn autodeflate_balloon_gives_memory_back_before_the_kill() {
        let Some(lab) = lab_or_skip("autodeflate_balloon_gives_memory_back_before_the_kill") else {
            return;
        };
        let spec = GuestSpec {
            autodeflate: true,
            ..GuestSpec::default()
        };
        let guest = lab.boot(spec).expect("boot guest");
        guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");

        let outcome = inflate_then_grow(&guest, 200, OOM_TIMEOUT).expect("inflate then grow");
        eprintln!("autodeflate inflate_then_grow: {outcome:?}");
        // The guest emptied the balloon silently before killing: libvirt's current
        // memory drifted back up without any setmem.
        let after = outcome.balloon_current_after_kib.expect("balloon.current");
        assert!(after > 400 * 1024, "balloon not given back: {after} KiB");
        let serial = guest.serial_text();
        let hog_peak_mib = serial
            .lines()
            .filter_map(|line| line.trim().strip_prefix("memhog: "))
            .filter_map(|rest| rest.strip_suffix(" MiB")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        assert!(
            hog_peak_mib > 250,
            "hog peaked at {hog_peak_mib} MiB: the balloon was not deflated"
        );
        assert!(
            outcome.kill_line.contains("(memhog)"),
            "{}",
            outcome.kill_line
        );
    }

    #[test]
    fn cleanup_runs_on_panic_and_sweeps_only_dead_harness_resources() {
        let Some(lab) = lab_or_skip("cleanup_runs_on_panic_and_sweeps_only_dead_harness_resources")
        else {
            return;
        };
        // A test thread that panics with a running guest: unwinding destroys and undefines it.
        let (sender, receiver) = std::sync::mpsc::channel();
        let panicked = std::thread::spawn(move || {
            let guest = lab.boot(GuestSpec::default()).expect("boot guest");
            let name = guest.name().to_owned();
            sender.send(name.clone()).expect("send name");
            panic!("deliberate panic with {name} running");
        })
        .join();
        assert!(panicked.is_err());
        let name = receiver.recv().expect("guest name");
        let domains = lab
            .virsh_run(&["list", "--all", "--name"])
            .expect("virsh list");
        assert!(
            !domains.lines().any(|line| line.trim() == name),
            "{name} survived the panic"
        );

        // A leftover of a dead harness process is swept; a foreign domain is not.
        let mut exited = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let dead_pid = exited.id();
        exited.wait().expect("wait true");
        let stale = format!("{}{dead_pid}-1", ballast_testvm::NAME_PREFIX);
        let foreign = format!("ballast-foreign-{}", std::process::id());
        let dir = tempdir_for(&stale);
        for name in [&stale, &foreign] {
            let xml = dir.join(format!("{name}.xml"));
            std::fs::write(
                &xml,
                format!(
                    "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
                     <os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
                ),
            )
            .expect("write xml");
            lab.virsh_run(&["define", &xml.to_string_lossy()])
                .expect("define");
        }
        let report = lab.sweep_stale();
        let domains = lab
            .virsh_run(&["list", "--all", "--name"])
            .expect("virsh list");
        let foreign_kept = domains.lines().any(|line| line.trim() == foreign);
        lab.virsh_run(&["undefine", &foreign])
            .expect("undefine the foreign domain");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(report.domains.contains(&stale), "{report:?}");
        assert!(
            !domains.lines().any(|line| line.trim() == stale),
            "stale domain left"
        );
        assert!(foreign_kept, "the sweeper removed a domain it does not own");
    }

    fn tempdir_for(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-xml"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn lifecycle_restart_libvirtd_reboot_and_hold_then_inflate() {
        let Some(lab) = lab_or_skip("lifecycle_restart_libvirtd_reboot_and_hold_then_inflate")
        else {
            return;
        };
        // It restarts libvirtd: no other test's libvirt guest may exist meanwhile.
        let exclusive = lab
            .exclusive_libvirtd()
            .expect("the lab's libvirtd to this test alone");
        let quiet = GuestSpec {
            loglevel: 4,
            ..GuestSpec::default()
        };
        let mut guest = lab.boot(quiet).expect("boot guest");
        guest.wait_ready(BOOT_TIMEOUT).expect("guest ready");

        // libvirtd restarts under a running guest: the guest survives, stats still flow.
        let restart = lab.restart_libvirtd(&exclusive).expect("restart libvirtd");
        eprintln!("libvirtd restart: {restart:?}");
        assert_eq!(guest.state().expect("domstate"), "running");
        assert!(guest
            .domstats_balloon()
            .expect("domstats")
            .contains_key("balloon.current"));

        // Hold 320 MiB, inflate to 200 MiB: the balloon stalls and a guest-exec sets off
        // the OOM, or (a race inside the guest) some allocation during the inflation
        // finds no free page and the kill comes before any trigger; then the balloon
        // may reach its target, with memory the kill freed.
        let outcome = hold_then_inflate(&guest, 320, 200, OOM_TIMEOUT).expect("hold then inflate");
        eprintln!("hold_then_inflate: {outcome:?}");
        assert!(
            outcome.stalled_at_kib > 300 * 1024 || outcome.killed_while_inflating,
            "balloon neither stalled nor took the memory through a kill: {outcome:?}"
        );
        let kill = outcome.kill_line.expect("an OOM kill after the trigger");
        assert!(kill.contains("(memhog)"), "{kill}");
        // loglevel=4 (what `quiet` gives) hides the report's pr_info parts on the console...
        let serial = guest.serial_text();
        assert!(
            !serial.contains("Tasks state"),
            "task list printed at loglevel 4"
        );
        // ...but the guest's ring buffer still has them.
        let dmesg = guest.dmesg_via_agent().expect("dmesg");
        assert!(
            dmesg.contains("Tasks state"),
            "task list missing from dmesg"
        );

        // A reboot brings a second READY line; the balloon target survives in QEMU.
        guest.reboot().expect("reset");
        let again = guest.wait_ready(BOOT_TIMEOUT).expect("ready after reboot");
        eprintln!("reboot to ready: {again:?}");
        assert_eq!(guest.serial_count(ballast_testvm::READY_LINE), 2);
    }
}
