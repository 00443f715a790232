//! kubectl of the rig (`integration/cluster/kubectl.sh`, kubectl v1.20.2 in the control plane's
//! namespace): applying and deleting objects, reading pods, the agents' metrics through the API
//! server's pod proxy, and `kubectl exec`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

/// The kubectl wrapper.
#[derive(Debug, Clone)]
pub struct Kubectl {
    program: PathBuf,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit status 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    /// `KNP_KUBECTL`, or the rig's `integration/cluster/kubectl.sh`.
    pub fn from_env() -> Self {
        let program = std::env::var_os("KNP_KUBECTL").map_or_else(
            || {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/integration/cluster/kubectl.sh"
                ))
            },
            PathBuf::from,
        );
        Self { program }
    }

    /// Runs kubectl with `args`, `stdin` on its standard input.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Run {
                    ok: false,
                    stdout: String::new(),
                    stderr: format!("cannot run {}: {e}", self.program.display()),
                };
            }
        };
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows up as kubectl's own failure below.
            let _ = pipe.write_all(text.as_bytes());
        }
        match child.wait_with_output() {
            Ok(output) => output.into(),
            Err(e) => Run {
                ok: false,
                stdout: String::new(),
                stderr: format!("kubectl: {e}"),
            },
        }
    }

    /// Runs kubectl and fails naming the command unless it succeeds.
    pub fn must(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let run = self.run(args, stdin);
        if run.ok {
            Ok(run.stdout)
        } else {
            Err(format!(
                "kubectl {}: {}{}",
                args.join(" "),
                run.stderr.trim(),
                run.stdout.trim()
            ))
        }
    }

    /// `kubectl apply` of objects (one List); returns its output lines. Without kubectl's
    /// client-side schema check: v1.20's OpenAPI still marks fields required that later
    /// versions made optional and the suite omits (a NetworkPolicy's `podSelector`, which the
    /// server defaults to the empty selector, as upstream means it); the server validates.
    pub fn apply(&self, objects: &[Value]) -> Result<String, String> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.must(
            &["apply", "--validate=false", "-f", "-"],
            Some(&list.to_string()),
        )
    }

    /// Deletes an object by `kind/namespace/name` (the player's ids; NetworkPolicy or
    /// ClusterNetworkPolicy), waiting for it to be gone.
    pub fn delete(&self, id: &str) -> Result<(), String> {
        let mut parts = id.splitn(3, '/');
        let (Some(kind), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{id}: not kind/namespace/name"));
        };
        let resource = match kind {
            "ClusterNetworkPolicy" => "clusternetworkpolicies.policy.networking.k8s.io",
            "NetworkPolicy" => "networkpolicies.networking.k8s.io",
            other => return Err(format!("{id}: cannot delete a {other}")),
        };
        let mut args = vec!["delete", resource, name, "--ignore-not-found"];
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        self.must(&args, None).map(|_| ())
    }

    /// Every pod of the given namespaces, as JSON.
    pub fn pods(&self, namespace: &str) -> Result<Vec<Value>, String> {
        let text = self.must(&["get", "pods", "-n", namespace, "-o", "json"], None)?;
        let list: Value = serde_json::from_str(&text).map_err(|e| format!("pods: {e}"))?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// The agents' pods: `(name, node)`.
    pub fn agents(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for pod in self.pods_labelled("kube-system", "app.kubernetes.io/name=kube-nftpol")? {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            out.push((name.to_owned(), node.to_owned()));
        }
        if out.is_empty() {
            return Err("no kube-nftpol agent pod in kube-system (deploy-agent.sh)".into());
        }
        Ok(out)
    }

    fn pods_labelled(&self, namespace: &str, selector: &str) -> Result<Vec<Value>, String> {
        let text = self.must(
            &["get", "pods", "-n", namespace, "-l", selector, "-o", "json"],
            None,
        )?;
        let list: Value = serde_json::from_str(&text).map_err(|e| format!("pods: {e}"))?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// An agent's `/metrics` (port 9640), through the API server's proxy to its pod.
    pub fn agent_metrics(&self, pod: &str) -> Result<String, String> {
        let path = format!("/api/v1/namespaces/kube-system/pods/http:{pod}:9640/proxy/metrics");
        self.must(&["get", "--raw", &path], None)
    }

    /// `kubectl exec -n NS POD -c CONTAINER -- COMMAND...`.
    pub fn exec(&self, namespace: &str, pod: &str, container: &str, command: &[&str]) -> Run {
        let mut args = vec!["exec", "-n", namespace, pod, "-c", container, "--"];
        args.extend_from_slice(command);
        self.run(&args, None)
    }
}

/// The value of a metric without labels in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
}
