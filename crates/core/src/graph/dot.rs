//! The graph as Graphviz DOT (`dot -Tsvg`): a left-to-right `digraph` with one `cluster`
//! subgraph per group, nodes and edges by their identifiers, labels and tooltips quoted
//! (<https://graphviz.org/doc/info/lang.html>: in a quoted string only `"` needs a
//! backslash; `\n` is a centred line break), the edge styles of [`super::style`].

use std::fmt::Write as _;

use super::style::{self, MUTED};
use super::{Edge, Graph, Node};

/// The DOT text of `graph`, ending with a newline.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "digraph flows {{\n  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=11, \
         nodesep=0.25, ranksep=1.1, newrank=true];\n  node [shape=box, style=\"rounded,filled\", \
         fillcolor=\"#ffffff\", color=\"#455a64\", fontname=\"Helvetica\", fontsize=10];\n  edge \
         [fontname=\"Helvetica\", fontsize=9];"
    );
    for group in &graph.groups {
        let _ = writeln!(
            out,
            "  subgraph \"cluster_{}\" {{\n    label={}; style=\"rounded{}\"; color=\"{MUTED}\";",
            group.id,
            quote(&style::group_title(group)),
            if group.kind == super::GroupKind::External {
                ",dashed"
            } else {
                ""
            },
        );
        for node in graph.nodes.iter().filter(|n| n.group == group.id) {
            let _ = writeln!(out, "    {}", node_statement(node));
        }
        out.push_str("  }\n");
    }
    for edge in &graph.edges {
        let _ = writeln!(out, "  {}", edge_statement(edge));
    }
    out.push_str("}\n");
    out
}

fn node_statement(node: &Node) -> String {
    let mut label = node.name.clone();
    if !node.kind.is_empty() {
        label.push('\n');
        label.push_str(&node.kind);
    }
    let mut attributes = vec![
        format!("label={}", quote(&label)),
        format!("tooltip={}", quote(&node.end.to_string())),
    ];
    if node.kind.is_empty() {
        attributes.push("shape=ellipse".to_owned());
    }
    if node.idle {
        attributes.push(format!(
            "style=\"rounded,dashed\", color=\"{MUTED}\", fontcolor=\"{MUTED}\""
        ));
    }
    format!("{} [{}];", node.id, attributes.join(", "))
}

fn edge_statement(edge: &Edge) -> String {
    let line = style::line(edge);
    let mut attributes = vec![
        format!("id={}", quote(&format!("flow-{}", edge.id))),
        format!("label={}", quote(&style::label(edge).join("\n"))),
        format!(
            "tooltip={}",
            quote(&format!("{} (flow {})", edge.text, edge.id))
        ),
        format!("color=\"{}\", fontcolor=\"{}\"", line.color, line.color),
    ];
    if line.dashed {
        attributes.push("style=dashed".to_owned());
    }
    if line.bold {
        attributes.push("penwidth=2.5".to_owned());
    }
    if line.blocked {
        attributes.push("arrowhead=tee".to_owned());
    }
    format!(
        "{} -> {} [{}];",
        edge.source,
        edge.destination,
        attributes.join(", ")
    )
}

/// A DOT quoted string: `"` and `\` escaped, line breaks as `\n`.
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => {}
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_escapes_quotes_backslashes_and_line_breaks() {
        assert_eq!(quote("a\"b\\c\nd\r"), r#""a\"b\\c\nd""#);
    }
}
