//! What the server exposes about itself: metrics, per-connection state,
//! and the mirror ([`Registered`]) through which a connection's task shows
//! its state to the debug endpoint without the endpoint reaching into it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use sextant_core::time::rfc3339;
use tracing::info;

use super::codec::Wire;
use super::conn::{ConnState, HeldNow};
use super::lock;
use crate::identity::NodeIdentity;
use crate::lens::Lens;
pub use crate::metrics::{Histogram, Metrics};
use crate::resource::ResourceType;
use crate::snapshot::Snapshot;
use crate::translate::Client;

/// A recorded NACK.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NackRecord {
    /// The client's node id.
    pub node_id: String,
    /// The resource type.
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// The nonce of the rejected response.
    pub nonce: String,
    /// The version the client rejected.
    pub version: String,
    /// The resources the rejected response carried.
    pub resources: Vec<String>,
    /// The client's error message.
    pub error: String,
    /// When it arrived.
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
}

/// The other end of a connection: where it connects from and, once the
/// server can authenticate proxies, who it proved to be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// The address it connects from, when the transport knows it.
    pub addr: Option<SocketAddr>,
    /// The identity it proved: the SPIFFE id of its client certificate,
    /// or of the bearer token it sent once that is validated. An
    /// unauthenticated node id is not one.
    pub identity: Option<String>,
    /// The bearer token of the stream's `authorization` metadata, if any;
    /// never shown.
    #[serde(skip)]
    pub token: Option<sextant_core::Secret>,
}

/// One type on one connection.
#[derive(Clone, Debug, Serialize)]
pub struct TypeStatus {
    /// The type.
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// Subscribed to everything.
    pub wildcard: bool,
    /// Names subscribed explicitly.
    pub subscribed: usize,
    /// Resources the client holds (as far as the server knows).
    pub held: usize,
    /// Version of the last response sent.
    pub sent_version: String,
    /// Version of the last response acknowledged.
    pub acked_version: String,
    /// A response is waiting for its ACK.
    pub in_flight: bool,
    /// Responses sent.
    pub responses: u64,
    /// The last NACK, if any.
    pub last_nack: Option<NackRecord>,
    /// Where the type stands (see [`TypeSync`]).
    pub state: TypeSync,
    /// When the response in flight was sent.
    #[serde(skip)]
    pub in_flight_since: Option<SystemTime>,
}

/// Where one type of one connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TypeSync {
    /// Nothing sent yet.
    NotSent,
    /// The last response was acknowledged.
    Synced,
    /// A response waits for its ACK (for less than [`STALE_AFTER`]).
    Sent,
    /// A response has waited for its ACK for [`STALE_AFTER`] or more.
    Stale,
    /// The last response was rejected: the client keeps what it had.
    Nacked,
}

/// How long a response may wait for its ACK before its type is STALE.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a proxy holds what the newest snapshot gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProxySync {
    /// It has caught up with the newest snapshot, and acknowledged all of
    /// it.
    Current,
    /// It has not: a response is on its way or was rejected, or it has
    /// not yet looked at the newest snapshot.
    Behind,
}

impl TypeStatus {
    /// Its state at `now`.
    fn state_at(&self, now: SystemTime) -> TypeSync {
        if self.responses == 0 {
            return TypeSync::NotSent;
        }
        if self.in_flight {
            let waited = self
                .in_flight_since
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            return if waited >= STALE_AFTER {
                TypeSync::Stale
            } else {
                TypeSync::Sent
            };
        }
        if self
            .last_nack
            .as_ref()
            .is_some_and(|n| n.version == self.sent_version)
        {
            return TypeSync::Nacked;
        }
        TypeSync::Synced
    }
}

/// One connected proxy or client.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionStatus {
    /// Server-assigned id.
    pub id: u64,
    /// The node id the client sent.
    pub node_id: String,
    /// The node's cluster.
    pub node_cluster: String,
    /// Who is at the other end.
    pub peer: Peer,
    /// SotW or delta.
    pub protocol: Wire,
    /// When it connected.
    #[serde(serialize_with = "rfc3339")]
    pub connected_at: SystemTime,
    /// The kind of client (from the node's user agent): which form of the
    /// configuration it receives.
    pub client: crate::translate::Client,
    /// The user agent it named (`envoy`, `gRPC Go`, `gRPC C-core`...).
    pub user_agent: String,
    /// What the node says about itself: namespace, workload labels,
    /// instance IPs, interception mode (see [`crate::identity`]).
    pub identity: crate::identity::NodeIdentity,
    /// Its own services: those with an endpoint at one of its instance IPs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub own_services: Vec<String>,
    /// The hosts it may see, when scoped (absent: every host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeStatus>,
    /// In capture mode: its own inbound ports, and the service ports
    /// capture cannot reach for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureStatus>,
    /// A router proxy: the gateway it serves and what of it is not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterStatus>,
    /// Rule features that bind to the services this client uses and that
    /// it cannot honour: each is left out of what it receives.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unhonoured: Vec<crate::translate::Unhonoured>,
    /// Per type, in push order; only types the client asked for.
    pub types: Vec<TypeStatus>,
    /// The snapshot it last looked at (the server's own numbering).
    pub generation: u64,
    /// The view that snapshot was built from.
    pub view_generation: u64,
    /// The newest view it has caught up with and acknowledged in full (no
    /// response on its way, none rejected): what `sextant wait` reads.
    pub settled_view_generation: u64,
    /// CURRENT when it has caught up with the newest snapshot and
    /// acknowledged all of it; BEHIND otherwise.
    pub sync: ProxySync,
}

impl ConnectionStatus {
    /// The namespace the proxy belongs to: the one its identity proves,
    /// else the one it claims (what its scope and policies are picked by).
    pub fn namespace(&self) -> Option<String> {
        super::authorize::scope_namespace(self.peer.identity.as_deref(), &self.identity)
    }
}

/// A connection's scope, on /debug/syncz.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScopeStatus {
    /// What gave it: `scope NAMESPACE/NAME`, or `default` (the mesh-wide
    /// default hosts).
    pub source: String,
    /// How many hosts it lets through.
    pub hosts: usize,
}

/// A capture-mode connection's layout, on /debug/syncz.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStatus {
    /// The ports of its own workload that inbound traffic is delivered to.
    pub inbound_ports: Vec<u32>,
    /// Service ports capture cannot reach for it: TCP ports without a
    /// virtual IP (capture cannot tell them apart), and ports equal to the
    /// proxy's own 15001/15006: `HOST:PORT`, with the reason for the latter.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
}

/// A router proxy's gateway, on /debug/syncz.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RouterStatus {
    /// `NAMESPACE/NAME`.
    pub gateway: String,
    /// What of it is not served, and why (a listener's protocol, a rule
    /// its listener does not allow, a name another rule holds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A router connection's progress (see [`super::XdsServer::routers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterProgress {
    /// The gateway it serves, `NAMESPACE/NAME`.
    pub gateway: String,
    /// What of the gateway is not served, as its translation says.
    pub problems: Vec<String>,
    /// The newest view it has caught up with and acknowledged in full.
    pub settled_view_generation: u64,
    /// Its instance IPs (else the address it connects from).
    pub addresses: Vec<String>,
}

/// What the server's caches hold now (see ARCHITECTURE.md, "Shared
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

/// One connection as the debug endpoint sees it: a mirror its task
/// updates after every request and response, so that listing connections
/// never waits for (or touches) a connection's protocol state.
pub(crate) struct Registered {
    pub(crate) id: u64,
    wire: Wire,
    pub(crate) peer: Mutex<Peer>,
    connected_at: SystemTime,
    types: Mutex<Vec<TypeStatus>>,
    node: Mutex<(String, String)>,
    /// What the node says about itself, once it said.
    identity: Mutex<NodeIdentity>,
    /// Its scope, when scoped.
    scope: Mutex<Option<ScopeStatus>>,
    /// Its capture layout, in capture mode.
    capture: Mutex<Option<CaptureStatus>>,
    /// Its gateway, for a router.
    router: Mutex<Option<RouterStatus>>,
    /// The client kind and user agent, once the node said.
    client: Mutex<(Client, String)>,
    /// For proxyless clients: the hostnames of the listeners (`HOST:PORT`)
    /// they subscribe to, which is what they use.
    hosts: Mutex<(u64, Vec<String>)>,
    /// The (generation, view generation) of the snapshot it last looked at,
    /// and the newest view generation it settled on.
    served: Mutex<(u64, u64, u64)>,
    /// What it sees and subscribes to, for CSDS: its lens, and per type
    /// whether it subscribes to everything and the names it asked for
    /// (shared with its protocol state, not copied).
    subscribed: Mutex<Subscribed>,
    /// Who waits for what the client holds (see [`Registered::ask_held`]).
    held_asks: Mutex<Vec<tokio::sync::oneshot::Sender<Vec<HeldNow>>>>,
    /// Wakes the connection's task to answer them.
    pub(crate) asked: tokio::sync::Notify,
}

/// Callers waiting at once for one connection's held configuration, at most.
const MAX_HELD_ASKS: usize = 8;

/// One type a connection subscribes to: whether to everything, and the
/// names it asked for.
pub(crate) type SubscribedType = (ResourceType, bool, std::sync::Arc<super::conn::NameSet>);

/// A connection's lens and subscriptions, as its mirror keeps them.
#[derive(Default)]
pub(crate) struct Subscribed {
    pub(crate) lens: Option<Lens>,
    pub(crate) types: Vec<SubscribedType>,
}

impl Registered {
    pub(crate) fn new(id: u64, wire: Wire, peer: Peer) -> Registered {
        Registered {
            id,
            wire,
            peer: Mutex::new(peer),
            connected_at: SystemTime::now(),
            types: Mutex::new(Vec::new()),
            node: Mutex::new(Default::default()),
            identity: Mutex::new(Default::default()),
            scope: Mutex::new(None),
            capture: Mutex::new(None),
            router: Mutex::new(None),
            client: Mutex::new((Client::Envoy, String::new())),
            hosts: Mutex::new((0, Vec::new())),
            served: Mutex::new((0, 0, 0)),
            subscribed: Mutex::default(),
            held_asks: Mutex::default(),
            asked: tokio::sync::Notify::new(),
        }
    }

    /// The generation of the snapshot it last took up.
    pub(crate) fn served_generation(&self) -> u64 {
        lock(&self.served).0
    }

    /// Its node id, once the node said.
    pub(crate) fn node_id(&self) -> String {
        lock(&self.node).0.clone()
    }

    /// What the client holds, per type, copied out by the connection's
    /// task at its next step; `None` when it does not answer within
    /// `bound` (or too many wait already).
    pub(crate) async fn ask_held(&self, bound: std::time::Duration) -> Option<Vec<HeldNow>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut asks = lock(&self.held_asks);
            if asks.len() >= MAX_HELD_ASKS {
                return None;
            }
            asks.push(tx);
        }
        self.asked.notify_one();
        tokio::time::timeout(bound, rx).await.ok()?.ok()
    }

    /// Answers whoever asked what the client holds (the connection's task
    /// calls this when woken by [`Registered::asked`]).
    pub(crate) fn answer_held(&self, state: &ConnState) {
        let asks = std::mem::take(&mut *lock(&self.held_asks));
        if asks.is_empty() {
            return;
        }
        let held: Vec<HeldNow> = state.types().iter().map(|t| t.held_now()).collect();
        for ask in asks {
            let _ = ask.send(held.clone());
        }
    }

    /// Lets go of the connection's subscribed names (it is ending), and of
    /// whoever waits for what its client holds: they learn at once that no
    /// answer comes.
    pub(crate) fn forget_subscriptions(&self) {
        lock(&self.subscribed).types.clear();
        lock(&self.held_asks).clear();
    }

    /// Its lens and subscriptions (see [`Subscribed`]).
    pub(crate) fn subscribed(&self) -> (Option<Lens>, Vec<SubscribedType>) {
        let s = lock(&self.subscribed);
        (s.lens.clone(), s.types.clone())
    }

    /// What the connection shows, for `snapshot` (the newest).
    pub(crate) fn status(&self, snapshot: &Snapshot) -> ConnectionStatus {
        let (node_id, node_cluster) = lock(&self.node).clone();
        let (client, user_agent) = lock(&self.client).clone();
        let mut unhonoured: Vec<_> = lock(&self.hosts)
            .1
            .iter()
            .flat_map(|h| snapshot.unhonoured(h))
            .filter(|u| u.client == client)
            .cloned()
            .collect();
        unhonoured.sort();
        unhonoured.dedup();
        let identity = lock(&self.identity).clone();
        let own_services = own_services(snapshot.view(), &identity.ips);
        let now = SystemTime::now();
        let mut types = lock(&self.types).clone();
        for t in &mut types {
            t.state = t.state_at(now);
        }
        let (generation, view_generation, settled_view_generation) = *lock(&self.served);
        let current = generation == snapshot.generation
            && !types.is_empty()
            && types
                .iter()
                .all(|t| matches!(t.state, TypeSync::Synced | TypeSync::NotSent));
        ConnectionStatus {
            id: self.id,
            node_id,
            node_cluster,
            peer: lock(&self.peer).clone(),
            protocol: self.wire,
            connected_at: self.connected_at,
            client,
            user_agent,
            unhonoured,
            identity,
            own_services,
            scope: lock(&self.scope).clone(),
            capture: lock(&self.capture).clone(),
            router: lock(&self.router).clone(),
            types,
            generation,
            view_generation,
            settled_view_generation,
            sync: if current {
                ProxySync::Current
            } else {
                ProxySync::Behind
            },
        }
    }

    /// Its progress, when it is a router.
    pub(crate) fn router_progress(&self) -> Option<RouterProgress> {
        let router = lock(&self.router).clone()?;
        let settled_view_generation = lock(&self.served).2;
        let mut addresses: Vec<String> = lock(&self.identity)
            .ips
            .iter()
            .map(ToString::to_string)
            .collect();
        if addresses.is_empty()
            && let Some(addr) = lock(&self.peer).addr
        {
            addresses.push(addr.ip().to_string());
        }
        Some(RouterProgress {
            gateway: router.gateway,
            problems: router.problems,
            settled_view_generation,
            addresses,
        })
    }

    /// Shows a new lens: the proxy's scope and capture layout.
    pub(crate) fn show_lens(&self, lens: &Lens) {
        lock(&self.subscribed).lens = Some(lens.clone());
        *lock(&self.scope) = lens.scope().map(|s| ScopeStatus {
            source: s.source.clone(),
            hosts: s.len(),
        });
        *lock(&self.router) = lens.router().map(|r| RouterStatus {
            gateway: r.gateway.clone(),
            problems: r.problems.to_vec(),
        });
        *lock(&self.capture) = lens.capture().map(|c| CaptureStatus {
            inbound_ports: c.inbound_ports.iter().map(|p| p.port).collect(),
            unreachable: c.unreachable.to_vec(),
        });
    }

    /// Copies the connection's state to the mirror. Runs after every
    /// request and response, so it updates in place: no allocation unless
    /// a version or NACK actually changed.
    pub(crate) fn show(&self, state: &ConnState, served: Option<&Snapshot>) {
        let mut types = lock(&self.types);
        let now = SystemTime::now();
        let mut n = 0;
        for t in state.types().iter().filter_map(|t| t.shown()) {
            if types.get(n).is_none_or(|s| s.kind != t.kind) {
                types.insert(
                    n,
                    TypeStatus {
                        kind: t.kind,
                        wildcard: false,
                        subscribed: 0,
                        held: 0,
                        sent_version: String::new(),
                        acked_version: String::new(),
                        in_flight: false,
                        responses: 0,
                        last_nack: None,
                        state: TypeSync::NotSent,
                        in_flight_since: None,
                    },
                );
            }
            let s = &mut types[n];
            s.wildcard = t.wildcard;
            s.subscribed = t.subscribed;
            s.held = t.held;
            if s.sent_version != t.sent_version {
                t.sent_version.clone_into(&mut s.sent_version);
            }
            if s.acked_version != t.acked_version {
                t.acked_version.clone_into(&mut s.acked_version);
            }
            s.in_flight = t.in_flight;
            s.in_flight_since = t.in_flight_for.and_then(|d| now.checked_sub(d));
            s.responses = t.responses;
            if s.last_nack.as_ref().map(|r| &r.nonce) != t.last_nack.map(|r| &r.nonce) {
                s.last_nack = t.last_nack.cloned();
            }
            n += 1;
        }
        types.truncate(n);
        {
            let mut sub = lock(&self.subscribed);
            let mut i = 0;
            for t in state.types().iter().filter_map(|t| t.shown()) {
                match sub.types.get_mut(i) {
                    Some(e) if e.0 == t.kind => {
                        e.1 = t.wildcard;
                        if !std::sync::Arc::ptr_eq(&e.2, t.names) {
                            e.2 = t.names.clone();
                        }
                    }
                    _ => sub.types.insert(i, (t.kind, t.wildcard, t.names.clone())),
                }
                i += 1;
            }
            sub.types.truncate(i);
        }
        if let Some(snap) = served {
            let settled = !types.is_empty()
                && types.iter().all(|t| {
                    !t.in_flight
                        && t.last_nack
                            .as_ref()
                            .is_none_or(|r| r.version != t.sent_version)
                });
            let mut s = lock(&self.served);
            s.0 = snap.generation;
            s.1 = snap.view_generation;
            if settled {
                s.2 = s.2.max(snap.view_generation);
            }
        }
        drop(types);
        if state.client == Client::Grpc {
            let lds = state.of(ResourceType::Listener);
            let mut hosts = lock(&self.hosts);
            if hosts.0 != lds.names_digest() {
                hosts.0 = lds.names_digest();
                hosts.1 = lds
                    .subscribed_names()
                    .filter_map(|n| n.rsplit_once(':').map(|(h, _)| h.to_owned()))
                    .collect();
            }
        }
        let mut node = lock(&self.node);
        if node.0.is_empty() && !state.node_id.is_empty() {
            *lock(&self.client) = (state.client, state.user_agent.clone());
            *lock(&self.identity) = state.identity.clone();
            info!(node = %state.node_id, cluster = %state.node_cluster, protocol = ?state.wire, "proxy connected");
            *node = (state.node_id.clone(), state.node_cluster.clone());
        }
    }
}

/// The services with an endpoint at one of `ips`: a proxy's own services.
/// A scan of the view: this is for the debug endpoint, not the data path.
fn own_services(view: &sextant_core::MeshView, ips: &[IpAddr]) -> Vec<String> {
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
