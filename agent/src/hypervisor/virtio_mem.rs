//! virtio-mem devices as the backends read them (issue 20): QMP's
//! `query-memory-devices` reply parsed as hostile (sizes in bytes -> KiB), and the
//! bounds every backend's devices pass before the fleet sees them ([`plausible`]).
//!
//! The sizes come from QEMU, but `size` (plugged) moves only as the guest's driver
//! plugs and unplugs blocks, and a reply is only as sane as the process that wrote
//! it: a device list is cut to [`MAX_DEVICES`], an id to [`MAX_ID_BYTES`], and a size
//! beyond any machine's memory is missing, not a figure.

use ballast_model::VirtioMemDevice;
use serde_json::Value;

/// The most virtio-mem devices kept per VM (QEMU allows one per NUMA node; a reply
/// listing more is cut).
pub const MAX_DEVICES: usize = 16;
/// The longest device id kept (QEMU ids and libvirt aliases are short).
pub const MAX_ID_BYTES: usize = 128;

/// `devices` fit for the fleet and the wire: at most [`MAX_DEVICES`], each with a
/// printable id of at most [`MAX_ID_BYTES`] (a device without one is dropped; two
/// with the same id keep the first) and every size beyond any machine's memory
/// made missing.
pub fn plausible(devices: Vec<VirtioMemDevice>) -> Vec<VirtioMemDevice> {
    use ballast_model::plausible_kib as kib;
    let mut kept: Vec<VirtioMemDevice> = Vec::new();
    for device in devices {
        if kept.len() == MAX_DEVICES {
            break;
        }
        let Some(id) = clean_id(&device.id) else {
            continue;
        };
        if kept.iter().any(|other| other.id == id) {
            continue;
        }
        kept.push(VirtioMemDevice {
            id,
            node: device.node,
            block_size_kib: kib(device.block_size_kib),
            max_size_kib: kib(device.max_size_kib),
            requested_kib: kib(device.requested_kib),
            plugged_kib: kib(device.plugged_kib),
        });
    }
    kept
}

/// A device id fit for keys, labels and the wire: trimmed, non-empty, at most
/// [`MAX_ID_BYTES`], with `/`, whitespace and control characters replaced by `_`.
pub fn clean_id(id: &str) -> Option<String> {
    let id = id.trim();
    if id.is_empty() {
        return None;
    }
    let mut end = id.len().min(MAX_ID_BYTES);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    Some(
        id[..end]
            .chars()
            .map(|c| {
                if c == '/' || c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
    )
}

/// The virtio-mem devices of a QMP `query-memory-devices` reply (its `return`
/// array): entries of `type` `virtio-mem` with `data` {`id`, `size`,
/// `requested-size`, `max-size`, `block-size`, `node`}; sizes in bytes. Other memory
/// devices (dimm, virtio-pmem) and entries that are not objects are skipped; a
/// device without `id` is named after its `memdev` (QOM path's last part).
pub fn from_qmp(reply: &Value) -> Vec<VirtioMemDevice> {
    let Some(entries) = reply.as_array() else {
        return Vec::new();
    };
    let devices = entries
        .iter()
        .filter(|entry| entry.get("type").and_then(Value::as_str) == Some("virtio-mem"))
        .filter_map(|entry| entry.get("data"))
        .take(MAX_DEVICES * 2)
        .filter_map(|data| {
            let id = data
                .get("id")
                .and_then(Value::as_str)
                .or_else(|| {
                    data.get("memdev")
                        .and_then(Value::as_str)
                        .and_then(|path| path.rsplit('/').next())
                })?
                .to_string();
            let kib = |field: &str| {
                data.get(field)
                    .and_then(Value::as_u64)
                    .map(|bytes| bytes.div_ceil(1024))
            };
            Some(VirtioMemDevice {
                id,
                node: data
                    .get("node")
                    .and_then(Value::as_u64)
                    .and_then(|node| u32::try_from(node).ok()),
                block_size_kib: kib("block-size"),
                max_size_kib: kib("max-size"),
                requested_kib: kib("requested-size"),
                plugged_kib: kib("size"),
            })
        })
        .collect();
    plausible(devices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `query-memory-devices` as QEMU 8.x/9.x answers for a VM with one DIMM and two
    /// virtio-mem devices (one per NUMA node), the second shrinking.
    fn reply() -> Value {
        json!([
            {"type": "dimm", "data": {"id": "dimm0", "addr": 4294967296u64, "size": 536870912,
             "slot": 0, "node": 0, "memdev": "/objects/mem-dimm0", "hotplugged": false,
             "hotpluggable": true}},
            {"type": "virtio-mem", "data": {"id": "virtiomem0", "memaddr": 8589934592u64,
             "requested-size": 1073741824, "size": 1073741824, "max-size": 4294967296u64,
             "block-size": 2097152, "node": 0, "memdev": "/objects/memvirtiomem0"}},
            {"type": "virtio-mem", "data": {"memaddr": 17179869184u64,
             "requested-size": 268435456, "size": 805306368, "max-size": 4294967296u64,
             "block-size": 2097152, "node": 1, "memdev": "/objects/memvirtiomem1"}}
        ])
    }

    #[test]
    fn a_qmp_reply_gives_the_virtio_mem_devices_in_kib() {
        let devices = from_qmp(&reply());
        assert_eq!(devices.len(), 2, "{devices:?}");
        assert_eq!(
            devices[0],
            VirtioMemDevice {
                id: "virtiomem0".into(),
                node: Some(0),
                block_size_kib: Some(2048),
                max_size_kib: Some(4 * 1024 * 1024),
                requested_kib: Some(1024 * 1024),
                plugged_kib: Some(1024 * 1024),
            }
        );
        // No id: named after its memory backend.
        assert_eq!(devices[1].id, "memvirtiomem1");
        assert_eq!(devices[1].requested_kib, Some(256 * 1024));
        assert_eq!(devices[1].plugged_kib, Some(768 * 1024));
        assert_eq!(devices[1].node, Some(1));
    }

    #[test]
    fn a_hostile_reply_is_bounded_and_absurd_sizes_are_missing() {
        let many: Vec<Value> = (0..100)
            .map(|n| {
                json!({"type": "virtio-mem", "data": {"id": format!("vm{n}"),
                    "size": u64::MAX, "requested-size": -5, "block-size": "2M",
                    "node": 1u64 << 40}})
            })
            .collect();
        let devices = from_qmp(&Value::Array(many));
        assert_eq!(devices.len(), MAX_DEVICES);
        assert_eq!(devices[0].plugged_kib, None, "u64::MAX bytes is no machine");
        assert_eq!(devices[0].requested_kib, None);
        assert_eq!(devices[0].block_size_kib, None);
        assert_eq!(devices[0].node, None);
        assert!(from_qmp(&json!({"return": "nonsense"})).is_empty());
        assert!(from_qmp(&json!([1, "x", {"type": "virtio-mem"}])).is_empty());
    }

    #[test]
    fn ids_are_cut_cleaned_and_unique() {
        let long = "é".repeat(200);
        let devices = plausible(vec![
            VirtioMemDevice {
                id: format!("a/b\n{long}"),
                ..VirtioMemDevice::default()
            },
            VirtioMemDevice {
                id: "  ".into(),
                ..VirtioMemDevice::default()
            },
            VirtioMemDevice {
                id: "x".into(),
                plugged_kib: Some(1),
                ..VirtioMemDevice::default()
            },
            VirtioMemDevice {
                id: "x".into(),
                plugged_kib: Some(2),
                ..VirtioMemDevice::default()
            },
        ]);
        assert_eq!(devices.len(), 2);
        assert!(devices[0].id.starts_with("a_b_é"));
        assert!(devices[0].id.len() <= MAX_ID_BYTES);
        assert_eq!(devices[1].plugged_kib, Some(1));
    }
}
