//! Bounded, deadline-driven I/O on QEMU's single-client unix sockets.
//!
//! QEMU's `-chardev socket,server=on` accepts one client at a time; a second
//! client's `connect` lands in the listen backlog (and blocks once that is full)
//! until the first one leaves. So everything here is bounded:
//! 1. [`connect`] never blocks: a full backlog is an immediate `Busy`;
//! 2. every read and write honours one deadline for the whole call;
//! 3. a line longer than the caller's limit is an error, read no further.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Failures talking to one socket; each names the socket.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("Failed to connect to {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Socket {path} is busy (another client holds it)")]
    Busy { path: PathBuf },
    #[error("Failed to talk to {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("No reply on {path} within {timeout:?}")]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("Line on {path} exceeds the limit of {limit} bytes")]
    LineTooLong { path: PathBuf, limit: usize },
    #[error("{path} closed the connection")]
    Closed { path: PathBuf },
    #[error("Malformed JSON on {path}")]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("Unexpected reply on {path}: {detail}")]
    Protocol { path: PathBuf, detail: String },
    #[error("Command {command} failed on {path}: {class}: {desc}")]
    Command {
        path: PathBuf,
        command: String,
        class: String,
        desc: String,
    },
}

impl WireError {
    /// The other end is there but did not let us in or did not answer in time.
    pub fn is_busy_or_timeout(&self) -> bool {
        matches!(self, WireError::Busy { .. } | WireError::Timeout { .. })
    }
}

/// Connects without blocking: a listener whose backlog is full (its one client
/// slot taken and others queued) is `Busy` at once instead of a blocked thread.
pub fn connect(path: &Path) -> Result<UnixStream, WireError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| WireError::Connect {
            path: path.to_owned(),
            source,
        })?;
    // A unix-socket connect completes (or fails with EAGAIN) at once; no wait.
    let stream = runtime
        .block_on(async { tokio::net::UnixStream::connect(path).await?.into_std() })
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::WouldBlock {
                WireError::Busy {
                    path: path.to_owned(),
                }
            } else {
                WireError::Connect {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    stream
        .set_nonblocking(false)
        .map_err(|source| WireError::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok(stream)
}

/// One connection: lines in, bytes out, all before `deadline`.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    path: PathBuf,
    buffer: Vec<u8>,
    max_line_bytes: usize,
    deadline: Instant,
    timeout: Duration,
}

const CHUNK: usize = 64 * 1024;

impl Channel {
    /// Connects to `path`; the whole conversation must end within `timeout`.
    pub fn open(path: &Path, timeout: Duration, max_line_bytes: usize) -> Result<Self, WireError> {
        let deadline = Instant::now() + timeout;
        Ok(Self::new(
            connect(path)?,
            path,
            deadline,
            timeout,
            max_line_bytes,
        ))
    }

    pub fn new(
        stream: UnixStream,
        path: &Path,
        deadline: Instant,
        timeout: Duration,
        max_line_bytes: usize,
    ) -> Self {
        Channel {
            stream,
            path: path.to_owned(),
            buffer: Vec::new(),
            max_line_bytes,
            deadline,
            timeout,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the deadline (a guest command may take longer than a monitor call).
    pub fn set_deadline(&mut self, deadline: Instant, timeout: Duration) {
        self.deadline = deadline;
        self.timeout = timeout;
    }

    fn remaining(&self) -> Result<Duration, WireError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            Err(self.timeout_error())
        } else {
            Ok(remaining)
        }
    }

    fn timeout_error(&self) -> WireError {
        WireError::Timeout {
            path: self.path.clone(),
            timeout: self.timeout,
        }
    }

    fn io_error(&self, source: std::io::Error) -> WireError {
        match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => self.timeout_error(),
            _ => WireError::Io {
                path: self.path.clone(),
                source,
            },
        }
    }

    /// Writes all of `bytes` before the deadline.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let remaining = self.remaining()?;
        self.stream
            .set_write_timeout(Some(remaining))
            .map_err(|error| self.io_error(error))?;
        self.stream
            .write_all(bytes)
            .map_err(|error| self.io_error(error))
    }

    /// The next line (without its `\n`), at most `max_line_bytes` long.
    pub fn read_line(&mut self) -> Result<Vec<u8>, WireError> {
        let mut scanned = 0;
        loop {
            if let Some(offset) = memchr::memchr(b'\n', &self.buffer[scanned..]) {
                let end = scanned + offset;
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                return Ok(line);
            }
            scanned = self.buffer.len();
            if self.buffer.len() > self.max_line_bytes {
                return Err(WireError::LineTooLong {
                    path: self.path.clone(),
                    limit: self.max_line_bytes,
                });
            }
            let remaining = self.remaining()?;
            self.stream
                .set_read_timeout(Some(remaining))
                .map_err(|error| self.io_error(error))?;
            // Never buffer more than one byte past the limit.
            let want = CHUNK.min(self.max_line_bytes + 1 - self.buffer.len());
            let start = self.buffer.len();
            self.buffer.resize(start + want, 0);
            let read = self.stream.read(&mut self.buffer[start..]);
            match read {
                Ok(0) => {
                    self.buffer.truncate(start);
                    return Err(WireError::Closed {
                        path: self.path.clone(),
                    });
                }
                Ok(n) => self.buffer.truncate(start + n),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {
                    self.buffer.truncate(start);
                }
                Err(error) => {
                    self.buffer.truncate(start);
                    return Err(self.io_error(error));
                }
            }
        }
    }

    /// The next line as JSON.
    pub fn read_json(&mut self) -> Result<serde_json::Value, WireError> {
        let line = self.read_line()?;
        self.parse(&line)
    }

    pub fn parse(&self, line: &[u8]) -> Result<serde_json::Value, WireError> {
        serde_json::from_slice(line).map_err(|source| WireError::Malformed {
            path: self.path.clone(),
            source,
        })
    }

    pub fn protocol(&self, detail: impl Into<String>) -> WireError {
        WireError::Protocol {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }
}

/// The `error` member of a QMP/QGA reply as [`WireError::Command`].
pub fn command_error(path: &Path, command: &str, error: &serde_json::Value) -> WireError {
    let field = |name: &str| {
        error
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    WireError::Command {
        path: path.to_owned(),
        command: command.to_owned(),
        class: field("class"),
        desc: field("desc"),
    }
}

/// A scripted one-connection unix-socket server for the client tests.
#[cfg(test)]
pub(crate) mod fake_server {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;
    use std::thread::JoinHandle;

    /// The server's side of one connection.
    pub struct Peer {
        pub reader: BufReader<UnixStream>,
        pub writer: UnixStream,
    }

    impl Peer {
        /// The next request line as JSON (`0xFF` bytes before it dropped).
        pub fn request(&mut self) -> serde_json::Value {
            let mut line = Vec::new();
            self.reader
                .read_until(b'\n', &mut line)
                .expect("read request");
            line.retain(|&byte| byte != 0xFF);
            serde_json::from_slice(&line).expect("request is JSON")
        }

        pub fn send(&mut self, bytes: &[u8]) {
            // The client may have given up already; that is what some tests check.
            let _ = self.writer.write_all(bytes);
        }
    }

    pub struct FakeServer {
        pub path: PathBuf,
        thread: Option<JoinHandle<()>>,
        /// The socket's directory, removed on drop.
        _dir: tempfile::TempDir,
    }

    impl FakeServer {
        /// Serves one connection with `script` on a fresh socket.
        pub fn start(script: impl FnOnce(Peer) + Send + 'static) -> FakeServer {
            let dir = tempfile::Builder::new()
                .prefix("ballast-fake-qmp-")
                .tempdir()
                .expect("socket dir");
            let path = dir.path().join("100.qmp");
            let listener = UnixListener::bind(&path).expect("bind");
            let thread = std::thread::spawn(move || {
                let (stream, _) = listener.accept().expect("accept");
                let writer = stream.try_clone().expect("clone");
                script(Peer {
                    reader: BufReader::new(stream),
                    writer,
                });
            });
            FakeServer {
                path,
                thread: Some(thread),
                _dir: dir,
            }
        }

        /// Waits for the script to end (it panics on a wrong request).
        pub fn finish(mut self) {
            if let Some(thread) = self.thread.take() {
                thread.join().expect("fake server script");
            }
        }
    }
}
