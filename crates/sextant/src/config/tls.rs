//! The xDS TLS port's settings: flags and the `tls:` section of the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sextant_xds::server::auth::XdsAuth;
use sextant_xds::server::tls::{ClientAuth, TlsFiles};

use super::*;

/// TLS on the xDS port. Setting a certificate and key turns the TLS port on
/// (at 127.0.0.1:15012 unless --xds-tls-addr says otherwise).
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct TlsArgs {
    /// Where proxies connect for xDS over TLS.
    #[arg(long, env = "SEXTANT_XDS_TLS_ADDR", value_name = "ADDR")]
    #[serde(rename = "addr")]
    pub xds_tls_addr: Option<String>,
    /// The server certificate chain (PEM), re-read when it changes.
    #[arg(long, env = "SEXTANT_TLS_CERT", value_name = "FILE")]
    #[serde(rename = "cert")]
    pub tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, env = "SEXTANT_TLS_KEY", value_name = "FILE")]
    #[serde(rename = "key")]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that proxies' client certificates must chain to.
    #[arg(long, env = "SEXTANT_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Client certificates: none, optional or require [default: require
    /// with --client-ca, else none].
    #[arg(long, env = "SEXTANT_CLIENT_AUTH", value_name = "MODE")]
    pub client_auth: Option<String>,
    /// What proxies must prove to be served: none (laptop use: anyone who
    /// reaches the port), mtls (a client certificate with a SPIFFE id),
    /// token (a bearer token: --xds-token-file or --xds-token-review) or
    /// any (either) [default: none].
    #[arg(long, env = "SEXTANT_XDS_AUTH", value_name = "MODE")]
    #[serde(rename = "auth")]
    pub xds_auth: Option<String>,
    /// Bearer tokens of proxies off Kubernetes: lines of
    /// `TOKEN NAMESPACE [SERVICE_ACCOUNT]`.
    #[arg(long, env = "SEXTANT_XDS_TOKEN_FILE", value_name = "FILE")]
    #[serde(rename = "token_file")]
    pub xds_token_file: Option<PathBuf>,
    /// Validate bearer tokens with the Kubernetes API server's TokenReview
    /// (the cluster of --kubeconfig / in-cluster).
    #[arg(long, env = "SEXTANT_XDS_TOKEN_REVIEW")]
    #[serde(rename = "token_review", default)]
    pub xds_token_review: bool,
    /// The audiences a reviewed token must be for [default: the API
    /// server's own].
    #[arg(
        long,
        env = "SEXTANT_XDS_TOKEN_AUDIENCES",
        value_delimiter = ',',
        value_name = "AUD,..."
    )]
    #[serde(rename = "token_audiences")]
    pub xds_token_audiences: Option<Vec<String>>,
}

/// Where bearer tokens are validated.
#[derive(Clone, Debug, Default)]
pub enum TokenSource {
    /// Nowhere: tokens prove nothing.
    #[default]
    None,
    /// A token file.
    File(PathBuf),
    /// Kubernetes TokenReview, for these audiences.
    Review(Vec<String>),
}

impl TlsArgs {
    pub(super) fn paths(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        [
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.client_ca,
            &mut self.xds_token_file,
        ]
        .into_iter()
        .flatten()
    }

    /// The TLS port's address and files, if it is on; what proxies must
    /// prove; where tokens are validated.
    pub(super) fn resolve(
        &self,
        file: &TlsArgs,
        c: &mut Collector,
    ) -> (Option<(SocketAddr, TlsFiles)>, XdsAuth, TokenSource) {
        let auth = match either(&self.xds_auth, &file.xds_auth) {
            None => XdsAuth::None,
            Some((m, from_flag)) => m.parse().unwrap_or_else(|e: String| {
                c.bad_flag("tls.auth", "--xds-auth", from_flag, e);
                XdsAuth::None
            }),
        };
        let token_file = either(&self.xds_token_file, &file.xds_token_file);
        let review = self.xds_token_review || file.xds_token_review;
        let tokens = match (token_file, review) {
            (Some(_), true) => {
                c.problems.push(
                    "--xds-token-file and --xds-token-review: choose one way to validate tokens"
                        .into(),
                );
                TokenSource::None
            }
            (Some((path, _)), false) => {
                if let Err(e) = sextant_xds::server::auth::TokenFile::load(&path) {
                    c.problems.push(e);
                }
                TokenSource::File(path)
            }
            (None, true) => TokenSource::Review(
                either(&self.xds_token_audiences, &file.xds_token_audiences)
                    .map(|(a, _)| a)
                    .unwrap_or_default(),
            ),
            (None, false) => TokenSource::None,
        };
        if matches!(auth, XdsAuth::Token | XdsAuth::Any) && matches!(tokens, TokenSource::None) {
            c.problems.push(
                "--xds-auth token and any need a way to validate tokens: --xds-token-file or --xds-token-review".into(),
            );
        }
        let tls = self.resolve_tls(file, c, auth == XdsAuth::Mtls);
        (tls, auth, tokens)
    }

    fn resolve_tls(
        &self,
        file: &TlsArgs,
        c: &mut Collector,
        require_identity: bool,
    ) -> Option<(SocketAddr, TlsFiles)> {
        let cert = either(&self.tls_cert, &file.tls_cert);
        let key = either(&self.tls_key, &file.tls_key);
        let ca = either(&self.client_ca, &file.client_ca);
        let addr = c.addr("tls.addr", &self.xds_tls_addr, &file.xds_tls_addr);
        let auth = either(&self.client_auth, &file.client_auth);
        let client_auth = match auth.as_ref().map(|(m, f)| (m.as_str(), *f)) {
            None if ca.is_some() => ClientAuth::Require,
            None => ClientAuth::None,
            Some(("none", _)) => ClientAuth::None,
            Some(("optional", _)) => ClientAuth::Optional,
            Some(("require", _)) => ClientAuth::Require,
            Some((other, from_flag)) => {
                c.bad_flag(
                    "tls.client_auth",
                    "--client-auth",
                    from_flag,
                    format!("{other:?}: expected none, optional or require"),
                );
                ClientAuth::None
            }
        };
        let (cert, key) = match (cert, key) {
            (None, None) => {
                if addr.is_some() || ca.is_some() {
                    c.problems.push(
                        "the xDS TLS port needs --tls-cert and --tls-key (tls.cert, tls.key)"
                            .into(),
                    );
                }
                if require_identity {
                    c.problems.push(
                        "--xds-auth mtls needs the TLS port: set --tls-cert, --tls-key and --client-ca".into(),
                    );
                }
                return None;
            }
            (Some((cert, _)), Some((key, _))) => (cert, key),
            (Some(_), None) | (None, Some(_)) => {
                c.problems
                    .push("--tls-cert and --tls-key go together (tls.cert, tls.key)".into());
                return None;
            }
        };
        if client_auth != ClientAuth::None && ca.is_none() {
            c.problems.push(
                "client certificates (--client-auth) need the CA that signs them: --client-ca"
                    .into(),
            );
        }
        if require_identity && client_auth == ClientAuth::None {
            c.problems.push(
                "--xds-auth mtls needs client certificates: set --client-ca (and --client-auth require or optional)".into(),
            );
        }
        let files = TlsFiles {
            client_ca: ca.map(|(p, _)| p),
            client_auth,
            ..TlsFiles::new(cert, key)
        };
        if let Err(e) = sextant_xds::server::tls::load(&files) {
            c.problems.push(format!("xDS TLS: {e}"));
        }
        let addr = addr.unwrap_or(crate::DEFAULT_XDS_TLS_ADDR);
        Some((addr, files))
    }
}
