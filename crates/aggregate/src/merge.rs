//! The pure merge: shards in, [`MeshView`] out. No I/O, no clock, so that
//! property tests can feed it any interleaving of events.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use sextant_core::{
    Conflict, ConflictField, Endpoint, Event, Hostname, MeshService, MeshView, RegistryId, Rule,
    RuleKey, RuleKind, RuleProblems, Service, ValidationErrors,
};

/// How services with the same hostname from several registries combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMode {
    /// Endpoints are the union of every registry's endpoints; everything else
    /// comes from the first registry (in priority order) that has the service.
    /// The default: during a migration both estates serve traffic.
    #[default]
    Union,
    /// The first registry that has the service wins entirely.
    First,
}

impl std::str::FromStr for MergeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "union" => Ok(MergeMode::Union),
            "first" => Ok(MergeMode::First),
            _ => Err(format!("unknown merge mode {s:?}, expected union or first")),
        }
    }
}

struct Shard {
    id: RegistryId,
    services: BTreeMap<Hostname, Service>,
}

/// One rule source's rules.
struct RuleShard {
    id: RegistryId,
    rules: BTreeMap<RuleKey, Arc<Rule>>,
    /// The keys of the rules naming each host: merging a host looks up its
    /// rules here instead of scanning every rule (merges run on every
    /// change, endpoint flips included).
    by_host: BTreeMap<Hostname, BTreeSet<RuleKey>>,
    /// The keys of the route rules sending to each host: a change to that
    /// host's policy merges their hosts again (its ring-hash key goes into
    /// their routes).
    by_destination: BTreeMap<Hostname, BTreeSet<RuleKey>>,
}

/// The hosts a route rule sends requests to (destinations and mirrors).
fn destinations(rule: &Rule) -> BTreeSet<&Hostname> {
    rule.as_route()
        .into_iter()
        .flat_map(|r| r.destinations())
        .map(|d| &d.host)
        .collect()
}

fn add_key(map: &mut BTreeMap<Hostname, BTreeSet<RuleKey>>, h: &Hostname, key: &RuleKey) {
    map.entry(h.clone()).or_default().insert(key.clone());
}

fn remove_key(map: &mut BTreeMap<Hostname, BTreeSet<RuleKey>>, h: &Hostname, key: &RuleKey) {
    if let Some(keys) = map.get_mut(h) {
        keys.remove(key);
        if keys.is_empty() {
            map.remove(h);
        }
    }
}

impl RuleShard {
    fn index(&mut self, rule: &Rule) {
        for h in &rule.hosts {
            add_key(&mut self.by_host, h, &rule.key);
        }
        for h in destinations(rule) {
            add_key(&mut self.by_destination, h, &rule.key);
        }
    }

    fn unindex(&mut self, rule: &Rule) {
        for h in &rule.hosts {
            remove_key(&mut self.by_host, h, &rule.key);
        }
        for h in destinations(rule) {
            remove_key(&mut self.by_destination, h, &rule.key);
        }
    }

    fn insert(&mut self, rule: Arc<Rule>) -> Option<Arc<Rule>> {
        let old = self.remove(&rule.key);
        self.index(&rule);
        self.rules.insert(rule.key.clone(), rule);
        old
    }

    fn remove(&mut self, key: &RuleKey) -> Option<Arc<Rule>> {
        let old = self.rules.remove(key)?;
        self.unindex(&old);
        Some(old)
    }

    /// Replaces every rule; the previous ones.
    fn replace_all(&mut self, rules: BTreeMap<RuleKey, Arc<Rule>>) -> BTreeMap<RuleKey, Arc<Rule>> {
        self.by_host.clear();
        self.by_destination.clear();
        for rule in rules.values() {
            self.index(rule);
        }
        std::mem::replace(&mut self.rules, rules)
    }

    /// The rules naming `host`, by key.
    fn naming<'a>(&'a self, host: &Hostname) -> impl Iterator<Item = &'a Arc<Rule>> + 'a {
        self.by_host
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|k| self.rules.get(k))
    }
}

/// One shard per registry, in priority order, one per rule source, and the
/// merged services with the rules bound to them.
pub struct MergeState {
    mode: MergeMode,
    shards: Vec<Shard>,
    rule_shards: Vec<RuleShard>,
    merged: imbl::OrdMap<Hostname, Arc<MeshService>>,
    conflicts: BTreeMap<Hostname, Vec<Conflict>>,
    dirty: BTreeSet<Hostname>,
    /// Every scope rule in precedence order, rebuilt when one changes.
    scopes: Arc<[Arc<Rule>]>,
    /// The view generation in which `scopes` last changed.
    scopes_generation: u64,
    scopes_dirty: bool,
    generation: u64,
}

impl MergeState {
    /// An empty state with no shards.
    pub fn new(mode: MergeMode) -> Self {
        MergeState {
            mode,
            shards: Vec::new(),
            rule_shards: Vec::new(),
            merged: imbl::OrdMap::new(),
            conflicts: BTreeMap::new(),
            dirty: BTreeSet::new(),
            scopes: Arc::new([]),
            scopes_generation: 0,
            scopes_dirty: false,
            generation: 0,
        }
    }

    /// Adds an empty shard at the lowest priority. False if `id` exists.
    pub fn add_shard(&mut self, id: RegistryId) -> bool {
        if self.shard_index(&id).is_some() {
            return false;
        }
        self.shards.push(Shard {
            id,
            services: BTreeMap::new(),
        });
        true
    }

    /// Removes a shard and exactly its contribution.
    pub fn remove_shard(&mut self, id: &RegistryId) {
        if let Some(i) = self.shard_index(id) {
            let shard = self.shards.remove(i);
            self.dirty.extend(shard.services.into_keys());
        }
    }

    /// Drops a shard's contribution (services and rules) but keeps its
    /// place in the priority order.
    pub fn clear_shard(&mut self, id: &RegistryId) {
        if let Some(i) = self.shard_index(id) {
            let old = std::mem::take(&mut self.shards[i].services);
            self.dirty.extend(old.into_keys());
        }
        if let Some(i) = self.rule_shard_index(id) {
            let old = self.rule_shards[i].replace_all(BTreeMap::new());
            self.scopes_dirty |= old.values().any(|r| r.per_proxy());
            self.dirty
                .extend(old.into_values().flat_map(|r| r.hosts.clone()));
        }
    }

    /// Adds an empty rule shard at the lowest priority. False if a rule
    /// source with `id` exists (a registry may share its id).
    pub fn add_rule_shard(&mut self, id: RegistryId) -> bool {
        if self.rule_shard_index(&id).is_some() {
            return false;
        }
        self.rule_shards.push(RuleShard {
            id,
            rules: BTreeMap::new(),
            by_host: BTreeMap::new(),
            by_destination: BTreeMap::new(),
        });
        true
    }

    fn rule_shard_index(&self, id: &RegistryId) -> Option<usize> {
        self.rule_shards.iter().position(|s| &s.id == id)
    }

    /// Applies one rule event to the rule shard of `id`: the hosts the
    /// rule bound to before and binds to now are merged again, no others.
    /// Rules that fail validation are returned and not applied; the shard
    /// keeps their previous version.
    pub fn apply_rules(&mut self, id: &RegistryId, event: Event<Rule>) -> Vec<RuleProblems> {
        let Some(i) = self.rule_shard_index(id) else {
            return Vec::new();
        };
        let shard = &mut self.rule_shards[i];
        let mut touched: Vec<Hostname> = Vec::new();
        let mut rejected = Vec::new();
        match event {
            // Sync and problem bookkeeping is the aggregator's.
            Event::Unchanged | Event::Resolved(_) => {}
            Event::Apply(rule) => {
                if shard.rules.get(&rule.key).is_some_and(|r| **r == rule) {
                    return rejected;
                }
                if let Err(e) = rule.validate() {
                    rejected.push(e);
                    return rejected;
                }
                touched.extend(rule.hosts.iter().cloned());
                self.scopes_dirty |= rule.per_proxy();
                if let Some(old) = shard.insert(Arc::new(rule)) {
                    self.scopes_dirty |= old.per_proxy();
                    touched.extend(old.hosts.iter().cloned());
                }
            }
            Event::Delete(key) => {
                if let Some(old) = shard.remove(&key) {
                    self.scopes_dirty |= old.per_proxy();
                    touched.extend(old.hosts.iter().cloned());
                }
            }
            Event::Reset(rules) => {
                let mut next: BTreeMap<RuleKey, Arc<Rule>> = BTreeMap::new();
                for r in rules {
                    match shard.rules.get(&r.key) {
                        Some(old) if **old == r => {
                            next.insert(r.key.clone(), old.clone());
                        }
                        old => match r.validate() {
                            Ok(()) => {
                                next.insert(r.key.clone(), Arc::new(r));
                            }
                            Err(e) => {
                                // Keep serving the last good version of this rule.
                                if let Some(old) = old {
                                    next.insert(r.key.clone(), old.clone());
                                }
                                rejected.push(e);
                            }
                        },
                    }
                }
                for (k, r) in &next {
                    if shard.rules.get(k) != Some(r) {
                        self.scopes_dirty |= r.per_proxy();
                        touched.extend(r.hosts.iter().cloned());
                        if let Some(old) = shard.rules.get(k) {
                            self.scopes_dirty |= old.per_proxy();
                            touched.extend(old.hosts.iter().cloned());
                        }
                    }
                }
                for (k, old) in &shard.rules {
                    if !next.contains_key(k) {
                        self.scopes_dirty |= old.per_proxy();
                        touched.extend(old.hosts.iter().cloned());
                    }
                }
                shard.replace_all(next);
            }
        }
        // The hosts whose route rules send to a touched host depend on its
        // policy (its ring-hash key goes into their routes).
        let dependents: Vec<Hostname> = touched.iter().flat_map(|h| self.senders_to(h)).collect();
        self.dirty.extend(touched);
        self.dirty.extend(dependents);
        rejected
    }

    fn shard_index(&self, id: &RegistryId) -> Option<usize> {
        self.shards.iter().position(|s| &s.id == id)
    }

    /// Applies one event to the shard of `id`. Services that fail validation
    /// are returned and not applied; the shard keeps their previous version.
    /// Events for an unknown shard are ignored.
    pub fn apply(&mut self, id: &RegistryId, event: Event) -> Vec<ValidationErrors> {
        let Some(i) = self.shard_index(id) else {
            return Vec::new();
        };
        let shard = &mut self.shards[i];
        let mut rejected = Vec::new();
        match event {
            // Sync and problem bookkeeping is the aggregator's.
            Event::Unchanged | Event::Resolved(_) => {}
            // An Apply equal to what the shard holds is a no-op, found
            // before validating: adapters may resend unchanged services.
            Event::Apply(service) if shard.services.get(&service.hostname) == Some(&service) => {}
            Event::Apply(service) => match service.validate() {
                Err(e) => rejected.push(e),
                Ok(()) => {
                    self.dirty.insert(service.hostname.clone());
                    shard.services.insert(service.hostname.clone(), service);
                }
            },
            Event::Delete(hostname) => {
                if shard.services.remove(&hostname).is_some() {
                    self.dirty.insert(hostname);
                }
            }
            Event::Reset(services) => {
                let mut next = BTreeMap::new();
                for service in services {
                    match service.validate() {
                        Ok(()) => {
                            next.insert(service.hostname.clone(), service);
                        }
                        Err(e) => {
                            // Keep serving the last good version of this service.
                            if let Some(old) = shard.services.get(&service.hostname) {
                                next.insert(service.hostname.clone(), old.clone());
                            }
                            rejected.push(e);
                        }
                    }
                }
                for (h, s) in &next {
                    if shard.services.get(h) != Some(s) {
                        self.dirty.insert(h.clone());
                    }
                }
                for h in shard.services.keys() {
                    if !next.contains_key(h) {
                        self.dirty.insert(h.clone());
                    }
                }
                shard.services = next;
            }
        }
        rejected
    }

    /// Services and endpoints the shard of `id` holds.
    pub fn shard_counts(&self, id: &RegistryId) -> (usize, usize) {
        self.shard_index(id)
            .map(|i| {
                let s = &self.shards[i].services;
                (s.len(), s.values().map(|s| s.endpoints.len()).sum())
            })
            .unwrap_or((0, 0))
    }

    /// Route rules, destination policies and scope rules a rule source holds.
    pub fn rule_counts(&self, id: &RegistryId) -> (usize, usize, usize) {
        self.rule_shard_index(id)
            .map(|i| {
                let rules = &self.rule_shards[i].rules;
                let count = |kind| rules.keys().filter(|k| k.kind == kind).count();
                (
                    count(RuleKind::Route),
                    count(RuleKind::Policy),
                    count(RuleKind::Scope),
                )
            })
            .unwrap_or((0, 0, 0))
    }

    /// The generation of the last view built.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Re-merges the services touched since the last call and returns a new
    /// view if anything changed (or if `force`, for the first publication).
    pub fn build_view(&mut self, force: bool) -> Option<MeshView> {
        let next_gen = self.generation + 1;
        let mut changed = false;
        let mut ports_moved = Vec::new();
        for hostname in std::mem::take(&mut self.dirty) {
            let before = single_port(self.merged.get(&hostname));
            changed |= self.remerge(hostname.clone(), next_gen);
            if single_port(self.merged.get(&hostname)) != before {
                ports_moved.push(hostname);
            }
        }
        // A host whose single port changed (or that came or went): the
        // services routing to it translate their destinations again.
        for host in ports_moved {
            for sender in self.senders_to(&host) {
                changed |= self.remerge(sender, next_gen);
            }
        }
        if std::mem::take(&mut self.scopes_dirty) {
            let scopes: Vec<Arc<Rule>> = self
                .rule_shards
                .iter()
                .flat_map(|s| s.rules.values())
                .filter(|r| r.per_proxy())
                .cloned()
                .collect();
            if *scopes != *self.scopes {
                self.scopes = scopes.into();
                self.scopes_generation = next_gen;
                changed = true;
            }
        }
        if !changed && !force {
            return None;
        }
        self.generation = next_gen;
        let conflicts: Vec<Conflict> = self.conflicts.values().flatten().cloned().collect();
        Some(MeshView {
            generation: next_gen,
            services: self.merged.clone(),
            conflicts: conflicts.into(),
            scopes: self.scopes.clone(),
            scopes_generation: self.scopes_generation,
        })
    }

    /// Recomputes one hostname; true if the merged service changed.
    fn remerge(&mut self, hostname: Hostname, generation: u64) -> bool {
        let contributors: Vec<(&RegistryId, &Service)> = self
            .shards
            .iter()
            .filter_map(|s| s.services.get(&hostname).map(|svc| (&s.id, svc)))
            .collect();
        let Some(&(winner_id, winner)) = contributors.first() else {
            self.conflicts.remove(&hostname);
            return self.merged.remove(&hostname).is_some();
        };

        let mut conflicts = Vec::new();
        for &(other_id, other) in &contributors[1..] {
            if !same_ports(winner, other) {
                conflicts.push(Conflict {
                    hostname: hostname.clone(),
                    winner: winner_id.clone(),
                    other: other_id.clone(),
                    field: ConflictField::Ports,
                    detail: format!(
                        "{winner_id} has [{}], {other_id} has [{}]",
                        describe_ports(winner),
                        describe_ports(other)
                    ),
                    endpoints_dropped: 0,
                });
            }
            if winner.namespace != other.namespace {
                conflicts.push(Conflict {
                    hostname: hostname.clone(),
                    winner: winner_id.clone(),
                    other: other_id.clone(),
                    field: ConflictField::Namespace,
                    detail: format!(
                        "{winner_id} has {:?}, {other_id} has {:?}",
                        winner.namespace, other.namespace
                    ),
                    endpoints_dropped: 0,
                });
            }
        }
        let sources = match self.mode {
            MergeMode::Union => &contributors[..],
            MergeMode::First => &contributors[..1],
        };
        let targets = winner_targets(winner);
        let mut endpoints = Vec::new();
        let mut seen = HashSet::new();
        for &(id, svc) in sources {
            let mut dropped = 0;
            for ep in &svc.endpoints {
                let Some(ep) = normalize_endpoint(winner, &targets, svc, ep) else {
                    dropped += 1;
                    continue;
                };
                // The same instance known to two registries is one endpoint.
                if sources.len() == 1 || seen.insert((ep.address.clone(), ep.ports.clone())) {
                    endpoints.push(ep);
                }
            }
            if dropped > 0 {
                conflicts.push(Conflict {
                    hostname: hostname.clone(),
                    winner: winner_id.clone(),
                    other: id.clone(),
                    field: ConflictField::DroppedEndpoints,
                    detail: format!(
                        "{dropped} endpoint(s) of {id} serve none of the ports [{}] (its ports: [{}]) and are not served; name the port alike in both registries (Consul: the service meta key sextant-port-name), or listen on the winning port's target port",
                        describe_ports_and_targets(winner, &targets),
                        describe_ports(svc)
                    ),
                    endpoints_dropped: dropped,
                });
            }
        }
        let (chosen, namespaced, rule_conflicts) = self.rules_for(&hostname);
        conflicts.extend(rule_conflicts);
        if conflicts.is_empty() {
            self.conflicts.remove(&hostname);
        } else {
            self.conflicts.insert(hostname.clone(), conflicts);
        }
        let service = Service {
            endpoints,
            ..without_endpoints(winner)
        };
        let origins: Vec<RegistryId> = contributors.iter().map(|(id, _)| (*id).clone()).collect();
        let choice::Choice {
            rules,
            destination_policies,
            destination_ports,
        } = chosen;
        let old = self.merged.get(&hostname);
        let same_rules = |old: &MeshService| {
            old.rules == rules
                && old.destination_policies == destination_policies
                && old.destination_ports == destination_ports
                && old.namespaced == namespaced
        };
        if let Some(old) = old
            && old.service == service
            && old.origins == origins
            && same_rules(old)
        {
            return false;
        }
        let config_generation = match old {
            Some(old) if old.service.same_config(&service) && same_rules(old) => {
                old.config_generation
            }
            _ => generation,
        };
        let endpoints_generation = match old {
            Some(old) if old.service.endpoints == service.endpoints => old.endpoints_generation,
            _ => generation,
        };
        self.merged.insert(
            hostname,
            Arc::new(MeshService {
                service,
                origins,
                config_generation,
                endpoints_generation,
                rules,
                destination_policies,
                destination_ports,
                namespaced,
            }),
        );
        true
    }

    /// The hosts whose route rules send to `host`.
    fn senders_to(&self, host: &Hostname) -> Vec<Hostname> {
        let mut out = Vec::new();
        for shard in &self.rule_shards {
            for key in shard.by_destination.get(host).into_iter().flatten() {
                if let Some(r) = shard.rules.get(key) {
                    out.extend(r.hosts.iter().cloned());
                }
            }
        }
        out
    }
}

/// A service's port when it has exactly one; `None` for none or several;
/// the outer `None` when there is no such service.
fn single_port(ms: Option<&Arc<MeshService>>) -> Option<Option<u32>> {
    ms.map(|ms| match ms.service.ports.as_slice() {
        [only] => Some(only.port),
        _ => None,
    })
}

fn without_endpoints(s: &Service) -> Service {
    Service {
        hostname: s.hostname.clone(),
        namespace: s.namespace.clone(),
        labels: s.labels.clone(),
        ports: s.ports.clone(),
        addresses: s.addresses.clone(),
        endpoints: Vec::new(),
        export_to: s.export_to.clone(),
        resolution: s.resolution,
        location: s.location,
        identities: s.identities.clone(),
    }
}

fn same_ports(a: &Service, b: &Service) -> bool {
    fn key(s: &Service) -> Vec<(&str, u32, sextant_core::Protocol)> {
        let mut v: Vec<_> = s
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.protocol))
            .collect();
        v.sort();
        v
    }
    key(a) == key(b)
}

fn describe_ports(s: &Service) -> String {
    s.ports
        .iter()
        .map(|p| format!("{}:{}/{}", p.name, p.port, p.protocol))
        .collect::<Vec<_>>()
        .join(", ")
}

/// For each winning port, the target port all of the winner's endpoints
/// use for it, when they agree (a Kubernetes Service's `targetPort`, as its
/// pods resolve it).
fn winner_targets(winner: &Service) -> BTreeMap<&str, u32> {
    let mut targets = BTreeMap::new();
    for port in &winner.ports {
        let mut seen = winner.endpoints.iter().map(|ep| ep.target_port(port));
        if let Some(first) = seen.next()
            && seen.all(|t| t == first)
        {
            targets.insert(port.name.as_str(), first);
        }
    }
    targets
}

/// Re-expresses an endpoint of `own` (one registry's view of the service) in
/// terms of the winning port definitions. Each winning port is matched to
/// `own`'s port, in this order:
/// 1. of the same name;
/// 2. of the same number;
/// 3. on which this endpoint listens at the winning port's target port
///    (all of the winner's endpoints agree on it): a Consul instance on a
///    VM at 8080 serves a Kubernetes Service port 80 whose pods listen on
///    8080;
/// 4. the only one, when the winner has only one port too.
///
/// The endpoint serves the winning ports that match, with its own target
/// port for each. One that serves none of them is dropped, and the caller
/// reports it.
fn normalize_endpoint(
    winner: &Service,
    targets: &BTreeMap<&str, u32>,
    own: &Service,
    ep: &Endpoint,
) -> Option<Endpoint> {
    let mut ports = BTreeMap::new();
    for port in &winner.ports {
        let mine = own
            .port(&port.name)
            .or_else(|| own.ports.iter().find(|p| p.port == port.port))
            .or_else(|| {
                let target = targets.get(port.name.as_str())?;
                own.ports.iter().find(|p| ep.target_port(p) == *target)
            })
            .or_else(|| match (&winner.ports[..], &own.ports[..]) {
                ([_], [only]) => Some(only),
                _ => None,
            });
        if let Some(mine) = mine {
            ports.insert(port.name.clone(), ep.target_port(mine));
        }
    }
    if ports.is_empty() {
        return None;
    }
    Some(Endpoint {
        ports,
        ..ep.clone()
    })
}

fn describe_ports_and_targets(s: &Service, targets: &BTreeMap<&str, u32>) -> String {
    s.ports
        .iter()
        .map(|p| match targets.get(p.name.as_str()) {
            Some(t) => format!("{}:{} (target {t})", p.name, p.port),
            None => format!("{}:{}", p.name, p.port),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

mod choice;

#[cfg(test)]
mod tests;
