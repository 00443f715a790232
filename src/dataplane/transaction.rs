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
//!   refilled, new objects added, stale ones deleted. Unchanged chains are not touched. Each
//!   object kind has its own diff (`transaction/sets.rs`, `chains.rs`, `maps.rs`: what changes,
//!   and whether it can change in place); this module puts their commands in the one order the
//!   kernel accepts, since objects of one kind refer to those of another.
//!
//! It only builds text: it runs nothing and reads nothing back ([`super::nft`] applies the
//! scripts, [`super::readback`] checks the result).

mod chains;
mod diff;
mod maps;
mod sets;

use std::collections::BTreeSet;
use std::fmt::Write;

use super::objects::{TableObjects, Touched};
use crate::compile::render_text;
use crate::compile::{Ruleset, TABLE_FAMILY, TABLE_NAME};

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
    if !maps::in_place(&installed.maps, &desired.maps)
        || !chains::in_place(&installed.chains, &desired.chains)
        || !sets::in_place(&installed.sets, &desired.sets)
    {
        return Plan::FullReplace;
    }
    let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
    let sets = sets::diff(&table, &installed.sets, &desired.sets);
    let chains = chains::diff(&table, &installed.chains, &desired.chains);
    let maps = maps::diff(&table, &installed.maps, &desired.maps);
    let mut out = String::new();

    // 1. New sets and new chains (with their rules), declared in a table block: sets first, so
    //    the new chains' rules can refer to them.
    if !sets.declared.is_empty() || !chains.declared.is_empty() {
        let _ = writeln!(out, "table {table} {{");
        out.push_str(&sets.declared);
        out.push_str(&chains.declared);
        out.push_str("}\n");
    }
    // 2. Elements of sets that stay.
    out.push_str(&sets.changed);
    // 3. Chains that stay but whose rules changed: flushed and refilled in the same
    //    transaction, so no packet sees them empty.
    out.push_str(&chains.changed);
    // 4. Map elements: removed or re-pointed keys first, then additions (new chains exist).
    out.push_str(&maps.changed);
    // 5. Stale chains (no map element points to them any more), then stale sets (no rule
    //    refers to them any more).
    out.push_str(&chains.deleted);
    out.push_str(&sets.deleted);
    if out.is_empty() {
        // Only comments of sets differ; nothing the kernel enforces.
        return Plan::Nothing;
    }
    Plan::Script {
        script: out,
        touched: Touched {
            chains: chains.touched,
            sets: sets.touched,
            maps: maps.touched,
        },
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
    fn stale_chains_that_jump_to_each_other_are_all_flushed_before_any_is_deleted() {
        let object: crate::policy::cluster::api::ClusterNetworkPolicy =
            serde_json::from_value(json!({"metadata": {"name": "guard"},
                "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
                         "egress": [{"action": "Deny", "to": [{"networks": ["10.9.0.0/16"]}]}]}}))
            .unwrap();
        let mut with = cluster();
        with.upsert_cluster_network_policy(&object).unwrap();
        let Plan::Script { script, .. } = plan(&with, &cluster()) else {
            panic!()
        };
        // admin-eg_web_a goes to admin-deny-eg_web_a, which sorts first.
        let last_flush = script.rfind("flush chain").expect("flushes");
        let first_delete = script.find("delete chain").expect("deletes");
        assert!(last_flush < first_delete, "{script}");
        assert!(script.contains("delete chain inet kube-nftpol admin-deny-eg_web_a\n"));
        assert!(script.contains("delete chain inet kube-nftpol admin-eg_web_a\n"));
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
