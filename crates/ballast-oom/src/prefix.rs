//! Recognises and strips the log prefixes that tools put in front of kernel lines.
//!
//! Handled, alone or stacked (`<4>` then syslog then `[ 1.2]`, and so on):
//! - priorities `<4>` and `/dev/kmsg` records `6,1234,5678,-;`
//! - syslog `Jan  4 10:04:40 host kernel: ` and RFC 3339 `2024-01-04T10:04:40.1+00:00 host kernel: `
//!   (journalctl `short`, `short-precise` and `short-iso` have the same shape), the month
//!   in any locale's words or day first: `янв 26 01:49:41`, ` 1月 26`, `déc. 26`, `26. Jan`
//!   (a month word and a day, then a clock: the shape is checked, not a word list)
//! - raw dmesg `[ 123.456789] `, with an optional caller id `[T123]`/`[C1]`
//! - `dmesg -T` `[Thu Jan  4 10:04:40 2018] ` in any locale: `[月  1月 26 01:49:41 2026]`,
//!   `[lun. janv. 26 ...]`, `[Пн янв 26 ...]` (two words, day, clock, year; any script)
//! - grep's `<n>:`, `<path>:`, `<path>:<n>:` and context `<path>-<n>-` in front of one
//!   of the stamps above (`grep -n`, `-H`, `-rn`, `-C`)
//! - an elided prefix `... kernel: ` / `… host kernel: ` left by a paste
//! - journalctl `-o short-monotonic` `[ 123.456789] host kernel: `
//! - `dmesg -x` facility/level `kern  :warn  : `
//!
//! A syslog line whose program is not `kernel` is foreign: another tool re-logging
//! what the kernel said (kubelet, node-problem-detector). The parser never counts
//! those as kernel lines (`crate::envelope` reads a kill line such a tool carries in an
//! event's message, flagged as such).

/// The shape of the outermost prefix, used to find where a joined line splits again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// No prefix at all.
    Bare,
    /// A syslog or journal header (`Mon DD HH:MM:SS host prog:` or RFC 3339).
    Syslog,
    /// A dmesg monotonic stamp `[ 1.2]`.
    Monotonic,
    /// A `dmesg -T` stamp `[Thu Jan  4 10:04:40 2018]`.
    Wallclock,
    /// A `/dev/kmsg` record or `<N>` priority.
    Kmsg,
}

/// What the prefix of one line said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Prefix<'a> {
    pub family: Family,
    pub monotonic_secs: Option<f64>,
    pub wallclock: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
    /// Syslog program tag without `[pid]`, e.g. `kernel`.
    pub program: Option<&'a [u8]>,
}

impl Prefix<'_> {
    /// True when a syslog program other than the kernel wrote the line.
    pub fn is_foreign(&self) -> bool {
        match self.program {
            Some(program) => !program.eq_ignore_ascii_case(b"kernel"),
            None => false,
        }
    }
}

/// Splits `line` into its prefix and the kernel text after it.
pub(crate) fn strip(line: &[u8]) -> (Prefix<'_>, &[u8]) {
    let mut prefix = Prefix {
        family: Family::Bare,
        monotonic_secs: None,
        wallclock: None,
        host: None,
        program: None,
    };
    let mut rest = line.trim_ascii_start();
    // Each round strips one layer; six layers is more than any real tool stacks.
    for _ in 0..6 {
        if let Some(after) = strip_priority(rest) {
            set_family(&mut prefix, Family::Kmsg);
            rest = after;
        } else if let Some((usec, after)) = strip_kmsg_record(rest) {
            set_family(&mut prefix, Family::Kmsg);
            prefix.monotonic_secs.get_or_insert(usec as f64 / 1e6);
            rest = after;
        } else if let Some((stamp, host, program, after)) = strip_syslog(rest) {
            set_family(&mut prefix, Family::Syslog);
            prefix.wallclock.get_or_insert(stamp);
            prefix.host.get_or_insert(host);
            prefix.program.get_or_insert(program);
            rest = after;
        } else if let Some((stamp, after)) = strip_wallclock_bracket(rest) {
            set_family(&mut prefix, Family::Wallclock);
            prefix.wallclock.get_or_insert(stamp);
            rest = after;
        } else if let Some((secs, after)) = strip_monotonic(rest) {
            set_family(&mut prefix, Family::Monotonic);
            prefix.monotonic_secs.get_or_insert(secs);
            rest = after;
            if let Some((host, program, after_tag)) = strip_host_kernel_tag(rest) {
                prefix.host.get_or_insert(host);
                prefix.program.get_or_insert(program);
                rest = after_tag;
            }
        } else if let Some(after) = strip_dmesg_level(rest) {
            rest = after;
        } else if let Some(after) = rest.strip_prefix(b"kernel: ") {
            prefix.program.get_or_insert(b"kernel");
            rest = after;
        } else if let Some(after) = strip_mail_quote(rest) {
            rest = after;
        } else if let Some((secs, after)) = strip_android(rest) {
            set_family(&mut prefix, Family::Monotonic);
            prefix.monotonic_secs.get_or_insert(secs);
            rest = after;
        } else if let Some(after) = strip_elision(rest) {
            rest = after;
        } else if let Some(after) = strip_grep(rest).filter(|_| prefix.family == Family::Bare) {
            rest = after;
        } else {
            break;
        }
    }
    (prefix, rest)
}

/// Length of the prefix at the very start of `text` when it is of `family`, else None.
///
/// Used to find the next kernel line inside a joined line.
pub(crate) fn prefix_len_if(text: &[u8], family: Family) -> Option<usize> {
    let after = match family {
        Family::Syslog => strip_syslog(text).map(|(_, _, _, after)| after),
        Family::Monotonic => strip_monotonic(text).map(|(_, after)| after),
        Family::Wallclock => strip_wallclock_bracket(text).map(|(_, after)| after),
        Family::Kmsg => strip_priority(text).or_else(|| strip_kmsg_record(text).map(|(_, a)| a)),
        Family::Bare => None,
    }?;
    Some(text.len() - after.len())
}

fn set_family(prefix: &mut Prefix<'_>, family: Family) {
    if prefix.family == Family::Bare {
        prefix.family = family;
    }
}

fn digits(text: &[u8]) -> usize {
    text.iter().take_while(|byte| byte.is_ascii_digit()).count()
}

fn spaces(text: &[u8]) -> usize {
    text.iter().take_while(|byte| **byte == b' ').count()
}

/// `<4>`: a printk priority, 1 to 3 digits.
fn strip_priority(text: &[u8]) -> Option<&[u8]> {
    let rest = text.strip_prefix(b"<")?;
    let n = digits(rest);
    if n == 0 || n > 3 {
        return None;
    }
    rest[n..].strip_prefix(b">")
}

/// `6,1234,5678,-;`: a `/dev/kmsg` record header (priority, sequence, microseconds, flags).
fn strip_kmsg_record(text: &[u8]) -> Option<(u64, &[u8])> {
    let mut rest = text;
    let mut usec = 0;
    for field in 0..3 {
        let n = digits(rest);
        if n == 0 || n > 20 {
            return None;
        }
        if field == 2 {
            usec = parse_u64(&rest[..n])?;
        }
        rest = rest[n..].strip_prefix(b",")?;
    }
    let flags_len = rest
        .iter()
        .take(8)
        .take_while(|byte| **byte != b';')
        .count();
    let after = rest.get(flags_len..)?.strip_prefix(b";")?;
    Some((usec, after))
}

/// `[ 123.456789]` (+ optional caller id `[T123]`) and one space.
fn strip_monotonic(text: &[u8]) -> Option<(f64, &[u8])> {
    let rest = text.strip_prefix(b"[")?;
    let rest = &rest[spaces(rest)..];
    let int_len = digits(rest);
    if int_len == 0 || int_len > 12 {
        return None;
    }
    let frac = rest[int_len..].strip_prefix(b".")?;
    let frac_len = digits(frac);
    if frac_len == 0 || frac_len > 9 {
        return None;
    }
    let number = &rest[..int_len + 1 + frac_len];
    let mut after = frac[frac_len..].strip_prefix(b"]")?;
    if let Some(caller) = strip_caller_id(after) {
        after = caller;
    }
    let secs = std::str::from_utf8(number).ok()?.parse::<f64>().ok()?;
    Some((secs, after.strip_prefix(b" ").unwrap_or(after)))
}

/// `[T10579]` or `[C1]` right after the time stamp.
fn strip_caller_id(text: &[u8]) -> Option<&[u8]> {
    let rest = text.strip_prefix(b"[")?;
    let rest = rest
        .strip_prefix(b"T")
        .or_else(|| rest.strip_prefix(b"C"))?;
    let rest = &rest[spaces(rest)..];
    let n = digits(rest);
    if n == 0 || n > 10 {
        return None;
    }
    rest[n..].strip_prefix(b"]")
}

/// `[Thu Jan  4 10:04:40 2018]` and one space, in any locale's words.
///
/// `dmesg -T` prints `%a %b %e %H:%M:%S %Y`: the weekday and month are words of the
/// locale (`月`, ` 1月`, `lun.`, `janv.`, `Пн`, `янв`), so the shape is checked, not the
/// words: two words, a day of one or two digits, a clock and a four-digit year. Runs of
/// spaces may have been squeezed to one.
fn strip_wallclock_bracket(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = text.strip_prefix(b"[")?;
    let weekday = stamp_word(rest)?;
    if weekday[0].is_ascii_digit() {
        return None;
    }
    let rest = after_spaces(&rest[weekday.len()..])?;
    let month = stamp_word(rest)?;
    if month.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let rest = after_spaces(&rest[month.len()..])?;
    let day_len = digits(rest);
    if day_len == 0 || day_len > 2 {
        return None;
    }
    let rest = after_spaces(&rest[day_len..])?;
    let rest = after_spaces(clock(rest)?)?;
    if digits(rest) != 4 {
        return None;
    }
    let after = rest[4..].strip_prefix(b"]")?;
    let inner = &text[1..];
    let stamp = &inner[..inner.len() - after.len() - 1];
    Some((stamp, after.strip_prefix(b" ").unwrap_or(after)))
}

/// A locale's weekday or month abbreviation: 1 to 32 bytes up to a space, with no
/// bracket or colon (so task rows `[ 1439]` and clocks never pass).
fn stamp_word(text: &[u8]) -> Option<&[u8]> {
    let len = text
        .iter()
        .take(33)
        .take_while(|b| !b.is_ascii_whitespace() && !matches!(b, b'[' | b']' | b':'))
        .count();
    if len == 0 || len > 32 || text.get(len) != Some(&b' ') {
        return None;
    }
    Some(&text[..len])
}

/// At least one space, then what follows the run.
fn after_spaces(text: &[u8]) -> Option<&[u8]> {
    match spaces(text) {
        0 => None,
        n => Some(&text[n..]),
    }
}

/// grep's own prefix in front of a log line: `166233:`, `kern.log:12:`, `/var/log/kern.log.1:`,
/// or a context line's `kern.log-166233-`.
///
/// A path may itself hold `:` and `-`, so the prefix ends at the first separator (within
/// the first whitespace-free run) that a syslog, journal, dmesg or kmsg prefix follows.
/// Only those are accepted: kernel text such as `oom-kill:constraint=` is never cut.
fn strip_grep(text: &[u8]) -> Option<&[u8]> {
    const MAX_PATH: usize = 4096;
    const MAX_SEPARATORS: usize = 16;
    let run = text
        .iter()
        .take(MAX_PATH)
        .take_while(|b| !b.is_ascii_whitespace())
        .count();
    text[..run]
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(b, b':' | b'-'))
        .take(MAX_SEPARATORS)
        .map(|(at, _)| &text[at + 1..])
        .find(|after| starts_with_stamp(after))
}

/// `text` without the grep prefix glued to its end, when `text` is one kernel line cut
/// out of a joined paste of grep output (`... pages RAM 166290:` before the next stamp).
///
/// A joined line's next stamp follows a space; one that follows `:` or `-` was preceded
/// by grep's `<n>:` / `<path>:<n>:` / `<path>-<n>-`, which is cut with its whole run.
pub(crate) fn without_trailing_grep(text: &[u8]) -> &[u8] {
    const MAX_PATH: usize = 4096;
    if !matches!(text.last(), Some(b':' | b'-')) {
        return text;
    }
    let run = text
        .iter()
        .rev()
        .take(MAX_PATH + 1)
        .take_while(|b| !b.is_ascii_whitespace())
        .count();
    if run > MAX_PATH {
        return text;
    }
    &text[..text.len() - run]
}

/// True when a syslog, journal, dmesg (`[1.2]`, `-T`) or kmsg prefix starts `text`.
fn starts_with_stamp(text: &[u8]) -> bool {
    strip_syslog(text).is_some()
        || strip_monotonic(text).is_some()
        || strip_wallclock_bracket(text).is_some()
        || strip_priority(text).is_some()
        || strip_kmsg_record(text).is_some()
}

/// `... kernel: ` or `… host kernel: `: a paste that cut the time stamp and host.
fn strip_elision(text: &[u8]) -> Option<&[u8]> {
    let rest = text
        .strip_prefix(b"...")
        .or_else(|| text.strip_prefix("\u{2026}".as_bytes()))?;
    let rest = after_spaces(rest)?;
    if let Some((_, _, after_tag)) = strip_host_kernel_tag(rest) {
        // `host kernel: ` (the `kernel: ` alone is the next layer's to strip).
        if !rest.starts_with(b"kernel: ") {
            return Some(after_tag);
        }
    }
    (rest.starts_with(b"kernel: ") || starts_with_stamp(rest)).then_some(rest)
}

/// The parts of a syslog header: time stamp, host, program, and the text after it.
type SyslogParts<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);

/// A syslog/journal header: time stamp, host, program tag with optional `[pid]`, colon, space.
fn strip_syslog(text: &[u8]) -> Option<SyslogParts<'_>> {
    let after_stamp = match month_day_time(text) {
        Some((_, after)) => after,
        None => rfc3339(text)?,
    };
    let stamp = &text[..text.len() - after_stamp.len()];
    let rest = after_stamp.strip_prefix(b" ")?;
    let rest = &rest[spaces(rest)..];
    let host_len = rest
        .iter()
        .take(255)
        .take_while(|b| !b.is_ascii_whitespace())
        .count();
    if host_len == 0 {
        return None;
    }
    let host = &rest[..host_len];
    let rest = rest[host_len..].strip_prefix(b" ")?;
    let (program, after) = program_tag(rest)?;
    Some((stamp, host, program, after))
}

/// `host kernel: ` after a short-monotonic stamp (journalctl).
fn strip_host_kernel_tag(text: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let host_len = text
        .iter()
        .take(255)
        .take_while(|b| !b.is_ascii_whitespace())
        .count();
    if host_len == 0 {
        return None;
    }
    let rest = text[host_len..].strip_prefix(b" ")?;
    let (program, after) = program_tag(rest)?;
    if !program.eq_ignore_ascii_case(b"kernel") {
        return None;
    }
    Some((&text[..host_len], program, after))
}

/// `kernel: `, `kubelet[123]: `: a program name, optional `[pid]`, a colon and a space.
fn program_tag(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let name_len = text
        .iter()
        .take(64)
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b'@'))
        .count();
    if name_len == 0 {
        return None;
    }
    let program = &text[..name_len];
    let mut rest = &text[name_len..];
    if let Some(after_bracket) = rest.strip_prefix(b"[") {
        let n = digits(after_bracket);
        rest = after_bracket[n..].strip_prefix(b"]")?;
    }
    let rest = rest.strip_prefix(b":")?;
    if !(rest.is_empty() || rest[0] == b' ') {
        return None;
    }
    Some((program, rest.strip_prefix(b" ").unwrap_or(rest)))
}

/// `Jan  4 10:04:40` (optional `.123456`), returning the stamp and what follows.
///
/// journalctl and syslog print the month in the locale's words (`янв 26`, `1月 26`,
/// `déc. 26`, `Jan. 26`, `Dez 26`), some templates day first (`26. Jan`), so the shape is
/// checked, not the words: a month word ([`month_word`]) and a day of one or two digits in
/// either order, then a clock. Runs of spaces may be one space or several.
fn month_day_time(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = month_then_day(text).or_else(|| day_then_month(text))?;
    let rest = clock(rest)?;
    Some((&text[..text.len() - rest.len()], rest))
}

/// `Jan  4 `, `янв 26 `: what follows the day's spaces.
fn month_then_day(text: &[u8]) -> Option<&[u8]> {
    let month = month_word(text)?;
    let rest = after_spaces(&text[month.len()..])?;
    let day_len = digits(rest);
    if day_len == 0 || day_len > 2 {
        return None;
    }
    after_spaces(&rest[day_len..])
}

/// `26. Jan `, `26 janv. `: what follows the month's spaces.
fn day_then_month(text: &[u8]) -> Option<&[u8]> {
    let day_len = digits(text);
    if day_len == 0 || day_len > 2 {
        return None;
    }
    let rest = &text[day_len..];
    let rest = after_spaces(rest.strip_prefix(b".").unwrap_or(rest))?;
    let month = month_word(rest)?;
    after_spaces(&rest[month.len()..])
}

/// A month as a locale abbreviates it: `Jan`, `Jan.`, `janv.`, `Dez`, `déc.`, `янв`, `1月`,
/// `12월`. Up to `MAX_MONTH_BYTES` (24) bytes up to a space, with a letter (an ASCII letter
/// or any non-ASCII byte), ASCII digits only beside non-ASCII letters (`1月`), and no
/// punctuation but a trailing `.`: a number, a clock, `[ 1439]`, `oom-kill:` or
/// `free:1234kB` never pass.
fn month_word(text: &[u8]) -> Option<&[u8]> {
    const MAX_MONTH_BYTES: usize = 24;
    let len = text
        .iter()
        .take(MAX_MONTH_BYTES + 1)
        .take_while(|b| !b.is_ascii_whitespace())
        .count();
    if len == 0 || len > MAX_MONTH_BYTES || text.get(len) != Some(&b' ') {
        return None;
    }
    let word = &text[..len];
    let letters = word.strip_suffix(b".").unwrap_or(word);
    let non_ascii = letters.iter().any(|b| !b.is_ascii());
    let ascii_letters = letters.iter().any(u8::is_ascii_alphabetic);
    let shape_ok = letters
        .iter()
        .all(|b| !b.is_ascii() || b.is_ascii_alphabetic() || (b.is_ascii_digit() && non_ascii));
    (shape_ok && (non_ascii || ascii_letters)).then_some(word)
}

/// Where the syslog stamp whose clock's hour starts at `hour` begins in `body`, for
/// month words of any length (`янв 26 01:`, `1月 26 01:`, `26. Jan 01:`): each candidate
/// start follows a space, `:` or `-` (grep's glued prefix), never the middle of a word.
pub(crate) fn syslog_starts_before_clock(body: &[u8], hour: usize) -> [Option<usize>; 2] {
    let back_spaces = |end: usize| {
        let n = body[..end].iter().rev().take_while(|b| **b == b' ').count();
        (n > 0).then_some(end - n)
    };
    let back_word = |end: usize| {
        let n = body[..end]
            .iter()
            .rev()
            .take(25)
            .take_while(|b| !b.is_ascii_whitespace() && !matches!(b, b':' | b'-'))
            .count();
        (n > 0).then_some(end - n)
    };
    let back_day = |end: usize| {
        let end = if end > 0 && body[end - 1] == b'.' {
            end - 1
        } else {
            end
        };
        let n = body[..end]
            .iter()
            .rev()
            .take(3)
            .take_while(|b| b.is_ascii_digit())
            .count();
        (1..=2).contains(&n).then_some(end - n)
    };
    let month_first = back_spaces(hour)
        .and_then(back_day)
        .and_then(back_spaces)
        .and_then(back_word);
    let day_first = back_spaces(hour)
        .and_then(back_word)
        .and_then(back_spaces)
        .and_then(back_day);
    let at_boundary =
        |start: usize| start > 0 && matches!(body[start - 1], b' ' | b'\t' | b':' | b'-');
    [
        month_first.filter(|s| at_boundary(*s)),
        day_first.filter(|s| at_boundary(*s)),
    ]
}

/// `HH:MM:SS` with optional fraction.
fn clock(text: &[u8]) -> Option<&[u8]> {
    let shape = b"00:00:00";
    if text.len() < shape.len() {
        return None;
    }
    for (byte, want) in text.iter().zip(shape) {
        let ok = if *want == b':' {
            *byte == b':'
        } else {
            byte.is_ascii_digit()
        };
        if !ok {
            return None;
        }
    }
    let mut rest = &text[shape.len()..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = digits(frac);
        if n > 0 {
            rest = &frac[n..];
        }
    }
    Some(rest)
}

/// `2024-01-04T10:04:40.123456+00:00`: returns what follows.
fn rfc3339(text: &[u8]) -> Option<&[u8]> {
    if text.len() < 19 || digits(text) != 4 || text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    if !(text[10] == b'T' || text[10] == b' ') {
        return None;
    }
    let rest = clock(&text[11..])?;
    let zone_len = rest
        .iter()
        .take(6)
        .take_while(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b':' | b'Z'))
        .count();
    Some(&rest[zone_len..])
}

/// `> ` or `>> `: a mail client's quote marks.
fn strip_mail_quote(text: &[u8]) -> Option<&[u8]> {
    let marks = text
        .iter()
        .take_while(|b| matches!(b, b'>' | b'|' | b' '))
        .count();
    if marks == 0 || !(text.starts_with(b">") || text.starts_with(b"| ")) {
        return None;
    }
    Some(&text[marks..])
}

/// Android kernel logs: `07-13 08:41:51.341 <4>[309805.658142s][pid:1361,cpu5,comm]`.
fn strip_android(text: &[u8]) -> Option<(f64, &[u8])> {
    let date_ok = text.len() > 6
        && digits(text) == 2
        && text[2] == b'-'
        && digits(&text[3..]) == 2
        && text[5] == b' ';
    let mut rest = if date_ok {
        clock(&text[6..])?.strip_prefix(b" ")?
    } else {
        text
    };
    if let Some(after) = strip_priority(rest) {
        rest = after;
    }
    let inner = rest.strip_prefix(b"[")?;
    let inner = &inner[spaces(inner)..];
    let int_len = digits(inner);
    let frac = inner.get(int_len..)?.strip_prefix(b".")?;
    let frac_len = digits(frac);
    let after = frac[frac_len..].strip_prefix(b"s]")?;
    let secs = std::str::from_utf8(&inner[..int_len + 1 + frac_len])
        .ok()?
        .parse::<f64>()
        .ok()?;
    let after = match after.strip_prefix(b"[pid:") {
        Some(caller) => &caller[memchr::memchr(b']', caller)? + 1..],
        None => after,
    };
    Some((secs, after.strip_prefix(b" ").unwrap_or(after)))
}

/// `kern  :warn  : ` from `dmesg -x`.
fn strip_dmesg_level(text: &[u8]) -> Option<&[u8]> {
    const FACILITIES: [&[u8]; 4] = [b"kern", b"user", b"daemon", b"syslog"];
    let facility = FACILITIES.iter().find(|f| text.starts_with(f))?;
    let rest = &text[facility.len()..];
    let rest = rest[spaces(rest)..].strip_prefix(b":")?;
    let level_len = rest
        .iter()
        .take(8)
        .take_while(|b| b.is_ascii_lowercase())
        .count();
    if level_len == 0 {
        return None;
    }
    let rest = &rest[level_len..];
    let rest = rest[spaces(rest)..].strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

pub(crate) fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for byte in text {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(line: &str) -> String {
        String::from_utf8_lossy(strip(line.as_bytes()).1).into_owned()
    }

    #[test]
    fn strips_every_known_prefix_shape() {
        let cases = [
            "[53542.948247] tor invoked",
            "[  147.4][T10579] tor invoked",
            "[Thu Jan  4 10:04:40 2018] tor invoked",
            "Jan  4 10:04:40 host kernel: tor invoked",
            "Jan 4 10:04:40 <host> kernel: [53542.948247] tor invoked",
            "Jan 04 10:04:40.123456 host kernel: tor invoked",
            "2024-01-04T10:04:40.123456+00:00 host kernel: tor invoked",
            "[53542.948247] host kernel: tor invoked",
            "<4>[53542.948247] tor invoked",
            "6,1234,53542948247,-;tor invoked",
            "kern  :warn  : [53542.948247] tor invoked",
            "> > [53542.948247] tor invoked",
            " | [53542.948247][T23028] tor invoked",
            "07-13 08:41:51.341 <4>[309805.658142s][pid:1361,cpu5,sManagerService]tor invoked",
            "kernel: tor invoked",
            "[月  1月 26 01:49:41 2026] tor invoked",
            "[Mo Jan 26 01:49:41 2026] tor invoked",
            "[lun. janv. 26 01:49:41 2026] tor invoked",
            "[Пн янв 26 01:49:41 2026] tor invoked",
            "[Thu Jan 4 10:04:40 2018] tor invoked",
            "166233:Apr 18 00:37:34 host kernel: tor invoked",
            "kern.log:12:Apr 18 00:37:34 host kernel: tor invoked",
            "/var/log/kern.log.1:Apr 18 00:37:34 host kernel: tor invoked",
            "/var/log/kern.log-20260126:7:Apr 18 00:37:34 host kernel: tor invoked",
            "kern.log-166233-Apr 18 00:37:34 host kernel: tor invoked",
            "12:[    7.409881] tor invoked",
            "dmesg.txt:3:[月  1月 26 01:49:41 2026] tor invoked",
            "... kernel: [430837.193448] tor invoked",
            "\u{2026} host kernel: [430837.193448] tor invoked",
            "tor invoked",
        ];
        for case in cases {
            assert_eq!(body(case), "tor invoked", "{case}");
        }
    }

    #[test]
    fn journal_and_syslog_months_are_read_in_any_locale() {
        let cases = [
            (
                "1月 26 01:49:41 host kernel: tor invoked",
                "1月 26 01:49:41",
            ),
            (
                "12月  6 01:49:41 host kernel: tor invoked",
                "12月  6 01:49:41",
            ),
            (
                "янв 26 01:49:41 host kernel: tor invoked",
                "янв 26 01:49:41",
            ),
            (
                "Jan. 26 01:49:41 host kernel: tor invoked",
                "Jan. 26 01:49:41",
            ),
            (
                "26. Jan 01:49:41 host kernel: tor invoked",
                "26. Jan 01:49:41",
            ),
            (
                "26 janv. 01:49:41 host kernel: tor invoked",
                "26 janv. 01:49:41",
            ),
            (
                "déc. 26 01:49:41 host kernel: tor invoked",
                "déc. 26 01:49:41",
            ),
            (
                "Dez 26 01:49:41 host kernel: tor invoked",
                "Dez 26 01:49:41",
            ),
            (
                "1월 26 01:49:41.123456 host kernel: tor invoked",
                "1월 26 01:49:41.123456",
            ),
            (
                "kern.log:7:мар 19 17:21:44 host kernel: tor invoked",
                "мар 19 17:21:44",
            ),
            (
                "2026-01-26T01:49:41+0900 host kernel: tor invoked",
                "2026-01-26T01:49:41+0900",
            ),
        ];
        for (line, stamp) in cases {
            let (prefix, rest) = strip(line.as_bytes());
            assert_eq!(rest, b"tor invoked", "{line}");
            assert_eq!(prefix.family, Family::Syslog, "{line}");
            assert_eq!(prefix.wallclock, Some(stamp.as_bytes()), "{line}");
            assert_eq!(prefix.host, Some(&b"host"[..]), "{line}");
        }
        let (prefix, rest) =
            strip("янв 26 01:49:41 node1 kubelet[812]: Killed process 12 (x)".as_bytes());
        assert!(prefix.is_foreign());
        assert_eq!(rest, b"Killed process 12 (x)");
    }

    #[test]
    fn kernel_lines_shaped_like_a_word_and_numbers_are_not_syslog_stamps() {
        let kept = [
            "Node 0 DMA free:4124kB min:716kB low:892kB high:1068kB",
            "Node 0 DMA32: 2150*4kB (UMEH) 2083*8kB (UMEH) = 44288kB",
            "0 pages HighMem/MovableOnly",
            "4401 total pagecache pages",
            "Free swap  = 0kB",
            "CPU: 0 PID: 1439 Comm: tor Not tainted 4.9.0-4-amd64 #1",
            "rtc_cmos 00:02: setting system clock to 2026-01-26 01:49:41 UTC (1769392181)",
            "26 01:49:41 host kernel: no month word",
            "1439 26 01:49:41 host kernel: a number is no month",
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0",
            "free:12103 26 01:49:41 host kernel: punctuation is no month",
            "Jan 26 01:49 host kernel: no seconds",
            "Jan 126 01:49:41 host kernel: three-digit day",
        ];
        for line in kept {
            assert_eq!(body(line), line, "{line}");
            assert_eq!(strip(line.as_bytes()).0.family, Family::Bare, "{line}");
        }
    }

    #[test]
    fn reads_stamp_host_and_program() {
        let (prefix, _) = strip(b"Jan 4 10:04:40 pve1 kernel: [53542.948247] x");
        assert_eq!(prefix.family, Family::Syslog);
        assert_eq!(prefix.host, Some(&b"pve1"[..]));
        assert_eq!(prefix.wallclock, Some(&b"Jan 4 10:04:40"[..]));
        assert_eq!(prefix.monotonic_secs, Some(53542.948247));
        assert!(!prefix.is_foreign());
    }

    #[test]
    fn other_programs_are_foreign() {
        let (prefix, rest) = strip(b"Jan 4 10:04:40 node1 kubelet[812]: Killed process 12 (x)");
        assert!(prefix.is_foreign());
        assert_eq!(rest, b"Killed process 12 (x)");
    }

    #[test]
    fn task_rows_and_trace_addresses_are_not_stamps() {
        assert_eq!(strip(b"[ 1439] 109 1439").0.family, Family::Bare);
        assert_eq!(
            strip(b"[<ffffffffb2129134>] ? dump_stack").0.family,
            Family::Bare
        );
    }

    #[test]
    fn kernel_text_with_colons_and_dashes_is_not_a_grep_prefix() {
        let kept = [
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/",
            "lowmem_reserve[]: 0 430 430 430 430",
            "x86/PAT: Configuration [0-7]: WB  WC  UC- UC",
            "RIP: 0033:0x4015e0",
            "[ 1439] 109 1439 139276 93739 245 3 0 0 tor",
            "[12 01 26 01:49:41 2026] not a stamp",
            "... 12 more tasks",
        ];
        for line in kept {
            assert_eq!(body(line), line, "{line}");
        }
    }

    #[test]
    fn only_a_glued_grep_prefix_is_cut_from_a_joined_line_end() {
        assert_eq!(
            without_trailing_grep(b"262010 pages RAM /var/log/kern.log:166290:"),
            b"262010 pages RAM "
        );
        assert_eq!(
            without_trailing_grep(b"0 pages RAM kern.log-12-"),
            b"0 pages RAM "
        );
        assert_eq!(without_trailing_grep(b"Mem-Info: "), b"Mem-Info: ");
        assert_eq!(
            without_trailing_grep(b"262010 pages RAM"),
            b"262010 pages RAM"
        );
    }

    #[test]
    fn grep_and_locale_prefixes_keep_the_inner_stamp() {
        let (prefix, _) = strip("kern.log-166234-[Пн янв 26 01:49:41 2026] x".as_bytes());
        assert_eq!(prefix.family, Family::Wallclock);
        assert_eq!(prefix.wallclock, Some("Пн янв 26 01:49:41 2026".as_bytes()));
        let (prefix, _) = strip(b"/var/log/kern.log.1:166233:Jan 4 10:04:40 pve1 kernel: x");
        assert_eq!(prefix.family, Family::Syslog);
        assert_eq!(prefix.host, Some(&b"pve1"[..]));
        let (prefix, _) = strip(b"... kernel: [430837.193448] x");
        assert_eq!(prefix.monotonic_secs, Some(430837.193448));
        assert_eq!(prefix.wallclock, None);
    }
}
