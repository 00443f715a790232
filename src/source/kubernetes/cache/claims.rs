//! Who claims each pod IP, kept up to date as pods come and go: when each pod last changed its
//! IPs (the claim order [`super::Cache::snapshot`] ranks conflicting claims by), and which
//! policy endpoints hold each address. The cache asks only for the contested addresses, so a
//! snapshot at 10,000 pods no longer walks every pod to find the usual none.
//!
//! Pure bookkeeping: it does not decide who wins a contested address.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::model::{ObjectKey, Pod};

/// The claims of every pod in the cache.
#[derive(Debug, Default)]
pub(super) struct Claims {
    pods: HashMap<ObjectKey, Claim>,
    /// The policy endpoints holding each address (a pod listed once per time it lists the
    /// address).
    holders: HashMap<IpAddr, Vec<ObjectKey>>,
    /// The addresses with more than one holder.
    contested: BTreeSet<IpAddr>,
    last: u64,
}

/// One pod's latest claim.
#[derive(Debug)]
struct Claim {
    /// Sequence number of the claim: bumped whenever the pod's IPs change.
    sequence: u64,
    ips: Vec<IpAddr>,
    /// Whether the pod is a policy endpoint, so its addresses are in `holders`.
    holds: bool,
}

impl Claims {
    /// Records the current version of a pod: a new claim when its IPs changed (or it is new),
    /// and its addresses held while it is a policy endpoint.
    pub(super) fn record(&mut self, pod: &Pod) {
        let sequence = match self.pods.get(&pod.key) {
            Some(claim) if claim.ips == pod.ips => claim.sequence,
            _ => {
                self.last += 1;
                self.last
            }
        };
        self.release(&pod.key);
        let holds = pod.is_policy_endpoint();
        if holds {
            for ip in &pod.ips {
                let holders = self.holders.entry(*ip).or_default();
                holders.push(pod.key.clone());
                if holders.len() > 1 {
                    self.contested.insert(*ip);
                }
            }
        }
        self.pods.insert(
            pod.key.clone(),
            Claim {
                sequence,
                ips: pod.ips.clone(),
                holds,
            },
        );
    }

    /// Forgets a pod that is gone.
    pub(super) fn forget(&mut self, key: &ObjectKey) {
        self.release(key);
        self.pods.remove(key);
    }

    /// The sequence number of a pod's latest claim; 0 for a pod never recorded.
    pub(super) fn sequence(&self, key: &ObjectKey) -> u64 {
        self.pods.get(key).map_or(0, |claim| claim.sequence)
    }

    /// Each address held by more than one policy endpoint, in address order, with its holders
    /// in key order.
    pub(super) fn contested(&self) -> impl Iterator<Item = (IpAddr, Vec<&ObjectKey>)> {
        self.contested.iter().map(|ip| {
            let mut holders: Vec<&ObjectKey> = self.holders.get(ip).into_iter().flatten().collect();
            holders.sort();
            (*ip, holders)
        })
    }

    /// Takes the pod's addresses out of `holders`.
    fn release(&mut self, key: &ObjectKey) {
        let Some(claim) = self.pods.get(key).filter(|claim| claim.holds) else {
            return;
        };
        for ip in &claim.ips {
            let Entry::Occupied(mut entry) = self.holders.entry(*ip) else {
                continue;
            };
            entry.get_mut().retain(|holder| holder != key);
            match entry.get().len() {
                0 => {
                    entry.remove();
                    self.contested.remove(ip);
                }
                1 => {
                    self.contested.remove(ip);
                }
                _ => {}
            }
        }
    }
}
