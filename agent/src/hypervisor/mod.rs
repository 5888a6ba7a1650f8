//! The hypervisor boundary: everything the agent asks of libvirt or of QEMU's sockets.
//!
//! Only this module links libvirt (feature `libvirt`); the rest of the agent sees
//! the [`Hypervisor`] trait. Backends:
//! - `libvirt` (feature `libvirt`): `qemu:///system` and friends, through the C API.
//! - `fake`: an in-memory hypervisor for fast unit tests.
//! - `proxmox`: Proxmox VE's QMP, guest agent and serial sockets, without libvirt.
//!
//! Units: every memory figure the agent keeps is KiB (`_kib`), libvirt's unit;
//! backends that read bytes (QMP) convert. Every figure is `Option`: missing != 0.
//! Calls are blocking; the agent runs them on blocking threads, one poll at a time,
//! while the guest agent calls (`guest_file_*`, `guest_exec`) run concurrently on the guest agent threads
//! ([`crate::capture::ga_worker`]) through the same shared backend: every backend
//! is `Send + Sync` and must not hold a lock across a call that waits for a guest
//! (libvirt: the connection is cloned out of its mutex; Proxmox: one QGA socket per call).

mod agent_reply;
pub mod fake;
pub mod guest_base64;
mod guest_exec;
pub mod guest_stats;
#[cfg(feature = "libvirt")]
pub mod libvirt;
pub mod proxmox;
pub mod virtio_mem;

use std::time::{Duration, SystemTime};

/// A VM as the agent names it: the UUID is the identity, the name is for people.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId {
    /// Canonical lowercase UUID (libvirt `virDomainGetUUIDString`, Proxmox smbios uuid or vmid).
    pub uuid: String,
    pub name: String,
}

impl DomainId {
    /// The `vm{domain=.. name=..}` span that per-VM work runs in, so every log line
    /// about this VM carries both (the guest agent threads, the monitor's per-VM steps).
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("vm", domain = %self.uuid, name = %self.name)
    }
}

/// Run state, as far as ballast cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    Running,
    Paused,
    ShutOff,
    Crashed,
    Other,
}

/// One domain the hypervisor knows, running or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub id: DomainId,
    pub state: DomainState,
}

/// One balloon sample of one domain, taken in the bulk poll.
///
/// libvirt field meanings: `actual` = `balloon.current` (memory the balloon leaves
/// the guest), `maximum` = `balloon.maximum`, `available` = guest MemTotal,
/// `usable` = guest MemAvailable, `unused` = guest MemFree, `rss` = QEMU's RSS on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonSample {
    pub actual_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    pub available_kib: Option<u64>,
    pub usable_kib: Option<u64>,
    pub unused_kib: Option<u64>,
    pub disk_caches_kib: Option<u64>,
    pub swap_in_kib: Option<u64>,
    pub swap_out_kib: Option<u64>,
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
    pub hugetlb_allocations: Option<u64>,
    pub hugetlb_failures: Option<u64>,
    pub rss_kib: Option<u64>,
    /// When the guest last reported stats (host epoch seconds); 0/None = never.
    pub last_update_epoch_secs: Option<u64>,
    /// The VM's virtio-mem devices at this poll (issue 20); empty when it has none or
    /// the backend did not read them this poll (libvirt: only VMs whose domain XML
    /// listed one; Proxmox: only VMs whose QEMU answered with one).
    pub virtio_mem: Vec<ballast_model::VirtioMemDevice>,
}

impl BalloonSample {
    /// The sample with every memory figure beyond any machine's memory
    /// ([`ballast_model::MAX_MEMORY_KIB`]) made missing: the guest reports most of
    /// them, and the collector refuses such figures.
    pub fn plausible(self) -> Self {
        use ballast_model::plausible_kib as kib;
        Self {
            actual_kib: kib(self.actual_kib),
            maximum_kib: kib(self.maximum_kib),
            available_kib: kib(self.available_kib),
            usable_kib: kib(self.usable_kib),
            unused_kib: kib(self.unused_kib),
            disk_caches_kib: kib(self.disk_caches_kib),
            swap_in_kib: kib(self.swap_in_kib),
            swap_out_kib: kib(self.swap_out_kib),
            rss_kib: kib(self.rss_kib),
            virtio_mem: virtio_mem::plausible(self.virtio_mem),
            ..self
        }
    }
}

/// QEMU-only balloon counters (Linux >= 6.12 guests on QEMU >= 9.2), read with
/// `qom-get /machine/peripheral/balloon0 guest-stats`. u64::MAX ("never reported")
/// becomes None.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestCounters {
    pub oom_kills: Option<u64>,
    pub alloc_stalls: Option<u64>,
    pub async_scans_bytes: Option<u64>,
    pub direct_scans_bytes: Option<u64>,
    pub async_reclaims_bytes: Option<u64>,
    pub direct_reclaims_bytes: Option<u64>,
    /// `last-update` of the reply (host epoch seconds).
    pub last_update_epoch_secs: Option<u64>,
}

/// What the domain's configuration says, for capture and for the config audit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainConfig {
    /// A virtio memballoon device is present.
    pub balloon_present: bool,
    /// `<stats period='N'/>`; None or 0 = the guest sends no stats.
    pub stats_period_secs: Option<u32>,
    /// `<memballoon autodeflate='on'>` (QEMU deflate-on-oom).
    pub deflate_on_oom: Option<bool>,
    /// `<memballoon freePageReporting='on'>`.
    pub free_page_reporting: Option<bool>,
    /// The file the serial console is logged to (`<serial><log file=.../>` or `<serial type='file'>`).
    pub serial_log_path: Option<std::path::PathBuf>,
    /// A guest agent channel (`org.qemu.guest_agent.0`) is configured.
    pub guest_agent_channel: bool,
    /// The guest kernel command line, when the domain boots a kernel directly.
    pub kernel_cmdline: Option<String>,
    /// Configured maximum memory, KiB.
    pub memory_kib: Option<u64>,
    /// Configured current memory (libvirt's balloon target at boot), KiB.
    pub current_memory_kib: Option<u64>,
    /// OpenStack nova's identity of the instance (libvirt `<metadata>`), else None.
    pub openstack: Option<ballast_model::NovaInstance>,
    /// The virtio-mem devices (libvirt `<memory model='virtio-mem'>`; on a running
    /// domain with `<current>`), bounded like a sample's ([`virtio_mem::plausible`]).
    pub virtio_mem: Vec<ballast_model::VirtioMemDevice>,
}

/// A command run in the guest through the guest agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i32>,
    /// Standard output, at most `max_output_bytes` of it.
    pub stdout: Vec<u8>,
    /// The guest sent more than the cap; the rest was dropped.
    pub truncated: bool,
}

/// One `guest-file-read` answer: at most the bytes asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    pub data: Vec<u8>,
    /// The guest agent reached the end of the file (regular files; `/dev/kmsg`
    /// never says so, its end is an error, see [`crate::capture::kmsg`]).
    pub eof: bool,
}

/// Something the hypervisor pushed between polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    /// The balloon moved (libvirt VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE): its new `actual`.
    BalloonChange {
        id: DomainId,
        actual_kib: u64,
        at: SystemTime,
    },
    /// Started, stopped, rebooted, migrated, defined, undefined.
    Lifecycle {
        id: DomainId,
        state: DomainState,
        at: SystemTime,
    },
    /// A virtio-mem device's plugged size changed (libvirt
    /// VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE, QEMU MEMORY_DEVICE_SIZE_CHANGE):
    /// the device's alias and its new size.
    MemoryDeviceSizeChange {
        id: DomainId,
        device: String,
        plugged_kib: u64,
        at: SystemTime,
    },
    /// The guest agent connected (true) or went away (false).
    AgentLifecycle {
        id: DomainId,
        connected: bool,
        at: SystemTime,
    },
}

/// Failures at the hypervisor boundary.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("Failed to connect to {uri}")]
    Connect {
        uri: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("Failed to {action} for domain {domain}")]
    Domain {
        action: &'static str,
        domain: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("Failed to {action}")]
    Call {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("Domain {domain} has no {what}")]
    Unavailable { domain: String, what: &'static str },
    #[error("Timed out after {0:?}")]
    Timeout(Duration),
    /// The guest agent answered with an error (a command disabled in the guest,
    /// a file it cannot open or read). Guest-reported text, bounded.
    #[error("The guest agent of {domain} refused {command}: {class}: {message}")]
    GuestRefused {
        domain: String,
        command: &'static str,
        class: String,
        message: String,
    },
}

impl HypervisorError {
    /// The guest agent refused the command itself: disabled in the guest (qemu-ga
    /// `--block-rpcs` / `--allow-rpcs`) or unknown to an old agent.
    pub fn is_command_disabled(&self) -> bool {
        match self {
            HypervisorError::GuestRefused { class, message, .. } => {
                class == "CommandNotFound"
                    || class == "CommandDisabled"
                    || message.contains("has been disabled")
                    || message.contains("has not been found")
            }
            _ => false,
        }
    }

    /// A [`HypervisorError::GuestRefused`] with its guest-reported parts cut to 256 bytes.
    pub fn guest_refused(
        domain: &DomainId,
        command: &'static str,
        class: &str,
        message: &str,
    ) -> Self {
        let cut = |text: &str| {
            let mut end = text.len().min(256);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end]
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        };
        HypervisorError::GuestRefused {
            domain: domain.name.clone(),
            command,
            class: cut(class),
            message: cut(message),
        }
    }
}

/// The agent's view of one hypervisor.
pub trait Hypervisor: Send + Sync {
    /// `libvirt`, `qmp`, `fake`.
    fn backend(&self) -> &'static str;

    /// Every domain, running or not.
    fn domains(&self) -> Result<Vec<DomainInfo>, HypervisorError>;

    /// Balloon samples of all running domains in ONE bulk call (a domain stuck in a
    /// job must not stall the others).
    fn balloon_samples(&self) -> Result<Vec<(DomainId, BalloonSample)>, HypervisorError>;

    /// Balloon samples of the running domains among `ids` (the guard's own poll); a
    /// domain without figures this time may be left out. By default one bulk poll of
    /// all, filtered (libvirt's bulk call costs about as much for a few as for all of
    /// the domains it lists); Proxmox asks only those.
    fn balloon_samples_of(
        &self,
        ids: &[DomainId],
    ) -> Result<Vec<(DomainId, BalloonSample)>, HypervisorError> {
        let mut samples = self.balloon_samples()?;
        samples.retain(|(id, _)| ids.iter().any(|wanted| wanted.uuid == id.uuid));
        Ok(samples)
    }

    /// The QEMU-only counters of one domain; `Ok(None)` when the guest or QEMU has none.
    fn guest_counters(&self, id: &DomainId) -> Result<Option<GuestCounters>, HypervisorError>;

    /// What the domain's configuration says.
    fn domain_config(&self, id: &DomainId) -> Result<DomainConfig, HypervisorError>;

    /// Runs `path args` in the guest through the guest agent (`guest-exec`), capturing
    /// stdout. Only when the operator allows it (`capture.guest_agent_exec`).
    fn guest_exec(
        &self,
        id: &DomainId,
        path: &str,
        args: &[&str],
        timeout: Duration,
        max_output_bytes: usize,
    ) -> Result<ExecOutput, HypervisorError>;

    /// `guest-file-open` of `path` for reading in the guest; the guest agent's handle.
    /// Backends without a guest agent answer `Unavailable`.
    fn guest_file_open(
        &self,
        id: &DomainId,
        _path: &str,
        _timeout: Duration,
    ) -> Result<i64, HypervisorError> {
        Err(HypervisorError::Unavailable {
            domain: id.name.clone(),
            what: "guest agent file API",
        })
    }

    /// `guest-file-read` of at most `count` bytes; a guest that sends more (or
    /// malformed base64) is an error, never a longer chunk.
    fn guest_file_read(
        &self,
        id: &DomainId,
        _handle: i64,
        _count: usize,
        _timeout: Duration,
    ) -> Result<FileChunk, HypervisorError> {
        Err(HypervisorError::Unavailable {
            domain: id.name.clone(),
            what: "guest agent file API",
        })
    }

    /// `guest-file-close`.
    fn guest_file_close(
        &self,
        id: &DomainId,
        _handle: i64,
        _timeout: Duration,
    ) -> Result<(), HypervisorError> {
        Err(HypervisorError::Unavailable {
            domain: id.name.clone(),
            what: "guest agent file API",
        })
    }

    /// Changes how often the guest reports balloon stats, on the running domain only
    /// (libvirt `<stats period>` live); 0 stops the reports. Backends that cannot
    /// answer `Unavailable`.
    fn set_memory_stats_period(
        &self,
        id: &DomainId,
        _period_secs: u32,
    ) -> Result<(), HypervisorError> {
        Err(HypervisorError::Unavailable {
            domain: id.name.clone(),
            what: "live stats period setting",
        })
    }

    /// Sets the balloon's target on the running domain only (the guard, docs/guard.md):
    /// libvirt `virDomainSetMemoryFlags(AFFECT_LIVE)`, QMP `balloon`. The persistent
    /// configuration is not changed. Backends that cannot answer `Unavailable`.
    fn set_balloon_target(&self, id: &DomainId, _target_kib: u64) -> Result<(), HypervisorError> {
        Err(HypervisorError::Unavailable {
            domain: id.name.clone(),
            what: "live balloon target setting",
        })
    }

    /// Raises the VM's persistent balloon floor (Proxmox `balloon:`, through `qm set`),
    /// so the host's own balloon policy stops taking memory below it. Only Proxmox
    /// answers; others `Unavailable`.
    fn raise_balloon_floor(&self, id: &DomainId, _floor_kib: u64) -> Result<(), HypervisorError> {
        Err(HypervisorError::Unavailable {
            domain: id.name.clone(),
            what: "persistent balloon floor setting",
        })
    }

    /// The host pid of the domain's QEMU process, to attribute host kernel OOM
    /// reports to it; None when the backend cannot tell.
    fn qemu_pid(&self, _id: &DomainId) -> Option<u32> {
        None
    }

    /// Starts delivering events to `sink` (from a thread of the backend's own);
    /// the default delivers none and the agent falls back to polling.
    fn subscribe(
        &self,
        _sink: std::sync::mpsc::Sender<DomainEvent>,
    ) -> Result<(), HypervisorError> {
        Ok(())
    }
}
