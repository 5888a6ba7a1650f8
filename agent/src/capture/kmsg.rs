//! Reads the guest's `/dev/kmsg` through the guest agent's file API
//! (`guest-file-open`, `guest-file-read`, `guest-file-close`): nothing is started
//! in the guest.
//!
//! How qemu-ga reads (qga/commands-posix.c): the file is opened non-blocking and
//! `guest-file-read` is one `fread(count)`. On `/dev/kmsg` each `read()` returns
//! one record, so `fread` gathers records until `count` bytes are in (a record cut
//! at the end stays in stdio's buffer for the next call). At the end of the ring
//! `read()` fails with EAGAIN: the whole call fails and the bytes it had gathered
//! are dropped. A fresh handle starts again at the oldest record, so the tail lost
//! by a large read is read again, with smaller ones:
//! 1. a pass opens `/dev/kmsg`, re-reads the bytes a former pass proved to exist
//!    (in calls of at most 1 MiB), then reads on in chunks of this pass's size
//!    until a read fails;
//! 2. the chunk shrinks 64 KiB, 4 KiB, 256, 16, 1 byte: each pass loses less than
//!    its chunk, the last loses nothing;
//! 3. a read shorter than asked, or `eof`, is the end of a regular file.
//!
//! Bounds (everything the guest sends is hostile): one time limit for all passes;
//! a finer pass makes at most (former chunk / its chunk + 1) reads past the known
//! bytes; at most `max_bytes` kept (the newest; older bytes dropped at a line start);
//! at most twice that read per pass; each chunk at most what was asked (the
//! backends refuse more and malformed base64).
//!
//! [`to_dmesg_text`] turns kmsg records (`6,1234,5678901,-;text`) into dmesg
//! lines (`[    5.678901] text`), the form the serial console shows, so that both
//! sources give a report the same dedupe identity.

use std::time::{Duration, Instant};

use crate::hypervisor::{DomainId, Hypervisor, HypervisorError};

/// The kernel log device in the guest.
pub const KMSG_PATH: &str = "/dev/kmsg";

/// Chunk sizes of the passes, largest first; the last is 1 (exact).
const PASS_CHUNKS: [usize; 5] = [64 * 1024, 4096, 256, 16, 1];

/// Most bytes one `guest-file-read` asks for when re-reading known bytes.
const MAX_CALL_BYTES: usize = 1024 * 1024;

/// What [`read_kmsg`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRead {
    /// Raw kmsg records, the newest `max_bytes` of them.
    pub bytes: Vec<u8>,
    /// Older records were dropped to stay within `max_bytes`.
    pub truncated: bool,
    /// `guest-file-*` calls made.
    pub calls: u32,
}

/// The newest bytes of a stream, at most `max` of them.
#[derive(Debug)]
struct Window {
    bytes: Vec<u8>,
    max: usize,
    truncated: bool,
}

impl Window {
    fn new(max: usize) -> Self {
        Window {
            bytes: Vec::new(),
            max,
            truncated: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > self.max {
            let excess = self.bytes.len() - self.max;
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }

    fn finish(mut self, calls: u32) -> KmsgRead {
        if self.truncated {
            // Start at a whole line.
            let start = memchr::memchr(b'\n', &self.bytes).map_or(self.bytes.len(), |at| at + 1);
            self.bytes.drain(..start);
        }
        KmsgRead {
            bytes: self.bytes,
            truncated: self.truncated,
            calls,
        }
    }
}

/// How one pass ended.
#[derive(Debug)]
enum PassEnd {
    /// A read failed (the end of the ring, at this chunk size): `known` bytes exist.
    Failed { known: usize },
    /// A short read or eof: the whole file is in.
    Complete,
    /// The pass read its cap of bytes.
    Capped,
}

struct Pass<'a> {
    hypervisor: &'a dyn Hypervisor,
    id: &'a DomainId,
    deadline: Instant,
    timeout: Duration,
    calls: u32,
}

impl Pass<'_> {
    fn remaining(&self) -> Result<Duration, HypervisorError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HypervisorError::Timeout(self.timeout));
        }
        Ok(left)
    }

    fn read(&mut self, handle: i64, count: usize) -> Result<Vec<u8>, HypervisorError> {
        let left = self.remaining()?;
        self.calls = self.calls.saturating_add(1);
        let chunk = self
            .hypervisor
            .guest_file_read(self.id, handle, count, left)?;
        if chunk.data.len() > count {
            // The backends refuse this; a guard for a new one.
            return Err(HypervisorError::guest_refused(
                self.id,
                "guest-file-read",
                "Protocol",
                "the guest agent sent more bytes than asked",
            ));
        }
        // With `eof` and a full chunk the next read is short: the end then.
        Ok(chunk.data)
    }

    /// One pass on an open handle: `known` bytes again, then `chunk`-sized reads.
    fn run(
        &mut self,
        handle: i64,
        known: usize,
        chunk: usize,
        window: &mut Window,
        cap: usize,
        max_probes: usize,
    ) -> Result<PassEnd, HypervisorError> {
        let mut read = 0usize;
        let mut probes = 0usize;
        while read < known {
            let count = (known - read).min(MAX_CALL_BYTES);
            match self.read(handle, count) {
                Ok(data) => {
                    let short = data.len() < count;
                    read += data.len();
                    window.push(&data);
                    if short {
                        return Ok(PassEnd::Complete);
                    }
                }
                // The ring dropped old records meanwhile, so fewer bytes exist now.
                Err(HypervisorError::GuestRefused { .. }) => {
                    return Ok(PassEnd::Failed { known: read })
                }
                Err(error) => return Err(error),
            }
        }
        loop {
            if read >= cap {
                return Ok(PassEnd::Capped);
            }
            if probes >= max_probes {
                // More than the tail a former pass lost (the log grew meanwhile, or
                // a hostile agent): the next, finer pass goes on from here.
                return Ok(PassEnd::Failed { known: read });
            }
            probes += 1;
            match self.read(handle, chunk) {
                Ok(data) => {
                    let short = data.len() < chunk;
                    read += data.len();
                    window.push(&data);
                    if short {
                        return Ok(PassEnd::Complete);
                    }
                }
                Err(error @ HypervisorError::GuestRefused { .. }) => {
                    if error.is_command_disabled() {
                        return Err(error);
                    }
                    return Ok(PassEnd::Failed { known: read });
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Reads the guest's `/dev/kmsg` through the guest agent's file API within
/// `timeout`, keeping the newest `max_bytes`. An error from the first open is
/// returned as is ([`HypervisorError::is_command_disabled`] says whether the file
/// API is disabled in the guest).
pub fn read_kmsg(
    hypervisor: &dyn Hypervisor,
    id: &DomainId,
    timeout: Duration,
    max_bytes: usize,
) -> Result<KmsgRead, HypervisorError> {
    read_file(hypervisor, id, KMSG_PATH, timeout, max_bytes)
}

fn read_file(
    hypervisor: &dyn Hypervisor,
    id: &DomainId,
    path: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<KmsgRead, HypervisorError> {
    let mut pass = Pass {
        hypervisor,
        id,
        deadline: Instant::now() + timeout,
        timeout,
        calls: 0,
    };
    let cap = max_bytes.saturating_mul(2).max(1);
    let mut known = 0usize;
    let mut best: Option<Window> = None;
    let mut previous_chunk: Option<usize> = None;
    for chunk in PASS_CHUNKS {
        // A finer pass reads what the former one lost: less than its chunk.
        let max_probes = previous_chunk.map_or(usize::MAX, |previous| previous / chunk + 1);
        previous_chunk = Some(chunk);
        let left = match pass.remaining() {
            Ok(left) => left,
            Err(error) => match best {
                // Out of time while refining: the tail of this read may be missing.
                Some(window) => return Ok(window.finish(pass.calls)),
                None => return Err(error),
            },
        };
        pass.calls = pass.calls.saturating_add(1);
        let handle = match hypervisor.guest_file_open(id, path, left) {
            Ok(handle) => handle,
            Err(error) => match best {
                Some(window) => {
                    tracing::debug!(error = %ballast_daemon::error_chain(&error), "Guest kernel log reopen failed; its newest bytes may be missing.");
                    return Ok(window.finish(pass.calls));
                }
                None => return Err(error),
            },
        };
        let mut window = Window::new(max_bytes);
        let end = pass.run(handle, known, chunk, &mut window, cap, max_probes);
        // Closed even after a failure; a close that fails leaks one handle in the
        // guest agent until it restarts, so it is logged.
        pass.calls = pass.calls.saturating_add(1);
        let close_in = pass.remaining().unwrap_or(Duration::from_secs(1));
        if let Err(error) = hypervisor.guest_file_close(id, handle, close_in) {
            tracing::debug!(error = %ballast_daemon::error_chain(&error), "Guest agent file handle not closed.");
        }
        match end {
            Ok(PassEnd::Failed { known: now_known }) => {
                known = now_known;
                best = Some(window);
            }
            Ok(PassEnd::Complete | PassEnd::Capped) => return Ok(window.finish(pass.calls)),
            Err(error) => match best {
                Some(window) => {
                    tracing::debug!(error = %ballast_daemon::error_chain(&error), "Guest kernel log read cut short; its newest bytes may be missing.");
                    return Ok(window.finish(pass.calls));
                }
                None => return Err(error),
            },
        }
    }
    Ok(best
        .unwrap_or_else(|| Window::new(max_bytes))
        .finish(pass.calls))
}

/// kmsg records to dmesg lines: `pri,seq,usecs,flags[,...];text` becomes
/// `[secs.micros] text`; the records' continuation lines (` KEY=value`) are
/// dropped; a line that is not a record is kept as it is. At most `max_bytes`
/// (the newest lines).
pub fn to_dmesg_text(records: &[u8], max_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        records
            .len()
            .saturating_add(records.len() / 4)
            .min(max_bytes.saturating_add(64)),
    );
    for line in records.split(|byte| *byte == b'\n') {
        if line.is_empty() || line.first() == Some(&b' ') {
            continue;
        }
        match record_stamp(line) {
            Some((usecs, text)) => {
                out.extend_from_slice(
                    format!("[{:5}.{:06}] ", usecs / 1_000_000, usecs % 1_000_000).as_bytes(),
                );
                out.extend_from_slice(text);
            }
            None => out.extend_from_slice(line),
        }
        out.push(b'\n');
    }
    if out.len() > max_bytes {
        let excess = out.len() - max_bytes;
        let start = memchr::memchr(b'\n', &out[excess..]).map_or(out.len(), |at| excess + at + 1);
        out.drain(..start);
    }
    out
}

/// The time stamp (µs) and text of one kmsg record line.
fn record_stamp(line: &[u8]) -> Option<(u64, &[u8])> {
    let semicolon = memchr::memchr(b';', line)?;
    let (prefix, text) = (&line[..semicolon], &line[semicolon + 1..]);
    let prefix = std::str::from_utf8(prefix).ok()?;
    let mut fields = prefix.split(',');
    fields.next()?.parse::<u32>().ok()?;
    fields.next()?.parse::<u64>().ok()?;
    let usecs = fields.next()?.parse::<u64>().ok()?;
    Some((usecs, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};

    fn domain(log: &[u8], disabled: bool) -> (FakeHypervisor, DomainId) {
        let hypervisor = FakeHypervisor::new();
        let id = DomainId {
            uuid: "u".to_owned(),
            name: "vm".to_owned(),
        };
        hypervisor.set(
            id.clone(),
            FakeDomain {
                running: true,
                dmesg: Some(log.to_vec()),
                file_api_disabled: disabled,
                ..FakeDomain::default()
            },
        );
        (hypervisor, id)
    }

    fn records(count: usize) -> Vec<u8> {
        let mut log = Vec::new();
        for seq in 0..count {
            log.extend_from_slice(
                format!(
                    "6,{seq},{},-;line {seq} of the guest kernel log\n",
                    seq * 1500
                )
                .as_bytes(),
            );
            if seq % 7 == 0 {
                log.extend_from_slice(b" SUBSYSTEM=virtio\n");
            }
        }
        log
    }

    #[test]
    fn every_byte_of_the_ring_is_read_although_a_read_past_the_end_drops_its_bytes() {
        // Sizes around the chunk sizes: the last bytes are the ones a single big
        // read would lose.
        for count in [0, 1, 3, 100, 1500, 1611, 5000] {
            let log = records(count);
            let (hypervisor, id) = domain(&log, false);
            let read = read_kmsg(&hypervisor, &id, Duration::from_secs(5), 4 << 20)
                .expect("file API answers");
            assert_eq!(read.bytes, log, "{count} records");
            assert!(!read.truncated);
            assert_eq!(hypervisor.open_handles(), 0, "every handle closed");
            // Bounded: five passes, each at most 16 probes plus its re-read.
            assert!(
                read.calls < 5 * 40 + log.len() as u32 / 65536,
                "{} calls",
                read.calls
            );
        }
    }

    #[test]
    fn only_the_newest_bytes_are_kept_from_a_huge_ring() {
        let log = records(20_000);
        let (hypervisor, id) = domain(&log, false);
        let read = read_kmsg(&hypervisor, &id, Duration::from_secs(5), 64 * 1024)
            .expect("file API answers");
        assert!(read.truncated);
        assert!(read.bytes.len() <= 64 * 1024);
        let tail = String::from_utf8(read.bytes).expect("text");
        assert!(
            tail.starts_with("6,") || tail.starts_with(' '),
            "starts at a line: {:?}",
            &tail[..40]
        );
        // The pass cap (2 x 64 KiB) stops before the end of a 1.2 MB ring.
        assert!(log.len() > 2 * 64 * 1024);
    }

    #[test]
    fn a_disabled_file_api_is_an_error_that_says_so() {
        let (hypervisor, id) = domain(b"6,1,1,-;x\n", true);
        let error =
            read_kmsg(&hypervisor, &id, Duration::from_secs(5), 1 << 20).expect_err("disabled");
        assert!(error.is_command_disabled(), "{error}");
        assert!(error.to_string().contains("guest-file-open"), "{error}");
    }

    #[test]
    fn records_become_dmesg_lines_and_other_lines_pass() {
        let text = to_dmesg_text(
            b"6,812,5678901,-;memhog invoked oom-killer: gfp_mask=0x140cca\n SUBSYSTEM=x\n4,813,12000000,c,caller=T1;Out of memory: Killed process 9\nnot a record\n7,x,1,-;bad seq\n",
            1 << 20,
        );
        assert_eq!(
            String::from_utf8(text).expect("text"),
            "[    5.678901] memhog invoked oom-killer: gfp_mask=0x140cca\n\
             [   12.000000] Out of memory: Killed process 9\n\
             not a record\n\
             7,x,1,-;bad seq\n"
        );
        let long = to_dmesg_text(&records(1000), 4096);
        assert!(long.len() <= 4096);
        assert!(long.starts_with(b"["));
    }
}
