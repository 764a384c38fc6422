//! Per-proxy scoping: which hosts a proxy receives (Istio's `Sidecar`,
//! egress part).
//!
//! A proxy's namespace and labels (its [`NodeIdentity`], or the namespace
//! it proved) select a scope rule from the view ([`select`]); the rule's
//! `NAMESPACE/HOST` entries, or the mesh-wide default, give the hosts it
//! may see, plus the hosts its visible route rules send to. A [`Scope`]
//! filters every resource by the host it belongs to (clusters and
//! assignments `outbound|PORT|SUBSET|HOST`, gRPC listeners and routes
//! `HOST:PORT`, explicit TCP listeners: each resource's
//! [`Resource::owner`], recorded by translation) and replaces the
//! outbound route table with one holding only its hosts' virtual hosts.
//! The filter applies whatever a client subscribes to by name: a host out
//! of scope does not exist for it.
//!
//! A service's `exportTo` ([`sextant_core::Service::exported_to`]) narrows
//! every scope: a proxy of a namespace it is not exported to does not see
//! it, whatever its scope rule says and whichever route rule names it; and
//! where a service is exported to some namespaces only, proxies without a
//! scope rule get a scope too (everything but what is not exported to
//! them).
//!
//! Scopes depend on the view's services, their route rules and the scope
//! rules, not on endpoints: [`ScopeCache`] keeps them for a snapshot's
//! `topology_generation`, so an endpoint change costs nothing here, and
//! proxies with the same scope share one `Arc<Scope>` (and, through the
//! scope's digest in the plan key, their plans).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use sextant_core::rules::scope::{
    HostPattern, OutboundMode, ScopeHost, ScopeNamespace, Selected, select,
};
use sextant_core::{Hostname, MeshView, RuleKey};

use crate::generational::Generational;
use crate::resource::{Resource, ResourceType};
use crate::snapshot::{Form, Snapshot};
use crate::translate;
use crate::translate::capture::OutboundPolicy;

/// The mesh-wide scope settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeConfig {
    /// The namespace whose selector-less scope rule applies to every proxy
    /// without one of its own namespace (Istio's root namespace).
    pub root_namespace: String,
    /// The hosts a proxy sees when no scope rule applies. Default `*/*`:
    /// everything, as before scoping existed.
    pub default_hosts: Vec<ScopeHost>,
}

impl Default for ScopeConfig {
    fn default() -> Self {
        ScopeConfig {
            root_namespace: "istio-system".to_owned(),
            default_hosts: vec![ScopeHost {
                namespace: ScopeNamespace::Any,
                host: HostPattern::Any,
            }],
        }
    }
}

impl ScopeConfig {
    /// True when the default lets every host through.
    fn default_is_everything(&self) -> bool {
        self.default_hosts
            .iter()
            .any(|h| h.namespace == ScopeNamespace::Any && h.host == HostPattern::Any)
    }
}

/// The hosts one proxy may see, for one topology generation.
#[derive(Debug)]
pub struct Scope {
    /// What gave it: `scope NAMESPACE/NAME` or `default`.
    pub source: String,
    hosts: BTreeSet<Hostname>,
    /// xxh3 of the sorted hosts: equal sets, equal digests.
    pub digest: u64,
    /// The hosts whose rules differ for the proxy's namespace, and the
    /// variant of each ([`sextant_core::MeshService::namespaced`]): their
    /// resources, virtual hosts and capture layout come from it.
    overrides: BTreeMap<Hostname, usize>,
    /// The outbound route table with only these hosts, built once.
    route: OnceLock<Arc<Resource>>,
    /// Per type, the names only the variants of `overrides` have (not the
    /// snapshot's own resources), with their host: filled once, from the
    /// first snapshot asked (names do not move within a topology
    /// generation, only endpoints do).
    added: OnceLock<[BTreeMap<Arc<str>, Hostname>; ResourceType::COUNT]>,
    /// Its rule's outbound traffic policy (Istio's Sidecar
    /// `outboundTrafficPolicy`), for capture-mode proxies; `None`: the
    /// mesh's.
    pub outbound: Option<OutboundPolicy>,
}

impl PartialEq for Scope {
    fn eq(&self, other: &Scope) -> bool {
        self.digest == other.digest
            && self.hosts == other.hosts
            && self.outbound == other.outbound
            && self.overrides == other.overrides
    }
}

impl Scope {
    /// Hosts it lets through.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when it lets no host through.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether `host` is visible.
    pub fn allows(&self, host: &str) -> bool {
        self.hosts.contains(host)
    }

    /// One resource as a proxy of this scope sees it: `None` for a
    /// resource of a host out of scope; the scoped outbound table in place
    /// of the whole one.
    pub fn get<'a>(
        &'a self,
        snap: &'a Snapshot,
        form: Form,
        kind: ResourceType,
        name: &str,
    ) -> Option<&'a Arc<Resource>> {
        if kind == ResourceType::Route && name == translate::OUTBOUND_HTTP {
            snap.get(kind, name)?;
            return Some(
                self.route.get_or_init(|| {
                    Arc::new(snap.outbound_route_for(&self.hosts, &self.overrides))
                }),
            );
        }
        if !self.overrides.is_empty()
            && let Some(host) = self.added(snap)[kind.index()].get(name)
        {
            let i = self.overrides.get(host)?;
            return snap.namespaced_get(host, *i, form, kind, name);
        }
        // The host a resource belongs to is the one translation recorded
        // (the outbound HTTP listener belongs to none: what it routes to
        // is in its table).
        let r = snap.get_for(form, kind, name)?;
        match &r.owner {
            Some(host) if !self.hosts.contains(host) => None,
            Some(host) => match self.overrides.get(host) {
                Some(&i) => snap.namespaced_get(host, i, form, kind, name),
                None => Some(r),
            },
            None => Some(r),
        }
    }

    /// The variant of `host`'s rules this scope's proxies see, if not its
    /// own.
    pub fn variant_of(&self, host: &str) -> Option<usize> {
        self.overrides.get(host).copied()
    }

    /// The names of `kind` only the variants it sees have (sorted): what
    /// a wildcard subscription covers besides the snapshot's own.
    pub(crate) fn added_names(&self, snap: &Snapshot, kind: ResourceType) -> Vec<Arc<str>> {
        if self.overrides.is_empty() {
            return Vec::new();
        }
        self.added(snap)[kind.index()].keys().cloned().collect()
    }

    fn added(&self, snap: &Snapshot) -> &[BTreeMap<Arc<str>, Hostname>; ResourceType::COUNT] {
        self.added.get_or_init(|| {
            let mut added: [BTreeMap<Arc<str>, Hostname>; ResourceType::COUNT] = Default::default();
            for (host, &i) in &self.overrides {
                for kind in ResourceType::ALL {
                    for name in snap.names_of(host, Some(i), kind) {
                        if snap.get(kind, &name).is_none() {
                            added[kind.index()].insert(name, host.clone());
                        }
                    }
                }
            }
            added
        })
    }
}

/// The scope of a proxy of `namespace` with `labels` in `view`; `None`
/// when it sees everything (no rule applies and the default is `*/*`).
pub fn compute(
    view: &MeshView,
    config: &ScopeConfig,
    namespace: Option<&str>,
    labels: &sextant_core::Labels,
) -> Option<Scope> {
    let selected = select(&view.scopes, &config.root_namespace, namespace, labels);
    scope_of(view, config, namespace, selected)
}

/// The scope that `selected` (the rule in force, or the default) gives a
/// proxy of `namespace`.
fn scope_of(
    view: &MeshView,
    config: &ScopeConfig,
    namespace: Option<&str>,
    selected: Selected,
) -> Option<Scope> {
    let (source, entries, outbound) = match selected {
        Selected::Rule(r) => {
            let rule = r.as_scope();
            // No hosts of its own (a Sidecar that sets only its outbound
            // policy): the default hosts.
            let hosts = rule
                .map(|s| s.hosts.clone())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| config.default_hosts.clone());
            let outbound = rule.and_then(|s| s.outbound).map(|m| match m {
                OutboundMode::AllowAny => OutboundPolicy::Allow,
                OutboundMode::RegistryOnly => OutboundPolicy::Block,
            });
            (r.key.to_string(), hosts, outbound)
        }
        Selected::Default if config.default_is_everything() && !restricted(view) => return None,
        Selected::Default => ("default".to_owned(), config.default_hosts.clone(), None),
    };
    let visible = |ms: &sextant_core::MeshService| ms.service.exported_to(namespace);
    let overrides: BTreeMap<Hostname, usize> = view
        .services
        .iter()
        .filter(|(_, ms)| !ms.namespaced.is_empty() && visible(ms))
        .filter_map(|(h, ms)| Some((h.clone(), ms.variant_for(namespace)?)))
        .collect();
    let mut hosts: BTreeSet<Hostname> = view
        .services
        .iter()
        .filter(|(h, ms)| {
            visible(ms)
                && entries
                    .iter()
                    .any(|e| e.matches(namespace, &ms.service.namespace, h.as_str()))
        })
        .map(|(h, _)| h.clone())
        .collect();
    // The hosts its visible route rules send to (destinations, mirrors):
    // a route to a host the proxy could not reach would answer 503.
    let mut sent_to = Vec::new();
    for h in &hosts {
        let Some(ms) = view.services.get(h) else {
            continue;
        };
        let rules = match overrides.get(h) {
            Some(&i) => &ms.namespaced[i].rules,
            None => &ms.rules,
        };
        if let Some(rule) = rules.iter().find_map(|r| r.as_route()) {
            for d in rule.destinations() {
                if view.services.get(&d.host).is_some_and(|ms| visible(ms)) {
                    sent_to.push(d.host.clone());
                }
            }
        }
    }
    hosts.extend(sent_to);
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    for h in &hosts {
        digest.update(h.as_bytes());
        digest.update(b"\n");
    }
    digest.update(format!("{outbound:?}").as_bytes());
    for (h, i) in &overrides {
        digest.update(h.as_bytes());
        digest.update(&i.to_le_bytes());
    }
    Some(Scope {
        source,
        hosts,
        digest: digest.digest(),
        overrides,
        route: OnceLock::new(),
        added: OnceLock::new(),
        outbound,
    })
}

/// True when some service is not exported to every namespace or has
/// rules for some namespaces only: a scan of the view, which
/// [`ScopeCache`] does once per topology generation.
fn restricted(view: &MeshView) -> bool {
    view.services
        .values()
        .any(|ms| ms.service.is_restricted() || !ms.namespaced.is_empty())
}

/// What a scope depends on besides the view: the selected rule and the
/// proxy's namespace (`.` entries, `exportTo`).
type ScopeKey = (Option<RuleKey>, Option<String>);

/// Scopes shared by the proxies of one topology generation. Bounded
/// ([`MAX_CACHED_SCOPES`]): past it, scopes are computed and not kept.
pub struct ScopeCache(
    Generational<ScopeKey, Option<Arc<Scope>>>,
    /// Whether a service of the topology generation is exported to some
    /// namespaces only: (generation, answer).
    std::sync::Mutex<Option<(u64, bool)>>,
);

impl Default for ScopeCache {
    fn default() -> Self {
        ScopeCache(Generational::new(MAX_CACHED_SCOPES), Default::default())
    }
}

/// Distinct scopes one topology generation keeps.
pub const MAX_CACHED_SCOPES: usize = 4096;

impl ScopeCache {
    /// The scope of a proxy of `namespace` with `labels` in `snap`.
    pub fn get(
        &self,
        snap: &Snapshot,
        config: &ScopeConfig,
        namespace: Option<&str>,
        labels: &sextant_core::Labels,
    ) -> Option<Arc<Scope>> {
        let view = snap.view();
        if view.scopes.is_empty() && config.default_is_everything() && !self.restricted(snap) {
            return None;
        }
        let selected = select(&view.scopes, &config.root_namespace, namespace, labels);
        let rule = match &selected {
            Selected::Rule(r) => Some(r.key.clone()),
            Selected::Default => None,
        };
        let key = (rule, namespace.map(str::to_owned));
        self.0.get_or(snap.topology_generation, key, || {
            scope_of(view, config, namespace, selected).map(Arc::new)
        })
    }

    /// Whether `snap` has a service exported to some namespaces only
    /// (looked at once per topology generation).
    fn restricted(&self, snap: &Snapshot) -> bool {
        let mut known = self.1.lock().unwrap_or_else(|p| p.into_inner());
        match *known {
            Some((generation, answer)) if generation == snap.topology_generation => answer,
            _ => {
                let answer = restricted(snap.view());
                *known = Some((snap.topology_generation, answer));
                answer
            }
        }
    }

    /// Scopes kept now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
