//! The host kernel log step (`capture.host_kernel`): host OOMs that killed a VM's
//! QEMU and OOMs inside a VM's cgroup, attributed by QEMU pid (or Proxmox vmid).

use std::time::Instant;

use super::Monitor;
use crate::capture::host_kernel::{HostKernelConfig, HostKernelReader, KnownVm};
use crate::capture::CaptureSettings;

impl Monitor {
    /// Reads the host kernel log for OOMs about VMs (host OOMs, VM-cgroup OOMs).
    pub(super) fn host_kernel_tick(&mut self, now: Instant) {
        if self.host_kernel.is_none() && !self.host_kernel_tried {
            self.host_kernel_tried = true;
            let config = HostKernelConfig::new(
                &self.settings.state_dir.join("capture"),
                CaptureSettings::new(self.settings.state_dir.join("capture")).detector(),
            );
            match HostKernelReader::open(config) {
                Ok(reader) => self.host_kernel = Some(reader),
                Err(error) => tracing::warn!(
                    error = %ballast_daemon::error_chain(&error),
                    "Host kernel log unavailable: host and VM-cgroup OOMs are not captured."
                ),
            }
        }
        let Some(reader) = self.host_kernel.as_mut() else {
            return;
        };
        let proxmox = self.hypervisor.backend() == "proxmox";
        let vms: Vec<KnownVm> = self
            .handles
            .fleet
            .lock()
            .vms()
            .map(|vm| KnownVm {
                id: vm.id.clone(),
                // Proxmox ids are the vmid unless the VM has an smbios uuid.
                vmid: if proxmox {
                    vm.id.uuid.parse().ok()
                } else {
                    None
                },
                qemu_pid: self.qemu_pids.get(&vm.id.uuid).copied(),
            })
            .collect();
        match reader.poll(now, &vms) {
            Ok((found, state_error)) => {
                if let Some(error) = state_error {
                    self.error_log.warn("host-kmsg-state", &format!("{error}"));
                }
                for oom in found {
                    self.handle_oom(oom.captured, oom.kind);
                }
            }
            Err(error) => self
                .error_log
                .warn("host-kmsg", &format!("Host kernel log: {error}")),
        }
    }
}
