//! The agent's configuration: YAML read into [`RawConfig`], then checked as a whole
//! into [`Settings`] at start-up, so a bad value stops the agent before it runs.
//!
//! Every quantity carries its unit in its name (`_secs`, `_kib`). Unknown keys are
//! errors (a typo must not silently fall back to a default). `ballast-agent
//! --print-default-config` prints the defaults as YAML; `config/agent.example.yaml`
//! is generated from it and a test keeps the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_daemon::config_file::{self, ConfigFileError};
use serde::{Deserialize, Serialize};

use crate::collector_tls::{self, CaBundle, CaFileError};
use crate::paths;

mod elastic;
mod guard;
pub use elastic::{ElasticConfig, ElasticConfigError};
pub use guard::{GuardConfig, GuardConfigError};

/// The configuration file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// This host's name in the fleet; empty = the system host name.
    pub host_id: String,
    /// `auto` (libvirt when its socket exists, else Proxmox when /etc/pve exists), `libvirt`, `proxmox`.
    pub backend: BackendChoice,
    pub libvirt: LibvirtConfig,
    pub proxmox: ProxmoxConfig,
    /// Seconds between two balloon polls of all VMs.
    pub poll_interval_secs: u64,
    /// How much balloon history to keep per VM (attached to every OOM event).
    pub history_secs: u64,
    /// Spool, capture positions and the status file.
    pub state_dir: PathBuf,
    pub capture: CaptureConfig,
    pub pressure: PressureConfig,
    pub guard: GuardConfig,
    pub elastic: ElasticConfig,
    pub collector: CollectorConfig,
    pub metrics: MetricsConfig,
    /// Where host memory figures are read; tests point it elsewhere.
    pub procfs_root: PathBuf,
    /// Also append every event as a JSON line to this file (debugging; it grows
    /// without bound). Empty = off.
    pub journal_file: PathBuf,
    /// Cap on the spool (events waiting for the collector), MiB.
    pub spool_max_mib: u64,
    /// Log filter (`info`, `debug`, `info,ballast_agent::capture=debug`); the
    /// BALLAST_LOG environment variable overrides it. Reloaded on SIGHUP.
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    Auto,
    Libvirt,
    Proxmox,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtConfig {
    pub uri: String,
    /// Read QEMU's own balloon counters (stat-oom-kills, stalls) with a monitor command.
    /// libvirt then marks each domain `tainted: custom-monitor`; harmless, but visible.
    pub read_qemu_counters: bool,
    /// Set this balloon stats period (live) on running domains that have none (0 = leave them).
    pub set_stats_period_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxmoxConfig {
    pub run_dir: PathBuf,
    pub config_dir: PathBuf,
    /// VMs (by vmid) whose `serialN: socket` console the agent may read; `qm terminal`
    /// cannot attach while it does, so this is opt-in per VM.
    pub read_serial_vmids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Tail each VM's serial console log file.
    pub serial: bool,
    /// When the guest kernel log is read through the QEMU guest agent (see
    /// [`GuestAgentMode`]; `true`/`false` still read, deprecated).
    pub guest_agent: GuestAgentMode,
    /// `periodic`: this often (seconds, at least 60).
    pub guest_agent_interval_secs: u64,
    /// Where the guest refuses the guest agent's file API, run `dmesg` in it with
    /// `guest-exec` instead. Off by default: that starts a process in the guest.
    pub guest_agent_exec: bool,
    /// Watch the host's own kernel log for OOMs that killed a QEMU process.
    pub host_kernel: bool,
}

/// `capture.guest_agent`: when the agent reads a guest's kernel log through its
/// guest agent (`guest-file-open/read/close` of `/dev/kmsg`; `guest-exec dmesg`
/// only with `capture.guest_agent_exec`).
///
/// Default `on_suspicion`: a healthy guest is never touched. The host already sees
/// the signs of a guest OOM (usable memory collapsed, the balloon's oom-kill
/// counter went up, a partial report on the serial console), and the serial
/// console catches most reports whole; the guest agent only completes or confirms
/// them. `periodic` adds a read every `guest_agent_interval_secs` for guests whose
/// OOMs leave no trace the host can see (no serial log, no balloon stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestAgentMode {
    /// Never: no guest agent call at all.
    Off,
    /// Only after a host-visible sign of an OOM in that guest.
    #[default]
    OnSuspicion,
    /// After a sign, and every `guest_agent_interval_secs`.
    Periodic,
}

impl GuestAgentMode {
    pub const NAMES: [&'static str; 3] = ["off", "on_suspicion", "periodic"];

    /// The mode the pre-1.x booleans meant: `true` -> the default, `false` -> off.
    pub fn from_legacy_bool(on: bool) -> Self {
        if on {
            GuestAgentMode::default()
        } else {
            GuestAgentMode::Off
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GuestAgentMode::Off => "off",
            GuestAgentMode::OnSuspicion => "on_suspicion",
            GuestAgentMode::Periodic => "periodic",
        }
    }

    /// Any guest agent calls at all.
    pub fn enabled(self) -> bool {
        self != GuestAgentMode::Off
    }
}

impl std::fmt::Display for GuestAgentMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GuestAgentMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GuestAgentMode;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("off, on_suspicion or periodic")
            }

            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<GuestAgentMode, E> {
                Ok(GuestAgentMode::from_legacy_bool(on))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<GuestAgentMode, E> {
                match text {
                    "off" => Ok(GuestAgentMode::Off),
                    "on_suspicion" => Ok(GuestAgentMode::OnSuspicion),
                    "periodic" => Ok(GuestAgentMode::Periodic),
                    _ => Err(E::unknown_variant(text, &GuestAgentMode::NAMES)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `pressure:`: how the agent reads a guest's memory pressure signals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PressureConfig {
    /// Read the guest's `/proc/pressure/memory` through its guest agent's file API.
    pub guest_psi: GuestPsiMode,
    /// Seconds between two PSI reads of one guest (5 to 3600).
    pub guest_psi_interval_secs: u64,
}

/// `pressure.guest_psi`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestPsiMode {
    /// Never.
    Off,
    /// Where guest agent calls are allowed at all (`capture.guest_agent` is not
    /// `off`) and the VM has a guest agent channel.
    #[default]
    Auto,
}

impl PressureConfig {
    /// Whether PSI is read with these capture settings.
    pub fn reads_psi(&self, capture: &CaptureConfig) -> bool {
        self.guest_psi == GuestPsiMode::Auto && capture.guest_agent.enabled()
    }

    pub fn psi_interval(&self) -> Duration {
        Duration::from_secs(self.guest_psi_interval_secs)
    }
}

impl Default for PressureConfig {
    fn default() -> Self {
        Self {
            guest_psi: GuestPsiMode::Auto,
            guest_psi_interval_secs: 30,
        }
    }
}

impl std::fmt::Display for GuestPsiMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            GuestPsiMode::Off => "off",
            GuestPsiMode::Auto => "auto",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// e.g. `https://collector.example:8470`; empty = keep events in the local spool only.
    pub url: String,
    /// File holding this host's bearer token.
    pub token_file: PathBuf,
    /// PEM file of a private CA: the only CA trusted for the collector's certificate
    /// (replaces the built-in web PKI roots). Empty = the web PKI roots.
    pub ca_file: PathBuf,
    /// Allow `http://` to a collector that is not on loopback (the token then crosses
    /// the network in clear text).
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Prometheus `/metrics` listen address, e.g. `127.0.0.1:9471`; empty = off.
    pub listen: String,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            host_id: String::new(),
            backend: BackendChoice::Auto,
            libvirt: LibvirtConfig::default(),
            proxmox: ProxmoxConfig::default(),
            poll_interval_secs: 10,
            history_secs: 3600,
            state_dir: PathBuf::from(paths::STATE_DIR),
            capture: CaptureConfig::default(),
            pressure: PressureConfig::default(),
            guard: GuardConfig::default(),
            elastic: ElasticConfig::default(),
            collector: CollectorConfig::default(),
            metrics: MetricsConfig::default(),
            procfs_root: PathBuf::from(paths::PROCFS_ROOT),
            journal_file: PathBuf::new(),
            spool_max_mib: 256,
            log_level: "info".to_string(),
        }
    }
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        Self {
            uri: paths::LIBVIRT_URI.to_string(),
            read_qemu_counters: false,
            set_stats_period_secs: 0,
        }
    }
}

impl Default for ProxmoxConfig {
    fn default() -> Self {
        Self {
            run_dir: PathBuf::from(paths::PROXMOX_RUN_DIR),
            config_dir: PathBuf::from(paths::PROXMOX_CONFIG_DIR),
            read_serial_vmids: Vec::new(),
        }
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            serial: true,
            guest_agent: GuestAgentMode::default(),
            guest_agent_interval_secs: 900,
            guest_agent_exec: false,
            host_kernel: true,
        }
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            token_file: PathBuf::from("/etc/ballast/agent.token"),
            ca_file: PathBuf::new(),
            allow_insecure_http: false,
        }
    }
}

/// One comment per key of the generated example (a test checks every key has one).
const KEY_DOCS: &[(&str, &str)] = &[
    ("host_id", "This host's name in the fleet; empty = the system host name."),
    ("backend", "auto (libvirt when its socket exists, else Proxmox when /etc/pve exists), libvirt or proxmox."),
    ("libvirt", "libvirt hosts."),
    ("libvirt.uri", "The libvirt connection to watch."),
    ("libvirt.read_qemu_counters", "Read QEMU's own balloon counters (stat-oom-kills; Linux >= 6.12 guests, QEMU >= 9.2). libvirt marks each domain 'tainted: custom-monitor'."),
    ("libvirt.set_stats_period_secs", "Set this balloon stats period (live) on running domains that have none; 0 leaves them."),
    ("proxmox", "Proxmox VE hosts (no libvirt): per-VM QMP and guest-agent sockets."),
    ("proxmox.run_dir", "Where qemu-server keeps <vmid>.qmp, .qga, .serialN and .pid."),
    ("proxmox.config_dir", "Where the VM configurations <vmid>.conf live."),
    ("proxmox.read_serial_vmids", "VMs whose 'serialN: socket' console the agent may read ('qm terminal' cannot attach meanwhile)."),
    ("poll_interval_secs", "Seconds between two balloon polls of all VMs."),
    ("history_secs", "Balloon history kept per VM and attached to every OOM event."),
    ("state_dir", "Spool, capture positions and status file."),
    ("capture", "Where guest OOM reports are read."),
    ("capture.serial", "Tail each VM's serial console log file."),
    ("capture.guest_agent", "When the guest kernel log is read through the QEMU guest agent (guest-file-open/read/close of /dev/kmsg): off = never; on_suspicion (default: nothing is asked of a healthy guest) = only after the host sees a sign of an OOM in it (usable memory collapsed, oom-kill counter, a cut-off report on its serial console); periodic = also every guest_agent_interval_secs, for guests whose OOMs leave no sign on the host. true/false are deprecated (true = on_suspicion)."),
    ("capture.guest_agent_interval_secs", "periodic: seconds between two reads of each guest (at least 60)."),
    ("capture.guest_agent_exec", "Where a guest's agent refuses the file API (qemu-ga --block-rpcs/--allow-rpcs), run /bin/dmesg in it with guest-exec instead. Off: that starts a process in the guest."),
    ("capture.host_kernel", "Watch the host's kernel log for OOMs that killed a QEMU process."),
    ("pressure", "A guest's memory pressure signals: the balloon stats (and QEMU's counters where they are read) come with every poll; this section is about the guest's PSI."),
    ("pressure.guest_psi", "Read the guest's /proc/pressure/memory through the QEMU guest agent's file API (guest-file-open/read/close; nothing runs in the guest): auto (default) = on VMs with a guest agent channel whenever capture.guest_agent is not off; off = never. A guest whose agent does not answer is asked again after 5 min, doubling up to 30 min."),
    ("pressure.guest_psi_interval_secs", "Seconds between two PSI reads of each guest (5 to 3600)."),
    ("guard", "The guard: gives balloon memory back to a guest whose risk is critical (docs/guard.md). SIGHUP applies every guard key."),
    ("guard.mode", "off = nothing; observe (default) = report what it would have done (would_deflate events), change nothing; act = raise the balloon target (libvirt virDomainSetMemoryFlags live, QMP balloon) in steps."),
    ("guard.step_mib", "The smallest step given back, MiB (1 to 65536); a step is the larger of this and the risk model's deficit, capped at what the balloon holds and what the host can give."),
    ("guard.host_reserve_mib", "The host's MemAvailable the guard never gives away, MiB (64 to 1048576)."),
    ("guard.max_actions_per_vm_per_hour", "Steps per VM in any hour (1 to 60); a step held back is reported once per episode (rate_limited)."),
    ("guard.max_actions_per_host_per_minute", "Steps per host in any minute, all VMs together (1 to 600)."),
    ("guard.poll_interval_secs", "Seconds between the guard's own polls of the VMs whose balloon holds memory (at least one step_mib), between the agent's polls of all VMs (0 to 3600; 0 = only the agent's poll; at or above poll_interval_secs it changes nothing). The guard steps about four guest reports after a fall began, so its reach is set by this poll (docs/guard.md, Reach)."),
    ("guard.proxmox_raise_floor", "Proxmox: raise the VM's balloon: floor persistently with each deflation (qm set <vmid> --balloon <MiB>), so pvestatd keeps the memory given back; false = report overridden_by_host with the floor that would hold when pvestatd takes a deflation back."),
    ("elastic", "Elastic memory beyond the balloon (docs/elastic.md)."),
    ("elastic.converge_timeout_secs", "Seconds a virtio-mem device may stay away from its request before it is stuck (5 to 86400, default 60); two polls without progress make it stuck sooner."),
    ("collector", "Where events go; without a url they stay in the local spool."),
    ("collector.url", "e.g. https://collector.example:8470"),
    ("collector.token_file", "File holding this host's bearer token (ballast-collector token create HOST)."),
    ("collector.ca_file", "PEM file of a private CA, the only CA then trusted for the collector's certificate (the built-in web PKI roots are dropped). Empty = web PKI roots."),
    ("collector.allow_insecure_http", "Allow http:// to a collector that is not on loopback (127.0.0.0/8, ::1, localhost): the token then crosses the network in clear text."),
    ("metrics", "Prometheus metrics."),
    ("metrics.listen", "e.g. 127.0.0.1:9471; empty = off."),
    ("procfs_root", "Where host memory figures are read (tests point it elsewhere)."),
    ("journal_file", "Also append every event as a JSON line to this file (debugging; grows without bound). Empty = off."),
    ("spool_max_mib", "Cap on the spool of events waiting for the collector; OOM events are kept, rollups thinned first."),
    ("log_level", "Log filter: error, warn, info, debug, or per module (info,ballast_agent::capture=debug). BALLAST_LOG overrides it. SIGHUP applies a change."),
];

/// The checked configuration the agent runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub host_id: String,
    pub backend: BackendChoice,
    pub libvirt: LibvirtConfig,
    pub proxmox: ProxmoxConfig,
    pub poll_interval: Duration,
    pub history: Duration,
    /// Samples kept per VM: history / poll interval.
    pub history_samples: usize,
    pub state_dir: PathBuf,
    pub capture: CaptureConfig,
    pub pressure: PressureConfig,
    pub guard: GuardConfig,
    pub elastic: ElasticConfig,
    pub collector: CollectorConfig,
    /// `collector.ca_file`, read and checked.
    pub collector_ca: Option<CaBundle>,
    pub metrics_listen: Option<SocketAddr>,
    pub procfs_root: PathBuf,
    pub journal_file: Option<PathBuf>,
    pub spool_max_bytes: u64,
    /// A valid tracing filter directive.
    pub log_level: String,
    /// Keys written in a deprecated form ([`RawConfig::deprecations`]): warnings.
    pub deprecations: Vec<String>,
}

/// Reading the file failed, or its YAML does not fit the schema.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or its YAML does not fit the schema (names the file,
    /// and for YAML the line and column).
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// The validation error is part of the message, not a `#[source]`: printed as a
    /// chain ([`ballast_daemon::error_chain`]) it would show twice.
    #[error("{path}: {error}")]
    Invalid {
        path: PathBuf,
        error: ValidationError,
    },
}

/// A value that parsed but makes no sense; each names its field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("poll_interval_secs ({0}) below minimum (1)")]
    PollIntervalTooShort(u64),
    #[error("poll_interval_secs ({0}) above maximum (3600)")]
    PollIntervalTooLong(u64),
    #[error("history_secs ({history}) shorter than poll_interval_secs ({poll})")]
    HistoryShorterThanPoll { history: u64, poll: u64 },
    #[error("history_secs ({0}) above maximum (86400)")]
    HistoryTooLong(u64),
    #[error("metrics.listen ({0:?}) is not an address:port")]
    MetricsListen(String),
    #[error("collector.url ({0:?}) must start with http:// or https://")]
    CollectorUrl(String),
    #[error(
        "collector.url ({0:?}) would send this host's token in clear text to a host that \
         is not loopback: use https://, or set collector.allow_insecure_http: true"
    )]
    InsecureCollectorUrl(String),
    #[error(transparent)]
    CollectorCaFile(#[from] CaFileError),
    #[error("spool_max_mib ({0}) must be 1 to 1048576")]
    SpoolSize(u64),
    #[error("libvirt.uri is empty")]
    EmptyLibvirtUri,
    #[error("state_dir ({0:?}) must be an absolute path")]
    RelativeStateDir(PathBuf),
    #[error("host_id ({0:?}) may only hold letters, digits, '.', '-' and '_' (at most 253)")]
    HostId(String),
    #[error("capture.guest_agent_interval_secs ({0}) must be at least 60 with capture.guest_agent: periodic")]
    GuestAgentInterval(u64),
    #[error("pressure.guest_psi_interval_secs ({0}) must be 5 to 3600")]
    GuestPsiInterval(u64),
    #[error(transparent)]
    Elastic(#[from] ElasticConfigError),
    #[error(transparent)]
    Guard(#[from] GuardConfigError),
    #[error("log_level ({value:?}) is not a log filter: {message}")]
    LogLevel { value: String, message: String },
}

impl RawConfig {
    /// Parses YAML text; `path` only names the source in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Ok(config_file::parse_yaml(text, path)?)
    }

    /// Keys written in a deprecated form in `text` (a config that parsed), one line
    /// each for the start-up log and `check-config`.
    pub fn deprecations(text: &str) -> Vec<String> {
        let Ok(value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        if let Some(on) = value
            .get("capture")
            .and_then(|capture| capture.get("guest_agent"))
            .and_then(serde_yaml_ng::Value::as_bool)
        {
            found.push(format!(
                "capture.guest_agent: {on} is deprecated; write capture.guest_agent: {} (off, on_suspicion or periodic)",
                GuestAgentMode::from_legacy_bool(on)
            ));
        }
        found
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Ok(config_file::read_yaml(path)?.0)
    }

    /// The defaults as commented YAML (the source of config/agent.example.yaml).
    pub fn default_yaml() -> String {
        let body = serde_yaml_ng::to_string(&Self::default())
            .unwrap_or_else(|error| format!("# failed to render defaults: {error}\n"));
        let mut out = String::from(
            "# ballast-agent configuration: every key with its default.\n\
             # Generated by `ballast-agent --print-default-config`; keep only what you change.\n",
        );
        let mut section = String::new();
        for line in body.lines() {
            let indented = line.starts_with("  ");
            let key = line.trim_start().split(':').next().unwrap_or_default();
            if !indented {
                section = key.to_string();
            }
            let path = if indented {
                format!("{section}.{key}")
            } else {
                key.to_string()
            };
            if let Some((_, doc)) = KEY_DOCS.iter().find(|(name, _)| *name == path) {
                let indent = if indented { "  " } else { "" };
                out.push_str(&format!("{indent}# {doc}\n"));
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Checks the whole configuration; `system_host_name` fills an empty `host_id`.
    pub fn validate(self, system_host_name: &str) -> Result<Settings, ValidationError> {
        let poll = self.poll_interval_secs;
        if poll < 1 {
            return Err(ValidationError::PollIntervalTooShort(poll));
        }
        if poll > 3600 {
            return Err(ValidationError::PollIntervalTooLong(poll));
        }
        if self.history_secs < poll {
            return Err(ValidationError::HistoryShorterThanPoll {
                history: self.history_secs,
                poll,
            });
        }
        if self.history_secs > 86_400 {
            return Err(ValidationError::HistoryTooLong(self.history_secs));
        }
        let metrics_listen = match self.metrics.listen.trim() {
            "" => None,
            text => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| ValidationError::MetricsListen(text.to_string()))?,
            ),
        };
        let url = self.collector.url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ValidationError::CollectorUrl(url.to_string()));
        }
        if !self.collector.allow_insecure_http && collector_tls::is_clear_text_to_remote(url) {
            return Err(ValidationError::InsecureCollectorUrl(url.to_string()));
        }
        let collector_ca = if self.collector.ca_file.as_os_str().is_empty() {
            None
        } else {
            Some(CaBundle::load(&self.collector.ca_file)?)
        };
        if self.libvirt.uri.trim().is_empty() {
            return Err(ValidationError::EmptyLibvirtUri);
        }
        if !(1..=1_048_576).contains(&self.spool_max_mib) {
            return Err(ValidationError::SpoolSize(self.spool_max_mib));
        }
        if !self.state_dir.is_absolute() {
            return Err(ValidationError::RelativeStateDir(self.state_dir));
        }
        let host_id = if self.host_id.is_empty() {
            system_host_name.to_string()
        } else {
            self.host_id
        };
        let host_ok = !host_id.is_empty()
            && host_id.len() <= 253
            && host_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !host_ok {
            return Err(ValidationError::HostId(host_id));
        }
        if self.capture.guest_agent == GuestAgentMode::Periodic
            && self.capture.guest_agent_interval_secs < 60
        {
            return Err(ValidationError::GuestAgentInterval(
                self.capture.guest_agent_interval_secs,
            ));
        }
        if !(5..=3600).contains(&self.pressure.guest_psi_interval_secs) {
            return Err(ValidationError::GuestPsiInterval(
                self.pressure.guest_psi_interval_secs,
            ));
        }
        self.guard.validate()?;
        self.elastic.validate()?;
        let log_level = self.log_level.trim().to_string();
        if let Err(message) = check_log_filter(&log_level) {
            return Err(ValidationError::LogLevel {
                value: log_level,
                message,
            });
        }
        Ok(Settings {
            host_id,
            backend: self.backend,
            libvirt: self.libvirt,
            proxmox: self.proxmox,
            poll_interval: Duration::from_secs(poll),
            history: Duration::from_secs(self.history_secs),
            history_samples: usize::try_from(self.history_secs / poll).unwrap_or(usize::MAX),
            state_dir: self.state_dir,
            capture: self.capture,
            pressure: self.pressure,
            guard: self.guard,
            elastic: self.elastic,
            collector: self.collector,
            collector_ca,
            metrics_listen,
            procfs_root: self.procfs_root,
            journal_file: (!self.journal_file.as_os_str().is_empty()).then_some(self.journal_file),
            spool_max_bytes: self.spool_max_mib.saturating_mul(1024 * 1024),
            log_level,
            deprecations: Vec::new(),
        })
    }
}

/// A log filter: comma-separated `LEVEL` or `target=LEVEL` directives. Stricter than
/// tracing's own parser, which takes a misspelt level for a target name.
fn check_log_filter(text: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if text.is_empty() {
        return Err("empty".into());
    }
    for directive in text.split(',') {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?} names no level (off, error, warn, info, debug, trace)"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// Reads `path` (defaults when `None`) and validates it: the agent's start-up check.
pub fn load(path: Option<&Path>, system_host_name: &str) -> Result<Settings, ConfigError> {
    let (raw, source, deprecations) = match path {
        Some(path) => {
            let (raw, text) = config_file::read_yaml::<RawConfig>(path)?;
            (raw, path.to_path_buf(), RawConfig::deprecations(&text))
        }
        None => (
            RawConfig::default(),
            PathBuf::from("(defaults)"),
            Vec::new(),
        ),
    };
    let mut settings = raw
        .validate(system_host_name)
        .map_err(|error| ConfigError::Invalid {
            path: source,
            error,
        })?;
    settings.deprecations = deprecations;
    Ok(settings)
}

#[cfg(test)]
mod tests;
