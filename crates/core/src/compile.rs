//! The compiler: a snapshot and a node name in, the node's desired nftables state out.
//!
//! Deterministic and pure: the same snapshot gives a byte-identical ruleset whatever order the
//! objects arrived in. The layout (one `inet` table, see [`ruleset::TABLE_NAME`]):
//!
//! - Base chain `prerouting` (priority raw, before connection tracking) is the anti-spoofing
//!   chain, fed by [`PodInterfaces`] (which host-side veth each local pod address sits behind,
//!   from the node's routes). Set `pod_ifaces` holds the local pods' veths, `pod_iface_addrs4`/
//!   `6` the `veth . address` pairs (each veth with every address of its pod) and
//!   `pod_addrs4`/`6` the addresses of those pairs. It drops a packet that enters from a pod
//!   veth with a source address not paired with that veth (IPv6 link-local and `::` sources
//!   excepted: neighbour discovery and DAD use them), and a packet whose source is a paired
//!   address but which enters through any other interface: a pod that got a reused address
//!   behind a new veth before the agent heard of it cannot send as the address's previous
//!   owner, nor match the peer sets that still hold it. A pod's packet from its own address
//!   and veth is accepted first, after one set lookup (accept ends only this chain); the drops
//!   come after, each testing what the accepts left to decide (see `anti_spoof::anti_spoof_chain`).
//! - Base chain `postrouting` (priority srcnat - 5: after Service DNAT, before SNAT) first drops
//!   packets to a paired address that leave through an interface not paired with it (the same
//!   reused address: nothing addressed to the previous owner, not even its established
//!   connections, reaches the new pod): `ip daddr vmap @pod_dests4` jumps to the address's
//!   guard chain `to_<veth>`, `oifname != "<veth>" counter drop`. Then it accepts established
//!   and related packets, neighbour discovery, and packets from the node itself (kubelet
//!   probes); then dispatches on the source address through the `egress4`/`egress6` verdict
//!   maps and on the destination through `ingress4`/`ingress6`. Base chain `input` does the
//!   egress dispatch for packets from pods to the node's own addresses.
//!   With no interface known (`kube-nftpol compile`, bridge CNIs) the anti-spoofing sets are
//!   empty and none of these drops can match; on a bridge, `starting_pods` still covers the
//!   bridge's addresses ([`compile_with_bridged`]).
//! - Revocation ([`Options::revoke_established`]): sets `revoked4`/`6` hold the headers of
//!   the packets of connections the agent ended (`ct original ip saddr . ct original ip daddr
//!   . meta l4proto . th sport . th dport`, both directions, with timeouts; filled at run
//!   time). Base chain `forward` (priority filter: `reject` is not allowed in postrouting) and
//!   the top of `input` send a packet of such a connection that conntrack does not hold as
//!   assured (its entry was deleted: conntrack picks it up again as a new one, whose first
//!   answered packet confirms it) to chain `revoked`: a counted TCP reset (not for a
//!   handshake's first packet), or ICMP port unreachable. Assured connections pay one compare.
//! - One chain per isolated pod and direction (`in_<ns>_<pod>`, `eg_<ns>_<pod>`) on this node:
//!   traffic to itself first, then one rule per policy rule and address set (counted, commented
//!   with the policy), then a rate-limited NFLOG rule and a counted drop. Egress chains `return`
//!   on allow so the destination's ingress chain still runs; ingress chains `accept`. A pod of
//!   an audited namespace ([`crate::model::Enforcement::Audit`], or [`Options::audit_all`])
//!   ends its chains with the NFLOG rule under the audit prefix and a counted allow instead.
//! - Observe mode ([`crate::model::OBSERVE_ANNOTATION`], or [`Options::observe_all`]): the
//!   first packet of every new connection of the namespace's pods is logged with its verdict
//!   ([`LogKind`]). An isolated pod's allowing rules `goto` its allow-log chain
//!   (`ai_<ns>_<pod>`, `ae_<ns>_<pod>`: a rate-limited NFLOG rule, then the allow); a pod no
//!   policy isolates in a direction gets a dispatch-map entry to its open-log chain
//!   (`oi_<ns>_<pod>`, `oe_<ns>_<pod>`: the NFLOG rule alone). Only packets that reach the pod
//!   chains are logged, and `postrouting` accepts established and related packets before, so
//!   only first packets are. Pods of other namespaces get nothing of this.
//! - Peers live in named sets shared by every pod a policy rule applies to:
//!   `np_<ns>_<policy>_<dir><rule>_pods4` (pod IPs), `..._cidr4` (ipBlocks, interval set) and
//!   `..._named4` (`address . protocol . port` for egress named ports, resolved per destination
//!   pod), with `6` twins. Port lists are anonymous `protocol . port` sets in the rule.
//!
//! Per packet: one verdict-map lookup per direction, then only the rules of the policies that
//! select that pod, each one set lookup. Nothing walks the cluster's pods or policies.
//!
//! The code, one job a file: this one holds the public API and [`compile_with_interfaces`],
//! which picks the local pods, creates the verdict maps and puts the parts together.
//! `anti_spoof` builds `prerouting` and its sets, the misrouting guards and the
//! `starting_pods` chain; `base_chains` the rules of `postrouting` and `input`; `pod_chains` the
//! chain of each isolated pod and direction with its default deny, and the observe-mode log
//! chains; `rules` compiles one policy
//! rule into matches and peer sets, helped by `peers` (the pods a rule's peers select), [`ranges`]
//! (ipBlock arithmetic) and `names` (bounded, unique object names). [`ruleset`] is the output,
//! rendered by [`render_text`] and [`render_json`].

mod anti_spoof;
mod base_chains;
mod cluster_rules;
mod names;
mod peers;
mod pod_chains;
pub mod ranges;
pub mod render_json;
pub mod render_text;
mod rule_sets;
mod rules;
pub mod ruleset;
mod tiers;

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{
    ClusterAction, ClusterPolicy, Direction, Enforcement, Pod, PodInterfaces, Policy, Snapshot,
    Tier,
};
use anti_spoof::{
    anti_spoof_chain, anti_spoof_sets, destination_guards, destination_map_name,
    starting_pods_chain, veth_pairs,
};
pub use base_chains::{REVOKED_CHAIN, revoked_set_name};
use base_chains::{base_chains, revoked_sets};
use pod_chains::{log_chain, pod_chain};

pub use ruleset::{
    AddrField, Chain, Expr, Family, Hook, MapVerdict, ProtocolPorts, Rule, Ruleset, Set,
    SetElement, SetKind, TABLE_FAMILY, TABLE_NAME, VerdictMap,
};
use tiers::{Next, TierContext, tier_chain};
pub use tiers::{deny_chain_name, rule_comment as tier_rule_comment, tier_chain_name};

/// Knobs that change the emitted ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// NFLOG group the default-deny rules log to.
    pub nflog_group: u16,
    /// Logged denied packets per second, per pod and direction (the kernel drops the rest from
    /// the log, never from the drop counter).
    pub log_rate_per_second: u32,
    /// Burst allowed above the rate, in packets.
    pub log_burst_packets: u32,
    /// Audit every namespace, whatever its annotation (`agent --audit`): default deny logs
    /// and accepts instead of dropping.
    pub audit_all: bool,
    /// Observe every namespace, whatever its annotation (`agent --observe`): log the first
    /// packet of every new connection with its verdict.
    pub observe_all: bool,
    /// Answer the packets of connections the agent ended with a reset or an ICMP error: the
    /// `revoked4`/`6` sets and chains `forward` and `revoked` (off with
    /// `agent --keep-established`).
    pub revoke_established: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nflog_group: 100,
            log_rate_per_second: 10,
            log_burst_packets: 20,
            audit_all: false,
            observe_all: false,
            revoke_established: true,
        }
    }
}

/// What a kube-nftpol NFLOG rule logs, named at the start of its prefix: the whole prefix is
/// `knp:<kind>:<direction>:<namespace>/<pod>` (see [`LogKind::log_prefix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogKind {
    /// A pod's default deny dropped the packet (`knp:deny:`).
    Denied,
    /// An audited pod's default deny let the packet through (`knp:audit:`).
    Audited,
    /// A policy rule allowed the first packet of a connection of an observed pod
    /// (`knp:allow:`).
    Allowed,
    /// The first packet of a connection of an observed pod that no policy isolates in this
    /// direction (`knp:open:`).
    NotIsolated,
    /// A ClusterNetworkPolicy Deny rule of the tier dropped the packet (`knp:adeny:`,
    /// `knp:bdeny:`).
    TierDenied(Tier),
    /// A ClusterNetworkPolicy Deny rule of the tier matched the packet of an audited pod,
    /// which went through (`knp:aaudit:`, `knp:baudit:`).
    TierAudited(Tier),
}

impl LogKind {
    /// Every kind.
    pub const ALL: [LogKind; 8] = [
        LogKind::Denied,
        LogKind::Audited,
        LogKind::Allowed,
        LogKind::NotIsolated,
        LogKind::TierDenied(Tier::Admin),
        LogKind::TierDenied(Tier::Baseline),
        LogKind::TierAudited(Tier::Admin),
        LogKind::TierAudited(Tier::Baseline),
    ];

    /// The start of the prefix (`knp:deny:`, ...).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Denied => "knp:deny:",
            Self::Audited => "knp:audit:",
            Self::Allowed => "knp:allow:",
            Self::NotIsolated => "knp:open:",
            Self::TierDenied(Tier::Admin) => "knp:adeny:",
            Self::TierDenied(Tier::Baseline) => "knp:bdeny:",
            Self::TierAudited(Tier::Admin) => "knp:aaudit:",
            Self::TierAudited(Tier::Baseline) => "knp:baudit:",
        }
    }

    /// The kind a log prefix starts with, and the rest (`<direction>:<namespace>/<pod>`).
    pub fn split_prefix(prefix: &str) -> Option<(Self, &str)> {
        Self::ALL
            .into_iter()
            .find_map(|kind| prefix.strip_prefix(kind.prefix()).map(|rest| (kind, rest)))
    }

    /// The ClusterNetworkPolicy tier whose Deny rule logged, for the tier kinds.
    pub fn tier(self) -> Option<Tier> {
        match self {
            Self::TierDenied(tier) | Self::TierAudited(tier) => Some(tier),
            _ => None,
        }
    }

    /// Whether the packet was let through by audit mode (a deny that only logged).
    pub fn is_audit(self) -> bool {
        matches!(self, Self::Audited | Self::TierAudited(_))
    }

    /// Whether the packet was dropped.
    pub fn is_deny(self) -> bool {
        matches!(self, Self::Denied | Self::TierDenied(_))
    }

    /// `knp:<kind>:<direction>:<namespace>/<pod>`, cut at nftables' 127 bytes (a very long pod
    /// name loses its end; the flow log finds the pod by its address then).
    pub fn log_prefix(self, direction: Direction, pod: &Pod) -> String {
        truncate(
            format!(
                "{}{direction}:{}/{}",
                self.prefix(),
                pod.key.namespace,
                pod.key.name
            ),
            MAX_LOG_PREFIX,
        )
    }
}

/// The comment of the counted drop that ends an enforced pod chain
/// (`default deny ingress <ns>/<pod>`).
pub const DENY_COMMENT: &str = "default deny";
/// The comment of the counted accept (or return) that ends an audited pod chain
/// (`audit ingress <ns>/<pod>`).
pub const AUDIT_COMMENT: &str = "audit";
/// nftables caps log prefixes at 127 bytes.
const MAX_LOG_PREFIX: usize = 127;
/// nftables caps rule comments at 128 bytes.
const MAX_COMMENT: usize = 128;

/// The verdict-map name for a direction and family (`ingress4`, `egress6`, ...).
pub fn dispatch_map_name(direction: Direction, family: Family) -> String {
    format!("{}{}", direction.as_str(), family.suffix())
}

/// The chain name of a pod's direction (`in_<ns>_<pod>`, `eg_<ns>_<pod>`).
pub fn pod_chain_name(pod: &Pod, direction: Direction) -> String {
    let dir = match direction {
        Direction::Ingress => "in",
        Direction::Egress => "eg",
    };
    names::object_name(dir, &[&pod.key.namespace, &pod.key.name], "")
}

/// The name of an observed pod's log chain for `kind` (allow-log `ai_`/`ae_`, open-log
/// `oi_`/`oe_`); other kinds log in the pod chain itself.
pub fn log_chain_name(pod: &Pod, direction: Direction, kind: LogKind) -> String {
    let dir = match (kind, direction) {
        (LogKind::NotIsolated, Direction::Ingress) => "oi",
        (LogKind::NotIsolated, Direction::Egress) => "oe",
        (_, Direction::Ingress) => "ai",
        (_, Direction::Egress) => "ae",
    };
    names::object_name(dir, &[&pod.key.namespace, &pod.key.name], "")
}

/// Name of the anti-spoofing chain, base chain `prerouting`.
pub const ANTI_SPOOF_CHAIN: &str = "prerouting";

/// The chain that drops the traffic of addresses behind local veths that no pod claims yet,
/// while an isolated pod of the node waits for its IP (`anti_spoof::starting_pods_chain`).
pub const STARTING_PODS_CHAIN: &str = "starting_pods";

/// Compiles the desired ruleset of `node`, without anti-spoofing entries (no interface is
/// known): what `kube-nftpol compile` prints.
pub fn compile(snapshot: &Snapshot, node: &str, options: &Options) -> Ruleset {
    compile_with_interfaces(snapshot, node, &PodInterfaces::new(), options)
}

/// Compiles the desired ruleset of `node`; `interfaces` says which veth each local pod sits
/// behind, so packets entering from that veth with another source address are dropped.
pub fn compile_with_interfaces(
    snapshot: &Snapshot,
    node: &str,
    interfaces: &PodInterfaces,
    options: &Options,
) -> Ruleset {
    compile_with_bridged(snapshot, node, interfaces, &[], options)
}

/// [`compile_with_interfaces`], with `bridged`: the addresses behind the node's bridges (a
/// bridge CNI's pod range, as the agent's `dataplane::interfaces` finds them). No veth names
/// those pods, so anti-spoofing and the reused-address guards cannot cover them;
/// `starting_pods` does, by address: while an isolated pod of the node waits for its IP, the
/// bridged addresses no pod owns are dropped both ways, as the unclaimed veths' are.
pub fn compile_with_bridged(
    snapshot: &Snapshot,
    node: &str,
    interfaces: &PodInterfaces,
    bridged: &[IpAddr],
    options: &Options,
) -> Ruleset {
    let mut sets = BTreeMap::new();
    let mut maps: BTreeMap<String, Vec<(IpAddr, MapVerdict)>> = BTreeMap::new();
    for direction in [Direction::Ingress, Direction::Egress] {
        for family in Family::ALL {
            maps.insert(dispatch_map_name(direction, family), Vec::new());
        }
    }
    for family in Family::ALL {
        maps.insert(destination_map_name(family), Vec::new());
    }

    let local_pods: Vec<&Pod> = snapshot
        .pods()
        .filter(|p| p.node.as_deref() == Some(node) && p.is_policy_endpoint())
        .collect();
    let pairs = veth_pairs(&local_pods, interfaces);
    anti_spoof_sets(&pairs, &mut sets);
    let mut pod_chains = destination_guards(&pairs, &mut maps);
    let tiers = Tier::ALL.map(|tier| snapshot.tier_policies(tier));
    for pod in local_pods {
        let observed = options.observe_all || snapshot.observed(&pod.key.namespace);
        let audited =
            options.audit_all || snapshot.enforcement(&pod.key.namespace) == Enforcement::Audit;
        for direction in [Direction::Ingress, Direction::Egress] {
            let isolating: Vec<&Policy> = snapshot
                .policies_in(&pod.key.namespace)
                .filter(|p| p.rules(direction).is_some() && p.selects(pod))
                .collect();
            let [admin, baseline] = tiers.each_ref().map(|policies| {
                policies
                    .iter()
                    .copied()
                    .filter(|p| p.applies(snapshot, pod, direction))
                    .collect::<Vec<&ClusterPolicy>>()
            });
            // NetworkPolicies are final for a pod they isolate: its Baseline tier is never
            // reached.
            let baseline = if isolating.is_empty() {
                baseline
            } else {
                Vec::new()
            };
            let accepts = admin.iter().chain(&baseline).any(|p| {
                p.rules(direction)
                    .iter()
                    .any(|r| r.action == ClusterAction::Accept)
            });
            let allow_log = (observed && (!isolating.is_empty() || accepts))
                .then(|| log_chain(pod, direction, LogKind::Allowed, options));
            let open_log = (observed && isolating.is_empty())
                .then(|| log_chain(pod, direction, LogKind::NotIsolated, options));
            let context = TierContext {
                snapshot,
                pod,
                direction,
                options,
                allow_log: allow_log.as_ref().map(|c| c.name.as_str()),
                audited,
            };
            // Built from the last step back: each chain's `next` is the one after it.
            let mut next = match &open_log {
                Some(chain) => Next::Chain(chain.name.clone()),
                None => Next::Allow,
            };
            if !baseline.is_empty() {
                let chains = tier_chain(&context, Tier::Baseline, &baseline, &next, &mut sets);
                next = Next::Chain(chains[0].name.clone());
                pod_chains.extend(chains);
            }
            if !isolating.is_empty() {
                let chain = pod_chain(
                    snapshot,
                    pod,
                    direction,
                    &isolating,
                    context.allow_log,
                    options,
                    &mut sets,
                );
                next = Next::Chain(chain.name.clone());
                pod_chains.push(chain);
            }
            if !admin.is_empty() {
                let chains = tier_chain(&context, Tier::Admin, &admin, &next, &mut sets);
                next = Next::Chain(chains[0].name.clone());
                pod_chains.extend(chains);
            }
            pod_chains.extend(allow_log);
            pod_chains.extend(open_log);
            let Next::Chain(entry) = next else {
                continue;
            };
            for ip in &pod.ips {
                // Egress chains return to `postrouting`, so the destination's ingress chain
                // still decides.
                let verdict = match direction {
                    Direction::Ingress => MapVerdict::Goto(entry.clone()),
                    Direction::Egress => MapVerdict::Jump(entry.clone()),
                };
                if let Some(map) = maps.get_mut(&dispatch_map_name(direction, Family::of(*ip))) {
                    map.push((*ip, verdict));
                }
            }
        }
    }
    if let Some((chain, unclaimed)) = starting_pods_chain(snapshot, node, interfaces, bridged) {
        for ip in unclaimed {
            for (direction, verdict) in [
                (Direction::Ingress, MapVerdict::Goto(chain.name.clone())),
                (Direction::Egress, MapVerdict::Jump(chain.name.clone())),
            ] {
                if let Some(map) = maps.get_mut(&dispatch_map_name(direction, Family::of(ip))) {
                    map.push((ip, verdict));
                }
            }
        }
        pod_chains.push(chain);
    }

    // Base chains first, in hook order; then the regular chains by name.
    let mut chains = vec![anti_spoof_chain()];
    let mut base = base_chains(options.revoke_established);
    let regular = base.split_off(base.partition_point(|c| c.hook.is_some()));
    chains.extend(base);
    pod_chains.extend(regular);
    pod_chains.sort_by(|a, b| a.name.cmp(&b.name));
    chains.extend(pod_chains);
    if options.revoke_established {
        for set in revoked_sets() {
            sets.insert(set.name.clone(), set);
        }
    }
    let maps = maps
        .into_iter()
        .map(|(name, mut elements)| {
            elements.sort_by_key(|(ip, _)| *ip);
            // Two pods claiming one IP: keep the first by key (already first in the list).
            elements.dedup_by(|a, b| a.0 == b.0);
            let family = if name.ends_with('4') {
                Family::V4
            } else {
                Family::V6
            };
            VerdictMap {
                name,
                family,
                elements,
            }
        })
        .collect();
    Ruleset {
        maps,
        sets: sets.into_values().collect(),
        chains,
    }
}

/// Truncates at a char boundary to at most `max` bytes.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests;
