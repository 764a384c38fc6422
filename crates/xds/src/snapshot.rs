//! Encoded resources for one view, built incrementally from the previous
//! snapshot: only services that changed are translated and encoded again.

use std::collections::BTreeMap;
use std::sync::Arc;

use sextant_core::{Change, Hostname, MeshService, MeshView};

use crate::resource::{Resource, ResourceType};
use crate::translate::{self, TranslateOptions};

/// The resources of one type, by name.
#[derive(Clone, Debug, Default)]
pub struct TypeSet {
    /// Every resource of this type.
    pub resources: BTreeMap<Arc<str>, Arc<Resource>>,
    /// Names added, changed or removed since the previous snapshot.
    pub changed: Vec<Arc<str>>,
}

#[derive(Clone, Default)]
struct ServiceResources {
    by_type: [Vec<Arc<Resource>>; 4],
}

/// Every resource for one view, encoded once, shared by all connections.
pub struct Snapshot {
    /// Grows by one per snapshot; 0 is the placeholder before the first view.
    pub generation: u64,
    /// The generation of the view it was built from.
    pub view_generation: u64,
    /// Resources encoded while building this snapshot (the rest were reused).
    pub encoded: usize,
    types: [TypeSet; 4],
    per_service: BTreeMap<Hostname, Arc<ServiceResources>>,
    view: Arc<MeshView>,
    options: TranslateOptions,
}

impl Snapshot {
    /// The placeholder served before the aggregator is ready: nothing.
    pub fn empty(options: TranslateOptions) -> Snapshot {
        Snapshot {
            generation: 0,
            view_generation: 0,
            encoded: 0,
            types: Default::default(),
            per_service: BTreeMap::new(),
            view: Arc::new(MeshView::default()),
            options,
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

    /// The snapshot for `view`, reusing every resource of services that did
    /// not change. Endpoint-only changes re-encode only assignments.
    pub fn next(&self, view: Arc<MeshView>) -> Snapshot {
        let mut types: [TypeSet; 4] = std::array::from_fn(|i| TypeSet {
            resources: self.types[i].resources.clone(),
            changed: Vec::new(),
        });
        let mut per_service = self.per_service.clone();
        let mut encoded = 0;
        let mut routes_dirty = !self.is_ready();

        for (hostname, change) in view.changes_since(&self.view) {
            let old = per_service.remove(&hostname).unwrap_or_default();
            let Some(ms) = view.services.get(&hostname) else {
                // Removed.
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
                let mut new = (*old).clone();
                new.by_type[ResourceType::Endpoint.index()] = encode_endpoints(ms, &mut encoded);
                new
            } else {
                routes_dirty = true;
                translate_service(ms, &mut encoded)
            };
            for (set, (old, new)) in types.iter_mut().zip(old.by_type.iter().zip(&new.by_type)) {
                replace(set, old, new);
            }
            per_service.insert(hostname, Arc::new(new));
        }

        if routes_dirty {
            let route = translate::outbound_route(view.services.values().map(|s| &**s));
            let route = Arc::new(Resource::encode(
                ResourceType::Route,
                translate::OUTBOUND_HTTP,
                &route,
            ));
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

        Snapshot {
            generation: self.generation + 1,
            view_generation: view.generation,
            encoded,
            types,
            per_service,
            view,
            options: self.options.clone(),
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

fn encode_endpoints(ms: &MeshService, encoded: &mut usize) -> Vec<Arc<Resource>> {
    translate::load_assignments(ms)
        .into_iter()
        .map(|cla| {
            *encoded += 1;
            Arc::new(Resource::encode(
                ResourceType::Endpoint,
                cla.cluster_name.clone(),
                &cla,
            ))
        })
        .collect()
}

fn translate_service(ms: &MeshService, encoded: &mut usize) -> ServiceResources {
    let mut out = ServiceResources::default();
    for c in translate::clusters(ms) {
        *encoded += 1;
        out.by_type[ResourceType::Cluster.index()].push(Arc::new(Resource::encode(
            ResourceType::Cluster,
            c.name.clone(),
            &c,
        )));
    }
    out.by_type[ResourceType::Endpoint.index()] = encode_endpoints(ms, encoded);
    for (listener, route) in translate::grpc_listeners(ms) {
        *encoded += 2;
        out.by_type[ResourceType::Listener.index()].push(Arc::new(Resource::encode(
            ResourceType::Listener,
            listener.name.clone(),
            &listener,
        )));
        out.by_type[ResourceType::Route.index()].push(Arc::new(Resource::encode(
            ResourceType::Route,
            route.name.clone(),
            &route,
        )));
    }
    out
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
        ResourceType::Cluster | ResourceType::Listener => return None,
    };
    r.placeholder = true;
    Some(Arc::new(r))
}
