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
//! order of steps, deadlines); `type_state.rs` one type's rules;
//! `held.rs` what a client holds; `plan.rs` the plans connections share and
//! the server's cache of them; `subscriptions.rs` the shared SotW name
//! lists; `tests.rs` the tests.

mod held;
mod plan;
mod subscriptions;
#[cfg(test)]
mod tests;
mod type_state;

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tokio::time::Instant;

use super::codec::{Outbound, Wire};
use super::request::SotwRequest;
use crate::resource::ResourceType;
use crate::snapshot::Snapshot;

use held::*;
use plan::*;
pub(crate) use plan::{CurrentPlans, Serving};
pub(crate) use subscriptions::Subscriptions;
use subscriptions::*;
use type_state::*;
pub(crate) use type_state::{Lens, RequestOutcome, TypeState};

/// A subscription's names, shared by the connections that subscribe alike.
type NameSet = BTreeSet<Arc<str>>;

fn name_hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// Names one connection may subscribe to per type. Far above any real
/// mesh; it bounds what a misbehaving client can make the server hold.
pub(crate) const MAX_NAMES_PER_TYPE: usize = 200_000;

/// How long listeners and routes wait for the client to subscribe to the
/// endpoints of clusters it was just sent. Envoy subscribes at once; the
/// bound only keeps a client that never does from freezing its stream.
pub(crate) const EDS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// All of one connection's protocol state.
pub(crate) struct ConnState {
    pub(crate) wire: Wire,
    pub(crate) node_id: String,
    pub(crate) node_cluster: String,
    /// The kind of client, from the node's user agent.
    pub(crate) client: crate::translate::Client,
    /// The node's `user_agent_name`.
    pub(crate) user_agent: String,
    /// What the node says about itself (see [`crate::identity`]).
    pub(crate) identity: crate::identity::NodeIdentity,
    pub(crate) types: [TypeState; 4],
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
            if let Some(interned) = t.interned.take() {
                self.subscriptions.release(t.kind, interned);
            }
        }
    }
}

impl ConnState {
    pub(crate) fn new(wire: Wire, subscriptions: Arc<Subscriptions>) -> Self {
        ConnState {
            wire,
            node_id: String::new(),
            node_cluster: String::new(),
            client: crate::translate::Client::Envoy,
            user_agent: String::new(),
            identity: Default::default(),
            types: ResourceType::ALL.map(TypeState::new),
            nonce: 0,
            subscriptions,
            await_eds: None,
        }
    }

    /// Sets what this proxy sees, for every type.
    pub(crate) fn set_lens(&mut self, lens: Lens) {
        for t in &mut self.types {
            t.set_lens(lens.clone());
        }
    }

    /// What this proxy sees (the same for every type).
    pub(crate) fn lens(&self) -> &Lens {
        &self.types[0].lens
    }

    /// A request has been processed (the first carries the node).
    pub(crate) fn requests_seen(&self) -> bool {
        self.nonce > 0 || self.types.iter().any(|t| t.seen_request)
    }

    fn remember_node(&mut self, node: Option<&envoy_types::pb::envoy::config::core::v3::Node>) {
        if let Some(node) = node
            && self.node_id.is_empty()
        {
            self.node_id = node.id.clone();
            self.node_cluster = node.cluster.clone();
            self.client = crate::translate::Client::from_user_agent(&node.user_agent_name);
            self.user_agent = node.user_agent_name.chars().take(64).collect();
            self.identity = crate::identity::NodeIdentity::from_node(node);
            for t in &mut self.types {
                t.client = self.client;
            }
        }
    }

    pub(crate) fn sotw_request(&mut self, req: SotwRequest) -> RequestOutcome {
        self.remember_node(req.node.as_ref());
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return RequestOutcome::UnknownType(req.type_url);
        };
        let node_id = self.node_id.clone();
        let st = &mut self.types[kind.index()];
        if !req.response_nonce.is_empty() && req.response_nonce != st.last_nonce {
            return RequestOutcome::StaleNonce;
        }
        let mut outcome = RequestOutcome::Applied;
        if st
            .in_flight
            .as_ref()
            .is_some_and(|f| f.nonce == req.response_nonce)
        {
            outcome = match req.error_detail {
                Some(status) => match st.nack(&node_id, status.message) {
                    Some(record) => RequestOutcome::Nack(record),
                    None => RequestOutcome::Applied,
                },
                None => RequestOutcome::Ack(kind, st.ack()),
            };
        }
        // Every SotW ACK restates the whole subscription (an Envoy's EDS
        // ACK names every cluster): when the list is the one last seen, in
        // the same order, skip rebuilding and comparing the set.
        let names_digest = req.names.digest();
        if st.seen_request && st.request_digest == Some(names_digest) {
            return outcome;
        }
        st.request_digest = Some(names_digest);
        let interned = match self.subscriptions.get(kind, &req.names) {
            Some(known) => known,
            None => {
                if req.names.len() > MAX_NAMES_PER_TYPE {
                    tracing::warn!(node = %node_id, r#type = %kind, names = req.names.len(),
                        limit = MAX_NAMES_PER_TYPE, "subscription too large; extra names ignored");
                }
                let mut names: NameSet = req
                    .names
                    .iter()
                    .take(MAX_NAMES_PER_TYPE)
                    .map(Arc::from)
                    .collect();
                let star = names.remove("*");
                let interned = Interned {
                    entries: req.names.entries(),
                    digest: names.iter().fold(0, |d, n| d ^ name_hash(n)),
                    names: Arc::new(names),
                    star,
                    request_digest: names_digest,
                };
                self.subscriptions.offer(kind, interned)
            }
        };
        if let Some(old) = st.interned.replace(interned) {
            self.subscriptions.release(kind, old);
        }
        let Some((names, star, digest)) = st
            .interned
            .as_ref()
            .map(|i| (i.names.clone(), i.star, i.digest))
        else {
            return outcome;
        };
        let names = &names;
        let first = !st.seen_request;
        if first {
            st.legacy_wildcard = names.is_empty() && !star;
        }
        let wildcard = star || (st.legacy_wildcard && names.is_empty());
        let same = Arc::ptr_eq(names, &st.names) || **names == *st.names;
        if !Arc::ptr_eq(names, &st.names) {
            st.names = names.clone();
            st.names_digest = digest;
        }
        if first || wildcard != st.wildcard || !same {
            st.wildcard = wildcard;
            st.synced_at = None;
            // Full-state types must answer a changed subscription, even with
            // an unchanged set: that is how a client learns a name does not exist.
            st.must_answer = first || kind.is_full_state();
            if !st.wildcard && st.names.is_empty() {
                // Nothing subscribed: the client may drop a response in
                // flight for this type without acknowledging it.
                st.in_flight = None;
                st.must_answer = false;
            }
        }
        if first && !req.version_info.is_empty() {
            st.resume_version = Some(req.version_info);
        }
        st.seen_request = true;
        outcome
    }

    pub(crate) fn delta_request(&mut self, req: DeltaDiscoveryRequest) -> RequestOutcome {
        self.remember_node(req.node.as_ref());
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return RequestOutcome::UnknownType(req.type_url);
        };
        let node_id = self.node_id.clone();
        let st = &mut self.types[kind.index()];
        let first = !st.seen_request;
        if first {
            for (name, version) in req.initial_resource_versions {
                let name: Arc<str> = name.into();
                let held = Held::declared(kind, name.clone(), version.into());
                st.set_held(name, Some(held));
            }
            if req.resource_names_subscribe.is_empty() {
                st.wildcard = true;
            }
            st.must_answer = true;
        }
        if !req.resource_names_subscribe.is_empty() {
            st.synced_at = None;
        }
        let room = MAX_NAMES_PER_TYPE.saturating_sub(st.names.len());
        let mut added = Vec::with_capacity(req.resource_names_subscribe.len().min(room));
        for name in req.resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
            } else if added.len() >= room {
                tracing::warn!(node = %node_id, r#type = %kind, limit = MAX_NAMES_PER_TYPE,
                    "subscription too large; extra names ignored");
                break;
            } else {
                added.push(Arc::<str>::from(name));
            }
        }
        st.subscribe_all(added);
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
            } else {
                st.unsubscribe(name.as_str());
                st.to_answer.remove(name.as_str());
            }
            st.synced_at = None;
        }
        if !st.wildcard && st.names.is_empty() {
            st.in_flight = None;
        }
        st.seen_request = true;
        if req.response_nonce.is_empty() {
            return RequestOutcome::Applied;
        }
        if st
            .in_flight
            .as_ref()
            .is_some_and(|f| f.nonce == req.response_nonce)
        {
            return match req.error_detail {
                Some(status) => match st.nack(&node_id, status.message) {
                    Some(record) => RequestOutcome::Nack(record),
                    None => RequestOutcome::Applied,
                },
                None => RequestOutcome::Ack(kind, st.ack()),
            };
        }
        if req.response_nonce == st.last_nonce {
            // A repeated ACK of an already acknowledged response.
            return RequestOutcome::Applied;
        }
        RequestOutcome::StaleNonce
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
                        let t = &self.types[k.index()];
                        t.in_flight.is_some() || !t.settled(snap)
                    })
            {
                continue;
            }
            if self.types[kind.index()].in_flight.is_some() {
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
        let cds = &self.types[ResourceType::Cluster.index()];
        cds.in_flight
            .as_ref()
            .is_none_or(|f| f.generation == snap.generation || cds.settled(snap))
    }

    /// Remembers the EDS clusters just sent when the client is one that
    /// fetches endpoints for every cluster (Envoy: wildcard CDS, or already
    /// subscribed to EDS).
    fn expect_eds_for(&mut self, snap: &Snapshot) {
        let cds = &self.types[ResourceType::Cluster.index()];
        let eds = &self.types[ResourceType::Endpoint.index()];
        if !(cds.wildcard || eds.seen_request) {
            return;
        }
        let Some(sent) = cds.in_flight.as_ref().map(|f| &f.plan.updates) else {
            return;
        };
        let names: Vec<Arc<str>> = sent
            .iter()
            .filter(|r| snap.get(ResourceType::Endpoint, &r.name).is_some())
            .map(|r| r.name.clone())
            .collect();
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
        if self.client != crate::translate::Client::Envoy {
            return;
        }
        let Some(sent) = self.types[ResourceType::Cluster.index()]
            .in_flight
            .as_ref()
            .map(|f| f.plan.updates.clone())
        else {
            return;
        };
        let eds = &mut self.types[ResourceType::Endpoint.index()];
        for r in sent {
            if eds.held.get(&r.name).is_some()
                && snap.get(ResourceType::Endpoint, &r.name).is_some()
            {
                eds.held.set(r.name.clone(), None);
                eds.to_answer.insert(r.name.clone());
            }
        }
    }

    /// True while listeners and routes must wait for an EDS subscription.
    fn waiting_for_eds(&mut self) -> bool {
        let Some((names, since)) = &self.await_eds else {
            return false;
        };
        let eds = &self.types[ResourceType::Endpoint.index()];
        let covered = eds.wildcard || names.iter().all(|n| eds.names.contains(n));
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
    pub(crate) fn next_deadline(&self, ack_timeout: std::time::Duration) -> Option<Instant> {
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
            let counts = (c + t.plans_computed, s + t.plans_shared);
            (t.plans_computed, t.plans_shared) = (0, 0);
            counts
        })
    }

    /// When the oldest response in flight was sent, if one is.
    pub(crate) fn in_flight_since(&self) -> Option<Instant> {
        self.types
            .iter()
            .filter_map(|t| t.in_flight.as_ref().map(|f| f.since))
            .min()
    }

    /// Gives up waiting for acknowledgements older than `ack_timeout` (the
    /// client lost them or never answers); what was sent is assumed held.
    /// The types that were waiting.
    pub(crate) fn expire_in_flight(
        &mut self,
        ack_timeout: std::time::Duration,
    ) -> Vec<ResourceType> {
        let now = Instant::now();
        let mut expired = Vec::new();
        for t in &mut self.types {
            if t.in_flight
                .as_ref()
                .is_some_and(|f| f.since + ack_timeout <= now)
            {
                t.in_flight = None;
                expired.push(t.kind);
            }
        }
        expired
    }
}
