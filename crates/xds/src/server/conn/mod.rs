//! One connection's protocol state: subscriptions, what the client holds,
//! what is in flight, ACKs and NACKs. No I/O here: requests go in, responses
//! come out of [`ConnState::pump`].
//!
//! Rules it keeps (see ARCHITECTURE.md, "Per-connection protocol"):
//! - one response in flight per type; types wait for what they depend on,
//!   not for each other's ACKs: clusters before the endpoints and routes
//!   that use them, routes before cluster removals;
//! - a NACKed version is not sent again; the next different one is;
//! - requests with a stale nonce do not count as ACKs (SotW ignores them
//!   entirely, since the next request restates the subscription);
//! - every first request and every new subscription gets an answer, with a
//!   placeholder for an assignment or route configuration that does not exist.
//!
//! Where things are: this file holds [`ConnState`] (the connection, the
//! order of steps across types, deadlines); `type_state.rs` one type's
//! rules (what a request changes, what is owed, NACKs); `held.rs` what a
//! client holds; `plan.rs` the plans connections share and the server's
//! cache of them; `subscriptions.rs` the shared SotW name lists;
//! `tests.rs` the tests.

mod held;
mod plan;
mod subscriptions;
#[cfg(test)]
mod tests;
mod type_state;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tokio::time::Instant;

pub(crate) use plan::{CurrentPlans, Serving};
pub(crate) use subscriptions::{NameSet, Subscriptions};
pub(crate) use type_state::{HeldNow, RequestOutcome, TypeState};

use super::codec::{Outbound, Wire};
use super::register::HEALTH_TYPE_URL;
use super::request::SotwRequest;
use crate::identity::NodeIdentity;
use crate::lens::Lens;
use crate::resource::ResourceType;
use crate::snapshot::Snapshot;
use crate::translate::Client;
use type_state::{Phase, STEPS};

/// How long listeners and routes wait for the client to subscribe to the
/// endpoints of clusters it was just sent. Envoy subscribes at once; the
/// bound only keeps a client that never does from freezing its stream.
pub(crate) const EDS_WAIT: Duration = Duration::from_secs(2);

/// All of one connection's protocol state.
pub(crate) struct ConnState {
    pub(crate) wire: Wire,
    pub(crate) node_id: String,
    pub(crate) node_cluster: String,
    /// The kind of client, from the node's user agent.
    pub(crate) client: Client,
    /// The node's `user_agent_name`.
    pub(crate) user_agent: String,
    /// What the node says about itself (see [`crate::identity`]).
    pub(crate) identity: NodeIdentity,
    /// The health its agent reported last, if it reported (see
    /// [`crate::server::register`]).
    pub(crate) health: Option<sextant_core::Health>,
    types: [TypeState; ResourceType::COUNT],
    nonce: u64,
    /// The server's shared SotW subscriptions.
    subscriptions: Arc<Subscriptions>,
    /// EDS clusters just sent whose assignments the client has not
    /// subscribed to yet; listeners and routes wait for them.
    await_eds: Option<(Vec<Arc<str>>, Instant)>,
}

impl Drop for ConnState {
    /// Gives the connection's SotW subscriptions back: the last user of one
    /// removes it from the server's table.
    fn drop(&mut self) {
        for t in &mut self.types {
            t.release(&self.subscriptions);
        }
    }
}

impl ConnState {
    pub(crate) fn new(wire: Wire, subscriptions: Arc<Subscriptions>) -> Self {
        ConnState {
            wire,
            node_id: String::new(),
            node_cluster: String::new(),
            client: Client::Envoy,
            user_agent: String::new(),
            identity: Default::default(),
            health: None,
            types: ResourceType::ALL.map(TypeState::new),
            nonce: 0,
            subscriptions,
            await_eds: None,
        }
    }

    /// One type's state.
    pub(crate) fn of(&self, kind: ResourceType) -> &TypeState {
        &self.types[kind.index()]
    }

    fn of_mut(&mut self, kind: ResourceType) -> &mut TypeState {
        &mut self.types[kind.index()]
    }

    /// Every type's state, in push order.
    pub(crate) fn types(&self) -> &[TypeState; ResourceType::COUNT] {
        &self.types
    }

    /// Sets what this proxy sees, for every type.
    pub(crate) fn set_lens(&mut self, lens: &Lens) {
        for t in &mut self.types {
            t.set_lens(lens.clone());
        }
    }

    /// A request has been processed (the first carries the node).
    pub(crate) fn requests_seen(&self) -> bool {
        self.nonce > 0 || self.health.is_some() || self.types.iter().any(TypeState::seen_request)
    }

    fn remember_node(&mut self, node: Option<&Node>) {
        if let Some(node) = node
            && self.node_id.is_empty()
        {
            self.node_id = node.id.clone();
            self.node_cluster = node.cluster.clone();
            self.client = Client::from_user_agent(&node.user_agent_name);
            self.user_agent = node.user_agent_name.chars().take(64).collect();
            self.identity = NodeIdentity::from_node(node);
            for t in &mut self.types {
                t.set_client(self.client);
            }
        }
    }

    /// Applies a state-of-the-world request (no bookkeeping across types;
    /// see [`ConnState::on_sotw`]).
    pub(crate) fn sotw_request(&mut self, req: SotwRequest) -> RequestOutcome {
        self.remember_node(req.node.as_ref());
        if req.type_url == HEALTH_TYPE_URL {
            let health = health_of(req.error_detail.is_none());
            self.health = Some(health);
            return RequestOutcome::Health(health);
        }
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return RequestOutcome::UnknownType(req.type_url);
        };
        let t = &mut self.types[kind.index()];
        t.on_sotw(req, &self.subscriptions, &self.node_id)
    }

    /// Applies an incremental request (see [`ConnState::on_delta`]).
    pub(crate) fn delta_request(&mut self, req: DeltaDiscoveryRequest) -> RequestOutcome {
        self.remember_node(req.node.as_ref());
        if req.type_url == HEALTH_TYPE_URL {
            let health = health_of(req.error_detail.is_none());
            self.health = Some(health);
            return RequestOutcome::Health(health);
        }
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return RequestOutcome::UnknownType(req.type_url);
        };
        let t = &mut self.types[kind.index()];
        t.on_delta(req, &self.node_id)
    }

    /// Applies a state-of-the-world request.
    pub(crate) fn on_sotw(&mut self, req: SotwRequest) -> RequestOutcome {
        let outcome = self.sotw_request(req);
        self.after_request(&outcome);
        outcome
    }

    /// Applies an incremental request.
    pub(crate) fn on_delta(&mut self, req: DeltaDiscoveryRequest) -> RequestOutcome {
        let outcome = self.delta_request(req);
        self.after_request(&outcome);
        outcome
    }

    fn after_request(&mut self, outcome: &RequestOutcome) {
        // Rejected clusters will not be fetched: listeners need not wait.
        if let RequestOutcome::Nack(record) = outcome
            && record.kind == ResourceType::Cluster
        {
            self.await_eds = None;
        }
    }

    /// The next response to send, if any. Call it until it returns `None`:
    /// each type has at most one response in flight, and types do not wait
    /// for each other's acknowledgements, only for what they depend on.
    ///
    /// Envoy acknowledges a CDS response that adds clusters only once those
    /// clusters have warmed, and they warm on their endpoints: a server that
    /// held the endpoints until the clusters were acknowledged would stall
    /// every new cluster until Envoy's `initial_fetch_timeout` (15 s). So the
    /// order is kept by what each step needs, not by one response at a time:
    /// - clusters (additions) first;
    /// - endpoints whenever the client asks (it asks only for clusters it
    ///   was sent, so they already follow their clusters on the stream);
    /// - listeners and routes only once every cluster addition has been
    ///   sent and, for an Envoy-like client, once it subscribed to the new
    ///   clusters' endpoints (at most [`EDS_WAIT`]);
    /// - cluster removals last, once listeners and routes are acknowledged
    ///   and have nothing left to send, so nothing refers to them any more.
    pub(crate) fn pump(&mut self, snap: &Serving) -> Option<Outbound> {
        if !snap.is_ready() {
            return None;
        }
        let waiting = self.waiting_for_eds();
        for (kind, phase) in STEPS {
            let refers_to_clusters = matches!(kind, ResourceType::Listener | ResourceType::Route);
            if refers_to_clusters && (waiting || !self.clusters_sent(snap)) {
                continue;
            }
            if phase == Phase::Removals
                && [ResourceType::Listener, ResourceType::Route]
                    .iter()
                    .any(|k| {
                        let t = self.of(*k);
                        t.in_flight() || !t.settled(snap)
                    })
            {
                continue;
            }
            if self.of(kind).in_flight() {
                continue;
            }
            let wire = self.wire;
            let out = self.types[kind.index()].plan(snap, phase, wire, &mut self.nonce);
            if let Some(out) = out {
                if kind == ResourceType::Cluster && phase == Phase::Additions {
                    self.expect_eds_for(snap);
                    self.rewarm_eds(snap);
                }
                return Some(out);
            }
        }
        None
    }

    /// Every cluster of `snap` the client should have has been sent. Called
    /// after the cluster step of the same pump: with no CDS response in
    /// flight, that step just found nothing to add. With one in flight, it
    /// holds everything if it was planned from `snap` (or nothing is left);
    /// otherwise a newer snapshot may add clusters that cannot go out before
    /// its acknowledgement, and whatever refers to them waits too.
    fn clusters_sent(&self, snap: &Snapshot) -> bool {
        let cds = self.of(ResourceType::Cluster);
        cds.in_flight_generation()
            .is_none_or(|g| g == snap.generation || cds.settled(snap))
    }

    /// Remembers the EDS clusters just sent when the client is one that
    /// fetches endpoints for every cluster (Envoy: wildcard CDS, or already
    /// subscribed to EDS).
    fn expect_eds_for(&mut self, snap: &Snapshot) {
        let cds = self.of(ResourceType::Cluster);
        if !(cds.wildcard() || self.of(ResourceType::Endpoint).seen_request()) {
            return;
        }
        let mut names = cds.in_flight_updates();
        names.retain(|n| snap.get(ResourceType::Endpoint, n).is_some());
        if !names.is_empty() {
            self.await_eds = Some((names, Instant::now()));
        }
    }

    /// Envoy warms a cluster it receives again, new or updated, and the
    /// updated one replaces the old only once a ClusterLoadAssignment for
    /// it arrives (the xDS protocol's "resource warming"), even when the
    /// endpoints did not change; until then the old cluster serves, up to
    /// Envoy's 15 s `initial_fetch_timeout`. So the assignments of the
    /// clusters just sent that the client already holds are sent again.
    /// Proxyless gRPC clients do not warm.
    fn rewarm_eds(&mut self, snap: &Snapshot) {
        if self.client != Client::Envoy {
            return;
        }
        let sent = self.of(ResourceType::Cluster).in_flight_updates();
        self.of_mut(ResourceType::Endpoint).resend(&sent, snap);
    }

    /// True while listeners and routes must wait for an EDS subscription.
    fn waiting_for_eds(&mut self) -> bool {
        let Some((names, since)) = &self.await_eds else {
            return false;
        };
        let covered = self.of(ResourceType::Endpoint).covers(names);
        if covered || since.elapsed() >= EDS_WAIT {
            if !covered {
                tracing::warn!(node = %self.node_id, "client did not subscribe to the endpoints of new clusters; sending listeners and routes anyway");
            }
            self.await_eds = None;
            return false;
        }
        true
    }

    /// When the connection must wake up without a request: the earliest ACK
    /// deadline of a response in flight, or the end of the wait for an EDS
    /// subscription, whichever comes first. Neither can spin: an expired
    /// wait is cleared by the next [`ConnState::pump`] whatever else is in
    /// flight, and an expired ACK deadline by [`ConnState::expire_in_flight`].
    pub(crate) fn next_deadline(&self, ack_timeout: Duration) -> Option<Instant> {
        let ack = self.in_flight_since().map(|since| since + ack_timeout);
        let eds = self.await_eds.as_ref().map(|(_, since)| *since + EDS_WAIT);
        match (ack, eds) {
            (Some(a), Some(e)) => Some(a.min(e)),
            (a, e) => a.or(e),
        }
    }

    /// Plans computed by this connection and taken from others since the
    /// last call (for the metrics).
    pub(crate) fn take_plan_counts(&mut self) -> (u64, u64) {
        self.types.iter_mut().fold((0, 0), |(c, s), t| {
            let (computed, shared) = t.take_plan_counts();
            (c + computed, s + shared)
        })
    }

    /// When the oldest response in flight was sent, if one is.
    pub(crate) fn in_flight_since(&self) -> Option<Instant> {
        self.types
            .iter()
            .filter_map(TypeState::in_flight_since)
            .min()
    }

    /// Gives up waiting for acknowledgements older than `ack_timeout` (the
    /// client lost them or never answers); what was sent is assumed held.
    /// The types that were waiting.
    pub(crate) fn expire_in_flight(&mut self, ack_timeout: Duration) -> Vec<ResourceType> {
        let now = Instant::now();
        self.types
            .iter_mut()
            .filter_map(|t| t.expire(ack_timeout, now).then(|| t.kind()))
            .collect()
    }
}

/// A health report: healthy without an error, unhealthy with one.
fn health_of(healthy: bool) -> sextant_core::Health {
    if healthy {
        sextant_core::Health::Healthy
    } else {
        sextant_core::Health::Unhealthy
    }
}
