//! The host kernel's own log (`/dev/kmsg`): OOMs on the host that killed a QEMU
//! process, and OOMs of a VM's memory cgroup, attributed to that VM.
//!
//! ballast tells three kinds apart: a guest OOM (the guest kernel killed inside the
//! VM: serial and guest agent capture), a VM-cgroup OOM (the host's memory cgroup
//! of the VM hit its limit: [`OomKind::VmCgroup`]) and a host OOM (the host ran out
//! and killed a QEMU process: [`OomKind::Host`]). Other host OOMs are not about a VM
//! and are ignored (logged at debug).
//!
//! Reading:
//! - `/dev/kmsg` is opened non-blocking; every `read()` returns one record
//!   (`prio,seq,usec,flags[,...];text\n` plus optional ` KEY=value` lines, which
//!   are dropped). `EAGAIN` means no more records for now; `EPIPE` means records
//!   were overwritten before we read them: counted, and reading goes on.
//! - The kernel escapes `\` and non-printable bytes of the text as `\xNN`; they are
//!   unescaped, so a libvirt scope reads `machine-qemu\x2d1\x2dweb.scope` as systemd
//!   named it.
//! - Records go, one line each (`<header>;<text>`, the form `ballast_oom::parse`
//!   reads), through the same [`Detector`] as console text, with the record's
//!   sequence number as its stream offset: a bounded window (1 MiB), and a report
//!   is settled once its `oom_reaper` line came, 8 more records came, or 1 s passed.
//!
//! Position (`<state_dir>/host-kmsg.seq`, written atomically): the boot id, the
//! sequence number to resume from (the first record of an unsettled report, else
//! the next record) and the emitted watermark. A restart re-reads the buffer from
//! its oldest record and skips what is older than the resume point, so it neither
//! repeats nor misses a report (unless the kernel overwrote the records meanwhile).
//! First start, or a new boot id with no position: the reader seeks to the current
//! end of the log (`SEEK_END`), so OOMs from before the agent was ever started are
//! not reported (they may be weeks old). After a host reboot with a saved position
//! of the previous boot, the whole buffer of the new boot is read: it started after
//! the last record the agent saw.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ballast_model::OomKind;

use super::detect::{Detected, Detector, DetectorConfig};
use super::lines::Line;
use super::{CaptureSource, CapturedOom};

mod attribute;
mod position;
mod record;

pub use attribute::{attribute, vm_of_cgroup, KnownVm};
use position::{load_position, read_boot_id, store_position, Position};
pub use record::{parse_record, Record, RecordSource};

/// `O_NONBLOCK` on Linux x86_64 and aarch64 (the agent does not depend on `libc`).
const O_NONBLOCK: i32 = 0o4000;
/// Largest record the kernel hands out is 8 KiB (`CONSOLE_EXT_LOG_MAX`); a smaller
/// buffer gets `EINVAL`.
const RECORD_BUFFER: usize = 16 * 1024;
/// Records read per poll at most, so a flood cannot hold the monitor loop.
const MAX_RECORDS_PER_POLL: usize = 50_000;
/// State file name under the capture state directory.
pub const STATE_FILE_NAME: &str = "host-kmsg.seq";

/// An OOM of the host kernel about one VM, and which kind it is.
#[derive(Debug, Clone, PartialEq)]
pub struct HostOom {
    pub captured: CapturedOom,
    pub kind: OomKind,
}

/// Where the reader reads and keeps its position.
#[derive(Debug, Clone)]
pub struct HostKernelConfig {
    /// `/dev/kmsg`.
    pub kmsg_path: PathBuf,
    /// `/proc/sys/kernel/random/boot_id`: sequence numbers restart at every boot.
    pub boot_id_path: PathBuf,
    /// `<state_dir>/host-kmsg.seq`.
    pub state_path: PathBuf,
    pub detector: DetectorConfig,
    /// The position is written at least this often while records come (5 s), and
    /// at once after a report.
    pub persist_interval: Duration,
}

impl HostKernelConfig {
    /// The real device and boot id, state under `state_dir`.
    pub fn new(state_dir: &Path, detector: DetectorConfig) -> Self {
        HostKernelConfig {
            kmsg_path: PathBuf::from("/dev/kmsg"),
            boot_id_path: PathBuf::from("/proc/sys/kernel/random/boot_id"),
            state_path: state_dir.join(STATE_FILE_NAME),
            detector,
            persist_interval: Duration::from_secs(5),
        }
    }
}

/// Failures of the host kernel reader.
#[derive(Debug, thiserror::Error)]
pub enum HostKernelError {
    #[error("Failed to open the host kernel log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to read the host kernel log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to write the host kernel log position {path}")]
    WriteState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the host kernel log and hands out OOMs about VMs.
pub struct HostKernelReader<S: RecordSource = File> {
    config: HostKernelConfig,
    source: S,
    detector: Detector,
    boot_id: String,
    /// Records with a smaller sequence number are skipped (handled before a restart).
    skip_below: u64,
    /// Sequence number of the next record expected.
    next_seq: Option<u64>,
    saved: Option<Position>,
    last_persist: Option<Instant>,
    /// Records the kernel overwrote before we read them (`EPIPE`, sequence gaps).
    pub lost_records: u64,
    /// Records that did not parse.
    pub garbage_records: u64,
    buf: Vec<u8>,
}

impl HostKernelReader<File> {
    /// Opens the kernel log read-only and non-blocking, and positions it (see the module doc).
    pub fn open(config: HostKernelConfig) -> Result<Self, HostKernelError> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&config.kmsg_path)
            .map_err(|source| HostKernelError::Open {
                path: config.kmsg_path.clone(),
                source,
            })?;
        let boot_id = read_boot_id(&config.boot_id_path);
        let saved = load_position(&config.state_path);
        let resumes = saved.as_ref().is_some_and(|p| p.boot_id == boot_id);
        let new_boot = saved.as_ref().is_some_and(|p| p.boot_id != boot_id);
        if !resumes && !new_boot {
            file.seek(SeekFrom::End(0))
                .map_err(|source| HostKernelError::Open {
                    path: config.kmsg_path.clone(),
                    source,
                })?;
        }
        Ok(Self::with_source(config, file, boot_id, saved))
    }
}

impl<S: RecordSource> HostKernelReader<S> {
    /// A reader over `source`, resuming from `saved` when it is of the same boot.
    pub fn from_source(config: HostKernelConfig, source: S) -> Self {
        let boot_id = read_boot_id(&config.boot_id_path);
        let saved = load_position(&config.state_path);
        Self::with_source(config, source, boot_id, saved)
    }

    fn with_source(
        config: HostKernelConfig,
        source: S,
        boot_id: String,
        saved: Option<Position>,
    ) -> Self {
        let same_boot = saved.as_ref().filter(|p| p.boot_id == boot_id);
        let (skip_below, emitted) = same_boot.map_or((0, 0), |p| (p.resume, p.emitted));
        let detector = Detector::new(config.detector.clone(), emitted, 0);
        HostKernelReader {
            config,
            source,
            detector,
            boot_id,
            skip_below,
            next_seq: None,
            saved,
            last_persist: None,
            lost_records: 0,
            garbage_records: 0,
            buf: vec![0; RECORD_BUFFER],
        }
    }

    /// Reads what is new, and returns the settled reports about known VMs.
    /// A failure to save the position is returned after the reports are handed out
    /// (through `Ok`), so it only logs: the caller gets `(reports, state error)`.
    pub fn poll(
        &mut self,
        now: Instant,
        vms: &[KnownVm],
    ) -> Result<(Vec<HostOom>, Option<HostKernelError>), HostKernelError> {
        for _ in 0..MAX_RECORDS_PER_POLL {
            let read = match self.source.read_record(&mut self.buf) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == ErrorKind::BrokenPipe => {
                    // Overwritten before we read it; the next read returns the oldest record left.
                    self.lost_records += 1;
                    continue;
                }
                Err(error) => {
                    return Err(HostKernelError::Read {
                        path: self.config.kmsg_path.clone(),
                        source: error,
                    })
                }
            };
            let Some(record) = parse_record(&self.buf[..read.min(self.buf.len())]) else {
                self.garbage_records += 1;
                continue;
            };
            self.push(record, now);
        }
        let detected = self.detector.poll(now);
        let mut found = Vec::new();
        for detected in detected {
            if let Some(oom) = self.to_host_oom(detected, vms) {
                found.push(oom);
            }
        }
        let due = !found.is_empty()
            || self
                .last_persist
                .is_none_or(|at| now.saturating_duration_since(at) >= self.config.persist_interval);
        let state_error = if due { self.persist(now).err() } else { None };
        Ok((found, state_error))
    }

    fn push(&mut self, record: Record, now: Instant) {
        if record.seq < self.skip_below {
            return;
        }
        let expected = self
            .next_seq
            .or((self.skip_below > 0).then_some(self.skip_below));
        if let Some(next) = expected {
            if record.seq > next {
                self.lost_records += record.seq - next;
            } else if record.seq < next {
                // Went backwards: a repeat (or a reset); never emit a report twice.
                return;
            }
        }
        self.next_seq = Some(record.seq.saturating_add(1));
        let mut bytes = record.line;
        let truncated = bytes.len() > RECORD_BUFFER;
        bytes.truncate(RECORD_BUFFER);
        // Near-miss lines are about guests; the host's own are not returned.
        let _ = self.detector.push(
            Line {
                start: record.seq,
                end: record.seq.saturating_add(1),
                bytes,
                truncated,
            },
            now,
        );
    }

    fn to_host_oom(&self, detected: Detected, vms: &[KnownVm]) -> Option<HostOom> {
        let Some((vm, kind)) = attribute(&detected.report, vms) else {
            tracing::debug!(
                killed = detected
                    .report
                    .killed
                    .as_ref()
                    .map_or("?", |k| k.comm.as_str()),
                "Host OOM not about a known VM; ignored."
            );
            return None;
        };
        let pid = detected.report.killed.as_ref().map_or(0, |k| k.pid);
        let boot = self.boot_id.get(..8).unwrap_or(&self.boot_id);
        Some(HostOom {
            captured: CapturedOom {
                domain: vm.id.clone(),
                source: CaptureSource::HostKernel,
                captured_at: SystemTime::now(),
                printed_after: None,
                raw: detected.raw,
                report: detected.report,
                dedupe_key: format!("{}:host-{boot}-{}:{pid}", vm.id.uuid, detected.start),
                suppressed_before: 0,
            },
            kind,
        })
    }

    /// The position a restart resumes from.
    fn position(&self) -> Position {
        let next = self.next_seq.unwrap_or(self.skip_below);
        Position {
            boot_id: self.boot_id.clone(),
            resume: self.detector.resume_offset().unwrap_or(next).min(next),
            emitted: self.detector.emitted_through(),
        }
    }

    /// Saves the position (atomically) when it changed.
    pub fn persist(&mut self, now: Instant) -> Result<(), HostKernelError> {
        self.last_persist = Some(now);
        let position = self.position();
        if self.saved.as_ref() == Some(&position) || self.next_seq.is_none() {
            return Ok(());
        }
        store_position(&self.config.state_path, &position).map_err(|source| {
            HostKernelError::WriteState {
                path: self.config.state_path.clone(),
                source,
            }
        })?;
        self.saved = Some(position);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::DomainId;
    use std::collections::VecDeque;

    const MEMCG: &str = include_str!(
        "../../../../crates/ballast-oom/tests/fixtures/oom/5.2-memcg-v1-swap-oomkill-line.log"
    );
    const GLOBAL: &str = include_str!(
        "../../../../crates/ballast-oom/tests/fixtures/oom/6.11-qemu-global-rss-anon-uid-cpu.log"
    );

    fn detector() -> DetectorConfig {
        DetectorConfig {
            window_bytes: 1 << 20,
            grace_lines: 8,
            grace: Duration::from_secs(1),
            headless_timeout: Duration::from_secs(10),
            max_raw_bytes: 64 * 1024,
        }
    }

    fn config(dir: &Path) -> HostKernelConfig {
        HostKernelConfig {
            kmsg_path: dir.join("kmsg"),
            boot_id_path: dir.join("boot_id"),
            state_path: dir.join(STATE_FILE_NAME),
            detector: detector(),
            persist_interval: Duration::from_secs(5),
        }
    }

    /// Escapes like the kernel's `/dev/kmsg` (`\`, control bytes, non-ASCII).
    fn kernel_escape(text: &str) -> String {
        let mut out = String::new();
        for b in text.bytes() {
            if !(b' '..127).contains(&b) || b == b'\\' {
                out.push_str(&format!("\\x{b:02x}"));
            } else {
                out.push(b as char);
            }
        }
        out
    }

    /// A fixture as kmsg records from `first_seq` on: `6,<seq>,<usec>,-;<text>\n`.
    fn records(fixture: &str, first_seq: u64) -> Vec<Vec<u8>> {
        fixture
            .lines()
            .enumerate()
            .map(|(i, line)| {
                // Drop the `[ secs.usecs]` prefix: the header carries the time.
                let text = line.split_once("] ").map_or(line, |(_, t)| t);
                let seq = first_seq + i as u64;
                format!(
                    "6,{seq},{},-;{}\n SUBSYSTEM=test\n",
                    30_745_678 + i as u64,
                    kernel_escape(text)
                )
                .into_bytes()
            })
            .collect()
    }

    /// Replaces the `task_memcg=`/`oom_memcg=` values and the killed task of a fixture.
    fn retarget(fixture: &str, from_cg: &str, to_cg: &str, from: &str, to: &str) -> String {
        fixture.replace(from_cg, to_cg).replace(from, to)
    }

    #[derive(Default)]
    struct Fake {
        queue: VecDeque<std::io::Result<Vec<u8>>>,
    }

    impl Fake {
        fn push_all(&mut self, records: Vec<Vec<u8>>) {
            self.queue.extend(records.into_iter().map(Ok));
        }
    }

    impl RecordSource for Fake {
        fn read_record(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.queue.pop_front() {
                None => Err(ErrorKind::WouldBlock.into()),
                Some(Err(error)) => Err(error),
                Some(Ok(record)) => {
                    let n = record.len().min(buf.len());
                    buf[..n].copy_from_slice(&record[..n]);
                    Ok(n)
                }
            }
        }
    }

    fn vms() -> Vec<KnownVm> {
        vec![
            KnownVm {
                id: DomainId {
                    uuid: "aaaa-1".into(),
                    name: "web-frontend-production-eu".into(),
                },
                vmid: None,
                qemu_pid: Some(4242),
            },
            KnownVm {
                id: DomainId {
                    uuid: "bbbb-2".into(),
                    name: "db".into(),
                },
                vmid: None,
                qemu_pid: None,
            },
            KnownVm {
                id: DomainId {
                    uuid: "cccc-3".into(),
                    name: "vm101".into(),
                },
                vmid: Some(101),
                qemu_pid: None,
            },
        ]
    }

    fn run(reader: &mut HostKernelReader<Fake>, records: Vec<Vec<u8>>) -> Vec<HostOom> {
        reader.source.push_all(records);
        let now = Instant::now();
        let (mut found, error) = reader.poll(now, &vms()).expect("reads");
        assert!(error.is_none(), "{error:?}");
        let (later, _) = reader
            .poll(now + Duration::from_secs(2), &vms())
            .expect("reads");
        found.extend(later);
        found
    }

    fn memcg_for_web() -> String {
        // A libvirt scope, `-` escaped by systemd, name cut by libvirt.
        retarget(
            MEMCG,
            "/leaker",
            r"/machine.slice/machine-qemu\x2d3\x2dweb-frontend-produc.scope/libvirt/emulator",
            "leaker",
            "qemu-system-x86",
        )
    }

    #[test]
    fn a_memcg_oom_in_a_libvirt_scope_is_a_vm_cgroup_oom_of_that_vm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        let found = run(&mut reader, records(&memcg_for_web(), 100));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, OomKind::VmCgroup);
        assert_eq!(found[0].captured.domain.uuid, "aaaa-1");
        assert_eq!(found[0].captured.source, CaptureSource::HostKernel);
        assert_eq!(
            found[0].captured.report.killed.as_ref().map(|k| k.pid),
            Some(23793)
        );
    }

    #[test]
    fn a_killed_qemu_pid_on_a_global_oom_is_a_host_oom() {
        let text = GLOBAL
            .replace("stress-ng-vm", "qemu-system-x86")
            .replace("pid=116", "pid=4242")
            .replace("Killed process 116", "Killed process 4242");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        let found = run(&mut reader, records(&text, 7));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, OomKind::Host);
        assert_eq!(found[0].captured.domain.uuid, "aaaa-1");
    }

    #[test]
    fn a_global_oom_that_killed_a_task_in_a_vm_scope_is_that_vms_host_oom() {
        // A helper of the VM (not QEMU itself, pid unknown): only `task_memcg=` names it.
        let text = GLOBAL.replace(
            "task_memcg=/,",
            r"task_memcg=/machine.slice/machine-qemu\x2d12\x2ddb.scope/libvirt/emulator,",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        let found = run(&mut reader, records(&text, 7));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, OomKind::Host);
        assert_eq!(found[0].captured.domain.uuid, "bbbb-2");
    }

    #[test]
    fn an_unrelated_host_process_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        assert!(run(&mut reader, records(GLOBAL, 7)).is_empty());
        assert!(run(&mut reader, records(MEMCG, 500)).is_empty());
    }

    #[test]
    fn attribution_of_scopes() {
        let vms = vms();
        let name = |cg: &str| vm_of_cgroup(cg, &vms).map(|vm| vm.id.uuid.as_str());
        assert_eq!(
            name(r"/machine.slice/machine-qemu\x2d12\x2ddb.scope"),
            Some("bbbb-2")
        );
        assert_eq!(
            name("/machine/qemu-12-db.libvirt-qemu/emulator"),
            Some("bbbb-2")
        );
        assert_eq!(name("/qemu.slice/101.scope"), Some("cccc-3"));
        assert_eq!(name("/qemu.slice/102.scope"), None);
        assert_eq!(name("/system.slice/sshd.service"), None);
        assert_eq!(
            name(r"/machine.slice/machine-qemu\x2d1\x2dother.scope"),
            None
        );
        // A cut name two VMs share is no match; an exact one wins.
        let mut twins = vms.clone();
        for name in ["web-frontend-production-us", "web-frontend-produc"] {
            twins.push(KnownVm {
                id: DomainId {
                    uuid: name.into(),
                    name: name.into(),
                },
                vmid: None,
                qemu_pid: None,
            });
        }
        let cut = r"/machine.slice/machine-qemu\x2d3\x2dweb-frontend-produc.scope";
        assert_eq!(
            vm_of_cgroup(cut, &twins).map(|vm| vm.id.uuid.as_str()),
            Some("web-frontend-produc")
        );
        twins.pop();
        assert!(vm_of_cgroup(cut, &twins).is_none());
        // A QEMU comm with no known VM is not attributed.
        let report =
            ballast_oom::parse(GLOBAL.replace("stress-ng-vm", "qemu-system-x86").as_bytes())
                .reports
                .remove(0);
        assert!(attribute(&report, &vms).is_none());
    }

    #[test]
    fn a_restart_resumes_without_repeating_or_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("boot_id"), "0123456789abcdef\n").expect("boot id");
        let first = records(&memcg_for_web(), 100);
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        assert_eq!(run(&mut reader, first.clone()).len(), 1);
        drop(reader);
        let saved = std::fs::read_to_string(dir.path().join(STATE_FILE_NAME)).expect("state");
        assert!(saved.contains("boot=0123456789abcdef"), "{saved}");

        // The restarted reader sees the whole buffer again, then a second report.
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        let mut again = first;
        again.extend(records(&memcg_for_web(), 100 + 47));
        let found = run(&mut reader, again);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].captured.dedupe_key.contains("host-01234567-147"));

        // A report cut by the restart (kill line not yet read) comes out once, after.
        let third = records(&memcg_for_web(), 1000);
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        reader.source.push_all(third[..30].to_vec());
        let (found, _) = reader.poll(Instant::now(), &vms()).expect("reads");
        assert!(found.is_empty());
        reader.persist(Instant::now()).expect("persists");
        drop(reader);
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        assert_eq!(run(&mut reader, third).len(), 1);
    }

    #[test]
    fn epipe_and_garbage_records_do_not_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        let mut source = Fake::default();
        source.queue.push_back(Err(ErrorKind::BrokenPipe.into()));
        for garbage in [
            &b";"[..],
            b"6,x,1,-;text\n",
            b"\xff\xfe\x00",
            b"6;no seq",
            b"6,18446744073709551616,1,-;overflow",
            b"6,5,1,-;\\x\\xZZ\\x4",
        ] {
            source.queue.push_back(Ok(garbage.to_vec()));
        }
        source.queue.push_back(Err(ErrorKind::Interrupted.into()));
        reader.source = source;
        let (found, _) = reader.poll(Instant::now(), &vms()).expect("reads");
        assert!(found.is_empty());
        assert_eq!(reader.lost_records, 1);
        assert!(reader.garbage_records >= 5);
        // Then a real report still comes through.
        assert_eq!(run(&mut reader, records(&memcg_for_web(), 10)).len(), 1);
        // The largest sequence number does not overflow.
        let mut reader = HostKernelReader::from_source(config(dir.path()), Fake::default());
        let max = b"6,18446744073709551615,1,-;Killed process 1 (x)".to_vec();
        assert!(run(&mut reader, vec![max]).is_empty());
    }

    #[test]
    fn reads_this_machines_dev_kmsg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = HostKernelConfig::new(dir.path(), detector());
        config.state_path = dir.path().join(STATE_FILE_NAME);
        let mut reader = match HostKernelReader::open(config.clone()) {
            Ok(reader) => reader,
            Err(error) => {
                eprintln!(
                    "!!!!! SKIPPED reads_this_machines_dev_kmsg: /dev/kmsg is not readable here: {error:?} !!!!!"
                );
                return;
            }
        };
        // From the end on: whatever comes, reading does not fail.
        let (found, _) = reader.poll(Instant::now(), &[]).expect("reads /dev/kmsg");
        assert!(found.is_empty());
        // With a saved position of another boot, the whole buffer is read.
        std::fs::write(&config.state_path, "boot=other\nresume=0\nemitted=0\n").expect("state");
        let mut reader = HostKernelReader::open(config).expect("opens again");
        let (found, _) = reader.poll(Instant::now(), &[]).expect("reads /dev/kmsg");
        assert!(found.is_empty());
        eprintln!(
            "read /dev/kmsg: next seq {:?}, lost {}, garbage {}",
            reader.next_seq, reader.lost_records, reader.garbage_records
        );
    }
}
