//! What a router proxy receives in place of the explicit listeners and
//! routes: the listeners and route tables of the gateway it serves (node
//! metadata `GATEWAY`, see [`crate::translate::gateway`]), with the route
//! rules bound to it. Clusters and assignments are the snapshot's, through
//! the router's scope like any proxy's.
//!
//! A set depends on the view's gateways and route rules, not on
//! endpoints: it is built once per (topology generation, gateway, bind
//! address, scope) and shared by the gateway's replicas.

use std::sync::Arc;

use sextant_core::MeshView;
use sextant_core::rules::gateway::{binds, credential_ref, names_gateway};
use sextant_core::rules::{GatewayListener, GatewayProtocol, RuleKind};

use crate::capture::ResourceSet;
use crate::generational::Generational;
use crate::resource::{Resource, ResourceType};
use crate::scope::Scope;
use crate::snapshot::Snapshot;
use crate::translate::gateway as layout;

/// One gateway's listeners and route tables, as its routers receive them.
#[derive(Debug)]
pub struct RouterSet {
    set: Arc<ResourceSet>,
    /// `NAMESPACE/NAME` of the gateway.
    pub gateway: String,
    /// Why a bound rule, a host or a listener is not served (a rule of a
    /// namespace the listener does not allow, a name another rule holds).
    pub problems: Arc<[String]>,
}

impl PartialEq for RouterSet {
    fn eq(&self, other: &RouterSet) -> bool {
        self.gateway == other.gateway && ResourceSet::same(&self.set, &other.set)
    }
}

impl RouterSet {
    /// One of its resources.
    pub fn get(&self, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.set.get(kind, name)
    }

    /// Its names of `kind`, sorted.
    pub fn names(&self, kind: ResourceType) -> Vec<Arc<str>> {
        self.set.names(kind).cloned().collect()
    }

    /// Equal sets, equal digests.
    pub fn digest(&self) -> u64 {
        self.set.digest()
    }
}

/// What a router set is built for besides the view: the gateway, where
/// it binds, and the router's scope.
type RouterKey = (String, String, layout::GatewayAddress, u64);

/// Router sets shared by the routers of one topology generation.
pub struct RouterCache(Generational<RouterKey, Arc<RouterSet>>);

impl Default for RouterCache {
    fn default() -> Self {
        RouterCache(Generational::new(MAX_CACHED_ROUTER_SETS))
    }
}

/// Distinct router sets one topology generation keeps.
pub const MAX_CACHED_ROUTER_SETS: usize = 1024;

impl RouterCache {
    /// The set of a router of gateway `namespace/name`, listening at `at`,
    /// with `scope`, in `snap`.
    pub fn get(
        &self,
        snap: &Snapshot,
        (namespace, name): (&str, &str),
        at: layout::GatewayAddress,
        scope: Option<&Arc<Scope>>,
    ) -> Arc<RouterSet> {
        let key = (
            namespace.to_owned(),
            name.to_owned(),
            at,
            scope.map_or(0, |s| s.digest),
        );
        self.0.get_or(snap.topology_generation, key, || {
            Arc::new(router_set(snap.view(), (namespace, name), at))
        })
    }
}

fn router_set(
    view: &MeshView,
    (namespace, name): (&str, &str),
    at: layout::GatewayAddress,
) -> RouterSet {
    let bind = at.bind;
    let gateway = format!("{namespace}/{name}");
    let mut set = ResourceSet::default();
    let mut problems = Vec::new();
    let Some(gw) = view
        .scopes
        .iter()
        .filter(|r| r.key.kind == RuleKind::Gateway)
        .find(|r| r.key.namespace == namespace && r.key.name == name)
        .and_then(|r| r.as_gateway())
    else {
        problems.push(format!("no gateway {gateway}: nothing to listen on"));
        return RouterSet {
            set: Arc::new(set),
            gateway,
            problems: problems.into(),
        };
    };
    // The route rules bound to it, in precedence order (the view's).
    let bound: Vec<_> = view
        .scopes
        .iter()
        .filter(|r| {
            r.as_route().is_some_and(|route| {
                route
                    .gateways
                    .iter()
                    .any(|g| names_gateway(g, &r.key.namespace, namespace, name))
            })
        })
        .collect();
    let mut notes = Vec::new();
    // The virtual hosts a listener serves: the bound rules' names it
    // accepts, each name to the first rule that has it.
    let mut vhosts_of = |listener: &GatewayListener, problems: &mut Vec<String>| {
        let mut taken = std::collections::BTreeMap::new();
        let mut vhosts = Vec::new();
        for rule in &bound {
            // A rule with no HTTP route takes no name here (its TLS or TCP
            // routes bind to those listeners).
            let Some(route) = rule.as_route().filter(|r| !r.http.is_empty()) else {
                continue;
            };
            if !route
                .gateways
                .iter()
                .any(|g| binds(g, &rule.key.namespace, namespace, name, listener))
            {
                // Bound to another listener or port of the gateway.
                continue;
            }
            if !listener.allows(namespace, &rule.key.namespace) {
                problems.push(format!(
                    "listener {}: {} may not bind (allowedRoutes: the gateway's namespace only)",
                    listener.name, rule.key
                ));
                continue;
            }
            for host in &route.hosts {
                let Some(domain) = listener.accepts(host.as_str()) else {
                    continue;
                };
                match taken.get(&domain) {
                    Some(holder) => problems.push(format!(
                        "listener {}: {domain} is served by {holder}; {} is ignored for it",
                        listener.name, rule.key
                    )),
                    None => {
                        taken.insert(domain.clone(), rule.key.to_string());
                        vhosts.push(layout::gateway_virtual_host(
                            &domain,
                            listener.port,
                            rule,
                            view,
                            namespace,
                            &mut notes,
                        ));
                    }
                }
            }
        }
        vhosts
    };
    // The listeners of each port (HTTP, HTTPS or TLS listeners share one
    // by hostname).
    let mut ports: std::collections::BTreeMap<u32, Vec<&GatewayListener>> = Default::default();
    for listener in &gw.listeners {
        ports.entry(listener.port).or_default().push(listener);
    }
    for (port, listeners) in ports {
        let Some(listen) = at.listen(port) else {
            problems.push(format!(
                "port {port}: with the router's port offset {} it is past 65535: not served",
                at.port_offset
            ));
            continue;
        };
        let https: Vec<&GatewayListener> = listeners
            .iter()
            .copied()
            .filter(|l| l.protocol == GatewayProtocol::Https)
            .collect();
        if let Some(first) = listeners
            .iter()
            .find(|l| matches!(l.protocol, GatewayProtocol::Tls | GatewayProtocol::Tcp))
        {
            let tls = first.protocol == GatewayProtocol::Tls;
            let chains = l4_chains(
                &listeners,
                &bound,
                port,
                view,
                (namespace, name),
                &mut problems,
            );
            let l = layout::gateway_l4_listener(bind, listen, port, tls, &chains);
            set.add(ResourceType::Listener, &l.name.clone(), &l);
            continue;
        }
        if https.is_empty() {
            // HTTP listeners of one port share its table: a name goes to
            // the most specific listener that accepts it (an exact
            // hostname, then the longest wildcard, then none).
            let mut ordered = listeners.clone();
            ordered.sort_by_key(|l| match l.hostname.as_deref() {
                Some(h) if !h.starts_with('*') => (0, std::cmp::Reverse(h.len())),
                Some(h) => (1, std::cmp::Reverse(h.len())),
                None => (2, std::cmp::Reverse(0)),
            });
            let mut seen = std::collections::BTreeSet::new();
            let mut vhosts = Vec::new();
            for listener in ordered {
                for vh in vhosts_of(listener, &mut problems) {
                    if seen.insert(vh.domains.first().cloned().unwrap_or_default()) {
                        vhosts.push(vh);
                    }
                }
            }
            let l = layout::gateway_listener(bind, listen, port);
            set.add(ResourceType::Listener, &l.name.clone(), &l);
            let r = layout::gateway_route(layout::gateway_route_name(port), vhosts, &gateway);
            set.add(ResourceType::Route, &r.name.clone(), &r);
            continue;
        }
        // HTTPS: a chain per listener whose credentials all exist; one
        // missing fails that listener alone.
        let mut chains = Vec::new();
        for listener in https {
            let refs = listener.tls.iter().flat_map(|t| t.certificate_refs.iter());
            let mut credentials = Vec::new();
            let mut missing = Vec::new();
            for r in refs {
                let (ns, name) = credential_ref(r, namespace);
                let found = view
                    .scopes
                    .iter()
                    .filter(|c| c.key.kind == RuleKind::Credential)
                    .find(|c| c.key.namespace == ns && c.key.name == name)
                    .and_then(|c| c.as_credential());
                let sds_name = format!("{ns}/{name}");
                match found {
                    // A router serves credentials of its gateway's
                    // namespace only (Istio's credentialName rule), or
                    // those granted to it (a ReferenceGrant).
                    Some(c) if ns != namespace && !c.granted_to.iter().any(|g| g == namespace) => {
                        missing.push(format!(
                            "{sds_name} (of another namespace than the gateway's, and not granted to it)"
                        ))
                    }
                    Some(c) => {
                        let secret = layout::tls_secret(
                            &sds_name,
                            &c.certificate_chain,
                            c.private_key.expose(),
                        );
                        set.add(ResourceType::Secret, &sds_name, &secret);
                        credentials.push(sds_name);
                    }
                    None => missing.push(sds_name),
                }
            }
            if !missing.is_empty() || credentials.is_empty() {
                problems.push(format!(
                    "listener {}: credential {} not found: the listener is not served",
                    listener.name,
                    missing.join(", ")
                ));
                continue;
            }
            let route = layout::gateway_https_route_name(port, &listener.name);
            let vhosts = vhosts_of(listener, &mut problems);
            let r = layout::gateway_route(route.clone(), vhosts, &gateway);
            set.add(ResourceType::Route, &r.name.clone(), &r);
            chains.push(layout::HttpsChain {
                name: listener.name.clone(),
                server_names: listener.hostname.iter().cloned().collect(),
                credentials,
                route,
            });
        }
        if chains.is_empty() {
            continue;
        }
        let l = layout::gateway_https_listener(bind, listen, port, &chains);
        set.add(ResourceType::Listener, &l.name.clone(), &l);
    }
    RouterSet {
        set: Arc::new(set),
        gateway,
        problems: problems.into(),
    }
}

/// The chains of a port's TLS or TCP listeners: for TLS, one per server
/// name a bound rule's TLS routes take there (the first rule in order
/// holds a name); for TCP, the first bound rule with a TCP route.
fn l4_chains(
    listeners: &[&GatewayListener],
    bound: &[&Arc<sextant_core::Rule>],
    port: u32,
    view: &MeshView,
    (namespace, name): (&str, &str),
    problems: &mut Vec<String>,
) -> Vec<layout::L4Chain> {
    let mut chains = Vec::new();
    let mut taken: std::collections::BTreeMap<String, String> = Default::default();
    for listener in listeners {
        for rule in bound {
            let Some(route) = rule.as_route() else {
                continue;
            };
            let wants = match listener.protocol {
                GatewayProtocol::Tls => !route.tls.is_empty(),
                _ => !route.tcp.is_empty(),
            };
            let here = route
                .gateways
                .iter()
                .any(|g| binds(g, &rule.key.namespace, namespace, name, listener));
            if !wants || !here {
                continue;
            }
            if !listener.allows(namespace, &rule.key.namespace) {
                problems.push(format!(
                    "listener {}: {} may not bind (allowedRoutes: the gateway's namespace only)",
                    listener.name, rule.key
                ));
                continue;
            }
            // The names its TLS routes take at this port; TCP: any.
            let names: Vec<Option<String>> = if listener.protocol == GatewayProtocol::Tls {
                route
                    .tls
                    .iter()
                    .flat_map(|t| t.matches.iter())
                    .filter(|m| m.port.is_none_or(|p| p == port))
                    .flat_map(|m| m.sni_hosts.iter())
                    .filter_map(|h| listener.accepts(h))
                    .map(Some)
                    .collect()
            } else {
                vec![None]
            };
            for name in names {
                let key = name.clone().unwrap_or_default();
                if let Some(holder) = taken.get(&key) {
                    if holder != &rule.key.to_string() {
                        problems.push(format!(
                            "listener {}: {} is served by {holder}; {} is ignored for it",
                            listener.name,
                            name.as_deref().unwrap_or("every connection"),
                            rule.key
                        ));
                    }
                    continue;
                }
                let Some(targets) =
                    layout::gateway_l4_targets(rule, port, name.as_deref(), view, namespace)
                else {
                    continue;
                };
                taken.insert(key, rule.key.to_string());
                chains.push(layout::L4Chain {
                    name: match &name {
                        Some(n) => format!("{}:{n}", listener.name),
                        None => listener.name.clone(),
                    },
                    server_names: name.into_iter().collect(),
                    targets,
                });
            }
        }
    }
    chains
}
