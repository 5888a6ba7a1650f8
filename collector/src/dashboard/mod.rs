//! The dashboard: server-rendered HTML pages over the same `Store` queries as the
//! JSON API. Rendering only: reads go through `storage::queries` and
//! `storage::aggregates` (aggregate reads written once for both engines); reports
//! come from `crate::reports`.
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
mod error;
mod explain;
mod guard;
mod layout;
mod oom_page;
mod overview;
mod pages;
mod pressure;
pub mod report_page;
pub mod sessions;
mod settings;
pub mod svg;
mod virtio_mem;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{self, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

pub use error::DashboardError;
pub use settings::{
    DashboardAuth, DashboardAuthConfig, DashboardConfig, DashboardConfigError, DashboardSettings,
};

/// The embedded stylesheet.
pub(crate) use crate::html::STYLE_CSS;

/// The strict policy: no scripts at all, styles and images only from here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

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
