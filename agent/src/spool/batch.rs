//! Batches: the oldest unacknowledged events read out for sending (critical lane
//! first), acknowledged (the cursor moves, spent segments go) or dead-lettered.

use std::path::Path;

use ballast_model::Envelope;
use tracing::warn;

use super::{now_ms, remove, Lane, Spool, SpoolError};

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

impl Spool {
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
}
