//! Cuts input into logical kernel lines: one printk line each, prefix stripped.
//!
//! A physical line usually holds one kernel line. When a user pastes a whole
//! report as one line (forums do this), the physical line holds many: they are
//! split again wherever a prefix of the same shape as the first one starts, or,
//! for prefix-less pastes, before the line openings a report is made of.
//! Bodies longer than [`MAX_LINE_BYTES`] are cut there; the rest of such a line
//! is skipped, so a 100 MiB line costs one pass and no copy.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

use crate::limits::MAX_LINE_BYTES;
use crate::prefix::{self, Family, Prefix};

/// One kernel line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogicalLine<'a> {
    /// Byte offset where the line (prefix included) starts.
    pub start: usize,
    /// Byte offset just past the line.
    pub end: usize,
    /// 1-based physical line number.
    pub line_no: usize,
    pub prefix: Prefix<'a>,
    /// The kernel text, trimmed, at most [`MAX_LINE_BYTES`].
    pub body: &'a [u8],
    /// End of the physical line this logical line is part of.
    physical_end: usize,
    /// The physical line is long enough to be a prefix-less paste of many lines.
    long_physical_line: bool,
}

impl<'a> LogicalLine<'a> {
    /// End of the physical line this logical line is part of.
    pub fn physical_end(&self) -> usize {
        self.physical_end
    }

    /// This line with a wrapped continuation joined: `body` ends at `end`.
    pub fn joined<'b>(&self, body: &'b [u8], end: usize) -> LogicalLine<'b>
    where
        'a: 'b,
    {
        LogicalLine { end, body, ..*self }
    }

    /// A kernel line that is not a slice of the input: one read out of an envelope
    /// (`crate::envelope`), standing for the input's bytes `start..end`.
    pub fn standalone(
        start: usize,
        end: usize,
        line_no: usize,
        prefix: Prefix<'a>,
        body: &'a [u8],
    ) -> Self {
        Self {
            start,
            end,
            line_no,
            prefix,
            body,
            physical_end: end,
            long_physical_line: false,
        }
    }
}

/// Iterator over logical lines from a starting offset.
pub(crate) struct Lines<'a> {
    input: &'a [u8],
    pos: usize,
    line_no: usize,
    /// End of the physical line `pos` is in, when `pos` is inside a joined line.
    physical_end: Option<usize>,
    /// The current physical line is long enough to be a prefix-less paste of many lines.
    long_physical_line: bool,
}

impl<'a> Lines<'a> {
    /// Starts at `pos`, which is the start of a physical line or a split point inside one.
    pub fn new(input: &'a [u8], pos: usize, line_no: usize) -> Self {
        Self {
            input,
            pos: pos.min(input.len()),
            line_no,
            physical_end: None,
            long_physical_line: false,
        }
    }

    /// Starts just after `line`, as the iterator that yielded it would go on.
    pub fn after(input: &'a [u8], line: &LogicalLine<'a>) -> Self {
        if line.end < line.physical_end {
            Self {
                input,
                pos: line.end,
                line_no: line.line_no,
                physical_end: Some(line.physical_end),
                long_physical_line: line.long_physical_line,
            }
        } else {
            Self::new(input, line.physical_end.saturating_add(1), line.line_no + 1)
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = LogicalLine<'a>;

    fn next(&mut self) -> Option<LogicalLine<'a>> {
        if self.pos >= self.input.len() {
            return None;
        }
        #[cfg(test)]
        work::count(1, self.physical_end.is_none());
        let start = self.pos;
        let physical_end = match self.physical_end {
            Some(end) if end > start => end,
            _ => {
                let end = memchr::memchr(b'\n', &self.input[start..])
                    .map_or(self.input.len(), |offset| start + offset);
                self.long_physical_line = end - start > BARE_SPLIT_MIN_BYTES;
                end
            }
        };
        let mut segment = &self.input[start..physical_end];
        if let Some(without_cr) = segment.strip_suffix(b"\r") {
            segment = without_cr;
        }
        let (line_prefix, body) = prefix::strip(segment);
        let body_offset = segment.len() - body.len();
        let split = next_split(body, line_prefix.family, self.long_physical_line)
            .map(|at| start + body_offset + at);
        let line_no = self.line_no;
        let end = match split {
            Some(split_at) => {
                self.pos = split_at;
                self.physical_end = Some(physical_end);
                split_at
            }
            None => {
                self.pos = physical_end + 1;
                self.physical_end = None;
                self.line_no += 1;
                physical_end
            }
        };
        let body_len = (end - start).saturating_sub(body_offset).min(body.len());
        let mut body = &body[..body_len];
        if split.is_some() {
            body = prefix::without_trailing_grep(body);
        }
        let mut body = body[..body.len().min(MAX_LINE_BYTES)].trim_ascii_end();
        if end == self.input.len() && physical_end == self.input.len() {
            // The input ends inside this line: its last number may be cut.
            body = crate::unwrap::without_cut_number(body).trim_ascii_end();
        }
        Some(LogicalLine {
            start,
            end,
            line_no,
            prefix: line_prefix,
            body,
            physical_end,
            long_physical_line: self.long_physical_line,
        })
    }
}

/// Where, inside `body`, the next joined kernel line starts.
fn next_split(body: &[u8], family: Family, long_physical_line: bool) -> Option<usize> {
    match family {
        Family::Syslog => next_syslog_split(body),
        Family::Monotonic | Family::Wallclock | Family::Kmsg => {
            let opener = if family == Family::Kmsg { b'<' } else { b'[' };
            memchr::memchr_iter(opener, body)
                .filter(|at| *at > 0)
                .find(|at| prefix::prefix_len_if(&body[*at..], family).is_some())
        }
        Family::Bare if long_physical_line => next_marker_split(body),
        Family::Bare => None,
    }
}

/// A bare line shorter than this is one kernel line (the longest real ones are zone lines).
const BARE_SPLIT_MIN_BYTES: usize = 250;

/// Finds `Jan  4 10:04:40 host prog: ` or RFC 3339 stamps inside a joined syslog line.
fn next_syslog_split(body: &[u8]) -> Option<usize> {
    for colon in memchr::memchr_iter(b':', body) {
        // The first colon of HH:MM:SS: the hour is the two bytes before it.
        let Some(hour) = colon.checked_sub(2) else {
            continue;
        };
        if !(body[hour].is_ascii_digit() && body[hour + 1].is_ascii_digit()) {
            continue;
        }
        // RFC 3339 `YYYY-MM-DDTHH`: the date starts 11 bytes before the hour; `Mon D HH`,
        // `янв 26 HH`, `26. Jan HH`: the month word or day starts after a space.
        let rfc3339 = hour.checked_sub(11).filter(|at| *at > 0);
        let [month_first, day_first] = prefix::syslog_starts_before_clock(body, hour);
        for candidate in [month_first, day_first, rfc3339].into_iter().flatten() {
            if prefix::prefix_len_if(&body[candidate..], Family::Syslog).is_some() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Line openings of an OOM report, used to split a prefix-less pasted report.
const MARKERS: [&str; 22] = [
    " Mem-Info:",
    " Mem-info:",
    " Call Trace:",
    " CPU: ",
    " Hardware name:",
    " Node ",
    " lowmem_reserve[]:",
    " Tasks state",
    " oom-kill:",
    " Out of memory",
    " Killed process",
    " oom_reaper:",
    " Free swap",
    " Total swap",
    " Swap cache stats",
    " Memory cgroup",
    " memory: usage",
    " memory+swap: usage",
    " swap: usage",
    " kmem: usage",
    " Task in ",
    " Kernel panic",
];

/// Openings that follow a number: the split goes before the number.
const COUNTED_MARKERS: [&str; 8] = [
    " pages RAM",
    " pages reserved",
    " total pagecache pages",
    " pages in swap cache",
    " pages HighMem",
    " pages hwpoisoned",
    " pages shared",
    " pages cma reserved",
];

fn marker_finder() -> &'static AhoCorasick {
    static FINDER: OnceLock<AhoCorasick> = OnceLock::new();
    FINDER.get_or_init(|| {
        // Searched without their leading space (checked after a match): patterns that
        // all start with a space would make every space a candidate.
        let patterns = MARKERS
            .iter()
            .chain(COUNTED_MARKERS.iter())
            .chain([" invoked oom-killer", " ["].iter())
            .map(|pattern| &pattern[1..]);
        AhoCorasick::new(patterns).expect("the marker patterns are fixed literals")
    })
}

fn next_marker_split(body: &[u8]) -> Option<usize> {
    let invoked = MARKERS.len() + COUNTED_MARKERS.len();
    let bracket = invoked + 1;
    for found in marker_finder().find_iter(body) {
        // `at` is the space the pattern starts with.
        let Some(at) = found.start().checked_sub(1) else {
            continue;
        };
        if body[at] != b' ' {
            continue;
        }
        let pattern = found.pattern().as_usize();
        let split = if pattern < MARKERS.len() {
            Some(at + 1)
        } else if pattern < invoked {
            number_start(body, at)
        } else if pattern == invoked {
            // `comm invoked oom-killer`: the comm is the word before.
            word_start(body, at)
        } else if pattern == bracket && is_task_row_start(&body[at + 1..]) {
            Some(at + 1)
        } else {
            None
        };
        if let Some(split) = split.filter(|split| *split > 0) {
            return Some(split);
        }
    }
    None
}

/// Start of the run of digits ending at `end`, when a space precedes it.
fn number_start(body: &[u8], end: usize) -> Option<usize> {
    let len = body[..end]
        .iter()
        .rev()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    let start = end - len;
    (len > 0 && start > 0 && body[start - 1] == b' ').then_some(start)
}

fn word_start(body: &[u8], end: usize) -> Option<usize> {
    let len = body[..end]
        .iter()
        .rev()
        .take_while(|byte| !byte.is_ascii_whitespace())
        .count();
    (len > 0).then_some(end - len)
}

/// `[ 1439] ` or `[  pid  ]`: a task-table row or header.
fn is_task_row_start(text: &[u8]) -> bool {
    let Some(inner) = text.strip_prefix(b"[") else {
        return false;
    };
    let inner = &inner[inner.iter().take_while(|b| **b == b' ').count()..];
    let digits = inner.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 {
        let after = &inner[digits..];
        return after.starts_with(b"]") || after.starts_with(b" ]");
    }
    inner.starts_with(b"pid")
}

/// Work counters for tests: lines cut, and physical line ends searched.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;

    thread_local! {
        static LINES: Cell<usize> = const { Cell::new(0) };
        static END_SEARCHES: Cell<usize> = const { Cell::new(0) };
    }

    pub fn count(lines: usize, end_search: bool) {
        LINES.with(|cell| cell.set(cell.get() + lines));
        END_SEARCHES.with(|cell| cell.set(cell.get() + usize::from(end_search)));
    }

    /// (lines cut, physical line ends searched) since the last call, on this thread.
    pub fn take() -> (usize, usize) {
        (
            LINES.with(|cell| cell.replace(0)),
            END_SEARCHES.with(|cell| cell.replace(0)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(input: &str) -> Vec<String> {
        Lines::new(input.as_bytes(), 0, 1)
            .map(|line| String::from_utf8_lossy(line.body).into_owned())
            .collect()
    }

    #[test]
    fn plain_lines_are_one_each() {
        assert_eq!(bodies("[ 1.0] a\n[ 2.0] b\r\n\nc"), ["a", "b", "", "c"]);
    }

    #[test]
    fn joined_syslog_lines_split_at_each_header() {
        let joined = "Jan 4 10:04:40 h kernel: [1.5] tor invoked oom-killer: order=0 \
                      Jan 4 10:04:40 h kernel: [1.6] tor cpuset=/ mems_allowed=0 \
                      Jan 14 10:04:41 h kernel: [1.7] Mem-Info:";
        assert_eq!(
            bodies(joined),
            [
                "tor invoked oom-killer: order=0",
                "tor cpuset=/ mems_allowed=0",
                "Mem-Info:"
            ]
        );
    }

    #[test]
    fn joined_journal_lines_split_at_each_stamp_in_any_locale() {
        let joined = "янв 26 01:49:41 h kernel: tor invoked oom-killer: order=0 \
                      янв 26 01:49:41 h kernel: CPU: 0 PID: 1439 Comm: tor \
                      1月 26 01:49:42 h kernel: Mem-Info: \
                      26. Jan 01:49:42 h kernel: 262010 pages RAM \
                      kern.log:9:déc. 26 01:49:42 h kernel: Killed process 1439 (tor)";
        assert_eq!(
            bodies(joined),
            [
                "tor invoked oom-killer: order=0",
                "CPU: 0 PID: 1439 Comm: tor",
                "Mem-Info:",
                "262010 pages RAM",
                "Killed process 1439 (tor)"
            ]
        );
    }

    #[test]
    fn joined_dmesg_lines_split_at_each_stamp() {
        let joined = "[ 1.5] a [ 1439] 0 1439 x [ 1.6] b";
        assert_eq!(bodies(joined), ["a [ 1439] 0 1439 x", "b"]);
    }

    #[test]
    fn bare_pastes_split_before_report_lines() {
        let pasted = format!(
            "tor invoked oom-killer: gfp_mask=0x0, order=0 Mem-Info: active_anon:1 {} 262010 pages RAM 6920 pages reserved [ 1439] 109 1439 1 2 3 4 0 0 tor Out of memory: Kill process 1439 (tor)",
            "x".repeat(200)
        );
        let lines = bodies(&pasted);
        assert_eq!(lines[0], "tor invoked oom-killer: gfp_mask=0x0, order=0");
        assert!(lines.contains(&"262010 pages RAM".to_string()));
        assert!(lines.contains(&"[ 1439] 109 1439 1 2 3 4 0 0 tor".to_string()));
        assert_eq!(
            lines.last().map(String::as_str),
            Some("Out of memory: Kill process 1439 (tor)")
        );
    }

    #[test]
    fn long_lines_are_cut_not_copied() {
        let long = format!("[ 1.0] {}\n[ 2.0] next", "y".repeat(MAX_LINE_BYTES * 3));
        let lines: Vec<_> = Lines::new(long.as_bytes(), 0, 1).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].body.len(), MAX_LINE_BYTES);
        assert_eq!(lines[1].body, b"next");
        assert_eq!(lines[1].line_no, 2);
    }
}
