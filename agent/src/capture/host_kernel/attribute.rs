//! Which VM a host OOM report is about (its QEMU pid, its libvirt or Proxmox VE
//! scope), and whether it is a VM-cgroup OOM or a host OOM.

use ballast_model::OomKind;
use ballast_oom::Report;

use super::record::unescape;
use crate::hypervisor::DomainId;

/// A VM the host OOM may be about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownVm {
    pub id: DomainId,
    /// Proxmox VE's vmid (`/qemu.slice/<vmid>.scope`).
    pub vmid: Option<u32>,
    /// The pid of the VM's QEMU process, when the backend knows it.
    pub qemu_pid: Option<u32>,
}

/// Which VM a host OOM report is about, and its kind; None when it is not about a VM.
///
/// - A memcg OOM whose `oom_memcg` (else `task_memcg`) is a VM's scope, or that killed
///   a known VM's QEMU pid: [`OomKind::VmCgroup`].
/// - Any other OOM that killed a QEMU process (comm `qemu-system-*` or `kvm`, or a
///   known VM's QEMU pid) or a process in a VM's scope: [`OomKind::Host`], the VM found
///   by pid, else by the killed task's cgroup.
/// - Anything else: None.
pub fn attribute<'a>(report: &Report, vms: &'a [KnownVm]) -> Option<(&'a KnownVm, OomKind)> {
    let memcg = report.memcg.as_ref();
    let oom_cg = memcg.and_then(|m| m.oom.as_deref());
    let task_cg = memcg.and_then(|m| m.task.as_deref());
    let killed = report.killed.as_ref();
    let by_pid = killed.and_then(|k| vms.iter().find(|vm| vm.qemu_pid == Some(k.pid)));
    let is_memcg_oom = report.kind == ballast_oom::OomKind::Memcg
        || report.constraint.as_deref() == Some("CONSTRAINT_MEMCG");
    if is_memcg_oom {
        let vm = oom_cg
            .and_then(|cg| vm_of_cgroup(cg, vms))
            .or_else(|| task_cg.and_then(|cg| vm_of_cgroup(cg, vms)))
            .or(by_pid)?;
        return Some((vm, OomKind::VmCgroup));
    }
    let by_cgroup = task_cg.and_then(|cg| vm_of_cgroup(cg, vms));
    let qemu_comm = killed.is_some_and(|k| is_qemu_comm(&k.comm));
    if by_pid.is_some() || by_cgroup.is_some() || qemu_comm {
        let vm = by_pid.or(by_cgroup)?;
        return Some((vm, OomKind::Host));
    }
    None
}

/// QEMU's process name (comm is cut at 15 bytes: `qemu-system-x86`).
fn is_qemu_comm(comm: &str) -> bool {
    comm.starts_with("qemu-system-") || comm == "kvm" || comm.starts_with("qemu-kvm")
}

/// The VM whose scope contains cgroup `path`:
/// - libvirt, cgroup v2: `/machine.slice/machine-qemu\x2d<id>\x2d<name>.scope[/...]`;
/// - libvirt, cgroup v1: `/machine/qemu-<id>-<name>.libvirt-qemu[/...]`;
/// - Proxmox VE: `/qemu.slice/<vmid>.scope[/...]`.
///
/// libvirt truncates the name in the scope (and drops characters a unit name cannot
/// hold), so a name matches when the VM's (filtered) name starts with it; an exact
/// match wins, and two VMs matching a prefix is no match.
pub fn vm_of_cgroup<'a>(path: &str, vms: &'a [KnownVm]) -> Option<&'a KnownVm> {
    for component in path.split('/') {
        let component = String::from_utf8_lossy(&unescape(component.as_bytes())).into_owned();
        if let Some(rest) = component
            .strip_prefix("machine-qemu-")
            .and_then(|r| r.strip_suffix(".scope"))
        {
            return vm_by_scope_name(rest, vms);
        }
        if let Some(rest) = component
            .strip_prefix("qemu-")
            .and_then(|r| r.strip_suffix(".libvirt-qemu"))
        {
            return vm_by_scope_name(rest, vms);
        }
        if let Some(vmid) = component
            .strip_suffix(".scope")
            .and_then(|r| r.parse::<u32>().ok())
        {
            if path.contains("qemu.slice") {
                return vms.iter().find(|vm| {
                    vm.vmid == Some(vmid) || (vm.vmid.is_none() && vm.id.uuid == vmid.to_string())
                });
            }
        }
    }
    None
}

/// `<id>-<name>` of a libvirt scope -> the VM.
fn vm_by_scope_name<'a>(rest: &str, vms: &'a [KnownVm]) -> Option<&'a KnownVm> {
    let (id, name) = rest.split_once('-')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    let filtered = |vm: &KnownVm| -> String {
        vm.id
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect()
    };
    if let Some(exact) = vms.iter().find(|vm| filtered(vm) == name) {
        return Some(exact);
    }
    let mut prefixed = vms.iter().filter(|vm| filtered(vm).starts_with(name));
    let first = prefixed.next()?;
    prefixed.next().is_none().then_some(first)
}
