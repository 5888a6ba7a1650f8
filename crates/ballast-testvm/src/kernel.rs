//! Guest kernels: which Debian kernel a guest boots.
//!
//! Looked up first in the host's `/boot` (modules in `/lib/modules`), then in the
//! lab's unpacked kernel packages, `<lab>/kernels/<dir>/boot/vmlinuz-<release>` with
//! modules in `<lab>/kernels/<dir>/lib/modules/<release>`: a Proxmox VE host has only
//! its own kernels in /boot and must not get a Debian one installed (it would join
//! the boot menu), so the quickstart unpacks Debian's package there with `dpkg-deb -x`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The guest kernel series; the harness picks the newest installed version of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum GuestKernel {
    /// Debian 12's kernel (linux-image-6.1.0-*-amd64): virtio modules are plain `.ko`,
    /// no OOM-kill counter in the balloon stats (QEMU 10 reports the new keys as u64 -1).
    #[default]
    Debian61,
    /// Linux 6.12 from bookworm-backports: virtio_pci built in, virtio_balloon as
    /// `.ko.xz`, balloon `stat-oom-kills` and the other 6.12 counters.
    Backports612,
}

impl GuestKernel {
    /// The version prefix in /boot (`6.1.`, `6.12.`).
    pub fn series(self) -> &'static str {
        match self {
            GuestKernel::Debian61 => "6.1.",
            GuestKernel::Backports612 => "6.12.",
        }
    }
}

/// A usable kernel: its release string, its image and the root its modules are under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBuild {
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `/` for the host's kernels, `<lab>/kernels/<dir>` for an unpacked package
    /// (`modprobe -d <modules_root>`).
    pub modules_root: PathBuf,
}

/// The newest kernel of `kernel`'s series in `/boot`, else in `lab_kernels`.
pub(crate) fn find(kernel: GuestKernel, lab_kernels: &Path) -> Result<KernelBuild> {
    find_in(kernel, Path::new("/"), lab_kernels)
}

/// [`find`] with the system root as a parameter (for tests).
fn find_in(kernel: GuestKernel, system_root: &Path, lab_kernels: &Path) -> Result<KernelBuild> {
    let not_found = || Error::KernelNotFound {
        series: kernel.series().trim_end_matches('.').to_owned(),
        lab_kernels: lab_kernels.to_path_buf(),
    };
    if let Some(build) = newest(kernel, &[system_root.to_path_buf()]) {
        return Ok(build);
    }
    let roots: Vec<PathBuf> = std::fs::read_dir(lab_kernels)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.path())
                .filter(|path| path.is_dir())
                .collect()
        })
        .unwrap_or_default();
    newest(kernel, &roots).ok_or_else(not_found)
}

/// The newest `<root>/boot/vmlinuz-<series>*` among `roots` whose
/// `<root>/lib/modules/<release>` exists.
fn newest(kernel: GuestKernel, roots: &[PathBuf]) -> Option<KernelBuild> {
    let mut builds: Vec<KernelBuild> = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root.join("boot")) else {
            continue;
        };
        for entry in entries.filter_map(|entry| entry.ok()) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(release) = name.strip_prefix("vmlinuz-") else {
                continue;
            };
            let has_modules = root.join("lib/modules").join(release).is_dir();
            if release.starts_with(kernel.series()) && has_modules {
                builds.push(KernelBuild {
                    release: release.to_owned(),
                    vmlinuz: entry.path(),
                    modules_root: root.clone(),
                });
            }
        }
    }
    builds.sort_by_key(|build| version_key(&build.release));
    builds.pop()
}

/// Numeric runs of a release string, for "newest" ordering (`6.1.0-56` > `6.1.0-9`).
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop (this crate has no tempfile).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "ballast-testvm-kernel-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Scratch(dir)
        }

        /// `<root>/boot/vmlinuz-<release>`, with `<root>/lib/modules/<release>` if `modules`.
        fn kernel(&self, root: &str, release: &str, modules: bool) -> PathBuf {
            let root = self.0.join(root);
            std::fs::create_dir_all(root.join("boot")).expect("boot");
            let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
            std::fs::write(&vmlinuz, b"kernel").expect("vmlinuz");
            if modules {
                std::fs::create_dir_all(root.join("lib/modules").join(release)).expect("modules");
            }
            vmlinuz
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn newer_abi_sorts_later() {
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
        assert!(version_key("6.12.117+deb12-amd64") > version_key("6.12.95+deb12-amd64"));
    }

    #[test]
    fn a_kernel_in_boot_wins_over_a_newer_unpacked_one() {
        let scratch = Scratch::new("boot-first");
        let system = scratch.kernel("sys", "6.1.0-9-amd64", true);
        scratch.kernel("lab/kernels/6.1.0-57-amd64", "6.1.0-57-amd64", true);
        let found = find_in(
            GuestKernel::Debian61,
            &scratch.0.join("sys"),
            &scratch.0.join("lab/kernels"),
        )
        .expect("found");
        assert_eq!(found.vmlinuz, system);
        assert_eq!(found.modules_root, scratch.0.join("sys"));
    }

    #[test]
    fn without_one_in_boot_the_newest_unpacked_kernel_of_the_series_is_used() {
        let scratch = Scratch::new("lab");
        // A Proxmox host: its own kernel in /boot, not of the series.
        scratch.kernel("sys", "6.8.12-4-pve", true);
        scratch.kernel("lab/kernels/a", "6.1.0-9-amd64", true);
        let newest = scratch.kernel("lab/kernels/b", "6.1.0-57-amd64", true);
        // Newer but unusable: no modules.
        scratch.kernel("lab/kernels/c", "6.1.0-60-amd64", false);
        scratch.kernel("lab/kernels/d", "6.12.118+deb12-amd64", true);
        let found = find_in(
            GuestKernel::Debian61,
            &scratch.0.join("sys"),
            &scratch.0.join("lab/kernels"),
        )
        .expect("found");
        assert_eq!(found.release, "6.1.0-57-amd64");
        assert_eq!(found.vmlinuz, newest);
        assert_eq!(found.modules_root, scratch.0.join("lab/kernels/b"));
    }

    #[test]
    fn no_kernel_of_the_series_anywhere_names_both_places() {
        let scratch = Scratch::new("none");
        scratch.kernel("sys", "6.8.12-4-pve", true);
        scratch.kernel("lab/kernels/d", "6.12.118+deb12-amd64", true);
        let error = find_in(
            GuestKernel::Debian61,
            &scratch.0.join("sys"),
            &scratch.0.join("lab/kernels"),
        )
        .expect_err("no 6.1 kernel");
        let message = error.to_string();
        assert!(message.contains("6.1.*"), "{message}");
        assert!(message.contains("lab/kernels"), "{message}");
    }
}
