//! The balloon poll of a Proxmox VE node: all running VMs asked in parallel (at
//! most `max_parallel` at once) under one deadline, one QMP conversation each with
//! `query-balloon` and the balloon's `guest-stats` (and `query-memory-devices` for a
//! VM with virtio-mem, learned at its QEMU's first poll); a VM whose socket is busy is
//! still listed, without figures. The serial readers follow the running set.
//!
//! The guard's own poll ([`ProxmoxHypervisor::poll_balloons_of`]) asks only the VMs it
//! names, the same way, and leaves the serial readers and caches to the full poll.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde_json::json;

use super::conf::VmConf;
use super::wire::WireError;
use super::{stats, PollReport, ProxmoxHypervisor, Running, BALLOON_PATH};
use crate::hypervisor::{BalloonSample, DomainId, HypervisorError};

impl ProxmoxHypervisor {
    /// [`crate::hypervisor::Hypervisor::balloon_samples`] of this node.
    pub(super) fn poll_balloons(&self) -> Result<Vec<(DomainId, BalloonSample)>, HypervisorError> {
        let started = Instant::now();
        let deadline = started + self.settings.poll_deadline;
        let running = self.running()?;
        let vms: Vec<(Running, Option<VmConf>)> = running
            .iter()
            .map(|&vm| (vm, self.conf_lenient(vm.vmid)))
            .collect();
        let results = self.sample_all(&vms, deadline);
        let mut n_skipped = 0;
        let samples: Vec<(DomainId, BalloonSample)> = vms
            .iter()
            .zip(results)
            .map(|((vm, conf), result)| {
                let sample = result
                    .into_inner()
                    .unwrap_or_else(PoisonError::into_inner)
                    .unwrap_or_else(|| {
                        n_skipped += 1;
                        // Still listed (a busy socket is not a gone VM), without figures.
                        BalloonSample {
                            maximum_kib: conf
                                .as_ref()
                                .and_then(|conf| conf.memory_mib)
                                .and_then(|mib| mib.checked_mul(1024)),
                            ..BalloonSample::default()
                        }
                    });
                (self.identity(vm.vmid, conf.as_ref()), sample)
            })
            .collect();
        // Serial readers: started for opted-in running VMs, stopped for the rest.
        for (vm, conf) in &vms {
            if let Some(port) = conf
                .as_ref()
                .and_then(|conf| self.serial_socket_port(vm.vmid, conf))
            {
                self.serial.ensure(
                    vm.vmid,
                    port,
                    &self.socket(vm.vmid, &format!("serial{port}")),
                    vm.pid,
                );
            }
        }
        self.serial
            .retain(|vmid| running.iter().any(|vm| vm.vmid == vmid));
        let report = PollReport {
            n_vms: samples.len(),
            n_skipped,
            elapsed: started.elapsed(),
        };
        tracing::debug!(
            n_vms = report.n_vms,
            n_skipped,
            elapsed_ms = report.elapsed.as_millis(),
            "Proxmox balloon poll."
        );
        {
            let mut cache = self.lock();
            cache.last_poll = report;
            cache
                .guest_stats
                .retain(|vmid, _| running.iter().any(|vm| vm.vmid == *vmid));
            cache
                .virtio_mem
                .retain(|vmid, _| running.iter().any(|vm| vm.vmid == *vmid));
        }
        Ok(samples)
    }

    /// The guard's own poll ([`crate::hypervisor::Hypervisor::balloon_samples_of`]):
    /// the VMs of `ids` that still run; one without figures this time is left out.
    pub(super) fn poll_balloons_of(
        &self,
        ids: &[DomainId],
    ) -> Result<Vec<(DomainId, BalloonSample)>, HypervisorError> {
        let deadline = Instant::now() + self.settings.poll_deadline;
        let running = self.running()?;
        let vms: Vec<(Running, Option<VmConf>)> = ids
            .iter()
            .filter_map(|id| self.vmid_of(id).ok())
            .filter_map(|vmid| running.iter().find(|vm| vm.vmid == vmid))
            .map(|&vm| (vm, self.conf_lenient(vm.vmid)))
            .collect();
        let results = self.sample_all(&vms, deadline);
        Ok(vms
            .iter()
            .zip(results)
            .filter_map(|((vm, conf), result)| {
                let sample = result
                    .into_inner()
                    .unwrap_or_else(PoisonError::into_inner)?;
                Some((self.identity(vm.vmid, conf.as_ref()), sample))
            })
            .collect())
    }

    /// Every VM of `vms` asked in parallel, at most `max_parallel` at once, under
    /// `deadline`; None where a VM gave no figures.
    fn sample_all(
        &self,
        vms: &[(Running, Option<VmConf>)],
        deadline: Instant,
    ) -> Vec<Mutex<Option<BalloonSample>>> {
        let results: Vec<Mutex<Option<BalloonSample>>> =
            vms.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let n_workers = self.settings.max_parallel.clamp(1, vms.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..n_workers {
                scope.spawn(|| loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((vm, conf)) = vms.get(index) else {
                        return;
                    };
                    let sample = self.sample_one(*vm, conf.as_ref(), deadline);
                    *results[index]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = sample;
                });
            }
        });
        results
    }

    /// One VM's poll: one QMP conversation with both balloon commands.
    pub(super) fn sample_one(
        &self,
        vm: Running,
        conf: Option<&VmConf>,
        deadline: Instant,
    ) -> Option<BalloonSample> {
        let timeout = self
            .settings
            .call_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let memory_mib = conf.and_then(|conf| conf.memory_mib);
        // A QEMU process is asked for its memory devices at its first poll, and then
        // every poll only if it has a virtio-mem device.
        let ask_memory_devices = match self.lock().virtio_mem.get(&vm.vmid) {
            Some((pid, devices)) if *pid == vm.pid => !devices.is_empty(),
            _ => true,
        };
        let replies = if timeout.is_zero() {
            Err(WireError::Timeout {
                path: self.socket(vm.vmid, "qmp"),
                timeout,
            })
        } else {
            self.qmp(vm.vmid, timeout).and_then(|mut client| {
                let mut commands = vec![
                    ("query-balloon", None),
                    (
                        "qom-get",
                        Some(json!({"path": BALLOON_PATH, "property": "guest-stats"})),
                    ),
                ];
                if ask_memory_devices {
                    commands.push(("query-memory-devices", None));
                }
                client.execute_all(&commands)
            })
        };
        let mut virtio_mem = Vec::new();
        let mut sample = match replies {
            Ok(mut replies) => {
                if ask_memory_devices {
                    // A refused command (an old QEMU) counts as none.
                    virtio_mem = replies
                        .pop()
                        .and_then(Result::ok)
                        .map(|reply| crate::hypervisor::virtio_mem::from_qmp(&reply))
                        .unwrap_or_default();
                    self.lock()
                        .virtio_mem
                        .insert(vm.vmid, (vm.pid, virtio_mem.clone()));
                }
                let guest_stats = replies.pop().and_then(Result::ok);
                let balloon = replies.pop().and_then(|reply| {
                    reply
                        .map_err(|error| {
                            // `balloon: 0`: no device; anything else is worth a look.
                            tracing::debug!(vmid = vm.vmid, %error, "No balloon info.");
                        })
                        .ok()
                });
                if let Some(stats) = &guest_stats {
                    self.lock()
                        .guest_stats
                        .insert(vm.vmid, (Instant::now(), stats.clone()));
                }
                stats::balloon_sample(balloon.as_ref(), guest_stats.as_ref(), memory_mib)
            }
            Err(error) => {
                self.warn_rate_limited(vm.vmid, "Balloon poll of a VM failed; skipped.", &error);
                return None;
            }
        };
        sample.rss_kib = std::fs::read_to_string(
            self.settings
                .procfs_root
                .join(vm.pid.to_string())
                .join("status"),
        )
        .ok()
        .and_then(|status| stats::rss_kib(&status));
        sample.virtio_mem = virtio_mem;
        Some(sample)
    }
}
