//! Builds the `nft -f` scripts that move the kernel from one state to another, each applied as
//! one transaction (nftables commits a whole script atomically: packets see the old table or
//! the new one, never a mix).
//!
//! - [`full_replace`]: whatever the table holds, make it exactly the desired ruleset. The base
//!   chains are never deleted (deleting them would unhook the table for a moment and drop
//!   queued state, kube-network-policies #402); everything else is flushed, deleted and
//!   declared again inside the same transaction.
//! - [`incremental`]: from the ruleset the dataplane installed last to the desired one, touching
//!   only what differs: set and map elements added or deleted, changed chains flushed and
//!   refilled, new objects added, stale ones deleted. Unchanged chains are not touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::kernel::TableObjects;
use crate::compile::render_text::{self, element, map_element, render_chain, render_set};
use crate::compile::{Chain, Ruleset, Set, TABLE_FAMILY, TABLE_NAME};

/// The script that makes the table exactly `desired`, given the objects the kernel holds now
/// (`None`: the table does not exist).
pub fn full_replace(current: Option<&TableObjects>, desired: &Ruleset) -> String {
    let mut out = String::new();
    let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
    if let Some(current) = current {
        let base: BTreeSet<&str> = desired
            .chains
            .iter()
            .filter(|c| c.hook.is_some())
            .map(|c| c.name.as_str())
            .collect();
        let _ = writeln!(out, "flush table {table}");
        for map in &current.maps {
            let _ = writeln!(out, "delete map {table} {map}");
        }
        for set in &current.sets {
            let _ = writeln!(out, "delete set {table} {set}");
        }
        for chain in current.chains.iter().filter(|c| !base.contains(c.as_str())) {
            let _ = writeln!(out, "delete chain {table} {chain}");
        }
    }
    out.push_str(&render_text::render(desired));
    out
}

/// The script that moves the table from `installed` to `desired` by changing only what
/// differs; `None` when nothing differs. Changes the script cannot express in place (a set
/// whose type changed, a different set of maps or base chains) return a full replace instead
/// (see [`Plan`]).
pub fn incremental(installed: &Ruleset, desired: &Ruleset) -> Plan {
    if installed == desired {
        return Plan::Nothing;
    }
    let map_names = |r: &Ruleset| {
        r.maps
            .iter()
            .map(|m| (m.name.clone(), m.family))
            .collect::<Vec<_>>()
    };
    let base_chains = |r: &Ruleset| {
        r.chains
            .iter()
            .filter(|c| c.hook.is_some())
            .map(|c| (c.name.clone(), c.hook))
            .collect::<Vec<_>>()
    };
    if map_names(installed) != map_names(desired) || base_chains(installed) != base_chains(desired)
    {
        return Plan::FullReplace;
    }
    let old_sets: BTreeMap<&str, &Set> = installed
        .sets
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let new_sets: BTreeMap<&str, &Set> =
        desired.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    for (name, new) in &new_sets {
        if let Some(old) = old_sets.get(name)
            && (old.kind != new.kind || old.family != new.family)
        {
            return Plan::FullReplace;
        }
    }
    let old_chains: BTreeMap<&str, &Chain> = installed
        .chains
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let new_chains: BTreeMap<&str, &Chain> = desired
        .chains
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();

    let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
    let mut out = String::new();
    let mut touched = Touched::default();

    // 1. New sets and new chains (with their rules), declared in a table block: sets first, so
    //    the new chains' rules can refer to them.
    let added_sets: Vec<&Set> = new_sets
        .iter()
        .filter(|(n, _)| !old_sets.contains_key(*n))
        .map(|(_, s)| *s)
        .collect();
    let added_chains: Vec<&Chain> = new_chains
        .iter()
        .filter(|(n, _)| !old_chains.contains_key(*n))
        .map(|(_, c)| *c)
        .collect();
    if !added_sets.is_empty() || !added_chains.is_empty() {
        let _ = writeln!(out, "table {table} {{");
        for set in &added_sets {
            render_set(&mut out, set);
            touched.sets.push(set.name.clone());
        }
        for chain in &added_chains {
            render_chain(&mut out, chain);
            touched.chains.push(chain.name.clone());
        }
        out.push_str("}\n");
    }

    // 2. Elements of sets that stay.
    for (name, new) in &new_sets {
        let Some(old) = old_sets.get(name) else {
            continue;
        };
        let old_elements: BTreeSet<String> = old
            .elements
            .iter()
            .map(|e| element(e, old.family))
            .collect();
        let new_elements: BTreeSet<String> = new
            .elements
            .iter()
            .map(|e| element(e, new.family))
            .collect();
        let removed: Vec<&String> = old_elements.difference(&new_elements).collect();
        let added: Vec<&String> = new_elements.difference(&old_elements).collect();
        if !removed.is_empty() {
            let _ = writeln!(
                out,
                "delete element {table} {name} {{ {} }}",
                join(&removed)
            );
        }
        if !added.is_empty() {
            let _ = writeln!(out, "add element {table} {name} {{ {} }}", join(&added));
        }
        if !removed.is_empty() || !added.is_empty() {
            touched.sets.push((*name).to_owned());
        }
    }

    // 3. Chains that stay but whose rules changed: flushed and refilled in the same
    //    transaction, so no packet sees them empty.
    for (name, new) in &new_chains {
        let Some(old) = old_chains.get(name) else {
            continue;
        };
        if old.rules == new.rules {
            continue;
        }
        let _ = writeln!(out, "flush chain {table} {name}");
        for rule in &new.rules {
            let _ = writeln!(
                out,
                "add rule {table} {name} {}",
                render_text::rule_text(rule)
            );
        }
        touched.chains.push((*name).to_owned());
    }

    // 4. Map elements: removed or re-pointed keys first, then additions (new chains exist).
    for (old, new) in installed.maps.iter().zip(&desired.maps) {
        let old_elements: BTreeSet<String> = old
            .elements
            .iter()
            .map(|(ip, v)| map_element(*ip, v))
            .collect();
        let new_elements: BTreeSet<String> = new
            .elements
            .iter()
            .map(|(ip, v)| map_element(*ip, v))
            .collect();
        let removed: Vec<String> = old_elements
            .difference(&new_elements)
            .filter_map(|e| e.split(" : ").next().map(str::to_owned))
            .collect();
        let added: Vec<&String> = new_elements.difference(&old_elements).collect();
        if !removed.is_empty() {
            let _ = writeln!(
                out,
                "delete element {table} {} {{ {} }}",
                old.name,
                removed.join(", ")
            );
        }
        if !added.is_empty() {
            let _ = writeln!(
                out,
                "add element {table} {} {{ {} }}",
                new.name,
                join(&added)
            );
        }
        if !removed.is_empty() || !added.is_empty() {
            touched.maps.push(new.name.clone());
        }
    }

    // 5. Stale chains (no map element points to them any more), then stale sets (no rule
    //    refers to them any more).
    for name in old_chains.keys().filter(|n| !new_chains.contains_key(*n)) {
        let _ = writeln!(out, "flush chain {table} {name}");
        let _ = writeln!(out, "delete chain {table} {name}");
        touched.chains.push((*name).to_owned());
    }
    for name in old_sets.keys().filter(|n| !new_sets.contains_key(*n)) {
        let _ = writeln!(out, "delete set {table} {name}");
        touched.sets.push((*name).to_owned());
    }
    if out.is_empty() {
        // Only comments of sets differ; nothing the kernel enforces.
        return Plan::Nothing;
    }
    Plan::Script {
        script: out,
        touched,
    }
}

/// What [`incremental`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The kernel already holds the desired ruleset.
    Nothing,
    /// Apply this script; it changes only the listed objects.
    Script {
        /// The `nft -f` script.
        script: String,
        /// What it changes.
        touched: Touched,
    },
    /// The change cannot be made in place; replace the table's content.
    FullReplace,
}

/// Names of the objects a script changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Touched {
    /// Chains added, refilled or deleted.
    pub chains: Vec<String>,
    /// Sets added, changed or deleted.
    pub sets: Vec<String>,
    /// Maps whose elements changed.
    pub maps: Vec<String>,
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;

    use super::*;
    use crate::compile::{Options, compile};
    use crate::model::{ObjectKey, Pod, Snapshot};

    fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Pod {
        Pod::running(
            ObjectKey::new(ns, name),
            [("app".to_string(), app.to_string())].into(),
            "n1",
            [ip.parse().unwrap()],
        )
    }

    fn cluster() -> Snapshot {
        let mut s = Snapshot::new();
        s.upsert_pod(pod("web", "a", "a", "10.0.0.1"));
        s.upsert_pod(pod("web", "b", "b", "10.0.0.2"));
        s.upsert_pod(pod("api", "c", "c", "10.0.0.3"));
        let policy: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "from-b", "namespace": "web"},
            "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}
        }))
        .unwrap();
        s.upsert_network_policy(&policy).unwrap();
        let deny: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "deny", "namespace": "api"}, "spec": {"podSelector": {}}
        }))
        .unwrap();
        s.upsert_network_policy(&deny).unwrap();
        s
    }

    fn plan(before: &Snapshot, after: &Snapshot) -> Plan {
        let options = Options::default();
        incremental(
            &compile(before, "n1", &options),
            &compile(after, "n1", &options),
        )
    }

    #[test]
    fn nothing_changes_for_an_equal_ruleset() {
        assert_eq!(plan(&cluster(), &cluster()), Plan::Nothing);
    }

    #[test]
    fn a_new_peer_pod_only_adds_a_set_element() {
        let mut after = cluster();
        after.upsert_pod(pod("web", "b2", "b", "10.0.0.9"));
        let Plan::Script { script, touched } = plan(&cluster(), &after) else {
            panic!()
        };
        assert_eq!(
            script,
            "add element inet kube-nftpol np_web_from-b_in0_pods4 { 10.0.0.9 }\n"
        );
        assert_eq!(touched.sets, ["np_web_from-b_in0_pods4"]);
        assert!(touched.chains.is_empty());
    }

    #[test]
    fn a_relabelled_pod_moves_between_sets_without_touching_chains() {
        let mut after = cluster();
        after.upsert_pod(pod("web", "b", "other", "10.0.0.2"));
        let Plan::Script { script, touched } = plan(&cluster(), &after) else {
            panic!()
        };
        assert_eq!(
            script,
            "delete element inet kube-nftpol np_web_from-b_in0_pods4 { 10.0.0.2 }\n"
        );
        assert!(touched.chains.is_empty());
    }

    #[test]
    fn a_newly_isolated_pod_gets_its_chain_before_its_map_element() {
        let mut after = cluster();
        after.upsert_pod(pod("api", "d", "d", "10.0.0.4"));
        let Plan::Script { script, touched } = plan(&cluster(), &after) else {
            panic!()
        };
        let chain_at = script.find("chain in_api_d {").expect("chain added");
        let element_at = script
            .find("add element inet kube-nftpol ingress4 { 10.0.0.4 : goto in_api_d }")
            .expect("map element");
        assert!(chain_at < element_at, "{script}");
        assert_eq!(touched.chains, ["in_api_d"]);
        assert_eq!(touched.maps, ["ingress4"]);
    }

    #[test]
    fn a_changed_policy_refills_only_the_chains_of_the_pods_it_selects() {
        let mut after = cluster();
        let policy: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "from-b", "namespace": "web"},
            "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": 80}]}]}
        }))
        .unwrap();
        after.upsert_network_policy(&policy).unwrap();
        let Plan::Script { script, touched } = plan(&cluster(), &after) else {
            panic!()
        };
        assert_eq!(touched.chains, ["in_web_a"]);
        assert!(
            script.starts_with(
                "flush chain inet kube-nftpol in_web_a\nadd rule inet kube-nftpol in_web_a "
            ),
            "{script}"
        );
        assert!(!script.contains("in_api_c"));
    }

    #[test]
    fn a_deleted_policy_removes_map_elements_before_chains_and_chains_before_sets() {
        let mut after = cluster();
        after.remove_policy(&ObjectKey::new("web", "from-b"));
        let Plan::Script { script, .. } = plan(&cluster(), &after) else {
            panic!()
        };
        let element = script
            .find("delete element inet kube-nftpol ingress4 { 10.0.0.1 }")
            .expect("map element");
        let chain = script
            .find("delete chain inet kube-nftpol in_web_a")
            .expect("chain");
        let set = script
            .find("delete set inet kube-nftpol np_web_from-b_in0_pods4")
            .expect("set");
        assert!(element < chain && chain < set, "{script}");
    }

    #[test]
    fn full_replace_keeps_base_chains_and_deletes_everything_else_first() {
        let ruleset = compile(&cluster(), "n1", &Options::default());
        let current = TableObjects::from(&crate::dataplane::readback::Summary::of(&ruleset));
        let script = full_replace(Some(&current), &ruleset);
        assert!(script.starts_with("flush table inet kube-nftpol\n"));
        assert!(!script.contains("delete chain inet kube-nftpol postrouting"));
        assert!(!script.contains("delete chain inet kube-nftpol input"));
        assert!(script.contains("delete chain inet kube-nftpol in_web_a\n"));
        assert!(script.contains("delete map inet kube-nftpol ingress4\n"));
        assert!(script.ends_with(&crate::compile::render_text::render(&ruleset)));
        assert_eq!(
            full_replace(None, &ruleset),
            crate::compile::render_text::render(&ruleset)
        );
    }
}
