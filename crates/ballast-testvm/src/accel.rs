//! KVM or TCG: boot-probe KVM once per guest image and cache the answer.
//!
//! A `/dev/kvm` is no proof: on PVM hosts (kvm_pvm) a stock kernel hangs or QEMU
//! aborts, while libvirt still reports the domain "running". The probe boots the
//! guest image with `accel=kvm` straight from qemu-system-x86_64 and waits for the
//! init's `LAB-READY` line; anything else means TCG. `BALLAST_LAB_ACCEL=tcg` or
//! `=kvm` skips the probe. Whether KVM works is a property of the host and its QEMU,
//! so the result is cached per host kernel and QEMU binary in
//! `<lab>/accel-<host release>-qemu<mtime>.txt`, whichever guest image probed it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::image::GuestImage;
use crate::settings::{AccelChoice, Settings};

const QEMU: &str = "/usr/bin/qemu-system-x86_64";

/// The accelerator guests run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// libvirt's `<domain type=...>`.
    pub fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }

    /// QEMU's `-machine accel=...`.
    pub fn qemu_accel(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Decides the accelerator, probing with `image` unless the answer is cached.
pub(crate) fn decide(settings: &Settings, image: &GuestImage) -> Result<Accel> {
    match settings.accel {
        AccelChoice::Tcg => return Ok(Accel::Tcg),
        AccelChoice::Kvm => return Ok(Accel::Kvm),
        AccelChoice::Probe => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return Ok(Accel::Tcg);
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu_mtime = Path::new(QEMU)
        .metadata()
        .map(|meta| {
            use std::os::unix::fs::MetadataExt;
            meta.mtime()
        })
        .unwrap_or(0);
    let cache = settings
        .lab_dir
        .join(format!("accel-{}-qemu{qemu_mtime}.txt", host.trim()));
    match std::fs::read_to_string(&cache).as_deref().map(str::trim) {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        _ => {}
    }
    let accel = if probe_kvm(settings, image)? {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    std::fs::write(&cache, accel.qemu_accel()).map_err(Error::io(&cache))?;
    Ok(accel)
}

/// Boots the image under KVM; true when the init reports ready in time.
fn probe_kvm(settings: &Settings, image: &GuestImage) -> Result<bool> {
    let log = settings
        .lab_dir
        .join(format!("kvm-probe-{}.serial.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut command = Command::new(QEMU);
    command
        .args(["-machine", "pc,accel=kvm", "-m", "256", "-smp", "1"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&image.vmlinuz)
        .arg("-initrd")
        .arg(&image.initramfs)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        command: "qemu-system-x86_64 (KVM probe)".to_owned(),
        source,
    })?;
    let start = Instant::now();
    let ready = loop {
        if std::fs::read_to_string(&log).is_ok_and(|text| text.contains("LAB-READY")) {
            break true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) || start.elapsed() > settings.kvm_probe_timeout {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    Ok(ready)
}
