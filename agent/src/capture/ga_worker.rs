//! Guest agent calls off the monitor thread.
//!
//! A read of the guest's kernel log waits for the guest: a dead or hostile guest agent holds
//! the call for seconds (libvirt gives up on `guest-sync` after ~5 s, the agent's own
//! limit is `capture.agent_timeout`). The [`GuestAgentWorker`] runs these calls on a
//! small pool of threads sharing the agent's [`Hypervisor`] (libvirt's connection is
//! thread-safe, Proxmox's guest agent sockets are per VM), so the monitor thread keeps
//! polling and reading serial logs meanwhile:
//! - requests go through a bounded queue; a full queue refuses (the caller retries
//!   on a later tick), and a VM has at most one call queued or running;
//! - results come back through a channel the monitor drains every tick, and are fed
//!   to [`super::Capture::finish_guest_agent`] there (cursor, backoff, dedupe and
//!   flood control stay on the monitor thread);
//! - [`GuestAgentWorker::shutdown`] waits a bounded time for running calls.
//!
//! Besides kernel log fetches the threads read the guest's PSI file
//! ([`GuestAgentWorker::submit_psi`], `pressure.guest_psi`): the same queue and the
//! same one-call-per-VM rule, its results taken with [`GuestAgentWorker::take_psi`].

use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::guest_agent::run_kernel_log;
use super::{CaptureSettings, FetchReason};
use crate::hypervisor::{DomainId, Hypervisor, HypervisorError};
use crate::pressure::psi::{self, GuestPsi, PsiReadError};

/// One call asked of the worker.
#[derive(Debug)]
struct Request {
    id: DomainId,
    job: Job,
}

#[derive(Debug, Clone, Copy)]
enum Job {
    KernelLog {
        reason: FetchReason,
        /// `guest-exec dmesg` may run if the guest refuses the file API.
        allow_exec: bool,
    },
    Psi,
}

/// What a thread hands back.
#[derive(Debug)]
enum Finished {
    KernelLog(FetchDone),
    Psi(PsiDone),
}

impl Finished {
    fn uuid(&self) -> &str {
        match self {
            Finished::KernelLog(done) => &done.id.uuid,
            Finished::Psi(done) => &done.id.uuid,
        }
    }
}

/// One read of a guest's PSI file done by the worker.
#[derive(Debug)]
pub struct PsiDone {
    pub id: DomainId,
    pub output: Result<GuestPsi, PsiReadError>,
    pub took: Duration,
}

/// One fetch done by the worker.
#[derive(Debug)]
pub struct FetchDone {
    pub id: DomainId,
    pub reason: FetchReason,
    /// What [`run_kernel_log`] returned.
    pub output: Result<Vec<u8>, HypervisorError>,
    /// How long the call took.
    pub took: Duration,
}

/// What [`GuestAgentWorker::submit`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    Queued,
    /// A call for this VM is already queued or running.
    InFlight,
    /// The queue is full (or the worker is gone): try again later.
    Refused,
}

/// The pool of guest agent threads and its two channels.
#[derive(Debug)]
pub struct GuestAgentWorker {
    requests: Option<SyncSender<Request>>,
    results: Receiver<Finished>,
    threads: Vec<JoinHandle<()>>,
    in_flight: BTreeSet<String>,
    /// PSI reads taken off the channel by [`Self::finished`], for [`Self::take_psi`].
    psi_done: Vec<PsiDone>,
}

impl GuestAgentWorker {
    /// Starts `threads` threads (at least one) taking requests from a queue of
    /// `queue` places; each call uses `settings`' time limit and output cap.
    pub fn start(
        hypervisor: Arc<dyn Hypervisor>,
        settings: &CaptureSettings,
        threads: usize,
        queue: usize,
    ) -> Result<Self, std::io::Error> {
        let (request_sender, request_receiver) = std::sync::mpsc::sync_channel(queue);
        let (result_sender, results) = std::sync::mpsc::channel();
        let request_receiver = Arc::new(Mutex::new(request_receiver));
        let mut worker = GuestAgentWorker {
            requests: Some(request_sender),
            results,
            threads: Vec::new(),
            in_flight: BTreeSet::new(),
            psi_done: Vec::new(),
        };
        for index in 0..threads.max(1) {
            let hypervisor = Arc::clone(&hypervisor);
            let requests = Arc::clone(&request_receiver);
            let results = result_sender.clone();
            let settings = settings.clone();
            let thread = std::thread::Builder::new()
                .name(format!("guest-agent-{index}"))
                .spawn(move || serve(hypervisor.as_ref(), &requests, &results, &settings))?;
            worker.threads.push(thread);
        }
        Ok(worker)
    }

    /// Whether fewer calls are queued or running than there are threads: a call
    /// handed out now starts at once.
    pub fn has_idle_thread(&self) -> bool {
        self.in_flight.len() < self.threads.len()
    }

    /// Whether a call for `uuid` is queued or running.
    pub fn in_flight(&self, uuid: &str) -> bool {
        self.in_flight.contains(uuid)
    }

    /// Queues a fetch of `id`'s kernel log; never blocks. `allow_exec`: see
    /// [`run_kernel_log`].
    pub fn submit(&mut self, id: &DomainId, reason: FetchReason, allow_exec: bool) -> Submitted {
        self.queue(id, Job::KernelLog { reason, allow_exec })
    }

    /// Queues a read of `id`'s `/proc/pressure/memory` through the file API; never
    /// blocks. Its result comes from [`Self::take_psi`].
    pub fn submit_psi(&mut self, id: &DomainId) -> Submitted {
        self.queue(id, Job::Psi)
    }

    fn queue(&mut self, id: &DomainId, job: Job) -> Submitted {
        if self.in_flight.contains(&id.uuid) {
            return Submitted::InFlight;
        }
        let Some(requests) = self.requests.as_ref() else {
            return Submitted::Refused;
        };
        let request = Request {
            id: id.clone(),
            job,
        };
        match requests.try_send(request) {
            Ok(()) => {
                self.in_flight.insert(id.uuid.clone());
                Submitted::Queued
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Submitted::Refused,
        }
    }

    /// The kernel log fetches finished since the last call; never blocks. PSI reads
    /// that finished meanwhile wait for [`Self::take_psi`].
    pub fn finished(&mut self) -> Vec<FetchDone> {
        let mut done = Vec::new();
        while let Ok(result) = self.results.try_recv() {
            self.in_flight.remove(result.uuid());
            match result {
                Finished::KernelLog(fetch) => done.push(fetch),
                Finished::Psi(read) => self.psi_done.push(read),
            }
        }
        done
    }

    /// The PSI reads finished (taken off the channel by [`Self::finished`]).
    pub fn take_psi(&mut self) -> Vec<PsiDone> {
        std::mem::take(&mut self.psi_done)
    }

    /// Stops taking requests, waits up to `bound` for the calls under way, and
    /// returns what finished; threads still waiting for a guest are left to end on
    /// their own (their results are dropped: the next start fetches again and the
    /// persisted dedupe keys drop what was already sent).
    pub fn shutdown(mut self, bound: Duration) -> Vec<FetchDone> {
        self.requests = None;
        let deadline = Instant::now() + bound;
        while self.threads.iter().any(|thread| !thread.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (finished, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.threads)
            .into_iter()
            .partition(JoinHandle::is_finished);
        for thread in finished {
            if thread.join().is_err() {
                tracing::warn!("A guest agent thread panicked.");
            }
        }
        if !running.is_empty() {
            tracing::info!(
                threads = running.len(),
                waited_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                "Guest agent calls still waiting for their guests at exit; not waiting longer."
            );
        }
        self.finished()
    }
}

/// One worker thread: takes requests until the queue closes.
fn serve(
    hypervisor: &dyn Hypervisor,
    requests: &Mutex<Receiver<Request>>,
    results: &Sender<Finished>,
    settings: &CaptureSettings,
) {
    loop {
        // One thread waits on the queue at a time; the others wait for the lock.
        let request = {
            let receiver = requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            receiver.recv()
        };
        let Ok(Request { id, job }) = request else {
            return;
        };
        let span = id.span();
        let started = Instant::now();
        let done = match job {
            Job::KernelLog { reason, allow_exec } => {
                let output =
                    span.in_scope(|| run_kernel_log(hypervisor, &id, settings, allow_exec));
                Finished::KernelLog(FetchDone {
                    id,
                    reason,
                    output,
                    took: started.elapsed(),
                })
            }
            Job::Psi => {
                let output = span.in_scope(|| psi::read(hypervisor, &id, settings.agent_timeout));
                Finished::Psi(PsiDone {
                    id,
                    output,
                    took: started.elapsed(),
                })
            }
        };
        if results.send(done).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};

    fn id(name: &str) -> DomainId {
        DomainId {
            uuid: format!("uuid-{name}"),
            name: name.to_string(),
        }
    }

    fn wait_finished(worker: &mut GuestAgentWorker, count: usize) -> Vec<FetchDone> {
        let mut done = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.len() < count && Instant::now() < deadline {
            done.extend(worker.finished());
            std::thread::sleep(Duration::from_millis(10));
        }
        done
    }

    #[test]
    fn one_call_per_vm_a_bounded_queue_and_results_by_channel() {
        let hypervisor = Arc::new(FakeHypervisor::new());
        let (a, b) = (id("a"), id("b"));
        let gate = hypervisor.block_guest_exec(&a);
        hypervisor.set(
            a.clone(),
            FakeDomain {
                running: true,
                dmesg: Some(b"[    1.000000] a\n".to_vec()),
                ..FakeDomain::default()
            },
        );
        hypervisor.set(
            b.clone(),
            FakeDomain {
                running: true,
                ..FakeDomain::default()
            },
        );
        let settings = CaptureSettings::new(std::env::temp_dir());
        let mut worker = GuestAgentWorker::start(hypervisor, &settings, 1, 1).expect("start");
        assert!(worker.has_idle_thread());
        assert_eq!(
            worker.submit(&a, FetchReason::Periodic, false),
            Submitted::Queued
        );
        assert_eq!(
            worker.submit(&a, FetchReason::OomKillCounter, false),
            Submitted::InFlight
        );
        gate.entered.recv().expect("A's call started");
        assert!(
            !worker.has_idle_thread(),
            "a PSI read would wait: not handed out"
        );
        // The only thread is held by A: B queues, C finds the queue full.
        assert_eq!(
            worker.submit(&b, FetchReason::Periodic, false),
            Submitted::Queued
        );
        assert_eq!(
            worker.submit(&id("c"), FetchReason::Periodic, false),
            Submitted::Refused
        );
        assert!(worker.finished().is_empty());
        gate.release.send(()).expect("release A");
        let done = wait_finished(&mut worker, 2);
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(done[0].output.is_ok(), "{:?}", done[0]);
        assert_eq!(done[0].id, a);
        assert!(done[1].output.is_err(), "B has no guest agent");
        assert!(!worker.in_flight(&a.uuid) && !worker.in_flight(&b.uuid));
        assert!(worker.shutdown(Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn shutdown_does_not_wait_past_its_bound_for_a_stuck_call() {
        let hypervisor = Arc::new(FakeHypervisor::new());
        let a = id("a");
        let gate = hypervisor.block_guest_exec(&a);
        let settings = CaptureSettings::new(std::env::temp_dir());
        let mut worker = GuestAgentWorker::start(hypervisor, &settings, 2, 4).expect("start");
        assert_eq!(
            worker.submit(&a, FetchReason::Periodic, false),
            Submitted::Queued
        );
        gate.entered.recv().expect("A's call started");
        // Returns although A's call never ends before the gate opens.
        assert!(worker.shutdown(Duration::from_millis(200)).is_empty());
        assert!(gate.release.send(()).is_ok(), "A's call was still waiting");
    }
}
