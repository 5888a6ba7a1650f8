//! Fuzz target: the agent's serial capture path on arbitrary console bytes.
//!
//! What a guest writes to its serial console goes through the agent's
//! `LineSplitter` (bounded lines) and `Detector` (report window, settling) in
//! chunks of varying size, with time moving on, as the serial tailer feeds them;
//! the same bytes then go through the guest-agent path (`take_new` on dmesg output).
//! Any panic is a bug, and so is breaking a memory bound: a line above the line
//! cap, an unfinished line above it, a window above its cap plus one line, a
//! report text above `max_raw_bytes`, or stream offsets that go backwards.
#![no_main]

use std::time::{Duration, Instant};

use ballast_agent::capture::detect::{Detector, DetectorConfig};
use ballast_agent::capture::guest_agent::{take_new, DmesgCursor};
use ballast_agent::capture::lines::LineSplitter;
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 512;
const WINDOW: usize = 16 * 1024;
const MAX_RAW: usize = 4 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size (how much one poll reads), the rest is the console.
    let Some((&first, console)) = data.split_first() else {
        return;
    };
    let chunk_size = usize::from(first % 64) + 1;
    let start = Instant::now();
    let config = DetectorConfig {
        window_bytes: WINDOW,
        grace_lines: 8,
        grace: Duration::from_secs(1),
        headless_timeout: Duration::from_secs(10),
        max_raw_bytes: MAX_RAW,
    };
    let mut splitter = LineSplitter::new(MAX_LINE, 0);
    let mut detector = Detector::new(config, 0, 0);
    let mut lines = Vec::new();
    let mut last_end = 0u64;
    for (poll, chunk) in console.chunks(chunk_size).enumerate() {
        let now = start + Duration::from_millis(u64::try_from(poll).unwrap_or(u64::MAX) * 300);
        lines.clear();
        splitter.push(chunk, &mut lines);
        assert!(splitter.held_bytes() <= MAX_LINE);
        for line in lines.drain(..) {
            assert!(line.bytes.len() <= MAX_LINE);
            assert!(line.start >= last_end && line.end > line.start);
            last_end = line.end;
            detector.push(line, now);
            assert!(detector.window_bytes() <= WINDOW + MAX_LINE + 1);
        }
        for detected in detector.poll(now) {
            assert!(detected.raw.len() <= MAX_RAW);
        }
    }
    // Long after the last byte: whatever waited settles, within the same bounds.
    for detected in detector.poll(start + Duration::from_secs(3600)) {
        assert!(detected.raw.len() <= MAX_RAW);
    }

    // The same bytes as a guest agent's dmesg output, read twice (a repeated fetch).
    let mut cursor = DmesgCursor::default();
    for _ in 0..2 {
        for report in take_new(&mut cursor, console, MAX_RAW).reports {
            assert!(report.raw.len() <= MAX_RAW);
        }
    }
});
