//! Renders a [`Ruleset`] as libnftables JSON (`man libnftables-json`) for `nft -j -f`: the same
//! table, maps, sets, chains and rules as [`super::render_text`], byte-identical for equal
//! rulesets.
//!
//! The document is a list of bare ruleset objects (implicit `add` commands), so, like the text
//! script, it creates the table's full content in one transaction in a namespace that does not
//! have the table yet; replacing an existing table's content is the dataplane's job. It is built
//! from raw [`serde_json::Value`]s rather than the `nftables` crate's schema, because that schema
//! has no verdict-typed map declaration and serializes set flags from a `HashSet`, which breaks
//! byte-identical output. Object keys come out sorted (`serde_json`'s map without
//! `preserve_order`), which `nft` does not care about and which keeps the output deterministic.
//!
//! Loaded into an empty namespace, it lists exactly like the text script (the `nft_accepts`
//! integration suite checks this), with one exception on nft 1.0.6: its JSON parser ignores a
//! set's `comment`, so sets loaded from JSON have none.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::ranges::{AddrRange, addr_to_int, as_prefix};
use super::render_text::{nfproto, sanitize};
use super::ruleset::{
    AddrField, Chain, Expr, Family, LOG_QUEUE_THRESHOLD, LOG_SNAPLEN, MapVerdict, ProtocolPorts,
    Rule, Ruleset, Set, SetElement, SetKind, TABLE_FAMILY, TABLE_NAME, VerdictMap,
};

/// The libnftables JSON schema version the document is written against.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Renders the whole table as a pretty-printed `{"nftables": [...]}` document, ending in a
/// newline.
pub fn render(ruleset: &Ruleset) -> String {
    // `{:#}` is serde_json's pretty printer behind `Display`, which cannot fail for a `Value`.
    format!("{:#}\n", to_value(ruleset))
}

/// The document as a JSON value, for callers that hand it to libnftables themselves: metainfo,
/// the table, then chains (without rules), maps, sets and finally rules, each in ruleset order.
pub fn to_value(ruleset: &Ruleset) -> Value {
    let mut objects = vec![
        json!({"metainfo": {"json_schema_version": JSON_SCHEMA_VERSION}}),
        json!({"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}),
    ];
    // Chains before maps: a verdict map element that jumps to a chain not yet created fails
    // with ENOENT. `nft -f` text gets this order for free (it adds a table block's chains
    // before its sets, then the rules); JSON commands run in the order given.
    objects.extend(ruleset.chains.iter().map(chain));
    objects.extend(ruleset.maps.iter().map(map));
    objects.extend(ruleset.sets.iter().map(set));
    for c in &ruleset.chains {
        objects.extend(c.rules.iter().map(|r| rule(&c.name, r)));
    }
    json!({"nftables": objects})
}

fn map(map: &VerdictMap) -> Value {
    let mut body = json!({
        "family": TABLE_FAMILY,
        "table": TABLE_NAME,
        "name": map.name,
        "type": map.family.addr_type(),
        "map": "verdict",
    });
    let elements: Vec<Value> = map
        .elements
        .iter()
        .map(|(ip, verdict)| {
            let verdict = match verdict {
                MapVerdict::Jump(chain) => json!({"jump": {"target": chain}}),
                MapVerdict::Goto(chain) => json!({"goto": {"target": chain}}),
            };
            json!([ip.to_string(), verdict])
        })
        .collect();
    // Like the text, an empty map has no `elem` at all.
    if !elements.is_empty() {
        body["elem"] = Value::Array(elements);
    }
    json!({"map": body})
}

fn set(set: &Set) -> Value {
    let key = match set.kind {
        SetKind::Addresses | SetKind::AddressRanges => json!(set.family.addr_type()),
        SetKind::AddressProtocolPort => {
            json!([set.family.addr_type(), "inet_proto", "inet_service"])
        }
        SetKind::Interfaces => json!("ifname"),
        SetKind::InterfaceAddresses => json!(["ifname", set.family.addr_type()]),
        SetKind::Connections => json!([
            set.family.addr_type(),
            set.family.addr_type(),
            "inet_proto",
            "inet_service",
            "inet_service"
        ]),
    };
    let mut body = json!({
        "family": TABLE_FAMILY,
        "table": TABLE_NAME,
        "name": set.name,
        "type": key,
        "comment": sanitize(&set.comment),
    });
    match set.kind {
        SetKind::AddressRanges => body["flags"] = json!(["interval"]),
        SetKind::Connections => body["flags"] = json!(["timeout"]),
        _ => {}
    }
    if !set.elements.is_empty() {
        body["elem"] = set
            .elements
            .iter()
            .map(|e| element(e, set.family))
            .collect();
    }
    json!({"set": body})
}

fn chain(chain: &Chain) -> Value {
    let mut body = json!({"family": TABLE_FAMILY, "table": TABLE_NAME, "name": chain.name});
    if let Some(hook) = chain.hook {
        body["type"] = json!("filter");
        body["hook"] = json!(hook.name());
        // JSON takes the number: 95 is `srcnat - 5`, 0 is `filter` (inet family, man nft).
        body["prio"] = json!(hook.priority());
        body["policy"] = json!("accept");
    }
    json!({"chain": body})
}

fn rule(chain: &str, rule: &Rule) -> Value {
    let mut body = json!({
        "family": TABLE_FAMILY,
        "table": TABLE_NAME,
        "chain": chain,
        "expr": rule.exprs.iter().map(expr).collect::<Vec<_>>(),
    });
    if let Some(comment) = &rule.comment {
        body["comment"] = json!(sanitize(comment));
    }
    json!({"rule": body})
}

fn expr(e: &Expr) -> Value {
    match e {
        // A flags match: `nft -j list` writes it with the implicit operator spelled `in`.
        Expr::CtEstablishedOrRelated => matches(
            "in",
            json!({"ct": {"key": "state"}}),
            json!(["established", "related"]),
        ),
        Expr::Icmpv6NeighborDiscovery => matches(
            "==",
            payload("icmpv6", "type"),
            json!({"set": [
                "nd-router-solicit",
                "nd-router-advert",
                "nd-neighbor-solicit",
                "nd-neighbor-advert",
            ]}),
        ),
        Expr::CtNotAssured => matches("!", json!({"ct": {"key": "status"}}), json!("assured")),
        Expr::ConnectionInSet(family, set) => {
            let protocol = family.payload_protocol();
            matches(
                "==",
                json!({"concat": [
                    {"ct": {"key": format!("{protocol} saddr"), "dir": "original"}},
                    {"ct": {"key": format!("{protocol} daddr"), "dir": "original"}},
                    {"meta": {"key": "l4proto"}},
                    payload("th", "sport"),
                    payload("th", "dport"),
                ]}),
                json!(format!("@{set}")),
            )
        }
        Expr::TcpInitialSyn => matches(
            "==",
            json!({"&": [payload("tcp", "flags"), ["syn", "ack"]]}),
            json!("syn"),
        ),
        Expr::ProtocolIs(protocol) => matches(
            "==",
            json!({"meta": {"key": "l4proto"}}),
            json!(protocol.as_str()),
        ),
        Expr::SourceIsLocal => matches(
            "==",
            json!({"fib": {"result": "type", "flags": ["saddr"]}}),
            json!("local"),
        ),
        Expr::AddressIs(field, ip) => matches(
            "==",
            addr_field(*field, Family::of(*ip)),
            json!(ip.to_string()),
        ),
        Expr::AddressInSet(field, family, set) => {
            matches("==", addr_field(*field, *family), json!(format!("@{set}")))
        }
        Expr::DestinationProtocolPortInSet(family, set) => matches(
            "==",
            json!({"concat": [
                addr_field(AddrField::Destination, *family),
                {"meta": {"key": "l4proto"}},
                payload("th", "dport"),
            ]}),
            json!(format!("@{set}")),
        ),
        Expr::ProtocolPortIn(ports) => matches(
            "==",
            json!({"concat": [{"meta": {"key": "l4proto"}}, payload("th", "dport")]}),
            json!({"set": ports.iter().map(protocol_ports).collect::<Vec<_>>()}),
        ),
        Expr::PortIn(protocol, ports) => matches(
            "==",
            payload(protocol.as_str(), "dport"),
            match ports.as_slice() {
                [one] => port_range(*one),
                _ => {
                    json!({"set": ports.iter().map(|&range| port_range(range)).collect::<Vec<_>>()})
                }
            },
        ),
        Expr::InputInterfaceInSet(set) => matches(
            "==",
            json!({"meta": {"key": "iifname"}}),
            json!(format!("@{set}")),
        ),
        Expr::InterfaceSourceInSet(family, set) => matches(
            "==",
            json!({"concat": [{"meta": {"key": "iifname"}}, addr_field(AddrField::Source, *family)]}),
            json!(format!("@{set}")),
        ),
        Expr::OutputInterfaceNotIn(names) => matches(
            "!=",
            json!({"meta": {"key": "oifname"}}),
            match names.as_slice() {
                [one] => json!(sanitize(one)),
                _ => json!({"set": names.iter().map(|n| sanitize(n)).collect::<Vec<_>>()}),
            },
        ),
        Expr::Ip6SourceLinkLocal => matches(
            "==",
            payload("ip6", "saddr"),
            json!({"prefix": {"addr": "fe80::", "len": 10}}),
        ),
        Expr::FamilyIs(family) => matches(
            "==",
            json!({"meta": {"key": "nfproto"}}),
            json!(nfproto(*family)),
        ),
        // An anonymous counter starting at zero: in input no properties are required
        // (man libnftables-json, COUNTER statement).
        Expr::Counter => json!({"counter": null}),
        Expr::Limit {
            rate_per_second,
            burst_packets,
        } => json!({"limit": {
            "rate": rate_per_second,
            "rate_unit": "packets",
            "per": "second",
            "burst": burst_packets,
            "burst_unit": "packets",
        }}),
        Expr::Log { prefix, group } => json!({"log": {
            "prefix": sanitize(prefix),
            "group": group,
            "snaplen": LOG_SNAPLEN,
            "queue-threshold": LOG_QUEUE_THRESHOLD,
        }}),
        Expr::DispatchBy(field, family, map) => {
            json!({"vmap": {"key": addr_field(*field, *family), "data": format!("@{map}")}})
        }
        Expr::Accept => json!({"accept": null}),
        Expr::Drop => json!({"drop": null}),
        Expr::Return => json!({"return": null}),
        Expr::Jump(chain) => json!({"jump": {"target": chain}}),
        Expr::Goto(chain) => json!({"goto": {"target": chain}}),
        Expr::RejectWithTcpReset => json!({"reject": {"type": "tcp reset"}}),
        Expr::Reject => json!({"reject": {"type": "icmpx", "expr": "port-unreachable"}}),
    }
}

fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn port_range((start, end): (u16, u16)) -> Value {
    if start == end {
        json!(start)
    } else {
        json!({"range": [start, end]})
    }
}

fn protocol_ports(p: &ProtocolPorts) -> Value {
    json!({"concat": [p.protocol.as_str(), port_range((p.start, p.end))]})
}

fn element(e: &SetElement, family: Family) -> Value {
    match e {
        SetElement::Address(ip) => json!(ip.to_string()),
        SetElement::Range(start, end) => range(*start, *end, family),
        SetElement::AddressProtocolPort(ip, protocol, port) => {
            json!({"concat": [ip.to_string(), protocol.as_str(), port]})
        }
        SetElement::Interface(name) => json!(sanitize(name)),
        SetElement::InterfaceAddress(name, ip) => {
            json!({"concat": [sanitize(name), ip.to_string()]})
        }
        SetElement::Connection(source, destination, protocol, source_port, destination_port) => {
            json!({"concat": [
                source.to_string(),
                destination.to_string(),
                protocol.as_str(),
                source_port,
                destination_port,
            ]})
        }
    }
}

/// A range as an interval-set element: an address, a prefix, or a `range`.
fn range(start: IpAddr, end: IpAddr, family: Family) -> Value {
    let bits = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let r = AddrRange {
        start: addr_to_int(start),
        end: addr_to_int(end),
    };
    if r.start == r.end {
        return json!(start.to_string());
    }
    match as_prefix(r, bits) {
        Some(len) => json!({"prefix": {"addr": start.to_string(), "len": len}}),
        None => json!({"range": [start.to_string(), end.to_string()]}),
    }
}

fn addr_field(field: AddrField, family: Family) -> Value {
    payload(family.payload_protocol(), field.payload_field())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::ruleset::Hook;
    use crate::model::Protocol;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A ruleset with every map, set and expression kind the compiler emits.
    fn sample() -> Ruleset {
        let counted = |exprs: Vec<Expr>| Rule {
            exprs,
            comment: Some("x/p ingress[0]".into()),
        };
        Ruleset {
            maps: vec![
                VerdictMap {
                    name: "egress4".into(),
                    family: Family::V4,
                    elements: vec![(ip("10.0.0.1"), MapVerdict::Jump("eg_x_a".into()))],
                },
                VerdictMap {
                    name: "ingress6".into(),
                    family: Family::V6,
                    elements: vec![],
                },
            ],
            sets: vec![
                Set {
                    name: "np_x_p_in0_cidr4".into(),
                    family: Family::V4,
                    kind: SetKind::AddressRanges,
                    elements: vec![
                        SetElement::Range(ip("10.1.0.0"), ip("10.1.255.255")),
                        SetElement::Range(ip("10.2.0.1"), ip("10.2.0.1")),
                        SetElement::Range(ip("10.3.0.1"), ip("10.3.0.5")),
                    ],
                    comment: "x/p ingress[0] ipBlocks".into(),
                },
                Set {
                    name: "np_x_p_eg0_named6".into(),
                    family: Family::V6,
                    kind: SetKind::AddressProtocolPort,
                    elements: vec![SetElement::AddressProtocolPort(
                        ip("fd00::2"),
                        Protocol::Sctp,
                        81,
                    )],
                    comment: "x/p egress[0] named ports".into(),
                },
                Set {
                    name: "np_x_p_in0_pods4".into(),
                    family: Family::V4,
                    kind: SetKind::Addresses,
                    elements: vec![SetElement::Address(ip("10.0.0.2"))],
                    comment: "x/p ingress[0] pod peers".into(),
                },
            ],
            chains: vec![
                Chain {
                    name: "postrouting".into(),
                    hook: Some(Hook::Postrouting),
                    rules: vec![
                        Rule {
                            exprs: vec![Expr::CtEstablishedOrRelated, Expr::Accept],
                            comment: Some("replies".into()),
                        },
                        Rule {
                            exprs: vec![Expr::Icmpv6NeighborDiscovery, Expr::Accept],
                            comment: None,
                        },
                        Rule {
                            exprs: vec![Expr::SourceIsLocal, Expr::Accept],
                            comment: None,
                        },
                        Rule {
                            exprs: vec![Expr::DispatchBy(
                                AddrField::Source,
                                Family::V4,
                                "egress4".into(),
                            )],
                            comment: None,
                        },
                    ],
                },
                Chain {
                    name: "in_x_a".into(),
                    hook: None,
                    rules: vec![
                        Rule {
                            exprs: vec![
                                Expr::AddressIs(AddrField::Source, ip("10.0.0.1")),
                                Expr::Accept,
                            ],
                            comment: Some("to itself".into()),
                        },
                        counted(vec![
                            Expr::AddressInSet(
                                AddrField::Source,
                                Family::V4,
                                "np_x_p_in0_pods4".into(),
                            ),
                            Expr::ProtocolPortIn(vec![
                                ProtocolPorts {
                                    protocol: Protocol::Tcp,
                                    start: 80,
                                    end: 80,
                                },
                                ProtocolPorts {
                                    protocol: Protocol::Udp,
                                    start: 1000,
                                    end: 2000,
                                },
                            ]),
                            Expr::Counter,
                            Expr::Accept,
                        ]),
                        counted(vec![
                            Expr::DestinationProtocolPortInSet(
                                Family::V6,
                                "np_x_p_eg0_named6".into(),
                            ),
                            Expr::Counter,
                            Expr::Return,
                        ]),
                        Rule {
                            exprs: vec![
                                Expr::Limit {
                                    rate_per_second: 10,
                                    burst_packets: 20,
                                },
                                Expr::Log {
                                    prefix: "knp:deny:ingress:x/a".into(),
                                    group: 100,
                                },
                            ],
                            comment: Some("log default deny".into()),
                        },
                        Rule {
                            exprs: vec![Expr::Counter, Expr::Drop],
                            comment: None,
                        },
                    ],
                },
            ],
        }
    }

    fn objects(doc: &Value) -> &[Value] {
        doc["nftables"].as_array().map(Vec::as_slice).unwrap()
    }

    /// The object of a kind (`set`, `map`, `chain`) with a name, wrapper included.
    fn named<'a>(doc: &'a Value, kind: &str, name: &str) -> &'a Value {
        objects(doc)
            .iter()
            .find(|o| o.get(kind).is_some_and(|b| b["name"] == name))
            .unwrap()
    }

    fn rule_exprs<'a>(doc: &'a Value, chain: &str, index: usize) -> &'a Value {
        let rules: Vec<&Value> = objects(doc)
            .iter()
            .filter_map(|o| o.get("rule"))
            .filter(|r| r["chain"] == chain)
            .collect();
        &rules[index]["expr"]
    }

    #[test]
    fn empty_ruleset_renders_exactly_metainfo_and_table() {
        // nft: table inet kube-nftpol { }
        let expected = r#"{
  "nftables": [
    {
      "metainfo": {
        "json_schema_version": 1
      }
    },
    {
      "table": {
        "family": "inet",
        "name": "kube-nftpol"
      }
    }
  ]
}
"#;
        assert_eq!(render(&Ruleset::default()), expected);
    }

    #[test]
    fn equal_rulesets_render_byte_identical_documents() {
        let text = render(&sample());
        assert_eq!(text, render(&sample().clone()));
        assert!(text.ends_with("}\n"));
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reparsed, to_value(&sample()));
    }

    #[test]
    fn document_lists_metainfo_table_chains_maps_sets_then_rules() {
        let doc = to_value(&sample());
        let kinds: Vec<&str> = objects(&doc)
            .iter()
            .map(|o| o.as_object().unwrap().keys().next().unwrap().as_str())
            .collect();
        let mut expected = vec!["metainfo", "table", "chain", "chain", "map", "map"];
        expected.extend(["set"; 3]);
        expected.extend(["rule"; 9]);
        assert_eq!(kinds, expected);
        assert_eq!(
            objects(&doc)[0],
            json!({"metainfo": {"json_schema_version": 1}})
        );
        assert_eq!(
            objects(&doc)[1],
            json!({"table": {"family": "inet", "name": "kube-nftpol"}})
        );
    }

    #[test]
    fn verdict_map_carries_jump_elements_and_empty_map_has_no_elem() {
        let doc = to_value(&sample());
        assert_eq!(
            named(&doc, "map", "egress4"),
            &json!({"map": {
                "family": "inet", "table": "kube-nftpol", "name": "egress4",
                "type": "ipv4_addr", "map": "verdict",
                "elem": [["10.0.0.1", {"jump": {"target": "eg_x_a"}}]],
            }})
        );
        assert!(named(&doc, "map", "ingress6")["map"].get("elem").is_none());
    }

    #[test]
    fn interval_set_elements_are_prefix_address_or_range() {
        // nft: set np_x_p_in0_cidr4 { type ipv4_addr; flags interval; comment "...";
        //        elements = { 10.1.0.0/16, 10.2.0.1, 10.3.0.1-10.3.0.5 } }
        let doc = to_value(&sample());
        assert_eq!(
            named(&doc, "set", "np_x_p_in0_cidr4"),
            &json!({"set": {
                "family": "inet", "table": "kube-nftpol", "name": "np_x_p_in0_cidr4",
                "type": "ipv4_addr", "flags": ["interval"], "comment": "x/p ingress[0] ipBlocks",
                "elem": [
                    {"prefix": {"addr": "10.1.0.0", "len": 16}},
                    "10.2.0.1",
                    {"range": ["10.3.0.1", "10.3.0.5"]},
                ],
            }})
        );
    }

    #[test]
    fn named_port_set_is_a_typed_concatenation() {
        // nft: set np_x_p_eg0_named6 { type ipv6_addr . inet_proto . inet_service;
        //        elements = { fd00::2 . sctp . 81 } }
        let doc = to_value(&sample());
        let set = &named(&doc, "set", "np_x_p_eg0_named6")["set"];
        assert_eq!(
            set["type"],
            json!(["ipv6_addr", "inet_proto", "inet_service"])
        );
        assert_eq!(set["elem"], json!([{"concat": ["fd00::2", "sctp", 81]}]));
        assert!(set.get("flags").is_none());
    }

    #[test]
    fn base_chain_has_numeric_priority_and_regular_chain_has_no_hook() {
        let doc = to_value(&sample());
        assert_eq!(
            named(&doc, "chain", "postrouting"),
            &json!({"chain": {
                "family": "inet", "table": "kube-nftpol", "name": "postrouting",
                "type": "filter", "hook": "postrouting", "prio": 95, "policy": "accept",
            }})
        );
        assert_eq!(
            named(&doc, "chain", "in_x_a"),
            &json!({"chain": {"family": "inet", "table": "kube-nftpol", "name": "in_x_a"}})
        );
    }

    #[test]
    fn base_chain_matches_render_as_nft_lists_them() {
        let doc = to_value(&sample());
        assert_eq!(
            rule_exprs(&doc, "postrouting", 0),
            &json!([
                {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                           "right": ["established", "related"]}},
                {"accept": null},
            ])
        );
        assert_eq!(
            rule_exprs(&doc, "postrouting", 1)[0]["match"]["right"]["set"][3],
            json!("nd-neighbor-advert")
        );
        assert_eq!(
            rule_exprs(&doc, "postrouting", 2)[0],
            json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["saddr"]}},
                             "right": "local"}})
        );
        assert_eq!(
            rule_exprs(&doc, "postrouting", 3),
            &json!([{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}},
                              "data": "@egress4"}}])
        );
    }

    #[test]
    fn port_list_is_an_anonymous_concatenated_set_with_ranges() {
        // nft: ip saddr @np_x_p_in0_pods4 meta l4proto . th dport { tcp . 80, udp . 1000-2000 }
        //      counter accept
        let doc = to_value(&sample());
        assert_eq!(
            rule_exprs(&doc, "in_x_a", 1),
            &json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                           "right": "@np_x_p_in0_pods4"}},
                {"match": {"op": "==",
                           "left": {"concat": [{"meta": {"key": "l4proto"}},
                                               {"payload": {"protocol": "th", "field": "dport"}}]},
                           "right": {"set": [{"concat": ["tcp", 80]},
                                             {"concat": ["udp", {"range": [1000, 2000]}]}]}}},
                {"counter": null},
                {"accept": null},
            ])
        );
        assert_eq!(
            rule_exprs(&doc, "in_x_a", 2)[0]["match"]["left"]["concat"][0],
            json!({"payload": {"protocol": "ip6", "field": "daddr"}})
        );
    }

    #[test]
    fn interface_address_pairs_are_concatenations_of_the_interface_name_and_the_address() {
        // nft: iifname . ip saddr @pod_iface_addrs4
        //      set pod_iface_addrs4 { type ifname . ipv4_addr; elements = { "veth1" . 10.0.0.1 } }
        assert_eq!(
            expr(&Expr::InterfaceSourceInSet(
                Family::V4,
                "pod_iface_addrs4".into()
            )),
            json!({"match": {"op": "==",
                             "left": {"concat": [{"meta": {"key": "iifname"}},
                                                 {"payload": {"protocol": "ip", "field": "saddr"}}]},
                             "right": "@pod_iface_addrs4"}})
        );
        assert_eq!(
            element(
                &SetElement::InterfaceAddress("veth1".into(), ip("10.0.0.1")),
                Family::V4
            ),
            json!({"concat": ["veth1", "10.0.0.1"]})
        );
    }

    #[test]
    fn output_interface_guards_compare_one_name_or_look_up_several() {
        // nft: oifname != "veth1"
        //      oifname != { "veth1", "veth2" }
        // (`nft -j list chain`, nft 1.0.6)
        assert_eq!(
            expr(&Expr::OutputInterfaceNotIn(vec!["veth1".into()])),
            json!({"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "veth1"}})
        );
        assert_eq!(
            expr(&Expr::OutputInterfaceNotIn(vec![
                "veth1".into(),
                "veth2".into()
            ])),
            json!({"match": {"op": "!=", "left": {"meta": {"key": "oifname"}},
                             "right": {"set": ["veth1", "veth2"]}}})
        );
    }

    #[test]
    fn family_and_link_local_matches_render_as_nft_lists_them() {
        // nft: meta nfproto ipv6 iifname @pod_ifaces counter drop
        //      ip6 saddr fe80::/10 accept
        // (`nft -j list chain inet kube-nftpol prerouting`, nft 1.0.6)
        assert_eq!(
            expr(&Expr::FamilyIs(Family::V6)),
            json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}})
        );
        assert_eq!(
            expr(&Expr::FamilyIs(Family::V4))["match"]["right"],
            json!("ipv4")
        );
        assert_eq!(
            expr(&Expr::Ip6SourceLinkLocal),
            json!({"match": {"op": "==",
                             "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                             "right": {"prefix": {"addr": "fe80::", "len": 10}}}})
        );
    }

    #[test]
    fn log_rule_is_rate_limited_and_commented() {
        // nft: limit rate 10/second burst 20 packets
        //      log prefix "knp:deny:ingress:x/a" group 100 snaplen 128 queue-threshold 1
        let doc = to_value(&sample());
        let rule = objects(&doc)
            .iter()
            .filter_map(|o| o.get("rule"))
            .find(|r| r["comment"] == "log default deny")
            .unwrap();
        assert_eq!(
            rule["expr"],
            json!([
                {"limit": {"rate": 10, "rate_unit": "packets", "per": "second", "burst": 20,
                           "burst_unit": "packets"}},
                {"log": {"prefix": "knp:deny:ingress:x/a", "group": 100, "snaplen": 128,
                         "queue-threshold": 1}},
            ])
        );
        let last = objects(&doc).last().unwrap();
        assert!(last["rule"].get("comment").is_none());
    }
}
