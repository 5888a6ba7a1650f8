//! The durable on-disk spool between capture and the collector.
//!
//! What it is: a set of append-only segment files in `<state_dir>/spool`, one queue
//! per priority [`Lane`], plus an acknowledgement cursor. What it is not: a database;
//! it keeps only a summary per segment file in memory (bounded by the size cap), never
//! the events themselves.
//!
//! Protocol:
//! 1. The caller captures an event, gives it its idempotency key ([`key_for`]) and calls
//!    [`Spool::push`]; the record is written and fdatasync'ed before `push` returns.
//! 2. The sender calls [`Spool::next_batch`]: critical lane (OOM, near misses) first,
//!    then normal events, then rollups, each oldest first. Nothing is removed yet.
//! 3. The collector confirms the batch; the sender calls [`Spool::ack`], which moves
//!    the per-lane cursor (written in place and synced) and deletes fully acknowledged
//!    segment files. A crash before that resends the batch; the collector dedupes by key.
//! 4. A batch the collector refuses for good goes to [`Spool::dead_letter`] (written to
//!    `dead-letter.jsonl`, then acknowledged).
//!
//! Size cap ([`SpoolConfig::max_bytes`]): when a push does not fit, sealed rollup
//! segments are first downsampled oldest-first (every other minute kept), then whole
//! rollup segments are dropped oldest-first; OOM events and near misses are never
//! dropped while there is room (a push that still does not fit fails with
//! [`SpoolError::Full`]). Every removal is counted in [`SpoolCounters`].
//!
//! A full disk (ENOSPC) fails the push with [`SpoolError::DiskFull`]; the partial
//! record is truncated away and the next push tries again.
//!
//! # On-disk format
//!
//! ```text
//! <state_dir>/spool/
//!   critical-00000000000000000042.seg   OOM events and near misses
//!   normal-00000000000000000007.seg     hello, inventory, balloon changes, health
//!   rollup-00000000000000000001.ds.seg  rollups, already downsampled once (".ds")
//!   rollup-00000000000000000051.seg     newest rollup segment, open for appends
//!   acked.cursor                        per-lane acknowledged sequence number
//!   dead-letter.jsonl[.1]               refused batches (bounded)
//!   replay-inbox/*.jsonl                dead letters to push again ([`replay`])
//! ```
//! The number in a segment's name is the sequence number of its first record. Sequence
//! numbers are global, increasing, never reused. A segment grows to
//! [`SpoolConfig::segment_max_bytes`], then a new one starts. Each record (little endian):
//!
//! ```text
//! offset size field
//!      0    4 magic "BLR1"
//!      4    4 payload length N
//!      8    4 CRC-32 (IEEE) of bytes 4..8 and 12..28+N
//!     12    8 sequence number
//!     20    8 capture time, Unix ms (downsampling picks minutes by it)
//!     28    N payload: the ballast_model::Envelope as JSON
//! ```
//! e.g. `42 4c 52 31 | 5a 00 00 00 | 9c 1e 03 7b | 2a 00 .. 00 | 38 2c 0f 1b a1 01 00 00 |
//! {"key":"pve1/oom/3f2a.../7.409881","captured_at_ms":1795658493000,"type":"oom",...}`.
//!
//! Crash safety: on open, every segment is scanned; a torn tail (kill -9 or power loss
//! mid-write) is truncated away, and damage inside a file (a bad checksum) is cut out
//! by rewriting the file with its intact records (found again by their magic and
//! checksum). Both are logged and counted ([`OpenReport`]). `*.tmp` files are leftovers
//! of interrupted rewrites and are removed. The cursor file holds two 64-byte slots
//! written in place by turns (generation + CRC; layout in `spool/cursor.rs`), so
//! acknowledging needs no new disk blocks and works on a full disk.

mod cursor;
mod dead_letter;
mod handle;
mod key;
mod record;
pub mod replay;
mod segment;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ballast_model::Envelope;
use tracing::{debug, warn};

use self::cursor::CursorFile;
use self::dead_letter::DeadLetter;
pub use self::handle::SpoolHandle;
pub use self::key::{event_key, key_for, Lane, HOST_LEVEL_VM, MAX_KEY_BYTES};
use self::segment::Segment;

/// Where and how big.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The spool directory, normally `<state_dir>/spool`.
    pub dir: PathBuf,
    /// Cap on all segment files together.
    pub max_bytes: u64,
    /// A segment is sealed and a new one started past this size.
    pub segment_max_bytes: u64,
    /// Largest event (JSON) accepted.
    pub max_record_bytes: u32,
    /// Cap on `dead-letter.jsonl` (its one rotated predecessor may hold as much again).
    pub dead_letter_max_bytes: u64,
}

impl SpoolConfig {
    pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

    /// The defaults for a spool in `<state_dir>/spool`.
    pub fn in_state_dir(state_dir: &Path) -> Self {
        Self::with_cap(state_dir.join("spool"), Self::DEFAULT_MAX_BYTES)
    }

    /// Defaults scaled to a cap: segments of cap/32 (between 64 KiB and 4 MiB).
    pub fn with_cap(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes,
            segment_max_bytes: (max_bytes / 32).clamp(64 * 1024, 4 * 1024 * 1024),
            max_record_bytes: 4 * 1024 * 1024,
            dead_letter_max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The spool failed to do what was asked; variants name the action.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("Disk full while writing {path}")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Spool full: {needed_bytes} bytes do not fit under the cap of {max_bytes} bytes")]
    Full { needed_bytes: u64, max_bytes: u64 },
    #[error("Event {key} is {bytes} bytes, above the record limit of {max_bytes}")]
    RecordTooLarge {
        key: String,
        bytes: usize,
        max_bytes: u32,
    },
    #[error("Failed to encode event {key}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Failed to create spool directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SpoolError {
    /// ENOSPC (or a quota): the caller should keep running and try again later.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::DiskFull { .. })
    }
}

/// What happened to a pushed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Durable, with this sequence number.
    Stored { seq: u64 },
    /// A rollup that did not fit under the cap even after evicting older rollups
    /// (counted in [`SpoolCounters::dropped_rollups`]).
    DroppedRollup,
}

/// Monotonic counters since the spool was opened (for Health and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolCounters {
    pub pushed: u64,
    pub acked: u64,
    /// Rollups removed whole (oldest segments dropped, or new ones refused).
    pub dropped_rollups: u64,
    /// Rollups removed by downsampling (every other minute).
    pub downsampled_rollups: u64,
    /// Non-rollup events refused because the cap was reached with no rollups left to drop.
    pub rejected_full: u64,
    /// Pushes that hit ENOSPC.
    pub disk_full_errors: u64,
    /// Damaged regions found (at open or while reading) and skipped.
    pub damaged_regions: u64,
    pub damaged_bytes: u64,
    /// Events written to the dead-letter file.
    pub dead_lettered: u64,
    /// Acknowledgements applied in memory but not yet persisted (a resend after a crash).
    pub cursor_persist_errors: u64,
}

/// A snapshot of the spool's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Events waiting for acknowledgement.
    pub events: u64,
    /// ... per lane, in [`Lane::ALL`] order.
    pub events_by_lane: [u64; Lane::COUNT],
    pub segments: usize,
    pub counters: SpoolCounters,
}

impl SpoolStats {
    /// Everything removed to stay under the cap (the Health event's `dropped_rollups`).
    pub fn rollups_lost(&self) -> u64 {
        self.counters.dropped_rollups + self.counters.downsampled_rollups
    }
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub events: u64,
    pub damaged_regions: u64,
    pub damaged_bytes: u64,
    /// Segment files repaired (truncated or rewritten).
    pub repaired_files: Vec<PathBuf>,
    /// The cursor file was unreadable: everything still spooled will be resent.
    pub cursor_reset: bool,
}

/// How big a batch may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    /// Sum of event JSON sizes; a single larger event still goes alone.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_events: 500,
            max_bytes: 1024 * 1024,
        }
    }
}

/// Events read out for sending; nothing is removed until [`Spool::ack`].
#[derive(Debug, Clone, Default)]
pub struct PendingBatch {
    pub events: Vec<Envelope>,
    /// Sum of the events' JSON sizes.
    pub bytes: usize,
    marks: Vec<Mark>,
    /// Raw JSON of each event, in `events` order (for the dead-letter file).
    raw: Vec<Vec<u8>>,
}

/// How far a batch reaches into one segment.
#[derive(Debug, Clone, Copy)]
struct Mark {
    lane: Lane,
    segment_id: u64,
    records: u64,
    end_offset: u64,
    last_seq: u64,
}

impl PendingBatch {
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

#[derive(Debug, Default)]
struct LaneState {
    segments: VecDeque<Segment>,
    /// Highest sequence number handed out by `next_batch` (never downsampled under it).
    handed_out: u64,
}

/// The spool. Single owner; share it through [`SpoolHandle`].
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    lanes: [LaneState; Lane::COUNT],
    cursor: CursorFile,
    cursor_dirty: bool,
    dead_letter: DeadLetter,
    next_seq: u64,
    total_bytes: u64,
    counters: SpoolCounters,
}

impl Spool {
    /// Opens (creating) the spool directory, repairs damage and loads the summary.
    pub fn open(config: SpoolConfig) -> Result<(Self, OpenReport), SpoolError> {
        fs::create_dir_all(&config.dir).map_err(|source| SpoolError::CreateDir {
            path: config.dir.clone(),
            source,
        })?;
        let (cursor, cursor_reset) = CursorFile::open(&config.dir)?;
        let mut report = OpenReport {
            cursor_reset,
            ..OpenReport::default()
        };
        if cursor_reset {
            warn!(path = %cursor.path().display(), "Spool cursor unreadable; everything spooled will be resent.");
        }
        let mut found: Vec<(Lane, u64, bool, PathBuf)> = Vec::new();
        let entries = fs::read_dir(&config.dir).map_err(|source| SpoolError::Read {
            path: config.dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| SpoolError::Read {
                path: config.dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                debug!(file = %name, "Removing an interrupted spool rewrite.");
                remove(&entry.path())?;
            } else if let Some((lane, id, downsampled)) = segment::parse_name(&name) {
                found.push((lane, id, downsampled, entry.path()));
            }
        }
        // A crash between writing `x.ds.seg` and removing `x.seg` leaves both: keep the first.
        found.sort_by_key(|(lane, id, downsampled, _)| (*lane, *id, !*downsampled));
        let mut lanes: [LaneState; Lane::COUNT] = Default::default();
        let mut max_seq = cursor.acked.iter().copied().max().unwrap_or(0);
        let mut total_bytes = 0;
        let mut previous: Option<(Lane, u64)> = None;
        for (lane, id, downsampled, path) in found {
            if previous == Some((lane, id)) {
                remove(&path)?;
                continue;
            }
            previous = Some((lane, id));
            let acked = cursor.acked[lane.index()];
            let (loaded, repair) = Segment::load(
                path.clone(),
                lane,
                id,
                downsampled,
                acked,
                config.max_record_bytes,
            )?;
            if repair.damaged_regions > 0 {
                warn!(
                    path = %path.display(),
                    regions = repair.damaged_regions,
                    bytes = repair.damaged_bytes,
                    "Spool segment damaged (torn write or corruption); kept its intact records."
                );
                report.damaged_regions += repair.damaged_regions;
                report.damaged_bytes += repair.damaged_bytes;
                report.repaired_files.push(path.clone());
            }
            max_seq = max_seq.max(id);
            match loaded {
                Some(segment) => {
                    max_seq = max_seq.max(segment.last_seq);
                    total_bytes += segment.bytes;
                    report.events += segment.live;
                    lanes[lane.index()].segments.push_back(segment);
                }
                None => remove(&path)?,
            }
        }
        sync_dir(&config.dir)?;
        report.segments = lanes.iter().map(|lane| lane.segments.len()).sum();
        let counters = SpoolCounters {
            damaged_regions: report.damaged_regions,
            damaged_bytes: report.damaged_bytes,
            ..SpoolCounters::default()
        };
        let spool = Self {
            dead_letter: DeadLetter::new(&config.dir, config.dead_letter_max_bytes),
            config,
            lanes,
            cursor,
            cursor_dirty: false,
            next_seq: max_seq + 1,
            total_bytes,
            counters,
        };
        debug!(
            dir = %spool.config.dir.display(),
            segments = report.segments,
            events = report.events,
            bytes = total_bytes,
            "Spool opened."
        );
        Ok((spool, report))
    }

    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    /// Writes one event durably (fdatasync) before returning.
    pub fn push(&mut self, envelope: &Envelope) -> Result<PushOutcome, SpoolError> {
        let payload = serde_json::to_vec(envelope).map_err(|source| SpoolError::Encode {
            key: envelope.key.clone(),
            source,
        })?;
        if payload.len() > self.config.max_record_bytes as usize {
            return Err(SpoolError::RecordTooLarge {
                key: envelope.key.clone(),
                bytes: payload.len(),
                max_bytes: self.config.max_record_bytes,
            });
        }
        let lane = Lane::of(&envelope.event);
        let needed = record::framed_len(payload.len());
        if self.total_bytes + needed > self.config.max_bytes {
            self.make_room(needed)?;
            if self.total_bytes + needed > self.config.max_bytes {
                if lane == Lane::Rollup {
                    self.counters.dropped_rollups += 1;
                    return Ok(PushOutcome::DroppedRollup);
                }
                self.counters.rejected_full += 1;
                return Err(SpoolError::Full {
                    needed_bytes: needed,
                    max_bytes: self.config.max_bytes,
                });
            }
        }
        let seq = self.next_seq;
        let mut frame = Vec::new();
        record::encode(seq, envelope.captured_at_ms, &payload, &mut frame);
        match self.append(lane, seq, &frame) {
            Ok(()) => {}
            Err(error) => {
                if error.is_disk_full() {
                    self.counters.disk_full_errors += 1;
                }
                return Err(error);
            }
        }
        self.next_seq += 1;
        self.total_bytes += needed;
        self.counters.pushed += 1;
        Ok(PushOutcome::Stored { seq })
    }

    /// Reads the oldest unacknowledged events, critical lane first.
    pub fn next_batch(&mut self, limits: BatchLimits) -> Result<PendingBatch, SpoolError> {
        let mut batch = PendingBatch::default();
        let max_payload = self.config.max_record_bytes;
        let mut undecodable: Vec<(String, Vec<u8>)> = Vec::new();
        let mut damaged: Vec<(Lane, u64, u64)> = Vec::new();
        for lane in Lane::ALL {
            let acked = self.cursor.acked[lane.index()];
            let state = &mut self.lanes[lane.index()];
            let mut handed_out = state.handed_out;
            for segment in &state.segments {
                if segment.last_seq <= acked || segment.live == 0 {
                    continue;
                }
                let mut full = false;
                let mut mark = Mark {
                    lane,
                    segment_id: segment.id,
                    records: 0,
                    end_offset: segment.read_offset,
                    last_seq: acked,
                };
                let outcome = segment.read_from(acked, max_payload, |seq, end, payload| {
                    let fits = batch.events.len() < limits.max_events
                        && (batch.bytes + payload.len() <= limits.max_bytes
                            || batch.events.is_empty() && undecodable.is_empty());
                    if !fits {
                        full = true;
                        return false;
                    }
                    mark.records += 1;
                    mark.end_offset = end;
                    mark.last_seq = seq;
                    match serde_json::from_slice::<Envelope>(&payload) {
                        Ok(envelope) => {
                            batch.bytes += payload.len();
                            batch.events.push(envelope);
                            batch.raw.push(payload);
                        }
                        Err(error) => undecodable.push((error.to_string(), payload)),
                    }
                    true
                })?;
                if let Err(offset) = outcome {
                    // The file changed under us: skip the rest of this segment.
                    damaged.push((lane, segment.id, segment.bytes.saturating_sub(offset)));
                    mark.end_offset = segment.bytes;
                    mark.last_seq = segment.last_seq;
                }
                if mark.records > 0 || outcome.is_err() {
                    handed_out = handed_out.max(mark.last_seq);
                    batch.marks.push(mark);
                }
                if full {
                    break;
                }
            }
            state.handed_out = handed_out;
            if batch.events.len() >= limits.max_events || batch.bytes >= limits.max_bytes {
                break;
            }
        }
        for (lane, segment_id, bytes) in damaged {
            warn!(
                lane = lane.name(),
                segment = segment_id,
                bytes,
                "Spool segment unreadable past this point; skipping the rest of it."
            );
            self.counters.damaged_regions += 1;
            self.counters.damaged_bytes += bytes;
        }
        for (error, payload) in undecodable {
            warn!(%error, "Spooled event does not decode; moving it to the dead-letter file.");
            let reason = format!("undecodable: {error}");
            if let Err(write_error) =
                self.dead_letter
                    .append(now_ms(), &reason, &[], &[payload.as_slice()])
            {
                warn!(error = %write_error, "Failed to write the dead-letter file.");
            }
            self.counters.dead_lettered += 1;
        }
        Ok(batch)
    }

    /// The collector confirmed `batch`: advance the cursors and delete what is fully
    /// acknowledged. On a persistence error the acknowledgement still holds in memory
    /// (it is persisted with the next one; a crash before that resends the batch).
    pub fn ack(&mut self, batch: &PendingBatch) -> Result<(), SpoolError> {
        for mark in &batch.marks {
            let lane_idx = mark.lane.index();
            let acked = &mut self.cursor.acked[lane_idx];
            *acked = (*acked).max(mark.last_seq);
            if let Some(segment) = self.lanes[lane_idx]
                .segments
                .iter_mut()
                .find(|segment| segment.id == mark.segment_id)
            {
                segment.live = segment.live.saturating_sub(mark.records);
                segment.read_offset = segment.read_offset.max(mark.end_offset);
            }
            self.counters.acked += mark.records;
        }
        // Delete before persisting: removing fully confirmed files is always safe, and
        // it frees room on a full disk.
        let mut remove_error = None;
        for lane in Lane::ALL {
            let acked = self.cursor.acked[lane.index()];
            let state = &mut self.lanes[lane.index()];
            while let Some(segment) = state.segments.front() {
                if segment.last_seq > acked && segment.live > 0 {
                    break;
                }
                if let Some(segment) = state.segments.pop_front() {
                    self.total_bytes = self.total_bytes.saturating_sub(segment.bytes);
                    if let Err(error) = remove(&segment.path) {
                        remove_error = Some(error);
                    }
                }
            }
        }
        self.persist_cursor()?;
        remove_error.map_or(Ok(()), Err)
    }

    /// The collector refused `batch` for good: record it in the dead-letter file
    /// (best effort) and acknowledge it so the queue moves on.
    pub fn dead_letter(&mut self, batch: &PendingBatch, reason: &str) -> Result<(), SpoolError> {
        let keys: Vec<&str> = batch
            .events
            .iter()
            .map(|event| event.key.as_str())
            .collect();
        let raw: Vec<&[u8]> = batch.raw.iter().map(Vec::as_slice).collect();
        if let Err(error) = self.dead_letter.append(now_ms(), reason, &keys, &raw) {
            warn!(%error, events = keys.len(), "Failed to write the dead-letter file; dropping the refused batch.");
        }
        self.counters.dead_lettered += batch.events.len() as u64;
        self.ack(batch)
    }

    pub fn dead_letter_path(&self) -> &Path {
        self.dead_letter.path()
    }

    pub fn stats(&self) -> SpoolStats {
        let mut events_by_lane = [0; Lane::COUNT];
        let mut segments = 0;
        for lane in Lane::ALL {
            let state = &self.lanes[lane.index()];
            segments += state.segments.len();
            events_by_lane[lane.index()] = state.segments.iter().map(|segment| segment.live).sum();
        }
        SpoolStats {
            bytes: self.total_bytes,
            events: events_by_lane.iter().sum(),
            events_by_lane,
            segments,
            counters: self.counters,
        }
    }

    fn persist_cursor(&mut self) -> Result<(), SpoolError> {
        match self.cursor.persist() {
            Ok(()) => {
                self.cursor_dirty = false;
                Ok(())
            }
            Err(error) => {
                self.cursor_dirty = true;
                self.counters.cursor_persist_errors += 1;
                Err(error)
            }
        }
    }

    /// Appends a framed record to the lane's open segment (starting one if needed)
    /// and syncs it; on failure the file is cut back to its previous length.
    fn append(&mut self, lane: Lane, seq: u64, frame: &[u8]) -> Result<(), SpoolError> {
        if self.cursor_dirty {
            // Best effort: an earlier acknowledgement could not be persisted.
            let _ = self.persist_cursor();
        }
        let dir = self.config.dir.clone();
        let segment_max = self.config.segment_max_bytes;
        let state = &mut self.lanes[lane.index()];
        let reuse = state
            .segments
            .back()
            .is_some_and(|segment| segment.bytes < segment_max && !segment.downsampled);
        if reuse {
            let Some(segment) = state.segments.back_mut() else {
                unreachable!("checked above");
            };
            if segment.append.is_none() {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&segment.path)
                    .map_err(|source| io_error(&segment.path, source))?;
                segment.append = Some(file);
            }
            let Some(file) = segment.append.as_mut() else {
                unreachable!("opened above");
            };
            if let Err(source) = file.write_all(frame).and_then(|()| file.sync_data()) {
                if file
                    .set_len(segment.bytes)
                    .and_then(|()| file.sync_data())
                    .is_err()
                {
                    // Cannot cut the partial record away: never append here again (the
                    // tail is skipped as torn on the next open).
                    segment.downsampled = true;
                    segment.append = None;
                }
                return Err(io_error(&segment.path, source));
            }
            segment.bytes += frame.len() as u64;
            segment.last_seq = seq;
            segment.live += 1;
            return Ok(());
        }
        if let Some(previous) = state.segments.back_mut() {
            previous.append = None;
        }
        let path = dir.join(segment::file_name(lane, seq, false));
        let created = (|| {
            let mut file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&path)?;
            file.write_all(frame)?;
            file.sync_data()?;
            Ok(file)
        })();
        let file = match created {
            Ok(file) => file,
            Err(source) => {
                let _ = fs::remove_file(&path);
                return Err(io_error(&path, source));
            }
        };
        sync_dir(&dir)?;
        state.segments.push_back(Segment {
            lane,
            id: seq,
            downsampled: false,
            path,
            bytes: frame.len() as u64,
            first_seq: seq,
            last_seq: seq,
            live: 1,
            read_offset: 0,
            append: Some(file),
        });
        Ok(())
    }

    /// Frees room for `needed` bytes by thinning, then dropping, rollups.
    fn make_room(&mut self, needed: u64) -> Result<(), SpoolError> {
        let rollup = Lane::Rollup.index();
        while self.total_bytes + needed > self.config.max_bytes {
            let floor = self.cursor.acked[rollup].max(self.lanes[rollup].handed_out);
            let n_segments = self.lanes[rollup].segments.len();
            // Older sealed segments not yet thinned and not in flight.
            let candidate = self.lanes[rollup]
                .segments
                .iter()
                .take(n_segments.saturating_sub(1))
                .position(|segment| !segment.downsampled && segment.first_seq > floor);
            if let Some(position) = candidate {
                let dir = self.config.dir.clone();
                let max_payload = self.config.max_record_bytes;
                let segment = &mut self.lanes[rollup].segments[position];
                let before = segment.bytes;
                let removed = segment.downsample(&dir, max_payload)?;
                let after = segment.bytes;
                self.total_bytes = self.total_bytes - before + after;
                self.counters.downsampled_rollups += removed;
                debug!(
                    segment = segment.id,
                    removed,
                    bytes_freed = before - after,
                    "Downsampled old rollups to stay under the spool cap."
                );
                if after == 0 {
                    self.lanes[rollup].segments.remove(position);
                }
                continue;
            }
            let Some(oldest) = self.lanes[rollup].segments.pop_front() else {
                return Ok(());
            };
            self.total_bytes = self.total_bytes.saturating_sub(oldest.bytes);
            self.counters.dropped_rollups += oldest.live;
            warn!(
                segment = oldest.id,
                rollups = oldest.live,
                "Spool cap reached: dropped the oldest rollups."
            );
            remove(&oldest.path)?;
        }
        Ok(())
    }
}

/// Maps an I/O error on `path`; ENOSPC and quota errors become [`SpoolError::DiskFull`].
fn io_error(path: &Path, source: std::io::Error) -> SpoolError {
    let disk_full = matches!(
        source.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || source.raw_os_error() == Some(ENOSPC);
    let path = path.to_path_buf();
    if disk_full {
        SpoolError::DiskFull { path, source }
    } else {
        SpoolError::Write { path, source }
    }
}

/// ENOSPC on Linux (for kernels/filesystems whose error `kind()` is not mapped).
const ENOSPC: i32 = 28;

fn remove(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SpoolError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// fsyncs a directory so created, renamed and removed entries are durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| io_error(dir, source))
}

fn now_ms() -> i64 {
    crate::enrich::epoch_ms(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests;
