//! The agent container of `deploy/daemonset.yaml`, read from the file itself: what the
//! container suite starts the agent with, so the test and the manifest cannot drift apart.

use serde_json::Value;

use crate::Result;

/// What the DaemonSet gives the agent's container.
#[derive(Debug, Clone)]
pub struct AgentContainer {
    /// `args`.
    pub args: Vec<String>,
    /// `env`, in order; variables set from the downward API have an empty value.
    pub env: Vec<(String, String)>,
    /// `securityContext.capabilities.add`.
    pub capabilities: Vec<String>,
}

/// Reads the agent container, checking the security context `docs/agent.md` ("The DaemonSet") and SECURITY.md promise: every
/// capability dropped, no privilege escalation, not privileged, read-only root filesystem.
pub fn agent_container() -> Result<AgentContainer> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/daemonset.yaml");
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let daemonset: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let container = daemonset
        .pointer("/spec/template/spec/containers/0")
        .ok_or_else(|| format!("{path}: no container"))?;
    let strings = |value: Option<&Value>| -> Vec<String> {
        value
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let security = &container["securityContext"];
    let checks = [
        (
            strings(security.pointer("/capabilities/drop")) == ["ALL"],
            "drops ALL capabilities",
        ),
        (
            security["allowPrivilegeEscalation"] == false,
            "forbids privilege escalation",
        ),
        (security["privileged"] != true, "is not privileged"),
        (
            security["readOnlyRootFilesystem"] == true,
            "has a read-only root filesystem",
        ),
    ];
    for (holds, what) in checks {
        if !holds {
            return Err(format!("{path}: the agent container no longer {what}"));
        }
    }
    let env = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e["name"].as_str()?.to_owned();
            Some((name, e["value"].as_str().unwrap_or_default().to_owned()))
        })
        .collect();
    Ok(AgentContainer {
        args: strings(container.get("args")),
        env,
        capabilities: strings(security.pointer("/capabilities/add")),
    })
}
