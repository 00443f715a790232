//! `kube-nftpol ui`: reads the flows and the cluster once ([`super::flow_source`]), then serves the
//! page of [`crate::ui`] on a loopback address until Ctrl-C. The address it listens on goes
//! to stdout as `http://127.0.0.1:PORT/` (one line, for scripts: `--listen 127.0.0.1:0` picks
//! a free port), the rest to stderr. Problems with the input (bad lines, no flows, an empty
//! cluster) do not stop it: the page shows them.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Args;

use super::Outcome;
use super::flow_source::{Observation, SourceArgs};
use crate::ui::{self, View};

/// The default address: the agent's metrics port plus one, on loopback.
const DEFAULT_LISTEN: &str = "127.0.0.1:9641";

/// Arguments of `ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Where the flows and the cluster come from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// The loopback address and port to serve the page on (`127.0.0.1:PORT` or `[::1]:PORT`;
    /// port 0 picks a free one). The page shows pod names, labels and addresses, so it never
    /// listens beyond this machine
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,
}

/// A socket address on loopback.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not ADDRESS:PORT (e.g. 127.0.0.1:9641)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address: the page shows flows, labels and addresses, so it \
             listens on 127.0.0.1 or [::1] only",
            addr.ip()
        ));
    }
    Ok(addr)
}

/// Runs `ui` until SIGINT or SIGTERM.
pub fn run(args: &UiArgs) -> anyhow::Result<Outcome> {
    let observation = Observation::load(&args.source)?;
    for problem in &observation.problems {
        eprintln!("warning: {problem}");
    }
    let view = View::new(observation);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        println!("http://{addr}/");
        eprintln!("kube-nftpol ui: serving http://{addr}/ (Ctrl-C to stop)");
        ui::serve(listener, view, shutdown()).await
    })?;
    Ok(Outcome::Success)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        // Without a SIGTERM handler, Ctrl-C still stops it.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;
    use crate::cli::{Command, parse_command};

    fn parse(extra: &[&str]) -> Result<UiArgs, clap::Error> {
        match parse_command("ui", extra)? {
            Command::Ui(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn ui_listens_on_loopback_by_default() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(args.source.flows, None);
    }

    #[test]
    fn every_ui_flag_parses() {
        let args = parse(&["--manifests", "m", "--flows", "f", "--listen", "[::1]:0"]).unwrap();
        assert_eq!(args.listen, "[::1]:0".parse().unwrap());
        assert!(args.source.manifests.is_some() && args.source.flows.is_some());
    }

    #[test]
    fn ui_refuses_to_listen_beyond_loopback() {
        for addr in [
            "0.0.0.0:9641",
            "192.0.2.1:80",
            "[::]:9641",
            "localhost:9641",
            "9641",
        ] {
            let error = parse(&["--listen", addr]).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{addr}");
        }
        let error = parse(&["--listen", "0.0.0.0:1"]).unwrap_err().to_string();
        assert!(error.contains("not a loopback address"), "{error}");
    }
}
