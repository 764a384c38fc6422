//! The load generator: simulated proxies, the server under test, the floor.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use sextant_core::{Health, MemoryRegistry, Service};
use sextant_testkit::fixtures;
use sextant_xds::resource::ResourceType;
use sextant_xds::server::codec::{Outbound, Wire};
use sextant_xds::snapshot::Snapshot;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Body, BoxFuture, StdError, http};

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

/// Entry point; returns the exit code.
pub async fn main(args: Vec<String>) -> i32 {
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args).await,
        Some("floor") => floor(&args).await,
        Some("run") => run(&args).await,
        _ => {
            eprintln!(
                "usage: loadgen run --scenario s1|s2|s4|s5 [--quick] [--delta] | serve | floor"
            );
            2
        }
    }
}

// ---------------------------------------------------------------- servers

/// The service the flips toggle: endpoint 0 of service 0.
fn flipped(mesh: &[Service], n: u64) -> Service {
    let mut s = mesh[0].clone();
    s.endpoints[0].health = if n % 2 == 1 {
        Health::Unhealthy
    } else {
        Health::Healthy
    };
    s
}

async fn control_loop(
    listener: tokio::net::TcpListener,
    on_flip: impl Fn(u64) + Send + Sync + 'static,
) {
    let on_flip = Arc::new(on_flip);
    while let Ok((conn, _)) = listener.accept().await {
        let on_flip = on_flip.clone();
        tokio::spawn(async move {
            let (r, mut w) = conn.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(n) = line.strip_prefix("flip ").and_then(|n| n.parse().ok()) {
                    on_flip(n);
                }
                let _ = w.write_all(b"ok\n").await;
            }
        });
    }
}

async fn serve(args: &[String]) -> i32 {
    let mesh = fixtures::mesh(arg(args, "--services", 1000), arg(args, "--endpoints", 10));
    let registry = MemoryRegistry::new("memory/load");
    registry.reset(mesh.clone());
    let running = sextant::Sextant::new()
        .registry(registry.clone())
        .xds_addr("127.0.0.1:0".parse().expect("addr"))
        .admin_addr(None)
        .start()
        .await
        .expect("start");
    running.aggregator().ready().await.expect("ready");
    let control = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "ready {} {}",
        running.xds_addr,
        control.local_addr().expect("addr")
    );
    control_loop(control, move |n| registry.insert(flipped(&mesh, n))).await;
    0
}

type StreamTx = mpsc::Sender<Result<Outbound, tonic::Status>>;

/// The floor: every response pre-encoded; no registry, no translation, no
/// bookkeeping. A request without a nonce gets the full set of its type; a
/// flip pushes one pre-encoded assignment to every stream.
#[derive(Clone)]
struct Floor {
    full: Arc<BTreeMap<ResourceType, Outbound>>,
    flips: Arc<[Outbound; 2]>,
    streams: Arc<Mutex<Vec<StreamTx>>>,
}

async fn floor(args: &[String]) -> i32 {
    let mesh = fixtures::mesh(arg(args, "--services", 1000), arg(args, "--endpoints", 10));
    let view = |services: Vec<Service>| {
        let id = sextant_core::RegistryId::new("memory/floor");
        let mut m = sextant_aggregate::MergeState::new(sextant_aggregate::MergeMode::Union);
        m.add_shard(id.clone());
        m.apply(&id, sextant_core::Event::Reset(services));
        Arc::new(m.build_view(true).expect("view"))
    };
    let snap = Snapshot::empty(Default::default()).next(view(mesh.clone()));
    let mut full = BTreeMap::new();
    for kind in ResourceType::ALL {
        let resources = snap.resources(kind).resources.values().cloned().collect();
        full.insert(
            kind,
            Outbound {
                wire: Wire::Sotw,
                kind,
                version_info: "1".into(),
                nonce: "1".into(),
                resources,
                removed: vec![],
            },
        );
    }
    let flip_out = |n: u64| {
        let mut services = mesh.clone();
        services[0] = flipped(&mesh, n);
        let s = Snapshot::empty(Default::default()).next(view(services));
        let name = s
            .resources(ResourceType::Endpoint)
            .resources
            .keys()
            .next()
            .cloned()
            .expect("cla");
        let r = s.get(ResourceType::Endpoint, &name).cloned().expect("cla");
        Outbound {
            wire: Wire::Sotw,
            kind: ResourceType::Endpoint,
            version_info: format!("f{n}"),
            nonce: format!("f{n}"),
            resources: vec![r],
            removed: vec![],
        }
    };
    let floor = Floor {
        full: Arc::new(full),
        flips: Arc::new([flip_out(0), flip_out(1)]),
        streams: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let control = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "ready {} {}",
        listener.local_addr().expect("addr"),
        control.local_addr().expect("addr")
    );
    let f = floor.clone();
    tokio::spawn(control_loop(control, move |n| {
        let out = f.flips[(n % 2) as usize].clone();
        let streams = f.streams.lock().expect("lock").clone();
        tokio::spawn(async move {
            for s in streams {
                let _ = s.send(Ok(out.clone())).await;
            }
        });
    }));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let _ = tonic::transport::Server::builder()
        .add_service(floor)
        .serve_with_incoming(incoming)
        .await;
    0
}

impl tonic::server::NamedService for Floor {
    const NAME: &'static str = sextant_xds::server::SERVICE_NAME;
}

impl Floor {
    /// One stream: answer each first request of a type with its full set.
    fn stream(
        &self,
        requests: tonic::Streaming<DiscoveryRequest>,
    ) -> sextant_xds::server::ResponseStream {
        let floor = self.clone();
        let (tx, rx) = mpsc::channel(16);
        floor.streams.lock().expect("lock").push(tx.clone());
        let mut requests = requests;
        tokio::spawn(async move {
            while let Ok(Some(r)) = requests.message().await {
                if r.response_nonce.is_empty()
                    && let Some(out) =
                        ResourceType::from_type_url(&r.type_url).and_then(|k| floor.full.get(&k))
                    && tx.send(Ok(out.clone())).await.is_err()
                {
                    break;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

impl<B> tower_service::Service<http::Request<B>> for Floor
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The same request decoding and response writer as Sextant's server.
        let response = sextant_xds::server::ads_response(
            req,
            |_, requests: tonic::Streaming<DiscoveryRequest>| self.stream(requests),
        );
        Box::pin(async move { Ok(response) })
    }
}

// ---------------------------------------------------------------- proxies

/// The first length-delimited field 1 of a message: the name of a Cluster,
/// Listener or RouteConfiguration, the cluster_name of an assignment.
fn field_one(mut b: &[u8]) -> String {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while let Some(key) = varint(&mut b) {
        let (tag, wt) = (key >> 3, key & 7);
        match wt {
            0 => {
                varint(&mut b);
            }
            2 => {
                let Some(len) = varint(&mut b) else { break };
                let len = len as usize;
                if len > b.len() {
                    break;
                }
                if tag == 1 {
                    return String::from_utf8_lossy(&b[..len]).into_owned();
                }
                b = &b[len..];
            }
            5 => b = b.get(4..).unwrap_or_default(),
            1 => b = b.get(8..).unwrap_or_default(),
            _ => break,
        }
    }
    String::new()
}

impl Stats {
    /// A configured proxy ACKed an assignment: the first one after each
    /// flip is that flip's.
    fn assignment_acked(&self, epoch_seen: &mut u64, resources: usize) {
        let epoch = self.flip_epoch.load(Ordering::Acquire);
        if epoch > *epoch_seen {
            *epoch_seen = epoch;
            self.flip_resources.fetch_add(resources, Ordering::Relaxed);
            self.flip_acks.lock().expect("lock").push(Instant::now());
            self.progress.notify_one();
        }
    }
}

/// What all proxies report.
#[derive(Default)]
struct Stats {
    configured: Mutex<Vec<Instant>>,
    flip_epoch: AtomicU64,
    flip_acks: Mutex<Vec<Instant>>,
    flip_resources: AtomicUsize,
    progress: Notify,
    failures: AtomicUsize,
}

async fn client(addr: SocketAddr) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20)
}

fn sotw(
    type_url: &str,
    names: &[String],
    version: &str,
    nonce: &str,
    node: Option<Node>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.to_vec(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        node,
        ..Default::default()
    }
}

/// One Envoy-like SotW proxy: CDS, then EDS for its clusters, then LDS, then
/// RDS; ACKs everything; records when it is fully configured and when it
/// ACKs an assignment after each flip.
async fn sotw_proxy(addr: SocketAddr, id: usize, stats: Arc<Stats>) {
    let mut c = client(addr).await;
    let (tx, rx) = mpsc::channel(16);
    let node = Node {
        id: format!("proxy-{id}"),
        cluster: "load".into(),
        ..Default::default()
    };
    let _ = tx.send(sotw(CDS, &[], "", "", Some(node))).await;
    let Ok(resp) = c.stream_aggregated_resources(ReceiverStream::new(rx)).await else {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut stream = resp.into_inner();
    let (mut clusters, mut routes) = (Vec::new(), Vec::new());
    let (mut eds_seen, mut lds_asked, mut configured) = (false, false, false);
    let mut epoch_seen = 0;
    while let Ok(Some(r)) = stream.message().await {
        let names: Vec<String> = r.resources.iter().map(|a| field_one(&a.value)).collect();
        match r.type_url.as_str() {
            CDS => {
                let first = clusters.is_empty();
                clusters = names;
                let _ = tx
                    .send(sotw(CDS, &[], &r.version_info, &r.nonce, None))
                    .await;
                if first {
                    let _ = tx.send(sotw(EDS, &clusters, "", "", None)).await;
                }
            }
            EDS => {
                let _ = tx
                    .send(sotw(EDS, &clusters, &r.version_info, &r.nonce, None))
                    .await;
                if eds_seen && configured {
                    stats.assignment_acked(&mut epoch_seen, r.resources.len());
                }
                eds_seen = true;
                if !lds_asked {
                    lds_asked = true;
                    let _ = tx.send(sotw(LDS, &[], "", "", None)).await;
                }
            }
            LDS => {
                routes = names;
                let _ = tx
                    .send(sotw(LDS, &[], &r.version_info, &r.nonce, None))
                    .await;
                let _ = tx.send(sotw(RDS, &routes, "", "", None)).await;
            }
            RDS => {
                let _ = tx
                    .send(sotw(RDS, &routes, &r.version_info, &r.nonce, None))
                    .await;
                if !configured {
                    configured = true;
                    epoch_seen = stats.flip_epoch.load(Ordering::Acquire);
                    stats.configured.lock().expect("lock").push(Instant::now());
                    stats.progress.notify_one();
                }
            }
            _ => {}
        }
    }
}

/// One delta proxy: wildcard CDS, named EDS, then LDS and RDS.
async fn delta_proxy(addr: SocketAddr, id: usize, stats: Arc<Stats>) {
    let mut c = client(addr).await;
    let (tx, rx) = mpsc::channel(16);
    let req = |type_url: &str, subscribe: Vec<String>, nonce: &str| DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: subscribe,
        response_nonce: nonce.into(),
        ..Default::default()
    };
    let mut first = req(CDS, vec!["*".into()], "");
    first.node = Some(Node {
        id: format!("proxy-{id}"),
        cluster: "load".into(),
        ..Default::default()
    });
    let _ = tx.send(first).await;
    let Ok(resp) = c.delta_aggregated_resources(ReceiverStream::new(rx)).await else {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut stream = resp.into_inner();
    let (mut eds_seen, mut lds_asked, mut configured, mut cds_seen) = (false, false, false, false);
    let mut epoch_seen = 0;
    while let Ok(Some(r)) = stream.message().await {
        let names: Vec<String> = r.resources.iter().map(|x| x.name.clone()).collect();
        let _ = tx.send(req(&r.type_url, vec![], &r.nonce)).await;
        match r.type_url.as_str() {
            CDS if !cds_seen => {
                cds_seen = true;
                let _ = tx.send(req(EDS, names, "")).await;
            }
            EDS => {
                if eds_seen && configured {
                    stats.assignment_acked(&mut epoch_seen, r.resources.len());
                }
                eds_seen = true;
                if !lds_asked {
                    lds_asked = true;
                    let _ = tx.send(req(LDS, vec!["*".into()], "")).await;
                }
            }
            LDS => {
                let _ = tx.send(req(RDS, names, "")).await;
            }
            RDS if !configured => {
                configured = true;
                epoch_seen = stats.flip_epoch.load(Ordering::Acquire);
                stats.configured.lock().expect("lock").push(Instant::now());
                stats.progress.notify_one();
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- driver

struct Server {
    child: tokio::process::Child,
    xds: SocketAddr,
    control: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Server {
    async fn start(role: &str, services: usize, endpoints: usize) -> Server {
        let exe = std::env::current_exe().expect("exe");
        let mut child = tokio::process::Command::new(exe)
            .args([
                role,
                "--services",
                &services.to_string(),
                "--endpoints",
                &endpoints.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let line = BufReader::new(stdout)
            .lines()
            .next_line()
            .await
            .expect("read")
            .expect("ready line");
        let parts: Vec<&str> = line.split_whitespace().collect();
        let xds = parts[1].parse().expect("xds addr");
        let control: SocketAddr = parts[2].parse().expect("control addr");
        let control = BufReader::new(
            tokio::net::TcpStream::connect(control)
                .await
                .expect("control"),
        );
        Server {
            child,
            xds,
            control,
        }
    }

    async fn flip(&mut self, n: u64) {
        self.control
            .get_mut()
            .write_all(format!("flip {n}\n").as_bytes())
            .await
            .expect("flip");
        let mut ok = String::new();
        self.control.read_line(&mut ok).await.expect("ok");
    }

    fn proc_stat(&self) -> (f64, u64, u64) {
        let pid = self.child.id().unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15; 12 and 13 after the name.
        let cpu = (ticks(11) + ticks(12)) / 100.0;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (cpu, kb("VmRSS:"), kb("VmHWM:"))
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

async fn wait_until(stats: &Stats, done: impl Fn(&Stats) -> bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !done(stats) {
        if Instant::now() > deadline {
            return false;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), stats.progress.notified()).await;
    }
    true
}

/// Connects `n` proxies at once; returns them configured and the timings.
async fn storm(
    addr: SocketAddr,
    n: usize,
    delta: bool,
) -> (
    Arc<Stats>,
    serde_json::Value,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let s = stats.clone();
            if delta {
                tokio::spawn(delta_proxy(addr, i, s))
            } else {
                tokio::spawn(sotw_proxy(addr, i, s))
            }
        })
        .collect();
    let ok = wait_until(
        &stats,
        |s| s.configured.lock().expect("lock").len() >= n,
        Duration::from_secs(120),
    )
    .await;
    let mut t: Vec<Duration> = stats
        .configured
        .lock()
        .expect("lock")
        .iter()
        .map(|i| *i - start)
        .collect();
    t.sort();
    let v = serde_json::json!({
        "proxies": n, "configured": t.len(), "complete": ok,
        "p50_ms": ms(pct(&t, 0.5)), "p99_ms": ms(pct(&t, 0.99)), "max_ms": ms(t.last().copied().unwrap_or_default()),
    });
    (stats, v, tasks)
}

/// `flips` endpoint flips, each waited for until every proxy ACKed it.
async fn flips(server: &mut Server, stats: &Stats, n: usize, flips: usize) -> serde_json::Value {
    let mut conv = Vec::new();
    let mut incomplete = 0;
    for f in 1..=flips as u64 {
        stats.flip_acks.lock().expect("lock").clear();
        stats.flip_epoch.store(f, Ordering::Release);
        let t0 = Instant::now();
        server.flip(f).await;
        if !wait_until(
            stats,
            |s| s.flip_acks.lock().expect("lock").len() >= n,
            Duration::from_secs(10),
        )
        .await
        {
            incomplete += 1;
        }
        if let Some(last) = stats.flip_acks.lock().expect("lock").iter().max() {
            conv.push(*last - t0);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    conv.sort();
    serde_json::json!({
        "flips": flips, "incomplete": incomplete,
        "p50_ms": ms(pct(&conv, 0.5)), "p99_ms": ms(pct(&conv, 0.99)), "max_ms": ms(conv.last().copied().unwrap_or_default()),
        "resources_per_flip_per_proxy": stats.flip_resources.load(Ordering::Relaxed) as f64 / (flips * n).max(1) as f64,
    })
}

async fn scenario(
    role: &str,
    name: &str,
    quick: bool,
    delta: bool,
    proxies: Option<usize>,
) -> serde_json::Value {
    let (services, endpoints, n, nflips) = match (name, quick) {
        ("s4", true) => (1, 10_000, 100, 20),
        ("s4", false) => (1, 10_000, 1000, 200),
        ("s5", true) => (100, 10, 200, 0),
        ("s5", false) => (1000, 10, 1000, 0),
        (_, true) => (100, 10, 100, 20),
        (_, false) => (1000, 10, 1000, 200),
    };
    let n = proxies.unwrap_or(n);
    let mut server = Server::start(role, services, endpoints).await;
    let (cpu0, _, _) = server.proc_stat();
    let (stats, connect, tasks) = storm(server.xds, n, delta).await;
    let (cpu1, rss1, _) = server.proc_stat();
    let mut out = serde_json::json!({
        "server": role, "scenario": name, "delta": delta, "services": services, "endpoints_per_service": endpoints,
        "connect": connect, "connect_cpu_s": cpu1 - cpu0, "rss_after_connect_kib": rss1,
    });
    if name == "s2" || name == "s4" {
        let f = flips(&mut server, &stats, n, nflips).await;
        let (cpu2, _, _) = server.proc_stat();
        out["flips"] = f;
        out["flips_cpu_s"] = serde_json::json!(cpu2 - cpu1);
    }
    if name == "s5" {
        // Five times the proxies, idle: the memory each one costs.
        let (more, _, more_tasks) = storm(server.xds, 4 * n, delta).await;
        drop(more);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, rss5, _) = server.proc_stat();
        out["rss_5x_kib"] = serde_json::json!(rss5);
        out["kib_per_extra_proxy"] =
            serde_json::json!((rss5 as f64 - rss1 as f64) / (4 * n) as f64);
        for t in more_tasks {
            t.abort();
        }
    }
    let (_, _, hwm) = server.proc_stat();
    out["peak_rss_kib"] = serde_json::json!(hwm);
    out["failures"] = serde_json::json!(stats.failures.load(Ordering::Relaxed));
    for t in tasks {
        t.abort();
    }
    out
}

async fn run(args: &[String]) -> i32 {
    let name: String = arg(args, "--scenario", "s1".to_owned());
    let quick = flag(args, "--quick");
    let delta = flag(args, "--delta");
    let proxies = args
        .iter()
        .position(|a| a == "--proxies")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    if !["s1", "s2", "s4", "s5"].contains(&name.as_str()) {
        eprintln!("scenario {name:?} is not implemented; available: s1, s2, s4, s5");
        return 2;
    }
    let delta = delta || name == "s4";
    let sextant = scenario("serve", &name, quick, delta, proxies).await;
    // The floor speaks state of the world only.
    let floor = if delta || name == "s5" {
        serde_json::Value::Null
    } else {
        scenario("floor", &name, quick, false, proxies).await
    };
    let result = serde_json::json!({ "sextant": sextant, "floor": floor });
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
    0
}
