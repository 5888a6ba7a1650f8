//! An in-memory hypervisor for unit tests: domains, samples and guest output set by the test.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    BalloonSample, DomainConfig, DomainId, DomainInfo, DomainState, ExecOutput, GuestCounters,
    Hypervisor, HypervisorError,
};

/// One fake domain.
#[derive(Debug, Clone, Default)]
pub struct FakeDomain {
    pub sample: BalloonSample,
    pub counters: Option<GuestCounters>,
    pub config: DomainConfig,
    /// What `dmesg` run through the guest agent prints; None = no guest agent.
    pub dmesg: Option<Vec<u8>>,
    pub running: bool,
}

/// A hypervisor whose state the test sets.
#[derive(Debug, Default)]
pub struct FakeHypervisor {
    domains: Mutex<BTreeMap<DomainId, FakeDomain>>,
    /// Per domain uuid: the next guest_exec says it started, then waits to be released.
    exec_gates: Mutex<BTreeMap<String, FakeGate>>,
    /// Per domain uuid: how many `guest_exec` calls reached the fake.
    exec_calls: Mutex<BTreeMap<String, u32>>,
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

    /// Makes the next `guest_exec` on `id` block (a guest agent that does not
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

impl Hypervisor for FakeHypervisor {
    fn backend(&self) -> &'static str {
        "fake"
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
        *self
            .exec_calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id.uuid.clone())
            .or_default() += 1;
        let gate = self
            .exec_gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id.uuid);
        if let Some((entered, release)) = gate {
            // The test may have stopped listening; the call still waits for release.
            let _ = entered.send(());
            let _ = release.recv();
        }
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
}
