//! The load generator: simulated proxies, the server under test, the floor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use sextant_core::{Health, MemoryRegistry, Service};
use sextant_testkit::fixtures;
use sextant_xds::resource::ResourceType;
use sextant_xds::server::codec::{Outbound, Wire};
use sextant_xds::server::{AdsHandler, AdsService, ResponseStream};
use sextant_xds::snapshot::Snapshot;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

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
        Some("serve-file") => serve_file(&args).await,
        Some("run") => run(&args).await,
        _ => {
            eprintln!(
                "usage: loadgen run --scenario s1|s2|s3|s4|s5|s6 [--quick] [--delta] | serve | floor | serve-file"
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

/// The cluster whose assignment every change scenario ends with: proxies
/// count an ACK as a change's only when the response carries it.
const MARKER: &str = "outbound|8080||svc-0.mesh.svc";

/// The services after burst `b` of a rollout: `changes` endpoint health
/// toggles spread over services 1.. (service 0 is the marker), then the
/// marker flipped to `b`'s state.
fn after_bursts(mesh: &[Service], changes: usize, bursts: u64) -> Vec<Service> {
    let mut state = mesh.to_vec();
    for b in 1..=bursts {
        for k in 0..changes {
            burst_change(&mut state, k);
        }
        state[0] = flipped(mesh, b);
    }
    state
}

/// Change `k` of a burst; returns the index of the service it touched.
fn burst_change(state: &mut [Service], k: usize) -> usize {
    let others = state.len() - 1;
    let s = 1 + k % others;
    let e = (k / others) % state[s].endpoints.len();
    let ep = &mut state[s].endpoints[e];
    ep.health = if ep.health == Health::Healthy {
        Health::Unhealthy
    } else {
        Health::Healthy
    };
    s
}

type Reply = futures::future::BoxFuture<'static, String>;

/// Serves the control port: `flip N`, `burst CHANGES MILLIS N` and `plans`
/// lines, each answered with one line.
async fn control_loop(
    listener: tokio::net::TcpListener,
    metrics: Option<Arc<sextant_xds::Metrics>>,
    handler: impl Fn(Vec<u64>) -> Reply + Send + Sync + 'static,
) {
    let handler = Arc::new(handler);
    while let Ok((conn, _)) = listener.accept().await {
        let handler = handler.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let (r, mut w) = conn.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let numbers: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|n| n.parse().ok())
                    .collect();
                let mut words = line.split_whitespace();
                let reply = match (words.next(), numbers.len()) {
                    (Some("flip"), 1) => handler(numbers).await,
                    (Some("burst"), 3) => handler(numbers).await,
                    // Plans computed and shared so far (Sextant only).
                    (Some("plans"), 0) => match &metrics {
                        Some(m) => format!(
                            "ok {} {}",
                            sextant_xds::Metrics::get(&m.plans_computed_total),
                            sextant_xds::Metrics::get(&m.plans_shared_total)
                        ),
                        None => "ok".to_owned(),
                    },
                    _ => "error".to_owned(),
                };
                let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
            }
        });
    }
}

/// `flip N` (one number) or `burst CHANGES MILLIS N`: the command's numbers.
fn burst_args(numbers: &[u64]) -> Option<(usize, Duration, u64)> {
    match numbers {
        [c, ms, n] => Some((*c as usize, Duration::from_millis(*ms), *n)),
        _ => None,
    }
}

/// Starts Sextant on `registry`, waits until it serves, and prints the
/// line the driver reads: `ready XDS_ADDR CONTROL_ADDR`.
async fn start_announced(
    registry: impl sextant_core::Registry,
) -> (sextant::Running, tokio::net::TcpListener) {
    let running = sextant::Sextant::new()
        .registry(registry)
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
    (running, control)
}

async fn serve(args: &[String]) -> i32 {
    let mesh = fixtures::mesh(arg(args, "--services", 1000), arg(args, "--endpoints", 10));
    let registry = MemoryRegistry::new("memory/load");
    registry.reset(mesh.clone());
    let (running, control) = start_announced(registry.clone()).await;
    let metrics = Some(running.xds().metrics().clone());
    let state = Arc::new(Mutex::new(mesh.clone()));
    control_loop(control, metrics, move |numbers| {
        let (registry, mesh, state) = (registry.clone(), mesh.clone(), state.clone());
        Box::pin(async move {
            match burst_args(&numbers) {
                None => {
                    registry.insert(flipped(&mesh, numbers[0]));
                    "ok".to_owned()
                }
                Some((changes, over, n)) => {
                    // Spread the changes evenly over `over`, a batch a millisecond.
                    let start = Instant::now();
                    let ticks = over.as_millis().max(1) as usize;
                    let per_tick = changes.div_ceil(ticks).max(1);
                    let mut tick = tokio::time::interval(Duration::from_millis(1));
                    let mut k = 0;
                    while k < changes {
                        tick.tick().await;
                        let batch: Vec<Service> = {
                            let mut st = state.lock().expect("lock");
                            (k..(k + per_tick).min(changes))
                                .map(|k| {
                                    let i = burst_change(&mut st, k);
                                    st[i].clone()
                                })
                                .collect()
                        };
                        k += batch.len();
                        for s in batch {
                            registry.insert(s);
                        }
                    }
                    let marker = flipped(&mesh, n);
                    state.lock().expect("lock")[0] = marker.clone();
                    registry.insert(marker);
                    format!("ok {}", start.elapsed().as_micros())
                }
            }
        })
    })
    .await;
    0
}

/// S6's server: Sextant with the file registry on `--file`.
async fn serve_file(args: &[String]) -> i32 {
    let path: String = arg(args, "--file", String::new());
    let (_running, control) = start_announced(sextant_file::FileRegistry::new(
        "file/main",
        vec![path.into()],
        sextant_file::FileRegistryConfig::default(),
    ))
    .await;
    control_loop(control, None, |_| Box::pin(async { "error".to_owned() })).await;
    0
}

type StreamTx = mpsc::Sender<Result<Outbound, tonic::Status>>;

/// The floor: every response pre-encoded; no registry, no translation, no
/// bookkeeping. A request without a nonce gets the full set of its type; a
/// flip pushes one pre-encoded assignment to every stream. It speaks both
/// state of the world and delta (the same resources on the other wire).
#[derive(Clone)]
struct Floor {
    full: Arc<BTreeMap<ResourceType, Outbound>>,
    flips: Arc<[Outbound; 2]>,
    /// Every assignment after an even and an odd number of bursts.
    bursts: Arc<[Outbound; 2]>,
    streams: Arc<Mutex<Vec<(StreamTx, Wire)>>>,
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
        let resources: Vec<_> = snap.resources(kind).resources.values().cloned().collect();
        full.insert(
            kind,
            Outbound {
                wire: Wire::Sotw,
                kind,
                version_info: "1".into(),
                nonce: "1".into(),
                resources: Arc::new(resources.into()),
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
            resources: Arc::new(vec![r].into()),
            removed: vec![],
        }
    };
    let changes: usize = arg(args, "--burst", 0);
    let burst_out = |b: u64| {
        let s = Snapshot::empty(Default::default()).next(view(after_bursts(&mesh, changes, b)));
        Outbound {
            wire: Wire::Sotw,
            kind: ResourceType::Endpoint,
            version_info: format!("b{b}"),
            nonce: format!("b{b}"),
            resources: Arc::new(
                s.resources(ResourceType::Endpoint)
                    .resources
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .into(),
            ),
            removed: vec![],
        }
    };
    let floor = Floor {
        full: Arc::new(full),
        flips: Arc::new([flip_out(0), flip_out(1)]),
        bursts: Arc::new(if changes > 0 && mesh.len() > 1 {
            [burst_out(2), burst_out(1)]
        } else {
            [flip_out(0), flip_out(1)]
        }),
        streams: Arc::default(),
    };
    // The same backlog as Sextant's xDS listener.
    let listener = sextant_xds::server::listen("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let control = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "ready {} {}",
        listener.local_addr().expect("addr"),
        control.local_addr().expect("addr")
    );
    let f = floor.clone();
    tokio::spawn(control_loop(control, None, move |numbers| {
        let f = f.clone();
        Box::pin(async move {
            // A flip pushes its assignment; a burst waits out the rollout
            // (a null server has nothing to do meanwhile), then pushes every
            // assignment once.
            let (out, reply) = match burst_args(&numbers) {
                None => (f.flips[(numbers[0] % 2) as usize].clone(), "ok".to_owned()),
                Some((_, over, n)) => {
                    tokio::time::sleep(over).await;
                    (
                        f.bursts[(n % 2) as usize].clone(),
                        format!("ok {}", over.as_micros()),
                    )
                }
            };
            let streams = f.streams.lock().expect("lock").clone();
            tokio::spawn(async move {
                for (s, wire) in streams {
                    let _ = s
                        .send(Ok(Outbound {
                            wire,
                            ..out.clone()
                        }))
                        .await;
                }
            });
            reply
        })
    }));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let _ = tonic::transport::Server::builder()
        .add_service(AdsService::new(floor))
        .serve_with_incoming(incoming)
        .await;
    0
}

/// A request that starts a type: no nonce yet. The floor answers it with
/// the type's full set and needs nothing from ACKs.
trait FirstOfType {
    fn first_of_type(&self) -> Option<ResourceType>;
}

impl FirstOfType for sextant_xds::server::SotwRequest {
    fn first_of_type(&self) -> Option<ResourceType> {
        self.response_nonce
            .is_empty()
            .then(|| ResourceType::from_type_url(&self.type_url))
            .flatten()
    }
}

impl FirstOfType for DeltaDiscoveryRequest {
    fn first_of_type(&self) -> Option<ResourceType> {
        self.response_nonce
            .is_empty()
            .then(|| ResourceType::from_type_url(&self.type_url))
            .flatten()
    }
}

impl Floor {
    /// One stream: answer each first request of a type with its full set,
    /// on the stream's wire.
    fn stream<Req>(&self, wire: Wire, mut requests: tonic::Streaming<Req>) -> ResponseStream
    where
        Req: FirstOfType + prost::Message + Default + Send + 'static,
    {
        let floor = self.clone();
        let (tx, rx) = mpsc::channel(16);
        floor.streams.lock().expect("lock").push((tx.clone(), wire));
        tokio::spawn(async move {
            while let Ok(Some(r)) = requests.message().await {
                if let Some(out) = r.first_of_type().and_then(|k| floor.full.get(&k))
                    && tx
                        .send(Ok(Outbound {
                            wire,
                            ..out.clone()
                        }))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

/// Mounted with Sextant's own `AdsService`: the same request decoding and
/// response writer, only the handler differs.
impl AdsHandler for Floor {
    fn sotw(
        &self,
        _: sextant_xds::server::Peer,
        requests: tonic::Streaming<sextant_xds::server::SotwRequest>,
    ) -> ResponseStream {
        self.stream(Wire::Sotw, requests)
    }

    fn delta(
        &self,
        _: sextant_xds::server::Peer,
        requests: tonic::Streaming<DeltaDiscoveryRequest>,
    ) -> ResponseStream {
        self.stream(Wire::Delta, requests)
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
    fn received(&self, response: &impl prost::Message) {
        self.bytes
            .fetch_add(response.encoded_len() as u64, Ordering::Relaxed);
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A proxy could not open its stream; the first few errors are printed.
    fn failed(&self, e: &tonic::Status) {
        if self.failures.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!("proxy stream failed: {e}");
        }
    }

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
    /// Bytes of every response the proxies received (protobuf size).
    bytes: AtomicU64,
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
    let resp = match c.stream_aggregated_resources(ReceiverStream::new(rx)).await {
        Ok(r) => r,
        Err(e) => {
            stats.failed(&e);
            return;
        }
    };
    let mut stream = resp.into_inner();
    let (mut clusters, mut routes) = (Vec::new(), Vec::new());
    let (mut eds_seen, mut lds_asked, mut configured) = (false, false, false);
    let mut epoch_seen = 0;
    while let Ok(Some(r)) = stream.message().await {
        stats.received(&r);
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
                if eds_seen && configured && names.iter().any(|n| n == MARKER) {
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
    let resp = match c.delta_aggregated_resources(ReceiverStream::new(rx)).await {
        Ok(r) => r,
        Err(e) => {
            stats.failed(&e);
            return;
        }
    };
    let mut stream = resp.into_inner();
    let (mut eds_seen, mut lds_asked, mut configured, mut cds_seen) = (false, false, false, false);
    let mut epoch_seen = 0;
    while let Ok(Some(r)) = stream.message().await {
        stats.received(&r);
        let names: Vec<String> = r.resources.iter().map(|x| x.name.clone()).collect();
        let _ = tx.send(req(&r.type_url, vec![], &r.nonce)).await;
        match r.type_url.as_str() {
            CDS if !cds_seen => {
                cds_seen = true;
                let _ = tx.send(req(EDS, names, "")).await;
            }
            EDS => {
                if eds_seen && configured && names.iter().any(|n| n == MARKER) {
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
    async fn start(role: &str, services: usize, endpoints: usize, extra: &[String]) -> Server {
        let exe = std::env::current_exe().expect("exe");
        let mut child = tokio::process::Command::new(exe)
            .args([
                role,
                "--services",
                &services.to_string(),
                "--endpoints",
                &endpoints.to_string(),
            ])
            .args(extra)
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
        self.command(&format!("flip {n}")).await;
    }

    /// Sends one control command; returns its reply.
    async fn command(&mut self, line: &str) -> String {
        self.control
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("command");
        let mut reply = String::new();
        self.control.read_line(&mut reply).await.expect("reply");
        assert!(reply.starts_with("ok"), "{line}: {reply}");
        reply.trim().to_owned()
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
        let change = async {
            let t0 = Instant::now();
            server.flip(f).await;
            t0
        };
        let (changed, complete, last) =
            marked_change(stats, n, f, Duration::from_secs(10), change).await;
        incomplete += usize::from(!complete);
        if let Some(last) = last {
            conv.push(last - changed);
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

/// Runs change number `epoch`, which ends with the marker and returns when
/// its last change was made; then waits (at most `limit`) until all `n`
/// proxies ACKed a response carrying the marker. Returns the time of the
/// last change, whether all ACKed, and the last ACK.
async fn marked_change(
    stats: &Stats,
    n: usize,
    epoch: u64,
    limit: Duration,
    change: impl std::future::Future<Output = Instant>,
) -> (Instant, bool, Option<Instant>) {
    stats.flip_acks.lock().expect("lock").clear();
    stats.flip_epoch.store(epoch, Ordering::Release);
    let changed = change.await;
    let complete = wait_until(
        stats,
        |s| s.flip_acks.lock().expect("lock").len() >= n,
        limit,
    )
    .await;
    let last = stats.flip_acks.lock().expect("lock").iter().max().copied();
    (changed, complete, last)
}

/// S3: rollouts of `changes` endpoint changes over `over`, each ended by
/// the marker; convergence is from the last change to the last proxy's ACK
/// of the response that carries the marker.
async fn bursts(
    server: &mut Server,
    stats: &Stats,
    n: usize,
    changes: usize,
    over: Duration,
    count: u64,
) -> serde_json::Value {
    let mut after_last = Vec::new();
    let mut incomplete = 0;
    for b in 1..=count {
        let change = async {
            let t0 = Instant::now();
            let reply = server
                .command(&format!("burst {changes} {} {b}", over.as_millis()))
                .await;
            let took: u64 = reply
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .expect("burst duration");
            t0 + Duration::from_micros(took)
        };
        let (last_change, complete, last) =
            marked_change(stats, n, b, Duration::from_secs(30), change).await;
        incomplete += usize::from(!complete);
        if let Some(last) = last {
            after_last.push(last.saturating_duration_since(last_change));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ms_list: Vec<f64> = after_last.iter().map(|d| ms(*d)).collect();
    serde_json::json!({
        "bursts": count, "changes_per_burst": changes, "over_ms": over.as_millis() as u64,
        "incomplete": incomplete, "after_last_change_ms": ms_list,
        "max_after_last_change_ms": ms(after_last.iter().max().copied().unwrap_or_default()),
    })
}

/// S3's size: (changes per burst, bursts).
fn s3_size(quick: bool) -> (usize, u64) {
    if quick { (1_000, 3) } else { (10_000, 3) }
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
    let (changes, nbursts) = s3_size(quick);
    let extra = vec!["--burst".to_owned(), changes.to_string()];
    let mut server = Server::start(role, services, endpoints, &extra).await;
    let (cpu0, _, _) = server.proc_stat();
    let (stats, connect, tasks) = storm(server.xds, n, delta).await;
    let (cpu1, rss1, _) = server.proc_stat();
    let mut out = serde_json::json!({
        "server": role, "scenario": name, "delta": delta, "services": services, "endpoints_per_service": endpoints,
        "connect": connect, "connect_cpu_s": cpu1 - cpu0, "rss_after_connect_kib": rss1,
        "connect_bytes": stats.bytes(),
    });
    let bytes1 = stats.bytes();
    if name == "s2" || name == "s4" {
        let f = flips(&mut server, &stats, n, nflips).await;
        let (cpu2, _, _) = server.proc_stat();
        out["flips"] = f;
        out["flips_cpu_s"] = serde_json::json!(cpu2 - cpu1);
        out["flips_bytes"] = serde_json::json!(stats.bytes() - bytes1);
    }
    if name == "s3" {
        let b = bursts(
            &mut server,
            &stats,
            n,
            changes,
            Duration::from_secs(1),
            nbursts,
        )
        .await;
        let (cpu2, _, _) = server.proc_stat();
        out["bursts"] = b;
        out["bursts_cpu_s"] = serde_json::json!(cpu2 - cpu1);
        out["bursts_bytes"] = serde_json::json!(stats.bytes() - bytes1);
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
    // How often a connection's next step was computed by itself or taken
    // from another connection in the same state (the floor has no plans).
    let plans = server.command("plans").await;
    let mut counts = plans
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse::<u64>().ok());
    if let (Some(computed), Some(shared)) = (counts.next().flatten(), counts.next().flatten()) {
        out["plans_computed"] = serde_json::json!(computed);
        out["plans_shared"] = serde_json::json!(shared);
    }
    out["failures"] = serde_json::json!(stats.failures.load(Ordering::Relaxed));
    for t in tasks {
        t.abort();
    }
    out
}

/// S6: a registry file of `services` x 10 endpoints; from process start to
/// ready (every registry read) and to one proxy fully configured, and peak
/// RSS. The reference is parsing the same file into the model alone.
/// S6: Sextant started on one registry file (YAML, or JSON with `json`);
/// the reference is parsing that file into the model, alone.
async fn scenario_s6(quick: bool, json: bool) -> serde_json::Value {
    let services = if quick { 1_000 } else { 10_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = fixtures::mesh(services, 10);
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Doc {
        services: Vec<Service>,
    }
    let (path, text) = if json {
        let text = serde_json::to_string(&Doc { services: mesh }).expect("json");
        (dir.path().join("mesh.json"), text)
    } else {
        (dir.path().join("mesh.yaml"), fixtures::registry_yaml(&mesh))
    };
    std::fs::write(&path, &text).expect("write");
    let t = Instant::now();
    let read = std::fs::read_to_string(&path).expect("read");
    let parsed: Doc = if json {
        serde_json::from_str(&read).expect("parse")
    } else {
        serde_yaml_ng::from_str(&read).expect("parse")
    };
    let parse = t.elapsed();
    drop(parsed);

    let t0 = Instant::now();
    let path_arg = path.display().to_string();
    let server = Server::start("serve-file", 0, 0, &["--file".to_owned(), path_arg]).await;
    let ready = t0.elapsed();
    let (stats, connect, tasks) = storm(server.xds, 1, false).await;
    let serving = t0.elapsed();
    let (cpu, rss, hwm) = server.proc_stat();
    for t in tasks {
        t.abort();
    }
    serde_json::json!({
        "sextant": {
            "scenario": "s6", "format": if json { "json" } else { "yaml" },
            "services": services, "endpoints": services * 10,
            "file_bytes": text.len(), "ready_ms": ms(ready), "serving_ms": ms(serving),
            "connect": connect, "cpu_s": cpu, "rss_kib": rss, "peak_rss_kib": hwm,
            "failures": stats.failures.load(Ordering::Relaxed),
        },
        "floor": { "parse_only_ms": ms(parse) },
    })
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
    if !["s1", "s2", "s3", "s4", "s5", "s6"].contains(&name.as_str()) {
        eprintln!("unknown scenario {name:?}; available: s1, s2, s3, s4, s5, s6");
        return 2;
    }
    if name == "s6" {
        let result = scenario_s6(quick, flag(args, "--json")).await;
        println!("{}", serde_json::to_string_pretty(&result).expect("json"));
        eprint!("{}", table(&result));
        return 0;
    }
    let delta = delta || name == "s4";
    let sextant = scenario("serve", &name, quick, delta, proxies).await;
    let floor = scenario("floor", &name, quick, delta, proxies).await;
    let result = serde_json::json!({ "sextant": sextant, "floor": floor });
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
    eprint!("{}", table(&result));
    0
}

/// The result as a table for people (on stderr; stdout stays JSON): one row
/// per figure, Sextant's, the floor's, and their ratio.
fn table(result: &serde_json::Value) -> String {
    fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            other => out.push((prefix.to_owned(), other.clone())),
        }
    }
    let mut rows = Vec::new();
    leaves("", &result["sextant"], &mut rows);
    let mut floor = Vec::new();
    leaves("", &result["floor"], &mut floor);
    let floor: BTreeMap<String, serde_json::Value> = floor.into_iter().collect();
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    let mut out = format!(
        "{:<44} {:>16} {:>16} {:>8}\n",
        "figure", "sextant", "floor", "ratio"
    );
    for (key, value) in &rows {
        let f = floor.get(key).cloned().unwrap_or(serde_json::Value::Null);
        let ratio = match (value.as_f64(), f.as_f64()) {
            (Some(a), Some(b)) if b != 0.0 && !value.is_boolean() => format!("{:.2}x", a / b),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{key:<44} {:>16} {:>16} {ratio:>8}\n",
            show(value),
            show(&f)
        ));
    }
    // Figures only the floor has (S6's reference).
    for (key, value) in &floor {
        if !rows.iter().any(|(k, _)| k == key) {
            out.push_str(&format!("{key:<44} {:>16} {:>16}\n", "-", show(value)));
        }
    }
    out
}
