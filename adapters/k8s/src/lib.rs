//! A registry read from a Kubernetes API server: Services and
//! `discovery.k8s.io/v1` EndpointSlices, and Nodes for localities.
//! See [`convert`] for how objects become services.
//!
//! How it follows the API server:
//! - A session lists every watched kind (in pages) and sends the whole
//!   state as one [`Event::Reset`], then watches each kind from the version
//!   its list returned, with bookmarks, restarting each watch from its
//!   latest version when the server ends it (`timeoutSeconds`).
//! - A change to a Service or one of its slices sends that one service
//!   ([`Event::Apply`] or [`Event::Delete`]); changes that arrive together
//!   are applied together. A Node matters only when its region or zone
//!   labels change (status heartbeats are ignored).
//! - `410 Gone` (the version is too old) re-lists everything and sends one
//!   Reset: the view never empties in between.
//! - An unreachable or failing API server ends the session: the registry is
//!   marked stale and keeps serving its last-known-good services; the next
//!   session (after jittered backoff, [`sextant_core::recover`]) re-lists.
//! - `403 Forbidden` names the missing RBAC permission. Nodes are optional:
//!   without permission to read them, endpoints get only their slice's zone
//!   and a warning says why.
//! - An object that cannot be decoded or converted is skipped and reported
//!   as [`Error::InvalidObject`] (counted by the aggregator); the rest keeps
//!   working. So is a watch event that is not valid JSON: it is named by
//!   kind, namespace and name when those can be read from it, else by its
//!   byte offset in the watch, and skipped (the object keeps its last good
//!   state); a watch event longer than [`MAX_EVENT_BYTES`] likewise.
//!   A problem belongs to its object: when the object is fixed or deleted,
//!   the registry's state is sent again as one Reset (which clears the
//!   problems shown) followed by the problems that remain.
//!
//! Built on kube-rs's client (`kube::Api` list and watch, rustls with ring)
//! and k8s-openapi's types. kube-runtime's watcher is not used: it hides when
//! a re-list starts and ends across kinds, and when a broken watch is back,
//! which is what lets this adapter send one Reset per re-list and clear
//! staleness only after a fresh read.

#![forbid(unsafe_code)]

pub mod convert;
pub mod gateway;
pub mod istio;
mod rules;
pub mod tokens;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service as KService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use sextant_core::recover::{Backoff, EventSender, resilient_task};
use sextant_core::{
    Error, Event, EventStream, Labels, Locality, Registry, RegistryId, RuleSource, RuleStream,
    SentServices, Service,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use convert::Mapping;

/// How to reach one cluster and what to read from it.
#[derive(Clone, Debug)]
pub struct K8sConfig {
    /// The cluster's id; the registry is `k8s/ID`. Default `Kubernetes`.
    pub cluster_id: String,
    /// A kubeconfig file. Without one: `KUBECONFIG`, `~/.kube/config`, then
    /// the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; default its current context.
    pub context: Option<String>,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Only Services matching this label selector.
    pub label_selector: Option<String>,
    /// Naming rules.
    pub mapping: Mapping,
    /// Read Nodes for regions and zones. Default true.
    pub watch_nodes: bool,
    /// Read Pods for the labels of the endpoints behind them (a slice's
    /// endpoint names its Pod in `targetRef`); subsets select endpoints by
    /// these labels. Default true.
    pub watch_pods: bool,
    /// How long the server keeps one watch open (`timeoutSeconds`) before
    /// the adapter re-opens it from its last version. Default 290 s, under
    /// kube-rs's 295 s read timeout.
    pub watch_timeout: Duration,
    /// Page size of lists. Default 500, client-go's.
    pub page_size: u32,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Read traffic rules: Istio's VirtualService and DestinationRule and
    /// the Gateway API's HTTPRoute and GRPCRoute, whichever the server
    /// serves. Default true.
    pub read_rules: bool,
    /// The controller name under which the status of HTTPRoutes and
    /// GRPCRoutes is written. Default `sextant.io/mesh-controller`.
    pub controller_name: String,
    /// Write route status (needs `patch` on the `status` subresources).
    /// Default true.
    pub write_status: bool,
    /// How often discovery is asked again for rule kinds that were not
    /// served (a CRD installed later is picked up). Default 30 s.
    pub rediscover_every: Duration,
}

impl Default for K8sConfig {
    fn default() -> Self {
        K8sConfig {
            cluster_id: "Kubernetes".into(),
            kubeconfig: None,
            context: None,
            namespaces: Vec::new(),
            label_selector: None,
            mapping: Mapping::default(),
            watch_nodes: true,
            watch_pods: true,
            watch_timeout: Duration::from_secs(290),
            page_size: 500,
            backoff: Backoff::default(),
            read_rules: true,
            controller_name: "sextant.io/mesh-controller".into(),
            write_status: true,
            rediscover_every: Duration::from_secs(30),
        }
    }
}

/// Loads the client configuration the way kubectl would. Fails with a
/// message naming the file or context.
pub async fn client_config(config: &K8sConfig) -> Result<kube::Config, Error> {
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..Default::default()
    };
    match &config.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                Error::unavailable_from(format!("cannot read kubeconfig {}", path.display()), e)
            })?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::unavailable_from(format!("kubeconfig {}", path.display()), e))
        }
        None if config.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::unavailable_from("kubeconfig (KUBECONFIG or ~/.kube/config)", e)),
        None => kube::Config::infer().await.map_err(|e| {
            Error::unavailable_from(
                "no kubeconfig and not in a cluster (set --kubeconfig or KUBECONFIG)",
                e,
            )
        }),
    }
}

/// A Kubernetes cluster as a registry, and as a source of traffic rules
/// (see the `rules` module: Istio and Gateway API objects).
pub struct K8sRegistry {
    id: RegistryId,
    config: Arc<K8sConfig>,
    announced: Arc<std::sync::Mutex<rules::Announced>>,
}

impl K8sRegistry {
    /// A registry `k8s/CLUSTER_ID` for `config`.
    pub fn new(config: K8sConfig) -> Self {
        K8sRegistry {
            id: RegistryId::new(format!("k8s/{}", config.cluster_id)),
            config: Arc::new(config),
            announced: Arc::default(),
        }
    }
}

impl Registry for K8sRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        let config = self.config.clone();
        let id = self.id.clone();
        resilient_task(config.backoff.clone(), move |tx| {
            session(config.clone(), id.clone(), tx)
        })
    }
}

impl RuleSource for K8sRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch_rules(&self) -> RuleStream {
        let config = self.config.clone();
        let id = self.id.clone();
        let announced = self.announced.clone();
        if !config.read_rules {
            return Box::pin(
                futures::stream::once(async { Ok(Event::Reset(Vec::new())) })
                    .chain(futures::stream::pending()),
            );
        }
        resilient_task(config.backoff.clone(), move |tx| {
            rules::session(config.clone(), id.clone(), tx, announced.clone())
        })
    }
}

/// The kinds a session reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Service,
    Slice,
    Node,
    Pod,
    VirtualService,
    DestinationRule,
    HttpRoute,
    GrpcRoute,
    Sidecar,
}

impl Kind {
    fn resource(self) -> ApiResource {
        match self {
            Kind::Service => ApiResource::erase::<KService>(&()),
            Kind::Slice => ApiResource::erase::<EndpointSlice>(&()),
            Kind::Node => ApiResource::erase::<Node>(&()),
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            // CRD kinds: the version served is found by discovery
            // (`rules::discover`); v1 here.
            _ => {
                let (group, plural) = rules::api_group(self);
                ApiResource {
                    group: group.into(),
                    version: "v1".into(),
                    api_version: format!("{group}/v1"),
                    kind: self.name().into(),
                    plural: plural.into(),
                }
            }
        }
    }

    /// The object kind, as in messages.
    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Slice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::Sidecar => "Sidecar",
        }
    }

    /// What RBAC must allow, for 403 messages.
    fn rbac(self) -> &'static str {
        match self {
            Kind::Service => "get, list and watch on \"services\" in API group \"\" (core)",
            Kind::Slice => {
                "get, list and watch on \"endpointslices\" in API group \"discovery.k8s.io\""
            }
            Kind::Node => "get, list and watch on \"nodes\" in API group \"\" (core)",
            Kind::Pod => "get, list and watch on \"pods\" in API group \"\" (core)",
            Kind::VirtualService => {
                "get, list and watch on \"virtualservices\" in API group \"networking.istio.io\""
            }
            Kind::DestinationRule => {
                "get, list and watch on \"destinationrules\" in API group \"networking.istio.io\""
            }
            Kind::HttpRoute => {
                "get, list and watch on \"httproutes\" in API group \"gateway.networking.k8s.io\""
            }
            Kind::GrpcRoute => {
                "get, list and watch on \"grpcroutes\" in API group \"gateway.networking.k8s.io\""
            }
            Kind::Sidecar => {
                "get, list and watch on \"sidecars\" in API group \"networking.istio.io\""
            }
        }
    }
}

/// One list/watch: a kind in a namespace (or all namespaces).
#[derive(Clone)]
struct Source {
    kind: Kind,
    api: Api<DynamicObject>,
    labels: Option<String>,
    scope: String,
}

fn sources(client: &kube::Client, config: &K8sConfig) -> Vec<Source> {
    let mut out = Vec::new();
    let kinds = [Kind::Service, Kind::Slice]
        .into_iter()
        .chain(config.watch_pods.then_some(Kind::Pod));
    for kind in kinds {
        let labels = match kind {
            Kind::Service => config.label_selector.clone(),
            _ => None,
        };
        if config.namespaces.is_empty() {
            out.push(Source {
                kind,
                api: Api::all_with(client.clone(), &kind.resource()),
                labels,
                scope: "all namespaces".into(),
            });
        } else {
            for ns in &config.namespaces {
                out.push(Source {
                    kind,
                    api: Api::namespaced_with(client.clone(), ns, &kind.resource()),
                    labels: labels.clone(),
                    scope: format!("namespace {ns}"),
                });
            }
        }
    }
    if config.watch_nodes {
        out.push(Source {
            kind: Kind::Node,
            api: Api::all_with(client.clone(), &Kind::Node.resource()),
            labels: None,
            scope: "cluster".into(),
        });
    }
    out
}

/// A kube error as a registry error; 403 names the permission.
fn unavailable(source: &Source, what: &str, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(status) if status.code == 403 => Error::unavailable_from(
            format!(
                "forbidden to {what} {} ({}): the service account needs RBAC {} (see deploy/rbac.yaml)",
                source.kind.name(),
                source.scope,
                source.kind.rbac()
            ),
            e,
        ),
        _ => Error::unavailable_from(
            format!("cannot {what} {} ({})", source.kind.name(), source.scope),
            e,
        ),
    }
}

/// A failed watch of source `n`: `410 Gone` and `404` ask for a re-list,
/// anything else ends the session.
fn failure(n: usize, source: &Source, e: kube::Error) -> Report {
    match &e {
        // 404: the kind went away (its CRD was deleted); a re-list finds out.
        kube::Error::Api(s) if s.code == 410 || s.code == 404 => Report::Gone(n),
        _ => Report::Failed(unavailable(source, "watch", e)),
    }
}

/// Lists one source in pages; returns the objects and the list's version.
async fn list(
    source: &Source,
    page_size: u32,
) -> Result<(Vec<DynamicObject>, String), kube::Error> {
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(page_size);
    if let Some(l) = &source.labels {
        params = params.labels(l);
    }
    loop {
        let page = source.api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => {
                return Ok((items, page.metadata.resource_version.unwrap_or_default()));
            }
        }
    }
}

/// Decodes a dynamic object as the typed `K`.
fn typed<K>(kind: Kind, mut obj: DynamicObject) -> Result<K, Error>
where
    K: serde::de::DeserializeOwned,
{
    let what = convert::object_name(kind.name(), &obj.metadata);
    let resource = kind.resource();
    // List items come without kind and apiVersion.
    obj.types = Some(kube::api::TypeMeta {
        api_version: resource.api_version,
        kind: resource.kind,
    });
    serde_json::to_value(obj)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::invalid_object(what, format!("cannot decode: {e}")))
}

type Key = (String, String);

/// What one cluster holds, and what was last sent for each service.
struct Cluster {
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
    /// A broken object was fixed or deleted since the last events: only a
    /// Reset clears its problem.
    resolved: bool,
}

impl Cluster {
    fn new(mapping: Mapping) -> Self {
        Cluster {
            mapping,
            services: HashMap::new(),
            slices: HashMap::new(),
            owners: HashMap::new(),
            nodes: HashMap::new(),
            pods: HashMap::new(),
            pod_owners: HashMap::new(),
            sent: SentServices::new(),
            broken: BTreeMap::new(),
            resolved: false,
        }
    }

    /// Records an object that cannot be read, and reports it.
    fn broken(&mut self, e: Error, problems: &mut Vec<Error>) {
        if let Error::InvalidObject { object, reason } = &e {
            self.broken.insert(object.clone(), reason.clone());
        }
        problems.push(e);
    }

    /// `object` was read (or deleted): a problem it had is over.
    fn readable(&mut self, object: &str) {
        if self.broken.remove(object).is_some() {
            self.resolved = true;
        }
    }

    /// The problems of the objects that are still broken.
    fn broken_problems(&self) -> impl Iterator<Item = Error> + '_ {
        self.broken
            .iter()
            .map(|(object, reason)| Error::invalid_object(object.clone(), reason.clone()))
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
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::HttpRoute
            | Kind::GrpcRoute
            | Kind::Sidecar => {}
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

/// What a watch task reports to its session.
enum Report {
    Event(usize, Box<WatchEvent<DynamicObject>>),
    /// The version is too old: re-list.
    Gone(usize),
    /// An event that could not be read; skipped.
    Broken(Error),
    Failed(Error),
}

async fn send_all(tx: &EventSender, events: Vec<Event>, problems: Vec<Error>) -> bool {
    for e in events {
        if tx.send(Ok(e)).await.is_err() {
            return false;
        }
    }
    for p in problems {
        warn!(error = %p.chain(), "kubernetes object skipped");
        if tx.send(Err(p)).await.is_err() {
            return false;
        }
    }
    true
}

async fn session(config: Arc<K8sConfig>, id: RegistryId, tx: EventSender) -> Result<(), Error> {
    let client_config = client_config(&config).await?;
    let server = client_config.cluster_url.to_string();
    let client = kube::Client::try_from(client_config)
        .map_err(|e| Error::unavailable_from("cannot build the Kubernetes client", e))?;
    let mut sources = sources(&client, &config);
    loop {
        // List everything, then send it as one Reset.
        let mut cluster = Cluster::new(config.mapping.clone());
        let mut versions = Vec::new();
        let mut problems = Vec::new();
        let mut dirty = BTreeSet::new();
        let mut i = 0;
        while i < sources.len() {
            let source = &sources[i];
            match list(source, config.page_size).await {
                Ok((items, rv)) => {
                    for obj in items {
                        cluster.change(source.kind, obj, false, &mut dirty, &mut problems);
                    }
                    versions.push(rv);
                    i += 1;
                }
                Err(e)
                    if matches!(source.kind, Kind::Node | Kind::Pod)
                        && matches!(&e, kube::Error::Api(s) if s.code == 403) =>
                {
                    let without = match source.kind {
                        Kind::Node => "endpoints get only their slice's zone, no region",
                        _ => "endpoints get no labels, so subsets select none of them",
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
                    cluster = Cluster::new(config.mapping.clone());
                    problems.clear();
                    dirty.clear();
                    versions.clear();
                    i = 0;
                }
                Err(e) => return Err(unavailable(source, "list", e)),
            }
        }
        let reset = cluster.all(&mut problems);
        info!(registry = %id, %server, services = cluster.sent.len(), "kubernetes: listed");
        if !send_all(&tx, vec![reset], problems).await {
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
                                cluster.change(kind, o, false, &mut dirty, &mut problems)
                            }
                            WatchEvent::Deleted(o) => {
                                cluster.change(kind, o, true, &mut dirty, &mut problems)
                            }
                            WatchEvent::Bookmark(_) | WatchEvent::Error(_) => {}
                        }
                    }
                    Report::Broken(e) => cluster.broken(e, &mut problems),
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
            let events = if std::mem::take(&mut cluster.resolved) {
                // A broken object was fixed or deleted: only a Reset clears
                // its problem; the others are reported again after it.
                problems.clear();
                let reset = cluster.all(&mut problems);
                problems.extend(cluster.broken_problems());
                vec![reset]
            } else {
                cluster.events(dirty, &mut problems)
            };
            if !send_all(&tx, events, problems).await {
                return Ok(());
            }
        }
    }
}

/// Watches every source from its list's version (`versions[n]` for
/// `sources[n]`); their reports arrive on the receiver. The tasks end with
/// the returned set.
fn watch_all(
    sources: &[Source],
    versions: Vec<String>,
    timeout: Duration,
) -> (JoinSet<()>, mpsc::Receiver<Report>) {
    let (reports, rx) = mpsc::channel(1024);
    let mut tasks = JoinSet::new();
    for (n, (source, rv)) in sources.iter().zip(versions).enumerate() {
        tasks.spawn(watch(n, source.clone(), rv, timeout, reports.clone()));
    }
    (tasks, rx)
}

/// The longest watch event read (one object, as JSON). The API server's
/// own limit on an object is about 1.5 MiB (etcd's request limit); a longer
/// line is skipped and reported, so a faulty server cannot make the adapter
/// buffer without bound.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// What reading one line of a watch gave.
enum Line {
    /// A line, without its newline, in the buffer.
    Read,
    /// A line longer than the limit; skipped up to its newline.
    TooLong(usize),
    /// The stream ended (an unfinished last line is dropped).
    End,
}

/// Reads one newline-terminated line into `line`, at most `max` bytes of it.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut skipped = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::End);
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let newline = done > chunk.len();
        if skipped > 0 || line.len() + chunk.len() > max {
            skipped += line.len() + chunk.len();
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        reader.consume_unpin(done);
        if newline {
            return Ok(if skipped > 0 {
                Line::TooLong(skipped)
            } else {
                Line::Read
            });
        }
    }
}

/// The string value of the first `"key": "..."` in `text`, read without
/// parsing (the text may be broken JSON).
fn string_field(text: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let at = text.find(&quoted)? + quoted.len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let value = rest.strip_prefix('"')?;
    let end = value.find('"')?;
    Some(value[..end].to_owned())
}

/// Names the object of a watch event that could not be decoded: by kind,
/// namespace and name when the text shows them, else by where it was.
fn name_broken_event(kind: Kind, text: &str, offset: u64, scope: &str) -> String {
    let metadata = text.find("\"metadata\"").map(|i| &text[i..]);
    match metadata.and_then(|m| string_field(m, "name").map(|n| (m, n))) {
        Some((m, name)) => {
            let ns = string_field(m, "namespace").unwrap_or_default();
            format!("{} {ns}/{name}", kind.name())
        }
        None => format!(
            "{} watch event at byte {offset} of the watch of {scope}",
            kind.name()
        ),
    }
}

/// Watches one source from `rv`, re-opening the watch from the latest
/// version each time the server ends it. Lines are read and decoded here
/// rather than by kube's watch stream, so that an event that cannot be
/// decoded is named and skipped instead of ending the session.
async fn watch(
    n: usize,
    source: Source,
    mut rv: String,
    timeout: Duration,
    reports: mpsc::Sender<Report>,
) {
    let mut params = WatchParams::default().timeout(timeout.as_secs().clamp(1, 290) as u32);
    if let Some(l) = &source.labels {
        params = params.labels(l);
    }
    let client = source.api.clone().into_client();
    let mut line = Vec::new();
    loop {
        let opened = tokio::time::Instant::now();
        let request = match kube::core::Request::new(source.api.resource_url()).watch(&params, &rv)
        {
            Ok(r) => r,
            Err(e) => {
                let _ = reports
                    .send(failure(n, &source, kube::Error::BuildRequest(e)))
                    .await;
                return;
            }
        };
        let mut body = match client.request_stream(request).await {
            Ok(b) => std::pin::pin!(b),
            Err(e) => {
                let _ = reports.send(failure(n, &source, e)).await;
                return;
            }
        };
        let mut offset = 0u64;
        loop {
            let at = offset;
            let report = match read_line(&mut body, &mut line, MAX_EVENT_BYTES).await {
                Ok(Line::End) => break,
                // A connection cut mid-watch: re-open from the latest version.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => {
                    let _ = reports
                        .send(failure(n, &source, kube::Error::ReadEvents(e)))
                        .await;
                    return;
                }
                Ok(Line::TooLong(len)) => {
                    offset += len as u64 + 1;
                    Report::Broken(Error::invalid_object(
                        format!(
                            "{} watch event at byte {at} of the watch of {}",
                            source.kind.name(),
                            source.scope
                        ),
                        format!("event of {len} bytes is over the limit of {MAX_EVENT_BYTES}"),
                    ))
                }
                Ok(Line::Read) => {
                    offset += line.len() as u64 + 1;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<WatchEvent<DynamicObject>>(&line) {
                        Ok(WatchEvent::Error(status)) => {
                            let _ = reports
                                .send(failure(n, &source, kube::Error::Api(status)))
                                .await;
                            return;
                        }
                        Ok(event) => {
                            let version = match &event {
                                WatchEvent::Added(o)
                                | WatchEvent::Modified(o)
                                | WatchEvent::Deleted(o) => o.metadata.resource_version.clone(),
                                WatchEvent::Bookmark(b) => {
                                    Some(b.metadata.resource_version.clone())
                                }
                                WatchEvent::Error(_) => None,
                            };
                            if let Some(v) = version.filter(|v| !v.is_empty()) {
                                rv = v;
                            }
                            Report::Event(n, Box::new(event))
                        }
                        Err(e) => {
                            if let Ok(status) = serde_json::from_slice::<kube::core::Status>(&line)
                            {
                                let _ = reports
                                    .send(failure(n, &source, kube::Error::Api(status.boxed())))
                                    .await;
                                return;
                            }
                            let text = String::from_utf8_lossy(&line);
                            let object = name_broken_event(source.kind, &text, at, &source.scope);
                            Report::Broken(Error::invalid_object(
                                object,
                                format!("cannot decode watch event: {e}"),
                            ))
                        }
                    }
                }
            };
            if reports.send(report).await.is_err() {
                return;
            }
        }
        // The server ended the watch (timeout) or the connection closed
        // cleanly: re-open from the latest version. If the server is gone,
        // the next watch call fails and the session ends. A server that
        // ends watches at once is not polled in a tight loop.
        tokio::time::sleep_until(opened + Duration::from_millis(200)).await;
    }
}
