//! The services side: Services, their EndpointSlices, the Nodes and Pods
//! behind them, and one session that lists them, sends one Reset, then
//! follows changes (see the crate documentation for the rules).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service as KService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DynamicObject, WatchEvent};
use sextant_core::recover::{Closed, EventSender};
use sextant_core::{Error, Event, Labels, Locality, RegistryId, SentServices, Service};
use tracing::{info, warn};

use crate::convert::{self, Mapping};
use crate::kinds::Kind;
use crate::watch::{Broken, Report, Source, list, typed, unavailable, watch_all};
use crate::{K8sConfig, client_config};

/// The sources the services session lists and watches.
fn sources(client: &kube::Client, config: &K8sConfig) -> Vec<Source> {
    let mut out = Vec::new();
    let kinds = [Kind::Service, Kind::Slice]
        .into_iter()
        .chain(config.watch_pods.then_some(Kind::Pod));
    for kind in kinds {
        let labels = match kind {
            Kind::Service => config.label_selector.as_deref(),
            Kind::Slice | Kind::Node | Kind::Pod | Kind::Secret | Kind::Ingress | Kind::Crd(_) => {
                None
            }
        };
        out.extend(Source::of(
            client,
            kind,
            &kind.resource(),
            &config.namespaces,
            labels,
        ));
    }
    if config.watch_nodes {
        out.push(Source::cluster(client, Kind::Node));
    }
    out
}

type Key = (String, String);

/// The objects of one Kubernetes cluster that make its services, and what
/// was last sent for each service.
struct ServiceStore {
    mapping: Mapping,
    services: HashMap<Key, KService>,
    /// Slices by owning service, then by slice name.
    slices: HashMap<Key, HashMap<String, EndpointSlice>>,
    /// Owner of each slice, by (namespace, slice name).
    owners: HashMap<Key, Key>,
    nodes: HashMap<String, Locality>,
    /// The labels of each Pod, by (namespace, name).
    pods: HashMap<Key, Labels>,
    /// The services whose slices name each Pod, with how many endpoints.
    pod_owners: HashMap<Key, HashMap<Key, u32>>,
    /// Services sent since the last Reset, to know what a removal deletes
    /// (and under which hostname).
    /// (The aggregator drops an Apply equal to what it holds, so unchanged
    /// services need no copy here.)
    sent: SentServices<Key>,
    /// Objects that could not be read, by name, with the reason: shown
    /// until the object is fixed or deleted.
    broken: BTreeMap<String, String>,
    /// Broken objects fixed or deleted since the last events: each one's
    /// problem is retracted ([`Event::Resolved`]).
    fixed: Vec<String>,
}

impl ServiceStore {
    fn new(mapping: Mapping) -> Self {
        ServiceStore {
            mapping,
            services: HashMap::new(),
            slices: HashMap::new(),
            owners: HashMap::new(),
            nodes: HashMap::new(),
            pods: HashMap::new(),
            pod_owners: HashMap::new(),
            sent: SentServices::new(),
            broken: BTreeMap::new(),
            fixed: Vec::new(),
        }
    }

    /// Records an object that cannot be read, and reports it.
    fn broken(&mut self, e: Error, problems: &mut Vec<Error>) {
        if let Error::InvalidObject { object, reason } = &e {
            self.broken.insert(object.clone(), reason.clone());
            self.fixed.retain(|f| f != object);
        }
        problems.push(e);
    }

    /// An event that could not be read: its object's problem, or, when it
    /// said the object was deleted, the end of it.
    fn broken_event(&mut self, b: Broken, problems: &mut Vec<Error>) {
        if b.deleted {
            self.readable(&b.object);
        } else {
            self.broken(b.error(), problems);
        }
    }

    /// `object` was read (or deleted): a problem it had is over.
    fn readable(&mut self, object: &str) {
        if self.broken.remove(object).is_some() {
            self.fixed.push(object.to_owned());
        }
    }

    /// Applies one object change; returns the services it touches, and
    /// reports objects that cannot be read.
    fn change(
        &mut self,
        kind: Kind,
        obj: DynamicObject,
        deleted: bool,
        dirty: &mut BTreeSet<Key>,
        problems: &mut Vec<Error>,
    ) {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let Some(name) = obj.metadata.name.clone() else {
            return;
        };
        let what = convert::object_name(kind.name(), &obj.metadata);
        if deleted {
            self.readable(&what);
        }
        match kind {
            Kind::Service => {
                let key = (ns, name);
                if deleted {
                    self.services.remove(&key);
                } else {
                    match typed::<KService>(kind, obj) {
                        Ok(s) => {
                            self.readable(&what);
                            self.services.insert(key.clone(), s);
                        }
                        Err(e) => {
                            // Keep what was known of it; say why it is not updated.
                            self.broken(e, problems);
                            return;
                        }
                    }
                }
                dirty.insert(key);
            }
            Kind::Slice => {
                let slice_key = (ns, name.clone());
                if let Some(old) = self.owners.remove(&slice_key) {
                    let mut gone = None;
                    if let Some(m) = self.slices.get_mut(&old) {
                        gone = m.remove(&name);
                        if m.is_empty() {
                            self.slices.remove(&old);
                        }
                    }
                    if let Some(gone) = gone {
                        self.count_pods(&gone, &old, false);
                    }
                    dirty.insert(old);
                }
                if deleted {
                    return;
                }
                match typed::<EndpointSlice>(kind, obj) {
                    Ok(slice) => {
                        self.readable(&what);
                        if let Some(owner) = convert::slice_owner(&slice) {
                            self.count_pods(&slice, &owner, true);
                            self.owners.insert(slice_key, owner.clone());
                            self.slices
                                .entry(owner.clone())
                                .or_default()
                                .insert(name, slice);
                            dirty.insert(owner);
                        }
                    }
                    Err(e) => self.broken(e, problems),
                }
            }
            Kind::Pod => {
                // Only labels matter; status heartbeats change nothing.
                let key = (ns, name);
                let labels = (!deleted).then(|| obj.metadata.labels.unwrap_or_default());
                if self.pods.get(&key) == labels.as_ref() {
                    return;
                }
                match labels {
                    Some(l) => self.pods.insert(key.clone(), l),
                    None => self.pods.remove(&key),
                };
                if let Some(owners) = self.pod_owners.get(&key) {
                    dirty.extend(owners.keys().cloned());
                }
            }
            // Rule kinds are read by the rules session (rules.rs).
            Kind::Secret | Kind::Ingress | Kind::Crd(_) => {}
            Kind::Node => {
                let locality = if deleted {
                    None
                } else {
                    match typed::<Node>(kind, obj) {
                        Ok(n) => {
                            self.readable(&what);
                            Some(convert::node_locality(&n))
                        }
                        Err(e) => {
                            self.broken(e, problems);
                            return;
                        }
                    }
                };
                let before = self.nodes.get(&name).cloned();
                if before == locality {
                    return;
                }
                match locality {
                    Some(l) => self.nodes.insert(name.clone(), l),
                    None => self.nodes.remove(&name),
                };
                // Services with an endpoint on this node.
                for (owner, slices) in &self.slices {
                    let on_node = slices.values().any(|s| {
                        s.endpoints
                            .iter()
                            .any(|e| e.node_name.as_deref() == Some(name.as_str()))
                    });
                    if on_node {
                        dirty.insert(owner.clone());
                    }
                }
            }
        }
    }

    /// Counts (or uncounts) the Pods that `slice`'s endpoints name, as
    /// endpoints of `owner`.
    fn count_pods(&mut self, slice: &EndpointSlice, owner: &Key, add: bool) {
        for pod in slice
            .endpoints
            .iter()
            .filter_map(|e| convert::endpoint_pod(slice, e))
        {
            let owners = self.pod_owners.entry(pod.clone()).or_default();
            let n = owners.entry(owner.clone()).or_default();
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    owners.remove(owner);
                    if owners.is_empty() {
                        self.pod_owners.remove(&pod);
                    }
                }
            }
        }
    }

    /// The service for `key` as it is now; `None` when it is gone or
    /// carries nothing for the mesh.
    fn build(&self, key: &Key, problems: &mut Vec<Error>) -> Option<Service> {
        let svc = self.services.get(key)?;
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(key)
            .map(|m| {
                let mut v: Vec<_> = m.iter().collect();
                v.sort_by(|a, b| a.0.cmp(b.0));
                v.into_iter().map(|(_, s)| s).collect()
            })
            .unwrap_or_default();
        match convert::service(&self.mapping, svc, &slices, &self.nodes, &self.pods) {
            Ok((service, mut p)) => {
                problems.append(&mut p);
                service
            }
            Err(e) => {
                problems.push(e);
                None
            }
        }
    }

    /// Everything, as one Reset; remembers what was sent.
    fn all(&mut self, problems: &mut Vec<Error>) -> Event {
        let keys: Vec<Key> = self.services.keys().cloned().collect();
        let built: Vec<(Key, Option<Service>)> = keys
            .into_iter()
            .map(|key| {
                let service = self.build(&key, problems);
                (key, service)
            })
            .collect();
        self.sent.reset(built)
    }

    /// The events for the services a change touched. One that converts to
    /// what was sent before is sent again; the aggregator ignores it.
    fn events(&mut self, dirty: BTreeSet<Key>, problems: &mut Vec<Error>) -> Vec<Event> {
        let mut out = Vec::new();
        for key in dirty {
            let service = self.build(&key, problems);
            out.extend(self.sent.update(key, service));
        }
        out
    }
}

/// Sends one batch: its events, the problems that are over, and the new
/// problems.
async fn send(
    tx: &EventSender,
    events: Vec<Event>,
    fixed: Vec<String>,
    problems: Vec<Error>,
) -> Result<(), Closed> {
    for e in events {
        tx.send(Ok(e)).await?;
    }
    for object in fixed {
        tx.resolved(object).await?;
    }
    for p in problems {
        warn!(error = %p.chain(), "kubernetes object skipped");
        tx.send(Err(p)).await?;
    }
    Ok(())
}

pub(crate) async fn session(
    config: Arc<K8sConfig>,
    id: RegistryId,
    tx: EventSender,
) -> Result<(), Error> {
    let client_config = client_config(&config).await?;
    let server = client_config.cluster_url.to_string();
    let client = kube::Client::try_from(client_config)
        .map_err(|e| Error::unavailable_from("cannot build the Kubernetes client", e))?;
    let mut sources = sources(&client, &config);
    loop {
        // List everything, then send it as one Reset.
        let mut store = ServiceStore::new(config.mapping.clone());
        let mut versions = Vec::new();
        let mut problems = Vec::new();
        let mut dirty = BTreeSet::new();
        let mut i = 0;
        while i < sources.len() {
            let source = &sources[i];
            match list(source, config.page_size).await {
                Ok((items, rv)) => {
                    for obj in items {
                        store.change(source.kind, obj, false, &mut dirty, &mut problems);
                    }
                    versions.push(rv);
                    i += 1;
                }
                Err(e)
                    if matches!(source.kind, Kind::Node | Kind::Pod)
                        && matches!(&e, kube::Error::Api(s) if s.code == 403) =>
                {
                    let without = if source.kind == Kind::Node {
                        "endpoints get only their slice's zone, no region"
                    } else {
                        "endpoints get no labels, so subsets select none of them"
                    };
                    warn!(
                        registry = %id,
                        "cannot read {}s (RBAC needs {}): {without}",
                        source.kind.name(),
                        source.kind.rbac()
                    );
                    let kind = source.kind;
                    sources.retain(|s| s.kind != kind);
                    // Start the lists over without that kind.
                    store = ServiceStore::new(config.mapping.clone());
                    problems.clear();
                    dirty.clear();
                    versions.clear();
                    i = 0;
                }
                Err(e) => return Err(unavailable(source, "list", e)),
            }
        }
        let reset = store.all(&mut problems);
        info!(registry = %id, %server, services = store.sent.len(), "kubernetes: listed");
        if send(&tx, vec![reset], Vec::new(), problems).await.is_err() {
            return Ok(());
        }

        // Watch every source from its list's version.
        let (_tasks, mut rx) = watch_all(&sources, versions, config.watch_timeout);
        loop {
            let Some(first) = rx.recv().await else {
                return Ok(());
            };
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let mut dirty = BTreeSet::new();
            let mut problems = Vec::new();
            let mut relist = false;
            for report in batch {
                match report {
                    Report::Event(n, event) => {
                        let kind = sources[n].kind;
                        match *event {
                            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                                store.change(kind, o, false, &mut dirty, &mut problems)
                            }
                            WatchEvent::Deleted(o) => {
                                store.change(kind, o, true, &mut dirty, &mut problems)
                            }
                            WatchEvent::Bookmark(_) | WatchEvent::Error(_) => {}
                        }
                    }
                    Report::Broken(b) => store.broken_event(b, &mut problems),
                    Report::Gone(n) => {
                        info!(registry = %id, kind = sources[n].kind.name(), "kubernetes: watch version expired (410), re-listing");
                        relist = true;
                    }
                    Report::Failed(e) => return Err(e),
                }
            }
            if relist {
                break;
            }
            let events = store.events(dirty, &mut problems);
            let fixed = std::mem::take(&mut store.fixed);
            if send(&tx, events, fixed, problems).await.is_err() {
                return Ok(());
            }
        }
    }
}
