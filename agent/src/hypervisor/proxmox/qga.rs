//! A QEMU guest agent client for one short conversation on `<vmid>.qga`.
//!
//! The guest agent is a program in the guest: its replies are untrusted, and a
//! client that gave up earlier may have left replies in the channel. Protocol
//! (QEMU `qga/qapi-schema.json`, `guest-sync-delimited`):
//! 1. connect (never blocking); send `0xFF`, which resets the agent's JSON parser
//!    if an earlier client left half a command;
//! 2. `guest-sync-delimited` with a random id; the agent answers with a `0xFF`
//!    byte and then `{"return": id}`. Everything before the sentinel and every
//!    reply with another id is stale and skipped;
//! 3. commands, one at a time, each reply bounded in size; the whole
//!    conversation has one deadline;
//! 4. the caller drops the client and the socket closes.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::wire::{command_error, Channel, WireError};

/// The sentinel byte of `guest-sync-delimited`.
const SENTINEL: u8 = 0xFF;

/// One guest agent conversation.
#[derive(Debug)]
pub struct QgaClient {
    channel: Channel,
}

impl QgaClient {
    /// Connects and synchronises; everything must end within `timeout` of now.
    pub fn connect(
        path: &Path,
        timeout: Duration,
        max_line_bytes: usize,
    ) -> Result<Self, WireError> {
        let channel = Channel::open(path, timeout, max_line_bytes)?;
        Self::synchronise(channel, fastrand::u32(1..=i32::MAX as u32).into())
    }

    /// Runs the sync step on an open channel with a given id (tests).
    pub fn synchronise(mut channel: Channel, sync_id: u64) -> Result<Self, WireError> {
        let mut request = vec![SENTINEL];
        request.extend_from_slice(
            json!({ "execute": "guest-sync-delimited", "arguments": { "id": sync_id } })
                .to_string()
                .as_bytes(),
        );
        request.push(b'\n');
        channel.send(&request)?;
        let mut seen_sentinel = false;
        loop {
            let line = channel.read_line()?;
            let json_part = match memchr::memrchr(SENTINEL, &line) {
                Some(position) => {
                    seen_sentinel = true;
                    &line[position + 1..]
                }
                None if seen_sentinel => &line[..],
                // Stale output of an earlier client, before our sentinel.
                None => continue,
            };
            if json_part.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(reply) = serde_json::from_slice::<Value>(json_part) else {
                continue;
            };
            if reply.get("return").and_then(Value::as_u64) == Some(sync_id) {
                return Ok(QgaClient { channel });
            }
        }
    }

    /// Gives the rest of the conversation a new time limit (a guest command may
    /// need longer than the handshake).
    pub fn extend(&mut self, timeout: Duration) {
        self.channel
            .set_deadline(std::time::Instant::now() + timeout, timeout);
    }

    /// Runs one command; its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, WireError> {
        let id = fastrand::u64(..);
        let mut message = json!({ "execute": command, "arguments": arguments, "id": id });
        if message["arguments"].is_null() {
            if let Some(object) = message.as_object_mut() {
                object.remove("arguments");
            }
        }
        let mut request = message.to_string().into_bytes();
        request.push(b'\n');
        self.channel.send(&request)?;
        loop {
            let mut reply = self.channel.read_json()?;
            // Agents echo the id; one that does not is answering us (we are synced).
            if reply
                .get("id")
                .is_some_and(|echoed| echoed.as_u64() != Some(id))
            {
                continue;
            }
            if let Some(value) = reply.get_mut("return") {
                return Ok(value.take());
            }
            if let Some(error) = reply.get("error") {
                return Err(command_error(self.channel.path(), command, error));
            }
            return Err(self
                .channel
                .protocol(format!("reply to {command} has neither return nor error")));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::wire::fake_server::{FakeServer, Peer};
    use super::*;

    const LIMIT: usize = 1024 * 1024;

    /// Answers the sync request after `stale` (leftovers of an earlier client).
    fn sync(peer: &mut Peer, stale: &[u8]) {
        let request = peer.request();
        assert_eq!(request["execute"], "guest-sync-delimited");
        let id = request["arguments"]["id"].as_u64().expect("sync id");
        peer.send(stale);
        peer.send(&[0xFF]);
        peer.send(format!("{{\"return\": {id}}}\n").as_bytes());
    }

    #[test]
    fn stale_replies_and_sentinel_are_skipped_against_fake_qga_server() {
        let server = FakeServer::start(|mut peer| {
            // An earlier client's exec reply and half a line, then the sentinel.
            sync(
                &mut peer,
                b"{\"return\": {\"pid\": 1}}\n{\"return\": 12345}\n{\"retu",
            );
            let exec = peer.request();
            assert_eq!(exec["execute"], "guest-exec");
            assert_eq!(exec["arguments"]["capture-output"], true);
            // A stale reply with another id first.
            peer.send(b"{\"return\": {\"pid\": 2}, \"id\": 1}\n");
            let reply = json!({"return": {"pid": 812}, "id": exec["id"]});
            peer.send(format!("{reply}\n").as_bytes());
            let status = peer.request();
            assert_eq!(status["arguments"]["pid"], 812);
            // An agent that does not echo ids.
            peer.send(
                b"{\"return\": {\"exited\": true, \"exitcode\": 0, \"out-data\": \"aGkK\"}}\n",
            );
        });
        let mut client =
            QgaClient::connect(&server.path, Duration::from_secs(2), LIMIT).expect("sync");
        let exec = client
            .execute(
                "guest-exec",
                json!({"path": "/bin/dmesg", "arg": [], "capture-output": true}),
            )
            .expect("exec");
        assert_eq!(exec["pid"], 812);
        let status = client
            .execute("guest-exec-status", json!({"pid": 812}))
            .expect("status");
        assert_eq!(status["out-data"], "aGkK");
        drop(client);
        server.finish();
    }

    #[test]
    fn agent_that_never_syncs_times_out_against_fake_qga_server() {
        let (sender, receiver) = std::sync::mpsc::channel::<()>();
        let server = FakeServer::start(move |mut peer| {
            let _ = peer.request();
            // No agent in the guest: the host socket is there, nothing answers.
            let _ = receiver.recv();
        });
        let started = Instant::now();
        let error = QgaClient::connect(&server.path, Duration::from_millis(300), LIMIT)
            .expect_err("no agent");
        assert!(matches!(error, WireError::Timeout { .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(sender);
        server.finish();
    }

    #[test]
    fn huge_agent_reply_is_bounded_against_fake_qga_server() {
        let server = FakeServer::start(|mut peer| {
            sync(&mut peer, b"");
            let _ = peer.request();
            let chunk = vec![b'A'; 1024 * 1024];
            peer.send(b"{\"return\": {\"exited\": true, \"out-data\": \"");
            for _ in 0..4 {
                peer.send(&chunk);
            }
        });
        let mut client =
            QgaClient::connect(&server.path, Duration::from_secs(5), LIMIT).expect("sync");
        let error = client
            .execute("guest-exec-status", json!({"pid": 1}))
            .expect_err("too long");
        assert!(matches!(error, WireError::LineTooLong { .. }), "{error:?}");
        drop(client);
        server.finish();
    }

    #[test]
    fn error_reply_against_fake_qga_server() {
        let server = FakeServer::start(|mut peer| {
            sync(&mut peer, b"");
            let request = peer.request();
            let reply = json!({"error": {"class": "GenericError", "desc": "Invalid parameter 'pid'"}, "id": request["id"]});
            peer.send(format!("{reply}\n").as_bytes());
        });
        let mut client =
            QgaClient::connect(&server.path, Duration::from_secs(2), LIMIT).expect("sync");
        let error = client
            .execute("guest-exec-status", json!({"pid": 9}))
            .expect_err("error reply");
        assert!(error.to_string().contains("Invalid parameter"), "{error}");
        drop(client);
        server.finish();
    }
}
