//! The Proxmox VE backend: QEMU's own sockets, no libvirt.
//!
//! What it is: one [`ProxmoxHypervisor`] per node, implementing [`Hypervisor`] on
//! the files qemu-server keeps per VM:
//! - `<run_dir>/<vmid>.pid`: the running set (the pid must be alive and be that
//!   VM's QEMU: its command line names `<vmid>.qmp`);
//! - `<config_dir>/<vmid>.conf`: name, memory, balloon, agent, serial ports,
//!   smbios uuid ([`conf`]);
//! - `<run_dir>/<vmid>.qmp`: the monitor ([`qmp`]); `<vmid>.qga`: the guest
//!   agent ([`qga`]); `<vmid>.serialN`: the console ([`serial`], opt-in).
//!
//! What it is not: a replacement for pvestatd. Its auto-ballooning is invisible
//! to ballast except through its effect: `actual` is recorded every poll.
//!
//! Rules, because QEMU's sockets are single-client servers that Proxmox's own
//! tools (pvestatd every 10 s, `qm`, the GUI) need too:
//! 1. QMP and guest agent sockets are never held: one call = connect, commands,
//!    close, all within `call_timeout` (2 s); a connect never blocks;
//! 2. [`Hypervisor::balloon_samples`] asks all VMs in parallel (at most
//!    `max_parallel` at once) under one deadline (`poll_deadline`), so busy
//!    sockets cost one timeout per poll, not one per VM. A VM whose socket is busy
//!    is still reported, with an empty sample (like libvirt's NOWAIT), so it does
//!    not look gone;
//! 3. per poll, one QMP conversation per VM sends `query-balloon` and
//!    `qom-get .../balloon0 guest-stats` together (replies matched by id); the
//!    guest stats are kept a few seconds for [`Hypervisor::guest_counters`];
//! 4. events: QMP's `BALLOON_CHANGE` only reaches a held connection, so
//!    [`Hypervisor::subscribe`] delivers nothing; polling sees balloon moves.
//!
//! Identity: the `smbios1: uuid=` of the VM's config, else the vmid (digits are
//! valid in ballast's uuid field); the name is `name:` or `vm<vmid>`.

pub mod conf;
mod guest_agent;
mod machine;
mod poll;
pub mod qga;
pub mod qm;
pub mod qmp;
pub mod serial;
pub mod stats;
pub mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use self::conf::{SerialPort, VmConf};
use self::qmp::QmpClient;
use self::serial::{SerialReaders, SerialSettings};
use self::wire::WireError;
use super::{
    BalloonSample, DomainConfig, DomainId, DomainInfo, DomainState, ExecOutput, FileChunk,
    GuestCounters, Hypervisor, HypervisorError,
};
use crate::config::ProxmoxConfig;

/// Where the node's files are, and the bounds of every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxmoxSettings {
    /// `/var/run/qemu-server`: sockets and pid files.
    pub run_dir: PathBuf,
    /// `/etc/pve/qemu-server`: `<vmid>.conf`.
    pub config_dir: PathBuf,
    /// VMs whose serial socket the agent reads (holds); see [`serial`].
    pub read_serial_vmids: Vec<u32>,
    /// Where serial readers write their logs (under the agent's state directory).
    pub serial_log_dir: PathBuf,
    /// One QMP call (connect + commands + close) or guest-agent handshake (2 s).
    pub call_timeout: Duration,
    /// The whole balloon poll of all VMs (5 s).
    pub poll_deadline: Duration,
    /// VMs asked at once during a poll (16).
    pub max_parallel: usize,
    /// Longest QMP reply line (1 MiB).
    pub max_reply_bytes: usize,
    /// `/proc`, for QEMU's pid, RSS and `net/unix`.
    pub procfs_root: PathBuf,
}

impl ProxmoxSettings {
    /// The agent's `proxmox:` configuration, with serial logs under `state_dir`.
    pub fn from_config(config: &ProxmoxConfig, state_dir: &Path) -> Self {
        ProxmoxSettings {
            run_dir: config.run_dir.clone(),
            config_dir: config.config_dir.clone(),
            read_serial_vmids: config.read_serial_vmids.clone(),
            serial_log_dir: state_dir.join("proxmox-serial"),
            call_timeout: Duration::from_secs(2),
            poll_deadline: Duration::from_secs(5),
            max_parallel: 16,
            max_reply_bytes: 1024 * 1024,
            procfs_root: PathBuf::from("/proc"),
        }
    }
}

/// What the last balloon poll did (for status and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    pub n_vms: usize,
    /// VMs whose QMP socket was busy or did not answer in time.
    pub n_skipped: usize,
    pub elapsed: Duration,
}

/// A Proxmox VE node's VMs. Cheap to share; all methods take `&self`.
#[derive(Debug)]
pub struct ProxmoxHypervisor {
    settings: ProxmoxSettings,
    serial: SerialReaders,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    /// uuid -> vmid, for ids whose uuid is not the vmid.
    vmids: BTreeMap<String, u32>,
    /// The latest `guest-stats` per vmid.
    guest_stats: BTreeMap<u32, (Instant, Value)>,
    last_poll: PollReport,
    /// When a VM's failure was last logged at warn level.
    warned: BTreeMap<u32, Instant>,
    /// Per vmid: the QEMU pid whose `query-memory-devices` was read, and the
    /// virtio-mem devices it listed (issue 20). Learned at a QEMU process's first poll;
    /// a process without any is not asked again, so VMs without pay nothing.
    virtio_mem: BTreeMap<u32, (u32, Vec<ballast_model::VirtioMemDevice>)>,
}

/// A running VM: vmid and QEMU's pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Running {
    vmid: u32,
    pid: u32,
}

/// Guest stats younger than this answer `guest_counters` without a QMP call.
const GUEST_STATS_FRESH: Duration = Duration::from_secs(5);
/// Per-VM warnings are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(300);

impl ProxmoxHypervisor {
    pub fn new(settings: ProxmoxSettings) -> Self {
        let mut serial_settings = SerialSettings::new(settings.serial_log_dir.clone());
        serial_settings.procfs_root = settings.procfs_root.clone();
        ProxmoxHypervisor {
            serial: SerialReaders::new(serial_settings),
            settings,
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn settings(&self) -> &ProxmoxSettings {
        &self.settings
    }

    /// Fails when the node's directories are not there (a start-up check).
    pub fn check(&self) -> Result<(), HypervisorError> {
        for dir in [&self.settings.config_dir, &self.settings.run_dir] {
            std::fs::read_dir(dir).map_err(|error| HypervisorError::Connect {
                uri: dir.display().to_string(),
                source: error.into(),
            })?;
        }
        Ok(())
    }

    /// What the last balloon poll did.
    pub fn last_poll(&self) -> PollReport {
        self.lock().last_poll.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn socket(&self, vmid: u32, suffix: &str) -> PathBuf {
        self.settings.run_dir.join(format!("{vmid}.{suffix}"))
    }

    fn conf_path(&self, vmid: u32) -> PathBuf {
        self.settings.config_dir.join(format!("{vmid}.conf"))
    }

    /// The VM's config, leniently (identity survives bad lines); None when unreadable.
    fn conf_lenient(&self, vmid: u32) -> Option<VmConf> {
        match conf::read(&self.conf_path(vmid)) {
            Ok(parsed) => Some(parsed.conf),
            Err(error) => {
                tracing::debug!(vmid, %error, "No VM config.");
                None
            }
        }
    }

    /// The VM's identity: its `smbios1: uuid=`, else its vmid. A vmid repeats across
    /// standalone hosts (each has a VM 100); the collector keys a VM by (host, uuid),
    /// so it cannot collide there, and it stays stable across restarts and (vmids
    /// are cluster-unique) cluster migrations (docs/collector.md, "VM identity").
    fn identity(&self, vmid: u32, conf: Option<&VmConf>) -> DomainId {
        let id = DomainId {
            uuid: conf
                .and_then(|conf| conf.smbios_uuid.clone())
                .unwrap_or_else(|| vmid.to_string()),
            name: conf
                .and_then(|conf| conf.name.clone())
                .unwrap_or_else(|| format!("vm{vmid}")),
        };
        if id.uuid != vmid.to_string() {
            self.lock().vmids.insert(id.uuid.clone(), vmid);
        }
        id
    }

    /// Every vmid with a pid file whose process is that VM's QEMU.
    fn running(&self) -> Result<Vec<Running>, HypervisorError> {
        let entries =
            std::fs::read_dir(&self.settings.run_dir).map_err(|error| HypervisorError::Call {
                action: "list the Proxmox run directory",
                source: error.into(),
            })?;
        let mut running = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(vmid) = name
                .to_str()
                .and_then(|name| name.strip_suffix(".pid"))
                .and_then(|vmid| vmid.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(pid) = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
            else {
                continue;
            };
            if self.is_qemu_of(pid, vmid) {
                running.push(Running { vmid, pid });
            }
        }
        running.sort_by_key(|vm| vm.vmid);
        Ok(running)
    }

    /// The pid is alive and (when its command line is readable) names the VM's QMP socket.
    fn is_qemu_of(&self, pid: u32, vmid: u32) -> bool {
        let proc_dir = self.settings.procfs_root.join(pid.to_string());
        match std::fs::read(proc_dir.join("cmdline")) {
            Ok(cmdline) => {
                let needle = format!("{vmid}.qmp");
                memchr::memmem::find(&cmdline, needle.as_bytes()).is_some()
            }
            Err(_) => proc_dir.exists(),
        }
    }

    /// The vmid behind an id handed out earlier.
    fn vmid_of(&self, id: &DomainId) -> Result<u32, HypervisorError> {
        if let Ok(vmid) = id.uuid.parse::<u32>() {
            return Ok(vmid);
        }
        if let Some(&vmid) = self.lock().vmids.get(&id.uuid) {
            return Ok(vmid);
        }
        // Not seen yet: look through the configs once.
        self.domains()?;
        self.lock()
            .vmids
            .get(&id.uuid)
            .copied()
            .ok_or_else(|| HypervisorError::Unavailable {
                domain: id.name.clone(),
                what: "definition",
            })
    }

    fn warn_rate_limited(&self, vmid: u32, message: &str, error: &dyn std::error::Error) {
        let now = Instant::now();
        let warn = {
            let mut cache = self.lock();
            let due = cache
                .warned
                .get(&vmid)
                .is_none_or(|last| now.duration_since(*last) >= WARN_EVERY);
            if due {
                cache.warned.insert(vmid, now);
            }
            due
        };
        if warn {
            tracing::warn!(vmid, error = %error, "{message}");
        } else {
            tracing::debug!(vmid, error = %error, "{message}");
        }
    }

    fn qmp(&self, vmid: u32, timeout: Duration) -> Result<QmpClient, WireError> {
        QmpClient::connect(
            &self.socket(vmid, "qmp"),
            timeout,
            self.settings.max_reply_bytes,
        )
    }

    fn domain_error(
        action: &'static str,
        id: &DomainId,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> HypervisorError {
        HypervisorError::Domain {
            action,
            domain: id.name.clone(),
            source: Box::new(error),
        }
    }

    fn serial_socket_port(&self, vmid: u32, conf: &VmConf) -> Option<u8> {
        if !self.settings.read_serial_vmids.contains(&vmid) {
            return None;
        }
        conf.serial
            .iter()
            .find(|(_, port)| **port == SerialPort::Socket)
            .map(|(&port, _)| port)
    }
}

/// The balloon device Proxmox adds (`-device virtio-balloon-pci,id=balloon0`).
const BALLOON_PATH: &str = "/machine/peripheral/balloon0";

impl Hypervisor for ProxmoxHypervisor {
    fn backend(&self) -> &'static str {
        "proxmox"
    }

    fn domains(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        let running: BTreeMap<u32, u32> = self
            .running()?
            .into_iter()
            .map(|vm| (vm.vmid, vm.pid))
            .collect();
        let mut vmids: Vec<u32> = running.keys().copied().collect();
        if let Ok(entries) = std::fs::read_dir(&self.settings.config_dir) {
            vmids.extend(entries.flatten().filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.strip_suffix(".conf"))
                    .and_then(|vmid| vmid.parse::<u32>().ok())
            }));
        }
        vmids.sort_unstable();
        vmids.dedup();
        Ok(vmids
            .into_iter()
            .map(|vmid| DomainInfo {
                id: self.identity(vmid, self.conf_lenient(vmid).as_ref()),
                state: if running.contains_key(&vmid) {
                    DomainState::Running
                } else {
                    DomainState::ShutOff
                },
            })
            .collect())
    }

    fn balloon_samples(&self) -> Result<Vec<(DomainId, BalloonSample)>, HypervisorError> {
        self.poll_balloons()
    }

    fn balloon_samples_of(
        &self,
        ids: &[DomainId],
    ) -> Result<Vec<(DomainId, BalloonSample)>, HypervisorError> {
        self.poll_balloons_of(ids)
    }

    fn guest_counters(&self, id: &DomainId) -> Result<Option<GuestCounters>, HypervisorError> {
        let vmid = self.vmid_of(id)?;
        let cached = self
            .lock()
            .guest_stats
            .get(&vmid)
            .filter(|(at, _)| at.elapsed() < GUEST_STATS_FRESH)
            .map(|(_, stats)| stats.clone());
        let stats = match cached {
            Some(stats) => stats,
            None => {
                let mut client = self
                    .qmp(vmid, self.settings.call_timeout)
                    .map_err(|error| Self::domain_error("read guest stats", id, error))?;
                match client.execute(
                    "qom-get",
                    Some(json!({"path": BALLOON_PATH, "property": "guest-stats"})),
                ) {
                    Ok(stats) => stats,
                    // No balloon device (`balloon: 0`) or an old QEMU.
                    Err(WireError::Command { .. }) => return Ok(None),
                    Err(error) => return Err(Self::domain_error("read guest stats", id, error)),
                }
            }
        };
        Ok(super::guest_stats::guest_counters(&stats))
    }

    fn domain_config(&self, id: &DomainId) -> Result<DomainConfig, HypervisorError> {
        let vmid = self.vmid_of(id)?;
        let conf = conf::read(&self.conf_path(vmid))
            .and_then(conf::ParsedConf::strict)
            .map_err(|error| Self::domain_error("read the VM config", id, error))?;
        let balloon_present = conf.balloon_mib != Some(0);
        let mut config = DomainConfig {
            balloon_present,
            guest_agent_channel: conf.agent_enabled,
            memory_kib: conf.memory_mib.and_then(|mib| mib.checked_mul(1024)),
            // `balloon:`, the floor auto-ballooning may take the VM to (0: no balloon).
            current_memory_kib: conf
                .balloon_mib
                .filter(|mib| *mib > 0)
                .and_then(|mib| mib.checked_mul(1024)),
            serial_log_path: self
                .serial_socket_port(vmid, &conf)
                .map(|port| self.serial.log_path(vmid, port)),
            // What the last poll's `query-memory-devices` listed.
            virtio_mem: self
                .lock()
                .virtio_mem
                .get(&vmid)
                .map(|(_, devices)| devices.clone())
                .unwrap_or_default(),
            ..DomainConfig::default()
        };
        if balloon_present {
            // The live device: what Proxmox set at start (guest-stats-polling-interval=2).
            let property = |name: &str| {
                (
                    "qom-get",
                    Some(json!({"path": BALLOON_PATH, "property": name})),
                )
            };
            let replies = self
                .qmp(vmid, self.settings.call_timeout)
                .and_then(|mut client| {
                    client.execute_all(&[
                        property("guest-stats-polling-interval"),
                        property("deflate-on-oom"),
                        property("free-page-reporting"),
                    ])
                });
            match replies {
                Ok(replies) => {
                    let mut replies = replies.into_iter();
                    config.stats_period_secs = replies
                        .next()
                        .and_then(Result::ok)
                        .and_then(|value| value.as_u64())
                        .and_then(|secs| u32::try_from(secs).ok());
                    config.deflate_on_oom = replies
                        .next()
                        .and_then(Result::ok)
                        .and_then(|v| v.as_bool());
                    config.free_page_reporting = replies
                        .next()
                        .and_then(machine::live_free_page_reporting)
                        .or_else(|| machine::free_page_reporting(&conf));
                }
                Err(error) => {
                    tracing::debug!(vmid, %error, "Balloon device properties not read.");
                    config.free_page_reporting = machine::free_page_reporting(&conf);
                }
            }
        }
        Ok(config)
    }

    fn guest_exec(
        &self,
        id: &DomainId,
        path: &str,
        args: &[&str],
        timeout: Duration,
        max_output_bytes: usize,
    ) -> Result<ExecOutput, HypervisorError> {
        self.exec(id, path, args, timeout, max_output_bytes)
    }

    fn guest_file_open(
        &self,
        id: &DomainId,
        path: &str,
        timeout: Duration,
    ) -> Result<i64, HypervisorError> {
        self.file_open(id, path, timeout)
    }

    fn guest_file_read(
        &self,
        id: &DomainId,
        handle: i64,
        count: usize,
        timeout: Duration,
    ) -> Result<FileChunk, HypervisorError> {
        self.file_read(id, handle, count, timeout)
    }

    fn guest_file_close(
        &self,
        id: &DomainId,
        handle: i64,
        timeout: Duration,
    ) -> Result<(), HypervisorError> {
        self.file_close(id, handle, timeout)
    }

    fn set_memory_stats_period(
        &self,
        id: &DomainId,
        period_secs: u32,
    ) -> Result<(), HypervisorError> {
        let vmid = self.vmid_of(id)?;
        self.qmp(vmid, self.settings.call_timeout)
            .and_then(|mut client| {
                client.execute(
                    "qom-set",
                    Some(json!({
                        "path": BALLOON_PATH,
                        "property": "guest-stats-polling-interval",
                        "value": period_secs,
                    })),
                )
            })
            .map(drop)
            .map_err(|error| Self::domain_error("set the memory stats period", id, error))
    }

    /// `qm set <vmid> --balloon <MiB>` (rounded up to whole MiB).
    fn raise_balloon_floor(&self, id: &DomainId, floor_kib: u64) -> Result<(), HypervisorError> {
        let vmid = self.vmid_of(id)?;
        qm::set_balloon_floor(
            std::process::Command::new("qm"),
            vmid,
            floor_kib.div_ceil(1024),
            qm::QM_TIMEOUT,
        )
        .map_err(|error| HypervisorError::Domain {
            action: "raise the balloon floor",
            domain: id.name.clone(),
            source: error.into(),
        })
    }

    /// QMP `balloon` (bytes). pvestatd may set its own target again on its next cycle
    /// (docs/guard.md, "Proxmox").
    fn set_balloon_target(&self, id: &DomainId, target_kib: u64) -> Result<(), HypervisorError> {
        let vmid = self.vmid_of(id)?;
        self.qmp(vmid, self.settings.call_timeout)
            .and_then(|mut client| {
                client.execute(
                    "balloon",
                    Some(json!({ "value": target_kib.saturating_mul(1024) })),
                )
            })
            .map(drop)
            .map_err(|error| Self::domain_error("set the balloon target", id, error))
    }
}

#[cfg(test)]
mod tests;
