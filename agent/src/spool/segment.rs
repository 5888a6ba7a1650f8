//! One segment file: its name, its in-memory summary, the start-up scan that
//! repairs damage, downsampling, and reading records out for a batch.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, Scan, HEADER_BYTES};
use super::{io_error, sync_dir, Lane, SpoolError};

/// What the spool keeps in memory per segment file (a few dozen bytes).
#[derive(Debug)]
pub struct Segment {
    pub lane: Lane,
    /// Sequence number of the record the segment was created with (names the file).
    pub id: u64,
    /// The rollups in it were already thinned out once.
    pub downsampled: bool,
    pub path: PathBuf,
    /// Durable bytes: everything the spool reads stops here.
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Records not yet acknowledged.
    pub live: u64,
    /// Where the first unacknowledged record starts (a hint: reads still skip acked ones).
    pub read_offset: u64,
    /// Open for appending (the lane's newest segment, below the size limit).
    pub append: Option<File>,
}

/// What the start-up scan of one file found.
#[derive(Debug, Default)]
pub struct Repair {
    pub damaged_regions: u64,
    pub damaged_bytes: u64,
}

/// `<lane>-<id:020>.seg`, or `<lane>-<id:020>.ds.seg` once downsampled.
pub fn file_name(lane: Lane, id: u64, downsampled: bool) -> String {
    let suffix = if downsampled { ".ds.seg" } else { ".seg" };
    format!("{}-{id:020}{suffix}", lane.name())
}

/// Parses a segment file name: (lane, id, downsampled).
pub fn parse_name(name: &str) -> Option<(Lane, u64, bool)> {
    let stem = name.strip_suffix(".seg")?;
    let (stem, downsampled) = match stem.strip_suffix(".ds") {
        Some(stem) => (stem, true),
        None => (stem, false),
    };
    let (lane, id) = stem.split_once('-')?;
    Some((Lane::from_name(lane)?, id.parse().ok()?, downsampled))
}

impl Segment {
    /// Reads a segment file at start-up, repairs damage in place (truncating a torn
    /// tail, or rewriting the file with its intact records) and summarises it.
    /// `None`: nothing unacknowledged is left in it (the caller removes the file).
    pub fn load(
        path: PathBuf,
        lane: Lane,
        id: u64,
        downsampled: bool,
        acked: u64,
        max_payload: u32,
    ) -> Result<(Option<Segment>, Repair), SpoolError> {
        let bytes = fs::read(&path).map_err(|source| SpoolError::Read {
            path: path.clone(),
            source,
        })?;
        let mut scan = Scan::new(&bytes, max_payload);
        let mut intact = Vec::new();
        let (mut first_seq, mut last_seq, mut live, mut read_offset) = (0, 0, 0, None);
        for record in scan.by_ref() {
            if first_seq == 0 {
                first_seq = record.seq;
            }
            last_seq = last_seq.max(record.seq);
            if record.seq > acked {
                live += 1;
                read_offset.get_or_insert(record.offset);
            }
            intact.push(record.offset..record.end);
        }
        let repair = Repair {
            damaged_regions: scan.damage.len() as u64,
            damaged_bytes: scan.damaged_bytes(),
        };
        let tail_only = scan.damage_is_tail_only();
        let tail_start = scan.damage.first().map(|range| range.start);
        if live == 0 {
            return Ok((None, repair));
        }
        let mut size = bytes.len() as u64;
        if repair.damaged_regions > 0 {
            if tail_only {
                let keep = tail_start.unwrap_or(bytes.len()) as u64;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| io_error(&path, source))?;
                file.set_len(keep)
                    .and_then(|()| file.sync_all())
                    .map_err(|source| io_error(&path, source))?;
                size = keep;
            } else {
                let mut clean = Vec::with_capacity(bytes.len());
                for range in &intact {
                    clean.extend_from_slice(&bytes[range.clone()]);
                }
                replace_file(&path, &clean)?;
                size = clean.len() as u64;
                // Offsets moved: find the first live record again.
                read_offset = Scan::new(&clean, max_payload)
                    .find(|record| record.seq > acked)
                    .map(|record| record.offset);
            }
        }
        Ok((
            Some(Segment {
                lane,
                id,
                downsampled,
                path,
                bytes: size,
                first_seq,
                last_seq,
                live,
                read_offset: read_offset.unwrap_or(0) as u64,
                append: None,
            }),
            repair,
        ))
    }

    /// Reads records after `acked` from `self.read_offset` on, calling `take` with
    /// (seq, end offset, payload) until it returns `false`. Damage found now (the file
    /// changed under the spool) ends the read and is returned as `Err(offset)`.
    pub fn read_from(
        &self,
        acked: u64,
        max_payload: u32,
        mut take: impl FnMut(u64, u64, Vec<u8>) -> bool,
    ) -> Result<Result<(), u64>, SpoolError> {
        let read_error = |source| SpoolError::Read {
            path: self.path.clone(),
            source,
        };
        let mut file = File::open(&self.path).map_err(read_error)?;
        file.seek(SeekFrom::Start(self.read_offset))
            .map_err(read_error)?;
        let mut reader = std::io::BufReader::with_capacity(
            64 * 1024,
            file.take(self.bytes - self.read_offset.min(self.bytes)),
        );
        let mut offset = self.read_offset;
        let mut frame = Vec::new();
        while offset < self.bytes {
            frame.clear();
            frame.resize(HEADER_BYTES, 0);
            if reader.read_exact(&mut frame).is_err() {
                return Ok(Err(offset));
            }
            let len = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if frame[0..4] != record::MAGIC || len > max_payload {
                return Ok(Err(offset));
            }
            frame.resize(HEADER_BYTES + len as usize, 0);
            if reader.read_exact(&mut frame[HEADER_BYTES..]).is_err() {
                return Ok(Err(offset));
            }
            let Decoded::Record(found) = record::decode(&frame, 0, max_payload) else {
                return Ok(Err(offset));
            };
            let (seq, end) = (found.seq, offset + frame.len() as u64);
            offset = end;
            if seq <= acked {
                continue;
            }
            let payload = frame.split_off(HEADER_BYTES);
            if !take(seq, end, payload) {
                break;
            }
        }
        Ok(Ok(()))
    }

    /// Keeps only the records whose minute (`time_ms / 60 000`) is even: "every other
    /// minute". Returns how many records were removed; the file is replaced atomically.
    pub fn downsample(&mut self, dir: &Path, max_payload: u32) -> Result<u64, SpoolError> {
        let bytes = fs::read(&self.path).map_err(|source| SpoolError::Read {
            path: self.path.clone(),
            source,
        })?;
        let durable = &bytes[..(self.bytes as usize).min(bytes.len())];
        let mut kept = Vec::with_capacity(durable.len() / 2);
        let (mut n_kept, mut n_removed, mut first_seq, mut last_seq) = (0u64, 0u64, 0, 0);
        for found in Scan::new(durable, max_payload) {
            if found.time_ms.div_euclid(60_000) % 2 == 0 {
                kept.extend_from_slice(&durable[found.offset..found.end]);
                n_kept += 1;
                if first_seq == 0 {
                    first_seq = found.seq;
                }
                last_seq = found.seq;
            } else {
                n_removed += 1;
            }
        }
        let new_path = dir.join(file_name(self.lane, self.id, true));
        if n_kept > 0 {
            replace_file(&new_path, &kept)?;
        }
        if new_path != self.path {
            fs::remove_file(&self.path).map_err(|source| SpoolError::Remove {
                path: self.path.clone(),
                source,
            })?;
        }
        self.path = new_path;
        self.downsampled = true;
        self.bytes = kept.len() as u64;
        self.live = n_kept;
        self.read_offset = 0;
        if n_kept > 0 {
            self.first_seq = first_seq;
            self.last_seq = last_seq;
        }
        Ok(n_removed)
    }
}

/// Writes `contents` to `<target>.tmp`, fsyncs it, renames it over `target` and
/// fsyncs the directory.
pub fn replace_file(target: &Path, contents: &[u8]) -> Result<(), SpoolError> {
    let mut tmp_name = target.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(target, source));
    }
    if let Some(dir) = target.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = file_name(Lane::Rollup, 42, false);
        assert_eq!(name, "rollup-00000000000000000042.seg");
        assert_eq!(parse_name(&name), Some((Lane::Rollup, 42, false)));
        let name = file_name(Lane::Critical, 7, true);
        assert_eq!(parse_name(&name), Some((Lane::Critical, 7, true)));
        assert_eq!(parse_name("rollup-x.seg"), None);
        assert_eq!(parse_name("acked.cursor"), None);
        assert_eq!(parse_name("rollup-00000000000000000042.seg.tmp"), None);
    }
}
