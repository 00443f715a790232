//! Reading the agent's table back from the kernel (`nft -j list table inet kube-nftpol`).
//!
//! Two views of one listing:
//! - [`Summary`]: the table's structure in a form comparable with a [`Ruleset`]: chain names
//!   with each rule's comment, and every set and map with its elements written the way
//!   `nft` writes them. `Summary::of(&ruleset) == Summary::from_listing(..)` means the kernel
//!   holds what the compiler asked for (rule expressions are compared through their count and
//!   comment, elements exactly).
//! - [`Fingerprint`]: the whole listing with counter values and handles removed. The dataplane
//!   takes one after each apply; a later listing with another fingerprint means someone else
//!   changed the table (a rule added, a set flushed, the table deleted).

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

/// The listing without counter values and handles: equal fingerprints mean an unchanged table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

/// Parses a listing into its [`Summary`] and [`Fingerprint`].
pub fn parse(listing: &str) -> Result<(Summary, Fingerprint), Error> {
    let mut value: Value = serde_json::from_str(listing).map_err(Error::Json)?;
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or(Error::Shape)?;
    let mut summary = Summary::default();
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
    Ok((summary, Fingerprint(value.to_string())))
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
