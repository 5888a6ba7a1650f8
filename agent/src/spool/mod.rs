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
//!
//! Files: `store` (the spool: open, push, stats; `mod.rs` only re-exports), `batch`
//! (next batch, ack, dead letter), `cap` (thinning and dropping rollups), `segment` and
//! `record` (the segment files and their records), `cursor`, `dead_letter`, `replay`,
//! `key` (lanes and idempotency keys), `handle` (the shared, blocking-safe handle),
//! `error`.

mod batch;
mod cap;
mod cursor;
mod dead_letter;
mod error;
mod handle;
mod key;
mod record;
pub mod replay;
mod segment;
mod store;

pub use self::batch::{BatchLimits, PendingBatch};
pub use self::error::SpoolError;
use self::error::{io_error, remove, sync_dir};
pub use self::handle::SpoolHandle;
pub use self::key::{event_key, key_for, Lane, HOST_LEVEL_VM, MAX_KEY_BYTES};
use self::store::now_ms;
pub use self::store::{OpenReport, PushOutcome, Spool, SpoolConfig, SpoolCounters, SpoolStats};

#[cfg(test)]
mod tests;
