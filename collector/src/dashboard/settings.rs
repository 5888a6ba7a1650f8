//! The `dashboard:` settings: the section as written ([`DashboardConfig`]) and as
//! checked at start-up ([`DashboardSettings`], [`DashboardAuth`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderName;
use serde::{Deserialize, Serialize};

/// The `dashboard:` section of the collector's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Serve the dashboard pages.
    pub enabled: bool,
    pub auth: DashboardAuthConfig,
    /// Largest kernel log `/explain` accepts, bytes.
    pub explain_max_bytes: u64,
    /// A login (`/login`) lasts this long; `/logout` and a new token end it sooner.
    pub session_hours: u32,
}

/// How people log in to the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DashboardAuthConfig {
    /// The default: no login on a loopback listener, else the query API's read
    /// token (`read.token_file`) as the dashboard token.
    Auto,
    /// No login: allowed only when `listen` is a loopback address.
    None,
    /// A shared token: basic auth (any user name, the token as password), a bearer
    /// header, or the cookie `/login` sets.
    Token { token_file: PathBuf },
    /// A reverse proxy authenticates and names the user in `header`; the header is
    /// believed only on connections from `trusted_proxies`.
    Proxy {
        #[serde(default = "default_user_header")]
        header: String,
        trusted_proxies: Vec<String>,
    },
}

fn default_user_header() -> String {
    "X-Remote-User".to_string()
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auth: DashboardAuthConfig::Auto,
            explain_max_bytes: 8 * 1024 * 1024,
            session_hours: 12,
        }
    }
}

/// The checked dashboard settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSettings {
    pub enabled: bool,
    pub auth: DashboardAuth,
    pub explain_max_bytes: usize,
    /// Set the login cookie's `Secure` flag (TLS listener).
    pub secure_cookie: bool,
    /// How long a login session lasts.
    pub session_lifetime: Duration,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            auth: DashboardAuth::None,
            explain_max_bytes: 8 * 1024 * 1024,
            secure_cookie: false,
            session_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// Checked authentication.
#[derive(Debug, Clone, PartialEq)]
pub enum DashboardAuth {
    None,
    Token(String),
    Proxy {
        header: HeaderName,
        trusted: Vec<IpAddr>,
    },
}

/// A dashboard setting that makes no sense; each names its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DashboardConfigError {
    #[error("dashboard.auth is none but listen ({0}) is not a loopback address: use type token or proxy")]
    AuthRequired(SocketAddr),
    #[error("dashboard.auth.token_file ({path:?}): {message}")]
    TokenFile { path: PathBuf, message: String },
    #[error("dashboard.auth.header ({0:?}) is not an HTTP header name")]
    Header(String),
    #[error("dashboard.auth.trusted_proxies: {0:?} is not an IP address")]
    Proxy(String),
    #[error("dashboard.auth.trusted_proxies is empty: no proxy would be believed")]
    NoProxies,
    #[error("dashboard.explain_max_bytes ({0}) must be 1 KiB to 64 MiB")]
    ExplainLimit(u64),
    #[error("dashboard.session_hours ({0}) must be 1 to 720")]
    SessionHours(u32),
}

impl DashboardConfig {
    /// Checks the section against the listener; reads the token file.
    /// `read_token` is the query API's token (used by `auth: {type: auto}`).
    pub fn validate(
        self,
        listen: SocketAddr,
        tls: bool,
        read_token: Option<&str>,
    ) -> Result<DashboardSettings, DashboardConfigError> {
        if !(1024..=64 * 1024 * 1024).contains(&self.explain_max_bytes) {
            return Err(DashboardConfigError::ExplainLimit(self.explain_max_bytes));
        }
        if !(1..=720).contains(&self.session_hours) {
            return Err(DashboardConfigError::SessionHours(self.session_hours));
        }
        let auth = match self.auth {
            DashboardAuthConfig::Auto => match read_token {
                _ if listen.ip().is_loopback() => DashboardAuth::None,
                Some(token) => DashboardAuth::Token(token.to_string()),
                None if self.enabled => return Err(DashboardConfigError::AuthRequired(listen)),
                None => DashboardAuth::None,
            },
            DashboardAuthConfig::None => {
                if self.enabled && !listen.ip().is_loopback() {
                    return Err(DashboardConfigError::AuthRequired(listen));
                }
                DashboardAuth::None
            }
            DashboardAuthConfig::Token { token_file } => {
                let text = std::fs::read_to_string(&token_file).map_err(|error| {
                    DashboardConfigError::TokenFile {
                        path: token_file.clone(),
                        message: error.to_string(),
                    }
                })?;
                let token = text.trim().to_string();
                if token.len() < 16 {
                    return Err(DashboardConfigError::TokenFile {
                        path: token_file,
                        message: "the token must be at least 16 characters".into(),
                    });
                }
                DashboardAuth::Token(token)
            }
            DashboardAuthConfig::Proxy {
                header,
                trusted_proxies,
            } => {
                let name = HeaderName::try_from(header.as_str())
                    .map_err(|_| DashboardConfigError::Header(header.clone()))?;
                let trusted = trusted_proxies
                    .iter()
                    .map(|text| {
                        text.trim()
                            .parse::<IpAddr>()
                            .map_err(|_| DashboardConfigError::Proxy(text.clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if trusted.is_empty() {
                    return Err(DashboardConfigError::NoProxies);
                }
                DashboardAuth::Proxy {
                    header: name,
                    trusted,
                }
            }
        };
        Ok(DashboardSettings {
            enabled: self.enabled,
            auth,
            explain_max_bytes: usize::try_from(self.explain_max_bytes).unwrap_or(usize::MAX),
            secure_cookie: tls,
            session_lifetime: Duration::from_secs(u64::from(self.session_hours) * 3600),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_auth_is_refused_off_loopback_and_proxies_must_be_addresses() {
        let public: SocketAddr = "0.0.0.0:8470".parse().expect("addr");
        let loopback: SocketAddr = "127.0.0.1:8470".parse().expect("addr");
        let none = DashboardConfig {
            auth: DashboardAuthConfig::None,
            ..DashboardConfig::default()
        };
        assert_eq!(
            none.clone()
                .validate(public, false, Some("0123456789abcdef")),
            Err(DashboardConfigError::AuthRequired(public))
        );
        assert_eq!(
            none.validate(loopback, false, None).map(|s| s.auth),
            Ok(DashboardAuth::None)
        );
        assert_eq!(
            DashboardConfig::default()
                .validate(public, false, Some("0123456789abcdef"))
                .map(|s| s.auth),
            Ok(DashboardAuth::Token("0123456789abcdef".into()))
        );
        assert_eq!(
            DashboardConfig::default()
                .validate(loopback, false, None)
                .map(|s| s.auth),
            Ok(DashboardAuth::None)
        );
        let proxy = DashboardConfig {
            auth: DashboardAuthConfig::Proxy {
                header: default_user_header(),
                trusted_proxies: vec!["10.0.0.1".into(), "nginx".into()],
            },
            ..DashboardConfig::default()
        };
        assert_eq!(
            proxy.validate(public, false, None),
            Err(DashboardConfigError::Proxy("nginx".into()))
        );
    }
}
