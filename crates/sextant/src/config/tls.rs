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
    /// Issue workload certificates (Istio's certificate API, on the TLS
    /// port) from the CA in this directory: Istio's cacerts layout
    /// (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem), re-read
    /// when it changes; an empty directory gets a self-signed root. Without
    /// --tls-cert, the TLS port serves a certificate this CA makes.
    #[arg(long, env = "SEXTANT_CA_DIR", value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// The mesh's trust domain: the SPIFFE ids the CA issues
    /// (spiffe://DOMAIN/ns/NS/sa/SA), which mutual TLS checks.
    #[arg(long, env = "SEXTANT_TRUST_DOMAIN", value_name = "DOMAIN")]
    pub trust_domain: Option<String>,
    /// The longest lifetime of a workload certificate (a request may ask
    /// for less).
    #[arg(long, env = "SEXTANT_WORKLOAD_CERT_TTL", value_name = "DURATION")]
    pub workload_cert_ttl: Option<String>,
    /// The names (DNS names, IPs) on the TLS port's certificate when the CA
    /// makes it: what proxies dial.
    #[arg(
        long,
        env = "SEXTANT_CA_SERVER_NAMES",
        value_delimiter = ',',
        value_name = "NAME,..."
    )]
    pub ca_server_names: Option<Vec<String>>,
}

/// The default trust domain (Istio's).
pub(crate) const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The default longest workload certificate lifetime (Istio's).
pub(crate) const DEFAULT_WORKLOAD_CERT_TTL: std::time::Duration =
    std::time::Duration::from_secs(86_400);

/// Where the TLS port's certificate comes from.
#[derive(Clone, Debug)]
pub enum XdsTls {
    /// Files (--tls-cert, --tls-key, --client-ca).
    Files(TlsFiles),
    /// Made by Sextant's CA for `names`; clients' certificates chain to
    /// the mesh's root.
    FromCa {
        /// The names on it.
        names: Vec<String>,
        /// Whether clients present certificates.
        client_auth: ClientAuth,
    },
}

/// Sextant's CA.
#[derive(Clone, Debug)]
pub struct CaSettings {
    /// Its directory.
    pub dir: PathBuf,
    /// The longest workload certificate lifetime.
    pub max_ttl: std::time::Duration,
}

/// What the `tls:` settings come to.
#[derive(Clone, Debug)]
pub(super) struct TlsResolved {
    pub(super) tls: Option<(SocketAddr, XdsTls)>,
    pub(super) auth: XdsAuth,
    pub(super) tokens: TokenSource,
    pub(super) ca: Option<CaSettings>,
    pub(super) trust_domain: String,
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
            &mut self.ca_dir,
        ]
        .into_iter()
        .flatten()
    }

    /// The TLS port's address and certificate, if it is on; what proxies
    /// must prove; where tokens are validated; the CA.
    pub(super) fn resolve(&self, file: &TlsArgs, c: &mut Collector) -> TlsResolved {
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
        let trust_domain = match either(&self.trust_domain, &file.trust_domain) {
            None => DEFAULT_TRUST_DOMAIN.to_owned(),
            Some((td, from_flag)) => {
                if let Some(p) = sextant_core::validate::dns_name_problem(&td) {
                    c.bad_flag(
                        "tls.trust_domain",
                        "--trust-domain",
                        from_flag,
                        format!("{td:?}: {p}"),
                    );
                }
                td
            }
        };
        let ca = either(&self.ca_dir, &file.ca_dir).map(|(dir, from_flag)| {
            if let Err(e) = sextant_ca::authority::check(&dir) {
                c.bad_flag("tls.ca_dir", "--ca-dir", from_flag, e);
            }
            let max_ttl = match either(&self.workload_cert_ttl, &file.workload_cert_ttl) {
                None => DEFAULT_WORKLOAD_CERT_TTL,
                Some((v, from_flag)) => match humantime::parse_duration(&v) {
                    Ok(d) if d >= std::time::Duration::from_secs(60) => d,
                    Ok(_) => {
                        c.bad_flag(
                            "tls.workload_cert_ttl",
                            "--workload-cert-ttl",
                            from_flag,
                            format!("{v:?}: at least 1m"),
                        );
                        DEFAULT_WORKLOAD_CERT_TTL
                    }
                    Err(e) => {
                        c.bad_flag(
                            "tls.workload_cert_ttl",
                            "--workload-cert-ttl",
                            from_flag,
                            format!("{v:?} is not a duration ({e})"),
                        );
                        DEFAULT_WORKLOAD_CERT_TTL
                    }
                },
            };
            CaSettings { dir, max_ttl }
        });
        if ca.is_none() && either(&self.workload_cert_ttl, &file.workload_cert_ttl).is_some() {
            c.problems
                .push("--workload-cert-ttl needs the CA: --ca-dir".into());
        }
        let tls = self.resolve_tls(file, c, auth == XdsAuth::Mtls, ca.is_some());
        TlsResolved {
            tls,
            auth,
            tokens,
            ca,
            trust_domain,
        }
    }

    fn resolve_tls(
        &self,
        file: &TlsArgs,
        c: &mut Collector,
        require_identity: bool,
        with_ca: bool,
    ) -> Option<(SocketAddr, XdsTls)> {
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
            // The CA makes the port's certificate; clients' certificates
            // chain to its root (workloads renew with theirs), and tokens
            // still work beside them.
            (None, None) if with_ca => {
                if ca.is_some() {
                    c.problems.push(
                        "with --ca-dir and no --tls-cert, client certificates chain to the mesh's root: --client-ca is not used".into(),
                    );
                }
                let names = either(&self.ca_server_names, &file.ca_server_names)
                    .map(|(n, _)| n)
                    .unwrap_or_else(|| {
                        sextant_ca::serving::DEFAULT_NAMES
                            .iter()
                            .map(|n| (*n).to_owned())
                            .collect()
                    });
                let client_auth = if auth.is_some() {
                    client_auth
                } else {
                    ClientAuth::Optional
                };
                if require_identity && client_auth == ClientAuth::None {
                    c.problems.push(
                        "--xds-auth mtls needs client certificates: --client-auth optional or require".into(),
                    );
                }
                let addr = addr.unwrap_or(crate::DEFAULT_XDS_TLS_ADDR);
                return Some((addr, XdsTls::FromCa { names, client_auth }));
            }
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
        Some((addr, XdsTls::Files(files)))
    }
}
