//! Who may see the dashboard.
//!
//! 1. `none`: everyone who reaches the listener (the configuration allows it only
//!    on loopback listeners).
//! 2. `token`: a shared secret, given as HTTP basic auth (any user name, the token
//!    as password), as `Authorization: Bearer`, or as the cookie `/login` sets. The
//!    cookie holds the token's SHA-256, not the token; it is `HttpOnly`,
//!    `SameSite=Strict` and `Secure` on TLS listeners. Comparisons are constant-time.
//! 3. `proxy`: a reverse proxy authenticates and names the user in a header
//!    (default `X-Remote-User`); the header is believed only when the TCP peer is
//!    one of `trusted_proxies`. Needs the peer address (`ConnectInfo`); without it
//!    every request is refused (fail closed).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::Engine as _;
use maud::{html, Markup};
use serde::Deserialize;

use crate::api::AppState;
use crate::auth::{constant_time_eq, token_sha256};
use crate::dashboard::{layout, DashboardAuth};

/// The login cookie's name.
pub const COOKIE: &str = "ballast_dashboard";

/// Lets a request through or answers 401/403.
pub async fn require_user(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match &state.config.dashboard.auth {
        DashboardAuth::None => next.run(request).await,
        DashboardAuth::Token(token) => {
            if token_given(request.headers(), token) {
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

/// Whether the request carries the token (basic, bearer or cookie).
fn token_given(headers: &HeaderMap, token: &str) -> bool {
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
    let expected = token_sha256(token);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && constant_time_eq(value, &expected))
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

/// `POST /login`: sets the cookie when the token is right.
pub async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let settings = &state.config.dashboard;
    match &settings.auth {
        DashboardAuth::Token(token) if constant_time_eq(form.token.trim(), token) => {
            let cookie = format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{}",
                token_sha256(token),
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

/// `POST /logout`: forgets the cookie.
pub async fn logout() -> Response {
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
    use super::*;

    #[test]
    fn the_token_is_accepted_as_basic_bearer_or_cookie() {
        let token = "0123456789abcdef-token";
        let mut headers = HeaderMap::new();
        assert!(!token_given(&headers, token));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{token}"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).expect("header"),
        );
        assert!(token_given(&headers, token));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}x")).expect("header"),
        );
        assert!(!token_given(&headers, token));
        headers.remove(header::AUTHORIZATION);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={}", token_sha256(token)))
                .expect("header"),
        );
        assert!(token_given(&headers, token));
    }
}
