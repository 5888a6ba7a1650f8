//! The harness's settings: environment variables and default paths, read once.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BALLAST_LAB_DIR` | `/var/cache/ballast-lab` as root, else `<workspace>/target/ballast-lab` | image cache, KVM probe result, run files |
//! | `BALLAST_LAB_ACCEL` | `probe` | `probe`, `tcg` (skip the probe) or `kvm` (trust KVM) |
//! | `BALLAST_LAB_KVM_PROBE_SECS` | `10` | how long the KVM boot probe may take |
//! | `BALLAST_LAB_MAX_GUESTS` | `4` | guests running at once in one process |
//! | `BALLAST_LAB_KEEP` | unset | `1`: keep guests' run files (serial logs) after the test |
//! | `BALLAST_LIBVIRT_URI` | `qemu:///system` | libvirt connection for virsh |
//! | `BALLAST_LAB_EMULATOR` | unset (libvirt's default) | the QEMU binary of libvirt guests (`<emulator>`), e.g. an unpacked QEMU 7.2 |
//! | `CI` | unset | `true`/`1`: a lab that cannot start fails the test instead of skipping |

use std::path::PathBuf;
use std::time::Duration;

/// How the harness picks the accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// Boot-probe KVM once per guest kernel (result cached), fall back to TCG.
    Probe,
    /// Always TCG (`<domain type='qemu'>`); no probe.
    Tcg,
    /// Always KVM, no probe.
    Kvm,
}

/// Settings read from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lab_dir: PathBuf,
    pub accel: AccelChoice,
    pub kvm_probe_timeout: Duration,
    pub max_guests: usize,
    pub keep_run_files: bool,
    pub libvirt_uri: String,
    /// `<emulator>` of libvirt guests; `None`: libvirt's default QEMU.
    pub emulator: Option<PathBuf>,
}

impl Settings {
    /// Reads the `BALLAST_LAB_*` variables, falling back to the defaults above.
    pub fn from_env() -> Settings {
        let lab_dir = std::env::var_os("BALLAST_LAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_lab_dir);
        let accel = match std::env::var("BALLAST_LAB_ACCEL").as_deref() {
            Ok("tcg") | Ok("qemu") => AccelChoice::Tcg,
            Ok("kvm") => AccelChoice::Kvm,
            _ => AccelChoice::Probe,
        };
        Settings {
            lab_dir,
            accel,
            kvm_probe_timeout: Duration::from_secs(env_number("BALLAST_LAB_KVM_PROBE_SECS", 10)),
            max_guests: usize::try_from(env_number("BALLAST_LAB_MAX_GUESTS", 4))
                .unwrap_or(4)
                .max(1),
            keep_run_files: std::env::var("BALLAST_LAB_KEEP").is_ok_and(|v| v == "1"),
            libvirt_uri: std::env::var("BALLAST_LIBVIRT_URI")
                .unwrap_or_else(|_| "qemu:///system".to_owned()),
            emulator: std::env::var_os("BALLAST_LAB_EMULATOR")
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
        }
    }

    /// Guest images, one folder per kernel version and source hash.
    pub fn images_dir(&self) -> PathBuf {
        self.lab_dir.join("images")
    }

    /// Per-guest run folders (`run/ballast-test-<pid>-<n>/`).
    pub fn run_dir(&self) -> PathBuf {
        self.lab_dir.join("run")
    }

    /// Debian kernel packages unpacked without installing them (`<release>/boot`,
    /// `<release>/lib/modules`; the quickstart's Proxmox demo puts them there).
    pub fn kernels_dir(&self) -> PathBuf {
        self.lab_dir.join("kernels")
    }

    /// Markers of the daemons this harness started (read by scripts/lab/libvirt-down.sh).
    pub fn daemons_dir(&self) -> PathBuf {
        self.lab_dir.join("daemons")
    }
}

/// True when the `CI` variable says this is a CI run (the one rule, `ballast_testenv`).
pub use ballast_testenv::in_ci;

/// The lab of a root process (the harness's usual case: libvirt's qemu:///system), shared
/// by every clone on the host. Outside the clone on purpose: QEMU runs as `libvirt-qemu`
/// and must reach the guest kernel whatever the clone's parents allow (root's home is
/// 0700 on Debian); the harness keeps this tree world-readable (0755 folders, 0644 images).
pub const ROOT_LAB_DIR: &str = "/var/cache/ballast-lab";

fn default_lab_dir() -> PathBuf {
    default_lab_dir_for(running_as_root())
}

fn default_lab_dir_for(root: bool) -> PathBuf {
    if root {
        return PathBuf::from(ROOT_LAB_DIR);
    }
    // crates/ballast-testvm -> workspace root -> target/ballast-lab
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.ancestors().nth(2).unwrap_or(manifest_dir);
    workspace.join("target").join("ballast-lab")
}

/// True when this process runs as root: `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// Creates `dir` (and its parents) and makes it readable and searchable by every user,
/// whatever the umask: QEMU, as `libvirt-qemu`, opens the images below it.
pub(crate) fn create_shared_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_lab_is_outside_the_clone_so_qemu_can_read_it_from_a_private_home() {
        let root_lab = default_lab_dir_for(true);
        assert_eq!(root_lab, PathBuf::from("/var/cache/ballast-lab"));
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        assert!(
            !root_lab.starts_with(&workspace),
            "{root_lab:?} under {workspace:?}"
        );
        assert!(default_lab_dir_for(false).starts_with(&workspace));
    }

    #[test]
    fn shared_dirs_are_searchable_by_others_under_a_strict_umask() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("ballast-shared-dir-{}", std::process::id()));
        let dir = base.join("images");
        std::fs::create_dir_all(&base).expect("base");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).expect("0700");
        create_shared_dir(&dir).expect("create");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("0700");
        create_shared_dir(&dir).expect("again");
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(mode, 0o755);
    }
}
