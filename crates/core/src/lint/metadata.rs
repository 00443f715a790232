//! `metadata-reachable`: the cloud metadata addresses (the config's `metadata-addresses`)
//! must stay out of reach of pods whose egress is restricted. For each egress-isolating policy's
//! pods (or its witness, [`super::probe`]) the evaluator says whether a connection to each
//! address on TCP port 80 is allowed, and which rule allows it: that rule is the finding.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::context::{Context, finding, peer_field, policy_ref, rule_field};
use super::{Finding, RuleId};
use crate::model::{Direction, ObjectKey, PeerKind, Protocol};
use crate::policy::{DirectionVerdict, Endpoint};

/// The port the metadata services answer on.
const METADATA_PORT: u16 = 80;

pub(super) fn check(context: &Context<'_>, out: &mut Vec<Finding>) {
    if !context.enabled(RuleId::MetadataReachable) {
        return;
    }
    let probes = context.probes();
    // An address a pod owns is that pod's, not a metadata service (and the probes' snapshot,
    // which holds few pods, could not tell).
    let addresses: Vec<IpAddr> = context
        .config
        .metadata_addresses
        .iter()
        .copied()
        .filter(|address| context.snapshot.pod_by_ip(*address).is_none())
        .collect();
    // (allowing policy, rule index, address), with the namespaces whose pods it lets through.
    let mut reached: BTreeSet<(ObjectKey, usize, IpAddr)> = BTreeSet::new();
    for policy in context.valid_policies() {
        if policy.egress.is_none() {
            continue;
        }
        for subject in probes.subjects(policy).keys() {
            for address in &addresses {
                let verdict = probes.egress(
                    subject,
                    Endpoint::Ip(*address),
                    Protocol::Tcp,
                    METADATA_PORT,
                );
                if let Some(DirectionVerdict::Allowed { rule, .. }) = verdict {
                    reached.insert((rule.policy, rule.index, *address));
                }
            }
        }
    }
    for (key, index, address) in reached {
        let Some(policy) = context.snapshot.policy(&key) else {
            continue;
        };
        let Some(rule) = policy.egress.iter().flatten().find(|r| r.index == index) else {
            continue;
        };
        let peer = rule
            .peers
            .iter()
            .flatten()
            .find(|peer| peer.contains_ip(address));
        let host = match address {
            IpAddr::V4(_) => format!("{address}/32"),
            IpAddr::V6(_) => format!("{address}/128"),
        };
        let (field, what, fix) = match peer {
            Some(peer) => {
                let cidr = match &peer.kind {
                    PeerKind::IpBlock { cidr, .. } => cidr.to_string(),
                    PeerKind::Pods { .. } => String::new(),
                };
                (
                    peer_field(Direction::Egress, index, peer.index),
                    format!("ipBlock {cidr}"),
                    format!("add `{host}` to this ipBlock's `except`"),
                )
            }
            None => (
                rule_field(Direction::Egress, index),
                "a rule without `to` (every destination)".to_owned(),
                format!(
                    "list the destinations in `to`, as ipBlocks with `except: [{host}]` where \
                     they are broad"
                ),
            ),
        };
        out.push(finding(
            RuleId::MetadataReachable,
            policy_ref(policy),
            Some(field),
            format!(
                "{what} lets pods of namespace {} whose egress is restricted reach the cloud \
                 metadata address {address} on TCP {METADATA_PORT}, which hands out the node's \
                 credentials",
                policy.key.namespace
            ),
            fix,
        ));
    }
}
