//! The Kubernetes API as a live source: the agent's default in a cluster.
//!
//! Five watches (kube-rs [`watcher`]s with the default exponential backoff) follow Pods in
//! every namespace (peers live on every node), Namespaces, NetworkPolicies, Nodes (their
//! addresses are ClusterNetworkPolicy `nodes` peers) and ClusterNetworkPolicies. Their events
//! feed one [`Cache`] that keeps the cluster as a [`crate::model::Snapshot`]. When the API
//! server does not serve ClusterNetworkPolicies (404: the CRD is not installed) there are none,
//! and the watch keeps asking at its backoff, so a CRD installed later is picked up. Nothing is
//! published until every kind has been listed once, so the first ruleset never comes from a
//! half-known cluster; after that, each batch of events that are ready together gives one
//! snapshot, and the agent's `watch` channel collapses bursts further. An idle cluster means an
//! idle agent.
//!
//! When the API server goes away the watches retry with backoff (at most
//! [`MAX_RETRY_DELAY`] apart) and the last published
//! snapshot (and so the last ruleset) stays in force; on reconnect the watcher relists, the
//! cache swaps the fresh list in whole, and the agent converges. Watch errors are logged and
//! counted, never fatal.
//!
//! Invalid NetworkPolicies and ClusterNetworkPolicies are reported as Warning Events on the
//! policy ([`crate::events`]), once per version of the policy.

mod cache;
mod cluster_kinds;
mod fields_resource;
mod pod_fields;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use cache::Cache;
pub use cluster_kinds::{ClusterPolicyObject, NodeFields};

use super::manifests::Loaded;
use super::{ChangeClock, Metrics};
use crate::events::{self, Events, InvalidPolicy, PolicyKind};
use pod_fields::PodFields;

/// One event from one of the five watches (Pods boxed: they are by far the largest).
enum Change {
    Pod(Box<watcher::Event<core::Pod>>),
    Namespace(watcher::Event<core::Namespace>),
    Policy(watcher::Event<networking::NetworkPolicy>),
    ClusterPolicy(Box<watcher::Event<ClusterPolicyObject>>),
    /// The API server does not serve ClusterNetworkPolicies (404).
    ClusterPoliciesAbsent,
    Node(watcher::Event<NodeFields>),
}

/// Retry delays of a failed watch: 0.5 s doubling to at most [`MAX_RETRY_DELAY`], reset by the
/// next successful event. kube-rs' default grows to 30 s, too slow for an enforcer that must
/// catch up as soon as its API server is back.
#[derive(Debug, Clone, Copy)]
struct WatchBackoff {
    next: Duration,
}

/// The longest wait between two attempts to reach the API server.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(4);
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: FIRST_RETRY_DELAY,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_RETRY_DELAY);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST_RETRY_DELAY;
    }
}

type Changes = SelectAll<BoxStream<'static, Result<Change, watcher::Error>>>;

/// How every watch lists: `resourceVersion=0`, as client-go's informers do, so the API server
/// answers from its watch cache in one response instead of reading etcd page by page. What it
/// returns can be a little older than etcd; the watch that follows catches up.
///
/// Unpaged: kube-core leaves `resourceVersion=0` out of a list request that has a `limit`
/// (and kube-runtime's default page size is 500), which turns the list into consistent reads
/// from etcd, 500 objects a page: 21 requests and about a second for 10,000 pods, against a
/// quarter of that from the cache. The price is one response in memory at a time (about 2 KB
/// of JSON per pod) while it is parsed.
fn watch_config() -> watcher::Config {
    watcher::Config {
        page_size: None,
        ..watcher::Config::default().any_semantic()
    }
}

fn watches(client: &Client) -> Changes {
    let config = watch_config();
    let pods = watcher(Api::<PodFields>::all(client.clone()), config.clone())
        .backoff(WatchBackoff::default())
        .map(|r| r.map(|e| Change::Pod(Box::new(pod_event(e)))))
        .boxed();
    let namespaces = watcher(Api::<core::Namespace>::all(client.clone()), config.clone())
        .backoff(WatchBackoff::default())
        .map(|r| r.map(Change::Namespace))
        .boxed();
    let policies = watcher(
        Api::<networking::NetworkPolicy>::all(client.clone()),
        config.clone(),
    )
    .backoff(WatchBackoff::default())
    .map(|r| r.map(Change::Policy))
    .boxed();
    let nodes = watcher(Api::<NodeFields>::all(client.clone()), config.clone())
        .backoff(WatchBackoff::default())
        .map(|r| r.map(Change::Node))
        .boxed();
    let cluster_policies = watcher(Api::<ClusterPolicyObject>::all(client.clone()), config)
        .backoff(WatchBackoff::default())
        .map(|r| match r {
            Ok(event) => Ok(Change::ClusterPolicy(Box::new(event))),
            Err(error) if not_found(&error) => Ok(Change::ClusterPoliciesAbsent),
            Err(error) => Err(error),
        })
        .boxed();
    futures::stream::select_all([pods, namespaces, policies, nodes, cluster_policies])
}

/// Whether a watch failed because the API server does not serve the resource (404). By the
/// code: a resource the server does not know answers a plain-text `404 page not found`, which
/// kube reads as a Status without the `NotFound` reason (`Status::is_not_found` misses it).
fn not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}

/// The watch's event with the pod fields made a k8s-openapi Pod again.
fn pod_event(event: watcher::Event<PodFields>) -> watcher::Event<core::Pod> {
    use watcher::Event;
    match event {
        Event::Apply(pod) => Event::Apply(pod.into_pod()),
        Event::Delete(pod) => Event::Delete(pod.into_pod()),
        Event::Init => Event::Init,
        Event::InitApply(pod) => Event::InitApply(pod.into_pod()),
        Event::InitDone => Event::InitDone,
    }
}

/// Watches the cluster through `client` and publishes each complete snapshot to `tx`; marks
/// `clock` when a change is seen, for the programming-latency histogram; reports invalid
/// policies through `events`. Runs until `tx` has no receiver.
pub async fn watch(
    client: Client,
    tx: watch::Sender<Option<Arc<Loaded>>>,
    clock: Arc<ChangeClock>,
    metrics: Metrics,
    events: Events,
) {
    let metrics = &metrics;
    let mut reported = events::Reported::default();
    let mut changes = watches(&client);
    let mut cache = Cache::new();
    let mut synced_logged = false;
    let mut last_waiting = Vec::new();
    let mut next_snapshot = tokio::time::Instant::now();
    while let Some(first) = changes.next().await {
        clock.mark(Instant::now());
        let mut batch = 1usize;
        apply(&mut cache, first, metrics);
        // Everything already received joins this batch: a burst becomes one snapshot. Under a
        // steady stream (10,000 pods created), a copy of the snapshot per event would take all
        // the time; so events keep joining until as long after the last copy as that copy
        // took. At most half the time goes to copies, and a change after a quiet spell is
        // published at once.
        while let Ok(Some(next)) = tokio::time::timeout_at(next_snapshot, changes.next()).await {
            apply(&mut cache, next, metrics);
            batch += 1;
        }
        for warning in cache.take_warnings() {
            warn!("{warning}");
        }
        if !cache.is_synced() {
            let waiting = cache.waiting_for();
            if waiting != last_waiting {
                info!(waiting = ?waiting, "waiting for the first complete list before enforcing");
                last_waiting = waiting;
            }
            continue;
        }
        if !synced_logged {
            info!(
                "pods, namespaces, networkpolicies, nodes and clusternetworkpolicies listed; \
                 enforcing"
            );
            synced_logged = true;
        }
        let invalid: Vec<InvalidPolicy> = cache.invalid_policies().cloned().collect();
        let count = |kind| {
            let n = invalid.iter().filter(|p| p.kind == kind).count();
            i64::try_from(n).unwrap_or(i64::MAX)
        };
        metrics
            .invalid_policies
            .set(count(PolicyKind::NetworkPolicy));
        metrics
            .invalid_cluster_policies
            .set(count(PolicyKind::ClusterNetworkPolicy));
        for policy in &invalid {
            for error in &policy.errors {
                debug!(policy = %policy.key, field = %error.field, "invalid policy, enforced fail-closed: {}", error.message);
            }
        }
        reported.report(&events, &invalid);
        let copying = tokio::time::Instant::now();
        let snapshot = cache.snapshot();
        next_snapshot = tokio::time::Instant::now() + copying.elapsed();
        debug!(
            events = batch,
            pods = snapshot.pods().count(),
            policies = snapshot.policies().count(),
            "cluster snapshot"
        );
        metrics.loads.inc();
        let loaded = loaded_from(snapshot, Vec::new(), invalid);
        if tx.send(Some(Arc::new(loaded))).is_err() {
            return;
        }
    }
    warn!("the Kubernetes watches ended");
}

/// What a snapshot publishes: the snapshot, warnings, and the invalid policies of each kind.
fn loaded_from(
    snapshot: crate::model::Snapshot,
    warnings: Vec<String>,
    invalid: Vec<InvalidPolicy>,
) -> Loaded {
    let (cluster, namespaced): (Vec<InvalidPolicy>, Vec<InvalidPolicy>) = invalid
        .into_iter()
        .partition(|p| p.kind == PolicyKind::ClusterNetworkPolicy);
    Loaded {
        snapshot,
        warnings,
        invalid_policies: namespaced.into_iter().map(|p| (p.key, p.errors)).collect(),
        invalid_cluster_policies: cluster
            .into_iter()
            .map(|p| (p.key.name, p.errors))
            .collect(),
        locations: Default::default(),
    }
}

/// Lists Pods, Namespaces, NetworkPolicies, Nodes and ClusterNetworkPolicies (none when the API
/// server does not serve them) once, through the same cache the watches feed: the cluster as
/// `kube-nftpol explain --kubeconfig` sees it.
pub async fn snapshot_once(client: &Client) -> anyhow::Result<Loaded> {
    use kube::api::ListParams;
    let params = ListParams::default();
    let mut cache = Cache::new();
    let pods = Api::<PodFields>::all(client.clone());
    let namespaces = Api::<core::Namespace>::all(client.clone());
    let policies = Api::<networking::NetworkPolicy>::all(client.clone());
    let nodes = Api::<NodeFields>::all(client.clone());
    let cluster_policies = Api::<ClusterPolicyObject>::all(client.clone());
    let (pods, namespaces, policies, nodes, cluster_policies) = futures::try_join!(
        pods.list(&params),
        namespaces.list(&params),
        policies.list(&params),
        nodes.list(&params),
        async {
            match cluster_policies.list(&params).await {
                Ok(list) => Ok(Some(list)),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
                Err(error) => Err(error),
            }
        }
    )?;
    cache.apply_pod(watcher::Event::Init);
    for pod in pods {
        cache.apply_pod(watcher::Event::InitApply(pod.into_pod()));
    }
    cache.apply_pod(watcher::Event::InitDone);
    cache.apply_namespace(watcher::Event::Init);
    for namespace in namespaces {
        cache.apply_namespace(watcher::Event::InitApply(namespace));
    }
    cache.apply_namespace(watcher::Event::InitDone);
    cache.apply_policy(watcher::Event::Init);
    for policy in policies {
        cache.apply_policy(watcher::Event::InitApply(policy));
    }
    cache.apply_policy(watcher::Event::InitDone);
    cache.apply_node(watcher::Event::Init);
    for node in nodes {
        cache.apply_node(watcher::Event::InitApply(node));
    }
    cache.apply_node(watcher::Event::InitDone);
    match cluster_policies {
        Some(list) => {
            cache.apply_cluster_policy(watcher::Event::Init);
            for object in list {
                cache.apply_cluster_policy(watcher::Event::InitApply(object));
            }
            cache.apply_cluster_policy(watcher::Event::InitDone);
        }
        None => {
            cache.cluster_policies_absent();
        }
    }
    let invalid = cache.invalid_policies().cloned().collect();
    let warnings = cache.take_warnings();
    Ok(loaded_from(cache.snapshot(), warnings, invalid))
}

fn apply(cache: &mut Cache, change: Result<Change, watcher::Error>, metrics: &Metrics) {
    match change {
        Ok(Change::Pod(event)) => {
            log_relist("pods", &event);
            cache.apply_pod(*event);
        }
        Ok(Change::Namespace(event)) => {
            log_relist("namespaces", &event);
            cache.apply_namespace(event);
        }
        Ok(Change::Policy(event)) => {
            log_relist("networkpolicies", &event);
            cache.apply_policy(event);
        }
        Ok(Change::Node(event)) => {
            log_relist("nodes", &event);
            cache.apply_node(event);
        }
        Ok(Change::ClusterPolicy(event)) => {
            log_relist("clusternetworkpolicies", &event);
            cache.apply_cluster_policy(*event);
        }
        Ok(Change::ClusterPoliciesAbsent) => {
            if cache.cluster_policies_absent() {
                info!(
                    "the API server serves no ClusterNetworkPolicy (the CRD is not installed): \
                     no Admin or Baseline tier; asking again with backoff"
                );
            }
        }
        Err(error) => {
            metrics.watch_errors.inc();
            warn!(error = %format!("{:#}", anyhow::Error::from(error)), "Kubernetes watch failed; retrying with backoff, the last state stays enforced");
        }
    }
}

/// Marks a relist's start and end in the debug log (where a restart spends its time).
fn log_relist<K>(kind: &str, event: &watcher::Event<K>) {
    match event {
        watcher::Event::Init => debug!(kind, "relist started"),
        watcher::Event::InitDone => debug!(kind, "relist done"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list request each watch starts with, built the way kube-runtime's watcher builds it
    /// from the config (`watcher::Config::to_list_params` is private).
    fn first_list_url(config: &watcher::Config) -> String {
        let params = kube::api::ListParams {
            resource_version: match config.list_semantic {
                watcher::ListSemantic::Any => Some("0".into()),
                watcher::ListSemantic::MostRecent => None,
            },
            version_match: match config.list_semantic {
                watcher::ListSemantic::Any => Some(kube::api::VersionMatch::NotOlderThan),
                watcher::ListSemantic::MostRecent => None,
            },
            limit: config.page_size,
            ..Default::default()
        };
        kube::core::Request::new("/api/v1/pods")
            .list(&params)
            .map(|request| request.uri().to_string())
            .unwrap_or_else(|e| panic!("list request: {e}"))
    }

    #[test]
    fn watches_list_from_the_api_servers_watch_cache_in_one_response() {
        let url = first_list_url(&watch_config());
        assert!(url.contains("resourceVersion=0"), "{url}");
        assert!(!url.contains("limit="), "{url}");
        // The trap the config avoids: kube-runtime's default page size silently drops
        // `resourceVersion=0` and the list goes to etcd page by page.
        let paged = first_list_url(&watcher::Config::default().any_semantic());
        assert!(!paged.contains("resourceVersion=0"), "{paged}");
    }

    #[test]
    fn a_resource_the_server_does_not_serve_is_not_found_and_other_errors_are_not() {
        let status = |code, reason: &str| {
            Box::new(kube::core::Status {
                code,
                reason: reason.into(),
                ..kube::core::Status::default()
            })
        };
        // What kube makes of v1.20's plain-text "404 page not found" for an unknown resource.
        let unknown = status(404, "Failed to parse error data");
        assert!(not_found(&watcher::Error::InitialListFailed(
            kube::Error::Api(unknown)
        )));
        assert!(not_found(&watcher::Error::WatchError(status(
            404, "NotFound"
        ))));
        let forbidden = status(403, "Forbidden");
        assert!(!not_found(&watcher::Error::InitialListFailed(
            kube::Error::Api(forbidden)
        )));
        assert!(!not_found(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn watch_retries_back_off_to_the_maximum_and_reset() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(5).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 4000].map(Duration::from_millis)
        );
        backoff.reset();
        assert_eq!(backoff.next(), Some(FIRST_RETRY_DELAY));
    }
}
