//! Bootstrap files that point a proxy or a proxyless gRPC client at Sextant.
//!
//! [`Spec`] is what is known of the proxy (its node, the workload, how to
//! reach Sextant and prove who it is); `sextant bootstrap` fills it from
//! flags and `sextant agent` from the pod, and both write the file through
//! [`Spec::envoy`] or [`Spec::grpc`]: one generator.

use std::path::{Path, PathBuf};

/// TLS to Sextant's xDS TLS port, as a client: the CA that signed the
/// server's certificate and, for mTLS, the client's own certificate.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The CA certificate (PEM file) the server's certificate must chain to.
    pub ca: String,
    /// The client certificate (PEM file), for mTLS.
    pub cert: Option<String>,
    /// Its private key (PEM file).
    pub key: Option<String>,
    /// The server name to send (SNI) and to require in the server
    /// certificate's DNS names. Default: the host of the first address.
    pub sni: Option<String>,
}

/// What a node says about its workload (see [`crate::identity`]).
#[derive(Clone, Debug, Default)]
pub struct Workload {
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Instance IPs.
    pub ips: Vec<std::net::IpAddr>,
    /// Captured (`REDIRECT`) rather than explicit (`NONE`); `None` says
    /// nothing.
    pub capture: Option<bool>,
    /// A router proxy: the gateway it serves (`NAMESPACE/NAME`), where it
    /// binds the gateway's listeners, and the offset added to declared
    /// ports below 1024.
    pub router: Option<(String, std::net::IpAddr, u32)>,
}

impl Workload {
    /// The metadata fields, as JSON (also YAML).
    fn fields(&self, namespace: Option<&str>) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(ns) = namespace {
            m.insert("NAMESPACE".into(), ns.into());
        }
        if !self.labels.is_empty() {
            m.insert("LABELS".into(), serde_json::json!(self.labels));
        }
        if !self.ips.is_empty() {
            let ips: Vec<String> = self.ips.iter().map(ToString::to_string).collect();
            m.insert("INSTANCE_IPS".into(), ips.join(",").into());
        }
        if let Some(capture) = self.capture {
            m.insert(
                "INTERCEPTION_MODE".into(),
                if capture { "REDIRECT" } else { "NONE" }.into(),
            );
        }
        if let Some((gateway, bind, offset)) = &self.router {
            m.insert("GATEWAY".into(), gateway.clone().into());
            m.insert("GATEWAY_BIND".into(), bind.to_string().into());
            if *offset != 0 {
                m.insert("GATEWAY_PORT_OFFSET".into(), offset.to_string().into());
            }
        }
        m
    }
}

/// An Envoy bootstrap using ADS for everything.
#[derive(Clone, Debug, Default)]
pub struct EnvoyBootstrap {
    /// The node id Envoy reports (shown on the debug endpoints).
    pub node_id: String,
    /// The node's cluster.
    pub cluster: String,
    /// Sextant's xDS addresses, `HOST:PORT` each; names are resolved by
    /// Envoy. Several are replicas: Envoy holds one stream at a time and,
    /// when it breaks, reconnects (after 250 ms, backing off to 5 s) to
    /// another, alternating until one answers.
    pub xds_addrs: Vec<String>,
    /// Envoy's admin address, `HOST:PORT`; port 0 picks a free one.
    pub admin_addr: String,
    /// Use incremental (delta) ADS instead of state of the world.
    pub delta: bool,
    /// The namespace the node claims (node metadata `NAMESPACE`); with
    /// mTLS it must be the one in its certificate's SPIFFE id.
    pub namespace: Option<String>,
    /// The workload's labels, instance IPs and interception mode (node
    /// metadata `LABELS`, `INSTANCE_IPS`, `INTERCEPTION_MODE`).
    pub workload: Workload,
    /// TLS to the xDS port; `None` is plaintext.
    pub tls: Option<ClientTls>,
    /// A bearer token sent with the ADS stream (`authorization` metadata),
    /// for `--xds-auth token`. Envoy sends it as written here: a token that
    /// expires needs a new bootstrap. Prefer `token_path` with TLS.
    pub token: Option<String>,
    /// A file holding the bearer token, read again for every new stream
    /// (a rotated service-account token is picked up at the next
    /// reconnect). Needs `tls`: Envoy's Google gRPC client then carries the
    /// stream, with the `file_based_metadata` call credentials.
    pub token_path: Option<String>,
    /// The agent's SDS socket: a static cluster `sds-grpc` reaches it, for
    /// the workload certificate (`default`) and the root (`ROOTCA`).
    pub sds_socket: Option<String>,
}

/// The static cluster that reaches the agent's SDS socket (Istio's name).
pub const SDS_CLUSTER: &str = "sds-grpc";

/// The certificate provider instance a proxyless client's bootstrap names
/// (Istio's name), reading the agent's files.
pub const GRPC_CERT_PROVIDER: &str = "default";

/// What a bootstrap is made from.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// The node id the proxy reports.
    pub node_id: String,
    /// The node's cluster.
    pub cluster: String,
    /// Sextant's xDS addresses, `HOST:PORT`.
    pub xds_addrs: Vec<String>,
    /// Envoy's admin address, `HOST:PORT`.
    pub admin_addr: String,
    /// Incremental (delta) xDS.
    pub delta: bool,
    /// The namespace the node claims.
    pub namespace: Option<String>,
    /// The workload's labels, instance IPs and interception mode.
    pub workload: Workload,
    /// TLS to Sextant's xDS TLS port.
    pub tls: Option<ClientTls>,
    /// A file holding a bearer token the proxy sends with its stream.
    pub token_file: Option<PathBuf>,
    /// The agent's SDS socket (Envoy), when the agent holds a workload
    /// certificate.
    pub sds_socket: Option<PathBuf>,
    /// The directory of the agent's certificate files (proxyless gRPC:
    /// `cert-chain.pem`, `key.pem`, `root-cert.pem`).
    pub cert_dir: Option<PathBuf>,
}

/// `K=V` pairs (`--labels`) as labels.
pub fn parse_labels(
    pairs: &[String],
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut labels = std::collections::BTreeMap::new();
    for kv in pairs {
        match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                labels.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            _ => return Err(format!("--labels {kv:?}: write KEY=VALUE")),
        }
    }
    Ok(labels)
}

/// A token file's contents, for a bootstrap that carries the token itself.
fn read_token(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        Ok(_) => Err(format!("the token file {} is empty", path.display())),
        Err(e) => Err(format!(
            "cannot read the token file {}: {e}",
            path.display()
        )),
    }
}

/// A token file's absolute path, for a client that reads it itself (Envoy
/// with TLS, gRPC): its bytes are sent as they are, so trailing whitespace
/// is refused.
fn token_path(path: &Path) -> Result<String, String> {
    let raw = std::fs::read(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    if raw.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    if raw.last().is_some_and(u8::is_ascii_whitespace) {
        return Err(format!(
            "the token file {} ends with whitespace (a newline?), which Envoy would send inside the authorization header; write the token alone (printf '%s' \"$TOKEN\" > FILE; Kubernetes' projected tokens are written so)",
            path.display()
        ));
    }
    std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .map_err(|e| format!("the token file {}: {e}", path.display()))
}

impl Spec {
    /// Envoy's bootstrap, and notes worth telling the user; or why there
    /// is none. With TLS, Envoy reads the token file itself for every new
    /// stream (by its absolute path: its working directory may differ);
    /// without, the token is read now and written into the bootstrap.
    pub fn envoy(&self) -> Result<(EnvoyBootstrap, Vec<String>), String> {
        let mut notes = Vec::new();
        let (token, token_path) = match (&self.token_file, self.tls.is_some()) {
            (Some(path), true) => (None, Some(token_path(path)?)),
            (Some(path), false) => {
                notes.push("without --tls the token is written into the bootstrap and not re-read; a rotated token needs a new bootstrap".to_owned());
                (Some(read_token(path)?), None)
            }
            (None, _) => (None, None),
        };
        Ok((
            EnvoyBootstrap {
                node_id: self.node_id.clone(),
                cluster: self.cluster.clone(),
                xds_addrs: self.xds_addrs.clone(),
                admin_addr: self.admin_addr.clone(),
                delta: self.delta,
                namespace: self.namespace.clone(),
                workload: self.workload.clone(),
                tls: self.tls.clone(),
                token,
                token_path,
                sds_socket: self.sds_socket.as_ref().map(|p| p.display().to_string()),
            },
            notes,
        ))
    }

    /// A proxyless gRPC client's bootstrap, or why there is none (a token
    /// needs TLS: gRPC sends call credentials on secure channels only).
    pub fn grpc(&self) -> Result<GrpcBootstrap, String> {
        let token_path = match (&self.token_file, self.tls.is_some()) {
            (Some(path), true) => Some(token_path(path)?),
            (Some(_), false) => {
                return Err(
                    "--token-file with --grpc needs --tls (gRPC sends call credentials on secure channels only)"
                        .into(),
                );
            }
            (None, _) => None,
        };
        Ok(GrpcBootstrap {
            node_id: self.node_id.clone(),
            cluster: self.cluster.clone(),
            xds_addrs: self.xds_addrs.clone(),
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            tls: self.tls.clone(),
            token_path,
            cert_dir: self.cert_dir.as_ref().map(|p| p.display().to_string()),
        })
    }
}

fn q(s: &str) -> String {
    // JSON strings are YAML strings: quoting this way escapes everything.
    serde_json::Value::String(s.to_owned()).to_string()
}

fn split_host_port(addr: &str) -> (&str, &str) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']'), port),
        None => (addr, "15010"),
    }
}

impl EnvoyBootstrap {
    /// The bootstrap as YAML, for Envoy 1.40 (`envoy -c FILE`).
    pub fn to_yaml(&self) -> String {
        let (admin_host, admin_port) = split_host_port(&self.admin_addr);
        let mut all_ips = true;
        let mut endpoints = String::new();
        for addr in &self.xds_addrs {
            let (host, port) = split_host_port(addr);
            all_ips &= host.parse::<std::net::IpAddr>().is_ok();
            endpoints.push_str(&format!(
                "              - endpoint:\n                  address:\n                    socket_address: {{ address: {}, port_value: {port} }}\n",
                q(host)
            ));
        }
        let discovery = if all_ips { "STATIC" } else { "STRICT_DNS" };
        let api_type = if self.delta { "DELTA_GRPC" } else { "GRPC" };
        let initial_metadata = match &self.token {
            Some(t) => format!(
                "        initial_metadata:\n          - key: authorization\n            value: {}\n",
                q(&format!("Bearer {}", t.trim()))
            ),
            None => String::new(),
        };
        let mut fields = self.workload.fields(self.namespace.as_deref());
        if self.sds_socket.is_some() {
            let (key, value) = crate::identity::WORKLOAD_CERTS;
            fields.insert(key.to_owned(), value.into());
        }
        let metadata = if fields.is_empty() {
            String::new()
        } else {
            format!("  metadata: {}\n", serde_json::Value::Object(fields))
        };
        let grpc_service = match (&self.tls, &self.token_path) {
            (Some(tls), Some(path)) => {
                let first = self.xds_addrs.first().map_or("", |a| split_host_port(a).0);
                let sni = tls.sni.clone().unwrap_or_else(|| first.to_owned());
                // gRPC's own target syntax: several IPv4 replicas as one
                // `ipv4:` list (it fails over between them); otherwise the
                // first address.
                let all_v4 = self
                    .xds_addrs
                    .iter()
                    .all(|a| split_host_port(a).0.parse::<std::net::Ipv4Addr>().is_ok());
                let target = if self.xds_addrs.len() > 1 && all_v4 {
                    format!("ipv4:{}", self.xds_addrs.join(","))
                } else {
                    self.xds_addrs.first().cloned().unwrap_or_default()
                };
                let client_cert = match (&tls.cert, &tls.key) {
                    (Some(cert), Some(key)) => format!(
                        "\n              cert_chain: {{ filename: {} }}\n              private_key: {{ filename: {} }}",
                        q(cert),
                        q(key)
                    ),
                    _ => String::new(),
                };
                format!(
                    r#"      # Google gRPC with TLS, and the bearer token read from {path_comment}
      # for every new stream: a rotated token is used from the next reconnect.
      - google_grpc:
          target_uri: {target}
          stat_prefix: sextant_xds
          credentials_factory_name: envoy.grpc_credentials.file_based_metadata
          channel_credentials:
            ssl_credentials:
              root_certs: {{ filename: {ca} }}{client_cert}
          call_credentials:
            - from_plugin:
                name: envoy.grpc_credentials.file_based_metadata
                typed_config:
                  "@type": type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig
                  secret_data: {{ filename: {path} }}
                  header_key: authorization
                  header_prefix: "Bearer "
          channel_args:
            args:
              grpc.ssl_target_name_override: {{ string_value: {sni} }}
"#,
                    path_comment = path,
                    target = q(&target),
                    ca = q(&tls.ca),
                    path = q(path),
                    sni = q(&sni),
                )
            }
            _ => format!(
                r#"      - envoy_grpc:
          cluster_name: sextant_xds
          # Reconnect soon after a stream breaks (a replica went away),
          # backing off while none answers.
          retry_policy:
            retry_back_off: {{ base_interval: 0.25s, max_interval: 5s }}
{initial_metadata}"#
            ),
        };
        let transport = match &self.tls {
            None => String::new(),
            Some(tls) => {
                let first = self.xds_addrs.first().map_or("", |a| split_host_port(a).0);
                let sni = tls.sni.clone().unwrap_or_else(|| first.to_owned());
                let mut t = format!(
                    r#"      # TLS to Sextant's xDS TLS port: the server's certificate must chain to
      # the CA and name {sni_comment}. Envoy reads these files at start.
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {sni}
          common_tls_context:
            alpn_protocols: [h2]
            validation_context:
              trusted_ca: {{ filename: {ca} }}
              match_typed_subject_alt_names:
                - san_type: {san_type}
                  matcher: {{ exact: {sni} }}
"#,
                    sni_comment = sni,
                    sni = q(&sni),
                    ca = q(&tls.ca),
                    san_type = if sni.parse::<std::net::IpAddr>().is_ok() {
                        "IP_ADDRESS"
                    } else {
                        "DNS"
                    },
                );
                if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                    t.push_str(&format!(
                        "            tls_certificates:\n              - certificate_chain: {{ filename: {} }}\n                private_key: {{ filename: {} }}\n",
                        q(cert),
                        q(key)
                    ));
                }
                t
            }
        };
        let sds = match &self.sds_socket {
            None => String::new(),
            Some(path) => format!(
                r#"    # The agent's SDS socket: the workload certificate and the mesh's root.
    - name: {SDS_CLUSTER}
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: {SDS_CLUSTER}
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    pipe: {{ path: {path} }}
"#,
                path = q(path)
            ),
        };
        format!(
            r#"# Envoy bootstrap generated by `sextant bootstrap`: every listener, route,
# cluster and endpoint comes from Sextant over ADS ({api_type}).
node:
  id: {node}
  cluster: {cluster}
{metadata}admin:
  address:
    socket_address: {{ address: {admin_host}, port_value: {admin_port} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
{grpc_service}  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
    - name: sextant_xds
      type: {discovery}
      connect_timeout: 1s
{transport}      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: sextant_xds
        endpoints:
          - lb_endpoints:
{endpoints}{sds}"#,
            node = q(&self.node_id),
            cluster = q(&self.cluster),
            admin_host = q(admin_host),
        )
    }
}

/// A gRPC xDS bootstrap (`GRPC_XDS_BOOTSTRAP=FILE`) for proxyless clients.
#[derive(Clone, Debug, Default)]
pub struct GrpcBootstrap {
    /// The node id the client reports.
    pub node_id: String,
    /// The node's cluster.
    pub cluster: String,
    /// Sextant's xDS addresses, `HOST:PORT` each: the first is the
    /// client's server, the others its fallbacks (gRFC A71) when it cannot
    /// reach the first.
    pub xds_addrs: Vec<String>,
    /// The namespace the node claims (node metadata `NAMESPACE`).
    pub namespace: Option<String>,
    /// The workload's labels, instance IPs and interception mode.
    pub workload: Workload,
    /// TLS to the xDS port (gRFC A65 `tls` channel credentials, whose
    /// files the client re-reads); `None` is plaintext. The server name is
    /// the address's host: gRPC has no SNI override here.
    pub tls: Option<ClientTls>,
    /// A file holding a JWT sent as a bearer token with every call to the
    /// xDS server (gRFC A97 `jwt_token_file` call credentials, re-read
    /// when the token expires). Needs `tls`; clients implementing A97 read
    /// it (grpcio 1.85 with `GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true`).
    pub token_path: Option<String>,
    /// The directory of the agent's certificate files: a `file_watcher`
    /// certificate provider named [`GRPC_CERT_PROVIDER`] reads them (for
    /// mutual TLS between proxyless clients and sidecars).
    pub cert_dir: Option<String>,
}

impl GrpcBootstrap {
    /// The bootstrap as JSON.
    pub fn to_json(&self) -> String {
        let servers: Vec<serde_json::Value> = self
            .xds_addrs
            .iter()
            .map(|addr| {
                let creds = match &self.tls {
                    None => serde_json::json!({ "type": "insecure" }),
                    Some(tls) => {
                        let mut config = serde_json::json!({ "ca_certificate_file": tls.ca });
                        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                            config["certificate_file"] = cert.clone().into();
                            config["private_key_file"] = key.clone().into();
                        }
                        serde_json::json!({ "type": "tls", "config": config })
                    }
                };
                let mut server = serde_json::json!({
                    "server_uri": addr,
                    "channel_creds": [creds],
                    "server_features": ["xds_v3"],
                });
                if let Some(path) = &self.token_path {
                    server["call_creds"] = serde_json::json!([
                        { "type": "jwt_token_file", "config": { "jwt_token_file": path } }
                    ]);
                }
                server
            })
            .collect();
        let mut value = serde_json::json!({
            "xds_servers": servers,
            "node": {
                "id": self.node_id,
                "cluster": self.cluster,
                "locality": {},
            },
        });
        let mut fields = self.workload.fields(self.namespace.as_deref());
        if self.cert_dir.is_some() {
            fields.insert(
                crate::identity::WORKLOAD_CERTS.0.to_owned(),
                crate::identity::WORKLOAD_CERT_FILES.into(),
            );
        }
        if !fields.is_empty() {
            value["node"]["metadata"] = serde_json::Value::Object(fields);
        }
        if let Some(dir) = &self.cert_dir {
            let file = |name: &str| Path::new(dir).join(name).display().to_string();
            value["certificate_providers"] = serde_json::json!({
                GRPC_CERT_PROVIDER: {
                    "plugin_name": "file_watcher",
                    "config": {
                        "certificate_file": file("cert-chain.pem"),
                        "private_key_file": file("key.pem"),
                        "ca_certificate_file": file("root-cert.pem"),
                        "refresh_interval": "60s",
                    },
                },
            });
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_certificates_are_named_in_both_bootstraps() {
        let spec = Spec {
            node_id: "n".into(),
            xds_addrs: vec!["127.0.0.1:15012".into()],
            admin_addr: "127.0.0.1:0".into(),
            sds_socket: Some("/etc/sextant/proxy/sds.sock".into()),
            cert_dir: Some("/etc/sextant/proxy/certs".into()),
            ..Default::default()
        };
        let (envoy, _) = spec.envoy().expect("envoy");
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&envoy.to_yaml()).expect("yaml");
        let sds = &v["static_resources"]["clusters"][1];
        assert_eq!(sds["name"].as_str(), Some(SDS_CLUSTER));
        assert_eq!(
            sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
                ["path"]
                .as_str(),
            Some("/etc/sextant/proxy/sds.sock")
        );
        let grpc: serde_json::Value =
            serde_json::from_str(&spec.grpc().expect("grpc").to_json()).expect("json");
        let provider = &grpc["certificate_providers"][GRPC_CERT_PROVIDER];
        assert_eq!(provider["plugin_name"], "file_watcher");
        assert_eq!(
            provider["config"]["private_key_file"],
            "/etc/sextant/proxy/certs/key.pem"
        );
        // The node says it holds them, so that ISTIO_MUTUAL is served to it.
        assert_eq!(grpc["node"]["metadata"]["WORKLOAD_CERTS"], "files");
        let none = Spec {
            sds_socket: None,
            cert_dir: None,
            ..spec
        };
        let (envoy, _) = none.envoy().expect("envoy");
        assert!(!envoy.to_yaml().contains(SDS_CLUSTER));
        assert!(
            !none
                .grpc()
                .expect("grpc")
                .to_json()
                .contains("certificate_providers")
        );
        assert!(
            !none
                .grpc()
                .expect("grpc")
                .to_json()
                .contains("WORKLOAD_CERTS")
        );
    }

    #[test]
    fn envoy_bootstrap_is_valid_yaml_with_the_right_shape() {
        let b = EnvoyBootstrap {
            node_id: "node \"1\"".into(),
            cluster: "c".into(),
            xds_addrs: vec!["127.0.0.1:15010".into()],
            admin_addr: "127.0.0.1:0".into(),
            delta: true,
            ..Default::default()
        };
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&b.to_yaml()).expect("yaml");
        assert_eq!(v["node"]["id"].as_str(), Some("node \"1\""));
        assert_eq!(
            v["dynamic_resources"]["ads_config"]["api_type"].as_str(),
            Some("DELTA_GRPC")
        );
        let cluster = &v["static_resources"]["clusters"][0];
        assert_eq!(cluster["type"].as_str(), Some("STATIC"));
        let sa = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(sa["address"].as_str(), Some("127.0.0.1"));
        assert_eq!(sa["port_value"].as_u64(), Some(15010));

        let by_name = EnvoyBootstrap {
            xds_addrs: vec!["sextant.mesh.svc:15010".into()],
            delta: false,
            ..b.clone()
        };
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&by_name.to_yaml()).expect("yaml");
        assert_eq!(
            v["static_resources"]["clusters"][0]["type"].as_str(),
            Some("STRICT_DNS")
        );
        assert_eq!(
            v["dynamic_resources"]["ads_config"]["api_type"].as_str(),
            Some("GRPC")
        );

        // Replicas: one endpoint each.
        let replicas = EnvoyBootstrap {
            xds_addrs: vec!["127.0.0.1:15010".into(), "127.0.0.2:15010".into()],
            ..b
        };
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&replicas.to_yaml()).expect("yaml");
        let endpoints = &v["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"];
        let hosts: Vec<&str> = endpoints
            .as_sequence()
            .expect("list")
            .iter()
            .filter_map(|e| e["endpoint"]["address"]["socket_address"]["address"].as_str())
            .collect();
        assert_eq!(hosts, ["127.0.0.1", "127.0.0.2"]);
    }

    #[test]
    fn grpc_bootstrap_has_the_fields_clients_need() {
        let b = GrpcBootstrap {
            node_id: "n".into(),
            cluster: "c".into(),
            xds_addrs: vec!["127.0.0.1:15010".into()],
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_str(&b.to_json()).expect("json");
        assert_eq!(v["xds_servers"][0]["server_uri"], "127.0.0.1:15010");
        assert_eq!(v["xds_servers"][0]["server_features"][0], "xds_v3");
        assert_eq!(v["node"]["id"], "n");
        assert_eq!(v["xds_servers"][0]["channel_creds"][0]["type"], "insecure");

        let tls = GrpcBootstrap {
            namespace: Some("shop".into()),
            tls: Some(ClientTls {
                ca: "/ca.pem".into(),
                cert: Some("/c.pem".into()),
                key: Some("/k.pem".into()),
                sni: None,
            }),
            ..b
        };
        let v: serde_json::Value = serde_json::from_str(&tls.to_json()).expect("json");
        let creds = &v["xds_servers"][0]["channel_creds"][0];
        assert_eq!(creds["type"], "tls");
        assert_eq!(creds["config"]["ca_certificate_file"], "/ca.pem");
        assert_eq!(creds["config"]["certificate_file"], "/c.pem");
        assert_eq!(v["node"]["metadata"]["NAMESPACE"], "shop");
    }

    #[test]
    fn envoy_bootstrap_with_tls_checks_the_server_name_and_sends_a_certificate() {
        let b = EnvoyBootstrap {
            node_id: "n".into(),
            cluster: "c".into(),
            xds_addrs: vec!["sextant.mesh.svc:15012".into()],
            admin_addr: "127.0.0.1:0".into(),
            namespace: Some("shop".into()),
            tls: Some(ClientTls {
                ca: "/etc/sextant/ca.pem".into(),
                cert: Some("/c.pem".into()),
                key: Some("/k.pem".into()),
                sni: None,
            }),
            ..Default::default()
        };
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&b.to_yaml()).expect("yaml");
        assert_eq!(v["node"]["metadata"]["NAMESPACE"].as_str(), Some("shop"));
        let ctx = &v["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert_eq!(ctx["sni"].as_str(), Some("sextant.mesh.svc"));
        let common = &ctx["common_tls_context"];
        assert_eq!(
            common["validation_context"]["trusted_ca"]["filename"].as_str(),
            Some("/etc/sextant/ca.pem")
        );
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"][0]["san_type"].as_str(),
            Some("DNS")
        );
        assert_eq!(
            common["tls_certificates"][0]["private_key"]["filename"].as_str(),
            Some("/k.pem")
        );

        // A token file with TLS: Google gRPC reading it for every stream.
        let with_token = EnvoyBootstrap {
            token_path: Some("/var/run/secrets/tokens/sextant".into()),
            xds_addrs: vec!["10.0.0.1:15012".into(), "10.0.0.2:15012".into()],
            ..b
        };
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&with_token.to_yaml()).expect("yaml");
        let g = &v["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"];
        assert_eq!(
            g["target_uri"].as_str(),
            Some("ipv4:10.0.0.1:15012,10.0.0.2:15012")
        );
        assert_eq!(
            g["credentials_factory_name"].as_str(),
            Some("envoy.grpc_credentials.file_based_metadata")
        );
        let plugin = &g["call_credentials"][0]["from_plugin"]["typed_config"];
        assert_eq!(
            plugin["secret_data"]["filename"].as_str(),
            Some("/var/run/secrets/tokens/sextant")
        );
        assert_eq!(plugin["header_prefix"].as_str(), Some("Bearer "));
        assert_eq!(
            g["channel_credentials"]["ssl_credentials"]["private_key"]["filename"].as_str(),
            Some("/k.pem")
        );
        assert_eq!(
            g["channel_args"]["args"]["grpc.ssl_target_name_override"]["string_value"].as_str(),
            Some("10.0.0.1")
        );
    }
}
