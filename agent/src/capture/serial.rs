//! Tails one domain's serial console log file, as virtlogd writes it.
//!
//! The log is one byte stream across files; offsets in it ("stream offsets")
//! only grow, and are what the detector's watermark and the state file use.
//! 1. The first time, the file is read from its start. Later, the persisted
//!    state names the file (device + inode), the offset to resume at, and the
//!    last 32 bytes before it (a fingerprint).
//! 2. Rotation: virtlogd renames `file` to `file.0` (`file.0` to `file.1`, ...)
//!    and starts a new `file`. The open descriptor is read to its end, then the
//!    new `file` from 0. After a restart, the persisted inode is looked up among
//!    the backups and read on from there, then the newer files in turn.
//! 3. Truncation: libvirt truncates the file when the domain starts with
//!    `append='off'`. A file shorter than the read offset, or whose bytes
//!    before the offset no longer match the fingerprint, is read again from 0.
//! 4. The state file is written atomically after every poll that emitted
//!    something and otherwise every `persist_interval`. It resumes at the first
//!    line the detector may still need, so an unsettled report is re-read, and
//!    the watermark keeps settled ones from coming out twice.
//!
//! Memory: one read buffer (64 KiB) per thread, shared by all tailers, one line (`max_line_bytes`) and the
//! detector's window (`window_bytes`), whatever the guest prints.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::detect::{Detected, Detector, PuffLine};
use super::lines::LineSplitter;
use super::state::{self, StateFile};
use super::{CaptureError, CaptureSettings};

const STATE_KIND: &str = "serial";
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The read buffer all tailers of a thread share (see [`SerialTailer::poll`]).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
const FINGERPRINT_BYTES: u64 = 32;
/// Rotated backups looked at for a file read before a restart (virtlogd keeps 3 by default).
const MAX_BACKUPS: usize = 16;

/// What one poll found.
#[derive(Debug, Default)]
pub struct SerialOutput {
    pub reports: Vec<Detected>,
    pub puffs: Vec<PuffLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(metadata: &std::fs::Metadata) -> FileId {
        FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

#[derive(Debug)]
struct OpenLog {
    file: File,
    id: FileId,
    /// File offset read up to.
    offset: u64,
    /// Stream offset of file offset 0.
    stream_base: u64,
    /// Reading `<path>.<k>` (a rotated backup) rather than the live file.
    backup: Option<usize>,
    /// The last bytes read, ending at `offset` (at most `FINGERPRINT_BYTES`).
    tail: Vec<u8>,
}

impl OpenLog {
    fn new(file: File, id: FileId, stream_base: u64, backup: Option<usize>) -> OpenLog {
        OpenLog {
            file,
            id,
            offset: 0,
            stream_base,
            backup,
            tail: Vec::new(),
        }
    }

    fn remember_tail(&mut self, bytes: &[u8]) {
        let keep = FINGERPRINT_BYTES as usize;
        if bytes.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - keep..]);
        } else {
            self.tail.extend_from_slice(bytes);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
    }
}

/// Where the persisted state says to go on.
#[derive(Debug, Clone)]
struct Resume {
    id: FileId,
    file_offset: u64,
    fingerprint: Vec<u8>,
}

/// Tails one serial log; see the module docs.
#[derive(Debug)]
pub struct SerialTailer {
    path: PathBuf,
    state_path: PathBuf,
    max_read_per_poll: usize,
    persist_interval: std::time::Duration,
    open: Option<OpenLog>,
    /// The live file after a rotation, read once the old one is drained.
    rotated_to: Option<OpenLog>,
    resume: Option<Resume>,
    splitter: LineSplitter,
    detector: Detector,
    last_persist: Option<Instant>,
    persisted_position: Option<u64>,
    /// The last poll handed out reports that the saved state does not cover yet.
    unsaved_reports: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn backup_path(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// Reads up to `len` bytes ending at `end` (fewer near the start of the file).
fn bytes_before(file: &File, end: u64, len: u64) -> io::Result<Vec<u8>> {
    let start = end.saturating_sub(len);
    let mut bytes = vec![0; usize::try_from(end - start).unwrap_or(0)];
    file.read_exact_at(&mut bytes, start)?;
    Ok(bytes)
}

impl SerialTailer {
    /// A tailer for `log_path`, resuming from `<state_dir>/<uuid>.serial` if present.
    pub fn new(
        log_path: &Path,
        uuid: &str,
        settings: &CaptureSettings,
    ) -> Result<SerialTailer, CaptureError> {
        let state_path = state::state_path(&settings.state_dir, uuid, STATE_KIND);
        let saved = state::load(&state_path, STATE_KIND)?;
        let mut stream_offset = 0;
        let mut emitted_through = 0;
        let mut near_miss_through = 0;
        let mut resume = None;
        if let Some(saved) = saved {
            stream_offset = saved.get_u64("stream_offset").unwrap_or(0);
            emitted_through = saved.get_u64("emitted_through").unwrap_or(0);
            near_miss_through = saved.get_u64("near_miss_through").unwrap_or(0);
            let same_path =
                saved.values.get("path").map(String::as_str) == Some(&*log_path.to_string_lossy());
            if let (true, Some(dev), Some(ino), Some(file_offset)) = (
                same_path,
                saved.get_u64("dev"),
                saved.get_u64("ino"),
                saved.get_u64("file_offset"),
            ) {
                resume = Some(Resume {
                    id: FileId { dev, ino },
                    file_offset,
                    fingerprint: saved
                        .values
                        .get("fingerprint")
                        .and_then(|text| unhex(text))
                        .unwrap_or_default(),
                });
            }
        }
        Ok(SerialTailer {
            path: log_path.to_owned(),
            state_path,
            max_read_per_poll: settings.max_read_per_poll.max(READ_CHUNK),
            persist_interval: settings.persist_interval,
            open: None,
            rotated_to: None,
            resume,
            splitter: LineSplitter::new(settings.max_line_bytes, stream_offset),
            detector: Detector::new(settings.detector(), emitted_through, near_miss_through),
            last_persist: None,
            persisted_position: Some(stream_offset),
            unsaved_reports: false,
        })
    }

    /// Bytes of guest text held in memory (unfinished line + window).
    pub fn memory_held(&self) -> usize {
        self.splitter.held_bytes() + self.detector.window_bytes()
    }

    /// Stream offset read up to.
    pub fn position(&self) -> u64 {
        self.splitter.position()
    }

    /// Reads what is new, returns settled reports and near-miss lines, and
    /// persists the state when due.
    ///
    /// The saved state moves past a report only at the poll AFTER the one that handed it
    /// out: the caller stores what a poll returns (the spool, fsync) before it polls
    /// again. Saving with the read would lose the report to a crash between the two; this
    /// way a crash there makes the report come again, under the same idempotency key.
    pub fn poll(&mut self, now: Instant) -> Result<SerialOutput, CaptureError> {
        let earlier = if self.unsaved_reports {
            self.persist(now)
        } else {
            Ok(())
        };
        let mut output = SerialOutput::default();
        let read = self.read_available(now, &mut output);
        output.reports.extend(self.detector.poll(now));
        let due = self
            .last_persist
            .is_none_or(|at| now.saturating_duration_since(at) >= self.persist_interval);
        // Near-miss lines alone wait for the interval: they are rate-limited anyway.
        let persisted = if !output.reports.is_empty() {
            self.unsaved_reports = true;
            earlier
        } else if self.unsaved_reports || (due && self.persisted_position != Some(self.position()))
        {
            self.persist(now)
        } else {
            earlier
        };
        // What was detected is handed out even when reading on or saving failed:
        // the watermark has moved past it, so it would be lost otherwise.
        if output.reports.is_empty() && output.puffs.is_empty() {
            read?;
            persisted?;
        } else {
            for error in [read.err(), persisted.err()].into_iter().flatten() {
                tracing::warn!(path = %self.path.display(), error = %error, "Serial capture step failed; returning what was found.");
            }
        }
        Ok(output)
    }

    /// Writes the state file now (also call it on shutdown).
    pub fn persist(&mut self, now: Instant) -> Result<(), CaptureError> {
        let mut saved = StateFile::default();
        saved.set("path", self.path.to_string_lossy());
        saved.set("emitted_through", self.detector.emitted_through());
        saved.set("near_miss_through", self.detector.near_miss_through());
        let resume = self
            .detector
            .resume_offset()
            .unwrap_or(u64::MAX)
            .min(self.splitter.resume_offset());
        match &self.open {
            Some(open) => {
                let resume = resume.max(open.stream_base);
                let file_offset = (resume - open.stream_base).min(open.offset);
                let fingerprint = bytes_before(&open.file, file_offset, FINGERPRINT_BYTES)
                    .map_err(|source| self.read_error(source))?;
                saved.set("stream_offset", open.stream_base + file_offset);
                saved.set("dev", open.id.dev);
                saved.set("ino", open.id.ino);
                saved.set("file_offset", file_offset);
                saved.set("fingerprint", hex(&fingerprint));
            }
            None => saved.set("stream_offset", self.splitter.position()),
        }
        state::store(&self.state_path, STATE_KIND, &saved)?;
        self.last_persist = Some(now);
        self.persisted_position = Some(self.position());
        self.unsaved_reports = false;
        Ok(())
    }

    fn read_error(&self, source: io::Error) -> CaptureError {
        CaptureError::ReadLog {
            path: self.path.clone(),
            source,
        }
    }

    /// Opens the file to read: the persisted one the first time, else the live one.
    fn open_first(&mut self) -> Result<bool, CaptureError> {
        let position = self.splitter.position();
        if let Some(resume) = self.resume.take() {
            let mut candidates = vec![(self.path.clone(), None)];
            candidates.extend((0..MAX_BACKUPS).map(|k| (backup_path(&self.path, k), Some(k))));
            for (path, backup) in candidates {
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                let metadata = file.metadata().map_err(|e| self.read_error(e))?;
                if FileId::of(&metadata) != resume.id {
                    continue;
                }
                let offset = resume.file_offset;
                let intact = metadata.len() >= offset
                    && bytes_before(&file, offset, FINGERPRINT_BYTES)
                        .ok()
                        .as_deref()
                        == Some(&resume.fingerprint[..]);
                let mut open = OpenLog::new(file, resume.id, position, backup);
                if intact {
                    open.offset = offset;
                    open.stream_base = position.saturating_sub(offset);
                    open.tail = resume.fingerprint;
                } else {
                    tracing::info!(path = %path.display(), "Serial log was truncated while the agent was away; reading it from the start.");
                }
                self.open = Some(open);
                return Ok(true);
            }
            tracing::warn!(path = %self.path.display(), "Serial log read before the restart is gone (rotated away or replaced); reports in between may be missed.");
        }
        self.open_live()
    }

    /// Opens the live file from its start, continuing the stream at the current position.
    fn open_live(&mut self) -> Result<bool, CaptureError> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(self.read_error(error)),
        };
        let metadata = file.metadata().map_err(|e| self.read_error(e))?;
        let position = self.splitter.position();
        self.open = Some(OpenLog::new(file, FileId::of(&metadata), position, None));
        Ok(true)
    }

    /// Reads up to `max_read_per_poll` bytes, detecting after every chunk so a
    /// report cannot fall out of the window before it is parsed.
    fn read_available(
        &mut self,
        now: Instant,
        output: &mut SerialOutput,
    ) -> Result<(), CaptureError> {
        // One read buffer per thread, lent to every tailer in turn: 500 VMs must not keep
        // 500 resident 64 KiB buffers (measured: 31 MiB of the agent's RSS).
        let mut buffer = READ_BUFFER.with(std::cell::RefCell::take);
        buffer.resize(READ_CHUNK, 0);
        let result = self.read_chunks(&mut buffer, now, output);
        READ_BUFFER.with(|cell| cell.replace(buffer));
        result
    }

    fn read_chunks(
        &mut self,
        buffer: &mut [u8],
        now: Instant,
        output: &mut SerialOutput,
    ) -> Result<(), CaptureError> {
        if self.open.is_none() && !self.open_first()? {
            return Ok(());
        }
        self.check_truncated()?;
        let mut budget = self.max_read_per_poll;
        let mut lines = Vec::new();
        let mut eof_checked = false;
        while budget > 0 {
            let Some(open) = self.open.as_mut() else {
                break;
            };
            let want = budget.min(buffer.len());
            let read = match open.file.read_at(&mut buffer[..want], open.offset) {
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(self.read_error(error)),
            };
            if read > 0 {
                open.offset += read as u64;
                open.remember_tail(&buffer[..read]);
                budget -= read;
                eof_checked = false;
                self.splitter.push(&buffer[..read], &mut lines);
                for line in lines.drain(..) {
                    if let Some(puff) = self.detector.push(line, now) {
                        output.puffs.push(puff);
                    }
                }
                output.reports.extend(self.detector.poll(now));
                continue;
            }
            // End of this file: is there a newer one?
            if let Some(mut next) = self.rotated_to.take() {
                next.stream_base = self.splitter.position();
                self.open = Some(next);
                eof_checked = false;
                continue;
            }
            if eof_checked || !self.next_file()? {
                break;
            }
            eof_checked = true;
        }
        Ok(())
    }

    /// At the end of the open file: switches to the next newer file when there
    /// is one. Returns whether reading should go on.
    fn next_file(&mut self) -> Result<bool, CaptureError> {
        let Some(open) = self.open.as_ref() else {
            return Ok(false);
        };
        if let Some(k) = open.backup {
            let next = if k == 0 {
                self.path.clone()
            } else {
                backup_path(&self.path, k - 1)
            };
            return match File::open(&next) {
                Ok(file) => {
                    let metadata = file.metadata().map_err(|e| self.read_error(e))?;
                    let position = self.splitter.position();
                    self.open = Some(OpenLog::new(
                        file,
                        FileId::of(&metadata),
                        position,
                        k.checked_sub(1),
                    ));
                    Ok(true)
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => self.open_live(),
                Err(error) => Err(self.read_error(error)),
            };
        }
        match std::fs::metadata(&self.path) {
            Ok(metadata) if FileId::of(&metadata) != open.id => {
                // Rotated: read the old descriptor to its end once more (virtlogd may
                // have written to it between our last read and the rename), then go on
                // with the new file.
                tracing::debug!(path = %self.path.display(), "Serial log rotated.");
                match File::open(&self.path) {
                    Ok(file) => {
                        let id = FileId::of(&file.metadata().map_err(|e| self.read_error(e))?);
                        self.rotated_to = Some(OpenLog::new(file, id, 0, None));
                        Ok(true)
                    }
                    Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
                    Err(error) => Err(self.read_error(error)),
                }
            }
            Ok(_) => Ok(false),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(self.read_error(error)),
        }
    }

    /// Starts the open file again from 0 when it was truncated since the last read.
    fn check_truncated(&mut self) -> Result<(), CaptureError> {
        let Some(open) = self.open.as_ref() else {
            return Ok(());
        };
        if open.backup.is_some() || open.offset == 0 {
            return Ok(());
        }
        let length = open.file.metadata().map_err(|e| self.read_error(e))?.len();
        let truncated = if length < open.offset {
            true
        } else {
            // Truncated and written past our offset again between two polls:
            // the bytes before the offset changed.
            let before = bytes_before(&open.file, open.offset, FINGERPRINT_BYTES)
                .map_err(|e| self.read_error(e))?;
            before != open.tail
        };
        if truncated {
            tracing::info!(path = %self.path.display(), "Serial log truncated; reading it from the start.");
            let position = self.splitter.position();
            self.splitter.reset(position);
            self.detector.clear_window();
            if let Some(open) = self.open.as_mut() {
                open.offset = 0;
                open.stream_base = position;
                open.tail.clear();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::capture::detect::tests::LAB_LOG;
    use crate::capture::state::tests::temp_dir;

    /// The lab's OOM report with the killed pid replaced, ending in a newline.
    fn report(pid: u32) -> String {
        let lines: Vec<&str> = LAB_LOG.lines().skip(353).collect();
        format!(
            "{}\n",
            lines
                .join("\n")
                .replace(" 113", &format!(" {pid}"))
                .replace("=113", &format!("={pid}"))
        )
    }

    fn settings(dir: &tempfile::TempDir) -> CaptureSettings {
        CaptureSettings {
            grace: Duration::ZERO,
            ..CaptureSettings::new(dir.path().join("state"))
        }
    }

    fn append(path: &Path, text: &str) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open log");
        file.write_all(text.as_bytes()).expect("write log");
    }

    fn pids(tailer: &mut SerialTailer) -> Vec<u32> {
        tailer
            .poll(Instant::now())
            .expect("poll")
            .reports
            .iter()
            .map(|detected| {
                detected
                    .report
                    .killed
                    .as_ref()
                    .map_or(0, |killed| killed.pid)
            })
            .collect()
    }

    #[test]
    fn rotation_is_followed_without_loss() {
        let dir = temp_dir("rotate");
        let log = dir.path().join("serial.log");
        let settings = settings(&dir);
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert!(pids(&mut tailer).is_empty(), "no file yet");
        append(&log, &report(101));
        assert_eq!(pids(&mut tailer), [101]);
        // Report 102 is cut in two by the rotation.
        let second = report(102);
        let (head, tail) = second.split_at(second.len() / 2);
        append(&log, head);
        fs::rename(&log, backup_path(&log, 0)).expect("rotate");
        append(&log, tail);
        append(&log, &report(103));
        assert_eq!(pids(&mut tailer), [102, 103]);
        // A second rotation while idle.
        fs::rename(backup_path(&log, 0), backup_path(&log, 1)).expect("rotate");
        fs::rename(&log, backup_path(&log, 0)).expect("rotate");
        append(&log, &report(104));
        assert_eq!(pids(&mut tailer), [104]);
        assert!(pids(&mut tailer).is_empty());
    }

    #[test]
    fn restart_after_rotation_reads_the_backup_on() {
        let dir = temp_dir("restart-rotate");
        let log = dir.path().join("serial.log");
        let settings = settings(&dir);
        append(&log, &report(201));
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert_eq!(pids(&mut tailer), [201]);
        // The next poll (the event is stored by then) saves the state past it.
        assert!(pids(&mut tailer).is_empty());
        drop(tailer);
        // While the agent is away: more text, a rotation, more text.
        append(&log, &report(202));
        fs::rename(&log, backup_path(&log, 0)).expect("rotate");
        append(&log, &report(203));
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert_eq!(pids(&mut tailer), [202, 203]);
        assert!(pids(&mut tailer).is_empty());
        drop(tailer);
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert!(pids(&mut tailer).is_empty());
    }

    #[test]
    fn truncation_starts_again_from_zero() {
        let dir = temp_dir("truncate");
        let log = dir.path().join("serial.log");
        let settings = settings(&dir);
        append(
            &log,
            &format!("{}{}", "boot noise\n".repeat(2000), report(301)),
        );
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert_eq!(pids(&mut tailer), [301]);
        // VM restart with append='off': shorter file.
        fs::write(&log, report(302)).expect("truncate");
        assert_eq!(pids(&mut tailer), [302]);
        // Truncated and grown past the old offset between two polls.
        fs::write(
            &log,
            format!("{}{}", "other boot\n".repeat(4000), report(303)),
        )
        .expect("truncate");
        assert_eq!(pids(&mut tailer), [303]);
        assert!(pids(&mut tailer).is_empty());
        // Truncated while the agent is away, longer than before.
        drop(tailer);
        fs::write(
            &log,
            format!("{}{}", "third boot!\n".repeat(5000), report(304)),
        )
        .expect("truncate");
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert_eq!(pids(&mut tailer), [304]);
    }

    #[test]
    fn restart_from_persisted_position_neither_repeats_nor_misses() {
        let dir = temp_dir("restart");
        let log = dir.path().join("serial.log");
        let settings = settings(&dir);
        append(&log, &report(401));
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert_eq!(pids(&mut tailer), [401]);
        // Half of the next report arrives, the state is written, the agent stops.
        let next = report(402);
        let (head, tail) = next.split_at(next.len() - 200);
        append(&log, head);
        assert!(pids(&mut tailer).is_empty());
        tailer.persist(Instant::now()).expect("persist");
        drop(tailer);
        append(&log, tail);
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert_eq!(pids(&mut tailer), [402]);
        // A crash before the next poll (the event may not be stored yet): it comes
        // again, with the same identity (the collector keeps one copy per key).
        drop(tailer);
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert_eq!(pids(&mut tailer), [402]);
        // Once the next poll ran, it is behind the saved state for good.
        assert!(pids(&mut tailer).is_empty());
        drop(tailer);
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        assert!(pids(&mut tailer).is_empty());
        append(&log, &report(403));
        assert_eq!(pids(&mut tailer), [403]);
    }

    #[test]
    fn gigabyte_line_keeps_memory_bounded() {
        let dir = temp_dir("huge");
        let log = dir.path().join("serial.log");
        let settings = settings(&dir);
        // A 1 GiB line of NUL bytes (a sparse file: nothing is written), then a report.
        let size = 1u64 << 30;
        {
            let file = File::create(&log).expect("create log");
            file.set_len(size).expect("grow log");
        }
        append(&log, &format!("\n{}", report(501)));
        let mut tailer = SerialTailer::new(&log, "u", &settings).expect("tailer");
        let bound = settings.max_line_bytes + settings.window_bytes;
        let mut found = Vec::new();
        // 8 MiB per poll: 128 polls for the line, then the report.
        for _ in 0..200 {
            found.extend(pids(&mut tailer));
            assert!(
                tailer.memory_held() <= bound,
                "held {} bytes",
                tailer.memory_held()
            );
            assert!(tailer.splitter.held_bytes() <= settings.max_line_bytes);
        }
        assert!(tailer.position() > size);
        assert_eq!(found, [501]);
    }
}
