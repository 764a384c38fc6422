//! The merged view of every registry: what the translator turns into
//! proxy configuration.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::model::{Hostname, Service};
use crate::registry::RegistryId;

/// One merged service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MeshService {
    /// The merged service. Ports, namespace, labels and addresses come from
    /// the first registry in `origins`; endpoints come from every origin
    /// (union) or the first one only, depending on the merge mode. Every
    /// endpoint's `ports` is complete: it lists exactly the service ports the
    /// endpoint serves, with its target port for each.
    #[serde(flatten)]
    pub service: Service,
    /// The registries that report this hostname, in priority order.
    pub origins: Vec<RegistryId>,
    /// The view generation in which anything but the endpoints last changed.
    pub config_generation: u64,
    /// The view generation in which the endpoints last changed.
    pub endpoints_generation: u64,
    /// The traffic rules in force for this hostname: at most one route rule
    /// and one destination policy (others naming it are conflicts). A
    /// change to them is a configuration change: it moves
    /// `config_generation`, so exactly the services a rule binds to are
    /// translated again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Arc<crate::rules::Rule>>,
    /// The destination policies in force for the other hosts this
    /// service's route rule sends to: a policy's consistent-hash key goes
    /// into the routes that send to its host, so a change to one of them
    /// is a configuration change of this service too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_policies: Vec<Arc<crate::rules::Rule>>,
    /// The one port of each other host its route rule sends to that has
    /// exactly one: a destination naming no port goes there (Istio: a
    /// single-port service needs no port in a destination), whatever port
    /// the request came in on. A change to it is a configuration change.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub destination_ports: BTreeMap<Hostname, u32>,
    /// The rules in force for the proxies of some namespaces only, where
    /// they differ from the fields above (which hold for every other
    /// proxy): a rule exported to a few namespaces (`exportTo`), a rule
    /// of the proxy's own namespace before the others, a destination
    /// policy of the proxy's namespace or the service's before the rest
    /// (see `sextant-aggregate`'s merge rules). Empty for most services;
    /// each namespace in at most one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaced: Vec<Arc<NamespacedRules>>,
}

/// The rules some namespaces' proxies see for one service, in place of
/// [`MeshService`]'s own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamespacedRules {
    /// The namespaces whose proxies see these rules.
    pub namespaces: std::collections::BTreeSet<String>,
    /// As [`MeshService::rules`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Arc<crate::rules::Rule>>,
    /// As [`MeshService::destination_policies`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_policies: Vec<Arc<crate::rules::Rule>>,
    /// As [`MeshService::destination_ports`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub destination_ports: BTreeMap<Hostname, u32>,
}

impl MeshService {
    /// Which of [`MeshService::namespaced`] the proxies of `namespace`
    /// see; `None`: the service's own rules.
    pub fn variant_for(&self, namespace: Option<&str>) -> Option<usize> {
        let ns = namespace?;
        self.namespaced
            .iter()
            .position(|v| v.namespaces.contains(ns))
    }

    /// The service as the proxies of variant `i` see it: its rules
    /// replaced by [`MeshService::namespaced`]`[i]`'s (and no variants).
    /// `None` when there is no such variant.
    pub fn variant(&self, i: usize) -> Option<MeshService> {
        let v = self.namespaced.get(i)?;
        Some(MeshService {
            service: self.service.clone(),
            origins: self.origins.clone(),
            config_generation: self.config_generation,
            endpoints_generation: self.endpoints_generation,
            rules: v.rules.clone(),
            destination_policies: v.destination_policies.clone(),
            destination_ports: v.destination_ports.clone(),
            namespaced: Vec::new(),
        })
    }

    /// Every rule bound to it for some proxies: its own, then each
    /// variant's (a rule may appear more than once).
    pub fn all_rules(&self) -> impl Iterator<Item = &Arc<crate::rules::Rule>> {
        self.rules
            .iter()
            .chain(self.namespaced.iter().flat_map(|v| v.rules.iter()))
    }

    /// The route rule in force, if any.
    pub fn route_rule(&self) -> Option<(&crate::rules::Rule, &crate::rules::RouteRule)> {
        self.rules
            .iter()
            .find_map(|r| r.as_route().map(|route| (&**r, route)))
    }

    /// The destination policy in force, if any.
    pub fn policy(&self) -> Option<(&crate::rules::Rule, &crate::rules::DestinationPolicy)> {
        self.rules
            .iter()
            .find_map(|r| r.as_policy().map(|p| (&**r, p)))
    }

    /// The policy in force for `host`: this service's own, or one of
    /// [`MeshService::destination_policies`].
    pub fn policy_of(
        &self,
        host: &str,
    ) -> Option<(&crate::rules::Rule, &crate::rules::DestinationPolicy)> {
        if host == self.service.hostname.as_str() {
            return self.policy();
        }
        self.destination_policies.iter().find_map(|r| {
            r.as_policy()
                .filter(|p| p.host.as_str() == host)
                .map(|p| (&**r, p))
        })
    }
}

/// Two registries disagree about a service they both report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The service.
    pub hostname: Hostname,
    /// The registry whose definition is used.
    pub winner: RegistryId,
    /// The registry that disagrees.
    pub other: RegistryId,
    /// What differs.
    pub field: ConflictField,
    /// Both values, readable.
    pub detail: String,
    /// For [`ConflictField::DroppedEndpoints`]: how many of `other`'s
    /// endpoints are not served.
    #[serde(skip_serializing_if = "is_zero")]
    pub endpoints_dropped: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The part of a service on which two registries disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictField {
    /// Port names, numbers or protocols.
    Ports,
    /// The namespace.
    Namespace,
    /// Endpoints of `other` that serve none of the winning ports, so are
    /// not served (see `sextant-aggregate`'s merge rules).
    DroppedEndpoints,
    /// Two route rules name the host; one is in force (see the detail).
    RouteRule,
    /// Two destination policies name the host; one is in force.
    DestinationPolicy,
}

impl ConflictField {
    /// Its name as `/debug/registryz` writes it (`ports`, `route_rule`...).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictField::Ports => "ports",
            ConflictField::Namespace => "namespace",
            ConflictField::DroppedEndpoints => "dropped_endpoints",
            ConflictField::RouteRule => "route_rule",
            ConflictField::DestinationPolicy => "destination_policy",
        }
    }
}

/// The merged view, published as `Arc<MeshView>` whenever it changes.
///
/// Cloning a view is cheap: services are shared by reference count, and an
/// unchanged service is the same `Arc` from one generation to the next.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MeshView {
    /// Grows by one with every publication. Generation 0 is the placeholder
    /// that exists before the aggregator is ready; nothing should be served
    /// from it.
    pub generation: u64,
    /// Every service, by hostname. A persistent map: the next view shares
    /// it and copies only the paths to the services that changed.
    pub services: imbl::OrdMap<Hostname, Arc<MeshService>>,
    /// Every disagreement between registries, sorted by hostname.
    pub conflicts: Arc<[Conflict]>,
    /// Every per-proxy rule, in precedence order: rule source priority, then
    /// namespace and name: scope and peer authentication rules, which bind
    /// to no service; the xDS server picks those in force per proxy
    /// ([`crate::rules::scope::select`], [`crate::rules::peer::select`]).
    /// The same `Arc` while none of them changes.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub scopes: Arc<[Arc<crate::rules::Rule>]>,
    /// The generation in which `scopes` last changed (0: never): a
    /// proxy that settled on a view at least this new holds every
    /// per-proxy rule as it stands.
    pub scopes_generation: u64,
}

/// How one service changed between two views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// New in the newer view.
    Added,
    /// Gone from the newer view.
    Removed,
    /// Ports, labels, namespace, addresses or the rules bound to it changed
    /// (endpoints may have too).
    Config,
    /// Only endpoints changed: proxies need new endpoints, nothing else.
    Endpoints,
}

impl MeshView {
    /// True once the aggregator has published a real view.
    pub fn is_ready(&self) -> bool {
        self.generation > 0
    }

    /// Number of endpoints across all services.
    pub fn endpoint_count(&self) -> usize {
        self.services
            .values()
            .map(|s| s.service.endpoints.len())
            .sum()
    }

    /// The services that differ between `older` and `self`, in hostname order.
    ///
    /// Unchanged services are the same `Arc`, so this is a walk over both maps
    /// with pointer comparisons, cheap even for large views.
    pub fn changes_since(&self, older: &MeshView) -> Vec<(Hostname, Change)> {
        let mut out = Vec::new();
        let mut old = older.services.iter().peekable();
        let mut new = self.services.iter().peekable();
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            match order {
                Ordering::Less => {
                    if let Some((h, _)) = old.next() {
                        out.push((h.clone(), Change::Removed));
                    }
                }
                Ordering::Greater => {
                    if let Some((h, _)) = new.next() {
                        out.push((h.clone(), Change::Added));
                    }
                }
                Ordering::Equal => {
                    if let (Some((h, a)), Some((_, b))) = (old.next(), new.next()) {
                        if Arc::ptr_eq(a, b) || a == b {
                            continue;
                        }
                        // Rules bound to a service are part of its
                        // configuration: a rule change is never endpoint-only.
                        let change = if a.service.same_config(&b.service)
                            && a.rules == b.rules
                            && a.destination_policies == b.destination_policies
                            && a.destination_ports == b.destination_ports
                            && a.namespaced == b.namespaced
                        {
                            Change::Endpoints
                        } else {
                            Change::Config
                        };
                        out.push((h.clone(), change));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_field_is_named_as_its_json_says() {
        for f in [
            ConflictField::Ports,
            ConflictField::Namespace,
            ConflictField::DroppedEndpoints,
            ConflictField::RouteRule,
            ConflictField::DestinationPolicy,
        ] {
            assert_eq!(serde_json::to_value(f).expect("json"), f.as_str());
        }
    }
    use crate::model::{Endpoint, Protocol};

    fn ms(h: &str, port: u32, endpoints: &[&str]) -> Arc<MeshService> {
        let mut s = Service::new(h).with_port("http", port, Protocol::Http);
        for e in endpoints {
            s = s.with_endpoint(Endpoint::new(e.parse().expect("addr")));
        }
        Arc::new(MeshService {
            service: s,
            origins: vec!["memory/a".into()],
            config_generation: 1,
            endpoints_generation: 1,
            rules: Vec::new(),
            destination_policies: Vec::new(),
            destination_ports: BTreeMap::new(),
            namespaced: Vec::new(),
        })
    }

    fn view(services: Vec<Arc<MeshService>>) -> MeshView {
        MeshView {
            generation: 1,
            services: services
                .into_iter()
                .map(|s| (s.service.hostname.clone(), s))
                .collect(),
            conflicts: Arc::new([]),
            scopes: Arc::new([]),
            scopes_generation: 0,
        }
    }

    #[test]
    fn changes_since_classifies_each_service() {
        let same = ms("same.svc", 80, &["10.0.0.1"]);
        let old = view(vec![
            ms("a.svc", 80, &["10.0.0.1"]),
            ms("b.svc", 80, &["10.0.0.1"]),
            ms("gone.svc", 80, &[]),
            same.clone(),
        ]);
        let new = view(vec![
            ms("a.svc", 80, &["10.0.0.2"]),
            ms("b.svc", 81, &["10.0.0.1"]),
            ms("c.svc", 80, &[]),
            same,
        ]);
        assert_eq!(
            new.changes_since(&old),
            vec![
                ("a.svc".into(), Change::Endpoints),
                ("b.svc".into(), Change::Config),
                ("c.svc".into(), Change::Added),
                ("gone.svc".into(), Change::Removed),
            ]
        );
        assert_eq!(new.changes_since(&new), vec![]);
    }
}
