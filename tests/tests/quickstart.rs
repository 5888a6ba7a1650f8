//! The README's first set-up command, `./scripts/quickstart.sh`, run as a user runs it:
//! it must start a collector and an agent, boot the demo guest, get the guest's
//! balloon-induced OOM explained in the API and the dashboard, print the URL, and on
//! Ctrl-C stop everything and remove the guest. The script runs on the test suite's
//! own debug binaries (`BALLAST_QUICKSTART_BIN_DIR`) instead of its release build; the
//! rest (dependency check, configs, token, services, demo guest, output) is the
//! script's own.
//!
//! It runs from a clone under a 0700 directory, as an admin working as root clones into
//! `/root/ballast` (mode 0700 on Debian): the script, its state and the binaries live
//! there, and QEMU (as `libvirt-qemu`) must still reach the demo guest's kernel.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ballast_tests::{binary, example, free_port, http_get, profile_dir, repo_root};
use ballast_testvm::lab_or_skip;
use serde_json::Value;

/// Boot, 10 s before inflating, the OOM, delivery: about a minute under TCG here.
const OOM_TIMEOUT: Duration = Duration::from_secs(300);

/// The directory of the debug binaries, with both binaries and the demo guest built.
fn bin_dir() -> PathBuf {
    binary("ballast-agent");
    binary("ballast-collector");
    example(
        "ballast-testvm",
        "crates/ballast-testvm/examples/demo_guest.rs",
    );
    profile_dir()
}

/// A copy of the clone's scripts (and the binaries) under a 0700 directory, like
/// `/root/ballast`: `<tmp 0700>/ballast/{scripts,Cargo.toml,target/debug}`.
struct PrivateClone {
    _parent: tempfile::TempDir,
    root: PathBuf,
}

impl PrivateClone {
    fn new(bin_dir: &Path) -> Self {
        let parent = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700");
        let root = parent.path().join("ballast");
        let bins = root.join("target/debug");
        std::fs::create_dir_all(bins.join("examples")).expect("clone dirs");
        let copy = |from: &Path, to: &Path| {
            let status = Command::new("cp")
                .arg("-a")
                .arg(from)
                .arg(to)
                .status()
                .expect("cp runs");
            assert!(status.success(), "cp -a {from:?} {to:?}");
        };
        copy(&repo_root().join("scripts"), &root);
        copy(&repo_root().join("Cargo.toml"), &root);
        for binary in ["ballast-agent", "ballast-collector", "examples/demo_guest"] {
            copy(&bin_dir.join(binary), &bins.join(binary));
        }
        Self {
            _parent: parent,
            root,
        }
    }

    fn bin_dir(&self) -> PathBuf {
        self.root.join("target/debug")
    }

    /// The script's state folder (its default, `<clone>/.quickstart`).
    fn work(&self) -> PathBuf {
        self.root.join(".quickstart")
    }
}

/// The kernel file of a running libvirt domain (`<os><kernel>`).
fn domain_kernel(name: &str) -> PathBuf {
    let output = Command::new("virsh")
        .args(["-c", "qemu:///system", "dumpxml", name])
        .output()
        .expect("virsh dumpxml runs");
    let xml = String::from_utf8_lossy(&output.stdout);
    let kernel = xml
        .split_once("<kernel>")
        .and_then(|(_, rest)| rest.split_once("</kernel>"))
        .map(|(path, _)| PathBuf::from(path.trim()))
        .unwrap_or_else(|| panic!("no <kernel> in the domain XML of {name}: {xml}"));
    kernel
}

/// True when a user who is neither the owner nor in the group can read `file`:
/// every folder above it searchable by others, the file readable by others.
fn readable_by_others(file: &Path) -> bool {
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .map(|meta| meta.permissions().mode())
            .unwrap_or(0)
    };
    mode(file) & 0o004 != 0
        && file
            .ancestors()
            .skip(1)
            .all(|folder| mode(folder) & 0o001 != 0)
}

/// The script's stdout, line by line, as it prints them.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            eprintln!("quickstart| {line}");
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

fn domain_exists(name: &str) -> bool {
    Command::new("virsh")
        .args(["-c", "qemu:///system", "domstate", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Ctrl-C to the script (SIGINT to its process, as a terminal sends it).
fn interrupt(child: &Child) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
}

/// Stops the script (if still running) when the test fails half-way.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = interrupt(&self.0);
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_readme_quickstart_from_a_0700_clone_explains_the_demo_guests_balloon_oom_and_cleans_up() {
    let Some(_lab) = lab_or_skip("quickstart") else {
        return;
    };
    let clone = PrivateClone::new(&bin_dir());
    let work = clone.work();
    let port = free_port();
    let started = Instant::now();
    let mut script = Script(
        Command::new(clone.root.join("scripts/quickstart.sh"))
            .env("BALLAST_QUICKSTART_BIN_DIR", clone.bin_dir())
            .env_remove("BALLAST_QUICKSTART_DIR")
            // The harness's own default lab, as a user's run has it.
            .env_remove("BALLAST_LAB_DIR")
            .env("BALLAST_QUICKSTART_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("quickstart.sh starts"),
    );
    let lines = stdout_lines(&mut script.0);

    // What it prints: the verdicts, the explanation, then the URL of the event.
    let mut printed = Vec::new();
    let url = loop {
        let left = OOM_TIMEOUT.saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("quickstart: the explained OOM:") {
                    break url.trim().to_string();
                }
                printed.push(line);
            }
            Err(_) => {
                let agent_log = std::fs::read_to_string(work.join("agent.log")).unwrap_or_default();
                panic!(
                    "no explained OOM after {:?}; printed: {printed:#?}\nagent log:\n{agent_log}",
                    started.elapsed()
                );
            }
        }
    };
    eprintln!("quickstart printed the event after {:?}", started.elapsed());
    assert!(
        printed
            .iter()
            .any(|line| line == "verdict: balloon / correlation: balloon"),
        "{printed:#?}"
    );
    // The explanation is wrapped at 88 columns: read it as one text.
    assert!(printed.join(" ").contains("Killed: memhog"), "{printed:#?}");

    // The URL it printed opens the dashboard page of that OOM; the API agrees.
    let prefix = format!("http://127.0.0.1:{port}");
    let path = url.strip_prefix(&prefix).expect("a loopback URL");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let (status, page) = http_get(addr, path, None).expect("dashboard page");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("memhog"), "{page}");
    let id = path.strip_prefix("/ooms/").expect("/ooms/<id>");
    let (status, body) = http_get(addr, &format!("/api/v1/ooms/{id}"), None).expect("API");
    assert_eq!(status, 200, "{body}");
    let event: Value = serde_json::from_str(&body).expect("JSON");
    let guest = std::fs::read_to_string(work.join("demo.name")).expect("demo.name");
    assert_eq!(event["vm"]["name"], guest.trim(), "{event:#}");
    assert_eq!(event["correlation"]["verdict"], "balloon", "{event:#}");
    assert!(
        domain_exists(guest.trim()),
        "the demo guest runs until Ctrl-C"
    );
    // The clone is private (0700), the guest's kernel is not: QEMU runs as another user.
    let kernel = domain_kernel(guest.trim());
    assert!(
        !kernel.starts_with(&clone.root),
        "{kernel:?} is inside the private clone"
    );
    assert!(readable_by_others(&kernel), "{kernel:?}");

    // Ctrl-C: the script exits, the guest is gone, nothing listens any more.
    let status = interrupt(&script.0).expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = script.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "quickstart.sh ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(exit.code(), Some(130), "exit status after Ctrl-C");
    assert!(
        !domain_exists(guest.trim()),
        "the demo guest was left behind"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the collector still listens after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
