//! Where in a manifest text each object and each of its fields starts: the lines a linter
//! points at (`kube-nftpol lint`'s text and SARIF output), so a code host can show a finding on
//! the line of `spec.egress[0].to[1]`.
//!
//! Read only when asked ([`super::Loader::locating`]): a second pass over the text with
//! serde-saphyr's [`Spanned`] at every node, kept apart from the pass that builds the objects.
//! JSON is read by the same YAML parser (JSON is YAML); a text it cannot read that way has no
//! field lines, and its objects keep the document's line.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::model::ObjectRef;

/// The locations of every object loaded, when the loader was asked for them.
pub type Locations = BTreeMap<ObjectRef, ObjectLocation>;

/// Where one object is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectLocation {
    /// The file (the origin the text was loaded under).
    pub origin: String,
    /// The 1-based line the object starts on, when known.
    pub line: Option<u64>,
    /// The line of each field, by path as the validator and the linter name fields
    /// (`spec.egress[0].to[1]`, `metadata.labels`).
    pub fields: BTreeMap<String, u64>,
}

impl ObjectLocation {
    /// The line of `field`, or of the nearest field containing it (`spec.ingress[0].from[0]`
    /// for `spec.ingress[0].from[0].podSelector.matchLabels[app]`), or of the object.
    pub fn line_of(&self, field: Option<&str>) -> Option<u64> {
        let mut path = field.unwrap_or_default();
        while !path.is_empty() {
            if let Some(line) = self.fields.get(path) {
                return Some(*line);
            }
            path = path.rfind(['.', '[']).map_or("", |end| &path[..end]);
        }
        self.line
    }
}

/// A YAML node with the line of each child: just the shape, no values.
#[derive(Debug)]
pub(super) enum Node {
    /// `null`, `~` or nothing.
    Null,
    /// A string, number or boolean.
    Scalar,
    /// A sequence.
    Seq(Vec<Spanned<Node>>),
    /// A mapping, keys as text with the line each key is on.
    Map(Vec<(String, u64, Spanned<Node>)>),
}

impl Node {
    /// The `items` of a `List` document.
    pub fn items(&self) -> &[Spanned<Node>] {
        match self.get("items").map(|items| &items.value) {
            Some(Self::Seq(items)) => items,
            _ => &[],
        }
    }

    fn get(&self, key: &str) -> Option<&Spanned<Node>> {
        match self {
            Self::Map(entries) => entries.iter().find(|(k, ..)| k == key).map(|(.., v)| v),
            _ => None,
        }
    }

    /// Every field below this node with its line, keyed by path.
    pub fn field_lines(&self) -> BTreeMap<String, u64> {
        let mut lines = BTreeMap::new();
        self.collect("", &mut lines);
        lines
    }

    fn collect(&self, path: &str, lines: &mut BTreeMap<String, u64>) {
        // A list item is on the line of its `-`; a mapping entry on the line of its key (a
        // block value starts on the next one).
        let children: Vec<(String, u64, &Spanned<Node>)> = match self {
            Self::Null | Self::Scalar => return,
            Self::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{path}[{i}]"), item.referenced.line(), item))
                .collect(),
            Self::Map(entries) => entries
                .iter()
                .map(|(key, line, value)| {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    (child, *line, value)
                })
                .collect(),
        };
        for (child, line, node) in children {
            lines.insert(child.clone(), line);
            node.value.collect(&child, lines);
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            let line = key.referenced.line();
            entries.push((key.value.0, line, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text (`80` and `true` keys too).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Key, E> {
                Ok(Key(value.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Key, E> {
                Ok(Key(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Key, E> {
                Ok(Key(value.to_string()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Key, E> {
                Ok(Key(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Key, E> {
                Ok(Key(value.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".to_owned()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// The documents of a text as nodes with lines, empty documents left out as the loader leaves
/// them out; `None` when the text cannot be read this way.
pub(super) fn documents(text: &str) -> Option<Vec<Spanned<Node>>> {
    let options = serde_saphyr::options! { with_snippet: false };
    let documents =
        serde_saphyr::from_multiple_with_options::<Spanned<Node>>(text, options).ok()?;
    Some(
        documents
            .into_iter()
            .filter(|d| !matches!(d.value, Node::Null))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_get_the_line_of_their_key_or_list_item() {
        let text = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
  egress:
  - to:
    - podSelector: {matchLabels: {app: x}}
    - ipBlock:
        cidr: 0.0.0.0/0
    ports: [{port: 53, protocol: UDP}]
";
        let documents = documents(text).unwrap();
        let lines = documents[0].value.field_lines();
        assert_eq!(lines["spec"], 4);
        assert_eq!(lines["spec.podSelector"], 5);
        assert_eq!(lines["spec.egress[0].to[1]"], 9);
        assert_eq!(lines["spec.egress[0].to[1].ipBlock.cidr"], 10);
        assert_eq!(lines["spec.egress[0].ports[0]"], 11);
        let location = ObjectLocation {
            origin: "p.yaml".into(),
            line: Some(1),
            fields: lines,
        };
        let nested = "spec.egress[0].to[0].podSelector.matchLabels[app]";
        assert_eq!(location.line_of(Some(nested)), Some(8));
        assert_eq!(location.line_of(Some("spec.ingress[0]")), Some(4), "spec");
        assert_eq!(location.line_of(None), Some(1));
    }

    #[test]
    fn empty_documents_are_left_out_and_json_is_read_too() {
        let yaml = documents("---\n# nothing\n---\na: 1\n---\nb: [1, 2]\n").unwrap();
        assert_eq!(yaml.len(), 2);
        assert_eq!(yaml[1].referenced.line(), 6);
        let json = documents("{\"items\": [\n {\"a\": 1},\n {\"b\": 2}\n]}").unwrap();
        let items = json[0].value.items();
        assert_eq!(
            items
                .iter()
                .map(|i| i.referenced.line())
                .collect::<Vec<_>>(),
            [2, 3]
        );
    }
}
