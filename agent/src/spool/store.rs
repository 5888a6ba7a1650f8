//! The spool itself ([`Spool`]): its directory opened, damage repaired and the summary
//! loaded; events pushed durably; its stats. Reading out, acknowledging and thinning
//! are in `batch` and `cap`.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ballast_model::Envelope;
use tracing::{debug, warn};

use super::cursor::CursorFile;
use super::dead_letter::DeadLetter;
use super::error::{io_error, remove, sync_dir};
use super::record;
use super::segment::{self, Segment};
use super::{Lane, SpoolError};

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

#[derive(Debug, Default)]
pub(super) struct LaneState {
    pub(super) segments: VecDeque<Segment>,
    /// Highest sequence number handed out by `next_batch` (never downsampled under it).
    pub(super) handed_out: u64,
}

/// The spool. Single owner; share it through [`SpoolHandle`](super::SpoolHandle).
#[derive(Debug)]
pub struct Spool {
    pub(super) config: SpoolConfig,
    pub(super) lanes: [LaneState; Lane::COUNT],
    pub(super) cursor: CursorFile,
    pub(super) cursor_dirty: bool,
    pub(super) dead_letter: DeadLetter,
    pub(super) next_seq: u64,
    pub(super) total_bytes: u64,
    pub(super) counters: SpoolCounters,
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

    pub(super) fn persist_cursor(&mut self) -> Result<(), SpoolError> {
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
}

pub(super) fn now_ms() -> i64 {
    crate::wire::epoch_ms(std::time::SystemTime::now())
}
