//! The guard's own poll (`guard.poll_interval_secs`, docs/guard.md "Reach"): between
//! the agent's polls of all VMs, the VMs whose balloon holds memory the guard could give
//! back are read again, so the risk model sees each guest report and the guard steps in
//! time. Pure, like the rest of the fleet.

use std::time::SystemTime;

use super::{Change, Fleet};
use crate::hypervisor::{BalloonSample, DomainId};

/// What a VM's balloon must hold for the guard's own poll to read it (KiB): less is
/// nothing worth a step.
pub(crate) const GUARD_POLL_MIN_HELD_KIB: u64 = 32 * 1024;

impl Fleet {
    /// The VMs the guard's own poll reads: sampled and not stale, their balloon holding
    /// at least [`GUARD_POLL_MIN_HELD_KIB`] below its maximum, and no virtio-mem device
    /// (its maximum comes from the domain's devices, which only the full poll reads).
    pub fn guard_poll_ids(&self) -> Vec<DomainId> {
        self.vms
            .values()
            .filter(|vm| vm.sampled_at.is_some() && !vm.stale && vm.elastic.is_none())
            .filter(|vm| {
                vm.config
                    .as_ref()
                    .is_none_or(|config| config.virtio_mem.is_empty())
            })
            .filter(|vm| {
                vm.last_sample.as_ref().is_some_and(|sample| {
                    match (sample.actual_kib, sample.maximum_kib) {
                        (Some(actual), Some(maximum)) => {
                            maximum.saturating_sub(actual) >= GUARD_POLL_MIN_HELD_KIB
                        }
                        _ => false,
                    }
                })
            })
            .map(|vm| vm.id.clone())
            .collect()
    }

    /// The guard's own poll at `at`: each known VM's sample goes into its history,
    /// rollup and signals as in [`Fleet::apply_poll`] (`VmState::take_sample`), so
    /// [`Fleet::observe_pressure`] and [`Fleet::decide_guard`] read it at `at`. A VM not
    /// known yet waits for the full poll, which also keeps the staleness count (polls
    /// of one report; this poll's pace would call a 10 s stats period stale), the
    /// virtio-mem devices and the gone-detection.
    pub fn apply_guard_poll(
        &mut self,
        at: SystemTime,
        samples: Vec<(DomainId, BalloonSample)>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for (id, sample) in samples {
            let Some(vm) = self.vms.get_mut(&id.uuid) else {
                continue;
            };
            let mut sample = sample.plausible();
            sample.virtio_mem = Vec::new();
            if let Some(rollup) = vm.take_sample(at, &sample, &mut changes) {
                self.finished_rollups.push(rollup);
            }
            vm.last_sample = Some(sample);
        }
        changes
    }
}
