//! The readers' check in front of `/flows` and `/hints`: the bearer token from
//! `X-Kube-Nftpol-Authorization` (what comes through the API server's pod proxy, which deletes
//! `Authorization`, kubernetes/kubernetes#38775) or else `Authorization`, and the namespace the
//! request asks for, checked by the agent's [`crate::access::Access`]. 401 without a token the
//! API server knows (with `WWW-Authenticate: Bearer`), 403 for a user who may not read, 503
//! when the API server cannot be asked; the body says why, in one line of text.

use std::sync::Arc;

use axum::extract::{Query, Request, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::access::{Decision, TOKEN_HEADER};
use crate::agent::State;

/// The one query parameter the check looks at; the handlers parse the same query the same way.
#[derive(Debug, Deserialize)]
struct Scope {
    namespace: Option<String>,
}

/// Lets the request through when its token's user may read the flows it asks for.
pub async fn require_reader(
    Extract(state): Extract<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let scope = match Query::<Scope>::try_from_uri(request.uri()) {
        Ok(Query(scope)) => scope,
        Err(rejection) => return rejection.into_response(),
    };
    let token = bearer(request.headers());
    match state.check_reader(token, scope.namespace.as_deref()).await {
        Decision::Allowed => next.run(request).await,
        Decision::Unauthenticated(why) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"kube-nftpol\"")],
            format!("unauthorized: {why}\n"),
        )
            .into_response(),
        Decision::Forbidden(why) => {
            (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response()
        }
        Decision::Unavailable(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unavailable: {why}\n"),
        )
            .into_response(),
    }
}

/// The bearer token of [`TOKEN_HEADER`], else of `Authorization`: the header addressed to the
/// agent wins over one that may have been meant for a hop before it.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(TOKEN_HEADER)
        .or_else(|| headers.get(header::AUTHORIZATION))?;
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_token_comes_from_either_header_ours_first() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer(&headers(&[("x-kube-nftpol-authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(
            bearer(&headers(&[
                ("authorization", "Bearer for-the-api-server"),
                ("x-kube-nftpol-authorization", "Bearer for-the-agent"),
            ])),
            Some("for-the-agent")
        );
    }

    #[test]
    fn no_header_another_scheme_or_an_empty_token_is_no_token() {
        assert_eq!(bearer(&headers(&[])), None);
        assert_eq!(
            bearer(&headers(&[("authorization", "Basic dXNlcjpwdw==")])),
            None
        );
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer")])), None);
    }
}
