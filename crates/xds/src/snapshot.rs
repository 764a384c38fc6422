//! Encoded resources for one view, built incrementally from the previous
//! snapshot: only services that changed are translated and encoded again.

use imbl::OrdMap;
use std::sync::Arc;

use sextant_core::{Change, Hostname, MeshService, MeshView};

use crate::resource::{Resource, ResourceType};
use crate::route_table::{self, VirtualHostsPart};
use crate::translate::{self, Client, TranslateOptions, Unhonoured};

/// The resources of one type, by name.
#[derive(Clone, Debug, Default)]
pub struct TypeSet {
    /// Every resource of this type. A persistent map: the next snapshot
    /// shares it and copies only the paths to what changed.
    pub resources: OrdMap<Arc<str>, Arc<Resource>>,
    /// Names added, changed or removed since the previous snapshot.
    pub changed: Vec<Arc<str>>,
}

#[derive(Clone, Default)]
struct ServiceResources {
    by_type: [Vec<Arc<Resource>>; ResourceType::COUNT],
    /// The clusters whose form for gRPC clients differs from Envoy's
    /// ([`Form::Grpc`]), and those whose form for gRPC clients holding a
    /// workload certificate differs from that ([`Form::GrpcMesh`]).
    variants: [Vec<Arc<Resource>>; 2],
    /// The service's virtual hosts in the outbound route table, encoded
    /// (see [`route_table`]): the table is assembled from these without
    /// translating unchanged services again.
    vhosts: VirtualHostsPart,
    /// What gRPC clients cannot honour of the rules bound to the service.
    unhonoured: Arc<[Unhonoured]>,
    /// The service as the proxies of some namespaces see it, one per
    /// [`MeshService::namespaced`] variant, in its order.
    namespaced: Vec<Arc<ServiceResources>>,
}

impl ServiceResources {
    /// The resource `kind`/`name` of this service in `form`.
    fn get(&self, form: Form, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        if kind == ResourceType::Cluster {
            let variant = |i: usize| self.variants[i].iter().find(|r| &*r.name == name);
            let found = match form {
                Form::Envoy => None,
                Form::Grpc => variant(0),
                Form::GrpcMesh => variant(1).or_else(|| variant(0)),
            };
            if found.is_some() {
                return found;
            }
        }
        self.by_type[kind.index()].iter().find(|r| &*r.name == name)
    }

    /// Its assignments encoded again (endpoints moved), its variants' too.
    fn with_endpoints(
        &self,
        ms: &MeshService,
        servers: &translate::mtls::ServerModes,
        encoded: &mut usize,
    ) -> ServiceResources {
        let mut new = self.clone();
        new.by_type[ResourceType::Endpoint.index()] = encode_endpoints(ms, servers, encoded);
        new.namespaced = self
            .namespaced
            .iter()
            .enumerate()
            .map(|(i, v)| match ms.variant(i) {
                Some(vms) => Arc::new(v.with_endpoints(&vms, servers, encoded)),
                None => v.clone(),
            })
            .collect();
        new
    }
}

/// Every resource for one view, encoded once, shared by all connections.
pub struct Snapshot {
    /// Grows by one per snapshot; 0 is the placeholder before the first view.
    pub generation: u64,
    /// The generation of the view it was built from.
    pub view_generation: u64,
    /// Resources encoded while building this snapshot (the rest were reused).
    pub encoded: usize,
    types: [TypeSet; ResourceType::COUNT],
    /// Clusters as gRPC clients (with and without a workload certificate)
    /// receive them, where that differs.
    variants: [OrdMap<Arc<str>, Arc<Resource>>; 2],
    per_service: OrdMap<Hostname, Arc<ServiceResources>>,
    view: Arc<MeshView>,
    options: TranslateOptions,
    /// The outbound table's catch-all virtual host, encoded once.
    not_found_vhost: VirtualHostsPart,
    /// Which workloads take no mutual TLS (from the view's peer
    /// authentication rules): their endpoints are marked for plaintext.
    servers: Arc<translate::mtls::ServerModes>,
    /// TCP service ports left without a listener because another took
    /// their port: `HOST:PORT`.
    tcp_conflicts: Vec<String>,
    /// Explicit TCP listeners of services with namespaced rules, as each
    /// variant gives them: by name, one per variant.
    tcp_namespaced: Arc<TcpVariants>,
    /// Moves whenever what a per-proxy scope depends on may have changed:
    /// a service added, removed or reconfigured (its namespace, its route
    /// rule's destinations, its virtual hosts) or a scope rule. An
    /// endpoint-only change keeps it, so scopes computed for it still hold.
    pub topology_generation: u64,
    /// When the first change it carries reached the publisher (set by
    /// [`crate::publisher`]): convergence is measured from here.
    pub first_change: Option<tokio::time::Instant>,
    /// How the push that made it went (set by [`crate::publisher`]): what
    /// a trace of the push is drawn from.
    pub push: Option<PushTimes>,
}

/// When a push's steps happened, and what set it off.
#[derive(Clone, Copy, Debug)]
pub struct PushTimes {
    /// The first change of the batch reached the publisher.
    pub first_change: tokio::time::Instant,
    /// Translation began (the changes were coalesced until then).
    pub translate_started: tokio::time::Instant,
    /// The snapshot was published to the connections.
    pub published: tokio::time::Instant,
    /// It carried endpoint changes only (the fast path).
    pub endpoints_only: bool,
}

impl Snapshot {
    /// The placeholder served before the aggregator is ready: nothing.
    pub fn empty(options: TranslateOptions) -> Snapshot {
        Snapshot {
            generation: 0,
            view_generation: 0,
            encoded: 0,
            types: Default::default(),
            variants: Default::default(),
            per_service: OrdMap::new(),
            view: Arc::new(MeshView::default()),
            options,
            not_found_vhost: VirtualHostsPart::not_found(),
            servers: Arc::default(),
            tcp_conflicts: Vec::new(),
            tcp_namespaced: Arc::default(),
            topology_generation: 0,
            first_change: None,
            push: None,
        }
    }

    /// True once built from a real view.
    pub fn is_ready(&self) -> bool {
        self.generation > 0
    }

    /// The resources of one type.
    pub fn resources(&self, kind: ResourceType) -> &TypeSet {
        &self.types[kind.index()]
    }

    /// The view this snapshot was built from.
    pub fn view(&self) -> &Arc<MeshView> {
        &self.view
    }

    /// One resource.
    pub fn get(&self, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.types[kind.index()].resources.get(name)
    }

    /// One resource as a kind of client receives it.
    pub fn get_for(&self, form: Form, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        if kind == ResourceType::Cluster {
            let variant = match form {
                Form::Envoy => None,
                Form::Grpc => self.variants[0].get(name),
                Form::GrpcMesh => self.variants[1]
                    .get(name)
                    .or_else(|| self.variants[0].get(name)),
            };
            if let Some(r) = variant {
                return Some(r);
            }
        }
        self.get(kind, name)
    }

    /// TCP service ports left without an explicit-mode listener because an
    /// earlier host (by name) took their port: `HOST:PORT`.
    pub fn tcp_conflicts(&self) -> &[String] {
        &self.tcp_conflicts
    }

    /// The outbound route table with the virtual hosts of `visible` hosts
    /// only (and the catch-all): what a scoped proxy receives under the
    /// table's name. Equal content, equal version, as for the whole table.
    ///
    /// A host in `overrides` contributes the virtual hosts of that
    /// variant ([`MeshService::namespaced`]) instead of its own.
    pub fn outbound_route_for(
        &self,
        visible: &std::collections::BTreeSet<Hostname>,
        overrides: &std::collections::BTreeMap<Hostname, usize>,
    ) -> Resource {
        let parts = visible.iter().filter_map(|h| {
            let own = self.per_service.get(h)?;
            Some(match overrides.get(h) {
                Some(&i) => own.namespaced.get(i).map_or(&own.vhosts, |v| &v.vhosts),
                None => &own.vhosts,
            })
        });
        route_table::outbound(parts, &self.not_found_vhost)
    }

    /// Resource `kind`/`name` of `host` as variant `i` of its rules gives
    /// it ([`MeshService::namespaced`]), in `form`; `None` when that
    /// variant has no such resource.
    pub(crate) fn namespaced_get(
        &self,
        host: &str,
        i: usize,
        form: Form,
        kind: ResourceType,
        name: &str,
    ) -> Option<&Arc<Resource>> {
        if kind == ResourceType::Listener
            && let Some(per_variant) = self.tcp_namespaced.get(name)
        {
            return per_variant.get(i);
        }
        self.per_service
            .get(host)?
            .namespaced
            .get(i)?
            .get(form, kind, name)
    }

    /// The names of `host`'s resources of `kind`, its own (`None`) or
    /// variant `i`'s.
    pub(crate) fn names_of(
        &self,
        host: &str,
        variant: Option<usize>,
        kind: ResourceType,
    ) -> Vec<Arc<str>> {
        let Some(own) = self.per_service.get(host) else {
            return Vec::new();
        };
        let res = match variant {
            None => own,
            Some(i) => match own.namespaced.get(i) {
                Some(v) => v,
                None => return Vec::new(),
            },
        };
        res.by_type[kind.index()]
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    /// What gRPC clients cannot honour of the rules bound to `hostname`.
    pub fn unhonoured(&self, hostname: &str) -> &[Unhonoured] {
        self.per_service
            .get(hostname)
            .map_or(&[], |r| &r.unhonoured[..])
    }

    /// The snapshot for `view`, reusing every resource of services that did
    /// not change. Endpoint-only changes re-encode only assignments.
    pub fn next(&self, view: Arc<MeshView>) -> Snapshot {
        let mut types: [TypeSet; ResourceType::COUNT] = std::array::from_fn(|i| TypeSet {
            resources: self.types[i].resources.clone(),
            changed: Vec::new(),
        });
        let mut per_service = self.per_service.clone();
        let mut variants = self.variants.clone();
        let mut encoded = 0;
        let mut routes_dirty = !self.is_ready();
        // Peer authentication decides which endpoints take mutual TLS: when
        // it changes, every assignment is encoded again (rare, and only
        // changed ones reach proxies).
        let servers = if Arc::ptr_eq(&view.scopes, &self.view.scopes) {
            self.servers.clone()
        } else {
            let new = translate::mtls::ServerModes::new(&view.scopes, &self.options.root_namespace);
            if new == *self.servers {
                self.servers.clone()
            } else {
                Arc::new(new)
            }
        };
        let servers_changed = !Arc::ptr_eq(&servers, &self.servers);
        let mut translated = std::collections::BTreeSet::new();

        for (hostname, change) in view.changes_since(&self.view) {
            let old = per_service.remove(&hostname).unwrap_or_default();
            let Some(ms) = view.services.get(&hostname) else {
                // Removed.
                for (map, list) in variants.iter_mut().zip(&old.variants) {
                    for r in list {
                        map.remove(&r.name);
                    }
                }
                for (i, list) in old.by_type.iter().enumerate() {
                    for r in list {
                        if types[i].resources.remove(&r.name).is_some() {
                            types[i].changed.push(r.name.clone());
                        }
                    }
                }
                routes_dirty = true;
                continue;
            };
            let endpoints_only = change == Change::Endpoints
                && ms
                    .service
                    .endpoints
                    .iter()
                    .all(|e| e.address.ip().is_some());
            let new = if endpoints_only {
                old.with_endpoints(ms, &servers, &mut encoded)
            } else {
                routes_dirty = true;
                translate_service(ms, &self.options, &servers, &mut encoded)
            };
            if servers_changed {
                translated.insert(hostname.clone());
            }
            for (set, (old, new)) in types.iter_mut().zip(old.by_type.iter().zip(&new.by_type)) {
                replace(set, old, new);
            }
            let set = &mut types[ResourceType::Cluster.index()];
            for (map, (old, new)) in variants
                .iter_mut()
                .zip(old.variants.iter().zip(&new.variants))
            {
                for r in old {
                    if !new.iter().any(|n| n.name == r.name) {
                        map.remove(&r.name);
                        set.changed.push(r.name.clone());
                    }
                }
                for r in new {
                    let prev = map.insert(r.name.clone(), r.clone());
                    if prev.is_none_or(|p| p.version != r.version) {
                        set.changed.push(r.name.clone());
                    }
                }
            }

            namespaced_changes(&old, &new, &mut types);
            per_service.insert(hostname, Arc::new(new));
        }

        if servers_changed {
            for (hostname, ms) in &view.services {
                if translated.contains(hostname) {
                    continue;
                }
                let Some(old) = per_service.get(hostname).cloned() else {
                    continue;
                };
                let new = old.with_endpoints(ms, &servers, &mut encoded);
                let i = ResourceType::Endpoint.index();
                replace(&mut types[i], &old.by_type[i], &new.by_type[i]);
                namespaced_changes(&old, &new, &mut types);
                per_service.insert(hostname.clone(), Arc::new(new));
            }
        }

        // A name changed in several forms or variants is listed once.
        for set in &mut types {
            set.changed.sort_unstable();
            set.changed.dedup();
        }

        if routes_dirty {
            // The outbound table from each service's encoded virtual hosts:
            // a rule change translates its hosts only; the rest is copied.
            let parts = per_service.values().map(|s| &s.vhosts);
            let route = Arc::new(route_table::outbound(parts, &self.not_found_vhost));
            encoded += 1;
            let listener = match self.get(ResourceType::Listener, translate::OUTBOUND_HTTP) {
                Some(l) => l.clone(),
                None => {
                    encoded += 1;
                    let l = translate::outbound_listener(&self.options);
                    Arc::new(Resource::encode(
                        ResourceType::Listener,
                        translate::OUTBOUND_HTTP,
                        &l,
                    ))
                }
            };
            for r in [route, listener] {
                let set = &mut types[r.kind.index()];
                if set
                    .resources
                    .get(&r.name)
                    .is_none_or(|old| old.version != r.version)
                {
                    set.changed.push(r.name.clone());
                    set.resources.insert(r.name.clone(), r);
                }
            }
        }

        let (tcp_conflicts, tcp_namespaced) = if routes_dirty {
            let (conflicts, namespaced) = tcp_listeners(
                &self.options,
                &view,
                &mut types[ResourceType::Listener.index()],
                &mut encoded,
            );
            // Variants' listeners changed: their names are changes too.
            let set = &mut types[ResourceType::Listener.index()];
            for (name, per_variant) in namespaced.iter() {
                if self.tcp_namespaced.get(name).is_none_or(|old| {
                    old.len() != per_variant.len()
                        || old
                            .iter()
                            .zip(per_variant)
                            .any(|(a, b)| a.version != b.version)
                }) {
                    set.changed.push(name.clone());
                }
            }
            for name in self.tcp_namespaced.keys() {
                if !namespaced.contains_key(name) {
                    set.changed.push(name.clone());
                }
            }
            set.changed.sort_unstable();
            set.changed.dedup();
            (conflicts, Arc::new(namespaced))
        } else {
            (self.tcp_conflicts.clone(), self.tcp_namespaced.clone())
        };
        let topology_generation = if routes_dirty || !Arc::ptr_eq(&view.scopes, &self.view.scopes) {
            self.topology_generation + 1
        } else {
            self.topology_generation
        };
        if tcp_conflicts != self.tcp_conflicts && !tcp_conflicts.is_empty() {
            tracing::warn!(conflicts = ?tcp_conflicts, "TCP service ports that share a listener port (--tcp-port-offset): the first by hostname is served there, the others get no TCP listener");
        }

        Snapshot {
            generation: self.generation + 1,
            view_generation: view.generation,
            tcp_conflicts,
            tcp_namespaced,
            topology_generation,
            encoded,
            types,
            variants,
            per_service,
            view,
            options: self.options.clone(),
            not_found_vhost: self.not_found_vhost.clone(),
            servers,
            first_change: None,
            push: None,
        }
    }
}

/// Explicit mode's TCP listeners, from the whole view: each TCP or TLS
/// service port P gets `outbound_tcp_{P+offset}`, the first host by name
/// when several want one port (the others are returned as conflicts).
/// Unchanged listeners keep their resource; the set is a few small
/// messages per TCP port, encoded again on configuration changes only.
/// A service with namespaced rules also gets its listener as each variant
/// gives it (same name, same port).
fn tcp_listeners(
    options: &TranslateOptions,
    view: &MeshView,
    set: &mut TypeSet,
    encoded: &mut usize,
) -> (Vec<String>, TcpVariants) {
    // The options never change between snapshots: without an offset there
    // are no TCP listeners to add or remove, and no reason to look.
    let Some(offset) = options.tcp_port_offset else {
        return Default::default();
    };
    let mut wanted: std::collections::BTreeMap<Arc<str>, Arc<Resource>> = Default::default();
    let mut namespaced = TcpVariants::new();
    let mut conflicts = Vec::new();
    {
        // The outbound HTTP listener's port is taken: a TCP listener on
        // the same address and port would make Envoy reject both.
        let mut taken = std::collections::BTreeSet::from([u32::from(options.outbound_addr.port())]);
        for (host, ms) in &view.services {
            for port in &ms.service.ports {
                if !matches!(
                    port.protocol,
                    sextant_core::Protocol::Tcp | sextant_core::Protocol::Tls
                ) {
                    continue;
                }
                let bind = port.port + offset;
                if bind > 65_535 || !taken.insert(bind) {
                    conflicts.push(format!("{host}:{}", port.port));
                    continue;
                }
                let l = translate::tcp_listener(options, bind, ms, port);
                *encoded += 1;
                let r = Arc::new(
                    Resource::encode(ResourceType::Listener, l.name.as_str(), &l).owned_by(host),
                );
                let variants: Vec<Arc<Resource>> = (0..ms.namespaced.len())
                    .filter_map(|i| ms.variant(i))
                    .map(|vms| {
                        *encoded += 1;
                        let l = translate::tcp_listener(options, bind, &vms, port);
                        Arc::new(
                            Resource::encode(ResourceType::Listener, l.name.as_str(), &l)
                                .owned_by(host),
                        )
                    })
                    .collect();
                if !variants.is_empty() {
                    namespaced.insert(r.name.clone(), variants);
                }
                wanted.insert(r.name.clone(), r);
            }
        }
    }
    let existing: Vec<Arc<str>> = set
        .resources
        .keys()
        .filter(|n| n.starts_with(translate::OUTBOUND_TCP_PREFIX))
        .cloned()
        .collect();
    for name in existing {
        if !wanted.contains_key(&name) {
            set.resources.remove(&name);
            set.changed.push(name);
        }
    }
    for (name, r) in wanted {
        if set
            .resources
            .get(&name)
            .is_none_or(|old| old.version != r.version)
        {
            set.changed.push(name.clone());
            set.resources.insert(name, r);
        }
    }
    (conflicts, namespaced)
}

/// Explicit TCP listeners as the namespaced variants of their service's
/// rules give them: by name, one per variant.
type TcpVariants = std::collections::BTreeMap<Arc<str>, Vec<Arc<Resource>>>;

/// The form in which a connection receives clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// Envoy's (sidecars' mutual TLS is in their capture layout).
    Envoy,
    /// A proxyless gRPC client's: what gRPC cannot take is left out.
    Grpc,
    /// A proxyless gRPC client holding a workload certificate (node
    /// metadata `WORKLOAD_CERTS`): ISTIO_MUTUAL is served to it.
    GrpcMesh,
}

impl Form {
    /// The form for a client of kind `client`, holding a workload
    /// certificate or not.
    pub fn of(client: Client, certificate: bool) -> Form {
        match (client, certificate) {
            (Client::Envoy, _) => Form::Envoy,
            (Client::Grpc, false) => Form::Grpc,
            (Client::Grpc, true) => Form::GrpcMesh,
        }
    }
}

/// Records as changed the names of the namespaced variants' resources
/// (every form) that differ between `old` and `new`: a proxy whose lens
/// did not move looks only at the snapshot's changes.
fn namespaced_changes(
    old: &ServiceResources,
    new: &ServiceResources,
    types: &mut [TypeSet; ResourceType::COUNT],
) {
    if old.namespaced.is_empty() && new.namespaced.is_empty() {
        return;
    }
    /// (name, variant, form) to version, of type `i`.
    fn versions(
        res: &ServiceResources,
        i: usize,
    ) -> std::collections::BTreeMap<(&Arc<str>, usize, usize), &Arc<str>> {
        let mut out = std::collections::BTreeMap::new();
        for (v, r) in res.namespaced.iter().enumerate() {
            let forms: &[&Vec<Arc<Resource>>] = if i == ResourceType::Cluster.index() {
                &[&r.by_type[i], &r.variants[0], &r.variants[1]]
            } else {
                &[&r.by_type[i]]
            };
            for (form, list) in forms.iter().enumerate() {
                for x in list.iter() {
                    out.insert((&x.name, v, form), &x.version);
                }
            }
        }
        out
    }
    // A variant's virtual hosts moved: the outbound table of the proxies
    // that see it changed, whether or not the snapshot's own did.
    let digests = |r: &ServiceResources| -> Vec<u64> {
        r.namespaced.iter().map(|v| v.vhosts.digest()).collect()
    };
    if digests(old) != digests(new) {
        types[ResourceType::Route.index()]
            .changed
            .push(translate::OUTBOUND_HTTP.into());
    }
    for (i, set) in types.iter_mut().enumerate() {
        let (before, after) = (versions(old, i), versions(new, i));
        for (key, version) in &after {
            if before.get(key) != Some(version) {
                set.changed.push(key.0.clone());
            }
        }
        for key in before.keys() {
            if !after.contains_key(key) {
                set.changed.push(key.0.clone());
            }
        }
    }
}

/// Swaps one service's resources of one type, recording what changed.
fn replace(set: &mut TypeSet, old: &[Arc<Resource>], new: &[Arc<Resource>]) {
    for r in old {
        if !new.iter().any(|n| n.name == r.name) && set.resources.remove(&r.name).is_some() {
            set.changed.push(r.name.clone());
        }
    }
    for r in new {
        let same = set
            .resources
            .get(&r.name)
            .is_some_and(|o| o.version == r.version);
        if !same {
            set.changed.push(r.name.clone());
            set.resources.insert(r.name.clone(), r.clone());
        }
    }
}

fn encode_endpoints(
    ms: &MeshService,
    servers: &translate::mtls::ServerModes,
    encoded: &mut usize,
) -> Vec<Arc<Resource>> {
    let host = &ms.service.hostname;
    translate::load_assignments_with(ms, servers)
        .into_iter()
        .map(|cla| {
            *encoded += 1;
            Arc::new(
                Resource::encode(ResourceType::Endpoint, cla.cluster_name.clone(), &cla)
                    .owned_by(host),
            )
        })
        .collect()
}

fn translate_service(
    ms: &MeshService,
    options: &TranslateOptions,
    servers: &translate::mtls::ServerModes,
    encoded: &mut usize,
) -> ServiceResources {
    let host = &ms.service.hostname;
    let mut encode = |kind: ResourceType, name: &str, m: &dyn Encode| {
        *encoded += 1;
        Arc::new(m.resource(kind, name).owned_by(host))
    };
    let mut out = ServiceResources::default();
    let mut notes = Vec::new();
    let envoy = translate::clusters(ms, Client::Envoy, &mut notes);
    let mut grpc_notes = Vec::new();
    // Only a destination policy makes the two forms differ.
    let grpc = if ms.policy().is_some() {
        translate::clusters(ms, Client::Grpc, &mut grpc_notes)
    } else {
        Vec::new()
    };
    // A workload certificate changes only clusters under ISTIO_MUTUAL.
    let grpc_mesh = if translate::asks_istio_mutual(ms) {
        translate::grpc_mesh_clusters(ms, &options.trust_domain, &mut Vec::new())
    } else {
        Vec::new()
    };
    for (i, c) in envoy.iter().enumerate() {
        out.by_type[ResourceType::Cluster.index()].push(encode(ResourceType::Cluster, &c.name, c));
        let g = grpc.get(i).unwrap_or(c);
        if c != g {
            out.variants[0].push(encode(ResourceType::Cluster, &g.name, g));
        }
        if let Some(m) = grpc_mesh.get(i)
            && m != g
        {
            out.variants[1].push(encode(ResourceType::Cluster, &m.name, m));
        }
    }
    for (listener, route) in translate::grpc_listeners(ms, &mut grpc_notes) {
        out.by_type[ResourceType::Listener.index()].push(encode(
            ResourceType::Listener,
            &listener.name,
            &listener,
        ));
        out.by_type[ResourceType::Route.index()].push(encode(
            ResourceType::Route,
            &route.name,
            &route,
        ));
    }
    out.by_type[ResourceType::Endpoint.index()] = encode_endpoints(ms, servers, encoded);
    out.vhosts = VirtualHostsPart::encode(&translate::virtual_hosts(ms, &mut notes));
    grpc_notes.sort();
    grpc_notes.dedup();
    out.unhonoured = grpc_notes.into();
    out.namespaced = (0..ms.namespaced.len())
        .filter_map(|i| ms.variant(i))
        .map(|vms| Arc::new(translate_service(&vms, options, servers, encoded)))
        .collect();
    out
}

/// A message that becomes a resource (object-safe, for the one closure
/// that encodes every kind of a service's messages).
trait Encode {
    fn resource(&self, kind: ResourceType, name: &str) -> Resource;
}

impl<M: prost::Message> Encode for M {
    fn resource(&self, kind: ResourceType, name: &str) -> Resource {
        Resource::encode(kind, name, self)
    }
}

/// The placeholder answering a subscription to `name`, for the types that
/// get one (assignments and route configurations); see the crate docs.
pub fn placeholder(kind: ResourceType, name: &str) -> Option<Arc<Resource>> {
    let mut r = match kind {
        ResourceType::Endpoint => {
            Resource::encode(kind, name, &translate::empty_load_assignment(name))
        }
        ResourceType::Route => {
            Resource::encode(kind, name, &translate::empty_route_configuration(name))
        }
        ResourceType::Cluster | ResourceType::Listener | ResourceType::Secret => return None,
    };
    r.placeholder = true;
    Some(Arc::new(r))
}
