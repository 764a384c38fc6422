//! Settings from flags, `SEXTANT_*` variables and an optional YAML file
//! (flags and variables win), validated with every problem reported at once.
//!
//! One file per section: this one the core settings and the resolution
//! (`Settings::resolve`), `etcd.rs`, `consul.rs` and `k8s.rs` each a
//! registry's flags, file section and resolution side by side, and
//! `problems.rs` how a problem names the flag or the file, line and key.
//! Every setting is declared once: `RunArgs` (and its sections, `debounce`,
//! `etcd`, `consul`, `k8s`) derives both clap (the flag, with its
//! environment variable) and serde (the file key); the file is read into
//! the same struct. Values that need checking (addresses, durations, sizes)
//! are kept as text in both and checked in `Settings::resolve`, so a bad one
//! is reported under the flag or at the file's line, whichever gave it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sextant_aggregate::{AggregatorConfig, MergeMode};
use sextant_consul::ConsulConfig;
use sextant_etcd::{EtcdConfig, EtcdTls};

use sextant_k8s::K8sConfig;
use sextant_xds::{Debounce, ServerConfig, TranslateOptions};

mod build;
mod consul;
pub mod defaults;
mod etcd;
mod k8s;
mod problems;
mod tls;

pub use consul::ConsulArgs;
pub use etcd::EtcdArgs;
pub use k8s::{InjectionAudit, K8sArgs};
pub use problems::Problems;
use problems::{Collector, either};
pub use tls::{CaSettings, TlsArgs, TokenSource, XdsTls};

/// The flags of `sextant` and `sextant check-config`, and the settings
/// file: one struct, so each setting is declared once (clap reads the flag
/// and its environment variable, serde the file key).
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// Settings file (YAML, same names as the flags with `_`); flags and
    /// SEXTANT_* variables override it.
    #[arg(long, env = "SEXTANT_CONFIG", value_name = "FILE")]
    #[serde(skip)]
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
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Where proxies connect for xDS in plaintext, or `off`.
    #[arg(long, env = "SEXTANT_XDS_ADDR", value_name = "ADDR")]
    pub xds_addr: Option<String>,
    /// Admin HTTP: health, metrics, debug.
    #[arg(long, env = "SEXTANT_ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<String>,
    /// A bearer token the /debug/* endpoints require (health and metrics
    /// stay open); set it when the admin port is not on loopback.
    #[arg(long, env = "SEXTANT_ADMIN_TOKEN", value_name = "TOKEN")]
    pub admin_token: Option<sextant_core::Secret>,
    /// xDS connections open at once; more are refused [default: the
    /// open-file limit less 256].
    #[arg(long, env = "SEXTANT_XDS_MAX_CONNECTIONS", value_name = "N")]
    pub xds_max_connections: Option<usize>,
    /// xDS connections one client address may hold at once, so that one
    /// source cannot take every slot (proxies behind one NAT address share
    /// it) [default: a quarter of --xds-max-connections].
    #[arg(long, env = "SEXTANT_XDS_MAX_CONNECTIONS_PER_CLIENT", value_name = "N")]
    pub xds_max_connections_per_client: Option<usize>,
    /// The largest xDS request accepted, e.g. 4MiB.
    #[arg(long, env = "SEXTANT_XDS_MAX_REQUEST_SIZE", value_name = "SIZE")]
    pub xds_max_request_size: Option<String>,
    /// How long a new xDS connection has to start HTTP/2.
    #[arg(long, env = "SEXTANT_XDS_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub xds_handshake_timeout: Option<String>,
    /// The outbound HTTP listener handed to proxies.
    #[arg(long, env = "SEXTANT_OUTBOUND_ADDR", value_name = "ADDR")]
    pub outbound_addr: Option<String>,
    /// TCP listeners in explicit mode: each TCP or TLS service port P gets
    /// a TCP proxy listener at the outbound address's IP, port P + N
    /// [default: none].
    #[arg(long, env = "SEXTANT_TCP_PORT_OFFSET", value_name = "N")]
    pub tcp_port_offset: Option<u32>,
    /// The hosts a proxy sees when no scope rule applies to it, as
    /// NAMESPACE/HOST entries (`./*`, `shared/*`, `*/*.example.com`)
    /// [default: */*, everything].
    #[arg(
        long,
        env = "SEXTANT_SCOPE_DEFAULT_HOSTS",
        value_delimiter = ',',
        value_name = "NS/HOST,..."
    )]
    pub scope_default_hosts: Option<Vec<String>>,
    /// The namespace whose scope rule without a workload selector applies
    /// to every proxy without a rule of its own namespace.
    #[arg(long, env = "SEXTANT_SCOPE_ROOT_NAMESPACE", value_name = "NS")]
    pub scope_root_namespace: Option<String>,
    /// Capture-mode proxies: destinations outside the mesh pass through
    /// (allow, Istio's ALLOW_ANY) or are refused (block, REGISTRY_ONLY)
    /// [default: allow].
    #[arg(
        long,
        env = "SEXTANT_OUTBOUND_TRAFFIC_POLICY",
        value_name = "allow|block"
    )]
    pub outbound_traffic_policy: Option<String>,
    /// What sidecars holding a workload certificate accept inbound (Istio's
    /// mesh-wide PeerAuthentication): permissive (mutual TLS from
    /// sidecars, plaintext from others), strict (mutual TLS only) or
    /// disable (plaintext, and no mutual TLS outbound) [default:
    /// permissive].
    #[arg(
        long,
        env = "SEXTANT_MTLS_MODE",
        value_name = "permissive|strict|disable"
    )]
    pub mtls_mode: Option<String>,
    /// Same hostname in several registries: union of endpoints, or the first
    /// registry wins [default: union].
    #[arg(long, env = "SEXTANT_MERGE", value_name = "union|first")]
    pub merge: Option<String>,
    /// Drop an unreachable registry's endpoints after this long [default: never].
    #[arg(long, env = "SEXTANT_MAX_STALE", value_name = "DURATION")]
    pub max_stale: Option<String>,
    /// Serve what is known if a registry has not synced by then.
    #[arg(long, env = "SEXTANT_STARTUP_TIMEOUT", value_name = "DURATION")]
    pub startup_timeout: Option<String>,
    /// Coalescing of changes (file: `debounce: { endpoints, config, max }`).
    #[command(flatten)]
    #[serde(default)]
    pub debounce: DebounceArgs,
    /// On SIGTERM, wait this long for streams to close.
    #[arg(long, env = "SEXTANT_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// How long an auto-registered workload's WorkloadEntry stays after
    /// its agent's stream ended (a restart or a reconnect to another
    /// replica within it keeps the entry) [default: 10s].
    #[arg(long, env = "SEXTANT_WORKLOAD_ENTRY_GRACE", value_name = "DURATION")]
    pub workload_entry_grace: Option<String>,
    /// Export a trace of each push (first change, coalescing, translation,
    /// first and last connection) to this OpenTelemetry collector: OTLP
    /// over gRPC in plaintext, http://HOST:PORT [default: off].
    #[arg(long, env = "SEXTANT_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Who resolves the DNS names of services' endpoints (ServiceEntries
    /// with resolution DNS, file services written with names): `sextant`,
    /// once for every proxy, the addresses served over EDS and asked again
    /// when their TTL runs out; or `proxy`, each Envoy itself (STRICT_DNS)
    /// [default: sextant].
    #[arg(long, env = "SEXTANT_DNS_RESOLUTION", value_name = "sextant|proxy")]
    pub dns_resolution: Option<String>,
    /// The DNS servers Sextant asks, IP:PORT (repeatable, or
    /// comma-separated) [default: the system's, from /etc/resolv.conf].
    #[arg(
        long = "dns-server",
        env = "SEXTANT_DNS_SERVERS",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub dns_servers: Option<Vec<String>>,
    /// Log levels per scope, Pilot's syntax: default:info,xds:debug.
    /// Scopes: default, core, aggregate, xds, file, etcd, consul, k8s, admin.
    /// RUST_LOG, when set, replaces this.
    #[arg(long, env = "SEXTANT_LOG_OUTPUT_LEVEL", value_name = "SCOPE:LEVEL,...")]
    pub log_output_level: Option<String>,
    /// TLS on the xDS port.
    #[command(flatten)]
    #[serde(default)]
    pub tls: TlsArgs,
    /// etcd registry settings.
    #[command(flatten)]
    #[serde(default)]
    pub etcd: EtcdArgs,
    /// Consul registry settings.
    #[command(flatten)]
    #[serde(default)]
    pub consul: ConsulArgs,
    /// Kubernetes registry settings.
    #[command(flatten)]
    #[serde(default)]
    pub k8s: K8sArgs,
}

/// An OTLP/gRPC endpoint Sextant can export to: `http://HOST:PORT` (the
/// exporter speaks plaintext gRPC; a collector on another machine is
/// reached through a local agent or a sidecar).
fn otlp_endpoint(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!(
            "{url:?}: an OTLP/gRPC endpoint in plaintext, http://HOST:PORT (https is not supported)"
        ));
    }
    Ok(())
}

/// `--dns-resolution` and `--dns-server`, from the flags or the file.
fn resolve_dns(
    args: &RunArgs,
    file: &ConfigFile,
    c: &mut Collector<'_>,
) -> Option<crate::DnsSettings> {
    let mode = either(&args.dns_resolution, &file.dns_resolution);
    let servers = either(&args.dns_servers, &file.dns_servers);
    let mut settings = sextant_dns::Settings::default();
    if let Some((list, from_flag)) = servers {
        for s in list {
            match s.trim().parse::<SocketAddr>() {
                Ok(addr) => settings.servers.push(addr),
                Err(_) => c.bad(
                    "dns_servers",
                    from_flag,
                    format!("{s:?} is not IP:PORT (for example 10.0.0.10:53)"),
                ),
            }
        }
    }
    match mode {
        None => Some(settings),
        Some((m, _)) if m == "sextant" => Some(settings),
        Some((m, _)) if m == "proxy" => None,
        Some((m, from_flag)) => {
            c.bad(
                "dns_resolution",
                from_flag,
                format!("{m:?}: `sextant` or `proxy`"),
            );
            None
        }
    }
}

/// Coalescing flags, and the file's `debounce:` section.
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct DebounceArgs {
    /// Quiet time before pushing endpoint-only changes.
    #[arg(
        id = "debounce_endpoints",
        long = "debounce-endpoints",
        env = "SEXTANT_DEBOUNCE_ENDPOINTS",
        value_name = "DURATION"
    )]
    pub endpoints: Option<String>,
    /// Quiet time before pushing other changes.
    #[arg(
        id = "debounce_config",
        long = "debounce-config",
        env = "SEXTANT_DEBOUNCE_CONFIG",
        value_name = "DURATION"
    )]
    pub config: Option<String>,
    /// Push at most this long after the first change of a batch.
    #[arg(
        id = "debounce_max",
        long = "debounce-max",
        env = "SEXTANT_DEBOUNCE_MAX",
        value_name = "DURATION"
    )]
    pub max: Option<String>,
}

impl ConfigFile {
    /// Makes every relative path in the file relative to the file's
    /// directory, as the README promises (flags and environment variables
    /// stay relative to the working directory).
    fn rebase(&mut self, base: &Path) {
        let mut paths: Vec<&mut PathBuf> = self.files.iter_mut().collect();
        {
            let e = &mut self.etcd;
            paths.extend(
                [&mut e.etcd_ca, &mut e.etcd_cert, &mut e.etcd_key]
                    .into_iter()
                    .flatten(),
            );
        }
        {
            let c = &mut self.consul;
            paths.extend(
                [
                    &mut c.consul_cacert,
                    &mut c.consul_client_cert,
                    &mut c.consul_client_key,
                ]
                .into_iter()
                .flatten(),
            );
        }
        {
            let k = &mut self.k8s;
            paths.extend(k.kubeconfig.as_mut());
        }
        paths.extend(self.tls.paths());
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// The settings file: the flags' struct, every field optional.
pub type ConfigFile = RunArgs;

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
    /// xDS listen address (plaintext); `None` when turned off.
    pub xds_addr: Option<SocketAddr>,
    /// The xDS TLS port: its address and where its certificate comes from.
    pub xds_tls: Option<(SocketAddr, XdsTls)>,
    /// Sextant's CA, when it issues workload certificates.
    pub ca: Option<CaSettings>,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// Where proxies' bearer tokens are validated.
    pub xds_tokens: TokenSource,
    /// Admin listen address.
    pub admin_addr: SocketAddr,
    /// The debug endpoints' bearer token.
    pub admin_token: Option<sextant_core::Secret>,
    /// Where push traces go (OTLP/gRPC), if anywhere.
    pub otlp_endpoint: Option<String>,
    /// How Sextant resolves services' names; `None`: each proxy does.
    pub dns: Option<crate::DnsSettings>,
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
    /// How long a registered workload's entry outlives its stream.
    pub workload_entry_grace: Duration,
    /// Log level specification.
    pub log_output_level: String,
    /// The etcd registry's settings.
    pub etcd: EtcdConfig,
    /// The Consul registry's settings.
    pub consul: ConsulConfig,
    /// One Kubernetes registry per cluster.
    pub k8s: Vec<K8sConfig>,
    /// The injection audit, run against each cluster.
    pub injection: InjectionAudit,
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
            file.files.clone()
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

        let xds_off = either(&args.xds_addr, &file.xds_addr).is_some_and(|(a, _)| a == "off");
        let xds_addr = if xds_off {
            None
        } else {
            Some(
                c.addr("xds_addr", &args.xds_addr, &file.xds_addr)
                    .unwrap_or(crate::DEFAULT_XDS_ADDR),
            )
        };
        let admin_addr = c
            .addr("admin_addr", &args.admin_addr, &file.admin_addr)
            .unwrap_or(crate::DEFAULT_ADMIN_ADDR);
        let outbound_addr = c
            .addr("outbound_addr", &args.outbound_addr, &file.outbound_addr)
            .unwrap_or(TranslateOptions::default().outbound_addr);
        let tcp_port_offset = args.tcp_port_offset.or(file.tcp_port_offset);
        if tcp_port_offset.is_some_and(|n| n > 65_000) {
            c.bad(
                "tcp_port_offset",
                args.tcp_port_offset.is_some(),
                "must leave room for ports: at most 65000".into(),
            );
        }

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
        let fd = &file.debounce;
        let mut debounce = Debounce::default();
        if let Some(d) = c.duration(
            "debounce.endpoints",
            &args.debounce.endpoints,
            &fd.endpoints,
        ) {
            debounce.endpoints = d;
        }
        if let Some(d) = c.duration("debounce.config", &args.debounce.config, &fd.config) {
            debounce.config = d;
        }
        if let Some(d) = c.duration("debounce.max", &args.debounce.max, &fd.max) {
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
            .unwrap_or(crate::DEFAULT_DRAIN_TIMEOUT);
        let workload_entry_grace = c
            .duration(
                "workload_entry_grace",
                &args.workload_entry_grace,
                &file.workload_entry_grace,
            )
            .unwrap_or(sextant_xds::server::register::DEFAULT_GRACE);
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
            server.max_connections_per_client =
                sextant_xds::server::limits::default_max_connections_per_client(n);
        }
        if let Some(n) = args
            .xds_max_connections_per_client
            .or(file.xds_max_connections_per_client)
        {
            if n == 0 {
                c.bad(
                    "xds_max_connections_per_client",
                    args.xds_max_connections_per_client.is_some(),
                    "must be at least 1".into(),
                );
            }
            server.max_connections_per_client = n;
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
        if let Some((hosts, from_flag)) = args
            .scope_default_hosts
            .clone()
            .map(|h| (h, true))
            .or_else(|| file.scope_default_hosts.clone().map(|h| (h, false)))
        {
            let parsed: Result<Vec<_>, String> = hosts
                .iter()
                .map(|h| sextant_core::ScopeHost::parse(h.trim()))
                .collect();
            match parsed {
                Ok(p) if !p.is_empty() => server.scoping.default_hosts = p,
                Ok(_) => c.bad(
                    "scope_default_hosts",
                    from_flag,
                    "must list at least one entry (\"~/*\" for none)".into(),
                ),
                Err(e) => c.bad("scope_default_hosts", from_flag, e),
            }
        }
        if let Some(ns) = args
            .scope_root_namespace
            .clone()
            .or_else(|| file.scope_root_namespace.clone())
        {
            server.scoping.root_namespace = ns;
        }
        if let Some((policy, from_flag)) = args
            .outbound_traffic_policy
            .clone()
            .map(|p| (p, true))
            .or_else(|| file.outbound_traffic_policy.clone().map(|p| (p, false)))
        {
            match policy.parse() {
                Ok(p) => server.capture.outbound_policy = p,
                Err(e) => c.bad("outbound_traffic_policy", from_flag, e),
            }
        }
        let otlp_endpoint = match either(&args.otlp_endpoint, &file.otlp_endpoint) {
            Some((url, from_flag)) => match otlp_endpoint(&url) {
                Ok(()) => Some(url),
                Err(e) => {
                    c.bad("otlp_endpoint", from_flag, e);
                    None
                }
            },
            None => None,
        };
        let dns = resolve_dns(args, &file, &mut c);
        if let Some((mode, from_flag)) = args
            .mtls_mode
            .clone()
            .map(|m| (m, true))
            .or_else(|| file.mtls_mode.clone().map(|m| (m, false)))
        {
            match mode.parse() {
                Ok(m) => server.capture.mtls.mode = m,
                Err(e) => c.bad("mtls_mode", from_flag, e),
            }
        }
        let tls::TlsResolved {
            tls: xds_tls,
            auth,
            tokens: xds_tokens,
            ca,
            trust_domain,
        } = args.tls.resolve(&file.tls, &mut c);
        server.capture.mtls.trust_domain = trust_domain.clone();
        server.auth = auth;
        if xds_addr.is_none() && xds_tls.is_none() {
            c.problems.push(
                "--xds-addr off leaves no xDS port: set --tls-cert and --tls-key for the TLS port"
                    .into(),
            );
        }
        let log_output_level = args
            .log_output_level
            .clone()
            .or(file.log_output_level)
            .unwrap_or_else(|| defaults::LOG_OUTPUT_LEVEL.into());
        if let Err(e) = crate::logging::directives(&log_output_level) {
            c.bad("log_output_level", args.log_output_level.is_some(), e);
        }

        let etcd_file = &file.etcd;
        let etcd = args.etcd.resolve(etcd_file, &mut c);
        let consul = args.consul.resolve(&file.consul, &mut c);
        let k8s = args.k8s.resolve(&file.k8s, &mut c);
        let injection = args.k8s.injection(&file.k8s, &mut c);

        if !c.problems.is_empty() {
            return Err(Problems(c.problems));
        }
        let root_namespace = server.scoping.root_namespace.clone();
        Ok(Settings {
            registries,
            files,
            xds_addr,
            xds_tls,
            ca,
            trust_domain: trust_domain.clone(),
            xds_tokens,
            admin_addr,
            admin_token: args
                .admin_token
                .clone()
                .or_else(|| file.admin_token.clone())
                .filter(|t| !t.expose().is_empty()),
            otlp_endpoint,
            dns,
            server,
            aggregator,
            translate: TranslateOptions {
                outbound_addr,
                tcp_port_offset,
                trust_domain: trust_domain.clone(),
                root_namespace,
            },
            debounce,
            drain_timeout,
            workload_entry_grace,
            log_output_level,
            etcd,
            consul,
            k8s,
            injection,
        })
    }
}

#[cfg(test)]
mod tests;
