//! What one send came to ([`SendOutcome`]): accepted, one invalid event, or
//! [`Held`]: the spool is held, for a [`Refusal`] reason at a [`SendStage`]. The
//! vocabulary `classify`, `client`, `events` and the sender share.

use std::time::Duration;

use ballast_model::IngestResponse;

/// What became of one send.
#[derive(Debug)]
pub enum SendOutcome {
    /// 2xx with the collector's `IngestResponse`: stored.
    Accepted {
        response: IngestResponse,
        body_bytes: usize,
    },
    /// The collector named one event of the batch as invalid (422 with
    /// `field` = `events[N]...`): only that event may be set aside.
    InvalidEvent { index: usize, error: String },
    /// The batch cannot even be encoded (a local fault of one of its events).
    Unencodable { error: String },
    /// Every other answer, and no answer at all: the spool is held and the same
    /// events are sent again after a backoff. Nothing is dropped.
    Hold(Held),
}

/// A refusal that holds the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub reason: Refusal,
    pub stage: SendStage,
    pub status: Option<u16>,
    pub error: String,
    /// From `Retry-After` (seconds form).
    pub retry_after: Option<Duration>,
    /// The batch may be too large for the collector or a proxy in front of it (413,
    /// or 422 on `events`): smaller batches may pass.
    pub shrink: bool,
}

/// Why delivery is held: a fixed label set for `ballast_agent_delivery_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No TCP connection (refused, no route, DNS).
    Connect,
    /// TLS handshake or certificate failure.
    Tls,
    /// No complete answer in time.
    Timeout,
    /// Another transport failure (connection reset, redirect loop).
    Request,
    /// 401/403: the token is refused.
    Auth,
    /// 404: nothing at this path (a wrong `collector.url` prefix).
    NotFound,
    /// 405: a proxy or another server that does not take POST there.
    MethodNotAllowed,
    /// 400 (and 422 naming no event): the collector or a proxy refused the whole batch.
    BadRequest,
    /// 413: the batch is larger than the collector or a proxy allows.
    PayloadTooLarge,
    /// 408/429: slow down.
    RateLimited,
    /// 5xx.
    ServerError,
    /// A 2xx whose body is not the collector's `IngestResponse` (a proxy's page).
    NotCollector,
    /// Any other status (3xx left over, 415, ...).
    OtherStatus,
}

impl Refusal {
    pub const ALL: [Refusal; 13] = [
        Refusal::Connect,
        Refusal::Tls,
        Refusal::Timeout,
        Refusal::Request,
        Refusal::Auth,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::BadRequest,
        Refusal::PayloadTooLarge,
        Refusal::RateLimited,
        Refusal::ServerError,
        Refusal::NotCollector,
        Refusal::OtherStatus,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The metric label and the `status` word.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Connect => "connect",
            Refusal::Tls => "tls",
            Refusal::Timeout => "timeout",
            Refusal::Request => "request",
            Refusal::Auth => "auth",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::BadRequest => "bad_request",
            Refusal::PayloadTooLarge => "payload_too_large",
            Refusal::RateLimited => "rate_limited",
            Refusal::ServerError => "server_error",
            Refusal::NotCollector => "not_collector",
            Refusal::OtherStatus => "other_status",
        }
    }

    /// Position in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|reason| *reason == self)
            .unwrap_or(0)
    }

    /// What an operator should look at.
    pub fn hint(self) -> &'static str {
        match self {
            Refusal::Connect | Refusal::Timeout | Refusal::Request => {
                "is the collector up and collector.url right?"
            }
            Refusal::Tls => "check the collector's certificate and collector.url",
            Refusal::Auth => "check collector.token_file (ballast-collector token create HOST)",
            Refusal::NotFound | Refusal::MethodNotAllowed | Refusal::NotCollector => {
                "collector.url does not point at a ballast collector (wrong path prefix or port?)"
            }
            Refusal::BadRequest | Refusal::OtherStatus => {
                "a proxy in front of the collector, or a collector older than this agent?"
            }
            Refusal::PayloadTooLarge => "raise the body size limit of the proxy or collector",
            Refusal::RateLimited => "the collector asks to slow down",
            Refusal::ServerError => "see the collector's log",
        }
    }
}

/// Which step of a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStage {
    /// Building or compressing the body.
    Encode,
    /// Connecting, sending, or waiting for the answer (includes timeouts).
    Request,
    /// The collector answered with an error status.
    Status,
    /// A 2xx answer whose body is not an `IngestResponse`.
    Decode,
    /// Reading from or acknowledging in the spool.
    Spool,
}

impl SendStage {
    pub fn name(self) -> &'static str {
        match self {
            SendStage::Encode => "encode",
            SendStage::Request => "request",
            SendStage::Status => "status",
            SendStage::Decode => "decode",
            SendStage::Spool => "spool",
        }
    }
}
