//! Minimal Debian roots for tests that install packages: a `debootstrap --variant=minbase`
//! root per release, built once and cached under `<target>/ballast-deploy/<release>-base`,
//! and fresh copies of it ([`Root`]) to run `dpkg`, `apt-get` and scripts in with
//! `chroot`. Nothing is mounted inside a root (no /proc), so removing one is safe.
//! Used by `tests/tests/it/deploy.rs` and `tests/tests/it/install_deps_host_safety.rs`; also the
//! `require` pattern of those tests: a missing tool skips loudly, in CI it fails.
//!
//! `BALLAST_DEBIAN_MIRROR` overrides the mirror (default deb.debian.org);
//! `BALLAST_KEEP_DEPLOY_ROOT=1` keeps every copy for inspection (a failing test keeps
//! its copy anyway).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Where cargo puts its output (`$CARGO_TARGET_DIR`, else `<repo>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::repo_root().join("target"), PathBuf::from)
}

/// True under CI, where a missing tool fails instead of skipping (the one rule,
/// `ballast_testenv`).
pub use ballast_testenv::in_ci;

/// True when `available`; otherwise skips loudly, or fails in CI.
pub fn require(test: &str, what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: {what} is missing (scripts/install-deps.sh provides it)"
    );
    ballast_testenv::skip(test, &format!("{what} is missing"));
    false
}

/// The tool's path, looked up in PATH and the sbin directories.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// True when this process runs as root (chroot and dpkg in a root need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .map(|line| line.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs the command; fails the test with its output unless it succeeded.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A minimal Debian root of `release` (bookworm, trixie) with systemd, libvirt0,
/// procps and adduser, built once (slow) and cached. These are what `apt install`
/// of ballast's packages would pull in: `dpkg -i` in the deploy test does not
/// download. (Debian 13's minbase has no adduser: it is no longer `required` there.)
/// Its apt source is the mirror's `<release> main`.
/// Tests of one process building the same release wait for each other (one
/// debootstrap per release); different releases build in parallel.
pub fn base_root(release: &str) -> PathBuf {
    static BUILDING: Mutex<BTreeMap<String, Arc<Mutex<()>>>> = Mutex::new(BTreeMap::new());
    let lock = BUILDING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(release.to_string())
        .or_default()
        .clone();
    let _building = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let recipe = format!("{release} minbase +systemd,libvirt0,procps,adduser v3");
    let base = target_dir().join(format!("ballast-deploy/{release}-base"));
    let stamp = base.join(".ballast-recipe");
    if std::fs::read_to_string(&stamp).is_ok_and(|found| found.trim() == recipe) {
        return base;
    }
    let partial = target_dir().join(format!("ballast-deploy/{release}-base.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&partial).expect("create the base root directory");
    let mirror = std::env::var("BALLAST_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let started = Instant::now();
    eprintln!(
        "debootstrap: building {} (once; a few minutes)",
        base.display()
    );
    run(
        Command::new(tool("debootstrap").expect("checked by the caller"))
            .args([
                "--variant=minbase",
                "--include=systemd,libvirt0,procps,adduser",
                release,
            ])
            .arg(&partial)
            .arg(&mirror),
    );
    std::fs::write(partial.join(".ballast-recipe"), recipe).expect("write the recipe stamp");
    std::fs::rename(&partial, &base).expect("move the base root into place");
    eprintln!("debootstrap took {:?}", started.elapsed());
    base
}

/// A fresh copy of a base root, removed on drop (kept when the test fails or
/// `BALLAST_KEEP_DEPLOY_ROOT=1`).
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// Copies `base` to `<target>/ballast-deploy/run-<name>-<pid>`; `name` tells the
    /// copies of one test process apart.
    pub fn fresh(base: &Path, name: &str) -> Self {
        let path = target_dir().join(format!("ballast-deploy/run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        run(Command::new("cp").arg("-a").arg(base).arg(&path));
        Self { path }
    }

    /// The root's directory on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path of `inside` (an absolute path in the root).
    pub fn join(&self, inside: &str) -> PathBuf {
        self.path.join(inside.trim_start_matches('/'))
    }

    /// `chroot <root>` with `DEBIAN_FRONTEND=noninteractive` and `LC_ALL=C`.
    pub fn chroot(&self) -> Command {
        let mut command = Command::new("chroot");
        command
            .arg(&self.path)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C");
        command
    }

    /// Runs a command in the root as `uid:gid`.
    pub fn chroot_as(&self, uid: u32, gid: u32) -> Command {
        let mut command = Command::new("chroot");
        command
            .arg(format!("--userspec={uid}:{gid}"))
            .arg(format!("--groups={gid}"))
            .arg(&self.path)
            .env("LC_ALL", "C");
        command
    }

    /// `dpkg ARGS` in the root; fails the test unless it succeeded.
    pub fn dpkg(&self, args: &[&str]) -> Output {
        run(self.chroot().arg("dpkg").args(args))
    }

    /// Copies a .deb into the root's /tmp; returns its path inside the root.
    pub fn stage(&self, deb: &Path) -> String {
        let name = deb
            .file_name()
            .and_then(|name| name.to_str())
            .expect("a .deb file name");
        std::fs::copy(deb, self.join("tmp").join(name)).expect("copy the .deb into the root");
        format!("/tmp/{name}")
    }

    /// uid, gid and shell of a user of the root's /etc/passwd.
    pub fn user(&self, name: &str) -> Option<(u32, u32, String)> {
        let passwd = std::fs::read_to_string(self.join("etc/passwd"))
            .unwrap_or_else(|error| panic!("read the root's /etc/passwd: {error}"));
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() == 7).then(|| {
                let uid = fields[2].parse().expect("numeric uid");
                let gid = fields[3].parse().expect("numeric gid");
                (uid, gid, fields[6].to_string())
            })
        })
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if std::thread::panicking()
            || std::env::var("BALLAST_KEEP_DEPLOY_ROOT").as_deref() == Ok("1")
        {
            eprintln!("kept the installed root at {}", self.path.display());
            return;
        }
        // Nothing is mounted inside; --one-file-system guards against surprises.
        let _ = Command::new("rm")
            .arg("-rf")
            .arg("--one-file-system")
            .arg(&self.path)
            .status();
    }
}
