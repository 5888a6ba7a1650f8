//! An in-memory hypervisor for unit tests: domains, samples and guest output set by the test.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    BalloonSample, DomainConfig, DomainId, DomainInfo, DomainState, ExecOutput, FileChunk,
    GuestCounters, Hypervisor, HypervisorError,
};

/// One fake domain.
#[derive(Debug, Clone, Default)]
pub struct FakeDomain {
    pub sample: BalloonSample,
    pub counters: Option<GuestCounters>,
    pub config: DomainConfig,
    /// The guest kernel log: what `dmesg` run through the guest agent prints and
    /// what reads of `/dev/kmsg` return (with qemu-ga's `fread` semantics: a read
    /// past the end fails and its bytes are gone); None = no guest agent.
    pub dmesg: Option<Vec<u8>>,
    /// The guest agent's file API is disabled (`qemu-ga --block-rpcs`).
    pub file_api_disabled: bool,
    /// The guest's `/proc/pressure/memory` (a regular file: short reads, `eof`);
    /// None = the guest kernel has no PSI. Needs a guest agent (`dmesg`).
    pub psi: Option<Vec<u8>>,
    pub running: bool,
    /// `set_balloon_target` fails with this text (a hypervisor refusing the change).
    pub balloon_refusal: Option<String>,
}

/// A hypervisor whose state the test sets.
#[derive(Debug, Default)]
pub struct FakeHypervisor {
    domains: Mutex<BTreeMap<DomainId, FakeDomain>>,
    /// Per domain uuid: the next guest_exec says it started, then waits to be released.
    exec_gates: Mutex<BTreeMap<String, FakeGate>>,
    /// Per domain uuid: how many `guest_exec` calls reached the fake.
    exec_calls: Mutex<BTreeMap<String, u32>>,
    /// Per domain uuid: how many `guest_file_*` calls reached the fake.
    file_calls: Mutex<BTreeMap<String, u32>>,
    /// Open file handles: handle -> (domain uuid, read position, the PSI file).
    handles: Mutex<BTreeMap<i64, (String, usize, bool)>>,
    /// Every `set_balloon_target` call, in order: (domain uuid, target KiB).
    balloon_targets: Mutex<Vec<(String, u64)>>,
    /// Every `raise_balloon_floor` call, in order: (domain uuid, floor KiB).
    floor_raises: Mutex<Vec<(String, u64)>>,
    /// How long each floor raise takes (a slow `qm set`).
    floor_raise_delay: Mutex<std::time::Duration>,
    /// The backend name it answers (`fake` unless a test needs another's behaviour).
    backend_name: Option<&'static str>,
}

/// The fake's end of an [`ExecGate`]: "started" out, "go on" in.
type FakeGate = (Sender<()>, Receiver<()>);

/// The test's end of [`FakeHypervisor::block_guest_exec`].
#[derive(Debug)]
pub struct ExecGate {
    /// Receives once when the blocked call has started.
    pub entered: Receiver<()>,
    /// Send (or drop) to let the blocked call go on.
    pub release: Sender<()>,
}

impl FakeHypervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a domain.
    pub fn set(&self, id: DomainId, domain: FakeDomain) {
        self.lock().insert(id, domain);
    }

    /// Changes one domain in place.
    pub fn update(&self, id: &DomainId, change: impl FnOnce(&mut FakeDomain)) {
        if let Some(domain) = self.lock().get_mut(id) {
            change(domain);
        }
    }

    /// Makes the next `guest_exec` or `guest_file_open` on `id` block (a guest agent that does not
    /// answer) until the test releases it through the returned gate.
    pub fn block_guest_exec(&self, id: &DomainId) -> ExecGate {
        let (entered_sender, entered) = std::sync::mpsc::channel();
        let (release, release_receiver) = std::sync::mpsc::channel();
        self.exec_gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.uuid.clone(), (entered_sender, release_receiver));
        ExecGate { entered, release }
    }

    /// How many `guest_exec` calls reached `id` so far.
    pub fn guest_exec_calls(&self, id: &DomainId) -> u32 {
        self.exec_calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id.uuid)
            .copied()
            .unwrap_or(0)
    }

    /// How many `guest_file_*` calls reached `id` so far.
    pub fn guest_file_calls(&self, id: &DomainId) -> u32 {
        count_of(&self.file_calls, id)
    }

    /// Every guest agent call that reached `id` so far (exec and file API).
    pub fn guest_agent_calls(&self, id: &DomainId) -> u32 {
        self.guest_exec_calls(id) + self.guest_file_calls(id)
    }

    /// A fake that names itself `backend` (e.g. `proxmox`, for what the agent only does
    /// there).
    pub fn named(backend: &'static str) -> Self {
        Self {
            backend_name: Some(backend),
            ..Self::default()
        }
    }

    /// The floors `raise_balloon_floor` was asked to set on `id`, in order.
    /// Makes every floor raise take `delay` (as `qm set` waiting for the cluster's lock).
    pub fn set_floor_raise_delay(&self, delay: std::time::Duration) {
        *lock(&self.floor_raise_delay) = delay;
    }

    pub fn floor_raise_calls(&self, id: &DomainId) -> Vec<u64> {
        lock(&self.floor_raises)
            .iter()
            .filter(|(uuid, _)| *uuid == id.uuid)
            .map(|(_, floor)| *floor)
            .collect()
    }

    /// The balloon targets `set_balloon_target` was asked to set on `id`, in order.
    pub fn balloon_target_calls(&self, id: &DomainId) -> Vec<u64> {
        lock(&self.balloon_targets)
            .iter()
            .filter(|(uuid, _)| *uuid == id.uuid)
            .map(|(_, target)| *target)
            .collect()
    }

    /// File handles still open in the fake guest agent.
    pub fn open_handles(&self) -> usize {
        lock(&self.handles).len()
    }

    fn wait_at_gate(&self, id: &DomainId) {
        let gate = lock(&self.exec_gates).remove(&id.uuid);
        if let Some((entered, release)) = gate {
            // The test may have stopped listening; the call still waits for release.
            let _ = entered.send(());
            let _ = release.recv();
        }
    }

    fn agent_log(&self, id: &DomainId) -> Result<FakeDomain, HypervisorError> {
        let domain = self.get(id)?;
        if domain.dmesg.is_none() {
            return Err(HypervisorError::Unavailable {
                domain: id.name.clone(),
                what: "guest agent",
            });
        }
        Ok(domain)
    }

    pub fn remove(&self, id: &DomainId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<DomainId, FakeDomain>> {
        // A panicking test thread poisons the lock; the data is still usable for others.
        self.domains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &DomainId) -> Result<FakeDomain, HypervisorError> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| HypervisorError::Unavailable {
                domain: id.name.clone(),
                what: "definition",
            })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn count_of(counts: &Mutex<BTreeMap<String, u32>>, id: &DomainId) -> u32 {
    lock(counts).get(&id.uuid).copied().unwrap_or(0)
}

fn count_call(counts: &Mutex<BTreeMap<String, u32>>, id: &DomainId) {
    *lock(counts).entry(id.uuid.clone()).or_default() += 1;
}

impl Hypervisor for FakeHypervisor {
    fn backend(&self) -> &'static str {
        self.backend_name.unwrap_or("fake")
    }

    /// Records the call (`proxmox_raise_floor` tests); the fake domain's config floor
    /// follows.
    fn raise_balloon_floor(&self, id: &DomainId, floor_kib: u64) -> Result<(), HypervisorError> {
        let delay = *lock(&self.floor_raise_delay);
        std::thread::sleep(delay);
        lock(&self.floor_raises).push((id.uuid.clone(), floor_kib));
        if let Some(domain) = self.lock().get_mut(id) {
            domain.config.current_memory_kib = Some(floor_kib);
        }
        Ok(())
    }

    fn domains(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        Ok(self
            .lock()
            .iter()
            .map(|(id, domain)| DomainInfo {
                id: id.clone(),
                state: if domain.running {
                    DomainState::Running
                } else {
                    DomainState::ShutOff
                },
            })
            .collect())
    }

    fn balloon_samples(&self) -> Result<Vec<(DomainId, BalloonSample)>, HypervisorError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(_, domain)| domain.running)
            .map(|(id, domain)| (id.clone(), domain.sample.clone()))
            .collect())
    }

    fn guest_counters(&self, id: &DomainId) -> Result<Option<GuestCounters>, HypervisorError> {
        Ok(self.get(id)?.counters)
    }

    /// Records the call; unless the domain refuses, its balloon reaches the target at
    /// once (the guest answers before the next poll).
    fn set_balloon_target(&self, id: &DomainId, target_kib: u64) -> Result<(), HypervisorError> {
        lock(&self.balloon_targets).push((id.uuid.clone(), target_kib));
        let mut domains = self.lock();
        let domain = domains
            .get_mut(id)
            .ok_or_else(|| HypervisorError::Unavailable {
                domain: id.name.clone(),
                what: "fake domain",
            })?;
        if let Some(refusal) = &domain.balloon_refusal {
            return Err(HypervisorError::Domain {
                action: "set the balloon target",
                domain: id.name.clone(),
                source: refusal.clone().into(),
            });
        }
        domain.sample.actual_kib = Some(target_kib);
        Ok(())
    }

    fn domain_config(&self, id: &DomainId) -> Result<DomainConfig, HypervisorError> {
        Ok(self.get(id)?.config)
    }

    fn guest_exec(
        &self,
        id: &DomainId,
        _path: &str,
        _args: &[&str],
        _timeout: Duration,
        max_output_bytes: usize,
    ) -> Result<ExecOutput, HypervisorError> {
        count_call(&self.exec_calls, id);
        self.wait_at_gate(id);
        let Some(mut stdout) = self.get(id)?.dmesg else {
            return Err(HypervisorError::Unavailable {
                domain: id.name.clone(),
                what: "guest agent",
            });
        };
        let truncated = stdout.len() > max_output_bytes;
        stdout.truncate(max_output_bytes);
        Ok(ExecOutput {
            exit_code: Some(0),
            stdout,
            truncated,
        })
    }

    fn guest_file_open(
        &self,
        id: &DomainId,
        path: &str,
        _timeout: Duration,
    ) -> Result<i64, HypervisorError> {
        count_call(&self.file_calls, id);
        self.wait_at_gate(id);
        let domain = self.agent_log(id)?;
        if domain.file_api_disabled {
            return Err(HypervisorError::guest_refused(
                id,
                "guest-file-open",
                "GenericError",
                "The command guest-file-open has been disabled for this instance",
            ));
        }
        let psi = path == "/proc/pressure/memory" && domain.psi.is_some();
        if path != "/dev/kmsg" && !psi {
            return Err(HypervisorError::guest_refused(
                id,
                "guest-file-open",
                "GenericError",
                &format!("failed to open file '{path}': No such file or directory"),
            ));
        }
        let mut handles = lock(&self.handles);
        let handle = handles.keys().next_back().map_or(1000, |last| last + 1);
        handles.insert(handle, (id.uuid.clone(), 0, psi));
        Ok(handle)
    }

    fn guest_file_read(
        &self,
        id: &DomainId,
        handle: i64,
        count: usize,
        _timeout: Duration,
    ) -> Result<FileChunk, HypervisorError> {
        count_call(&self.file_calls, id);
        let domain = self.agent_log(id)?;
        let mut handles = lock(&self.handles);
        let Some((_, position, psi)) = handles
            .get_mut(&handle)
            .filter(|(uuid, _, _)| *uuid == id.uuid)
        else {
            return Err(HypervisorError::guest_refused(
                id,
                "guest-file-read",
                "GenericError",
                &format!("handle '{handle}' has not been found"),
            ));
        };
        if *psi {
            let file = domain.psi.unwrap_or_default();
            let start = (*position).min(file.len());
            let end = start.saturating_add(count).min(file.len());
            *position = end;
            return Ok(FileChunk {
                data: file[start..end].to_vec(),
                eof: end == file.len(),
            });
        }
        let log = domain.dmesg.unwrap_or_default();
        // qemu-ga fread()s `count` bytes of a non-blocking /dev/kmsg: a read that
        // reaches the end fails with EAGAIN, and what it had read is dropped.
        let end = position.saturating_add(count);
        if end > log.len() {
            *position = log.len();
            return Err(HypervisorError::guest_refused(
                id,
                "guest-file-read",
                "GenericError",
                "failed to read file: Resource temporarily unavailable",
            ));
        }
        let data = log[*position..end].to_vec();
        *position = end;
        Ok(FileChunk { data, eof: false })
    }

    fn guest_file_close(
        &self,
        id: &DomainId,
        handle: i64,
        _timeout: Duration,
    ) -> Result<(), HypervisorError> {
        count_call(&self.file_calls, id);
        lock(&self.handles).remove(&handle);
        Ok(())
    }
}
