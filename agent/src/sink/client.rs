//! One HTTP exchange with the collector: `POST /api/v1/ingest` with a gzip JSON
//! [`Batch`], and the start-up `GET /api/v1/health`. Classifies every answer into
//! what the sender does next; owns no retry policy.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ballast_model::{Batch, ErrorBody, IngestResponse};
use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};
use reqwest::StatusCode;

use super::{SendStage, SinkConfig};

/// Building the HTTP client failed (TLS set-up).
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("Failed to build the collector HTTP client")]
    Http(#[source] reqwest::Error),
    #[error(transparent)]
    CaFile(#[from] crate::collector_tls::CaFileError),
}

/// What became of one send.
#[derive(Debug)]
pub enum SendOutcome {
    /// 2xx: stored (`None`: the body was not an `IngestResponse`; still stored).
    Accepted {
        response: Option<IngestResponse>,
        body_bytes: usize,
    },
    /// Try the same batch again later: 5xx, 408, 429, 401/403 (a token problem is
    /// not the batch's fault), connection errors and timeouts.
    Retry {
        stage: SendStage,
        status: Option<u16>,
        error: String,
        /// From `Retry-After` (seconds form).
        retry_after: Option<Duration>,
    },
    /// Any other 4xx: the collector will never take this batch as it is.
    /// `event_index`: the event the collector blamed (`ErrorBody.field` = `events[N]...`).
    Refused {
        status: u16,
        error: String,
        event_index: Option<usize>,
    },
}

/// The collector's answer to the start-up health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    /// 2xx.
    Healthy,
    /// 404: an older collector without the endpoint; reachable all the same.
    NoHealthEndpoint,
    /// 401/403.
    TokenRefused { status: u16 },
    /// Another status.
    Unexpected { status: u16 },
    /// No HTTP answer.
    Unreachable { error: String },
}

/// HTTP client bound to one collector.
#[derive(Debug)]
pub struct CollectorClient {
    http: reqwest::Client,
    ingest_url: String,
    health_url: String,
    token_file: PathBuf,
    token: Option<String>,
}

impl CollectorClient {
    pub fn new(config: &SinkConfig) -> Result<Self, ClientBuildError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(format!("ballast-agent/{}", config.agent_version));
        if let Some(ca) = &config.ca {
            builder = ca.apply(builder)?;
        }
        let http = builder.build().map_err(ClientBuildError::Http)?;
        let base = config.url.trim_end_matches('/');
        let mut client = Self {
            http,
            ingest_url: format!("{base}/api/v1/ingest"),
            health_url: format!("{base}/api/v1/health"),
            token_file: config.token_file.clone(),
            token: None,
        };
        client.reload_token();
        Ok(client)
    }

    /// (Re-)reads the bearer token file; a missing file means no `Authorization`.
    pub fn reload_token(&mut self) {
        match std::fs::read_to_string(&self.token_file) {
            Ok(text) if !text.trim().is_empty() => self.token = Some(text.trim().to_string()),
            Ok(_) => {
                tracing::warn!(path = %self.token_file.display(), "Collector token file is empty.");
                self.token = None;
            }
            Err(error) => {
                tracing::warn!(path = %self.token_file.display(), %error, "Cannot read the collector token file.");
                self.token = None;
            }
        }
    }

    /// `GET /api/v1/health`.
    pub async fn check_health(&self) -> Reachability {
        let request = self.http.get(&self.health_url).headers(self.auth_headers());
        match request.send().await {
            Ok(response) => match response.status() {
                status if status.is_success() => Reachability::Healthy,
                StatusCode::NOT_FOUND => Reachability::NoHealthEndpoint,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Reachability::TokenRefused {
                    status: response.status().as_u16(),
                },
                status => Reachability::Unexpected {
                    status: status.as_u16(),
                },
            },
            Err(error) => Reachability::Unreachable {
                error: crate::error_text::error_chain(&error),
            },
        }
    }

    /// Sends one batch.
    pub async fn send(&mut self, batch: &Batch) -> SendOutcome {
        let body = match gzip_json(batch) {
            Ok(body) => body,
            Err(error) => {
                return SendOutcome::Refused {
                    status: 0,
                    error: format!("cannot encode the batch: {error}"),
                    event_index: None,
                }
            }
        };
        let body_bytes = body.len();
        let mut headers = self.auth_headers();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let response = match self
            .http
            .post(&self.ingest_url)
            .headers(headers)
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => {
                return SendOutcome::Retry {
                    stage: SendStage::Request,
                    status: None,
                    error: crate::error_text::error_chain(&error),
                    retry_after: None,
                }
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_success() {
            let response = match response.bytes().await {
                Ok(bytes) => serde_json::from_slice::<IngestResponse>(&bytes).ok(),
                Err(_) => None,
            };
            return SendOutcome::Accepted {
                response,
                body_bytes,
            };
        }
        let (error, event_index) = match response.bytes().await {
            Ok(bytes) => describe_error_body(&bytes),
            Err(error) => (format!("(body unreadable: {error})"), None),
        };
        let code = status.as_u16();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.reload_token();
                SendOutcome::Retry {
                    stage: SendStage::Status,
                    status: Some(code),
                    error: format!("token refused: {error}"),
                    retry_after,
                }
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => SendOutcome::Retry {
                stage: SendStage::Status,
                status: Some(code),
                error,
                retry_after,
            },
            status if status.is_client_error() => SendOutcome::Refused {
                status: code,
                error,
                event_index,
            },
            _ => SendOutcome::Retry {
                stage: SendStage::Status,
                status: Some(code),
                error,
                retry_after,
            },
        }
    }

    fn auth_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            match HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    headers.insert(AUTHORIZATION, value);
                }
                Err(_) => {
                    tracing::warn!("Collector token holds characters not allowed in a header.")
                }
            }
        }
        headers
    }
}

/// The batch as gzip-compressed JSON.
pub fn gzip_json(batch: &Batch) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(batch)?;
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::default());
    encoder.write_all(&json)?;
    encoder.finish()
}

/// The collector's [`ErrorBody`] as one line (or the first 512 bytes of whatever came),
/// and the index of the event its `field` blames.
fn describe_error_body(bytes: &[u8]) -> (String, Option<usize>) {
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
        return match body.field {
            Some(field) => (format!("{field}: {}", body.error), blamed_event(&field)),
            None => (body.error, None),
        };
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]);
    (text.trim().to_string(), None)
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

    #[test]
    fn error_bodies_name_the_blamed_event() {
        let body = br#"{"error":"must be a UUID","field":"events[12].vm.uuid"}"#;
        assert_eq!(
            describe_error_body(body),
            ("events[12].vm.uuid: must be a UUID".to_string(), Some(12))
        );
        assert_eq!(
            describe_error_body(b"plain text\n"),
            ("plain text".to_string(), None)
        );
        assert_eq!(blamed_event("host_id"), None);
    }
}
