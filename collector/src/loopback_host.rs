//! The `Host` check of the no-login modes on a loopback listener.
//!
//! A page on any web site can make a browser resolve its own name to 127.0.0.1
//! (DNS rebinding) and then read `http://evil.example:8470/` as if it were its
//! own origin: the listener being loopback does not keep it out. That page's
//! requests carry its own name in `Host`, so a loopback listener without login
//! answers only requests whose `Host` names the listener: `localhost`,
//! `127.0.0.1`, `[::1]` or the listen address itself, with or without a port.
//! Others get 421 Misdirected Request. A request without any `Host` (not a
//! browser) is let through.
//!
//! The port is not compared: the rebinding page's requests go to the collector's
//! port anyway (the browser connects where the URL says), so only the name tells
//! them apart; and a listener bound to port 0 learns its port only at bind time.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Whether `host` (a `Host` header value) names the loopback listener `listen`.
pub fn names_listener(host: &str, listen: SocketAddr) -> bool {
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        // `[::1]:8470`, `localhost:8470`; a bare `::1` has no brackets and is not
        // a valid Host value anyway.
        Some((name, port)) if !port.contains(']') => {
            if port.parse::<u16>().is_err() {
                return false;
            }
            name
        }
        _ => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let own = match listen {
        SocketAddr::V4(addr) => addr.ip().to_string(),
        SocketAddr::V6(addr) => format!("[{}]", addr.ip()),
    };
    name == "localhost" || name == "127.0.0.1" || name == "[::1]" || name == own
}

/// The 421 answer when the request names another host than `listen`, else `None`.
pub fn refusal(headers: &HeaderMap, uri: &Uri, listen: SocketAddr) -> Option<Response> {
    let host = match headers.get(header::HOST) {
        Some(value) => value.to_str().unwrap_or("?").to_string(),
        None => match uri.authority() {
            Some(authority) => authority.as_str().to_string(),
            None => return None,
        },
    };
    if names_listener(&host, listen) {
        return None;
    }
    let shown: String = host.chars().take(100).collect();
    tracing::debug!(host = %shown, "Refused a request naming another host (DNS rebinding?).");
    Some(
        (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "This collector has no login on its loopback listener, so it answers only \
             requests addressed to localhost, 127.0.0.1 or [::1], \
             not to {shown:?} (a DNS-rebinding page would name its own host). Open it as \
             http://localhost:{port}/, or configure dashboard.auth / read.token_file.\n",
                port = listen.port()
            ),
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listeners_own_names_are_accepted() {
        let listen: SocketAddr = "127.0.0.1:8470".parse().expect("addr");
        for good in [
            "127.0.0.1:8470",
            "localhost:8470",
            "LOCALHOST:8470",
            "[::1]:8470",
            "localhost.:8470",
            "localhost",
            "127.0.0.1",
        ] {
            assert!(names_listener(good, listen), "{good}");
        }
        for bad in [
            "evil.example:8470",
            "evil.example",
            "127.0.0.2:8470",
            "localhost.evil.example:8470",
            "",
            ":8470",
            "localhost:x",
            "::1",
        ] {
            assert!(!names_listener(bad, listen), "{bad}");
        }
        let v6: SocketAddr = "[::1]:8470".parse().expect("addr");
        assert!(names_listener("[::1]:8470", v6));
        let other: SocketAddr = "127.0.0.53:8470".parse().expect("addr");
        assert!(names_listener("127.0.0.53:8470", other));
    }
}
