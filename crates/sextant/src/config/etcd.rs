//! The etcd registry's settings: flags (shared with `sextant etcd register`)
//! and the `etcd:` section of the file.

use std::path::PathBuf;

use serde::Deserialize;

use super::*;

/// How to reach etcd: flags shared by the etcd registry and `sextant etcd register`.
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct EtcdArgs {
    /// etcd client URLs.
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URL,..."
    )]
    #[serde(rename = "endpoints")]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Prefix of Sextant's keys in etcd.
    #[arg(long, env = "SEXTANT_ETCD_PREFIX", value_name = "PREFIX")]
    #[serde(rename = "prefix")]
    pub etcd_prefix: Option<String>,
    /// Also read grpc-go naming-convention keys (SERVICE/ADDR) under this prefix.
    #[arg(long, env = "SEXTANT_ETCD_NAMING_PREFIX", value_name = "PREFIX")]
    #[serde(rename = "naming_prefix")]
    pub etcd_naming_prefix: Option<String>,
    /// etcd user name.
    #[arg(long, env = "SEXTANT_ETCD_USERNAME", value_name = "NAME")]
    #[serde(rename = "username")]
    pub etcd_username: Option<String>,
    /// etcd password.
    #[arg(
        long,
        env = "SEXTANT_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    #[serde(rename = "password")]
    pub etcd_password: Option<sextant_core::Secret>,
    /// CA certificate (PEM) for https etcd URLs.
    #[arg(long, env = "SEXTANT_ETCD_CA", value_name = "FILE")]
    #[serde(rename = "ca")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM), with --etcd-key.
    #[arg(long, env = "SEXTANT_ETCD_CERT", value_name = "FILE")]
    #[serde(rename = "cert")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM), with --etcd-cert.
    #[arg(long, env = "SEXTANT_ETCD_KEY", value_name = "FILE")]
    #[serde(rename = "key")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    /// The etcd settings, flags over the file's, with every problem.
    pub(super) fn resolve(&self, file: &EtcdArgs, c: &mut Collector) -> EtcdConfig {
        let mut config = EtcdConfig::default();
        if let Some((e, from_flag)) = either(&self.etcd_endpoints, &file.etcd_endpoints) {
            for url in &e {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    c.bad(
                        "etcd.endpoints",
                        from_flag,
                        format!("{url:?} should be a URL such as http://127.0.0.1:2379"),
                    );
                }
            }
            config.endpoints = e;
        }
        if let Some(p) = self
            .etcd_prefix
            .clone()
            .or_else(|| file.etcd_prefix.clone())
        {
            config.prefix = p;
        }
        config.naming_prefix = self
            .etcd_naming_prefix
            .clone()
            .or_else(|| file.etcd_naming_prefix.clone());
        let user = either(&self.etcd_username, &file.etcd_username);
        let password = either(&self.etcd_password, &file.etcd_password);
        match (user, password) {
            (Some((u, _)), Some((p, _))) => config.credentials = Some((u, p)),
            (None, None) => {}
            (Some((_, from_flag)), None) => c.bad(
                "etcd.username",
                from_flag,
                "needs a password (etcd.password, --etcd-password)".into(),
            ),
            (None, Some((_, from_flag))) => c.bad(
                "etcd.password",
                from_flag,
                "needs a username (etcd.username, --etcd-username)".into(),
            ),
        }
        let cert = either(&self.etcd_cert, &file.etcd_cert);
        let key = either(&self.etcd_key, &file.etcd_key);
        match (&cert, &key) {
            (Some((_, from_flag)), None) => c.bad(
                "etcd.cert",
                *from_flag,
                "needs its key (etcd.key, --etcd-key)".into(),
            ),
            (None, Some((_, from_flag))) => c.bad(
                "etcd.key",
                *from_flag,
                "needs its certificate (etcd.cert, --etcd-cert)".into(),
            ),
            _ => {}
        }
        let tls = EtcdTls {
            ca: self.etcd_ca.clone().or_else(|| file.etcd_ca.clone()),
            cert: cert.map(|(v, _)| v),
            key: key.map(|(v, _)| v),
        };
        if tls.ca.is_some() || tls.cert.is_some() {
            config.tls = Some(tls);
        }
        config
    }

    /// The etcd settings from flags alone (for `sextant etcd register`).
    pub fn config(&self) -> Result<EtcdConfig, Problems> {
        let mut c = Collector {
            problems: Vec::new(),
            file: None,
        };
        let config = self.resolve(&EtcdArgs::default(), &mut c);
        if c.problems.is_empty() {
            Ok(config)
        } else {
            Err(Problems(c.problems))
        }
    }
}
