//! One spool record on disk: framing, checksum, and scanning a segment with
//! damage recovery (see the layout in the [module docs](super)).
//!
//! Scanning never fails: a damaged region (bad checksum, impossible length, torn
//! tail) is counted and skipped by searching for the next magic whose record
//! checks out, so every intact record around the damage survives.

use std::ops::Range;

/// Marks the start of every record (and carries the format version).
pub const MAGIC: [u8; 4] = *b"BLR1";
/// magic (4) + payload length (4) + CRC-32 (4) + sequence number (8) + time (8).
pub const HEADER_BYTES: usize = 28;

/// A decoded record borrowed from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Byte range of the whole record (header and payload) in the buffer.
    pub offset: usize,
    pub end: usize,
    pub seq: u64,
    pub time_ms: i64,
    pub payload: &'a [u8],
}

/// What the bytes at one offset hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record(RecordRef<'a>),
    /// A plausible header whose payload runs past the end of the buffer.
    Incomplete,
    /// Not a record: wrong magic, impossible length or checksum mismatch.
    Damaged,
}

/// Appends one framed record to `out`.
pub fn encode(seq: u64, time_ms: i64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let len_bytes = len.to_le_bytes();
    let seq_bytes = seq.to_le_bytes();
    let time_bytes = time_ms.to_le_bytes();
    let crc = checksum(&len_bytes, &seq_bytes, &time_bytes, payload);
    out.reserve(HEADER_BYTES + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(&time_bytes);
    out.extend_from_slice(payload);
}

/// The framed size of a payload of `payload_len` bytes.
pub fn framed_len(payload_len: usize) -> u64 {
    (HEADER_BYTES + payload_len) as u64
}

/// Decodes the record starting at `offset` of `buf`.
pub fn decode(buf: &[u8], offset: usize, max_payload: u32) -> Decoded<'_> {
    let Some(header) = buf.get(offset..offset + HEADER_BYTES) else {
        return if buf.len() > offset
            && buf[offset..].starts_with(&MAGIC[..(buf.len() - offset).min(4)])
        {
            Decoded::Incomplete
        } else {
            Decoded::Damaged
        };
    };
    if header[0..4] != MAGIC {
        return Decoded::Damaged;
    }
    let len = u32::from_le_bytes(array4(&header[4..8]));
    if len > max_payload {
        return Decoded::Damaged;
    }
    let end = offset + HEADER_BYTES + len as usize;
    let Some(payload) = buf.get(offset + HEADER_BYTES..end) else {
        return Decoded::Incomplete;
    };
    let crc = u32::from_le_bytes(array4(&header[8..12]));
    if crc != checksum(&header[4..8], &header[12..20], &header[20..28], payload) {
        return Decoded::Damaged;
    }
    let seq = u64::from_le_bytes(array8(&header[12..20]));
    let time_ms = i64::from_le_bytes(array8(&header[20..28]));
    Decoded::Record(RecordRef {
        offset,
        end,
        seq,
        time_ms,
        payload,
    })
}

/// Iterates over the intact records of a whole segment, skipping damage.
#[derive(Debug)]
pub struct Scan<'a> {
    buf: &'a [u8],
    pos: usize,
    max_payload: u32,
    /// Damaged regions skipped so far, as byte ranges.
    pub damage: Vec<Range<usize>>,
}

impl<'a> Scan<'a> {
    pub fn new(buf: &'a [u8], max_payload: u32) -> Self {
        Self {
            buf,
            pos: 0,
            max_payload,
            damage: Vec::new(),
        }
    }

    /// Bytes in damaged regions so far.
    pub fn damaged_bytes(&self) -> u64 {
        self.damage
            .iter()
            .map(|range| (range.end - range.start) as u64)
            .sum()
    }

    /// Whether the only damage is one region that runs to the end of the buffer
    /// (a torn final write), which truncation repairs.
    pub fn damage_is_tail_only(&self) -> bool {
        match self.damage.as_slice() {
            [] => true,
            [only] => only.end == self.buf.len(),
            _ => false,
        }
    }

    fn resync(&mut self, from: usize) {
        let search_from = from + 1;
        let next = self
            .buf
            .get(search_from..)
            .and_then(|rest| {
                memchr::memmem::find_iter(rest, &MAGIC)
                    .map(|found| search_from + found)
                    .find(|&candidate| {
                        matches!(
                            decode(self.buf, candidate, self.max_payload),
                            Decoded::Record(_)
                        )
                    })
            })
            .unwrap_or(self.buf.len());
        self.damage.push(from..next);
        self.pos = next;
    }
}

impl<'a> Iterator for Scan<'a> {
    type Item = RecordRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pos < self.buf.len() {
            match decode(self.buf, self.pos, self.max_payload) {
                Decoded::Record(record) => {
                    self.pos = record.end;
                    return Some(record);
                }
                Decoded::Incomplete | Decoded::Damaged => self.resync(self.pos),
            }
        }
        None
    }
}

fn checksum(len: &[u8], seq: &[u8], time: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(seq);
    hasher.update(time);
    hasher.update(payload);
    hasher.finalize()
}

fn array4(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0; 4];
    out.copy_from_slice(&bytes[..4]);
    out
}

fn array8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&bytes[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(n: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for seq in 1..=n {
            encode(
                seq,
                seq as i64 * 1000,
                format!("payload {seq} BLR1").as_bytes(),
                &mut buf,
            );
        }
        buf
    }

    #[test]
    fn records_round_trip() {
        let buf = segment(3);
        let seqs: Vec<u64> = Scan::new(&buf, 1024).map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let Decoded::Record(first) = decode(&buf, 0, 1024) else {
            panic!("first record decodes");
        };
        assert_eq!(first.payload, b"payload 1 BLR1");
        assert_eq!(first.time_ms, 1000);
    }

    #[test]
    fn a_torn_tail_is_skipped_and_reported_as_tail_damage() {
        let buf = segment(5);
        for cut in 1..buf.len() {
            let mut scan = Scan::new(&buf[..cut], 1024);
            let n = scan.by_ref().count();
            let whole = buf.len() / 5;
            assert_eq!(n, cut / whole, "cut at {cut}");
            assert!(scan.damage_is_tail_only(), "cut at {cut}");
            assert_eq!(scan.damaged_bytes() as usize, cut % whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_loses_only_its_record() {
        let mut buf = segment(5);
        let whole = buf.len() / 5;
        buf[2 * whole + HEADER_BYTES + 3] ^= 0x40;
        let mut scan = Scan::new(&buf, 1024);
        let seqs: Vec<u64> = scan.by_ref().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 4, 5]);
        assert_eq!(scan.damage, vec![2 * whole..3 * whole]);
        assert!(!scan.damage_is_tail_only());
    }

    #[test]
    fn an_impossible_length_is_damage() {
        let mut buf = segment(2);
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let seqs: Vec<u64> = Scan::new(&buf, 1024).map(|r| r.seq).collect();
        assert_eq!(seqs, [2]);
    }
}
