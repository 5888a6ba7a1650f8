//! The guest's `/proc/pressure/memory` (Linux PSI) -> [`GuestPsi`].
//!
//! ```text
//! some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//!
//! The guest writes these bytes: at most [`MAX_PSI_BYTES`] are read, any byte
//! sequence gives a [`GuestPsi`] or an error naming the line and field, never a panic,
//! and every average is a finite percentage in 0..=100.
//!
//! [`read`] fetches the file through the guest agent's file API (`guest-file-open`,
//! `guest-file-read`, `guest-file-close`; nothing is started in the guest). It blocks
//! on the guest: the run loop calls it on the guest agent threads
//! ([`crate::capture::ga_worker`]), never on the monitor thread.

use std::time::{Duration, Instant};

use crate::hypervisor::{DomainId, Hypervisor, HypervisorError};

/// The guest path read through the guest agent's file API.
pub const PSI_MEMORY_PATH: &str = "/proc/pressure/memory";
/// The most of the file that is read (the kernel writes about 100 bytes).
pub const MAX_PSI_BYTES: usize = 512;

/// One line of the file (`some` or `full`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiLine {
    /// Share of the last 10 s some (or all) tasks stalled on memory, percent.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Stall time since the guest booted, microseconds.
    pub total_us: u64,
}

/// The guest's memory pressure as its kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuestPsi {
    pub some: PsiLine,
    /// Absent on kernels that print only `some`.
    pub full: Option<PsiLine>,
}

/// Why a PSI file was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PsiError {
    #[error("{PSI_MEMORY_PATH}: {len} bytes, more than the {MAX_PSI_BYTES} a PSI file has")]
    TooLong { len: usize },
    #[error("{PSI_MEMORY_PATH} line {line}: field {field}: {reason}")]
    Field {
        line: usize,
        field: &'static str,
        reason: &'static str,
    },
    #[error("{PSI_MEMORY_PATH} line {line}: {reason}")]
    Line { line: usize, reason: &'static str },
    #[error("{PSI_MEMORY_PATH}: no `some` line")]
    NoSome,
}

/// Why the guest's PSI was not read.
#[derive(Debug, thiserror::Error)]
pub enum PsiReadError {
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    #[error(transparent)]
    Parse(#[from] PsiError),
}

impl PsiReadError {
    /// The guest will answer the same next time: its agent refuses the file API,
    /// or it has no PSI file (a kernel without PSI), or writes one we cannot read.
    pub fn is_lasting(&self) -> bool {
        match self {
            PsiReadError::Hypervisor(error) => {
                matches!(error, HypervisorError::GuestRefused { .. })
            }
            PsiReadError::Parse(_) => true,
        }
    }
}

/// Most `guest-file-read` calls one read makes (a regular file ends in one or two).
const MAX_READ_CALLS: usize = 4;

/// Reads and parses the guest's `/proc/pressure/memory` within `timeout` for all
/// calls; the handle is closed whatever happened.
pub fn read(
    hypervisor: &dyn Hypervisor,
    id: &DomainId,
    timeout: Duration,
) -> Result<GuestPsi, PsiReadError> {
    let started = Instant::now();
    let left = || {
        timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(100))
    };
    let handle = hypervisor.guest_file_open(id, PSI_MEMORY_PATH, left())?;
    let mut bytes = Vec::new();
    let mut outcome: Result<(), PsiReadError> = Ok(());
    for _ in 0..MAX_READ_CALLS {
        if started.elapsed() >= timeout {
            outcome = Err(HypervisorError::Timeout(timeout).into());
            break;
        }
        // One byte more than the cap: a longer file is refused, never cut.
        let want = MAX_PSI_BYTES + 1 - bytes.len();
        match hypervisor.guest_file_read(id, handle, want, left()) {
            Ok(chunk) => {
                let short = chunk.data.len() < want;
                bytes.extend(chunk.data.into_iter().take(want));
                if chunk.eof || short || bytes.len() > MAX_PSI_BYTES {
                    break;
                }
            }
            Err(error) => {
                outcome = Err(error.into());
                break;
            }
        }
    }
    if let Err(error) = hypervisor.guest_file_close(id, handle, left()) {
        tracing::debug!(%error, "Failed to close the guest's PSI file handle.");
    }
    outcome?;
    Ok(parse(&bytes)?)
}

/// Parses the file's bytes.
pub fn parse(bytes: &[u8]) -> Result<GuestPsi, PsiError> {
    if bytes.len() > MAX_PSI_BYTES {
        return Err(PsiError::TooLong { len: bytes.len() });
    }
    let mut some = None;
    let mut full = None;
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            return Err(PsiError::Line {
                line,
                reason: "not UTF-8",
            });
        };
        let mut words = text.split_ascii_whitespace();
        let Some(kind) = words.next() else {
            continue;
        };
        let slot = match kind {
            "some" => &mut some,
            "full" => &mut full,
            _ => {
                return Err(PsiError::Line {
                    line,
                    reason: "neither `some` nor `full`",
                })
            }
        };
        if slot.is_some() {
            return Err(PsiError::Line {
                line,
                reason: "a second line of the same kind",
            });
        }
        *slot = Some(parse_line(line, words)?);
    }
    Ok(GuestPsi {
        some: some.ok_or(PsiError::NoSome)?,
        full,
    })
}

fn parse_line<'a>(line: usize, words: impl Iterator<Item = &'a str>) -> Result<PsiLine, PsiError> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(PsiError::Line {
                line,
                reason: "a word that is not key=value",
            });
        };
        match key {
            "avg10" => avg10 = Some(percent(line, "avg10", value)?),
            "avg60" => avg60 = Some(percent(line, "avg60", value)?),
            "avg300" => avg300 = Some(percent(line, "avg300", value)?),
            "total" => {
                total = Some(value.parse::<u64>().map_err(|_| PsiError::Field {
                    line,
                    field: "total",
                    reason: "not a whole number of microseconds",
                })?)
            }
            // A later kernel may add keys: they are not ours to refuse.
            _ => {}
        }
    }
    let missing = |field| PsiError::Field {
        line,
        field,
        reason: "missing",
    };
    Ok(PsiLine {
        avg10: avg10.ok_or_else(|| missing("avg10"))?,
        avg60: avg60.ok_or_else(|| missing("avg60"))?,
        avg300: avg300.ok_or_else(|| missing("avg300"))?,
        total_us: total.ok_or_else(|| missing("total"))?,
    })
}

/// A percentage as the kernel prints it (`12.34`): digits and one dot only, so
/// `inf`, `NaN` and exponents never pass, and within 0..=100.
fn percent(line: usize, field: &'static str, value: &str) -> Result<f64, PsiError> {
    let plain = !value.is_empty()
        && value.len() <= 16
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && value.bytes().filter(|&b| b == b'.').count() <= 1;
    let parsed = plain.then(|| value.parse::<f64>().ok()).flatten();
    match parsed {
        Some(share) if share.is_finite() && (0.0..=100.0).contains(&share) => Ok(share),
        Some(_) => Err(PsiError::Field {
            line,
            field,
            reason: "beyond 100 percent",
        }),
        None => Err(PsiError::Field {
            line,
            field,
            reason: "not a decimal percentage",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &[u8] = b"some avg10=1.53 avg60=0.42 avg300=0.09 total=1234567\n\
full avg10=0.71 avg60=0.20 avg300=0.04 total=654321\n";

    #[test]
    fn a_kernels_file_reads_as_its_figures() {
        let psi = parse(REAL).expect("parse");
        assert_eq!(psi.some.avg10, 1.53);
        assert_eq!(psi.some.avg300, 0.09);
        assert_eq!(psi.some.total_us, 1_234_567);
        let full = psi.full.expect("full line");
        assert_eq!((full.avg60, full.total_us), (0.20, 654_321));
        let only_some = parse(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=0").expect("parse");
        assert_eq!(only_some.full, None);
        assert_eq!(only_some.some.total_us, 0);
    }

    #[test]
    fn a_bad_file_names_the_line_and_field() {
        let cases: [(&[u8], PsiError); 6] = [
            (
                b"some avg10=inf avg60=0 avg300=0 total=1",
                PsiError::Field {
                    line: 1,
                    field: "avg10",
                    reason: "not a decimal percentage",
                },
            ),
            (
                b"some avg10=0 avg60=0 avg300=0 total=1\nfull avg10=0 avg60=250.5 avg300=0 total=1",
                PsiError::Field {
                    line: 2,
                    field: "avg60",
                    reason: "beyond 100 percent",
                },
            ),
            (
                b"some avg10=0 avg60=0 avg300=0 total=-4",
                PsiError::Field {
                    line: 1,
                    field: "total",
                    reason: "not a whole number of microseconds",
                },
            ),
            (
                b"some avg10=0 avg60=0 total=1",
                PsiError::Field {
                    line: 1,
                    field: "avg300",
                    reason: "missing",
                },
            ),
            (b"full avg10=0 avg60=0 avg300=0 total=1", PsiError::NoSome),
            (
                b"some avg10=0 avg60=0 avg300=0 total=1\nsome avg10=0 avg60=0 avg300=0 total=1",
                PsiError::Line {
                    line: 2,
                    reason: "a second line of the same kind",
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                parse(bytes),
                Err(expected),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let long = vec![b' '; MAX_PSI_BYTES + 1];
        assert_eq!(parse(&long), Err(PsiError::TooLong { len: 513 }));
        let message = parse(b"some avg10=x").expect_err("bad").to_string();
        assert!(
            message.contains("/proc/pressure/memory line 1: field avg10"),
            "{message}"
        );
    }

    /// Any bytes at all (random, and random edits of a real file): a result, never a
    /// panic, and what parses is finite and in range.
    #[test]
    fn no_bytes_make_it_panic_or_leave_its_range() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"somefulavg1036=.0123456789 \n\ttotal-+eEinfNa\xff\xc3";
        let mut parsed = 0;
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                REAL.to_vec()
            } else {
                Vec::new()
            };
            let edits = usize::try_from(next() % 12).unwrap_or(0);
            for _ in 0..edits {
                let byte = if next() % 3 == 0 {
                    u8::try_from(next() % 256).unwrap_or(0)
                } else {
                    alphabet[usize::try_from(next()).unwrap_or(0) % alphabet.len()]
                };
                let at = usize::try_from(next()).unwrap_or(0) % (bytes.len() + 1);
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, byte),
                }
            }
            if let Ok(psi) = parse(&bytes) {
                parsed += 1;
                for line in std::iter::once(psi.some).chain(psi.full) {
                    for share in [line.avg10, line.avg60, line.avg300] {
                        assert!(share.is_finite() && (0.0..=100.0).contains(&share));
                    }
                }
            }
        }
        assert!(parsed > 100, "the edits left some files readable: {parsed}");
    }
}
