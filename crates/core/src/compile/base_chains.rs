//! The base chains `postrouting` and `input`: the guard lookup first, then what every packet
//! may pass (replies, neighbour discovery, the node's own packets), then the dispatch to the
//! pod chains through the `ingress4`/`6` and `egress4`/`6` verdict maps.
//!
//! Owns the rule lists of those two chains. Does not own the misrouting guard it looks up
//! (`anti_spoof`), the chains the maps dispatch to (`pod_chains`), nor the maps' elements
//! ([`super::compile_with_interfaces`]).

use super::anti_spoof::misrouted_rule;
use super::dispatch_map_name;
use super::ruleset::{AddrField, Chain, Expr, Family, Hook, Rule};
use crate::model::Direction;

pub(super) fn base_chains() -> Vec<Chain> {
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
    let mut input = vec![established, nd];
    input.extend(dispatch(AddrField::Source, Direction::Egress));
    vec![
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
    ]
}
