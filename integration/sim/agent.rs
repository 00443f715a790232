//! Processes inside node namespaces, above all the agent under test:
//! `ip netns exec <node> kube-nftpol agent --node-name <node> --manifests <dir> ...`.
//!
//! [`NetnsProcess`] owns one child process (`ip netns exec` execs the program, so the child is
//! the program itself): output goes to a log file whose tail ends up in error messages;
//! [`NetnsProcess::kill`] sends SIGKILL (what the restart suite wants: no chance to clean up);
//! drop kills it too, so a failing test leaves nothing running. [`ready`] asks the agent's
//! `/readyz` from inside its namespace, [`http_get`] any of its endpoints.
//!
//! Which binary: `KNP_SIM_AGENT_BIN` if set (an agent built elsewhere), otherwise this crate's
//! `kube-nftpol`.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use socket2::{Domain, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::timeout;

use crate::Result;
use crate::setns::InNetns;

/// Where the agent serves `/healthz`, `/readyz` and `/metrics`, inside its node namespace.
pub const METRICS_PORT: u16 = 9640;

/// How often the agent looks at the manifest directory.
pub const MANIFESTS_POLL_INTERVAL_MS: u64 = 250;

/// The agent's `--resync-interval-secs` unless a suite asks for another (the tamper suite
/// shortens it).
pub const RESYNC_INTERVAL_SECS: u64 = 10;

/// The `kube-nftpol` binary the agent runs from.
pub fn binary() -> PathBuf {
    std::env::var_os("KNP_SIM_AGENT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_kube-nftpol")),
        PathBuf::from,
    )
}

/// Where the agent under test reads the cluster from.
#[derive(Debug, Clone)]
pub enum SourceArgs {
    /// `--manifests DIR`, polled every [`MANIFESTS_POLL_INTERVAL_MS`].
    Manifests(PathBuf),
    /// `--kubeconfig FILE`.
    Kubeconfig(PathBuf),
    /// As `deploy/daemonset.yaml` runs it: its arguments and environment, every capability
    /// dropped but the ones it adds, no new privileges; the API server through `KUBECONFIG`,
    /// authenticated as its service account with `deploy/rbac.yaml`'s permissions (in a
    /// cluster: the in-cluster service account token).
    Container(PathBuf),
}

/// The program and arguments that start the agent of `node`, repairing its table every
/// `resync_interval_secs` (not for [`SourceArgs::Container`], which runs the DaemonSet's
/// arguments as they are).
pub fn command(
    node: &str,
    source: &SourceArgs,
    resync_interval_secs: u64,
) -> Result<(PathBuf, Vec<String>)> {
    let SourceArgs::Container(kubeconfig) = source else {
        return Ok((binary(), agent_args(node, source, resync_interval_secs)));
    };
    let container = crate::daemonset::agent_container()?;
    let mut args = vec![format!("KUBECONFIG={}", kubeconfig.display())];
    for (name, value) in &container.env {
        // The downward API's spec.nodeName.
        let value = if value.is_empty() && name == "NODE_NAME" {
            node.to_owned()
        } else {
            value.clone()
        };
        args.push(format!("{name}={value}"));
    }
    let keep: Vec<String> = container
        .capabilities
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    let caps = format!("-all,{}", keep.join(","));
    args.extend([
        "setpriv".to_owned(),
        format!("--bounding-set={caps}"),
        format!("--inh-caps={caps}"),
        "--no-new-privs".to_owned(),
        "--".to_owned(),
        binary().display().to_string(),
    ]);
    args.extend(container.args);
    Ok((PathBuf::from("env"), args))
}

/// The agent's arguments for one node.
pub fn agent_args(node: &str, source: &SourceArgs, resync_interval_secs: u64) -> Vec<String> {
    let mut args: Vec<String> = match source {
        SourceArgs::Manifests(dir) => vec![
            "--manifests".into(),
            dir.display().to_string(),
            "--manifests-poll-interval-ms".into(),
            MANIFESTS_POLL_INTERVAL_MS.to_string(),
        ],
        SourceArgs::Kubeconfig(file) | SourceArgs::Container(file) => {
            vec!["--kubeconfig".into(), file.display().to_string()]
        }
    };
    let common = [
        "agent",
        "--node-name",
        node,
        "--metrics-addr",
        &format!("127.0.0.1:{METRICS_PORT}"),
        "--nflog-group",
        "100",
        "--resync-interval-secs",
        &resync_interval_secs.to_string(),
    ]
    .map(str::to_owned);
    args.splice(0..0, common);
    args
}

/// A process running inside a network namespace, killed on drop.
#[derive(Debug)]
pub struct NetnsProcess {
    netns: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl NetnsProcess {
    /// Starts `PROGRAM ARGS` inside `netns`, stdout and stderr appended to `log`.
    pub fn spawn(netns: &str, program: &Path, args: Vec<String>, log: PathBuf) -> Result<Self> {
        let mut this = Self {
            netns: netns.to_owned(),
            program: program.to_owned(),
            args,
            log,
            child: None,
        };
        this.start()?;
        Ok(this)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process again after [`Self::kill`].
    pub fn start(&mut self) -> Result<()> {
        let open = || -> std::io::Result<(File, File)> {
            let out = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)?;
            let err = out.try_clone()?;
            Ok((out, err))
        };
        let (out, err) = open().map_err(|e| format!("log {}: {e}", self.log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} in {}: {e}",
                    self.program.display(),
                    self.netns
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `Some(status)` when the process has exited on its own.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Its log (stdout and stderr): the agent's drop log lines are the JSON ones.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }
}

impl Drop for NetnsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The HTTP status of `GET PATH` on the agent's metrics address, from inside its namespace.
pub async fn http_status(inside: &InNetns, path: &str) -> Result<u16> {
    http_get(inside, path).await.map(|(status, _)| status)
}

/// `GET PATH` on the agent's metrics address, from inside its namespace: the status and the
/// body.
pub async fn http_get(inside: &InNetns, path: &str) -> Result<(u16, String)> {
    http_request(inside, "GET", path).await
}

/// `METHOD PATH` (no body) on the agent's metrics address, from inside its namespace: the
/// status and the body.
pub async fn http_request(inside: &InNetns, method: &str, path: &str) -> Result<(u16, String)> {
    let socket = inside
        .socket(Domain::IPV4, Type::STREAM, None)
        .await
        .map_err(|e| format!("socket: {e}"))?;
    let socket = TcpSocket::from_std_stream(socket.into());
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, METRICS_PORT));
    let exchange = async {
        let mut stream = socket.connect(addr).await?;
        let request =
            format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| format!("{method} {path}: no answer within 2 s"))?
        .map_err(|e| format!("{method} {path}: {e}"))?;
    // `HTTP/1.1 200 OK`, headers, a blank line, the body.
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{method} {path}: not an HTTP answer"))?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// Whether the agent answers `/readyz` with 200.
pub async fn ready(inside: &InNetns) -> bool {
    matches!(http_status(inside, "/readyz").await, Ok(200))
}

/// The value of an unlabelled series (`kube_nftpol_dataplane_repairs_total`) on the agent's
/// `/metrics`, from inside its namespace.
pub async fn metric(inside: &InNetns, name: &str) -> Result<u64> {
    let (status, body) = http_get(inside, "/metrics").await?;
    if status != 200 {
        return Err(format!("GET /metrics answered {status}"));
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| format!("no {name} in /metrics"))
}
