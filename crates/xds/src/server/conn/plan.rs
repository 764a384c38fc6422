//! Plans: one type's next step for connections in the same state,
//! computed once per snapshot and shared through the server's cache.

use std::collections::HashMap;
use std::sync::Arc;

use super::held::{Base, Held};
use super::subscriptions::NameSet;
use crate::lens::Lens;
use crate::resource::{Resource, ResourceType};
use crate::server::codec::{Batch, Wire};
use crate::snapshot::Snapshot;

/// How a plan moves `synced_at`.
#[derive(Clone, Copy)]
pub(super) enum SyncedAt {
    Keep,
    Set,
    Clear,
}

/// A response a plan sends.
pub(super) struct Planned {
    pub(super) version_info: String,
    pub(super) resources: Arc<Batch>,
    pub(super) removed: Vec<Arc<str>>,
}

/// One type's next step for a connection in one snapshot: what to forget,
/// send and remove, and the response. It depends only on the connection's
/// subscription and what it holds, so connections in the same state share
/// one, computed once per snapshot (see [`PlanCache`]); each then costs a
/// nonce and a pointer swap.
pub(crate) struct Plan {
    /// The inputs, to check a cache hit (digests can collide). `from` is
    /// what was held when that was a base (only such plans are shared).
    pub(super) names: Arc<NameSet>,
    /// The lens it was planned through.
    pub(super) lens: Lens,
    pub(super) from: Option<Arc<Base>>,
    pub(super) forget: Vec<Arc<str>>,
    pub(super) updates: Vec<Arc<Resource>>,
    pub(super) removals: Vec<Arc<str>>,
    pub(super) response: Option<Planned>,
    pub(super) sync: SyncedAt,
    pub(super) digest_after: u64,
    /// What the client holds once the plan is applied, built the first time
    /// a second connection takes the plan.
    pub(super) after: std::sync::OnceLock<Option<Arc<Base>>>,
}

impl Plan {
    pub(super) fn changes_nothing(&self) -> bool {
        self.forget.is_empty() && self.updates.is_empty() && self.removals.is_empty()
    }

    pub(super) fn after(&self) -> Option<Arc<Base>> {
        self.after
            .get_or_init(|| {
                if self.changes_nothing() {
                    return self.from.clone();
                }
                Base::changed(
                    self.from.as_deref(),
                    self.forget.iter().chain(&self.removals),
                    self.updates.iter().map(|r| Held::sent(r.clone())),
                    self.digest_after,
                )
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
    #[cfg(any(test, feature = "fuzzing"))]
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
        let mut current = crate::server::lock(&self.0);
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
        crate::server::lock(&self.0).1.clone()
    }
}

/// What identifies a plan's inputs, by digest; a hit is confirmed against
/// the plan's own inputs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PlanKey {
    pub(super) kind: ResourceType,
    /// Clients of different kinds receive different forms of a resource.
    pub(super) client: crate::translate::Client,
    pub(super) wire: Wire,
    pub(super) removals: bool,
    pub(super) must_answer: bool,
    /// Every subscribed name still awaits its first answer (a new delta
    /// subscription).
    pub(super) answer_all: bool,
    pub(super) wildcard: bool,
    /// The lens's digest (0: the plain view).
    pub(super) scope: u64,
    pub(super) names: u64,
    pub(super) names_len: usize,
    pub(super) held: u64,
    pub(super) held_len: usize,
}

/// The plans computed for one snapshot, shared by its connections. It lives
/// as long as its snapshot, which on a quiet mesh is long: so it is bounded
/// ([`MAX_CACHED_PLANS`], [`MAX_CACHED_PLAN_NAMES`]). A plan it refuses is
/// still applied by the connection that computed it, only not shared; alike
/// proxies reach the cache first, so a flood of distinct subscriptions
/// costs its senders their sharing, not the others.
pub(crate) struct PlanCache {
    plans: std::sync::Mutex<CachedPlans>,
    /// [`MAX_CACHED_PLAN_NAMES`], or less in tests.
    max_names: usize,
}

impl Default for PlanCache {
    fn default() -> Self {
        PlanCache {
            plans: Default::default(),
            max_names: MAX_CACHED_PLAN_NAMES,
        }
    }
}

#[derive(Default)]
pub(super) struct CachedPlans {
    pub(super) map: HashMap<PlanKey, Arc<Plan>>,
    /// Subscribed names the cached plans hold.
    pub(super) names: usize,
}

/// Plans one snapshot's cache keeps. Alike proxies need one per type and
/// state; a thousand distinct scopes fit many times over.
pub(crate) const MAX_CACHED_PLANS: usize = 4096;

/// Subscribed names the plans of one snapshot may hold together: what a
/// hostile subscription of many names can make the cache keep.
pub(crate) const MAX_CACHED_PLAN_NAMES: usize = 1_000_000;

impl PlanCache {
    pub(super) fn get(&self, key: &PlanKey) -> Option<Arc<Plan>> {
        self.lock().map.get(key).cloned()
    }

    pub(super) fn offer(&self, key: PlanKey, plan: &Arc<Plan>) {
        let mut cache = self.lock();
        if cache.map.len() >= MAX_CACHED_PLANS
            || cache.names + plan.names.len() > self.max_names
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, CachedPlans> {
        crate::server::lock(&self.plans)
    }

    /// A cache that holds at most `max_names` subscribed names: the bound's
    /// rule, testable without a million names.
    #[cfg(test)]
    pub(crate) fn bounded(max_names: usize) -> PlanCache {
        PlanCache {
            plans: Default::default(),
            max_names,
        }
    }
}
