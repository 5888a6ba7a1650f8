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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ballast_oom::Report;

use super::dedupe::{self, Deduper, Seen};
use super::flood::{MinInterval, TokenBucket};
use super::guest_agent::{run_kernel_log, GuestAgentReader};
use super::serial::SerialTailer;
use super::state::{self, StateFile};
use super::{
    CaptureError, CaptureEvent, CaptureSettings, CaptureSource, CapturedOom, FetchReason, NearMiss,
    NearMissKind,
};
use crate::hypervisor::{DomainId, Hypervisor, HypervisorError};

const DEDUPE_KIND: &str = "dedupe";

/// What one serial poll produced.
#[derive(Debug, Default)]
pub struct SerialPoll {
    pub events: Vec<CaptureEvent>,
    /// A partial report is held: fetch the guest kernel log to complete it.
    pub wants_guest_agent: bool,
}

#[derive(Debug)]
struct Held {
    oom: CapturedOom,
    until: Instant,
}

#[derive(Debug)]
struct DomainCapture {
    id: DomainId,
    serial: Option<(PathBuf, SerialTailer)>,
    agent: GuestAgentReader,
    bucket: TokenBucket,
    /// Reports dropped by the bucket since the last one emitted.
    suppressed: u64,
    /// The newest dropped report: it goes out as soon as the bucket refills (with
    /// the count of those dropped before it), so a flood that stops is still
    /// flagged in an event without waiting for the VM's next OOM.
    /// Boxed: a `CapturedOom` is ~1.3 KiB and this is `None` for nearly every VM.
    last_suppressed: Option<Box<CapturedOom>>,
    near_miss: MinInterval,
    held: Vec<Held>,
    dedupe_dirty: bool,
    /// Host clock when the last serial read began: reports in the next read were
    /// printed after it.
    serial_read_at: Option<SystemTime>,
    /// Host clock when the guest agent fetch now running began, and when the last
    /// finished one began.
    agent_begun_at: Option<SystemTime>,
    agent_read_at: Option<SystemTime>,
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

    /// One report from either source: dedupe, hold or emit.
    fn found(
        &mut self,
        id: &DomainId,
        source: CaptureSource,
        (report, raw, printed_after): (Report, String, Option<SystemTime>),
        now: Instant,
        poll: &mut SerialPoll,
    ) {
        let identity = dedupe::identity(&report, &raw);
        let partial = report.partial;
        let seen = self.dedupe.observe(&id.uuid, &identity);
        let Some(domain) = self.domains.get_mut(&id.uuid) else {
            return;
        };
        let oom = |key: String| CapturedOom {
            domain: domain.id.clone(),
            source,
            captured_at: SystemTime::now(),
            printed_after,
            raw,
            report,
            dedupe_key: key,
            suppressed_before: 0,
        };
        match seen {
            Seen::Duplicate { key } => {
                tracing::debug!(domain = %id.uuid, %key, ?source, "OOM report seen before.");
            }
            Seen::Completes { key } => {
                domain.dedupe_dirty = true;
                let mut oom = oom(key.clone());
                if let Some(index) = domain.held.iter().position(|h| h.oom.dedupe_key == key) {
                    // Both reads' bounds hold: the later one is the closer to the kill.
                    oom.printed_after = oom.printed_after.max(domain.held[index].oom.printed_after);
                    // The partial copy never went out: emit the complete one instead.
                    domain.held.remove(index);
                    gate(
                        domain,
                        &mut self.flood_suppressed_total,
                        oom,
                        now,
                        &mut poll.events,
                    );
                } else {
                    poll.events.push(CaptureEvent::OomCompleted(oom));
                }
            }
            Seen::New { key } => {
                domain.dedupe_dirty = true;
                let oom = oom(key);
                let hold = partial
                    && source == CaptureSource::Serial
                    && !self.settings.partial_hold.is_zero();
                // Held copies each take a token when released: under a flood, one the
                // bucket will not have a token for is not held (nor completed), only counted.
                let room = usize::try_from(domain.bucket.available(now)).unwrap_or(usize::MAX);
                if hold && domain.held.len() >= room {
                    suppress(domain, &mut self.flood_suppressed_total, oom);
                } else if hold {
                    domain.held.push(Held {
                        oom,
                        until: now + self.settings.partial_hold,
                    });
                    poll.wants_guest_agent = true;
                } else {
                    gate(
                        domain,
                        &mut self.flood_suppressed_total,
                        oom,
                        now,
                        &mut poll.events,
                    );
                }
            }
        }
    }
}

/// Flood control: emits `oom` if the domain's bucket has a token, else counts it.
fn gate(
    domain: &mut DomainCapture,
    total: &mut u64,
    mut oom: CapturedOom,
    now: Instant,
    events: &mut Vec<CaptureEvent>,
) {
    if domain.bucket.try_take(now) {
        oom.suppressed_before = std::mem::take(&mut domain.suppressed);
        // Counted in `suppressed_before`: the kept copy is no longer owed.
        domain.last_suppressed = None;
        events.push(CaptureEvent::Oom(oom));
        return;
    }
    suppress(domain, total, oom);
}

/// Flood control dropped `oom`: counted, and kept as the newest dropped one.
fn suppress(domain: &mut DomainCapture, total: &mut u64, oom: CapturedOom) {
    domain.suppressed += 1;
    *total += 1;
    domain.last_suppressed = Some(Box::new(oom));
    if domain.suppressed == 1 {
        tracing::warn!(domain = %domain.id.uuid, "Guest OOM reports above the flood limit; counting instead of sending.");
    } else {
        tracing::debug!(domain = %domain.id.uuid, suppressed = domain.suppressed, "Guest OOM report suppressed.");
    }
}

/// After a flood: once the bucket has a token, the newest dropped report goes
/// out carrying the count of the ones dropped before it (it is not counted twice).
fn release_flood_summary(domain: &mut DomainCapture, now: Instant, events: &mut Vec<CaptureEvent>) {
    // Tokens owed to held partial reports are theirs.
    let owed = u32::try_from(domain.held.len()).unwrap_or(u32::MAX);
    if domain.last_suppressed.is_none()
        || domain.bucket.available(now) <= owed
        || !domain.bucket.try_take(now)
    {
        return;
    }
    if let Some(mut oom) = domain.last_suppressed.take() {
        let dropped = std::mem::take(&mut domain.suppressed);
        oom.suppressed_before = dropped.saturating_sub(1);
        tracing::warn!(
            domain = %domain.id.uuid,
            dropped,
            "Guest OOM flood: the newest dropped report goes out flagged with the count."
        );
        events.push(CaptureEvent::Oom(*oom));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::capture::detect::tests::LAB_LOG;
    use crate::capture::state::tests::TempDir;
    use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};

    fn domain() -> DomainId {
        DomainId {
            uuid: "4d1c6a8e-0000-4000-8000-000000000001".to_owned(),
            name: "vm1".to_owned(),
        }
    }

    fn settings(dir: &TempDir) -> CaptureSettings {
        CaptureSettings {
            grace: Duration::ZERO,
            ..CaptureSettings::new(dir.0.join("state"))
        }
    }

    fn fake_with_dmesg(dmesg: &str) -> FakeHypervisor {
        let hypervisor = FakeHypervisor::new();
        hypervisor.set(
            domain(),
            FakeDomain {
                running: true,
                dmesg: Some(dmesg.as_bytes().to_vec()),
                ..FakeDomain::default()
            },
        );
        hypervisor
    }

    fn ooms(events: &[CaptureEvent]) -> Vec<&CapturedOom> {
        events
            .iter()
            .filter_map(|event| match event {
                CaptureEvent::Oom(oom) => Some(oom),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn serial_and_guest_agent_copies_become_one_event() {
        let dir = TempDir::new("hub-dedupe");
        let log = dir.0.join("serial.log");
        std::fs::write(&log, LAB_LOG).expect("write log");
        let hypervisor = fake_with_dmesg(LAB_LOG);
        let now = Instant::now();
        let mut capture = Capture::new(settings(&dir));
        let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
        let found = ooms(&poll.events);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].source, CaptureSource::Serial);
        assert_eq!(found[0].dedupe_key, format!("{}:7410:113", domain().uuid));
        assert!(!poll.wants_guest_agent);
        let events = capture
            .fetch_guest_agent(&hypervisor, &domain(), FetchReason::Periodic, now)
            .expect("agent");
        assert!(events.is_empty(), "{events:?}");
        // The next tick (the event is stored by then) saves the state past it.
        assert!(capture
            .poll_serial(&domain(), &log, now)
            .expect("serial")
            .events
            .is_empty());
        // An agent restart: neither path emits it again.
        drop(capture);
        let mut capture = Capture::new(settings(&dir));
        assert!(capture
            .poll_serial(&domain(), &log, now)
            .expect("serial")
            .events
            .is_empty());
        let events = capture
            .fetch_guest_agent(&hypervisor, &domain(), FetchReason::Periodic, now)
            .expect("agent");
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn a_serial_report_is_dated_after_the_read_before_it_and_only_then() {
        let dir = TempDir::new("hub-printed-after");
        let log = dir.0.join("serial.log");
        std::fs::write(&log, LAB_LOG).expect("write log");
        let now = Instant::now();
        let mut capture = Capture::new(settings(&dir));
        // In the first read: nothing says when it was printed.
        let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
        assert_eq!(ooms(&poll.events)[0].printed_after, None);
        // A second OOM appears after a read that did not hold it.
        std::fs::write(&log, "").expect("truncate");
        let before_read = SystemTime::now();
        assert!(capture
            .poll_serial(&domain(), &log, now)
            .expect("serial")
            .events
            .is_empty());
        let second = LAB_LOG.replace("7.4", "9.4").replace("113", "114");
        std::fs::write(&log, second).expect("write log");
        let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
        let found = ooms(&poll.events);
        assert_eq!(found.len(), 1, "{:?}", poll.events);
        let printed_after = found[0].printed_after.expect("a read came before");
        assert!(printed_after >= before_read && printed_after <= found[0].captured_at);
    }

    #[test]
    fn a_report_cut_by_the_vm_going_away_goes_out_as_it_stands() {
        let dir = TempDir::new("hub-gone");
        let log = dir.0.join("serial.log");
        // The report up to its task table: the VM was destroyed while the kernel wrote it.
        let cut: String = LAB_LOG
            .lines()
            .take_while(|line| !line.contains("oom-kill:"))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&log, &cut).expect("write log");
        let now = Instant::now();
        let mut capture = Capture::new(settings(&dir));
        let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
        assert!(ooms(&poll.events).is_empty(), "still waiting for the rest");
        capture.forget(&domain().uuid);
        let events = capture.release_held(now);
        let found = ooms(&events);
        assert_eq!(found.len(), 1, "{events:?}");
        assert!(found[0].report.partial);
        assert!(capture.release_held(now).is_empty(), "handed out once");
    }

    #[test]
    fn partial_serial_report_is_completed_by_the_guest_agent() {
        let dir = TempDir::new("hub-partial");
        let log = dir.0.join("serial.log");
        let kill_line = LAB_LOG.lines().last().expect("kill line");
        std::fs::write(&log, format!("{kill_line}\n")).expect("write log");
        let hypervisor = fake_with_dmesg(LAB_LOG);
        let now = Instant::now();
        let mut capture = Capture::new(settings(&dir));
        let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
        assert!(poll.events.is_empty(), "the partial copy is held");
        assert!(poll.wants_guest_agent);
        let events = capture
            .fetch_guest_agent(&hypervisor, &domain(), FetchReason::PartialReport, now)
            .expect("agent");
        let found = ooms(&events);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].source, CaptureSource::GuestAgent);
        assert!(!found[0].report.partial);
        assert_eq!(found[0].dedupe_key, format!("{}:7420:113", domain().uuid));
        assert!(capture
            .release_held(now + Duration::from_secs(3600))
            .is_empty());
    }

    #[test]
    fn partial_report_goes_out_after_the_hold_and_is_completed_later() {
        let dir = TempDir::new("hub-hold");
        let log = dir.0.join("serial.log");
        let kill_line = LAB_LOG.lines().last().expect("kill line");
        std::fs::write(&log, format!("{kill_line}\n")).expect("write log");
        let now = Instant::now();
        let mut capture = Capture::new(settings(&dir));
        capture.poll_serial(&domain(), &log, now).expect("serial");
        assert!(capture
            .release_held(now + Duration::from_secs(1))
            .is_empty());
        let released = capture.release_held(now + Duration::from_secs(10));
        let found = ooms(&released);
        assert_eq!(found.len(), 1);
        assert!(found[0].report.partial);
        let key = found[0].dedupe_key.clone();
        let hypervisor = fake_with_dmesg(LAB_LOG);
        let events = capture
            .fetch_guest_agent(&hypervisor, &domain(), FetchReason::Periodic, now)
            .expect("agent");
        let [CaptureEvent::OomCompleted(completed)] = &events[..] else {
            panic!("expected one completion, got {events:?}");
        };
        assert_eq!(completed.dedupe_key, key);
        assert!(!completed.report.partial);
    }

    /// The console stalled after the report's header (a slow or starved guest): past
    /// `headless_timeout` the copy settles without a kill line, so without a pid. The
    /// guest agent's whole copy is the same OOM: while the cut copy is held it takes
    /// its place; once the cut copy went out it is its completion under the same key.
    /// Never two OOMs (a real-VM run stored both, with two keys).
    #[test]
    fn a_copy_cut_before_its_kill_line_and_its_whole_copy_are_one_oom() {
        let cut: String = LAB_LOG
            .lines()
            .take_while(|line| !line.contains("oom-kill:"))
            .map(|line| format!("{line}\n"))
            .collect();
        let hypervisor = fake_with_dmesg(LAB_LOG);
        for completed_while_held in [true, false] {
            let dir = TempDir::new("hub-cut-before-kill");
            let log = dir.0.join("serial.log");
            std::fs::write(&log, &cut).expect("write log");
            let now = Instant::now();
            let mut capture = Capture::new(settings(&dir));
            let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
            assert!(poll.events.is_empty(), "{:?}", poll.events);
            let settled = now + capture.settings.headless_timeout + Duration::from_secs(1);
            let poll = capture
                .poll_serial(&domain(), &log, settled)
                .expect("serial");
            assert!(
                poll.events.is_empty(),
                "the cut copy is held: {:?}",
                poll.events
            );
            assert!(poll.wants_guest_agent);
            let mut events = Vec::new();
            if !completed_while_held {
                events = capture.release_held(settled + Duration::from_secs(3600));
                let found = ooms(&events);
                assert_eq!(found.len(), 1, "{events:?}");
                assert!(found[0].report.partial && found[0].report.killed.is_none());
                assert_eq!(found[0].dedupe_key, format!("{}:7410:none", domain().uuid));
            }
            events.extend(
                capture
                    .fetch_guest_agent(&hypervisor, &domain(), FetchReason::PartialReport, settled)
                    .expect("agent"),
            );
            events.extend(capture.release_held(settled + Duration::from_secs(7200)));
            let whole: Vec<&CapturedOom> = events
                .iter()
                .filter_map(|event| match event {
                    CaptureEvent::Oom(oom) | CaptureEvent::OomCompleted(oom)
                        if !oom.report.partial =>
                    {
                        Some(oom)
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(whole.len(), 1, "{events:?}");
            assert_eq!(whole[0].report.killed.as_ref().map(|k| k.pid), Some(113));
            assert_eq!(whole[0].dedupe_key, format!("{}:7410:none", domain().uuid));
            let expected_events = if completed_while_held { 1 } else { 2 };
            assert_eq!(events.len(), expected_events, "{events:?}");
            // The rest of the report reaches the console later: nothing new.
            std::fs::write(&log, LAB_LOG).expect("write log");
            let poll = capture
                .poll_serial(&domain(), &log, settled + Duration::from_secs(7300))
                .expect("serial");
            assert!(ooms(&poll.events).is_empty(), "{:?}", poll.events);
        }
    }

    /// The lab log's kill line (of pid 113) again for every pid in `pids`, each
    /// followed by `also` when given: a guest forging reports.
    pub(crate) fn forged_kill_lines(pids: std::ops::Range<u32>, also: Option<&str>) -> String {
        let kill_line = LAB_LOG.lines().last().expect("kill line");
        let mut text = String::new();
        for pid in pids {
            text.push_str(&kill_line.replace("113", &pid.to_string()));
            text.push('\n');
            if let Some(line) = also {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Appends one more forged kill line (pid 5000) to `log` and polls it at `at`.
    fn append_kill_line_and_poll(capture: &mut Capture, log: &Path, at: Instant) -> SerialPoll {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .and_then(|mut file| file.write_all(forged_kill_lines(5000..5001, None).as_bytes()))
            .expect("append");
        capture.poll_serial(&domain(), log, at).expect("serial")
    }

    #[test]
    fn flood_of_forged_reports_is_bounded_and_counted() {
        let dir = TempDir::new("hub-flood");
        let log = dir.0.join("serial.log");
        // 1000 forged kill-line-only reports with distinct pids, and Out of puff lines.
        let text = forged_kill_lines(
            1000..2000,
            Some("[    7.5] virtio_balloon virtio1: Out of puff! Can't get 1 pages"),
        );
        std::fs::write(&log, &text).expect("write log");
        let now = Instant::now();
        let mut capture = Capture::new(CaptureSettings {
            partial_hold: Duration::ZERO,
            ..settings(&dir)
        });
        let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
        assert_eq!(ooms(&poll.events).len(), 20);
        let near_misses = poll
            .events
            .iter()
            .filter(|event| matches!(event, CaptureEvent::NearMiss(_)))
            .count();
        assert_eq!(near_misses, 1);
        assert_eq!(capture.flood_suppressed_total(), 980);
        // A minute later one more gets through and carries the count.
        let poll = append_kill_line_and_poll(&mut capture, &log, now + Duration::from_secs(61));
        let found = ooms(&poll.events);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].suppressed_before, 980);
        assert_eq!(found[0].report.killed.as_ref().map(|k| k.pid), Some(5000));
    }

    #[test]
    fn a_flood_that_stops_is_flagged_once_the_bucket_refills() {
        let dir = TempDir::new("hub-flood-stops");
        let log = dir.0.join("serial.log");
        let text = forged_kill_lines(1000..1100, None);
        std::fs::write(&log, &text).expect("write log");
        let now = Instant::now();
        let mut capture = Capture::new(CaptureSettings {
            partial_hold: Duration::ZERO,
            ..settings(&dir)
        });
        let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
        assert_eq!(ooms(&poll.events).len(), 20);
        assert_eq!(capture.flood_suppressed_total(), 80);
        // The guest goes quiet: nothing more before the bucket refills...
        assert!(capture
            .release_held(now + Duration::from_secs(59))
            .is_empty());
        // ...then the newest dropped report goes out with the 79 dropped before it.
        let released = capture.release_held(now + Duration::from_secs(60));
        let found = ooms(&released);
        assert_eq!(found.len(), 1, "{released:?}");
        assert_eq!(found[0].suppressed_before, 79);
        assert_eq!(found[0].report.killed.as_ref().map(|k| k.pid), Some(1099));
        // Once only, and the next report starts from zero.
        assert!(capture
            .release_held(now + Duration::from_secs(600))
            .is_empty());
        let poll = append_kill_line_and_poll(&mut capture, &log, now + Duration::from_secs(601));
        let found = ooms(&poll.events);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].suppressed_before, 0);
    }

    #[test]
    fn under_a_flood_partial_reports_are_held_only_while_the_bucket_has_room() {
        let dir = TempDir::new("hub-flood-held");
        let log = dir.0.join("serial.log");
        let text = forged_kill_lines(1000..2000, None);
        std::fs::write(&log, &text).expect("write log");
        let now = Instant::now();
        let mut capture = Capture::new(settings(&dir));
        let poll = capture.poll_serial(&domain(), &log, now).expect("serial");
        // 20 tokens: 20 partial copies wait for the guest agent, the rest are counted.
        assert!(poll.events.is_empty());
        assert!(poll.wants_guest_agent);
        assert_eq!(capture.domains[&domain().uuid].held.len(), 20);
        assert_eq!(capture.flood_suppressed_total(), 980);
        let released = capture.release_held(now + Duration::from_secs(10));
        assert_eq!(ooms(&released).len(), 20);
        // Nothing more is held while the bucket is empty, and no fetch is asked for.
        let poll = append_kill_line_and_poll(&mut capture, &log, now + Duration::from_secs(11));
        assert!(poll.events.is_empty());
        assert!(!poll.wants_guest_agent);
        assert!(capture.domains[&domain().uuid].held.is_empty());
        assert_eq!(capture.flood_suppressed_total(), 981);
    }
}
