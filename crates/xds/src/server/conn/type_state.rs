//! One type on one connection: subscription, what is held, what is in
//! flight, and the verdict on each name: the protocol rules a reader comes
//! for (what a NACK does, what is owed an answer).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::*;
use crate::capture::CaptureSet;
use crate::resource::{Resource, ResourceType};
use crate::scope::Scope;
use crate::server::codec::{Outbound, Wire};
use crate::server::status::NackRecord;
use crate::snapshot::{Snapshot, placeholder};
use crate::translate::Client;

/// How to restore `held` if a response is rejected.
pub(super) enum Undo {
    /// Each changed name's previous entry, in the order changed.
    Names(Vec<(Arc<str>, Option<Held>)>),
    /// The whole previous set (a shared plan swapped it).
    Whole(HeldSet),
}

pub(super) struct InFlight {
    pub(super) nonce: String,
    pub(super) version_info: String,
    pub(super) plan: Arc<Plan>,
    pub(super) undo: Undo,
    pub(super) since: Instant,
    /// The snapshot it was planned from.
    pub(super) generation: u64,
}

/// What happened to a request, for counting.
#[derive(Debug)]
pub(crate) enum RequestOutcome {
    /// Applied.
    Applied,
    /// An ACK of the response in flight of this type, after this long.
    Ack(ResourceType, std::time::Duration),
    /// A NACK of the response in flight.
    Nack(NackRecord),
    /// Its nonce was stale; ignored for ACK purposes.
    StaleNonce,
    /// A type Sextant does not serve.
    UnknownType(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Additions,
    Removals,
}

/// Push order: clusters (additions), endpoints, listeners, routes, and
/// cluster removals last, once nothing refers to them any more.
pub(super) const STEPS: [(ResourceType, Phase); 5] = [
    (ResourceType::Cluster, Phase::Additions),
    (ResourceType::Endpoint, Phase::Additions),
    (ResourceType::Listener, Phase::Additions),
    (ResourceType::Route, Phase::Additions),
    (ResourceType::Cluster, Phase::Removals),
];

pub(crate) struct TypeState {
    pub(super) kind: ResourceType,
    /// The kind of client: which form of a resource it receives.
    pub(super) client: Client,
    /// What this proxy sees: its scope and, in capture mode, its own
    /// layout.
    pub(super) lens: Lens,
    pub(super) seen_request: bool,
    pub(super) wildcard: bool,
    /// A SotW client that subscribed with an empty list (legacy wildcard).
    pub(super) legacy_wildcard: bool,
    pub(super) names: Arc<NameSet>,
    /// XOR of `name_hash` over `names`.
    pub(super) names_digest: u64,
    pub(super) held: HeldSet,
    /// The plan this connection computed and applied change by change, as
    /// the first to reach it; once another connection has taken it, this
    /// one moves onto the shared result too (see [`TypeState::rebase`]).
    pub(super) applied: Option<Arc<Plan>>,
    pub(super) in_flight: Option<InFlight>,
    pub(super) rejected: HashMap<Arc<str>, Arc<str>>,
    pub(super) must_answer: bool,
    /// Delta: names subscribed since the last response, each owed an
    /// answer (hashed, not ordered: a new subscription adds a thousand).
    pub(super) to_answer: HashSet<Arc<str>>,
    /// SotW reconnect: the version the client says it holds, checked
    /// against the first snapshot we serve it.
    pub(super) resume_version: Option<String>,
    /// `held` matches this snapshot generation (NACKed versions aside).
    pub(super) synced_at: Option<u64>,
    /// Hash of the last SotW request's names, in order.
    pub(super) request_digest: Option<u64>,
    /// The shared SotW subscription this type uses, given back to the
    /// server's table when it changes or the connection ends.
    pub(super) interned: Option<Arc<Interned>>,
    pub(super) last_nonce: String,
    /// Plans this type computed itself, and took from another connection,
    /// since they were last counted into the metrics.
    pub(crate) plans_computed: u64,
    pub(crate) plans_shared: u64,
    pub(crate) acked_version: String,
    pub(crate) sent_version: String,
    pub(crate) responses: u64,
    pub(crate) last_nack: Option<NackRecord>,
}

/// The sorted union of two sorted runs of distinct names.
pub(super) fn merge_sorted<'a>(
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

/// What one proxy sees of a snapshot: the hosts of its scope (`None`:
/// every host) and, for a capture-mode proxy, its own layout in place of
/// the explicit listeners and routes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lens {
    pub(crate) scope: Option<Arc<Scope>>,
    pub(crate) capture: Option<Arc<CaptureSet>>,
}

impl PartialEq for Lens {
    fn eq(&self, other: &Lens) -> bool {
        fn same<T: PartialEq>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
        }
        same(self.scope.as_ref(), other.scope.as_ref())
            && same(self.capture.as_ref(), other.capture.as_ref())
    }
}

impl Lens {
    /// 0 for the plain view; equal lenses, equal digests.
    pub(super) fn digest(&self) -> u64 {
        self.scope.as_ref().map_or(0, |s| s.digest)
            ^ self.capture.as_ref().map_or(0, |c| c.digest.rotate_left(7))
    }

    /// Whether the capture layout replaces the snapshot's resources of
    /// `kind` (listeners and routes), rather than adding to them.
    fn replaces(&self, kind: ResourceType) -> bool {
        self.capture.is_some() && matches!(kind, ResourceType::Listener | ResourceType::Route)
    }

    /// One resource as the proxy sees it.
    pub(super) fn get<'a>(
        &'a self,
        snap: &'a Snapshot,
        client: Client,
        kind: ResourceType,
        name: &str,
    ) -> Option<&'a Arc<Resource>> {
        if let Some(capture) = &self.capture {
            if let Some(r) = capture.get(kind, name) {
                return Some(r);
            }
            if self.replaces(kind) {
                return None;
            }
        }
        match &self.scope {
            None => snap.get_for(client, kind, name),
            Some(scope) => scope.get(snap, client, kind, name),
        }
    }

    /// The names a wildcard subscription of `kind` covers, sorted.
    fn wildcard_names(&self, snap: &Snapshot, kind: ResourceType) -> Vec<Arc<str>> {
        let Some(capture) = &self.capture else {
            return snap.resources(kind).resources.keys().cloned().collect();
        };
        let own = capture.names(kind);
        if self.replaces(kind) {
            return own;
        }
        merge_sorted(snap.resources(kind).resources.keys(), own.iter())
    }
}

/// What to do with one name.
pub(super) enum Verdict {
    Keep,
    Send(Arc<Resource>),
    /// Tell the client the resource is gone (or does not exist).
    Remove,
    /// The client no longer wants it; forget it without a message.
    Forget,
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
            last_nack: None,
        }
    }

    pub(crate) fn wildcard(&self) -> bool {
        self.wildcard
    }
    pub(crate) fn subscribed(&self) -> usize {
        self.names.len()
    }
    /// The names subscribed explicitly.
    pub(crate) fn subscribed_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.names.iter()
    }
    /// A digest of those names: equal sets, equal digests.
    pub(crate) fn names_digest(&self) -> u64 {
        self.names_digest
    }
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    pub(super) fn set_held(&mut self, name: Arc<str>, held: Option<Held>) -> Option<Held> {
        self.applied = None;
        self.held.set(name, held)
    }

    /// Moves onto the shared result of the plan this connection applied on
    /// its own, if other connections took that plan too: then they share
    /// one set, and the next plan is shared again. Left alone when no other
    /// connection took it (a subscription of its own): a private copy would
    /// cost more than the differences it records.
    pub(super) fn rebase(&mut self) {
        let Some(plan) = self.applied.take() else {
            return;
        };
        if let Some(after) = plan.after.get()
            && self.held.digest == plan.digest_after
            && self.held.len == after.as_ref().map_or(0, |b| b.set.len())
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

    pub(super) fn wants_by_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Moves onto another lens: what is visible changed, so every name is
    /// looked at again on the next plan (not only the snapshot's changes).
    pub(super) fn set_lens(&mut self, lens: Lens) {
        if self.lens != lens {
            self.synced_at = None;
        }
        self.lens = lens;
    }

    /// One resource as this client, through its lens, sees it.
    fn lookup<'a>(&'a self, name: &str, snap: &'a Snapshot) -> Option<&'a Arc<Resource>> {
        self.lens.get(snap, self.client, self.kind, name)
    }

    pub(super) fn verdict(&self, name: &Arc<str>, snap: &Snapshot) -> Verdict {
        let held = self.held.get(name);
        let want = match self.lookup(name, snap) {
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

    pub(super) fn pending(&self) -> bool {
        self.must_answer || !self.to_answer.is_empty()
    }

    /// Nothing of `snap` is left to send for this type (or the client never
    /// asked for it). Conservative: a type that has not planned against
    /// `snap` yet counts as unsettled.
    pub(super) fn settled(&self, snap: &Snapshot) -> bool {
        !self.seen_request || (!self.pending() && self.synced_at == Some(snap.generation))
    }

    pub(super) fn candidates(&self, snap: &Snapshot) -> Vec<Arc<str>> {
        if !self.pending() {
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
        let mut all = if self.wildcard && self.lens.capture.is_none() {
            merge_sorted(snap.resources(self.kind).resources.keys(), subscribed)
        } else if self.wildcard {
            merge_sorted(self.lens.wildcard_names(snap, self.kind).iter(), subscribed)
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
    pub(super) fn try_resume(&mut self, snap: &Snapshot) {
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

    /// The key under which this state's plan is shared, if it may be: no
    /// rejected versions, and new names either none or all of them.
    pub(super) fn plan_key(&self, phase: Phase, wire: Wire) -> Option<PlanKey> {
        let answer_all = !self.to_answer.is_empty();
        if !self.rejected.is_empty() || answer_all && self.to_answer.len() != self.names.len() {
            return None;
        }
        Some(PlanKey {
            kind: self.kind,
            client: self.client,
            wire,
            removals: phase == Phase::Removals,
            must_answer: self.must_answer,
            answer_all,
            wildcard: self.wildcard,
            scope: self.lens.digest(),
            names: self.names_digest,
            names_len: self.names.len(),
            held: self.held.digest,
            held_len: self.held.len(),
        })
    }

    /// Whether `plan` was computed from a state equal to this one (the key
    /// matched; the names and what is held must too).
    pub(super) fn matches(&self, plan: &Plan) -> bool {
        (Arc::ptr_eq(&self.names, &plan.names) || *self.names == *plan.names)
            && self.lens == plan.lens
            && self.held.same_as(plan.from.as_ref())
    }

    pub(super) fn compute(&self, snap: &Snapshot, phase: Phase, wire: Wire) -> Plan {
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
        // Clusters the client holds leave last, once nothing refers to
        // them; a name it never held is answered "does not exist" at once
        // (nothing can refer to it, and a client waits for the answer).
        let deferred = self.kind == ResourceType::Cluster
            && phase == Phase::Additions
            && removals.iter().any(|n| self.held.get(n).is_some());
        match (self.kind, phase) {
            (ResourceType::Cluster, Phase::Additions) => {
                removals.retain(|n| self.held.get(n).is_none());
            }
            (ResourceType::Cluster, Phase::Removals) => updates.clear(),
            (_, Phase::Removals) => {
                updates.clear();
                removals.clear();
            }
            _ => {}
        }
        // SotW assignments and routes are never removed by us: the client
        // drops them when it unsubscribes.
        if wire == Wire::Sotw && !self.kind.is_full_state() {
            removals.clear();
        }

        let mut digest_after = self.held.digest;
        for name in forget.iter().chain(&removals) {
            if let Some(old) = self.held.get(name) {
                digest_after ^= Resource::digest(name, old.version());
            }
        }
        for r in &updates {
            if let Some(old) = self.held.get(&r.name) {
                digest_after ^= Resource::digest(&r.name, old.version());
            }
            digest_after ^= Resource::digest(&r.name, &r.version);
        }

        let answer = self.must_answer && phase == Phase::Additions;
        let (response, sync) = if updates.is_empty() && removals.is_empty() && !answer {
            let keep = self.kind == ResourceType::Cluster && phase == Phase::Additions && deferred;
            (None, if keep { SyncedAt::Keep } else { SyncedAt::Set })
        } else {
            let resources = if wire == Wire::Sotw && self.kind.is_full_state() {
                // The whole set the client will hold.
                let changed: HashSet<&str> = forget
                    .iter()
                    .chain(&removals)
                    .map(|n| &**n)
                    .chain(updates.iter().map(|r| &*r.name))
                    .collect();
                let mut all: Vec<Arc<Resource>> = self
                    .held
                    .iter()
                    .filter(|h| !changed.contains(&**h.name()))
                    .filter_map(|h| h.resource().cloned())
                    .chain(updates.iter().cloned())
                    .collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                all
            } else {
                updates.clone()
            };
            let planned = Planned {
                version_info: format!("{digest_after:016x}"),
                resources: Arc::new(resources.into()),
                removed: if wire == Wire::Delta {
                    removals.clone()
                } else {
                    Vec::new()
                },
            };
            (
                Some(planned),
                if deferred {
                    SyncedAt::Clear
                } else {
                    SyncedAt::Set
                },
            )
        };
        Plan {
            names: self.names.clone(),
            lens: self.lens.clone(),
            from: self.held.as_base().flatten(),
            forget,
            updates,
            removals,
            response,
            sync,
            digest_after,
            after: std::sync::OnceLock::new(),
        }
    }

    pub(super) fn plan(
        &mut self,
        snap: &Serving,
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
        if !self.pending() && self.synced_at == Some(snap.generation) {
            return None;
        }
        self.rebase();
        let Some(key) = self.plan_key(phase, wire) else {
            self.plans_computed += 1;
            let plan = Arc::new(self.compute(snap, phase, wire));
            return self.apply(plan, false, snap, wire, nonce);
        };
        if let Some(plan) = snap.plans.get(&key)
            && self.matches(&plan)
        {
            if !Arc::ptr_eq(&self.names, &plan.names) {
                self.names = plan.names.clone();
            }
            self.plans_shared += 1;
            return self.apply(plan, true, snap, wire, nonce);
        }
        self.plans_computed += 1;
        let plan = Arc::new(self.compute(snap, phase, wire));
        // Only a plan that starts from a shared state (or nothing) is
        // offered: the next connection must be able to confirm it.
        if self.held.as_base().is_none() {
            return self.apply(plan, false, snap, wire, nonce);
        }
        snap.plans.offer(key, &plan);
        let out = self.apply(plan.clone(), false, snap, wire, nonce);
        self.applied = Some(plan);
        out
    }

    /// Applies `plan`: by taking its resulting set when `shared` (another
    /// connection computed it), else change by change.
    pub(super) fn apply(
        &mut self,
        plan: Arc<Plan>,
        shared: bool,
        snap: &Snapshot,
        wire: Wire,
        nonce: &mut u64,
    ) -> Option<Outbound> {
        let undo = if shared {
            let after = HeldSet::of(plan.after());
            Undo::Whole(std::mem::replace(&mut self.held, after))
        } else {
            for name in &plan.forget {
                self.set_held(name.clone(), None);
            }
            let mut undo = Vec::with_capacity(plan.updates.len() + plan.removals.len());
            for r in &plan.updates {
                let prev = self.set_held(r.name.clone(), Some(Held::sent(r.clone())));
                undo.push((r.name.clone(), prev));
            }
            for name in &plan.removals {
                undo.push((name.clone(), self.set_held(name.clone(), None)));
            }
            Undo::Names(undo)
        };
        debug_assert_eq!(self.held.digest, plan.digest_after);
        if !self.rejected.is_empty() {
            for name in plan.updates.iter().map(|r| &r.name).chain(&plan.removals) {
                self.rejected.remove(name);
            }
        }
        let Some(planned) = &plan.response else {
            match plan.sync {
                SyncedAt::Set => self.synced_at = Some(snap.generation),
                SyncedAt::Keep | SyncedAt::Clear => {}
            }
            return None;
        };
        *nonce += 1;
        let nonce = nonce.to_string();
        self.last_nonce = nonce.clone();
        self.must_answer = false;
        self.to_answer.clear();
        self.synced_at = match plan.sync {
            SyncedAt::Clear => None,
            SyncedAt::Set | SyncedAt::Keep => Some(snap.generation),
        };
        self.sent_version = planned.version_info.clone();
        self.responses += 1;
        let out = Outbound {
            wire,
            kind: self.kind,
            version_info: planned.version_info.clone(),
            nonce: nonce.clone(),
            resources: planned.resources.clone(),
            removed: planned.removed.clone(),
        };
        self.in_flight = Some(InFlight {
            nonce,
            version_info: planned.version_info.clone(),
            plan,
            undo,
            since: Instant::now(),
            generation: snap.generation,
        });
        Some(out)
    }

    pub(super) fn ack(&mut self) -> std::time::Duration {
        match self.in_flight.take() {
            Some(f) => {
                self.acked_version = f.version_info;
                f.since.elapsed()
            }
            None => std::time::Duration::ZERO,
        }
    }

    pub(super) fn nack(&mut self, node_id: &str, error: String) -> Option<NackRecord> {
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
