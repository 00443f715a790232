//! The ClusterNetworkPolicy conformance suite of network-policy-api v0.2.0, through `evaluate`.
//!
//! Every upstream test (24, with their 92 sub-tests, standard and experimental: named ports and
//! node peers), replayed from `crates/test-support/data/cnp-conformance/` on the simulated
//! placement: after each run of steps, the cluster with the objects then in force, and each
//! probe of the sub-test from its client's address to its server's. Each mismatch is printed
//! with the test, the sub-test and the probe; the test fails if there is any.

use kube_nftpol_test_support as support;

use kube_nftpol_core::evaluate;
use support::cnp_conformance::{self, Placement, Suite};

#[test]
fn every_upstream_cluster_network_policy_test_gives_the_expected_verdicts_through_evaluate() {
    let suite = Suite::load();
    assert_eq!(suite.source.tag, "v0.2.0");
    assert_eq!(suite.tests.len(), 24, "24 upstream tests");
    let subtests: usize = suite.tests.iter().map(|t| t.subtests.len()).sum();
    assert_eq!(subtests, 92, "92 upstream sub-tests");
    let placement = Placement::simulated(&suite.base_pods());
    let ip_of = |pod: &str| placement.ip_of(pod);
    let base = suite.base_objects(&placement);
    let mut mismatches = Vec::new();
    let (mut probes, mut passed_subtests) = (0, 0);
    for test in &suite.tests {
        let checkpoints = suite.checkpoints(test, &ip_of).expect("replay");
        let mut failed_subtests = std::collections::BTreeSet::new();
        for checkpoint in &checkpoints {
            let objects: Vec<_> = base.iter().chain(&checkpoint.policies).cloned().collect();
            let loaded = cnp_conformance::load(&objects).expect("the objects load");
            assert!(
                loaded.invalid_cluster_policies.is_empty() && loaded.invalid_policies.is_empty(),
                "{}: invalid policies: {:?} {:?}",
                test.name,
                loaded.invalid_cluster_policies,
                loaded.invalid_policies
            );
            for probe in &checkpoint.probes {
                probes += 1;
                let flow = cnp_conformance::flow(&suite, probe, &ip_of).expect("flow");
                let verdict = evaluate(&loaded.snapshot, &flow).expect("endpoints exist");
                if verdict.allowed != probe.connect {
                    failed_subtests.insert(checkpoint.subtest.name.clone());
                    mismatches.push(format!(
                        "{} ({}) / {}: {} -> {} {}/{}: expected {}, got {}\n  egress: {:?}\n  ingress: {:?}",
                        test.name,
                        test.source,
                        checkpoint.subtest.name,
                        probe.from,
                        probe.to,
                        probe.protocol,
                        flow.port,
                        if probe.connect { "connect" } else { "timeout" },
                        if verdict.allowed { "allowed" } else { "denied" },
                        verdict.egress,
                        verdict.ingress,
                    ));
                }
            }
        }
        passed_subtests += test.subtests.len() - failed_subtests.len();
    }
    println!(
        "{} tests, {subtests} sub-tests ({passed_subtests} passed), {probes} probes, {} mismatches",
        suite.tests.len(),
        mismatches.len()
    );
    assert_eq!(probes, 289, "every upstream probe ran");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
