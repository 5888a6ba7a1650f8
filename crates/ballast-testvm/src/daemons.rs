//! libvirtd and virtlogd: start them when they are not running, without systemd.
//!
//! 1. PID 1 is systemd: `systemctl start virtlogd.socket libvirtd.service`.
//! 2. Otherwise `virtlogd -d` and `libvirtd -d` (libvirtd never spawns virtlogd, and
//!    `virsh start` of a domain with a logged console needs it). A daemon whose
//!    pidfile names a live process of the right name is left alone.
//! 3. Wait until `virsh version` answers (the first start probes QEMU's
//!    capabilities, ~8 s; later starts ~0.2 s).
//!
//! Each daemon the harness starts gets a marker `<lab>/daemons/<name>.pid`;
//! `scripts/lab/libvirt-down.sh` stops exactly those by PID. Daemons are left
//! running when the tests end, so the next test binary reuses them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};
use crate::settings::Settings;

/// One host daemon.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Daemon {
    pub name: &'static str,
    pub binary: &'static str,
    pub pidfile: &'static str,
}

pub(crate) const VIRTLOGD: Daemon = Daemon {
    name: "virtlogd",
    binary: "/usr/sbin/virtlogd",
    pidfile: "/run/virtlogd.pid",
};

pub(crate) const LIBVIRTD: Daemon = Daemon {
    name: "libvirtd",
    binary: "/usr/sbin/libvirtd",
    pidfile: "/run/libvirtd.pid",
};

const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// True when PID 1 is systemd (then systemctl manages the daemons).
pub(crate) fn systemd_is_init() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|comm| comm.trim() == "systemd")
}

/// Starts whatever is not running; returns how long it took when it started anything.
pub(crate) fn ensure_running(settings: &Settings) -> Result<Option<Duration>> {
    let start = Instant::now();
    if systemd_is_init() {
        if virsh_answers(&settings.libvirt_uri) {
            return Ok(None);
        }
        cmd::run(
            "systemctl",
            ["start", "virtlogd.socket", "libvirtd.service"],
        )?;
    } else {
        let mut started = false;
        for daemon in [VIRTLOGD, LIBVIRTD] {
            if running_pid(daemon).is_none() {
                start_daemon(daemon, settings)?;
                started = true;
            }
        }
        if !started && virsh_answers(&settings.libvirt_uri) {
            return Ok(None);
        }
    }
    wait_ready(&settings.libvirt_uri)?;
    Ok(Some(start.elapsed()))
}

/// Stops libvirtd and starts it again; guests keep running. Returns the time until virsh answers.
pub(crate) fn restart_libvirtd(settings: &Settings) -> Result<Duration> {
    let start = Instant::now();
    if systemd_is_init() {
        cmd::run("systemctl", ["restart", "libvirtd.service"])?;
    } else {
        if let Some(pid) = running_pid(LIBVIRTD) {
            if !cmd::stop_pid(pid, Duration::from_secs(30)) {
                return Err(Error::Timeout {
                    what: format!("libvirtd (pid {pid}) to stop"),
                    timeout: Duration::from_secs(30),
                });
            }
        }
        start_daemon(LIBVIRTD, settings)?;
    }
    wait_ready(&settings.libvirt_uri)?;
    Ok(start.elapsed())
}

/// Stops the daemons this harness started (by their marker PIDs); returns their names.
pub fn stop_started_daemons(settings: &Settings) -> Vec<String> {
    let mut stopped = Vec::new();
    for daemon in [LIBVIRTD, VIRTLOGD] {
        let marker = settings.daemons_dir().join(format!("{}.pid", daemon.name));
        let Some(pid) = read_pid(&marker) else {
            continue;
        };
        if process_name(pid).as_deref() == Some(daemon.name)
            && cmd::stop_pid(pid, Duration::from_secs(30))
        {
            stopped.push(daemon.name.to_owned());
        }
        let _ = std::fs::remove_file(&marker);
    }
    stopped
}

/// The PID of a running daemon according to its pidfile, checked against /proc.
pub(crate) fn running_pid(daemon: Daemon) -> Option<u32> {
    let pid = read_pid(Path::new(daemon.pidfile))?;
    (cmd::pid_alive(pid) && process_name(pid).as_deref() == Some(daemon.name)).then_some(pid)
}

fn start_daemon(daemon: Daemon, settings: &Settings) -> Result<()> {
    cmd::run(daemon.binary, ["-d"])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Some(pid) = running_pid(daemon) {
            break pid;
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("{} to write {}", daemon.name, daemon.pidfile),
                timeout: Duration::from_secs(20),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let dir = settings.daemons_dir();
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let marker = dir.join(format!("{}.pid", daemon.name));
    std::fs::write(&marker, pid.to_string()).map_err(Error::io(&marker))
}

fn wait_ready(uri: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !virsh_answers(uri) {
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("libvirtd to answer on {uri}"),
                timeout: READY_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn virsh_answers(uri: &str) -> bool {
    cmd::output_of(Command::new("virsh").args(["-c", uri, "version"]))
        .is_ok_and(|output| output.status.success())
}

/// Pidfiles have no trailing newline; tolerate one anyway.
fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|comm| comm.trim().to_owned())
}
