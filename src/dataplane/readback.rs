//! Reading the agent's table back from the kernel (`nft -j list table inet kube-nftpol`).
//!
//! Two views of one listing:
//! - [`Summary`]: the table's structure in a form comparable with a [`Ruleset`]: chain names
//!   with each rule's comment, and every set and map with its elements written the way
//!   `nft` writes them. `Summary::of(&ruleset) == Summary::from_listing(..)` means the kernel
//!   holds what the compiler asked for (rule expressions are compared through their count and
//!   comment, elements exactly).
//! - [`Fingerprint`]: the whole listing with counter values and handles removed, object by
//!   object (the table, each chain's declaration, each chain's rules in order, each set and
//!   map with its elements). The dataplane takes one after each apply; a later listing with
//!   another fingerprint means someone else changed the table (a rule added, a set flushed,
//!   the table deleted). After an incremental update, the objects the update did not touch
//!   must still match the previous fingerprint ([`Fingerprint::changed_besides`]): otherwise
//!   someone changed them in between, and taking the new listing as the reference would
//!   absorb their change.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::objects::{TableObjects, Touched};
use crate::compile::{Ruleset, render_text};

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

/// The listing without counter values and handles, keyed by object (`table`, `chain NAME`,
/// `rules NAME`, `set NAME`, `map NAME`, ...), each object's text kept as its SHA-256 (the
/// texts of a 10,000-element table would take megabytes for as long as the agent runs): equal
/// fingerprints mean an unchanged table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(BTreeMap<String, [u8; 32]>);

impl Fingerprint {
    /// The fingerprint of objects given as their texts.
    fn of_texts(texts: BTreeMap<String, String>) -> Self {
        Self(
            texts
                .into_iter()
                .map(|(key, text)| (key, Sha256::digest(text.as_bytes()).into()))
                .collect(),
        )
    }

    /// Forgets the entries `replaced` (objects an update wrote or deleted) and takes those of
    /// `part` (a listing of the objects it wrote, just read back): the fingerprint a full
    /// listing would now give, without reading the objects the update did not touch.
    pub fn update(&mut self, part: Fingerprint, replaced: impl IntoIterator<Item = String>) {
        for key in replaced {
            self.0.remove(&key);
        }
        self.0.extend(part.0);
    }

    /// The keys an object of `kind` (`chain`, `set`, `map`) named `name` has in a
    /// fingerprint: a chain has its declaration and its rules.
    pub fn keys(kind: &str, name: &str) -> Vec<String> {
        if kind == "chain" {
            vec![format!("chain {name}"), format!("rules {name}")]
        } else {
            vec![format!("{kind} {name}")]
        }
    }

    /// The first object, other than those `touched` by an update, that differs between this
    /// fingerprint (taken before the update) and `now` (taken after it); `None` when the
    /// update explains every difference. A chain the update refilled is compared by its
    /// declaration only (the refill rewrote its rules); chains, sets and maps it added,
    /// deleted or changed are left out.
    pub fn changed_besides(&self, now: &Self, touched: &Touched) -> Option<String> {
        let left_out = |key: &str| {
            let (kind, name) = key.split_once(' ').unwrap_or((key, ""));
            let touched_name = |names: &[String]| names.iter().any(|n| n == name);
            match kind {
                "rules" => touched_name(&touched.chains),
                "chain" => {
                    touched_name(&touched.chains)
                        && !(self.0.contains_key(key) && now.0.contains_key(key))
                }
                "set" => touched_name(&touched.sets),
                "map" => touched_name(&touched.maps),
                _ => false,
            }
        };
        self.0
            .keys()
            .chain(now.0.keys())
            .filter(|key| !left_out(key))
            .find(|key| self.0.get(*key) != now.0.get(*key))
            .cloned()
    }
}

/// Parses a listing (one or more JSON documents: listings of single objects, concatenated)
/// into its [`Summary`] and [`Fingerprint`].
pub fn parse(listing: &str) -> Result<(Summary, Fingerprint), Error> {
    let mut summary = Summary::default();
    let mut texts = BTreeMap::new();
    let mut documents = 0;
    for document in serde_json::Deserializer::from_str(listing).into_iter::<Value>() {
        parse_document(&document.map_err(Error::Json)?, &mut summary, &mut texts)?;
        documents += 1;
    }
    if documents == 0 {
        return Err(Error::Shape);
    }
    Ok((summary, Fingerprint::of_texts(texts)))
}

fn parse_document(
    value: &Value,
    summary: &mut Summary,
    texts: &mut BTreeMap<String, String>,
) -> Result<(), Error> {
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or(Error::Shape)?;
    for item in items {
        add_text(texts, item);
        if let Some(chain) = item.get("chain") {
            let name = str_field(chain, "name");
            summary.chains.entry(name).or_default();
        } else if let Some(set) = item.get("set") {
            let mut elements: Vec<String> = if filled_at_run_time(set) {
                Vec::new()
            } else {
                elements(set).iter().map(element_text).collect()
            };
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
    Ok(())
}

/// Adds one listing item, without its volatile parts, to the fingerprint's texts: rules are
/// appended to their chain's `rules` entry in listing order, so rule order counts.
fn add_text(texts: &mut BTreeMap<String, String>, item: &Value) {
    let Some((kind, object)) = item.as_object().and_then(|o| o.iter().next()) else {
        return;
    };
    if kind == "metainfo" {
        return;
    }
    let mut object = object.clone();
    strip_volatile(&mut object);
    if kind == "set"
        && filled_at_run_time(&object)
        && let Some(fields) = object.as_object_mut()
    {
        fields.remove("elem");
    }
    let text = object.to_string();
    let key = if kind == "rule" {
        format!("rules {}", str_field(&object, "chain"))
    } else {
        format!("{kind} {}", str_field(&object, "name"))
    };
    let entry = texts.entry(key).or_default();
    if !entry.is_empty() {
        entry.push('\n');
    }
    entry.push_str(&text);
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
                    .map(|e| render_text::listed_element(e, s.family))
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
                    .map(|(ip, verdict)| render_text::map_element(*ip, verdict))
                    .collect();
                elements.sort();
                (m.name.clone(), elements)
            })
            .collect();
        Self { chains, sets, maps }
    }
}

impl From<&Summary> for TableObjects {
    fn from(summary: &Summary) -> Self {
        Self {
            chains: summary.chains.keys().cloned().collect(),
            sets: summary.sets.keys().cloned().collect(),
            maps: summary.maps.keys().cloned().collect(),
        }
    }
}

/// A set with timeouts: the revoked connections' (`SetKind::Connections`), which the compiler
/// declares empty and the agent fills at run time, their elements expiring on their own. Their
/// elements are not part of the table's structure: neither compared nor fingerprinted.
fn filled_at_run_time(set: &Value) -> bool {
    set.get("flags")
        .and_then(Value::as_array)
        .is_some_and(|flags| flags.iter().any(|f| f == "timeout"))
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

    fn listing(rules: &[(&str, &str)], elements: &[&str]) -> String {
        let mut items = vec![
            r#"{"metainfo": {"version": "1.0.6"}}"#.to_owned(),
            r#"{"table": {"family": "inet", "name": "kube-nftpol", "handle": 1}}"#.to_owned(),
            r#"{"chain": {"family": "inet", "table": "kube-nftpol", "name": "a", "handle": 2}}"#
                .to_owned(),
            r#"{"chain": {"family": "inet", "table": "kube-nftpol", "name": "b", "handle": 3}}"#
                .to_owned(),
        ];
        let elements: Vec<String> = elements.iter().map(|e| format!("{e:?}")).collect();
        items.push(format!(
            r#"{{"set": {{"family": "inet", "name": "s", "table": "kube-nftpol", "type": "ipv4_addr", "handle": 4, "elem": [{}]}}}}"#,
            elements.join(",")
        ));
        for (handle, (chain, verdict)) in rules.iter().enumerate() {
            items.push(format!(
                r#"{{"rule": {{"family": "inet", "table": "kube-nftpol", "chain": "{chain}", "handle": {}, "comment": "c", "expr": [{{"counter": {{"packets": {handle}, "bytes": 9}}}}, {{"{verdict}": null}}]}}}}"#,
                handle + 10
            ));
        }
        format!(r#"{{"nftables": [{}]}}"#, items.join(","))
    }

    fn fingerprint(rules: &[(&str, &str)], elements: &[&str]) -> Fingerprint {
        parse(&listing(rules, elements)).unwrap().1
    }

    #[test]
    fn counters_and_handles_do_not_change_the_fingerprint_but_order_and_elements_do() {
        let base = fingerprint(&[("a", "drop"), ("a", "accept")], &["10.0.0.1", "10.0.0.2"]);
        let text = listing(&[("a", "drop"), ("a", "accept")], &["10.0.0.1", "10.0.0.2"])
            .replace("\"bytes\": 9", "\"bytes\": 77");
        assert_eq!(parse(&text).unwrap().1, base);
        let swapped = fingerprint(&[("a", "accept"), ("a", "drop")], &["10.0.0.1", "10.0.0.2"]);
        assert_ne!(swapped, base, "rule order counts");
        let fewer = fingerprint(&[("a", "drop"), ("a", "accept")], &["10.0.0.1"]);
        assert_ne!(fewer, base, "set elements count");
    }

    #[test]
    fn elements_of_sets_with_timeouts_are_neither_compared_nor_fingerprinted() {
        let revoked = |elements: &str| {
            format!(
                r#"{{"nftables": [{{"set": {{"family": "inet", "name": "revoked4", "table": "kube-nftpol", "type": ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service", "inet_service"], "handle": 4, "flags": ["timeout"]{elements}}}}}]}}"#
            )
        };
        let (empty, empty_print) = parse(&revoked("")).unwrap();
        let (filled, filled_print) = parse(&revoked(
            r#", "elem": [{"elem": {"val": {"concat": ["10.0.0.1", "10.0.0.2", "tcp", 1234, 80]}, "timeout": 300, "expires": 299}}]"#,
        ))
        .unwrap();
        assert_eq!(filled.sets["revoked4"], Vec::<String>::new());
        assert_eq!(filled, empty);
        assert_eq!(filled_print, empty_print);
        // Another set's elements still count.
        let other = revoked("").replace(r#", "flags": ["timeout"]"#, "");
        let with = other.replace(r#""handle": 4"#, r#""handle": 4, "elem": ["10.0.0.1"]"#);
        assert_ne!(parse(&other).unwrap().1, parse(&with).unwrap().1);
    }

    #[test]
    fn a_change_outside_what_an_update_touched_is_named() {
        let before = fingerprint(&[("a", "drop"), ("b", "drop")], &["10.0.0.1"]);
        // The update refilled chain a and changed set s; someone flipped chain b's verdict.
        let after = fingerprint(&[("a", "accept"), ("b", "accept")], &["10.0.0.2"]);
        let touched = Touched {
            chains: vec!["a".into()],
            sets: vec!["s".into()],
            maps: Vec::new(),
        };
        assert_eq!(
            before.changed_besides(&after, &touched).as_deref(),
            Some("rules b")
        );
        let touched_b = Touched {
            chains: vec!["a".into(), "b".into()],
            ..touched.clone()
        };
        assert_eq!(before.changed_besides(&after, &touched_b), None);
        // Nothing touched: every difference counts; the first in name order is named.
        assert_eq!(
            before
                .changed_besides(&after, &Touched::default())
                .as_deref(),
            Some("rules a")
        );
    }

    /// What `nft -j list set` of `s` (one element more) and `list chain` of `a` (other
    /// handles and counters, one rule) print: one document per command.
    const OBJECTS: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "s", "table": "kube-nftpol", "type": "ipv4_addr", "handle": 9, "elem": ["10.0.0.1","10.0.0.2","10.0.0.3"]}}]}
{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"chain": {"family": "inet", "table": "kube-nftpol", "name": "a", "handle": 2}}, {"rule": {"family": "inet", "table": "kube-nftpol", "chain": "a", "handle": 40, "comment": "c", "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}]}
"#;

    #[test]
    fn a_listing_of_several_objects_reads_as_one() {
        let (summary, _) = parse(OBJECTS).unwrap();
        assert_eq!(summary.sets["s"], ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(summary.chains["a"].len(), 1);
        assert!(matches!(parse(""), Err(Error::Shape)));
    }

    #[test]
    fn a_fingerprint_updated_with_the_objects_written_equals_a_full_listing() {
        let mut kept = fingerprint(
            &[("a", "drop"), ("a", "accept"), ("b", "drop")],
            &["10.0.0.1", "10.0.0.2"],
        );
        // The update refilled chain a with one rule and added an element to s.
        let full = fingerprint(
            &[("a", "accept"), ("b", "drop")],
            &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        );
        assert_ne!(kept, full);
        let (_, part) = parse(OBJECTS).unwrap();
        let replaced = [
            Fingerprint::keys("chain", "a"),
            Fingerprint::keys("set", "s"),
        ]
        .concat();
        kept.update(part, replaced);
        assert_eq!(kept, full, "handles and counters do not count");

        // A chain emptied by the update loses its old rules entry; an untouched chain keeps
        // its verified entry, so a later full listing with it edited still differs.
        let mut emptied = fingerprint(&[("a", "drop"), ("b", "drop")], &["10.0.0.1"]);
        let declaration_only = r#"{"nftables": [{"chain": {"family": "inet", "table": "kube-nftpol", "name": "a", "handle": 2}}]}"#;
        emptied.update(
            parse(declaration_only).unwrap().1,
            Fingerprint::keys("chain", "a"),
        );
        assert_eq!(emptied, fingerprint(&[("b", "drop")], &["10.0.0.1"]));
        assert_ne!(emptied, fingerprint(&[("b", "accept")], &["10.0.0.1"]));
    }
}
