//! The libvirt backend: `qemu:///system` (or any URI) through libvirt's C API.
//!
//! What it is: one [`LibvirtHypervisor`] per libvirt connection URI, implementing
//! [`Hypervisor`]. What it is not: a poller or a policy; the agent decides what to
//! call when.
//!
//! Protocol:
//! 1. The first call registers libvirt's default event loop (once per process) and
//!    runs it on the thread `libvirt-events`; keepalive, the close callback and
//!    domain events need it.
//! 2. A connection is opened lazily, with keepalive (5 s x 3) and a close callback
//!    that marks it dead (libvirtd restart, socket EOF, keepalive timeout).
//! 3. Every call takes the current connection; a dead one is reopened first. When a
//!    call fails and the connection turns out dead, it is dropped, and idempotent
//!    calls (all but `guest_exec`) are retried once on a new connection. So the
//!    agent survives a libvirtd restart without restarting itself.
//! 4. [`Hypervisor::balloon_samples`] is ONE `virConnectGetAllDomainStats` call for
//!    all active domains (`VIR_DOMAIN_STATS_BALLOON`, `..._ACTIVE | ..._NOWAIT`: a
//!    domain stuck in a job is reported without the job-bound fields instead of
//!    stalling the poll; the flag exists since libvirt 4.5).
//! 5. [`Hypervisor::subscribe`] registers balloon-change, lifecycle and
//!    agent-lifecycle callbacks, and re-registers them on every new connection; a
//!    watchdog thread reopens a dead connection within a second so events resume
//!    without waiting for the next poll. Events while libvirtd is down are lost.
//!
//! [`Hypervisor::qemu_pid`] reads libvirt's pid file and checks the process's `-uuid`.
//!
//! `guest_counters` sends a QMP command through `virDomainQemuMonitorCommand`;
//! libvirt marks the domain `tainted: custom-monitor` on the first one. The agent
//! calls it only when configured to.

mod domain_xml;
mod ffi;
mod listing;
mod nova;
mod params;
mod pid;
mod qemu_json;
mod virtio_mem;

/// TEST ONLY: the domain XML fixture `name` of agent/tests/fixtures/libvirt.
#[cfg(test)]
pub(crate) fn xml_fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/libvirt")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::sys;

pub use self::domain_xml::{parse_domain_config, DomainXmlError};
pub use self::qemu_json::ReplyError;
use super::guest_exec::{self, AgentReply, AgentTransport};
use super::FileChunk;
use super::{
    BalloonSample, DomainConfig, DomainEvent, DomainId, DomainInfo, DomainState, ExecOutput,
    GuestCounters, Hypervisor, HypervisorError,
};

/// How to reach libvirt, and the bounds on what guests may send back (from the
/// `libvirt:` section of the configuration, [`crate::config::LibvirtConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtSettings {
    /// `qemu:///system`, `test:///default`, `qemu+ssh://host/system`, ...
    pub uri: String,
    /// Keepalive probe interval; 0 disables keepalive (close detection then relies
    /// on failed calls).
    pub keepalive_interval_secs: u32,
    /// Unanswered probes before libvirt closes the connection.
    pub keepalive_count: u32,
    /// Largest QMP reply `guest_counters` accepts.
    pub max_monitor_reply_bytes: usize,
}

impl Default for LibvirtSettings {
    fn default() -> Self {
        LibvirtSettings {
            uri: DEFAULT_URI.to_owned(),
            keepalive_interval_secs: 5,
            keepalive_count: 3,
            max_monitor_reply_bytes: 64 * 1024,
        }
    }
}

/// libvirt's system QEMU driver.
pub const DEFAULT_URI: &str = "qemu:///system";

/// A libvirt hypervisor. Cheap to share (`Arc`); all methods take `&self`.
#[derive(Debug)]
pub struct LibvirtHypervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LibvirtSettings,
    state: Mutex<State>,
    /// The domains the last balloon poll returned ([`listing`]).
    listed: Mutex<Vec<DomainId>>,
    /// Domains whose XML listed a virtio-mem device when last read
    /// ([`Hypervisor::domain_config`]): the poll re-reads their live XML for the
    /// devices' `<requested>` and `<current>`; other domains pay nothing.
    virtio_mem_domains: Mutex<std::collections::BTreeSet<String>>,
}

#[derive(Debug, Default)]
struct State {
    connection: Option<Arc<Connection>>,
    sink: Option<Sender<DomainEvent>>,
    watchdog_started: bool,
    n_connects: u64,
}

/// One open libvirt connection and what is registered on it.
struct Connection {
    connect: Connect,
    dead: Arc<AtomicBool>,
    event_callback_ids: Vec<i32>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Connection")
            .field("dead", &self.dead)
            .field("event_callback_ids", &self.event_callback_ids)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn open(
        config: &LibvirtSettings,
        sink: Option<&Sender<DomainEvent>>,
    ) -> Result<Self, HypervisorError> {
        let connect_error =
            |source: Box<dyn std::error::Error + Send + Sync>| HypervisorError::Connect {
                uri: config.uri.clone(),
                source,
            };
        ffi::ensure_event_loop().map_err(|message| connect_error(message.into()))?;
        let connect =
            Connect::open(Some(&config.uri)).map_err(|error| connect_error(error.into()))?;
        if config.keepalive_interval_secs > 0 {
            let interval = i32::try_from(config.keepalive_interval_secs).unwrap_or(i32::MAX);
            // Drivers without keepalive (test://, local ones) refuse; that is fine.
            if let Err(error) = connect.set_keep_alive(interval, config.keepalive_count) {
                tracing::debug!(uri = %config.uri, %error, "No libvirt keepalive.");
            }
        }
        let dead = Arc::new(AtomicBool::new(false));
        if let Err(error) = ffi::register_close_callback(&connect, Arc::clone(&dead)) {
            tracing::debug!(uri = %config.uri, %error, "No libvirt close callback.");
        }
        let mut connection = Connection {
            connect,
            dead,
            event_callback_ids: Vec::new(),
        };
        if let Some(sink) = sink {
            connection.event_callback_ids = ffi::register_domain_events(&connection.connect, sink)
                .map_err(|error| HypervisorError::Call {
                    action: "register domain events",
                    source: error.into(),
                })?;
        }
        Ok(connection)
    }

    fn is_usable(&self) -> bool {
        !self.dead.load(Ordering::SeqCst) && self.connect.is_alive().unwrap_or(false)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Both hold references on the connection: without this it would never close.
        ffi::deregister_domain_events(&self.connect, &self.event_callback_ids);
        ffi::unregister_close_callback(&self.connect);
    }
}

/// Whether a failed call may be repeated on a fresh connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    OnceIfConnectionDied,
    Never,
}

impl LibvirtHypervisor {
    /// A backend for `config.uri`; connects on first use, so this never fails.
    pub fn new(config: LibvirtSettings) -> Self {
        LibvirtHypervisor {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                listed: Mutex::new(Vec::new()),
                virtio_mem_domains: Mutex::new(std::collections::BTreeSet::new()),
            }),
        }
    }

    /// Connects now (to fail early at startup with a clear error).
    pub fn connect(&self) -> Result<(), HypervisorError> {
        self.inner.connection().map(drop)
    }

    /// Whether a failed [`connect`](Self::connect) only means the daemon did not
    /// answer (its socket is missing or refuses: libvirtd stopped or not started
    /// yet), as opposed to a URI no daemon will ever accept.
    pub fn daemon_unreachable(error: &HypervisorError) -> bool {
        let HypervisorError::Connect { source, .. } = error else {
            return false;
        };
        source.downcast_ref::<VirtError>().is_some_and(|error| {
            error
                .code()
                .is_known_and(|code| code == ErrorNumber::SystemError)
                && error
                    .domain()
                    .is_known_and(|domain| domain == virt::error::ErrorDomain::Rpc)
        })
    }

    pub fn config(&self) -> &LibvirtSettings {
        &self.inner.config
    }

    /// How many connections were opened so far (1 + reconnects).
    pub fn n_connects(&self) -> u64 {
        self.inner.lock().n_connects
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (plain fields).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current connection, (re)opened when there is none or it died.
    fn connection(&self) -> Result<Arc<Connection>, HypervisorError> {
        let mut state = self.lock();
        if let Some(connection) = &state.connection {
            if connection.is_usable() {
                return Ok(Arc::clone(connection));
            }
            tracing::info!(uri = %self.config.uri, "libvirt connection lost; reconnecting.");
            state.connection = None;
        }
        let connection = Arc::new(Connection::open(&self.config, state.sink.as_ref())?);
        state.n_connects += 1;
        if state.n_connects > 1 {
            tracing::info!(uri = %self.config.uri, "Reconnected to libvirt.");
        }
        state.connection = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// Forgets `connection` if it is still the current one.
    fn discard(&self, connection: &Arc<Connection>) {
        let mut state = self.lock();
        if state
            .connection
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, connection))
        {
            state.connection = None;
        }
    }

    /// Runs `call` on the current connection; on failure with a dead connection,
    /// drops it and (if allowed) runs `call` once more on a new one.
    fn call<T>(
        &self,
        retry: Retry,
        call: impl Fn(&Connect) -> Result<T, HypervisorError>,
    ) -> Result<T, HypervisorError> {
        let connection = self.connection()?;
        match call(&connection.connect) {
            Ok(value) => Ok(value),
            Err(error) if connection.is_usable() => Err(error),
            Err(error) => {
                tracing::warn!(uri = %self.config.uri, %error, "libvirt call failed on a dead connection.");
                self.discard(&connection);
                drop(connection);
                match retry {
                    Retry::Never => Err(error),
                    Retry::OnceIfConnectionDied => call(&self.connection()?.connect),
                }
            }
        }
    }
}

/// Reopens a dead connection while someone listens for events, so that events
/// resume after a libvirtd restart even between polls. Ends with the backend.
fn run_watchdog(inner: Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let needs_reconnect = {
            let state = inner.lock();
            state.sink.is_some()
                && state
                    .connection
                    .as_ref()
                    .is_none_or(|connection| !connection.is_usable())
        };
        if needs_reconnect {
            if let Err(error) = inner.connection() {
                tracing::debug!(%error, "libvirt still unreachable.");
            }
        }
    }
}

/// A lock that survives a panicked holder (the data is plain and always whole).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lookup(connect: &Connect, id: &DomainId) -> Result<Domain, HypervisorError> {
    connect
        .lookup_domain_by_uuid_string(&id.uuid)
        .map_err(|error| {
            if error
                .code()
                .is_known_and(|code| code == ErrorNumber::NoDomain)
            {
                HypervisorError::Unavailable {
                    domain: id.name.clone(),
                    what: "definition",
                }
            } else {
                domain_error("look up the domain", id, error)
            }
        })
}

fn domain_error(
    action: &'static str,
    id: &DomainId,
    source: impl std::error::Error + Send + Sync + 'static,
) -> HypervisorError {
    HypervisorError::Domain {
        action,
        domain: id.name.clone(),
        source: Box::new(source),
    }
}

fn call_error(action: &'static str, source: VirtError) -> HypervisorError {
    HypervisorError::Call {
        action,
        source: Box::new(source),
    }
}

/// The largest guest-agent reply parsed at all. libvirt has already received and
/// allocated the reply (its RPC layer caps strings itself); this bound keeps the JSON
/// scan finite. Output beyond `max_output_bytes` is cut before base64 decoding, so
/// a large reply yields a truncated result, not an error.
const MAX_AGENT_REPLY_BYTES: usize = 64 * 1024 * 1024;

impl LibvirtHypervisor {
    /// One guest agent command through `virDomainQemuAgentCommand`, its reply parsed
    /// by `parse`. libvirt reports an error answer of the agent as a call error
    /// ("unable to execute QEMU agent command 'x': desc"): that becomes
    /// [`HypervisorError::GuestRefused`], so a command disabled in the guest is told
    /// from an agent that is not there.
    fn agent_call<T>(
        &self,
        id: &DomainId,
        command: &'static str,
        json: &str,
        timeout: Duration,
        retry: Retry,
        parse: impl Fn(&str) -> Result<T, qemu_json::ReplyError>,
    ) -> Result<T, HypervisorError> {
        let timeout_secs = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        self.inner.call(retry, |connect| {
            let domain = lookup(connect, id)?;
            let reply = domain
                .qemu_agent_command(json, timeout_secs, 0)
                .map_err(|error| {
                    let message = error.message();
                    match message.split_once("unable to execute QEMU agent command") {
                        Some((_, rest)) => {
                            let desc = rest.split_once(": ").map_or(rest, |(_, desc)| desc);
                            HypervisorError::guest_refused(id, command, "", desc)
                        }
                        None => domain_error("call the guest agent", id, error),
                    }
                })?;
            parse(&reply).map_err(|error| domain_error("read a guest agent reply", id, error))
        })
    }
}

/// The libvirt transport of [`guest_exec`]: one `virDomainQemuAgentCommand` per
/// command; an error answer of the agent is an error naming the action.
struct ExecTransport<'a> {
    hypervisor: &'a LibvirtHypervisor,
    id: &'a DomainId,
}

impl AgentTransport for ExecTransport<'_> {
    fn send(
        &mut self,
        command: &'static str,
        arguments: serde_json::Value,
        timeout: Duration,
        action: &'static str,
        idempotent: bool,
    ) -> Result<AgentReply, HypervisorError> {
        let json = serde_json::json!({ "execute": command, "arguments": arguments }).to_string();
        let timeout_secs = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        let retry = if idempotent {
            Retry::OnceIfConnectionDied
        } else {
            Retry::Never
        };
        let id = self.id;
        let reply = self.hypervisor.inner.call(retry, |connect| {
            lookup(connect, id)?
                .qemu_agent_command(&json, timeout_secs, 0)
                .map_err(|error| domain_error(action, id, error))
        })?;
        if reply.len() > MAX_AGENT_REPLY_BYTES {
            return Err(domain_error(
                action,
                id,
                ReplyError::TooLarge {
                    size: reply.len(),
                    limit: MAX_AGENT_REPLY_BYTES,
                },
            ));
        }
        Ok(AgentReply::Text(reply))
    }
}

impl Hypervisor for LibvirtHypervisor {
    fn backend(&self) -> &'static str {
        "libvirt"
    }

    fn domains(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        self.inner.call(Retry::OnceIfConnectionDied, |connect| {
            // One call for all domains, active or not; state needs no job (NOWAIT anyway).
            let records = ffi::all_domain_stats(
                connect,
                sys::VIR_DOMAIN_STATS_STATE,
                sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
            )
            .map_err(|error| call_error("list domains", error))?;
            Ok(records
                .into_iter()
                .map(|record| DomainInfo {
                    state: params_state(&record.params),
                    id: record.id,
                })
                .collect())
        })
    }

    fn balloon_samples_of(
        &self,
        ids: &[DomainId],
    ) -> Result<Vec<(DomainId, BalloonSample)>, HypervisorError> {
        // One `virDomainListGetStats` for the domains named (libvirtd asks each QEMU, so
        // a few cost a few); one gone meanwhile is left out, the full poll sees it go.
        // The listing for the full poll's gone-detection is not touched.
        self.inner.call(Retry::OnceIfConnectionDied, |connect| {
            let domains: Vec<Domain> = ids
                .iter()
                .filter_map(|id| connect.lookup_domain_by_uuid_string(&id.uuid).ok())
                .collect();
            let records = ffi::domain_list_stats(
                &domains,
                sys::VIR_DOMAIN_STATS_BALLOON,
                sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
            )
            .map_err(|error| call_error("read balloon stats", error))?;
            Ok(records
                .into_iter()
                .map(|record| {
                    let sample = params::balloon_sample(&record.params);
                    (record.id, sample)
                })
                .collect())
        })
    }

    fn balloon_samples(&self) -> Result<Vec<(DomainId, BalloonSample)>, HypervisorError> {
        let previous = std::mem::take(&mut *lock(&self.inner.listed));
        let samples = self.inner.call(Retry::OnceIfConnectionDied, |connect| {
            let records = ffi::all_domain_stats(
                connect,
                sys::VIR_DOMAIN_STATS_BALLOON,
                sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
                    | sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
            )
            .map_err(|error| call_error("read balloon stats", error))?;
            let listed: Vec<(DomainId, BalloonSample)> = records
                .into_iter()
                .map(|record| {
                    let sample = params::balloon_sample(&record.params);
                    (record.id, sample)
                })
                .collect();
            let missing = listing::missing_from(&previous, &listed);
            let mut samples = listing::keep_active(listed, missing, |id| {
                connect
                    .lookup_domain_by_uuid_string(&id.uuid)
                    .and_then(|domain| domain.is_active())
                    .unwrap_or(false)
            });
            let with_virtio_mem = {
                let mut known = lock(&self.inner.virtio_mem_domains);
                // Domains that are gone are forgotten (a new start reads the XML again).
                known.retain(|uuid| samples.iter().any(|(id, _)| id.uuid == *uuid));
                known.clone()
            };
            for (id, sample) in samples
                .iter_mut()
                .filter(|(id, _)| with_virtio_mem.contains(&id.uuid))
            {
                match live_virtio_mem(connect, id) {
                    Ok(devices) => {
                        sample.maximum_kib =
                            virtio_mem::balloon_maximum(sample.maximum_kib, &devices);
                        sample.virtio_mem = devices;
                    }
                    Err(error) => {
                        tracing::debug!(domain = %id.uuid, %error, "No virtio-mem figures this poll.")
                    }
                }
            }
            Ok(samples)
        });
        match &samples {
            Ok(samples) => {
                *lock(&self.inner.listed) = samples.iter().map(|(id, _)| id.clone()).collect();
            }
            // Kept for the next poll's comparison.
            Err(_) => *lock(&self.inner.listed) = previous,
        }
        samples
    }

    fn guest_counters(&self, id: &DomainId) -> Result<Option<GuestCounters>, HypervisorError> {
        let limit = self.inner.config.max_monitor_reply_bytes;
        self.inner.call(Retry::OnceIfConnectionDied, |connect| {
            let domain = lookup(connect, id)?;
            let reply = domain
                .qemu_monitor_command(qemu_json::QOM_GET_GUEST_STATS, 0)
                .map_err(|error| domain_error("read guest stats", id, error))?;
            qemu_json::parse_guest_counters(&reply, limit)
                .map_err(|error| domain_error("read guest stats", id, error))
        })
    }

    fn domain_config(&self, id: &DomainId) -> Result<DomainConfig, HypervisorError> {
        self.inner.call(Retry::OnceIfConnectionDied, |connect| {
            let xml = lookup(connect, id)?
                .xml_desc(0)
                .map_err(|error| domain_error("read the domain XML", id, error))?;
            let config = parse_domain_config(&xml)
                .map_err(|error| domain_error("parse the domain XML", id, error))?;
            let mut with_virtio_mem = lock(&self.inner.virtio_mem_domains);
            if config.virtio_mem.is_empty() {
                with_virtio_mem.remove(&id.uuid);
            } else {
                with_virtio_mem.insert(id.uuid.clone());
            }
            Ok(config)
        })
    }

    fn guest_exec(
        &self,
        id: &DomainId,
        path: &str,
        args: &[&str],
        timeout: Duration,
        max_output_bytes: usize,
    ) -> Result<ExecOutput, HypervisorError> {
        let mut transport = ExecTransport {
            hypervisor: self,
            id,
        };
        guest_exec::run(&mut transport, id, path, args, timeout, max_output_bytes)
    }

    fn guest_file_open(
        &self,
        id: &DomainId,
        path: &str,
        timeout: Duration,
    ) -> Result<i64, HypervisorError> {
        // Opening is not idempotent (a handle per call): never retried.
        let answer = self.agent_call(
            id,
            "guest-file-open",
            &qemu_json::guest_file_open_command(path),
            timeout,
            Retry::Never,
            |reply| qemu_json::parse_file_open(reply, MAX_AGENT_REPLY_BYTES),
        )?;
        answer.map_err(|(class, desc)| {
            HypervisorError::guest_refused(id, "guest-file-open", &class, &desc)
        })
    }

    fn guest_file_read(
        &self,
        id: &DomainId,
        handle: i64,
        count: usize,
        timeout: Duration,
    ) -> Result<FileChunk, HypervisorError> {
        // A read moves the file position: never retried.
        let answer = self.agent_call(
            id,
            "guest-file-read",
            &qemu_json::guest_file_read_command(handle, count),
            timeout,
            Retry::Never,
            |reply| qemu_json::parse_file_read(reply, MAX_AGENT_REPLY_BYTES, count),
        )?;
        answer.map_err(|(class, desc)| {
            HypervisorError::guest_refused(id, "guest-file-read", &class, &desc)
        })
    }

    fn guest_file_close(
        &self,
        id: &DomainId,
        handle: i64,
        timeout: Duration,
    ) -> Result<(), HypervisorError> {
        let answer = self.agent_call(
            id,
            "guest-file-close",
            &qemu_json::guest_file_close_command(handle),
            timeout,
            Retry::OnceIfConnectionDied,
            |reply| qemu_json::parse_file_close(reply, MAX_AGENT_REPLY_BYTES),
        )?;
        answer.map_err(|(class, desc)| {
            HypervisorError::guest_refused(id, "guest-file-close", &class, &desc)
        })
    }

    /// Changes the balloon stats period of a running domain (live only, like
    /// `virsh dommemstat --period N --live`); 0 stops the guest's reports.
    fn set_memory_stats_period(
        &self,
        id: &DomainId,
        period_secs: u32,
    ) -> Result<(), HypervisorError> {
        let period = i32::try_from(period_secs).unwrap_or(i32::MAX);
        self.inner.call(Retry::OnceIfConnectionDied, |connect| {
            let domain = lookup(connect, id)?;
            domain
                .set_memory_stats_period(period, sys::VIR_DOMAIN_AFFECT_LIVE)
                .map_err(|error| domain_error("set the memory stats period", id, error))
        })
    }

    fn set_balloon_target(&self, id: &DomainId, target_kib: u64) -> Result<(), HypervisorError> {
        self.inner.call(Retry::OnceIfConnectionDied, |connect| {
            let domain = lookup(connect, id)?;
            domain
                .set_memory_flags(target_kib, sys::VIR_DOMAIN_AFFECT_LIVE)
                .map_err(|error| domain_error("set the balloon target", id, error))
        })
    }

    /// From libvirt's pid file, checked against the process's `-uuid` (local
    /// `qemu:///system` only; other URIs have no pid file here).
    fn qemu_pid(&self, id: &DomainId) -> Option<u32> {
        if !pid::is_local_qemu_system(&self.inner.config.uri) {
            return None;
        }
        pid::qemu_pid(
            std::path::Path::new(pid::SYSTEM_RUN_DIR),
            std::path::Path::new("/proc"),
            id,
        )
    }

    fn subscribe(&self, sink: Sender<DomainEvent>) -> Result<(), HypervisorError> {
        let start_watchdog = {
            let mut state = self.inner.lock();
            state.sink = Some(sink);
            // The next connection registers the callbacks for the new sink.
            state.connection = None;
            !std::mem::replace(&mut state.watchdog_started, true)
        };
        if start_watchdog {
            let weak = Arc::downgrade(&self.inner);
            std::thread::Builder::new()
                .name("libvirt-reconnect".to_owned())
                .spawn(move || run_watchdog(weak))
                .map_err(|error| HypervisorError::Call {
                    action: "start the libvirt reconnect thread",
                    source: error.into(),
                })?;
        }
        self.inner.connection().map(drop)
    }
}

/// The virtio-mem devices of a running domain, from its live XML (`<current>` is
/// what the guest has plugged).
fn live_virtio_mem(
    connect: &Connect,
    id: &DomainId,
) -> Result<Vec<ballast_model::VirtioMemDevice>, HypervisorError> {
    let xml = lookup(connect, id)?
        .xml_desc(0)
        .map_err(|error| domain_error("read the domain XML", id, error))?;
    parse_domain_config(&xml)
        .map(|config| config.virtio_mem)
        .map_err(|error| domain_error("parse the domain XML", id, error))
}

fn params_state(params: &[(String, ffi::ParamValue)]) -> DomainState {
    params::domain_state(params).unwrap_or(DomainState::Other)
}
