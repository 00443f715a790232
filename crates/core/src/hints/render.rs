//! [`Suggestions`] as text: multi-document YAML for `kubectl apply -f -`, or a JSON report for
//! scripts.
//!
//! The YAML starts with comment lines (counts, and every issue), then one `---` document per
//! policy, each led by comments saying what it was made from and what to check. Only comments
//! and the policies: piping it to `kubectl apply -f -` applies exactly the suggestions. The JSON
//! form is the whole [`Suggestions`] (counts, each suggestion with its policy, issues).

use std::fmt::Write as _;

use super::{Suggestion, Suggestions, yaml};

/// The YAML form (see the module doc). Without suggestions it holds only comments.
pub fn to_yaml(suggestions: &Suggestions) -> serde_json::Result<String> {
    let mut out = yaml::comment(&header(suggestions));
    for suggestion in &suggestions.suggestions {
        out.push_str("---\n");
        out.push_str(&yaml::comment(&about(suggestion, suggestions.observed)));
        out.push_str(&yaml::document(&serde_json::to_value(&suggestion.policy)?));
    }
    Ok(out)
}

/// The JSON form, pretty-printed, ending with a newline.
pub fn to_json(suggestions: &Suggestions) -> serde_json::Result<String> {
    let mut text = serde_json::to_string_pretty(suggestions)?;
    text.push('\n');
    Ok(text)
}

/// What the whole output is, and the issues.
fn header(suggestions: &Suggestions) -> String {
    let mut text = String::new();
    let policies = suggestions.suggestions.len();
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "kube-nftpol: {policies} suggested NetworkPolic{} from {} {} flow{}",
        if policies == 1 { "y" } else { "ies" },
        suggestions.denied_flows,
        if suggestions.observed {
            "observed"
        } else {
            "denied"
        },
        if suggestions.denied_flows == 1 {
            ""
        } else {
            "s"
        },
    );
    if suggestions.no_longer_denied > 0 {
        let _ = write!(
            text,
            " ({} no longer denied, left out)",
            suggestions.no_longer_denied
        );
    }
    if suggestions.already_allowed > 0 {
        let _ = write!(
            text,
            " ({} already allowed, left out)",
            suggestions.already_allowed
        );
    }
    text.push('.');
    if policies > 0 && suggestions.observed {
        text.push_str(
            "\nEach allows exactly what was observed, for every pod of the workload, and isolates \
             it in that direction: review before applying.",
        );
    } else if policies > 0 {
        text.push_str(
            "\nEach allows what was denied, for every pod of the workload: review before applying.",
        );
    }
    if !suggestions.excluded.is_empty() {
        text.push_str("\nLeft out by --exclude (denied once the policies apply):");
        for flow in &suggestions.excluded {
            let _ = write!(text, "\n  {} {flow}", flow.id());
        }
    }
    if !suggestions.external_left_out.is_empty() {
        text.push_str("\nOutside the cluster, left out (add --include-external to allow them):");
        for peer in &suggestions.external_left_out {
            let _ = write!(text, "\n  {} {}", peer.id, peer.flow);
        }
    }
    if !suggestions.missing_agents.is_empty() {
        text.push_str(
            "\nINCOMPLETE: these agents did not answer, so their nodes' flows are missing and the \
             policies may not allow everything their workloads need:",
        );
        for agent in &suggestions.missing_agents {
            let _ = write!(text, "\n  {agent}");
        }
    }
    if !suggestions.issues.is_empty() {
        text.push_str("\nNot suggested:");
        for issue in &suggestions.issues {
            let _ = write!(text, "\n  {issue}");
        }
    }
    text
}

/// What one policy was made from, and its notes.
fn about(suggestion: &Suggestion, observed: bool) -> String {
    let (seen, logged) = if observed {
        ("observed", "logged packet")
    } else {
        ("denied", "logged drop")
    };
    let mut text = format!(
        "{}, {}: from {} {seen} flow{} ({} {logged}{})",
        suggestion.workload,
        suggestion.direction,
        suggestion.denied_flows,
        if suggestion.denied_flows == 1 {
            ""
        } else {
            "s"
        },
        suggestion.logged_drops,
        if suggestion.logged_drops == 1 {
            ""
        } else {
            "s"
        },
    );
    for note in &suggestion.notes {
        let _ = write!(text, "\nnote: {note}");
    }
    text
}
