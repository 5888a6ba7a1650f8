//! libvirt domain XML for a [`GuestSpec`].
//!
//! Shape (TCG shown; `type='kvm'` when the probe says KVM works):
//! ```xml
//! <domain type='qemu'>
//!   <name>ballast-test-123-1</name>
//!   <uuid>…</uuid><metadata>…</metadata>  <!-- GuestSpec::uuid, ::metadata_xml -->
//!   <memory unit='MiB'>512</memory><currentMemory unit='MiB'>512</currentMemory>
//!   <os><type arch='x86_64' machine='pc'>hvm</type><kernel>…</kernel><initrd>…</initrd>
//!     <cmdline>console=ttyS0 loglevel=7 panic=-1</cmdline></os>
//!   <on_reboot>restart</on_reboot> …
//!   <devices>
//!     <serial type='pty'><log file='…/serial.log' append='on'/><target port='0'/></serial>
//!     <!-- GuestSpec::file_console: the kernel console written to a file, instead: -->
//!     <serial type='file'><source path='…/instances/<uuid>/console.log' append='on'/>…</serial>
//!     <!-- Console::Virtio: the serial without its log, and instead: -->
//!     <console type='pty'><log file='…/serial.log' append='on'/><target type='virtio' port='0'/></console>
//!     <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
//!     <memballoon model='virtio' autodeflate='off'><stats period='2'/></memballoon>
//!   </devices>
//! </domain>
//! ```
//! With a virtio-mem device ([`crate::VirtioMemSpec`]; `memory_mib` is then the boot
//! memory, here 384 MiB, and the device adds up to 512 MiB):
//! ```xml
//!   <maxMemory slots='4' unit='KiB'>917504</maxMemory>
//!   <memory unit='KiB'>917504</memory><currentMemory unit='KiB'>917504</currentMemory>
//!   <cpu><numa><cell id='0' cpus='0' memory='393216' unit='KiB'/></numa></cpu>
//!   <devices> …
//!     <memory model='virtio-mem'><target><size unit='KiB'>524288</size><node>0</node>
//!       <block unit='KiB'>2048</block><requested unit='KiB'>524288</requested></target></memory>
//! ```
//! libvirt names the device `virtiomem0` and adds `<current>` (what is plugged) to
//! the live XML.

use std::fmt::Write as _;
use std::path::Path;

use crate::accel::Accel;
use crate::image::GuestImage;
use crate::spec::{Console, GuestSpec};

/// Renders the domain definition.
pub(crate) fn render(
    name: &str,
    spec: &GuestSpec,
    image: &GuestImage,
    accel: Accel,
    serial_log: &Path,
    emulator: Option<&Path>,
) -> String {
    let mut xml = String::new();
    let on_off = |flag: bool| if flag { "on" } else { "off" };
    // Writing into a String cannot fail.
    let _ = write!(
        xml,
        "<domain type='{domain_type}'>\n\
         \x20 <name>{name}</name>\n\
         {uuid}{metadata}\
         {memory}\
         \x20 <vcpu>{vcpus}</vcpu>\n\
         \x20 <os>\n\
         \x20   <type arch='x86_64' machine='pc'>hvm</type>\n\
         \x20   <kernel>{kernel}</kernel>\n\
         \x20   <initrd>{initrd}</initrd>\n\
         \x20   <cmdline>{cmdline}</cmdline>\n\
         \x20 </os>\n\
         \x20 <features><acpi/></features>\n\
         {numa}\
         \x20 <on_poweroff>destroy</on_poweroff>\n\
         \x20 <on_reboot>restart</on_reboot>\n\
         \x20 <on_crash>destroy</on_crash>\n\
         \x20 <devices>\n\
         {emulator}\
         \x20   <controller type='usb' model='none'/>\n",
        emulator = emulator
            .map(|path| format!(
                "    <emulator>{}</emulator>\n",
                escape(&path.to_string_lossy())
            ))
            .unwrap_or_default(),
        uuid = spec
            .uuid
            .as_deref()
            .map(|uuid| format!("  <uuid>{}</uuid>\n", escape(uuid)))
            .unwrap_or_default(),
        metadata = spec
            .metadata_xml
            .as_deref()
            .map(|inner| format!("  <metadata>\n{inner}\n  </metadata>\n"))
            .unwrap_or_default(),
        domain_type = accel.domain_type(),
        name = escape(name),
        memory = memory_elements(spec),
        numa = numa_cell(spec),
        vcpus = spec.vcpus.max(1),
        kernel = escape(&image.vmlinuz.to_string_lossy()),
        initrd = escape(&image.initramfs.to_string_lossy()),
        cmdline = escape(&spec.cmdline()),
    );
    let log = format!(
        "<log file='{}' append='on'/>",
        escape(&serial_log.to_string_lossy())
    );
    match spec.console {
        Console::Serial if spec.serial_log && spec.file_console.is_some() => {
            let _ = writeln!(
                xml,
                "    <serial type='file'><source path='{}' append='on'/><target port='0'/></serial>",
                escape(&serial_log.to_string_lossy())
            );
        }
        Console::Serial if spec.serial_log => {
            let _ = writeln!(
                xml,
                "    <serial type='pty'>{log}<target port='0'/></serial>"
            );
        }
        Console::Serial => xml.push_str("    <serial type='pty'><target port='0'/></serial>\n"),
        Console::Virtio => {
            // ttyS0 stays (unlogged); the virtio console carries the kernel console.
            xml.push_str("    <serial type='pty'><target port='0'/></serial>\n");
            let log = if spec.serial_log { log.as_str() } else { "" };
            let _ = writeln!(
                xml,
                "    <console type='pty'>{log}<target type='virtio' port='0'/></console>"
            );
        }
    }
    if spec.guest_agent {
        xml.push_str(
            "    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\n",
        );
    }
    let stats = if spec.stats_period_secs > 0 {
        format!("<stats period='{}'/>", spec.stats_period_secs)
    } else {
        String::new()
    };
    let _ = writeln!(
        xml,
        "    <memballoon model='virtio' autodeflate='{}'>{stats}</memballoon>",
        on_off(spec.autodeflate)
    );
    if let Some(device) = spec.virtio_mem {
        let _ = writeln!(
            xml,
            "    <memory model='virtio-mem'><target><size unit='KiB'>{size}</size><node>0</node>\
             <block unit='KiB'>{block}</block><requested unit='KiB'>{requested}</requested>\
             </target></memory>",
            size = device.max_mib * 1024,
            block = device.block_kib,
            requested = device.requested_mib.min(device.max_mib) * 1024,
        );
    }
    xml.push_str("  </devices>\n</domain>\n");
    xml
}

/// `<memory>` and `<currentMemory>`, and with a virtio-mem device `<maxMemory>`:
/// libvirt counts the device's full size into `<memory>`, and `<currentMemory>` (the
/// balloon target) includes it too, so the balloon stays empty at its maximum.
fn memory_elements(spec: &GuestSpec) -> String {
    let current = spec.current_mib.min(spec.memory_mib);
    match spec.virtio_mem {
        None => format!(
            "  <memory unit='MiB'>{}</memory>\n  <currentMemory unit='MiB'>{current}</currentMemory>\n",
            spec.memory_mib
        ),
        Some(device) => {
            let total = (spec.memory_mib + device.max_mib) * 1024;
            let current = (current + device.max_mib) * 1024;
            format!(
                "  <maxMemory slots='{slots}' unit='KiB'>{total}</maxMemory>\n\
                 \x20 <memory unit='KiB'>{total}</memory>\n\
                 \x20 <currentMemory unit='KiB'>{current}</currentMemory>\n",
                slots = device.slots.max(1),
            )
        }
    }
}

/// The one NUMA cell (all vCPUs, the boot memory) libvirt needs for a memory device.
fn numa_cell(spec: &GuestSpec) -> String {
    if spec.virtio_mem.is_none() {
        return String::new();
    }
    format!(
        "  <cpu><numa><cell id='0' cpus='0-{last}' memory='{kib}' unit='KiB'/></numa></cpu>\n",
        last = spec.vcpus.max(1) - 1,
        kib = spec.memory_mib * 1024,
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::kernel::GuestKernel;

    fn image() -> GuestImage {
        GuestImage {
            kernel: GuestKernel::Debian61,
            release: "6.1.0-56-amd64".to_owned(),
            vmlinuz: PathBuf::from("/lab/vmlinuz"),
            initramfs: PathBuf::from("/lab/initramfs.cpio.gz"),
            build_time: None,
        }
    }

    #[test]
    fn renders_balloon_serial_log_and_agent() {
        let image = image();
        let spec = GuestSpec {
            autodeflate: true,
            loglevel: 4,
            ..GuestSpec::default()
        };
        let xml = render(
            "ballast-test-1-1",
            &spec,
            &image,
            Accel::Tcg,
            Path::new("/run/s.log"),
            None,
        );
        assert!(xml.starts_with("<domain type='qemu'>"));
        assert!(!xml.contains("<emulator>"));
        assert!(xml.contains(
            "<memballoon model='virtio' autodeflate='on'><stats period='2'/></memballoon>"
        ));
        assert!(xml.contains("<log file='/run/s.log' append='on'/>"));
        assert!(xml.contains("name='org.qemu.guest_agent.0'"));
        assert!(xml.contains("<cmdline>console=ttyS0 loglevel=4 panic=-1</cmdline>"));
        assert!(!xml.contains("<console"));
    }

    #[test]
    fn a_virtio_console_takes_the_log_from_the_serial_port() {
        let image = image();
        let spec = GuestSpec {
            console: Console::Virtio,
            ..GuestSpec::default()
        };
        let xml = render(
            "t",
            &spec,
            &image,
            Accel::Tcg,
            Path::new("/run/s.log"),
            None,
        );
        assert!(xml.contains("<serial type='pty'><target port='0'/></serial>"));
        assert!(xml.contains(
            "<console type='pty'><log file='/run/s.log' append='on'/><target type='virtio' port='0'/></console>"
        ));
        assert_eq!(xml.matches("<log ").count(), 1);
        assert!(xml.contains("<cmdline>console=hvc0 "));
    }

    #[test]
    fn nova_like_metadata_uuid_and_a_file_console() {
        let spec = GuestSpec {
            uuid: Some("5d3a4b1e-8c2f-4e7a-9b0d-1f2e3d4c5b6a".to_owned()),
            metadata_xml: Some(
                "<x:instance xmlns:x='urn:x'><x:name>n</x:name></x:instance>".into(),
            ),
            file_console: Some(PathBuf::from("instances/u/console.log")),
            ..GuestSpec::default()
        };
        let xml = render(
            "t",
            &spec,
            &image(),
            Accel::Tcg,
            Path::new("/run/instances/u/console.log"),
            None,
        );
        assert!(xml.contains(
            "  <name>t</name>\n  <uuid>5d3a4b1e-8c2f-4e7a-9b0d-1f2e3d4c5b6a</uuid>\n  <metadata>\n<x:instance xmlns:x='urn:x'><x:name>n</x:name></x:instance>\n  </metadata>\n  <memory"
        ));
        assert!(xml.contains(
            "<serial type='file'><source path='/run/instances/u/console.log' append='on'/><target port='0'/></serial>"
        ));
        assert!(!xml.contains("<log "), "no virtlogd log beside the file");
        let plain = render(
            "t",
            &GuestSpec::default(),
            &image(),
            Accel::Tcg,
            Path::new("/s"),
            None,
        );
        assert!(!plain.contains("<uuid>") && !plain.contains("<metadata>"));
    }

    #[test]
    fn another_qemu_is_named_as_the_emulator() {
        let xml = render(
            "t",
            &GuestSpec::default(),
            &image(),
            Accel::Tcg,
            Path::new("/run/s.log"),
            Some(Path::new("/opt/qemu-7.2/usr/bin/qemu-system-x86_64")),
        );
        assert!(xml.contains(
            "  <devices>\n    <emulator>/opt/qemu-7.2/usr/bin/qemu-system-x86_64</emulator>\n"
        ));
    }

    #[test]
    fn without_virtio_mem_there_is_no_numa_cell_and_no_memory_device() {
        let xml = render(
            "t",
            &GuestSpec::default(),
            &image(),
            Accel::Tcg,
            Path::new("/run/s.log"),
            None,
        );
        assert!(xml.contains("  <memory unit='MiB'>512</memory>\n"));
        assert!(xml.contains("  <currentMemory unit='MiB'>512</currentMemory>\n"));
        for absent in ["<maxMemory", "<numa>", "virtio-mem"] {
            assert!(!xml.contains(absent), "{absent} in\n{xml}");
        }
    }

    #[test]
    fn a_virtio_mem_device_gets_max_memory_a_numa_cell_and_its_target() {
        let spec = GuestSpec {
            memory_mib: 384,
            current_mib: 384,
            vcpus: 2,
            virtio_mem: Some(crate::VirtioMemSpec {
                max_mib: 512,
                requested_mib: 256,
                block_kib: 4096,
                slots: 2,
                online: crate::VirtioMemOnline::Movable,
            }),
            ..GuestSpec::default()
        };
        let xml = render(
            "t",
            &spec,
            &image(),
            Accel::Tcg,
            Path::new("/run/s.log"),
            None,
        );
        assert!(xml.contains("  <maxMemory slots='2' unit='KiB'>917504</maxMemory>\n"));
        assert!(xml.contains("  <memory unit='KiB'>917504</memory>\n"));
        assert!(xml.contains("  <currentMemory unit='KiB'>917504</currentMemory>\n"));
        assert!(xml.contains(
            "  <cpu><numa><cell id='0' cpus='0-1' memory='393216' unit='KiB'/></numa></cpu>\n"
        ));
        assert!(xml.contains(
            "<memory model='virtio-mem'><target><size unit='KiB'>524288</size><node>0</node>\
             <block unit='KiB'>4096</block><requested unit='KiB'>262144</requested></target></memory>"
        ));
        assert!(xml.contains(" memhp_default_state=online_movable</cmdline>"));
        // <cpu> belongs between <features> and <on_poweroff> (libvirt's order).
        let cpu = xml.find("<cpu>").unwrap_or(0);
        assert!(xml.find("<features>").unwrap_or(usize::MAX) < cpu);
        assert!(cpu < xml.find("<on_poweroff>").unwrap_or(0));
    }
}
