//! Opt-in readers of Proxmox serial console sockets (`serialN: socket`).
//!
//! QEMU drops console output while no client is connected, so an OOM report is
//! only seen by a reader that is attached when the guest prints it: unlike the
//! QMP and guest agent sockets, the serial socket is held. That is why it is
//! opt-in per VM (`read_serial_vmids`), and why the reader gives way to people:
//! `qm terminal` is the same socket's only other client.
//!
//! Per VM, one thread `pve-serial-<vmid>`:
//! 1. looks at the socket's entries in `/proc/net/unix`: when a client is
//!    attached (`qm terminal`) it does not connect, and retries later;
//! 2. connects without blocking; when its connection is not accepted at once
//!    (someone else holds the socket) it lets go;
//! 3. appends what it reads to `<log_dir>/<vmid>.serialN.log`, which the capture
//!    module tails like any serial log (rotated to `.0` at `max_log_bytes`);
//! 4. every second, while attached: when another client waits in the socket's
//!    backlog, it disconnects at once so that client gets in, and stays away for
//!    `yield_for`;
//! 5. ends when QEMU's process is gone or the backend is dropped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::wire;

/// Where and how the readers work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// Where the per-VM log files go (under the agent's state directory).
    pub log_dir: PathBuf,
    /// A log is rotated to `<log>.0` when it grows past this.
    pub max_log_bytes: u64,
    /// Pause after a failed or refused connect.
    pub retry_after: Duration,
    /// Pause after giving the socket to another client.
    pub yield_for: Duration,
    /// `/proc`, for `net/unix` and QEMU's pid.
    pub procfs_root: PathBuf,
}

impl SerialSettings {
    pub fn new(log_dir: PathBuf) -> Self {
        SerialSettings {
            log_dir,
            max_log_bytes: 8 * 1024 * 1024,
            retry_after: Duration::from_secs(5),
            yield_for: Duration::from_secs(60),
            procfs_root: PathBuf::from("/proc"),
        }
    }
}

/// The readers of all opted-in VMs.
#[derive(Debug)]
pub struct SerialReaders {
    settings: SerialSettings,
    readers: Mutex<BTreeMap<(u32, u8), Reader>>,
}

#[derive(Debug)]
struct Reader {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl SerialReaders {
    pub fn new(settings: SerialSettings) -> Self {
        SerialReaders {
            settings,
            readers: Mutex::new(BTreeMap::new()),
        }
    }

    /// The log file the reader of `vmid`'s `serial<port>` writes.
    pub fn log_path(&self, vmid: u32, port: u8) -> PathBuf {
        self.settings
            .log_dir
            .join(format!("{vmid}.serial{port}.log"))
    }

    /// Starts the reader of `socket` unless one runs; `pid` is QEMU's.
    pub fn ensure(&self, vmid: u32, port: u8, socket: &Path, pid: u32) {
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if readers
            .get(&(vmid, port))
            .is_some_and(|reader| !reader.thread.is_finished())
        {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let job = Job {
            socket: socket.to_owned(),
            log: self.log_path(vmid, port),
            pid,
            settings: self.settings.clone(),
            stop: Arc::clone(&stop),
        };
        match std::thread::Builder::new()
            .name(format!("pve-serial-{vmid}"))
            .spawn(move || job.run())
        {
            Ok(thread) => {
                readers.insert((vmid, port), Reader { stop, thread });
            }
            Err(error) => {
                tracing::warn!(vmid, %error, "Failed to start a serial console reader.");
            }
        }
    }

    /// Stops the readers of VMs not in `keep` (without waiting for them).
    pub fn retain(&self, keep: impl Fn(u32) -> bool) {
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        readers.retain(|(vmid, _), reader| {
            let kept = keep(*vmid) && !reader.thread.is_finished();
            if !kept {
                reader.stop.store(true, Ordering::Relaxed);
            }
            kept
        });
    }
}

impl Drop for SerialReaders {
    fn drop(&mut self) {
        let readers = std::mem::take(
            self.readers
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for reader in readers.values() {
            reader.stop.store(true, Ordering::Relaxed);
        }
        for (_, reader) in readers {
            let _ = reader.thread.join();
        }
    }
}

/// How often an attached reader checks for waiting clients and for stop.
const CHECK_EVERY: Duration = Duration::from_millis(500);

struct Job {
    socket: PathBuf,
    log: PathBuf,
    pid: u32,
    settings: SerialSettings,
    stop: Arc<AtomicBool>,
}

/// What `/proc/net/unix` says about a listening socket's clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketClients {
    /// Accepted connections (state 03 entries carrying the path).
    pub attached: usize,
    /// Connections waiting in the backlog (state 02).
    pub waiting: usize,
}

/// Counts the clients of the socket bound at `socket` in a `/proc/net/unix` text.
/// Symlinks are followed (the kernel lists the path QEMU bound).
pub fn socket_clients(proc_net_unix: &str, socket: &Path) -> SocketClients {
    let canonical = std::fs::canonicalize(socket).unwrap_or_else(|_| socket.to_owned());
    let Some(file_name) = canonical.file_name() else {
        return SocketClients::default();
    };
    let mut clients = SocketClients::default();
    for line in proc_net_unix.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode Path
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(state), Some(path)) = (fields.get(5), fields.get(7)) else {
            continue;
        };
        let path = Path::new(path);
        // Cheap test first; only candidates are resolved.
        if path.file_name() != Some(file_name) {
            continue;
        }
        let same = path == canonical
            || path == socket
            || std::fs::canonicalize(path).is_ok_and(|resolved| resolved == canonical);
        if !same {
            continue;
        }
        match *state {
            "02" => clients.waiting += 1,
            "03" => clients.attached += 1,
            _ => {}
        }
    }
    clients
}

impl Job {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || !self
                .settings
                .procfs_root
                .join(self.pid.to_string())
                .exists()
    }

    /// Sleeps up to `duration`, waking early on stop; false when stopped.
    fn pause(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(CHECK_EVERY.min(until.saturating_duration_since(Instant::now())));
        }
        !self.stopped()
    }

    fn clients(&self) -> SocketClients {
        let text =
            std::fs::read_to_string(self.settings.procfs_root.join("net/unix")).unwrap_or_default();
        socket_clients(&text, &self.socket)
    }

    fn run(self) {
        tracing::debug!(socket = %self.socket.display(), "Serial console reader started.");
        while !self.stopped() {
            let pause = match self.attach() {
                Ok(Detached::Closed) => self.settings.retry_after,
                Ok(Detached::Yielded) => {
                    tracing::info!(socket = %self.socket.display(), "Another client wants the serial console; letting go.");
                    self.settings.yield_for
                }
                Ok(Detached::Stopped) => break,
                Err(error) => {
                    tracing::debug!(socket = %self.socket.display(), %error, "Serial console not read.");
                    self.settings.retry_after
                }
            };
            if !self.pause(pause) {
                break;
            }
        }
        tracing::debug!(socket = %self.socket.display(), "Serial console reader ended.");
    }

    fn attach(&self) -> Result<Detached, AttachError> {
        if self.clients().attached > 0 {
            return Err(AttachError::InUse);
        }
        let mut stream = wire::connect(&self.socket).map_err(AttachError::Wire)?;
        // QEMU accepts at once when the socket is free; a connection still in the
        // backlog after a moment means someone else got there first.
        let accepted_by = Instant::now() + Duration::from_millis(300);
        while self.clients().waiting > 0 {
            if Instant::now() > accepted_by {
                return Err(AttachError::InUse);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stream
            .set_read_timeout(Some(CHECK_EVERY))
            .map_err(AttachError::Io)?;
        let mut log = LogFile::open(&self.log, self.settings.max_log_bytes)?;
        let mut buffer = vec![0u8; 64 * 1024];
        let mut last_check = Instant::now();
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return Ok(Detached::Closed),
                Ok(n) => log.append(&buffer[..n])?,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => return Err(AttachError::Io(error)),
            }
            if last_check.elapsed() >= CHECK_EVERY {
                last_check = Instant::now();
                if self.stopped() {
                    return Ok(Detached::Stopped);
                }
                if self.clients().waiting > 0 {
                    return Ok(Detached::Yielded);
                }
            }
        }
    }
}

enum Detached {
    /// QEMU closed the connection (VM stopped or reset its chardev).
    Closed,
    /// Another client waited: we let it in.
    Yielded,
    Stopped,
}

#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("Another client holds the serial console")]
    InUse,
    #[error(transparent)]
    Wire(wire::WireError),
    #[error("Serial console I/O failed")]
    Io(#[source] std::io::Error),
    #[error("Failed to write the serial log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The append-only log, rotated to `<log>.0` past `max_bytes`.
struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
}

impl LogFile {
    fn open(path: &Path, max_bytes: u64) -> Result<Self, AttachError> {
        let log_error = |source| AttachError::Log {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(log_error)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(log_error)?;
        let size = file.metadata().map_err(log_error)?.len();
        Ok(LogFile {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), AttachError> {
        let path = self.path.clone();
        let log_error = |source| AttachError::Log {
            path: path.clone(),
            source,
        };
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_bytes {
            let mut backup = path.clone().into_os_string();
            backup.push(".0");
            std::fs::rename(&path, &backup).map_err(log_error)?;
            *self = LogFile::open(&path, self.max_bytes)?;
        }
        self.file.write_all(bytes).map_err(log_error)?;
        self.size += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_attached_and_waiting_clients_of_one_socket() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 174407 /run/qemu-server/100.serial0
0000000000000000: 00000003 00000000 00000000 0001 03 174411 /run/qemu-server/100.serial0
0000000000000000: 00000003 00000000 00000000 0001 02 0 /run/qemu-server/100.serial0
0000000000000000: 00000003 00000000 00000000 0001 03 174499 /run/qemu-server/100.qmp
0000000000000000: 00000003 00000000 00000000 0001 03 174500
0000000000000000: 00000003 00000000 00000000 0001 02 0 /run/qemu-server/1000.serial0
";
        let clients = socket_clients(text, Path::new("/run/qemu-server/100.serial0"));
        assert_eq!(
            clients,
            SocketClients {
                attached: 1,
                waiting: 1
            }
        );
        assert_eq!(
            socket_clients(text, Path::new("/run/qemu-server/101.serial0")),
            SocketClients::default()
        );
        assert_eq!(
            socket_clients("", Path::new("/x")),
            SocketClients::default()
        );
    }

    #[test]
    fn log_rotates_past_its_limit() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path();
        let path = dir.join("100.serial0.log");
        let mut log = LogFile::open(&path, 10).expect("open");
        log.append(b"12345678").expect("append");
        log.append(b"abcdef").expect("append");
        assert_eq!(
            std::fs::read(dir.join("100.serial0.log.0")).expect("backup"),
            b"12345678"
        );
        assert_eq!(std::fs::read(&path).expect("live"), b"abcdef");
    }
}
