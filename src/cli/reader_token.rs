//! The bearer token `kube-nftpol flows` sends to the agents, whose `/flows` answers only
//! readers the cluster allows ([`crate::access`]): `--token` (or `KUBE_NFTPOL_TOKEN`), else the
//! kubeconfig user's token or token file. The kubeconfig's credentials reach the API server
//! only; a client certificate (or an exec plugin, or a password) gives the agents nothing to
//! check, and the error says how to get a token that works.
//!
//! Reads the token file; everything else is the caller's.

use std::path::PathBuf;

use kube::config::AuthInfo;
use secrecy::ExposeSecret as _;

/// The environment variable `--token` reads.
pub const TOKEN_ENV: &str = "KUBE_NFTPOL_TOKEN";

/// How to get a token the agents accept, for the error messages.
const FIX: &str = "the agents need a Kubernetes bearer token: pass --token (or set \
KUBE_NFTPOL_TOKEN) with the token of a service account bound to the ClusterRole \
kube-nftpol-flow-reader (deploy/flow-reader.yaml), for example:
  kubectl create serviceaccount flow-reader
  kubectl create clusterrolebinding flow-reader --clusterrole kube-nftpol-flow-reader --serviceaccount default:flow-reader
  kube-nftpol flows --token \"$(kubectl create token flow-reader)\"";

/// Why there is no token to send.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig names a token file that cannot be read.
    #[error("reading the kubeconfig's token file {}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig's user has credentials that are no bearer token (or none), and no
    /// `--token` was given: what it has, and the fix.
    #[error(
        "the kubeconfig's user {has}, which the API server does not pass on to the agents; {FIX}"
    )]
    NoToken {
        /// What the user authenticates with.
        has: &'static str,
    },
}

/// The token to send: `flag` (from `--token` or [`TOKEN_ENV`]), else the kubeconfig user's
/// token, else its token file's content.
pub fn resolve(flag: Option<&str>, user: &AuthInfo) -> Result<String, Error> {
    if let Some(token) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    if let Some(token) = &user.token {
        let token = token.expose_secret().trim();
        if !token.is_empty() {
            return Ok(token.to_owned());
        }
    }
    if let Some(path) = &user.token_file {
        let path = PathBuf::from(path);
        return match std::fs::read_to_string(&path) {
            Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
            Ok(_) => Err(Error::NoToken {
                has: "has an empty token file",
            }),
            Err(source) => Err(Error::TokenFile { path, source }),
        };
    }
    let has = if user.client_certificate.is_some() || user.client_certificate_data.is_some() {
        "authenticates with a client certificate"
    } else if user.exec.is_some() {
        "gets its credentials from an exec plugin"
    } else if user.auth_provider.is_some() {
        "gets its credentials from an auth provider"
    } else if user.username.is_some() {
        "authenticates with a user name and password"
    } else {
        "has no credentials"
    };
    Err(Error::NoToken { has })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(yaml: &str) -> AuthInfo {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn the_flag_wins_then_the_kubeconfig_token_then_its_token_file() {
        let with_token = user("token: from-kubeconfig\n");
        assert_eq!(
            resolve(Some(" from-flag\n"), &with_token).unwrap(),
            "from-flag"
        );
        assert_eq!(resolve(None, &with_token).unwrap(), "from-kubeconfig");
        assert_eq!(resolve(Some(""), &with_token).unwrap(), "from-kubeconfig");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let with_file = user(&format!("tokenFile: {}\n", file.display()));
        assert_eq!(resolve(None, &with_file).unwrap(), "from-file");
    }

    #[test]
    fn a_client_certificate_alone_is_no_token_and_the_error_says_how_to_get_one() {
        let cert = user("client-certificate-data: Y2VydA==\nclient-key-data: a2V5\n");
        let error = resolve(None, &cert).unwrap_err().to_string();
        assert!(
            error.starts_with("the kubeconfig's user authenticates with a client certificate, "),
            "{error}"
        );
        assert!(error.contains("--token"), "{error}");
        assert!(error.contains("kube-nftpol-flow-reader"), "{error}");
        assert!(
            error.contains("kubectl create token flow-reader"),
            "{error}"
        );
        // With --token it is fine.
        assert_eq!(resolve(Some("t"), &cert).unwrap(), "t");
    }

    #[test]
    fn exec_plugins_and_missing_credentials_are_named() {
        let exec = user(
            "exec:\n  apiVersion: client.authentication.k8s.io/v1\n  command: gke-gcloud-auth-plugin\n",
        );
        assert!(
            resolve(None, &exec)
                .unwrap_err()
                .to_string()
                .contains("exec plugin")
        );
        let nothing = user("{}\n");
        assert!(
            resolve(None, &nothing)
                .unwrap_err()
                .to_string()
                .contains("no credentials")
        );
    }

    #[test]
    fn an_unreadable_token_file_is_an_error_naming_it() {
        let missing = user("tokenFile: /nonexistent/kube-nftpol/token\n");
        let error = resolve(None, &missing).unwrap_err();
        assert!(matches!(error, Error::TokenFile { .. }), "{error}");
        assert!(error.to_string().contains("/nonexistent/kube-nftpol/token"));
    }
}
