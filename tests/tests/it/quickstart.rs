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

use ballast_tests::{binary, example, free_port, http_get, profile_dir, repo_root, wait_until};
use ballast_testvm::{lab_or_skip, GuestKernel};
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

/// Reads the script's lines until it prints the explained OOM's URL; returns the URL
/// and what it printed before. Fails after `OOM_TIMEOUT` with `logs()` in the message.
fn explained_oom_url(
    lines: &mpsc::Receiver<String>,
    started: Instant,
    logs: impl Fn() -> String,
) -> (String, Vec<String>) {
    let mut printed = Vec::new();
    loop {
        let left = OOM_TIMEOUT.saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("quickstart: the explained OOM:") {
                    return (url.trim().to_string(), printed);
                }
                printed.push(line);
            }
            Err(_) => panic!(
                "no explained OOM after {:?}; printed: {printed:#?}\n{}",
                started.elapsed(),
                logs()
            ),
        }
    }
}

/// What both quickstarts print and serve for the demo's OOM: the balloon verdicts and
/// the memhog kill on stdout, and the event behind the printed URL in the API.
fn explained_event(printed: &[String], url: &str, port: u16) -> (SocketAddr, Value) {
    let path = url
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .expect("a loopback URL");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let id = path.strip_prefix("/ooms/").expect("/ooms/<id>");
    let (status, body) = http_get(addr, &format!("/api/v1/ooms/{id}"), None).expect("API");
    assert_eq!(status, 200, "{body}");
    let event: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        printed
            .iter()
            .any(|line| line == "verdict: balloon / correlation: balloon"),
        "{printed:#?}\n{}",
        balloon_figures(&event)
    );
    // The explanation is wrapped at 88 columns: read it as one text.
    assert!(printed.join(" ").contains("Killed: memhog"), "{printed:#?}");
    (addr, event)
}

/// What the stored correlation went by, for a failure message: the balloon at the OOM,
/// the agent's last history points, the stored rollups (a quickstart run has a few),
/// the correlation with its reasons.
fn balloon_figures(event: &Value) -> String {
    let last = |key: &str, n: usize| -> Vec<Value> {
        let items = event[key].as_array().cloned().unwrap_or_default();
        items[items.len().saturating_sub(n)..].to_vec()
    };
    let history: Vec<String> = last("balloon_history", 6)
        .iter()
        .map(|p| format!("{}: actual {}", p["at_ms"], p["actual_kib"]))
        .collect();
    let rollups: Vec<String> = last("rollups", usize::MAX)
        .iter()
        .map(|r| {
            format!(
                "{} + {} s: actual {}",
                r["period_start_ms"], r["period_secs"], r["actual_kib"]
            )
        })
        .collect();
    format!(
        "time_ms {}\nballoon_at_oom {}\nlast history points {history:#?}\nrollups \
         {rollups:#?}\ncorrelation_detail {:#}",
        event["time_ms"], event["balloon_at_oom"], event["correlation_detail"]
    )
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

/// The script started as a terminal starts it, with SIGINT, SIGHUP and SIGTERM at their
/// default handling (`env --default-signal`). A test run from a background job or
/// under nohup inherits them ignored, and a shell cannot trap a signal that was ignored
/// when it started: the script would never see the test's Ctrl-C.
fn as_from_a_terminal(script: &Path) -> Command {
    let mut command = Command::new("env");
    command.arg("--default-signal=INT,HUP,TERM").arg(script);
    command
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
        as_from_a_terminal(&clone.root.join("scripts/quickstart.sh"))
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
    let (url, printed) = explained_oom_url(&lines, started, || {
        let agent_log = std::fs::read_to_string(work.join("agent.log")).unwrap_or_default();
        format!("agent log:\n{agent_log}")
    });
    eprintln!("quickstart printed the event after {:?}", started.elapsed());
    let (addr, event) = explained_event(&printed, &url, port);
    // The URL it printed opens the dashboard page of that OOM.
    let path = url
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .expect("a loopback URL");
    let (status, page) = http_get(addr, path, None).expect("dashboard page");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("memhog"), "{page}");
    let guest = std::fs::read_to_string(work.join("demo.name")).expect("demo.name");
    assert_eq!(event["vm"]["name"], guest.trim(), "{event:#}");
    assert_eq!(event["correlation"]["verdict"], "balloon", "{event:#}");
    assert!(
        domain_exists(guest.trim()),
        "the demo guest runs until Ctrl-C"
    );
    // The balloon-policy report over the same store: the floor it recommends now is above
    // the size the guest just OOMed at (200 MiB), even though the working-set rollups
    // never saw the hog grow between two samples (issue 17, item 4).
    let output = Command::new(clone.bin_dir().join("ballast-collector"))
        .args(["report", "balloon-policy", "--format", "json", "--config"])
        .arg(work.join("collector.yaml"))
        .output()
        .expect("ballast-collector report runs");
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("report JSON");
    let policy = report["vms"]
        .as_array()
        .and_then(|vms| vms.iter().find(|vm| vm["name"] == guest.trim()))
        .unwrap_or_else(|| panic!("no policy for {guest}: {report:#}"));
    let floor = policy["recommended_floor_kib"].as_u64().unwrap_or(0);
    assert!(floor > 200 * 1024, "floor {floor} KiB: {policy:#}");
    assert_eq!(policy["floor_check"]["ooms_would_recur"], 0, "{policy:#}");
    assert!(
        policy["floor_check"]["balloon_ooms"].as_u64().unwrap_or(0) >= 1,
        "{policy:#}"
    );
    eprintln!(
        "balloon-policy floor after the demo OOM: {} MiB ({})",
        floor / 1024,
        policy["floor_check"]["summary"]
    );

    // The clone is private (0700), the guest's kernel is not: QEMU runs as another user.
    let kernel = domain_kernel(guest.trim());
    assert!(
        !kernel.starts_with(&clone.root),
        "{kernel:?} is inside the private clone"
    );
    assert!(readable_by_others(&kernel), "{kernel:?}");

    // Ctrl-C: the script exits, the guest is gone, nothing listens any more.
    let exit = ctrl_c_and_wait(&mut script);
    assert_eq!(exit, Some(130), "exit status after Ctrl-C");
    assert!(
        !domain_exists(guest.trim()),
        "the demo guest was left behind"
    );
    wait_stops_listening(&addr);
}

/// The debug binaries plus `examples/demo_image` (the Proxmox path's guest image).
fn proxmox_bin_dir() -> PathBuf {
    binary("ballast-agent");
    binary("ballast-collector");
    example(
        "ballast-testvm",
        "crates/ballast-testvm/examples/demo_image.rs",
    );
    profile_dir()
}

/// Processes whose command line mentions `needle` (the mock node's run dir).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

/// A mock Proxmox node: run and config dirs in a temporary directory, the MOCK
/// `qm`/`pvesh` first on the PATH, every call of theirs logged.
struct MockNode {
    _dir: tempfile::TempDir,
    run_dir: PathBuf,
    config_dir: PathBuf,
    log: PathBuf,
}

impl MockNode {
    fn new() -> MockNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_dir = dir.path().join("etc/pve/qemu-server");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        MockNode {
            run_dir: dir.path().join("run/qemu-server"),
            log: dir.path().join("mock-pve.log"),
            config_dir,
            _dir: dir,
        }
    }

    /// `scripts/quickstart.sh` as root runs it on this node, stdout piped.
    fn quickstart(&self, work: &Path, port: u16) -> Command {
        let path = format!(
            "{}:{}",
            repo_root().join("tests/mock-pve/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = as_from_a_terminal(&repo_root().join("scripts/quickstart.sh"));
        command
            .env("PATH", path)
            .env("BALLAST_ASSUME_PROXMOX", "1")
            .env("BALLAST_PVE_RUN_DIR", &self.run_dir)
            .env("BALLAST_PVE_CONFIG_DIR", &self.config_dir)
            .env("BALLAST_MOCK_PVE_LOG", &self.log)
            .env("BALLAST_QUICKSTART_BIN_DIR", proxmox_bin_dir())
            .env("BALLAST_QUICKSTART_DIR", work)
            .env("BALLAST_QUICKSTART_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        command
    }

    /// The `qm`/`pvesh` calls the script made, one per line.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Sends Ctrl-C and returns the script's exit code once it stopped (60 s at most).
fn ctrl_c_and_wait(script: &mut Script) -> Option<i32> {
    let status = interrupt(&script.0).expect("kill runs");
    assert!(status.success());
    let exit = wait_until(
        "quickstart.sh to exit after Ctrl-C",
        Duration::from_secs(60),
        || script.0.try_wait().expect("wait"),
    );
    exit.code()
}

/// Waits until nothing listens on `addr` any more (the collector stopped), 15 s at most.
fn wait_stops_listening(addr: &SocketAddr) {
    wait_until(
        "the collector to stop listening after Ctrl-C",
        Duration::from_secs(15),
        || TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_err(),
    );
}

/// Proxmox VE cannot run here: `qm` and `pvesh` are a MOCK (tests/mock-pve/bin) that
/// starts a real qemu-system-x86_64 the way qemu-server does (sockets and pid file in
/// a run dir, the config in a config dir, both temporary). Everything else is the
/// script's own: the image without libvirt, `qm create/start`, the balloon over QMP,
/// the hog through `qm guest exec`, the agent on `backend: proxmox`, and on Ctrl-C
/// `qm stop` + `qm destroy --purge` of the demo VM.
#[test]
fn quickstart_on_a_mock_proxmox_host_explains_the_demo_oom_with_qm_and_qmp() {
    let Some(lab) = lab_or_skip("quickstart_on_a_mock_proxmox_host") else {
        return;
    };
    // The mock boots QEMU with the accelerator the harness found working here.
    let accel = lab.accel(GuestKernel::Debian61).expect("accelerator");
    let node = MockNode::new();
    let work = tempfile::tempdir().expect("tempdir");
    let (run_dir, config_dir) = (&node.run_dir, &node.config_dir);
    let port = free_port();
    let started = Instant::now();
    let mut script = Script(
        node.quickstart(work.path(), port)
            .env("BALLAST_MOCK_PVE_ACCEL", accel.qemu_accel())
            .spawn()
            .expect("quickstart.sh starts"),
    );
    let lines = stdout_lines(&mut script.0);

    let (url, printed) = explained_oom_url(&lines, started, || {
        let read = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap_or_default();
        format!(
            "agent log:\n{}\nqm log:\n{}",
            read("agent.log"),
            read("qm.log")
        )
    });
    eprintln!(
        "quickstart (mock Proxmox) printed the event after {:?}",
        started.elapsed()
    );
    assert!(
        !printed.iter().any(|line| line.contains("cannot run")),
        "the demo fell back: {printed:#?}"
    );
    // The event in the API is the demo VM's, as the agent's Proxmox backend named it.
    let (addr, event) = explained_event(&printed, &url, port);
    let name = std::fs::read_to_string(work.path().join("demo.name")).expect("demo.name");
    let name = name.trim();
    assert_eq!(event["vm"]["name"], name, "{event:#}");
    let vmid = name
        .strip_prefix("ballast-demo-")
        .expect("ballast-demo-<vmid>");
    let agent_config = std::fs::read_to_string(work.path().join("agent.yaml")).expect("agent.yaml");
    assert!(agent_config.contains("backend: proxmox"), "{agent_config}");
    assert!(
        agent_config.contains(&format!("read_serial_vmids: [{vmid}]")),
        "{agent_config}"
    );
    let conf = config_dir.join(format!("{vmid}.conf"));
    assert!(conf.is_file(), "the demo VM's config until Ctrl-C");
    let run_dir_text = run_dir.display().to_string();
    assert!(
        !processes_mentioning(&run_dir_text).is_empty(),
        "the demo VM's QEMU runs until Ctrl-C"
    );

    // Ctrl-C: the demo VM is stopped and destroyed, nothing of it is left.
    assert_eq!(
        ctrl_c_and_wait(&mut script),
        Some(130),
        "exit status after Ctrl-C"
    );
    assert!(!conf.exists(), "qm destroy left {}", conf.display());
    let left = processes_mentioning(&run_dir_text);
    assert!(left.is_empty(), "QEMU left behind: {left:#?}");
    let calls = node.calls();
    for expected in [
        format!("qm create {vmid} "),
        format!("qm start {vmid}"),
        format!("qm guest exec {vmid} "),
        format!("qm stop {vmid}"),
        format!("qm destroy {vmid} --purge"),
    ] {
        assert!(
            calls.iter().any(|call| call.starts_with(&expected)),
            "no `{expected}` in {calls:#?}"
        );
    }
    assert!(
        calls
            .iter()
            .all(|call| call.starts_with("pvesh get /cluster/nextid")
                || call
                    .split_whitespace()
                    .nth(if call.starts_with("qm guest") { 3 } else { 2 })
                    == Some(vmid)),
        "a qm call on another VM: {calls:#?}"
    );
    wait_stops_listening(&addr);
}

/// Where `qm create` fails (here: the MOCK refuses it), the quickstart says so plainly,
/// runs the collector and the agent read-only (no console, no guest agent) and explains
/// the host's kernel log; it never starts, stops or destroys a VM, and the node's
/// existing VM (a config written before) is left exactly as it was.
#[test]
fn quickstart_on_a_mock_proxmox_host_where_qm_create_fails_runs_read_only_and_explains_the_kernel_log(
) {
    // The image builds before `qm create` is tried: it needs the lab's tools and kernel.
    let Some(_lab) = lab_or_skip("quickstart_on_a_mock_proxmox_host (fallback)") else {
        return;
    };
    let node = MockNode::new();
    let existing = node.config_dir.join("100.conf");
    let existing_text = "memory: 4096\nname: production-db\nserial0: socket\n";
    std::fs::write(&existing, existing_text).expect("existing VM config");
    let kernel_log = repo_root()
        .join("crates/ballast-oom/tests/fixtures/oom/6.11-qemu-global-rss-anon-uid-cpu.log");
    let work = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut script = Script(
        node.quickstart(work.path(), port)
            .env("BALLAST_MOCK_PVE_FAIL", "create")
            .env("BALLAST_QUICKSTART_KERNEL_LOG", &kernel_log)
            .spawn()
            .expect("quickstart.sh starts"),
    );
    let lines = stdout_lines(&mut script.0);
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no end of the fallback's output: {printed:#?}"));
        let done = line == "quickstart: Ctrl-C stops the collector and the agent.";
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    assert!(
        text.contains("quickstart: the demo VM cannot run on this host: qm create 101 failed"),
        "{text}"
    );
    assert!(text.contains("READ-ONLY"), "{text}");
    // The explanation of the kernel log's report, by the real agent binary.
    assert!(text.contains("1 OOM report in"), "{text}");
    assert!(text.contains("killed:  stress-ng-vm"), "{text}");

    let agent_config = std::fs::read_to_string(work.path().join("agent.yaml")).expect("agent.yaml");
    for line in [
        "backend: proxmox",
        "  read_serial_vmids: []",
        "  guest_agent: off",
    ] {
        assert!(
            agent_config.lines().any(|l| l == line),
            "{line} in {agent_config}"
        );
    }
    // The collector and the agent keep running until Ctrl-C.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let (status, _) = http_get(addr, "/", None).expect("dashboard");
    assert_eq!(status, 200);

    assert_eq!(
        ctrl_c_and_wait(&mut script),
        Some(130),
        "exit status after Ctrl-C"
    );
    assert_eq!(
        std::fs::read_to_string(&existing).expect("the existing VM's config"),
        existing_text
    );
    let calls = node.calls();
    assert!(
        calls.iter().any(|call| call.starts_with("qm create 101 ")),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .all(|call| call.starts_with("pvesh get /cluster/nextid")
                || call.starts_with("qm create 101 ")),
        "a VM was started, stopped or destroyed: {calls:#?}"
    );
}
