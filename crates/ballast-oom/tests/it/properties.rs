//! Property tests: the parser on arbitrary, damaged and rewritten input.
//!
//! 1. Any bytes (and byte soup made of kernel tokens): no panic, output bounded by
//!    [`ballast_oom::limits`], every span inside the input, no more reports than
//!    lines holding a report anchor.
//! 2. Real fixtures damaged at random (byte flips, truncation at every position of
//!    the founding report, line joins, CRLF, random line prefixes): the same
//!    invariants.
//! 3. Transparent rewrites of real fixtures (CRLF line ends, a dmesg or syslog
//!    prefix on every line, all lines joined with spaces): the same kernel,
//!    trigger, victim and verdict as the original.
//!
//! 4. Any input followed as a live log (`LiveParser`), cut into pieces anywhere: the
//!    same reports as the parse of the whole input; for real fixtures also when
//!    polled after every piece (reports out as soon as a later one follows them).
//!
//! Case counts are small so the whole file runs in a few seconds in debug; the
//! fuzzer (`scripts/fuzz.sh`) is where the long random runs happen.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use crate::common;

use std::path::Path;
use std::sync::OnceLock;

use ballast_oom::limits::{
    MAX_DIAGNOSTICS, MAX_LINE_BYTES, MAX_MEMCG_STATS, MAX_NAME_BYTES, MAX_STORED_TASKS, MAX_ZONES,
};
use ballast_oom::{kernel_reports, Explanation, LiveConfig, LiveParser, LiveReport, Verdict};
use proptest::prelude::*;
use serde_json::Value;

/// The report every design decision was checked against.
const FOUNDING: &str = "debian9-kvm-1g-tor.log";

/// Fixtures without any line prefix: a dmesg or syslog prefix can go in front.
const BARE: &[&str] = &[
    "arm32-64mb-rascal-bare.log",
    "4.8-qemu-balloon-highatomic-partial.log",
];

/// Fixtures whose every line is `[ seconds] text`: a syslog prefix can go in front.
const DMESG: &[&str] = &[
    "3.19-qemu-panic-no-killable.log",
    "4.4-memcg-v1-docker-dup-lines.log",
    "4.7-order3-fragmentation-highatomic.log",
    "5.2-memcg-v1-swap-oomkill-line.log",
    "5.4-arm64-64k-cma-panic-on-oom.log",
    "6.11-qemu-global-rss-anon-uid-cpu.log",
];

/// Serialized size one report may never exceed, whatever the input size.
const MAX_REPORT_JSON_BYTES: usize = 4 << 20;

/// Words one of which every report anchor contains (compared in lower case): `invoked
/// oom-killer`, `oom-kill:`, `Out of memory`, `Out of Memory`, `Killed process`, `no killable
/// processes`. Counting these instead of the scanner's exact anchors keeps the bound valid
/// when the scanner learns a new anchor spelling.
const ANCHOR_WORDS: [&[u8]; 4] = [b"oom", b"out of memory", b"killed process", b"killable"];

fn fixtures() -> &'static [(String, Vec<u8>)] {
    static FIXTURES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        common::fixture_logs()
            .into_iter()
            .map(|path| {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let text = std::fs::read(&path).expect("fixture readable");
                (name, text)
            })
            .collect()
    })
}

fn fixture(name: &str) -> &'static [u8] {
    fixtures()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, text)| text.as_slice())
        .unwrap_or_else(|| panic!("fixture {name} missing"))
}

/// What a rewrite that changes no kernel text must leave as it was.
#[derive(Debug, Clone, PartialEq)]
struct Facts {
    kernel: Option<String>,
    trigger: Option<String>,
    killed: Option<(u32, String)>,
    verdict: Verdict,
}

fn facts(input: &[u8]) -> Vec<Facts> {
    ballast_oom::explain(input)
        .reports
        .into_iter()
        .map(|explained| Facts {
            kernel: explained.report.kernel,
            trigger: explained.report.trigger.map(|trigger| trigger.comm),
            killed: explained
                .report
                .killed
                .map(|killed| (killed.pid, killed.comm)),
            verdict: explained.analysis.verdict,
        })
        .collect()
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(haystack, needle).count()
}

/// Undoes quoted-printable `=XX` and soft breaks, loosely: it may only create more anchors.
fn qp_decoded(input: &[u8]) -> Vec<u8> {
    let hex = |byte: u8| (byte as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        let rest = &input[index..];
        if rest.starts_with(b"=\r\n") {
            index += 3;
        } else if rest.starts_with(b"=\n") {
            index += 2;
        } else if let [b'=', high, low, ..] = rest {
            match (hex(*high), hex(*low)) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    index += 3;
                }
                _ => {
                    out.push(b'=');
                    index += 1;
                }
            }
        } else {
            out.push(rest[0]);
            index += 1;
        }
    }
    out
}

/// Upper bound on the reports `input` may yield: each report starts at its own line, and
/// that line holds an anchor, so an anchor word, before or after decoding.
fn anchor_bound(input: &[u8]) -> usize {
    let raw = input.to_ascii_lowercase();
    let decoded = qp_decoded(input).to_ascii_lowercase();
    ANCHOR_WORDS
        .iter()
        .map(|word| count(&raw, word).max(count(&decoded, word)))
        .sum()
}

/// Checks every invariant that holds for any input; returns the explanation for more checks.
fn check_invariants(input: &[u8]) -> Explanation {
    let explanation = ballast_oom::explain(input);
    assert!(explanation.diagnostics.len() <= MAX_DIAGNOSTICS);
    let bound = anchor_bound(input);
    assert!(
        explanation.reports.len() <= bound,
        "{} reports from {bound} anchors",
        explanation.reports.len()
    );
    // rsyslog `#012` and quoted-printable `=0A` (any case: `uid=0active_anon` reads as
    // one) decode to a line break, so they may add lines; line numbers count decoded lines.
    let max_line = memchr::memchr_iter(b'\n', input).count()
        + count(input, b"#012")
        + count(&input.to_ascii_lowercase(), b"=0a")
        + 1;
    for explained in &explanation.reports {
        let report = &explained.report;
        let span = &report.span;
        assert!(span.start_byte <= span.end_byte, "{span:?}");
        assert!(
            span.end_byte <= input.len(),
            "{span:?} past {}",
            input.len()
        );
        assert!(
            (1..=max_line).contains(&span.first_line),
            "{span:?}, {max_line} lines"
        );
        assert!(report.top_tasks.len() <= MAX_STORED_TASKS);
        assert!(report.zones.len() <= MAX_ZONES);
        assert!(report.nodes.len() <= MAX_ZONES);
        let names = report
            .trigger
            .iter()
            .map(|trigger| &trigger.comm)
            .chain(report.killed.iter().map(|killed| &killed.comm))
            .chain(report.top_tasks.iter().map(|task| &task.name))
            .chain(
                report
                    .memcg
                    .iter()
                    .flat_map(|m| m.oom.iter().chain(&m.task)),
            );
        for name in names {
            assert!(name.chars().count() <= MAX_NAME_BYTES, "name {name:?}");
        }
        if let Some(memcg) = &report.memcg {
            assert!(memcg.stats.len() <= MAX_MEMCG_STATS);
        }
        let json = serde_json::to_value(explained).expect("a report serializes");
        assert_strings_bounded(&json);
        let size = json.to_string().len();
        assert!(size <= MAX_REPORT_JSON_BYTES, "report JSON {size} bytes");
        // With host figures too: another code path through the analysis.
        let host = ballast_oom::HostBalloon {
            maximum_kb: Some(1 << 20),
            actual_kb: Some(1 << 19),
            deflate_on_oom: Some(false),
        };
        ballast_oom::analyze(report, Some(&host));
    }
    explanation
}

fn assert_strings_bounded(value: &Value) {
    match value {
        Value::String(text) => {
            assert!(
                text.chars().count() <= MAX_LINE_BYTES,
                "string of {} chars",
                text.chars().count()
            );
        }
        Value::Array(items) => items.iter().for_each(assert_strings_bounded),
        Value::Object(fields) => fields.values().for_each(assert_strings_bounded),
        _ => {}
    }
}

fn lines(text: &[u8]) -> Vec<&[u8]> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.split(|byte| *byte == b'\n').collect()
}

fn with_crlf(text: &[u8]) -> Vec<u8> {
    lines(text).join(&b"\r\n"[..])
}

fn joined_with_spaces(text: &[u8]) -> Vec<u8> {
    lines(text).join(&b" "[..])
}

/// Puts `prefix(line_index)` in front of every line.
fn prefixed(text: &[u8], prefix: impl Fn(usize) -> String) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 2);
    for (index, line) in lines(text).into_iter().enumerate() {
        out.extend_from_slice(prefix(index).as_bytes());
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// The founding report without its `Jan 4 10:04:40 <host> kernel: [53542.948247] ` prefixes.
fn founding_bare() -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines(fixture(FOUNDING)) {
        let body = memchr::memmem::find(line, b"] ").map_or(line, |at| &line[at + 2..]);
        out.extend_from_slice(body);
        out.push(b'\n');
    }
    out
}

/// A line prefix of one of the shapes real logs carry, in front of kernel text.
#[derive(Debug, Clone)]
enum PrefixStyle {
    Dmesg { secs: u32, micros: u32 },
    Syslog { day: u8, host: String },
    SyslogDmesg { day: u8, host: String, secs: u32 },
    Rfc3339 { host: String },
    DmesgWallclock { day: u8 },
    Priority { level: u8, secs: u32 },
}

impl PrefixStyle {
    fn render(&self, index: usize) -> String {
        let micros_at = |secs: u32, micros: u32| {
            let total = u64::from(secs) * 1_000_000 + u64::from(micros) + index as u64 * 13;
            format!("[{:5}.{:06}] ", total / 1_000_000, total % 1_000_000)
        };
        match self {
            PrefixStyle::Dmesg { secs, micros } => micros_at(*secs, *micros),
            PrefixStyle::Syslog { day, host } => format!("Jan {day:2} 10:04:40 {host} kernel: "),
            PrefixStyle::SyslogDmesg { day, host, secs } => {
                format!(
                    "Jan {day:2} 10:04:40 {host} kernel: {}",
                    micros_at(*secs, 0)
                )
            }
            PrefixStyle::Rfc3339 { host } => {
                format!("2024-01-04T10:04:40.{index:06}+00:00 {host} kernel: ")
            }
            PrefixStyle::DmesgWallclock { day } => format!("[Thu Jan {day:2} 10:04:40 2018] "),
            PrefixStyle::Priority { level, secs } => {
                format!("<{level}>{}", micros_at(*secs, 0))
            }
        }
    }

    /// Whether the style may go in front of lines that already carry `[ seconds] `.
    fn stacks_on_dmesg(&self) -> bool {
        matches!(
            self,
            PrefixStyle::Syslog { .. } | PrefixStyle::Rfc3339 { .. }
        )
    }
}

fn host_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,20}"
}

fn prefix_style() -> impl Strategy<Value = PrefixStyle> {
    prop_oneof![
        (0u32..4_000_000, 0u32..1_000_000)
            .prop_map(|(secs, micros)| PrefixStyle::Dmesg { secs, micros }),
        (1u8..=31, host_name()).prop_map(|(day, host)| PrefixStyle::Syslog { day, host }),
        (1u8..=31, host_name(), 0u32..4_000_000)
            .prop_map(|(day, host, secs)| PrefixStyle::SyslogDmesg { day, host, secs }),
        host_name().prop_map(|host| PrefixStyle::Rfc3339 { host }),
        (1u8..=31).prop_map(|day| PrefixStyle::DmesgWallclock { day }),
        (0u8..8, 0u32..4_000_000).prop_map(|(level, secs)| PrefixStyle::Priority { level, secs }),
    ]
}

/// Byte soup from the words reports are made of, so random input reaches deep parser states.
fn kernel_soup() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&str] = &[
        "invoked oom-killer: ",
        "gfp_mask=0x24201ca(GFP_HIGHUSER_MOVABLE), ",
        "order=3, ",
        "oom_score_adj=-1000",
        "CPU: 0 PID: 1439 Comm: tor Not tainted 4.9.0-4-amd64 #1",
        "Mem-Info:",
        "active_anon:125187 inactive_anon:2602 ",
        "free:12 free_pcp:0 free_cma:0",
        "Node 0 DMA32 free:44kB min:44kB low:55kB high:66kB present:1032064kB managed:982232kB",
        "lowmem_reserve[]: 0 0 0",
        "Node 0 DMA: 1*4kB (U) 2*8kB (H) 3*64kB = 44kB",
        "262010 pages RAM",
        "6920 pages reserved",
        "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
        "[ 1439]   109  1439   139276    93739     245        0             0 tor",
        "Out of memory: Kill process 1439 (tor) score 368 or sacrifice child",
        "Killed process 1439 (tor) total-vm:557104kB, anon-rss:374956kB",
        "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/a,task_memcg=/a,task=x,pid=1,uid=0",
        "Memory cgroup out of memory: Killed process 1 (x)",
        "memory: usage 1024kB, limit 1024kB, failcnt 9",
        "Memory cgroup stats for /a: cache:0KB rss:1024KB",
        "Kernel panic - not syncing: Out of memory and no killable processes...",
        "Jan  4 10:04:40 host kernel: ",
        "Jan  4 10:04:40 other sshd[1]: ",
        "[53542.948247] ",
        "<4>",
        "#012",
        "=3D",
        "=\n",
        "\n",
        "\r\n",
        " ",
        "\u{fffd}",
        "\0",
        "18446744073709551616",
        "-",
    ];
    let token = prop_oneof![
        4 => proptest::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..120).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_invariants(&input);
    }

    #[test]
    fn kernel_token_soup_never_panics(input in kernel_soup()) {
        check_invariants(&input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fixtures_with_flipped_bytes_never_panic(
        index in any::<proptest::sample::Index>(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..32),
    ) {
        let (_, original) = index.get(fixtures());
        let mut input = original.clone();
        for (at, byte) in flips {
            *at.get_mut(&mut input) = byte;
        }
        check_invariants(&input);
    }

    #[test]
    fn fixtures_with_random_line_damage_never_panic(
        index in any::<proptest::sample::Index>(),
        joins in proptest::collection::vec(any::<bool>(), 0..400),
        crlf in any::<bool>(),
        junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..8),
        style in prefix_style(),
    ) {
        let (_, original) = index.get(fixtures());
        let mut input = Vec::with_capacity(original.len() * 2);
        for (line_index, line) in lines(original).into_iter().enumerate() {
            match line_index % 3 {
                0 => input.extend_from_slice(style.render(line_index).as_bytes()),
                1 => input.extend_from_slice(&junk[line_index % junk.len()]),
                _ => {}
            }
            input.extend_from_slice(line);
            if joins.get(line_index).copied().unwrap_or(false) {
                input.push(b' ');
            } else if crlf {
                input.extend_from_slice(b"\r\n");
            } else {
                input.push(b'\n');
            }
        }
        check_invariants(&input);
    }

    #[test]
    fn fixtures_keep_their_facts_with_crlf_line_ends(index in any::<proptest::sample::Index>()) {
        let (name, original) = index.get(fixtures());
        prop_assert_eq!(facts(&with_crlf(original)), facts(original), "{}", name);
    }

    #[test]
    fn bare_fixtures_keep_their_facts_under_any_prefix(
        which in 0..BARE.len() + 1,
        style in prefix_style(),
    ) {
        let original = match BARE.get(which) {
            Some(name) => fixture(name).to_vec(),
            None => founding_bare(),
        };
        let rewritten = prefixed(&original, |index| style.render(index));
        prop_assert_eq!(facts(&rewritten), facts(&original));
    }

    #[test]
    fn dmesg_fixtures_keep_their_facts_under_a_syslog_prefix(
        which in 0..DMESG.len(),
        style in prefix_style().prop_filter("stacks on dmesg", PrefixStyle::stacks_on_dmesg),
    ) {
        let original = fixture(DMESG[which]);
        let rewritten = prefixed(original, |index| style.render(index));
        prop_assert_eq!(facts(&rewritten), facts(original), "{}", DMESG[which]);
    }
}

/// `input` pushed into a [`LiveParser`] in pieces cut at `cuts`, polled after every
/// piece (`poll_each`: holding back the window's last report, which more lines may
/// still extend) and once at the end, letting everything out.
fn followed(input: &[u8], cuts: &[proptest::sample::Index], poll_each: bool) -> Vec<LiveReport> {
    let config = LiveConfig {
        window_bytes: usize::MAX,
        idle_lines: None,
        max_text_bytes: usize::MAX,
    };
    let mut live = LiveParser::new(config, 0);
    let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len() + 1)).collect();
    at.push(input.len());
    at.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for to in at {
        live.push_text(from as u64, &input[from..to], ());
        from = to;
        if poll_each {
            out.extend(live.poll(|pending| !pending.last));
        }
    }
    live.end_line();
    out.extend(live.poll(|_| true));
    out
}

/// [`followed`] returns what [`ballast_oom::parse`] finds in the whole input (the
/// kernel's reports), each with its own text at its own stream position. (A report's
/// `span` is within the text a poll parsed, which starts at a line of the stream.)
fn assert_follows_parse(input: &[u8], out: &[LiveReport]) -> Result<(), TestCaseError> {
    let whole = kernel_reports(ballast_oom::parse(input).reports);
    prop_assert_eq!(out.len(), whole.len());
    for (found, expected) in out.iter().zip(&whole) {
        let mut report = found.report.clone();
        report.span = expected.span.clone();
        prop_assert_eq!(&report, expected);
        let span = &input[expected.span.start_byte..expected.span.end_byte];
        prop_assert_eq!(&found.text[..], span);
        prop_assert!(found.start as usize <= expected.span.start_byte);
        prop_assert!(found.end as usize >= expected.span.end_byte);
        prop_assert!(found.end as usize <= input.len());
        prop_assert_eq!(found.has_end, expected.has_end());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_followed_input_cut_anywhere_reads_as_the_whole_parse(
        input in prop_oneof![
            kernel_soup(),
            proptest::collection::vec(any::<u8>(), 0..2048),
            any::<proptest::sample::Index>().prop_map(|index| index.get(fixtures()).1.clone()),
        ],
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24),
    ) {
        assert_follows_parse(&input, &followed(&input, &cuts, false))?;
    }

    #[test]
    fn a_fixture_followed_and_polled_at_every_cut_reads_as_the_whole_parse(
        index in any::<proptest::sample::Index>(),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24),
    ) {
        let (name, input) = index.get(fixtures());
        let out = followed(input, &cuts, true);
        assert_follows_parse(input, &out).map_err(|error| {
            TestCaseError::fail(format!("{name}: {error}"))
        })?;
    }
}

#[test]
fn the_founding_report_keeps_its_facts_when_bare() {
    let original = facts(fixture(FOUNDING));
    assert_eq!(original.len(), 1);
    assert_eq!(facts(&founding_bare()), original);
}

#[test]
fn the_founding_report_keeps_its_facts_joined_into_one_line() {
    let original = fixture(FOUNDING);
    assert_eq!(facts(&joined_with_spaces(original)), facts(original));
    assert_eq!(
        facts(fixture("debian9-kvm-1g-tor.joined.log")),
        facts(original)
    );
}

#[test]
fn prefixed_fixtures_keep_their_facts_joined_into_one_line() {
    for name in DMESG.iter().chain([&FOUNDING]) {
        let original = fixture(name);
        assert_eq!(
            facts(&joined_with_spaces(original)),
            facts(original),
            "{name}"
        );
    }
}

#[test]
fn the_founding_report_truncated_anywhere_never_panics() {
    let original = fixture(FOUNDING);
    let full = facts(original);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let full = &full;
            scope.spawn(move || {
                for cut in (thread..=original.len()).step_by(threads) {
                    let truncated = &original[..cut];
                    let explanation = check_invariants(truncated);
                    assert!(explanation.reports.len() <= 1, "cut at {cut}");
                    // Once the kill line is complete, the report is the whole story.
                    if cut == original.len() {
                        assert_eq!(&facts(truncated), full);
                    }
                }
            });
        }
    });
}

/// Every number in `value` (a report as JSON), with its JSON path; arrays of
/// `[key, number]` pairs (memcg stats) keep the key in the path.
fn numbers(value: &Value, path: &str, out: &mut Vec<(String, u64)>) {
    match value {
        Value::Number(number) => out.extend(number.as_u64().map(|n| (path.to_string(), n))),
        Value::Object(fields) => {
            for (key, field) in fields {
                numbers(field, &format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                match item.as_array().map(Vec::as_slice) {
                    Some([Value::String(key), number]) => {
                        numbers(number, &format!("{path}.{key}"), out)
                    }
                    // A task row is named by its pid.
                    _ => match item.get("pid") {
                        Some(pid) => numbers(item, &format!("{path}[pid {pid}]"), out),
                        None => numbers(item, &format!("{path}[{index}]"), out),
                    },
                }
            }
        }
        _ => {}
    }
}

#[test]
fn a_memcg_report_pasted_as_one_line_and_cut_anywhere_reads_no_cut_number() {
    // The v1 report with its stamps, the v2 one without: each pasted as one line, then
    // cut at every byte. A figure read from the cut paste is the whole paste's figure
    // or none; a number cut by the end of the input is never read as a smaller one.
    for name in [
        "4.4-memcg-v1-docker-dup-lines.log",
        "constructed-6.1-memcg-v2-in-ballooned-guest.log",
    ] {
        let mut text = fixture(name).to_vec();
        if name.starts_with("constructed") {
            // Without its `[   63.402211] ` stamps.
            let bare: Vec<&[u8]> = lines(&text)
                .into_iter()
                .map(|line| match line.windows(2).position(|w| w == b"] ") {
                    Some(end) if line.starts_with(b"[") && line[..end].contains(&b'.') => {
                        &line[end + 2..]
                    }
                    _ => line,
                })
                .collect();
            text = bare.join(&b"\n"[..]);
        }
        let pasted = joined_with_spaces(&text);
        let whole = serde_json::to_value(&ballast_oom::parse(&pasted).reports[0]).expect("json");
        let mut known = Vec::new();
        numbers(&whole, "", &mut known);
        for cut in 1..pasted.len() {
            let explanation = check_invariants(&pasted[..cut]);
            for report in &explanation.reports {
                let value = serde_json::to_value(&report.report).expect("json");
                let mut read = Vec::new();
                numbers(&value, "", &mut read);
                for (path, number) in read {
                    // Where the paste was cut and how many rows it kept: no figure.
                    if path.starts_with(".span") || path.starts_with(".stamp") || path == ".tasks" {
                        continue;
                    }
                    assert!(
                        known.contains(&(path.clone(), number)),
                        "{name} cut at {cut}: {path} = {number}, not the whole paste's"
                    );
                }
            }
        }
    }
}

#[test]
fn hostile_shapes_stay_bounded() {
    let long_name = "x".repeat(3 * MAX_NAME_BYTES);
    let mut input = String::new();
    input.push_str(&format!(
        "{long_name} invoked oom-killer: gfp_mask=0x0, order=0\n"
    ));
    input.push_str(&format!(
        "CPU: 0 PID: 1 Comm: {long_name} Not tainted {long_name}\n"
    ));
    input.push_str("Mem-Info:\n");
    for node in 0..200 {
        input.push_str(&format!(
            "Node {node} Normal free:1kB min:1kB low:1kB high:1kB present:4kB managed:4kB\n"
        ));
    }
    input.push_str(&format!("Node 0 Normal: {}= 4kB\n", "1*4kB ".repeat(5000)));
    input.push_str("[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name\n");
    for pid in 0..5000 {
        input.push_str(&format!("[{pid:6}] 0 {pid} 100 {pid} 1 0 0 {long_name}\n"));
    }
    input.push_str(&format!(
        "Memory cgroup stats for /{long_name}: {}\n",
        "k:1KB ".repeat(2000)
    ));
    input.push_str(&format!(
        "Out of memory: Killed process 1 ({long_name}) total-vm:4kB\n"
    ));
    // A line far past MAX_LINE_BYTES, with anchors in its tail.
    input.push_str(&"y".repeat(8 * MAX_LINE_BYTES));
    input.push_str(" Killed process 7 (y) invoked oom-killer\n");
    let explanation = check_invariants(input.as_bytes());
    let report = &explanation
        .reports
        .first()
        .expect("the report is found")
        .report;
    assert_eq!(report.tasks, Some(5000));
    assert_eq!(report.top_tasks.len(), MAX_STORED_TASKS);
    assert_eq!(report.zones.len(), MAX_ZONES);
}

/// Inputs that once crashed the parser (found by the fuzzer or these properties).
#[test]
fn regression_inputs_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("regressions dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            continue;
        }
        let input = std::fs::read(&path).expect("regression input readable");
        check_invariants(&input);
        seen += 1;
    }
    assert!(seen > 0, "no regression inputs in {}", dir.display());
}
