//! How an edge looks, the same in every renderer: its label and its line. Allowed edges are
//! green and solid, audited ones orange and dashed, denied ones red with a bar for a head; a
//! preview draws what the candidates would deny bold red and what they would allow bold
//! green, with a second label line saying so.

use super::{Change, Edge};
use crate::flow_line::Action;

/// Green: allowed.
pub const ALLOW: &str = "#2e7d32";
/// Orange: audited (would be denied).
pub const AUDIT: &str = "#e65100";
/// Red: denied.
pub const DENY: &str = "#c62828";
/// Grey: idle workloads and group borders.
pub const MUTED: &str = "#78909c";

/// An edge's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Its colour, `#rrggbb`.
    pub color: &'static str,
    /// Dashed (audited).
    pub dashed: bool,
    /// Drawn thick: a change the preview shows.
    pub bold: bool,
    /// Ends in a bar or cross: the flow is (or would be) denied.
    pub blocked: bool,
}

/// The line of an edge, from its verdict and, after a preview, its change.
pub fn line(edge: &Edge) -> Line {
    let today = match edge.verdict {
        Action::Allow => Line {
            color: ALLOW,
            dashed: false,
            bold: false,
            blocked: false,
        },
        Action::Audit => Line {
            color: AUDIT,
            dashed: true,
            bold: false,
            blocked: false,
        },
        Action::Deny | Action::Revoke => Line {
            color: DENY,
            dashed: false,
            bold: false,
            blocked: true,
        },
    };
    match edge.preview {
        Some(Change::NewlyDenied) => Line {
            color: DENY,
            dashed: false,
            bold: true,
            blocked: true,
        },
        Some(Change::NewlyAllowed) => Line {
            color: ALLOW,
            dashed: false,
            bold: true,
            blocked: false,
        },
        _ => today,
    }
}

/// The label's lines: `tcp/8080 (2 flows)`, then what a preview changes.
pub fn label(edge: &Edge) -> Vec<String> {
    let port = match edge.port {
        Some(port) => format!("{}/{port}", edge.protocol),
        None => edge.protocol.to_string(),
    };
    let plural = if edge.flows == 1 { "" } else { "s" };
    let mut lines = vec![format!("{port} ({} flow{plural})", edge.flows)];
    match edge.preview {
        Some(Change::NewlyDenied) => lines.push("would be denied".to_owned()),
        Some(Change::NewlyAllowed) => lines.push("would be allowed".to_owned()),
        Some(Change::Unknown) => lines.push("not previewed".to_owned()),
        Some(Change::Kept | Change::StillDenied) | None => {}
    }
    lines
}

/// A group's title: `namespace shop`, `(observed)` after an observed one's.
pub fn group_title(group: &super::Group) -> String {
    match group.kind {
        super::GroupKind::External => "addresses (not pods)".to_owned(),
        super::GroupKind::Namespace if group.observed => {
            format!("namespace {} (observed)", group.name)
        }
        super::GroupKind::Namespace => format!("namespace {}", group.name),
    }
}
