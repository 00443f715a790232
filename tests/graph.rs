//! End-to-end tests of `kube-nftpol graph` on the example cluster (`deploy/examples`) and its
//! observed flows (`deploy/examples/observed-flows.jsonl`): the DOT parses with Graphviz's
//! `dot`, the DOT and Mermaid texts match their golden files, the edges are exactly the flows
//! observed, the preview of a candidate policy, the README's picture is the current graph, and
//! bad input gives a message and an exit status.
//!
//! Needs Graphviz (`apt-get install graphviz`; the test command installs it) and fails loudly
//! without it. Golden files are in `tests/golden/graph/`; after an intended change,
//! `UPDATE_GOLDEN=1 cargo test --test graph` rewrites them: review the diff, and regenerate the
//! pictures as docs/graph.md says.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kube_nftpol::flow_line::FlowLine;
use kube_nftpol::hints::WorkloadFlow;
use serde_json::Value;

const MANIFESTS: &str = "deploy/examples";
const FLOWS: &str = "deploy/examples/observed-flows.jsonl";
const CANDIDATE: &str = "docs/graph/dns-from-payments-only.yaml";

/// Runs the binary from the package root, with no stdin and without the caller's RUST_LOG.
fn kube_nftpol(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kube-nftpol"));
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    command.env_remove("RUST_LOG").stdin(Stdio::null());
    command.output().expect("kube-nftpol runs")
}

/// `graph` on the example cluster and its flows, then `extra`.
fn graph(extra: &[&str]) -> Output {
    kube_nftpol(
        &[
            &["graph", "--manifests", MANIFESTS, "--flows", FLOWS],
            extra,
        ]
        .concat(),
    )
}

fn status(output: &Output) -> Option<i32> {
    output.status.code()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The output of a run that must succeed.
fn printed(output: &Output) -> String {
    assert_eq!(status(output), Some(0), "{}", stderr(output));
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

/// Compares `text` with `tests/golden/graph/NAME`, or writes it with `UPDATE_GOLDEN=1`.
fn golden(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/graph")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        text == expected,
        "graph differs from {}\n--- expected\n{expected}\n--- got\n{text}",
        path.display()
    );
}

/// `dot -Tsvg` of `text`: the SVG, or a panic with Graphviz's complaint.
fn dot_svg(text: &str) -> String {
    let child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!(
            "\n\n*** Graphviz's dot cannot be run ({e}): these tests check the DOT output with \
             it. Install it: apt-get install graphviz (integration/test-all.sh does)\n"
        )
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "dot rejected the graph: {complaints}\n{text}"
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_example_graph_is_valid_dot_and_matches_its_golden_file() {
    let dot = printed(&graph(&[]));
    golden("examples.dot", &dot);
    let svg = dot_svg(&dot);
    assert!(svg.contains("namespace shop (observed)"));
}

#[test]
fn the_example_graph_in_mermaid_matches_its_golden_file() {
    golden("examples.mmd", &printed(&graph(&["--format", "mermaid"])));
}

#[test]
fn the_edges_are_the_flows_observed() {
    let json: Value = serde_json::from_str(&printed(&graph(&["--format", "json"]))).unwrap();
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(FLOWS)).unwrap();
    let lines: Vec<FlowLine> = text
        .lines()
        .map(|l| FlowLine::parse(l).unwrap().unwrap())
        .collect();
    let observed: BTreeSet<String> = lines.iter().map(|l| WorkloadFlow::of(l).id()).collect();
    let edges = json["edges"].as_array().unwrap();
    let ids: BTreeSet<String> = edges
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, observed);
    assert_eq!(edges.len(), observed.len());
    // Each edge counts the distinct pods it joins: frontend reached both backend pods.
    let flows: Vec<(String, u64)> = edges
        .iter()
        .map(|e| {
            (
                e["text"].as_str().unwrap().to_owned(),
                e["flows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(flows.contains(&(
        "pods shop/{app=frontend} -> pods shop/{app=backend} tcp/9090".to_owned(),
        2
    )));
    assert_eq!(flows.iter().map(|f| f.1).sum::<u64>(), 9);
    // Denied at one end, allowed at the other: denied.
    let to_payments = edges.iter().find(|e| e["port"] == 50051).unwrap();
    assert_eq!(to_payments["verdict"], "deny");
    assert_eq!(to_payments["pods"][0]["sides"].as_array().unwrap().len(), 2);
}

#[test]
fn a_candidate_policy_is_previewed_as_the_edges_it_would_deny() {
    let output = graph(&["--policy", CANDIDATE, "--format", "mermaid"]);
    let mermaid = printed(&output);
    golden("examples-preview.mmd", &mermaid);
    assert_eq!(
        stderr(&output),
        "preview: of 8 edges, 1 would be newly denied, 3 still denied, 4 kept\n"
    );
    let denied: Vec<&str> = mermaid.lines().filter(|l| l.contains("==x")).collect();
    assert_eq!(denied.len(), 1, "{mermaid}");
    assert!(denied[0].contains("udp/53 (1 flow)<br/>would be denied"));
    dot_svg(&printed(&graph(&["--policy", CANDIDATE])));
}

#[test]
fn the_readme_picture_is_the_current_graph() {
    let dot = printed(&graph(&[]));
    let svg =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/graph/examples.svg"))
            .unwrap();
    // Graphviz titles every node and edge with its identifiers: the picture has exactly the
    // graph's nodes and edges.
    let titles = |svg: &str| -> Vec<String> {
        let mut titles: Vec<String> = svg
            .split("<title>")
            .skip(1)
            .filter_map(|t| t.split_once("</title>").map(|(t, _)| t.to_owned()))
            .collect();
        titles.sort();
        titles
    };
    assert_eq!(
        titles(&svg),
        titles(&dot_svg(&dot)),
        "docs/graph/examples.svg is not the current graph: regenerate it as docs/graph.md says"
    );
}

#[test]
fn hostile_names_cannot_break_either_syntax() {
    // A pod of a hand-made manifest may carry any label value the API allows, and a line
    // any name: quotes, backslashes, markup.
    let line = r#"{"action":"deny","direction":"egress","pod":{"namespace":"a","name":"p\"x\\y<b>#1","labels":{}},"peer":{"ip":"203.0.113.1"},"protocol":"tcp","port":443,"source":"10.0.0.1","destination":"203.0.113.1"}"#;
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows.jsonl");
    fs::write(&flows, format!("{line}\n")).unwrap();
    let flows = flows.to_str().unwrap();
    let dot = printed(&kube_nftpol(&["graph", "--flows", flows]));
    assert!(dot_svg(&dot).contains("p&quot;x\\y&lt;b&gt;#1"));
    let mermaid = printed(&kube_nftpol(&[
        "graph", "--flows", flows, "--format", "mermaid",
    ]));
    assert!(
        mermaid.contains(r#"("p#34;x\y#60;b#62;#35;1<br/>Pod")"#),
        "{mermaid}"
    );
}

#[test]
fn bad_input_gives_a_message_and_an_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let malformed = dir.path().join("malformed.jsonl");
    fs::write(
        &malformed,
        "starting\n{\"action\":\"deny\",\"direction\":\"up\"}\n",
    )
    .unwrap();
    let output = kube_nftpol(&["graph", "--flows", malformed.to_str().unwrap()]);
    assert_eq!(status(&output), Some(1));
    assert!(output.stdout.is_empty());
    let message = stderr(&output);
    for expected in [
        "warning: line 2: malformed drop record: ",
        "kube-nftpol: nothing to draw: no flows",
    ] {
        assert!(message.contains(expected), "{message}");
    }

    let output = kube_nftpol(&["graph", "--flows", "no/such/file"]);
    assert_eq!(status(&output), Some(2));
    assert!(stderr(&output).contains("opening the flow lines no/such/file"));

    let output = graph(&["--policy", "deploy/examples/demo-cluster.yaml"]);
    assert_eq!(status(&output), Some(2));
    assert!(
        stderr(&output).contains("--policy deploy/examples/demo-cluster.yaml: no NetworkPolicy"),
        "{}",
        stderr(&output)
    );
}
