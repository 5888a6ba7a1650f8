//! Minimal blocking clients for QEMU's JSON line protocols over UNIX sockets.
//!
//! [`Qmp`] (the monitor, `<vmid>.qmp`):
//! 1. read the greeting `{"QMP": {...}}`;
//! 2. send `qmp_capabilities`;
//! 3. send commands; asynchronous `{"event": ...}` lines are kept in [`Qmp::events`].
//!
//! [`Qga`] (the guest agent, `<vmid>.qga`): no greeting; a `guest-sync` with a
//! fresh id first discards any stale reply left in the channel.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// One JSON object per line over a UNIX socket.
#[derive(Debug)]
struct JsonLines {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    what: String,
}

impl JsonLines {
    fn connect(path: &Path, timeout: Duration) -> Result<JsonLines> {
        let stream = UnixStream::connect(path).map_err(Error::io(path))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(Error::io(path))?;
        let writer = stream.try_clone().map_err(Error::io(path))?;
        Ok(JsonLines {
            reader: BufReader::new(stream),
            writer,
            what: path.display().to_string(),
        })
    }

    fn send(&mut self, value: &Value) -> Result<()> {
        let mut line = value.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(Error::io(self.what.clone()))
    }

    fn receive(&mut self) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(Error::io(self.what.clone()))?;
            if n == 0 {
                return Err(Error::Parse {
                    what: self.what.clone(),
                    detail: "connection closed".to_owned(),
                });
            }
            // qemu-ga may prefix a reply with 0xFF after guest-sync-delimited; skip blank lines.
            let trimmed = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{fffd}');
            if trimmed.is_empty() {
                continue;
            }
            return serde_json::from_str(trimmed).map_err(|error| Error::Parse {
                what: self.what.clone(),
                detail: format!("{error}: {trimmed}"),
            });
        }
    }
}

/// A QMP connection.
#[derive(Debug)]
pub struct Qmp {
    channel: JsonLines,
    /// Events received so far (`BALLOON_CHANGE`, `SHUTDOWN`, ...).
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities.
    pub fn connect(path: &Path) -> Result<Qmp> {
        let mut channel = JsonLines::connect(path, Duration::from_secs(30))?;
        let greeting = channel.receive()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Parse {
                what: format!("QMP greeting on {}", path.display()),
                detail: greeting.to_string(),
            });
        }
        let mut qmp = Qmp {
            channel,
            events: Vec::new(),
        };
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut request = json!({"execute": command});
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        self.channel.send(&request)?;
        loop {
            let reply = self.channel.receive()?;
            if reply.get("event").is_some() {
                self.events.push(reply);
                continue;
            }
            if let Some(error) = reply.get("error") {
                return Err(Error::Qmp {
                    command: command.to_owned(),
                    message: error
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned(),
                });
            }
            return reply.get("return").cloned().ok_or_else(|| Error::Parse {
                what: format!("QMP {command}"),
                detail: reply.to_string(),
            });
        }
    }

    /// `query-balloon`: the balloon's `actual` size in bytes.
    pub fn query_balloon_bytes(&mut self) -> Result<u64> {
        let value = self.execute("query-balloon", None)?;
        value
            .get("actual")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::Parse {
                what: "query-balloon".to_owned(),
                detail: value.to_string(),
            })
    }

    /// `balloon`: sets the target (bytes the guest keeps).
    pub fn balloon_bytes(&mut self, bytes: u64) -> Result<()> {
        self.execute("balloon", Some(json!({"value": bytes})))
            .map(drop)
    }

    /// `qom-get /machine/peripheral/balloon0 guest-stats`.
    pub fn guest_stats(&mut self) -> Result<crate::guest::GuestStats> {
        let value = self.execute(
            "qom-get",
            Some(json!({"path": "/machine/peripheral/balloon0", "property": "guest-stats"})),
        )?;
        crate::guest::GuestStats::from_qom(&value)
    }

    /// `query-memory-devices`: the virtio-mem devices (plugged = QEMU's `size`).
    pub fn query_virtio_mem(&mut self) -> Result<Vec<crate::virtio_mem::VirtioMemState>> {
        let value = self.execute("query-memory-devices", None)?;
        crate::virtio_mem::parse_query_memory_devices(&value)
    }

    /// `qom-set /machine/peripheral/<id> requested-size <bytes>`: asks the guest to
    /// plug or unplug the virtio-mem device `id` to `bytes` (a multiple of its block size).
    pub fn set_virtio_mem_requested(&mut self, id: &str, bytes: u64) -> Result<()> {
        self.execute(
            "qom-set",
            Some(json!({
                "path": format!("/machine/peripheral/{id}"),
                "property": "requested-size",
                "value": bytes,
            })),
        )
        .map(drop)
    }

    /// `qom-set ... guest-stats-polling-interval` (what Proxmox does after start).
    pub fn set_stats_polling_secs(&mut self, secs: u32) -> Result<()> {
        self.execute(
            "qom-set",
            Some(json!({
                "path": "/machine/peripheral/balloon0",
                "property": "guest-stats-polling-interval",
                "value": secs,
            })),
        )
        .map(drop)
    }
}

/// A guest agent connection over its host socket.
#[derive(Debug)]
pub struct Qga {
    channel: JsonLines,
}

impl Qga {
    /// Connects and synchronises (fails when no agent answers within `timeout`).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qga> {
        let mut qga = Qga {
            channel: JsonLines::connect(path, timeout)?,
        };
        let id = u64::from(std::process::id()) << 20 | u64::from(rand_ish());
        qga.channel
            .send(&json!({"execute": "guest-sync", "arguments": {"id": id}}))?;
        // Replies to commands of an earlier connection may still be queued: skip them.
        for _ in 0..16 {
            let reply = qga.channel.receive()?;
            if reply.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(qga);
            }
        }
        Err(Error::Parse {
            what: format!("guest-sync on {}", path.display()),
            detail: "no reply with the sync id".to_owned(),
        })
    }

    /// Sends one command and returns its `return` value.
    pub fn command(&mut self, command: &Value) -> Result<Value> {
        self.channel.send(command)?;
        let reply = self.channel.receive()?;
        let name = command
            .get("execute")
            .and_then(Value::as_str)
            .unwrap_or("?");
        crate::agent::return_value(name, &reply)
    }
}

/// A number that differs between calls (sync ids only need to differ from stale ones).
fn rand_ish() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed)) & 0xf_ffff
}
