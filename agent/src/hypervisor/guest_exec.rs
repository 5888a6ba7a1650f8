//! The guest-exec protocol of the QEMU guest agent, once for both backends.
//!
//! 1. `guest-exec` of a path and its arguments with `capture-output`: the guest's pid
//!    (never sent twice: starting a process is not idempotent);
//! 2. `guest-exec-status` of that pid, again after 20 ms, doubling up to 250 ms, until
//!    it says `exited` or the time is up ([`HypervisorError::Timeout`]);
//! 3. its `out-data` decoded ([`super::guest_base64`]) to at most `max_output_bytes`:
//!    more is cut and marked truncated, as is output the agent itself cut
//!    (`out-truncated`). The guest agent is a program in the guest: its replies are
//!    parsed into bounded, typed values, never trusted.
//!
//! A backend supplies the [`AgentTransport`] that carries one command to the guest
//! agent and brings its reply back (libvirt: `virDomainQemuAgentCommand`; Proxmox VE:
//! one conversation on the VM's `qga` socket).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{agent_reply, DomainId, ExecOutput, HypervisorError};

/// One reply of the guest agent, in the form the transport has it.
#[derive(Debug)]
pub(crate) enum AgentReply {
    /// The whole reply object (`{"return": ...}` or `{"error": ...}`), as text
    /// (libvirt's form; a build without libvirt has no transport that makes it).
    #[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
    Text(String),
    /// The `return` value, already taken out of its reply (the transport turned an
    /// error answer into its error).
    Return(Value),
}

/// Carries one guest agent command and brings back its reply.
pub(crate) trait AgentTransport {
    /// Sends `command` with `arguments`, to be answered within `timeout`. A failure
    /// is reported as a [`HypervisorError`] naming `action`. `idempotent`: the
    /// transport may send the command again (on a new connection) after a failure.
    fn send(
        &mut self,
        command: &'static str,
        arguments: Value,
        timeout: Duration,
        action: &'static str,
        idempotent: bool,
    ) -> Result<AgentReply, HypervisorError>;
}

/// A guest agent reply ballast could not use.
#[derive(Debug, thiserror::Error)]
pub enum ExecReplyError {
    #[error("Malformed reply")]
    Malformed(#[source] serde_json::Error),
    #[error("Error reply: {0}")]
    Error(String),
    #[error("Reply has neither return nor error")]
    Empty,
    #[error("Malformed base64 output")]
    Base64(#[source] base64::DecodeError),
}

/// The first pause between two `guest-exec-status`, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Runs `path args` in the guest of `id` through `transport` (see the module doc).
pub(crate) fn run(
    transport: &mut impl AgentTransport,
    id: &DomainId,
    path: &str,
    args: &[&str],
    timeout: Duration,
    max_output_bytes: usize,
) -> Result<ExecOutput, HypervisorError> {
    let deadline = Instant::now() + timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    const START: &str = "start a guest command";
    const STATUS: &str = "read a guest command's status";
    let reply = transport.send(
        "guest-exec",
        json!({ "path": path, "arg": args, "capture-output": true }),
        remaining(),
        START,
        false,
    )?;
    let pid = read::<ExecReturn>(&reply)
        .map_err(|error| domain_error(START, id, error))?
        .pid;
    let mut pause = FIRST_PAUSE;
    loop {
        let reply = transport.send(
            "guest-exec-status",
            json!({ "pid": pid }),
            remaining(),
            STATUS,
            true,
        )?;
        let status = read::<ExecStatusReturn<'_>>(&reply)
            .map_err(|error| domain_error(STATUS, id, error))?;
        if status.exited {
            return exec_output(&status, max_output_bytes)
                .map_err(|error| domain_error("decode a guest command's output", id, error));
        }
        if Instant::now() + pause > deadline {
            return Err(HypervisorError::Timeout(timeout));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

fn domain_error(action: &'static str, id: &DomainId, error: ExecReplyError) -> HypervisorError {
    HypervisorError::Domain {
        action,
        domain: id.name.clone(),
        source: Box::new(error),
    }
}

#[derive(Deserialize)]
struct ExecReturn {
    pid: i64,
}

#[derive(Deserialize)]
struct ExecStatusReturn<'a> {
    exited: bool,
    exitcode: Option<i64>,
    #[serde(rename = "out-data", borrow, default)]
    out_data: Option<Cow<'a, str>>,
    #[serde(rename = "out-truncated", default)]
    out_truncated: bool,
}

/// The `return` value of `reply` as a `T`, borrowing its strings from the reply
/// (a large `out-data` is not copied before it is cut and decoded).
fn read<'a, T: Deserialize<'a>>(reply: &'a AgentReply) -> Result<T, ExecReplyError> {
    match reply {
        AgentReply::Return(value) => T::deserialize(value).map_err(ExecReplyError::Malformed),
        AgentReply::Text(text) => {
            match agent_reply::parse::<T>(text).map_err(ExecReplyError::Malformed)? {
                Some(Ok(value)) => Ok(value),
                Some(Err(error)) => Err(ExecReplyError::Error(format!(
                    "{}: {}",
                    error.class, error.desc
                ))),
                None => Err(ExecReplyError::Empty),
            }
        }
    }
}

/// An exited command's status: its exit code and at most `max_output_bytes` of output.
fn exec_output(
    status: &ExecStatusReturn<'_>,
    max_output_bytes: usize,
) -> Result<ExecOutput, ExecReplyError> {
    let (stdout, cut) = match status.out_data.as_deref() {
        Some(data) => super::guest_base64::decode_bounded(data, max_output_bytes)
            .map_err(ExecReplyError::Base64)?,
        None => (Vec::new(), false),
    };
    Ok(ExecOutput {
        exit_code: status.exitcode.and_then(|code| i32::try_from(code).ok()),
        stdout,
        truncated: cut || status.out_truncated,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A MOCK transport: answers each command with the next scripted reply and
    /// records what was sent (the real ones need a guest agent; the backends' tests
    /// run these replies through a fake socket and real libvirt).
    struct ScriptedTransport {
        replies: VecDeque<AgentReply>,
        sent: Vec<(&'static str, Value, bool)>,
    }

    impl ScriptedTransport {
        fn new(replies: impl IntoIterator<Item = AgentReply>) -> Self {
            Self {
                replies: replies.into_iter().collect(),
                sent: Vec::new(),
            }
        }
    }

    impl AgentTransport for ScriptedTransport {
        fn send(
            &mut self,
            command: &'static str,
            arguments: Value,
            _timeout: Duration,
            action: &'static str,
            idempotent: bool,
        ) -> Result<AgentReply, HypervisorError> {
            self.sent.push((command, arguments, idempotent));
            self.replies.pop_front().ok_or(HypervisorError::Call {
                action,
                source: "no more replies".into(),
            })
        }
    }

    fn text(reply: &str) -> AgentReply {
        AgentReply::Text(reply.to_string())
    }

    fn id() -> DomainId {
        DomainId {
            uuid: "00000000-0000-4000-8000-000000000001".into(),
            name: "guest".into(),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn exec_polls_until_exited_and_decodes_the_output_with_scripted_transport() {
        // "Linux version 6.1\n", after one "still running".
        let mut transport = ScriptedTransport::new([
            text(r#"{"return": {"pid": 812}}"#),
            AgentReply::Return(json!({"exited": false})),
            AgentReply::Return(
                json!({"exitcode": 0, "out-data": "TGludXggdmVyc2lvbiA2LjEK", "exited": true}),
            ),
        ]);
        let output =
            run(&mut transport, &id(), "/bin/dmesg", &["-r"], SECOND, 1024).expect("output");
        assert_eq!(
            output,
            ExecOutput {
                exit_code: Some(0),
                stdout: b"Linux version 6.1\n".to_vec(),
                truncated: false,
            }
        );
        let (command, arguments, idempotent) = &transport.sent[0];
        assert_eq!(*command, "guest-exec");
        assert_eq!(arguments["path"], "/bin/dmesg");
        assert_eq!(arguments["arg"][0], "-r");
        assert_eq!(arguments["capture-output"], true);
        assert!(!idempotent, "a guest-exec must never be sent twice");
        assert_eq!(transport.sent[1].0, "guest-exec-status");
        assert_eq!(transport.sent[1].1["pid"], 812);
        assert_eq!(transport.sent.len(), 3);
    }

    #[test]
    fn exec_output_is_bounded_and_hostile_replies_are_errors_with_scripted_transport() {
        let exited = r#"{"return": {"exitcode": 0, "out-data": "TGludXggdmVyc2lvbiA2LjEK", "exited": true}}"#;
        let run_with = |status: AgentReply, max: usize| {
            let mut transport = ScriptedTransport::new([text(r#"{"return": {"pid": 1}}"#), status]);
            run(&mut transport, &id(), "/bin/dmesg", &[], SECOND, max)
        };
        let cut = run_with(text(exited), 5).expect("cut output");
        assert_eq!(cut.stdout, b"Linux");
        assert!(cut.truncated);
        let agent_cut = run_with(
            text(r#"{"return": {"exitcode": 1, "out-data": "", "exited": true, "out-truncated": true}}"#),
            10,
        )
        .expect("agent cut");
        assert!(agent_cut.truncated);
        assert_eq!(agent_cut.exit_code, Some(1));
        let signalled = run_with(
            text(r#"{"return": {"exited": true, "signal": 9, "exitcode": 99999999999}}"#),
            10,
        )
        .expect("signalled");
        assert_eq!(signalled.exit_code, None);
        for bad in [
            r#"{"return": {"exited": true, "out-data": "!!!!"}}"#,
            r#"{"error": {"class": "GenericError", "desc": "Invalid parameter 'pid'"}}"#,
            r#"{"return": {"exited": "yes"}}"#,
            r#"{}"#,
        ] {
            let error = run_with(text(bad), 10).expect_err(bad);
            assert!(
                matches!(error, HypervisorError::Domain { .. }),
                "{bad}: {error}"
            );
        }
        let no_pid = ScriptedTransport::new([text(r#"{"return": {}}"#)]);
        let mut no_pid = no_pid;
        let error = run(&mut no_pid, &id(), "/bin/dmesg", &[], SECOND, 10).expect_err("no pid");
        assert!(
            error.to_string().contains("start a guest command"),
            "{error}"
        );
        assert_eq!(no_pid.sent.len(), 1, "no status poll without a pid");
    }

    #[test]
    fn a_command_that_never_exits_times_out_with_scripted_transport() {
        let running = || AgentReply::Return(json!({"exited": false}));
        let mut transport = ScriptedTransport::new(
            std::iter::once(text(r#"{"return": {"pid": 7}}"#))
                .chain(std::iter::repeat_with(running).take(100)),
        );
        let started = Instant::now();
        let error = run(
            &mut transport,
            &id(),
            "/bin/dmesg",
            &[],
            Duration::from_millis(300),
            10,
        )
        .expect_err("timeout");
        assert!(matches!(error, HypervisorError::Timeout(_)), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(transport.sent.len() > 2, "it polled");
    }
}
