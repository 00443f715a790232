//! Which veth each local pod address belongs to, as the anti-spoofing rules see it.
//!
//! The kernel's routes say which veth leads to an IP *now*; the snapshot says which pod owns
//! it. When an IP is reused the two disagree for a moment: the CNI has already given the
//! address to a new pod behind a new veth, while the API (and so the snapshot) still names the
//! old pod. Trusting the routes then would hand the old pod's permissions to the new one. So a
//! binding is sticky: a pod's address stays bound to the veth it was first seen behind for as
//! long as the pod owns the address, and the compiled guard rules drop that address on any
//! other interface. The new pod is fail-closed until the snapshot names it.
//!
//! A pod whose own veth was replaced while it kept its IP (a recreated sandbox with a pinned
//! address) would stay cut off, so a binding whose veth has been gone for [`REBIND_AFTER`]
//! follows the route to the new veth.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::model::{ObjectKey, PodInterfaces, Snapshot};

/// How long a bound veth must have been gone before its address follows the route elsewhere.
pub const REBIND_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    veth: String,
    /// Since when the veth has been missing from the node, if it is.
    gone_since: Option<Instant>,
}

/// Sticky pod-address-to-veth bindings of one node.
#[derive(Debug, Default)]
pub struct Bindings {
    by_pod: BTreeMap<ObjectKey, BTreeMap<IpAddr, Binding>>,
}

impl Bindings {
    /// Updates the bindings from the snapshot and the routes learned now, and returns the
    /// address-to-veth map to compile with. Bindings of pods or addresses that are gone are
    /// forgotten; new addresses bind to their current route.
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        node: &str,
        learned: &PodInterfaces,
        now: Instant,
    ) -> PodInterfaces {
        let present: BTreeSet<&String> = learned.values().collect();
        let mut next: BTreeMap<ObjectKey, BTreeMap<IpAddr, Binding>> = BTreeMap::new();
        let mut bound = PodInterfaces::new();
        let local = snapshot
            .pods()
            .filter(|p| p.node.as_deref() == Some(node) && p.is_policy_endpoint());
        for pod in local {
            let previous = self.by_pod.get(&pod.key);
            let mut bindings = BTreeMap::new();
            for ip in &pod.ips {
                let route = learned.get(ip);
                let binding = match (previous.and_then(|b| b.get(ip)), route) {
                    (Some(old), route) => {
                        let gone_since = if present.contains(&old.veth) {
                            None
                        } else {
                            Some(old.gone_since.unwrap_or(now))
                        };
                        match (gone_since, route) {
                            (Some(since), Some(veth))
                                if now.saturating_duration_since(since) >= REBIND_AFTER =>
                            {
                                Binding {
                                    veth: veth.clone(),
                                    gone_since: None,
                                }
                            }
                            _ => Binding {
                                veth: old.veth.clone(),
                                gone_since,
                            },
                        }
                    }
                    (None, Some(veth)) => Binding {
                        veth: veth.clone(),
                        gone_since: None,
                    },
                    (None, None) => continue,
                };
                bound.insert(*ip, binding.veth.clone());
                bindings.insert(*ip, binding);
            }
            if !bindings.is_empty() {
                next.insert(pod.key.clone(), bindings);
            }
        }
        self.by_pod = next;
        bound
    }

    /// Whether some binding waits for [`REBIND_AFTER`] to pass, so the caller should call
    /// [`Bindings::update`] again later even if nothing else changes.
    pub fn rebind_pending(&self) -> bool {
        self.by_pod
            .values()
            .flat_map(BTreeMap::values)
            .any(|b| b.gone_since.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Pod;

    fn snapshot(pods: &[(&str, &str)]) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for (name, ip) in pods {
            snapshot.upsert_pod(Pod::running(
                ObjectKey::new("x", *name),
                Default::default(),
                "n1",
                [ip.parse().unwrap()],
            ));
        }
        snapshot
    }

    fn routes(pairs: &[(&str, &str)]) -> PodInterfaces {
        pairs
            .iter()
            .map(|(ip, veth)| (ip.parse().unwrap(), (*veth).to_owned()))
            .collect()
    }

    fn veth_of(map: &PodInterfaces, ip: &str) -> Option<String> {
        map.get(&ip.parse().unwrap()).cloned()
    }

    #[test]
    fn a_reused_ip_stays_bound_to_the_old_veth_until_the_snapshot_names_the_new_pod() {
        let mut bindings = Bindings::default();
        let t0 = Instant::now();
        let a = snapshot(&[("a", "10.0.0.5")]);
        let bound = bindings.update(&a, "n1", &routes(&[("10.0.0.5", "veth-a")]), t0);
        assert_eq!(veth_of(&bound, "10.0.0.5").as_deref(), Some("veth-a"));
        // The CNI gave the address to a new veth; the snapshot still has pod a.
        let bound = bindings.update(&a, "n1", &routes(&[("10.0.0.5", "veth-b")]), t0);
        assert_eq!(veth_of(&bound, "10.0.0.5").as_deref(), Some("veth-a"));
        assert!(bindings.rebind_pending());
        // Pod a is deleted: the address is nobody's, so nothing binds it.
        let empty = snapshot(&[]);
        let bound = bindings.update(&empty, "n1", &routes(&[("10.0.0.5", "veth-b")]), t0);
        assert_eq!(veth_of(&bound, "10.0.0.5"), None);
        // Pod b is reported with the address: it binds to its own veth.
        let b = snapshot(&[("b", "10.0.0.5")]);
        let bound = bindings.update(&b, "n1", &routes(&[("10.0.0.5", "veth-b")]), t0);
        assert_eq!(veth_of(&bound, "10.0.0.5").as_deref(), Some("veth-b"));
    }

    #[test]
    fn a_pod_whose_veth_was_replaced_follows_it_after_the_grace_period() {
        let mut bindings = Bindings::default();
        let t0 = Instant::now();
        let a = snapshot(&[("a", "10.0.0.5")]);
        bindings.update(&a, "n1", &routes(&[("10.0.0.5", "veth-1")]), t0);
        let moved = routes(&[("10.0.0.5", "veth-2")]);
        let bound = bindings.update(&a, "n1", &moved, t0 + Duration::from_secs(1));
        assert_eq!(veth_of(&bound, "10.0.0.5").as_deref(), Some("veth-1"));
        let later = t0 + Duration::from_secs(1) + REBIND_AFTER;
        let bound = bindings.update(&a, "n1", &moved, later);
        assert_eq!(veth_of(&bound, "10.0.0.5").as_deref(), Some("veth-2"));
        assert!(!bindings.rebind_pending());
    }

    #[test]
    fn a_veth_that_comes_back_cancels_the_rebind() {
        let mut bindings = Bindings::default();
        let t0 = Instant::now();
        let a = snapshot(&[("a", "10.0.0.5")]);
        bindings.update(&a, "n1", &routes(&[("10.0.0.5", "veth-1")]), t0);
        bindings.update(&a, "n1", &routes(&[]), t0);
        assert!(bindings.rebind_pending());
        let bound = bindings.update(&a, "n1", &routes(&[("10.0.0.5", "veth-1")]), t0);
        assert_eq!(veth_of(&bound, "10.0.0.5").as_deref(), Some("veth-1"));
        assert!(!bindings.rebind_pending());
    }

    #[test]
    fn pods_of_other_nodes_and_unrouted_addresses_bind_nothing() {
        let mut bindings = Bindings::default();
        let a = snapshot(&[("a", "10.0.0.5"), ("b", "10.0.0.6")]);
        let bound = bindings.update(&a, "n2", &routes(&[("10.0.0.5", "veth-a")]), Instant::now());
        assert!(bound.is_empty());
        let bound = bindings.update(&a, "n1", &routes(&[("10.0.0.9", "veth-z")]), Instant::now());
        assert!(bound.is_empty());
    }
}
