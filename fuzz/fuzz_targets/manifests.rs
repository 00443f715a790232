//! Fuzz target: manifest text, as `--manifests` reads it (and, object by object, as the API
//! watch delivers it), through the whole pure pipeline: YAML or JSON parsing, List expansion,
//! conversion to the model, NetworkPolicy and ClusterNetworkPolicy validation, compilation for
//! each node (of the pods and of the Node objects), both renderers and `evaluate` over pairs of
//! pods and addresses (node addresses included). Any panic in any of them is a finding.
//!
//! Beyond "no panic" it checks what the kernel and the text renderer need of every compiled
//! ruleset: chain, set and map names of at most 255 bytes (`NFT_NAME_MAXLEN` minus the NUL),
//! made only of characters `nft` reads unquoted, and unique, so no two pods or policy rules
//! ever share a chain or a set.
//!
//! Input: the first byte picks JSON (odd) or YAML (even); the rest is the text.

#![no_main]

use std::collections::BTreeSet;
use std::net::IpAddr;

use kube_nftpol::compile::{self, Options, render_json, render_text};
use kube_nftpol::model::Protocol;
use kube_nftpol::policy::{Endpoint, Flow, evaluate};
use kube_nftpol::source::manifests::load_str;
use libfuzzer_sys::fuzz_target;

/// Longest chain or set name the kernel takes (`NFT_CHAIN_MAXNAMELEN` 256 with the NUL).
const MAX_NFT_NAME: usize = 255;

fn check_names<'a>(what: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen = BTreeSet::new();
    for name in names {
        assert!(name.len() <= MAX_NFT_NAME, "{what} name too long: {name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b)),
            "{what} name nft cannot read unquoted: {name:?}"
        );
        assert!(seen.insert(name), "two {what}s named {name:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let origin = if mode % 2 == 1 {
        "fuzz.json"
    } else {
        "fuzz.yaml"
    };
    let Ok(loaded) = load_str(text, origin) else {
        return;
    };
    let snapshot = &loaded.snapshot;

    let mut nodes: BTreeSet<&str> = snapshot.pods().filter_map(|p| p.node.as_deref()).collect();
    nodes.extend(snapshot.nodes().map(|n| n.name.as_str()));
    nodes.insert("node-1");
    for node in nodes.into_iter().take(3) {
        for audit_all in [false, true] {
            let options = Options {
                audit_all,
                ..Options::default()
            };
            let ruleset = compile::compile(snapshot, node, &options);
            check_names("chain", ruleset.chains.iter().map(|c| c.name.as_str()));
            check_names("set", ruleset.sets.iter().map(|s| s.name.as_str()));
            check_names("map", ruleset.maps.iter().map(|m| m.name.as_str()));
            let _ = render_text::render(&ruleset);
            let _ = render_json::render(&ruleset);
        }
    }

    let mut endpoints: Vec<Endpoint> = snapshot
        .pods()
        .take(6)
        .map(|p| Endpoint::Pod(p.key.clone()))
        .collect();
    let addresses: [IpAddr; 3] = [
        [10, 244, 1, 10].into(),
        [8, 8, 8, 8].into(),
        "2001:db8::1".parse().expect("an IPv6 address"),
    ];
    endpoints.extend(addresses.map(Endpoint::Ip));
    endpoints.extend(
        snapshot
            .pods()
            .flat_map(|p| p.ips.iter().copied())
            .take(2)
            .map(Endpoint::Ip),
    );
    // The addresses of nodes (ClusterNetworkPolicy node peers).
    endpoints.extend(
        snapshot
            .nodes()
            .flat_map(|n| n.addresses.iter().copied())
            .take(2)
            .map(Endpoint::Ip),
    );
    for source in &endpoints {
        for destination in &endpoints {
            for (protocol, port) in [
                (Protocol::Tcp, 80),
                (Protocol::Udp, 53),
                (Protocol::Sctp, 1),
                (Protocol::Tcp, 65535),
            ] {
                let flow = Flow {
                    source: source.clone(),
                    destination: destination.clone(),
                    protocol,
                    port,
                };
                if let Ok(verdict) = evaluate(snapshot, &flow) {
                    let _ = format!("{verdict:?}");
                }
            }
        }
    }
});
