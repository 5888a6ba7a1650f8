//! Deploy tests (issue 9): the Debian packages, systemd units, Prometheus alert rules
//! and Grafana dashboard of `deploy/`, as docs/deploy.md describes them.
//!
//! Fast (seconds):
//! - the metric names in docs/metrics.md, the dashboard and the alert rules are the
//!   ones `ballast_agent::metrics::render` exports, and docs/metrics.md lists them all;
//! - every dashboard query is valid PromQL (`promtool check rules` on a generated file);
//! - `promtool test rules deploy/prometheus/ballast-rules.test.yml`, every alert tested;
//! - the units carry the documented directives (`systemd-analyze security` threshold).
//!
//! Slow: [`packages_install_run_and_purge_in_a_clean_debian_12_root`] and
//! [`packages_install_run_and_purge_in_a_clean_debian_13_root`] share one package
//! build and run in parallel (figures in docs/deploy.md, "Test cost"):
//! 1. scripts/package.sh builds ballast-agent, ballast-agent-libvirt and
//!    ballast-collector (Cargo.toml's `package-test` profile: the packaging is what is
//!    checked; `BALLAST_CARGO_PROFILE=release` packages the shipped build); `dpkg-deb -f` shows ballast-agent does not depend on libvirt0;
//! 2. a minimal Debian 12 (bookworm) resp. 13 (trixie) root (`debootstrap
//!    --variant=minbase`, plus systemd, libvirt0 for the libvirt flavour, procps
//!    for the units' /bin/kill and adduser, which Debian 13's minbase lacks) is
//!    built once into
//!    target/ballast-deploy/<release>-base and copied fresh for every run;
//! 3. `dpkg -i` in a chroot runs the real maintainer scripts (and refuses unmet
//!    dependencies: the Debian 12 build's shlib dependencies resolve on Debian 13);
//!    files, modes, the `ballast` user, conffiles and unit enablement are checked,
//!    `ldd` finds every library of both binaries in the root, and
//!    `systemd-analyze verify --root` checks the installed units;
//! 4. the installed binaries run on the shipped configuration: `ballast-agent
//!    check-config`; `ballast-collector serve` as user `ballast` on a loopback port
//!    answers /healthz, creates a token; `ballast-agent run` (Proxmox backend, no VMs)
//!    sends READY=1 to a datagram socket given as $NOTIFY_SOCKET, serves /metrics,
//!    reloads on the unit's `/bin/kill -HUP` (RELOADING=1, READY=1), and both stop
//!    on SIGTERM with status 0;
//! 5. a changed conffile survives a reinstall and a switch to ballast-agent-libvirt;
//!    purging the replaced flavour leaves the state; remove keeps it; purge deletes it.
//!
//! No mounts: nothing is mounted in the chroot (no /proc), so removing it is safe.
//! The base root and its copies come from `ballast_tests::debian_root` (shared with
//! install_deps_host_safety.rs).
//!
//! Needs root, chroot, debootstrap, dpkg-deb, systemd-analyze and promtool
//! (scripts/install-deps.sh). Outside CI a missing tool skips the test loudly; in CI
//! it fails. `BALLAST_DEBIAN_MIRROR` overrides the mirror (default deb.debian.org);
//! `BALLAST_KEEP_DEPLOY_ROOT=1` keeps the installed root for inspection.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ballast_agent::fleet::Fleet;
use ballast_agent::metrics::{render, AgentCounters};
use ballast_tests::debian_root::{base_root, is_root, require, run, tool, Root};

// ---------------------------------------------------------------- helpers

fn repo() -> PathBuf {
    ballast_tests::repo_root()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

// ---------------------------------------------------------------- metric names

/// The metric families the agent exports (every `# TYPE` line of an empty render).
fn exported_metrics() -> BTreeSet<String> {
    // The sender's families follow the monitor's on the same /metrics page.
    let sender = ballast_agent::metrics::render_sink(&ballast_agent::sink::SinkStats::default(), 0);
    (render(&Fleet::new(1), &AgentCounters::default()) + &sender)
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `ballast_…` identifier in `text`.
fn ballast_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut index = 0;
    while let Some(offset) = text[index..].find("ballast_") {
        let start = index + offset;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + "ballast_".len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if boundary {
            names.insert(text[start..end].to_string());
        }
        index = end;
    }
    names
}

/// Every PromQL expression of the dashboard (panel targets, annotations, variables).
fn dashboard_queries() -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("expr" | "definition", serde_json::Value::String(text)) => {
                            out.push(text.clone())
                        }
                        _ => walk(inner, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let text = read(&repo().join("deploy/grafana/ballast.json"));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    walk(&dashboard, &mut queries);
    queries
}

#[test]
fn docs_dashboard_and_rules_name_only_exported_metrics() {
    let exported = exported_metrics();
    assert!(exported.len() >= 18, "{exported:?}");
    let docs = read(&repo().join("docs/metrics.md"));
    let documented = ballast_names(&docs);
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "docs/metrics.md misses {undocumented:?}"
    );
    for (source, names) in [
        ("docs/metrics.md", documented),
        (
            "deploy/grafana/ballast.json",
            ballast_names(&dashboard_queries().join("\n")),
        ),
        (
            "deploy/prometheus/ballast-rules.yml",
            ballast_names(&read(&repo().join("deploy/prometheus/ballast-rules.yml"))),
        ),
    ] {
        // ballast_collector_* families: collector/tests/it/metrics.rs checks those.
        let unknown: Vec<_> = names
            .difference(&exported)
            .filter(|name| !name.starts_with("ballast_collector_"))
            .collect();
        assert!(
            unknown.is_empty(),
            "{source} names metrics the agent does not export: {unknown:?}"
        );
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let test = "dashboard_queries_are_valid_promql";
    let Some(promtool) = tool("promtool") else {
        require(test, "promtool (package prometheus)", false);
        return;
    };
    let queries = dashboard_queries();
    assert!(queries.len() > 20, "{queries:?}");
    // Each query becomes a recording rule; Grafana's variables get example values.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, query) in queries.iter().enumerate() {
        let query = query
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$vm", ".*");
        let query = match query.strip_prefix("label_values(") {
            // label_values(metric, label) is Grafana's, not PromQL: check the selector.
            Some(rest) => rest
                .rsplit_once(',')
                .map_or(query.clone(), |(selector, _)| selector.to_string()),
            None => query,
        };
        let quoted = serde_json::to_string(&query).expect("a string serializes");
        rules.push_str(&format!(
            "      - record: dashboard:query_{index}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).expect("write rules");
    run(Command::new(promtool).arg("check").arg("rules").arg(&file));
}

#[test]
fn alert_rules_pass_promtool_unit_tests() {
    let test = "alert_rules_pass_promtool_unit_tests";
    let Some(promtool) = tool("promtool") else {
        require(test, "promtool (package prometheus)", false);
        return;
    };
    let dir = repo().join("deploy/prometheus");
    run(Command::new(&promtool)
        .current_dir(&dir)
        .args(["check", "rules", "ballast-rules.yml"]));
    let output = run(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "ballast-rules.test.yml",
    ]));
    assert!(stdout(&output).contains("SUCCESS"), "{}", stdout(&output));
    // Every alert has at least one test case.
    let rules = read(&dir.join("ballast-rules.yml"));
    let tests = read(&dir.join("ballast-rules.test.yml"));
    for alert in rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no promtool test"
        );
    }
}

// ---------------------------------------------------------------- systemd units

#[test]
fn units_have_the_documented_hardening() {
    let units = repo().join("deploy/systemd");
    let agent = read(&units.join("ballast-agent.service"));
    let collector = read(&units.join("ballast-collector.service"));
    let has = |unit: &str, line: &str| unit.lines().any(|l| l.trim() == line);
    for (name, unit) in [("agent", &agent), ("collector", &collector)] {
        for line in [
            "Type=notify",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "Restart=on-failure",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "SystemCallFilter=@system-service",
            "WantedBy=multi-user.target",
        ] {
            assert!(has(unit, line), "{name} unit lacks {line}");
        }
        // The watchdog (docs/deploy.md, "systemd units").
        assert!(
            unit.lines().any(|l| l.trim().starts_with("WatchdogSec=")),
            "{name} unit lacks WatchdogSec="
        );
        // BALLAST_LOG would override log_level, which a reload applies.
        assert!(
            !unit.contains("BALLAST_LOG="),
            "{name} unit must leave the log level to the config file"
        );
    }
    // Capabilities: none for the collector, only CAP_SYSLOG (/dev/kmsg) for the agent.
    assert!(has(&collector, "CapabilityBoundingSet="));
    assert!(has(&agent, "CapabilityBoundingSet=CAP_SYSLOG"));
    assert!(has(&agent, "BindReadOnlyPaths=/dev/kmsg"));
    assert!(
        !has(&agent, "ProtectKernelLogs=yes"),
        "ProtectKernelLogs=yes hides /dev/kmsg from capture.host_kernel"
    );
    assert!(has(
        &agent,
        &format!("ReadWritePaths={}", ballast_agent::paths::STATE_DIR)
    ));
    assert!(has(
        &agent,
        &format!(
            "ExecStart=/usr/bin/ballast-agent run --config {}",
            ballast_agent::paths::CONFIG_FILE
        )
    ));
    assert!(
        has(&agent, "ProtectHome=read-only"),
        "serial logs may live below /home"
    );
    assert!(has(&collector, "User=ballast"));
    assert!(has(&collector, "ReadWritePaths=/var/lib/ballast-collector"));
    assert!(has(&collector, "ProtectHome=yes"));

    let test = "units_have_the_documented_hardening";
    let Some(analyze) = tool("systemd-analyze") else {
        require(test, "systemd-analyze (package systemd)", false);
        return;
    };
    // Exposure per `systemd-analyze security` (0 = locked down, 10 = unconfined; the
    // threshold is in tenths): the agent is root with CAP_SYSLOG only (2.3), the
    // collector an unprivileged user (1.4). A weakened unit fails here.
    for (unit, threshold) in [
        ("ballast-agent.service", "25"),
        ("ballast-collector.service", "20"),
    ] {
        let output = run(Command::new(&analyze)
            .current_dir(&units)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--threshold={threshold}"))
            .arg(units.join(unit)));
        let text = stdout(&output);
        let level = text
            .lines()
            .find(|line| line.contains("Overall exposure level"))
            .unwrap_or_default();
        eprintln!("{unit}: {}", level.trim());
    }
}

// ---------------------------------------------------------------- packages

struct Debs {
    agent: PathBuf,
    agent_libvirt: PathBuf,
    collector: PathBuf,
}

/// The packages, built once per test run (both install tests share them).
fn packages() -> &'static Debs {
    static DEBS: std::sync::OnceLock<Debs> = std::sync::OnceLock::new();
    DEBS.get_or_init(|| {
        let debs = build_packages();
        check_control_fields(&debs);
        debs
    })
}

/// scripts/package.sh: the three .deb files (its stdout lists them).
fn build_packages() -> Debs {
    let started = Instant::now();
    // Cargo.toml's `package-test` profile (a test build without debug info), unless the
    // caller asks for another (BALLAST_CARGO_PROFILE=release checks the shipped build).
    let profile =
        std::env::var("BALLAST_CARGO_PROFILE").unwrap_or_else(|_| "package-test".to_string());
    let output = run(Command::new(repo().join("scripts/package.sh"))
        .current_dir(repo())
        .env("BALLAST_CARGO_PROFILE", profile)
        .stderr(Stdio::inherit()));
    eprintln!("scripts/package.sh took {:?}", started.elapsed());
    let debs: Vec<PathBuf> = stdout(&output)
        .lines()
        .filter(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .collect();
    let find = |prefix: &str| {
        debs.iter()
            .find(|deb| {
                deb.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no {prefix}*.deb in {debs:?}"))
            .clone()
    };
    Debs {
        agent: find("ballast-agent_"),
        agent_libvirt: find("ballast-agent-libvirt_"),
        collector: find("ballast-collector_"),
    }
}

fn control_field(deb: &Path, field: &str) -> String {
    stdout(&run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field)))
        .trim()
        .to_string()
}

fn package_files(deb: &Path) -> Vec<String> {
    stdout(&run(Command::new("dpkg-deb").arg("-c").arg(deb)))
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(|path| path.trim_start_matches('.').to_string())
        .collect()
}

fn check_control_fields(debs: &Debs) {
    let depends = control_field(&debs.agent, "Depends");
    assert!(
        !depends.contains("libvirt"),
        "ballast-agent must not depend on libvirt0: {depends}"
    );
    // The units' ExecReload=/bin/kill comes from procps (not Essential).
    for deb in [&debs.agent, &debs.agent_libvirt, &debs.collector] {
        let depends = control_field(deb, "Depends");
        assert!(depends.contains("procps"), "{}: {depends}", deb.display());
    }
    let depends = control_field(&debs.agent_libvirt, "Depends");
    assert!(
        depends.contains("libvirt0"),
        "ballast-agent-libvirt: {depends}"
    );
    assert_eq!(
        control_field(&debs.agent, "Conflicts"),
        "ballast-agent-libvirt"
    );
    assert_eq!(
        control_field(&debs.agent_libvirt, "Conflicts"),
        "ballast-agent"
    );
    assert_eq!(
        control_field(&debs.agent_libvirt, "Replaces"),
        "ballast-agent"
    );
    let depends = control_field(&debs.collector, "Depends");
    assert!(
        depends.contains("adduser") && !depends.contains("libvirt"),
        "ballast-collector: {depends}"
    );
    for (deb, unit, conffile) in [
        (
            &debs.agent,
            "ballast-agent.service",
            "/etc/ballast/agent.yaml",
        ),
        (
            &debs.agent_libvirt,
            "ballast-agent.service",
            "/etc/ballast/agent.yaml",
        ),
        (
            &debs.collector,
            "ballast-collector.service",
            "/etc/ballast/collector.yaml",
        ),
    ] {
        let files = package_files(deb);
        assert!(
            files
                .iter()
                .any(|file| file.ends_with(&format!("/systemd/system/{unit}"))),
            "{files:?}"
        );
        assert!(files.iter().any(|file| file == conffile), "{files:?}");
        let control = tempfile::tempdir().expect("temp dir");
        run(Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(control.path()));
        assert_eq!(read(&control.path().join("conffiles")).trim(), conffile);
    }
    let files = package_files(&debs.collector);
    for shipped in [
        "/usr/share/ballast/grafana/ballast.json",
        "/usr/share/ballast/prometheus/ballast-rules.yml",
    ] {
        assert!(files.iter().any(|file| file == shipped), "{files:?}");
    }
}

/// A daemon started in the root, stopped with SIGTERM on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(mut command: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("create the daemon log");
        let child = command
            .stdout(file.try_clone().expect("clone the log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("start {command:?}: {error}"));
        Self { child, log }
    }

    /// Sends SIGTERM and returns the exit status (None when it did not exit in 20 s).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// GET `path` on `port` until it answers 200 (or the daemon exits, or 30 s pass).
    fn wait_http(&mut self, port: u16, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", read(&self.log));
            }
            let last_error = match http_try(port, path) {
                Ok(body) => return body,
                Err(error) => error,
            };
            assert!(
                Instant::now() < deadline,
                "no answer on port {port} ({last_error}):\n{}",
                read(&self.log)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The body of a 200 answer to `GET path` on 127.0.0.1:port, if any.
/// One GET; the error says what went wrong (refused, timed out, which status).
fn http_try(port: u16, path: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("timeout: {e}"))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {response:?}"))?;
    match head.split_whitespace().nth(1) {
        Some("200") => Ok(body.to_string()),
        other => Err(format!("status {other:?}: {head}")),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn mode(path: &Path) -> (u32, u32, u32) {
    let metadata =
        std::fs::metadata(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    (
        metadata.permissions().mode() & 0o7777,
        metadata.uid(),
        metadata.gid(),
    )
}

/// `key: value` lines of YAML text with `key` (at any indent) set to `value`.
fn set_yaml(text: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            if line.trim_start().starts_with(&format!("{key}:")) && !found {
                found = true;
                format!("{indent}{key}: {value}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(found, "no {key} in\n{text}");
    out.join("\n") + "\n"
}

/// `ldd` of a binary in the root: every shared library resolves there.
fn ldd(root: &Root, binary: &str) -> String {
    let text = stdout(&run(root.chroot().args(["ldd", binary])));
    assert!(
        !text.contains("not found"),
        "{binary} misses libraries in {}:\n{text}",
        root.path().display()
    );
    text
}

#[test]
fn packages_install_run_and_purge_in_a_clean_debian_12_root() {
    install_run_and_purge(
        "packages_install_run_and_purge_in_a_clean_debian_12_root",
        "bookworm",
    );
}

/// Debian 13 (Proxmox VE 9): the same packages, built on Debian 12, the same checks.
#[test]
fn packages_install_run_and_purge_in_a_clean_debian_13_root() {
    install_run_and_purge(
        "packages_install_run_and_purge_in_a_clean_debian_13_root",
        "trixie",
    );
}

fn install_run_and_purge(test: &str, release: &str) {
    let started = Instant::now();
    if !(require(test, "root", is_root())
        && require(test, "debootstrap", tool("debootstrap").is_some())
        && require(test, "chroot", tool("chroot").is_some())
        && require(test, "dpkg-deb", tool("dpkg-deb").is_some())
        && require(test, "systemd-analyze", tool("systemd-analyze").is_some()))
    {
        return;
    }

    // 1. Build and inspect the packages (once for both releases).
    let debs = packages();

    // 2. A fresh Debian root.
    let base = base_root(release);
    let root = Root::fresh(&base, release);
    eprintln!(
        "{test}: Debian {}",
        read(&root.join("etc/debian_version")).trim()
    );
    let agent_deb = root.stage(&debs.agent);
    let agent_libvirt_deb = root.stage(&debs.agent_libvirt);
    let collector_deb = root.stage(&debs.collector);

    // 3. Install with the real maintainer scripts.
    root.dpkg(&["-i", &agent_deb, &collector_deb]);
    for binary in ["/usr/bin/ballast-agent", "/usr/bin/ballast-collector"] {
        let (file_mode, uid, _) = mode(&root.join(binary));
        assert_eq!((file_mode, uid), (0o755, 0), "{binary}");
    }
    assert_eq!(
        read(&root.join("etc/ballast/agent.yaml")),
        read(&repo().join("config/agent.example.yaml"))
    );
    let (uid, gid, shell) = root
        .user("ballast")
        .expect("the package created the user ballast");
    assert!(
        uid < 1000 && shell.ends_with("nologin"),
        "ballast is a system user: {uid} {shell}"
    );
    assert!(read(&root.join("etc/group"))
        .lines()
        .any(|line| line.starts_with(&format!("ballast:x:{gid}:"))));
    assert_eq!(mode(&root.join("var/lib/ballast")), (0o700, 0, 0));
    assert_eq!(
        mode(&root.join("var/lib/ballast-collector")),
        (0o750, uid, gid)
    );
    assert_eq!(
        mode(&root.join("etc/ballast/collector.yaml")),
        (0o640, 0, gid)
    );
    for unit in ["ballast-agent.service", "ballast-collector.service"] {
        let wants = root
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        assert!(wants.symlink_metadata().is_ok(), "{unit} is not enabled");
        let conffiles = stdout(&root.dpkg(&["-s", unit.trim_end_matches(".service")]));
        assert!(
            conffiles.contains("Conffiles:\n /etc/ballast/"),
            "{conffiles}"
        );
    }
    let linked = ldd(&root, "/usr/bin/ballast-agent");
    assert!(
        !linked.contains("libvirt"),
        "the Proxmox flavour links libvirt:\n{linked}"
    );
    ldd(&root, "/usr/bin/ballast-collector");

    // systemd-analyze verify against the root's own systemd units; any message is a finding.
    for unit in ["ballast-agent.service", "ballast-collector.service"] {
        let output = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg(unit));
        let messages = String::from_utf8_lossy(&output.stderr);
        // This machine's systemd (Debian 12's 252) does not know the directives of
        // Debian 13's own units; only messages about ours count here.
        let ours: Vec<String> = messages
            .lines()
            .map(|line| line.replace(&root.path().display().to_string(), ""))
            .filter(|line| line.contains("ballast"))
            .collect();
        assert!(
            ours.is_empty(),
            "systemd-analyze verify {unit}:\n{messages}"
        );
        // And the root's own systemd (257 on Debian 13), which knows newer directives.
        let output = run(root.chroot().args(["systemd-analyze", "verify", unit]));
        let messages = String::from_utf8_lossy(&output.stderr);
        assert!(
            messages.trim().is_empty(),
            "{release}'s systemd-analyze verify {unit}:\n{messages}"
        );
    }

    // 4. The installed binaries on the shipped configuration.
    let check = stdout(&run(root.chroot().args([
        "ballast-agent",
        "check-config",
        "/etc/ballast/agent.yaml",
    ])));
    assert!(check.contains(": OK"), "{check}");
    let printed = stdout(&run(root
        .chroot()
        .args(["ballast-agent", "--print-default-config"])));
    assert_eq!(
        printed,
        read(&root.join("etc/ballast/agent.yaml")),
        "the package ships the binary's defaults"
    );
    let printed = stdout(&run(root
        .chroot()
        .args(["ballast-collector", "--print-default-config"])));
    assert_eq!(
        printed,
        read(&root.join("etc/ballast/collector.yaml")),
        "the package ships the binary's defaults"
    );

    // The collector as its service user, on the shipped config (state dir as shipped,
    // inside the throwaway root) with only the port moved off 8470.
    let collector_port = free_port();
    let shipped = read(&root.join("etc/ballast/collector.yaml"));
    let config = set_yaml(&shipped, "listen", &format!("127.0.0.1:{collector_port}"));
    std::fs::write(root.join("tmp/collector.yaml"), config).expect("write the test config");
    let mut serve = root.chroot_as(uid, gid);
    serve.args([
        "/usr/bin/ballast-collector",
        "serve",
        "--config",
        "/tmp/collector.yaml",
    ]);
    let mut collector = Daemon::start(serve, root.join("tmp/collector.log"));
    assert_eq!(collector.wait_http(collector_port, "/healthz").trim(), "ok");
    let (_, db_uid, _) = mode(&root.join("var/lib/ballast-collector/collector.sqlite"));
    assert_eq!(db_uid, uid, "the database belongs to the service user");
    let token = stdout(&run(root.chroot_as(uid, gid).args([
        "/usr/bin/ballast-collector",
        "token",
        "create",
        "pve1",
        "--config",
        "/tmp/collector.yaml",
    ])));
    let token_file = root.join("etc/ballast/agent.token");
    std::fs::write(&token_file, token.trim()).expect("write the token");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the token");

    // The agent on the shipped config plus the three settings docs/deploy.md has an
    // admin set, on a host that looks like Proxmox VE with no VM running.
    std::fs::create_dir_all(root.join("etc/pve/qemu-server")).expect("fake /etc/pve");
    // /var/run is an absolute symlink to /run: create through the real path, or the
    // host's /run would be used.
    std::fs::create_dir_all(root.join("run/qemu-server")).expect("fake qemu-server run dir");
    let metrics_port = free_port();
    let mut config = read(&root.join("etc/ballast/agent.yaml"));
    config = set_yaml(&config, "host_id", "pve1");
    config = set_yaml(
        &config,
        "url",
        &format!("http://127.0.0.1:{collector_port}"),
    );
    config = set_yaml(&config, "listen", &format!("127.0.0.1:{metrics_port}"));
    std::fs::write(root.join("tmp/agent.yaml"), config).expect("write the agent config");
    run(root
        .chroot()
        .args(["ballast-agent", "check-config", "/tmp/agent.yaml"]));
    // systemd's side of Type=notify: a datagram socket as $NOTIFY_SOCKET.
    let notify = std::os::unix::net::UnixDatagram::bind(root.join("tmp/notify.sock"))
        .expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("socket timeout");
    let next_notification = || {
        let mut buffer = [0u8; 1024];
        let size = notify
            .recv(&mut buffer)
            .expect("a notification within 60 s");
        String::from_utf8_lossy(&buffer[..size]).into_owned()
    };
    let mut run_agent = root.chroot();
    run_agent
        .args([
            "/usr/bin/ballast-agent",
            "run",
            "--config",
            "/tmp/agent.yaml",
        ])
        .env("NOTIFY_SOCKET", "/tmp/notify.sock");
    let mut agent = Daemon::start(run_agent, root.join("tmp/agent.log"));
    assert!(
        next_notification().contains("READY=1"),
        "{}",
        read(&agent.log)
    );
    let metrics = agent.wait_http(metrics_port, "/metrics");
    assert!(metrics.contains("\nballast_agent_vms 0\n"), "{metrics}");
    // `systemctl reload`: the unit's ExecReload, run in the root.
    run(root
        .chroot()
        .args(["/bin/kill", "-HUP", &agent.child.id().to_string()]));
    assert!(next_notification().contains("RELOADING=1"));
    assert!(next_notification().contains("READY=1"));
    assert!(
        read(&agent.log).contains("Configuration reloaded."),
        "{}",
        read(&agent.log)
    );
    assert!(
        root.join("var/lib/ballast/spool").is_dir(),
        "the agent writes its state dir"
    );
    let status = agent.stop().expect("the agent stops on SIGTERM");
    assert!(
        status.success(),
        "agent exit {status}:\n{}",
        read(&agent.log)
    );
    let status = collector.stop().expect("the collector stops on SIGTERM");
    assert!(
        status.success(),
        "collector exit {status}:\n{}",
        read(&collector.log)
    );

    // 5. Upgrades keep a changed conffile, also across a switch of flavour.
    let agent_yaml = root.join("etc/ballast/agent.yaml");
    let changed = set_yaml(&read(&agent_yaml), "poll_interval_secs", "20");
    std::fs::write(&agent_yaml, &changed).expect("change agent.yaml");
    root.dpkg(&["-i", &agent_deb]);
    assert_eq!(
        read(&agent_yaml),
        changed,
        "reinstall keeps the admin's agent.yaml"
    );
    root.dpkg(&["-i", &agent_libvirt_deb]);
    assert_eq!(
        read(&agent_yaml),
        changed,
        "the libvirt flavour keeps the admin's agent.yaml"
    );
    let linked = ldd(&root, "/usr/bin/ballast-agent");
    assert!(linked.contains("libvirt.so.0"), "{linked}");
    let listing = stdout(&run(root.chroot().args([
        "dpkg-query",
        "-W",
        "-f",
        "${Package} ${db:Status-Abbrev}\n",
    ])));
    assert!(listing.contains("ballast-agent-libvirt ii"), "{listing}");
    // Purging the replaced flavour leaves the installed one's state and enablement.
    root.dpkg(&["--purge", "ballast-agent"]);
    assert!(
        root.join("var/lib/ballast/spool").is_dir(),
        "purging the old flavour kept the state"
    );
    assert!(token_file.exists());
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/ballast-agent.service")
            .symlink_metadata()
            .is_ok(),
        "purging the old flavour kept ballast-agent.service enabled"
    );
    run(root
        .chroot()
        .args(["ballast-agent", "check-config", "/etc/ballast/agent.yaml"]));

    // Remove keeps state and configuration; purge deletes them.
    root.dpkg(&["-r", "ballast-agent-libvirt", "ballast-collector"]);
    assert!(
        root.join("var/lib/ballast").is_dir() && root.join("var/lib/ballast-collector").is_dir()
    );
    assert!(agent_yaml.exists() && token_file.exists());
    root.dpkg(&["--purge", "ballast-agent-libvirt", "ballast-collector"]);
    for gone in [
        "var/lib/ballast",
        "var/lib/ballast-collector",
        "etc/ballast",
        "usr/bin/ballast-agent",
    ] {
        assert!(!root.join(gone).exists(), "{gone} survived the purge");
    }
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/ballast-agent.service")
            .symlink_metadata()
            .is_err(),
        "purge forgets the unit's enablement"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}
