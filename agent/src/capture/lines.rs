//! Splits a byte stream into lines of bounded size, keeping each line's stream offset.
//!
//! Pure (no I/O). A line longer than the cap keeps its first `max_line_bytes`
//! bytes and the rest is skipped up to the next newline, so a guest printing a
//! 1 GiB line or binary garbage without newlines costs at most the cap.

use memchr::memchr;

/// One line of the stream, without its `\n` (and without a trailing `\r`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Stream offset of the line's first byte.
    pub start: u64,
    /// Stream offset just past the line's `\n`.
    pub end: u64,
    /// At most `max_line_bytes` bytes.
    pub bytes: Vec<u8>,
    /// The line was longer than the cap; the rest was dropped.
    pub truncated: bool,
}

/// Incremental line splitter with a per-line memory cap.
#[derive(Debug)]
pub struct LineSplitter {
    max_line_bytes: usize,
    /// The unfinished line so far (at most `max_line_bytes`).
    partial: Vec<u8>,
    /// Stream offset where the unfinished line started.
    partial_start: u64,
    /// The unfinished line went over the cap: drop bytes until its newline.
    skipping: bool,
    /// Stream offset of the next byte to come.
    position: u64,
}

impl LineSplitter {
    /// A splitter whose next byte has stream offset `position`.
    pub fn new(max_line_bytes: usize, position: u64) -> Self {
        LineSplitter {
            max_line_bytes: max_line_bytes.max(1),
            partial: Vec::new(),
            partial_start: position,
            skipping: false,
            position,
        }
    }

    /// Stream offset of the next byte to come.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Where a reader that lost this splitter should start again so that no
    /// line is lost: the start of the unfinished line.
    pub fn resume_offset(&self) -> u64 {
        self.partial_start
    }

    /// Bytes held for the unfinished line (never more than the cap).
    pub fn held_bytes(&self) -> usize {
        self.partial.len()
    }

    /// Drops the unfinished line and continues at stream offset `position`
    /// (after a truncation or a switch to another file).
    pub fn reset(&mut self, position: u64) {
        self.partial.clear();
        self.partial.shrink_to(self.max_line_bytes.min(4096));
        self.partial_start = position;
        self.skipping = false;
        self.position = position;
    }

    /// Feeds `chunk`; completed lines are appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Line>) {
        while !chunk.is_empty() {
            let newline = memchr(b'\n', chunk);
            let (piece, consumed) = match newline {
                Some(index) => (&chunk[..index], index + 1),
                None => (chunk, chunk.len()),
            };
            if !self.skipping {
                let room = self.max_line_bytes - self.partial.len();
                if piece.len() > room {
                    self.partial.extend_from_slice(&piece[..room]);
                    self.skipping = true;
                } else {
                    self.partial.extend_from_slice(piece);
                }
            }
            self.position += consumed as u64;
            chunk = &chunk[consumed..];
            if newline.is_some() {
                let mut bytes = std::mem::take(&mut self.partial);
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                out.push(Line {
                    start: self.partial_start,
                    end: self.position,
                    bytes,
                    truncated: self.skipping,
                });
                self.partial_start = self.position;
                self.skipping = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<Line>, LineSplitter) {
        let mut splitter = LineSplitter::new(max, 100);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, &mut out);
        }
        (out, splitter)
    }

    #[test]
    fn lines_keep_stream_offsets_across_chunks() {
        let (lines, splitter) = split(64, &[b"ab", b"c\r\nde\nf"]);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].start, lines[0].end, &lines[0].bytes[..]),
            (100, 105, &b"abc"[..])
        );
        assert_eq!(
            (lines[1].start, lines[1].end, &lines[1].bytes[..]),
            (105, 108, &b"de"[..])
        );
        assert_eq!(splitter.resume_offset(), 108);
        assert_eq!(splitter.position(), 109);
    }

    #[test]
    fn long_line_is_capped_and_the_rest_skipped() {
        let long = vec![b'x'; 10_000];
        let (lines, splitter) = split(16, &[&long, &long, b"\nok\n"]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].bytes.len(), 16);
        assert!(lines[0].truncated);
        assert_eq!(lines[0].end, 100 + 20_001);
        assert_eq!(lines[1].bytes, b"ok");
        assert!(!lines[1].truncated);
        assert_eq!(splitter.held_bytes(), 0);
    }

    #[test]
    fn unfinished_line_is_held_within_the_cap() {
        let garbage = vec![0xffu8; 1 << 20];
        let (lines, splitter) = split(16, &[&garbage]);
        assert!(lines.is_empty());
        assert_eq!(splitter.held_bytes(), 16);
        assert_eq!(splitter.resume_offset(), 100);
    }
}
