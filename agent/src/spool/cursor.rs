//! The acknowledgement cursor: per lane, the highest sequence number the collector
//! has confirmed. Stored in `acked.cursor` as two fixed 64-byte slots written in
//! place by turns (generation number + CRC), so an update needs no new disk
//! blocks (it works on a full disk) and a torn write leaves the other slot intact.
//!
//! Slot layout (little endian): magic `BLC1` (4), generation (8), one acked
//! sequence number per lane (8 each, lanes in [`Lane::ALL`] order), CRC-32 of the
//! preceding bytes (4), zero padding to 64.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{io_error, Lane, SpoolError};

const SLOT_MAGIC: [u8; 4] = *b"BLC1";
const SLOT_BYTES: usize = 64;
const FILLED_BYTES: usize = 4 + 8 + 8 * Lane::COUNT;

/// The open cursor file and its current value.
#[derive(Debug)]
pub struct CursorFile {
    file: File,
    path: PathBuf,
    generation: u64,
    /// Acked sequence number per lane (indexed by [`Lane::index`]).
    pub acked: [u64; Lane::COUNT],
}

impl CursorFile {
    /// Opens (or creates) the cursor file; an unreadable file counts as "nothing acked"
    /// (events are then resent, which the collector dedupes).
    pub fn open(dir: &Path) -> Result<(Self, bool), SpoolError> {
        let path = dir.join("acked.cursor");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| io_error(&path, source))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| SpoolError::Read {
                path: path.clone(),
                source,
            })?;
        let best = bytes
            .chunks(SLOT_BYTES)
            .take(2)
            .filter_map(decode_slot)
            .max_by_key(|(generation, _)| *generation);
        let damaged = best.is_none() && !bytes.is_empty();
        let (generation, acked) = best.unwrap_or((0, [0; Lane::COUNT]));
        let mut cursor = Self {
            file,
            path,
            generation,
            acked,
        };
        if bytes.len() < 2 * SLOT_BYTES {
            // Lay out both slots now, while there is room, so later writes are in place.
            cursor.write_slot(generation)?;
            cursor.write_slot(generation + 1)?;
            cursor.generation = generation + 1;
        }
        Ok((cursor, damaged))
    }

    /// Makes `self.acked` durable.
    pub fn persist(&mut self) -> Result<(), SpoolError> {
        let generation = self.generation + 1;
        self.write_slot(generation)?;
        self.generation = generation;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_slot(&mut self, generation: u64) -> Result<(), SpoolError> {
        let mut slot = [0u8; SLOT_BYTES];
        slot[0..4].copy_from_slice(&SLOT_MAGIC);
        slot[4..12].copy_from_slice(&generation.to_le_bytes());
        for (lane_idx, acked) in self.acked.iter().enumerate() {
            let at = 12 + 8 * lane_idx;
            slot[at..at + 8].copy_from_slice(&acked.to_le_bytes());
        }
        let crc = crc32fast::hash(&slot[..FILLED_BYTES]);
        slot[FILLED_BYTES..FILLED_BYTES + 4].copy_from_slice(&crc.to_le_bytes());
        let offset = (generation % 2) * SLOT_BYTES as u64;
        self.file
            .write_all_at(&slot, offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| io_error(&self.path, source))
    }
}

fn decode_slot(slot: &[u8]) -> Option<(u64, [u64; Lane::COUNT])> {
    if slot.len() < FILLED_BYTES + 4 || slot[0..4] != SLOT_MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes(slot[FILLED_BYTES..FILLED_BYTES + 4].try_into().ok()?);
    if stored != crc32fast::hash(&slot[..FILLED_BYTES]) {
        return None;
    }
    let generation = u64::from_le_bytes(slot[4..12].try_into().ok()?);
    let mut acked = [0; Lane::COUNT];
    for (lane_idx, value) in acked.iter_mut().enumerate() {
        let at = 12 + 8 * lane_idx;
        *value = u64::from_le_bytes(slot[at..at + 8].try_into().ok()?);
    }
    Some((generation, acked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_intact_slot_wins() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path();
        let (mut cursor, damaged) = CursorFile::open(dir).expect("create");
        assert!(!damaged);
        assert_eq!(cursor.acked, [0; Lane::COUNT]);
        cursor.acked = [5, 6, 7];
        cursor.persist().expect("persist");
        cursor.acked = [8, 9, 10];
        cursor.persist().expect("persist");
        drop(cursor);
        let (cursor, _) = CursorFile::open(dir).expect("reopen");
        assert_eq!(cursor.acked, [8, 9, 10]);
        let generation = cursor.generation;
        drop(cursor);

        // Tear the newest slot: the previous value comes back.
        let path = dir.join("acked.cursor");
        let mut bytes = std::fs::read(&path).expect("read");
        let newest = (generation % 2) as usize * SLOT_BYTES;
        bytes[newest + 14] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let (cursor, damaged) = CursorFile::open(dir).expect("reopen");
        assert!(!damaged);
        assert_eq!(cursor.acked, [5, 6, 7]);
    }
}
