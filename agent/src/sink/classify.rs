//! Which answers may set an event aside and which must hold the spool. Pure: a status
//! code and a body in, a [`SendOutcome`] out.
//!
//! The rule (no silent loss): only the collector's own verdict on one event, a 422
//! whose [`ErrorBody`] names `events[N]...` as `field`, lets the sender dead-letter
//! that one event. Everything else (404 or 405 from a wrong URL prefix, 400 without a
//! field, an HTML page from a proxy, a 2xx that is not an `IngestResponse`, 5xx,
//! 401/403, 408/429, TLS and connection errors) holds the spool and is retried, and
//! is counted under one [`Refusal`] reason.

use std::time::Duration;

use ballast_model::{ErrorBody, IngestResponse};

use super::outcome::{Held, Refusal, SendOutcome, SendStage};

/// Classifies an HTTP answer to `POST /api/v1/ingest` of a batch of `n_events`.
pub fn classify_answer(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    body_bytes: usize,
    n_events: usize,
) -> SendOutcome {
    let hold = |reason: Refusal, error: String| {
        SendOutcome::Hold(Held {
            reason,
            stage: SendStage::Status,
            status: Some(status),
            error,
            retry_after,
            shrink: false,
        })
    };
    if (200..300).contains(&status) {
        return match serde_json::from_slice::<IngestResponse>(body) {
            Ok(response) => SendOutcome::Accepted {
                response,
                body_bytes,
            },
            Err(_) => hold(
                Refusal::NotCollector,
                format!(
                    "a {status} answer that is not the collector's IngestResponse: {}",
                    excerpt(body)
                ),
            ),
        };
    }
    let error_body = serde_json::from_slice::<ErrorBody>(body).ok();
    let error = match &error_body {
        Some(ErrorBody {
            error,
            field: Some(field),
        }) => format!("{field}: {error}"),
        Some(ErrorBody { error, field: None }) => error.clone(),
        None => excerpt(body),
    };
    let field = error_body.and_then(|body| body.field);
    match status {
        422 => match field.as_deref() {
            Some(field) => match blamed_event(field) {
                Some(index) if index < n_events => SendOutcome::InvalidEvent { index, error },
                // `events` itself: more events than the collector takes at once.
                _ if field == "events" => SendOutcome::Hold(Held {
                    shrink: true,
                    ..held(Refusal::BadRequest, status, error, retry_after)
                }),
                _ => hold(Refusal::BadRequest, error),
            },
            None => hold(Refusal::BadRequest, error),
        },
        413 => SendOutcome::Hold(Held {
            shrink: true,
            ..held(Refusal::PayloadTooLarge, status, error, retry_after)
        }),
        401 | 403 => hold(Refusal::Auth, format!("token refused: {error}")),
        408 | 429 => hold(Refusal::RateLimited, error),
        404 => hold(Refusal::NotFound, error),
        405 => hold(Refusal::MethodNotAllowed, error),
        400 => hold(Refusal::BadRequest, error),
        500..=599 => hold(Refusal::ServerError, error),
        _ => hold(Refusal::OtherStatus, error),
    }
}

fn held(reason: Refusal, status: u16, error: String, retry_after: Option<Duration>) -> Held {
    Held {
        reason,
        stage: SendStage::Status,
        status: Some(status),
        error,
        retry_after,
        shrink: false,
    }
}

/// What rustls's errors say (reqwest reports them as connect errors with the text
/// only): a certificate the agent does not trust, a server that speaks no TLS.
const TLS_WORDS: [&str; 8] = [
    "certificate",
    "tls",
    "ssl",
    "handshake",
    "corrupt message",
    "fatal alert",
    "peer is incompatible",
    "peer misbehaved",
];

/// Classifies a request that got no HTTP answer.
pub fn classify_request_error(error: &reqwest::Error) -> Held {
    let text = ballast_daemon::error_chain(error);
    let lower = text.to_ascii_lowercase();
    let reason = if error.is_timeout() {
        Refusal::Timeout
    } else if TLS_WORDS.iter().any(|word| lower.contains(word)) {
        Refusal::Tls
    } else if error.is_connect() {
        Refusal::Connect
    } else {
        Refusal::Request
    };
    Held {
        reason,
        stage: SendStage::Request,
        status: None,
        error: text,
        retry_after: None,
        shrink: false,
    }
}

/// The first 200 bytes of a body, on one line (an HTML page stays readable in a log).
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        "(empty body)".to_string()
    } else {
        line
    }
}

/// `events[12].vm.uuid` -> 12.
fn blamed_event(field: &str) -> Option<usize> {
    let rest = field.strip_prefix("events[")?;
    let (index, _) = rest.split_once(']')?;
    index.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, body: &str, n_events: usize) -> SendOutcome {
        classify_answer(status, body.as_bytes(), None, 10, n_events)
    }

    fn held_reason(outcome: &SendOutcome) -> Option<(Refusal, bool)> {
        match outcome {
            SendOutcome::Hold(held) => Some((held.reason, held.shrink)),
            _ => None,
        }
    }

    #[test]
    fn only_a_422_naming_an_event_of_the_batch_may_set_it_aside() {
        let body = r#"{"error":"must be a UUID","field":"events[2].vm.uuid"}"#;
        match outcome(422, body, 5) {
            SendOutcome::InvalidEvent { index, error } => {
                assert_eq!(index, 2);
                assert_eq!(error, "events[2].vm.uuid: must be a UUID");
            }
            other => panic!("{other:?}"),
        }
        // The same body with another status is no verdict on the event.
        for status in [400, 404, 409, 500] {
            assert!(
                held_reason(&outcome(status, body, 5)).is_some(),
                "{status} must hold"
            );
        }
        // An index outside the batch is not this batch's event.
        assert!(held_reason(&outcome(422, body, 2)).is_some());
        // 422 naming the batch, not an event, holds.
        for field in ["host_id", "schema_version", "agent_version"] {
            let body = format!(r#"{{"error":"bad","field":"{field}"}}"#);
            assert_eq!(
                held_reason(&outcome(422, &body, 1)),
                Some((Refusal::BadRequest, false)),
                "{field}"
            );
        }
        // Too many events: smaller batches may pass.
        let body = r#"{"error":"more than 1000 events","field":"events"}"#;
        assert_eq!(
            held_reason(&outcome(422, body, 3)),
            Some((Refusal::BadRequest, true))
        );
        // A schema mismatch (no field): a newer agent than the collector; hold.
        let body = r#"{"error":"the batch does not fit the schema"}"#;
        assert_eq!(
            held_reason(&outcome(422, body, 1)),
            Some((Refusal::BadRequest, false))
        );
    }

    #[test]
    fn wrong_urls_proxies_and_outages_hold_the_spool() {
        let html = "<html><head><title>404 Not Found</title></head>\n<body>nginx</body></html>";
        let cases = [
            (404, html, Refusal::NotFound),
            (404, r#"{"error":"not found"}"#, Refusal::NotFound),
            (405, "", Refusal::MethodNotAllowed),
            (400, r#"{"error":"malformed JSON"}"#, Refusal::BadRequest),
            (400, html, Refusal::BadRequest),
            (
                401,
                r#"{"error":"missing or invalid bearer token"}"#,
                Refusal::Auth,
            ),
            (403, html, Refusal::Auth),
            (408, "", Refusal::RateLimited),
            (
                429,
                r#"{"error":"rate limit exceeded"}"#,
                Refusal::RateLimited,
            ),
            (415, "", Refusal::OtherStatus),
            (500, r#"{"error":"internal error"}"#, Refusal::ServerError),
            (502, html, Refusal::ServerError),
            (503, "", Refusal::ServerError),
            // A web server serving a page for every path.
            (200, html, Refusal::NotCollector),
            (200, "{}", Refusal::NotCollector),
        ];
        for (status, body, reason) in cases {
            let outcome = outcome(status, body, 3);
            assert_eq!(
                held_reason(&outcome),
                Some((reason, false)),
                "{status} {body}: {outcome:?}"
            );
        }
        let SendOutcome::Hold(held) = outcome(404, html, 1) else {
            panic!("404 holds");
        };
        assert_eq!(held.status, Some(404));
        assert!(held.error.starts_with("<html>"), "{}", held.error);
        assert!(!held.error.contains('\n'), "one line: {}", held.error);
        assert_eq!(
            held_reason(&outcome(413, html, 4)),
            Some((Refusal::PayloadTooLarge, true))
        );
    }

    #[test]
    fn the_collectors_answer_is_accepted() {
        match outcome(200, r#"{"accepted":2,"duplicates":1}"#, 3) {
            SendOutcome::Accepted {
                response,
                body_bytes,
            } => {
                assert_eq!((response.accepted, response.duplicates), (2, 1));
                assert_eq!(body_bytes, 10);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_is_kept_on_a_hold() {
        let SendOutcome::Hold(held) = classify_answer(429, b"", Some(Duration::from_secs(7)), 0, 1)
        else {
            panic!("429 holds");
        };
        assert_eq!(held.retry_after, Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn no_answer_is_a_hold_naming_the_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let error = reqwest::Client::new()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .expect_err("nothing listens");
        let held = classify_request_error(&error);
        assert_eq!(held.reason, Refusal::Connect, "{}", held.error);
        assert_eq!(held.stage, SendStage::Request);
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_is_a_tls_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let error = reqwest::Client::new()
            .get(format!("https://{addr}/"))
            .send()
            .await
            .expect_err("no TLS there");
        let held = classify_request_error(&error);
        assert_eq!(held.reason, Refusal::Tls, "{}", held.error);
    }

    #[test]
    fn blamed_events_are_read_from_the_field() {
        assert_eq!(blamed_event("events[12].vm.uuid"), Some(12));
        assert_eq!(blamed_event("events[0].key"), Some(0));
        assert_eq!(blamed_event("events"), None);
        assert_eq!(blamed_event("host_id"), None);
        assert_eq!(blamed_event("events[x]"), None);
    }
}
