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
        }
    }
}

impl GuestSpec {
    /// The kernel command line: `console=ttyS0 loglevel=N panic=-1` plus the options.
    pub fn cmdline(&self) -> String {
        let mut args = vec![
            "console=ttyS0".to_owned(),
            format!("loglevel={}", self.loglevel),
            "panic=-1".to_owned(),
        ];
        if let Some(secs) = self.memlog_secs {
            args.push(format!("lab.memlog={secs}"));
        }
        args.extend(self.extra_cmdline.iter().cloned());
        args.join(" ")
    }
}
