//! Validation of issue 20's fields: virtio-mem devices, their rollups and resize
//! events, and nova's instance identity. Every size is a memory figure
//! ([`super::check_kib`]); ids and names are bounded text.

use super::{check_kib, check_len, check_min_max_last, check_one_of, fail, TimeWindow};
use crate::elastic::{
    MemoryDeviceChange, NovaInstance, VirtioMemDevice, VirtioMemRollup, VirtioMemTotals,
};
use crate::validate::{FieldError, Limits};
use crate::ResizePhase;

/// The longest device id (QEMU ids and libvirt aliases are short).
const MAX_DEVICE_ID_BYTES: usize = 128;
/// The longest text of nova's metadata kept (names, uuids, versions).
pub const MAX_NOVA_TEXT_BYTES: usize = 255;

fn check_id(path: &str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() {
        return Err(fail(path, "must not be empty"));
    }
    check_len(path, id, MAX_DEVICE_ID_BYTES)
}

/// A VM's configured virtio-mem devices (`config.virtio_mem`).
pub(crate) fn check_devices(
    path: &str,
    devices: &[VirtioMemDevice],
    limits: &Limits,
) -> Result<(), FieldError> {
    if devices.len() > limits.max_list_items {
        return Err(fail(format!("{path}.virtio_mem"), "too many items"));
    }
    for (index, device) in devices.iter().enumerate() {
        let device_path = format!("{path}.virtio_mem[{index}]");
        check_id(&format!("{device_path}.id"), &device.id)?;
        check_kib(&device_path, "block_size_kib", device.block_size_kib)?;
        check_kib(&device_path, "max_size_kib", device.max_size_kib)?;
        check_kib(&device_path, "requested_kib", device.requested_kib)?;
        check_kib(&device_path, "plugged_kib", device.plugged_kib)?;
    }
    Ok(())
}

/// A rollup's devices (`virtio_mem`).
pub(crate) fn check_rollups(
    path: &str,
    rollups: &[VirtioMemRollup],
    limits: &Limits,
) -> Result<(), FieldError> {
    if rollups.len() > limits.max_list_items {
        return Err(fail(format!("{path}.virtio_mem"), "too many items"));
    }
    for (index, rollup) in rollups.iter().enumerate() {
        let device_path = format!("{path}.virtio_mem[{index}]");
        check_id(&format!("{device_path}.id"), &rollup.id)?;
        check_kib(&device_path, "block_size_kib", rollup.block_size_kib)?;
        check_kib(&device_path, "max_size_kib", rollup.max_size_kib)?;
        check_min_max_last(&device_path, "requested_kib", &rollup.requested_kib)?;
        check_min_max_last(&device_path, "plugged_kib", &rollup.plugged_kib)?;
    }
    Ok(())
}

/// Summed figures in a history point or at the OOM.
pub(crate) fn check_totals(
    path: &str,
    totals: &VirtioMemTotals,
    window: &TimeWindow,
) -> Result<(), FieldError> {
    check_kib(path, "plugged_kib", totals.plugged_kib)?;
    check_kib(path, "requested_kib", totals.requested_kib)?;
    check_kib(path, "max_size_kib", totals.max_size_kib)?;
    if let Some(at_ms) = totals.sampled_at_ms {
        window.check(format!("{path}.sampled_at_ms"), at_ms)?;
    }
    Ok(())
}

/// A resize event.
pub(crate) fn check_device_change(
    path: &str,
    change: &MemoryDeviceChange,
    window: &TimeWindow,
) -> Result<(), FieldError> {
    check_id(&format!("{path}.device"), &change.device)?;
    check_one_of(
        &format!("{path}.phase"),
        change.phase.as_str(),
        ResizePhase::NAMES,
    )?;
    check_kib(path, "requested_kib", change.requested_kib)?;
    check_kib(path, "plugged_kib", change.plugged_kib)?;
    check_kib(
        path,
        "previous_requested_kib",
        change.previous_requested_kib,
    )?;
    check_kib(path, "previous_plugged_kib", change.previous_plugged_kib)?;
    check_kib(path, "block_size_kib", change.block_size_kib)?;
    check_kib(path, "max_size_kib", change.max_size_kib)?;
    if let Some(at_ms) = change.unconverged_since_ms {
        window.check(format!("{path}.unconverged_since_ms"), at_ms)?;
    }
    Ok(())
}

/// Nova's identity of an instance: every text bounded.
pub(crate) fn check_nova(
    path: &str,
    nova: &NovaInstance,
    _limits: &Limits,
) -> Result<(), FieldError> {
    let texts = [
        ("name", &nova.name),
        ("instance_uuid", &nova.instance_uuid),
        ("project_id", &nova.project_id),
        ("project_name", &nova.project_name),
        ("user_id", &nova.user_id),
        ("user_name", &nova.user_name),
        ("flavor_name", &nova.flavor_name),
        ("nova_version", &nova.nova_version),
        ("created", &nova.created),
    ];
    for (field, value) in texts {
        if let Some(value) = value {
            check_len(&format!("{path}.{field}"), value, MAX_NOVA_TEXT_BYTES)?;
        }
    }
    if let Some(mib) = nova.flavor_memory_mib {
        check_kib(path, "flavor_memory_mib", Some(mib.saturating_mul(1024)))?;
    }
    Ok(())
}
