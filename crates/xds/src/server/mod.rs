//! The ADS server: `StreamAggregatedResources` and `DeltaAggregatedResources`.
//!
//! Every connection runs one task holding a [`conn::ConnState`]. It wakes on
//! a request or a new snapshot, then asks the state for the next response.
//! Snapshots arrive on a `watch` channel, so a slow connection skips
//! intermediate snapshots instead of queueing them.

pub mod auth;
pub mod codec;
pub(crate) mod conn;
pub mod limits;
mod request;
pub mod status;
pub mod tls;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures::Stream;
pub use request::SotwRequest;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

pub use codec::{Outbound, Wire};
use conn::{ConnState, RequestOutcome};
pub use status::{ConnectionStatus, Metrics, NackRecord, Peer, TypeStatus};

use crate::snapshot::Snapshot;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// Server tuning.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long to wait for the ACK of a response before assuming it was
    /// lost and moving on. Default 30 s: far above any live client's
    /// processing time, short enough that a lost message does not freeze a
    /// connection for long.
    pub ack_timeout: Duration,
    /// NACKs kept for the debug endpoint. Default 100.
    pub nack_history: usize,
    /// The largest request accepted, in bytes; a larger one ends its
    /// stream (gRPC status `OUT_OF_RANGE`, message length too large).
    /// Default 4 MiB, gRPC's own default limit for received messages: an
    /// Envoy's EDS request restating 50,000 cluster names is about 2.5 MB.
    pub max_request_bytes: usize,
    /// TCP connections open at once; more are closed as soon as they are
    /// accepted (`sextant_xds_connections_refused_total`). Default
    /// [`limits::default_max_connections`]: the open-file limit less
    /// headroom for the admin port, registries and files, which so keep
    /// working however many sockets are opened.
    pub max_connections: usize,
    /// How long a new connection has to send its HTTP/2 preface before it
    /// is closed. Default 10 s.
    pub handshake_timeout: Duration,
    /// After the preface, the server pings every connection this often
    /// (HTTP/2 PING). Default 30 s.
    pub keepalive_interval: Duration,
    /// A connection that does not answer a ping within this is closed: a
    /// client gone silent, or one that never reads. Default 20 s.
    pub keepalive_timeout: Duration,
    /// Concurrent streams per connection, advertised as HTTP/2's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`. Default 16: Envoy and the gRPC
    /// clients open one ADS stream per connection.
    pub max_streams_per_connection: u32,
    /// What a proxy must prove to be served (`--xds-auth`). Default none.
    /// A proved identity is always checked against the node's claimed
    /// namespace, whatever this says.
    pub auth: auth::XdsAuth,
    /// Validates bearer tokens, for `auth` token or any.
    pub tokens: Option<auth::Tokens>,
    /// Per-proxy scoping: the root namespace and the default hosts.
    pub scoping: crate::scope::ScopeConfig,
    /// Capture mode's ports and outbound policy.
    pub capture: crate::translate::capture::CaptureOptions,
}

/// [`ServerConfig::max_request_bytes`]'s default.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ack_timeout: Duration::from_secs(30),
            nack_history: 100,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_connections: limits::default_max_connections(),
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_streams_per_connection: 16,
            auth: auth::XdsAuth::None,
            tokens: None,
            scoping: Default::default(),
            capture: Default::default(),
        }
    }
}

/// What the server's shared caches hold now (see ARCHITECTURE.md, "Shared
/// plans"): each is bounded and released with its last user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheSizes {
    /// SotW subscriptions shared between connections.
    pub subscriptions: usize,
    /// Names those subscriptions hold.
    pub subscription_names: usize,
    /// Plans cached for the current snapshot.
    pub plans: usize,
    /// Subscribed names those plans hold.
    pub plan_names: usize,
}

struct Registered {
    id: u64,
    wire: Wire,
    peer: Mutex<Peer>,
    connected_at: SystemTime,
    status: Mutex<Vec<TypeStatus>>,
    node: Mutex<(String, String)>,
    /// What the node says about itself, once it said.
    identity: Mutex<crate::identity::NodeIdentity>,
    /// Its scope, when scoped.
    scope: Mutex<Option<status::ScopeStatus>>,
    /// Its capture layout, in capture mode.
    capture: Mutex<Option<status::CaptureStatus>>,
    /// The client kind and user agent, once the node said.
    client: Mutex<(crate::translate::Client, String)>,
    /// For proxyless clients: the hostnames of the listeners (`HOST:PORT`)
    /// they subscribe to, which is what they use.
    hosts: Mutex<(u64, Vec<String>)>,
}

struct Shared {
    config: ServerConfig,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    connections: Mutex<BTreeMap<u64, Arc<Registered>>>,
    /// SotW subscriptions shared by the connections that send them.
    subscriptions: Arc<conn::Subscriptions>,
    /// The plans connections share for the newest snapshot.
    plans: conn::CurrentPlans,
    nacks: Mutex<VecDeque<NackRecord>>,
    /// Refusals already logged at warn level, as (node, reason): a refused
    /// proxy retries every second or so, and its refusal is logged once
    /// (later ones at debug; every one counted). Bounded: when full it is
    /// cleared, so a flood of distinct nodes costs a log line each, never
    /// memory.
    refusals_logged: Mutex<HashSet<(String, String)>>,
    /// Per-proxy scopes, shared by the proxies that have the same.
    scopes: crate::scope::ScopeCache,
    /// Capture-mode layouts, shared likewise.
    captures: crate::capture::CaptureCache,
    next_id: AtomicU64,
}

/// How many distinct refusals are remembered as already logged.
const REFUSALS_REMEMBERED: usize = 4096;

impl Shared {
    /// Whether this refusal is new (and should be logged at warn level).
    fn first_refusal(&self, node: &str, reason: &str) -> bool {
        let mut seen = lock(&self.refusals_logged);
        if seen.len() >= REFUSALS_REMEMBERED {
            seen.clear();
        }
        seen.insert((node.to_owned(), reason.to_owned()))
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves snapshots over ADS. Cheap to clone.
#[derive(Clone)]
pub struct XdsServer {
    shared: Arc<Shared>,
}

impl XdsServer {
    /// A server for the snapshots published on `snapshots`, counting into `metrics`.
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        metrics: Arc<Metrics>,
        config: ServerConfig,
    ) -> Self {
        XdsServer {
            shared: Arc::new(Shared {
                config,
                snapshots,
                metrics,
                connections: Mutex::new(BTreeMap::new()),
                subscriptions: Arc::default(),
                plans: conn::CurrentPlans::default(),
                nacks: Mutex::new(VecDeque::new()),
                refusals_logged: Mutex::new(HashSet::new()),
                scopes: Default::default(),
                captures: Default::default(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Every open connection.
    pub fn connections(&self) -> Vec<ConnectionStatus> {
        let snapshot = self.shared.snapshots.borrow().clone();
        lock(&self.shared.connections)
            .values()
            .map(|r| {
                let (node_id, node_cluster) = lock(&r.node).clone();
                let (client, user_agent) = lock(&r.client).clone();
                let mut unhonoured: Vec<_> = lock(&r.hosts)
                    .1
                    .iter()
                    .flat_map(|h| snapshot.unhonoured(h))
                    .filter(|u| u.client == client)
                    .cloned()
                    .collect();
                unhonoured.sort();
                unhonoured.dedup();
                let identity = lock(&r.identity).clone();
                let own_services = own_services(snapshot.view(), &identity.ips);
                ConnectionStatus {
                    id: r.id,
                    node_id,
                    node_cluster,
                    peer: lock(&r.peer).clone(),
                    protocol: r.wire,
                    connected_at: r.connected_at,
                    client,
                    user_agent,
                    unhonoured,
                    identity,
                    own_services,
                    scope: lock(&r.scope).clone(),
                    capture: lock(&r.capture).clone(),
                    types: lock(&r.status).clone(),
                }
            })
            .collect()
    }

    /// What the shared caches hold now.
    pub fn cache_sizes(&self) -> CacheSizes {
        let (subscriptions, subscription_names) = self.shared.subscriptions.size();
        let (plans, plan_names) = self.shared.plans.current().size();
        CacheSizes {
            subscriptions,
            subscription_names,
            plans,
            plan_names,
        }
    }

    /// The most recent NACKs, oldest first.
    pub fn nacks(&self) -> Vec<NackRecord> {
        lock(&self.shared.nacks).iter().cloned().collect()
    }

    /// The tonic service to mount: `Server::builder().add_service(server.service())`.
    pub fn service(&self) -> AdsService {
        AdsService::new(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes; then open streams
    /// are closed.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let config = &self.shared.config;
        let incoming = limits::incoming(
            listener,
            config.max_connections,
            config.handshake_timeout,
            self.shared.metrics.clone(),
        );
        self.http2()
            .add_service(self.service())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// Serves TLS (and mTLS, as `tls` says) on `listener` until `shutdown`
    /// completes. The same server may serve a plaintext listener too.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Arc<tls::Tls>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let config = &self.shared.config;
        let incoming = tls::incoming(
            listener,
            config.max_connections,
            config.handshake_timeout,
            self.shared.metrics.clone(),
            tls,
        );
        self.http2()
            .add_service(self.service())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// The HTTP/2 settings every listener serves with: keepalive pings
    /// and the bound on streams per connection.
    fn http2(&self) -> tonic::transport::Server {
        let config = &self.shared.config;
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(config.keepalive_interval))
            .http2_keepalive_timeout(Some(config.keepalive_timeout))
            .max_concurrent_streams(config.max_streams_per_connection)
    }

    fn start<Req, F>(
        &self,
        wire: Wire,
        peer: Peer,
        requests: Streaming<Req>,
        on_request: F,
    ) -> ResponseStream
    where
        Req: Send + 'static,
        F: Fn(&mut ConnState, Req) -> RequestOutcome + Send + 'static,
    {
        let shared = self.shared.clone();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let registered = Arc::new(Registered {
            id,
            wire,
            peer: Mutex::new(peer),
            connected_at: SystemTime::now(),
            status: Mutex::new(Vec::new()),
            node: Mutex::new(Default::default()),
            identity: Mutex::new(Default::default()),
            scope: Mutex::new(None),
            capture: Mutex::new(None),
            client: Mutex::new((crate::translate::Client::Envoy, String::new())),
            hosts: Mutex::new((0, Vec::new())),
        });
        lock(&shared.connections).insert(id, registered.clone());
        Metrics::add(&shared.metrics.connections_active, 1);
        Metrics::add(&shared.metrics.connections_total, 1);
        // Small: a client that does not read its responses stalls only its
        // own task, which then stops reading its requests.
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            // Deregistered however the task ends, a panic included: a
            // connection that a bug ends must not stay listed or counted.
            let _registered = Deregister {
                shared: shared.clone(),
                id,
            };
            run_connection(&shared, &registered, wire, requests, tx, on_request).await;
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

/// The services with an endpoint at one of `ips`: a proxy's own services.
/// A scan of the view: this is for the debug endpoint, not the data path.
fn own_services(view: &sextant_core::MeshView, ips: &[std::net::IpAddr]) -> Vec<String> {
    if ips.is_empty() {
        return Vec::new();
    }
    view.services
        .iter()
        .filter(|(_, ms)| {
            ms.service
                .endpoints
                .iter()
                .any(|e| e.address.ip().is_some_and(|ip| ips.contains(&ip)))
        })
        .map(|(h, _)| h.to_string())
        .collect()
}

/// The longest bearer token read (a Kubernetes service-account token is
/// about 1 KB); a longer one counts as none.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// Removes a connection from the server's table when its task ends.
struct Deregister {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        lock(&self.shared.connections).remove(&self.id);
        self.shared
            .metrics
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many connections the kernel queues before the server accepts them.
/// A restarted control plane is reconnected to by every proxy at once; the
/// standard library's 128 overflowed under the load generator's 1,000-proxy
/// storm (the kernel then answers with SYN cookies, some of which fail, and
/// those proxies see a reset). The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for xDS with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// `tokio::net::TcpListener::bind` sets it).
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A stream of responses for one ADS stream; [`grpc_body`] writes it.
pub type ResponseStream = std::pin::Pin<Box<dyn Stream<Item = Result<Outbound, Status>> + Send>>;

async fn run_connection<Req, F>(
    shared: &Shared,
    registered: &Registered,
    wire: Wire,
    mut requests: Streaming<Req>,
    tx: mpsc::Sender<Result<Outbound, Status>>,
    on_request: F,
) where
    F: Fn(&mut ConnState, Req) -> RequestOutcome,
{
    let metrics = &shared.metrics;
    let mut snapshots = shared.snapshots.clone();
    let mut state = ConnState::new(wire, shared.subscriptions.clone());
    let mut warned_types: Vec<String> = Vec::new();
    // One timer, moved only when the deadline moves: a new one per loop
    // turn registered a timer per request (a visible cost in the storm).
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    let mut serving: Option<conn::Serving> = None;
    let mut authorized = false;
    // The namespace whose scope the proxy gets: the one it proved, else
    // the one it claims; and the (topology, snapshot) generations its lens
    // was last looked up for.
    let mut scope_namespace: Option<String> = None;
    let mut scoped_for: Option<(u64, u64)> = None;
    loop {
        let deadline = state.next_deadline(shared.config.ack_timeout);
        if let Some(d) = deadline
            && armed != Some(d)
        {
            timer.as_mut().reset(d);
            armed = Some(d);
        }
        tokio::select! {
            message = requests.message() => match message {
                Ok(Some(req)) => match on_request(&mut state, req) {
                    RequestOutcome::Applied => {}
                    RequestOutcome::Ack(kind, waited) => {
                        metrics.ack_latency.observe(waited);
                        debug!(node = %state.node_id, r#type = %kind, ?waited, "acknowledged");
                    }
                    RequestOutcome::StaleNonce => Metrics::add(&metrics.stale_nonces_total, 1),
                    RequestOutcome::UnknownType(url) => {
                        Metrics::add(&metrics.unknown_type_requests_total, 1);
                        if !warned_types.contains(&url) && warned_types.len() < 16 {
                            warn!(node = %state.node_id, type_url = %url, "request for a resource type Sextant does not serve; ignored");
                            warned_types.push(url);
                        }
                    }
                    RequestOutcome::Nack(record) => {
                        Metrics::add(&metrics.nacks_total[record.kind.index()], 1);
                        warn!(node = %record.node_id, r#type = %record.kind, version = %record.version,
                            resources = ?record.resources, error = %record.error, "proxy rejected configuration (NACK); not resending it");
                        let mut nacks = lock(&shared.nacks);
                        if nacks.len() >= shared.config.nack_history {
                            nacks.pop_front();
                        }
                        nacks.push_back(record);
                    }
                },
                Ok(None) => break,
                Err(status) => {
                    debug!(node = %state.node_id, error = %status, "stream ended with an error");
                    // Tell the client why (a malformed request, for instance).
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    // The publisher is gone: the process is shutting down.
                    break;
                }
            }
            () = &mut timer, if deadline.is_some() => {
                for kind in state.expire_in_flight(shared.config.ack_timeout) {
                    Metrics::add(&metrics.ack_timeouts_total, 1);
                    warn!(node = %state.node_id, r#type = %kind, "no ACK within the timeout; assuming the response was received");
                }
            }
        }
        // Decided on the first request, which carries the node.
        if !authorized && state.requests_seen() {
            let peer = lock(&registered.peer).clone();
            match authorize(&shared.config, &peer, &state).await {
                Ok(identity) => {
                    scope_namespace = identity
                        .as_deref()
                        .and_then(tls::spiffe_namespace)
                        .map(str::to_owned)
                        .or_else(|| state.identity.namespace.clone());
                    lock(&registered.peer).identity = identity;
                }
                Err(refusal) => {
                    Metrics::add(&metrics.identity_refused_total, 1);
                    if shared.first_refusal(&state.node_id, refusal.message()) {
                        warn!(node = %state.node_id, peer = ?peer.addr, identity = ?peer.identity, "xDS stream refused: {} (logged once per node and reason; every refusal is counted in sextant_xds_identity_refused_total)", refusal.message());
                    } else {
                        debug!(node = %state.node_id, "xDS stream refused again: {}", refusal.message());
                    }
                    let _ = tx.send(Err(refusal)).await;
                    break;
                }
            }
            authorized = true;
        }
        // The plan cache is looked up once per snapshot, not per turn.
        let latest = snapshots.borrow_and_update().clone();
        if serving
            .as_ref()
            .is_none_or(|s| !Arc::ptr_eq(&s.snap, &latest))
        {
            serving = Some(shared.plans.serving(latest));
        }
        let Some(snapshot) = &serving else {
            break;
        };
        // What the proxy sees: its scope moves only with the topology, a
        // capture proxy's own ports with any snapshot (endpoints move
        // without a topology change). Looked up only then, not per push.
        let capture_mode = state.identity.mode == crate::identity::Interception::Capture;
        let topology_moved = scoped_for.is_none_or(|(t, _)| t != snapshot.topology_generation);
        let snapshot_moved = scoped_for.is_none_or(|(_, g)| g != snapshot.generation);
        if authorized && (topology_moved || capture_mode && snapshot_moved) {
            scoped_for = Some((snapshot.topology_generation, snapshot.generation));
            let scope = if topology_moved {
                shared.scopes.get(
                    snapshot,
                    &shared.config.scoping,
                    scope_namespace.as_deref(),
                    &state.identity.labels,
                )
            } else {
                state.lens().scope.clone()
            };
            let capture = capture_mode.then(|| {
                shared.captures.get(
                    snapshot,
                    &shared.config.capture,
                    scope.as_ref(),
                    &state.identity.ips,
                )
            });
            let lens = conn::Lens { scope, capture };
            if *state.lens() != lens {
                *lock(&registered.scope) = lens.scope.as_ref().map(|s| status::ScopeStatus {
                    source: s.source.clone(),
                    hosts: s.len(),
                });
                *lock(&registered.capture) = lens.capture.as_ref().map(|c| status::CaptureStatus {
                    inbound_ports: c.inbound_ports.iter().map(|p| p.port).collect(),
                    unreachable: c.unreachable.to_vec(),
                });
                state.set_lens(lens);
            }
        }
        // Each type has its own response in flight: send everything due now
        // (at most one per step, so this ends).
        let mut closed = false;
        while let Some(out) = state.pump(snapshot) {
            let i = out.kind.index();
            Metrics::add(&metrics.responses_total[i], 1);
            Metrics::add(&metrics.resources_sent_total[i], out.resources.len() as u64);
            Metrics::add(&metrics.bytes_sent_total, out.encoded_len() as u64);
            debug!(node = %state.node_id, r#type = %out.kind, resources = out.resources.len(), removed = out.removed.len(), nonce = %out.nonce, "sending");
            if tx.send(Ok(out)).await.is_err() {
                closed = true;
                break;
            }
        }
        // Most turns plan nothing: no write to the shared counters then.
        match state.take_plan_counts() {
            (0, 0) => {}
            (computed, shared_plans) => {
                Metrics::add(&metrics.plans_computed_total, computed);
                Metrics::add(&metrics.plans_shared_total, shared_plans);
            }
        }
        if closed {
            break;
        }
        publish_status(registered, &state);
    }
    debug!(node = %state.node_id, "connection closed");
    // Its subscriptions go back to the server's table, then the plans only
    // it could use leave the current snapshot's cache.
    drop(state);
    shared.plans.current().prune_unused();
}

/// Whether the node may be served, and who it proved to be: the identity
/// of its client certificate, or of its bearer token where tokens count;
/// its claimed namespace must be the identity's; and where the server
/// requires an identity, it must have one.
async fn authorize(
    config: &ServerConfig,
    peer: &Peer,
    state: &ConnState,
) -> Result<Option<String>, Status> {
    use auth::XdsAuth;
    let cert = peer.identity.clone();
    let token = match (config.auth, &cert) {
        (XdsAuth::Token, _) | (XdsAuth::Any, None) => match (&config.tokens, &peer.token) {
            (Some(v), Some(t)) => Some(v.0.validate(t.expose()).await.map_err(|e| {
                Status::unauthenticated(format!("the bearer token was not accepted: {e}"))
            })?),
            _ => None,
        },
        _ => None,
    };
    let identity = match config.auth {
        XdsAuth::None | XdsAuth::Mtls => cert,
        XdsAuth::Token => token,
        XdsAuth::Any => cert.or(token),
    };
    let Some(id) = identity else {
        return match config.auth {
            XdsAuth::None => Ok(None),
            XdsAuth::Mtls => Err(Status::unauthenticated(
                "this server requires a client certificate with a SPIFFE id (--xds-auth mtls); connect to its TLS port with one",
            )),
            XdsAuth::Token => Err(Status::unauthenticated(
                "this server requires a bearer token in the authorization metadata (--xds-auth token)",
            )),
            XdsAuth::Any => Err(Status::unauthenticated(
                "this server requires a client certificate with a SPIFFE id or a bearer token (--xds-auth any)",
            )),
        };
    };
    match (
        tls::spiffe_namespace(&id),
        state.identity.namespace.as_deref(),
    ) {
        (None, _) => Err(Status::permission_denied(format!(
            "the proved identity {id:?} is not of the form spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT"
        ))),
        (Some(ns), Some(claim)) if ns != claim => Err(Status::permission_denied(format!(
            "the node claims namespace {claim:?} but proved {id} (namespace {ns:?})"
        ))),
        _ => Ok(Some(id)),
    }
}

/// Copies the connection's state to where the debug endpoint reads it. Runs
/// after every request and response, so it updates in place: no allocation
/// unless a version or NACK actually changed.
fn publish_status(registered: &Registered, state: &ConnState) {
    let mut status = lock(&registered.status);
    let shown = state
        .types
        .iter()
        .enumerate()
        .filter(|(_, t)| t.wildcard() || t.subscribed() > 0 || t.responses > 0);
    let mut n = 0;
    for (i, t) in shown {
        let kind = crate::resource::ResourceType::ALL[i];
        if status.get(n).is_none_or(|s| s.kind != kind) {
            status.insert(
                n,
                TypeStatus {
                    kind,
                    wildcard: false,
                    subscribed: 0,
                    held: 0,
                    sent_version: String::new(),
                    acked_version: String::new(),
                    in_flight: false,
                    responses: 0,
                    last_nack: None,
                },
            );
        }
        let s = &mut status[n];
        s.wildcard = t.wildcard();
        s.subscribed = t.subscribed();
        s.held = t.held();
        if s.sent_version != t.sent_version {
            s.sent_version.clone_from(&t.sent_version);
        }
        if s.acked_version != t.acked_version {
            s.acked_version.clone_from(&t.acked_version);
        }
        s.in_flight = t.in_flight();
        s.responses = t.responses;
        if s.last_nack.as_ref().map(|r| &r.nonce) != t.last_nack.as_ref().map(|r| &r.nonce) {
            s.last_nack.clone_from(&t.last_nack);
        }
        n += 1;
    }
    status.truncate(n);
    drop(status);
    if state.client == crate::translate::Client::Grpc {
        let lds = &state.types[crate::resource::ResourceType::Listener.index()];
        let mut hosts = lock(&registered.hosts);
        if hosts.0 != lds.names_digest() {
            hosts.0 = lds.names_digest();
            hosts.1 = lds
                .subscribed_names()
                .filter_map(|n| n.rsplit_once(':').map(|(h, _)| h.to_owned()))
                .collect();
        }
    }
    let mut node = lock(&registered.node);
    if node.0.is_empty() && !state.node_id.is_empty() {
        *lock(&registered.client) = (state.client, state.user_agent.clone());
        *lock(&registered.identity) = state.identity.clone();
        info!(node = %state.node_id, cluster = %state.node_cluster, protocol = ?state.wire, "proxy connected");
        *node = (state.node_id.clone(), state.node_cluster.clone());
    }
}

/// What serves ADS streams once they are decoded: Sextant's server, or the
/// load generator's floor. Each method gets the peer and the stream's
/// requests, and returns its responses.
pub trait AdsHandler: Clone + Send + Sync + 'static {
    /// The largest request accepted, in bytes.
    fn max_request_bytes(&self) -> usize {
        DEFAULT_MAX_REQUEST_BYTES
    }

    /// `StreamAggregatedResources` (state of the world).
    fn sotw(&self, peer: Peer, requests: Streaming<SotwRequest>) -> ResponseStream;
    /// `DeltaAggregatedResources`.
    fn delta(&self, peer: Peer, requests: Streaming<DeltaDiscoveryRequest>) -> ResponseStream;
}

impl AdsHandler for XdsServer {
    fn max_request_bytes(&self) -> usize {
        self.shared.config.max_request_bytes
    }

    fn sotw(&self, peer: Peer, requests: Streaming<SotwRequest>) -> ResponseStream {
        self.start(Wire::Sotw, peer, requests, ConnState::on_sotw)
    }

    fn delta(&self, peer: Peer, requests: Streaming<DeltaDiscoveryRequest>) -> ResponseStream {
        self.start(Wire::Delta, peer, requests, ConnState::on_delta)
    }
}

/// The tower service tonic mounts (see [`XdsServer::service`]): routes the
/// two ADS methods to a handler, decoding requests and writing responses
/// the same way whatever the handler.
#[derive(Clone)]
pub struct AdsService<H = XdsServer> {
    handler: H,
}

impl<H: AdsHandler> AdsService<H> {
    /// Serves ADS with `handler`.
    pub fn new(handler: H) -> Self {
        AdsService { handler }
    }
}

impl<H> tonic::server::NamedService for AdsService<H> {
    const NAME: &'static str = SERVICE_NAME;
}

/// The gRPC response body: each response's frames (shared resource bytes
/// for large resources), then the trailers. Written without tonic's encoder,
/// whose per-stream buffer would keep the largest response ever sent.
pub fn grpc_body(responses: ResponseStream) -> tonic::body::Body {
    use http_body::Frame;
    struct St {
        responses: ResponseStream,
        pending: std::collections::VecDeque<Frame<bytes::Bytes>>,
        finished: bool,
    }
    fn trailers(status: &Status) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(Status::GRPC_STATUS, (status.code() as i32).into());
        if !status.message().is_empty() {
            // gRPC percent-encodes the message: bytes outside 0x20-0x7e, and '%'.
            let mut encoded = String::new();
            for b in status.message().bytes() {
                if (0x20..=0x7e).contains(&b) && b != b'%' {
                    encoded.push(char::from(b));
                } else {
                    encoded.push_str(&format!("%{b:02X}"));
                }
            }
            if let Ok(v) = http::HeaderValue::from_str(&encoded) {
                h.insert(Status::GRPC_MESSAGE, v);
            }
        }
        h
    }
    let state = St {
        responses,
        pending: Default::default(),
        finished: false,
    };
    let frames = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(frame), st));
            }
            if st.finished {
                return None;
            }
            match futures::StreamExt::next(&mut st.responses).await {
                Some(Ok(out)) => st.pending.extend(out.frames().into_iter().map(Frame::data)),
                Some(Err(status)) => {
                    st.pending.push_back(Frame::trailers(trailers(&status)));
                    st.finished = true;
                }
                None => {
                    st.pending
                        .push_back(Frame::trailers(trailers(&Status::ok(""))));
                    st.finished = true;
                }
            }
        }
    });
    tonic::body::Body::new(http_body_util::StreamBody::new(frames))
}

/// Serves one ADS stream over HTTP/2: decodes its requests (`Req`, either
/// ADS request type) with tonic, hands them and the peer's address to
/// `start`, and writes the responses it returns with [`grpc_body`].
fn ads_response<B, Req>(
    req: http::Request<B>,
    max_request_bytes: usize,
    start: impl FnOnce(Peer, Streaming<Req>) -> ResponseStream,
) -> http::Response<tonic::body::Body>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: codec::DecodeRequest,
{
    let (parts, body) = req.into_parts();
    let tls = parts.extensions.get::<tls::TlsConnectInfo>();
    let peer = Peer {
        addr: parts
            .extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .or_else(|| tls.and_then(|t| t.remote_addr)),
        identity: tls.and_then(|t| t.spiffe.clone()),
        token: parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
            .map(sextant_core::Secret::from),
    };
    let decoder = tonic::codec::Codec::decoder(&mut codec::AdsCodec::<Req>::default());
    let requests = Streaming::new_request(decoder, body, None, Some(max_request_bytes));
    let mut response = http::Response::new(grpc_body(start(peer, requests)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

impl<H, B> tower_service::Service<http::Request<B>> for AdsService<H>
where
    H: AdsHandler,
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
        let handler = &self.handler;
        match req.uri().path() {
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources" => {
                let response = ads_response(req, handler.max_request_bytes(), |peer, requests| {
                    handler.sotw(peer, requests)
                });
                Box::pin(async move { Ok(response) })
            }
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources" => {
                let response = ads_response(req, handler.max_request_bytes(), |peer, requests| {
                    handler.delta(peer, requests)
                });
                Box::pin(async move { Ok(response) })
            }
            _ => Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            }),
        }
    }
}
