use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_model::Envelope;
use ballast_testenv::{wait_until, wait_until_showing};

use super::*;
use crate::config::{RawConfig, Settings};
use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
use crate::hypervisor::DomainConfig;
use crate::hypervisor::{DomainId, Hypervisor};

fn vm(name: &str, dmesg: Option<&str>) -> (DomainId, FakeDomain) {
    let id = DomainId {
        uuid: format!("00000000-0000-4000-8000-{:012}", name.len()),
        name: name.to_string(),
    };
    let domain = FakeDomain {
        running: true,
        dmesg: dmesg.map(|text| text.as_bytes().to_vec()),
        config: DomainConfig {
            balloon_present: true,
            guest_agent_channel: true,
            ..DomainConfig::default()
        },
        ..FakeDomain::default()
    };
    (id, domain)
}

/// Settings with the state in `state_dir` and `extra_yaml` after it.
fn test_settings(state_dir: &std::path::Path, extra_yaml: &str) -> Settings {
    let yaml = format!("state_dir: {}\n{extra_yaml}", state_dir.display());
    RawConfig::from_yaml(&yaml, std::path::Path::new("test.yaml"))
        .expect("yaml")
        .validate("host")
        .expect("settings")
}

/// A monitor on its own thread over `hypervisor`, polling every second, writing
/// its events to `<dir>/events.jsonl` (host kernel log off).
struct RunningMonitor {
    commands: MonitorCommands,
    thread: std::thread::JoinHandle<()>,
}

impl RunningMonitor {
    /// With `capture.guest_agent: periodic` (every 60 s, so once per test).
    fn start(dir: &std::path::Path, hypervisor: Arc<dyn Hypervisor>) -> Self {
        let settings = test_settings(
                &dir.join("state"),
                "poll_interval_secs: 1\ncapture:\n  host_kernel: false\n  guest_agent: periodic\n  guest_agent_interval_secs: 60\n",
            );
        let handles = Handles::new(&settings);
        let monitor = Monitor::new(
            settings,
            hypervisor,
            Box::new(JsonLinesOutlet::new(dir.join("events.jsonl"))),
            handles,
        );
        let commands = monitor.commands();
        let thread = std::thread::spawn(move || monitor.run());
        RunningMonitor { commands, thread }
    }

    fn stop(self) {
        self.commands.stop();
        self.thread.join().expect("monitor thread");
    }
}

/// The findings of `name` in the last inventory event of the JSON-lines file.
fn last_findings(events: &std::path::Path, name: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(events).ok()?;
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| {
            let vms = event.get("vms")?.as_array()?.clone();
            vms.into_iter()
                .find(|vm| vm.pointer("/vm/name").and_then(|n| n.as_str()) == Some(name))
        })
        .next_back()
        .and_then(|vm| serde_json::from_value(vm.get("findings")?.clone()).ok())
}

/// Whether the JSON-lines file holds an OOM event of the VM `name`.
fn has_oom_of(events: &std::path::Path, name: &str) -> bool {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|event| {
            event
                .get("key")
                .and_then(|key| key.as_str())
                .is_some_and(|key| key.contains("/oom/"))
                && event.to_string().contains(&format!("\"name\":\"{name}\""))
        })
}

#[test]
fn a_guest_agent_that_never_answers_does_not_hold_up_another_vms_oom() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    // A: its guest agent call blocks until the test releases it.
    let (a_id, a) = vm("a-vm", Some("[    1.000000] Linux version 6.1\n"));
    let gate = hypervisor.block_guest_exec(&a_id);
    hypervisor.set(a_id, a);
    // B: no guest agent; its OOM comes through its serial log.
    let serial = dir.path().join("b.log");
    std::fs::write(&serial, "[    0.500000] Linux version 6.1\n").expect("serial log");
    let (b_id, mut b) = vm("b-victim", None);
    b.config.serial_log_path = Some(serial.clone());
    hypervisor.set(b_id, b);
    let events = dir.path().join("events.jsonl");
    let monitor = RunningMonitor::start(dir.path(), hypervisor);
    // The periodic fetch of A starts on the first tick and does not come back.
    let entered = gate.entered.recv_timeout(Duration::from_secs(30));
    {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&serial)
            .expect("serial log");
        log.write_all(crate::capture::detect::tests::LAB_LOG.as_bytes())
            .expect("write the OOM");
    }
    wait_until_showing(
        "an OOM of b-victim while A's call hangs",
        Duration::from_secs(60),
        || has_oom_of(&events, "b-victim"),
        || std::fs::read_to_string(&events).unwrap_or_default(),
    );
    // Only now A's call may end (the monitor could not stop while it held it).
    drop(gate);
    monitor.stop();
    assert!(entered.is_ok(), "A's guest agent call never started");
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    assert!(!has_oom_of(&events, "a-vm"), "{text}");
}

#[test]
fn the_inventory_says_which_guest_agents_do_not_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let (quiet_id, quiet) = vm("quiet", None);
    let (talks_id, talks) = vm("talks-back", Some("[    1.000000] Linux version 6.1\n"));
    hypervisor.set(quiet_id, quiet);
    hypervisor.set(talks_id, talks);
    let events = dir.path().join("events.jsonl");
    let monitor = RunningMonitor::start(dir.path(), hypervisor);
    let not_answering = "guest_agent_not_answering".to_string();
    wait_until_showing(
        "an inventory naming quiet's guest agent as not answering",
        Duration::from_secs(30),
        || last_findings(&events, "quiet").is_some_and(|f| f.contains(&not_answering)),
        || std::fs::read_to_string(&events).unwrap_or_default(),
    );
    let talks = last_findings(&events, "talks-back");
    monitor.stop();
    let talks = talks.expect("an inventory with talks-back");
    assert!(!talks.contains(&not_answering), "{talks:?}");
}

#[test]
fn the_inventory_carries_the_domain_config_s_nova_identity_with_fake_hypervisor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let (nova_id, mut nova) = vm("instance-0000001a", None);
    nova.config.openstack = Some(ballast_model::NovaInstance {
        name: Some("web-3".into()),
        project_name: Some("acme".into()),
        ..ballast_model::NovaInstance::default()
    });
    let (plain_id, plain) = vm("plain", None);
    hypervisor.set(nova_id, nova);
    hypervisor.set(plain_id, plain);
    let settings = test_settings(
        &dir.path().join("state"),
        "capture:\n  host_kernel: false\n  guest_agent: false\n",
    );
    let handles = Handles::new(&settings);
    let events = dir.path().join("events.jsonl");
    let sink = Box::new(JsonLinesOutlet::new(events.clone()));
    let mut monitor = Monitor::new(settings, hypervisor, sink, handles);
    monitor.poll();
    monitor.emit_inventory();
    let text = std::fs::read_to_string(&events).expect("events");
    let inventory = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .rfind(|event| event.get("vms").is_some())
        .expect("an inventory");
    let vm_of = |name: &str| {
        inventory["vms"]
            .as_array()
            .and_then(|vms| vms.iter().find(|vm| vm["vm"]["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} in {inventory}"))
    };
    let nova = vm_of("instance-0000001a");
    assert_eq!(nova["openstack"]["name"], "web-3", "{nova}");
    assert_eq!(nova["openstack"]["project_name"], "acme");
    assert!(
        vm_of("plain").get("openstack").is_none(),
        "left out when None"
    );
}

#[test]
fn the_flood_counter_is_current_after_the_capture_tick_that_dropped_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let serial = dir.path().join("flood.log");
    std::fs::write(&serial, "[    0.500000] Linux version 6.1\n").expect("serial log");
    let (id, mut domain) = vm("flooder", None);
    domain.config.serial_log_path = Some(serial.clone());
    domain.config.guest_agent_channel = false;
    hypervisor.set(id, domain);
    let settings = test_settings(
        &dir.path().join("state"),
        "capture:\n  host_kernel: false\n  guest_agent: false\n",
    );
    let handles = Handles::new(&settings);
    let counters = handles.counters.clone();
    let sink = Box::new(JsonLinesOutlet::new(dir.path().join("events.jsonl")));
    let mut monitor = Monitor::new(settings, hypervisor, sink, handles);
    monitor.poll();
    monitor.capture_tick();
    {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&serial)
            .and_then(|mut log| {
                log.write_all(
                    crate::capture::hub::tests::forged_kill_lines(1000..1500, None).as_bytes(),
                )
            })
            .expect("flood");
    }
    // The tick that reads the flood, with no poll after it.
    monitor.capture_tick();
    let dropped = monitor.capture.flood_suppressed_total();
    assert!(
        dropped > 400,
        "flood control let {dropped} be dropped of 500"
    );
    let published = counters.lock().flood_suppressed;
    assert_eq!(published, dropped);
}

/// Counts what the monitor emits, without I/O.
struct CountingOutlet(Arc<std::sync::atomic::AtomicU64>);

impl EventOutlet for CountingOutlet {
    fn emit(&mut self, _envelope: Envelope) -> Result<(), std::io::Error> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One `GET /metrics` over a new connection; the status line and body.
fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn scraping_metrics_in_a_tight_loop_while_the_monitor_emits_health_never_hangs() {
    const ROUNDS: u64 = 5_000;
    const SCRAPERS: usize = 3;
    const MIN_SCRAPES: u64 = 3_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    for n in 0..200 {
        let (mut id, domain) = vm(&format!("vm-{n}"), None);
        id.uuid = format!("00000000-0000-4000-8000-{n:012}");
        hypervisor.set(id, domain);
    }
    let settings = test_settings(
        &dir.path().join("state"),
        "capture:\n  host_kernel: false\n  guest_agent: false\n",
    );
    let handles = Handles::new(&settings);
    let shared = crate::metrics::Shared {
        fleet: handles.fleet.clone(),
        counters: handles.counters.clone(),
        sink: None,
    };
    let emitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink = Box::new(CountingOutlet(Arc::clone(&emitted)));
    let mut monitor = Monitor::new(settings, hypervisor, sink, handles);
    monitor.poll();
    let before = emitted.load(Ordering::Relaxed);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    runtime.spawn(crate::metrics::serve_on(listener, shared));

    let stop = Arc::new(AtomicBool::new(false));
    let scraped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let scraped = Arc::clone(&scraped);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match scrape(addr) {
                        Ok(answer) if answer.contains("ballast_agent_vms 200") => {
                            scraped.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(answer) => return Err(format!("unexpected answer: {answer:.200}")),
                        Err(error) => return Err(format!("scrape failed: {error}")),
                    }
                }
                Ok(())
            })
        })
        .collect();

    // Health rounds until there were thousands of them and thousands of scrapes
    // ran meanwhile (the scrapers are in their loop before the first round).
    let (done_tx, done) = std::sync::mpsc::channel();
    let during = Arc::clone(&scraped);
    std::thread::spawn(move || {
        while during.load(Ordering::Relaxed) == 0 {
            // A poll without its own deadline: the 60 s limit on the whole round
            // below bounds it and names the failure.
            std::thread::sleep(Duration::from_millis(10));
        }
        let first = during.load(Ordering::Relaxed);
        let mut rounds = 0_u64;
        while rounds < ROUNDS || during.load(Ordering::Relaxed) - first < MIN_SCRAPES {
            monitor.emit_health();
            rounds += 1;
        }
        let _ = done_tx.send(rounds);
    });
    // A few seconds of work; a minute means a deadlock.
    let finished = done.recv_timeout(Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let Ok(rounds) = finished else {
        // Without waiting for a render that never ends.
        runtime.shutdown_background();
        panic!("the monitor hung emitting health while /metrics was scraped (deadlock)");
    };
    for scraper in scrapers {
        let scraped = scraper.join().expect("scraper thread");
        scraped.expect("every scrape answered");
    }
    assert_eq!(
        emitted.load(Ordering::Relaxed) - before,
        rounds,
        "one health event per round"
    );
    assert!(scraped.load(Ordering::Relaxed) >= MIN_SCRAPES);
}

#[test]
fn the_periodic_guest_agent_fetch_skips_vms_without_a_channel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let (with_id, with) = vm("with-channel", Some("[    1.000000] Linux version 6.1\n"));
    let (without_id, mut without) = vm("no-channel", Some("[    1.000000] Linux 6.1\n"));
    without.config.guest_agent_channel = false;
    hypervisor.set(with_id.clone(), with);
    hypervisor.set(without_id.clone(), without);
    let monitor = RunningMonitor::start(dir.path(), Arc::clone(&hypervisor) as Arc<dyn Hypervisor>);
    wait_until(
        "a guest agent call to the VM with a channel",
        Duration::from_secs(30),
        || hypervisor.guest_agent_calls(&with_id) > 0,
    );
    // Observation window (the scenario): a few more ticks in which the other VM's
    // fetch would have started too; nothing says "it will not come".
    std::thread::sleep(Duration::from_secs(3));
    monitor.stop();
    assert!(
        hypervisor.guest_agent_calls(&with_id) >= 1,
        "the VM with a channel was never asked"
    );
    assert_eq!(hypervisor.guest_agent_calls(&without_id), 0);
    assert_eq!(
        hypervisor.guest_exec_calls(&with_id),
        0,
        "the file API answered: nothing was run in the guest"
    );
}

/// A sample of 458 MiB of guest memory with `usable_kib` available.
fn usable(usable_kib: u64, update: u64) -> crate::hypervisor::BalloonSample {
    crate::hypervisor::BalloonSample {
        actual_kib: Some(524_288),
        maximum_kib: Some(524_288),
        available_kib: Some(468_416),
        usable_kib: Some(usable_kib),
        last_update_epoch_secs: Some(update),
        ..crate::hypervisor::BalloonSample::default()
    }
}

/// Ticks `monitor` until `done` or 10 s, giving the guest agent threads time.
fn tick_until(monitor: &mut Monitor, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() && Instant::now() < deadline {
        monitor.capture_tick();
        // A drive loop, not wait_until: where the call must not come, the 10 s are
        // the observation window (no failure at the deadline).
        std::thread::sleep(Duration::from_millis(50));
    }
    // A few more ticks: results are taken back, and a call that should not
    // happen has had its chance.
    for _ in 0..5 {
        monitor.capture_tick();
        // Observation window (the scenario), not a wait for anything.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_guest_agent_mode_decides_when_a_guest_is_read_with_fake_hypervisor() {
    for mode in ["off", "on_suspicion", "periodic"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let hypervisor = Arc::new(FakeHypervisor::new());
        let (id, mut domain) = vm("guest", Some(crate::capture::detect::tests::LAB_LOG));
        domain.sample = usable(100_000, 1);
        hypervisor.set(id.clone(), domain);
        let settings = test_settings(
                &dir.path().join("state"),
                &format!("capture:\n  host_kernel: false\n  guest_agent: {mode}\n  guest_agent_interval_secs: 60\n"),
            );
        let handles = Handles::new(&settings);
        let events = dir.path().join("events.jsonl");
        let sink = Box::new(JsonLinesOutlet::new(events.clone()));
        let mut monitor = Monitor::new(
            settings,
            Arc::clone(&hypervisor) as Arc<dyn Hypervisor>,
            sink,
            handles,
        );
        // A healthy guest: only `periodic` reads it (at once, then every 60 s).
        monitor.poll();
        tick_until(&mut monitor, || hypervisor.guest_agent_calls(&id) > 0);
        let healthy = hypervisor.guest_agent_calls(&id);
        match mode {
            "periodic" => assert!(healthy > 0, "{mode}: the periodic read did not come"),
            _ => assert_eq!(healthy, 0, "{mode}: a healthy guest was read"),
        }
        let oom_before = has_oom_of(&events, "guest");
        // The host sees a sign: the guest's usable memory collapsed.
        hypervisor.update(&id, |domain| domain.sample = usable(3_000, 2));
        monitor.poll();
        tick_until(&mut monitor, || hypervisor.guest_agent_calls(&id) > healthy);
        let after = hypervisor.guest_agent_calls(&id);
        match mode {
            "off" => {
                assert_eq!(after, 0, "off: the guest agent was called");
                assert!(!has_oom_of(&events, "guest"));
            }
            _ => {
                assert!(
                    after > healthy,
                    "{mode}: the suspicion did not read the guest"
                );
                assert!(
                    has_oom_of(&events, "guest") || oom_before,
                    "{mode}: no OOM event"
                );
            }
        }
        assert_eq!(
            hypervisor.guest_exec_calls(&id),
            0,
            "{mode}: exec without guest_agent_exec"
        );
        drop(monitor);
    }
}

#[test]
fn a_reload_command_takes_the_new_poll_interval_and_stop_ends_the_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let (id, domain) = vm("polled", None);
    hypervisor.set(id, domain);
    let quiet = "capture:\n  host_kernel: false\n  guest_agent: off\n";
    let state = dir.path().join("state");
    let settings = test_settings(&state, &format!("poll_interval_secs: 3600\n{quiet}"));
    let handles = Handles::new(&settings);
    let counters = handles.counters.clone();
    let outlet = Box::new(JsonLinesOutlet::new(dir.path().join("events.jsonl")));
    let monitor = Monitor::new(settings, hypervisor, outlet, handles);
    let commands = monitor.commands();
    let thread = std::thread::spawn(move || monitor.run());
    let polls = || counters.lock().polls;
    let wait_for = |wanted: u64| {
        wait_until(&format!("{wanted} polls"), Duration::from_secs(20), || {
            polls() >= wanted
        });
        polls()
    };
    assert_eq!(wait_for(1), 1, "the first poll");
    // An hour until the next poll, unless the reload brings it closer.
    commands.reload(test_settings(
        &state,
        &format!("poll_interval_secs: 1\n{quiet}"),
    ));
    assert!(wait_for(3) >= 3, "polls every second after the reload");
    commands.stop();
    let (done, joined) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(thread.join().is_ok());
    });
    assert_eq!(
        joined.recv_timeout(Duration::from_secs(20)),
        Ok(true),
        "the monitor returned after Stop"
    );
}

#[test]
fn a_pressure_episode_goes_out_as_start_and_end_events_with_stable_keys_with_fake_hypervisor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let (id, mut domain) = vm("squeezed", None);
    domain.sample = usable(300 * 1024, 1);
    hypervisor.set(id.clone(), domain);
    let settings = test_settings(
        &dir.path().join("state"),
        "capture:\n  host_kernel: false\n  guest_agent: off\n",
    );
    let handles = Handles::new(&settings);
    let counters = handles.counters.clone();
    let events = dir.path().join("events.jsonl");
    let mut monitor = Monitor::new(
        settings,
        Arc::clone(&hypervisor) as Arc<dyn Hypervisor>,
        Box::new(JsonLinesOutlet::new(events.clone())),
        handles,
    );
    // MemAvailable at 8 % of MemTotal for three polls (the first alone is no
    // episode), then back to 300 MiB for three calm polls.
    for (update, available_mib) in (2..).zip([300, 36, 36, 36, 300, 300, 300, 300]) {
        hypervisor.update(&id, |domain| {
            domain.sample = usable(available_mib * 1024, update);
        });
        monitor.poll();
        std::thread::sleep(Duration::from_millis(20));
    }
    let pressure: Vec<Envelope> = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Envelope>(line).ok())
        .filter(|envelope| envelope.event.kind_name() == "pressure")
        .collect();
    let episodes: Vec<&ballast_model::PressureEpisode> = pressure
        .iter()
        .filter_map(|envelope| match &envelope.event {
            ballast_model::Event::Pressure(episode) => Some(&**episode),
            _ => None,
        })
        .collect();
    let phases: Vec<_> = episodes.iter().map(|e| e.phase).collect();
    use ballast_model::EpisodePhase;
    assert_eq!(
        phases,
        [EpisodePhase::Start, EpisodePhase::End],
        "{pressure:?}"
    );
    let (start, end) = (episodes[0], episodes[1]);
    assert_eq!(start.level, ballast_model::RiskLevel::Elevated);
    assert_eq!(start.drivers, [ballast_model::PressureSignal::AvailableLow]);
    assert_eq!(end.started_at_ms, start.started_at_ms);
    assert!(end.at_ms > start.at_ms);
    assert_eq!(start.vm.name, "squeezed");
    for (envelope, episode) in pressure.iter().zip(&episodes) {
        assert_eq!(
            envelope.key,
            format!(
                "host/pressure/{}/{}/{}/{}",
                id.uuid, episode.started_at_ms, episode.phase, episode.at_ms
            )
        );
        assert_eq!(envelope.captured_at_ms, episode.at_ms);
    }
    assert_eq!(
        counters
            .lock()
            .pressure_episodes
            .get(&(id.uuid.clone(), id.name.clone())),
        Some(&1)
    );
}

/// Ticks `monitor`'s capture and pressure steps until `done` or 10 s.
fn pressure_ticks_until(monitor: &mut Monitor, done: impl Fn(&Monitor) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(monitor) && Instant::now() < deadline {
        monitor.capture_tick();
        monitor.pressure_tick(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn guest_psi_is_read_through_the_file_api_on_the_guest_agent_threads_and_a_silent_guest_backs_off()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let (with_id, mut with) = vm("psi", Some("[    1.000000] Linux version 6.12\n"));
    with.psi = Some(
        b"some avg10=7.25 avg60=2.00 avg300=0.50 total=991\nfull avg10=1.50 avg60=0.40 avg300=0.10 total=77\n"
            .to_vec(),
    );
    // No guest agent answers in this one.
    let (silent_id, silent) = vm("silent-guest", None);
    hypervisor.set(with_id.clone(), with);
    hypervisor.set(silent_id.clone(), silent);
    let settings = test_settings(
        &dir.path().join("state"),
        "capture:\n  host_kernel: false\npressure:\n  guest_psi_interval_secs: 5\n",
    );
    let handles = Handles::new(&settings);
    let mut monitor = Monitor::new(
        settings,
        Arc::clone(&hypervisor) as Arc<dyn Hypervisor>,
        Box::new(JsonLinesOutlet::new(dir.path().join("events.jsonl"))),
        handles,
    );
    monitor.poll();
    pressure_ticks_until(&mut monitor, |monitor| {
        monitor
            .fleet()
            .get(&with_id.uuid)
            .is_some_and(|vm| vm.psi.is_some())
    });
    let reading = monitor
        .fleet()
        .get(&with_id.uuid)
        .and_then(|vm| vm.psi)
        .expect("the PSI reading reached the fleet");
    assert_eq!(reading.psi.some.avg10, 7.25);
    assert_eq!(reading.psi.full.map(|full| full.total_us), Some(77));
    assert_eq!(
        hypervisor.guest_exec_calls(&with_id),
        0,
        "nothing run in the guest"
    );
    assert_eq!(hypervisor.open_handles(), 0, "the handle was closed");
    // Within the interval, and while the silent guest backs off, no more calls.
    let (calls, silent_calls) = (
        hypervisor.guest_file_calls(&with_id),
        hypervisor.guest_agent_calls(&silent_id),
    );
    assert!(silent_calls >= 1, "the silent guest was tried once");
    for _ in 0..20 {
        monitor.capture_tick();
        monitor.pressure_tick(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hypervisor.guest_file_calls(&with_id), calls);
    assert_eq!(hypervisor.guest_agent_calls(&silent_id), silent_calls);
    // Past the interval the answering guest is read again; the silent one waits
    // twice as long.
    let later = Instant::now() + Duration::from_secs(6);
    monitor.pressure_tick(later);
    pressure_ticks_until(&mut monitor, |_| {
        hypervisor.guest_file_calls(&with_id) > calls
    });
    assert!(hypervisor.guest_file_calls(&with_id) > calls);
    assert_eq!(
        hypervisor.guest_agent_calls(&silent_id),
        silent_calls,
        "backed off"
    );
}

mod guard;
