//! End-to-end tests of the `kube-nftpol` binary: `compile`, `explain`, `suggest` (drop-log
//! lines on stdin) and `lint` run against the manifest directory `tests/fixtures/demo/` and
//! against `deploy/examples/`, checking stdout, stderr and exit statuses as a user or a script
//! sees them. `lint` also runs on `tests/fixtures/lint-clean/` (a cluster written to give no
//! finding), its text output on `deploy/examples/` is the golden file
//! `tests/golden/lint-deploy-examples.txt` (`UPDATE_GOLDEN=1 cargo test --test cli` rewrites
//! it), and its SARIF output is validated against the official SARIF 2.1.0 schema,
//! `tests/fixtures/sarif/sarif-schema-2.1.0.json` (the OASIS schema as the crates.io package
//! serde-sarif 0.8.0 ships it in `src/schema.json`; sha256 af47e7b6...5cea).
//!
//! The demo cluster: namespaces `web`, `api`, `ops` (a multi-document YAML file with an empty
//! document); pods in a JSON `List` (`web/frontend-1`, `api/backend-1` and `ops/prober` on
//! node-1, `api/backend-2` and `api/db-1` on node-2); policies `api/default-deny` (ingress),
//! `api/allow-frontend` (from web's frontend to the named port `http`), `web/frontend-egress`
//! (to api's `http` and DNS) and `ops/prober-from-office` (invalid: a /33 CIDR); an
//! `apps/v1 Deployment` (skipped with a warning) and a README (not a manifest).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEMO: &str = "tests/fixtures/demo";

/// Runs the binary from the package root, without the caller's RUST_LOG.
fn kube_nftpol(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube-nftpol"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn status(output: &Output) -> i32 {
    output.status.code().unwrap()
}

fn compile(dir: &str, node: &str) -> Output {
    kube_nftpol(&["compile", "--manifests", dir, "--node", node])
}

fn explain(from: &str, to: &str, port: &str) -> Output {
    kube_nftpol(&[
        "explain",
        "--manifests",
        DEMO,
        "--from",
        from,
        "--to",
        to,
        "--port",
        port,
    ])
}

/// Copies the files of `from` (recursively) into `to`, flat, naming each with `rename`.
fn copy_flat(from: &Path, to: &Path, rename: &dyn Fn(usize, &Path) -> String) {
    let mut files = Vec::new();
    let mut dirs = vec![from.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path)
            } else {
                files.push(path)
            }
        }
    }
    files.sort();
    for (index, file) in files.iter().enumerate() {
        fs::copy(file, to.join(rename(index, file))).unwrap();
    }
}

fn demo_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO);
    copy_flat(&root, dir.path(), &|_, file| {
        file.file_name().unwrap().to_str().unwrap().into()
    });
    dir
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn compile_prints_the_nodes_table_with_its_pod_chains() {
    let output = compile(DEMO, "node-1");
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("table inet kube-nftpol {\n"), "{text}");
    for chain in [
        "chain prerouting {",
        "chain postrouting {",
        "chain input {",
        "chain forward {",
        "chain revoked {",
        "chain eg_web_frontend-1 {",
        "chain in_api_backend-1 {",
        "chain in_ops_prober {",
    ] {
        assert!(text.contains(chain), "missing {chain:?} in\n{text}");
    }
    // Pods of node-2 are peers in sets, never chains here.
    assert!(!text.contains("chain in_api_backend-2"), "{text}");
    // The named port `http` resolved on each destination pod for the frontend's egress.
    assert!(text.contains("10.244.2.20 . tcp . 8080"), "{text}");
    assert_eq!(text.matches("\tchain ").count(), 8, "{text}");
}

#[test]
fn compile_for_another_node_has_that_nodes_chains() {
    let text = stdout(&compile(DEMO, "node-2"));
    assert!(text.contains("chain in_api_backend-2 {"), "{text}");
    assert!(text.contains("chain in_api_db-1 {"), "{text}");
    assert!(!text.contains("chain eg_web_frontend-1"), "{text}");
}

#[test]
fn compile_warns_about_a_node_without_pods() {
    let output = compile(DEMO, "node-9");
    assert_eq!(status(&output), 0);
    assert!(
        stderr(&output).contains("warning: no pod in the manifests has spec.nodeName \"node-9\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn compile_is_byte_identical_across_runs() {
    let first = compile(DEMO, "node-1");
    let second = compile(DEMO, "node-1");
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(first.stderr, second.stderr);
}

#[test]
fn compile_does_not_depend_on_file_names_or_order() {
    let expected = stdout(&compile(DEMO, "node-1"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO);
    // Flatten the tree and reverse the reading order: the last file is read first.
    let reversed = tempfile::tempdir().unwrap();
    copy_flat(&root, reversed.path(), &|index, file| {
        let extension = file.extension().unwrap().to_str().unwrap();
        format!("{:02}-renamed.{extension}", 99 - index)
    });
    let output = compile(path_str(reversed.path()), "node-1");
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output), expected);
}

#[test]
fn compile_sets_the_nflog_group() {
    let output = kube_nftpol(&[
        "compile",
        "--manifests",
        DEMO,
        "--node",
        "node-1",
        "--nflog-group",
        "7",
    ]);
    let text = stdout(&output);
    assert!(text.contains(" group 7 "), "{text}");
    assert!(!text.contains(" group 100 "), "{text}");
}

#[test]
fn compile_json_prints_json() {
    let output = kube_nftpol(&[
        "compile",
        "--manifests",
        DEMO,
        "--node",
        "node-1",
        "--format",
        "json",
    ]);
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let json: Result<serde_json::Value, _> = serde_json::from_slice(&output.stdout);
    assert!(json.is_ok(), "not JSON: {}", stdout(&output));
}

#[test]
fn invalid_policy_error_names_the_policy_and_the_field() {
    let output = compile(DEMO, "node-1");
    assert_eq!(
        status(&output),
        0,
        "invalid policies are enforced fail-closed, not fatal"
    );
    let errors = stderr(&output);
    assert!(
        errors.contains(
            "error: policy ops/prober-from-office: spec.ingress[0].from[0].ipBlock.cidr: \
             \"192.0.2.0/33\" is not a CIDR"
        ),
        "{errors}"
    );
    // Fail closed: the prober is isolated and nothing is allowed in.
    let text = stdout(&output);
    let chain = text.split("chain in_ops_prober {").nth(1).unwrap();
    let chain = &chain[..chain.find('}').unwrap()];
    assert!(!chain.contains("counter accept"), "{chain}");
}

#[test]
fn unknown_kind_is_skipped_with_a_warning_naming_file_and_kind() {
    let errors = stderr(&compile(DEMO, "node-1"));
    assert!(
        errors.contains(
            "warning: tests/fixtures/demo/other/deployment.yaml: skipping apps/v1 Deployment \
             frontend"
        ),
        "{errors}"
    );
    assert!(
        !errors.contains("README"),
        "non-manifest files are ignored: {errors}"
    );
}

#[test]
fn explain_allowed_flow_exits_0_and_names_the_allowing_rules() {
    let output = explain("web/frontend-1", "api/backend-1", "8080");
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "ALLOWED web/frontend-1 -> api/backend-1 tcp/8080\n\
         \x20 egress  web/frontend-1: allowed by web/frontend-egress egress[0] (isolated by \
         web/frontend-egress)\n\
         \x20 ingress api/backend-1: allowed by api/allow-frontend ingress[0] (isolated by \
         api/allow-frontend, api/default-deny)\n"
    );
}

#[test]
fn explain_denied_flow_exits_1_and_lists_each_miss() {
    let output = explain("ops/prober", "api/backend-1", "8080");
    assert_eq!(status(&output), 1, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("DENIED ops/prober -> api/backend-1 tcp/8080\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  egress  ops/prober: not isolated (no policy selects it for egress)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "\n  ingress api/backend-1: denied (isolated by api/allow-frontend, api/default-deny)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "\n    api/allow-frontend ingress[0]: source ops/prober is not among the rule's peers"
        ),
        "{text}"
    );
    assert!(
        text.contains("\n    api/default-deny: no ingress rules, so it denies all ingress\n"),
        "{text}"
    );
}

#[test]
fn explain_reports_port_and_protocol_misses() {
    let text = stdout(&explain("web/frontend-1", "api/backend-2", "9090"));
    assert!(
        text.contains(
            "web/frontend-egress egress[0]: tcp/9090 is not among the rule's ports: tcp/http"
        ),
        "{text}"
    );
    let output = explain("web/frontend-1", "api/db-1", "5432/SCTP");
    assert_eq!(status(&output), 1);
    assert!(
        stdout(&output).contains("(none is sctp)"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn explain_shows_an_invalid_policy_as_allowing_nothing() {
    let output = explain("10.244.2.30", "ops/prober", "9100");
    assert_eq!(status(&output), 1);
    let text = stdout(&output);
    assert!(
        text.contains("\n  egress  api/db-1 (10.244.2.30): not isolated"),
        "{text}"
    );
    assert!(
        text.contains(
            "\n    ops/prober-from-office: invalid, so it allows nothing \
             (spec.ingress[0].from[0].ipBlock.cidr: "
        ),
        "{text}"
    );
}

#[test]
fn explain_to_an_external_address_polices_only_the_sender() {
    let output = explain("web/frontend-1", "192.0.2.8", "53/udp");
    assert_eq!(status(&output), 0, "{}", stdout(&output));
    assert!(
        stdout(&output)
            .contains("\n  ingress 192.0.2.8: not policed (192.0.2.8 is not a pod address)\n")
    );
}

#[test]
fn explain_json_carries_the_verdict_and_the_exit_status() {
    let output = kube_nftpol(&[
        "explain",
        "--manifests",
        DEMO,
        "--from",
        "ops/prober",
        "--to",
        "api/backend-1",
        "--port",
        "8080",
        "--format",
        "json",
    ]);
    assert_eq!(status(&output), 1);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["allowed"], false);
    assert_eq!(json["ingress"]["decision"], "denied");
    assert_eq!(json["ingress"]["misses"][1]["reason"]["kind"], "no_rules");
}

#[test]
fn explain_bad_input_exits_2_without_a_verdict() {
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "--from",
                "frontend-1",
                "--to",
                "api/backend-1",
                "--port",
                "80",
            ],
            "NAMESPACE/POD",
        ),
        (
            &[
                "--from",
                "web/frontend-1",
                "--to",
                "api/backend-1",
                "--port",
                "0",
            ],
            "--port",
        ),
        (
            &[
                "--from",
                "web/frontend-1",
                "--to",
                "api/backend-1",
                "--port",
                "80/icmp",
            ],
            "icmp",
        ),
        (
            &[
                "--from",
                "web/frontend-1",
                "--to",
                "10.0.0.0/8",
                "--port",
                "80",
            ],
            "CIDR",
        ),
        (
            &[
                "--from",
                "web/ghost",
                "--to",
                "api/backend-1",
                "--port",
                "80",
            ],
            "no pod web/ghost",
        ),
        (&["--from", "web/frontend-1", "--port", "80"], "--to"),
    ];
    for (args, message) in cases {
        let mut all = vec!["explain", "--manifests", DEMO];
        all.extend(args);
        let output = kube_nftpol(&all);
        assert_eq!(status(&output), 2, "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn missing_manifest_directory_exits_2_naming_it() {
    let output = kube_nftpol(&[
        "explain",
        "--manifests",
        "tests/fixtures/no-such-dir",
        "--from",
        "a/b",
        "--to",
        "c/d",
        "--port",
        "80",
    ]);
    assert_eq!(status(&output), 2);
    let errors = stderr(&output);
    assert!(
        errors.starts_with("kube-nftpol: loading manifests: reading tests/fixtures/no-such-dir: "),
        "{errors}"
    );
    assert_eq!(
        errors.lines().count(),
        1,
        "the chain is printed once, on one line: {errors}"
    );
}

#[test]
fn malformed_yaml_file_exits_2_naming_the_file() {
    let dir = demo_copy();
    let bad = dir.path().join("broken.yaml");
    fs::write(&bad, "apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n").unwrap();
    let output = compile(path_str(dir.path()), "node-1");
    assert_eq!(status(&output), 2);
    assert!(output.stdout.is_empty());
    let errors = stderr(&output);
    let expected = format!(
        "kube-nftpol: loading manifests: {}: invalid YAML: ",
        bad.display()
    );
    assert!(errors.starts_with(&expected), "{errors}");
}

#[test]
fn object_that_does_not_fit_its_schema_names_file_and_document() {
    let dir = demo_copy();
    let bad = dir.path().join("pods-2.yaml");
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n---\n\
                apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: extra}\n\
                spec: {containers: [{name: c, ports: [{containerPort: http}]}]}\n";
    fs::write(&bad, text).unwrap();
    let output = compile(path_str(dir.path()), "node-1");
    assert_eq!(status(&output), 2);
    let expected = format!(
        "kube-nftpol: loading manifests: {} (document 2 at line 5): v1 Pod does not match its schema: ",
        bad.display()
    );
    assert!(
        stderr(&output).starts_with(&expected),
        "{}",
        stderr(&output)
    );
}

#[test]
fn every_subcommand_has_help() {
    for (args, expected) in [
        (&["--help"][..], "Commands:"),
        (&["compile", "--help"][..], "--nflog-group <GROUP>"),
        (&["explain", "--help"][..], "--port <PORT[/PROTO]>"),
        (
            &["help", "explain"][..],
            "Exit status: 0 allowed, 1 denied, 2 bad input.",
        ),
        (&["explain", "-h"][..], "--from <NS/POD|IP>"),
        (&["lint", "--help"][..], "--format <FORMAT>"),
        (
            &["help", "lint"][..],
            "Exit status: 0 no finding at or above --severity, 1 findings, 2 bad input.",
        ),
    ] {
        let output = kube_nftpol(args);
        assert_eq!(status(&output), 0, "{args:?}");
        assert!(
            stdout(&output).contains(expected),
            "{args:?}: {}",
            stdout(&output)
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["compile"][..],
        &[][..],
        &["compile", "--bogus"][..],
    ] {
        assert_eq!(status(&kube_nftpol(args)), 2, "{args:?}");
    }
}

#[test]
fn verbose_flag_and_rust_log_turn_on_logs() {
    let quiet = compile(DEMO, "node-1");
    assert!(!stderr(&quiet).contains("manifests loaded"));
    let verbose = kube_nftpol(&["-v", "compile", "--manifests", DEMO, "--node", "node-1"]);
    assert!(
        stderr(&verbose).contains("manifests loaded"),
        "{}",
        stderr(&verbose)
    );
    assert_eq!(verbose.stdout, quiet.stdout, "logs never go to stdout");
    let level = kube_nftpol(&[
        "compile",
        "--manifests",
        DEMO,
        "--node",
        "node-1",
        "--log-level",
        "debug",
    ]);
    assert!(
        stderr(&level).contains("found manifest files"),
        "{}",
        stderr(&level)
    );
    let env = Command::new(env!("CARGO_BIN_EXE_kube-nftpol"))
        .args(["compile", "--manifests", DEMO, "--node", "node-1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "kube_nftpol=debug")
        .output()
        .unwrap();
    assert!(
        stderr(&env).contains("found manifest files"),
        "{}",
        stderr(&env)
    );
}

#[test]
fn deploy_examples_compile_without_warnings_or_errors() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let output = compile(path_str(&examples), "node-1");
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    assert_eq!(stderr(&output), "", "examples should load cleanly");
    let text = stdout(&output);
    for chain in [
        "chain in_shop_backend-5c8b6-qx2lp {",
        "chain in_shop_frontend-7d4f9-hk2mn {",
        "chain eg_shop_frontend-7d4f9-hk2mn {",
        "chain eg_payments_payments-api-0 {",
        "chain in_payments_payments-api-0 {",
    ] {
        assert!(text.contains(chain), "missing {chain:?} in\n{text}");
    }
}

#[test]
fn deploy_examples_explain_the_documented_flows() {
    let run = |from: &str, to: &str, port: &str| {
        let output = kube_nftpol(&[
            "explain",
            "--manifests",
            "deploy/examples",
            "--from",
            from,
            "--to",
            to,
            "--port",
            port,
        ]);
        assert_eq!(stderr(&output), "");
        (status(&output), stdout(&output))
    };
    let (code, text) = run(
        "shop/frontend-7d4f9-hk2mn",
        "shop/backend-5c8b6-qx2lp",
        "9090",
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("allowed by shop/frontend-to-backend ingress[0]"),
        "{text}"
    );
    let (code, text) = run(
        "payments/payments-api-0",
        "kube-system/coredns-6f6b7-xm4tp",
        "53/udp",
    );
    assert_eq!(code, 0, "{text}");
    // The Admin tier's DNS guardrail accepts it before payments' NetworkPolicies are asked.
    assert!(
        text.contains(
            "accepted by ClusterNetworkPolicy always-allow-dns egress[0] \"cluster-dns\" (Admin \
             tier, priority 10)"
        ),
        "{text}"
    );
    let (code, text) = run("shop/frontend-7d4f9-hk2mn", "169.254.169.254", "80");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "denied by ClusterNetworkPolicy no-cloud-metadata egress[0] \"cloud-metadata\" \
             (Admin tier, priority 1)"
        ),
        "{text}"
    );
    // The ingress controller's namespace opts out of the Baseline default deny.
    let (code, text) = run(
        "ingress-nginx/ingress-nginx-controller-5b8f7-p9wq2",
        "shop/frontend-7d4f9-hk2mn",
        "8080",
    );
    assert_eq!(code, 0, "{text}");
    let (code, _) = run(
        "payments/payments-api-0",
        "shop/backend-5c8b6-z7k9d",
        "9090",
    );
    assert_eq!(code, 1);
}

#[test]
fn explain_drop_log_explains_each_drop_line_on_stdin() {
    let drop = r#"{"ts":"2026-11-23T13:47:44.351Z","action":"deny","direction":"egress","pod":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"peer":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"protocol":"tcp","port":9090,"source_port":46356,"source":"10.244.1.20","destination":"10.244.1.11","policies":["payments/allow-dns","payments/default-deny-all"]}"#;
    let icmp = r#"{"action":"deny","direction":"egress","pod":{"namespace":"payments","name":"payments-api-0"},"peer":{"ip":"192.0.2.1"},"protocol":"icmp","source":"10.244.1.20","destination":"192.0.2.1"}"#;
    let input = format!("2026-11-23T13:47:44Z INFO unrelated log line\n{drop}\n{icmp}\n");
    let output = kube_nftpol_with_stdin(
        &["explain", "--manifests", "deploy/examples", "--drop-log"],
        &input,
    );
    assert_eq!(status(&output), 1, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("DENIED payments/payments-api-0 -> shop/backend-5c8b6-qx2lp tcp/9090\n"),
        "{text}"
    );
    assert!(text.contains("payments/default-deny-all"), "{text}");
    assert!(
        stderr(&output).contains("note: stdin line 3: icmp has no ports"),
        "{}",
        stderr(&output)
    );
}

// --- suggest ---

/// Runs the binary with `input` on stdin.
fn kube_nftpol_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-nftpol"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A command refused on its arguments exits before it reads: its stdin is then closed.
    match stdin.write_all(input.as_bytes()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

const EXAMPLES: &str = "deploy/examples";

/// Drop-log lines from the demo cluster of `deploy/examples`, as `kubectl logs` shows them:
/// payments-api-0 denied egress to the shop backend (the documented example) and to an external
/// address, the backend denying that ingress (3 drops merged into one line), DNS that the
/// example policies already allow, a ping, and the agent's own log lines in between.
const DEMO_DROPS: &str = r#"2026-11-23T13:47:40Z  INFO kube_nftpol::agent: agent started
{"ts":"2026-11-23T13:47:44.351Z","action":"deny","direction":"egress","pod":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"peer":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"protocol":"tcp","port":9090,"source_port":46356,"source":"10.244.1.20","destination":"10.244.1.11","policies":["payments/allow-dns","payments/default-deny-all"]}
{"ts":"2026-11-23T13:47:45.351Z","action":"deny","direction":"egress","pod":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"peer":{"ip":"203.0.113.7"},"protocol":"tcp","port":443,"source_port":46358,"source":"10.244.1.20","destination":"203.0.113.7","policies":["payments/allow-dns","payments/default-deny-all"]}
{"ts":"2026-11-23T13:47:46.351Z","count":3,"action":"deny","direction":"ingress","pod":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"peer":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"protocol":"tcp","port":9090,"source_port":46356,"source":"10.244.1.20","destination":"10.244.1.11","policies":["shop/default-deny-ingress","shop/frontend-to-backend"]}
{"ts":"2026-11-23T13:47:47.351Z","action":"deny","direction":"egress","pod":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"peer":{"namespace":"kube-system","name":"coredns-6f6b7-xm4tp","labels":{"k8s-app":"kube-dns"}},"protocol":"udp","port":53,"source_port":5353,"source":"10.244.1.20","destination":"10.244.1.3","policies":["payments/default-deny-all"]}
{"ts":"2026-11-23T13:47:48.351Z","action":"deny","direction":"egress","pod":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"peer":{"ip":"203.0.113.7"},"protocol":"icmp","source":"10.244.1.20","destination":"203.0.113.7","policies":["payments/default-deny-all"]}
2026-11-23T13:47:49Z  WARN kube_nftpol::agent: something else
"#;

fn suggest(args: &[&str], input: &str) -> Output {
    let mut all = vec!["suggest"];
    all.extend_from_slice(args);
    kube_nftpol_with_stdin(&all, input)
}

#[test]
fn suggest_prints_policies_that_load_back_and_allow_the_denied_flows() {
    let output = suggest(&["--manifests", EXAMPLES], DEMO_DROPS);
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let yaml = stdout(&output);
    let loaded = kube_nftpol::source::manifests::load_str(&yaml, "hints.yaml").unwrap();
    assert!(loaded.invalid_policies.is_empty() && loaded.warnings.is_empty());
    let names: Vec<String> = loaded
        .snapshot
        .policies()
        .map(|p| p.key.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "payments/allow-payments-api-egress-hint",
            "shop/allow-backend-ingress-hint"
        ]
    );
    assert!(
        yaml.starts_with(
            "# kube-nftpol: 2 suggested NetworkPolicies from 5 denied flows (1 no longer denied, left out).\n"
        ),
        "{yaml}"
    );
    assert!(
        yaml.contains("kube-nftpol.io/hint-external: \"true\""),
        "{yaml}"
    );

    // Applied to the example cluster, the denied flow is allowed, and the ones nobody asked
    // for stay denied.
    let cluster = tempfile::tempdir().unwrap();
    copy_flat(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLES),
        cluster.path(),
        &|_, f| f.file_name().unwrap().to_str().unwrap().into(),
    );
    fs::write(cluster.path().join("zz-hints.yaml"), &yaml).unwrap();
    let explain_in = |from: &str, to: &str, port: &str| {
        status(&kube_nftpol(&[
            "explain",
            "--manifests",
            path_str(cluster.path()),
            "--from",
            from,
            "--to",
            to,
            "--port",
            port,
        ]))
    };
    assert_eq!(
        explain_in(
            "payments/payments-api-0",
            "shop/backend-5c8b6-qx2lp",
            "9090"
        ),
        0
    );
    assert_eq!(
        explain_in(
            "payments/payments-api-0",
            "shop/backend-5c8b6-z7k9d",
            "9090"
        ),
        0,
        "every pod of the backend"
    );
    assert_eq!(
        explain_in("payments/payments-api-0", "203.0.113.7", "443"),
        0
    );
    assert_eq!(
        explain_in("payments/payments-api-0", "203.0.113.8", "443"),
        1
    );
    assert_eq!(
        explain_in(
            "payments/payments-api-0",
            "shop/backend-5c8b6-qx2lp",
            "9091"
        ),
        1
    );
    assert_eq!(
        explain_in(
            "payments/payments-api-0",
            "shop/frontend-7d4f9-hk2mn",
            "8080"
        ),
        1
    );
}

#[test]
fn suggest_lists_what_it_cannot_suggest_on_stderr() {
    let output = suggest(&["--manifests", EXAMPLES], DEMO_DROPS);
    let errors = stderr(&output);
    assert!(
        errors.contains(
            "warning: not suggested: pods payments/{app=payments-api} egress: icmp with \
             203.0.113.7 was denied: NetworkPolicy can only name TCP, UDP and SCTP ports\n"
        ),
        "{errors}"
    );
    assert!(
        stdout(&output)
            .contains("# Not suggested:\n#   pods payments/{app=payments-api} egress: icmp")
    );
}

#[test]
fn suggest_without_manifests_trusts_the_drop_log() {
    let output = suggest(&[], DEMO_DROPS);
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let yaml = stdout(&output);
    // Without the cluster, the DNS that the policies already allow is suggested too.
    assert!(yaml.contains("from 5 denied flows.\n"), "{yaml}");
    assert!(yaml.contains("k8s-app: \"kube-dns\""), "{yaml}");
}

#[test]
fn suggest_json_prints_the_report() {
    let output = suggest(&["--manifests", EXAMPLES, "--format", "json"], DEMO_DROPS);
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["denied_flows"], 5);
    assert_eq!(report["no_longer_denied"], 1);
    assert_eq!(report["suggestions"].as_array().unwrap().len(), 2);
    assert_eq!(report["suggestions"][1]["logged_drops"], 3);
    assert_eq!(report["suggestions"][1]["policy"]["kind"], "NetworkPolicy");
    assert_eq!(report["issues"][0]["kind"], "unsupported_protocol");
}

#[test]
fn suggest_filters_by_namespace() {
    let output = suggest(&["--namespace", "shop"], DEMO_DROPS);
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let yaml = stdout(&output);
    assert_eq!(yaml.matches("\n---\n").count(), 1, "{yaml}");
    assert!(
        yaml.contains("name: \"allow-backend-ingress-hint\""),
        "{yaml}"
    );
}

#[test]
fn suggest_exits_1_when_there_is_nothing_to_suggest() {
    let output = suggest(&[], "no drops here\n{\"level\":\"info\"}\n");
    assert_eq!(status(&output), 1);
    assert!(
        stderr(&output).contains("kube-nftpol: nothing to suggest: no denied flows in 2 lines"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        stdout(&output),
        "# kube-nftpol: 0 suggested NetworkPolicies from 0 denied flows.\n"
    );
    // Denied flows that are all allowed by now.
    let dns_only: String = DEMO_DROPS
        .lines()
        .filter(|l| l.contains("kube-dns"))
        .collect();
    let output = suggest(&["--manifests", EXAMPLES], &dns_only);
    assert_eq!(status(&output), 1);
    assert!(
        stderr(&output).contains("no denied flows that are still denied"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn suggest_reports_malformed_drop_records_and_goes_on() {
    let input = format!(
        "{}\n{}",
        DEMO_DROPS
            .lines()
            .nth(1)
            .unwrap()
            .replace("\"egress\"", "\"sideways\""),
        DEMO_DROPS.lines().nth(2).unwrap()
    );
    let output = suggest(&[], &input);
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "warning: line 1: malformed drop record: direction: unknown variant `sideways`"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn suggest_with_unreadable_manifests_is_an_error() {
    let output = suggest(&["--manifests", "no/such/dir"], DEMO_DROPS);
    assert_eq!(status(&output), 2);
    assert!(
        stderr(&output).contains("loading manifests"),
        "{}",
        stderr(&output)
    );
}

const LINT_CLEAN: &str = "tests/fixtures/lint-clean";

fn lint(args: &[&str]) -> Output {
    kube_nftpol(&[&["lint"][..], args].concat())
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(path: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs; review and rewrite it with UPDATE_GOLDEN=1",
        path.display()
    );
}

#[test]
fn lint_deploy_examples_matches_the_reviewed_golden_output() {
    let output = lint(&["--manifests", EXAMPLES]);
    assert_eq!(status(&output), 1, "{}", stderr(&output));
    check_golden("tests/golden/lint-deploy-examples.txt", &stdout(&output));
    assert_eq!(
        stderr(&output),
        "kube-nftpol lint: 0 errors, 4 warnings, 2 info (4 namespaces, 6 pods, 6 policies)\n"
    );
}

#[test]
fn lint_on_a_clean_cluster_finds_nothing_in_any_format_and_exits_0() {
    let output = lint(&["--manifests", LINT_CLEAN]);
    assert_eq!(status(&output), 0, "{}", stdout(&output));
    assert_eq!(stdout(&output), "");
    assert!(stderr(&output).starts_with("kube-nftpol lint: 0 errors, 0 warnings, 0 info"));
    let output = lint(&["--manifests", LINT_CLEAN, "--format", "json"]);
    assert_eq!(status(&output), 0);
    let report: kube_nftpol::lint::report::Report = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(report.findings.is_empty());
    let output = lint(&["--manifests", LINT_CLEAN, "--format", "sarif"]);
    assert_eq!(status(&output), 0);
    let sarif: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(sarif["runs"][0]["results"], serde_json::json!([]));
}

#[test]
fn lint_json_is_a_report_of_located_findings_with_their_counts() {
    let output = lint(&["--manifests", EXAMPLES, "--format", "json"]);
    assert_eq!(status(&output), 1);
    let text = stdout(&output);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 6);
    assert_eq!(
        json["counts"],
        serde_json::json!({"error": 0, "warning": 4, "info": 2})
    );
    let metadata = findings
        .iter()
        .find(|f| f["rule"] == "metadata-reachable")
        .unwrap();
    assert_eq!(metadata["severity"], "warning");
    assert_eq!(
        metadata["object"],
        serde_json::json!({"kind": "NetworkPolicy", "namespace": "shop", "name": "block-cloud-metadata"})
    );
    assert_eq!(metadata["field"], "spec.egress[0].to[1]");
    assert_eq!(
        metadata["location"],
        serde_json::json!({"file": "deploy/examples/block-cloud-metadata.yaml", "line": 22})
    );
    assert!(
        metadata["fix"]
            .as_str()
            .unwrap()
            .contains("fd00:ec2::254/128")
    );
    // The report type reads back what the command wrote.
    let report: kube_nftpol::lint::report::Report = serde_json::from_str(&text).unwrap();
    assert_eq!(report.findings.len(), 6);
    assert_eq!(report.counts.warning, 4);
}

/// The official SARIF 2.1.0 schema, compiled.
fn sarif_validator() -> jsonschema::Validator {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sarif/sarif-schema-2.1.0.json");
    let schema: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let mut schema = schema;
    // The schema's pattern for the `language` of a run and of a tool component,
    // `^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$`, has a stray `]` that ECMAScript reads as a
    // literal and Rust's regex syntax rejects, so the validator refuses the schema itself. It is
    // replaced by what it means to say; our logs have no `language` anyway.
    for owner in ["run", "toolComponent"] {
        let language = &mut schema["definitions"][owner]["properties"]["language"]["pattern"];
        assert_eq!(
            language, "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$",
            "{owner}"
        );
        *language = serde_json::json!("^[a-zA-Z]{2}(-[a-zA-Z]{2})?$");
    }
    jsonschema::validator_for(&schema).unwrap()
}

/// `lint --format sarif` on `dir`, checked against the schema; exit status 1 (findings).
fn valid_sarif(validator: &jsonschema::Validator, dir: &str) -> serde_json::Value {
    let output = lint(&["--manifests", dir, "--format", "sarif"]);
    assert_eq!(status(&output), 1, "{}", stderr(&output));
    let sarif: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{dir}: {errors:#?}");
    sarif
}

#[test]
fn lint_sarif_is_valid_sarif_2_1_0_with_a_file_and_line_per_result() {
    let validator = sarif_validator();
    let sarif = valid_sarif(&validator, EXAMPLES);
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(
            run["tool"]["driver"]["rules"][index]["id"],
            result["ruleId"]
        );
        let physical = &result["locations"][0]["physicalLocation"];
        assert!(
            physical["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .starts_with("deploy/examples/")
        );
        assert!(physical["region"]["startLine"].as_u64().unwrap() >= 1);
    }
    // A schema check that can fail: a result without its message is rejected.
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]
        .as_object_mut()
        .unwrap()
        .remove("message");
    assert!(!validator.is_valid(&broken));
    // The demo fixture has an invalid policy and objects in a JSON List: still valid SARIF.
    let sarif = valid_sarif(&validator, DEMO);
    let invalid = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == "invalid-policy")
        .unwrap();
    assert_eq!(invalid["level"], "error");
    let region = &invalid["locations"][0]["physicalLocation"]["region"];
    assert_eq!(
        region["startLine"], 14,
        "the cidr's line in ops-invalid-cidr.yaml"
    );
}

#[test]
fn lint_severity_filters_the_findings_and_decides_the_exit_status() {
    let output = lint(&["--manifests", EXAMPLES, "--severity", "error"]);
    assert_eq!(status(&output), 0, "no errors in the examples");
    assert_eq!(stdout(&output), "");
    let output = lint(&["--manifests", EXAMPLES, "--severity", "warning"]);
    assert_eq!(status(&output), 1);
    assert_eq!(stdout(&output).matches("\n  fix: ").count(), 4);
    assert!(!stdout(&output).contains("info["));
    let output = lint(&["--manifests", DEMO, "--severity", "error"]);
    assert_eq!(status(&output), 1);
    assert!(stdout(&output).contains("error[invalid-policy] NetworkPolicy ops/prober-from-office"));
}

#[test]
fn lint_rule_and_skip_choose_the_rules_that_run() {
    let output = lint(&["--manifests", EXAMPLES, "--rule", "any-address-peer"]);
    assert_eq!(status(&output), 1);
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("warning[any-address-peer]"), "{text}");
    let output = lint(&[
        "--manifests",
        EXAMPLES,
        "--skip",
        "any-address-peer,metadata-reachable,all-ports-open",
        "--skip",
        "unprotected-pod",
        "--skip",
        "missing-default-deny-ingress",
        "missing-default-deny-egress",
    ]);
    assert_eq!(status(&output), 0, "{}", stdout(&output));
}

#[test]
fn lint_config_file_sets_parameters_and_severities() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lint.yaml");
    let text = "metadata-addresses: []\nexempt-namespaces: [kube-system, ingress-nginx]\n\
                rules: {any-address-peer: error, all-ports-open: off}\n";
    fs::write(&config, text).unwrap();
    let output = lint(&["--manifests", EXAMPLES, "--config", path_str(&config)]);
    assert_eq!(status(&output), 1);
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains(": error[any-address-peer] NetworkPolicy shop/block-cloud-metadata"),
        "{text}"
    );
}

#[test]
fn lint_bad_input_exits_2_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    fs::write(&broken, "apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n").unwrap();
    let wrong_type = dir.path().join("wrong-type.yaml");
    fs::write(
        &wrong_type,
        "# lint config\nexempt-namespaces: kube-system\n",
    )
    .unwrap();
    let unknown_key = dir.path().join("unknown-key.yaml");
    fs::write(&unknown_key, "rules:\n  no-such-rule: off\n").unwrap();
    let broken_arg = path_str(&broken);
    let wrong_type_args = ["--manifests", EXAMPLES, "--config", path_str(&wrong_type)];
    let unknown_key_args = ["--manifests", EXAMPLES, "--config", path_str(&unknown_key)];
    let config_error =
        |file: &Path| format!("kube-nftpol: {}: invalid lint config: ", file.display());
    // The arguments, how stderr starts, and what it says after that.
    let cases: [(&[&str], String, &str); 5] = [
        (
            &["--manifests", broken_arg],
            format!("kube-nftpol: loading manifests: {broken_arg}: invalid YAML: "),
            "line 3",
        ),
        (
            &["--manifests", EXAMPLES, "--rule", "no-such-rule"],
            "error: invalid value 'no-such-rule' for '--rule <ID>...': unknown rule id (known: \
             invalid-policy, "
                .to_owned(),
            "metadata-reachable)",
        ),
        (
            &wrong_type_args,
            config_error(&wrong_type),
            "expected sequence start at line 2, column 20",
        ),
        (
            &unknown_key_args,
            config_error(&unknown_key),
            "unknown variant `no-such-rule`",
        ),
        (
            &[
                "--manifests",
                EXAMPLES,
                "--config",
                "tests/fixtures/no-such-config.yaml",
            ],
            "kube-nftpol: reading lint config tests/fixtures/no-such-config.yaml: ".to_owned(),
            "No such file or directory",
        ),
    ];
    for (args, expected, then) in cases {
        let output = lint(args);
        let errors = stderr(&output);
        assert_eq!(status(&output), 2, "{args:?}: {errors}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(
            errors.starts_with(&expected) && errors.contains(then),
            "{args:?}:\n{errors}\nexpected to start with\n{expected}\nand say {then:?}"
        );
    }
}

/// Observe mode's lines from the demo cluster of `deploy/examples` with its policies left out
/// (only the manifests of the pods and namespaces): the shop frontend calls the backend, the
/// backend calls an external address, and the frontend asks kube-dns; everything allowed
/// because nothing isolates anything yet.
const OBSERVED_LINES: &str = r#"{"ts":"2026-11-23T13:47:44.351Z","action":"allow","direction":"egress","pod":{"namespace":"shop","name":"frontend-6d8f7-a1b2c","labels":{"app":"frontend"}},"peer":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"protocol":"tcp","port":8080,"source":"10.244.1.10","destination":"10.244.1.11","count":1}
{"ts":"2026-11-23T13:47:44.352Z","action":"allow","direction":"ingress","pod":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"peer":{"namespace":"shop","name":"frontend-6d8f7-a1b2c","labels":{"app":"frontend"}},"protocol":"tcp","port":8080,"source":"10.244.1.10","destination":"10.244.1.11","count":1}
{"ts":"2026-11-23T13:47:45.351Z","action":"allow","direction":"egress","pod":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"peer":{"ip":"203.0.113.7"},"protocol":"tcp","port":443,"source":"10.244.1.11","destination":"203.0.113.7","count":2}
"#;

#[test]
fn suggest_observed_isolates_every_observed_workload_to_what_was_seen() {
    let output = suggest(&["--observed", "--format", "json"], OBSERVED_LINES);
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["observed"], true);
    let names: Vec<&str> = report["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["policy"]["metadata"]["name"].as_str().unwrap())
        .collect();
    // Without manifests: the sides seen, frontend's egress and backend's ingress (backend's
    // egress saw only an external address, left out).
    assert_eq!(
        names,
        ["allow-backend-ingress-hint", "allow-frontend-egress-hint"]
    );
    // The external address is listed apart, with the id --exclude and --include-external use.
    let external = &report["external_left_out"][0];
    assert_eq!(external["flow"]["destination"]["address"], "203.0.113.7");
    let id = external["id"].as_str().unwrap();
    assert_eq!(id.len(), 12);

    let with_external = suggest(&["--observed", "--include-external"], OBSERVED_LINES);
    assert_eq!(status(&with_external), 0, "{}", stderr(&with_external));
    assert!(stdout(&with_external).contains("name: \"allow-backend-egress-hint\""));
    assert!(stdout(&with_external).contains("203.0.113.7/32"));
    // Leaving the external flow out by its id: the same as without --include-external.
    let exclude = format!("flow={id}");
    let excluded = suggest(
        &["--observed", "--include-external", "--exclude", &exclude],
        OBSERVED_LINES,
    );
    assert!(!stdout(&excluded).contains("203.0.113.7/32"));
    assert!(stdout(&excluded).contains(&format!(
        "Left out by --exclude (denied once the policies apply):\n#   {id} "
    )));
    let bad = suggest(&["--observed", "--exclude", "flow=nothex"], OBSERVED_LINES);
    assert_eq!(status(&bad), 2, "{}", stderr(&bad));
}
