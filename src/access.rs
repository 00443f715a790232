//! Who may read the agent's flows. `/flows` and `/hints` show pod names, labels and addresses,
//! so they answer only readers the cluster allows, checked as the kubelet checks the callers of
//! its API: a Kubernetes bearer token, authenticated with a TokenReview and authorised with a
//! SubjectAccessReview for the virtual resource `flows` of the API group `kube-nftpol.io`, verb
//! `get`, name the node, and the namespace when the request asks for one
//! ([`review::Reviewer`], with its caches). `/metrics`, `/healthz` and `/readyz` are not
//! checked.
//!
//! The token comes in `Authorization: Bearer TOKEN`, or in [`TOKEN_HEADER`]: the API server
//! deletes the `Authorization` header of a request it authenticated before proxying it to a
//! pod (kubernetes/kubernetes#38775), so through its pod proxy (`kube-nftpol flows`) the token
//! needs another header.
//!
//! This module decides ([`Access::check`] gives a [`Decision`]); [`crate::http`] turns the
//! decision into a status. The agent sets up its [`Access`] once it knows its source: with the
//! Kubernetes API it reviews tokens; with `--manifests` there is nothing to review them with,
//! and readers are refused (403) unless the agent runs with `--flows-auth none`.

pub mod cache;
pub mod review;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use review::{Identity, Reviewer, User, Verdict};

/// The header that carries the reader's token through the API server's pod proxy (lowercase,
/// as HTTP/2 and `http::HeaderName` write it): `X-Kube-Nftpol-Authorization: Bearer TOKEN`.
pub const TOKEN_HEADER: &str = "x-kube-nftpol-authorization";
/// The API group of the virtual resource readers are authorised for.
pub const API_GROUP: &str = "kube-nftpol.io";
/// The virtual resource: a node's recent flows (`/flows`, and `/hints`, made from them).
pub const RESOURCE: &str = "flows";
/// The verb: reading.
pub const VERB: &str = "get";

/// How the agent checks readers of `/flows` and `/hints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A Kubernetes bearer token, reviewed by the API server; refused without one (with
    /// `--manifests`, always).
    #[default]
    Kubernetes,
    /// Nobody is checked: whoever reaches the port reads them (tests, demos, a port nobody
    /// else reaches).
    Open,
}

/// What the agent does with readers, set up once it knows its source.
#[derive(Debug)]
enum Gate {
    /// Tokens reviewed by the API server.
    Kubernetes(Box<Reviewer>),
    /// Everyone reads.
    Open,
    /// Kubernetes mode without an API server (`--manifests`): nobody reads.
    NoApiServer,
}

/// How a request to read flows is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Served.
    Allowed,
    /// No token, or one the API server does not know (401), and why.
    Unauthenticated(String),
    /// The token's user may not read these flows, or nobody may (403), and why.
    Forbidden(String),
    /// The API server could not be asked (503), and why.
    Unavailable(String),
}

impl Decision {
    fn kind(&self) -> DecisionKind {
        match self {
            Self::Allowed => DecisionKind::Allowed,
            Self::Unauthenticated(_) => DecisionKind::Unauthenticated,
            Self::Forbidden(_) => DecisionKind::Forbidden,
            Self::Unavailable(_) => DecisionKind::Unavailable,
        }
    }
}

/// The readers' gate and its metrics.
#[derive(Debug)]
pub struct Access {
    gate: Gate,
    metrics: Metrics,
}

impl Access {
    /// Readers' tokens reviewed by `reviewer`.
    pub fn kubernetes(reviewer: Reviewer, metrics: Metrics) -> Self {
        Self {
            gate: Gate::Kubernetes(Box::new(reviewer)),
            metrics,
        }
    }

    /// Everyone reads, unchecked (`--flows-auth none`).
    pub fn open(metrics: Metrics) -> Self {
        Self {
            gate: Gate::Open,
            metrics,
        }
    }

    /// Nobody reads: Kubernetes mode with no API server to review tokens (`--manifests`).
    pub fn no_api_server(metrics: Metrics) -> Self {
        Self {
            gate: Gate::NoApiServer,
            metrics,
        }
    }

    /// Whether the bearer `token` (if any) may read the flows of `namespace` (every
    /// namespace's when `None`).
    pub async fn check(&self, token: Option<&str>, namespace: Option<&str>) -> Decision {
        let decision = self.decide(token, namespace).await;
        self.metrics
            .requests
            .get_or_create(&DecisionLabels {
                decision: decision.kind(),
            })
            .inc();
        decision
    }

    async fn decide(&self, token: Option<&str>, namespace: Option<&str>) -> Decision {
        let reviewer = match &self.gate {
            Gate::Open => return Decision::Allowed,
            Gate::NoApiServer => {
                return Decision::Forbidden(
                    "this agent reads manifests (--manifests) and has no API server to check \
                     tokens with, so it serves flows to nobody; start it with --flows-auth none \
                     to serve them without a token"
                        .to_owned(),
                );
            }
            Gate::Kubernetes(reviewer) => reviewer,
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Decision::Unauthenticated(format!(
                "a Kubernetes bearer token is needed: `Authorization: Bearer TOKEN`, or through \
                 the API server's pod proxy `{}: Bearer TOKEN`",
                header_name()
            ));
        };
        let user = match reviewer.identify(token).await {
            Ok(Identity::User(user)) => user,
            Ok(Identity::Unknown(error)) if error.is_empty() => {
                return Decision::Unauthenticated("the API server does not know the token".into());
            }
            Ok(Identity::Unknown(error)) => {
                return Decision::Unauthenticated(format!(
                    "the API server does not know the token: {error}"
                ));
            }
            Err(error) => {
                return Decision::Unavailable(format!(
                    "cannot check the token: {:#}",
                    anyhow::Error::new(error)
                ));
            }
        };
        match reviewer.authorize(&user, namespace).await {
            Ok(verdict) if verdict.allowed => Decision::Allowed,
            Ok(verdict) => {
                let scope = namespace.map_or_else(
                    || "of every namespace".to_owned(),
                    |ns| format!("of namespace {ns}"),
                );
                let reason = if verdict.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", verdict.reason)
                };
                Decision::Forbidden(format!(
                    "user {:?} may not {VERB} {RESOURCE}.{API_GROUP} (node {}, flows {scope}){reason}",
                    user.name,
                    reviewer.node()
                ))
            }
            Err(error) => Decision::Unavailable(format!(
                "cannot check the user's permission: {:#}",
                anyhow::Error::new(error)
            )),
        }
    }
}

/// `X-Kube-Nftpol-Authorization`, as people write it.
fn header_name() -> &'static str {
    "X-Kube-Nftpol-Authorization"
}

/// How a request to read flows was answered, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DecisionKind {
    Allowed,
    Unauthenticated,
    Forbidden,
    Unavailable,
}

/// Which review was asked of the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ReviewKind {
    TokenReview,
    SubjectAccessReview,
}

impl ReviewKind {
    /// The review's kind, as the API names it.
    fn name(self) -> &'static str {
        match self {
            Self::TokenReview => "TokenReview",
            Self::SubjectAccessReview => "SubjectAccessReview",
        }
    }
}

/// Whether the API server answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ReviewResult {
    Answered,
    Failed,
}

/// Label values in lowercase, as Prometheus labels are written.
macro_rules! label_values {
    ($($kind:ident { $($variant:ident => $text:literal),+ })+) => {$(
        impl EncodeLabelValue for $kind {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                let text = match self {
                    $(Self::$variant => $text),+
                };
                EncodeLabelValue::encode(&text, encoder)
            }
        }
    )+};
}

label_values! {
    DecisionKind {
        Allowed => "allowed",
        Unauthenticated => "unauthenticated",
        Forbidden => "forbidden",
        Unavailable => "unavailable"
    }
    ReviewKind {
        TokenReview => "token_review",
        SubjectAccessReview => "subject_access_review"
    }
    ReviewResult {
        Answered => "answered",
        Failed => "failed"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    decision: DecisionKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReviewLabels {
    review: ReviewKind,
    result: ReviewResult,
}

/// The readers' metrics (`kube_nftpol_access_*`).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    requests: Family<DecisionLabels, Counter>,
    reviews: Family<ReviewLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("access");
        let help = "Requests to read flows (/flows, /hints), by decision: allowed, \
                    unauthenticated (401), forbidden (403), unavailable (503)";
        sub.register("requests", help, metrics.requests.clone());
        let help = "TokenReviews and SubjectAccessReviews sent to the API server (the others \
                    were answered from the cache), by whether it answered";
        sub.register("reviews", help, metrics.reviews.clone());
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(gate: Gate) -> (Access, Registry) {
        let mut registry = crate::metrics::registry();
        let metrics = Metrics::register(&mut registry);
        (Access { gate, metrics }, registry)
    }

    #[tokio::test]
    async fn open_access_serves_everyone_and_counts_them() {
        let (access, registry) = access(Gate::Open);
        assert_eq!(access.check(None, None).await, Decision::Allowed);
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains("kube_nftpol_access_requests_total{decision=\"allowed\"} 1\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn without_an_api_server_nobody_reads_and_the_answer_says_how_to_change_it() {
        let (access, _) = access(Gate::NoApiServer);
        let Decision::Forbidden(why) = access.check(Some("token"), None).await else {
            panic!("not forbidden")
        };
        assert!(why.contains("--flows-auth none"), "{why}");
    }
}
