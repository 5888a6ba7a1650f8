//! The dashboard: server-rendered HTML pages over the same `Store` queries as the
//! JSON API. Rendering only: reads go through `storage::queries` and this module's
//! [`data`] (aggregate reads written once for both engines); reports come from
//! `crate::reports`.
//!
//! Pages (all `GET` unless noted):
//! - `/`: fleet overview (OOMs over time by verdict and kind, top VMs and hosts,
//!   hosts under memory pressure, newest OOMs).
//! - `/ooms`: OOM list with filters (host, VM, verdict, kind, time range) and
//!   cursor paging (the API's indexed query).
//! - `/ooms/{id}`: one OOM: verdict and explanation first, the balloon trajectory
//!   before it, host memory, the parsed report, the raw report.
//! - `/vms/{host}/{uuid}` (`/vms/{uuid}` redirects while one host reported the uuid),
//!   `/hosts/{host}`: memory charts with OOM markers, audit findings.
//! - `/explain` (`GET`, `POST` multipart): paste or upload a kernel log and get
//!   `ballast_oom::explain`'s analysis; nothing is stored.
//! - `/reports/balloon-policy`: the balloon-policy report.
//! - `/login` (`GET`, `POST`), `/logout` (`POST`), `/assets/*` (embedded CSS).
//!
//! Why maud: templates are Rust checked at compile time, every interpolation is
//! HTML-escaped unless explicitly marked raw (we never do), and there are no
//! template files to ship or find at run time. Charts are server-side SVG (no
//! JavaScript at all), so the Content-Security-Policy can forbid scripts outright.
//! Every response carries a strict CSP, `nosniff`, `no-referrer` and
//! `frame-ancestors 'none'`.
//!
//! Authentication ([`auth`]; `dashboard.auth.type`): `auto` (default: none on a
//! loopback listener, else the query API's read token), `none` (loopback
//! listeners only), `token` (HTTP basic
//! auth with the token as password, a bearer header, or a cookie set by `/login`),
//! or `proxy`: a trusted reverse proxy's user header, accepted only from configured
//! addresses.

pub mod auth;
pub mod data;
mod error;
mod explain;
mod layout;
mod oom_page;
mod overview;
mod pages;
pub mod report_page;
pub mod sessions;
pub mod svg;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::api::AppState;

pub use error::DashboardError;

/// The embedded stylesheet.
pub(crate) const STYLE_CSS: &str = include_str!("../../assets/style.css");

/// The strict policy: no scripts at all, styles and images only from here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

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

/// The dashboard's routes, to merge into the API router (empty when disabled).
pub fn routes(state: AppState) -> Router<AppState> {
    let settings = &state.config.dashboard;
    if !settings.enabled {
        return Router::new();
    }
    let explain_limit = settings.explain_max_bytes.saturating_add(64 * 1024);
    let protected = Router::new()
        .route("/", get(overview::overview))
        .route("/ooms", get(oom_page::list))
        .route("/ooms/{id}", get(oom_page::detail))
        .route("/vms/{host}/{uuid}", get(pages::vm))
        .route("/vms/{uuid}", get(pages::vm_by_uuid))
        .route("/hosts/{host}", get(pages::host))
        .route(
            "/explain",
            get(explain::form_page)
                .post(explain::submit)
                .layer(DefaultBodyLimit::max(explain_limit)),
        )
        .route("/reports/balloon-policy", get(report_page::page))
        .route("/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_user,
        ));
    Router::new()
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/assets/style.css", get(style_css))
        .merge(protected)
        .layer(middleware::from_fn(security_headers))
}

async fn style_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE_CSS,
    )
        .into_response()
}

/// Adds the security headers to every dashboard response.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
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
