//! The guest agent of a Proxmox VE VM (`<vmid>.qga`): one conversation per call
//! (qemu-ga's file handles outlive the connection), the file API with bounded
//! reads, and the transport of the shared guest-exec protocol
//! ([`crate::hypervisor::guest_exec`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::qga::QgaClient;
use super::wire::WireError;
use super::ProxmoxHypervisor;
use crate::hypervisor::guest_exec::{self, AgentReply, AgentTransport};
use crate::hypervisor::{DomainId, ExecOutput, FileChunk, HypervisorError};

/// The guest agent's `guest-exec-status` line may carry this much beyond the output.
const AGENT_REPLY_SLACK: usize = 64 * 1024;

/// A reply without a field ballast needs.
#[derive(Debug, thiserror::Error)]
#[error("Reply has no {0}")]
struct MissingField(&'static str);

impl ProxmoxHypervisor {
    /// One guest agent command on a conversation of its own (qemu-ga's file handles
    /// outlive the connection); an error answer of the agent is
    /// [`HypervisorError::GuestRefused`].
    pub(super) fn qga_call(
        &self,
        id: &DomainId,
        command: &'static str,
        arguments: Value,
        timeout: Duration,
        max_line: usize,
    ) -> Result<Value, HypervisorError> {
        let vmid = self.vmid_of(id)?;
        let deadline = Instant::now() + timeout;
        let mut client = QgaClient::connect(
            &self.socket(vmid, "qga"),
            self.settings.call_timeout.min(timeout),
            max_line.max(self.settings.max_reply_bytes),
        )
        .map_err(|error| match error {
            WireError::Timeout { .. } => HypervisorError::Timeout(timeout),
            error => Self::domain_error("reach the guest agent", id, error),
        })?;
        client.extend(deadline.saturating_duration_since(Instant::now()));
        client
            .execute(command, arguments)
            .map_err(|error| match error {
                WireError::Command { class, desc, .. } => {
                    HypervisorError::guest_refused(id, command, &class, &desc)
                }
                WireError::Timeout { .. } => HypervisorError::Timeout(timeout),
                error => Self::domain_error("call the guest agent", id, error),
            })
    }

    /// [`crate::hypervisor::Hypervisor::guest_exec`]: the shared protocol on one
    /// guest agent conversation.
    pub(super) fn exec(
        &self,
        id: &DomainId,
        path: &str,
        args: &[&str],
        timeout: Duration,
        max_output_bytes: usize,
    ) -> Result<ExecOutput, HypervisorError> {
        let vmid = self.vmid_of(id)?;
        // base64 of the output plus the JSON around it.
        let max_line = max_output_bytes
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(AGENT_REPLY_SLACK)
            .max(self.settings.max_reply_bytes);
        let mut transport = ExecTransport {
            socket: self.socket(vmid, "qga"),
            connect_timeout: self.settings.call_timeout,
            max_line,
            deadline: Instant::now() + timeout,
            timeout,
            id,
            client: None,
        };
        guest_exec::run(&mut transport, id, path, args, timeout, max_output_bytes)
    }

    pub(super) fn file_open(
        &self,
        id: &DomainId,
        path: &str,
        timeout: Duration,
    ) -> Result<i64, HypervisorError> {
        let reply = self.qga_call(
            id,
            "guest-file-open",
            json!({ "path": path, "mode": "r" }),
            timeout,
            self.settings.max_reply_bytes,
        )?;
        reply
            .as_i64()
            .ok_or_else(|| Self::domain_error("open a guest file", id, MissingField("handle")))
    }

    pub(super) fn file_read(
        &self,
        id: &DomainId,
        handle: i64,
        count: usize,
        timeout: Duration,
    ) -> Result<FileChunk, HypervisorError> {
        // base64 of `count` bytes plus the JSON around it.
        let max_line = count
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(AGENT_REPLY_SLACK);
        let reply = self.qga_call(
            id,
            "guest-file-read",
            json!({ "handle": handle, "count": count }),
            timeout,
            max_line,
        )?;
        let (data, cut) = match reply.get("buf-b64").and_then(Value::as_str) {
            Some(data) => crate::hypervisor::guest_base64::decode_bounded(data, count)
                .map_err(|error| Self::domain_error("decode a guest file read", id, error))?,
            None => (Vec::new(), false),
        };
        let claimed = reply.get("count").and_then(Value::as_u64);
        if cut || claimed != u64::try_from(data.len()).ok() {
            return Err(Self::domain_error(
                "read a guest file",
                id,
                MissingField("count matching buf-b64 within the bytes asked"),
            ));
        }
        Ok(FileChunk {
            data,
            eof: reply.get("eof").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    pub(super) fn file_close(
        &self,
        id: &DomainId,
        handle: i64,
        timeout: Duration,
    ) -> Result<(), HypervisorError> {
        self.qga_call(
            id,
            "guest-file-close",
            json!({ "handle": handle }),
            timeout,
            self.settings.max_reply_bytes,
        )
        .map(drop)
    }
}

/// The Proxmox transport of the guest-exec protocol: one guest agent conversation
/// (connected on the first command, within `connect_timeout`), every command on it
/// within the one deadline of the whole exec.
struct ExecTransport<'a> {
    socket: PathBuf,
    connect_timeout: Duration,
    max_line: usize,
    deadline: Instant,
    timeout: Duration,
    id: &'a DomainId,
    client: Option<QgaClient>,
}

impl ExecTransport<'_> {
    fn client(&mut self) -> Result<&mut QgaClient, HypervisorError> {
        let client = match self.client.take() {
            Some(client) => client,
            None => {
                let mut client = QgaClient::connect(
                    &self.socket,
                    self.connect_timeout.min(self.timeout),
                    self.max_line,
                )
                .map_err(|error| match error {
                    WireError::Timeout { .. } => HypervisorError::Timeout(self.timeout),
                    error => {
                        ProxmoxHypervisor::domain_error("reach the guest agent", self.id, error)
                    }
                })?;
                client.extend(self.deadline.saturating_duration_since(Instant::now()));
                client
            }
        };
        Ok(self.client.insert(client))
    }
}

impl AgentTransport for ExecTransport<'_> {
    fn send(
        &mut self,
        command: &'static str,
        arguments: Value,
        _timeout: Duration,
        action: &'static str,
        _idempotent: bool,
    ) -> Result<AgentReply, HypervisorError> {
        let (timeout, id) = (self.timeout, self.id);
        self.client()?
            .execute(command, arguments)
            .map(AgentReply::Return)
            .map_err(|error| match error {
                WireError::Timeout { .. } => HypervisorError::Timeout(timeout),
                error => ProxmoxHypervisor::domain_error(action, id, error),
            })
    }
}
