//! [`Reviewer`]: a reader's bearer token checked by the API server, as the kubelet checks the
//! callers of its own API: a TokenReview says who the token belongs to, a SubjectAccessReview
//! whether that user may `get` the virtual resource `flows` of the group `kube-nftpol.io` on
//! this node (in the namespace asked for, if any). Results are cached ([`Cache`]), at most
//! [`MAX_REVIEWS_IN_FLIGHT`] reviews run at once, and each waits at most [`REVIEW_TIMEOUT`].
//!
//! Owns the API calls and the caches; what the answers mean for a request is
//! [`super::Access`]'s.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::cache::Cache;
use super::{API_GROUP, Metrics, RESOURCE, ReviewKind, ReviewLabels, ReviewResult, VERB};

/// How long an authenticated token is trusted without asking again (the kubelet's
/// `authentication.webhook.cacheTTL` default).
pub const AUTHENTICATED_TTL: Duration = Duration::from_secs(120);
/// How long a token the API server rejected stays rejected.
pub const UNAUTHENTICATED_TTL: Duration = Duration::from_secs(30);
/// How long an allowed user stays allowed (the kubelet's `cacheAuthorizedTTL` default).
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a refused user stays refused (the kubelet's `cacheUnauthorizedTTL` default).
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries of each cache at most.
pub const CACHE_ENTRIES: usize = 1024;
/// Reviews sent to the API server at once at most: more requests wait for a free slot (and
/// then usually find their answer cached).
pub const MAX_REVIEWS_IN_FLIGHT: usize = 4;
/// How long a request waits for a slot and its review.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a token belongs to, as the TokenReview said; what the SubjectAccessReview asks about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct User {
    /// The user name (`system:serviceaccount:NS:NAME` for a service account).
    pub name: String,
    /// The user's uid, when the authenticator gives one.
    pub uid: Option<String>,
    /// The user's groups.
    pub groups: Vec<String>,
    /// What else the authenticator says about the user (scopes, the pod a token is bound to).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// A SubjectAccessReview's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the user may read flows.
    pub allowed: bool,
    /// The authorizer's reason, often empty (RBAC gives none when it refuses).
    pub reason: String,
}

/// What a token is, as far as the API server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// It belongs to this user.
    User(User),
    /// It belongs to nobody (expired, revoked, made up); the API server's error, if it gave one.
    Unknown(String),
}

/// Why a review could not be had: the agent cannot tell who asks or whether they may.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server answered with an error (the agent's service account may lack the
    /// permission to create reviews, `deploy/rbac.yaml`).
    #[error("{review} failed")]
    Api {
        /// Which review.
        review: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// No slot and answer within [`REVIEW_TIMEOUT`].
    #[error("{review} took longer than {}s", REVIEW_TIMEOUT.as_secs())]
    Timeout {
        /// Which review.
        review: &'static str,
    },
}

/// The reviews' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks readers' tokens with the API server, caching the answers.
pub struct Reviewer {
    client: kube::Client,
    node: String,
    tokens: Mutex<Cache<[u8; 32], Identity>>,
    verdicts: Mutex<Cache<(User, Option<String>), Verdict>>,
    in_flight: Semaphore,
    metrics: Metrics,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client has no Debug; the caches hold nothing worth printing.
        f.debug_struct("Reviewer")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Reviewer {
    /// Reviews with `client` (the agent's service account: it needs create on tokenreviews and
    /// subjectaccessreviews) for readers of the flows of `node`.
    pub fn new(client: kube::Client, node: &str, metrics: Metrics) -> Self {
        Self {
            client,
            node: node.to_owned(),
            tokens: Mutex::new(Cache::new(CACHE_ENTRIES)),
            verdicts: Mutex::new(Cache::new(CACHE_ENTRIES)),
            in_flight: Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
            metrics,
        }
    }

    /// The node whose flows are read.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Who `token` belongs to: cached, or a TokenReview.
    pub async fn identify(&self, token: &str) -> Result<Identity> {
        // Keyed by the token's hash: the cache never holds a reader's credential.
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let ttl = |identity: &Identity| match identity {
            Identity::User(_) => AUTHENTICATED_TTL,
            Identity::Unknown(_) => UNAUTHENTICATED_TTL,
        };
        let review = self.token_review(token);
        self.cached(&self.tokens, key, ReviewKind::TokenReview, review, ttl)
            .await
    }

    /// Whether `user` may read the flows of this node's pods of `namespace` (of every
    /// namespace when `None`): cached, or a SubjectAccessReview.
    pub async fn authorize(&self, user: &User, namespace: Option<&str>) -> Result<Verdict> {
        let key = (user.clone(), namespace.map(str::to_owned));
        let ttl = |verdict: &Verdict| {
            if verdict.allowed {
                ALLOWED_TTL
            } else {
                DENIED_TTL
            }
        };
        let review = self.access_review(user, namespace);
        self.cached(
            &self.verdicts,
            key,
            ReviewKind::SubjectAccessReview,
            review,
            ttl,
        )
        .await
    }

    /// The answer `cache` has for `key`, else `review`'s (asked in a slot, within
    /// [`REVIEW_TIMEOUT`], counted), kept for `ttl` of it. Failures are not kept.
    async fn cached<K, V>(
        &self,
        cache: &Mutex<Cache<K, V>>,
        key: K,
        kind: ReviewKind,
        review: impl Future<Output = kube::Result<V>>,
        ttl: impl Fn(&V) -> Duration,
    ) -> Result<V>
    where
        K: Eq + Hash + Clone,
        V: Clone,
    {
        let cached = || lock(cache).get(&key, Instant::now()).cloned();
        if let Some(answer) = cached() {
            return Ok(answer);
        }
        let name = kind.name();
        tokio::time::timeout(REVIEW_TIMEOUT, async {
            let _slot = self.in_flight.acquire().await;
            // Another request may have asked while this one waited for its slot.
            if let Some(answer) = cached() {
                return Ok(answer);
            }
            let answer = review.await;
            self.count(kind, answer.is_ok());
            let answer = answer.map_err(|source| Error::Api {
                review: name,
                source,
            })?;
            lock(cache).insert(key.clone(), answer.clone(), Instant::now(), ttl(&answer));
            Ok(answer)
        })
        .await
        .unwrap_or(Err(Error::Timeout { review: name }))
    }

    async fn token_review(&self, token: &str) -> kube::Result<Identity> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                // None: the API server's own audiences, which a kubeconfig's token is for.
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = answer.status.unwrap_or_default();
        Ok(match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Identity::User(User {
                name: user.username.unwrap_or_default(),
                uid: user.uid,
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            }),
            _ => Identity::Unknown(status.error.unwrap_or_default()),
        })
    }

    async fn access_review(&self, user: &User, namespace: Option<&str>) -> kube::Result<Verdict> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(API_GROUP.to_owned()),
                    version: Some("v1".to_owned()),
                    resource: Some(RESOURCE.to_owned()),
                    verb: Some(VERB.to_owned()),
                    // The node, so a role can name the nodes whose flows it may read.
                    name: Some(self.node.clone()),
                    namespace: namespace.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = answer.status.unwrap_or_default();
        let mut reason = status.reason.unwrap_or_default();
        if let Some(error) = status.evaluation_error.filter(|e| !e.is_empty()) {
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&error);
        }
        Ok(Verdict {
            allowed: status.allowed,
            reason,
        })
    }

    fn count(&self, review: ReviewKind, ok: bool) {
        let result = if ok {
            ReviewResult::Answered
        } else {
            ReviewResult::Failed
        };
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels { review, result })
            .inc();
    }
}

/// A cache's lock: a panic while holding it leaves the map consistent, so a poisoned lock is
/// still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
