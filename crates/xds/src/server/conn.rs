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

use super::codec::{Batch, Outbound, Wire};
use super::status::NackRecord;
use crate::resource::{Resource, ResourceType};
use crate::snapshot::{Snapshot, placeholder};

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

/// A subscription's names, shared by the connections that subscribe alike.
type NameSet = BTreeSet<Arc<str>>;

fn name_hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// A frozen set of held resources, shared by every connection that holds
/// exactly these (on a mesh where proxies subscribe alike, one per type).
#[derive(Default)]
pub(crate) struct Base {
    set: HashSet<Held>,
    /// XOR of `Resource::digest` over the set.
    digest: u64,
}

/// What a client holds of one type: a shared [`Base`] plus this
/// connection's own differences from it. Connections that receive the same
/// responses end up on the same base and cost a pointer each; one that
/// diverges (a NACK, an unusual subscription) records only its differences
/// until they grow large enough to be folded into a base of its own.
#[derive(Default)]
struct HeldSet {
    base: Option<Arc<Base>>,
    /// Name -> what is held instead of the base's entry (`None`: nothing).
    over: HashMap<Arc<str>, Option<Held>>,
    len: usize,
    /// XOR of `Resource::digest` over every entry: the SotW version.
    digest: u64,
}

impl HeldSet {
    fn of(base: Option<Arc<Base>>) -> HeldSet {
        HeldSet {
            len: base.as_ref().map_or(0, |b| b.set.len()),
            digest: base.as_ref().map_or(0, |b| b.digest),
            base,
            over: HashMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn get(&self, name: &str) -> Option<&Held> {
        match self.over.get(name) {
            Some(o) => o.as_ref(),
            None => self.base.as_ref()?.set.get(name),
        }
    }

    /// Every entry, in no particular order.
    fn iter(&self) -> impl Iterator<Item = &Held> {
        let base = self.base.iter().flat_map(|b| b.set.iter());
        base.filter(|h| !self.over.contains_key(&**h.name()))
            .chain(self.over.values().flatten())
    }

    /// The base a plan may start from: this set exactly, if it is one
    /// (`Some(None)` when empty), else `None`.
    fn as_base(&self) -> Option<Option<Arc<Base>>> {
        if self.is_empty() {
            Some(None)
        } else if self.over.is_empty() {
            Some(self.base.clone())
        } else {
            None
        }
    }

    /// True when this holds the same versions as `base`.
    fn same_as(&self, base: Option<&Arc<Base>>) -> bool {
        let Some(base) = base else {
            return self.is_empty();
        };
        if self.over.is_empty() && self.base.as_ref().is_some_and(|b| Arc::ptr_eq(b, base)) {
            return true;
        }
        self.len == base.set.len()
            && self.digest == base.digest
            && base.set.iter().all(|b| {
                self.get(b.name())
                    .is_some_and(|h| h.version() == b.version())
            })
    }

    fn set(&mut self, name: Arc<str>, held: Option<Held>) -> Option<Held> {
        let old = self.get(&name).cloned();
        if let Some(o) = &old {
            self.digest ^= Resource::digest(&name, o.version());
            self.len -= 1;
        }
        if let Some(h) = &held {
            debug_assert_eq!(h.name(), &name);
            self.digest ^= Resource::digest(&name, h.version());
            self.len += 1;
        }
        let in_base = self.base.as_ref().and_then(|b| b.set.get(&*name));
        let as_in_base = match (&held, in_base) {
            (Some(h), Some(b)) => Arc::ptr_eq(&h.0, &b.0),
            (None, None) => true,
            _ => false,
        };
        if as_in_base {
            self.over.remove(&*name);
        } else {
            self.over.insert(name, held);
        }
        if self.over.len() > 64 && self.over.len() * 4 > self.len {
            self.fold();
        }
        old
    }

    /// Folds the differences into a base of this connection's own.
    fn fold(&mut self) {
        let set = self.iter().cloned().collect();
        self.base = Some(Arc::new(Base {
            set,
            digest: self.digest,
        }));
        self.over.clear();
    }
}

/// How a plan moves `synced_at`.
#[derive(Clone, Copy)]
enum SyncedAt {
    Keep,
    Set,
    Clear,
}

/// A response a plan sends.
struct Planned {
    version_info: String,
    resources: Arc<Batch>,
    removed: Vec<Arc<str>>,
}

/// One type's next step for a connection in one snapshot: what to forget,
/// send and remove, and the response. It depends only on the connection's
/// subscription and what it holds, so connections in the same state share
/// one, computed once per snapshot (see [`PlanCache`]); each then costs a
/// nonce and a pointer swap.
pub(crate) struct Plan {
    /// The inputs, to check a cache hit (digests can collide). `from` is
    /// what was held when that was a base (only such plans are shared).
    names: Arc<NameSet>,
    from: Option<Arc<Base>>,
    forget: Vec<Arc<str>>,
    updates: Vec<Arc<Resource>>,
    removals: Vec<Arc<str>>,
    response: Option<Planned>,
    sync: SyncedAt,
    digest_after: u64,
    /// What the client holds once the plan is applied, built the first time
    /// a second connection takes the plan.
    after: std::sync::OnceLock<Option<Arc<Base>>>,
}

impl Plan {
    fn changes_nothing(&self) -> bool {
        self.forget.is_empty() && self.updates.is_empty() && self.removals.is_empty()
    }

    fn after(&self) -> Option<Arc<Base>> {
        self.after
            .get_or_init(|| {
                if self.changes_nothing() {
                    return self.from.clone();
                }
                let mut set = self
                    .from
                    .as_ref()
                    .map(|b| b.set.clone())
                    .unwrap_or_default();
                for name in self.forget.iter().chain(&self.removals) {
                    set.remove(&**name);
                }
                for r in &self.updates {
                    set.replace(Held::sent(r.clone()));
                }
                (!set.is_empty()).then(|| {
                    Arc::new(Base {
                        set,
                        digest: self.digest_after,
                    })
                })
            })
            .clone()
    }
}

/// A snapshot as connections serve it: with the plan cache they share for
/// it. The server owns the cache (see [`CurrentPlans`]); the snapshot is
/// what translation produced and knows nothing of it.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) snap: Arc<Snapshot>,
    pub(crate) plans: Arc<PlanCache>,
}

impl std::ops::Deref for Serving {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.snap
    }
}

impl Serving {
    /// `snap` with a cache of its own (tests, and connections behind).
    #[cfg(test)]
    pub(crate) fn alone(snap: Arc<Snapshot>) -> Serving {
        Serving {
            snap,
            plans: Arc::default(),
        }
    }
}

/// The plan cache of the newest snapshot any connection has served. A
/// connection that serves a newer one replaces it (the old plans go with
/// it, as they did with their snapshot); one still on an older snapshot
/// plans in a cache of its own, unshared.
#[derive(Default)]
pub(crate) struct CurrentPlans(std::sync::Mutex<(u64, Arc<PlanCache>)>);

impl CurrentPlans {
    /// `snap` with the cache connections share for it.
    pub(crate) fn serving(&self, snap: Arc<Snapshot>) -> Serving {
        let mut current = super::lock(&self.0);
        if current.0 < snap.generation {
            *current = (snap.generation, Arc::default());
        }
        let plans = if current.0 == snap.generation {
            current.1.clone()
        } else {
            Arc::default()
        };
        Serving { snap, plans }
    }

    /// The newest snapshot's cache.
    pub(crate) fn current(&self) -> Arc<PlanCache> {
        super::lock(&self.0).1.clone()
    }
}

/// What identifies a plan's inputs, by digest; a hit is confirmed against
/// the plan's own inputs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    kind: ResourceType,
    wire: Wire,
    removals: bool,
    must_answer: bool,
    /// Every subscribed name still awaits its first answer (a new delta
    /// subscription).
    answer_all: bool,
    wildcard: bool,
    names: u64,
    names_len: usize,
    held: u64,
    held_len: usize,
}

/// The plans computed for one snapshot, shared by its connections. It lives
/// as long as its snapshot, which on a quiet mesh is long: so it is bounded
/// ([`MAX_CACHED_PLANS`], [`MAX_CACHED_PLAN_NAMES`]). A plan it refuses is
/// still applied by the connection that computed it, only not shared; alike
/// proxies reach the cache first, so a flood of distinct subscriptions
/// costs its senders their sharing, not the others.
#[derive(Default)]
pub(crate) struct PlanCache(std::sync::Mutex<CachedPlans>);

#[derive(Default)]
struct CachedPlans {
    map: HashMap<PlanKey, Arc<Plan>>,
    /// Subscribed names the cached plans hold.
    names: usize,
}

/// Plans one snapshot's cache keeps. Alike proxies need one per type and
/// state; a thousand distinct scopes fit many times over.
pub(crate) const MAX_CACHED_PLANS: usize = 4096;

/// Subscribed names the plans of one snapshot may hold together: what a
/// hostile subscription of many names can make the cache keep.
pub(crate) const MAX_CACHED_PLAN_NAMES: usize = 1_000_000;

impl PlanCache {
    fn get(&self, key: &PlanKey) -> Option<Arc<Plan>> {
        self.lock().map.get(key).cloned()
    }

    fn offer(&self, key: PlanKey, plan: &Arc<Plan>) {
        let mut cache = self.lock();
        if cache.map.len() >= MAX_CACHED_PLANS
            || cache.names + plan.names.len() > MAX_CACHED_PLAN_NAMES
            || cache.map.contains_key(&key)
        {
            return;
        }
        cache.names += plan.names.len();
        cache.map.insert(key, plan.clone());
    }

    /// Drops the plans no connection can take any more: those whose
    /// subscribed names no connection holds (only cached plans refer to
    /// them). Called when a connection ends, so that what a client made the
    /// cache keep (its names, the placeholders answering them) leaves with
    /// it rather than with the snapshot, which on a quiet mesh lives long.
    pub(crate) fn prune_unused(&self) {
        let mut cache = self.lock();
        let mut refs: HashMap<*const NameSet, usize> = HashMap::new();
        for plan in cache.map.values() {
            *refs.entry(Arc::as_ptr(&plan.names)).or_default() += 1;
        }
        let before = cache.map.len();
        cache
            .map
            .retain(|_, plan| Arc::strong_count(&plan.names) > refs[&Arc::as_ptr(&plan.names)]);
        if cache.map.len() != before {
            cache.names = cache.map.values().map(|p| p.names.len()).sum();
        }
    }

    /// Plans cached, and the subscribed names they hold.
    pub(crate) fn size(&self) -> (usize, usize) {
        let cache = self.lock();
        (cache.map.len(), cache.names)
    }

    /// Plans cached so far.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CachedPlans> {
        super::lock(&self.0)
    }
}

/// One state-of-the-world subscription as sent: its names' encoded
/// entries (to confirm a match), the set and digest, and whether it named
/// `*`.
struct Interned {
    entries: Vec<u8>,
    names: Arc<NameSet>,
    digest: u64,
    star: bool,
    /// Its key in [`Subscriptions`].
    request_digest: u64,
}

/// The SotW subscriptions connections have sent, by type and request
/// digest: connections that send the same list (a thousand Envoys restating
/// the same clusters) share one set, found with one comparison of the
/// encoded names, instead of each building its own and comparing it name by
/// name with the shared plan's. Each entry lives as long as a connection
/// uses it: the last one to let go removes it ([`Subscriptions::release`]),
/// so what a client sent leaves with its stream.
#[derive(Default)]
pub(crate) struct Subscriptions(std::sync::Mutex<SubscriptionMap>);

#[derive(Default)]
struct SubscriptionMap {
    map: HashMap<(ResourceType, u64), Arc<Interned>>,
    /// Names held by the entries, for the metrics.
    names: usize,
}

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, SubscriptionMap> {
        super::lock(&self.0)
    }

    /// The shared subscription equal to `names`, if one is known.
    fn get(&self, kind: ResourceType, names: &super::request::Names) -> Option<Arc<Interned>> {
        let table = self.lock();
        let found = table.map.get(&(kind, names.digest()))?;
        names.entries_equal(&found.entries).then(|| found.clone())
    }

    /// Shares `interned` (or the equal one already shared) under its
    /// request digest. Every subscription returned must be given back to
    /// [`Subscriptions::release`] when the connection is done with it.
    fn offer(&self, kind: ResourceType, interned: Interned) -> Arc<Interned> {
        let mut table = self.lock();
        let key = (kind, interned.request_digest);
        match table.map.get(&key) {
            Some(known) if known.entries == interned.entries => known.clone(),
            // Another list with the same digest: used, not shared.
            Some(_) => Arc::new(interned),
            None => {
                table.names += interned.names.len();
                let shared = Arc::new(interned);
                table.map.insert(key, shared.clone());
                shared
            }
        }
    }

    /// A connection is done with `interned`: the last user removes it.
    fn release(&self, kind: ResourceType, interned: Arc<Interned>) {
        let mut table = self.lock();
        let key = (kind, interned.request_digest);
        // The table's reference and this one: no connection uses it any
        // more. Counted and dropped under the lock, so that of two
        // connections releasing at once exactly one sees the last use.
        if Arc::strong_count(&interned) == 2
            && table
                .map
                .get(&key)
                .is_some_and(|known| Arc::ptr_eq(known, &interned))
        {
            table.map.remove(&key);
            table.names -= interned.names.len();
        }
        drop(interned);
        drop(table);
    }

    /// Subscriptions known, and the names they hold.
    pub(crate) fn size(&self) -> (usize, usize) {
        let table = self.lock();
        (table.map.len(), table.names)
    }
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
    pub(crate) plans_computed: u64,
    pub(crate) plans_shared: u64,
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
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
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
            && self.held.digest == plan.digest_after
            && self.held.len == after.as_ref().map_or(0, |b| b.set.len())
        {
            self.held = HeldSet::of(after.clone());
        }
    }

    fn subscribe(&mut self, name: Arc<str>) {
        let h = name_hash(&name);
        if Arc::make_mut(&mut self.names).insert(name) {
            self.names_digest ^= h;
        }
    }

    /// Subscribes to `added` at once: into an empty subscription (a new
    /// stream) the sorted names are bulk-loaded rather than inserted one by
    /// one, each insertion comparing long names with a common prefix.
    fn subscribe_all(&mut self, mut added: Vec<Arc<str>>) {
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

    fn unsubscribe(&mut self, name: &str) {
        if Arc::make_mut(&mut self.names).remove(name) {
            self.names_digest ^= name_hash(name);
        }
    }

    fn wants_by_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn verdict(&self, name: &Arc<str>, snap: &Snapshot) -> Verdict {
        let held = self.held.get(name);
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

    fn pending(&self) -> bool {
        self.must_answer || !self.to_answer.is_empty()
    }

    /// Nothing of `snap` is left to send for this type (or the client never
    /// asked for it). Conservative: a type that has not planned against
    /// `snap` yet counts as unsettled.
    fn settled(&self, snap: &Snapshot) -> bool {
        !self.seen_request || (!self.pending() && self.synced_at == Some(snap.generation))
    }

    fn candidates(&self, snap: &Snapshot) -> Vec<Arc<str>> {
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

    /// The key under which this state's plan is shared, if it may be: no
    /// rejected versions, and new names either none or all of them.
    fn plan_key(&self, phase: Phase, wire: Wire) -> Option<PlanKey> {
        let answer_all = !self.to_answer.is_empty();
        if !self.rejected.is_empty() || answer_all && self.to_answer.len() != self.names.len() {
            return None;
        }
        Some(PlanKey {
            kind: self.kind,
            wire,
            removals: phase == Phase::Removals,
            must_answer: self.must_answer,
            answer_all,
            wildcard: self.wildcard,
            names: self.names_digest,
            names_len: self.names.len(),
            held: self.held.digest,
            held_len: self.held.len(),
        })
    }

    /// Whether `plan` was computed from a state equal to this one (the key
    /// matched; the names and what is held must too).
    fn matches(&self, plan: &Plan) -> bool {
        (Arc::ptr_eq(&self.names, &plan.names) || *self.names == *plan.names)
            && self.held.same_as(plan.from.as_ref())
    }

    fn compute(&self, snap: &Snapshot, phase: Phase, wire: Wire) -> Plan {
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
        let deferred =
            self.kind == ResourceType::Cluster && phase == Phase::Additions && !removals.is_empty();
        match (self.kind, phase) {
            (ResourceType::Cluster, Phase::Additions) => removals.clear(),
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

    fn plan(
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
    fn apply(
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
            types: ResourceType::ALL.map(TypeState::new),
            nonce: 0,
            subscriptions,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::TranslateOptions;
    use envoy_types::pb::google::rpc::Status as RpcStatus;
    use sextant_aggregate::{MergeMode, MergeState};
    use sextant_core::{Event, Health, MeshView, RegistryId, Service};

    /// A mesh whose views become snapshots, twice over: `shared` for the
    /// connections under test, `lone` (equal content, its own plan caches)
    /// for a reference connection that never shares a plan.
    struct Mesh {
        merge: MergeState,
        id: RegistryId,
        services: Vec<Service>,
        shared: Serving,
        lone: Serving,
        /// The SotW subscriptions of the connections under test.
        subscriptions: Arc<Subscriptions>,
    }

    impl Mesh {
        fn new(services: usize) -> Mesh {
            let id = RegistryId::new("memory/a");
            let mut merge = MergeState::new(MergeMode::Union);
            merge.add_shard(id.clone());
            let services = sextant_testkit::fixtures::mesh(services, 3);
            merge.apply(&id, Event::Reset(services.clone()));
            let empty = Arc::new(Snapshot::empty(TranslateOptions::default()));
            let mut mesh = Mesh {
                merge,
                id,
                services,
                shared: Serving::alone(empty.clone()),
                lone: Serving::alone(empty),
                subscriptions: Arc::default(),
            };
            mesh.publish();
            mesh
        }

        fn publish(&mut self) {
            let view: Arc<MeshView> = Arc::new(self.merge.build_view(true).expect("view"));
            self.shared = Serving::alone(Arc::new(self.shared.next(view.clone())));
            self.lone = Serving::alone(Arc::new(self.lone.next(view)));
        }

        /// Flips one endpoint's health in service `i`.
        fn flip(&mut self, i: usize) {
            let e = &mut self.services[i].endpoints[0];
            e.health = match e.health {
                Health::Healthy => Health::Unhealthy,
                _ => Health::Healthy,
            };
            self.merge
                .apply(&self.id, Event::Apply(self.services[i].clone()));
            self.publish();
        }

        /// Adds a copy of service 0 under `host` (new clusters, a new
        /// virtual host).
        fn add(&mut self, host: &str) {
            let mut s = self.services[0].clone();
            s.hostname = sextant_core::Hostname::new(host);
            self.merge.apply(&self.id, Event::Apply(s.clone()));
            self.services.push(s);
            self.publish();
        }

        /// Removes service `i` (its cluster leaves).
        fn remove(&mut self, i: usize) {
            let gone = self.services.remove(i);
            self.merge.apply(&self.id, Event::Delete(gone.hostname));
            self.publish();
        }
    }

    fn sotw(kind: ResourceType, names: &[&str], nonce: &str) -> SotwRequest {
        let mut req = SotwRequest {
            type_url: kind.type_url().into(),
            response_nonce: nonce.into(),
            ..Default::default()
        };
        for n in names {
            req.names.push(n);
        }
        req
    }

    /// What a response says, comparable across snapshots: type, version,
    /// resources (name, version), removed names.
    type Gist = (ResourceType, String, Vec<(String, String)>, Vec<String>);

    fn gist(out: &Outbound) -> Gist {
        (
            out.kind,
            out.version_info.clone(),
            out.resources
                .iter()
                .map(|r| (r.name.to_string(), r.version.to_string()))
                .collect(),
            out.removed.iter().map(|n| n.to_string()).collect(),
        )
    }

    /// An Envoy-like SotW client: subscribes to CDS (wildcard), EDS for
    /// every cluster it holds, LDS and RDS; ACKs unless told to NACK.
    struct Proxy {
        state: ConnState,
        clusters: Vec<String>,
        routes: Vec<String>,
    }

    impl Proxy {
        fn new(subscriptions: &Arc<Subscriptions>) -> Proxy {
            let mut state = ConnState::new(Wire::Sotw, subscriptions.clone());
            state.on_sotw(sotw(ResourceType::Cluster, &[], ""));
            state.on_sotw(sotw(ResourceType::Listener, &[], ""));
            Proxy {
                state,
                clusters: Vec::new(),
                routes: Vec::new(),
            }
        }

        /// One response out and its answer in; `None` when nothing is due.
        fn step(&mut self, snap: &Serving, nack: bool) -> Option<Outbound> {
            let out = self.state.pump(snap)?;
            let names: Vec<String> = out.resources.iter().map(|r| r.name.to_string()).collect();
            let mut answer = sotw(out.kind, &[], &out.nonce);
            match out.kind {
                ResourceType::Cluster if !nack => self.clusters = names,
                ResourceType::Listener if !nack => self.routes = vec!["outbound_http".into()],
                _ => {}
            }
            let subscribe = |list: &[String]| {
                let mut r = sotw(ResourceType::Endpoint, &[], "");
                for n in list {
                    r.names.push(n);
                }
                r
            };
            match out.kind {
                ResourceType::Cluster => {
                    // Envoy restates EDS with the new clusters, then ACKs.
                    let mut eds = subscribe(&self.clusters);
                    eds.response_nonce = self.state.types[1].last_nonce.clone();
                    self.state.on_sotw(eds);
                }
                ResourceType::Listener => {
                    let mut rds = sotw(ResourceType::Route, &[], "");
                    for n in &self.routes {
                        rds.names.push(n);
                    }
                    rds.response_nonce = self.state.types[3].last_nonce.clone();
                    self.state.on_sotw(rds);
                }
                _ => {}
            }
            let restated: Vec<String> = match out.kind {
                ResourceType::Endpoint => self.clusters.clone(),
                ResourceType::Route => self.routes.clone(),
                _ => Vec::new(),
            };
            for n in &restated {
                answer.names.push(n);
            }
            if nack {
                answer.error_detail = Some(RpcStatus {
                    message: "rejected".into(),
                    ..Default::default()
                });
            }
            self.state.on_sotw(answer);
            Some(out)
        }
    }

    /// A simulated client: takes the next response and answers it.
    trait Client {
        fn next(&mut self, snap: &Serving) -> Option<Outbound>;

        /// Steps until nothing is due; every response's gist.
        fn settle(&mut self, snap: &Serving) -> Vec<Gist> {
            let mut seen = Vec::new();
            while let Some(out) = self.next(snap) {
                seen.push(gist(&out));
                assert!(seen.len() < 50, "does not settle");
            }
            seen
        }
    }

    impl Client for Proxy {
        fn next(&mut self, snap: &Serving) -> Option<Outbound> {
            self.step(snap, false)
        }
    }

    /// Settles the lone reference client on its snapshot, then each of
    /// `clients` on the shared one: each must see what the lone one saw.
    fn round<C: Client>(mesh: &Mesh, clients: &mut [C], lone: &mut C) -> Vec<Gist> {
        let want = lone.settle(&mesh.lone);
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(
                c.settle(&mesh.shared),
                want,
                "client {i} differs from the lone one"
            );
        }
        want
    }

    #[test]
    fn connections_in_the_same_state_share_plans_and_send_what_a_lone_one_sends() {
        let mut mesh = Mesh::new(20);
        let mut proxies: Vec<Proxy> = (0..4).map(|_| Proxy::new(&mesh.subscriptions)).collect();
        let mut lone = Proxy::new(&Arc::default());
        let first = round(&mesh, &mut proxies, &mut lone);
        assert_eq!(
            first.iter().map(|g| g.0).collect::<Vec<_>>(),
            [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener,
                ResourceType::Route
            ]
        );
        let shared_plans = mesh.shared.plans.len();
        assert!(shared_plans > 0 && mesh.lone.plans.len() == shared_plans);
        // Every proxy but the one that computed a plan took the shared set.
        for kind in [ResourceType::Cluster, ResourceType::Endpoint] {
            let bases: Vec<_> = proxies[1..]
                .iter()
                .map(|p| p.state.types[kind.index()].held.base.clone().expect("base"))
                .collect();
            assert!(bases.iter().all(|b| Arc::ptr_eq(b, &bases[0])), "{kind}");
            assert!(
                proxies[1..]
                    .iter()
                    .all(|p| p.state.types[kind.index()].held.over.is_empty())
            );
        }

        for i in [3, 3, 7] {
            mesh.flip(i);
            let got = round(&mesh, &mut proxies, &mut lone);
            assert_eq!(got.len(), 1, "one assignment per flip");
        }
        mesh.remove(5);
        let got = round(&mesh, &mut proxies, &mut lone);
        let order: Vec<_> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            order,
            [ResourceType::Route, ResourceType::Cluster],
            "{got:?}"
        );
        // Each round the first proxy computes the plan and applies it change
        // by change; the others share its result, and the first moves onto
        // that too before its next plan.
        for _ in 0..3 {
            mesh.flip(1);
            round(&mesh, &mut proxies, &mut lone);
            fn eds(p: &Proxy) -> &HeldSet {
                &p.state.types[ResourceType::Endpoint.index()].held
            }
            let shared = eds(&proxies[1]).base.clone().expect("base");
            assert!(proxies[1..].iter().all(|p| {
                eds(p).over.is_empty()
                    && eds(p)
                        .base
                        .as_ref()
                        .is_some_and(|b| Arc::ptr_eq(b, &shared))
            }));
            assert_eq!(eds(&proxies[0]).digest, eds(&proxies[1]).digest);
            assert_eq!(
                eds(&proxies[0]).over.len(),
                1,
                "one change on the shared base"
            );
        }
        // And the names they subscribe with are one shared set, the first
        // proxy's too (its requests were the first of their kind).
        let names = |p: &Proxy| p.state.types[ResourceType::Endpoint.index()].names.clone();
        assert!(
            proxies
                .iter()
                .all(|p| Arc::ptr_eq(&names(p), &names(&proxies[0])))
        );
        // The proxies' subscriptions are in the server's table (pruning is
        // tested in subscriptions_are_shared_by_their_encoded_names...).
        assert!(mesh.subscriptions.size().0 >= 2);
    }

    /// An Envoy-like delta client: wildcard CDS and LDS, EDS and RDS by
    /// name for what it holds.
    struct DeltaProxy {
        state: ConnState,
    }

    impl DeltaProxy {
        fn new(subscriptions: &Arc<Subscriptions>) -> DeltaProxy {
            let mut state = ConnState::new(Wire::Delta, subscriptions.clone());
            for kind in [ResourceType::Cluster, ResourceType::Listener] {
                state.on_delta(DeltaDiscoveryRequest {
                    type_url: kind.type_url().into(),
                    ..Default::default()
                });
            }
            DeltaProxy { state }
        }
    }

    impl Client for DeltaProxy {
        fn next(&mut self, snap: &Serving) -> Option<Outbound> {
            let out = self.state.pump(snap)?;
            let then = match out.kind {
                ResourceType::Cluster => Some(ResourceType::Endpoint),
                ResourceType::Listener => Some(ResourceType::Route),
                _ => None,
            };
            if let Some(kind) = then {
                let names = if kind == ResourceType::Route {
                    if out.resources.is_empty() {
                        vec![]
                    } else {
                        vec!["outbound_http".to_string()]
                    }
                } else {
                    out.resources.iter().map(|r| r.name.to_string()).collect()
                };
                self.state.on_delta(DeltaDiscoveryRequest {
                    type_url: kind.type_url().into(),
                    resource_names_subscribe: names,
                    resource_names_unsubscribe: out.removed.iter().map(|n| n.to_string()).collect(),
                    ..Default::default()
                });
            }
            self.state.on_delta(DeltaDiscoveryRequest {
                type_url: out.kind.type_url().into(),
                response_nonce: out.nonce.clone(),
                ..Default::default()
            });
            Some(out)
        }
    }

    #[test]
    fn delta_connections_share_plans_and_send_what_a_lone_one_sends() {
        let mut mesh = Mesh::new(12);
        let mut proxies: Vec<DeltaProxy> = (0..3)
            .map(|_| DeltaProxy::new(&mesh.subscriptions))
            .collect();
        let mut lone = DeltaProxy::new(&Arc::default());
        assert_eq!(round(&mesh, &mut proxies, &mut lone).len(), 4);
        let eds = |p: &DeltaProxy| {
            p.state.types[ResourceType::Endpoint.index()]
                .held
                .base
                .clone()
        };
        let (b1, b2) = (
            eds(&proxies[1]).expect("base"),
            eds(&proxies[2]).expect("base"),
        );
        assert!(
            Arc::ptr_eq(&b1, &b2),
            "new delta subscriptions share one plan"
        );
        mesh.flip(2);
        assert_eq!(round(&mesh, &mut proxies, &mut lone).len(), 1);
        mesh.remove(4);
        let got = round(&mesh, &mut proxies, &mut lone);
        assert!(
            got.iter()
                .any(|g| g.0 == ResourceType::Cluster && g.3.len() == 1),
            "{got:?}"
        );
    }

    #[test]
    fn a_nack_of_a_shared_response_restores_only_that_connection() {
        let mut mesh = Mesh::new(10);
        let mut proxies: Vec<Proxy> = (0..3).map(|_| Proxy::new(&mesh.subscriptions)).collect();
        for p in &mut proxies {
            p.settle(&mesh.shared);
        }
        mesh.flip(2);
        let before = proxies[2].state.types[ResourceType::Endpoint.index()]
            .held
            .digest;
        let a = proxies[0].step(&mesh.shared, false).expect("flip for 0");
        let b = proxies[1].step(&mesh.shared, false).expect("flip for 1");
        let c = proxies[2]
            .step(&mesh.shared, true)
            .expect("flip for 2, rejected");
        assert_eq!(gist(&a), gist(&b));
        assert_eq!(gist(&b), gist(&c));
        fn eds(p: &Proxy) -> &TypeState {
            &p.state.types[ResourceType::Endpoint.index()]
        }
        assert_eq!(
            eds(&proxies[2]).held.digest,
            before,
            "the rejecting proxy holds what it held"
        );
        assert_eq!(
            eds(&proxies[2]).acked_version,
            proxies[2].state.types[1].acked_version
        );
        assert_ne!(eds(&proxies[0]).held.digest, before);
        assert_eq!(eds(&proxies[0]).held.digest, eds(&proxies[1]).held.digest);
        // The rejected version is not sent again; the next change is, to all.
        assert!(proxies[2].step(&mesh.shared, false).is_none());
        mesh.flip(4);
        let all: Vec<_> = proxies.iter_mut().map(|p| p.settle(&mesh.shared)).collect();
        assert_eq!(all[0], all[1]);
        assert_eq!(all[2].len(), 1);
        assert_eq!(all[2][0].2, all[0][0].2, "the same assignment");
        assert_ne!(
            all[2][0].1, all[0][0].1,
            "a different set held, a different version"
        );
    }

    #[test]
    fn bulk_and_one_by_one_subscriptions_give_the_same_set_and_digest() {
        let arcs = |xs: &[&str]| xs.iter().map(|x| Arc::<str>::from(*x)).collect::<Vec<_>>();
        let mut bulk = TypeState::new(ResourceType::Endpoint);
        bulk.subscribe_all(arcs(&["c", "a", "b", "a"]));
        let mut single = TypeState::new(ResourceType::Endpoint);
        for n in arcs(&["a", "b", "c"]) {
            single.subscribe(n);
        }
        assert_eq!(bulk.names, single.names);
        assert_eq!(bulk.names_digest, single.names_digest);
        assert_eq!(bulk.to_answer.len(), 3);
        bulk.subscribe_all(arcs(&["d", "a"]));
        single.subscribe("d".into());
        assert_eq!(bulk.names, single.names);
        assert_eq!(bulk.names_digest, single.names_digest);
        bulk.unsubscribe("b");
        let acd = ["a", "c", "d"].iter().fold(0, |d, n| d ^ name_hash(n));
        assert_eq!(bulk.names_digest, acd);
    }

    #[test]
    fn subscriptions_are_shared_by_their_encoded_names_and_leave_with_their_last_user() {
        let table = Arc::new(Subscriptions::default());
        let request = |names: &[&str]| sotw(ResourceType::Endpoint, names, "");
        let mut a = ConnState::new(Wire::Sotw, table.clone());
        let mut b = ConnState::new(Wire::Sotw, table.clone());
        a.on_sotw(request(&["x", "y"]));
        b.on_sotw(request(&["x", "y"]));
        let eds = |c: &ConnState| c.types[ResourceType::Endpoint.index()].names.clone();
        assert!(Arc::ptr_eq(&eds(&a), &eds(&b)), "one set for one list");
        // The same names in another order: another entry, an equal set.
        let mut c = ConnState::new(Wire::Sotw, table.clone());
        c.on_sotw(request(&["y", "x"]));
        assert_eq!(eds(&c), eds(&a));
        assert_eq!(table.size(), (2, 4));
        // A list offered under a digest already taken by other names is
        // used but not shared.
        let digest = a.types[ResourceType::Endpoint.index()]
            .request_digest
            .expect("digest");
        let forged = Interned {
            entries: b"other".to_vec(),
            names: Arc::default(),
            digest: 0,
            star: false,
            request_digest: digest,
        };
        let got = table.offer(ResourceType::Endpoint, forged);
        assert_eq!(got.entries, b"other");
        table.release(ResourceType::Endpoint, got);
        assert!(Arc::ptr_eq(&eds(&a), &eds(&b)));
        assert_eq!(table.size(), (2, 4));
        // A connection that changes its list lets go of the old one; the
        // last user of an entry removes it, with its stream or its change.
        c.on_sotw(request(&["z"]));
        assert_eq!(table.size(), (2, 3), "[y, x] left with its only user");
        drop(a);
        assert_eq!(table.size(), (2, 3), "b still uses [x, y]");
        drop(b);
        assert_eq!(table.size(), (1, 1));
        drop(c);
        assert_eq!(table.size(), (0, 0));
    }

    #[test]
    fn the_plan_cache_is_bounded_by_the_names_its_plans_hold() {
        let mesh = Mesh::new(2);
        let table = Arc::new(Subscriptions::default());
        // Distinct subscriptions of many names each: their plans are
        // computed and applied, but the cache stops taking them.
        // (Each under the per-type limit, MAX_NAMES_PER_TYPE.)
        let big: Vec<String> = (0..MAX_CACHED_PLAN_NAMES / 6)
            .map(|i| format!("outbound|80||n{i}.svc"))
            .collect();
        let mut conns = Vec::new();
        for k in 0..8 {
            let mut c = ConnState::new(Wire::Sotw, table.clone());
            let mut names: Vec<&str> = big.iter().map(String::as_str).collect();
            let own = format!("own-{k}");
            names.push(&own);
            c.on_sotw(sotw(ResourceType::Endpoint, &names, ""));
            let out = c.pump(&mesh.shared).expect("an answer");
            assert_eq!(out.kind, ResourceType::Endpoint);
            conns.push(c);
        }
        let (plans, names) = mesh.shared.plans.size();
        assert!(
            names <= MAX_CACHED_PLAN_NAMES,
            "{names} names in {plans} plans"
        );
        assert_eq!(plans, 5, "six would hold more than the bound");
        // Plans stay while a connection holds their names, and leave with
        // the last one.
        mesh.shared.plans.prune_unused();
        assert_eq!(mesh.shared.plans.size(), (plans, names));
        drop(conns.remove(0));
        mesh.shared.plans.prune_unused();
        assert_eq!(mesh.shared.plans.size().0, plans - 1);
        drop(conns);
        mesh.shared.plans.prune_unused();
        assert_eq!(mesh.shared.plans.size(), (0, 0));
        assert_eq!(table.size(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_eds_wait_ends_on_time_even_while_clusters_await_their_ack() {
        let mesh = Mesh::new(3);
        let ack = std::time::Duration::from_secs(30);
        let mut p = Proxy::new(&mesh.subscriptions);
        // CDS goes out (wildcard: the client will want its endpoints) and
        // is not acknowledged, nor are endpoints asked for.
        let cds = p.state.pump(&mesh.shared).expect("cds");
        assert_eq!(cds.kind, ResourceType::Cluster);
        assert!(
            p.state.pump(&mesh.shared).is_none(),
            "listeners wait for EDS"
        );
        let sent = p.state.in_flight_since().expect("in flight");
        assert_eq!(p.state.next_deadline(ack), Some(sent + EDS_WAIT));
        // The wait ends: listeners go out though CDS is still unacknowledged
        // (they refer only to clusters already sent), and the timer moves on
        // to the oldest ACK deadline instead of firing again.
        tokio::time::advance(EDS_WAIT).await;
        let next = p.state.pump(&mesh.shared).expect("lds");
        assert_eq!(next.kind, ResourceType::Listener);
        assert_eq!(p.state.next_deadline(ack), Some(sent + ack));
        // Past the ACK deadline, both unacknowledged responses expire.
        tokio::time::advance(ack).await;
        assert_eq!(
            p.state.expire_in_flight(ack),
            [ResourceType::Cluster, ResourceType::Listener]
        );
        assert_eq!(p.state.next_deadline(ack), None);
    }

    /// Envoy acknowledges a CDS response that adds clusters only once they
    /// have warmed, and they warm on their endpoints. Those, and the routes
    /// that use the clusters, must go out while CDS waits for its ACK; only
    /// what refers to clusters not sent yet waits.
    #[test]
    fn new_clusters_get_their_endpoints_before_the_clusters_are_acknowledged() {
        let mut mesh = Mesh::new(2);
        let mut p = Proxy::new(&mesh.subscriptions);
        p.settle(&mesh.shared);
        let eds_request = |p: &Proxy, clusters: &[String]| {
            let mut r = sotw(ResourceType::Endpoint, &[], &p.state.types[1].last_nonce);
            for n in clusters {
                r.names.push(n);
            }
            r
        };

        mesh.add("added.test.svc");
        let cds = p.state.pump(&mesh.shared).expect("cds");
        assert_eq!(cds.kind, ResourceType::Cluster);
        let clusters: Vec<String> = cds.resources.iter().map(|r| r.name.to_string()).collect();
        let new: Vec<&String> = clusters
            .iter()
            .filter(|n| n.ends_with("added.test.svc"))
            .collect();
        assert!(!new.is_empty());
        // Like Envoy: ask for the new clusters' endpoints, hold the CDS ACK.
        p.state.on_sotw(eds_request(&p, &clusters));
        let eds = p
            .state
            .pump(&mesh.shared)
            .expect("eds while CDS is in flight");
        assert_eq!(eds.kind, ResourceType::Endpoint);
        let sent: Vec<String> = eds.resources.iter().map(|r| r.name.to_string()).collect();
        for n in &new {
            assert!(sent.contains(n), "{n} missing from {sent:?}");
        }
        let rds = p
            .state
            .pump(&mesh.shared)
            .expect("routes to the sent clusters");
        assert_eq!(rds.kind, ResourceType::Route);
        assert!(p.state.pump(&mesh.shared).is_none());

        // Another service arrives while CDS still waits: its routes must
        // not go out before its clusters can.
        p.state.on_sotw(eds_request(&p, &clusters));
        p.state
            .on_sotw(sotw(ResourceType::Route, &["outbound_http"], &rds.nonce));
        mesh.add("later.test.svc");
        assert!(
            p.state.pump(&mesh.shared).is_none(),
            "routes to unsent clusters went out"
        );
        p.state
            .on_sotw(sotw(ResourceType::Cluster, &[], &cds.nonce));
        let cds = p.state.pump(&mesh.shared).expect("the later clusters");
        assert_eq!(cds.kind, ResourceType::Cluster);
        assert!(
            cds.resources
                .iter()
                .any(|r| r.name.ends_with("later.test.svc"))
        );
    }

    #[test]
    fn a_digest_collision_does_not_share_a_plan() {
        let mesh = Mesh::new(5);
        // The first computes the plans; the others take them.
        let mut proxies: Vec<Proxy> = (0..4).map(|_| Proxy::new(&mesh.subscriptions)).collect();
        for p in &mut proxies {
            p.settle(&mesh.shared);
        }
        let [_, a, b, c] = &mut proxies[..] else {
            unreachable!()
        };
        let eds_a = &a.state.types[ResourceType::Endpoint.index()];
        let eds_b = &mut b.state.types[ResourceType::Endpoint.index()];
        let plan = eds_a.compute(&mesh.shared, Phase::Additions, Wire::Sotw);
        assert!(eds_b.matches(&plan));
        // Other names with the same digest and count.
        let mut other: NameSet = eds_b.names.iter().skip(1).cloned().collect();
        other.insert("outbound|1||elsewhere".into());
        eds_b.names = Arc::new(other);
        assert!(
            !eds_b.matches(&plan),
            "names are compared, not only their digest"
        );
        // Another held version with the same digest and count.
        let eds_c = &mut c.state.types[ResourceType::Endpoint.index()];
        let first = eds_c.held.iter().next().expect("held").name().clone();
        let stand_in = Held::declared(ResourceType::Endpoint, first.clone(), "other".into());
        let digest = eds_c.held.digest;
        eds_c.held.set(first, Some(stand_in));
        eds_c.held.digest = digest;
        assert!(
            !eds_c.matches(&plan),
            "held versions are compared, not only their digest"
        );
    }

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
