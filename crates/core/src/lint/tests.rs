//! The rules, each with a cluster that triggers it and one that does not, built from manifests
//! on top of [`CLEAN`], a small cluster that gives no finding at all.

use super::*;
use crate::manifest::load_str;
use crate::model::ObjectKind;

/// Namespaces `shop` and `kube-system`; shop's `web-1` (port `http` 8080) and `db-0` (port
/// `pg` 5432); CoreDNS. Shop denies by default both ways, allows DNS to CoreDNS on UDP and TCP,
/// and web to db on 5432.
const CLEAN: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec: {containers: [{name: db, ports: [{name: pg, containerPort: 5432}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns-1, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  containers:
  - name: coredns
    ports: [{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53}]
status: {podIP: 10.0.0.53}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: pg}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-to-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]
";

fn lint_text(text: &str, config: &Config) -> Vec<Finding> {
    let loaded = load_str(text, "test.yaml").unwrap();
    lint(&loaded.snapshot, config)
}

/// The findings of [`CLEAN`] plus `extra` documents, with the default config.
fn lint_clean_with(extra: &str) -> Vec<Finding> {
    lint_text(&format!("{CLEAN}---\n{extra}"), &Config::default())
}

/// `(object, field)` of the findings of `rule`.
fn of(findings: &[Finding], rule: RuleId) -> Vec<(String, Option<String>)> {
    findings
        .iter()
        .filter(|f| f.rule == rule)
        .map(|f| (f.object.to_string(), f.field.clone()))
        .collect()
}

fn one(object: &str, field: Option<&str>) -> Vec<(String, Option<String>)> {
    vec![(object.to_owned(), field.map(str::to_owned))]
}

/// The finding of `rule`, which must be there.
fn find(findings: &[Finding], rule: RuleId) -> &Finding {
    findings
        .iter()
        .find(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule} in {findings:#?}"))
}

/// Policy `name` of namespace shop with the `bad` spec gives one finding of `rule`, at
/// `field`, which is returned; with the `good` spec, none.
fn bad_and_good(rule: RuleId, name: &str, field: &str, bad: &str, good: &str) -> Finding {
    let findings = lint_clean_with(&policy(name, bad));
    let object = format!("NetworkPolicy shop/{name}");
    assert_eq!(
        of(&findings, rule),
        one(&object, Some(field)),
        "{findings:#?}"
    );
    let good = lint_clean_with(&policy(name, good));
    assert!(of(&good, rule).is_empty(), "{good:#?}");
    find(&findings, rule).clone()
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: {name}, namespace: shop}}\nspec:\n{spec}"
    )
}

#[test]
fn the_clean_cluster_gives_no_finding() {
    let findings = lint_text(CLEAN, &Config::default());
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn invalid_policy_reports_each_field_the_validator_rejects() {
    let bad = policy(
        "bad",
        "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}\n\
         \x20   - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}\n",
    );
    let findings = lint_clean_with(&bad);
    assert_eq!(
        of(&findings, RuleId::InvalidPolicy),
        [
            (
                "NetworkPolicy shop/bad".to_owned(),
                Some("spec.ingress[0].from[0].ipBlock.cidr".to_owned())
            ),
            (
                "NetworkPolicy shop/bad".to_owned(),
                Some("spec.ingress[0].from[1].ipBlock.except[0]".to_owned())
            ),
        ]
    );
    assert_eq!(findings[0].severity, Severity::Error);
    let good = policy(
        "good",
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}}], ports: [{port: 80}]}]\n",
    );
    assert!(of(&lint_clean_with(&good), RuleId::InvalidPolicy).is_empty());
}

const OTHER_NAMESPACE: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Pod
metadata:
  name: api-7c9-a
  namespace: other
  labels: {app: api}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: api-7c9, uid: u, controller: true}]
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: api-7c9-b
  namespace: other
  labels: {app: api}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: api-7c9, uid: u, controller: true}]
status: {podIP: 10.0.1.2}
";

#[test]
fn a_namespace_without_default_deny_is_reported_for_each_direction() {
    let findings = lint_clean_with(OTHER_NAMESPACE);
    assert_eq!(
        of(&findings, RuleId::MissingDefaultDenyIngress),
        one("Namespace other", None)
    );
    assert_eq!(
        of(&findings, RuleId::MissingDefaultDenyEgress),
        one("Namespace other", None)
    );
    // A default deny of one direction leaves the other reported.
    let deny_ingress = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                        metadata: {name: deny, namespace: other}\nspec: {podSelector: {}}\n";
    let findings = lint_clean_with(&format!("{OTHER_NAMESPACE}{deny_ingress}"));
    assert!(of(&findings, RuleId::MissingDefaultDenyIngress).is_empty());
    assert_eq!(of(&findings, RuleId::MissingDefaultDenyEgress).len(), 1);
}

#[test]
fn exempt_namespaces_are_left_out_of_the_posture_rules() {
    let mut config = Config::default();
    config.exempt_namespaces.insert("other".into());
    let findings = lint_text(&format!("{CLEAN}---\n{OTHER_NAMESPACE}"), &config);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn pods_no_policy_selects_are_reported_once_per_workload() {
    let findings = lint_clean_with(OTHER_NAMESPACE);
    let unprotected: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.rule == RuleId::UnprotectedPod)
        .collect();
    assert_eq!(unprotected.len(), 1, "{findings:#?}");
    assert_eq!(unprotected[0].object.to_string(), "Pod other/api-7c9-a");
    assert!(
        unprotected[0]
            .message
            .starts_with("the 2 pods of ReplicaSet api-7c9 (api-7c9-a, api-7c9-b) are selected"),
        "{}",
        unprotected[0].message
    );
    assert!(unprotected[0].fix.contains("app=api"));
    // Selected by any policy, for either direction: protected.
    let selects = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                   metadata: {name: api, namespace: other}\n\
                   spec: {podSelector: {matchLabels: {app: api}}, policyTypes: [Egress]}\n";
    let findings = lint_clean_with(&format!("{OTHER_NAMESPACE}{selects}"));
    assert!(of(&findings, RuleId::UnprotectedPod).is_empty());
}

fn without_allow_dns() -> String {
    CLEAN
        .replace("name: allow-dns", "name: allow-nothing")
        .replace(
            "ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]",
            "ports: [{protocol: UDP, port: 5353}]",
        )
}

#[test]
fn egress_isolation_without_dns_is_an_error_on_each_isolating_policy() {
    let findings = lint_text(&without_allow_dns(), &Config::default());
    let policies = of(&findings, RuleId::EgressWithoutDns);
    assert_eq!(
        policies,
        [
            (
                "NetworkPolicy shop/allow-nothing".to_owned(),
                Some("spec.egress".to_owned())
            ),
            (
                "NetworkPolicy shop/default-deny".to_owned(),
                Some("spec.policyTypes".to_owned())
            ),
            (
                "NetworkPolicy shop/web-to-db".to_owned(),
                Some("spec.egress".to_owned())
            ),
        ]
    );
    let default_deny = findings
        .iter()
        .find(|f| f.rule == RuleId::EgressWithoutDns && f.object.name == "default-deny")
        .unwrap();
    assert_eq!(default_deny.severity, Severity::Error);
    assert!(
        default_deny.message.contains("shop/db-0, shop/web-1"),
        "{}",
        default_deny.message
    );
    assert!(
        default_deny
            .fix
            .contains("kubernetes.io/metadata.name: kube-system")
    );
}

#[test]
fn egress_isolation_without_dns_is_found_without_pods_through_a_witness() {
    let policies_only = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: shop}
spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-for-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]
  egress: [{ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]}]
";
    let findings = lint_text(policies_only, &Config::default());
    assert_eq!(
        of(&findings, RuleId::EgressWithoutDns),
        one("NetworkPolicy shop/deny-egress", Some("spec.policyTypes"))
    );
    let finding = &find(&findings, RuleId::EgressWithoutDns);
    assert!(
        finding.message.contains("none in the input"),
        "{}",
        finding.message
    );
    // Rules that judge selectors by the cluster's pods do not run on policies alone.
    assert!(of(&findings, RuleId::SelectsNoPods).is_empty());
}

#[test]
fn dns_allowed_on_udp_only_is_reported_on_the_allowing_rule() {
    let udp_only = CLEAN.replace(
        "ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]",
        "ports: [{protocol: UDP, port: 53}]",
    );
    let findings = lint_text(&udp_only, &Config::default());
    assert_eq!(
        of(&findings, RuleId::DnsUdpOnly),
        one("NetworkPolicy shop/allow-dns", Some("spec.egress[0].ports"))
    );
    assert!(of(&findings, RuleId::EgressWithoutDns).is_empty());
    assert!(of(&lint_text(CLEAN, &Config::default()), RuleId::DnsUdpOnly).is_empty());
}

#[test]
fn a_pod_selector_that_selects_no_pod_of_its_namespace_is_reported() {
    let typo = policy(
        "typo",
        "  podSelector: {matchLabels: {app: wbe}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 80}]}]\n",
    );
    let findings = lint_clean_with(&typo);
    assert_eq!(
        of(&findings, RuleId::SelectsNoPods),
        one("NetworkPolicy shop/typo", Some("spec.podSelector"))
    );
    assert!(findings[0].message.contains("app=wbe"), "{findings:#?}");
    assert!(of(&lint_text(CLEAN, &Config::default()), RuleId::SelectsNoPods).is_empty());
}

#[test]
fn a_peer_that_selects_no_pod_is_reported() {
    let spec = |app: &str| {
        format!(
            "  podSelector: {{matchLabels: {{app: db}}}}\n  ingress: [{{from: [{{podSelector: \
             {{matchLabels: {{app: {app}}}}}}}], ports: [{{port: 5432}}]}}]\n"
        )
    };
    let field = "spec.ingress[0].from[0]";
    let finding = bad_and_good(
        RuleId::PeerSelectsNoPods,
        "p",
        field,
        &spec("cache"),
        &spec("web"),
    );
    assert_eq!(finding.severity, Severity::Info);
}

#[test]
fn a_namespace_selector_on_a_label_no_namespace_carries_says_which_label_to_use() {
    let spec = |key: &str| {
        format!(
            "  podSelector: {{matchLabels: {{app: db}}}}\n  ingress:\n  - from: \
             [{{namespaceSelector: {{matchLabels: {{{key}: kube-system}}}}}}]\n    ports: [{{port: 5432}}]\n"
        )
    };
    let findings = lint_clean_with(&policy("from-system", &spec("name")));
    assert_eq!(
        of(&findings, RuleId::NamespaceSelectorMatchesNothing),
        one(
            "NetworkPolicy shop/from-system",
            Some("spec.ingress[0].from[0].namespaceSelector")
        )
    );
    let finding = find(&findings, RuleId::NamespaceSelectorMatchesNothing);
    assert!(
        finding
            .message
            .contains("no namespace carries the label `name`")
    );
    assert_eq!(
        finding.fix,
        "select the namespace by the label every namespace carries: \
         `kubernetes.io/metadata.name: kube-system`"
    );
    // Not reported twice as a peer that selects nothing.
    assert!(of(&findings, RuleId::PeerSelectsNoPods).is_empty());
    let findings = lint_clean_with(&policy("from-system", &spec("kubernetes.io/metadata.name")));
    assert!(of(&findings, RuleId::NamespaceSelectorMatchesNothing).is_empty());
}

#[test]
fn a_named_port_no_destination_pod_declares_is_reported_for_both_directions() {
    let findings = lint_text(
        &CLEAN.replace("ports: [{port: pg}]", "ports: [{port: postgres}]"),
        &Config::default(),
    );
    assert_eq!(
        of(&findings, RuleId::NamedPortNotDeclared),
        one(
            "NetworkPolicy shop/db-from-web",
            Some("spec.ingress[0].ports[0]")
        )
    );
    let egress = CLEAN.replace(
        "ports: [{port: 5432}]",
        "ports: [{port: pg, protocol: UDP}]",
    );
    let findings = lint_text(&egress, &Config::default());
    assert_eq!(
        of(&findings, RuleId::NamedPortNotDeclared),
        one(
            "NetworkPolicy shop/web-to-db",
            Some("spec.egress[0].ports[0]")
        )
    );
    let finding = find(&findings, RuleId::NamedPortNotDeclared);
    assert!(
        finding.message.contains("(shop/db-0 declares it for tcp)"),
        "{}",
        finding.message
    );
    let named = CLEAN.replace("ports: [{port: 5432}]", "ports: [{port: pg}]");
    assert!(
        of(
            &lint_text(&named, &Config::default()),
            RuleId::NamedPortNotDeclared
        )
        .is_empty()
    );
}

#[test]
fn an_any_address_block_without_except_is_reported_and_one_with_except_is_not() {
    let spec = |except: &str| {
        format!(
            "  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from:\n    - \
             podSelector: {{matchLabels: {{app: db}}}}\n    - ipBlock: {{cidr: 0.0.0.0/0{except}}}\n    \
             ports: [{{port: 8080}}]\n"
        )
    };
    let good = spec(", except: [10.0.0.0/8]");
    let field = "spec.ingress[0].from[1]";
    let finding = bad_and_good(RuleId::AnyAddressPeer, "p", field, &spec(""), &good);
    assert!(
        finding.message.contains("every IPv4 source"),
        "{}",
        finding.message
    );
}

#[test]
fn an_empty_namespace_selector_in_ingress_is_reported_and_a_labelled_one_is_not() {
    let spec = |selector: &str| {
        format!(
            "  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from: [{{namespaceSelector: \
             {selector}, podSelector: {{matchLabels: {{app: db}}}}}}]\n    ports: [{{port: 8080}}]\n"
        )
    };
    let good = spec("{matchLabels: {team: shop}}");
    let field = "spec.ingress[0].from[0].namespaceSelector";
    let finding = bad_and_good(RuleId::AllNamespacesIngress, "p", field, &spec("{}"), &good);
    assert!(
        finding
            .message
            .contains("pods labelled app=db in every namespace")
    );
}

#[test]
fn rules_without_ports_and_rules_without_anything_are_reported() {
    let no_ports = CLEAN.replace("    ports: [{port: pg}]\n", "");
    let findings = lint_text(&no_ports, &Config::default());
    assert_eq!(
        of(&findings, RuleId::AllPortsOpen),
        one("NetworkPolicy shop/db-from-web", Some("spec.ingress[0]"))
    );
    assert!(of(&findings, RuleId::AllowAllRule).is_empty());
    let allow_all = policy(
        "allow-all",
        "  podSelector: {matchLabels: {app: web}}\n  ingress: [{}]\n",
    );
    let findings = lint_clean_with(&allow_all);
    assert_eq!(
        of(&findings, RuleId::AllowAllRule),
        one("NetworkPolicy shop/allow-all", Some("spec.ingress[0]"))
    );
    assert!(of(&lint_text(CLEAN, &Config::default()), RuleId::AllPortsOpen).is_empty());
}

#[test]
fn a_rule_another_policy_already_allows_in_full_is_shadowed() {
    // Every pod of shop may reach db-0 on any TCP port: web-to-db's rule adds nothing.
    let broad = policy(
        "to-db",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{podSelector: {matchLabels: {app: db}}}], ports: [{protocol: TCP}]}]\n",
    );
    let findings = lint_clean_with(&broad);
    assert_eq!(
        of(&findings, RuleId::ShadowedRule),
        one("NetworkPolicy shop/web-to-db", Some("spec.egress[0]"))
    );
    let finding = find(&findings, RuleId::ShadowedRule);
    assert!(
        finding
            .message
            .starts_with("shop/to-db egress[0] already allows"),
        "{}",
        finding.message
    );
    // A policy for fewer pods, or with fewer ports, shadows nothing.
    let narrower = policy(
        "to-db",
        "  podSelector: {matchLabels: {app: web, tier: front}}\n  policyTypes: [Egress]\n  egress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]\n",
    );
    assert!(of(&lint_clean_with(&narrower), RuleId::ShadowedRule).is_empty());
    let fewer_ports = policy(
        "to-db",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 5433}]}]\n",
    );
    assert!(of(&lint_clean_with(&fewer_ports), RuleId::ShadowedRule).is_empty());
}

#[test]
fn the_metadata_address_reachable_from_restricted_egress_is_reported_on_the_allowing_peer() {
    let spec = |except: &str| {
        format!(
            "  podSelector: {{matchLabels: {{app: web}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - \
             ipBlock: {{cidr: 0.0.0.0/0{except}}}\n    - ipBlock: {{cidr: '::/0', except: ['fd00:ec2::254/128']}}\n"
        )
    };
    let good = spec(", except: [169.254.0.0/16]");
    let field = "spec.egress[0].to[0]";
    let finding = bad_and_good(RuleId::MetadataReachable, "p", field, &spec(""), &good);
    assert!(
        finding.message.contains("169.254.169.254"),
        "{}",
        finding.message
    );
    assert_eq!(
        finding.fix,
        "add `169.254.169.254/32` to this ipBlock's `except`"
    );
}

#[test]
fn the_config_changes_severities_and_turns_rules_off() {
    let text = format!("{CLEAN}---\n{OTHER_NAMESPACE}");
    let config =
        Config::from_yaml("rules: {unprotected-pod: off, missing-default-deny-egress: error}\n")
            .unwrap();
    let findings = lint_text(&text, &config);
    assert!(of(&findings, RuleId::UnprotectedPod).is_empty());
    let egress = find(&findings, RuleId::MissingDefaultDenyEgress);
    assert_eq!(egress.severity, Severity::Error);
}

#[test]
fn findings_are_sorted_and_the_same_on_every_run() {
    let text = format!("{}---\n{OTHER_NAMESPACE}", without_allow_dns());
    let first = lint_text(&text, &Config::default());
    assert!(first.len() > 4, "{first:#?}");
    assert!(first.windows(2).all(|w| w[0].sort_key() <= w[1].sort_key()));
    for _ in 0..3 {
        assert_eq!(lint_text(&text, &Config::default()), first);
    }
    assert_eq!(first[0].object.kind, ObjectKind::Namespace);
}
