//! Settings from flags, `SEXTANT_*` variables and an optional YAML file
//! (flags and variables win), validated with every problem reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sextant_aggregate::{AggregatorConfig, MergeMode};
use sextant_consul::{ConsulConfig, ConsulRegistry};
use sextant_core::Registry;
use sextant_etcd::{EtcdConfig, EtcdRegistry, EtcdTls};
use sextant_file::{FileRegistry, FileRegistryConfig, Loader};
use sextant_k8s::{K8sConfig, K8sRegistry};
use sextant_xds::{Debounce, ServerConfig, TranslateOptions};

/// How to reach etcd: flags shared by the etcd registry and `sextant etcd register`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct EtcdArgs {
    /// etcd client URLs [default: http://127.0.0.1:2379].
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URL,..."
    )]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Prefix of Sextant's keys in etcd [default: /sextant/].
    #[arg(long, env = "SEXTANT_ETCD_PREFIX", value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Also read grpc-go naming-convention keys (SERVICE/ADDR) under this prefix.
    #[arg(long, env = "SEXTANT_ETCD_NAMING_PREFIX", value_name = "PREFIX")]
    pub etcd_naming_prefix: Option<String>,
    /// etcd user name.
    #[arg(long, env = "SEXTANT_ETCD_USERNAME", value_name = "NAME")]
    pub etcd_username: Option<String>,
    /// etcd password.
    #[arg(
        long,
        env = "SEXTANT_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
    /// CA certificate (PEM) for https etcd URLs.
    #[arg(long, env = "SEXTANT_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM), with --etcd-key.
    #[arg(long, env = "SEXTANT_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM), with --etcd-cert.
    #[arg(long, env = "SEXTANT_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    /// The etcd settings, flags over the file's, with every problem.
    fn resolve(&self, file: &EtcdFile, c: &mut Collector) -> EtcdConfig {
        let mut config = EtcdConfig::default();
        if let Some((e, from_flag)) = either(&self.etcd_endpoints, &file.endpoints) {
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
        if let Some(p) = self.etcd_prefix.clone().or_else(|| file.prefix.clone()) {
            config.prefix = p;
        }
        config.naming_prefix = self
            .etcd_naming_prefix
            .clone()
            .or_else(|| file.naming_prefix.clone());
        let user = either(&self.etcd_username, &file.username);
        let password = either(&self.etcd_password, &file.password);
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
        let cert = either(&self.etcd_cert, &file.cert);
        let key = either(&self.etcd_key, &file.key);
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
            ca: self.etcd_ca.clone().or_else(|| file.ca.clone()),
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
        let config = self.resolve(&EtcdFile::default(), &mut c);
        if c.problems.is_empty() {
            Ok(config)
        } else {
            Err(Problems(c.problems))
        }
    }
}

/// Consul registry flags; the environment variables are Consul's own.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ConsulArgs {
    /// Consul agent address [default: http://127.0.0.1:8500].
    #[arg(long, env = "CONSUL_HTTP_ADDR", value_name = "URL")]
    pub consul_addr: Option<String>,
    /// ACL token, sent as X-Consul-Token.
    #[arg(
        long,
        env = "CONSUL_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub consul_token: Option<String>,
    /// Datacenter to read [default: the agent's].
    #[arg(long, env = "SEXTANT_CONSUL_DATACENTER", value_name = "DC")]
    pub consul_datacenter: Option<String>,
    /// CA certificate (PEM) for an https agent.
    #[arg(long, env = "CONSUL_CACERT", value_name = "FILE")]
    pub consul_cacert: Option<PathBuf>,
    /// Client certificate (PEM), with --consul-client-key.
    #[arg(long, env = "CONSUL_CLIENT_CERT", value_name = "FILE")]
    pub consul_client_cert: Option<PathBuf>,
    /// Client key (PEM), with --consul-client-cert.
    #[arg(long, env = "CONSUL_CLIENT_KEY", value_name = "FILE")]
    pub consul_client_key: Option<PathBuf>,
    /// Hostname of a Consul service; {service} is its lowercased name
    /// [default: {service}.service.consul].
    #[arg(
        long,
        env = "SEXTANT_CONSUL_HOSTNAME_TEMPLATE",
        value_name = "TEMPLATE"
    )]
    pub consul_hostname_template: Option<String>,
    /// Treat instances with a warning check as unhealthy (default: healthy).
    #[arg(long, env = "SEXTANT_CONSUL_WARNING_UNHEALTHY")]
    pub consul_warning_unhealthy: bool,
    /// Include connect-proxy and gateway instances.
    #[arg(long, env = "SEXTANT_CONSUL_INCLUDE_GATEWAYS")]
    pub consul_include_gateways: bool,
    /// Node-meta key whose value is the endpoints' zone.
    #[arg(long, env = "SEXTANT_CONSUL_ZONE_META_KEY", value_name = "KEY")]
    pub consul_zone_meta_key: Option<String>,
}

/// The `consul:` section of the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsulFile {
    addr: Option<String>,
    token: Option<String>,
    datacenter: Option<String>,
    cacert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    hostname_template: Option<String>,
    warning_unhealthy: Option<bool>,
    include_gateways: Option<bool>,
    zone_meta_key: Option<String>,
}

impl ConsulArgs {
    fn resolve(&self, file: &ConsulFile, col: &mut Collector) -> ConsulConfig {
        let mut c = ConsulConfig::default();
        if let Some((a, from_flag)) = either(&self.consul_addr, &file.addr) {
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
        c.token = self.consul_token.clone().or_else(|| file.token.clone());
        c.datacenter = self
            .consul_datacenter
            .clone()
            .or_else(|| file.datacenter.clone());
        c.ca = self.consul_cacert.clone().or_else(|| file.cacert.clone());
        let cert = either(&self.consul_client_cert, &file.client_cert);
        let key = either(&self.consul_client_key, &file.client_key);
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
        if let Some((t, from_flag)) =
            either(&self.consul_hostname_template, &file.hostname_template)
        {
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
            !(self.consul_warning_unhealthy || file.warning_unhealthy.unwrap_or(false));
        c.mapping.include_gateways =
            self.consul_include_gateways || file.include_gateways.unwrap_or(false);
        c.mapping.zone_meta_key = self
            .consul_zone_meta_key
            .clone()
            .or_else(|| file.zone_meta_key.clone());
        c
    }
}

/// Kubernetes registry flags. Without --kubeconfig, the client reads
/// `KUBECONFIG` (a colon-separated list, as kubectl does), then
/// `~/.kube/config`, then the in-cluster service account.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct K8sArgs {
    /// Kubeconfig file [default: KUBECONFIG, ~/.kube/config, in-cluster].
    #[arg(long, env = "SEXTANT_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig contexts; each is its own cluster and registry, merged by
    /// hostname [default: the current context].
    #[arg(
        long,
        env = "SEXTANT_K8S_CONTEXT",
        value_delimiter = ',',
        value_name = "NAME,..."
    )]
    pub k8s_context: Option<Vec<String>>,
    /// Cluster ids, one per context; the registry is k8s/ID
    /// [default: Kubernetes, or the context names when there are several].
    #[arg(
        long,
        env = "SEXTANT_K8S_CLUSTER_ID",
        value_delimiter = ',',
        value_name = "ID,..."
    )]
    pub k8s_cluster_id: Option<Vec<String>>,
    /// Namespaces to watch [default: all].
    #[arg(
        long,
        env = "SEXTANT_K8S_NAMESPACES",
        value_delimiter = ',',
        value_name = "NS,..."
    )]
    pub k8s_namespaces: Option<Vec<String>>,
    /// Only Services matching this label selector, e.g. `mesh=on`.
    #[arg(long, env = "SEXTANT_K8S_LABEL_SELECTOR", value_name = "SELECTOR")]
    pub k8s_label_selector: Option<String>,
    /// The clusters' DNS domain [default: cluster.local].
    #[arg(long, env = "SEXTANT_CLUSTER_DOMAIN", value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// Do not read Nodes (no RBAC on nodes needed; endpoints get only
    /// their slice's zone, no region).
    #[arg(long, env = "SEXTANT_K8S_SKIP_NODES")]
    pub k8s_skip_nodes: bool,
}

/// The `k8s:` section of the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct K8sFile {
    kubeconfig: Option<PathBuf>,
    contexts: Option<Vec<String>>,
    cluster_ids: Option<Vec<String>>,
    namespaces: Option<Vec<String>>,
    label_selector: Option<String>,
    cluster_domain: Option<String>,
    skip_nodes: Option<bool>,
}

impl K8sArgs {
    /// One configuration per cluster.
    fn resolve(&self, file: &K8sFile, c: &mut Collector) -> Vec<K8sConfig> {
        let kubeconfig = either(&self.kubeconfig, &file.kubeconfig);
        if let Some((path, from_flag)) = &kubeconfig
            && !path.is_file()
        {
            c.bad_flag(
                "k8s.kubeconfig",
                "--kubeconfig",
                *from_flag,
                format!("{} does not exist or is not a file", path.display()),
            );
        }
        let mut base = K8sConfig {
            kubeconfig: kubeconfig.map(|(p, _)| p),
            ..Default::default()
        };
        let pick =
            |flag: &Option<Vec<String>>, file: &Option<Vec<String>>| -> (Vec<String>, bool) {
                let (list, from_flag) = either(flag, file).unwrap_or_default();
                let list = list
                    .into_iter()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                (list, from_flag)
            };
        let from_flag;
        (base.namespaces, from_flag) = pick(&self.k8s_namespaces, &file.namespaces);
        for ns in &base.namespaces {
            if let Some(p) = sextant_core::validate::dns_name_problem(ns).or_else(|| {
                ns.contains('.')
                    .then(|| "a namespace is one DNS label".to_owned())
            }) {
                c.bad("k8s.namespaces", from_flag, format!("{ns:?}: {p}"));
            }
        }
        base.label_selector = self
            .k8s_label_selector
            .clone()
            .or_else(|| file.label_selector.clone())
            .filter(|s| !s.trim().is_empty());
        if let Some((domain, from_flag)) = either(&self.cluster_domain, &file.cluster_domain) {
            let domain = domain.trim_end_matches('.').to_owned();
            if let Some(p) = sextant_core::validate::dns_name_problem(&domain) {
                c.bad_flag(
                    "k8s.cluster_domain",
                    "--cluster-domain",
                    from_flag,
                    format!("{domain:?}: {p}"),
                );
            }
            base.mapping.cluster_domain = domain;
        }
        base.watch_nodes = !(self.k8s_skip_nodes || file.skip_nodes.unwrap_or(false));

        let (contexts, _) = pick(&self.k8s_context, &file.contexts);
        let (ids, ids_from_flag) = pick(&self.k8s_cluster_id, &file.cluster_ids);
        let clusters: Vec<(Option<String>, String)> = match (contexts.len(), ids.len()) {
            (0, 0) => vec![(None, "Kubernetes".into())],
            (0, 1) => vec![(None, ids[0].clone())],
            (n, 0) if n > 1 => contexts
                .iter()
                .map(|c| (Some(c.clone()), c.clone()))
                .collect(),
            (1, 0) => vec![(Some(contexts[0].clone()), "Kubernetes".into())],
            (n, m) if n == m => contexts
                .iter()
                .cloned()
                .map(Some)
                .zip(ids.iter().cloned())
                .collect(),
            (n, m) => {
                c.bad_flag(
                    "k8s.cluster_ids",
                    "--k8s-cluster-id",
                    ids_from_flag,
                    format!("{m} ids for {} contexts; give one id per context", n.max(1)),
                );
                Vec::new()
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for (_, id) in &clusters {
            if id.contains('/') || id.chars().any(char::is_whitespace) {
                c.bad_flag(
                    "k8s.cluster_ids",
                    "--k8s-cluster-id",
                    ids_from_flag,
                    format!("{id:?} must not contain '/' or spaces"),
                );
            } else if !seen.insert(id.clone()) {
                c.bad_flag(
                    "k8s.cluster_ids",
                    "--k8s-cluster-id",
                    ids_from_flag,
                    format!("{id:?} is used twice"),
                );
            }
        }
        clusters
            .into_iter()
            .map(|(context, cluster_id)| K8sConfig {
                context,
                cluster_id,
                ..base.clone()
            })
            .collect()
    }
}

/// True unless `url` is `http://` or `https://` followed by a host.
fn not_an_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_none_or(|r| r.trim_start_matches('/').is_empty())
}

/// The `etcd:` section of the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EtcdFile {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    naming_prefix: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The flags of `sextant` and `sextant check-config`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct RunArgs {
    /// Settings file (YAML, same names as the flags with `_`); flags and
    /// SEXTANT_* variables override it.
    #[arg(long, env = "SEXTANT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Registries in priority order (the first one's port definitions win):
    /// file, etcd, consul, k8s. Default: file when --file is given.
    #[arg(
        long,
        env = "SEXTANT_REGISTRIES",
        value_delimiter = ',',
        value_name = "KIND,..."
    )]
    pub registries: Option<Vec<String>>,
    /// Registry file or directory of them (repeatable, or comma-separated).
    #[arg(
        long = "file",
        env = "SEXTANT_FILE",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub files: Vec<PathBuf>,
    /// Where proxies connect for xDS [default: 127.0.0.1:15010].
    #[arg(long, env = "SEXTANT_XDS_ADDR", value_name = "ADDR")]
    pub xds_addr: Option<SocketAddr>,
    /// Admin HTTP: health, metrics, debug [default: 127.0.0.1:15014].
    #[arg(long, env = "SEXTANT_ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// xDS connections open at once; more are refused [default: the
    /// open-file limit less 256].
    #[arg(long, env = "SEXTANT_XDS_MAX_CONNECTIONS", value_name = "N")]
    pub xds_max_connections: Option<usize>,
    /// The largest xDS request accepted, e.g. 4MiB [default: 4MiB].
    #[arg(long, env = "SEXTANT_XDS_MAX_REQUEST_SIZE", value_name = "SIZE")]
    pub xds_max_request_size: Option<String>,
    /// How long a new xDS connection has to start HTTP/2 [default: 10s].
    #[arg(long, env = "SEXTANT_XDS_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub xds_handshake_timeout: Option<String>,
    /// The outbound HTTP listener handed to proxies [default: 127.0.0.1:15001].
    #[arg(long, env = "SEXTANT_OUTBOUND_ADDR", value_name = "ADDR")]
    pub outbound_addr: Option<SocketAddr>,
    /// Same hostname in several registries: union of endpoints, or the first
    /// registry wins [default: union].
    #[arg(long, env = "SEXTANT_MERGE", value_name = "union|first")]
    pub merge: Option<String>,
    /// Drop an unreachable registry's endpoints after this long [default: never].
    #[arg(long, env = "SEXTANT_MAX_STALE", value_name = "DURATION")]
    pub max_stale: Option<String>,
    /// Serve what is known if a registry has not synced by then [default: 30s].
    #[arg(long, env = "SEXTANT_STARTUP_TIMEOUT", value_name = "DURATION")]
    pub startup_timeout: Option<String>,
    /// Quiet time before pushing endpoint-only changes [default: 10ms].
    #[arg(long, env = "SEXTANT_DEBOUNCE_ENDPOINTS", value_name = "DURATION")]
    pub debounce_endpoints: Option<String>,
    /// Quiet time before pushing other changes [default: 100ms].
    #[arg(long, env = "SEXTANT_DEBOUNCE_CONFIG", value_name = "DURATION")]
    pub debounce_config: Option<String>,
    /// Push at most this long after the first change of a batch [default: 1s].
    #[arg(long, env = "SEXTANT_DEBOUNCE_MAX", value_name = "DURATION")]
    pub debounce_max: Option<String>,
    /// On SIGTERM, wait this long for streams to close [default: 5s].
    #[arg(long, env = "SEXTANT_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Log levels per scope, Pilot's syntax: default:info,xds:debug.
    /// Scopes: default, core, aggregate, xds, file, etcd, consul, k8s, admin.
    /// RUST_LOG, when
    /// set, replaces this [default: default:info].
    #[arg(long, env = "SEXTANT_LOG_OUTPUT_LEVEL", value_name = "SCOPE:LEVEL,...")]
    pub log_output_level: Option<String>,
    /// etcd registry settings.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Consul registry settings.
    #[command(flatten)]
    pub consul: ConsulArgs,
    /// Kubernetes registry settings.
    #[command(flatten)]
    pub k8s: K8sArgs,
}

impl ConfigFile {
    /// Makes every relative path in the file relative to the file's
    /// directory, as the README promises (flags and environment variables
    /// stay relative to the working directory).
    fn rebase(&mut self, base: &Path) {
        let mut paths: Vec<&mut PathBuf> = self.files.iter_mut().flatten().collect();
        if let Some(e) = &mut self.etcd {
            paths.extend([&mut e.ca, &mut e.cert, &mut e.key].into_iter().flatten());
        }
        if let Some(c) = &mut self.consul {
            paths.extend(
                [&mut c.cacert, &mut c.client_cert, &mut c.client_key]
                    .into_iter()
                    .flatten(),
            );
        }
        if let Some(k) = &mut self.k8s {
            paths.extend(k.kubeconfig.as_mut());
        }
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// The settings file. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    registries: Option<Vec<String>>,
    files: Option<Vec<PathBuf>>,
    xds_addr: Option<String>,
    admin_addr: Option<String>,
    xds_max_connections: Option<usize>,
    xds_max_request_size: Option<String>,
    xds_handshake_timeout: Option<String>,
    outbound_addr: Option<String>,
    merge: Option<String>,
    max_stale: Option<String>,
    startup_timeout: Option<String>,
    drain_timeout: Option<String>,
    debounce: Option<DebounceFile>,
    log_output_level: Option<String>,
    etcd: Option<EtcdFile>,
    consul: Option<ConsulFile>,
    k8s: Option<K8sFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DebounceFile {
    endpoints: Option<String>,
    config: Option<String>,
    max: Option<String>,
}

/// A registry kind `--registries` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryKind {
    /// YAML/JSON files.
    File,
    /// etcd.
    Etcd,
    /// Consul.
    Consul,
    /// Kubernetes.
    Kubernetes,
}

/// Every kind, with its name on the command line.
pub const KINDS: [(&str, RegistryKind); 4] = [
    ("file", RegistryKind::File),
    ("etcd", RegistryKind::Etcd),
    ("consul", RegistryKind::Consul),
    ("k8s", RegistryKind::Kubernetes),
];

impl std::str::FromStr for RegistryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let s = if s == "kubernetes" { "k8s" } else { s };
        KINDS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                let known: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown registry kind {s:?}; known kinds: {}",
                    known.join(", ")
                )
            })
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Registries in priority order.
    pub registries: Vec<RegistryKind>,
    /// Files and directories of the file registry.
    pub files: Vec<PathBuf>,
    /// xDS listen address.
    pub xds_addr: SocketAddr,
    /// Admin listen address.
    pub admin_addr: SocketAddr,
    /// The ADS server's bounds.
    pub server: ServerConfig,
    /// Aggregator settings.
    pub aggregator: AggregatorConfig,
    /// Translation settings.
    pub translate: TranslateOptions,
    /// Coalescing.
    pub debounce: Debounce,
    /// Graceful shutdown bound.
    pub drain_timeout: Duration,
    /// Log level specification.
    pub log_output_level: String,
    /// The etcd registry's settings.
    pub etcd: EtcdConfig,
    /// The Consul registry's settings.
    pub consul: ConsulConfig,
    /// One Kubernetes registry per cluster.
    pub k8s: Vec<K8sConfig>,
}

/// Every problem found, each naming where it is.
#[derive(Debug)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            writeln!(f, "error: {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The value of a setting and whether it came from the flag (which wins)
/// rather than the file.
fn either<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<(T, bool)> {
    match (flag, file) {
        (Some(v), _) => Some((v.clone(), true)),
        (None, Some(v)) => Some((v.clone(), false)),
        (None, None) => None,
    }
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// True if `line` writes `key:` as a key: at its start, or inside a flow
/// mapping (`{ key: ...`, `, key: ...`).
fn has_key(line: &str, key: &str) -> bool {
    let k = format!("{key}:");
    line.trim_start().starts_with(&k)
        || ["{", ","]
            .iter()
            .any(|sep| line.contains(&format!("{sep}{k}")) || line.contains(&format!("{sep} {k}")))
}

/// The 1-based line where `key` is written in `text`, or 0. A dotted key
/// (`debounce.endpoints`) is looked for inside its section, in block or
/// flow style; when the inner key is not written there, the section's line.
fn key_line(text: &str, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut parts = key.split('.');
    let Some(first) = parts.next() else {
        return 0;
    };
    let Some(mut at) = lines
        .iter()
        .position(|l| indentation(l) == 0 && l.starts_with(&format!("{first}:")))
    else {
        return 0;
    };
    for part in parts {
        if has_key(
            &lines[at][indentation(lines[at])..].replacen(':', " ", 1),
            part,
        ) {
            continue;
        }
        let indent = indentation(lines[at]);
        let inside = lines[at + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indentation(l) > indent)
            .position(|l| has_key(l, part));
        match inside {
            Some(i) => at += 1 + i,
            None => break,
        }
    }
    at + 1
}

struct Collector<'a> {
    problems: Vec<String>,
    file: Option<(&'a Path, &'a str)>,
}

impl Collector<'_> {
    /// Reports a problem with a value from a flag or the file. `key` is the
    /// file's key (dotted inside a section: `etcd.endpoints`); the flag is
    /// named after it (`--etcd-endpoints`).
    fn bad(&mut self, key: &str, from_flag: bool, message: String) {
        let flag = format!("--{}", key.replace(['.', '_'], "-"));
        self.bad_flag(key, &flag, from_flag, message);
    }

    /// [`Collector::bad`] for a setting whose flag is named otherwise.
    fn bad_flag(&mut self, key: &str, flag: &str, from_flag: bool, message: String) {
        match (from_flag, self.file) {
            (false, Some((path, text))) => self.problems.push(format!(
                "{}:{}: {key}: {message}",
                path.display(),
                key_line(text, key)
            )),
            _ => self.problems.push(format!("{flag}: {message}")),
        }
    }

    fn duration(
        &mut self,
        key: &str,
        flag: &Option<String>,
        file: &Option<String>,
    ) -> Option<Duration> {
        let (value, from_flag) = match (flag, file) {
            (Some(v), _) => (v, true),
            (None, Some(v)) => (v, false),
            (None, None) => return None,
        };
        match humantime::parse_duration(value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.bad(
                    key,
                    from_flag,
                    format!("{value:?} is not a duration ({e}); write e.g. 100ms, 30s, 5m"),
                );
                None
            }
        }
    }

    /// A size in bytes: a number, optionally with KiB, MiB or GiB.
    fn size(&mut self, key: &str, flag: &Option<String>, file: &Option<String>) -> Option<usize> {
        let (value, from_flag) = match (flag, file) {
            (Some(v), _) => (v, true),
            (None, Some(v)) => (v, false),
            (None, None) => return None,
        };
        let v = value.trim();
        let (digits, unit) = v
            .find(|c: char| !c.is_ascii_digit())
            .map_or((v, ""), |i| v.split_at(i));
        let scale: Option<usize> = match unit.trim() {
            "" | "B" => Some(1),
            "KiB" => Some(1 << 10),
            "MiB" => Some(1 << 20),
            "GiB" => Some(1 << 30),
            _ => None,
        };
        match (digits.parse::<usize>(), scale) {
            (Ok(n), Some(scale)) if n > 0 => n.checked_mul(scale),
            _ => {
                self.bad(
                    key,
                    from_flag,
                    format!("{value:?} is not a size; write e.g. 4194304, 512KiB, 4MiB"),
                );
                None
            }
        }
    }

    fn addr(
        &mut self,
        key: &str,
        flag: Option<SocketAddr>,
        file: &Option<String>,
    ) -> Option<SocketAddr> {
        if flag.is_some() {
            return flag;
        }
        let value = file.as_ref()?;
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(
                    key,
                    false,
                    format!("{value:?} is not an address; write IP:PORT, e.g. 127.0.0.1:15010"),
                );
                None
            }
        }
    }
}

impl Settings {
    /// Merges flags over the config file over defaults, and validates.
    pub fn resolve(args: &RunArgs) -> Result<Settings, Problems> {
        let mut text = String::new();
        let mut file = ConfigFile::default();
        let mut problems = Vec::new();
        let base = args
            .config
            .as_ref()
            .and_then(|p| p.parent())
            .map(Path::to_owned)
            .unwrap_or_default();
        if let Some(path) = &args.config {
            match std::fs::read_to_string(path) {
                Err(e) => problems.push(format!("{}: cannot read: {e}", path.display())),
                Ok(t) => {
                    text = t;
                    if !text.trim().is_empty() {
                        match serde_yaml_ng::from_str::<ConfigFile>(&text) {
                            Ok(mut f) => {
                                f.rebase(&base);
                                file = f;
                            }
                            Err(e) => {
                                let (line, col) =
                                    e.location().map_or((0, 0), |l| (l.line(), l.column()));
                                let msg = e.to_string();
                                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                                problems.push(format!("{}:{line}:{col}: {msg}", path.display()));
                            }
                        }
                    }
                }
            }
        }
        let mut c = Collector {
            problems,
            file: args.config.as_deref().map(|p| (p, text.as_str())),
        };

        let files: Vec<PathBuf> = if !args.files.is_empty() {
            args.files.clone()
        } else {
            file.files.clone().unwrap_or_default()
        };
        let (kinds, kinds_from_flag) = match (&args.registries, &file.registries) {
            (Some(k), _) => (Some(k.clone()), true),
            (None, Some(k)) => (Some(k.clone()), false),
            (None, None) => (None, true),
        };
        let mut registries = Vec::new();
        match kinds {
            Some(kinds) => {
                for k in kinds.iter().filter(|k| !k.trim().is_empty()) {
                    match k.parse::<RegistryKind>() {
                        Ok(kind) if registries.contains(&kind) => c.bad("registries", kinds_from_flag, format!("{k:?} is listed twice")),
                        Ok(kind) => registries.push(kind),
                        Err(e) => c.bad("registries", kinds_from_flag, e),
                    }
                }
            }
            None if !files.is_empty() => registries.push(RegistryKind::File),
            None => c.problems.push(
                "nothing to serve: pass --file PATH (try examples/laptop/mesh.yaml) or --registries KIND,...".into(),
            ),
        }
        if registries.contains(&RegistryKind::File) && files.is_empty() {
            c.problems
                .push("the file registry needs at least one --file PATH".into());
        }

        let xds_addr = c
            .addr("xds_addr", args.xds_addr, &file.xds_addr)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 15010)));
        let admin_addr = c
            .addr("admin_addr", args.admin_addr, &file.admin_addr)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 15014)));
        let outbound_addr = c
            .addr("outbound_addr", args.outbound_addr, &file.outbound_addr)
            .unwrap_or(TranslateOptions::default().outbound_addr);

        let mut aggregator = AggregatorConfig::default();
        let merge = args
            .merge
            .clone()
            .map(|m| (m, true))
            .or_else(|| file.merge.clone().map(|m| (m, false)));
        if let Some((m, from_flag)) = merge {
            match m.parse::<MergeMode>() {
                Ok(mode) => aggregator.merge = mode,
                Err(e) => c.bad("merge", from_flag, e),
            }
        }
        aggregator.max_stale = c.duration("max_stale", &args.max_stale, &file.max_stale);
        if let Some(d) = c.duration(
            "startup_timeout",
            &args.startup_timeout,
            &file.startup_timeout,
        ) {
            aggregator.startup_timeout = d;
        }
        let fd = file.debounce.unwrap_or_default();
        let mut debounce = Debounce::default();
        if let Some(d) = c.duration(
            "debounce.endpoints",
            &args.debounce_endpoints,
            &fd.endpoints,
        ) {
            debounce.endpoints = d;
        }
        if let Some(d) = c.duration("debounce.config", &args.debounce_config, &fd.config) {
            debounce.config = d;
        }
        if let Some(d) = c.duration("debounce.max", &args.debounce_max, &fd.max) {
            debounce.max_delay = d;
        }
        if debounce.max_delay < debounce.endpoints || debounce.max_delay < debounce.config {
            c.problems.push(format!(
                "debounce: the maximum delay ({:?}) is shorter than a quiet time ({:?} / {:?})",
                debounce.max_delay, debounce.endpoints, debounce.config
            ));
        }
        let drain_timeout = c
            .duration("drain_timeout", &args.drain_timeout, &file.drain_timeout)
            .unwrap_or(Duration::from_secs(5));
        let mut server = ServerConfig::default();
        if let Some(n) = args.xds_max_connections.or(file.xds_max_connections) {
            if n == 0 {
                c.bad(
                    "xds_max_connections",
                    args.xds_max_connections.is_some(),
                    "must be at least 1".into(),
                );
            }
            server.max_connections = n;
        }
        if let Some(n) = c.size(
            "xds_max_request_size",
            &args.xds_max_request_size,
            &file.xds_max_request_size,
        ) {
            server.max_request_bytes = n;
        }
        if let Some(d) = c.duration(
            "xds_handshake_timeout",
            &args.xds_handshake_timeout,
            &file.xds_handshake_timeout,
        ) {
            server.handshake_timeout = d;
        }
        let log_output_level = args
            .log_output_level
            .clone()
            .or(file.log_output_level)
            .unwrap_or_else(|| "default:info".into());
        if let Err(e) = crate::logging::directives(&log_output_level) {
            c.bad("log_output_level", args.log_output_level.is_some(), e);
        }

        let etcd_file = file.etcd.unwrap_or_default();
        let etcd = args.etcd.resolve(&etcd_file, &mut c);
        let consul = args
            .consul
            .resolve(&file.consul.unwrap_or_default(), &mut c);
        let k8s = args.k8s.resolve(&file.k8s.unwrap_or_default(), &mut c);

        if !c.problems.is_empty() {
            return Err(Problems(c.problems));
        }
        Ok(Settings {
            registries,
            files,
            xds_addr,
            admin_addr,
            server,
            aggregator,
            translate: TranslateOptions { outbound_addr },
            debounce,
            drain_timeout,
            log_output_level,
            etcd,
            consul,
            k8s,
        })
    }

    /// Problems in the registry files (every file, every problem).
    pub fn check_registry_files(&self) -> Vec<String> {
        if !self.registries.contains(&RegistryKind::File) {
            return Vec::new();
        }
        let loaded = Loader::new(self.files.clone()).load();
        loaded.problems.iter().map(ToString::to_string).collect()
    }

    /// The registries, in priority order (Kubernetes: one per cluster).
    /// Settings are validated by [`Settings::resolve`]; building cannot fail.
    pub fn build_registries(&self) -> Vec<Arc<dyn Registry>> {
        let mut out: Vec<Arc<dyn Registry>> = Vec::new();
        for kind in &self.registries {
            match kind {
                RegistryKind::File => out.push(Arc::new(FileRegistry::new(
                    "file/main",
                    self.files.clone(),
                    FileRegistryConfig::default(),
                ))),
                RegistryKind::Etcd => {
                    out.push(Arc::new(EtcdRegistry::new("etcd/main", self.etcd.clone())))
                }
                RegistryKind::Consul => {
                    let dc = self.consul.datacenter.as_deref().unwrap_or("main");
                    out.push(Arc::new(ConsulRegistry::new(
                        format!("consul/{dc}"),
                        self.consul.clone(),
                    )))
                }
                RegistryKind::Kubernetes => {
                    for cluster in &self.k8s {
                        out.push(Arc::new(K8sRegistry::new(cluster.clone())));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
