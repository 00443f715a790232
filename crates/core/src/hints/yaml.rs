//! A small YAML writer for JSON values: block style, every string double-quoted.
//!
//! Why not a YAML library: the crate reads YAML with serde-saphyr built without its serializer,
//! and what is written here is one fixed, small shape (NetworkPolicies). Writing every string
//! as a double-quoted scalar, with YAML's escapes for anything that is not printable or could
//! end a line, means no value can change type (`"true"`, `"53"`, `"on"`, `"null"`, `"1e3"`) or
//! break out of its line, whatever the pod and label names hold. Keys are plain only when they
//! are unmistakable. Comments get the same escaping. Keys of Kubernetes objects come in the
//! order people expect (`apiVersion`, `kind`, `metadata`, `spec`; `name` first), others sorted.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Keys written first, in this order; the rest follow sorted.
const KEY_ORDER: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    // A peer reads "in these namespaces, these pods"; a spec has no namespaceSelector.
    "namespaceSelector",
    "podSelector",
    "policyTypes",
    "ingress",
    "egress",
    "from",
    "to",
    "ipBlock",
    "cidr",
    "except",
    "protocol",
    "port",
    "endPort",
    "matchLabels",
    "matchExpressions",
];

/// Words some YAML parsers read as booleans or null when plain (YAML 1.1 and 1.2).
const SPECIAL_WORDS: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null"];

/// One YAML document for `value` (no `---` line), ending with a newline.
pub fn document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0, false),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

/// `text` as comment lines (`# ...`), one per line of it, with unprintable characters escaped.
pub fn comment(text: &str) -> String {
    let mut out = String::new();
    for line in text.split('\n') {
        out.push('#');
        if !line.is_empty() {
            out.push(' ');
            escape_into(&mut out, line);
        }
        out.push('\n');
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// The entries of a non-empty map, keys at `indent`; with `first_inline` the first key goes
/// where the cursor is (after a sequence's `- `).
fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize, first_inline: bool) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by_key(|(key, _)| {
        let rank = KEY_ORDER
            .iter()
            .position(|k| k == key)
            .unwrap_or(KEY_ORDER.len());
        (rank, key.as_str())
    });
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 || !first_inline {
            pad(out, indent);
        }
        out.push_str(&write_key(key));
        out.push(':');
        match value {
            Value::Object(map) if !map.is_empty() => {
                out.push('\n');
                write_map(out, map, indent + 2, false);
            }
            // kubectl's style: a sequence's dashes line up with its key.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent, false);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

/// The items of a non-empty sequence, dashes at `indent`.
fn write_seq(out: &mut String, items: &[Value], indent: usize, first_inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first_inline {
            pad(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_map(out, map, indent + 2, true),
            Value::Array(items) if !items.is_empty() => write_seq(out, items, indent + 2, true),
            scalar => {
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

/// A scalar, or an empty map or sequence, on one line.
fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
    }
}

fn write_key(key: &str) -> String {
    let plain = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && !SPECIAL_WORDS.contains(&key.to_ascii_lowercase().as_str());
    if plain { key.to_owned() } else { quote(key) }
}

/// A double-quoted scalar.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    escape_into(&mut out, text);
    out.push('"');
    out
}

/// `text` with `"`, `\` and everything not printable on one line escaped (YAML 1.2 §5.7).
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            // Writing to a String cannot fail.
            c if u32::from(c) <= 0xFFFF => drop(write!(out, "\\u{:04X}", u32::from(c))),
            c => drop(write!(out, "\\U{:08X}", u32::from(c))),
        }
    }
}

/// YAML's printable characters, less the ones YAML 1.1 reads as line breaks (NEL, LS, PS) and
/// the byte order mark.
fn printable(c: char) -> bool {
    matches!(u32::from(c), 0x20..=0x7E | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x1_0000..=0x10_FFFF)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Parses YAML back with the crate's own YAML reader.
    fn read(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn kubernetes_objects_are_block_yaml_in_the_usual_key_order() {
        let value = json!({
            "spec": {"policyTypes": ["Egress"], "podSelector": {"matchLabels": {"app": "web"}}},
            "metadata": {"namespace": "shop", "name": "p"},
            "kind": "NetworkPolicy",
            "apiVersion": "networking.k8s.io/v1",
        });
        assert_eq!(
            document(&value),
            "apiVersion: \"networking.k8s.io/v1\"\n\
             kind: \"NetworkPolicy\"\n\
             metadata:\n  name: \"p\"\n  namespace: \"shop\"\n\
             spec:\n  podSelector:\n    matchLabels:\n      app: \"web\"\n  policyTypes:\n  - \"Egress\"\n"
        );
    }

    #[test]
    fn sequences_of_maps_put_the_first_key_after_the_dash() {
        let value = json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
                                       "ports": [{"port": 53, "protocol": "UDP"}]}]});
        assert_eq!(
            document(&value),
            "egress:\n\
             - to:\n  - ipBlock:\n      cidr: \"10.0.0.1/32\"\n  \
               ports:\n  - protocol: \"UDP\"\n    port: 53\n"
        );
    }

    #[test]
    fn every_value_reads_back_as_written() {
        let tricky = [
            "true",
            "no",
            "On",
            "null",
            "~",
            "53",
            "0x1F",
            "1e3",
            "",
            " lead",
            "trail ",
            "a: b",
            "- x",
            "# not a comment",
            "'",
            "\"",
            "\\",
            "multi\nline",
            "tab\there",
            "\u{85}nel",
            "\u{2028}ls",
            "\u{7f}del",
            "\u{1}ctl",
            "\u{FEFF}bom",
            "émoji 🦀",
            "{a}",
            "[b]",
            "&anchor",
            "*alias",
            "!tag",
            "%directive",
            "@",
            "`",
            "---",
            "...",
        ];
        let mut map = Map::new();
        for (i, text) in tricky.iter().enumerate() {
            map.insert(format!("k{i}"), json!(text));
            map.insert((*text).to_owned(), json!(i));
        }
        let value = json!({
            "strings": tricky.to_vec(),
            "map": map,
            "numbers": [0, 53, -1, 65535],
            "flags": [true, false, null],
            "empty": {"map": {}, "list": [], "string": ""},
            "nested": [[1, [2, 3]], [{"a": [{"b": "c"}]}]],
        });
        let text = document(&value);
        assert_eq!(read(&text), value, "{text}");
    }

    #[test]
    fn keys_are_plain_only_when_unmistakable() {
        for (key, expected) in [
            ("app", "app"),
            ("kubernetes.io/metadata.name", "kubernetes.io/metadata.name"),
            ("app.kubernetes.io/part-of", "app.kubernetes.io/part-of"),
            ("on", "\"on\""),
            ("Yes", "\"Yes\""),
            ("80", "\"80\""),
            ("a b", "\"a b\""),
            ("a:b", "\"a:b\""),
            ("", "\"\""),
        ] {
            assert_eq!(write_key(key), expected, "{key}");
        }
    }

    #[test]
    fn comments_cannot_break_out_of_their_lines() {
        assert_eq!(comment("one\ntwo"), "# one\n# two\n");
        assert_eq!(comment(""), "#\n");
        let text = comment("x\r\u{85}apiVersion: v1\u{2028}kind: Pod");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("\\r\\u0085apiVersion: v1\\u2028kind"),
            "{text}"
        );
        assert_eq!(read(&format!("{text}a: 1\n")), json!({"a": 1}));
    }
}
