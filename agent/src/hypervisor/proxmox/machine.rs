//! What a Proxmox VM's `machine:` says about its balloon's free page reporting, for
//! when QEMU's own `free-page-reporting` property cannot be read. qemu-server adds
//! `free-page-reporting=on` to `virtio-balloon-pci` for machine versions 6.2 and
//! newer; a machine type without a version takes the version of the QEMU that started
//! the VM, which the configuration does not say. QEMU's answer comes first
//! ([`live_free_page_reporting`]). Pure.

use serde_json::Value;

use super::conf::VmConf;
use super::wire::WireError;

/// The first machine version qemu-server starts with free page reporting.
const FIRST_VERSION_WITH_REPORTING: (u32, u32) = (6, 2);

/// Free page reporting by the VM's configured machine type: None where it has no
/// version (`q35`, `pc`, no `machine:` at all) or one that does not read.
pub fn free_page_reporting(conf: &VmConf) -> Option<bool> {
    let machine = conf.other.get("machine")?;
    let version = machine_version(machine_type(machine))?;
    Some(version >= FIRST_VERSION_WITH_REPORTING)
}

/// QEMU's answer to `qom-get` of the balloon's `free-page-reporting`: the property's
/// value, or off where QEMU has no such property (before 5.1, which added the
/// feature). None for any other answer.
pub fn live_free_page_reporting(reply: Result<Value, WireError>) -> Option<bool> {
    match reply {
        Ok(value) => value.as_bool(),
        Err(WireError::Command { desc, .. }) if desc.contains("not found") => Some(false),
        Err(_) => None,
    }
}

/// `pc-q35-8.1+pve0` or, in the property-string form, `type=pc-q35-8.1,viommu=virtio`.
fn machine_type(value: &str) -> &str {
    value
        .split(',')
        .find_map(|item| match item.split_once('=') {
            Some(("type", machine)) => Some(machine),
            Some(_) => None,
            None => Some(item),
        })
        .unwrap_or("")
        .trim()
}

/// `pc-i440fx-6.2` -> (6, 2); `pc-q35-8.1+pve0` -> (8, 1); `q35` -> None.
fn machine_version(machine: &str) -> Option<(u32, u32)> {
    let versioned = machine.split('+').next()?;
    let (_, version) = versioned.rsplit_once('-')?;
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_machine(machine: Option<&str>) -> VmConf {
        let mut conf = VmConf::default();
        if let Some(machine) = machine {
            conf.other.insert("machine".into(), machine.into());
        }
        conf
    }

    #[test]
    fn machine_versions_from_six_two_report_free_pages() {
        let fpr = |machine| free_page_reporting(&with_machine(machine));
        assert_eq!(fpr(Some("pc-i440fx-6.2")), Some(true));
        assert_eq!(fpr(Some("pc-q35-8.1+pve0")), Some(true));
        assert_eq!(fpr(Some("type=pc-q35-10.0+pve1,viommu=virtio")), Some(true));
        assert_eq!(fpr(Some("pc-i440fx-6.1")), Some(false));
        assert_eq!(fpr(Some("pc-i440fx-5.2")), Some(false));
        // Unversioned: the version of whichever QEMU started it.
        assert_eq!(fpr(Some("q35")), None);
        assert_eq!(fpr(Some("pc")), None);
        assert_eq!(fpr(Some("viommu=intel")), None);
        assert_eq!(fpr(None), None);
        assert_eq!(fpr(Some("pc-q35-x.y")), None);
    }
}
