//! The size cap: room for a push made by thinning old rollup segments (every other
//! minute kept), then dropping the oldest whole; OOM events and near misses never.

use tracing::{debug, warn};

use super::{remove, Lane, Spool, SpoolError};

impl Spool {
    /// Frees room for `needed` bytes by thinning, then dropping, rollups.
    pub(super) fn make_room(&mut self, needed: u64) -> Result<(), SpoolError> {
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
