//! Elastic memory beyond the balloon (issue 20): virtio-mem devices as the host sees
//! them, their resizes, and the identity a cloud gives a VM (OpenStack nova's domain
//! metadata).
//!
//! Every figure here is host-side (QEMU's `query-memory-devices` / `qom-get`, libvirt's
//! domain XML): the guest decides how much of a request it plugs or unplugs, so
//! `plugged` trails `requested` and may never reach it. Nova's metadata is written by
//! the cloud's tenants' requests (instance names, project names) and is shown as text
//! only, escaped like any guest string. Fields added to version-1 structures are
//! optional and left out of the JSON when empty, so an older collector reads the same
//! messages it always did; only [`crate::Event::MemoryDevice`] needs schema version 3.

use serde::{Deserialize, Serialize};

use crate::kinds::ResizePhase;
use crate::{MinMaxLast, VmRef};

/// One virtio-mem device of a VM at one poll (QEMU `virtio-mem-pci`; libvirt
/// `<memory model='virtio-mem'>`). All sizes KiB.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMemDevice {
    /// The device's id: QEMU's `id` (QOM path's last part), libvirt's `<alias name>`.
    pub id: String,
    /// The guest NUMA node the device's memory belongs to.
    #[serde(default)]
    pub node: Option<u32>,
    /// The unit the guest plugs and unplugs in (`block-size`, libvirt `<block>`).
    #[serde(default)]
    pub block_size_kib: Option<u64>,
    /// The most the device can provide (its memory backend's size, libvirt `<size>`).
    #[serde(default)]
    pub max_size_kib: Option<u64>,
    /// What the host asked the guest to have plugged (`requested-size`, `<requested>`).
    #[serde(default)]
    pub requested_kib: Option<u64>,
    /// What the guest has plugged now (`size`, libvirt `<current>`).
    #[serde(default)]
    pub plugged_kib: Option<u64>,
}

/// The virtio-mem figures summed over a VM's devices at one moment: what the host gave
/// through them, what it asked for, and the most they could give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMemTotals {
    #[serde(default)]
    pub plugged_kib: Option<u64>,
    #[serde(default)]
    pub requested_kib: Option<u64>,
    #[serde(default)]
    pub max_size_kib: Option<u64>,
    /// When the host sampled them (Unix ms, host clock); None in a history point, whose
    /// `at_ms` is the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at_ms: Option<i64>,
}

impl VirtioMemTotals {
    /// The sums over `devices` (a figure no device has stays None).
    pub fn of(devices: &[VirtioMemDevice]) -> Self {
        fn sum(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
            values.flatten().fold(None, |total: Option<u64>, v| {
                Some(total.unwrap_or(0).saturating_add(v))
            })
        }
        Self {
            plugged_kib: sum(devices.iter().map(|d| d.plugged_kib)),
            requested_kib: sum(devices.iter().map(|d| d.requested_kib)),
            max_size_kib: sum(devices.iter().map(|d| d.max_size_kib)),
            sampled_at_ms: None,
        }
    }

    /// What the devices could give but do not: `max_size - plugged` (the memory the host
    /// took, or never gave, through virtio-mem).
    pub fn unplugged_kib(&self) -> Option<u64> {
        Some(self.max_size_kib?.saturating_sub(self.plugged_kib?))
    }
}

/// One virtio-mem device over a rollup period ([`crate::BalloonRollup::virtio_mem`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMemRollup {
    pub id: String,
    #[serde(default)]
    pub node: Option<u32>,
    #[serde(default)]
    pub block_size_kib: Option<u64>,
    #[serde(default)]
    pub max_size_kib: Option<u64>,
    pub requested_kib: MinMaxLast,
    pub plugged_kib: MinMaxLast,
    /// Seconds, at the period's end, since `plugged` last equalled `requested` (None: it
    /// does now, or unknown).
    #[serde(default)]
    pub unconverged_secs: Option<u32>,
}

/// A virtio-mem resize as the host saw it (schema version 3): the host changed the
/// request, the guest's plugged size moved (QEMU `MEMORY_DEVICE_SIZE_CHANGE`, libvirt
/// `memory-device-size-change`), a request stayed unmet too long, or it was met at last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryDeviceChange {
    pub vm: VmRef,
    /// The device's id ([`VirtioMemDevice::id`]).
    pub device: String,
    pub phase: ResizePhase,
    /// The request and the plugged size now, and before the change.
    #[serde(default)]
    pub requested_kib: Option<u64>,
    #[serde(default)]
    pub plugged_kib: Option<u64>,
    #[serde(default)]
    pub previous_requested_kib: Option<u64>,
    #[serde(default)]
    pub previous_plugged_kib: Option<u64>,
    #[serde(default)]
    pub block_size_kib: Option<u64>,
    #[serde(default)]
    pub max_size_kib: Option<u64>,
    /// Since when `plugged` has differed from `requested` (Unix ms, host clock).
    #[serde(default)]
    pub unconverged_since_ms: Option<i64>,
}

/// The identity OpenStack nova writes into a domain's `<metadata>`
/// (`<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.x">`).
/// Tenant-chosen text: untrusted, bounded, escaped wherever shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NovaInstance {
    /// `<nova:name>`: the instance's display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The instance's uuid (nova names the domain after it: the domain's own uuid).
    #[serde(default)]
    pub instance_uuid: Option<String>,
    /// `<nova:owner><nova:project uuid=..>name</nova:project>`.
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub project_name: Option<String>,
    /// `<nova:owner><nova:user uuid=..>name</nova:user>`.
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub user_name: Option<String>,
    /// `<nova:flavor name=..>` with its `<nova:memory>` (MiB) and `<nova:vcpus>`.
    #[serde(default)]
    pub flavor_name: Option<String>,
    #[serde(default)]
    pub flavor_memory_mib: Option<u64>,
    #[serde(default)]
    pub flavor_vcpus: Option<u32>,
    /// `<nova:package version=..>`: the nova release that defined the domain.
    #[serde(default)]
    pub nova_version: Option<String>,
    /// `<nova:creationTime>` as written.
    #[serde(default)]
    pub created: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(plugged: Option<u64>, requested: Option<u64>, max: Option<u64>) -> VirtioMemDevice {
        VirtioMemDevice {
            id: "vmem0".into(),
            plugged_kib: plugged,
            requested_kib: requested,
            max_size_kib: max,
            ..VirtioMemDevice::default()
        }
    }

    #[test]
    fn totals_sum_what_the_devices_report_and_leave_the_rest_unknown() {
        let totals = VirtioMemTotals::of(&[
            device(Some(1024), Some(2048), Some(4096)),
            device(Some(512), None, Some(4096)),
        ]);
        assert_eq!(totals.plugged_kib, Some(1536));
        assert_eq!(totals.requested_kib, Some(2048));
        assert_eq!(totals.unplugged_kib(), Some(8192 - 1536));
        assert_eq!(VirtioMemTotals::of(&[]).unplugged_kib(), None);
    }
}
