//! What every request to the page passes: a `Host` header naming the served address, and the
//! headers that keep the page to its own files.
//!
//! Listening on loopback keeps other machines out, not other web pages: a page from anywhere,
//! open in the user's browser, can point a name it controls at 127.0.0.1 (DNS rebinding) and
//! read what this server answers. Its requests then carry its own name in `Host`, so answering
//! only `127.0.0.1:PORT`, `localhost:PORT` or `[::1]:PORT` stops it
//! (<https://en.wikipedia.org/wiki/DNS_rebinding>). Answers also say
//! `Content-Security-Policy: default-src 'self'`: the page can load and call nothing but this
//! server.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The page's content policy: its own scripts, styles, images and API only. Styles may be
/// inline because the graph library sizes its canvas through style attributes.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// The `Host` values the served address is reached by.
#[derive(Debug, Clone)]
pub struct Hosts(Vec<String>);

impl Hosts {
    /// For a server bound to `addr`: the address itself and `localhost` with its port.
    pub fn of(addr: SocketAddr) -> Self {
        let port = addr.port();
        Self(vec![addr.to_string(), format!("localhost:{port}")])
    }

    fn allows(&self, host: &str) -> bool {
        self.0.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// Refuses requests for another host with 421, and adds the security headers to the rest.
pub async fn check(State(hosts): State<Hosts>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !hosts.allows(host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this page answers only as {} (the request was for {host:?})\n",
                hosts.0.join(" or ")
            ),
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ] {
        headers.insert(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_address_and_localhost_are_the_only_hosts() {
        let hosts = Hosts::of("127.0.0.1:9641".parse().unwrap());
        assert!(hosts.allows("127.0.0.1:9641"));
        assert!(hosts.allows("LOCALHOST:9641"));
        for host in [
            "",
            "127.0.0.1",
            "localhost:80",
            "evil.example:9641",
            "127.0.0.2:9641",
        ] {
            assert!(!hosts.allows(host), "{host}");
        }
        let hosts = Hosts::of("[::1]:8000".parse().unwrap());
        assert!(hosts.allows("[::1]:8000") && hosts.allows("localhost:8000"));
    }
}
