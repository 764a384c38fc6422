//! The Consul registry's settings: flags (Consul's own environment
//! variables) and the `consul:` section of the file.

use std::path::PathBuf;

use serde::Deserialize;

use super::*;

/// Consul registry flags; the environment variables are Consul's own.
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConsulArgs {
    /// Consul agent address.
    #[arg(long, env = "CONSUL_HTTP_ADDR", value_name = "URL")]
    #[serde(rename = "addr")]
    pub consul_addr: Option<String>,
    /// ACL token, sent as X-Consul-Token.
    #[arg(
        long,
        env = "CONSUL_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    #[serde(rename = "token")]
    pub consul_token: Option<sextant_core::Secret>,
    /// Datacenter to read [default: the agent's].
    #[arg(long, env = "SEXTANT_CONSUL_DATACENTER", value_name = "DC")]
    #[serde(rename = "datacenter")]
    pub consul_datacenter: Option<String>,
    /// CA certificate (PEM) for an https agent.
    #[arg(long, env = "CONSUL_CACERT", value_name = "FILE")]
    #[serde(rename = "cacert")]
    pub consul_cacert: Option<PathBuf>,
    /// Client certificate (PEM), with --consul-client-key.
    #[arg(long, env = "CONSUL_CLIENT_CERT", value_name = "FILE")]
    #[serde(rename = "client_cert")]
    pub consul_client_cert: Option<PathBuf>,
    /// Client key (PEM), with --consul-client-cert.
    #[arg(long, env = "CONSUL_CLIENT_KEY", value_name = "FILE")]
    #[serde(rename = "client_key")]
    pub consul_client_key: Option<PathBuf>,
    /// Hostname of a Consul service; {service} is its lowercased name.
    #[arg(
        long,
        env = "SEXTANT_CONSUL_HOSTNAME_TEMPLATE",
        value_name = "TEMPLATE"
    )]
    #[serde(rename = "hostname_template")]
    pub consul_hostname_template: Option<String>,
    /// Treat instances with a warning check as unhealthy (default: healthy).
    #[arg(long, env = "SEXTANT_CONSUL_WARNING_UNHEALTHY")]
    #[serde(rename = "warning_unhealthy", default)]
    pub consul_warning_unhealthy: bool,
    /// Include connect-proxy and gateway instances.
    #[arg(long, env = "SEXTANT_CONSUL_INCLUDE_GATEWAYS")]
    #[serde(rename = "include_gateways", default)]
    pub consul_include_gateways: bool,
    /// Node-meta key whose value is the endpoints' zone.
    #[arg(long, env = "SEXTANT_CONSUL_ZONE_META_KEY", value_name = "KEY")]
    #[serde(rename = "zone_meta_key")]
    pub consul_zone_meta_key: Option<String>,
}

impl ConsulArgs {
    pub(super) fn resolve(&self, file: &ConsulArgs, col: &mut Collector) -> ConsulConfig {
        let mut c = ConsulConfig::default();
        if let Some((a, from_flag)) = either(&self.consul_addr, &file.consul_addr) {
            // CONSUL_HTTP_ADDR is often given without a scheme.
            c.addr = if a.contains("://") {
                a
            } else {
                format!("http://{a}")
            };
            if not_an_http_url(&c.addr) {
                col.bad(
                    "consul.addr",
                    from_flag,
                    format!("{:?} should be a URL such as http://127.0.0.1:8500", c.addr),
                );
            }
        }
        c.token = self
            .consul_token
            .clone()
            .or_else(|| file.consul_token.clone());
        c.datacenter = self
            .consul_datacenter
            .clone()
            .or_else(|| file.consul_datacenter.clone());
        c.ca = self
            .consul_cacert
            .clone()
            .or_else(|| file.consul_cacert.clone());
        let cert = either(&self.consul_client_cert, &file.consul_client_cert);
        let key = either(&self.consul_client_key, &file.consul_client_key);
        match (cert, key) {
            (Some((cert, _)), Some((key, _))) => c.client_cert = Some((cert, key)),
            (None, None) => {}
            (Some((_, from_flag)), None) => col.bad(
                "consul.client_cert",
                from_flag,
                "needs its key (consul.client_key, --consul-client-key)".into(),
            ),
            (None, Some((_, from_flag))) => col.bad(
                "consul.client_key",
                from_flag,
                "needs its certificate (consul.client_cert, --consul-client-cert)".into(),
            ),
        }
        if let Some((t, from_flag)) = either(
            &self.consul_hostname_template,
            &file.consul_hostname_template,
        ) {
            if !t.contains("{service}") {
                col.bad(
                    "consul.hostname_template",
                    from_flag,
                    format!("{t:?} does not contain {{service}}"),
                );
            } else if let Some(p) =
                sextant_core::validate::dns_name_problem(&t.replace("{service}", "x"))
            {
                col.bad(
                    "consul.hostname_template",
                    from_flag,
                    format!("{t:?} does not make a hostname: {p}"),
                );
            }
            c.mapping.hostname_template = t;
        }
        c.mapping.warning_is_healthy =
            !(self.consul_warning_unhealthy || file.consul_warning_unhealthy);
        c.mapping.include_gateways = self.consul_include_gateways || file.consul_include_gateways;
        c.mapping.zone_meta_key = self
            .consul_zone_meta_key
            .clone()
            .or_else(|| file.consul_zone_meta_key.clone());
        c
    }
}

/// True unless `url` is `http://` or `https://` followed by a host.
pub(super) fn not_an_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_none_or(|r| r.trim_start_matches('/').is_empty())
}
