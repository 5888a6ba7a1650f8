//! Fuzz target: `ballast_oom::StreamParser`, the path of `ballast-agent explain FILE`,
//! and `ballast_oom::LiveParser`, the agent's capture paths, on the same pieces.
//!
//! The first two bytes pick the starting window (64 B to 16 KiB) and the read size, so
//! windows end everywhere: inside lines, reports and joined lines. Any panic is a bug,
//! and so is a window past `MAX_WINDOW_BYTES`, a report outside the input or out of
//! order, or output that breaks the bounds in `ballast_oom::limits`; for the live
//! parser, a window past its cap plus one piece, or stream positions that go back.
#![no_main]

use ballast_oom::limits::{MAX_DIAGNOSTICS, MAX_REPORTS, MAX_STORED_TASKS, MAX_WINDOW_BYTES};
use ballast_oom::{LiveConfig, LiveParser, StreamParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [window, read, input @ ..] = data else {
        return;
    };
    let window = 64 << (usize::from(*window) % 9);
    let read = usize::from(*read).max(1);
    let mut parser = StreamParser::with_window(window);
    let mut reports = Vec::new();
    for piece in input.chunks(read) {
        reports.extend(parser.push(piece));
        assert!(parser.window_bytes() <= MAX_WINDOW_BYTES);
    }
    let (rest, diagnostics) = parser.finish();
    reports.extend(rest);
    assert!(reports.len() <= MAX_REPORTS);
    assert!(diagnostics.len() <= MAX_DIAGNOSTICS);
    for report in &reports {
        assert!(report.span.start_byte <= report.span.end_byte);
        assert!(report.span.end_byte <= input.len());
        assert!(report.span.first_line >= 1);
        assert!(report.top_tasks.len() <= MAX_STORED_TASKS);
        std::hint::black_box(ballast_oom::analyze(report, None));
    }

    // Followed as a live log: polled after every piece, the last report held back.
    let config = LiveConfig {
        window_bytes: window,
        idle_lines: Some(8),
        max_text_bytes: 4096,
    };
    let mut live = LiveParser::new(config, 0);
    let mut at = 0u64;
    let mut emitted = 0u64;
    for piece in input.chunks(read) {
        live.push_text(at, piece, ());
        at += piece.len() as u64;
        assert!(live.window_bytes() <= window + read);
        for found in live.poll(|pending| !pending.last) {
            assert!(found.start >= emitted && found.end <= at && found.text.len() <= 4096);
            emitted = found.end;
        }
    }
    live.end_line();
    for found in live.poll(|_| true) {
        assert!(found.start >= emitted && found.end <= at && found.text.len() <= 4096);
        emitted = found.end;
    }
});
