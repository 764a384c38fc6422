//! The ADS server: `StreamAggregatedResources` and `DeltaAggregatedResources`.
//!
//! Every connection runs one task holding a [`conn::ConnState`]. It wakes on
//! a request or a new snapshot, then asks the state for the next response.
//! Snapshots arrive on a `watch` channel, so a slow connection skips
//! intermediate snapshots instead of queueing them.
//!
//! Where things are:
//! - `config.rs`: [`ServerConfig`], the settings;
//! - `listen.rs`: binding and serving listeners (plaintext and TLS), the
//!   HTTP/2 settings; `limits.rs` bounds TCP connections before they speak
//!   HTTP/2, `tls.rs` the TLS handshake and client identities;
//! - `grpc.rs`: the gRPC glue, requests decoded and responses written from
//!   shared bytes (`codec.rs`, `request.rs`);
//! - `connection.rs`: one connection's task, the protocol's steps in order;
//! - `authorize.rs` (with `auth.rs`, the token validators): whether a
//!   stream may be served;
//! - `conn/`: the per-connection protocol state, no I/O;
//! - `status.rs`: what the server shows about itself, and each
//!   connection's mirror for the debug endpoint; `diff.rs` what one client
//!   holds against the newest snapshot, copied out by its task when asked.
//!
//! What a proxy sees of a snapshot (its scope, its capture layout) is
//! [`crate::lens`], outside the server: it depends on snapshots only.

pub mod auth;
mod authorize;
pub mod codec;
mod config;
pub(crate) mod conn;
mod connection;
pub mod csds;
pub mod diff;
mod grpc;
pub mod limits;
mod listen;
pub mod register;
mod request;
pub mod status;
pub mod tls;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

pub use codec::{Outbound, Wire};
pub use config::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_REQUEST_BYTES, ServerConfig,
};
pub use grpc::{AdsHandler, AdsService, MAX_TOKEN_BYTES, ResponseStream, SERVICE_NAME, grpc_body};
pub use listen::{LISTEN_BACKLOG, listen};
pub use request::SotwRequest;
pub use status::{
    CacheSizes, ConnectionStatus, Metrics, NackRecord, Peer, ProxySync, RouterProgress, TypeStatus,
    TypeSync,
};

use crate::lens::Lenses;
use crate::snapshot::Snapshot;
use status::Registered;

/// What every connection of one server shares.
struct Shared {
    config: ServerConfig,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    connections: Mutex<BTreeMap<u64, Arc<Registered>>>,
    /// SotW subscriptions shared by the connections that send them.
    subscriptions: Arc<conn::Subscriptions>,
    /// The plans connections share for the newest snapshot.
    plans: conn::CurrentPlans,
    /// What proxies see: scopes and capture layouts, shared by alike ones.
    lenses: Lenses,
    nacks: Mutex<VecDeque<NackRecord>>,
    /// Refusals already logged at warn level, as (node, reason): a refused
    /// proxy retries every second or so, and its refusal is logged once
    /// (later ones at debug; every one counted). Bounded: when full it is
    /// cleared, so a flood of distinct nodes costs a log line each, never
    /// memory.
    refusals_logged: Mutex<HashSet<(String, String)>>,
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
        let lenses = Lenses::new(config.scoping.clone(), config.capture.clone());
        XdsServer {
            shared: Arc::new(Shared {
                config,
                snapshots,
                metrics,
                connections: Mutex::new(BTreeMap::new()),
                subscriptions: Arc::default(),
                plans: conn::CurrentPlans::default(),
                lenses,
                nacks: Mutex::new(VecDeque::new()),
                refusals_logged: Mutex::new(HashSet::new()),
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
            .map(|r| r.status(&snapshot))
            .collect()
    }

    /// The router connections, with what they hold: cheap next to
    /// [`XdsServer::connections`] (no full status is built), for the
    /// gateways' `Programmed` status.
    pub fn routers(&self) -> Vec<RouterProgress> {
        lock(&self.shared.connections)
            .values()
            .filter_map(|r| r.router_progress())
            .collect()
    }

    /// The node ids of the connections that receive `host` (its first
    /// port's cluster is in what their lens shows them, and they subscribe
    /// to clusters), with each one's status; empty when the newest snapshot
    /// has no such host.
    pub fn receivers(&self, host: &str) -> Vec<ConnectionStatus> {
        let snapshot = self.snapshot();
        let Some(port) = snapshot
            .view()
            .services
            .get(host)
            .and_then(|ms| ms.service.ports.first())
        else {
            return Vec::new();
        };
        let cluster = crate::translate::cluster_name(host, port.port);
        let connections: Vec<_> = lock(&self.shared.connections).values().cloned().collect();
        connections
            .into_iter()
            .filter_map(|reg| {
                let status = reg.status(&snapshot);
                let (lens, types) = reg.subscribed();
                let subscribes = types.iter().any(|(kind, wildcard, names)| {
                    *kind == crate::resource::ResourceType::Cluster
                        && (*wildcard || names.contains(cluster.as_str()))
                });
                let lens = lens.unwrap_or_default();
                let sees = lens
                    .get(
                        &snapshot,
                        status.client,
                        crate::resource::ResourceType::Cluster,
                        &cluster,
                    )
                    .is_some();
                (subscribes && sees).then_some(status)
            })
            .collect()
    }

    /// The mesh's root namespace (its rules without a selector are the
    /// mesh's).
    pub fn root_namespace(&self) -> &str {
        &self.shared.config.scoping.root_namespace
    }

    /// The newest snapshot the server serves.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshots.borrow().clone()
    }

    /// The snapshots the server serves, as they come.
    pub fn snapshots(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.shared.snapshots.clone()
    }

    /// The generation of the snapshot each open connection last took up
    /// (looked at and sent what it owed from): cheap, for following a push
    /// to its last connection.
    pub fn connection_generations(&self) -> Vec<u64> {
        lock(&self.shared.connections)
            .values()
            .map(|r| r.served_generation())
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
}
