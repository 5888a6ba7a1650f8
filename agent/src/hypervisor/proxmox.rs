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
pub mod qga;
pub mod qmp;
pub mod serial;
pub mod stats;
pub mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use self::conf::{SerialPort, VmConf};
use self::qga::QgaClient;
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
/// The guest agent's `guest-exec-status` line may carry this much beyond the output.
const AGENT_REPLY_SLACK: usize = 64 * 1024;

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

    /// One VM's poll: one QMP conversation with both balloon commands.
    fn sample_one(
        &self,
        vm: Running,
        conf: Option<&VmConf>,
        deadline: Instant,
    ) -> Option<BalloonSample> {
        let timeout = self
            .settings
            .call_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let memory_mib = conf.and_then(|conf| conf.memory_mib);
        let replies = if timeout.is_zero() {
            Err(WireError::Timeout {
                path: self.socket(vm.vmid, "qmp"),
                timeout,
            })
        } else {
            self.qmp(vm.vmid, timeout).and_then(|mut client| {
                client.execute_all(&[
                    ("query-balloon", None),
                    (
                        "qom-get",
                        Some(json!({"path": BALLOON_PATH, "property": "guest-stats"})),
                    ),
                ])
            })
        };
        let mut sample = match replies {
            Ok(mut replies) => {
                let guest_stats = replies.pop().and_then(Result::ok);
                let balloon = replies.pop().and_then(|reply| {
                    reply
                        .map_err(|error| {
                            // `balloon: 0`: no device; anything else is worth a look.
                            tracing::debug!(vmid = vm.vmid, %error, "No balloon info.");
                        })
                        .ok()
                });
                if let Some(stats) = &guest_stats {
                    self.lock()
                        .guest_stats
                        .insert(vm.vmid, (Instant::now(), stats.clone()));
                }
                stats::balloon_sample(balloon.as_ref(), guest_stats.as_ref(), memory_mib)
            }
            Err(error) => {
                self.warn_rate_limited(vm.vmid, "Balloon poll of a VM failed; skipped.", &error);
                return None;
            }
        };
        sample.rss_kib = std::fs::read_to_string(
            self.settings
                .procfs_root
                .join(vm.pid.to_string())
                .join("status"),
        )
        .ok()
        .and_then(|status| stats::rss_kib(&status));
        Some(sample)
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

    /// One guest agent command on a conversation of its own (qemu-ga's file handles
    /// outlive the connection); an error answer of the agent is
    /// [`HypervisorError::GuestRefused`].
    fn qga_call(
        &self,
        id: &DomainId,
        command: &'static str,
        arguments: Value,
        timeout: Duration,
        max_line: usize,
    ) -> Result<Value, HypervisorError> {
        let vmid = self.vmid_of(id)?;
        let deadline = Instant::now() + timeout;
        let mut client = QgaClient::connect(
            &self.socket(vmid, "qga"),
            self.settings.call_timeout.min(timeout),
            max_line.max(self.settings.max_reply_bytes),
        )
        .map_err(|error| match error {
            WireError::Timeout { .. } => HypervisorError::Timeout(timeout),
            error => Self::domain_error("reach the guest agent", id, error),
        })?;
        client.extend(deadline.saturating_duration_since(Instant::now()));
        client
            .execute(command, arguments)
            .map_err(|error| match error {
                WireError::Command { class, desc, .. } => {
                    HypervisorError::guest_refused(id, command, &class, &desc)
                }
                WireError::Timeout { .. } => HypervisorError::Timeout(timeout),
                error => Self::domain_error("call the guest agent", id, error),
            })
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
        let started = Instant::now();
        let deadline = started + self.settings.poll_deadline;
        let running = self.running()?;
        let vms: Vec<(Running, Option<VmConf>)> = running
            .iter()
            .map(|&vm| (vm, self.conf_lenient(vm.vmid)))
            .collect();
        let results: Vec<Mutex<Option<BalloonSample>>> =
            vms.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let n_workers = self.settings.max_parallel.clamp(1, vms.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..n_workers {
                scope.spawn(|| loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((vm, conf)) = vms.get(index) else {
                        return;
                    };
                    let sample = self.sample_one(*vm, conf.as_ref(), deadline);
                    *results[index]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = sample;
                });
            }
        });
        let mut n_skipped = 0;
        let samples: Vec<(DomainId, BalloonSample)> = vms
            .iter()
            .zip(results)
            .map(|((vm, conf), result)| {
                let sample = result
                    .into_inner()
                    .unwrap_or_else(PoisonError::into_inner)
                    .unwrap_or_else(|| {
                        n_skipped += 1;
                        // Still listed (a busy socket is not a gone VM), without figures.
                        BalloonSample {
                            maximum_kib: conf
                                .as_ref()
                                .and_then(|conf| conf.memory_mib)
                                .and_then(|mib| mib.checked_mul(1024)),
                            ..BalloonSample::default()
                        }
                    });
                (self.identity(vm.vmid, conf.as_ref()), sample)
            })
            .collect();
        // Serial readers: started for opted-in running VMs, stopped for the rest.
        for (vm, conf) in &vms {
            if let Some(port) = conf
                .as_ref()
                .and_then(|conf| self.serial_socket_port(vm.vmid, conf))
            {
                self.serial.ensure(
                    vm.vmid,
                    port,
                    &self.socket(vm.vmid, &format!("serial{port}")),
                    vm.pid,
                );
            }
        }
        self.serial
            .retain(|vmid| running.iter().any(|vm| vm.vmid == vmid));
        let report = PollReport {
            n_vms: samples.len(),
            n_skipped,
            elapsed: started.elapsed(),
        };
        tracing::debug!(
            n_vms = report.n_vms,
            n_skipped,
            elapsed_ms = report.elapsed.as_millis(),
            "Proxmox balloon poll."
        );
        {
            let mut cache = self.lock();
            cache.last_poll = report;
            cache
                .guest_stats
                .retain(|vmid, _| running.iter().any(|vm| vm.vmid == *vmid));
        }
        Ok(samples)
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
            serial_log_path: self
                .serial_socket_port(vmid, &conf)
                .map(|port| self.serial.log_path(vmid, port)),
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
                    let mut replies = replies.into_iter().map(Result::ok);
                    config.stats_period_secs = replies
                        .next()
                        .flatten()
                        .and_then(|value| value.as_u64())
                        .and_then(|secs| u32::try_from(secs).ok());
                    config.deflate_on_oom = replies.next().flatten().and_then(|v| v.as_bool());
                    config.free_page_reporting = replies.next().flatten().and_then(|v| v.as_bool());
                }
                Err(error) => {
                    tracing::debug!(vmid, %error, "Balloon device properties not read.");
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
        let vmid = self.vmid_of(id)?;
        let started = Instant::now();
        let deadline = started + timeout;
        // base64 of the output plus the JSON around it.
        let max_line = max_output_bytes
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(AGENT_REPLY_SLACK)
            .max(self.settings.max_reply_bytes);
        let mut client = QgaClient::connect(
            &self.socket(vmid, "qga"),
            self.settings.call_timeout.min(timeout),
            max_line,
        )
        .map_err(|error| Self::domain_error("reach the guest agent", id, error))?;
        client.extend(deadline.saturating_duration_since(Instant::now()));
        let started_exec = client
            .execute(
                "guest-exec",
                json!({ "path": path, "arg": args, "capture-output": true }),
            )
            .map_err(|error| Self::domain_error("start a guest command", id, error))?;
        let pid = started_exec
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| Self::domain_error("start a guest command", id, MissingField("pid")))?;
        let mut pause = Duration::from_millis(20);
        loop {
            let status = client
                .execute("guest-exec-status", json!({ "pid": pid }))
                .map_err(|error| match error {
                    WireError::Timeout { .. } => HypervisorError::Timeout(timeout),
                    error => Self::domain_error("read a guest command's status", id, error),
                })?;
            if status.get("exited").and_then(Value::as_bool) == Some(true) {
                let (stdout, cut) = match status.get("out-data").and_then(Value::as_str) {
                    Some(data) => super::guest_base64::decode_bounded(data, max_output_bytes)
                        .map_err(|error| {
                            Self::domain_error("decode a guest command's output", id, error)
                        })?,
                    None => (Vec::new(), false),
                };
                let agent_cut = status
                    .get("out-truncated")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                return Ok(ExecOutput {
                    exit_code: status
                        .get("exitcode")
                        .and_then(Value::as_i64)
                        .and_then(|code| i32::try_from(code).ok()),
                    stdout,
                    truncated: cut || agent_cut,
                });
            }
            if Instant::now() + pause > deadline {
                return Err(HypervisorError::Timeout(timeout));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    fn guest_file_open(
        &self,
        id: &DomainId,
        path: &str,
        timeout: Duration,
    ) -> Result<i64, HypervisorError> {
        let reply = self.qga_call(
            id,
            "guest-file-open",
            json!({ "path": path, "mode": "r" }),
            timeout,
            self.settings.max_reply_bytes,
        )?;
        reply
            .as_i64()
            .ok_or_else(|| Self::domain_error("open a guest file", id, MissingField("handle")))
    }

    fn guest_file_read(
        &self,
        id: &DomainId,
        handle: i64,
        count: usize,
        timeout: Duration,
    ) -> Result<FileChunk, HypervisorError> {
        // base64 of `count` bytes plus the JSON around it.
        let max_line = count
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(AGENT_REPLY_SLACK);
        let reply = self.qga_call(
            id,
            "guest-file-read",
            json!({ "handle": handle, "count": count }),
            timeout,
            max_line,
        )?;
        let (data, cut) = match reply.get("buf-b64").and_then(Value::as_str) {
            Some(data) => super::guest_base64::decode_bounded(data, count)
                .map_err(|error| Self::domain_error("decode a guest file read", id, error))?,
            None => (Vec::new(), false),
        };
        let claimed = reply.get("count").and_then(Value::as_u64);
        if cut || claimed != u64::try_from(data.len()).ok() {
            return Err(Self::domain_error(
                "read a guest file",
                id,
                MissingField("count matching buf-b64 within the bytes asked"),
            ));
        }
        Ok(FileChunk {
            data,
            eof: reply.get("eof").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    fn guest_file_close(
        &self,
        id: &DomainId,
        handle: i64,
        timeout: Duration,
    ) -> Result<(), HypervisorError> {
        self.qga_call(
            id,
            "guest-file-close",
            json!({ "handle": handle }),
            timeout,
            self.settings.max_reply_bytes,
        )
        .map(drop)
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
}

/// A reply without a field ballast needs.
#[derive(Debug, thiserror::Error)]
#[error("Reply has no {0}")]
struct MissingField(&'static str);

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Sender};

    use super::wire::fake_server::{FakeServer, Peer};
    use super::*;

    /// A fake node: run dir, config dir and `/proc`, with fake QEMUs behind links.
    struct FakeNode {
        dir: PathBuf,
        servers: Vec<FakeServer>,
        release: Vec<Sender<()>>,
    }

    impl FakeNode {
        fn new(name: &str) -> FakeNode {
            let dir = std::env::temp_dir()
                .join(format!("ballast-fake-pve-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for sub in ["run", "conf", "proc"] {
                std::fs::create_dir_all(dir.join(sub)).expect("fake node dirs");
            }
            FakeNode {
                dir,
                servers: Vec::new(),
                release: Vec::new(),
            }
        }

        fn settings(&self) -> ProxmoxSettings {
            ProxmoxSettings {
                run_dir: self.dir.join("run"),
                config_dir: self.dir.join("conf"),
                read_serial_vmids: Vec::new(),
                serial_log_dir: self.dir.join("serial"),
                call_timeout: Duration::from_millis(300),
                poll_deadline: Duration::from_secs(5),
                max_parallel: 16,
                max_reply_bytes: 1024 * 1024,
                procfs_root: self.dir.join("proc"),
            }
        }

        /// A running VM whose QMP socket is served by `script`.
        fn add_vm(&mut self, vmid: u32, conf: &str, script: impl FnOnce(Peer) + Send + 'static) {
            let server = FakeServer::start(script);
            std::os::unix::fs::symlink(&server.path, self.dir.join(format!("run/{vmid}.qmp")))
                .expect("link socket");
            let pid = 4_000_000 + vmid;
            std::fs::write(self.dir.join(format!("run/{vmid}.pid")), format!("{pid}\n"))
                .expect("pid file");
            let proc_dir = self.dir.join(format!("proc/{pid}"));
            std::fs::create_dir_all(&proc_dir).expect("proc dir");
            std::fs::write(
                proc_dir.join("cmdline"),
                format!("/usr/bin/kvm\0-id\0{vmid}\0-chardev\0socket,id=qmp,path=/var/run/qemu-server/{vmid}.qmp,server=on,wait=off\0"),
            )
            .expect("cmdline");
            std::fs::write(proc_dir.join("status"), "VmRSS:\t  1000 kB\n").expect("status");
            std::fs::write(self.dir.join(format!("conf/{vmid}.conf")), conf).expect("conf");
            self.servers.push(server);
        }

        /// A VM whose QEMU accepts but never answers (a stuck monitor).
        fn add_silent_vm(&mut self, vmid: u32) {
            let (sender, receiver) = channel::<()>();
            self.release.push(sender);
            self.add_vm(vmid, "memory: 1024\n", move |_peer| {
                let _ = receiver.recv();
            });
        }
    }

    impl Drop for FakeNode {
        fn drop(&mut self) {
            self.release.clear();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A guest agent on `run/<vmid>.qga` that syncs, then answers one command with `reply`.
    fn add_qga(node: &mut FakeNode, vmid: u32, reply: Value) {
        let server = FakeServer::start(move |mut peer| {
            let sync = peer.request();
            let id = sync["arguments"]["id"].clone();
            peer.send(&[0xFF]);
            peer.send(format!("{}\n", json!({ "return": id })).as_bytes());
            let request = peer.request();
            let mut reply = reply;
            reply["id"] = request["id"].clone();
            peer.send(format!("{reply}\n").as_bytes());
        });
        std::os::unix::fs::symlink(&server.path, node.dir.join(format!("run/{vmid}.qga")))
            .expect("link socket");
        node.servers.push(server);
    }

    #[test]
    fn guest_file_reads_are_bounded_and_refusals_named_against_fake_qga_server() {
        let mut node = FakeNode::new("qga-file");
        add_qga(
            &mut node,
            100,
            json!({"return": {"count": 5, "buf-b64": "aGVsbG8=", "eof": false}}),
        );
        add_qga(
            &mut node,
            101,
            json!({"return": {"count": 5, "buf-b64": "aGVsbG8=", "eof": true}}),
        );
        add_qga(
            &mut node,
            102,
            json!({"error": {"class": "CommandNotFound", "desc": "The command guest-file-open has been disabled for this instance"}}),
        );
        add_qga(
            &mut node,
            103,
            json!({"error": {"class": "GenericError", "desc": "failed to read file: Resource temporarily unavailable"}}),
        );
        let backend = ProxmoxHypervisor::new(node.settings());
        let id = |vmid: u32| DomainId {
            uuid: vmid.to_string(),
            name: format!("vm{vmid}"),
        };
        let timeout = Duration::from_secs(2);
        // Five bytes where four were asked: refused, not cut.
        assert!(backend.guest_file_read(&id(100), 7, 4, timeout).is_err());
        let chunk = backend
            .guest_file_read(&id(101), 7, 64, timeout)
            .expect("read");
        assert_eq!(chunk.data, b"hello");
        assert!(chunk.eof);
        let disabled = backend
            .guest_file_open(&id(102), "/dev/kmsg", timeout)
            .expect_err("disabled");
        assert!(disabled.is_command_disabled(), "{disabled}");
        let end = backend
            .guest_file_read(&id(103), 7, 64, timeout)
            .expect_err("end of the ring");
        assert!(
            matches!(end, HypervisorError::GuestRefused { .. }) && !end.is_command_disabled(),
            "{end}"
        );
    }

    fn answering(peer: Peer) {
        let mut peer = peer;
        peer.send(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
        let negotiate = peer.request();
        peer.send(format!("{}\n", json!({"return": {}, "id": negotiate["id"]})).as_bytes());
        let balloon = peer.request();
        let stats = peer.request();
        peer.send(
            format!(
                "{}\n{}\n",
                json!({"return": {"stats": {"stat-available-memory": 104_857_600_u64}, "last-update": 5}, "id": stats["id"]}),
                json!({"return": {"actual": 1_073_741_824_u64}, "id": balloon["id"]}),
            )
            .as_bytes(),
        );
    }

    #[test]
    fn busy_vms_cost_one_timeout_per_poll_against_fake_qmp_server() {
        let mut node = FakeNode::new("busy");
        node.add_vm(
            100,
            "name: good\nmemory: 1024\nsmbios1: uuid=5B0BD0F9-1d53-4d89-a8d6-3c5ec3e1c2a1\n",
            answering,
        );
        for vmid in 101..=106 {
            node.add_silent_vm(vmid);
        }
        let backend = ProxmoxHypervisor::new(node.settings());
        let started = Instant::now();
        let samples = backend.balloon_samples().expect("poll");
        let elapsed = started.elapsed();
        // Six stuck monitors in parallel: one call timeout (300 ms), not six.
        assert!(elapsed < Duration::from_millis(800), "{elapsed:?}");
        assert_eq!(samples.len(), 7, "busy VMs are listed, not gone");
        let (good_id, good) = &samples[0];
        assert_eq!(good_id.uuid, "5b0bd0f9-1d53-4d89-a8d6-3c5ec3e1c2a1");
        assert_eq!(good_id.name, "good");
        assert_eq!(good.actual_kib, Some(1024 * 1024));
        assert_eq!(good.usable_kib, Some(102_400));
        assert_eq!(good.rss_kib, Some(1000));
        for (id, sample) in &samples[1..] {
            assert_eq!(id.name, format!("vm{}", id.uuid));
            assert_eq!(sample.actual_kib, None);
            assert_eq!(sample.maximum_kib, Some(1024 * 1024));
        }
        assert_eq!(backend.last_poll().n_skipped, 6);
        // The uuid maps back to the vmid for per-VM calls.
        assert_eq!(backend.vmid_of(good_id).expect("vmid"), 100);
    }

    #[test]
    fn the_poll_deadline_bounds_a_poll_with_few_workers_against_fake_qmp_server() {
        let mut node = FakeNode::new("deadline");
        for vmid in 101..=106 {
            node.add_silent_vm(vmid);
        }
        let backend = ProxmoxHypervisor::new(ProxmoxSettings {
            max_parallel: 2,
            poll_deadline: Duration::from_millis(500),
            ..node.settings()
        });
        let started = Instant::now();
        let samples = backend.balloon_samples().expect("poll");
        let elapsed = started.elapsed();
        // 2 workers x 300 ms would be 900 ms for six VMs; the deadline ends it at 500.
        assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
        assert_eq!(samples.len(), 6);
        assert_eq!(backend.last_poll().n_skipped, 6);
    }

    #[test]
    fn dead_pids_and_foreign_processes_are_not_running() {
        let mut node = FakeNode::new("dead");
        node.add_vm(100, "memory: 512\n", drop);
        // A pid file whose process is gone, and one whose pid was reused.
        std::fs::write(node.dir.join("run/102.pid"), "4000102\n").expect("pid");
        std::fs::write(node.dir.join("run/103.pid"), "4000100\n").expect("pid");
        std::fs::write(node.dir.join("conf/104.conf"), "memory: 512\n").expect("conf");
        let backend = ProxmoxHypervisor::new(node.settings());
        let running: Vec<u32> = backend
            .running()
            .expect("running")
            .iter()
            .map(|vm| vm.vmid)
            .collect();
        assert_eq!(running, [100]);
        let domains = backend.domains().expect("domains");
        let states: Vec<(&str, DomainState)> = domains
            .iter()
            .map(|info| (info.id.uuid.as_str(), info.state))
            .collect();
        // 102 and 103 have neither a live QEMU nor a config: not VMs of this node.
        assert_eq!(
            states,
            [("100", DomainState::Running), ("104", DomainState::ShutOff)]
        );
    }

    #[test]
    fn malformed_conf_is_an_error_naming_file_and_line() {
        let mut node = FakeNode::new("malformed");
        node.add_vm(100, "name: ok\nmemory: lots\n", drop);
        let backend = ProxmoxHypervisor::new(node.settings());
        let id = DomainId {
            uuid: "100".to_owned(),
            name: "ok".to_owned(),
        };
        let error = backend.domain_config(&id).expect_err("malformed");
        let chain = format!(
            "{error} / {}",
            std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(chain.contains("1 bad lines"), "{chain}");
        let first = std::error::Error::source(&error)
            .and_then(std::error::Error::source)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(first.contains("100.conf:2: memory"), "{first}");
        // Identity still comes from the readable part of the file.
        let domains = backend.domains().expect("domains");
        assert_eq!(domains[0].id.name, "ok");
    }
}
