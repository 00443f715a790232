//! The base chains `postrouting` and `input`: the guard lookup first, then what every packet
//! may pass (replies, neighbour discovery, the node's own packets), then the dispatch to the
//! pod chains through the `ingress4`/`6` and `egress4`/`6` verdict maps. With
//! [`Options::revoke_established`](super::Options::revoke_established), the connections the
//! agent ended: the `revoked4`/`6` sets, base chain `forward` and the top of `input` send a
//! packet of one of them that conntrack does not know as assured to chain `revoked`, which answers a TCP reset or an ICMP error
//! (but lets a TCP handshake's first packet go on: that is a new connection).
//!
//! Owns the rule lists of those chains and the revoked sets' declarations. Does not own the
//! misrouting guard it looks up (`anti_spoof`), the chains the maps dispatch to
//! (`pod_chains`), nor the maps' elements ([`super::compile_with_interfaces`]).

use super::anti_spoof::misrouted_rule;
use super::dispatch_map_name;
use super::ruleset::{AddrField, Chain, Expr, Family, Hook, Rule, Set, SetKind};
use crate::model::{Direction, Protocol};

/// The chain that answers the packets of connections the agent ended.
pub const REVOKED_CHAIN: &str = "revoked";

/// The set of connections the agent ended, of a family (`revoked4`, `revoked6`): the headers
/// of their packets in both directions, each for a while ([`SetKind::Connections`]).
pub fn revoked_set_name(family: Family) -> String {
    format!("revoked{}", family.suffix())
}

/// The revoked sets, empty: the agent fills them at run time.
pub(super) fn revoked_sets() -> [Set; 2] {
    Family::ALL.map(|family| Set {
        name: revoked_set_name(family),
        family,
        kind: SetKind::Connections,
        elements: Vec::new(),
        comment: "connections ended by a policy change (filled by the agent, with timeouts)".into(),
    })
}

/// A new packet of a revoked connection goes to [`REVOKED_CHAIN`] and, unless answered
/// there, comes back (`input` goes on with its rules).
fn revoked_rules() -> [Rule; 2] {
    Family::ALL.map(|family| Rule {
        exprs: vec![
            Expr::CtNotAssured,
            Expr::ConnectionInSet(family, revoked_set_name(family)),
            Expr::Jump(REVOKED_CHAIN.into()),
        ],
        comment: Some("connection ended by a policy change".into()),
    })
}

/// `forward` (`reject` is not allowed in `postrouting`) and `revoked`.
fn revoked_chains() -> [Chain; 2] {
    [
        Chain {
            name: "forward".into(),
            hook: Some(Hook::Forward),
            rules: revoked_rules().into(),
        },
        Chain {
            name: REVOKED_CHAIN.into(),
            hook: None,
            rules: vec![
                // A handshake's first packet opens a new connection on the same ports: the
                // pod chains decide it as any other.
                Rule {
                    exprs: vec![Expr::TcpInitialSyn, Expr::Return],
                    comment: Some("revoked: a new connection".into()),
                },
                Rule {
                    exprs: vec![
                        Expr::ProtocolIs(Protocol::Tcp),
                        Expr::Counter,
                        Expr::RejectWithTcpReset,
                    ],
                    comment: Some("revoked: tcp reset".into()),
                },
                Rule {
                    exprs: vec![Expr::Counter, Expr::Reject],
                    comment: Some("revoked: port unreachable".into()),
                },
            ],
        },
    ]
}

/// The base chains (`postrouting`, `input`, and with `revoke` `forward`), and with `revoke`
/// chain `revoked`.
pub(super) fn base_chains(revoke: bool) -> Vec<Chain> {
    let dispatch = |field, direction| {
        Family::ALL.map(|family| Rule {
            exprs: vec![Expr::DispatchBy(
                field,
                family,
                dispatch_map_name(direction, family),
            )],
            comment: None,
        })
    };
    let always = |comment: &str, exprs: Vec<Expr>| Rule {
        exprs,
        comment: Some(comment.into()),
    };
    let established = always("replies", vec![Expr::CtEstablishedOrRelated, Expr::Accept]);
    let nd = always(
        "neighbour discovery",
        vec![Expr::Icmpv6NeighborDiscovery, Expr::Accept],
    );
    let from_node = always("from this node", vec![Expr::SourceIsLocal, Expr::Accept]);

    let mut postrouting: Vec<Rule> = Family::ALL.map(misrouted_rule).into();
    postrouting.extend([established.clone(), nd.clone(), from_node]);
    postrouting.extend(dispatch(AddrField::Source, Direction::Egress));
    postrouting.extend(dispatch(AddrField::Destination, Direction::Ingress));
    let mut input = Vec::new();
    if revoke {
        input.extend(revoked_rules());
    }
    input.extend([established, nd]);
    input.extend(dispatch(AddrField::Source, Direction::Egress));
    let mut chains = vec![
        Chain {
            name: "postrouting".into(),
            hook: Some(Hook::Postrouting),
            rules: postrouting,
        },
        Chain {
            name: "input".into(),
            hook: Some(Hook::Input),
            rules: input,
        },
    ];
    if revoke {
        chains.extend(revoked_chains());
    }
    chains
}
