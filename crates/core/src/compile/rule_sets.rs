//! The named sets a policy rule (NetworkPolicy or ClusterNetworkPolicy) adds to the node's
//! shared set map: one per family, their elements split by address family, ranges merged into
//! interval elements. Owns nothing but how a set is built and inserted; which elements a rule's
//! peers give is the rule compilers' (`rules`, `cluster_rules`).

use std::collections::BTreeMap;

use super::ranges::{self, AddrRange};
use super::ruleset::{Family, Set, SetElement, SetKind};

/// Inserts the set `name` of `family` and `kind` with `elements`.
pub(super) fn insert(
    sets: &mut BTreeMap<String, Set>,
    name: &str,
    family: Family,
    kind: SetKind,
    elements: Vec<SetElement>,
    comment: String,
) {
    let set = Set {
        name: name.to_owned(),
        family,
        kind,
        elements,
        comment,
    };
    sets.insert(name.to_owned(), set);
}

/// Inserts the IPv4 and IPv6 sets `names` of `kind`, each with the `elements` of its family
/// (sorted and deduplicated), both with `comment`.
pub(super) fn insert_per_family(
    sets: &mut BTreeMap<String, Set>,
    names: &[String; 2],
    kind: SetKind,
    mut elements: Vec<SetElement>,
    comment: &str,
) {
    elements.sort();
    elements.dedup();
    for (family, name) in Family::ALL.into_iter().zip(names) {
        let of_family = elements
            .iter()
            .filter(|element| address(element).is_some_and(|ip| Family::of(ip) == family))
            .cloned()
            .collect();
        insert(sets, name, family, kind, of_family, comment.to_owned());
    }
}

/// Address ranges of one family as the elements of an interval set: merged, each a range.
pub(super) fn interval_elements(ranges: Vec<AddrRange>, family: Family) -> Vec<SetElement> {
    ranges::merge(ranges)
        .into_iter()
        .map(|range| {
            let (start, end) = range.bounds(family);
            SetElement::Range(start, end)
        })
        .collect()
}

/// The address that decides an element's family.
fn address(element: &SetElement) -> Option<std::net::IpAddr> {
    match element {
        SetElement::Address(ip)
        | SetElement::Range(ip, _)
        | SetElement::AddressProtocolPort(ip, ..)
        | SetElement::InterfaceAddress(_, ip)
        | SetElement::Connection(ip, ..) => Some(*ip),
        SetElement::Interface(_) => None,
    }
}
