//! `ballast-agent run` when libvirt does not answer at start (libvirtd stopped, or
//! not up yet at boot): the agent starts anyway and polls as soon as the daemon
//! answers; a URI that no daemon accepts stays a start-up error.
//!
//! The daemon is the real libvirtd of the lab (ballast-testvm starts it), reached
//! through a socket path that does not exist yet (`test+unix:///fleet.xml?socket=`):
//! the test makes it appear (a symlink to libvirtd's socket) while the agent runs,
//! which is what the agent sees when libvirtd comes up after it, without stopping
//! the shared libvirtd under other tests.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]
#![cfg(feature = "libvirt")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast_agent::status::Status;
use ballast_testenv::wait_until;

/// libvirtd's read-write socket (Debian's path).
const LIBVIRTD_SOCKET: &str = "/run/libvirt/libvirt-sock";

/// A libvirt test-driver node file with `names` as running domains.
fn fleet_xml(dir: &Path, names: &[String]) -> PathBuf {
    let mut xml = String::from("<node>\n");
    for (n, name) in names.iter().enumerate() {
        xml.push_str(&format!(
            "<domain type='test'><name>{name}</name>\
             <uuid>5eedcafe-0000-4000-8000-{n:012}</uuid>\
             <memory unit='MiB'>512</memory><currentMemory unit='MiB'>512</currentMemory>\
             <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>\
             <devices><memballoon model='virtio'><stats period='10'/></memballoon></devices>\
             </domain>\n"
        ));
    }
    xml.push_str("</node>\n");
    let path = dir.join("fleet.xml");
    std::fs::write(&path, xml).expect("write fleet.xml");
    path
}

fn agent_config(dir: &Path, uri: &str) -> PathBuf {
    let path = dir.join("agent.yaml");
    let yaml = format!(
        "host_id: startup-test\nbackend: libvirt\nlibvirt:\n  uri: \"{uri}\"\n\
         poll_interval_secs: 1\nstate_dir: {}\ncapture:\n  host_kernel: false\n",
        dir.join("state").display()
    );
    std::fs::write(&path, yaml).expect("write agent.yaml");
    path
}

fn start_agent(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("agent log");
    Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
        .args(["run", "--config"])
        .arg(config)
        .env("BALLAST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ballast-agent")
}

fn stop(mut agent: Child) {
    // SIGTERM, so the agent saves its state as under systemd.
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = agent.try_wait() {
            return;
        }
        // A poll, not wait_until: past the grace time the agent is killed, not failed.
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

fn listed_names(state_dir: &Path) -> Vec<String> {
    Status::read(&state_dir.join(ballast_agent::paths::STATUS_FILE_NAME))
        .map(|status| status.vms.into_iter().map(|vm| vm.name).collect())
        .unwrap_or_default()
}

#[test]
fn the_agent_starts_while_libvirt_does_not_answer_and_polls_once_it_does() {
    let Some(_lab) = ballast_testvm::lab_or_skip("libvirt_startup") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = (1..=3)
        .map(|n| format!("ballast-startup-{}-{n}", std::process::id()))
        .collect();
    let fleet = fleet_xml(dir.path(), &names);
    let socket = dir.path().join("libvirt-sock");
    let uri = format!(
        "test+unix://{}?socket={}",
        fleet.display(),
        socket.display()
    );
    let config = agent_config(dir.path(), &uri);
    let log = dir.path().join("agent.log");
    let mut agent = start_agent(&config, &log);

    // libvirt does not answer: the agent keeps running and says why.
    wait_until(
        "the agent to warn that libvirt does not answer",
        Duration::from_secs(30),
        || std::fs::read_to_string(&log).is_ok_and(|text| text.contains("libvirt does not answer")),
    );
    let early_exit = agent.try_wait().expect("agent status");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        early_exit.is_none(),
        "the agent exited ({early_exit:?}) while libvirt was down:\n{text}"
    );
    assert!(
        text.contains("libvirt does not answer"),
        "no start-up warning naming the cause:\n{text}"
    );
    assert!(listed_names(&dir.path().join("state")).is_empty());

    // The daemon answers: the next polls see every domain, without a restart.
    std::os::unix::fs::symlink(LIBVIRTD_SOCKET, &socket).expect("socket symlink");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut listed = Vec::new();
    while Instant::now() < deadline {
        listed = listed_names(&dir.path().join("state"));
        if names.iter().all(|name| listed.contains(name)) {
            break;
        }
        // A poll, not wait_until: at the deadline the agent is stopped first, then the
        // assertions below show what the status listed and the agent's log.
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_running = agent.try_wait().expect("agent status").is_none();
    stop(agent);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(still_running, "the agent exited:\n{text}");
    assert!(
        names.iter().all(|name| listed.contains(name)),
        "status lists {listed:?}, want {names:?}:\n{text}"
    );
}

#[test]
fn a_uri_no_libvirt_daemon_accepts_is_a_start_up_error() {
    let Some(_lab) = ballast_testvm::lab_or_skip("libvirt_startup") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = agent_config(dir.path(), "bogus:///no-such-driver");
    let output = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run ballast-agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started:\n{stderr}");
    assert!(
        stderr.contains("Failed to reach libvirt at bogus:///no-such-driver"),
        "{stderr}"
    );
}
