//! `ballast-agent run` against real libvirt guests: the daemon as an admin runs it.
//!
//! One guest's balloon is inflated from 512 to 200 MiB and a memory hog then runs in
//! it; another guest runs the same hog with its balloon empty. The agent must report
//! each OOM exactly once, with the host-measured balloon, the history showing the
//! inflation, and the right verdicts; a libvirtd restart and a guest reboot in between
//! lose nothing, and a restarted agent must not report them again.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast_testenv::wait_until;
use ballast_testvm::{lab_or_skip, scenario, GuestSpec};
use serde_json::Value;

struct Agent {
    child: Child,
}

impl Agent {
    fn start(config: &Path, log: &Path) -> Agent {
        let log_file = std::fs::File::create(log).expect("agent log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
            .args(["run", "--config"])
            .arg(config)
            .env("BALLAST_LOG", "info,ballast_agent=debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("ballast-agent starts");
        Agent { child }
    }

    fn stop(mut self) {
        // SIGTERM: the agent saves its capture positions on the way out.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every event the agent emitted, from its debugging journal (the spool holds the same).
fn events(state_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(state_dir.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn ooms_of(state_dir: &Path, vm_name: &str) -> Vec<Value> {
    events(state_dir)
        .into_iter()
        .filter(|e| e["type"] == "oom" && e["vm"]["name"] == vm_name)
        .collect()
}

fn state_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-agent-real-vm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("state dir");
    dir
}

#[test]
fn the_agent_reports_each_guest_oom_once_with_the_balloon_that_caused_it() {
    let Some(lab) =
        lab_or_skip("the_agent_reports_each_guest_oom_once_with_the_balloon_that_caused_it")
    else {
        return;
    };
    // It restarts libvirtd: no other test's libvirt guest may exist meanwhile.
    let exclusive = lab
        .exclusive_libvirtd()
        .expect("the lab's libvirtd to this test alone");
    let spec = GuestSpec {
        memory_mib: 512,
        current_mib: 512,
        stats_period_secs: 2,
        ..GuestSpec::default()
    };
    let mut guests = lab
        .boot_many(vec![spec.clone(), spec])
        .expect("guests boot");
    let mut plain = guests.pop().expect("two guests");
    let ballooned = guests.pop().expect("two guests");
    for guest in [&ballooned, &plain] {
        guest
            .wait_ready(Duration::from_secs(120))
            .expect("guest ready");
    }

    let dir = state_dir();
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {dir}\npoll_interval_secs: 2\nhost_id: test-host\njournal_file: {dir}/journal.jsonl\n",
            dir = dir.display()
        ),
    )
    .expect("config written");
    let agent = Agent::start(&config, &dir.join("agent.log"));
    wait_until(
        "the agent to see both guests",
        Duration::from_secs(60),
        || {
            let status = std::fs::read_to_string(dir.join("status.json")).unwrap_or_default();
            status.contains(ballooned.name()) && status.contains(plain.name())
        },
    );
    // A few polls of the full balloon before it moves.
    std::thread::sleep(Duration::from_secs(5));

    let outcome = scenario::inflate_then_grow(&ballooned, 200, Duration::from_secs(90))
        .expect("balloon-induced OOM");
    let killed_at = Instant::now();
    wait_until(
        "the balloon-induced OOM event",
        Duration::from_secs(60),
        || !ooms_of(&dir, ballooned.name()).is_empty(),
    );
    eprintln!(
        "serial kill line -> event in the spool: {:?} (inflate took {:?}, hog to kill {:?})",
        killed_at.elapsed(),
        outcome.inflate_time,
        outcome.hog_to_kill
    );

    // libvirtd restarts and the second guest reboots while the agent runs: the agent
    // reconnects, keeps tailing, and still catches the next OOM.
    let restart = lab.restart_libvirtd(&exclusive).expect("libvirtd restarts");
    plain.reboot().expect("guest resets");
    plain
        .wait_ready(Duration::from_secs(120))
        .expect("guest ready again");
    eprintln!("libvirtd restart took {restart:?}; guest rebooted");
    plain.start_hog(16, 100).expect("hog starts");
    plain
        .wait_serial("Out of memory: Killed process", Duration::from_secs(120))
        .expect("plain OOM");
    wait_until("the plain OOM event", Duration::from_secs(60), || {
        !ooms_of(&dir, plain.name()).is_empty()
    });
    // Let the guest-agent path (dmesg) catch up: it must not add a second event.
    std::thread::sleep(Duration::from_secs(8));
    agent.stop();

    let balloon_ooms = ooms_of(&dir, ballooned.name());
    assert_eq!(
        balloon_ooms.len(),
        1,
        "exactly one event: {balloon_ooms:#?}"
    );
    let oom = &balloon_ooms[0];
    assert_eq!(oom["analysis"]["verdict"], "balloon", "{oom:#}");
    assert_eq!(oom["report"]["killed"]["comm"], "memhog");
    let actual = oom["balloon_at_oom"]["actual_kib"]
        .as_u64()
        .expect("host-measured actual");
    assert!(
        (200 * 1024 - 4096..=200 * 1024 + 4096).contains(&actual),
        "balloon at 200 MiB: {actual}"
    );
    let held = oom["analysis"]["balloon_held_kb"].as_u64().expect("held");
    assert!(held >= 300 * 1024, "the balloon held ~312 MiB: {held}");
    let history: Vec<u64> = oom["balloon_history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|p| p["actual_kib"].as_u64())
        .collect();
    assert_eq!(
        history.first().copied(),
        Some(512 * 1024),
        "history starts full: {history:?}"
    );
    assert!(
        history.iter().any(|a| *a <= 210 * 1024),
        "history shows the inflation: {history:?}"
    );

    let plain_ooms = ooms_of(&dir, plain.name());
    assert_eq!(plain_ooms.len(), 1, "exactly one event: {plain_ooms:#?}");
    let plain_oom = &plain_ooms[0];
    assert_ne!(plain_oom["analysis"]["verdict"], "balloon", "{plain_oom:#}");
    assert_eq!(plain_oom["analysis"]["balloon_held_kb"], 0);

    // A restarted agent reads on from its saved positions: nothing is reported twice.
    // (Only this test's VMs: the agent also watches whatever else runs on this libvirtd.)
    let ours = |dir: &Path| ooms_of(dir, ballooned.name()).len() + ooms_of(dir, plain.name()).len();
    let before = ours(&dir);
    let agent = Agent::start(&config, &dir.join("agent-2.log"));
    // The scenario: the restarted agent runs for a while (several polls and serial
    // reads) in which a repeated OOM would show.
    std::thread::sleep(Duration::from_secs(12));
    agent.stop();
    let after = ours(&dir);
    assert_eq!(before, after, "the restarted agent repeated an OOM");
    let _ = std::fs::remove_dir_all(&dir);
}
