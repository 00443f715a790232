//! The rule counters of the agent's table, from a JSON listing (`nft -j -t list table inet
//! kube-nftpol`, see [`super::nft::Nft::list_table_rules`]).
//!
//! Pure: a listing in, one [`RuleCounter`] per rule that has a `counter` statement out. What
//! the counts mean (which flows, which labels) is [`crate::flowmetrics`]'s business.

use serde_json::Value;

use super::readback::Error;

/// One counted rule as the kernel shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    /// The chain the rule is in.
    pub chain: String,
    /// The rule's handle: unique in the table for the table's life (a rule flushed and added
    /// again gets a new one, and its counter starts from zero).
    pub handle: u64,
    /// The rule's comment (`""` when it has none).
    pub comment: String,
    /// Packets the rule's counter has seen since the rule was added (or its counter reset).
    pub packets: u64,
}

/// Every rule of the listing that carries a counter, in listing order.
pub fn parse(listing: &str) -> Result<Vec<RuleCounter>, Error> {
    let value: Value = serde_json::from_str(listing).map_err(Error::Json)?;
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or(Error::Shape)?;
    let counters = items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter_map(|rule| {
            let packets = rule
                .get("expr")?
                .as_array()?
                .iter()
                .find_map(|e| e.get("counter")?.get("packets")?.as_u64())?;
            Some(RuleCounter {
                chain: rule.get("chain")?.as_str()?.to_owned(),
                handle: rule.get("handle")?.as_u64()?,
                comment: rule
                    .get("comment")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                packets,
            })
        })
        .collect();
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cut down from `nft -j -t list table inet kube-nftpol` (nftables 1.0.6) after a few
    /// connections: a policy rule, a rule without a counter, the final drop, and a set (no
    /// elements with `-t`).
    const LISTING: &str = r#"{"nftables": [
        {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "kube-nftpol", "handle": 7}},
        {"set": {"family": "inet", "name": "np_x_a_in0_pods4", "table": "kube-nftpol", "type": "ipv4_addr", "handle": 3}},
        {"chain": {"family": "inet", "table": "kube-nftpol", "name": "in_x_a", "handle": 9}},
        {"rule": {"family": "inet", "table": "kube-nftpol", "chain": "in_x_a", "handle": 21,
                  "comment": "to itself",
                  "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.244.1.5"}}, {"accept": null}]}},
        {"rule": {"family": "inet", "table": "kube-nftpol", "chain": "in_x_a", "handle": 22,
                  "comment": "x/a-from-y ingress[0]",
                  "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@np_x_a-from-y_in0_pods4"}},
                           {"counter": {"packets": 3, "bytes": 180}}, {"accept": null}]}},
        {"rule": {"family": "inet", "table": "kube-nftpol", "chain": "in_x_a", "handle": 25,
                  "expr": [{"counter": {"packets": 12, "bytes": 720}}, {"drop": null}]}}
    ]}"#;

    #[test]
    fn every_counted_rule_is_read_with_chain_handle_comment_and_packets() {
        let counters = parse(LISTING).unwrap();
        assert_eq!(
            counters,
            [
                RuleCounter {
                    chain: "in_x_a".into(),
                    handle: 22,
                    comment: "x/a-from-y ingress[0]".into(),
                    packets: 3,
                },
                RuleCounter {
                    chain: "in_x_a".into(),
                    handle: 25,
                    comment: String::new(),
                    packets: 12,
                },
            ]
        );
    }

    #[test]
    fn a_listing_that_is_not_a_table_listing_is_an_error() {
        assert!(matches!(parse("nope"), Err(Error::Json(_))));
        assert!(matches!(parse("{}"), Err(Error::Shape)));
        assert_eq!(parse(r#"{"nftables": []}"#).unwrap(), []);
    }
}
