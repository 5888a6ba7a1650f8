//! One `/dev/kmsg` record: where records come from, its sequence number, and the
//! kernel's `\xNN` escaping of its text undone.

use std::fs::File;
use std::io::Read;

/// Where records come from: `/dev/kmsg` (one record per `read`), or a test double.
pub trait RecordSource {
    /// Reads one record into `buf`. `Ok(0)` or `WouldBlock`: nothing more for now.
    fn read_record(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl RecordSource for File {
    fn read_record(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read(buf)
    }
}

/// One parsed `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// `<header>;<unescaped text>`, without the continuation lines.
    pub line: Vec<u8>,
}

/// Parses one record; None for garbage (no header, no sequence number).
pub fn parse_record(bytes: &[u8]) -> Option<Record> {
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let semi = memchr::memchr(b';', first)?;
    let header = &first[..semi];
    let mut fields = header.split(|&b| b == b',');
    let _prio = fields.next()?;
    let seq = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let mut line = header.to_vec();
    line.push(b';');
    line.extend_from_slice(&unescape(&first[semi + 1..]));
    Some(Record { seq, line })
}

/// Undoes the kernel's `\xNN` escaping of record text (and of systemd unit names).
pub(super) fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' && text.get(i + 1) == Some(&b'x') {
            if let Some(byte) = text
                .get(i + 2..i + 4)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_escaping_is_undone() {
        let record = parse_record(b"6,7,8,-;a\\x5cx2d b\\x0a\n SUBSYSTEM=x\n").expect("parses");
        assert_eq!(record.seq, 7);
        assert_eq!(record.line, b"6,7,8,-;a\\x2d b\n".to_vec());
    }
}
