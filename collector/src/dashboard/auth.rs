//! Who may see the dashboard.
//!
//! 1. `none`: everyone who reaches the listener (the configuration allows it only
//!    on loopback listeners), provided the `Host` header names the listener
//!    (`crate::loopback_host`: a DNS-rebinding page gets 421).
//! 2. `token`: a shared secret, given as HTTP basic auth (any user name, the token
//!    as password), as `Authorization: Bearer`, or as the session cookie `/login`
//!    sets. The cookie holds a random session id ([`super::sessions`]), valid until
//!    `dashboard.session_hours` pass, `/logout` ends it or the token changes; it is
//!    `HttpOnly`, `SameSite=Strict` and `Secure` on TLS listeners. Comparisons are
//!    constant-time.
//! 3. `proxy`: a reverse proxy authenticates and names the user in a header
//!    (default `X-Remote-User`); the header is believed only when the TCP peer is
//!    one of `trusted_proxies`. Needs the peer address (`ConnectInfo`); without it
//!    every request is refused (fail closed).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::Engine as _;
use maud::{html, Markup};
use serde::Deserialize;

use crate::auth::constant_time_eq;
use crate::dashboard::sessions::Sessions;
use crate::dashboard::{layout, DashboardAuth};
use crate::state::AppState;

/// The login cookie's name.
pub const COOKIE: &str = "ballast_dashboard";

/// Lets a request through or answers 401/403.
pub async fn require_user(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let settings = &state.config.dashboard;
    match &settings.auth {
        DashboardAuth::None => {
            if let Some(listen) = state.config.dashboard_host_check {
                if let Some(refused) =
                    crate::loopback_host::refusal(request.headers(), request.uri(), listen)
                {
                    return refused;
                }
            }
            next.run(request).await
        }
        DashboardAuth::Token(token) => {
            if token_given(request.headers(), token, &state.sessions, Instant::now()) {
                next.run(request).await
            } else {
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    layout::page(
                        "Log in",
                        html! { p { "This dashboard needs its token. " a href="/login" { "Log in" } "." } },
                    ),
                )
                    .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"ballast\", charset=\"UTF-8\""),
                );
                response
            }
        }
        DashboardAuth::Proxy { header, trusted } => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip());
            let user = request
                .headers()
                .get(header)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|user| !user.is_empty() && user.len() <= 256)
                .map(str::to_string);
            match (peer, user) {
                (Some(peer), Some(user)) if trusted.contains(&peer) => {
                    tracing::debug!(%peer, %user, "Proxy-authenticated request.");
                    next.run(request).await
                }
                (peer, _) => {
                    tracing::debug!(?peer, "Dashboard request without a trusted proxy user.");
                    (
                        StatusCode::FORBIDDEN,
                        layout::page(
                            "Forbidden",
                            html! { p { "This dashboard is reached through its authenticating proxy." } },
                        ),
                    )
                        .into_response()
                }
            }
        }
    }
}

/// Whether the request carries the token (basic, bearer) or a live session cookie.
fn token_given(headers: &HeaderMap, token: &str, sessions: &Sessions, now: Instant) -> bool {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some((scheme, rest)) = value.split_once(' ') {
            let rest = rest.trim();
            if scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(rest, token) {
                return true;
            }
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok());
                if let Some((_, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                    if constant_time_eq(password, token) {
                        return true;
                    }
                }
            }
        }
    }
    session_ids(headers).any(|id| sessions.is_valid(id, token, now))
}

/// The values of the session cookie the request carries.
fn session_ids(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

fn login_page(error: Option<&str>) -> Markup {
    layout::page(
        "Log in",
        html! {
            form.card method="post" action="/login" {
                @if let Some(error) = error { p.error { (error) } }
                label for="token" { "Dashboard token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
        },
    )
}

/// `GET /login`.
pub async fn login_form() -> Markup {
    login_page(None)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: starts a session and sets its cookie when the token is right.
pub async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let settings = &state.config.dashboard;
    match &settings.auth {
        DashboardAuth::Token(token) if constant_time_eq(form.token.trim(), token) => {
            let id = match state
                .sessions
                .create(token, Instant::now(), settings.session_lifetime)
            {
                Ok(id) => id,
                Err(error) => {
                    tracing::error!(%error, "No session for a dashboard login.");
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
            };
            let cookie = format!(
                "{COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
                settings.session_lifetime.as_secs(),
                if settings.secure_cookie {
                    "; Secure"
                } else {
                    ""
                }
            );
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        DashboardAuth::Token(_) => (
            StatusCode::UNAUTHORIZED,
            login_page(Some("That is not the dashboard token.")),
        )
            .into_response(),
        _ => Redirect::to("/").into_response(),
    }
}

/// `POST /logout`: ends the session (server-side) and clears the cookie.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    for id in session_ids(&headers) {
        state.sessions.end(id);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "ballast_dashboard=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_token_is_accepted_as_basic_bearer_or_a_live_session_cookie() {
        let token = "0123456789abcdef-token";
        let sessions = Sessions::new();
        let now = Instant::now();
        let mut headers = HeaderMap::new();
        assert!(!token_given(&headers, token, &sessions, now));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{token}"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).expect("header"),
        );
        assert!(token_given(&headers, token, &sessions, now));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}x")).expect("header"),
        );
        assert!(!token_given(&headers, token, &sessions, now));
        headers.remove(header::AUTHORIZATION);
        // The old cookie (the token's SHA-256) is no longer a login.
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={}", crate::auth::token_sha256(token)))
                .expect("header"),
        );
        assert!(!token_given(&headers, token, &sessions, now));
        let id = sessions
            .create(token, now, Duration::from_secs(60))
            .expect("random");
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={id}")).expect("header"),
        );
        assert!(token_given(&headers, token, &sessions, now));
        assert!(!token_given(
            &headers,
            token,
            &sessions,
            now + Duration::from_secs(61)
        ));
    }
}

/// The login flow through the whole router on a real SQLite store.
#[cfg(test)]
mod flow_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::app::app;
    use crate::dashboard::DashboardSettings;
    use crate::state::ApiConfig;
    use crate::storage::sqlite::SqliteStore;

    const TOKEN: &str = "dashboard-token-0123456789";

    async fn state(auth: DashboardAuth, lifetime: Duration) -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("c.sqlite"))
            .await
            .expect("open");
        let config = ApiConfig {
            dashboard: DashboardSettings {
                auth,
                session_lifetime: lifetime,
                ..DashboardSettings::default()
            },
            ..ApiConfig::default()
        };
        (dir, AppState::new(Arc::new(store), config))
    }

    async fn send(state: &AppState, request: Request<Body>) -> Response {
        app(state.clone())
            .oneshot(request)
            .await
            .expect("infallible")
    }

    /// Logs in: the `name=value` cookie pair and the whole `Set-Cookie`.
    async fn login(state: &AppState) -> (String, String) {
        let response = send(
            state,
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={TOKEN}")))
                .expect("request"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .expect("cookie")
            .to_string();
        let pair = cookie.split(';').next().expect("pair").to_string();
        (pair, cookie)
    }

    async fn status_with_cookie(state: &AppState, method: &str, path: &str, pair: &str) -> u16 {
        send(
            state,
            Request::builder()
                .method(method)
                .uri(path)
                .header(header::COOKIE, pair)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .status()
        .as_u16()
    }

    #[tokio::test]
    async fn the_session_cookie_is_random_flagged_and_ends_at_logout() {
        let (_dir, state) = state(
            DashboardAuth::Token(TOKEN.into()),
            Duration::from_secs(12 * 3600),
        )
        .await;
        let (pair, cookie) = login(&state).await;
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.contains("Max-Age=43200"),
            "{cookie}"
        );
        assert!(
            !cookie.contains(&crate::auth::token_sha256(TOKEN)),
            "{cookie}"
        );
        let (other, _) = login(&state).await;
        assert_ne!(pair, other, "each login gets its own session");
        assert_eq!(status_with_cookie(&state, "GET", "/ooms", &pair).await, 200);
        assert_eq!(
            status_with_cookie(&state, "POST", "/logout", &pair).await,
            303
        );
        assert_eq!(
            status_with_cookie(&state, "GET", "/ooms", &pair).await,
            401,
            "the cookie saved before logout no longer works"
        );
        assert_eq!(
            status_with_cookie(&state, "GET", "/ooms", &other).await,
            200,
            "another login is not ended"
        );
    }

    #[tokio::test]
    async fn a_session_expires_and_a_new_token_ends_it() {
        let (_dir, state) = state(
            DashboardAuth::Token(TOKEN.into()),
            Duration::from_millis(1500),
        )
        .await;
        let (short, _) = login(&state).await;
        assert_eq!(status_with_cookie(&state, "GET", "/", &short).await, 200);
        // The scenario: the 1.5 s session lifetime passes (time, not an event).
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(status_with_cookie(&state, "GET", "/", &short).await, 401);

        let (pair, _) = login(&state).await;
        // A reload with another token: the new router keeps the sessions
        // (as crate::reload does) but the old login is over.
        let mut config = (*state.config).clone();
        config.dashboard.auth = DashboardAuth::Token("a-new-dashboard-token-0000".into());
        let reloaded = AppState {
            config: Arc::new(config),
            ..state.clone()
        };
        assert_eq!(status_with_cookie(&reloaded, "GET", "/", &pair).await, 401);
    }

    #[tokio::test]
    async fn without_login_on_loopback_another_host_name_gets_421() {
        let (_dir, mut state) = state(DashboardAuth::None, Duration::from_secs(60)).await;
        let listen: SocketAddr = "127.0.0.1:8470".parse().expect("addr");
        let mut config = (*state.config).clone();
        config.dashboard_host_check = Some(listen);
        config.read_host_check = Some(listen);
        state.config = Arc::new(config);
        for (host, path, expected) in [
            ("localhost:8470", "/", 200),
            ("127.0.0.1:8470", "/ooms", 200),
            ("[::1]:8470", "/api/v1/ooms", 200),
            ("rebind.evil.example:8470", "/", 421),
            ("rebind.evil.example:8470", "/ooms", 421),
            ("rebind.evil.example:8470", "/api/v1/ooms", 421),
            ("127.0.0.2:8470", "/", 421),
            ("localhost", "/", 200),
        ] {
            let response = send(
                &state,
                Request::get(path)
                    .header(header::HOST, host)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
            assert_eq!(response.status().as_u16(), expected, "{host} {path}");
        }
    }
}
