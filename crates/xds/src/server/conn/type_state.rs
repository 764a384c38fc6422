//! One type on one connection: subscription, what is held, what is in
//! flight, and the verdict on each name: the protocol rules a reader comes
//! for (what a request changes, what a NACK does, what is owed an answer).
//! Its state is its own; the connection ([`super::ConnState`]) asks it
//! through methods. This file holds the request side (what a request
//! changes, ACKs and NACKs); `respond.rs` the response side (verdicts and
//! plans).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tokio::time::Instant;

use super::held::{Held, HeldSet};
use super::plan::{Plan, PlanKey, Planned, Serving, SyncedAt};
use super::subscriptions::{Interned, MAX_NAMES_PER_TYPE, NameSet, Subscriptions, name_hash};
use crate::lens::{Lens, merge_sorted};
use crate::resource::{Resource, ResourceType};
use crate::server::codec::{Outbound, Wire};
use crate::server::request::SotwRequest;
use crate::server::status::NackRecord;
use crate::snapshot::{Snapshot, placeholder};
use crate::translate::Client;

mod respond;

/// One type of what a client holds, copied out of its state when asked
/// (see [`TypeState::held_now`]).
#[derive(Clone)]
pub(crate) struct HeldNow {
    pub(crate) kind: ResourceType,
    /// Name -> the version acknowledged.
    pub(crate) acked: HashMap<Arc<str>, Arc<str>>,
    /// Names the response in flight changes (sent, not acknowledged).
    pub(crate) in_flight: Vec<Arc<str>>,
    /// Name -> the version the client rejected.
    pub(crate) rejected: HashMap<Arc<str>, Arc<str>>,
}

/// How to restore `held` if a response is rejected.
enum Undo {
    /// Each changed name's previous entry, in the order changed.
    Names(Vec<(Arc<str>, Option<Held>)>),
    /// The whole previous set (a shared plan swapped it).
    Whole(HeldSet),
}

struct InFlight {
    nonce: String,
    version_info: String,
    plan: Arc<Plan>,
    undo: Undo,
    since: Instant,
    /// The snapshot it was planned from.
    generation: u64,
    /// When that snapshot's first change reached the publisher.
    changed_at: Option<Instant>,
}

/// What happened to a request, for counting.
#[derive(Debug)]
pub(crate) enum RequestOutcome {
    /// Applied.
    Applied,
    /// An ACK of the response in flight of this type, after this long,
    /// and this long after the change it carries reached the publisher.
    Ack(ResourceType, Duration, Option<Duration>),
    /// A NACK of the response in flight.
    Nack(NackRecord),
    /// Its nonce was stale; ignored for ACK purposes.
    StaleNonce,
    /// A type Sextant does not serve.
    UnknownType(String),
    /// A workload's agent reported its health (see
    /// [`crate::server::register`]).
    Health(sextant_core::Health),
}

/// Which half of a type's step: what it adds and changes, or (for
/// clusters) what it removes once nothing refers to it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Additions,
    Removals,
}

/// Push order: clusters (additions), endpoints, listeners, routes, a
/// router's secrets, and cluster removals last, once nothing refers to
/// them any more.
pub(super) const STEPS: [(ResourceType, Phase); 6] = [
    (ResourceType::Cluster, Phase::Additions),
    (ResourceType::Endpoint, Phase::Additions),
    (ResourceType::Listener, Phase::Additions),
    (ResourceType::Route, Phase::Additions),
    // A router's certificates: asked for by the listeners that name them
    // (which warm until they arrive), so whenever asked.
    (ResourceType::Secret, Phase::Additions),
    (ResourceType::Cluster, Phase::Removals),
];

pub(crate) struct TypeState {
    kind: ResourceType,
    /// The kind of client: which form of a resource it receives.
    client: Client,
    /// What this proxy sees: its scope and, in capture mode, its own
    /// layout.
    lens: Lens,
    seen_request: bool,
    wildcard: bool,
    /// A SotW client that subscribed with an empty list (legacy wildcard).
    legacy_wildcard: bool,
    names: Arc<NameSet>,
    /// XOR of `name_hash` over `names`.
    names_digest: u64,
    held: HeldSet,
    /// The plan this connection computed and applied change by change, as
    /// the first to reach it; once another connection has taken it, this
    /// one moves onto the shared result too (see [`TypeState::rebase`]).
    applied: Option<Arc<Plan>>,
    in_flight: Option<InFlight>,
    rejected: HashMap<Arc<str>, Arc<str>>,
    must_answer: bool,
    /// Delta: names subscribed since the last response, each owed an
    /// answer (hashed, not ordered: a new subscription adds a thousand).
    to_answer: HashSet<Arc<str>>,
    /// SotW reconnect: the version the client says it holds, checked
    /// against the first snapshot we serve it.
    resume_version: Option<String>,
    /// `held` matches this snapshot generation (NACKed versions aside).
    synced_at: Option<u64>,
    /// Hash of the last SotW request's names, in order.
    request_digest: Option<u64>,
    /// The shared SotW subscription this type uses, given back to the
    /// server's table when it changes or the connection ends.
    interned: Option<Arc<Interned>>,
    last_nonce: String,
    /// Plans this type computed itself, and took from another connection,
    /// since they were last counted into the metrics.
    plans_computed: u64,
    plans_shared: u64,
    acked_version: String,
    sent_version: String,
    responses: u64,
    /// The snapshot generation of the last response sent.
    last_generation: u64,
    last_nack: Option<NackRecord>,
}

/// What to do with one name.
enum Verdict {
    Keep,
    Send(Arc<Resource>),
    /// Answer a subscription to a name that does not exist with an empty
    /// assignment or route configuration (encoded only when it goes out).
    SendPlaceholder,
    /// Tell the client the resource is gone (or does not exist).
    Remove,
    /// The client no longer wants it; forget it without a message.
    Forget,
}

/// What the debug endpoint shows of one type (see [`TypeState::shown`]).
pub(crate) struct Shown<'a> {
    pub(crate) kind: ResourceType,
    pub(crate) wildcard: bool,
    pub(crate) subscribed: usize,
    pub(crate) held: usize,
    pub(crate) sent_version: &'a str,
    pub(crate) acked_version: &'a str,
    pub(crate) in_flight: bool,
    /// How long the response in flight has waited for its ACK.
    pub(crate) in_flight_for: Option<Duration>,
    pub(crate) responses: u64,
    pub(crate) last_nack: Option<&'a NackRecord>,
    /// The names asked for.
    pub(crate) names: &'a Arc<NameSet>,
}

impl TypeState {
    pub(super) fn new(kind: ResourceType) -> Self {
        TypeState {
            kind,
            client: Client::Envoy,
            lens: Lens::default(),
            seen_request: false,
            wildcard: false,
            legacy_wildcard: false,
            names: Arc::default(),
            names_digest: 0,
            held: HeldSet::default(),
            applied: None,
            in_flight: None,
            rejected: HashMap::new(),
            must_answer: false,
            to_answer: HashSet::new(),
            resume_version: None,
            synced_at: None,
            request_digest: None,
            interned: None,
            last_nonce: String::new(),
            plans_computed: 0,
            plans_shared: 0,
            acked_version: String::new(),
            sent_version: String::new(),
            responses: 0,
            last_generation: 0,
            last_nack: None,
        }
    }

    // What the connection and the debug endpoint read.

    pub(crate) fn kind(&self) -> ResourceType {
        self.kind
    }
    pub(super) fn seen_request(&self) -> bool {
        self.seen_request
    }
    pub(crate) fn wildcard(&self) -> bool {
        self.wildcard
    }
    /// The names subscribed explicitly.
    pub(crate) fn subscribed_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.names.iter()
    }
    /// A digest of those names: equal sets, equal digests.
    pub(crate) fn names_digest(&self) -> u64 {
        self.names_digest
    }
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether the debug endpoint shows this type: the client asked for it.
    pub(crate) fn shown(&self) -> Option<Shown<'_>> {
        (self.wildcard || !self.names.is_empty() || self.responses > 0).then(|| Shown {
            kind: self.kind,
            wildcard: self.wildcard,
            subscribed: self.names.len(),
            held: self.held.len(),
            sent_version: &self.sent_version,
            acked_version: &self.acked_version,
            in_flight: self.in_flight.is_some(),
            in_flight_for: self.in_flight.as_ref().map(|f| f.since.elapsed()),
            responses: self.responses,
            last_nack: self.last_nack.as_ref(),
            names: &self.names,
        })
    }

    /// What the client holds of this type as far as the server knows: the
    /// version of each name it acknowledged (the response in flight not
    /// counted), the names that response changes, and the versions it
    /// rejected. For `sextant status NODE`; a copy, made when asked.
    pub(crate) fn held_now(&self) -> HeldNow {
        let version = |h: &Held| (h.name().clone(), h.version().clone());
        let mut acked: HashMap<Arc<str>, Arc<str>> = self.held.iter().map(version).collect();
        let mut in_flight = Vec::new();
        if let Some(f) = &self.in_flight {
            match &f.undo {
                // Restored from the last change to the first: the first
                // change's previous entry is what was acknowledged.
                Undo::Names(list) => {
                    for (name, prev) in list.iter().rev() {
                        in_flight.push(name.clone());
                        match prev {
                            Some(h) => acked.insert(name.clone(), h.version().clone()),
                            None => acked.remove(name),
                        };
                    }
                    in_flight.sort();
                    in_flight.dedup();
                }
                Undo::Whole(prev) => {
                    let before: HashMap<Arc<str>, Arc<str>> = prev.iter().map(version).collect();
                    in_flight.extend(
                        acked
                            .iter()
                            .filter(|(n, v)| before.get(*n) != Some(*v))
                            .map(|(n, _)| n.clone()),
                    );
                    in_flight.extend(before.keys().filter(|n| !acked.contains_key(*n)).cloned());
                    acked = before;
                }
            }
        }
        HeldNow {
            kind: self.kind,
            acked,
            in_flight,
            rejected: self.rejected.clone(),
        }
    }

    /// When the response in flight was sent, if one is.
    pub(super) fn in_flight_since(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|f| f.since)
    }

    /// The generation of the snapshot the response in flight was planned
    /// from, if one is in flight.
    pub(super) fn in_flight_generation(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|f| f.generation)
    }

    /// The names the response in flight sends (updates, not removals).
    pub(super) fn in_flight_updates(&self) -> Vec<Arc<str>> {
        self.in_flight.as_ref().map_or_else(Vec::new, |f| {
            f.plan.updates.iter().map(|r| r.name.clone()).collect()
        })
    }

    /// Forgets the response in flight if its ACK is overdue: the client
    /// lost it or never answers, and what was sent is assumed held.
    pub(super) fn expire(&mut self, ack_timeout: Duration, now: Instant) -> bool {
        let overdue = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.since + ack_timeout <= now);
        if overdue {
            self.in_flight = None;
        }
        overdue
    }

    /// Plans computed here and taken from others since the last call.
    pub(super) fn take_plan_counts(&mut self) -> (u64, u64) {
        let counts = (self.plans_computed, self.plans_shared);
        (self.plans_computed, self.plans_shared) = (0, 0);
        counts
    }

    pub(super) fn set_client(&mut self, client: Client) {
        self.client = client;
    }

    /// Moves onto another lens: what is visible changed, so every name is
    /// looked at again on the next plan (not only the snapshot's changes).
    pub(super) fn set_lens(&mut self, lens: Lens) {
        if self.lens != lens {
            self.synced_at = None;
        }
        self.lens = lens;
    }

    /// Whether every name of `names` is subscribed (or everything is).
    pub(super) fn covers(&self, names: &[Arc<str>]) -> bool {
        self.wildcard || names.iter().all(|n| self.names.contains(n))
    }

    /// Gives the shared SotW subscription back to the server's table.
    pub(super) fn release(&mut self, subscriptions: &Subscriptions) {
        if let Some(interned) = self.interned.take() {
            subscriptions.release(self.kind, interned);
        }
    }

    // The request rules.

    /// A state-of-the-world request of this type: an ACK or NACK when its
    /// nonce is the response in flight's, and the subscription it restates.
    pub(super) fn on_sotw(
        &mut self,
        req: SotwRequest,
        subscriptions: &Subscriptions,
        node_id: &str,
    ) -> RequestOutcome {
        if !req.response_nonce.is_empty() && req.response_nonce != self.last_nonce {
            // SotW ignores a stale request entirely: the next one restates
            // the subscription.
            return RequestOutcome::StaleNonce;
        }
        let mut outcome = RequestOutcome::Applied;
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.nonce == req.response_nonce)
        {
            outcome = match req.error_detail {
                Some(status) => match self.nack(node_id, status.message) {
                    Some(record) => RequestOutcome::Nack(record),
                    None => RequestOutcome::Applied,
                },
                None => {
                    let (waited, converged) = self.ack();
                    RequestOutcome::Ack(self.kind, waited, converged)
                }
            };
        }
        // Every SotW ACK restates the whole subscription (an Envoy's EDS
        // ACK names every cluster): when the list is the one last seen, in
        // the same order, skip rebuilding and comparing the set.
        let names_digest = req.names.digest();
        if self.seen_request && self.request_digest == Some(names_digest) {
            return outcome;
        }
        self.request_digest = Some(names_digest);
        let interned = match subscriptions.get(self.kind, &req.names) {
            Some(known) => known,
            None => {
                if req.names.len() > MAX_NAMES_PER_TYPE {
                    tracing::warn!(node = %node_id, r#type = %self.kind, names = req.names.len(),
                        limit = MAX_NAMES_PER_TYPE, "subscription too large; extra names ignored");
                }
                let mut names: NameSet = req
                    .names
                    .iter()
                    .take(MAX_NAMES_PER_TYPE)
                    .map(Arc::from)
                    .collect();
                let star = names.remove("*");
                subscriptions.offer(
                    self.kind,
                    Interned {
                        entries: req.names.entries(),
                        digest: names.iter().fold(0, |d, n| d ^ name_hash(n)),
                        names: Arc::new(names),
                        star,
                        request_digest: names_digest,
                    },
                )
            }
        };
        let (names, star, digest) = (interned.names.clone(), interned.star, interned.digest);
        if let Some(old) = self.interned.replace(interned) {
            subscriptions.release(self.kind, old);
        }
        let first = !self.seen_request;
        if first {
            self.legacy_wildcard = names.is_empty() && !star;
        }
        let wildcard = star || (self.legacy_wildcard && names.is_empty());
        let same = Arc::ptr_eq(&names, &self.names) || *names == *self.names;
        if !Arc::ptr_eq(&names, &self.names) {
            self.names = names;
            self.names_digest = digest;
        }
        if first || wildcard != self.wildcard || !same {
            self.wildcard = wildcard;
            self.synced_at = None;
            // Full-state types must answer a changed subscription, even with
            // an unchanged set: that is how a client learns a name does not exist.
            self.must_answer = first || self.kind.is_full_state();
            if !self.wildcard && self.names.is_empty() {
                // Nothing subscribed: the client may drop a response in
                // flight for this type without acknowledging it.
                self.in_flight = None;
                self.must_answer = false;
            }
        }
        if first && !req.version_info.is_empty() {
            self.resume_version = Some(req.version_info);
        }
        self.seen_request = true;
        outcome
    }

    /// An incremental request of this type: what it declares it holds (on
    /// a new stream), subscribes and unsubscribes, and its ACK or NACK.
    pub(super) fn on_delta(&mut self, req: DeltaDiscoveryRequest, node_id: &str) -> RequestOutcome {
        let first = !self.seen_request;
        if first {
            for (name, version) in req.initial_resource_versions {
                let name: Arc<str> = name.into();
                let held = Held::declared(self.kind, name.clone(), version.into());
                self.set_held(name, Some(held));
            }
            if req.resource_names_subscribe.is_empty() {
                self.wildcard = true;
            }
            self.must_answer = true;
        }
        if !req.resource_names_subscribe.is_empty() {
            self.synced_at = None;
        }
        let room = MAX_NAMES_PER_TYPE.saturating_sub(self.names.len());
        let mut added = Vec::with_capacity(req.resource_names_subscribe.len().min(room));
        for name in req.resource_names_subscribe {
            if name == "*" {
                self.wildcard = true;
            } else if added.len() >= room {
                tracing::warn!(node = %node_id, r#type = %self.kind, limit = MAX_NAMES_PER_TYPE,
                    "subscription too large; extra names ignored");
                break;
            } else {
                added.push(Arc::<str>::from(name));
            }
        }
        self.subscribe_all(added);
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                self.unsubscribe(name.as_str());
                self.to_answer.remove(name.as_str());
            }
            self.synced_at = None;
        }
        if !self.wildcard && self.names.is_empty() {
            self.in_flight = None;
        }
        self.seen_request = true;
        if req.response_nonce.is_empty() {
            return RequestOutcome::Applied;
        }
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.nonce == req.response_nonce)
        {
            return match req.error_detail {
                Some(status) => match self.nack(node_id, status.message) {
                    Some(record) => RequestOutcome::Nack(record),
                    None => RequestOutcome::Applied,
                },
                None => {
                    let (waited, converged) = self.ack();
                    RequestOutcome::Ack(self.kind, waited, converged)
                }
            };
        }
        if req.response_nonce == self.last_nonce {
            // A repeated ACK of an already acknowledged response.
            return RequestOutcome::Applied;
        }
        RequestOutcome::StaleNonce
    }

    fn set_held(&mut self, name: Arc<str>, held: Option<Held>) -> Option<Held> {
        self.applied = None;
        self.held.set(name, held)
    }

    /// Moves onto the shared result of the plan this connection applied on
    /// its own, if other connections took that plan too: then they share
    /// one set, and the next plan is shared again. Left alone when no other
    /// connection took it (a subscription of its own): a private copy would
    /// cost more than the differences it records.
    fn rebase(&mut self) {
        let Some(plan) = self.applied.take() else {
            return;
        };
        if let Some(after) = plan.after.get()
            && self.held.digest() == plan.digest_after
            && self.held.len() == after.as_ref().map_or(0, |b| b.len())
        {
            self.held = HeldSet::of(after.clone());
        }
    }

    pub(super) fn subscribe(&mut self, name: Arc<str>) {
        let h = name_hash(&name);
        if Arc::make_mut(&mut self.names).insert(name) {
            self.names_digest ^= h;
        }
    }

    /// Subscribes to `added` at once: into an empty subscription (a new
    /// stream) the sorted names are bulk-loaded rather than inserted one by
    /// one, each insertion comparing long names with a common prefix.
    pub(super) fn subscribe_all(&mut self, mut added: Vec<Arc<str>>) {
        self.to_answer.extend(added.iter().cloned());
        if !self.names.is_empty() {
            for name in added {
                self.subscribe(name);
            }
            return;
        }
        added.sort_unstable();
        added.dedup();
        self.names_digest = added.iter().fold(0, |d, n| d ^ name_hash(n));
        self.names = Arc::new(added.into_iter().collect());
    }

    pub(super) fn unsubscribe(&mut self, name: &str) {
        if Arc::make_mut(&mut self.names).remove(name) {
            self.names_digest ^= name_hash(name);
        }
    }

    fn wants_by_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Makes `names` owed again: Envoy warms a cluster it receives again
    /// and swaps it in only once an assignment for it arrives, so the
    /// assignments of clusters just re-sent go out again, changed or not
    /// (see [`super::ConnState`]'s `rewarm_eds`).
    pub(super) fn resend(&mut self, names: &[Arc<str>], snap: &Snapshot) {
        for name in names {
            if self.held.get(name).is_some() && snap.get(self.kind, name).is_some() {
                self.set_held(name.clone(), None);
                self.to_answer.insert(name.clone());
            }
        }
    }

    // Acknowledgements.

    fn ack(&mut self) -> (Duration, Option<Duration>) {
        match self.in_flight.take() {
            Some(f) => {
                self.acked_version = f.version_info;
                (f.since.elapsed(), f.changed_at.map(|t| t.elapsed()))
            }
            None => (Duration::ZERO, None),
        }
    }

    /// The client rejected the response in flight: it keeps what it held
    /// before, and the rejected versions are not sent again.
    fn nack(&mut self, node_id: &str, error: String) -> Option<NackRecord> {
        let f = self.in_flight.take()?;
        self.applied = None;
        let resources = f.plan.updates.iter().map(|r| r.name.to_string()).collect();
        for r in &f.plan.updates {
            self.rejected.insert(r.name.clone(), r.version.clone());
        }
        match f.undo {
            Undo::Names(list) => {
                for (name, prev) in list.into_iter().rev() {
                    self.set_held(name, prev);
                }
            }
            Undo::Whole(prev) => {
                self.held = prev;
                for name in &f.plan.forget {
                    self.set_held(name.clone(), None);
                }
            }
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

/// Reads and writes for the tests, which check what is held and shared.
#[cfg(test)]
impl TypeState {
    pub(super) fn held_set(&self) -> &HeldSet {
        &self.held
    }
    pub(super) fn held_set_mut(&mut self) -> &mut HeldSet {
        &mut self.held
    }
    pub(super) fn names(&self) -> &Arc<NameSet> {
        &self.names
    }
    pub(super) fn set_names(&mut self, names: Arc<NameSet>) {
        self.names = names;
    }
    pub(super) fn owed(&self) -> usize {
        self.to_answer.len()
    }
    pub(super) fn last_nonce(&self) -> &str {
        &self.last_nonce
    }
    pub(super) fn request_digest(&self) -> Option<u64> {
        self.request_digest
    }
    pub(super) fn acked_version(&self) -> &str {
        &self.acked_version
    }
}
