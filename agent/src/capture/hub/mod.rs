//! [`Capture`]: per-domain serial tailers and guest agent readers, joined by
//! dedupe, partial-report holding and flood control into [`CaptureEvent`]s.
//!
//! The caller (the agent's poll loop) drives it:
//! 1. [`Capture::poll_serial`] for each domain with a serial log, every poll;
//! 2. [`Capture::fetch_guest_agent`] (or its halves [`Capture::begin_guest_agent`]
//!    and [`Capture::finish_guest_agent`] around a call on another thread) when the
//!    balloon counters suggest an OOM,
//!    when [`SerialPoll::wants_guest_agent`] says a partial report waits for
//!    completion, and when [`Capture::guest_agent_due`] says the slow periodic
//!    check is due;
//! 3. [`Capture::release_held`] every poll (partial reports whose hold ran out);
//! 4. [`Capture::shutdown`] on exit (state files, held reports).
//!
//! Each report either path finds goes through `admit` (dedupe, hold), then the flood
//! control of its domain's state (`domain`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::dedupe::{self, Deduper};
use super::flood::{MinInterval, TokenBucket};
use super::guest_agent::{run_kernel_log, GuestAgentReader};
use super::serial::SerialTailer;
use super::state::{self, StateFile};
use super::{
    CaptureError, CaptureEvent, CaptureSettings, CaptureSource, FetchReason, NearMiss, NearMissKind,
};
use crate::hypervisor::{DomainId, Hypervisor, HypervisorError};

mod admit;
mod domain;

use domain::{gate, release_flood_summary, DomainCapture};

const DEDUPE_KIND: &str = "dedupe";

/// What one serial poll produced.
#[derive(Debug, Default)]
pub struct SerialPoll {
    pub events: Vec<CaptureEvent>,
    /// A partial report is held: fetch the guest kernel log to complete it.
    pub wants_guest_agent: bool,
}

/// Guest OOM capture for all domains of one agent.
#[derive(Debug)]
pub struct Capture {
    settings: CaptureSettings,
    /// Boxed values: B-tree nodes hold 11 slots, often half empty, so a ~1 KiB state
    /// inline would cost about twice its size per VM (measured with heaptrack).
    domains: BTreeMap<String, Box<DomainCapture>>,
    dedupe: Deduper,
    flood_suppressed_total: u64,
    /// Settled by [`Capture::forget`]; handed out by the next [`Capture::release_held`].
    gone_events: Vec<CaptureEvent>,
}

impl Capture {
    pub fn new(settings: CaptureSettings) -> Self {
        Capture {
            dedupe: Deduper::new(settings.dedupe_keys_per_domain),
            settings,
            domains: BTreeMap::new(),
            flood_suppressed_total: 0,
            gone_events: Vec::new(),
        }
    }

    pub fn settings(&self) -> &CaptureSettings {
        &self.settings
    }

    /// Whether `guest-exec dmesg` may run where the guest refuses the file API
    /// (`capture.guest_agent_exec`, applied live).
    pub fn set_agent_exec(&mut self, allow: bool) {
        self.settings.agent_exec = allow;
    }

    /// Reports dropped by flood control, all domains, since start.
    pub fn flood_suppressed_total(&self) -> u64 {
        self.flood_suppressed_total
    }

    /// Reads the domain's serial log (`DomainConfig::serial_log_path`).
    pub fn poll_serial(
        &mut self,
        id: &DomainId,
        serial_log_path: &Path,
        now: Instant,
    ) -> Result<SerialPoll, CaptureError> {
        self.domain(id, now)?;
        self.save_dedupe(id);
        let settings = &self.settings;
        let domain = self
            .domains
            .get_mut(&id.uuid)
            .expect("domain() inserted it");
        if domain
            .serial
            .as_ref()
            .is_none_or(|(path, _)| path != serial_log_path)
        {
            let tailer = SerialTailer::new(serial_log_path, &id.uuid, settings)?;
            domain.serial = Some((serial_log_path.to_owned(), tailer));
            domain.serial_read_at = None;
        }
        let (_, tailer) = domain.serial.as_mut().expect("set just above");
        let read_at = SystemTime::now();
        let output = tailer.poll(now)?;
        let printed_after = domain.serial_read_at.replace(read_at);
        let mut poll = SerialPoll::default();
        for puff in output.puffs {
            if domain.near_miss.allow(now) {
                poll.events.push(CaptureEvent::NearMiss(NearMiss {
                    domain: id.clone(),
                    kind: NearMissKind::OutOfPuff,
                    captured_at: SystemTime::now(),
                    line: puff.text,
                    suppressed_before: std::mem::take(&mut domain.near_miss.dropped),
                }));
            }
        }
        for detected in output.reports {
            self.found(
                id,
                CaptureSource::Serial,
                (detected.report, detected.raw, printed_after),
                now,
                &mut poll,
            );
        }
        Ok(poll)
    }

    /// The slow periodic guest agent check (every `interval`) is due for this domain.
    pub fn guest_agent_due(&self, id: &DomainId, now: Instant, interval: Duration) -> bool {
        self.domains
            .get(&id.uuid)
            .is_none_or(|domain| domain.agent.periodic_due(now, interval))
    }

    /// Whether this domain's guest agent answered the last kernel log fetch (None:
    /// not asked yet).
    pub fn guest_agent_answering(&self, uuid: &str) -> Option<bool> {
        self.domains
            .get(uuid)
            .and_then(|domain| domain.agent.answering())
    }

    /// Reads the guest kernel log through the guest agent (unless backing off
    /// after a failure) and returns the new events, on the calling thread.
    pub fn fetch_guest_agent(
        &mut self,
        hypervisor: &dyn Hypervisor,
        id: &DomainId,
        reason: FetchReason,
        now: Instant,
    ) -> Result<Vec<CaptureEvent>, CaptureError> {
        if !self.begin_guest_agent(id, reason, now)? {
            return Ok(Vec::new());
        }
        let output = run_kernel_log(hypervisor, id, &self.settings, self.settings.agent_exec);
        self.finish_guest_agent(id, output, now)
    }

    /// The first half of a fetch run elsewhere ([`super::ga_worker`]): false while
    /// the domain backs off after a failure (no call), true when the caller should
    /// run [`run_kernel_log`] and hand its result to [`Capture::finish_guest_agent`].
    pub fn begin_guest_agent(
        &mut self,
        id: &DomainId,
        reason: FetchReason,
        now: Instant,
    ) -> Result<bool, CaptureError> {
        self.domain(id, now)?;
        let domain = self
            .domains
            .get_mut(&id.uuid)
            .expect("domain() inserted it");
        let begun = domain.agent.begin(reason, now);
        if begun {
            domain.agent_begun_at = Some(SystemTime::now());
        }
        Ok(begun)
    }

    /// The second half: the new reports of the output (dedupe, holding and flood
    /// control as for the serial log), or the failure (the domain backs off).
    pub fn finish_guest_agent(
        &mut self,
        id: &DomainId,
        output: Result<Vec<u8>, HypervisorError>,
        now: Instant,
    ) -> Result<Vec<CaptureEvent>, CaptureError> {
        self.domain(id, now)?;
        // No saving here: in the same tick a serial poll of this domain may have handed
        // out events that are not stored yet. The next serial poll (or the shutdown) saves.
        let domain = self
            .domains
            .get_mut(&id.uuid)
            .expect("domain() inserted it");
        let read_at = domain.agent_begun_at.take();
        let printed_after = if output.is_ok() {
            std::mem::replace(&mut domain.agent_read_at, read_at)
        } else {
            domain.agent_read_at
        };
        let taken = domain.agent.finish(id, output, &self.settings, now)?;
        if taken.rebooted {
            tracing::info!(domain = %id.uuid, "Guest rebooted since the last kernel log read.");
        }
        let mut poll = SerialPoll::default();
        for found in taken.reports {
            self.found(
                id,
                CaptureSource::GuestAgent,
                (found.report, found.raw, printed_after),
                now,
                &mut poll,
            );
        }
        Ok(poll.events)
    }

    /// Emits held partial reports whose hold ran out, and the newest report a
    /// flood had dropped once its domain's bucket has a token again.
    pub fn release_held(&mut self, now: Instant) -> Vec<CaptureEvent> {
        let mut events = std::mem::take(&mut self.gone_events);
        for domain in self.domains.values_mut() {
            let (due, kept) = std::mem::take(&mut domain.held)
                .into_iter()
                .partition(|held| held.until <= now);
            domain.held = kept;
            for held in due {
                gate(
                    domain,
                    &mut self.flood_suppressed_total,
                    held.oom,
                    now,
                    &mut events,
                );
            }
            release_flood_summary(domain, now, &mut events);
        }
        events
    }

    /// Writes every state file and releases every held report (call on exit).
    pub fn shutdown(&mut self, now: Instant) -> (Vec<CaptureEvent>, Result<(), CaptureError>) {
        let far = now + self.settings.partial_hold;
        let events = self.release_held(far);
        let mut result = Ok(());
        let uuids: Vec<String> = self.domains.keys().cloned().collect();
        for uuid in uuids {
            if let Some(id) = self.domains.get(&uuid).map(|domain| domain.id.clone()) {
                self.save_dedupe(&id);
            }
            if let Some((_, tailer)) = self.domains.get_mut(&uuid).and_then(|d| d.serial.as_mut()) {
                if let Err(error) = tailer.persist(now) {
                    result = Err(error);
                }
            }
        }
        (events, result)
    }

    /// Drops a domain that is gone (its state files stay until `remove_state`).
    ///
    /// First its serial log is read to the end and every report in progress settled
    /// as it stands: a report the guest was writing when the VM was destroyed or died
    /// reached the log (whole lines written by virtlogd) and goes out, partial; held
    /// partial reports go out without waiting for a guest-agent copy that cannot come.
    /// These events leave with the next [`Capture::release_held`].
    pub fn forget(&mut self, uuid: &str) {
        if let Some(domain) = self.domains.get(uuid) {
            let id = domain.id.clone();
            let path = domain.serial.as_ref().map(|(path, _)| path.clone());
            // Far enough ahead that nothing still waits for more lines or a completion.
            let settle = Instant::now()
                + self.settings.headless_timeout
                + self.settings.grace
                + self.settings.partial_hold
                + Duration::from_secs(1);
            if let Some(path) = path {
                match self.poll_serial(&id, &path, settle) {
                    Ok(poll) => self.gone_events.extend(poll.events),
                    Err(error) => {
                        tracing::warn!(domain = %uuid, %error, "Failed to read the serial log of a VM that went away.");
                    }
                }
            }
            if let Some(domain) = self.domains.get_mut(uuid) {
                for held in std::mem::take(&mut domain.held) {
                    gate(
                        domain,
                        &mut self.flood_suppressed_total,
                        held.oom,
                        settle,
                        &mut self.gone_events,
                    );
                }
                release_flood_summary(domain, settle, &mut self.gone_events);
            }
        }
        self.domains.remove(uuid);
        self.dedupe.forget(uuid);
    }

    fn domain(&mut self, id: &DomainId, now: Instant) -> Result<(), CaptureError> {
        if !self.dedupe.knows(&id.uuid) {
            let path = state::state_path(&self.settings.state_dir, &id.uuid, DEDUPE_KIND);
            let records = state::load(&path, DEDUPE_KIND)?
                .map(|saved| {
                    saved
                        .records
                        .iter()
                        .filter_map(|line| dedupe::record_from_line(line))
                        .collect()
                })
                .unwrap_or_default();
            self.dedupe.load(&id.uuid, records);
        }
        if !self.domains.contains_key(&id.uuid) {
            self.domains.insert(
                id.uuid.clone(),
                Box::new(DomainCapture {
                    id: id.clone(),
                    serial: None,
                    agent: GuestAgentReader::new(),
                    bucket: TokenBucket::new(
                        self.settings.flood_burst,
                        self.settings.flood_refill,
                        now,
                    ),
                    suppressed: 0,
                    last_suppressed: None,
                    near_miss: MinInterval::new(self.settings.near_miss_interval),
                    held: Vec::new(),
                    dedupe_dirty: false,
                    serial_read_at: None,
                    agent_begun_at: None,
                    agent_read_at: None,
                }),
            );
        }
        Ok(())
    }

    /// Saves the keys of the reports handed out before this tick. Not sooner: the
    /// caller stores a tick's events before the next tick, and a key saved before its
    /// event is stored would turn the report into a "duplicate" after a crash.
    fn save_dedupe(&mut self, id: &DomainId) {
        if let Err(error) = self.persist_dedupe(id) {
            // The keys are saved with the next call.
            tracing::warn!(domain = %id.uuid, %error, "Failed to save dedupe keys.");
            if let Some(domain) = self.domains.get_mut(&id.uuid) {
                domain.dedupe_dirty = true;
            }
        }
    }

    fn persist_dedupe(&mut self, id: &DomainId) -> Result<(), CaptureError> {
        let Some(domain) = self.domains.get_mut(&id.uuid) else {
            return Ok(());
        };
        if !std::mem::take(&mut domain.dedupe_dirty) {
            return Ok(());
        }
        let saved = StateFile {
            records: self
                .dedupe
                .records(&id.uuid)
                .map(dedupe::record_to_line)
                .collect(),
            ..StateFile::default()
        };
        let path = state::state_path(&self.settings.state_dir, &id.uuid, DEDUPE_KIND);
        state::store(&path, DEDUPE_KIND, &saved)
    }
}

#[cfg(test)]
pub(crate) mod tests;
