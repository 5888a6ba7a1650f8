//! The host pid of a libvirt domain's QEMU process, for attributing host kernel OOM
//! reports (a host OOM that killed QEMU) to the VM.
//!
//! libvirt's QEMU driver writes `<run dir>/<domain name>.pid` when it starts a
//! domain. A pid file can outlive its process (libvirtd crash) and a pid can be
//! reused, so a pid counts only when `/proc/<pid>/cmdline` carries the domain's UUID
//! as the argument after `-uuid`, as libvirt starts QEMU. Pure file reads, bounded.

use std::io::Read;
use std::path::Path;

use crate::hypervisor::DomainId;

/// Where `qemu:///system` keeps its pid files.
pub const SYSTEM_RUN_DIR: &str = "/run/libvirt/qemu";

/// A pid file holds a decimal pid and a newline; anything longer is not one.
const MAX_PID_FILE_BYTES: u64 = 32;
/// QEMU command lines run to a few KiB; `-uuid` comes early, this bounds the read.
const MAX_CMDLINE_BYTES: u64 = 256 * 1024;

/// Whether `uri` names the local system QEMU driver, whose pid files are in
/// [`SYSTEM_RUN_DIR`].
pub fn is_local_qemu_system(uri: &str) -> bool {
    matches!(uri, "qemu:///system" | "qemu+unix:///system")
}

/// The pid of `id`'s QEMU process, or None when libvirt has no pid file for it or the
/// process there is not that domain's QEMU.
pub fn qemu_pid(run_dir: &Path, proc_root: &Path, id: &DomainId) -> Option<u32> {
    // libvirt refuses '/' in names; a name that could leave the directory is not ours.
    if id.name.is_empty() || id.name.contains('/') || id.name.starts_with('.') {
        return None;
    }
    let text = read_bounded(
        &run_dir.join(format!("{}.pid", id.name)),
        MAX_PID_FILE_BYTES,
    )?;
    let pid: u32 = std::str::from_utf8(&text).ok()?.trim().parse().ok()?;
    if pid == 0 {
        return None;
    }
    let cmdline = read_bounded(
        &proc_root.join(pid.to_string()).join("cmdline"),
        MAX_CMDLINE_BYTES,
    )?;
    let mut args = cmdline.split(|byte| *byte == 0);
    let uuid = id.uuid.as_bytes();
    let found = args.by_ref().any(|arg| arg == b"-uuid")
        && args
            .next()
            .is_some_and(|arg| arg.eq_ignore_ascii_case(uuid));
    found.then_some(pid)
}

fn read_bounded(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "6407c749-6131-4401-8921-add7d19d71eb";

    fn id(name: &str) -> DomainId {
        DomainId {
            uuid: UUID.to_string(),
            name: name.to_string(),
        }
    }

    /// A run dir and a /proc with one process `pid` whose command line is `args`.
    fn layout(pid_file: &str, pid: u32, args: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("run")).expect("run dir");
        std::fs::write(dir.path().join("run/web.pid"), pid_file).expect("pid file");
        let proc_dir = dir.path().join("proc").join(pid.to_string());
        std::fs::create_dir_all(&proc_dir).expect("proc dir");
        let mut cmdline = Vec::new();
        for arg in args {
            cmdline.extend_from_slice(arg.as_bytes());
            cmdline.push(0);
        }
        std::fs::write(proc_dir.join("cmdline"), cmdline).expect("cmdline");
        dir
    }

    fn lookup(dir: &tempfile::TempDir, name: &str) -> Option<u32> {
        qemu_pid(&dir.path().join("run"), &dir.path().join("proc"), &id(name))
    }

    #[test]
    fn the_pid_of_the_process_started_with_the_domains_uuid() {
        let qemu = [
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "guest=web",
            "-uuid",
            UUID,
        ];
        let dir = layout("4242\n", 4242, &qemu);
        assert_eq!(lookup(&dir, "web"), Some(4242));
        assert_eq!(lookup(&dir, "db"), None, "no pid file");
    }

    #[test]
    fn a_reused_pid_or_a_dead_process_is_not_the_vm() {
        let other = [
            "/usr/bin/qemu-system-x86_64",
            "-uuid",
            "00000000-0000-4000-8000-000000000001",
        ];
        assert_eq!(lookup(&layout("4242", 4242, &other), "web"), None);
        let editor = ["vi", UUID];
        assert_eq!(lookup(&layout("4242", 4242, &editor), "web"), None);
        let qemu = ["qemu-system-x86_64", "-uuid", UUID];
        assert_eq!(
            lookup(&layout("4243", 4242, &qemu), "web"),
            None,
            "no such process"
        );
    }

    #[test]
    fn garbage_pid_files_and_hostile_names_give_none() {
        let qemu = ["qemu-system-x86_64", "-uuid", UUID];
        for garbage in [
            "",
            "0",
            "-1",
            "abc",
            "4242 4243",
            "99999999999999999999999999999999999",
        ] {
            assert_eq!(
                lookup(&layout(garbage, 4242, &qemu), "web"),
                None,
                "{garbage:?}"
            );
        }
        let dir = layout("4242", 4242, &qemu);
        assert_eq!(lookup(&dir, "../run/web"), None);
        assert_eq!(lookup(&dir, ""), None);
    }

    #[test]
    fn only_the_local_system_driver_has_these_pid_files() {
        assert!(is_local_qemu_system("qemu:///system"));
        assert!(!is_local_qemu_system("qemu:///session"));
        assert!(!is_local_qemu_system("qemu+ssh://host/system"));
        assert!(!is_local_qemu_system("test:///default"));
    }
}
