//! The real `ballast-agent run` under a stand-in for systemd: a unix datagram socket
//! as `$NOTIFY_SOCKET` receives its READY=1 / RELOADING=1 / STOPPING=1, and SIGHUP
//! reloads its configuration file. Observed from the outside: the notify socket,
//! `/metrics` (polls counted) and the log. Also the watchdog (`$WATCHDOG_USEC`:
//! WATCHDOG=1 from the monitor loop, none while the test-only stall hook holds it)
//! and the bounds of the `/metrics` listener (file descriptors under slow clients).
//!
//! The host is an empty Proxmox VE (no VM running: `proxmox.config_dir` and
//! `run_dir` are empty temp dirs), so the test needs neither root nor libvirt.
#![allow(clippy::tests_outside_test_module)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ballast_testenv::notified::{pings, NotifiedDaemon};
use ballast_testenv::wait_until_showing;

/// The agent under the stand-in for systemd, and its `/metrics` port.
struct Agent {
    daemon: NotifiedDaemon,
    metrics_port: u16,
}

impl std::ops::Deref for Agent {
    type Target = NotifiedDaemon;
    fn deref(&self) -> &NotifiedDaemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut NotifiedDaemon {
        &mut self.daemon
    }
}

impl Agent {
    /// `ballast_agent_polls_total` from /metrics.
    fn polls(&self) -> u64 {
        let body = http_get(self.metrics_port, "/metrics")
            .unwrap_or_else(|error| panic!("GET /metrics: {error}\n{}", self.log()));
        body.lines()
            .find_map(|line| line.strip_prefix("ballast_agent_polls_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
            .unwrap_or_else(|| panic!("no ballast_agent_polls_total in\n{body}"))
    }
}

/// GET `path` from the agent's metrics listener (`reqwest::blocking`, a fresh connection
/// each time, 5 s limit): the body of a 200, or what went wrong.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().map_err(|e| e.to_string())?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The agent's YAML on an empty Proxmox host below `dir`, plus `extra` lines.
fn config(dir: &Path, metrics_port: u16, extra: &str) -> String {
    format!(
        "backend: proxmox\n\
         proxmox:\n  run_dir: {run}\n  config_dir: {pve}\n\
         state_dir: {state}\n\
         capture:\n  host_kernel: false\n\
         metrics:\n  listen: 127.0.0.1:{metrics_port}\n\
         history_secs: 3600\n\
         {extra}",
        run = dir.join("run").display(),
        pve = dir.join("pve").display(),
        state = dir.join("state").display(),
    )
}

fn start(dir: &Path, config_file: &Path, metrics_port: u16) -> Agent {
    start_with_env(dir, config_file, metrics_port, &[])
}

fn start_with_env(
    dir: &Path,
    config_file: &Path,
    metrics_port: u16,
    env: &[(&str, &std::ffi::OsStr)],
) -> Agent {
    for sub in ["run", "pve", "state"] {
        std::fs::create_dir_all(dir.join(sub)).expect("create the host dirs");
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_ballast-agent"));
    command.arg("run").arg("--config").arg(config_file);
    Agent {
        daemon: NotifiedDaemon::start(command, dir, "agent.log", env),
        metrics_port,
    }
}

#[test]
fn ready_after_the_first_poll_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, config(dir.path(), port, "poll_interval_secs: 30\n")).expect("write");
    let mut agent = start(dir.path(), &file, port);
    let ready = agent.next_notification(Duration::from_secs(60));
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    // READY means a poll was done and the metrics listener is up.
    assert_eq!(agent.polls(), 1);
    agent.signal("TERM");
    let stopping = agent.next_notification(Duration::from_secs(10));
    assert!(stopping.contains("STOPPING=1"), "{stopping:?}");
    let status = agent.child.wait().expect("wait");
    assert!(status.success(), "{status}:\n{}", agent.log());
}

#[test]
fn sighup_applies_a_new_poll_interval_keeps_the_old_config_on_a_bad_file_and_names_restart_fields()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, config(dir.path(), port, "poll_interval_secs: 30\n")).expect("write");
    let mut agent = start(dir.path(), &file, port);
    let ready = agent.next_notification(Duration::from_secs(60));
    assert!(ready.contains("READY=1"), "{ready:?}");
    assert_eq!(agent.polls(), 1, "one poll per 30 s");

    // 1. A valid change: polls every second from now on, debug logging.
    std::fs::write(
        &file,
        config(
            dir.path(),
            port,
            "poll_interval_secs: 1\nlog_level: debug\n",
        ),
    )
    .expect("write");
    agent.signal("HUP");
    assert!(agent
        .next_notification(Duration::from_secs(10))
        .contains("RELOADING=1"));
    assert!(agent
        .next_notification(Duration::from_secs(10))
        .contains("READY=1"));
    agent.wait_log("poll_interval_secs: 30 -> 1");
    agent.wait_log("log_level: info -> debug");
    wait_until_showing(
        "4 polls after the reload to 1 s",
        Duration::from_secs(20),
        || agent.polls() >= 4,
        || format!("{} polls; log:\n{}", agent.polls(), agent.log()),
    );

    // 2. A bad value: the error names the field, the 1 s interval stays.
    std::fs::write(&file, config(dir.path(), port, "poll_interval_secs: 0\n")).expect("write");
    agent.signal("HUP");
    agent.wait_log("poll_interval_secs (0) below minimum (1)");
    assert!(agent.log().contains("running one stays"), "{}", agent.log());
    // 3. A typo: the error names the key and its line.
    std::fs::write(&file, config(dir.path(), port, "poll_intervall_secs: 5\n")).expect("write");
    agent.signal("HUP");
    agent.wait_log("unknown field `poll_intervall_secs`");
    assert!(agent.alive(), "a bad file must not stop the agent");
    let before = agent.polls();
    // The scenario: 3 s pass, in which the running 1 s interval polls at least twice
    // (a wait for 2 polls could not tell 1 s from a 5 s interval).
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        agent.polls() >= before + 2,
        "the running 1 s interval stayed after the bad files:\n{}",
        agent.log()
    );

    // 4. Restart-only fields: named in the log, the running value stays.
    std::fs::write(
        &file,
        config(
            dir.path(),
            port,
            "poll_interval_secs: 1\nlog_level: debug\nhost_id: renamed\n",
        )
        .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:1"),
    )
    .expect("write");
    agent.signal("HUP");
    agent.wait_log("Field metrics.listen changed: restart required");
    agent.wait_log("Field host_id changed: restart required");
    assert!(agent.polls() > before, "/metrics still on the running port");

    agent.terminate();
}

#[test]
fn the_monitor_loop_pings_the_watchdog_and_a_stalled_loop_stops_the_pings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, config(dir.path(), port, "poll_interval_secs: 1\n")).expect("write");
    let stall = dir.path().join("stall");
    // WatchdogSec=2s: a ping at least every second.
    let mut agent = start_with_env(
        dir.path(),
        &file,
        port,
        &[
            ("WATCHDOG_USEC", std::ffi::OsStr::new("2000000")),
            (ballast_agent::run::STALL_ENV, stall.as_os_str()),
        ],
    );
    agent.wait_notification("READY=1", Duration::from_secs(60));

    let healthy = agent.notifications_for(Duration::from_secs(4));
    assert!(
        pings(&healthy) >= 3,
        "healthy loop: {healthy:?}\n{}",
        agent.log()
    );

    // The monitor loop stands still; the rest of the agent runs on.
    std::fs::write(&stall, "").expect("create the stall file");
    let _ = agent.notifications_for(Duration::from_millis(1500));
    let polls = agent.polls();
    let stalled = agent.notifications_for(Duration::from_secs(4));
    assert_eq!(pings(&stalled), 0, "stalled loop: {stalled:?}");
    assert_eq!(agent.polls(), polls, "the loop really stood still");
    assert!(agent.alive());

    std::fs::remove_file(&stall).expect("end the stall");
    let resumed = agent.notifications_for(Duration::from_secs(4));
    assert!(
        pings(&resumed) >= 2,
        "resumed loop: {resumed:?}\n{}",
        agent.log()
    );

    agent.terminate();
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .expect("read /proc/<pid>/fd")
}

#[test]
fn connections_beyond_the_metrics_cap_hold_no_file_descriptors_and_scrapes_resume() {
    const CLIENTS: usize = 300;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, config(dir.path(), port, "poll_interval_secs: 30\n")).expect("write");
    let agent = start(dir.path(), &file, port);
    let ready = agent.next_notification(Duration::from_secs(60));
    assert!(ready.contains("READY=1"), "{ready:?}");
    assert_eq!(agent.polls(), 1);
    let pid = agent.child.id();
    let before = open_fds(pid);

    // Slow clients: each sends half a request head and waits.
    let slow: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream.write_all(b"GET /metr").expect("write");
            stream
        })
        .collect();
    // The scenario: give an agent that (wrongly) serves more than its cap the time to
    // accept them all; the count below must stay at the cap.
    std::thread::sleep(Duration::from_secs(1));
    let during = open_fds(pid);
    let cap = ballast_agent::metrics::MAX_CONNECTIONS;
    assert!(
        during <= before + cap + 4,
        "{during} fds with {CLIENTS} slow clients ({before} before, cap {cap})"
    );
    // A few descriptors open at `before` (a status file write, a timer) may have
    // closed since: the same slack of 4 as above.
    assert!(
        during + 4 >= before + cap,
        "the cap's connections were served: {during} ({before} before, cap {cap})"
    );

    // Once they leave, scrapes are answered again.
    drop(slow);
    wait_until_showing(
        "a scrape answered after the slow clients left",
        Duration::from_secs(10),
        || {
            http_get(port, "/metrics")
                .is_ok_and(|body| body.contains("ballast_agent_polls_total 1"))
        },
        || format!("{:?}", http_get(port, "/metrics")),
    );
    wait_until_showing(
        "the slow clients' descriptors to close",
        Duration::from_secs(5),
        || open_fds(pid) <= before + 2,
        || {
            format!(
                "{} fds after the clients left ({before} before)",
                open_fds(pid)
            )
        },
    );
}
