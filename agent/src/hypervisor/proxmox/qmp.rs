//! A QMP client for one short conversation on `<vmid>.qmp`.
//!
//! Protocol (QEMU `docs/interop/qmp-spec`):
//! 1. connect (never blocking, see [`super::wire::connect`]); QEMU sends its greeting
//!    `{"QMP": {...}}`;
//! 2. `qmp_capabilities` leaves negotiation mode;
//! 3. commands go out with an `id`; replies are matched by that `id` (they may
//!    come in any order), asynchronous events (`{"event": ...}`) in between are
//!    skipped (a `MEMORY_DEVICE_SIZE_CHANGE` among them shows a size the same
//!    conversation's `query-memory-devices` reads, or an older one: docs/elastic.md);
//! 4. the caller drops the client: the socket closes, Proxmox's own tools
//!    (pvestatd, `qm`) get their turn.
//!
//! Every line read is bounded (`max_line_bytes`) and the whole conversation has
//! one deadline.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::wire::{command_error, Channel, WireError};

/// One QMP conversation.
#[derive(Debug)]
pub struct QmpClient {
    channel: Channel,
    next_id: u64,
}

impl QmpClient {
    /// Connects, reads the greeting and negotiates capabilities; everything done
    /// with this client must end within `timeout` of now.
    pub fn connect(
        path: &Path,
        timeout: Duration,
        max_line_bytes: usize,
    ) -> Result<Self, WireError> {
        let channel = Channel::open(path, timeout, max_line_bytes)?;
        Self::handshake(channel)
    }

    /// Runs the handshake on an open channel (tests use socket pairs).
    pub fn handshake(mut channel: Channel) -> Result<Self, WireError> {
        loop {
            let greeting = channel.read_json()?;
            if greeting.get("QMP").is_some() {
                break;
            }
            if greeting.get("event").is_none() {
                return Err(channel.protocol(format!("expected the QMP greeting, got {greeting}")));
            }
        }
        let mut client = QmpClient {
            channel,
            next_id: 1,
        };
        client.execute("qmp_capabilities", None)?;
        Ok(client)
    }

    /// Runs one command; its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, WireError> {
        let mut results = self.execute_all(&[(command, arguments)])?;
        results
            .pop()
            .unwrap_or_else(|| Err(self.channel.protocol("no reply")))
    }

    /// Sends all `commands` at once and collects the replies by `id`, in the order
    /// of `commands`. The outer error ends the conversation (timeout, I/O, a
    /// malformed line); an inner one is a command QEMU refused.
    pub fn execute_all(
        &mut self,
        commands: &[(&str, Option<Value>)],
    ) -> Result<Vec<Result<Value, WireError>>, WireError> {
        let first_id = self.next_id;
        let mut request = Vec::new();
        for (offset, (command, arguments)) in commands.iter().enumerate() {
            let id = first_id + offset as u64;
            let mut message = json!({ "execute": command, "id": format!("ballast-{id}") });
            if let Some(arguments) = arguments {
                message["arguments"] = arguments.clone();
            }
            request.extend_from_slice(message.to_string().as_bytes());
            request.push(b'\n');
        }
        self.next_id = first_id + commands.len() as u64;
        self.channel.send(&request)?;
        let mut results: Vec<Option<Result<Value, WireError>>> =
            commands.iter().map(|_| None).collect();
        let mut n_pending = commands.len();
        while n_pending > 0 {
            let mut reply = self.channel.read_json()?;
            if reply.get("event").is_some() {
                continue;
            }
            let slot = match reply.get("id") {
                Some(Value::String(id)) => id
                    .strip_prefix("ballast-")
                    .and_then(|number| number.parse::<u64>().ok())
                    .and_then(|number| number.checked_sub(first_id))
                    .and_then(|offset| usize::try_from(offset).ok())
                    .filter(|&offset| offset < commands.len()),
                // A command QEMU could not even parse is answered without an id.
                None if n_pending == 1 => results.iter().position(Option::is_none),
                _ => None,
            };
            let Some(slot) = slot else {
                tracing::debug!(path = %self.channel.path().display(), %reply, "Skipping a QMP reply of no pending command.");
                continue;
            };
            if results[slot].is_some() {
                continue;
            }
            let command = commands[slot].0;
            let result = if let Some(value) = reply.get_mut("return") {
                Ok(value.take())
            } else if let Some(error) = reply.get("error") {
                Err(command_error(self.channel.path(), command, error))
            } else {
                Err(self
                    .channel
                    .protocol(format!("reply to {command} has neither return nor error")))
            };
            results[slot] = Some(result);
            n_pending -= 1;
        }
        Ok(results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(self.channel.protocol("no reply"))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::wire::fake_server::{FakeServer, Peer};
    use super::*;

    const GREETING: &[u8] =
        b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 9}}, \"capabilities\": []}}\n";
    const LIMIT: usize = 1024 * 1024;

    fn negotiate(peer: &mut Peer) {
        peer.send(GREETING);
        let request = peer.request();
        assert_eq!(request["execute"], "qmp_capabilities");
        let reply = json!({"return": {}, "id": request["id"]});
        peer.send(format!("{reply}\n").as_bytes());
    }

    #[test]
    fn replies_out_of_order_with_events_interleaved_against_fake_qmp_server() {
        let server = FakeServer::start(|mut peer| {
            negotiate(&mut peer);
            let first = peer.request();
            let second = peer.request();
            assert_eq!(first["execute"], "query-balloon");
            assert_eq!(second["arguments"]["property"], "guest-stats");
            peer.send(b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"BALLOON_CHANGE\", \"data\": {\"actual\": 1}}\n");
            let stats = json!({"return": {"stats": {"stat-available-memory": 4096}, "last-update": 9}, "id": second["id"]});
            peer.send(format!("{stats}\n").as_bytes());
            peer.send(b"{\"event\": \"RTC_CHANGE\", \"data\": {\"offset\": 0}}\n");
            // A reply to nobody's command (another client's leftover id) is skipped.
            peer.send(b"{\"return\": {}, \"id\": \"pvestatd-7\"}\n");
            let balloon = json!({"return": {"actual": 536_870_912, "max_mem": 536_870_912, "total_mem": 1}, "id": first["id"]});
            peer.send(format!("{balloon}\n").as_bytes());
        });
        let mut client =
            QmpClient::connect(&server.path, Duration::from_secs(2), LIMIT).expect("connect");
        let replies = client
            .execute_all(&[
                ("query-balloon", None),
                (
                    "qom-get",
                    Some(
                        json!({"path": "/machine/peripheral/balloon0", "property": "guest-stats"}),
                    ),
                ),
            ])
            .expect("replies");
        assert_eq!(replies.len(), 2);
        let balloon = replies[0].as_ref().expect("query-balloon");
        assert_eq!(balloon["actual"], 536_870_912);
        // Unknown (Proxmox) fields are kept.
        assert_eq!(balloon["total_mem"], 1);
        let stats = replies[1].as_ref().expect("guest-stats");
        assert_eq!(stats["stats"]["stat-available-memory"], 4096);
        drop(client);
        server.finish();
    }

    #[test]
    fn error_reply_and_reply_without_id_against_fake_qmp_server() {
        let server = FakeServer::start(|mut peer| {
            negotiate(&mut peer);
            let request = peer.request();
            let error = json!({"error": {"class": "DeviceNotActive", "desc": "No balloon device has been activated"}, "id": request["id"]});
            peer.send(format!("{error}\n").as_bytes());
            let _ = peer.request();
            // QEMU answers a command it could not parse without an id.
            peer.send(
                b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\n",
            );
        });
        let mut client =
            QmpClient::connect(&server.path, Duration::from_secs(2), LIMIT).expect("connect");
        let error = client
            .execute("query-balloon", None)
            .expect_err("no balloon");
        let text = error.to_string();
        assert!(
            text.contains("query-balloon") && text.contains("DeviceNotActive"),
            "{text}"
        );
        assert!(matches!(
            client.execute("bogus", None),
            Err(WireError::Command { .. })
        ));
        drop(client);
        server.finish();
    }

    #[test]
    fn silent_server_times_out_against_fake_qmp_server() {
        let (sender, receiver) = std::sync::mpsc::channel::<()>();
        let server = FakeServer::start(move |_peer| {
            // Accepts, never greets: like a QEMU whose monitor is stuck.
            let _ = receiver.recv();
        });
        let started = Instant::now();
        let error = QmpClient::connect(&server.path, Duration::from_millis(300), LIMIT)
            .expect_err("no greeting");
        let elapsed = started.elapsed();
        assert!(matches!(error, WireError::Timeout { .. }), "{error:?}");
        assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
        drop(sender);
        server.finish();
    }

    #[test]
    fn greeting_then_silence_times_out_within_the_one_deadline_against_fake_qmp_server() {
        let server = FakeServer::start(|mut peer| {
            negotiate(&mut peer);
            // Events forever, never a reply: the deadline still ends the call.
            for _ in 0..200 {
                peer.send(b"{\"event\": \"RTC_CHANGE\", \"data\": {}}\n");
                // The fake server's pace (the scenario), not a wait for anything.
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let started = Instant::now();
        let mut client =
            QmpClient::connect(&server.path, Duration::from_millis(400), LIMIT).expect("connect");
        let error = client.execute("query-balloon", None).expect_err("no reply");
        assert!(matches!(error, WireError::Timeout { .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_millis(900));
        drop(client);
        server.finish();
    }

    #[test]
    fn huge_reply_is_bounded_against_fake_qmp_server() {
        let server = FakeServer::start(|mut peer| {
            negotiate(&mut peer);
            let _ = peer.request();
            // 8 MiB on one line: the client stops reading after its limit.
            let chunk = vec![b'x'; 1024 * 1024];
            peer.send(b"{\"return\": \"");
            for _ in 0..8 {
                peer.send(&chunk);
            }
            peer.send(b"\"}\n");
        });
        let mut client =
            QmpClient::connect(&server.path, Duration::from_secs(5), LIMIT).expect("connect");
        let error = client.execute("query-balloon", None).expect_err("too long");
        assert!(
            matches!(error, WireError::LineTooLong { limit: LIMIT, .. }),
            "{error:?}"
        );
        // The client closes; the server's remaining writes fail instead of blocking it.
        drop(client);
        server.finish();
    }

    #[test]
    fn wrong_greeting_and_closed_socket_against_fake_qmp_server() {
        let server = FakeServer::start(|mut peer| peer.send(b"{\"hello\": 1}\n"));
        let error =
            QmpClient::connect(&server.path, Duration::from_secs(2), LIMIT).expect_err("not QMP");
        assert!(matches!(error, WireError::Protocol { .. }), "{error:?}");
        server.finish();
        let server = FakeServer::start(drop);
        let error =
            QmpClient::connect(&server.path, Duration::from_secs(2), LIMIT).expect_err("closed");
        assert!(matches!(error, WireError::Closed { .. }), "{error:?}");
        server.finish();
        let missing = std::env::temp_dir().join("ballast-no-such-dir/100.qmp");
        let error =
            QmpClient::connect(&missing, Duration::from_secs(2), LIMIT).expect_err("no socket");
        assert!(matches!(error, WireError::Connect { .. }), "{error:?}");
    }
}
