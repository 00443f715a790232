//! Reading the agent's table back in a node namespace (`nft` itself runs through the
//! test-support crate's runner, re-exported here).
//!
//! [`applied`] decides whether the kernel holds what the compiler asks for: every chain, set
//! and map of the expected [`Summary`] is there with the same content, and nothing else is,
//! except objects the agent may add for anti-spoofing (a `prerouting` chain, sets and maps
//! named `pod_*`). [`rule_handles`] lists each chain's rule handles, to tell a chain the agent
//! left alone from one it rewrote.
//!
//! [`exact_differences`] is the strict check of the tamper and churn suites: the agent's table
//! against the compiler's ruleset loaded by `nft -f` into a scratch namespace and listed back
//! the same way, object by object with every rule's expressions, in order ([`objects`]:
//! handles and counter values left out, set elements sorted), and the [`Summary`] compared
//! exactly, with nothing tolerated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube_nftpol::compile::{Ruleset, render_text};
use kube_nftpol::dataplane::readback::{self, Summary};
use serde_json::Value;

use crate::netns::Netns;
use crate::{NETNS_PREFIX, Result};

pub use kube_nftpol_test_support::nft::{apply, list_table, run};

/// Objects the agent may add beside the compiled ruleset (anti-spoofing).
pub fn is_tolerated_extra(name: &str) -> bool {
    name == "prerouting" || name.starts_with("pod_")
}

/// Why the listing is not (yet) the expected table; empty when it is.
pub fn applied(listing: Option<&str>, expected: &Summary) -> Result<Vec<String>> {
    let Some(listing) = listing else {
        return Ok(vec!["the table does not exist".to_owned()]);
    };
    let (actual, _) =
        readback::parse(listing).map_err(|e| format!("cannot read the listing: {e}"))?;
    Ok(differences(expected, &actual))
}

/// Every difference between the expected summary and the kernel's, tolerating the extras of
/// [`is_tolerated_extra`].
pub fn differences(expected: &Summary, actual: &Summary) -> Vec<String> {
    fn compare<T: PartialEq + std::fmt::Debug>(
        kind: &str,
        expected: &BTreeMap<String, T>,
        actual: &BTreeMap<String, T>,
        out: &mut Vec<String>,
    ) {
        for (name, content) in expected {
            match actual.get(name) {
                None => out.push(format!("{kind} {name} missing")),
                Some(got) if got != content => out.push(format!(
                    "{kind} {name}: expected {content:?}, found {got:?}"
                )),
                Some(_) => {}
            }
        }
        for name in actual.keys() {
            if !expected.contains_key(name) && !is_tolerated_extra(name) {
                out.push(format!("unexpected {kind} {name}"));
            }
        }
    }
    let mut out = Vec::new();
    compare("chain", &expected.chains, &actual.chains, &mut out);
    compare("set", &expected.sets, &actual.sets, &mut out);
    compare("map", &expected.maps, &actual.maps, &mut out);
    out
}

/// A JSON listing as comparable text per object: `table NAME`, `chain NAME`, `set NAME`,
/// `map NAME`, and `rules CHAIN` (its rules in order), each without handles and counter
/// values, set and map elements sorted (the kernel lists hash sets in its own order). The
/// elements of sets with timeouts are left out: they are the agent's runtime state (the
/// connections it revoked, which expire), not compiled, and the agent's own read-back ignores
/// them too.
pub fn objects(listing: &str) -> Result<BTreeMap<String, String>> {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(object) => {
                object.remove("handle");
                let expires = object
                    .get("flags")
                    .and_then(Value::as_array)
                    .is_some_and(|flags| flags.iter().any(|f| f == "timeout"));
                if expires {
                    object.remove("elem");
                }
                if let Some(counter) = object.get_mut("counter")
                    && counter.is_object()
                {
                    *counter = Value::Null;
                }
                if let Some(Value::Array(elements)) = object.get_mut("elem") {
                    elements.sort_by_key(Value::to_string);
                }
                object.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let items = listing_items(listing)?;
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for item in &items {
        let Some((kind, object)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if kind == "metainfo" {
            continue;
        }
        let mut object = object.clone();
        strip(&mut object);
        let field = |name: &str| object[name].as_str().unwrap_or_default().to_owned();
        let key = if kind == "rule" {
            format!("rules {}", field("chain"))
        } else {
            format!("{kind} {}", field("name"))
        };
        let entry = out.entry(key).or_default();
        entry.push_str(&object.to_string());
        entry.push('\n');
    }
    Ok(out)
}

/// What `nft` lists for `ruleset` loaded into an empty namespace: the reference the agent's
/// table is compared with.
pub async fn reference_listing(ruleset: &Ruleset) -> Result<String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let scratch = Netns::named(format!("{NETNS_PREFIX}-{}-ref{n}", std::process::id()));
    apply(scratch.name(), &render_text::render(ruleset)).await?;
    list_table(scratch.name())
        .await?
        .ok_or_else(|| "the reference table did not load".to_owned())
}

/// Every way the agent's table (`listing`) differs from the reference (`reference`, from
/// [`reference_listing`] of `expected`): its summary, then each object; empty when they are
/// the same.
pub fn exact_differences(
    listing: Option<&str>,
    expected: &Ruleset,
    reference: &str,
) -> Result<Vec<String>> {
    let Some(listing) = listing else {
        return Ok(vec!["the table does not exist".to_owned()]);
    };
    let (summary, _) =
        readback::parse(listing).map_err(|e| format!("cannot read the listing: {e}"))?;
    let wanted = Summary::of(expected);
    let mut out = Vec::new();
    if summary != wanted {
        out.push("its summary differs from the compiled ruleset's".to_owned());
        out.extend(differences(&wanted, &summary));
        for name in summary
            .chains
            .keys()
            .filter(|n| !wanted.chains.contains_key(*n))
        {
            if is_tolerated_extra(name) {
                out.push(format!("unexpected chain {name}"));
            }
        }
    }
    let (have, want) = (objects(listing)?, objects(reference)?);
    for (key, text) in &want {
        match have.get(key) {
            None => out.push(format!("{key} missing")),
            Some(got) if got != text => out.push(format!(
                "{key} differs:\n  kernel:   {got}  compiled: {text}"
            )),
            Some(_) => {}
        }
    }
    out.extend(
        have.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("unexpected {k}")),
    );
    Ok(out)
}

/// The items of a JSON listing's `nftables` array.
fn listing_items(listing: &str) -> Result<Vec<Value>> {
    let mut value: Value =
        serde_json::from_str(listing).map_err(|e| format!("listing is not JSON: {e}"))?;
    match value.get_mut("nftables").map(Value::take) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err("listing has no nftables array".to_owned()),
    }
}

/// Each chain's rule handles, in order, from a JSON listing.
pub fn rule_handles(listing: &str) -> Result<BTreeMap<String, Vec<u64>>> {
    let items = listing_items(listing)?;
    let mut chains: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for item in items {
        if let Some(chain) = item.get("chain").and_then(|c| c.get("name")) {
            chains
                .entry(chain.as_str().unwrap_or_default().to_owned())
                .or_default();
        } else if let Some(rule) = item.get("rule") {
            let chain = rule
                .get("chain")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let handle = rule
                .get("handle")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("a rule of chain {chain} has no handle"))?;
            chains.entry(chain.to_owned()).or_default().push(handle);
        }
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(chains: &[(&str, usize)], sets: &[(&str, &[&str])]) -> Summary {
        Summary {
            chains: chains
                .iter()
                .map(|(name, rules)| {
                    let rules = (0..*rules).map(|i| (format!("r{i}"), 2)).collect();
                    ((*name).to_owned(), rules)
                })
                .collect(),
            sets: sets
                .iter()
                .map(|(name, elements)| {
                    let elements = elements.iter().map(|e| (*e).to_owned()).collect();
                    ((*name).to_owned(), elements)
                })
                .collect(),
            maps: BTreeMap::new(),
        }
    }

    #[test]
    fn anti_spoofing_extras_are_tolerated_and_other_extras_are_not() {
        let expected = summary(
            &[("postrouting", 3)],
            &[("np_x_p_in0_pods4", &["10.0.0.1"])],
        );
        let mut actual = expected.clone();
        actual.chains.insert("prerouting".into(), Vec::new());
        actual
            .sets
            .insert("pod_ips4".into(), vec!["10.0.0.1".into()]);
        assert!(differences(&expected, &actual).is_empty());
        actual.chains.insert("in_x_stale".into(), Vec::new());
        assert_eq!(
            differences(&expected, &actual),
            ["unexpected chain in_x_stale"]
        );
    }

    #[test]
    fn missing_and_different_objects_are_reported() {
        let expected = summary(&[("postrouting", 3), ("in_x_a", 2)], &[("s", &["1.1.1.1"])]);
        let actual = summary(&[("postrouting", 3)], &[("s", &["2.2.2.2"])]);
        let found = differences(&expected, &actual);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("chain in_x_a missing"));
        assert!(found[1].starts_with("set s: expected"));
    }

    #[test]
    fn rule_handles_are_listed_per_chain_in_order() {
        let listing = r#"{"nftables": [{"metainfo": {}},
            {"chain": {"family": "inet", "table": "kube-nftpol", "name": "in_x_a"}},
            {"chain": {"family": "inet", "table": "kube-nftpol", "name": "empty"}},
            {"rule": {"chain": "in_x_a", "handle": 7, "expr": []}},
            {"rule": {"chain": "in_x_a", "handle": 9, "expr": []}}]}"#;
        let handles = rule_handles(listing).unwrap();
        assert_eq!(handles["in_x_a"], [7, 9]);
        assert!(handles["empty"].is_empty());
    }
}
