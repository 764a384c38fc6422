//! Sextant as a library: registries in, xDS out, with the admin surface.
//!
//! The `sextant` binary is a thin command line over [`Sextant`]; an embedder
//! with its own registry adapter writes the same few lines:
//!
//! ```no_run
//! use sextant::Sextant;
//! use sextant_core::MemoryRegistry;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let registry = MemoryRegistry::new("memory/main"); // or your own `impl Registry`
//! let running = Sextant::new()
//!     .registry(registry)
//!     .xds_addr("127.0.0.1:15010".parse()?)
//!     .admin_addr("127.0.0.1:15014".parse::<std::net::SocketAddr>()?)
//!     .start()
//!     .await?;
//! running.run_until_signal().await; // SIGTERM or Ctrl-C: drain, then return
//! # Ok(()) }
//! ```
//!
//! Start reading at [`Sextant::start`] (the wiring), [`admin`] (health,
//! metrics, debug endpoints) and `config` (flags and the config file; with
//! the default features).
//!
//! Features: `etcd`, `consul` and `k8s` (all on by default) bring the
//! built-in registries of those kinds and the command line's settings.
//! With `default-features = false` the crate is the core, the aggregator,
//! the xDS server, the admin surface and the file registry, and builds
//! without protoc, kube or k8s-openapi. The crates it is made of are
//! re-exported ([`core`], [`aggregate`], [`xds`], [`file`]), so an embedder
//! needs this one dependency.

#![forbid(unsafe_code)]

pub mod admin;
#[cfg(feature = "k8s")]
mod cluster;
#[cfg(all(feature = "etcd", feature = "consul", feature = "k8s", feature = "dns"))]
pub mod config;
#[cfg(feature = "dns")]
mod dns;
pub mod iptables;
pub mod logging;
mod progress;
#[cfg(feature = "otlp")]
pub mod push_trace;

#[cfg(feature = "k8s")]
pub use cluster::{InjectionMetrics, RootCertPublishers, kubernetes_tokens};
pub use prometheus_client;
pub use sextant_aggregate as aggregate;
#[cfg(feature = "consul")]
pub use sextant_consul as consul;
pub use sextant_core as core;
#[cfg(feature = "etcd")]
pub use sextant_etcd as etcd;
pub use sextant_file as file;
#[cfg(feature = "k8s")]
pub use sextant_k8s as k8s;
pub use sextant_xds as xds;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sextant_aggregate::{Aggregator, AggregatorConfig, AggregatorHandle, MergeMode};
use sextant_core::{Registry, RuleSource};
use sextant_xds::server::tls::TlsSource;
use sextant_xds::{Debounce, Metrics, ServerConfig, TranslateOptions, XdsServer, publisher};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Where proxies connect for xDS in plaintext by default: Pilot's port, on
/// loopback (containers pass `0.0.0.0:15010` explicitly).
pub const DEFAULT_XDS_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    15010,
));

/// Where proxies connect for xDS over TLS by default, once a certificate
/// is set: Istio's port for it, on loopback.
pub const DEFAULT_XDS_TLS_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    15012,
));

/// Where the admin HTTP server (health, metrics, debug) listens by default:
/// Pilot's monitoring port, on loopback.
pub const DEFAULT_ADMIN_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    15014,
));

/// How long a graceful shutdown waits for streams to close by default:
/// long enough for proxies to see their stream end and reconnect
/// elsewhere, short enough for a rolling update.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything needed to run a control plane; see the crate docs.
pub struct Sextant {
    registries: Vec<Arc<dyn Registry>>,
    rule_sources: Vec<Arc<dyn RuleSource>>,
    aggregator: AggregatorConfig,
    translate: TranslateOptions,
    debounce: Debounce,
    server: ServerConfig,
    xds_addr: Option<SocketAddr>,
    xds_tls: Option<(SocketAddr, TlsSource)>,
    ca: Option<Arc<sextant_ca::Authority>>,
    admin_addr: Option<SocketAddr>,
    admin_token: Option<sextant_core::Secret>,
    drain_timeout: Duration,
    metrics: Vec<Arc<dyn admin::Collector>>,
    otlp_endpoint: Option<String>,
    dns: Option<DnsSettings>,
    workload_groups: Vec<Arc<dyn sextant_core::groups::WorkloadGroups>>,
    workload_entry_grace: Duration,
    progress: sextant_core::progress::ProgressBoard,
}

/// How Sextant resolves services' DNS names (`sextant-dns`'s settings).
#[cfg(feature = "dns")]
pub type DnsSettings = sextant_dns::Settings;
/// Without the `dns` feature there is nothing to set.
#[cfg(not(feature = "dns"))]
#[derive(Clone, Debug)]
pub enum DnsSettings {}

impl Default for Sextant {
    fn default() -> Self {
        Sextant::new()
    }
}

impl Sextant {
    /// No registries yet; xDS on 127.0.0.1:15010 and admin on 127.0.0.1:15014
    /// (Pilot's ports, loopback unless told otherwise).
    pub fn new() -> Self {
        Sextant {
            registries: Vec::new(),
            rule_sources: Vec::new(),
            aggregator: AggregatorConfig::default(),
            translate: TranslateOptions::default(),
            debounce: Debounce::default(),
            server: ServerConfig::default(),
            xds_addr: Some(DEFAULT_XDS_ADDR),
            xds_tls: None,
            ca: None,
            admin_addr: Some(DEFAULT_ADMIN_ADDR),
            admin_token: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            metrics: Vec::new(),
            otlp_endpoint: None,
            dns: None,
            workload_groups: Vec::new(),
            workload_entry_grace: sextant_xds::server::register::DEFAULT_GRACE,
            progress: sextant_core::progress::ProgressBoard::default(),
        }
    }

    /// The board through which sources read what the proxies hold (a
    /// gateway's `Programmed` status): hand it to them when building them;
    /// [`Sextant::start`] fills it.
    pub fn progress_board(&self) -> sextant_core::progress::ProgressBoard {
        self.progress.clone()
    }

    /// A source of WorkloadGroups for auto-registration (VMs whose agent
    /// names a group; see `sextant_xds::server::register`): the first
    /// source with the group keeps the entries registered from it. A
    /// [`sextant_core::groups::Board`] read by your registry, or a file
    /// registry's (`FileRegistry::workload_groups`). Without any, a stream
    /// that names a group is refused.
    pub fn workload_groups(
        mut self,
        source: Arc<dyn sextant_core::groups::WorkloadGroups>,
    ) -> Self {
        self.workload_groups.push(source);
        self
    }

    /// How long a registered workload's entry stays after its last
    /// stream ended (default 10 s, Istio's): a restart or a reconnect to
    /// another replica within it keeps the entry.
    pub fn workload_entry_grace(mut self, grace: Duration) -> Self {
        self.workload_entry_grace = grace;
        self
    }

    /// Resolves the DNS names of services' endpoints in Sextant, once for
    /// every proxy, and serves the addresses over EDS (the `dns` feature;
    /// see `sextant_dns`). `None` (the default for an embedder) leaves
    /// names to each proxy (Envoy's STRICT_DNS).
    pub fn resolve_names(mut self, settings: Option<DnsSettings>) -> Self {
        self.dns = settings;
        self
    }

    /// Adds a registry, after (lower priority than) those already added.
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registries.push(Arc::new(registry));
        self
    }

    /// Adds a shared registry.
    pub fn registry_arc(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registries.push(registry);
        self
    }

    /// Adds a source of traffic rules (route rules, destination policies),
    /// after (lower priority than) those already added: for one host, the
    /// first source's rule is in force.
    pub fn rules(mut self, source: impl RuleSource) -> Self {
        self.rule_sources.push(Arc::new(source));
        self
    }

    /// Adds a shared rule source.
    pub fn rules_arc(mut self, source: Arc<dyn RuleSource>) -> Self {
        self.rule_sources.push(source);
        self
    }

    /// Where the ADS server listens in plaintext; port 0 picks a free port.
    pub fn xds_addr(mut self, addr: SocketAddr) -> Self {
        self.xds_addr = Some(addr);
        self
    }

    /// Where the ADS server listens in plaintext, or `None` for no
    /// plaintext port (then [`Sextant::xds_tls`] is the only way in).
    pub fn xds_plaintext(mut self, addr: Option<SocketAddr>) -> Self {
        self.xds_addr = addr;
        self
    }

    /// Serves ADS over TLS (mTLS, as the source says) on `addr` too; port
    /// 0 picks a free port. Files are re-read when they change; a
    /// certificate made in memory is renewed by its maker.
    pub fn xds_tls(mut self, addr: SocketAddr, source: impl Into<TlsSource>) -> Self {
        self.xds_tls = Some((addr, source.into()));
        self
    }

    /// Issues workload certificates from `authority` through Istio's
    /// certificate API on the TLS port, to callers proving who they are
    /// as for xDS (a client certificate, or a bearer token the server's
    /// validator accepts). Counted on `/metrics`.
    pub fn certificate_authority(mut self, authority: Arc<sextant_ca::Authority>) -> Self {
        self.ca = Some(authority);
        self
    }

    /// Where the admin HTTP server listens; `None` disables it.
    pub fn admin_addr(mut self, addr: impl Into<Option<SocketAddr>>) -> Self {
        self.admin_addr = addr.into();
        self
    }

    /// A bearer token the debug endpoints require (health and metrics stay
    /// open). Without one, the admin port should stay on loopback.
    pub fn admin_token(mut self, token: Option<sextant_core::Secret>) -> Self {
        self.admin_token = token;
        self
    }

    /// Adds metric families to `/metrics`: a collector of the Prometheus
    /// client crate (re-exported as `sextant::prometheus_client`), asked
    /// for its families at each scrape; it lives as long as the control
    /// plane.
    pub fn metrics_collector(mut self, source: Arc<dyn admin::Collector>) -> Self {
        self.metrics.push(source);
        self
    }

    /// Exports a trace of each push to the OpenTelemetry collector at
    /// `endpoint` (OTLP over gRPC, `http://HOST:4317`); see `push_trace`
    /// (the `otlp` feature, on by default; without it, `start` fails when
    /// an endpoint is set).
    pub fn push_traces(mut self, endpoint: Option<String>) -> Self {
        self.otlp_endpoint = endpoint;
        self
    }

    /// The outbound HTTP listener handed to proxies.
    pub fn outbound_addr(mut self, addr: SocketAddr) -> Self {
        self.translate.outbound_addr = addr;
        self
    }

    /// Explicit mode's TCP listeners: TCP or TLS service port P is proxied
    /// at the outbound address's IP, port P + `offset`; `None`: none.
    pub fn tcp_port_offset(mut self, offset: Option<u32>) -> Self {
        self.translate.tcp_port_offset = offset;
        self
    }

    /// How registries reporting the same hostname combine.
    pub fn merge(mut self, mode: MergeMode) -> Self {
        self.aggregator.merge = mode;
        self
    }

    /// The aggregator's settings (merge, start-up timeout, maximum staleness).
    pub fn aggregator_config(mut self, config: AggregatorConfig) -> Self {
        self.aggregator = config;
        self
    }

    /// Coalescing of changes into pushes.
    pub fn debounce(mut self, debounce: Debounce) -> Self {
        self.debounce = debounce;
        self
    }

    /// ADS server settings.
    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.server = config;
        self
    }

    /// How long a graceful shutdown waits for streams to close. Default
    /// [`DEFAULT_DRAIN_TIMEOUT`].
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Binds the listeners and starts every task. Fails if a port is taken
    /// or two registries share an id.
    pub async fn start(self) -> anyhow::Result<Running> {
        if self.registries.is_empty() {
            anyhow::bail!("no registries configured");
        }
        let ids: Vec<String> = self.registries.iter().map(|r| r.id().to_string()).collect();
        let mut metrics_sources = self.metrics.clone();
        let (registries, debug_pages) = match self.dns.clone() {
            #[cfg(feature = "dns")]
            Some(settings) => {
                let (resolver, wrapped) = dns::wrap(settings, self.registries)?;
                metrics_sources.push(Arc::new(dns::DnsMetrics(resolver.clone())));
                let page = admin::DebugPage::new(
                    "/debug/dnsz",
                    move || serde_json::json!({ "names": resolver.status() }),
                );
                (wrapped, vec![page])
            }
            #[cfg(not(feature = "dns"))]
            Some(never) => match never {},
            None => (self.registries, Vec::new()),
        };
        let (aggregator, handle) =
            Aggregator::with_rules(self.aggregator.clone(), registries, self.rule_sources)?;
        // One journal for the aggregator's events and the server's.
        let metrics = Arc::new(Metrics {
            journal: self.aggregator.journal.clone(),
            ..Metrics::default()
        });
        let (snapshots, publish) = publisher(
            handle.view(),
            self.translate,
            self.debounce,
            metrics.clone(),
        );
        let tokens = self.server.tokens.clone();
        let mut server = self.server;
        if server.registrar.is_none() && !self.workload_groups.is_empty() {
            server.registrar = Some(sextant_xds::server::register::Registrar(Arc::new(
                sextant_xds::server::register::GroupRegistrar {
                    sources: self.workload_groups,
                    grace: self.workload_entry_grace,
                },
            )));
        }
        let xds = XdsServer::new(snapshots, metrics, server);
        self.progress.set(Arc::new(progress::ServerProgress {
            xds: xds.clone(),
            view: handle.view(),
        }));

        let xds_listener = match self.xds_addr {
            Some(addr) => Some(
                sextant_xds::server::listen(addr)
                    .with_context(|| format!("cannot listen for xDS on {addr}"))?,
            ),
            None => None,
        };
        let xds_addr = xds_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let tls = match &self.xds_tls {
            Some((addr, files)) => {
                let tls = sextant_xds::server::tls::Tls::new(files.clone(), xds.metrics().clone())
                    .map_err(|e| anyhow::anyhow!("xDS TLS: {e}"))?;
                let listener = sextant_xds::server::listen(*addr)
                    .with_context(|| format!("cannot listen for xDS over TLS on {addr}"))?;
                Some((listener, tls))
            }
            None => None,
        };
        let xds_tls_addr = tls.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
        #[cfg(feature = "otlp")]
        let push_traces = match &self.otlp_endpoint {
            Some(endpoint) => {
                let traces = push_trace::PushTraces::start(xds.clone(), endpoint)?;
                metrics_sources.push(Arc::new(push_trace::PushTraceMetrics(traces.counts())));
                info!(%endpoint, "exporting a trace of each push over OTLP");
                Some(traces)
            }
            None => None,
        };
        #[cfg(not(feature = "otlp"))]
        if self.otlp_endpoint.is_some() {
            anyhow::bail!("push traces need the `otlp` feature of the sextant crate");
        }
        let ca = match self.ca.clone() {
            Some(authority) => {
                anyhow::ensure!(
                    tls.is_some(),
                    "the certificate API is served on the xDS TLS port: set one (xds_tls)"
                );
                let metrics = Arc::new(sextant_ca::CaMetrics::default());
                let credentials = Arc::new(XdsCredentials {
                    tokens: tokens.clone(),
                });
                let service =
                    sextant_ca::CaService::new(authority.clone(), credentials, metrics.clone());
                metrics_sources.push(Arc::new(CaMetricsSource(metrics.clone())));
                Some((service, sextant_ca::watch(authority, metrics)))
            }
            None => None,
        };
        let (ca_service, ca_watch) = match ca {
            Some((service, watch)) => (Some(service), Some(watch)),
            None => (None, None),
        };
        anyhow::ensure!(
            xds_addr.is_some() || xds_tls_addr.is_some(),
            "no xDS port: the plaintext port is off and TLS is not set"
        );
        let admin_listener = match self.admin_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for admin HTTP on {addr}"))?,
            ),
            None => None,
        };
        let admin_addr = admin_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;

        let aggregator_task = tokio::spawn(aggregator.run());
        let publisher_task = tokio::spawn(publish);
        let (stop_xds, xds_stopped) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let mut xds_tasks = Vec::new();
        if let Some(listener) = xds_listener {
            xds_tasks.push(tokio::spawn(
                xds.clone().serve(listener, stopped(xds_stopped.clone())),
            ));
        }
        if let Some((listener, tls)) = tls {
            xds_tasks.push(tokio::spawn(xds.clone().serve_tls_with(
                listener,
                tls,
                move |routes| match ca_service {
                    Some(ca) => routes.add_service(ca),
                    None => routes,
                },
                stopped(xds_stopped.clone()),
            )));
        }
        let (stop_admin, admin_stopped) = oneshot::channel::<()>();
        let admin_task = admin_listener.map(|listener| {
            let state = admin::AdminState::new(handle.clone(), xds.clone())
                .with_token(self.admin_token.clone())
                .with_metrics(metrics_sources)
                .with_debug_pages(debug_pages);
            let listener = admin::listener::AdminListener::new(listener, state.listener_stats());
            let app = admin::router(state);
            tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = admin_stopped.await;
                });
                if let Err(e) = serve.await {
                    warn!(error = %e, "admin server stopped");
                }
            })
        });
        let admin = admin_addr.map_or_else(|| "disabled".to_owned(), |a| a.to_string());
        if admin_addr.is_some_and(|a| !a.ip().is_loopback()) && self.admin_token.is_none() {
            warn!(admin_addr = %admin, "the admin port is not on loopback and has no --admin-token: anyone who reaches it reads every service, endpoint and connected proxy on /debug/*");
        }
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
        info!(xds_addr = %show(xds_addr), xds_tls_addr = %show(xds_tls_addr), admin_addr = %admin, registries = ?ids, "sextant started");
        Ok(Running {
            xds_addr,
            xds_tls_addr,
            admin_addr,
            aggregator: handle,
            xds,
            drain_timeout: self.drain_timeout,
            stop_xds,
            stop_admin,
            xds_tasks,
            admin_task,
            publisher_task,
            aggregator_task,
            ca_watch,
            #[cfg(feature = "otlp")]
            _push_traces: push_traces,
        })
    }
}

/// A started control plane.
pub struct Running {
    /// Where ADS listens in plaintext, unless that port is off.
    pub xds_addr: Option<SocketAddr>,
    /// Where ADS listens over TLS, if it does.
    pub xds_tls_addr: Option<SocketAddr>,
    /// Where admin HTTP listens, if enabled.
    pub admin_addr: Option<SocketAddr>,
    aggregator: AggregatorHandle,
    xds: XdsServer,
    drain_timeout: Duration,
    stop_xds: watch::Sender<bool>,
    stop_admin: oneshot::Sender<()>,
    xds_tasks: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    admin_task: Option<JoinHandle<()>>,
    publisher_task: JoinHandle<()>,
    aggregator_task: JoinHandle<()>,
    /// The CA's file watcher, when there is a CA.
    ca_watch: Option<JoinHandle<()>>,
    /// Push traces, when exported (they stop with this).
    #[cfg(feature = "otlp")]
    _push_traces: Option<push_trace::PushTraces>,
}

impl Running {
    /// The aggregator: the merged view and every registry's status.
    pub fn aggregator(&self) -> &AggregatorHandle {
        &self.aggregator
    }

    /// The ADS server: connections, NACKs, metrics.
    pub fn xds(&self) -> &XdsServer {
        &self.xds
    }

    /// Waits for SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        info!("signal received; shutting down");
        self.shutdown().await;
    }

    /// Stops accepting connections, ends every ADS stream (proxies
    /// reconnect to another replica), and waits up to the drain timeout for
    /// them to close.
    pub async fn shutdown(self) {
        let _ = self.stop_xds.send(true);
        // Ending the snapshot stream ends every connection's loop, which
        // closes its stream with an OK status.
        self.publisher_task.abort();
        match tokio::time::timeout(
            self.drain_timeout,
            futures::future::join_all(self.xds_tasks),
        )
        .await
        {
            Ok(_) => info!("all xDS streams closed"),
            Err(_) => warn!(
                timeout_s = self.drain_timeout.as_secs_f64(),
                "xDS streams still open after the drain timeout; exiting anyway"
            ),
        }
        let _ = self.stop_admin.send(());
        if let Some(task) = self.admin_task {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        self.aggregator_task.abort();
        if let Some(task) = self.ca_watch {
            task.abort();
        }
    }
}

/// Who a caller of the certificate API is: the identity of its client
/// certificate, else of its bearer token, validated as for xDS.
struct XdsCredentials {
    tokens: Option<sextant_xds::server::auth::Tokens>,
}

impl sextant_ca::Authenticate for XdsCredentials {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a sextant_ca::Credentials,
    ) -> sextant_ca::service::Authenticating<'a> {
        Box::pin(async move {
            let proven = match (&credentials.certificate, &credentials.token, &self.tokens) {
                (Some(id), _, _) => id.clone(),
                (None, Some(token), Some(validator)) => validator
                    .0
                    .validate(token)
                    .await
                    .map_err(|e| format!("the bearer token was not accepted: {e}"))?,
                (None, Some(_), None) => {
                    return Err("this server validates no bearer tokens (--xds-token-file, --xds-token-review)".into());
                }
                (None, None, _) => {
                    return Err("a certificate needs proof of identity: a client certificate, or a bearer token in the authorization metadata".into());
                }
            };
            sextant_ca::Identity::from_spiffe(&proven).ok_or_else(|| {
                format!("the proven identity {proven:?} is not of the form spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT")
            })
        })
    }
}

/// The CA's counters on `/metrics`.
#[derive(Debug)]
struct CaMetricsSource(Arc<sextant_ca::CaMetrics>);

impl admin::Collector for CaMetricsSource {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use sextant_ca::CaMetrics as M;
        let m = &self.0;
        let mut p = admin::Families::new(encoder);
        p.counter(
            "sextant_ca_certificates_issued_total",
            "Workload certificates issued.",
            M::get(&m.issued_total),
        )?;
        p.counters(
            "sextant_ca_requests_refused_total",
            "Certificate requests refused, by reason.",
            [
                ("unauthenticated", &m.unauthenticated_total),
                ("bad_csr", &m.bad_csr_total),
                ("failed", &m.failed_total),
            ]
            .map(|(reason, v)| (vec![("reason", reason.to_owned())], M::get(v))),
        )?;
        p.counter(
            "sextant_ca_reload_failures_total",
            "Changes of the CA's files that did not load (the last good CA kept issuing).",
            M::get(&m.reload_failures_total),
        )
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
