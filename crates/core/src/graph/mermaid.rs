//! The graph as a Mermaid flowchart (<https://mermaid.js.org/syntax/flowchart.html>), which
//! GitHub renders in a ```` ```mermaid ```` block: `flowchart LR`, one `subgraph` per group,
//! arrows by verdict (`-->` allowed, `-.->` audited, `--x` denied, `==x` and `==>` for what a
//! preview changes) with `linkStyle` colours, idle workloads in the `idle` class. Every label is
//! quoted, with `"`, `#`, `<` and `>` written as entity codes, so no name can break the syntax.

use std::fmt::Write as _;

use super::style::{self, MUTED};
use super::{Change, Edge, Graph};

/// The Mermaid text of `graph`, ending with a newline.
pub fn to_mermaid(graph: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    // Writing to a String cannot fail.
    for group in &graph.groups {
        let _ = writeln!(
            out,
            "  subgraph {}[\"{}\"]",
            group.id,
            escape(&style::group_title(group))
        );
        for node in graph.nodes.iter().filter(|n| n.group == group.id) {
            let mut label = escape(&node.name);
            if !node.kind.is_empty() {
                label.push_str("<br/>");
                label.push_str(&escape(&node.kind));
            }
            let (open, close) = if node.kind.is_empty() {
                ("([", "])")
            } else {
                ("(", ")")
            };
            let _ = writeln!(out, "    {}{open}\"{label}\"{close}", node.id);
        }
        out.push_str("  end\n");
    }
    for edge in &graph.edges {
        let label: Vec<String> = style::label(edge).iter().map(|l| escape(l)).collect();
        let _ = writeln!(
            out,
            "  {} {}|\"{}\"| {}",
            edge.source,
            arrow(edge),
            label.join("<br/>"),
            edge.destination
        );
    }
    for (index, edge) in graph.edges.iter().enumerate() {
        let line = style::line(edge);
        let _ = writeln!(
            out,
            "  linkStyle {index} stroke:{},color:{}{}",
            line.color,
            line.color,
            if line.bold { ",stroke-width:3px" } else { "" }
        );
    }
    let idle: Vec<&str> = graph
        .nodes
        .iter()
        .filter(|n| n.idle)
        .map(|n| n.id.as_str())
        .collect();
    if !idle.is_empty() {
        let _ = writeln!(
            out,
            "  classDef idle stroke-dasharray:4 4,color:{MUTED}\n  class {} idle",
            idle.join(",")
        );
    }
    out
}

/// The arrow for an edge's verdict, or for what a preview changes.
fn arrow(edge: &Edge) -> &'static str {
    let line = style::line(edge);
    match (edge.preview, line.blocked, line.dashed) {
        (Some(Change::NewlyDenied), _, _) => "==x",
        (Some(Change::NewlyAllowed), _, _) => "==>",
        (_, true, _) => "--x",
        (_, false, true) => "-.->",
        (_, false, false) => "-->",
    }
}

/// Text for inside a quoted label: the characters Mermaid would read as syntax or markup as
/// decimal entity codes (`#34;`).
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '#' | '<' | '>' | '&' => {
                let _ = write!(escaped, "#{};", u32::from(c));
            }
            '\n' | '\r' => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn labels_cannot_close_their_quotes_or_add_markup() {
        assert_eq!(escape("a\"b#c<d>e&f\ng"), "a#34;b#35;c#60;d#62;e#38;f g");
    }
}
