//! `sextant agent`: what pilot-agent does for Istio, in the pod beside the
//! application.
//!
//! - Writes Envoy's bootstrap from the pod ([`pod`]: its name, namespace,
//!   IPs, labels and service account), the Sextant address, the capture
//!   mode and the TLS and token settings, through the same generator as
//!   `sextant bootstrap` ([`sextant_xds::bootstrap::Spec`]).
//! - Starts Envoy and supervises it ([`envoy`]): an unexpected exit is
//!   restarted after a growing delay; too many in a row and the agent
//!   exits non-zero, for the kubelet to restart the pod.
//! - Answers readiness on its status port (`/healthz/ready`, Istio's port
//!   15021 and path): ready only once Envoy is LIVE, has accepted its
//!   first clusters and listeners from Sextant and none is still warming
//!   ([`admin::ready`]), not when the process is merely up.
//! - Stops with one setting, the drain deadline: on SIGTERM (or `POST
//!   /quitquitquit`, for jobs without native sidecars) it tells Envoy to
//!   drain, waits until Envoy has no connection open or the deadline
//!   passes, whichever comes first, stops Envoy and exits 0
//!   ([`run`]). Istio has four settings for this (istio/istio#34855).
//! - `sextant agent wait` ([`wait`]) holds a container's start until the
//!   agent is ready: the postStart hook injection writes when the API
//!   server has no native sidecars, so the application does not start
//!   before its proxy (istio/istio#11130).
//!
//! Where things are: `pod.rs` the pod's identity, `admin.rs` Envoy's admin
//! API, `envoy.rs` starting and supervising the process, `status.rs` the
//! status port.

#![forbid(unsafe_code)]

pub mod admin;
pub mod envoy;
pub mod pod;
pub mod probes;
pub mod sds;
pub mod status;
pub mod vm;
pub mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_xds::bootstrap::{ClientTls, Spec, Workload};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Envoy's admin port in a pod (Istio's).
pub const DEFAULT_ENVOY_ADMIN_PORT: u16 = 15000;
/// The status port: readiness, `/quitquitquit` (Istio's).
pub const DEFAULT_STATUS_PORT: u16 = 15021;

/// The agent's settings (`sextant agent`); each flag is also a
/// `SEXTANT_*` environment variable.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    /// Sextant's xDS address, HOST:PORT; repeat it (or separate with
    /// commas) for replicas.
    #[arg(
        long = "xds-addr",
        env = "SEXTANT_XDS_ADDR",
        value_delimiter = ',',
        default_value = "sextant.sextant.svc:15010"
    )]
    pub xds_addrs: Vec<String>,
    /// The Envoy binary (a bare name is looked up on PATH).
    #[arg(long, env = "SEXTANT_ENVOY_PATH", default_value = "envoy")]
    pub envoy_path: PathBuf,
    /// Envoy's worker threads.
    #[arg(long, env = "SEXTANT_PROXY_CONCURRENCY", default_value_t = 2)]
    pub concurrency: u32,
    /// Envoy's log level (trace, debug, info, warning, error, critical, off).
    #[arg(long, env = "SEXTANT_PROXY_LOG_LEVEL", default_value = "warning")]
    pub proxy_log_level: String,
    /// Envoy's admin port on 127.0.0.1 (0 picks a free one).
    #[arg(long, env = "SEXTANT_ENVOY_ADMIN_PORT", default_value_t = DEFAULT_ENVOY_ADMIN_PORT)]
    pub envoy_admin_port: u16,
    /// Where the agent answers readiness and /quitquitquit (pods:
    /// 0.0.0.0:15021, for the kubelet's probes).
    #[arg(long, env = "SEXTANT_STATUS_ADDR", default_value = "127.0.0.1:15021")]
    pub status_addr: SocketAddr,
    /// On SIGTERM or /quitquitquit: how long Envoy may drain its
    /// connections. The agent exits as soon as none is left, and at the
    /// latest then. Keep it under the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "SEXTANT_DRAIN_DEADLINE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub drain_deadline: Duration,
    /// Where the bootstrap is written (a writable directory: the
    /// container's root filesystem is read-only).
    #[arg(long, env = "SEXTANT_PROXY_DIR", default_value = "/etc/sextant/proxy")]
    pub proxy_dir: PathBuf,
    /// The downward API volume with the pod's `labels` file.
    #[arg(long, env = "SEXTANT_POD_INFO_DIR", default_value = "/etc/sextant/pod")]
    pub pod_info_dir: PathBuf,
    /// How traffic reaches the proxy: capture (iptables, as injected) or
    /// explicit; router: an Envoy at the edge serving `--gateway`
    /// (deploy/gateway.yaml).
    #[arg(long, env = "SEXTANT_INTERCEPTION", default_value = "capture", value_parser = ["capture", "explicit", "router"])]
    pub mode: String,
    /// With `--mode router`: the gateway it serves, `NAMESPACE/NAME`.
    #[arg(
        long,
        env = "SEXTANT_GATEWAY",
        value_name = "NAMESPACE/NAME",
        required_if_eq("mode", "router")
    )]
    pub gateway: Option<String>,
    /// With `--mode router`: the address the gateway's listeners bind to.
    #[arg(
        long,
        env = "SEXTANT_GATEWAY_BIND",
        value_name = "IP",
        default_value = "0.0.0.0"
    )]
    pub gateway_bind: std::net::IpAddr,
    /// With `--mode router`: added to the gateway's declared ports below
    /// 1024, so that Envoy needs no privilege (the Service maps them).
    #[arg(long, env = "SEXTANT_GATEWAY_PORT_OFFSET", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64511))]
    pub gateway_port_offset: u32,
    /// The clusters' DNS domain (for the node id).
    #[arg(long, env = "SEXTANT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Use incremental (delta) xDS.
    #[arg(long, env = "SEXTANT_DELTA")]
    pub delta: bool,
    /// The CA (PEM file) of Sextant's TLS port: connect over TLS.
    #[arg(long = "xds-ca", env = "SEXTANT_XDS_CA", value_name = "FILE")]
    pub xds_ca: Option<String>,
    /// A bearer token file (a projected service-account token), for
    /// `--xds-auth token`.
    #[arg(long, env = "SEXTANT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Unexpected Envoy exits in a row (each lasting under a minute)
    /// before the agent gives up and exits non-zero.
    #[arg(long, env = "SEXTANT_MAX_RESTARTS", default_value_t = 5)]
    pub max_restarts: u32,
    /// Where to ask for the workload certificate: Sextant's CA, HOST:PORT
    /// (its TLS xDS port) [default: the first --xds-addr, when --xds-ca is
    /// set].
    #[arg(long, env = "SEXTANT_CA_ADDR", value_name = "ADDR")]
    pub ca_addr: Option<String>,
    /// The root (PEM file) the CA's port certificate chains to [default:
    /// --xds-ca].
    #[arg(long, env = "SEXTANT_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Do not ask for a workload certificate (no SDS, no mutual TLS).
    #[arg(long, env = "SEXTANT_NO_WORKLOAD_CERTS")]
    pub no_workload_certs: bool,
    /// The workload certificate's lifetime to ask for (the CA may give
    /// less); it is renewed at half its life.
    #[arg(long, env = "SEXTANT_CERT_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub cert_ttl: Duration,
    /// The mesh's trust domain (the identity a CSR names; the CA decides).
    #[arg(long, env = "SEXTANT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// A proxyless gRPC workload: no Envoy. The agent writes the gRPC xDS
    /// bootstrap (`PROXY_DIR/grpc-bootstrap.json`, for
    /// `GRPC_XDS_BOOTSTRAP`) naming its certificate files, keeps the
    /// workload certificate, and is ready once it holds one.
    #[arg(long, env = "SEXTANT_PROXYLESS")]
    pub proxyless: bool,
    /// The application's probes the agent runs for the kubelet on
    /// `/app-health/...` (JSON; injection writes it, see
    /// `sextant_inject::probes`).
    #[arg(long, env = "SEXTANT_APP_PROBES", value_name = "JSON")]
    pub app_probes: Option<String>,
    /// A workload outside Kubernetes (a VM): register it from the
    /// WorkloadGroup in this file (a manifest or the registry files' form)
    /// and report the group's probe (see `sextant_agent::vm`). Its
    /// address is INSTANCE_IP; its namespace, labels and service account
    /// default to the group's.
    #[arg(long, env = "SEXTANT_WORKLOAD_GROUP", value_name = "FILE")]
    pub workload_group: Option<PathBuf>,
}

impl AgentArgs {
    /// How to ask for the workload certificate, if one is asked for: with
    /// --ca-addr, or over the TLS xDS port (--xds-ca).
    pub fn ca_client(&self, pod: &pod::PodInfo) -> Option<workload::CaClient> {
        if self.no_workload_certs {
            return None;
        }
        let addr = match (&self.ca_addr, &self.xds_ca) {
            (Some(addr), _) => addr.clone(),
            (None, Some(_)) => self.xds_addrs.first()?.clone(),
            (None, None) => return None,
        };
        let ca_cert = self
            .ca_cert
            .clone()
            .or_else(|| self.xds_ca.as_ref().map(PathBuf::from))?;
        Some(workload::CaClient {
            addr,
            ca_cert,
            server_name: None,
            token_file: self.token_file.clone(),
            ttl: self.cert_ttl,
            spiffe: format!(
                "spiffe://{}/ns/{}/sa/{}",
                self.trust_domain,
                pod.namespace.as_deref().unwrap_or("default"),
                pod.service_account.as_deref().unwrap_or("default")
            ),
        })
    }

    /// The agent's SDS socket.
    pub fn sds_socket(&self) -> PathBuf {
        self.proxy_dir.join("sds.sock")
    }

    /// The directory of the certificate files (proxyless gRPC).
    pub fn cert_dir(&self) -> PathBuf {
        self.proxy_dir.join("certs")
    }

    /// Where a proxyless workload's gRPC bootstrap is written.
    pub fn grpc_bootstrap(&self) -> PathBuf {
        self.proxy_dir.join("grpc-bootstrap.json")
    }
}

/// How the agent ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Stopped on request, after the drain: exit 0.
    Stopped,
    /// It could not go on: exit non-zero, with why.
    Failed(String),
}

/// What the status port and the supervisor share.
pub struct Shared {
    /// Envoy's admin address and process id, while Envoy runs.
    admin: std::sync::Mutex<Option<(SocketAddr, Option<u32>)>>,
    /// Set once the agent is stopping: readiness fails from then on.
    stopping: std::sync::atomic::AtomicBool,
    /// Set once the running Envoy has been ready: from then on, readiness
    /// asks only that it is LIVE (a listener warming after a push does not
    /// take the pod out of its Service).
    was_ready: std::sync::atomic::AtomicBool,
    /// The workload certificate, when one is asked for: not ready without.
    certificate: Option<watch::Receiver<Option<Arc<workload::Material>>>>,
    /// What keeping it did.
    cert_counts: Arc<workload::CertCounts>,
    /// No Envoy to wait for (`--proxyless`).
    proxyless: bool,
    /// The application's probes, or why they cannot be run.
    app_probes: Result<probes::AppProbes, String>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            admin: Default::default(),
            stopping: Default::default(),
            was_ready: Default::default(),
            certificate: None,
            cert_counts: Default::default(),
            proxyless: false,
            app_probes: Ok(probes::AppProbes::default()),
        }
    }
}

impl Shared {
    /// Envoy's admin address, while Envoy runs.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.envoy().map(|(a, _)| a)
    }

    /// Envoy's admin address and process id, while Envoy runs.
    pub fn envoy(&self) -> Option<(SocketAddr, Option<u32>)> {
        *self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_envoy(&self, envoy: Option<&envoy::Envoy>) {
        *self.admin.lock().unwrap_or_else(|p| p.into_inner()) = envoy.map(|e| (e.admin, e.pid()));
        self.was_ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the running Envoy serves (see [`admin::ready`]); `Err`
    /// says why not.
    pub async fn ready(&self) -> Result<(), String> {
        if self.stopping() {
            return Err("draining".into());
        }
        if let Some(held) = &self.certificate
            && held.borrow().is_none()
        {
            return Err("no workload certificate yet".into());
        }
        if self.proxyless {
            return Ok(());
        }
        let Some(admin) = self.admin() else {
            return Err("Envoy is not running".into());
        };
        let first = !self.was_ready.load(std::sync::atomic::Ordering::Relaxed);
        admin::ready(admin, first).await?;
        self.was_ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The agent's metrics, in the OpenMetrics text form: the workload
    /// certificate's expiry and renewals, when one is kept.
    pub fn metrics(&self) -> String {
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use std::sync::atomic::Ordering::Relaxed;
        let Some(held) = &self.certificate else {
            return String::new();
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let expiry = held.borrow().as_ref().map(|m| {
            m.not_after
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        });
        if let Some(expiry) = expiry {
            registry.register(
                "sextant_agent_certificate_expiry_seconds",
                "When the workload certificate held expires (Unix time).",
                ConstGauge::new(expiry as i64),
            );
        }
        // Counters: the encoder names the samples `..._total`.
        registry.register(
            "sextant_agent_certificates_received",
            "Workload certificates received from the CA.",
            ConstCounter::new(self.cert_counts.received.load(Relaxed)),
        );
        registry.register(
            "sextant_agent_certificate_request_failures",
            "Requests to the CA that failed (the certificate held keeps serving).",
            ConstCounter::new(self.cert_counts.failures.load(Relaxed)),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Runs the application's probe at `path` (see [`probes`]): the
    /// status and a line for the kubelet; 404 for a path with no probe.
    pub async fn app_probe(&self, path: &str) -> (u16, String) {
        match &self.app_probes {
            Err(e) => (
                503,
                format!("the application's probes cannot be run: {e}\n"),
            ),
            Ok(probes) => probes
                .run(path)
                .await
                .unwrap_or_else(|| (404, format!("no application probe at {path}\n"))),
        }
    }

    /// True once the agent is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The bootstrap spec for `pod` under `args` (the SDS socket and the
/// certificate files named when `certificates`).
pub fn spec(args: &AgentArgs, pod: &pod::PodInfo, admin_port: u16, certificates: bool) -> Spec {
    let router = args
        .gateway
        .clone()
        .filter(|_| args.mode == "router")
        .map(|g| (g, args.gateway_bind, args.gateway_port_offset));
    let node_id = pod.node_id(&args.cluster_domain);
    Spec {
        node_id: match &router {
            // Istio's node type for gateways.
            Some(_) => node_id.replacen("sidecar~", "router~", 1),
            None => node_id,
        },
        cluster: pod
            .labels
            .get("app")
            .cloned()
            .unwrap_or_else(|| "sextant".to_owned()),
        xds_addrs: args.xds_addrs.clone(),
        admin_addr: format!("127.0.0.1:{admin_port}"),
        delta: args.delta,
        namespace: pod.namespace.clone(),
        workload: Workload {
            labels: pod.labels.clone(),
            ips: pod.ips.clone(),
            // A proxyless client dials what it means: nothing is captured.
            capture: router
                .is_none()
                .then_some(args.mode == "capture" && !args.proxyless),
            router,
        },
        tls: args.xds_ca.as_ref().map(|ca| ClientTls {
            ca: ca.clone(),
            ..Default::default()
        }),
        token_file: args.token_file.clone(),
        sds_socket: certificates.then(|| args.sds_socket()),
        cert_dir: certificates.then(|| args.cert_dir()),
    }
}

/// Runs the agent until it is stopped (SIGTERM, `/quitquitquit`) or
/// cannot go on.
pub async fn run(args: AgentArgs) -> Exit {
    let (mut pod, problems) =
        pod::PodInfo::read(|k| std::env::var(k).ok(), Some(&args.pod_info_dir));
    for p in problems {
        warn!(problem = %p, "pod information");
    }
    let group = match &args.workload_group {
        None => None,
        Some(path) => match vm::read_group(path) {
            Ok(g) => {
                vm::fill_pod(&mut pod, &g);
                Some(g)
            }
            Err(e) => return Exit::Failed(format!("--workload-group: {e}")),
        },
    };
    info!(pod = ?pod.name, namespace = ?pod.namespace, ips = ?pod.ips, labels = pod.labels.len(), "sextant agent starting");
    let ca = args.ca_client(&pod);
    let spec = spec(&args, &pod, args.envoy_admin_port, ca.is_some());
    let (bootstrap, bootstrap_path) = if args.proxyless {
        match spec.grpc() {
            Ok(b) => (b.to_json(), args.grpc_bootstrap()),
            Err(e) => return Exit::Failed(format!("gRPC bootstrap: {e}")),
        }
    } else {
        match spec.envoy() {
            Ok((b, _)) => (b.to_yaml(), args.proxy_dir.join("envoy.yaml")),
            Err(e) => return Exit::Failed(format!("bootstrap: {e}")),
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.proxy_dir) {
        return Exit::Failed(format!("cannot create {}: {e}", args.proxy_dir.display()));
    }
    if let Err(e) = std::fs::write(&bootstrap_path, bootstrap) {
        return Exit::Failed(format!("cannot write {}: {e}", bootstrap_path.display()));
    }

    // The workload certificate: asked for, renewed, served over SDS and
    // written for gRPC. Envoy starts at once; what needs the certificate
    // warms until SDS has it.
    let mut certificate = None;
    let mut cert_tasks = Vec::new();
    let cert_counts = Arc::new(workload::CertCounts::default());
    if let Some(client) = ca {
        let (held_tx, held) = watch::channel(None);
        if !args.proxyless {
            match sds::serve(&args.sds_socket(), sds::Sds::new(held.clone())) {
                Ok(task) => cert_tasks.push(task),
                Err(e) => return Exit::Failed(format!("SDS: {e}")),
            }
        }
        info!(ca = %client.addr, files = %args.cert_dir().display(), sds = !args.proxyless, "asking for the workload certificate");
        cert_tasks.push(tokio::spawn(workload::keep(
            client,
            held_tx,
            Some(args.cert_dir()),
            cert_counts.clone(),
        )));
        certificate = Some(held);
    }
    let app_probes = match &args.app_probes {
        None => Ok(probes::AppProbes::default()),
        Some(json) => probes::AppProbes::parse(json),
    };
    match &app_probes {
        Ok(p) if !p.is_empty() => info!(
            probes = p.len(),
            "running the application's probes for the kubelet"
        ),
        Ok(_) => {}
        Err(e) => {
            error!(error = %e, "SEXTANT_APP_PROBES cannot be run; every /app-health probe answers 503")
        }
    }
    let shared = Arc::new(Shared {
        certificate,
        cert_counts,
        proxyless: args.proxyless,
        app_probes,
        ..Shared::default()
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = match tokio::net::TcpListener::bind(args.status_addr).await {
        Ok(l) => l,
        Err(e) => return Exit::Failed(format!("cannot listen on {}: {e}", args.status_addr)),
    };
    let status_task = tokio::spawn(status::serve(listener, shared.clone(), stop_tx.clone()));
    let registration = match &group {
        None => None,
        Some(group) => match start_registration(&args, &pod, group) {
            Ok(tasks) => Some(tasks),
            Err(e) => return Exit::Failed(format!("--workload-group: {e}")),
        },
    };
    let signals = tokio::spawn(stop_on_signal(stop_tx));
    let exit = if args.proxyless {
        info!(bootstrap = %bootstrap_path.display(), "proxyless: no Envoy; serving readiness and the certificate files");
        let mut stop_rx = stop_rx;
        let _ = stop_rx.wait_for(|s| *s).await;
        Exit::Stopped
    } else {
        supervise(&args, &bootstrap_path, &shared, stop_rx).await
    };
    status_task.abort();
    signals.abort();
    for task in registration.into_iter().flatten() {
        task.abort();
    }
    for task in cert_tasks {
        task.abort();
    }
    exit
}

/// The VM's registration stream and its probe (see [`vm`]).
fn start_registration(
    args: &AgentArgs,
    pod: &pod::PodInfo,
    group: &sextant_core::groups::WorkloadGroup,
) -> Result<[tokio::task::JoinHandle<()>; 2], String> {
    let address = *pod
        .ips
        .first()
        .ok_or("INSTANCE_IP: the workload's address is needed to register it")?;
    let (health, probe) = match &group.probe {
        Some(p) => vm::Probe::new(p)?.watch(),
        None => {
            let (tx, rx) = watch::channel(Some(Ok(())));
            // Held by a task that only waits: the verdict never moves.
            (rx, tokio::spawn(async move { tx.closed().await }))
        }
    };
    let node = vm::node(pod, group, address, &args.cluster_domain);
    info!(group = %group.object(), %address, probe = group.probe.is_some(), "registering this workload");
    let stream = tokio::spawn(vm::keep_registered(args.clone(), node, health));
    Ok([stream, probe])
}

/// Sets `stop` on SIGTERM or SIGINT.
async fn stop_on_signal(stop: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for signals; /quitquitquit still stops the agent");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: draining"),
        _ = int.recv() => info!("SIGINT: draining"),
    }
    let _ = stop.send(true);
}

/// Starts Envoy and keeps it running until `stop`, then drains it.
async fn supervise(
    args: &AgentArgs,
    bootstrap: &std::path::Path,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> Exit {
    let mut restarts = 0u32;
    let mut delay = Duration::from_secs(1);
    loop {
        // How this run of Envoy ended: it could not start, or it exited.
        let (exited, lasted) = match envoy::Envoy::start(args, bootstrap).await {
            Err(envoy::StartError::Spawn(e)) => return Exit::Failed(e),
            Err(envoy::StartError::Failed(e)) => (e, Duration::ZERO),
            Ok(mut proxy) => {
                shared.set_envoy(Some(&proxy));
                let started = Instant::now();
                let exited = tokio::select! {
                    exited = proxy.wait() => Some(exited),
                    _ = stop.wait_for(|s| *s) => None,
                };
                let Some(exited) = exited else {
                    shared
                        .stopping
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    drain(&proxy, args.drain_deadline).await;
                    proxy.stop().await;
                    shared.set_envoy(None);
                    info!("Envoy stopped; exiting");
                    return Exit::Stopped;
                };
                shared.set_envoy(None);
                (exited, started.elapsed())
            }
        };
        if lasted >= Duration::from_secs(60) {
            restarts = 0;
            delay = Duration::from_secs(1);
        }
        restarts += 1;
        if restarts > args.max_restarts {
            return Exit::Failed(format!(
                "Envoy exited {restarts} times in a row ({exited}); giving up"
            ));
        }
        warn!(%exited, restart = restarts, of = args.max_restarts, delay_ms = delay.as_millis() as u64, "Envoy exited unexpectedly; restarting it");
        let stopped = tokio::select! {
            () = tokio::time::sleep(delay) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopped {
            return Exit::Stopped;
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Tells Envoy to drain, then waits until it has no connection open or
/// `deadline` passed.
async fn drain(proxy: &envoy::Envoy, deadline: Duration) {
    let started = Instant::now();
    // Gracefully: every listener stays open for the drain time, and each
    // response asks its connection to close (the drain strategy is
    // immediate), so connections end as their requests finish.
    match admin::call(proxy.admin, "POST", "/drain_listeners?graceful").await {
        Ok((200, _)) => {}
        Ok((status, body)) => warn!(status, body = %body.trim(), "Envoy refused to drain"),
        Err(e) => warn!(error = %e, "cannot ask Envoy to drain"),
    }
    loop {
        match admin::active_connections(proxy.admin).await {
            Ok(0) => {
                info!(
                    after_ms = started.elapsed().as_millis() as u64,
                    "no connection left"
                );
                return;
            }
            Ok(_) | Err(_) if started.elapsed() >= deadline => {
                warn!(
                    deadline_s = deadline.as_secs_f64(),
                    "connections still open at the drain deadline; stopping Envoy"
                );
                return;
            }
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `sextant agent wait`: polls the agent's readiness until it answers 200,
/// or fails after `timeout`.
pub async fn wait(status: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    while started.elapsed() < timeout {
        match admin::call(status, "GET", "/healthz/ready").await {
            Ok((200, _)) => return Ok(started.elapsed()),
            Ok((code, body)) => last = format!("{code}: {}", body.trim()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the agent at {status} was not ready within {timeout:?} (last: {last})"
    ))
}
