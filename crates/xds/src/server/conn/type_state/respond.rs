//! The response side of one type: the verdict on each name (what the
//! client holds against what its lens shows now) and the plans built from
//! the verdicts, applied when sent. The request side (subscriptions, ACKs,
//! NACKs) is the parent module's.

use std::sync::Arc;

use super::*;

impl TypeState {
    // The verdicts.

    /// One resource as this client, through its lens, sees it.
    pub(super) fn lookup<'a>(
        &'a self,
        name: &str,
        snap: &'a Snapshot,
    ) -> Option<&'a Arc<Resource>> {
        self.lens.get(snap, self.client, self.kind, name)
    }

    pub(super) fn verdict(&self, name: &Arc<str>, snap: &Snapshot) -> Verdict {
        let held = self.held.get(name);
        let want = match self.lookup(name, snap) {
            Some(r) if self.wildcard || self.wants_by_name(name) => Some(r),
            Some(_) => None,
            None if self.wants_by_name(name) && !self.kind.is_full_state() => {
                // Assignments and routes that do not exist get an empty one,
                // so the cluster or listener that needs them is not left
                // warming. One the client already holds stays until it
                // unsubscribes: its cluster or listener is on its way out,
                // after the routes that use it. A placeholder it rejected
                // (only a broken client would) is not sent again.
                if held.is_some() {
                    return Verdict::Keep;
                }
                if let Some(rejected) = self.rejected.get(name)
                    && placeholder(self.kind, name).is_some_and(|p| p.version == *rejected)
                {
                    return Verdict::Keep;
                }
                return Verdict::SendPlaceholder;
            }
            None => None,
        };
        match (want, held) {
            (Some(r), Some(h)) if *h.version() == r.version => Verdict::Keep,
            (Some(r), _) if self.rejected.get(name) == Some(&r.version) => Verdict::Keep,
            (Some(r), _) => Verdict::Send(r.clone()),
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
    pub(in crate::server::conn) fn settled(&self, snap: &Snapshot) -> bool {
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
        let mut all = if self.wildcard {
            self.lens.wildcard_names_and(snap, self.kind, subscribed)
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

    /// The resource a verdict sends, if it sends one.
    pub(super) fn to_send(&self, name: &Arc<str>, verdict: Verdict) -> Option<Arc<Resource>> {
        match verdict {
            Verdict::Send(r) => Some(r),
            Verdict::SendPlaceholder => placeholder(self.kind, name),
            Verdict::Keep | Verdict::Remove | Verdict::Forget => None,
        }
    }

    /// A SotW client reconnecting with the version of exactly what we would
    /// send it already holds it: nothing is resent.
    pub(super) fn try_resume(&mut self, snap: &Snapshot) {
        let Some(version) = self.resume_version.take() else {
            return;
        };
        let mut desired = Vec::new();
        for name in self.candidates(snap) {
            let verdict = self.verdict(&name, snap);
            desired.extend(self.to_send(&name, verdict));
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

    // Plans.

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
            held: self.held.digest(),
            held_len: self.held.len(),
        })
    }

    /// Whether `plan` was computed from a state equal to this one (the key
    /// matched; the names and what is held must too).
    pub(in crate::server::conn) fn matches(&self, plan: &Plan) -> bool {
        (Arc::ptr_eq(&self.names, &plan.names) || *self.names == *plan.names)
            && self.lens == plan.lens
            && self.held.same_as(plan.from.as_ref())
    }

    pub(in crate::server::conn) fn compute(
        &self,
        snap: &Snapshot,
        phase: Phase,
        wire: Wire,
    ) -> Plan {
        let mut updates = Vec::new();
        let mut removals = Vec::new();
        let mut forget = Vec::new();
        for name in self.candidates(snap) {
            match self.verdict(&name, snap) {
                Verdict::Keep => {}
                Verdict::Remove => removals.push(name),
                Verdict::Forget => forget.push(name),
                send => updates.extend(self.to_send(&name, send)),
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

        let mut digest_after = self.held.digest();
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

    /// This type's next response for `phase`, if one is due: from a plan
    /// another connection in the same state computed for `snap`, or
    /// computed here (and offered to the others).
    pub(in crate::server::conn) fn plan(
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
        debug_assert_eq!(self.held.digest(), plan.digest_after);
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
        // A response carries a change (and its convergence is measured)
        // when it follows an earlier one of this type and comes from a newer
        // snapshot: not a new stream's first answer, nor an answer to a new
        // subscription on the same snapshot.
        let carries_change = self.responses > 0 && snap.generation > self.last_generation;
        self.last_generation = snap.generation;
        self.responses += 1;
        let out = Outbound {
            wire,
            kind: self.kind,
            version_info: planned.version_info.clone(),
            nonce: nonce.clone(),
            resources: planned.resources.clone(),
            removed: planned.removed.clone(),
            changed_at: snap.first_change.filter(|_| carries_change),
        };
        self.in_flight = Some(InFlight {
            nonce,
            version_info: planned.version_info.clone(),
            plan,
            undo,
            since: Instant::now(),
            generation: snap.generation,
            changed_at: snap.first_change.filter(|_| carries_change),
        });
        Some(out)
    }
}
