//! Issue 16's proof: `scripts/install-deps.sh`, the quickstart's install step, is safe on
//! the hosts the README names. It runs in a chroot of a minimal Debian 12 root (the
//! deploy test's cached debootstrap root, `ballast_tests::debian_root`), one fresh copy
//! per test, with apt in simulation mode (`BALLAST_APT_SIMULATE=1`: apt prints its plan,
//! the `Inst`/`Remv`/`Conf` lines, and changes nothing):
//!
//! - a Proxmox VE host: stand-in packages built here with `dpkg-deb` (`pve-qemu-kvm`
//!   with the relations of Proxmox's real package, `pve-manager`, `proxmox-ve` which
//!   depends on both) plus `/etc/pve`. Neither `runtime` nor `test` may remove anything,
//!   install a package `pve-qemu-kvm` conflicts with or replaces, install libvirt or a
//!   kernel, or change an apt source. The fixture is checked first: installing Debian's
//!   `qemu-system-x86` in that root would remove `pve-qemu-kvm` and `proxmox-ve`;
//! - a fresh Debian 12: `runtime` installs exactly the README's runtime set (what is
//!   missing of it), none of the test tools, from bookworm alone (no apt source added);
//! - a Debian host with QEMU already installed (a stand-in `qemu-system-x86`): without
//!   `--yes` and without a terminal the script lists what it would install, exits 3 and
//!   installs nothing (run for real, not simulated); with `--yes` it neither upgrades
//!   nor removes that QEMU.
//!
//! Nothing is mounted in a root (no /proc, hence no /dev/stdout either), as in the
//! deploy test. Needs root, chroot, debootstrap, dpkg-deb and HTTP to deb.debian.org
//! (the root's `apt-get update`; the root's resolver is the host's /etc/resolv.conf).
//! Outside CI a missing tool or an unreachable mirror skips the test loudly; in CI it
//! fails.
//! `BALLAST_KEEP_DEPLOY_ROOT=1` keeps the roots for inspection.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use ballast_tests::debian_root::{base_root, is_root, require, run, tool, Root};
use ballast_tests::repo_root;

/// Where the tests put the checkout's scripts in a root.
const CHECKOUT: &str = "/opt/ballast";

/// Proxmox's `pve-qemu-kvm` relations, as published in proxmox/pve-qemu, file
/// `debian/control`, commit b43212837ac35b81a338aa9c21fb5b936a3cfe96 (2026-05-12,
/// pve-qemu-kvm 11.0.0-2). Its `Depends` (ceph-common, fuse3, iproute2 and the shlibs)
/// are left out: `dpkg -i` installs the stand-in offline into a minimal root that has
/// none of them, and they are not what makes apt remove or replace the package.
const PVE_QEMU_KVM_RELATIONS: &str = "\
Conflicts: kvm, pve-kvm, pve-qemu-kvm-2.6.18, qemu, qemu-kvm, qemu-system-arm, qemu-system-common, qemu-system-data, qemu-system-x86, qemu-utils
Provides: qemu-system-arm, qemu-system-x86, qemu-utils
Replaces: pve-kvm, pve-qemu-kvm-2.6.18, qemu-system-arm, qemu-system-x86, qemu-utils
Breaks: qemu-server (<= 8.0.6)
";

/// The test tools: never part of what `install-deps.sh runtime` installs.
const TEST_ONLY: &[&str] = &[
    "chromium",
    "prometheus",
    "postgresql",
    "debootstrap",
    "faketime",
];

// ---------------------------------------------------------------- fixtures

/// Root, chroot, dpkg-deb, debootstrap present (else skipped, or failed in CI).
fn prerequisites(test: &str) -> bool {
    require(test, "root", is_root())
        && require(test, "debootstrap", tool("debootstrap").is_some())
        && require(test, "chroot", tool("chroot").is_some())
        && require(test, "dpkg-deb", tool("dpkg-deb").is_some())
}

/// A fresh copy of the cached Debian 12 root with the host's resolver, the mirror's
/// current package lists and this checkout's scripts under [`CHECKOUT`]; `None` (skip)
/// when the mirror cannot be reached outside CI.
fn debian_12_root(test: &str, name: &str) -> Option<Root> {
    let root = Root::fresh(&base_root("bookworm"), name);
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"))
        .expect("copy /etc/resolv.conf into the root");
    let update = root
        .chroot()
        .args(["apt-get", "-q", "update"])
        .output()
        .expect("run apt-get update in the root");
    let errors = String::from_utf8_lossy(&update.stderr);
    let reached = update.status.success() && !errors.contains("Failed to fetch");
    if !require(
        test,
        &format!("HTTP to the Debian mirror (apt-get update in the root: {errors})"),
        reached,
    ) {
        return None;
    }
    let checkout = root.join(CHECKOUT);
    std::fs::create_dir_all(&checkout).expect("create the checkout directory in the root");
    run(Command::new("cp")
        .arg("-a")
        .arg(repo_root().join("scripts"))
        .arg(&checkout));
    Some(root)
}

/// Builds a package with `dpkg-deb` in the root's /tmp: `control` is the control file
/// without `Package`/`Version`/`Architecture`/`Maintainer`/`Description`; `files` are
/// (path, mode, content). Returns its path inside the root.
fn stand_in(
    root: &Root,
    package: &str,
    version: &str,
    control: &str,
    files: &[(&str, u32, &str)],
) -> String {
    use std::os::unix::fs::PermissionsExt;
    let tree = root.join(&format!("tmp/stand-ins/{package}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).expect("create the package tree");
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {package}\nVersion: {version}\nArchitecture: amd64\n\
             Maintainer: ballast tests <tests@ballast.invalid>\n{control}\
             Description: stand-in for the test install_deps_host_safety\n \
             Built by tests/tests/it/install_deps_host_safety.rs; ships nothing real.\n"
        ),
    )
    .expect("write the control file");
    for (path, mode, content) in files {
        let file = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("a file in a directory"))
            .expect("create the file's directory");
        std::fs::write(&file, content).expect("write the packaged file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
            .expect("set the packaged file's mode");
    }
    let deb = format!("/tmp/stand-ins/{package}_{version}_amd64.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(root.join(&deb)));
    deb
}

/// A fake `qemu-system-x86_64` that prints `version_line` for `--version`.
fn fake_qemu(version_line: &str) -> String {
    format!("#!/bin/sh\n# stand-in: no emulator\necho '{version_line}'\n")
}

/// The Debian 12 root made a Proxmox VE host: stand-in `pve-qemu-kvm`, `pve-manager`
/// and `proxmox-ve` installed with `dpkg -i`, and `/etc/pve`.
fn proxmox_root(test: &str, name: &str) -> Option<Root> {
    let root = debian_12_root(test, name)?;
    let qemu = fake_qemu("QEMU emulator version 11.0.0 (pve-qemu-kvm_11.0.0-2)");
    let debs = [
        stand_in(
            &root,
            "pve-qemu-kvm",
            "11.0.0-2",
            PVE_QEMU_KVM_RELATIONS,
            &[("/usr/bin/qemu-system-x86_64", 0o755, &qemu)],
        ),
        stand_in(&root, "pve-manager", "8.4.1", "", &[]),
        stand_in(
            &root,
            "proxmox-ve",
            "8.4.0",
            "Depends: pve-manager, pve-qemu-kvm\n",
            &[],
        ),
    ];
    let mut args = vec!["-i"];
    args.extend(debs.iter().map(String::as_str));
    root.dpkg(&args);
    std::fs::create_dir_all(root.join("etc/pve")).expect("create /etc/pve");
    assert_eq!(
        installed_status(&root, "pve-qemu-kvm"),
        "install ok installed"
    );

    // The fixture can fail the test: Debian's QEMU would take pve-qemu-kvm's place.
    let plan = Plan::of(&run(root.chroot().args([
        "apt-get",
        "-s",
        "install",
        "qemu-system-x86",
    ])));
    for removed in ["pve-qemu-kvm", "proxmox-ve"] {
        assert!(
            plan.removed.iter().any(|package| package == removed),
            "the stand-in does not stand in: installing Debian's QEMU would not remove \
             {removed}:\n{}",
            plan.text
        );
    }
    Some(root)
}

/// `dpkg-query`'s status of `package` in the root (`install ok installed`).
fn installed_status(root: &Root, package: &str) -> String {
    let output = root
        .chroot()
        .args(["dpkg-query", "-W", "-f=${Status}", package])
        .output()
        .expect("run dpkg-query in the root");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// True when `package` is installed in the root.
fn installed(root: &Root, package: &str) -> bool {
    installed_status(root, package) == "install ok installed"
}

/// The root's apt sources: /etc/apt/sources.list and every file of sources.list.d,
/// by path, byte for byte.
fn apt_sources(root: &Root) -> BTreeMap<String, Vec<u8>> {
    let mut sources = BTreeMap::new();
    let list = root.join("etc/apt/sources.list");
    if let Ok(bytes) = std::fs::read(&list) {
        sources.insert("/etc/apt/sources.list".to_string(), bytes);
    }
    if let Ok(entries) = std::fs::read_dir(root.join("etc/apt/sources.list.d")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).expect("read an apt source file");
            sources.insert(format!("/etc/apt/sources.list.d/{name}"), bytes);
        }
    }
    sources
}

fn assert_same_sources(before: &BTreeMap<String, Vec<u8>>, root: &Root, what: &str) {
    let after = apt_sources(root);
    let show = |sources: &BTreeMap<String, Vec<u8>>| {
        sources
            .iter()
            .map(|(path, bytes)| format!("{path}:\n{}", String::from_utf8_lossy(bytes)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        &after == before,
        "{what} changed the apt sources.\nbefore:\n{}\nafter:\n{}",
        show(before),
        show(&after)
    );
}

// ---------------------------------------------------------------- the script

/// What `install-deps.sh` printed and how it ended.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The packages of the script's `install-deps: will install: ...` line (empty when
    /// it printed none).
    fn will_install(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter_map(|line| line.split_once("will install:"))
            .flat_map(|(_, list)| list.split_whitespace().map(str::to_string))
            .collect()
    }

    fn show(&self) -> String {
        format!(
            "exit code {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `install-deps.sh ARGS` in the root as a user would from the checkout, with a
/// clean environment (no `CI`, no terminal on stdin) plus `env`.
fn install_deps(root: &Root, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let started = Instant::now();
    let mut command = root.chroot();
    command
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LC_ALL", "C")
        .env("HOME", "/root")
        .envs(env.iter().copied())
        .arg(format!("{CHECKOUT}/scripts/install-deps.sh"))
        .args(args)
        .stdin(Stdio::null());
    let output: Output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    let ran = Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "install-deps.sh {} ({env:?}) took {:?}:\n{}",
        args.join(" "),
        started.elapsed(),
        ran.stderr
    );
    ran
}

/// apt's simulated plan: the packages of its `Inst` and `Remv` lines.
struct Plan {
    text: String,
    installed: Vec<(String, String)>,
    removed: Vec<String>,
}

impl Plan {
    fn parse(text: &str) -> Self {
        let mut installed = Vec::new();
        let mut removed = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("Inst"), Some(package)) => {
                    installed.push((package.to_string(), line.to_string()))
                }
                (Some("Remv"), Some(package)) => removed.push(package.to_string()),
                _ => {}
            }
        }
        Self {
            text: text.to_string(),
            installed,
            removed,
        }
    }

    fn of(output: &Output) -> Self {
        Self::parse(&String::from_utf8_lossy(&output.stdout))
    }
}

/// The package names of one relation field of [`PVE_QEMU_KVM_RELATIONS`].
fn relation(field: &str) -> Vec<String> {
    PVE_QEMU_KVM_RELATIONS
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}: ")))
        .unwrap_or_else(|| panic!("no {field} in the stand-in's relations"))
        .split(',')
        .filter_map(|item| item.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `install-deps.sh SET --yes` simulated on a Proxmox VE root: nothing removed, nothing
/// Proxmox's QEMU conflicts with or replaces, no libvirt, no kernel, no source.
fn proxmox_install_is_safe(test: &str, set: &str) {
    let started = Instant::now();
    if !prerequisites(test) {
        return;
    }
    let Some(root) = proxmox_root(test, &format!("pve-{set}")) else {
        return;
    };
    let sources = apt_sources(&root);
    let ran = install_deps(&root, &[set, "--yes"], &[("BALLAST_APT_SIMULATE", "1")]);
    assert_eq!(
        ran.code,
        Some(0),
        "install-deps.sh {set} --yes:\n{}",
        ran.show()
    );
    assert!(
        ran.stderr.contains("install-deps: host: proxmox"),
        "the script did not recognise the Proxmox VE host:\n{}",
        ran.show()
    );
    let plan = Plan::parse(&ran.stdout);
    assert!(
        plan.removed.is_empty(),
        "apt would remove {:?} on a Proxmox VE host:\n{}",
        plan.removed,
        ran.show()
    );
    let mut forbidden = relation("Conflicts");
    forbidden.extend(relation("Replaces"));
    for (package, line) in &plan.installed {
        assert!(
            !forbidden.contains(package),
            "apt would install {package}, which pve-qemu-kvm conflicts with or replaces: \
             {line}\n{}",
            ran.show()
        );
        assert!(
            !(package.starts_with("libvirt-daemon")
                || package == "libvirt-clients"
                || package.starts_with("linux-image-")),
            "apt would install {package} on a Proxmox VE host: {line}\n{}",
            ran.show()
        );
    }
    let documented = documented_set(set, true);
    assert_eq!(
        listed(&ran),
        missing_in(&root, &documented),
        "the script's `will install:` list is not the README's {set} set for Proxmox VE \
         {documented:?} less what the root has:\n{}",
        ran.show()
    );
    for package in ["pve-qemu-kvm", "pve-manager", "proxmox-ve"] {
        assert_eq!(
            installed_status(&root, package),
            "install ok installed",
            "{package}"
        );
    }
    assert_same_sources(&sources, &root, &format!("install-deps.sh {set} --yes"));
    eprintln!("{test} took {:?}", started.elapsed());
}

// ---------------------------------------------------------------- tests

#[test]
fn quickstart_install_on_a_proxmox_host_never_removes_pve_qemu_kvm_nor_adds_a_source() {
    proxmox_install_is_safe(
        "quickstart_install_on_a_proxmox_host_never_removes_pve_qemu_kvm_nor_adds_a_source",
        "runtime",
    );
}

/// The test set on Proxmox VE: the test tools, and still no QEMU, libvirt or kernel.
#[test]
fn test_install_on_a_proxmox_host_never_removes_pve_qemu_kvm_nor_adds_a_source() {
    proxmox_install_is_safe(
        "test_install_on_a_proxmox_host_never_removes_pve_qemu_kvm_nor_adds_a_source",
        "test",
    );
}

/// The packages README.md's set-up table lists for `set` (`runtime`, `test`): on
/// Proxmox VE the part before "not on Proxmox VE", elsewhere all of them (the README's
/// conditions hold on a fresh Debian 12: no QEMU, no kernel in the root).
fn documented_set(set: &str, proxmox: bool) -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("read README.md");
    let row = readme
        .lines()
        .find(|line| line.starts_with(&format!("| {set} |")))
        .unwrap_or_else(|| panic!("README.md's set-up table has no row `| {set} |`"));
    let cells: Vec<&str> = row.split('|').collect();
    let mut packages = cells.get(2).copied().unwrap_or_default();
    if proxmox {
        packages = packages
            .split("not on Proxmox VE")
            .next()
            .unwrap_or_default();
    }
    let mut names: Vec<String> = packages
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect();
    if set == "test" {
        names.extend(documented_set("runtime", proxmox));
    }
    assert!(
        !names.is_empty(),
        "README.md lists no packages for {set}: {row}"
    );
    names
}

/// `documented` less what the root has, sorted.
fn missing_in(root: &Root, documented: &[String]) -> Vec<String> {
    let mut missing: Vec<String> = documented
        .iter()
        .filter(|package| !installed(root, package))
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// The script's `will install:` list, sorted.
fn listed(ran: &Ran) -> Vec<String> {
    let mut listed = ran.will_install();
    listed.sort();
    listed
}

#[test]
fn quickstart_install_on_a_fresh_debian_12_installs_only_the_runtime_set_and_adds_no_source() {
    let test =
        "quickstart_install_on_a_fresh_debian_12_installs_only_the_runtime_set_and_adds_no_source";
    let started = Instant::now();
    if !prerequisites(test) {
        return;
    }
    let Some(root) = debian_12_root(test, "fresh") else {
        return;
    };
    let sources = apt_sources(&root);
    let ran = install_deps(
        &root,
        &["runtime", "--yes"],
        &[("BALLAST_APT_SIMULATE", "1")],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    assert!(
        ran.stderr.contains("install-deps: host: fresh"),
        "{}",
        ran.show()
    );
    let documented = documented_set("runtime", false);
    assert_eq!(
        listed(&ran),
        missing_in(&root, &documented),
        "the script's `will install:` list is not the README's runtime set {documented:?} \
         less what the root has:\n{}",
        ran.show()
    );
    let plan = Plan::parse(&ran.stdout);
    assert!(
        !plan.installed.is_empty(),
        "no simulated plan on stdout:\n{}",
        ran.show()
    );
    assert!(plan.removed.is_empty(), "{}", ran.show());
    for (package, line) in &plan.installed {
        assert!(
            !(TEST_ONLY.contains(&package.as_str()) || package.starts_with("linux-image-6.12")),
            "the runtime set pulls the test tool {package}: {line}\n{}",
            ran.show()
        );
        assert!(
            !line.contains("backports"),
            "the runtime set comes from backports: {line}\n{}",
            ran.show()
        );
    }
    if let Some((_, line)) = plan
        .installed
        .iter()
        .find(|(package, _)| package == "qemu-system-x86")
    {
        assert!(
            line.contains("(1:7.2"),
            "a fresh Debian 12 gets its own QEMU 7.2: {line}"
        );
    }
    assert_same_sources(&sources, &root, "install-deps.sh runtime --yes");
    eprintln!("{test} took {:?}", started.elapsed());
}

/// A Debian libvirt/QEMU host: the script asks before installing anything, and never
/// upgrades or removes the QEMU that runs the host's VMs.
#[test]
fn install_on_a_host_with_debian_qemu_asks_first_and_never_upgrades_its_qemu() {
    let test = "install_on_a_host_with_debian_qemu_asks_first_and_never_upgrades_its_qemu";
    let started = Instant::now();
    if !prerequisites(test) {
        return;
    }
    let Some(root) = debian_12_root(test, "qemu-host") else {
        return;
    };
    // An older Debian 12 QEMU than the mirror's, as on a host not upgraded lately, with
    // the source and relations of Debian's package (`apt-cache show qemu-system-x86`):
    // apt upgrades binary packages of one source together, so installing a newer
    // qemu-guest-agent (source qemu) would upgrade this one too.
    let version = "1:7.2+dfsg-7+deb12u7";
    let qemu = fake_qemu("QEMU emulator version 7.2.11 (Debian 1:7.2+dfsg-7+deb12u7)");
    let deb = stand_in(
        &root,
        "qemu-system-x86",
        version,
        "Source: qemu\nProvides: qemu-kvm, qemu-system-i386, qemu-system-x86-64\n\
         Replaces: qemu-kvm\nBreaks: qemu-kvm\n",
        &[("/usr/bin/qemu-system-x86_64", 0o755, &qemu)],
    );
    root.dpkg(&["-i", &deb]);
    let sources = apt_sources(&root);
    let status = std::fs::read(root.join("var/lib/dpkg/status")).expect("read dpkg's status");

    // No --yes, no terminal, not simulated: it must stop before apt.
    let ran = install_deps(&root, &["runtime"], &[]);
    assert!(
        ran.stderr.contains("install-deps: host: virt-host"),
        "{}",
        ran.show()
    );
    assert_eq!(
        ran.code,
        Some(3),
        "without --yes and without a terminal the script must stop with 3:\n{}",
        ran.show()
    );
    assert!(
        !ran.will_install().is_empty() && ran.stderr.contains("--yes"),
        "it must list what it would install and name --yes:\n{}",
        ran.show()
    );
    assert!(
        !ran.will_install()
            .iter()
            .any(|package| package.starts_with("qemu-system")),
        "it would reinstall or upgrade the host's QEMU:\n{}",
        ran.show()
    );
    assert!(
        std::fs::read(root.join("var/lib/dpkg/status")).expect("read dpkg's status") == status,
        "the script changed the installed packages without --yes:\n{}",
        ran.show()
    );
    assert_same_sources(&sources, &root, "install-deps.sh runtime");

    // With --yes (simulated): the QEMU there stays as it is.
    let ran = install_deps(
        &root,
        &["runtime", "--yes"],
        &[("BALLAST_APT_SIMULATE", "1")],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    let plan = Plan::parse(&ran.stdout);
    assert!(plan.removed.is_empty(), "{}", ran.show());
    // `Inst P [old] (new ...)` upgrades an installed P; a new qemu-system-* beside the
    // host's QEMU comes only with such an upgrade. (New libvirt packages, listed and
    // agreed to, are allowed: the demo guest needs libvirt.)
    let touched: Vec<&str> = plan
        .installed
        .iter()
        .filter(|(package, line)| {
            let upgrade = line
                .split_whitespace()
                .nth(2)
                .is_some_and(|word| word.starts_with('['));
            package.starts_with("qemu-system")
                || (upgrade && (package.starts_with("qemu") || package.starts_with("libvirt")))
        })
        .map(|(_, line)| line.as_str())
        .collect();
    assert!(
        touched.is_empty(),
        "apt would upgrade the host's QEMU (apt upgrades the binary packages of one source \
         together: a newer qemu-guest-agent drags qemu-system-x86 along):\n{}\n\n{}",
        touched.join("\n"),
        ran.show()
    );
    assert_same_sources(&sources, &root, "install-deps.sh runtime --yes");
    eprintln!("{test} took {:?}", started.elapsed());
}
