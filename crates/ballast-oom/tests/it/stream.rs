//! `StreamParser` finds what `parse` finds on the whole input, whatever the window
//! size and however the input is cut into reads, and holds a bounded window.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use crate::common;

use ballast_oom::limits::{MAX_WINDOW_BYTES, WINDOW_BYTES};
use ballast_oom::{Diagnostic, Report, StreamParser};

/// Feeds `input` in reads of `read_bytes` through a parser with `window` bytes.
fn streamed(input: &[u8], window: usize, read_bytes: usize) -> (Vec<Report>, Vec<Diagnostic>) {
    let mut parser = StreamParser::with_window(window);
    let mut reports = Vec::new();
    for piece in input.chunks(read_bytes.max(1)) {
        reports.extend(parser.push(piece));
    }
    let (rest, diagnostics) = parser.finish();
    reports.extend(rest);
    (reports, diagnostics)
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    common::fixture_logs()
        .into_iter()
        .map(|path| {
            let name = path.display().to_string();
            (name, std::fs::read(&path).expect("fixture"))
        })
        .collect()
}

#[test]
fn every_fixture_streams_to_the_same_reports_in_small_windows() {
    for (name, input) in fixtures() {
        let whole = ballast_oom::parse(&input);
        for window in [512, 4096, 1 << 20] {
            let (reports, _) = streamed(&input, window, 777);
            assert_eq!(reports, whole.reports, "{name}, window {window}");
        }
    }
}

#[test]
fn all_fixtures_in_one_log_stream_to_the_same_reports_and_notes() {
    // Each fixture starts on its own line; small windows cut reports everywhere. The
    // transport-encoded ones are left out: one of them would decode the whole log.
    let mut log = Vec::new();
    let encoded = |input: &[u8]| {
        let has = |needle: &[u8]| input.windows(needle.len()).any(|w| w == needle);
        has(b"#012") || has(b"=3D")
    };
    for (_, input) in fixtures().into_iter().filter(|(_, input)| !encoded(input)) {
        log.extend_from_slice(&input);
        if !log.ends_with(b"\n") {
            log.push(b'\n');
        }
    }
    let whole = ballast_oom::parse(&log);
    assert!(
        whole.reports.len() > 20,
        "the log holds the fixtures' reports: {}",
        whole.reports.len()
    );
    for window in [4096, 64 * 1024] {
        let (reports, diagnostics) = streamed(&log, window, 4093);
        assert_eq!(reports.len(), whole.reports.len(), "window {window}");
        assert_eq!(reports, whole.reports, "window {window}");
        assert_eq!(diagnostics, whole.diagnostics, "window {window}");
    }
}

#[test]
fn offsets_and_line_numbers_are_the_streams() {
    let seed = include_bytes!("../fixtures/oom/debian9-kvm-1g-tor.log");
    let mut log = Vec::new();
    for n in 0..200_000 {
        log.extend_from_slice(format!("[ {n}.000000] eth0: link up\n").as_bytes());
    }
    let first_line = 200_001;
    let start = log.len();
    log.extend_from_slice(seed);
    let (reports, _) = streamed(&log, 64 * 1024, 65_536);
    let [report] = reports.as_slice() else {
        panic!("one report, got {}", reports.len());
    };
    assert_eq!(report.span.start_byte, start);
    assert_eq!(report.span.first_line, first_line);
    assert_eq!(report.killed.as_ref().map(|k| k.pid), Some(1439));
}

#[test]
fn the_window_never_grows_past_its_limit_on_a_report_that_never_ends() {
    // A task table longer than the largest window: the report does not end in one.
    let mut parser = StreamParser::new();
    parser.push(b"[ 1.0] tor invoked oom-killer: gfp_mask=0x24201ca, order=0, oom_score_adj=0\n");
    parser.push(
        b"[ 1.0] [ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name\n",
    );
    let mut most = parser.window_bytes();
    let mut row = Vec::new();
    let mut reports = Vec::new();
    for pid in 0..400_000u32 {
        row.clear();
        row.extend_from_slice(
            format!("[ 1.0] [{pid:>5}]  1000 {pid:>5}    24521     1012      48       0             0 worker\n")
                .as_bytes(),
        );
        reports.extend(parser.push(&row));
        most = most.max(parser.window_bytes());
    }
    let (rest, diagnostics) = parser.finish();
    reports.extend(rest);
    assert!(most <= MAX_WINDOW_BYTES, "window grew to {most}");
    assert!(most > WINDOW_BYTES, "an open report grows the window");
    assert_eq!(reports.len(), 1, "one report, cut");
    assert!(
        diagnostics.iter().any(|d| d.message.contains("report cut")),
        "{diagnostics:?}"
    );
}

#[test]
fn a_line_of_forged_headers_streams_to_the_same_reports_a_few_thousand_at_a_time() {
    use ballast_oom::limits::WINDOW_REPORTS;
    // One report per header: more than a window may build, mid-stream and at the end.
    let count = 3 * WINDOW_REPORTS + 17;
    let mut line = b"tor invoked oom-killer: gfp_mask=0x0, order=0 ".repeat(count);
    line.push(b'\n');
    let mut input = line.clone();
    input.extend_from_slice(&line);
    let whole = ballast_oom::parse(&input);
    assert_eq!(whole.reports.len(), 2 * count);
    // 512 KiB windows fill up mid-stream; one 8 MiB window holds it all until the end.
    for window in [512 * 1024, WINDOW_BYTES] {
        let (reports, _) = streamed(&input, window, 1 << 16);
        assert_eq!(reports.len(), whole.reports.len(), "window {window}");
        assert_eq!(reports, whole.reports, "window {window}");
    }
}

#[test]
fn a_window_that_ends_inside_a_reports_last_line_leaves_the_report_whole() {
    // A window ends inside a line still being read. Half a grep-prefixed line
    // (`/var/log/kern.log-2018`) is no kernel line: it must not end the report before
    // its oom_reaper line, whatever byte the window ends on.
    let dir = common::fixture_dir();
    let report = std::fs::read(dir.join("transport-grep-h-path-debian9-tor.log")).expect("fixture");
    let window = 16 * 1024;
    let last_line = report[..report.len() - 1]
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |at| at + 1);
    for cut_inside in 1..(report.len() - last_line) {
        // Padding puts the window's end `cut_inside` bytes into the report's last line.
        let padding = window - last_line - cut_inside;
        let mut log = vec![b'x'; padding - 1];
        log.push(b'\n');
        log.extend_from_slice(&report);
        let whole = ballast_oom::parse(&log).reports;
        let (reports, _) = streamed(&log, window, window);
        assert_eq!(
            reports, whole,
            "window ends {cut_inside} bytes into the last line"
        );
    }
}

#[test]
fn a_window_that_ends_between_a_wrapped_line_and_its_continuation_leaves_the_report_whole() {
    // The fedora mail's last line is a wrapped oom_reaper line: `... now anon-rss:0kB, `
    // then `file-rss:0kB, shmem-rss:0kB` on the next physical line. A window that ends
    // at any byte of the report's last two rows must give the whole input's report, the
    // continuation joined.
    let dir = common::fixture_dir();
    let report = std::fs::read(dir.join("4.9-4.10-kvm-fedora-email-wrapped.log")).expect("fixture");
    let window = 16 * 1024;
    let rows: Vec<usize> = report
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'\n')
        .map(|(at, _)| at + 1)
        .collect();
    let reaper = rows[rows.len() - 3];
    for cut_at in reaper + 1..report.len() {
        let padding = window - cut_at;
        let mut log = vec![b'x'; padding - 1];
        log.push(b'\n');
        log.extend_from_slice(&report);
        let whole = ballast_oom::parse(&log).reports;
        let (reports, _) = streamed(&log, window, window);
        assert_eq!(reports, whole, "window ends at byte {cut_at} of the report");
    }
}
