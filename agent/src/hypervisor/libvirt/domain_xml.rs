//! Domain XML (`virDomainGetXMLDesc`) -> [`DomainConfig`].
//!
//! Parsed with `roxmltree`: a small, maintained, read-only DOM without `unsafe` and
//! without further dependencies; the XML comes from libvirtd (trusted) and is read
//! once per call, so a DOM is simpler than a streaming parser, and a serde mapping
//! of libvirt's huge schema would be far more code for nine fields.
//! Only the elements ballast uses are read; everything else is ignored.

use std::path::PathBuf;

use roxmltree::{Document, Node};

use crate::hypervisor::DomainConfig;

/// The domain XML could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DomainXmlError {
    #[error("Malformed domain XML")]
    Malformed(#[source] roxmltree::Error),
    #[error("Root element is <{0}>, not <domain>")]
    NotADomain(String),
}

/// Reads what ballast cares about from a domain's XML.
pub fn parse_domain_config(xml: &str) -> Result<DomainConfig, DomainXmlError> {
    let document = Document::parse(xml).map_err(DomainXmlError::Malformed)?;
    let domain = document.root_element();
    if !domain.has_tag_name("domain") {
        return Err(DomainXmlError::NotADomain(
            domain.tag_name().name().to_owned(),
        ));
    }
    let mut config = DomainConfig {
        memory_kib: child(domain, "memory").and_then(memory_kib),
        current_memory_kib: child(domain, "currentMemory").and_then(memory_kib),
        kernel_cmdline: child(domain, "os")
            .and_then(|os| child(os, "cmdline"))
            .and_then(|cmdline| cmdline.text())
            .map(str::to_owned),
        openstack: super::nova::nova_instance(domain),
        ..DomainConfig::default()
    };
    let Some(devices) = child(domain, "devices") else {
        return Ok(config);
    };
    if let Some(balloon) = child(devices, "memballoon") {
        let model = balloon.attribute("model").unwrap_or("");
        config.balloon_present = model.starts_with("virtio");
        if config.balloon_present {
            config.stats_period_secs = child(balloon, "stats")
                .and_then(|stats| stats.attribute("period"))
                .and_then(|period| period.trim().parse().ok());
            config.deflate_on_oom = balloon.attribute("autodeflate").and_then(on_off);
            // Without the attribute libvirt passes nothing and QEMU's default is off.
            config.free_page_reporting = balloon
                .attribute("freePageReporting")
                .map_or(Some(false), on_off);
        }
    }
    // The serial port's log first, then a console's (a console is usually the same port).
    config.serial_log_path = elements(devices, "serial")
        .chain(elements(devices, "console"))
        .find_map(char_device_log);
    config.virtio_mem = super::virtio_mem::devices(devices, memory_kib);
    config.guest_agent_channel = elements(devices, "channel").any(|channel| {
        child(channel, "target").is_some_and(|target| {
            target.attribute("type") == Some("virtio")
                && target.attribute("name") == Some("org.qemu.guest_agent.0")
        })
    });
    Ok(config)
}

/// A memory size element (`<memory unit='MiB'>512</memory>`) in KiB, rounded up like
/// libvirt does. None for a malformed value, an unknown unit or an overflow.
fn memory_kib(element: Node<'_, '_>) -> Option<u64> {
    let value: u128 = element.text()?.trim().parse().ok()?;
    let unit_bytes = unit_bytes(element.attribute("unit").unwrap_or("KiB"))?;
    let bytes = value.checked_mul(unit_bytes)?;
    u64::try_from(bytes.div_ceil(1024)).ok()
}

/// Bytes per unit, as libvirt's formatdomain "Memory Allocation" defines them
/// (case-insensitive, like libvirt's virScaleInteger).
fn unit_bytes(unit: &str) -> Option<u128> {
    let unit = unit.to_ascii_lowercase();
    let (power, decimal) = match unit.as_str() {
        "b" | "byte" | "bytes" => return Some(1),
        "k" | "kib" => (1, false),
        "kb" => (1, true),
        "m" | "mib" => (2, false),
        "mb" => (2, true),
        "g" | "gib" => (3, false),
        "gb" => (3, true),
        "t" | "tib" => (4, false),
        "tb" => (4, true),
        "p" | "pib" => (5, false),
        "pb" => (5, true),
        "e" | "eib" => (6, false),
        "eb" => (6, true),
        _ => return None,
    };
    let base: u128 = if decimal { 1000 } else { 1024 };
    Some(base.pow(power))
}

fn on_off(value: &str) -> Option<bool> {
    match value {
        "on" | "yes" => Some(true),
        "off" | "no" => Some(false),
        _ => None,
    }
}

/// The file a `<serial>`/`<console>` writes: `<log file=.../>` or, for
/// `type='file'`, `<source path=.../>`.
fn char_device_log(device: Node<'_, '_>) -> Option<PathBuf> {
    if let Some(file) = child(device, "log").and_then(|log| log.attribute("file")) {
        return Some(PathBuf::from(file));
    }
    if device.attribute("type") == Some("file") {
        return child(device, "source")
            .and_then(|source| source.attribute("path"))
            .map(PathBuf::from);
    }
    None
}

fn child<'a, 'input>(parent: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    parent.children().find(|node| node.has_tag_name(name))
}

fn elements<'a, 'input: 'a>(
    parent: Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    parent
        .children()
        .filter(move |node| node.has_tag_name(name))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    use crate::hypervisor::libvirt::xml_fixture as fixture;

    /// `virsh dumpxml` of a running harness guest (autodeflate on, pty serial + log).
    #[test]
    fn harness_live_domain() {
        let config = parse_domain_config(&fixture("harness-live.xml")).expect("parse");
        assert_eq!(
            config,
            DomainConfig {
                balloon_present: true,
                stats_period_secs: Some(2),
                deflate_on_oom: Some(true),
                free_page_reporting: Some(false),
                serial_log_path: Some(PathBuf::from(
                    "/work/main/target/ballast-lab/run/ballast-test-14176-1/serial.log"
                )),
                guest_agent_channel: true,
                kernel_cmdline: Some("console=ttyS0 loglevel=7 panic=-1".to_owned()),
                memory_kib: Some(524_288),
                current_memory_kib: Some(524_288),
                openstack: None,
                virtio_mem: Vec::new(),
            }
        );
    }

    /// `virsh dumpxml` of a harness guest whose kernel console is a virtio console
    /// (`console=hvc0`): the serial port and libvirt's console alias of it carry no
    /// log, the virtio `<console>` does.
    #[test]
    fn virtio_console_log_when_the_serial_has_none() {
        let config = parse_domain_config(&fixture("harness-virtio-console.xml")).expect("parse");
        assert_eq!(
            config.serial_log_path.as_deref(),
            Some(Path::new(
                "/work/main/target/ballast-lab/run/ballast-test-16307-1/serial.log"
            ))
        );
        assert!(config.guest_agent_channel);
        assert!(config
            .kernel_cmdline
            .as_deref()
            .is_some_and(|cmdline| cmdline.starts_with("console=hvc0")));
    }

    /// `virsh dumpxml --inactive` of the same guest: same answers without live details.
    #[test]
    fn harness_inactive_domain() {
        let config = parse_domain_config(&fixture("harness-inactive.xml")).expect("parse");
        assert!(config.balloon_present);
        assert_eq!(config.stats_period_secs, Some(2));
        assert!(config.guest_agent_channel);
        assert!(config.serial_log_path.is_some());
    }

    /// LAB-NOTES §4's domain: `<serial type='file'>`, MiB units, no autodeflate attribute.
    #[test]
    fn file_serial_mib_units_and_free_page_reporting() {
        let config = parse_domain_config(&fixture("file-serial.xml")).expect("parse");
        assert_eq!(
            config.serial_log_path.as_deref(),
            Some(Path::new("/var/lib/lab/run/lab-oom.serial.log"))
        );
        assert_eq!(config.memory_kib, Some(512 * 1024));
        assert_eq!(config.current_memory_kib, Some(200 * 1024));
        assert_eq!(config.deflate_on_oom, Some(false));
        assert_eq!(config.free_page_reporting, Some(true));
        assert_eq!(config.stats_period_secs, Some(10));
        assert!(!config.guest_agent_channel);
    }

    #[test]
    fn no_balloon_no_devices_console_only() {
        let xml = "<domain type='kvm'><memory unit='GiB'>2</memory><devices>\
                   <memballoon model='none'/>\
                   <console type='pty'><log file='/var/log/c.log'/></console>\
                   <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.1'/></channel>\
                   </devices></domain>";
        let config = parse_domain_config(xml).expect("parse");
        assert!(!config.balloon_present);
        assert_eq!(config.stats_period_secs, None);
        assert_eq!(config.memory_kib, Some(2 * 1024 * 1024));
        assert_eq!(
            config.serial_log_path.as_deref(),
            Some(Path::new("/var/log/c.log"))
        );
        assert!(!config.guest_agent_channel);
        let bare = parse_domain_config("<domain/>").expect("parse");
        assert_eq!(bare, DomainConfig::default());
    }

    #[test]
    fn memory_units() {
        let kib = |unit: &str, value: &str| {
            let xml = format!("<domain><memory unit='{unit}'>{value}</memory></domain>");
            parse_domain_config(&xml).expect("parse").memory_kib
        };
        assert_eq!(kib("KiB", "524288"), Some(524_288));
        assert_eq!(kib("k", "4"), Some(4));
        assert_eq!(kib("b", "1"), Some(1), "rounded up to a whole KiB");
        assert_eq!(kib("bytes", "2048"), Some(2));
        assert_eq!(kib("KB", "1024"), Some(1000));
        assert_eq!(kib("M", "1"), Some(1024));
        assert_eq!(kib("MB", "1"), Some(977));
        assert_eq!(kib("G", "1"), Some(1024 * 1024));
        assert_eq!(kib("TiB", "1"), Some(1024 * 1024 * 1024));
        assert_eq!(kib("furlongs", "1"), None);
        assert_eq!(kib("KiB", "-1"), None);
        assert_eq!(kib("EiB", "99999999"), None, "overflows u64 KiB");
        let default_unit = parse_domain_config("<domain><memory>64</memory></domain>");
        assert_eq!(default_unit.expect("parse").memory_kib, Some(64));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            parse_domain_config("<domain>"),
            Err(DomainXmlError::Malformed(_))
        ));
        assert!(matches!(
            parse_domain_config("<network/>"),
            Err(DomainXmlError::NotADomain(name)) if name == "network"
        ));
    }
}
