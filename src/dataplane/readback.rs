//! Reading the agent's table back from the kernel (`nft -j list table inet kube-nftpol`).
//!
//! Two views of one listing:
//! - [`Summary`]: the table's structure in a form comparable with a [`Ruleset`]: chain names
//!   with each rule's comment, and every set and map with its elements written the way
//!   `nft` writes them. `Summary::of(&ruleset) == Summary::from_listing(..)` means the kernel
//!   holds what the compiler asked for (rule expressions are compared through their count and
//!   comment, elements exactly).
//! - [`Fingerprint`]: the listing with counter values and handles removed, one entry per
//!   object (the table, each chain with its rules, each set and map with its elements). The
//!   dataplane keeps one for the whole table: taken from a full listing after a full apply, and
//!   after an incremental apply updated with listings of only the objects it wrote. A later full
//!   listing with another fingerprint means someone else changed the table (a rule added, a
//!   set flushed, the table deleted).
//!
//! A listing may hold several JSON documents (listings of single objects, concatenated).

use serde_json::Value;
use std::collections::BTreeMap;

use crate::compile::ranges;
use crate::compile::{Family, MapVerdict, Ruleset, SetElement};

/// Why a listing could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listing is not JSON.
    #[error("nft listing is not JSON")]
    Json(#[source] serde_json::Error),
    /// The listing has no `nftables` array.
    #[error("nft listing has no nftables array")]
    Shape,
}

/// The structure of the table: what [`Ruleset`] specifies, in comparable form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Chain name to the comments of its rules, in order (`""` for rules without one), and
    /// the number of expressions of each rule.
    pub chains: BTreeMap<String, Vec<(String, usize)>>,
    /// Set name to its elements (sorted), as `nft` writes them.
    pub sets: BTreeMap<String, Vec<String>>,
    /// Map name to its elements (sorted), as `key : verdict`.
    pub maps: BTreeMap<String, Vec<String>>,
}

/// The listing without counter values and handles, by object (`chain NAME` with its rules in
/// order, `set NAME`, `map NAME`, `table`): equal fingerprints mean an unchanged table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(BTreeMap<String, String>);

impl Fingerprint {
    /// Takes the entries of `part` (a listing of some objects, just written) and forgets the
    /// objects in `gone` (just deleted): the fingerprint a full listing would now give.
    pub fn update(&mut self, part: Fingerprint, gone: impl IntoIterator<Item = String>) {
        for key in gone {
            self.0.remove(&key);
        }
        self.0.extend(part.0);
    }

    /// The key of an object in a fingerprint: `chain NAME`, `set NAME`, `map NAME`.
    pub fn key(kind: &str, name: &str) -> String {
        format!("{kind} {name}")
    }
}

/// Parses a listing (one or more JSON documents) into its [`Summary`] and [`Fingerprint`].
pub fn parse(listing: &str) -> Result<(Summary, Fingerprint), Error> {
    let mut summary = Summary::default();
    let mut fingerprint = Fingerprint::default();
    let mut documents = 0;
    for document in serde_json::Deserializer::from_str(listing).into_iter::<Value>() {
        parse_document(
            document.map_err(Error::Json)?,
            &mut summary,
            &mut fingerprint,
        )?;
        documents += 1;
    }
    if documents == 0 {
        return Err(Error::Shape);
    }
    Ok((summary, fingerprint))
}

fn parse_document(
    mut value: Value,
    summary: &mut Summary,
    fingerprint: &mut Fingerprint,
) -> Result<(), Error> {
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or(Error::Shape)?;
    for item in items {
        if let Some(chain) = item.get("chain") {
            let name = str_field(chain, "name");
            summary.chains.entry(name).or_default();
        } else if let Some(set) = item.get("set") {
            let mut elements: Vec<String> = elements(set).iter().map(element_text).collect();
            elements.sort();
            summary.sets.insert(str_field(set, "name"), elements);
        } else if let Some(map) = item.get("map") {
            let mut elements: Vec<String> = elements(map)
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([key, verdict]) => {
                        format!("{} : {}", element_text(key), verdict_text(verdict))
                    }
                    _ => pair.to_string(),
                })
                .collect();
            elements.sort();
            summary.maps.insert(str_field(map, "name"), elements);
        } else if let Some(rule) = item.get("rule") {
            let comment = rule
                .get("comment")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let exprs = rule
                .get("expr")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            summary
                .chains
                .entry(str_field(rule, "chain"))
                .or_default()
                .push((comment, exprs));
        }
    }
    strip_volatile(&mut value);
    if let Some(items) = value.get("nftables").and_then(Value::as_array) {
        for item in items {
            let Some((kind, object)) = item.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let key = match kind.as_str() {
                // A rule belongs to its chain's entry, after the chain itself.
                "rule" => Fingerprint::key("chain", &str_field(object, "chain")),
                "table" => "table".to_owned(),
                _ => Fingerprint::key(kind, &str_field(object, "name")),
            };
            fingerprint
                .0
                .entry(key)
                .or_default()
                .push_str(&item.to_string());
        }
    }
    Ok(())
}

impl Summary {
    /// The summary the kernel should show for a ruleset.
    pub fn of(ruleset: &Ruleset) -> Self {
        let chains = ruleset
            .chains
            .iter()
            .map(|c| {
                let rules = c
                    .rules
                    .iter()
                    .map(|r| (r.comment.clone().unwrap_or_default(), r.exprs.len()))
                    .collect();
                (c.name.clone(), rules)
            })
            .collect();
        let sets = ruleset
            .sets
            .iter()
            .map(|s| {
                let mut elements: Vec<String> = s
                    .elements
                    .iter()
                    .map(|e| ruleset_element_text(e, s.family))
                    .collect();
                elements.sort();
                (s.name.clone(), elements)
            })
            .collect();
        let maps = ruleset
            .maps
            .iter()
            .map(|m| {
                let mut elements: Vec<String> = m
                    .elements
                    .iter()
                    .map(|(ip, verdict)| {
                        let verdict = match verdict {
                            MapVerdict::Jump(chain) => format!("jump {chain}"),
                            MapVerdict::Goto(chain) => format!("goto {chain}"),
                        };
                        format!("{ip} : {verdict}")
                    })
                    .collect();
                elements.sort();
                (m.name.clone(), elements)
            })
            .collect();
        Self { chains, sets, maps }
    }

    /// Names of the regular (non-base) chains, sets and maps, for a full replace.
    pub fn names(&self) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
        (
            self.chains.keys().map(String::as_str).collect(),
            self.sets.keys().map(String::as_str).collect(),
            self.maps.keys().map(String::as_str).collect(),
        )
    }
}

fn str_field(object: &Value, field: &str) -> String {
    object
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn elements(object: &Value) -> &[Value] {
    object
        .get("elem")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// An element as `nft` writes it: `10.0.0.1`, `10.0.0.0/8`, `a-b`, `10.0.0.1 . tcp . 80`.
fn element_text(element: &Value) -> String {
    match element {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(prefix) = o.get("prefix") {
                format!(
                    "{}/{}",
                    str_field(prefix, "addr"),
                    prefix.get("len").unwrap_or(&Value::Null)
                )
            } else if let Some(Value::Array(range)) = o.get("range") {
                let parts: Vec<String> = range.iter().map(element_text).collect();
                parts.join("-")
            } else if let Some(Value::Array(concat)) = o.get("concat") {
                let parts: Vec<String> = concat.iter().map(element_text).collect();
                parts.join(" . ")
            } else if let Some(inner) = o.get("elem").and_then(|e| e.get("val")) {
                element_text(inner)
            } else {
                element.to_string()
            }
        }
        other => other.to_string(),
    }
}

fn verdict_text(verdict: &Value) -> String {
    for kind in ["jump", "goto"] {
        if let Some(target) = verdict
            .get(kind)
            .and_then(|v| v.get("target"))
            .and_then(Value::as_str)
        {
            return format!("{kind} {target}");
        }
    }
    verdict.to_string()
}

fn ruleset_element_text(element: &SetElement, family: Family) -> String {
    match element {
        SetElement::Address(ip) => ip.to_string(),
        SetElement::Range(start, end) => ranges::display(*start, *end, family),
        SetElement::AddressProtocolPort(ip, protocol, port) => {
            format!("{ip} . {protocol} . {port}")
        }
        SetElement::Interface(name) => name.clone(),
        SetElement::InterfaceAddress(name, ip) => format!("{name} . {ip}"),
    }
}

/// Removes what changes without anyone touching the table: counter values, handles, and the
/// nft version in `metainfo`.
fn strip_volatile(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.remove("handle");
            object.remove("metainfo");
            if let Some(counter) = object.get_mut("counter")
                && counter.is_object()
            {
                *counter = Value::Null;
            }
            for v in object.values_mut() {
                strip_volatile(v);
            }
        }
        Value::Array(items) => {
            items.retain(|i| i.get("metainfo").is_none());
            for v in items {
                strip_volatile(v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nft -j list table inet kube-nftpol` prints for a table with one set and one
    /// chain of one rule (trimmed: `nft` also prints `metainfo` and the table's handle).
    const TABLE: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "inet", "name": "kube-nftpol", "handle": 1}},
        {"chain": {"family": "inet", "table": "kube-nftpol", "name": "c1", "handle": 2}},
        {"set": {"family": "inet", "name": "s1", "table": "kube-nftpol", "type": "ipv4_addr", "handle": 3, "elem": ["10.0.0.1", "10.0.0.2"]}},
        {"rule": {"family": "inet", "table": "kube-nftpol", "chain": "c1", "handle": 5, "comment": "x", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@s1"}}, {"counter": {"packets": 7, "bytes": 420}}, {"accept": null}]}}]}"#;

    /// What `nft -j -f -` prints for `list set` of `s1` (one element more) and `list chain`
    /// of `c1` (other handles and counter values): one document per command.
    const OBJECTS: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "s1", "table": "kube-nftpol", "type": "ipv4_addr", "handle": 9, "elem": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}}]}
{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"chain": {"family": "inet", "table": "kube-nftpol", "name": "c1", "handle": 2}}, {"rule": {"family": "inet", "table": "kube-nftpol", "chain": "c1", "handle": 8, "comment": "x", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@s1"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}]}
"#;

    #[test]
    fn a_listing_of_several_objects_reads_as_one() {
        let (summary, _) = parse(OBJECTS).unwrap();
        assert_eq!(summary.sets["s1"], ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(summary.chains["c1"], [("x".to_owned(), 3)]);
        assert!(matches!(parse(""), Err(Error::Shape)));
    }

    #[test]
    fn a_fingerprint_updated_with_the_objects_written_equals_a_full_listing() {
        let (_, mut fingerprint) = parse(TABLE).unwrap();
        let after = TABLE.replace(r#""10.0.0.2"]"#, r#""10.0.0.2", "10.0.0.3"]"#);
        let (_, full) = parse(&after).unwrap();
        assert_ne!(fingerprint, full);
        let (_, part) = parse(OBJECTS).unwrap();
        fingerprint.update(part, []);
        assert_eq!(fingerprint, full, "handles and counters do not count");

        // An object deleted by the apply leaves the fingerprint; one someone else added shows.
        let (_, mut without_set) = parse(TABLE).unwrap();
        without_set.update(Fingerprint::default(), [Fingerprint::key("set", "s1")]);
        assert!(!without_set.0.contains_key("set s1"));
        let tampered = TABLE.replace(r#"{"accept": null}"#, r#"{"drop": null}"#);
        assert_ne!(parse(&tampered).unwrap().1, parse(TABLE).unwrap().1);
    }
}
