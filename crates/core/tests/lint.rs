//! The linter on the upstream Kubernetes network policy e2e cases
//! (../shared/conformance/upstream.json): each case's cluster (namespaces x, y, z; nine pods
//! serving on named ports; the case's policies) linted with the default config, the findings
//! compared with the reviewed golden file `tests/golden/lint-conformance.txt`. After an
//! intended change, `UPDATE_GOLDEN=1 cargo test -p kube-nftpol-core --test lint` rewrites it; review the diff.
//!
//! The e2e cases are fragments that test one policy each against otherwise open namespaces, so
//! the posture rules (`missing-default-deny-*`, `unprotected-pod`) would repeat the same
//! findings in every case; the golden file counts them per case and lists the findings of the
//! other rules, which are about the case's policies.

use std::fmt::Write as _;
use std::path::PathBuf;

use kube_nftpol_core::lint::{self, Config, RuleId, report};
use kube_nftpol_core::manifest::Locations;
use kube_nftpol_test_support::conformance;

/// The rules about a namespace's or a pod's cover rather than about a policy.
const POSTURE: [RuleId; 3] = [
    RuleId::MissingDefaultDenyIngress,
    RuleId::MissingDefaultDenyEgress,
    RuleId::UnprotectedPod,
];

#[test]
fn lint_on_the_upstream_cases_matches_the_reviewed_golden_file() {
    let file = conformance::load();
    let config = Config::default();
    let mut text = String::new();
    for case in &file.cases {
        let findings = lint::lint(&case.snapshot(), &config);
        let (posture, policy): (Vec<_>, Vec<_>) = findings
            .into_iter()
            .partition(|f| POSTURE.contains(&f.rule));
        let _ = writeln!(text, "## {}", case.name);
        let count = |rule| posture.iter().filter(|f| f.rule == rule).count();
        let _ = writeln!(
            text,
            "posture: {} without default deny for ingress, {} for egress, {} unprotected workloads",
            count(RuleId::MissingDefaultDenyIngress),
            count(RuleId::MissingDefaultDenyEgress),
            count(RuleId::UnprotectedPod)
        );
        text.push_str(&report::to_text(&report::locate(policy, &Locations::new())));
        text.push('\n');
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lint-conformance.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert!(
        text == expected,
        "lint findings differ from {}; review and rewrite with UPDATE_GOLDEN=1\n--- got\n{text}",
        path.display()
    );
}
