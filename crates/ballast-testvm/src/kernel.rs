//! Guest kernels: which Debian kernel in /boot a guest boots.

use std::path::PathBuf;

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

/// An installed kernel: its release string and its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBuild {
    pub release: String,
    pub vmlinuz: PathBuf,
}

/// Finds the newest `/boot/vmlinuz-<series>*` whose `/lib/modules/<release>` exists.
pub(crate) fn find(kernel: GuestKernel) -> Result<KernelBuild> {
    let not_found = || Error::KernelNotFound {
        series: kernel.series().trim_end_matches('.').to_owned(),
    };
    let entries = std::fs::read_dir("/boot").map_err(|_| not_found())?;
    let mut releases: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            let in_series = release.starts_with(kernel.series());
            let has_modules = PathBuf::from("/lib/modules").join(&release).is_dir();
            (in_series && has_modules).then_some(release)
        })
        .collect();
    releases.sort_by_key(|release| version_key(release));
    let release = releases.pop().ok_or_else(not_found)?;
    Ok(KernelBuild {
        vmlinuz: PathBuf::from(format!("/boot/vmlinuz-{release}")),
        release,
    })
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

    #[test]
    fn newer_abi_sorts_later() {
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
        assert!(version_key("6.12.117+deb12-amd64") > version_key("6.12.95+deb12-amd64"));
    }
}
