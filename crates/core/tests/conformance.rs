//! Every upstream Kubernetes network policy e2e case, through `evaluate`.
//!
//! The cases come from ../shared/conformance/upstream.json (58 cases, 4,680 probes). Each
//! mismatch is printed with the case name and the probe; the test fails if there is any.

use kube_nftpol_test_support as support;

use kube_nftpol_core::evaluate;
use support::conformance;

#[test]
fn every_upstream_case_gives_the_expected_verdict_through_evaluate() {
    let file = conformance::load();
    assert_eq!(file.cases.len(), file.count);
    assert_eq!(file.count, 58, "the upstream data should hold 58 cases");
    let mut mismatches = Vec::new();
    let mut probes = 0;
    for case in &file.cases {
        let snapshot = case.snapshot();
        for policy in snapshot.policies() {
            assert!(
                policy.errors.is_empty(),
                "{}: {} invalid: {:?}",
                case.name,
                policy.key,
                policy.errors
            );
        }
        for probe in &case.probes {
            probes += 1;
            let verdict = evaluate(&snapshot, &probe.flow()).expect("probe endpoints exist");
            if verdict.allowed != probe.expect {
                mismatches.push(format!(
                    "{}: {} -> {} {}/{}: expected {}, got {}\n  egress: {:?}\n  ingress: {:?}",
                    case.name,
                    probe.from,
                    probe.to,
                    probe.protocol,
                    probe.port,
                    if probe.expect { "allowed" } else { "denied" },
                    if verdict.allowed { "allowed" } else { "denied" },
                    verdict.egress,
                    verdict.ingress,
                ));
            }
        }
    }
    println!(
        "{} cases, {probes} probes, {} mismatches",
        file.cases.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
