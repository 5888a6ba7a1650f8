//! Hostile guests against the real stack: `ballast-agent run` and `ballast-collector
//! serve` (SQLite) as child processes, real libvirt guests from the harness
//! (ballast-testvm) that misbehave on purpose:
//!
//! 1. console garbage: a guest whose kernel console is a virtio console (hvc0, logged
//!    by virtlogd; the emulated UART moves only 0.06-0.3 MiB/s under TCG, hvc0 ~4 MiB/s)
//!    writes one line of `BALLAST_HOSTILE_LINE_MIB` MiB (default 64: far above the
//!    16 KiB line cap, 32 of virtlogd's 2 MiB rotations; `=1024` is the issue's 1 GiB)
//!    and 1 MiB of random bytes; then a real OOM of a process named `<script>` plus an
//!    ANSI escape on the same guest, which must reach the collector from the console
//!    log with its name intact while the dashboard escapes it and neither
//!    `ballast-agent status` nor its log print the raw escape;
//! 2. forged flood: one guest writes 1000 fake kill lines a second to its virtio
//!    console for 10 s while a second guest has a real OOM: its latency is compared
//!    with the same measurement without the flood, the flood is cut by the per-VM
//!    token bucket, and the event after it says how many reports were dropped (API
//!    and dashboard);
//! 3. hostile guest agents: three guests whose init starts, instead of qemu-ga, an
//!    agent that never answers, answers after 15 s, or answers with a 32 MiB reply
//!    (the first process to open the port, so libvirt sees it connect; the test fails
//!    if libvirt saw none of them connected); another guest's OOM latency is compared
//!    with the same measurement before; fetches back off.
//!
//! Every scenario checks the agent's RSS (VmRSS from /proc) stays within 20 MiB of
//! where it started and prints its figures as `HOSTILE ...` lines (RELIABILITY.md).
//! Outside CI the tests skip loudly when the machine cannot run guests.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_tests::{
    binary, create_token, free_port, http_get, wait_until, wait_until_showing,
    write_collector_config, Daemon,
};
use ballast_testvm::{lab_or_skip, Console, Guest, GuestSpec, HostileAgent, Lab, KILL_LINE};
use serde_json::Value;

const HOST: &str = "hostile-host";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const OOM_TIMEOUT: Duration = Duration::from_secs(180);
/// Seconds between the end of the console garbage and the real OOM after it.
const HOG_DELAY_SECS: u64 = 10;
/// The issue's bound on the agent's memory growth under a hostile guest.
const MAX_RSS_GROWTH_KIB: u64 = 20 * 1024;
/// The agent's flood burst per VM (`CaptureSettings::flood_burst`'s default).
const FLOOD_BURST: usize = 20;

/// A collector on SQLite and an agent watching the lab's libvirt, in one folder.
struct Stack {
    root: PathBuf,
    collector_addr: SocketAddr,
    agent_dir: PathBuf,
    agent_config: PathBuf,
    _collector: Daemon,
    agent: Daemon,
}

impl Stack {
    /// `agent_extra`: YAML lines appended to the agent's configuration.
    fn start(name: &str, agent_extra: &str) -> Stack {
        let root =
            std::env::temp_dir().join(format!("ballast-hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let collector_dir = root.join("collector");
        let port = free_port();
        let config = write_collector_config(
            &collector_dir,
            port,
            &collector_dir,
            "storage:\n  type: sqlite\n",
        );
        let token_file = collector_dir.join("agent.token");
        std::fs::write(&token_file, create_token(&config, HOST)).expect("token file");
        let config_arg = config.to_str().expect("utf-8 path").to_string();
        let collector = Daemon::start(
            "ballast-collector",
            &["serve", "--config", &config_arg],
            &collector_dir.join("collector.log"),
        );
        let collector_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        wait_until("the collector to answer", Duration::from_secs(60), || {
            matches!(http_get(collector_addr, "/healthz", None), Ok((200, _))).then_some(())
        });

        let agent_dir = root.join("agent");
        std::fs::create_dir_all(&agent_dir).expect("agent dir");
        let agent_config = agent_dir.join("agent.yaml");
        std::fs::write(
            &agent_config,
            format!(
                "host_id: {HOST}\nstate_dir: {}\npoll_interval_secs: 2\ncollector:\n  url: http://{collector_addr}\n  token_file: {}\n{agent_extra}",
                agent_dir.display(),
                token_file.display()
            ),
        )
        .expect("agent config");
        let agent = start_agent(&agent_config, &agent_dir);
        Stack {
            root,
            collector_addr,
            agent_dir,
            agent_config,
            _collector: collector,
            agent,
        }
    }

    fn agent_pid(&self) -> u32 {
        self.agent.child.id()
    }

    fn agent_log(&self) -> Vec<u8> {
        std::fs::read(self.agent_dir.join("agent.log")).unwrap_or_default()
    }

    fn status_text(&self) -> String {
        std::fs::read_to_string(self.agent_dir.join("status.json")).unwrap_or_default()
    }

    /// Waits until the agent's status file lists every guest.
    fn wait_agent_sees(&self, guests: &[&Guest]) {
        wait_until(
            "the agent to list the guests",
            Duration::from_secs(120),
            || {
                let text = self.status_text();
                guests
                    .iter()
                    .all(|guest| text.contains(guest.name()))
                    .then_some(())
            },
        );
    }

    /// The agent's saved console-tailer state of one VM (`capture/<uuid>.serial`:
    /// `path`, `ino`, `file_offset`, `stream_offset`, ...); empty before the first save.
    fn serial_state(&self, uuid: &str) -> std::collections::HashMap<String, String> {
        let path = self
            .agent_dir
            .join("capture")
            .join(format!("{uuid}.serial"));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    /// `status.json`'s `updated_at_epoch_secs` (the monitor thread's last pass).
    fn status_updated_at(&self) -> u64 {
        serde_json::from_str::<Value>(&self.status_text())
            .ok()
            .and_then(|status| status["updated_at_epoch_secs"].as_u64())
            .unwrap_or(0)
    }

    /// The OOMs the collector lists for one VM name (newest first, up to 500).
    fn ooms_of(&self, vm_name: &str) -> Vec<Value> {
        let Ok((200, body)) = http_get(self.collector_addr, "/api/v1/ooms?limit=500", None) else {
            return Vec::new();
        };
        let page: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        page["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|item| item["vm"]["name"] == vm_name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET path` on the collector: the body of a 200 answer.
    fn get(&self, path: &str) -> String {
        match http_get(self.collector_addr, path, None) {
            Ok((200, body)) => body,
            other => panic!("GET {path}: {other:?}"),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "hostile_guests: agent log tail:\n{}",
                tail(&String::from_utf8_lossy(&self.agent_log()), 40)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn start_agent(config: &Path, dir: &Path) -> Daemon {
    let config_arg = config.to_str().expect("utf-8 path").to_string();
    Daemon::start(
        "ballast-agent",
        &["run", "--config", &config_arg],
        &dir.join("agent.log"),
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples a process's RSS every 100 ms on a thread until stopped; keeps the peak.
/// With a log path, also counts its rotations (the file at that path changes inode).
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    rotations: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        RssWatch::start_with_log(pid, None)
    }

    fn start_with_log(pid: u32, log: Option<PathBuf>) -> RssWatch {
        use std::os::unix::fs::MetadataExt;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let rotations = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak, rotations) =
                (Arc::clone(&stop), Arc::clone(&peak), Arc::clone(&rotations));
            std::thread::spawn(move || {
                let inode = |log: &Option<PathBuf>| {
                    log.as_ref()
                        .and_then(|path| std::fs::metadata(path).ok())
                        .map(|meta| meta.ino())
                };
                let mut last = inode(&log);
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    let now = inode(&log);
                    if now.is_some() && now != last {
                        rotations.fetch_add(1, Ordering::Relaxed);
                        last = now;
                    }
                    // The sampling pace of the watch, not a wait for anything.
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        RssWatch {
            stop,
            peak,
            rotations,
            thread: Some(thread),
        }
    }

    /// Rotations of the log seen so far (a sample every 100 ms may miss some).
    fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Relaxed)
    }

    /// Stops sampling; the peak RSS seen, KiB.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// The agent's RSS once it has settled: the median of 5 samples over 2.5 s.
fn settled_rss_kib(pid: u32) -> u64 {
    let mut samples: Vec<u64> = (0..5)
        .map(|_| {
            // Samples spread over time (the measurement), not a wait for anything.
            std::thread::sleep(Duration::from_millis(500));
            rss_kib(pid)
        })
        .collect();
    samples.sort_unstable();
    samples[2]
}

/// Another test may restart libvirtd at any time: a call that could not reach it, or
/// whose guest-agent handshake (`guest-sync`) failed meanwhile, so the command was not
/// sent, is tried again (for up to a minute); any other error is returned at once.
fn retry_libvirt<T>(what: &str, mut call: impl FnMut() -> ballast_testvm::Result<T>) -> T {
    let started = Instant::now();
    loop {
        match call() {
            Ok(value) => return value,
            Err(error)
                if (error.to_string().contains("connect")
                    || error
                        .to_string()
                        .contains("Guest agent not available for now"))
                    && started.elapsed() < Duration::from_secs(60) =>
            {
                eprintln!("hostile_guests: {what}: libvirtd away ({error}); retrying");
                // Back-off between two attempts of a call that failed, not a wait.
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(error) => panic!("{what}: {error}"),
        }
    }
}

fn boot(lab: &'static Lab, specs: Vec<GuestSpec>) -> Vec<Guest> {
    let guests = retry_libvirt("guests boot", || lab.boot_many(specs.clone()));
    for guest in &guests {
        retry_libvirt("guest ready", || guest.wait_ready(BOOT_TIMEOUT));
    }
    guests
}

/// Runs a shell line in the guest through the guest agent; it must succeed.
fn guest_sh(guest: &Guest, line: &str) -> String {
    let output = retry_libvirt(&format!("guest-exec {line:?} in {}", guest.name()), || {
        guest.exec("/bin/sh", &["-c", line])
    });
    assert!(output.success(), "guest-exec {line:?}: {output:?}");
    output.stdout
}

/// How the OOM of [`real_oom_latency`] starts.
enum Hog {
    /// The harness's memhog, through the guest agent.
    Harness,
    /// Already scheduled in the guest (its first OOM): only wait for it.
    Scheduled,
}

/// Starts memhog, waits for its kill line on the serial console, then for the OOM
/// in the collector's API: returns (event, kill line seen -> listed).
fn real_oom_latency(stack: &Stack, guest: &Guest, hog: Hog) -> (Value, Duration) {
    let (before, kills_before) = match hog {
        Hog::Scheduled => (0, 0),
        _ => (
            stack.ooms_of(guest.name()).len(),
            guest.serial_count(KILL_LINE),
        ),
    };
    match hog {
        Hog::Harness => retry_libvirt("hog starts", || guest.start_hog(16, 100)),
        Hog::Scheduled => {}
    }
    guest
        .wait_serial_count(KILL_LINE, kills_before + 1, OOM_TIMEOUT)
        .expect("the guest kills the hog");
    let seen = Instant::now();
    let event = wait_until(
        "the OOM in the collector's API",
        Duration::from_secs(120),
        || {
            let ooms = stack.ooms_of(guest.name());
            (ooms.len() > before).then(|| ooms[0].clone())
        },
    );
    (event, seen.elapsed())
}

fn uuid_of(lab: &Lab, guest: &Guest) -> String {
    retry_libvirt("virsh domuuid", || {
        lab.virsh_run(&["domuuid", guest.name()])
    })
    .trim()
    .to_string()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Scenarios 1 and 2 on one guest: serial garbage, then a real OOM of a process
/// whose name is HTML plus an ANSI escape.
#[test]
fn serial_garbage_then_a_hostile_process_name_oom_is_captured_and_shown_escaped() {
    let Some(lab) =
        lab_or_skip("serial_garbage_then_a_hostile_process_name_oom_is_captured_and_shown_escaped")
    else {
        return;
    };
    let line_mib: u64 = std::env::var("BALLAST_HOSTILE_LINE_MIB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(64);
    // The kernel console on hvc0, logged by virtlogd; ttyS0 stays, without a log.
    let spec = GuestSpec {
        console: Console::Virtio,
        ..GuestSpec::default()
    };
    let guests = boot(lab, vec![spec]);
    let guest = &guests[0];
    let stack = Stack::start("serial", "");
    stack.wait_agent_sees(&[guest]);
    let pid = stack.agent_pid();
    let rss_before = settled_rss_kib(pid);

    // 1. One line of line_mib MiB without a newline (1 MiB of `x` from the guest's
    //    tmpfs, written with 64 KiB writes: busybox `tr` would hold it to ~1.4 MiB/s),
    //    then 1 MiB of random bytes.
    let watch = RssWatch::start_with_log(pid, Some(guest.serial_log_path().to_path_buf()));
    let updated_before = stack.status_updated_at();
    guest_sh(guest, "head -c 1048576 /dev/zero | tr '\\0' x >/tmp/x");
    let started = Instant::now();
    // ...then, HOG_DELAY_SECS after it, a real OOM of a process named `<script>` ESC[31m.
    guest_sh(
        guest,
        &format!(
            "(i=0; while [ $i -lt {line_mib} ]; do dd if=/tmp/x bs=65536 2>/dev/null; \
             i=$((i+1)); done; head -c 1048576 /dev/urandom; echo; echo HOSTILE-SERIAL-DONE; \
             sleep {HOG_DELAY_SECS}; hog=\"/tmp/$(printf '<script>\\033[31m')\"; \
             cp /bin/memhog \"$hog\" && exec \"$hog\" 16 100) >/dev/hvc0 2>/dev/null </dev/null &"
        ),
    );
    // A poll every 500 ms, not wait_until: reading the whole multi-MiB log at
    // wait_until's pace (wait_serial's 50 ms) would take a core from the guest.
    let deadline = Instant::now() + Duration::from_secs(180 + (line_mib + 1) * 2);
    while !guest.serial_text().contains("HOSTILE-SERIAL-DONE") {
        assert!(
            Instant::now() < deadline,
            "the guest did not finish writing {line_mib} MiB"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let write_time = started.elapsed();
    let rotations = watch.rotations();
    // The agent reads at most 8 MiB per VM per poll and skips files rotated away
    // meanwhile: wait until its tailer is on the live file (it followed every
    // rotation), as its state file says.
    let uuid = uuid_of(lab, guest);
    let live_inode = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(guest.serial_log_path())
            .map(|meta| meta.ino())
            .unwrap_or(0)
    };
    let caught_up = Instant::now();
    let tailer = wait_until(
        "the agent's console tailer to reach the live log file",
        Duration::from_secs(120),
        || {
            let state = stack.serial_state(&uuid);
            let on_live = state.get("path").map(PathBuf::from).as_deref()
                == Some(guest.serial_log_path())
                && state.get("ino").and_then(|ino| ino.parse().ok()) == Some(live_inode());
            on_live.then_some(state)
        },
    );
    let caught_up = caught_up.elapsed();
    let read_mib = tailer
        .get("stream_offset")
        .and_then(|offset| offset.parse::<u64>().ok())
        .unwrap_or(0) as f64
        / 1048576.0;
    eprintln!(
        "HOSTILE serial flood (writing): {line_mib} MiB line + 1 MiB random written to hvc0 \
         in {:.1} s ({:.2} MiB/s), {rotations} rotations seen; the agent's tailer on the live \
         file {:.1} s later, having read {read_mib:.1} MiB; agent RSS {:.1} -> peak so far {:.1} MiB",
        write_time.as_secs_f64(),
        (line_mib + 1) as f64 / write_time.as_secs_f64(),
        caught_up.as_secs_f64(),
        mib(rss_before),
        mib(watch.peak.load(Ordering::Relaxed)),
    );
    let updated_after = stack.status_updated_at();
    assert!(
        updated_after > updated_before,
        "the agent stopped polling during the flood ({updated_before} -> {updated_after})"
    );
    let rotated: Vec<String> = std::fs::read_dir(guest.run_dir())
        .map(|dir| {
            dir.filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("serial.log"))
                .collect()
        })
        .unwrap_or_default();
    let log_bytes: u64 = rotated
        .iter()
        .filter_map(|name| std::fs::metadata(guest.run_dir().join(name)).ok())
        .map(|meta| meta.len())
        .sum();

    // 2. A real OOM afterwards on the same guest, of a process named `<script>` ESC[31m.
    //    It was scheduled with the garbage: after a few hundred MiB through hvc0 the
    //    guest agent on the same virtio-serial device stops answering (RELIABILITY.md).
    let comm = "<script>\u{1b}[31m";
    let already = guest.serial_count(KILL_LINE) > 0;
    let (event, latency) = real_oom_latency(&stack, guest, Hog::Scheduled);
    let rss_peak = watch.finish();
    let rss_after = settled_rss_kib(pid);
    let id = event["id"].as_i64().expect("the OOM has an id");
    let detail: Value =
        serde_json::from_str(&stack.get(&format!("/api/v1/ooms/{id}"))).expect("JSON detail");
    eprintln!(
        "HOSTILE serial flood: {line_mib} MiB line + 1 MiB random written to hvc0 in {:.1} s \
         ({:.2} MiB/s); virtlogd rotated the log {rotations} times (seen), kept {} file(s), \
         {:.1} MiB; the agent's tailer on the live file {:.1} s after the writing ended, \
         having read {read_mib:.1} MiB of the stream (the rest rotated away unread); agent RSS {:.1} -> peak {:.1} -> {:.1} MiB (growth {:.1} MiB); \
         OOM after it listed {:.2} s after its kill line{} (source {})",
        write_time.as_secs_f64(),
        (line_mib + 1) as f64 / write_time.as_secs_f64(),
        rotated.len(),
        log_bytes as f64 / 1048576.0,
        caught_up.as_secs_f64(),
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
        mib(rss_peak.saturating_sub(rss_before)),
        latency.as_secs_f64(),
        if already {
            " (the kill line came before the test looked: a lower bound)"
        } else {
            ""
        },
        detail["source"]
    );
    assert!(
        rss_peak.saturating_sub(rss_before) < MAX_RSS_GROWTH_KIB,
        "agent RSS grew from {rss_before} to {rss_peak} KiB"
    );
    // The OOM is in the console log and the guest's kernel log: whichever the agent
    // reads first reports it (the balloon's usable memory collapsing makes it fetch
    // the kernel log through the guest agent); the console tailer is checked above.
    assert!(
        detail["source"] == "serial" || detail["source"] == "guest_agent",
        "{detail:#}"
    );
    assert!(
        rotations >= line_mib / 4,
        "virtlogd rotated {rotations} times for {line_mib} MiB: the line did not go through"
    );

    // The name is kept faithfully in the JSON...
    assert_eq!(event["killed"]["comm"], comm, "{event:#}");
    assert!(
        detail["raw_report"]
            .as_str()
            .is_some_and(|raw| raw.contains(comm)),
        "{detail:#}"
    );
    // ...and escaped on every dashboard page that shows it.
    for page in ["/ooms".to_string(), format!("/ooms/{id}"), "/".to_string()] {
        let body = stack.get(&page);
        assert!(
            body.contains("&lt;script&gt;"),
            "{page} does not show the escaped name"
        );
        assert!(
            !body.to_ascii_lowercase().contains("<script"),
            "{page} carries a raw <script> tag"
        );
    }
    // A browser parses no script element out of the page (DOM as Chromium builds it).
    if let Some(dom) = chromium_dom(stack.collector_addr, &format!("/ooms/{id}")) {
        assert!(dom.contains("&lt;script&gt;"), "escaped name in the DOM");
        assert!(
            !dom.to_ascii_lowercase().contains("<script"),
            "no script element"
        );
    }

    // The terminal never gets the raw escape: `ballast-agent status` and the agent log.
    let config_arg = stack.agent_config.to_str().expect("utf-8 path");
    for args in [
        vec!["status", "--config", config_arg],
        vec!["status", "--config", config_arg, "--json"],
    ] {
        let output = Command::new(binary("ballast-agent"))
            .args(&args)
            .output()
            .expect("ballast-agent status runs");
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(
            !output.stdout.contains(&0x1b) && !output.stderr.contains(&0x1b),
            "{args:?} printed a raw ESC: {:?}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let log = stack.agent_log();
    assert!(
        !log.contains(&0x1b),
        "the agent log holds a raw ESC: {}",
        tail(&String::from_utf8_lossy(&log), 20)
    );
}

/// `chromium --dump-dom` of a dashboard page; None (with a loud note) outside CI
/// when Chromium is not installed.
fn chromium_dom(addr: SocketAddr, path: &str) -> Option<String> {
    let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|candidate| candidate.exists());
    let Some(binary) = binary else {
        assert!(
            !ballast_testvm::in_ci(),
            "Chromium is required in CI (scripts/install-deps.sh)"
        );
        ballast_testenv::skip(
            &ballast_testenv::current_test(),
            "the Chromium check: no Chromium here",
        );
        return None;
    };
    let profile =
        std::env::temp_dir().join(format!("ballast-hostile-chromium-{}", std::process::id()));
    let output = Command::new("timeout")
        .arg("90")
        .arg(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!dom.is_empty(), "chromium printed no DOM: {output:?}");
    Some(dom)
}

/// The shell line that writes `per_second` forged kill lines (in the kernel's format,
/// timestamps included) a second for `seconds` to the virtio console, then prints
/// `HOSTILE-FORGED-DONE lines=N ms=T`. One busybox `awk` a second prints the lines into
/// a pipe to one `cat`, so the console gets large writes: a shell loop with one write
/// per line holds hvc0 to ~700-1000 lines/s under TCG, the kernel's own printk through
/// /dev/kmsg to ~270/s.
fn forge_line(per_second: u32, seconds: u32) -> String {
    format!(
        "((read up x </proc/uptime; t0=${{up%.*}}${{up#*.}}; s=0; \
         while [ $s -lt {seconds} ]; do \
         awk -v t=$((t0/100+s)) -v base=$((200000+s*{per_second})) 'BEGIN {{ \
         for (n = 1; n <= {per_second}; n++) printf \"[%5d.%06d] Out of memory: Killed process %d \
         (forged) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, UID:0 \
         pgtables:40kB oom_score_adj:0\\n\", t, n, base + n }}'; \
         s=$((s+1)); read up x </proc/uptime; \
         while [ ${{up%.*}}${{up#*.}} -lt $((t0+s*100)) ]; do sleep 0.05; read up x </proc/uptime; done; \
         done; read up x </proc/uptime; \
         echo \"HOSTILE-FORGED-DONE lines=$((s*{per_second})) ms=$((${{up%.*}}${{up#*.}}-t0))0\") \
         | cat >/dev/hvc0) >/dev/null 2>&1 </dev/null &"
    )
}

/// `key=N` in a line, e.g. `lines=10000`.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

/// Scenario 3: a guest forging ~1000 OOM reports a second for 10 s while another
/// guest has a real OOM.
#[test]
fn forged_oom_flood_is_rate_limited_flagged_and_does_not_delay_another_vm() {
    let Some(lab) =
        lab_or_skip("forged_oom_flood_is_rate_limited_flagged_and_does_not_delay_another_vm")
    else {
        return;
    };
    // The flooder's console is hvc0 (virtio): the UART cannot carry 1000 lines a second.
    let flooder_spec = GuestSpec {
        console: Console::Virtio,
        ..GuestSpec::default()
    };
    let mut guests = boot(lab, vec![flooder_spec, GuestSpec::default()]);
    let victim = guests.pop().expect("two guests");
    let flooder = guests.pop().expect("two guests");
    let metrics_port = free_port();
    let stack = Stack::start(
        "flood",
        &format!("metrics:\n  listen: 127.0.0.1:{metrics_port}\n"),
    );
    stack.wait_agent_sees(&[&flooder, &victim]);
    let pid = stack.agent_pid();
    let rss_before = settled_rss_kib(pid);

    // Baseline: the victim's OOM with a quiet neighbour.
    let (_, baseline) = real_oom_latency(&stack, &victim, Hog::Harness);

    // The flood, and a real OOM on the victim 3 s into it.
    let watch = RssWatch::start(pid);
    let flood_started = Instant::now();
    guest_sh(&flooder, &forge_line(1000, 10));
    // The scenario: the victim's OOM comes 3 s into the flood.
    std::thread::sleep(Duration::from_secs(3));
    let (victim_event, under_flood) = real_oom_latency(&stack, &victim, Hog::Harness);
    let done = flooder
        .wait_serial("HOSTILE-FORGED-DONE", Duration::from_secs(180))
        .expect("the flood ends");
    let written = field(&done, "lines");
    let flood_secs = field(&done, "ms") as f64 / 1000.0;
    let on_console = flooder.logged_lines_containing("(forged)");
    assert_eq!(victim_event["killed"]["comm"], "memhog");

    // The bucket: 20 at once, then one a minute. The forged lines are partial reports,
    // held 10 s each for a guest-agent copy while the bucket has a token for them: the
    // 20 held go out together when their hold ends, the first one flagged with the count
    // dropped meanwhile. They reach the collector over a few batches, so the wait is
    // for the whole burst and the flag (CI run 20d counted 12 right after the flagged one).
    let (flagged, forged_events) = wait_until_showing(
        "the flood's burst of 20 events, one flagged, in the collector",
        Duration::from_secs(150),
        || {
            let events = stack.ooms_of(flooder.name());
            if events.len() < FLOOD_BURST {
                return None;
            }
            let flagged = events.iter().find_map(|item| {
                let id = item["id"].as_i64()?;
                let body = stack.get(&format!("/api/v1/ooms/{id}"));
                let detail: Value = serde_json::from_str(&body).ok()?;
                (detail["flood_suppressed"].as_u64()? > 0).then_some(detail)
            })?;
            Some((flagged, events))
        },
        || {
            format!(
                "the collector holds {} events of the flooding VM",
                stack.ooms_of(flooder.name()).len()
            )
        },
    );
    let rss_peak = watch.finish();
    let flood_elapsed = flood_started.elapsed();
    let suppressed = flagged["flood_suppressed"].as_u64().unwrap_or(0);
    let ratio = under_flood.as_secs_f64() / baseline.as_secs_f64().max(0.001);
    eprintln!(
        "HOSTILE forged flood: {written} kill lines written to hvc0 in {flood_secs:.1} s \
         ({:.0}/s), {on_console} reached the console log; collector holds {} events of the \
         flooding VM after {:.0} s, one flagged flood_suppressed={suppressed}; victim OOM \
         listed {:.2} s after its kill line under the flood vs {:.2} s without (ratio {ratio:.2}); \
         agent RSS {:.1} -> peak {:.1} MiB",
        written as f64 / flood_secs.max(0.001),
        forged_events.len(),
        flood_elapsed.as_secs_f64(),
        under_flood.as_secs_f64(),
        baseline.as_secs_f64(),
        mib(rss_before),
        mib(rss_peak),
    );
    assert_eq!(
        written, 10_000,
        "the guest did not write the whole flood: {done}"
    );
    assert!(
        on_console as u64 >= written * 99 / 100,
        "the flood did not reach the console log ({on_console} of {written} lines)"
    );
    // Burst 20 plus one token a minute since the flood began (and the flagged one).
    let allowed = FLOOD_BURST as u64 + 1 + flood_elapsed.as_secs() / 60;
    assert!(
        (forged_events.len() as u64) <= allowed,
        "{} forged events went out, the bucket allows {allowed}",
        forged_events.len()
    );
    // The agent's own count of everything it dropped (flood still being read included).
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics_port}")
        .parse()
        .expect("address");
    let read_dropped_total = || -> u64 {
        match http_get(metrics_addr, "/metrics", None) {
            Ok((200, body)) => body
                .lines()
                .find_map(|line| line.strip_prefix("ballast_agent_flood_suppressed_total "))
                .and_then(|value| value.trim().parse().ok())
                .expect("the flood counter in /metrics"),
            other => panic!("GET /metrics: {other:?}"),
        }
    };
    // The counter is published after each capture step, which may still be reading
    // the flood (the shared libvirtd may list many other tests' domains): wait for it.
    let dropped_total = wait_until(
        "the flood counter to count the flagged drops",
        Duration::from_secs(60),
        || {
            let total = read_dropped_total();
            (total >= suppressed).then_some(total)
        },
    );
    eprintln!("HOSTILE forged flood: ballast_agent_flood_suppressed_total {dropped_total}");
    assert!(suppressed > 0 && dropped_total >= suppressed);
    let id = flagged["id"].as_i64().expect("id");
    let page = stack.get(&format!("/ooms/{id}"));
    assert!(
        page.contains(&format!(
            "flood control dropped {suppressed} earlier OOM reports"
        )),
        "the dashboard does not flag the flood"
    );
    assert!(
        rss_peak.saturating_sub(rss_before) < MAX_RSS_GROWTH_KIB,
        "agent RSS grew from {rss_before} to {rss_peak} KiB"
    );
}

/// The guest agents of scenario 4, started by the guests' init instead of qemu-ga
/// (ballast-testvm's guest/hostile-qga.sh).
const HOSTILE_AGENTS: [HostileAgent; 3] = [
    HostileAgent::Never,
    HostileAgent::Slow { delay_secs: 15 },
    HostileAgent::Huge { reply_mib: 32 },
];

/// Through the console (the guest agent is the hostile one): a forged kill line every
/// 2 s for a minute. Each is a partial report, for which the agent asks the guest
/// agent for the full one.
fn start_forging_partial_reports(guest: &Guest) {
    let forge = "(n=0; while [ $n -lt 30 ]; do n=$((n+1)); \
         echo \"<3>Out of memory: Killed process $((4000+n)) (hostile-agent) total-vm:1000kB, \
         anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0\" \
         >/dev/kmsg; sleep 2; done) >/dev/null 2>&1 </dev/null &";
    retry_libvirt(&format!("console_run in {}", guest.name()), || {
        guest.console_run(forge)
    });
}

/// libvirt's view of a guest's agent channel: `connected`, `disconnected` (it
/// follows QEMU's VSERPORT_CHANGE events).
fn agent_channel_state(lab: &Lab, guest: &Guest) -> String {
    let xml = retry_libvirt("virsh dumpxml", || {
        lab.virsh_run(&["dumpxml", guest.name()])
    });
    xml.lines()
        .find(|line| line.contains("org.qemu.guest_agent.0") && line.contains("state="))
        .and_then(|line| line.split("state='").nth(1))
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or("unknown")
        .to_string()
}

/// Scenario 4: guest agents that never answer, answer late, or answer 32 MiB, while
/// another guest has a real OOM.
#[test]
fn hostile_guest_agents_time_out_back_off_and_do_not_delay_another_vm() {
    let Some(lab) =
        lab_or_skip("hostile_guest_agents_time_out_back_off_and_do_not_delay_another_vm")
    else {
        return;
    };
    let modes = HOSTILE_AGENTS;
    let mut specs: Vec<GuestSpec> = modes
        .iter()
        .map(|mode| GuestSpec {
            hostile_agent: Some(*mode),
            console_shell: true,
            ..GuestSpec::default()
        })
        .collect();
    specs.push(GuestSpec::default());
    let mut guests = boot(lab, specs);
    let victim = guests.pop().expect("guests");
    let hostile = guests;
    for guest in &hostile {
        guest
            .wait_serial("HOSTILE-QGA-OPEN", Duration::from_secs(60))
            .expect("the hostile agent holds the port");
    }
    // libvirt connects to an agent when QEMU reports the guest opened its port (the
    // event is handled in a job of libvirtd's: on a busy daemon give it time).
    let wait_connected = Instant::now() + Duration::from_secs(30);
    let mut channel_at_boot: Vec<String>;
    loop {
        channel_at_boot = hostile
            .iter()
            .map(|guest| agent_channel_state(lab, guest))
            .collect();
        if channel_at_boot.iter().all(|state| state == "connected")
            || Instant::now() > wait_connected
        {
            break;
        }
        // A poll, not wait_until: at the deadline the states are recorded (and
        // asserted below with their values), not a panic here.
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut all: Vec<&Guest> = hostile.iter().collect();
    all.push(&victim);
    let stack = Stack::start("qga", "");
    stack.wait_agent_sees(&all);
    let pid = stack.agent_pid();
    let rss_before = settled_rss_kib(pid);

    let (_, baseline) = real_oom_latency(&stack, &victim, Hog::Harness);

    let watch = RssWatch::start(pid);
    for guest in &hostile {
        start_forging_partial_reports(guest);
    }
    for guest in &hostile {
        guest
            .wait_serial("(hostile-agent)", Duration::from_secs(90))
            .expect("the hostile guest prints its first kill line");
    }
    let hostile_started = Instant::now();
    // The agent now asks three hostile guest agents; the victim OOMs meanwhile.
    let (victim_event, under_hostile) = real_oom_latency(&stack, &victim, Hog::Harness);
    assert_eq!(victim_event["killed"]["comm"], "memhog");
    // The forged kill lines go on for a minute: each asks for the guest agent.
    let updated_before = stack.status_updated_at();
    let remaining = Duration::from_secs(65).saturating_sub(hostile_started.elapsed());
    // The scenario: the agent must keep polling through the whole minute of forgeries.
    std::thread::sleep(remaining);
    let observed = hostile_started.elapsed();
    let updated_after = stack.status_updated_at();
    let rss_peak = watch.finish();
    assert!(
        updated_after > updated_before,
        "the agent stopped polling ({updated_before} -> {updated_after})"
    );

    // What libvirt itself makes of each hostile agent (one `virsh qemu-agent-command`
    // with a 10 s timeout, like the agent's), measured after the agent's own counts.
    let lines_read: Vec<usize> = hostile
        .iter()
        .map(|guest| guest.serial_count("HOSTILE-QGA-GOT"))
        .collect();
    let libvirt_says: Vec<String> = hostile
        .iter()
        .map(|guest| {
            let started = Instant::now();
            let result = lab.virsh_run(&[
                "qemu-agent-command",
                guest.name(),
                "--timeout",
                "10",
                r#"{"execute":"guest-exec","arguments":{"path":"/bin/dmesg","capture-output":true}}"#,
            ]);
            let answer = match result {
                Ok(out) => format!("answered {} bytes", out.len()),
                Err(error) => {
                    let text = error.to_string();
                    let skip = text.chars().count().saturating_sub(200);
                    let cut: String = text.chars().skip(skip).collect();
                    format!("error {cut:?}")
                }
            };
            format!("{answer} after {:.1} s", started.elapsed().as_secs_f64())
        })
        .collect();

    let channel_at_end: Vec<String> = hostile
        .iter()
        .map(|guest| agent_channel_state(lab, guest))
        .collect();

    let log = String::from_utf8_lossy(&stack.agent_log()).into_owned();
    let ratio = under_hostile.as_secs_f64() / baseline.as_secs_f64().max(0.001);
    let mut figures = Vec::new();
    let mut problems = Vec::new();
    for (index, (guest, mode)) in hostile.iter().zip(modes).enumerate() {
        let uuid = uuid_of(lab, guest);
        let lines_read = lines_read[index];
        let opened = guest.serial_count("HOSTILE-QGA-OPEN");
        let kill_lines = guest.serial_count("(hostile-agent)");
        let noted = log
            .lines()
            .find(|line| line.contains(&uuid) && line.contains("Guest agent cannot read"))
            .map(str::to_string);
        figures.push(format!(
            "{mode:?}: libvirt saw the agent {} at boot ({} at the end), {lines_read} agent lines read for {kill_lines} partial reports; virsh: {}; noted: {}",
            channel_at_boot[index],
            channel_at_end[index],
            libvirt_says[index],
            noted
                .as_deref()
                .and_then(|line| line.split("error=").nth(1))
                .unwrap_or("NO")
                .trim()
        ));
        if opened != 1 {
            problems.push(format!("{mode:?}: the hostile agent did not open the port"));
        }
        if noted.is_none() {
            problems.push(format!(
                "{mode:?}: the agent log does not note that {}'s guest agent fails",
                guest.name()
            ));
        }
        // Each of the ~30 partial reports asks for the guest agent: without backoff that
        // is >= 30 calls (>= 1 line each). With it (30 s doubling) a few calls, each a
        // guest-sync plus perhaps the command; libvirt restarts by other tests may add one.
        if lines_read > 12 {
            problems.push(format!(
                "{mode:?}: {lines_read} guest agent lines in {observed:?}: retried in a tight loop"
            ));
        }
    }
    eprintln!(
        "HOSTILE guest agents: victim OOM listed {:.2} s after its kill line with 3 hostile \
         guest agents vs {:.2} s before (ratio {ratio:.2}); agent RSS {:.1} -> peak {:.1} MiB \
         over {:.0} s; {}",
        under_hostile.as_secs_f64(),
        baseline.as_secs_f64(),
        mib(rss_before),
        mib(rss_peak),
        observed.as_secs_f64(),
        figures.join("; ")
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        rss_peak.saturating_sub(rss_before) < MAX_RSS_GROWTH_KIB,
        "agent RSS grew from {rss_before} to {rss_peak} KiB"
    );
    // The point of starting them from init: libvirt talks to them. With none connected
    // libvirt refuses every call at once and the hostile answers are never exercised.
    assert!(
        channel_at_boot.iter().any(|state| state == "connected"),
        "libvirt saw none of the hostile agents connected: {channel_at_boot:?}"
    );
}
