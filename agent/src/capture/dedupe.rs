//! One OOM, one event: recognises the same report seen through the serial
//! console and the guest agent, or seen again after an agent restart. Pure;
//! the hub persists [`Deduper::records`] per domain.
//!
//! Identity: the killed pid plus the kernel's monotonic time stamp (ms) of the
//! report's first line, or of its kill line. Both sources print the same
//! printk record with the same stamp; a `quiet` console shows only the kill
//! line, so its "first line" is the kill line, which the full copy matches by
//! its kill-line stamp. The key string is
//! `<uuid>:<first line stamp ms>:<pid>` of the first copy seen, and stays.

use std::collections::{BTreeMap, VecDeque};

use ballast_oom::Report;

/// What identifies one OOM kill within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomIdentity {
    pub pid: Option<u32>,
    /// Stamp of the report's first line, ms.
    pub first_ms: Option<u64>,
    /// Stamp of the kill line, ms (equals `first_ms` for a kill-line-only report).
    pub kill_ms: Option<u64>,
    /// The report is not partial.
    pub complete: bool,
    /// A hash of the kill line's text, for reports without time stamps.
    pub kill_text_hash: Option<u64>,
}

/// One remembered OOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeRecord {
    pub key: String,
    pub identity: OomIdentity,
}

/// What [`Deduper::observe`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before: emit under `key`.
    New { key: String },
    /// Seen as partial before, complete now: emit as a completion under the old `key`.
    Completes { key: String },
    /// Nothing new.
    Duplicate { key: String },
}

/// `[ 123.456789]` at the start of a line (after an optional `<N>` level), as ms.
pub fn line_stamp_ms(line: &str) -> Option<u64> {
    let line = line.trim_start();
    let line = match line.strip_prefix('<') {
        Some(rest) => rest.split_once('>')?.1,
        None => line,
    };
    let inner = line.strip_prefix('[')?.split_once(']')?.0.trim();
    let (secs, frac) = inner.split_once('.').unwrap_or((inner, "0"));
    let secs: u64 = secs.parse().ok()?;
    let mut ms = 0u64;
    for (i, digit) in frac.bytes().take(4).enumerate() {
        if !digit.is_ascii_digit() {
            return None;
        }
        let value = u64::from(digit - b'0');
        match i {
            0 => ms += value * 100,
            1 => ms += value * 10,
            2 => ms += value,
            // Round to the nearest ms.
            _ if value >= 5 => ms += 1,
            _ => {}
        }
    }
    secs.checked_mul(1000)?.checked_add(ms)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The identity of `report`, whose text is `raw`.
pub fn identity(report: &Report, raw: &str) -> OomIdentity {
    let kill_line = raw.lines().find(|line| {
        line.contains("Killed process")
            || line.contains("Kill process")
            || line.contains("killed process")
    });
    let kill_ms = kill_line.and_then(line_stamp_ms);
    let kill_text_hash = kill_line.map(|line| {
        let body = line.split_once("] ").map_or(line, |(_, body)| body);
        fnv1a(body.trim_end().as_bytes())
    });
    let first_ms = report
        .stamp
        .monotonic_secs
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| (secs * 1000.0).round() as u64);
    OomIdentity {
        pid: report.killed.as_ref().map(|killed| killed.pid),
        first_ms,
        kill_ms,
        complete: !report.partial,
        kill_text_hash,
    }
}

/// Two copies of one OOM: the same killed pid and a shared line stamp. A copy cut
/// before its kill line has no pid yet: it is the same OOM as a copy with a pid whose
/// report starts at the same stamp (the printk record both copies begin with); without
/// stamps nothing ties a pid-less copy to anything.
fn same_oom(a: &OomIdentity, b: &OomIdentity) -> bool {
    let equal = |x: Option<u64>, y: Option<u64>| x.is_some() && x == y;
    match (a.pid, b.pid) {
        (Some(x), Some(y)) if x != y => return false,
        (None, Some(_)) | (Some(_), None) => return equal(a.first_ms, b.first_ms),
        _ => {}
    }
    if a.first_ms.is_some() || a.kill_ms.is_some() || b.first_ms.is_some() || b.kill_ms.is_some() {
        equal(a.first_ms, b.first_ms)
            || equal(a.kill_ms, b.kill_ms)
            || equal(a.kill_ms, b.first_ms)
            || equal(a.first_ms, b.kill_ms)
    } else {
        equal(a.kill_text_hash, b.kill_text_hash)
    }
}

/// Remembered OOMs per domain (by uuid), the last `per_domain` of each.
#[derive(Debug, Clone)]
pub struct Deduper {
    per_domain: usize,
    domains: BTreeMap<String, VecDeque<DedupeRecord>>,
}

impl Deduper {
    pub fn new(per_domain: usize) -> Self {
        Deduper {
            per_domain: per_domain.max(1),
            domains: BTreeMap::new(),
        }
    }

    /// Whether records of `uuid` are loaded (or started).
    pub fn knows(&self, uuid: &str) -> bool {
        self.domains.contains_key(uuid)
    }

    /// Replaces the records of `uuid` (loaded from its state file).
    pub fn load(&mut self, uuid: &str, records: Vec<DedupeRecord>) {
        let mut records: VecDeque<_> = records.into();
        while records.len() > self.per_domain {
            records.pop_front();
        }
        self.domains.insert(uuid.to_owned(), records);
    }

    pub fn records(&self, uuid: &str) -> impl Iterator<Item = &DedupeRecord> {
        self.domains.get(uuid).into_iter().flatten()
    }

    pub fn forget(&mut self, uuid: &str) {
        self.domains.remove(uuid);
    }

    /// Records `identity` for `uuid` and says whether it is new.
    pub fn observe(&mut self, uuid: &str, identity: &OomIdentity) -> Seen {
        let records = self.domains.entry(uuid.to_owned()).or_default();
        if let Some(record) = records.iter_mut().find(|r| same_oom(&r.identity, identity)) {
            let key = record.key.clone();
            if identity.complete && !record.identity.complete {
                // Keep both stamps so later copies of either kind still match.
                record.identity.complete = true;
                record.identity.pid = record.identity.pid.or(identity.pid);
                record.identity.kill_text_hash =
                    record.identity.kill_text_hash.or(identity.kill_text_hash);
                record.identity.first_ms = identity.first_ms.or(record.identity.first_ms);
                record.identity.kill_ms = identity.kill_ms.or(record.identity.kill_ms);
                return Seen::Completes { key };
            }
            return Seen::Duplicate { key };
        }
        let key = format!(
            "{uuid}:{}:{}",
            identity.first_ms.map_or_else(
                || format!("h{:x}", identity.kill_text_hash.unwrap_or(0)),
                |ms| ms.to_string()
            ),
            identity
                .pid
                .map_or_else(|| "none".to_owned(), |pid| pid.to_string()),
        );
        records.push_back(DedupeRecord {
            key: key.clone(),
            identity: identity.clone(),
        });
        while records.len() > self.per_domain {
            records.pop_front();
        }
        Seen::New { key }
    }
}

/// One record as a state file line: `key pid first_ms kill_ms complete hash` (`-` = none).
pub fn record_to_line(record: &DedupeRecord) -> String {
    fn opt<T: ToString>(value: Option<T>) -> String {
        value.map_or_else(|| "-".to_owned(), |v| v.to_string())
    }
    let id = &record.identity;
    format!(
        "{} {} {} {} {} {}",
        record.key,
        opt(id.pid),
        opt(id.first_ms),
        opt(id.kill_ms),
        u8::from(id.complete),
        opt(id.kill_text_hash),
    )
}

/// Reads a line written by [`record_to_line`].
pub fn record_from_line(line: &str) -> Option<DedupeRecord> {
    let mut fields = line.split(' ');
    let key = fields.next()?.to_owned();
    let mut next = || -> Option<Option<u64>> {
        let field = fields.next()?;
        if field == "-" {
            Some(None)
        } else {
            field.parse().ok().map(Some)
        }
    };
    let pid = next()?.map(u32::try_from).transpose().ok()?;
    let first_ms = next()?;
    let kill_ms = next()?;
    let complete = next()? == Some(1);
    let kill_text_hash = next()?;
    Some(DedupeRecord {
        key,
        identity: OomIdentity {
            pid,
            first_ms,
            kill_ms,
            complete,
            kill_text_hash,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::detect::tests::LAB_LOG;

    fn parse_one(text: &str) -> (Report, String) {
        let parsed = ballast_oom::parse(text.as_bytes());
        let report = parsed.reports.into_iter().next().expect("one report");
        let raw = text[report.span.start_byte..report.span.end_byte].to_owned();
        (report, raw)
    }

    fn report_lines() -> Vec<&'static str> {
        LAB_LOG.lines().skip(353).collect()
    }

    #[test]
    fn stamps_round_to_ms() {
        assert_eq!(line_stamp_ms("[    7.409881] memhog invoked"), Some(7410));
        assert_eq!(line_stamp_ms("<4>[ 12.0001] x"), Some(12000));
        assert_eq!(line_stamp_ms("no stamp"), None);
    }

    #[test]
    fn serial_and_agent_copies_are_one_oom() {
        let lines = report_lines();
        let (full, full_raw) = parse_one(&lines.join("\n"));
        let (crlf, crlf_raw) = parse_one(&lines.join("\r\n"));
        let mut deduper = Deduper::new(1000);
        let first = deduper.observe("u", &identity(&full, &full_raw));
        assert_eq!(
            first,
            Seen::New {
                key: "u:7410:113".to_owned()
            }
        );
        let second = deduper.observe("u", &identity(&crlf, &crlf_raw));
        assert_eq!(
            second,
            Seen::Duplicate {
                key: "u:7410:113".to_owned()
            }
        );
    }

    #[test]
    fn kill_line_only_copy_is_completed_by_the_full_one() {
        let lines = report_lines();
        let (partial, partial_raw) = parse_one(lines[lines.len() - 1]);
        assert!(partial.partial);
        let (full, full_raw) = parse_one(&lines.join("\n"));
        let mut deduper = Deduper::new(1000);
        let Seen::New { key } = deduper.observe("u", &identity(&partial, &partial_raw)) else {
            panic!("first copy is new");
        };
        assert_eq!(key, "u:7420:113");
        assert_eq!(
            deduper.observe("u", &identity(&full, &full_raw)),
            Seen::Completes { key: key.clone() }
        );
        // Either copy again: nothing new.
        assert_eq!(
            deduper.observe("u", &identity(&full, &full_raw)),
            Seen::Duplicate { key: key.clone() }
        );
        assert_eq!(
            deduper.observe("u", &identity(&partial, &partial_raw)),
            Seen::Duplicate { key }
        );
        // The other order: the full copy first, then the kill line alone.
        let mut deduper = Deduper::new(1000);
        assert!(matches!(
            deduper.observe("v", &identity(&full, &full_raw)),
            Seen::New { .. }
        ));
        assert!(matches!(
            deduper.observe("v", &identity(&partial, &partial_raw)),
            Seen::Duplicate { .. }
        ));
    }

    /// A copy read while the kernel was still printing (the guest agent's `dmesg`, or
    /// a serial read ended by another CPU's line) has no kill line, so no pid: its
    /// completion is the same OOM, never a second one (a real-VM run stored both).
    #[test]
    fn a_copy_cut_before_its_kill_line_is_completed_by_the_whole_report() {
        let lines = report_lines();
        let kill_at = lines
            .iter()
            .position(|line| line.contains("oom-kill:"))
            .expect("oom-kill line");
        let (cut, cut_raw) = parse_one(&lines[..kill_at].join("\n"));
        assert!(cut.partial && cut.killed.is_none());
        let (full, full_raw) = parse_one(&lines.join("\n"));
        let (kill_only, kill_only_raw) = parse_one(lines[lines.len() - 1]);
        let mut deduper = Deduper::new(1000);
        let Seen::New { key } = deduper.observe("u", &identity(&cut, &cut_raw)) else {
            panic!("first copy is new");
        };
        assert_eq!(key, "u:7410:none");
        assert_eq!(
            deduper.observe("u", &identity(&full, &full_raw)),
            Seen::Completes { key: key.clone() }
        );
        for (copy, raw) in [
            (&full, &full_raw),
            (&cut, &cut_raw),
            (&kill_only, &kill_only_raw),
        ] {
            assert_eq!(
                deduper.observe("u", &identity(copy, raw)),
                Seen::Duplicate { key: key.clone() }
            );
        }
        // The whole report first: the cut copy read later adds nothing.
        let mut deduper = Deduper::new(1000);
        assert!(matches!(
            deduper.observe("v", &identity(&full, &full_raw)),
            Seen::New { .. }
        ));
        assert!(matches!(
            deduper.observe("v", &identity(&cut, &cut_raw)),
            Seen::Duplicate { .. }
        ));
        // Another OOM's whole report (another first stamp) is not this one's completion.
        let other = lines.join("\n").replace("[    7.", "[    9.");
        let (other, other_raw) = parse_one(&other);
        let mut deduper = Deduper::new(1000);
        deduper.observe("w", &identity(&cut, &cut_raw));
        assert!(matches!(
            deduper.observe("w", &identity(&other, &other_raw)),
            Seen::New { .. }
        ));
    }

    #[test]
    fn records_round_trip_and_stay_bounded() {
        let mut deduper = Deduper::new(3);
        for pid in 0..10 {
            let id = OomIdentity {
                pid: Some(pid),
                first_ms: Some(u64::from(pid) * 10),
                kill_ms: None,
                complete: pid % 2 == 0,
                kill_text_hash: Some(7),
            };
            deduper.observe("u", &id);
        }
        let records: Vec<_> = deduper.records("u").cloned().collect();
        assert_eq!(records.len(), 3);
        let lines: Vec<_> = records.iter().map(record_to_line).collect();
        let back: Vec<_> = lines.iter().filter_map(|l| record_from_line(l)).collect();
        assert_eq!(back, records);
        let mut restarted = Deduper::new(3);
        restarted.load("u", back);
        assert!(matches!(
            restarted.observe("u", &records[2].identity),
            Seen::Duplicate { .. }
        ));
    }
}
