//! What a test asks for: [`GuestSpec`] for libvirt guests.

use crate::kernel::GuestKernel;

/// A libvirt guest to boot. Build with struct update syntax from `GuestSpec::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    /// `<memory>`: the maximum, what the guest sees with an empty balloon.
    pub memory_mib: u64,
    /// `<currentMemory>`: the balloon target at boot.
    pub current_mib: u64,
    pub vcpus: u32,
    /// `<memballoon autodeflate='on'>` (VIRTIO_BALLOON_F_DEFLATE_ON_OOM).
    pub autodeflate: bool,
    /// `<stats period='N'/>`; 0 leaves stats off.
    pub stats_period_secs: u32,
    /// Kernel `loglevel=` (console loglevel). 7 prints the whole OOM report; 4 is what
    /// `quiet` gives, and hides the task list (`pr_info`).
    pub loglevel: u8,
    pub kernel: GuestKernel,
    /// Log the serial console to a file through virtlogd (needed for `wait_serial`).
    pub serial_log: bool,
    /// Add the `org.qemu.guest_agent.0` channel (needed for `exec` and the hog).
    pub guest_agent: bool,
    /// `lab.memlog=S`: the guest prints MemTotal/MemFree/MemAvailable every S seconds.
    pub memlog_secs: Option<u32>,
    /// More kernel arguments, appended as given.
    pub extra_cmdline: Vec<String>,
    /// Which device is the kernel console (and carries `serial_log`).
    pub console: Console,
    /// Run a hostile guest agent on `org.qemu.guest_agent.0` from the guest's init,
    /// instead of qemu-ga (`lab.qga=`). [`Guest::wait_ready`](crate::Guest::wait_ready)
    /// then waits for the console only, and `exec` does not work: use
    /// [`Guest::console_run`](crate::Guest::console_run) with `console_shell`.
    pub hostile_agent: Option<HostileAgent>,
    /// The guest's init runs every line the host writes to the console as a shell
    /// command (`lab.console_shell=1`; the console's echo is off, so commands are not
    /// logged). See [`Guest::console_run`](crate::Guest::console_run).
    pub console_shell: bool,
    /// The domain's `<uuid>`; None lets libvirt pick one.
    pub uuid: Option<String>,
    /// XML put inside the domain's `<metadata>` as given (the test's own, trusted:
    /// e.g. nova's `<nova:instance>`); None writes no `<metadata>`.
    pub metadata_xml: Option<String>,
    /// The kernel console as a file serial at this path under the guest's run
    /// directory (`<serial type='file'><source path=../>`: how nova defines the
    /// console.log of an instance without virtlogd), instead of a pty serial logged
    /// by virtlogd; with `serial_log` and [`Console::Serial`] only. The guest's serial
    /// log ([`Guest::serial_log_path`](crate::Guest::serial_log_path)) is that file.
    pub file_console: Option<std::path::PathBuf>,
    /// A virtio-mem device beside the boot memory (`None`: the balloon only). With it,
    /// `memory_mib` is the boot memory of NUMA node 0 and the guest can grow by the
    /// device's `max_mib` on top (see [`VirtioMemSpec`]).
    pub virtio_mem: Option<VirtioMemSpec>,
}

/// A virtio-mem device (`virtio-mem-pci`): memory the host plugs into and unplugs from
/// the guest in blocks, up to `max_mib`, by changing its `requested-size`.
///
/// libvirt: `<maxMemory slots=..>` (boot memory + `max_mib`), a NUMA cell of the
/// boot memory in `<cpu><numa>`, and `<memory model='virtio-mem'>` (alias
/// [`VIRTIO_MEM_ID`]). Proxmox-style QEMU: `-m <boot>M,slots=..,maxmem=..`, a
/// `-numa node` over a `memory-backend-ram`, and `-device virtio-mem-pci,id=`
/// [`VIRTIO_MEM_ID`]. The guest's kernel loads `virtio_mem` and onlines what the
/// device plugs as `online` says (kernel argument `memhp_default_state=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMemSpec {
    /// The device's size: the most it can plug (`<size>`, the backend's `size`).
    pub max_mib: u64,
    /// `requested-size` at boot; the guest plugs it while its driver loads.
    pub requested_mib: u64,
    /// The device block size in KiB (`<block>`, `block-size`); 2048 (2 MiB), the
    /// smallest a Linux guest takes on x86.
    pub block_kib: u64,
    /// Memory slots (`<maxMemory slots=..>`, `-m ..,slots=`).
    pub slots: u32,
    /// How the guest onlines plugged memory.
    pub online: VirtioMemOnline,
}

/// The id of the harness's virtio-mem device: libvirt's alias for its first
/// virtio-mem device, and the `-device virtio-mem-pci,id=` of Proxmox-style guests
/// (QOM path `/machine/peripheral/virtiomem0`).
pub const VIRTIO_MEM_ID: &str = "virtiomem0";

impl Default for VirtioMemSpec {
    fn default() -> Self {
        VirtioMemSpec {
            max_mib: 512,
            requested_mib: 512,
            block_kib: 2048,
            slots: 4,
            online: VirtioMemOnline::Movable,
        }
    }
}

/// Where the guest puts memory the device plugs (`memhp_default_state=`). Debian's
/// 6.1 kernel leaves hotplugged memory offline unless told (its config has no default
/// online policy); 6.12 onlines it to the kernel zone (`online`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VirtioMemOnline {
    /// `online_movable` (ZONE_MOVABLE): the kernel can migrate what is there and
    /// unplug it while only user memory sits on it.
    #[default]
    Movable,
    /// `online_kernel` (ZONE_NORMAL): kernel allocations may land on it, and unplug
    /// can stop for good once they do.
    Kernel,
}

impl VirtioMemOnline {
    /// The `memhp_default_state=` value.
    pub fn kernel_arg(self) -> &'static str {
        match self {
            VirtioMemOnline::Movable => "memhp_default_state=online_movable",
            VirtioMemOnline::Kernel => "memhp_default_state=online_kernel",
        }
    }
}

/// The kernel console device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Console {
    /// `console=ttyS0`: the emulated 16550 UART (`<serial>`); under TCG it moves
    /// 0.06-0.3 MiB/s.
    #[default]
    Serial,
    /// `console=hvc0`: a virtio console (`<console><target type='virtio'/>`), logged
    /// by virtlogd instead of the serial port (which stays, without a log).
    Virtio,
}

/// A guest agent that misbehaves, started by the guest's init on the agent port so
/// that it is the first process ever to open it (libvirt sees it connect like
/// qemu-ga). Every line it reads prints `HOSTILE-QGA-GOT` on the console; it prints
/// `HOSTILE-QGA-OPEN` once it holds the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostileAgent {
    /// Reads every command, answers none (`lab.qga=never`).
    Never,
    /// Answers `guest-sync` with its id and any other command with `{"pid": 1}`,
    /// `delay_secs` late (`lab.qga=slow:N`).
    Slow { delay_secs: u32 },
    /// Answers `guest-sync` at once and any other command with a JSON line of
    /// `reply_mib` MiB (`lab.qga=huge:N`).
    Huge { reply_mib: u32 },
}

impl HostileAgent {
    /// The `lab.qga=` value the guest's init reads.
    pub fn cmdline_value(self) -> String {
        match self {
            HostileAgent::Never => "never".to_owned(),
            HostileAgent::Slow { delay_secs } => format!("slow:{delay_secs}"),
            HostileAgent::Huge { reply_mib } => format!("huge:{reply_mib}"),
        }
    }
}

impl Default for GuestSpec {
    fn default() -> Self {
        GuestSpec {
            memory_mib: 512,
            current_mib: 512,
            vcpus: 1,
            autodeflate: false,
            stats_period_secs: 2,
            loglevel: 7,
            kernel: GuestKernel::Debian61,
            serial_log: true,
            guest_agent: true,
            memlog_secs: None,
            extra_cmdline: Vec::new(),
            console: Console::Serial,
            hostile_agent: None,
            console_shell: false,
            uuid: None,
            metadata_xml: None,
            file_console: None,
            virtio_mem: None,
        }
    }
}

impl GuestSpec {
    /// The kernel command line: `console=ttyS0 loglevel=N panic=-1` (`hvc0` for a
    /// virtio console) plus the options.
    pub fn cmdline(&self) -> String {
        let console = match self.console {
            Console::Serial => "console=ttyS0",
            Console::Virtio => "console=hvc0",
        };
        let mut args = vec![
            console.to_owned(),
            format!("loglevel={}", self.loglevel),
            "panic=-1".to_owned(),
        ];
        if let Some(secs) = self.memlog_secs {
            args.push(format!("lab.memlog={secs}"));
        }
        if let Some(hostile) = self.hostile_agent {
            args.push(format!("lab.qga={}", hostile.cmdline_value()));
        }
        if self.console_shell {
            args.push("lab.console_shell=1".to_owned());
        }
        if let Some(device) = self.virtio_mem {
            args.push(device.online.kernel_arg().to_owned());
        }
        args.extend(self.extra_cmdline.iter().cloned());
        args.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_names_the_console_and_the_lab_options() {
        assert_eq!(
            GuestSpec::default().cmdline(),
            "console=ttyS0 loglevel=7 panic=-1"
        );
        let spec = GuestSpec {
            console: Console::Virtio,
            hostile_agent: Some(HostileAgent::Slow { delay_secs: 15 }),
            console_shell: true,
            ..GuestSpec::default()
        };
        assert_eq!(
            spec.cmdline(),
            "console=hvc0 loglevel=7 panic=-1 lab.qga=slow:15 lab.console_shell=1"
        );
        assert_eq!(
            HostileAgent::Huge { reply_mib: 32 }.cmdline_value(),
            "huge:32"
        );
        assert_eq!(HostileAgent::Never.cmdline_value(), "never");
    }

    #[test]
    fn a_virtio_mem_device_asks_the_guest_to_online_what_it_plugs() {
        let movable = GuestSpec {
            virtio_mem: Some(VirtioMemSpec::default()),
            ..GuestSpec::default()
        };
        assert_eq!(
            movable.cmdline(),
            "console=ttyS0 loglevel=7 panic=-1 memhp_default_state=online_movable"
        );
        let kernel = GuestSpec {
            virtio_mem: Some(VirtioMemSpec {
                online: VirtioMemOnline::Kernel,
                ..VirtioMemSpec::default()
            }),
            ..GuestSpec::default()
        };
        assert!(kernel
            .cmdline()
            .ends_with(" memhp_default_state=online_kernel"));
    }
}
