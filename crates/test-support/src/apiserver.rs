//! A real kube-apiserver v1.20.2 and its etcd for the suites that talk to Kubernetes
//! (`docs/testing.md`, "The test API server", says what differs from a current server).
//!
//! [`ApiServer::start`] runs `integration/apiserver/start.sh` on a fresh directory
//! `<temp>/knp-apiserver-<pid>-<n>`: the script holds the flags, makes the certificates, the
//! tokens and the kubeconfigs, picks free ports and waits for `/readyz`. Authorization is RBAC:
//! the admin may do everything, the agent's service account and the users a test adds
//! ([`ApiServer::start_with_users`]) only what roles grant them. The binaries come from
//! `$KNP_APISERVER_BIN`, else from `integration/apiserver/build.sh`'s cache; without them
//! `start` fails with a message saying how to build them. Drop stops both processes and
//! removes the directory, also when the test panics; the directories and processes of runs
//! that were killed are removed by the next `start` (the pid in the name tells).
//!
//! Needs `etcd`, `openssl` and `curl` (build.sh installs them), not root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// start.sh and stop.sh.
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../integration/apiserver");
/// build.sh's cache when `$KNP_APISERVER_CACHE` is not set.
const DEFAULT_CACHE: &str = "/var/cache/kube-nftpol/k8s-v1.20.2";
/// Prefix of the servers' directories under the temporary directory.
const DIR_PREFIX: &str = "knp-apiserver";

/// A running etcd and kube-apiserver on 127.0.0.1, stopped and removed on drop.
#[derive(Debug)]
pub struct ApiServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    token: String,
}

impl ApiServer {
    /// Starts etcd and kube-apiserver and waits until the API server is ready (3 to 4 s).
    pub fn start() -> Result<Self, String> {
        Self::start_with_users(&[])
    }

    /// [`Self::start`] with plain users besides the admin and the agent: each authenticates
    /// with its own token ([`Self::user_token`], [`Self::user_kubeconfig_path`]), is in no
    /// group but `system:authenticated`, and under RBAC may do only what a test binds to it.
    /// Names are lowercase letters, digits and `-`.
    pub fn start_with_users(users: &[&str]) -> Result<Self, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if let Some(bad) = users.iter().find(|u| {
            u.is_empty()
                || !u
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }) {
            return Err(format!(
                "user name {bad:?}: use lowercase letters, digits and -"
            ));
        }
        let bin = bin_dir()?;
        remove_stale_dirs();
        // Two servers starting at once may pick the same free port; the loser retries.
        let mut why = String::new();
        for _ in 0..3 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            // The guard exists before anything runs, so a failed start cleans up too.
            let mut server = ApiServer {
                dir,
                bin: bin.clone(),
                port: 0,
                token: String::new(),
            };
            let users = [("KNP_APISERVER_USERS", users.join(" "))];
            match run_script("start.sh", &server.dir, &server.bin, &[], &users) {
                Ok(_) => {
                    server.port = server
                        .read("port")?
                        .parse()
                        .map_err(|e| format!("port: {e}"))?;
                    server.token = server.read("token")?;
                    return Ok(server);
                }
                Err(e) => why = e,
            }
        }
        Err(why)
    }

    /// The kubeconfig: this server, its CA, the token of a `system:masters` user.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// `https://127.0.0.1:<port>`; the same across [`Self::start_apiserver`].
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The bearer token of a `system:masters` user (allowed everything).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The bearer token of the agent's service account `kube-system/kube-nftpol`: it may do
    /// what `deploy/rbac.yaml` grants, once applied, and nothing else (authorization is RBAC).
    pub fn agent_token(&self) -> Result<String, String> {
        self.read("agent-token")
    }

    /// The bearer token of a user [`Self::start_with_users`] added.
    pub fn user_token(&self, user: &str) -> Result<String, String> {
        self.read(&format!("users/{user}.token"))
    }

    /// A kubeconfig like [`Self::kubeconfig_path`]'s, authenticating as a user
    /// [`Self::start_with_users`] added (with its token).
    pub fn user_kubeconfig_path(&self, user: &str) -> PathBuf {
        self.dir.join("users").join(format!("{user}.kubeconfig"))
    }

    /// The CA certificate that signed the serving certificate (SAN 127.0.0.1 and localhost).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The server's directory: certificates, etcd data, `kube-apiserver.log`, `etcd.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops kube-apiserver only; etcd and its data stay.
    pub fn stop_apiserver(&self) -> Result<(), String> {
        self.script("stop.sh", &["kube-apiserver"]).map(drop)
    }

    /// Starts kube-apiserver again, on the same port with the same certificates and token,
    /// and waits until it is ready.
    pub fn start_apiserver(&self) -> Result<(), String> {
        self.script("start.sh", &[]).map(drop)
    }

    /// Runs the kubectl v1.20.2 built beside the server with this kubeconfig; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_stdin(args, "")
    }

    /// [`Self::kubectl`] with `input` on stdin (`kubectl apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<String, String> {
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kubectl cannot be run: {e}"))?;
        let written = child
            .stdin
            .take()
            .map(|mut s| s.write_all(input.as_bytes()));
        let out = child
            .wait_with_output()
            .map_err(|e| format!("kubectl: {e}"))?;
        if let Some(Err(e)) = written {
            return Err(format!("kubectl {}: writing stdin: {e}", args.join(" ")));
        }
        checked(&format!("kubectl {}", args.join(" ")), out)
    }

    /// One HTTP request to the server with `curl` (TLS verified, token sent); the response
    /// body, or an error for a status other than 2xx. `body` is (content type, content).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
    ) -> Result<String, String> {
        self.request_as(&self.token, method, path, body)
    }

    /// [`Self::request`] with another bearer token.
    pub fn request_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
    ) -> Result<String, String> {
        let mut curl = Command::new("curl");
        curl.args([
            "-sS",
            "--max-time",
            "30",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cacert")
        .arg(self.ca_path())
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"));
        if let Some((content_type, content)) = body {
            curl.args([
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                content,
            ]);
        }
        let what = format!("{method} {path}");
        let out = checked(
            &what,
            curl.arg(format!("{}{path}", self.url()))
                .output()
                .map_err(|e| format!("curl: {e}"))?,
        )?;
        let (body, code) = out
            .trim_end()
            .rsplit_once('\n')
            .unwrap_or(("", out.trim_end()));
        if code.starts_with('2') {
            Ok(body.to_owned())
        } else {
            Err(format!("{what}: HTTP {code}: {body}"))
        }
    }

    /// Sets a Pod's status as a kubelet would, with a JSON merge patch of the status
    /// subresource (kubectl 1.20 has no `--subresource`), e.g.
    /// `{"status":{"phase":"Running","podIP":"10.244.1.5","podIPs":[{"ip":"10.244.1.5"}]}}`.
    pub fn patch_pod_status(
        &self,
        namespace: &str,
        pod: &str,
        merge_patch: &str,
    ) -> Result<String, String> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/status");
        self.request(
            "PATCH",
            &path,
            Some(("application/merge-patch+json", merge_patch)),
        )
    }

    /// The last `lines` lines of kube-apiserver's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn read(&self, file: &str) -> Result<String, String> {
        let path = self.dir.join(file);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("read {}: {e}", path.display()))
    }

    fn script(&self, name: &str, args: &[&str]) -> Result<String, String> {
        run_script(name, &self.dir, &self.bin, args, &[])
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Err(e) = self.script("stop.sh", &[]) {
            eprintln!("stopping the API server in {}: {e}", self.dir.display());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory with kube-apiserver and kubectl: `$KNP_APISERVER_BIN`, else build.sh's cache
/// (`$KNP_APISERVER_CACHE/bin`, by default /var/cache/kube-nftpol/k8s-v1.20.2/bin); an error
/// saying how to build them when they are not there.
pub fn bin_dir() -> Result<PathBuf, String> {
    let bin = match std::env::var_os("KNP_APISERVER_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("KNP_APISERVER_CACHE") {
            Some(cache) => PathBuf::from(cache).join("bin"),
            None => Path::new(DEFAULT_CACHE).join("bin"),
        },
    };
    for tool in ["kube-apiserver", "kubectl"] {
        if !bin.join(tool).is_file() {
            return Err(format!(
                "\n\n*** {} is missing: these tests need kube-apiserver and kubectl v1.20.2.\n\
                 *** Build them once with `sudo integration/apiserver/build.sh` (about 5 minutes; \
                 they are cached in {DEFAULT_CACHE}/bin), or set KNP_APISERVER_BIN to their \
                 directory.\n",
                bin.join(tool).display()
            ));
        }
    }
    Ok(bin)
}

fn run_script(
    name: &str,
    dir: &Path,
    bin: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(Path::new(SCRIPTS).join(name))
        .arg(dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("KNP_APISERVER_BIN", bin)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bash cannot be run: {e}"))?;
    checked(
        &format!("integration/apiserver/{name} {}", dir.display()),
        out,
    )
}

/// Stdout of a command that succeeded, else an error with its status and stderr.
fn checked(what: &str, out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            String::from_utf8_lossy(&out.stdout).trim_end()
        ))
    }
}

/// Stops the servers of runs that died before dropping their guards (killed test processes)
/// and removes their directories. Live runs' directories are left alone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !alive(pid) {
            eprintln!(
                "removing the API server a dead run left in {}",
                entry.path().display()
            );
            let _ = run_script("stop.sh", &entry.path(), Path::new(""), &[], &[]);
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether process `pid` exists and is not a zombie (an init that does not reap, as in some
/// VMs and containers, leaves killed runs as zombies).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}
