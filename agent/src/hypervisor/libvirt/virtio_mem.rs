//! The virtio-mem devices of a domain XML (issue 20): `<memory model='virtio-mem'>`
//! with `<target>` `<size>` (the most it can give), `<node>`, `<block>`, `<requested>`
//! and, in a running domain's live XML (libvirt >= 7.9), `<current>` (what the guest
//! has plugged); the device's id is its `<alias name>` (libvirt names them
//! `virtiomem<N>`), or `virtiomem<index>` in an inactive XML without aliases.
//! Every size honours its `unit=` attribute (KiB when absent), like `<memory>`.

use ballast_model::VirtioMemDevice;
use roxmltree::Node;

use crate::hypervisor::virtio_mem::plausible;

/// The virtio-mem devices under `<devices>`, bounded ([`plausible`]).
pub(super) fn devices(
    devices: Node<'_, '_>,
    size_kib: impl Fn(Node<'_, '_>) -> Option<u64>,
) -> Vec<VirtioMemDevice> {
    let found = devices
        .children()
        .filter(|node| node.has_tag_name("memory"))
        .filter(|memory| memory.attribute("model") == Some("virtio-mem"))
        .take(crate::hypervisor::virtio_mem::MAX_DEVICES * 2)
        .enumerate()
        .map(|(index, memory)| {
            let target = child(memory, "target");
            let size = |name: &str| target.and_then(|t| child(t, name)).and_then(&size_kib);
            VirtioMemDevice {
                id: child(memory, "alias")
                    .and_then(|alias| alias.attribute("name"))
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("virtiomem{index}")),
                node: target
                    .and_then(|t| child(t, "node"))
                    .and_then(|node| node.text())
                    .and_then(|text| text.trim().parse().ok()),
                block_size_kib: size("block"),
                max_size_kib: size("size"),
                requested_kib: size("requested"),
                plugged_kib: size("current"),
            }
        })
        .collect();
    plausible(found)
}

/// The balloon's own maximum of a domain with virtio-mem devices. libvirt counts each
/// device's whole size in `<memory>` (its `balloon.maximum`) and what the guest has
/// plugged in `<currentMemory>` (`balloon.current`), so `maximum - current` would read
/// blocks the host unplugged as memory the balloon holds. Lowered by what the devices
/// could give but do not; unchanged when a device's figures are unknown.
pub(super) fn balloon_maximum(maximum: Option<u64>, devices: &[VirtioMemDevice]) -> Option<u64> {
    let unplugged = devices
        .iter()
        .map(|device| Some(device.max_size_kib?.saturating_sub(device.plugged_kib?)))
        .sum::<Option<u64>>();
    match (maximum, unplugged) {
        (Some(maximum), Some(unplugged)) => Some(maximum.saturating_sub(unplugged)),
        _ => maximum,
    }
}

fn child<'a, 'input>(parent: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    parent.children().find(|node| node.has_tag_name(name))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ballast_model::VirtioMemDevice;

    use super::balloon_maximum;

    use crate::hypervisor::libvirt::parse_domain_config;
    use crate::hypervisor::virtio_mem::MAX_DEVICES;

    /// A running libvirt 9.0 domain with one virtio-mem device on NUMA node 0
    /// (`maxMemory slots`, a NUMA cell, `<requested>` below `<current>`: an unplug
    /// under way), as `virsh dumpxml` writes it.
    #[test]
    fn the_live_xml_gives_the_device_with_its_plugged_size() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/libvirt/virtio-mem-live.xml");
        let xml = std::fs::read_to_string(&path).expect("fixture");
        let config = parse_domain_config(&xml).expect("parse");
        assert_eq!(config.virtio_mem.len(), 1);
        let device = &config.virtio_mem[0];
        assert_eq!(device.id, "virtiomem0");
        assert_eq!(device.node, Some(0));
        assert_eq!(device.block_size_kib, Some(2048));
        assert_eq!(device.max_size_kib, Some(4 * 1024 * 1024));
        assert_eq!(device.requested_kib, Some(1024 * 1024));
        assert_eq!(device.plugged_kib, Some(1536 * 1024));
        assert_eq!(config.free_page_reporting, Some(true));
    }

    #[test]
    fn units_are_honoured_and_an_inactive_device_has_no_plugged_size() {
        let xml = "<domain><devices>\
            <memory model='dimm'><target><size unit='MiB'>512</size><node>0</node></target></memory>\
            <memory model='virtio-mem'><target><size unit='GiB'>2</size><node>1</node>\
              <block unit='MiB'>2</block><requested unit='b'>1073741824</requested></target></memory>\
            <memory model='virtio-mem'><target><size unit='furlongs'>2</size>\
              <requested>-4</requested><node>x</node></target></memory>\
            </devices></domain>";
        let config = parse_domain_config(xml).expect("parse");
        assert_eq!(config.virtio_mem.len(), 2, "the dimm is not virtio-mem");
        let first = &config.virtio_mem[0];
        assert_eq!(first.id, "virtiomem0");
        assert_eq!(first.max_size_kib, Some(2 * 1024 * 1024));
        assert_eq!(first.block_size_kib, Some(2048));
        assert_eq!(first.requested_kib, Some(1024 * 1024));
        assert_eq!(first.plugged_kib, None);
        assert_eq!(first.node, Some(1));
        let second = &config.virtio_mem[1];
        assert_eq!(second.id, "virtiomem1");
        assert_eq!(
            (second.max_size_kib, second.requested_kib, second.node),
            (None, None, None)
        );
    }

    #[test]
    fn a_domain_listing_many_devices_keeps_sixteen() {
        let device = "<memory model='virtio-mem'><target><size>1024</size></target></memory>";
        let xml = format!("<domain><devices>{}</devices></domain>", device.repeat(100));
        let config = parse_domain_config(&xml).expect("parse");
        assert_eq!(config.virtio_mem.len(), MAX_DEVICES);
    }

    /// The lab's guest: 384 MiB boot memory and a 512 MiB device, of which 128 MiB
    /// plugged: libvirt's maximum 896 MiB, current 512 MiB; the balloon holds nothing.
    #[test]
    fn unplugged_blocks_are_not_the_balloons() {
        let device = |max, plugged| VirtioMemDevice {
            id: "virtiomem0".into(),
            max_size_kib: max,
            plugged_kib: plugged,
            ..VirtioMemDevice::default()
        };
        let maximum = Some(896 * 1024);
        let lowered = balloon_maximum(maximum, &[device(Some(512 * 1024), Some(128 * 1024))]);
        assert_eq!(lowered, Some(512 * 1024), "= libvirt's current: no balloon");
        assert_eq!(balloon_maximum(maximum, &[device(None, Some(1))]), maximum);
        assert_eq!(balloon_maximum(None, &[device(Some(1), Some(0))]), None);
        assert_eq!(balloon_maximum(maximum, &[]), maximum);
    }
}
