//! The suite's base manifests (`base/manifests.yaml`: five namespaces, four StatefulSets of two
//! pods serving TCP 80 and 8080, UDP 53 and 5353, SCTP 9003 and 9005, and the host-network
//! `centaur` StatefulSet), adapted to what the rig's agnhost image can run, as the node
//! simulator adapts them to its own servers:
//!
//! - each StatefulSet gets `serviceName` (its own name): v1.20 requires the field (and
//!   `kubectl apply` runs with `--validate=false`: [`crate::kubectl::Kubectl::apply`]);
//! - the image is the rig's agnhost (`k8s.gcr.io/e2e-test-images/agnhost:2.21`, agnhost 2.25
//!   inside, no registry; `KNP_AGNHOST_IMAGE` overrides), not `registry.k8s.io/...:2.45`;
//! - `/bin/bash -c` becomes `/bin/sh -c` (the image has busybox, no bash);
//! - the SCTP servers (`agnhost porter` with `SERVE_SCTP_PORT_N`) are left out: this kernel has
//!   no SCTP sockets, so they could only crash-loop; they declare no port, so no policy and no
//!   named port changes, and every SCTP probe is counted as skipped;
//! - the centaurs' UDP servers (`netexec --udp-port P --udp-listen-addresses $(HOST_IP)`; 2.25's
//!   netexec has no `--udp-listen-addresses`) are `/udpprobe serve $(HOST_IP) P`, bound to the
//!   node's address as upstream's are (images.sh puts `udpprobe.c` in the image); their HTTP
//!   ports (34348, 34350), which no probe uses, are not served.
//!
//! Everything else (labels, declared and named ports, `hostNetwork`, replicas, the TCP and UDP
//! `serve-hostname` servers) is upstream's.

use serde_json::{Value, json};

/// The rig's agnhost image.
pub fn agnhost_image() -> String {
    std::env::var("KNP_AGNHOST_IMAGE")
        .unwrap_or_else(|_| "k8s.gcr.io/e2e-test-images/agnhost:2.21".to_owned())
}

/// The base objects, adapted (Namespaces and StatefulSets).
pub fn adapt(objects: Vec<Value>, image: &str) -> Result<Vec<Value>, String> {
    objects
        .into_iter()
        .map(|mut object| {
            if object["kind"] == "StatefulSet" {
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                // Required before Kubernetes 1.30's apps/v1 (kubectl 1.20 refuses it missing);
                // it names the governing Service for the pods' DNS names, which nothing uses.
                object["spec"]["serviceName"] = json!(name);
                let spec = &mut object["spec"]["template"]["spec"];
                let containers = spec["containers"]
                    .as_array()
                    .cloned()
                    .ok_or_else(|| format!("StatefulSet {name}: no containers"))?;
                let mut kept = Vec::new();
                for container in containers {
                    if let Some(container) = container_for_rig(container, image)? {
                        kept.push(container);
                    }
                }
                spec["containers"] = Value::Array(kept);
                // The pods go at the end with their namespace; nothing waits for them.
                spec["terminationGracePeriodSeconds"] = json!(0);
            }
            Ok(object)
        })
        .collect()
}

/// One container as the rig runs it, or `None` for an SCTP server.
fn container_for_rig(mut container: Value, image: &str) -> Result<Option<Value>, String> {
    let name = container["name"].as_str().unwrap_or_default().to_owned();
    container["image"] = json!(image);
    container["imagePullPolicy"] = json!("IfNotPresent");
    let env_names: Vec<String> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    if env_names.iter().any(|n| n.starts_with("SERVE_SCTP_PORT_")) {
        return Ok(None);
    }
    let Some(command) = container["command"].as_array().cloned() else {
        return Ok(Some(container));
    };
    let words: Vec<&str> = command.iter().filter_map(Value::as_str).collect();
    let script = match words.as_slice() {
        ["/bin/bash", "-c", script] => *script,
        _ => return Err(format!("container {name}: an unexpected command {words:?}")),
    };
    if script.contains("netexec") {
        let parts: Vec<&str> = script.split_whitespace().collect();
        let port = parts
            .iter()
            .position(|w| *w == "--udp-port")
            .and_then(|i| parts.get(i + 1))
            .ok_or_else(|| format!("container {name}: netexec without --udp-port"))?;
        if !script.contains("--udp-listen-addresses $(HOST_IP)") {
            return Err(format!("container {name}: netexec not bound to $(HOST_IP)"));
        }
        container["command"] = json!(["/udpprobe", "serve", "$(HOST_IP)", port]);
    } else {
        container["command"] = json!(["/bin/sh", "-c", script]);
    }
    Ok(Some(container))
}
