//! Guest agent (qemu-ga) protocol steps shared by libvirt and Proxmox-style guests.
//!
//! `exec` runs a program in the guest:
//! 1. `guest-exec {path, arg, capture-output: true}` returns `{pid}`;
//! 2. `guest-exec-status {pid}` is polled until `exited: true`;
//! 3. `out-data`/`err-data` are base64.
//!
//! The transport (virsh `qemu-agent-command`, or the `<vmid>.qga` socket) is a closure.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// What a program run through the guest agent did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub exit_code: Option<i64>,
    /// Set when the program died from a signal.
    pub signal: Option<i64>,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    /// Exited normally with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.signal.is_none()
    }
}

/// Runs `path args...` through `command` (one agent command in, its `return` value out).
pub(crate) fn exec(
    command: &dyn Fn(&Value) -> Result<Value>,
    path: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<ExecOutput> {
    let started = command(&json!({
        "execute": "guest-exec",
        "arguments": {"path": path, "arg": args, "capture-output": true},
    }))?;
    let pid = started
        .get("pid")
        .and_then(Value::as_i64)
        .ok_or_else(|| Error::Parse {
            what: "guest-exec".to_owned(),
            detail: started.to_string(),
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        let status = command(&json!({
            "execute": "guest-exec-status",
            "arguments": {"pid": pid},
        }))?;
        if status.get("exited").and_then(Value::as_bool) == Some(true) {
            return Ok(ExecOutput {
                exit_code: status.get("exitcode").and_then(Value::as_i64),
                signal: status.get("signal").and_then(Value::as_i64),
                stdout: decode_field(&status, "out-data")?,
                stderr: decode_field(&status, "err-data")?,
            });
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("guest-exec of {path} (guest pid {pid}) to exit"),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The shell command line that starts memhog in the background with output on the console.
pub(crate) fn hog_shell_line(step_mib: u64, delay_ms: u64, hold_mib: Option<u64>) -> String {
    let hold = hold_mib.map(|mib| format!(" {mib}")).unwrap_or_default();
    format!("/bin/memhog {step_mib} {delay_ms}{hold} >/dev/console 2>&1 &")
}

/// Extracts the `return` value of an agent/monitor reply, or its error.
pub(crate) fn return_value(command: &str, reply: &Value) -> Result<Value> {
    if let Some(error) = reply.get("error") {
        return Err(Error::Agent {
            command: command.to_owned(),
            message: error
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("no description")
                .to_owned(),
        });
    }
    reply.get("return").cloned().ok_or_else(|| Error::Parse {
        what: command.to_owned(),
        detail: reply.to_string(),
    })
}

fn decode_field(status: &Value, field: &str) -> Result<String> {
    match status.get(field).and_then(Value::as_str) {
        Some(data) => {
            let bytes = base64_decode(data).ok_or_else(|| Error::Parse {
                what: format!("guest-exec-status {field}"),
                detail: "invalid base64".to_owned(),
            })?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        None => Ok(String::new()),
    }
}

/// Standard base64 (RFC 4648, with padding), as qemu-ga sends it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(byte: u8) -> Option<u32> {
        Some(u32::from(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().take_while(|b| *b != b'=').collect();
        if data.len() < 2 {
            return if data.is_empty() { Some(out) } else { None };
        }
        let mut word = 0u32;
        for (index, byte) in data.iter().enumerate() {
            word |= value(*byte)? << (18 - 6 * index);
        }
        let bytes = word.to_be_bytes();
        out.extend_from_slice(&bytes[1..data.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_all_paddings() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGVsbG8h").as_deref(), Some(&b"hello!"[..]));
        assert_eq!(base64_decode("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(base64_decode("aA==").as_deref(), Some(&b"h"[..]));
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("a!=="), None);
    }

    #[test]
    fn hog_line_redirects_to_console() {
        assert_eq!(
            hog_shell_line(16, 100, None),
            "/bin/memhog 16 100 >/dev/console 2>&1 &"
        );
        assert_eq!(
            hog_shell_line(16, 50, Some(320)),
            "/bin/memhog 16 50 320 >/dev/console 2>&1 &"
        );
    }
}
