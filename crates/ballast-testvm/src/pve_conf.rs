//! A fake Proxmox VM config, `<root>/etc/pve/qemu-server/<vmid>.conf`.
//!
//! Only the keys a host agent reads for ballooning and consoles; the values match
//! the QEMU the harness starts (memory, balloon minimum, agent, serial socket).

use std::fmt::Write as _;

use crate::proxmox::ProxmoxSpec;

/// Renders the config file's text.
pub(crate) fn render(name: &str, spec: &ProxmoxSpec) -> String {
    let mut text = String::from(
        "# Proxmox-style VM config written by ballast-testvm (test fixture, not a PVE node)\n",
    );
    // Writing into a String cannot fail.
    if spec.agent {
        let _ = writeln!(text, "agent: 1");
    }
    let _ = writeln!(text, "balloon: {}", spec.balloon_min_mib);
    let _ = writeln!(text, "cores: 1");
    let _ = writeln!(text, "memory: {}", spec.memory_mib);
    let _ = writeln!(text, "name: {name}");
    // A memory device needs a NUMA node (the harness's QEMU has node 0 then).
    let numa = u8::from(spec.virtio_mem.is_some());
    let _ = writeln!(text, "numa: {numa}");
    let _ = writeln!(text, "ostype: l26");
    let _ = writeln!(text, "serial0: socket");
    let _ = writeln!(text, "sockets: 1");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_carries_balloon_agent_and_serial() {
        let text = render("ballast-test-1-1", &ProxmoxSpec::default());
        for line in [
            "agent: 1",
            "balloon: 256",
            "memory: 512",
            "name: ballast-test-1-1",
            "serial0: socket",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.lines().any(|l| l == "numa: 0"), "{text}");
    }

    #[test]
    fn a_virtio_mem_guest_has_numa_on() {
        let spec = ProxmoxSpec {
            virtio_mem: Some(crate::VirtioMemSpec::default()),
            ..ProxmoxSpec::default()
        };
        let text = render("ballast-test-1-1", &spec);
        assert!(text.lines().any(|l| l == "numa: 1"), "{text}");
    }
}
