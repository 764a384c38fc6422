//! One connection's protocol state: subscriptions, what the client holds,
//! what is in flight, ACKs and NACKs. No I/O here: requests go in, responses
//! come out of [`ConnState::pump`], one at a time.
//!
//! Rules it keeps (see the crate docs for why):
//! - one response in flight per connection; the next waits for the ACK or
//!   NACK, which is how clusters reach a proxy before their endpoints,
//!   endpoints before listeners and routes, and removals after additions;
//! - a NACKed version is not sent again; the next different one is;
//! - requests with a stale nonce do not count as ACKs (SotW ignores them
//!   entirely, since the next request restates the subscription);
//! - every first request and every new subscription gets an answer, with a
//!   placeholder for an assignment or route configuration that does not exist.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

use super::request::SotwRequest;
use tokio::time::Instant;

use super::codec::{Outbound, Wire};
use crate::resource::{Resource, ResourceType};
use crate::snapshot::{Snapshot, placeholder};

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
    #[serde(serialize_with = "crate::server::status::rfc3339")]
    pub at: SystemTime,
}

/// A resource the client holds: the shared resource we sent (one pointer
/// per entry, keyed by its own name, so a connection's bookkeeping costs a
/// few bytes per resource), or a bodiless stand-in for a version a delta
/// client declared on reconnect.
#[derive(Clone)]
struct Held(Arc<Resource>);

impl Held {
    fn sent(resource: Arc<Resource>) -> Held {
        Held(resource)
    }

    fn declared(kind: ResourceType, name: Arc<str>, version: Arc<str>) -> Held {
        Held(Arc::new(Resource {
            kind,
            name,
            version,
            any: bytes::Bytes::new(),
            placeholder: false,
        }))
    }

    fn name(&self) -> &Arc<str> {
        &self.0.name
    }

    fn version(&self) -> &Arc<str> {
        &self.0.version
    }

    /// The resource, unless this only stands for a declared version (an
    /// encoded resource is never empty: it carries its type URL).
    fn resource(&self) -> Option<&Arc<Resource>> {
        (!self.0.any.is_empty()).then_some(&self.0)
    }
}

impl std::borrow::Borrow<str> for Held {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Held {}

impl std::hash::Hash for Held {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must agree with `str`'s hash, for lookups by name.
        (*self.0.name).hash(state);
    }
}

struct InFlight {
    nonce: String,
    version_info: String,
    sent: Vec<(Arc<str>, Arc<str>)>,
    /// How to restore `held` if the response is rejected.
    undo: Vec<(Arc<str>, Option<Held>)>,
    since: Instant,
}

/// What happened to a request, for counting.
#[derive(Debug)]
pub(crate) enum RequestOutcome {
    /// Applied.
    Applied,
    /// An ACK of the response in flight, after this long.
    Ack(std::time::Duration),
    /// A NACK of the response in flight.
    Nack(NackRecord),
    /// Its nonce was stale; ignored for ACK purposes.
    StaleNonce,
    /// A type Sextant does not serve.
    UnknownType(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Additions,
    Removals,
}

/// Push order: clusters (additions), endpoints, listeners, routes, and
/// cluster removals last, once nothing refers to them any more.
const STEPS: [(ResourceType, Phase); 5] = [
    (ResourceType::Cluster, Phase::Additions),
    (ResourceType::Endpoint, Phase::Additions),
    (ResourceType::Listener, Phase::Additions),
    (ResourceType::Route, Phase::Additions),
    (ResourceType::Cluster, Phase::Removals),
];

pub(crate) struct TypeState {
    kind: ResourceType,
    seen_request: bool,
    wildcard: bool,
    /// A SotW client that subscribed with an empty list (legacy wildcard).
    legacy_wildcard: bool,
    names: BTreeSet<Arc<str>>,
    held: HashSet<Held>,
    held_digest: u64,
    in_flight: Option<InFlight>,
    rejected: HashMap<Arc<str>, Arc<str>>,
    must_answer: bool,
    to_answer: BTreeSet<Arc<str>>,
    /// SotW reconnect: the version the client says it holds, checked
    /// against the first snapshot we serve it.
    resume_version: Option<String>,
    /// `held` matches this snapshot generation (NACKed versions aside).
    synced_at: Option<u64>,
    /// Hash of the last SotW request's names, in order.
    names_digest: Option<u64>,
    last_nonce: String,
    pub(crate) acked_version: String,
    pub(crate) sent_version: String,
    pub(crate) responses: u64,
    pub(crate) last_nack: Option<NackRecord>,
}

/// The sorted union of two sorted runs of distinct names.
fn merge_sorted<'a>(
    a: impl Iterator<Item = &'a Arc<str>>,
    b: impl Iterator<Item = &'a Arc<str>>,
) -> Vec<Arc<str>> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut out = Vec::with_capacity(a.size_hint().0.max(b.size_hint().0));
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => return out,
        };
        if let Some(n) = next {
            out.push(n.clone());
        }
    }
}

/// What to do with one name.
enum Verdict {
    Keep,
    Send(Arc<Resource>),
    /// Tell the client the resource is gone (or does not exist).
    Remove,
    /// The client no longer wants it; forget it without a message.
    Forget,
}

impl TypeState {
    fn new(kind: ResourceType) -> Self {
        TypeState {
            kind,
            seen_request: false,
            wildcard: false,
            legacy_wildcard: false,
            names: BTreeSet::new(),
            held: HashSet::new(),
            held_digest: 0,
            in_flight: None,
            rejected: HashMap::new(),
            must_answer: false,
            to_answer: BTreeSet::new(),
            resume_version: None,
            synced_at: None,
            names_digest: None,
            last_nonce: String::new(),
            acked_version: String::new(),
            sent_version: String::new(),
            responses: 0,
            last_nack: None,
        }
    }

    pub(crate) fn wildcard(&self) -> bool {
        self.wildcard
    }
    pub(crate) fn subscribed(&self) -> usize {
        self.names.len()
    }
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    fn set_held(&mut self, name: Arc<str>, held: Option<Held>) -> Option<Held> {
        if let Some(h) = &held {
            debug_assert_eq!(h.name(), &name);
            self.held_digest ^= Resource::digest(&name, h.version());
        }
        let old = match held {
            Some(h) => self.held.replace(h),
            None => self.held.take(&*name),
        };
        if let Some(o) = &old {
            self.held_digest ^= Resource::digest(&name, o.version());
        }
        old
    }

    fn wants_by_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn verdict(&self, name: &Arc<str>, snap: &Snapshot) -> Verdict {
        let held = self.held.get(&**name);
        let want = match snap.get(self.kind, name) {
            Some(r) if self.wildcard || self.wants_by_name(name) => Some(r.clone()),
            Some(_) => None,
            None if self.wants_by_name(name) && !self.kind.is_full_state() => {
                // Assignments and routes that do not exist get an empty one,
                // so the cluster or listener that needs them is not left
                // warming. One the client already holds stays until it
                // unsubscribes: its cluster or listener is on its way out,
                // after the routes that use it.
                if held.is_some() {
                    return Verdict::Keep;
                }
                match placeholder(self.kind, name) {
                    Some(p) => Some(p),
                    None => return Verdict::Keep,
                }
            }
            None => None,
        };
        match (want, held) {
            (Some(r), Some(h)) if *h.version() == r.version => Verdict::Keep,
            (Some(r), _) if self.rejected.get(name) == Some(&r.version) => Verdict::Keep,
            (Some(r), _) => Verdict::Send(r),
            (None, Some(_)) => {
                if self.wildcard || self.wants_by_name(name) {
                    Verdict::Remove
                } else {
                    Verdict::Forget
                }
            }
            (None, None) if self.to_answer.contains(name) => Verdict::Remove,
            (None, None) => Verdict::Keep,
        }
    }

    fn candidates(&self, snap: &Snapshot) -> Vec<Arc<str>> {
        let pending = self.must_answer || !self.to_answer.is_empty();
        if !pending {
            if self.synced_at == Some(snap.generation) {
                return Vec::new();
            }
            if self.synced_at.is_some() && self.synced_at == snap.generation.checked_sub(1) {
                return snap.resources(self.kind).changed.clone();
            }
        }
        // The union of what is subscribed and what is held, in name order.
        // Merged from sorted runs rather than built as a tree: on a new
        // stream (nothing held) this compares each name about once, which
        // matters with a thousand proxies connecting at once.
        let subscribed = self.names.iter();
        let mut all = if self.wildcard {
            merge_sorted(snap.resources(self.kind).resources.keys(), subscribed)
        } else {
            subscribed.cloned().collect()
        };
        if !self.held.is_empty() {
            let mut held: Vec<&Arc<str>> = self.held.iter().map(Held::name).collect();
            held.sort_unstable();
            all = merge_sorted(all.iter(), held.into_iter());
        }
        all
    }

    /// A SotW client reconnecting with the version of exactly what we would
    /// send it already holds it: nothing is resent.
    fn try_resume(&mut self, snap: &Snapshot) {
        let Some(version) = self.resume_version.take() else {
            return;
        };
        let mut desired = Vec::new();
        for name in self.candidates(snap) {
            if let Verdict::Send(r) = self.verdict(&name, snap) {
                desired.push(r);
            }
        }
        let digest = desired
            .iter()
            .fold(0u64, |d, r| d ^ Resource::digest(&r.name, &r.version));
        if format!("{digest:016x}") == version {
            for r in desired {
                let name = r.name.clone();
                self.set_held(name, Some(Held::sent(r)));
            }
            self.must_answer = false;
            self.acked_version = version;
            self.synced_at = Some(snap.generation);
        }
    }

    fn plan(
        &mut self,
        snap: &Snapshot,
        phase: Phase,
        wire: Wire,
        nonce: &mut u64,
    ) -> Option<Outbound> {
        if !self.seen_request {
            return None;
        }
        if wire == Wire::Sotw {
            self.try_resume(snap);
        }
        let mut updates = Vec::new();
        let mut removals = Vec::new();
        let mut forget = Vec::new();
        for name in self.candidates(snap) {
            match self.verdict(&name, snap) {
                Verdict::Keep => {}
                Verdict::Send(r) => updates.push(r),
                Verdict::Remove => removals.push(name),
                Verdict::Forget => forget.push(name),
            }
        }
        for name in forget {
            self.set_held(name, None);
        }
        let deferred =
            self.kind == ResourceType::Cluster && phase == Phase::Additions && !removals.is_empty();
        match (self.kind, phase) {
            (ResourceType::Cluster, Phase::Additions) => removals.clear(),
            (ResourceType::Cluster, Phase::Removals) => updates.clear(),
            (_, Phase::Removals) => return None,
            _ => {}
        }
        // SotW assignments and routes are never removed by us: the client
        // drops them when it unsubscribes.
        if wire == Wire::Sotw && !self.kind.is_full_state() {
            removals.clear();
        }
        let answer = self.must_answer && phase == Phase::Additions;
        if updates.is_empty() && removals.is_empty() && !answer {
            if !deferred && phase == Phase::Additions || self.kind != ResourceType::Cluster {
                self.synced_at = Some(snap.generation);
            }
            if self.kind == ResourceType::Cluster && phase == Phase::Removals {
                self.synced_at = Some(snap.generation);
            }
            return None;
        }

        let mut undo = Vec::new();
        let mut sent = Vec::new();
        for r in &updates {
            let held = Held::sent(r.clone());
            undo.push((r.name.clone(), self.set_held(r.name.clone(), Some(held))));
            sent.push((r.name.clone(), r.version.clone()));
            self.rejected.remove(&r.name);
        }
        for name in &removals {
            undo.push((name.clone(), self.set_held(name.clone(), None)));
            self.rejected.remove(name);
        }
        let version_info = format!("{:016x}", self.held_digest);
        let resources = if wire == Wire::Sotw && self.kind.is_full_state() {
            let mut all: Vec<Arc<Resource>> = self
                .held
                .iter()
                .filter_map(|h| h.resource().cloned())
                .collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            all
        } else {
            updates
        };
        *nonce += 1;
        let nonce = nonce.to_string();
        self.in_flight = Some(InFlight {
            nonce: nonce.clone(),
            version_info: version_info.clone(),
            sent,
            undo,
            since: Instant::now(),
        });
        self.last_nonce = nonce.clone();
        self.must_answer = false;
        self.to_answer.clear();
        self.synced_at = if deferred {
            None
        } else {
            Some(snap.generation)
        };
        self.sent_version = version_info.clone();
        self.responses += 1;
        Some(Outbound {
            wire,
            kind: self.kind,
            version_info,
            nonce,
            resources,
            removed: if wire == Wire::Delta {
                removals
            } else {
                Vec::new()
            },
        })
    }

    fn ack(&mut self) -> std::time::Duration {
        match self.in_flight.take() {
            Some(f) => {
                self.acked_version = f.version_info;
                f.since.elapsed()
            }
            None => std::time::Duration::ZERO,
        }
    }

    fn nack(&mut self, node_id: &str, error: String) -> Option<NackRecord> {
        let f = self.in_flight.take()?;
        let resources = f.sent.iter().map(|(n, _)| n.to_string()).collect();
        for (name, version) in f.sent {
            self.rejected.insert(name, version);
        }
        for (name, prev) in f.undo.into_iter().rev() {
            self.set_held(name, prev);
        }
        let record = NackRecord {
            node_id: node_id.to_owned(),
            kind: self.kind,
            nonce: f.nonce,
            version: f.version_info,
            resources,
            error,
            at: SystemTime::now(),
        };
        self.last_nack = Some(record.clone());
        Some(record)
    }
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
    pub(crate) types: [TypeState; 4],
    nonce: u64,
    /// EDS clusters just sent whose assignments the client has not
    /// subscribed to yet; listeners and routes wait for them.
    await_eds: Option<(Vec<Arc<str>>, Instant)>,
}

impl ConnState {
    pub(crate) fn new(wire: Wire) -> Self {
        ConnState {
            wire,
            node_id: String::new(),
            node_cluster: String::new(),
            types: ResourceType::ALL.map(TypeState::new),
            nonce: 0,
            await_eds: None,
        }
    }

    fn remember_node(&mut self, node: Option<&envoy_types::pb::envoy::config::core::v3::Node>) {
        if let Some(node) = node
            && self.node_id.is_empty()
        {
            self.node_id = node.id.clone();
            self.node_cluster = node.cluster.clone();
        }
    }

    fn sotw_request(&mut self, req: SotwRequest) -> RequestOutcome {
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
                None => RequestOutcome::Ack(st.ack()),
            };
        }
        // Every SotW ACK restates the whole subscription (an Envoy's EDS
        // ACK names every cluster): when the list is the one last seen, in
        // the same order, skip rebuilding and comparing the set.
        let names_digest = req.names.digest();
        if st.seen_request && st.names_digest == Some(names_digest) {
            return outcome;
        }
        st.names_digest = Some(names_digest);
        if req.names.len() > MAX_NAMES_PER_TYPE {
            tracing::warn!(node = %node_id, r#type = %kind, names = req.names.len(),
                limit = MAX_NAMES_PER_TYPE, "subscription too large; extra names ignored");
        }
        let mut names: BTreeSet<Arc<str>> = req
            .names
            .iter()
            .take(MAX_NAMES_PER_TYPE)
            .map(Arc::from)
            .collect();
        let star = names.remove("*");
        let first = !st.seen_request;
        if first {
            st.legacy_wildcard = names.is_empty() && !star;
        }
        let wildcard = star || (st.legacy_wildcard && names.is_empty());
        if first || wildcard != st.wildcard || names != st.names {
            st.wildcard = wildcard;
            st.names = names;
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

    fn delta_request(&mut self, req: DeltaDiscoveryRequest) -> RequestOutcome {
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
        for name in req.resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
            } else if st.names.len() >= MAX_NAMES_PER_TYPE {
                tracing::warn!(node = %node_id, r#type = %kind, limit = MAX_NAMES_PER_TYPE,
                    "subscription too large; extra names ignored");
                break;
            } else {
                let name: Arc<str> = name.into();
                st.to_answer.insert(name.clone());
                st.names.insert(name);
            }
            st.synced_at = None;
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(name.as_str());
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
                None => RequestOutcome::Ack(st.ack()),
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

    /// The next response to send, if any. At most one is in flight.
    pub(crate) fn pump(&mut self, snap: &Snapshot) -> Option<Outbound> {
        if !snap.is_ready() || self.types.iter().any(|t| t.in_flight.is_some()) {
            return None;
        }
        for (kind, phase) in STEPS {
            if matches!(kind, ResourceType::Listener | ResourceType::Route)
                && self.waiting_for_eds()
            {
                return None;
            }
            let wire = self.wire;
            let out = self.types[kind.index()].plan(snap, phase, wire, &mut self.nonce);
            if let Some(out) = out {
                if kind == ResourceType::Cluster && phase == Phase::Additions {
                    self.expect_eds_for(&out, snap);
                }
                return Some(out);
            }
        }
        None
    }

    /// Remembers the EDS clusters in `out` when the client is one that
    /// fetches endpoints for every cluster (Envoy: wildcard CDS, or already
    /// subscribed to EDS).
    fn expect_eds_for(&mut self, out: &Outbound, snap: &Snapshot) {
        let cds = &self.types[ResourceType::Cluster.index()];
        let eds = &self.types[ResourceType::Endpoint.index()];
        if !(cds.wildcard || eds.seen_request) {
            return;
        }
        let sent = cds.in_flight.as_ref().map(|f| &f.sent);
        let names: Vec<Arc<str>> = out
            .resources
            .iter()
            .filter(|r| sent.is_some_and(|s| s.iter().any(|(n, _)| *n == r.name)))
            .filter(|r| snap.get(ResourceType::Endpoint, &r.name).is_some())
            .map(|r| r.name.clone())
            .collect();
        if !names.is_empty() {
            self.await_eds = Some((names, Instant::now()));
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

    /// When the wait for an EDS subscription ends, if one is under way.
    pub(crate) fn eds_wait_until(&self) -> Option<Instant> {
        self.await_eds.as_ref().map(|(_, since)| *since + EDS_WAIT)
    }

    /// When the response in flight was sent, if one is.
    pub(crate) fn in_flight_since(&self) -> Option<Instant> {
        self.types
            .iter()
            .filter_map(|t| t.in_flight.as_ref().map(|f| f.since))
            .min()
    }

    /// Gives up waiting for an acknowledgement (the client lost it or never
    /// answers); what was sent is assumed held.
    pub(crate) fn expire_in_flight(&mut self) -> Option<ResourceType> {
        for t in &mut self.types {
            if t.in_flight.take().is_some() {
                return Some(t.kind);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sorted_is_the_sorted_union() {
        let v = |xs: &[&str]| xs.iter().map(|x| Arc::<str>::from(*x)).collect::<Vec<_>>();
        let a = v(&["a", "c", "e", "f"]);
        let b = v(&["b", "c", "f", "g"]);
        assert_eq!(
            merge_sorted(a.iter(), b.iter()),
            v(&["a", "b", "c", "e", "f", "g"])
        );
        assert_eq!(merge_sorted(a.iter(), [].iter()), a);
        assert_eq!(merge_sorted([].iter(), b.iter()), b);
    }
}
