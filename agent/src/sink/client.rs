//! One HTTP exchange with the collector: `POST /api/v1/ingest` with a gzip JSON
//! [`Batch`], and the start-up `GET /api/v1/health`. Every answer is classified
//! ([`super::classify`]) into what the sender does next; owns no retry policy.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ballast_model::Batch;
use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};
use reqwest::StatusCode;

use super::classify::{classify_answer, classify_request_error};
use super::config::SinkConfig;
use super::outcome::SendOutcome;

/// Building the HTTP client failed (TLS set-up).
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("Failed to build the collector HTTP client")]
    Http(#[source] reqwest::Error),
    #[error(transparent)]
    CaFile(#[from] crate::collector_tls::CaFileError),
}

/// The collector's answer to the start-up health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    /// 2xx.
    Healthy,
    /// 404: nothing answers `/api/v1/health` under `collector.url`: a wrong URL
    /// (path prefix, port of another server). A configuration error.
    WrongUrl,
    /// 401/403.
    TokenRefused { status: u16 },
    /// Another status.
    Unexpected { status: u16 },
    /// No HTTP answer.
    Unreachable { error: String },
}

impl Reachability {
    /// The problem as one sentence naming `url`, or `None` when healthy.
    pub fn problem(&self, url: &str) -> Option<String> {
        match self {
            Reachability::Healthy => None,
            Reachability::WrongUrl => Some(format!(
                "collector.url ({url}) is wrong: GET {}/api/v1/health answered 404 Not Found \
                 (a wrong path prefix or port?); nothing is delivered until it is fixed",
                url.trim_end_matches('/')
            )),
            Reachability::TokenRefused { status } => Some(format!(
                "the collector at {url} refused this host's token (HTTP {status}); check \
                 collector.token_file"
            )),
            Reachability::Unexpected { status } => Some(format!(
                "the collector health check at {url} answered HTTP {status}"
            )),
            Reachability::Unreachable { error } => {
                Some(format!("the collector at {url} is unreachable: {error}"))
            }
        }
    }
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
                StatusCode::NOT_FOUND => Reachability::WrongUrl,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Reachability::TokenRefused {
                    status: response.status().as_u16(),
                },
                status => Reachability::Unexpected {
                    status: status.as_u16(),
                },
            },
            Err(error) => Reachability::Unreachable {
                error: ballast_daemon::error_chain(&error),
            },
        }
    }

    /// Sends one batch and classifies the answer (`sink::classify`).
    pub async fn send(&mut self, batch: &Batch) -> SendOutcome {
        let body = match gzip_json(batch) {
            Ok(body) => body,
            Err(error) => {
                return SendOutcome::Unencodable {
                    error: format!("cannot encode the batch: {error}"),
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
            Err(error) => return SendOutcome::Hold(classify_request_error(&error)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => {
                // The status came but not the body: for a 2xx the batch may be stored;
                // sending it again is harmless (the collector dedupes by key).
                let mut held = classify_request_error(&error);
                held.status = Some(status.as_u16());
                return SendOutcome::Hold(held);
            }
        };
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            self.reload_token();
        }
        classify_answer(
            status.as_u16(),
            &bytes,
            retry_after,
            body_bytes,
            batch.events.len(),
        )
    }

    /// The URL batches are posted to.
    pub fn ingest_url(&self) -> &str {
        &self.ingest_url
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
