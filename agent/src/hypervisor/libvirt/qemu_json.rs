//! Replies of QEMU's monitor (QMP) and of the guest agent, as libvirt hands them over.
//!
//! Both are guest-influenced JSON: the balloon stats are what the guest driver
//! wrote, and the guest agent is a program inside the guest that may send anything.
//! Rules: a reply larger than the caller's bound is refused before it is parsed;
//! base64 output is cut to the bound before it is decoded; nothing here panics.

use std::borrow::Cow;

use crate::hypervisor::guest_base64;
use serde::Deserialize;

use crate::hypervisor::GuestCounters;

/// The QMP command that reads the balloon's guest stats (libvirt names the balloon
/// device `balloon0`).
pub(crate) const QOM_GET_GUEST_STATS: &str = r#"{"execute":"qom-get","arguments":{"path":"/machine/peripheral/balloon0","property":"guest-stats"}}"#;

/// A monitor or agent reply that ballast could not use.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("Reply of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("Malformed reply")]
    Malformed(#[source] serde_json::Error),
    #[error("Error reply: {0}")]
    Error(String),
    #[error("Reply has no {0}")]
    Missing(&'static str),
    #[error("Malformed base64 output")]
    Base64(#[source] base64::DecodeError),
}

use crate::hypervisor::agent_reply::{self, ErrorBody};

fn parse_reply<'a, T: Deserialize<'a>>(
    reply: &'a str,
    limit: usize,
) -> Result<Result<T, ErrorBody>, ReplyError> {
    if reply.len() > limit {
        return Err(ReplyError::TooLarge {
            size: reply.len(),
            limit,
        });
    }
    agent_reply::parse(reply)
        .map_err(ReplyError::Malformed)?
        .ok_or(ReplyError::Missing("return"))
}

/// The `qom-get ... guest-stats` reply -> counters. `Ok(None)` when QEMU answers with
/// an error (no balloon device, a QEMU without the property) or when none of the six
/// kernel-6.12 counters is reported (older guest or QEMU, or no report yet).
pub(crate) fn parse_guest_counters(
    reply: &str,
    limit: usize,
) -> Result<Option<GuestCounters>, ReplyError> {
    let Ok(value) = parse_reply::<serde_json::Value>(reply, limit)? else {
        return Ok(None);
    };
    let shaped = value
        .as_object()
        .is_some_and(|object| object.get("stats").is_none_or(serde_json::Value::is_object));
    if !shaped {
        return Err(ReplyError::Missing("guest-stats object"));
    }
    Ok(crate::hypervisor::guest_stats::guest_counters(&value))
}

/// A guest agent reply: its value, or the error the agent answered (class, desc).
pub(crate) type AgentAnswer<T> = Result<T, (String, String)>;

fn answer<T>(result: Result<T, ErrorBody>) -> AgentAnswer<T> {
    result.map_err(|error| (error.class, error.desc))
}

/// The `guest-file-open` command line (read only).
pub(crate) fn guest_file_open_command(path: &str) -> String {
    serde_json::json!({ "execute": "guest-file-open", "arguments": { "path": path, "mode": "r" } })
        .to_string()
}

/// The `guest-file-read` command line.
pub(crate) fn guest_file_read_command(handle: i64, count: usize) -> String {
    serde_json::json!({ "execute": "guest-file-read", "arguments": { "handle": handle, "count": count } })
        .to_string()
}

/// The `guest-file-close` command line.
pub(crate) fn guest_file_close_command(handle: i64) -> String {
    serde_json::json!({ "execute": "guest-file-close", "arguments": { "handle": handle } })
        .to_string()
}

/// The handle of a `guest-file-open` reply.
pub(crate) fn parse_file_open(reply: &str, limit: usize) -> Result<AgentAnswer<i64>, ReplyError> {
    Ok(answer(parse_reply::<i64>(reply, limit)?))
}

#[derive(Deserialize)]
struct FileReadReturn<'a> {
    count: u64,
    #[serde(rename = "buf-b64", borrow, default)]
    buf_b64: Option<Cow<'a, str>>,
    #[serde(default)]
    eof: bool,
}

/// A `guest-file-read` reply, decoded: at most `count` bytes, or an error (a
/// guest that sends more than asked, or a `count` that does not match its data).
pub(crate) fn parse_file_read(
    reply: &str,
    limit: usize,
    count: usize,
) -> Result<AgentAnswer<super::super::FileChunk>, ReplyError> {
    let value = match parse_reply::<FileReadReturn<'_>>(reply, limit)? {
        Ok(value) => value,
        Err(error) => return Ok(Err((error.class, error.desc))),
    };
    let (data, cut) = match value.buf_b64.as_deref() {
        Some(data) => decode_bounded(data, count)?,
        None => (Vec::new(), false),
    };
    if cut || u64::try_from(data.len()).ok() != Some(value.count) {
        return Err(ReplyError::Missing(
            "count matching buf-b64 within the bytes asked",
        ));
    }
    Ok(Ok(super::super::FileChunk {
        data,
        eof: value.eof,
    }))
}

/// A `guest-file-close` reply.
pub(crate) fn parse_file_close(reply: &str, limit: usize) -> Result<AgentAnswer<()>, ReplyError> {
    Ok(answer(parse_reply::<serde_json::Value>(reply, limit)?).map(drop))
}

/// [`guest_base64::decode_bounded`], its error as a reply error.
fn decode_bounded(data: &str, max_bytes: usize) -> Result<(Vec<u8>, bool), ReplyError> {
    guest_base64::decode_bounded(data, max_bytes).map_err(ReplyError::Base64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    /// A 6.12 guest on QEMU 10, after one OOM kill (keys as in LAB-NOTES).
    const STATS_612: &str = r#"{"return": {"stats": {"stat-htlb-pgfail": 0, "stat-available-memory": 469405696, "stat-oom-kills": 1, "stat-alloc-stalls": 41, "stat-async-scans": 0, "stat-direct-scans": 1994752, "stat-async-reclaims": 0, "stat-direct-reclaims": 1417216, "stat-free-memory": 412000256, "stat-total-memory": 494190592, "stat-disk-caches": 9306112}, "last-update": 1795658493}, "id": "libvirt-415"}"#;

    #[test]
    fn guest_counters_of_a_612_guest() {
        let counters = parse_guest_counters(STATS_612, LIMIT).expect("parse");
        assert_eq!(
            counters,
            Some(GuestCounters {
                oom_kills: Some(1),
                alloc_stalls: Some(41),
                async_scans_bytes: Some(0),
                direct_scans_bytes: Some(1_994_752),
                async_reclaims_bytes: Some(0),
                direct_reclaims_bytes: Some(1_417_216),
                last_update_epoch_secs: Some(1_795_658_493),
            })
        );
    }

    #[test]
    fn never_reported_counters_are_none() {
        // A 6.1 guest on QEMU 10: the six keys read u64::MAX.
        let max = u64::MAX;
        let reply = format!(
            r#"{{"return": {{"stats": {{"stat-oom-kills": {max}, "stat-alloc-stalls": {max}, "stat-async-scans": {max}, "stat-direct-scans": {max}, "stat-async-reclaims": {max}, "stat-direct-reclaims": {max}, "stat-free-memory": 1}}, "last-update": 17}}}}"#
        );
        assert_eq!(parse_guest_counters(&reply, LIMIT).expect("parse"), None);
        // One counter reported, the others not.
        let reply = format!(
            r#"{{"return": {{"stats": {{"stat-oom-kills": 3, "stat-alloc-stalls": {max}}}, "last-update": 0}}}}"#
        );
        let counters = parse_guest_counters(&reply, LIMIT)
            .expect("parse")
            .expect("some");
        assert_eq!(counters.oom_kills, Some(3));
        assert_eq!(counters.alloc_stalls, None);
        assert_eq!(counters.last_update_epoch_secs, None);
        // QEMU 7.2: the keys are missing entirely.
        let old = r#"{"return": {"stats": {"stat-free-memory": 1}, "last-update": 5}}"#;
        assert_eq!(parse_guest_counters(old, LIMIT).expect("parse"), None);
    }

    #[test]
    fn error_replies_and_hostile_input() {
        let no_device = r#"{"id": "libvirt-9", "error": {"class": "DeviceNotFound", "desc": "Device 'balloon0' not found"}}"#;
        assert_eq!(parse_guest_counters(no_device, LIMIT).expect("parse"), None);
        for garbage in [
            "",
            "null",
            "[]",
            "{",
            r#"{"return": 5}"#,
            r#"{"return": {"stats": 5}}"#,
        ] {
            assert!(parse_guest_counters(garbage, LIMIT).is_err(), "{garbage:?}");
        }
        let odd_types = r#"{"return": {"stats": {"stat-oom-kills": "1", "stat-alloc-stalls": -3, "stat-async-scans": 1.5, "stat-direct-scans": 2}}}"#;
        let counters = parse_guest_counters(odd_types, LIMIT)
            .expect("parse")
            .expect("some");
        assert_eq!(counters.oom_kills, None);
        assert_eq!(counters.alloc_stalls, None);
        assert_eq!(counters.async_scans_bytes, None);
        assert_eq!(counters.direct_scans_bytes, Some(2));
        let deep = "[".repeat(100_000);
        assert!(parse_guest_counters(&deep, usize::MAX).is_err());
        let huge = format!(
            r#"{{"return": {{"stats": {{}}, "pad": "{}"}}}}"#,
            "x".repeat(LIMIT)
        );
        assert!(matches!(
            parse_guest_counters(&huge, LIMIT),
            Err(ReplyError::TooLarge { .. })
        ));
    }

    #[test]
    fn file_read_replies_are_bounded_and_checked() {
        let ok = r#"{"return":{"count":5,"buf-b64":"aGVsbG8=","eof":false}}"#;
        let chunk = parse_file_read(ok, 1 << 20, 5)
            .expect("parses")
            .expect("return");
        assert_eq!(chunk.data, b"hello");
        assert!(!chunk.eof);
        // More than asked, a count that lies, bad base64: errors, never data.
        assert!(parse_file_read(ok, 1 << 20, 4).is_err());
        let lying = r#"{"return":{"count":9,"buf-b64":"aGVsbG8=","eof":false}}"#;
        assert!(parse_file_read(lying, 1 << 20, 64).is_err());
        let bad = r#"{"return":{"count":5,"buf-b64":"a*VsbG8=","eof":false}}"#;
        assert!(parse_file_read(bad, 1 << 20, 64).is_err());
        let refused = r#"{"error":{"class":"GenericError","desc":"failed to read file: Resource temporarily unavailable"}}"#;
        let (class, desc) = parse_file_read(refused, 1 << 20, 64)
            .expect("parses")
            .expect_err("refused");
        assert_eq!(class, "GenericError");
        assert!(desc.contains("Resource temporarily unavailable"));
        assert_eq!(
            parse_file_open(r#"{"return":1000}"#, 1024).expect("parses"),
            Ok(1000)
        );
        assert!(parse_file_close(r#"{"return":{}}"#, 1024)
            .expect("parses")
            .is_ok());
    }
}
