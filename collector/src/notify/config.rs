//! The `notify:` section of the collector's configuration: webhooks told about new
//! OOMs. [`NotifyConfig`] is the YAML as written; [`NotifyConfig::validate`] checks it
//! into [`NotifySettings`] (reading secret files), with errors naming the field, e.g.
//! `notify.webhooks[1].url`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use ballast_model::{CorrelationVerdict, OomKind};

use crate::notify::filter::{Filter, KINDS, VERDICTS};

/// `notify:` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Base URL people open the collector at, for the links in messages
    /// (e.g. `https://ballast.example.org`); '' = links are paths (`/ooms/42`).
    pub public_url: String,
    /// How often each webhook's sender looks for new or due notifications.
    pub poll_interval_ms: u64,
    /// Finished notifications are deleted after this many days, and any queued that
    /// long ago (say, for a webhook since removed).
    pub keep_days: u32,
    /// Where to send; empty = no notifications.
    pub webhooks: Vec<WebhookConfig>,
}

/// One webhook as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Unique name (letters, digits, `-`, `_`): logs and the outbox refer to it.
    pub name: String,
    /// `http://` or `https://` URL the message is POSTed to.
    pub url: String,
    /// `json` (ballast's own body), `slack` or `mattermost` (`{"text": ...}`).
    pub format: WebhookFormat,
    /// Only OOMs of these kinds (guest, vm_cgroup, host); empty = all.
    pub kinds: Vec<String>,
    /// Only OOMs with these correlation verdicts (balloon, balloon_contributed,
    /// not_balloon, unknown); empty = all.
    pub verdicts: Vec<String>,
    /// File holding a secret sent in `secret_header`; '' = none.
    pub secret_file: PathBuf,
    /// Header carrying the secret; `Authorization` sends `Bearer <secret>`.
    pub secret_header: String,
    /// One request (connect + answer) may take this long.
    pub timeout_secs: u64,
    /// At most this many messages ...
    pub rate_limit_messages: u32,
    /// ... per this many seconds; the rest are summed up in one
    /// "N more OOMs suppressed" message when the window allows.
    pub rate_limit_window_secs: u64,
    /// A notification is given up (logged, counted) after this many failed attempts.
    pub max_attempts: u32,
    /// The first retry waits about this long, each next one twice as long ...
    pub backoff_initial_ms: u64,
    /// ... up to this (jittered by up to -50 %).
    pub backoff_max_secs: u64,
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// ballast's JSON document (fields in docs/collector.md).
    #[default]
    Json,
    /// Slack incoming webhook: `{"text": ...}` in mrkdwn.
    Slack,
    /// Mattermost incoming webhook: `{"text": ...}` in Markdown.
    Mattermost,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            public_url: String::new(),
            poll_interval_ms: 1000,
            keep_days: 7,
            webhooks: Vec::new(),
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            format: WebhookFormat::Json,
            kinds: Vec::new(),
            verdicts: Vec::new(),
            secret_file: PathBuf::new(),
            secret_header: "Authorization".into(),
            timeout_secs: 10,
            rate_limit_messages: 10,
            rate_limit_window_secs: 60,
            max_attempts: 20,
            backoff_initial_ms: 1000,
            backoff_max_secs: 300,
        }
    }
}

/// The checked `notify:` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotifySettings {
    /// Without a trailing slash; empty = links are paths.
    pub public_url: String,
    pub poll_interval: Duration,
    pub keep: Duration,
    pub webhooks: Vec<WebhookSettings>,
}

/// One checked webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    pub name: String,
    pub url: String,
    pub format: WebhookFormat,
    pub filter: Filter,
    pub secret: Option<Secret>,
    pub timeout: Duration,
    pub rate_limit_messages: u32,
    pub rate_limit_window: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// A header and its secret value; `Debug` does not show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub header: String,
    pub value: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// A `notify:` value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyConfigError {
    #[error("notify.public_url ({0:?}) must be an http:// or https:// URL")]
    PublicUrl(String),
    #[error("notify.poll_interval_ms ({0}) must be 50 to 60000")]
    PollInterval(u64),
    #[error("notify.keep_days must be at least 1")]
    KeepDays,
    #[error(
        "notify.webhooks[{index}].name ({name:?}) must be 1 to 64 letters, digits, '-' or '_'"
    )]
    Name { index: usize, name: String },
    #[error("notify.webhooks[{index}].name ({name:?}) is used twice")]
    DuplicateName { index: usize, name: String },
    #[error("notify.webhooks[{index}].url ({url:?}) must be an http:// or https:// URL")]
    Url { index: usize, url: String },
    #[error("notify.webhooks[{index}].{field}: {value:?} is not one of {allowed}")]
    FilterValue {
        index: usize,
        field: &'static str,
        value: String,
        allowed: String,
    },
    #[error("notify.webhooks[{index}].secret_file ({path:?}): {message}")]
    SecretFile {
        index: usize,
        path: PathBuf,
        message: String,
    },
    #[error("notify.webhooks[{index}].secret_header ({header:?}) is not a valid header name")]
    SecretHeader { index: usize, header: String },
    #[error("notify.webhooks[{index}].{field} ({value}) must be {range}")]
    Range {
        index: usize,
        field: &'static str,
        value: u64,
        range: &'static str,
    },
}

fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .map(|parsed| matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some())
        .unwrap_or(false)
}

impl NotifyConfig {
    /// Checks the section (reads secret files).
    pub fn validate(&self) -> Result<NotifySettings, NotifyConfigError> {
        let public_url = if self.public_url.trim().is_empty() {
            String::new()
        } else {
            let url = self.public_url.trim();
            if !is_http_url(url) {
                return Err(NotifyConfigError::PublicUrl(self.public_url.clone()));
            }
            url.trim_end_matches('/').to_string()
        };
        if !(50..=60_000).contains(&self.poll_interval_ms) {
            return Err(NotifyConfigError::PollInterval(self.poll_interval_ms));
        }
        if self.keep_days == 0 {
            return Err(NotifyConfigError::KeepDays);
        }
        let mut webhooks: Vec<WebhookSettings> = Vec::with_capacity(self.webhooks.len());
        for (index, raw) in self.webhooks.iter().enumerate() {
            let hook = raw.validate(index)?;
            if webhooks.iter().any(|other| other.name == hook.name) {
                return Err(NotifyConfigError::DuplicateName {
                    index,
                    name: hook.name,
                });
            }
            webhooks.push(hook);
        }
        Ok(NotifySettings {
            public_url,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            keep: Duration::from_secs(u64::from(self.keep_days) * 86_400),
            webhooks,
        })
    }
}

impl WebhookConfig {
    fn validate(&self, index: usize) -> Result<WebhookSettings, NotifyConfigError> {
        let name = self.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(NotifyConfigError::Name {
                index,
                name: self.name.clone(),
            });
        }
        let url = self.url.trim();
        if !is_http_url(url) {
            return Err(NotifyConfigError::Url {
                index,
                url: self.url.clone(),
            });
        }
        for (field, values, allowed) in [
            ("kinds", &self.kinds, KINDS),
            ("verdicts", &self.verdicts, VERDICTS),
        ] {
            if let Some(value) = values.iter().find(|v| !allowed.contains(&v.as_str())) {
                return Err(NotifyConfigError::FilterValue {
                    index,
                    field,
                    value: value.clone(),
                    allowed: allowed.join(", "),
                });
            }
        }
        let secret = if self.secret_file.as_os_str().is_empty() {
            None
        } else {
            Some(self.read_secret(index)?)
        };
        let range = |field: &'static str, value: u64, ok: bool, range: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(NotifyConfigError::Range {
                    index,
                    field,
                    value,
                    range,
                })
            }
        };
        range(
            "timeout_secs",
            self.timeout_secs,
            (1..=300).contains(&self.timeout_secs),
            "1 to 300",
        )?;
        range(
            "rate_limit_messages",
            u64::from(self.rate_limit_messages),
            (1..=10_000).contains(&self.rate_limit_messages),
            "1 to 10000",
        )?;
        range(
            "rate_limit_window_secs",
            self.rate_limit_window_secs,
            (1..=86_400).contains(&self.rate_limit_window_secs),
            "1 to 86400",
        )?;
        range(
            "max_attempts",
            u64::from(self.max_attempts),
            (1..=1000).contains(&self.max_attempts),
            "1 to 1000",
        )?;
        range(
            "backoff_initial_ms",
            self.backoff_initial_ms,
            (10..=3_600_000).contains(&self.backoff_initial_ms),
            "10 to 3600000",
        )?;
        range(
            "backoff_max_secs",
            self.backoff_max_secs,
            (1..=86_400).contains(&self.backoff_max_secs)
                && self.backoff_max_secs.saturating_mul(1000) >= self.backoff_initial_ms,
            "1 to 86400 and not below backoff_initial_ms",
        )?;
        Ok(WebhookSettings {
            name: name.to_string(),
            url: url.to_string(),
            format: self.format,
            // Every name was checked against the vocabularies above.
            filter: Filter {
                kinds: self.kinds.iter().map(|k| OomKind::parse(k)).collect(),
                verdicts: self
                    .verdicts
                    .iter()
                    .map(|v| CorrelationVerdict::parse(v))
                    .collect(),
            },
            secret,
            timeout: Duration::from_secs(self.timeout_secs),
            rate_limit_messages: self.rate_limit_messages,
            rate_limit_window: Duration::from_secs(self.rate_limit_window_secs),
            max_attempts: self.max_attempts,
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_secs(self.backoff_max_secs),
        })
    }

    fn read_secret(&self, index: usize) -> Result<Secret, NotifyConfigError> {
        let header = self.secret_header.trim();
        if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(NotifyConfigError::SecretHeader {
                index,
                header: self.secret_header.clone(),
            });
        }
        let path = &self.secret_file;
        let error = |message: String| NotifyConfigError::SecretFile {
            index,
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let value = text.trim();
        if value.is_empty() {
            return Err(error("the file is empty".into()));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(error(
                "the secret holds characters a header cannot carry".into(),
            ));
        }
        let value = if header.eq_ignore_ascii_case("authorization") {
            format!("Bearer {value}")
        } else {
            value.to_string()
        };
        Ok(Secret {
            header: header.to_string(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(yaml: &str) -> Result<NotifySettings, NotifyConfigError> {
        let config: NotifyConfig = serde_yaml_ng::from_str(yaml).expect("parses");
        config.validate()
    }

    #[test]
    fn defaults_have_no_webhooks_and_no_public_url() {
        let settings = NotifyConfig::default().validate().expect("valid");
        assert!(settings.webhooks.is_empty());
        assert_eq!(settings.public_url, "");
    }

    #[test]
    fn a_webhook_reads_its_filters_and_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").expect("write");
        let settings = hook(&format!(
            "public_url: https://ballast.example.org/\nwebhooks:\n- name: ops\n  url: https://hooks.example.org/x\n  format: mattermost\n  verdicts: [balloon]\n  secret_file: {}\n",
            file.display()
        ))
        .expect("valid");
        assert_eq!(settings.public_url, "https://ballast.example.org");
        let ops = &settings.webhooks[0];
        assert_eq!(ops.format, WebhookFormat::Mattermost);
        assert_eq!(ops.filter.verdicts, vec![CorrelationVerdict::Balloon]);
        let secret = ops.secret.as_ref().expect("secret");
        assert_eq!(secret.value, "Bearer s3cret");
        assert!(!format!("{ops:?}").contains("s3cret"));
    }

    #[test]
    fn errors_name_the_webhook_and_field() {
        let message = hook("webhooks:\n- name: a\n  url: ftp://x\n")
            .expect_err("ftp")
            .to_string();
        assert!(message.contains("notify.webhooks[0].url"), "{message}");
        let message = hook("webhooks:\n- name: a\n  url: http://x\n- name: b\n  url: http://y\n  verdicts: [balloons]\n")
            .expect_err("typo")
            .to_string();
        assert!(
            message.contains("notify.webhooks[1].verdicts") && message.contains("balloons"),
            "{message}"
        );
        let message = hook("webhooks:\n- name: a\n  url: http://x\n- name: a\n  url: http://y\n")
            .expect_err("twice")
            .to_string();
        assert!(message.contains("used twice"), "{message}");
        let message = hook("webhooks:\n- name: a\n  url: http://x\n  rate_limit_messages: 0\n")
            .expect_err("zero")
            .to_string();
        assert!(
            message.contains("notify.webhooks[0].rate_limit_messages"),
            "{message}"
        );
        let message =
            hook("webhooks:\n- name: a\n  url: http://x\n  secret_file: /nonexistent/s\n")
                .expect_err("missing")
                .to_string();
        assert!(message.contains("/nonexistent/s"), "{message}");
    }
}
