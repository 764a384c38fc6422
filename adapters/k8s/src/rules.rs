//! Traffic rules from the API server: Istio's VirtualService and
//! DestinationRule (`networking.istio.io`, v1 preferred, else v1beta1 or
//! v1alpha3: the schema is the same) and the Gateway API's HTTPRoute and
//! GRPCRoute (`gateway.networking.k8s.io/v1`) attached to Services, with
//! the ReferenceGrants that let them use other namespaces' Services (a
//! grant that changes converts every route again).
//!
//! How it follows the server (the same rules as for Services, see the crate
//! documentation): discovery says which of these kinds are served; each is
//! listed, the rules sent as one Reset, then watched from the list's
//! version; `410 Gone` (or `404`, a CRD deleted) re-lists. A kind whose CRD
//! is not installed is skipped with one log line, and discovery is asked
//! again every [`K8sConfig::rediscover_every`]: a CRD installed later is
//! picked up with a re-list. A change to one object sends that rule
//! (Apply or Delete).
//!
//! Objects that cannot be converted keep their last good rule and are
//! reported (registryz, `sextant_registry_problems`); fields Sextant
//! does not serve are reported once per object as `not served: ...`, and
//! the rest of the object is served. A problem that goes away (the object
//! fixed or deleted) is retracted on its own ([`Event::Resolved`]).
//!
//! Route status: for each Service parent of an HTTPRoute or GRPCRoute,
//! conditions `Accepted` and `ResolvedRefs` under the configured controller
//! name, patched through the `status` subresource with the object's
//! `resourceVersion` (a conflict waits for the next watch event), and only
//! when they differ from what the object carries: several replicas, or a
//! restart, write nothing new. Entries of other controllers are kept. To
//! know which Services exist, the session also watches Services (names
//! only) while the Gateway API is served.
//!
//! Gateway status (`rules/gateway_status.rs`): each Gateway of Sextant's
//! class, its `Programmed` condition from its routers' acknowledgements,
//! read through [`K8sConfig::progress`] after every batch and every
//! 250 ms. The TLS Secrets Gateways name become credential rules
//! (`gateway/credentials.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, WatchEvent};
use serde_json::{Value, json};
use sextant_core::recover::{Closed, EventSender};
use sextant_core::{Error, Event, RegistryId, Rule};
use tracing::{info, warn};

use crate::gateway::{self, RouteKind};
use crate::istio;
use crate::kinds::{CrdKind, Kind};
use crate::watch::{Report, Source, list, unavailable, watch_all};
use crate::{K8sConfig, client_config};

/// Which of `kinds` the server serves, and at which version.
pub(crate) async fn discover(
    client: &kube::Client,
    kinds: &[CrdKind],
) -> Result<Vec<(CrdKind, ApiResource)>, kube::Error> {
    let groups = client.list_api_groups().await?;
    let mut out = Vec::new();
    let mut resources: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for &kind in kinds {
        let (group, plural) = kind.api_group();
        let Some(g) = groups.groups.iter().find(|g| g.name == group) else {
            continue;
        };
        for version in kind.versions() {
            if !g.versions.iter().any(|v| v.version == *version) {
                continue;
            }
            let gv = format!("{group}/{version}");
            if !resources.contains_key(&gv) {
                let list = client.list_api_group_resources(&gv).await?;
                resources.insert(
                    gv.clone(),
                    list.resources.into_iter().map(|r| r.name).collect(),
                );
            }
            if resources[&gv].iter().any(|r| r == plural) {
                out.push((kind, kind.resource(version)));
                break;
            }
        }
    }
    Ok(out)
}

/// The rule kinds and versions among `resources`.
fn versions_of<'a>(
    resources: impl Iterator<Item = (&'a Kind, &'a ApiResource)>,
) -> BTreeSet<(CrdKind, String)> {
    resources
        .filter_map(|(k, r)| match k {
            Kind::Crd(k) => Some((*k, r.version.clone())),
            Kind::Service | Kind::Slice | Kind::Node | Kind::Pod | Kind::Secret | Kind::Ingress => {
                None
            }
        })
        .collect()
}

/// What one object gave: its rule (the last good one when it cannot be
/// converted now) and its problem, if any.
#[derive(Clone, Default, PartialEq)]
struct Converted {
    rule: Option<Rule>,
    problem: Option<String>,
    /// The conversion failed: the route's status says so.
    failed: bool,
}

type ObjKey = (CrdKind, String, String);
type Key = (String, String);

fn object_name(key: &ObjKey) -> String {
    format!("{} {}/{}", key.0.name(), key.1, key.2)
}

/// Converts one object; `previous` is what it gave before; `grants` are
/// the ReferenceGrants read (routes' cross-namespace backends).
fn convert(
    config: &K8sConfig,
    grants: &gateway::Grants,
    key: &ObjKey,
    obj: &DynamicObject,
    previous: Option<&Converted>,
) -> Converted {
    let (kind, ns, name) = key;
    let spec = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let mapping = &config.mapping;
    let result = match kind {
        CrdKind::VirtualService => istio::virtual_service(mapping, ns, name, &spec),
        CrdKind::DestinationRule => istio::destination_rule(mapping, ns, name, &spec),
        CrdKind::HttpRoute | CrdKind::GrpcRoute | CrdKind::TcpRoute | CrdKind::TlsRoute => {
            let route_kind = kind.route_kind().unwrap_or(RouteKind::Http);
            gateway::route(mapping, grants, route_kind, ns, name, &spec)
        }
        // A grant is read into `grants` (State::change); its own rule is none.
        CrdKind::ReferenceGrant => gateway::Grants::default()
            .insert(ns, name, &spec)
            .map(|()| istio::Converted {
                rule: None,
                unsupported: Vec::new(),
            }),
        CrdKind::Gateway => gateway::gateway(&config.gateway_class, ns, name, &spec),
        CrdKind::IstioGateway => istio::istio_gateway(ns, name, &spec),
        // Its status only (rules/status.rs).
        CrdKind::GatewayClass => Ok(istio::Converted {
            rule: None,
            unsupported: Vec::new(),
        }),
        CrdKind::Sidecar => istio::sidecar(ns, name, &spec),
        CrdKind::PeerAuthentication => istio::peer_authentication(ns, name, &spec),
        CrdKind::AuthorizationPolicy => istio::authorization_policy(ns, name, &spec),
        // Services, not rules: the entries registry reads them.
        CrdKind::ServiceEntry | CrdKind::WorkloadEntry | CrdKind::WorkloadGroup => {
            Ok(istio::Converted {
                rule: None,
                unsupported: Vec::new(),
            })
        }
    };
    match result {
        Ok(c) => Converted {
            rule: c.rule,
            problem: (!c.unsupported.is_empty())
                .then(|| format!("not served: {}", c.unsupported.join("; "))),
            failed: false,
        },
        Err(reason) => Converted {
            rule: previous.and_then(|p| p.rule.clone()),
            problem: Some(format!(
                "cannot convert (its last good rule is kept): {reason}"
            )),
            failed: true,
        },
    }
}

/// What the session knows.
#[derive(Default)]
struct State {
    objects: BTreeMap<ObjKey, DynamicObject>,
    converted: BTreeMap<ObjKey, Converted>,
    /// Services that exist (for route status), while routes are read.
    services: BTreeSet<Key>,
    /// The ReferenceGrants read.
    grants: gateway::Grants,
    /// The TLS Secrets read (while Gateways are), and which the Gateways
    /// name.
    credentials: gateway::credentials::Credentials,
    /// The Ingresses of Sextant's class, and the objects (their status).
    ingresses: ingresses::Ingresses,
    ingress_objects: BTreeMap<Key, DynamicObject>,
}

impl State {
    fn rules(&self) -> Vec<Rule> {
        self.converted
            .values()
            .filter_map(|c| c.rule.clone())
            .chain(self.credentials.rules())
            .chain(self.ingresses.rules())
            .collect()
    }

    fn problems(&self) -> Vec<(String, String)> {
        self.converted
            .iter()
            .filter_map(|(k, c)| Some((object_name(k), c.problem.clone()?)))
            .chain(self.credentials.problems())
            .chain(self.ingresses.problems())
            .collect()
    }

    /// The Ingresses' rules, then the credentials the gateways name now,
    /// into `out`.
    fn recredential(&mut self, config: &K8sConfig, out: &mut Outcome) {
        let changes = self.ingresses.update(config);
        out.events.extend(changes.events);
        out.problems.extend(changes.problems);
        out.fixed.extend(changes.fixed);
        let ingress_gateway = self.ingresses.gateway(config);
        let rules = self
            .converted
            .values()
            .filter_map(|c| c.rule.as_ref())
            .chain(ingress_gateway.as_ref());
        let changes = self.credentials.update(rules, &self.grants);
        out.events.extend(changes.events);
        out.problems.extend(changes.problems);
        out.fixed.extend(changes.fixed);
    }
}

/// The events one batch of changes makes.
#[derive(Default)]
struct Outcome {
    events: Vec<Event<Rule>>,
    problems: Vec<(String, String)>,
    /// Objects whose problem went away (fixed or deleted).
    fixed: Vec<String>,
}

impl State {
    /// Applies one object change.
    fn change(
        &mut self,
        config: &K8sConfig,
        kind: Kind,
        obj: DynamicObject,
        deleted: bool,
        out: &mut Outcome,
    ) -> Option<ObjKey> {
        let name = obj.metadata.name.clone()?;
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let kind = match kind {
            Kind::Crd(k) => k,
            // Services: only which exist, for route status.
            Kind::Service => {
                let key = (ns, name);
                if deleted {
                    self.services.remove(&key);
                } else {
                    self.services.insert(key);
                }
                return None;
            }
            Kind::Secret => {
                self.credentials.change(ns, name, &obj, deleted);
                return None;
            }
            Kind::Ingress => {
                self.ingresses.change(config, &obj, deleted);
                if deleted {
                    self.ingress_objects.remove(&(ns, name));
                } else {
                    self.ingress_objects.insert((ns, name), obj);
                }
                return None;
            }
            Kind::Slice | Kind::Node | Kind::Pod => return None,
        };
        let key = (kind, ns, name);
        let old = self.converted.get(&key).cloned().unwrap_or_default();
        let new = if deleted {
            self.objects.remove(&key);
            Converted::default()
        } else {
            let c = convert(config, &self.grants, &key, &obj, Some(&old));
            self.objects.insert(key.clone(), obj);
            c
        };
        self.update(&key, old, new, deleted, out);
        if kind == CrdKind::ReferenceGrant {
            self.regrant(config, &key, deleted, out);
        }
        Some(key)
    }

    /// A ReferenceGrant changed: the grants again, and every route
    /// converted again against them.
    fn regrant(&mut self, config: &K8sConfig, key: &ObjKey, deleted: bool, out: &mut Outcome) {
        let before = self.grants.clone();
        self.grants.remove(&key.1, &key.2);
        if !deleted && let Some(spec) = self.objects.get(key).and_then(|o| o.data.get("spec")) {
            // A grant that does not parse grants nothing (its problem says why).
            let _ = self.grants.insert(&key.1, &key.2, spec);
        }
        if self.grants == before {
            return;
        }
        let routes: Vec<ObjKey> = self
            .objects
            .keys()
            .filter(|k| k.0.is_route())
            .cloned()
            .collect();
        for route in routes {
            let old = self.converted.get(&route).cloned().unwrap_or_default();
            let new = match self.objects.get(&route) {
                Some(obj) => convert(config, &self.grants, &route, obj, Some(&old)),
                None => continue,
            };
            self.update(&route, old, new, false, out);
        }
    }

    /// Records what an object gives now, and the events and problems that
    /// makes.
    fn update(
        &mut self,
        key: &ObjKey,
        old: Converted,
        new: Converted,
        deleted: bool,
        out: &mut Outcome,
    ) {
        if old.rule != new.rule {
            match (&old.rule, &new.rule) {
                (_, Some(rule)) => {
                    if let Some(o) = &old.rule
                        && o.key != rule.key
                    {
                        out.events.push(Event::Delete(o.key.clone()));
                    }
                    out.events.push(Event::Apply(rule.clone()));
                }
                (Some(o), None) => out.events.push(Event::Delete(o.key.clone())),
                (None, None) => {}
            }
        }
        if old.problem != new.problem {
            match &new.problem {
                Some(p) => out.problems.push((object_name(key), p.clone())),
                None => out.fixed.push(object_name(key)),
            }
        }
        if deleted {
            self.converted.remove(key);
        } else {
            self.converted.insert(key.clone(), new);
        }
    }
}

/// Sends a batch's outcome: its events, the problems that are over, the
/// new ones.
async fn send(tx: &EventSender<Rule>, out: Outcome) -> Result<(), Closed> {
    for e in out.events {
        tx.send(Ok(e)).await?;
    }
    for object in out.fixed {
        tx.resolved(object).await?;
    }
    for (object, reason) in out.problems {
        warn!(object, reason, "kubernetes rule object");
        tx.invalid(object, reason).await?;
    }
    Ok(())
}

/// What is logged once per registry, across sessions.
#[derive(Default)]
pub(crate) struct Announced {
    absent: BTreeSet<&'static str>,
    forbidden_status: bool,
    /// The controller of a GatewayClass of Sextant's name that is not
    /// Sextant's, once said.
    foreign_class: Option<String>,
    /// Ingresses may not be listed, once said.
    forbidden_ingress: bool,
}

pub(crate) async fn session(
    config: Arc<K8sConfig>,
    id: RegistryId,
    tx: EventSender<Rule>,
    announced: Arc<Mutex<Announced>>,
) -> Result<(), Error> {
    let client_config = client_config(&config).await?;
    let client = kube::Client::try_from(client_config)
        .map_err(|e| Error::unavailable_from("cannot build the Kubernetes client", e))?;
    loop {
        let served = discover(&client, &CrdKind::ALL)
            .await
            .map_err(|e| Error::unavailable_from("cannot read API discovery for rule kinds", e))?;
        let served_kinds: Vec<CrdKind> = served.iter().map(|(k, _)| *k).collect();
        {
            let mut a = announced.lock().unwrap_or_else(|p| p.into_inner());
            for kind in CrdKind::ALL {
                let (group, _) = kind.api_group();
                if served_kinds.contains(&kind) {
                    if a.absent.remove(kind.name()) {
                        info!(registry = %id, kind = kind.name(), "kubernetes: rule kind is served now; reading it");
                    }
                } else if a.absent.insert(kind.name()) {
                    info!(
                        registry = %id,
                        kind = kind.name(),
                        "kubernetes: {group} {} is not served (CRD not installed): skipped, discovery is asked again every {:?}",
                        kind.name(),
                        config.rediscover_every
                    );
                }
            }
        }
        let mut sources = Vec::new();
        let mut resources = BTreeMap::new();
        let write_status = config.write_status && served_kinds.iter().any(|k| k.is_route());
        let mut kinds: Vec<(Kind, ApiResource)> =
            served.into_iter().map(|(k, r)| (Kind::Crd(k), r)).collect();
        if write_status {
            kinds.push((Kind::Service, Kind::Service.resource()));
        }
        // Ingresses of Sextant's class, when the service account may read
        // them (older RBAC may not: said once, the rest still read).
        let ingresses = !config.ingress_class.is_empty()
            && may_list(&client, &Kind::Ingress.resource(), &id, &announced).await;
        if ingresses {
            kinds.push((Kind::Ingress, Kind::Ingress.resource()));
        }
        // Gateways' certificates: TLS Secrets, read only while gateways are.
        if ingresses
            || served_kinds.contains(&CrdKind::Gateway)
            || served_kinds.contains(&CrdKind::IstioGateway)
        {
            kinds.push((Kind::Secret, Kind::Secret.resource()));
        }
        for (kind, resource) in kinds {
            match kind {
                Kind::Crd(k) if k.cluster_scoped() => sources.push(Source {
                    api: Api::all_with(client.clone(), &resource),
                    ..Source::cluster(&client, kind)
                }),
                _ => sources.extend(Source::of(
                    &client,
                    kind,
                    &resource,
                    &config.namespaces,
                    None,
                )),
            }
            resources.insert(kind, resource);
        }

        let mut state = State::default();
        let mut listed = Vec::new();
        for source in &sources {
            let (items, rv) = list(source, config.page_size)
                .await
                .map_err(|e| unavailable(source, "list", e))?;
            let mut ignored = Outcome::default();
            for obj in items {
                state.change(&config, source.kind, obj, false, &mut ignored);
            }
            listed.push(rv);
        }
        state.recredential(&config, &mut Outcome::default());
        info!(registry = %id, rules = state.converted.len(), kinds = ?served_kinds, "kubernetes: rules listed");
        let first = Outcome {
            events: vec![Event::Reset(state.rules())],
            problems: state.problems(),
            fixed: Vec::new(),
        };
        if send(&tx, first).await.is_err() {
            return Ok(());
        }
        let status = StatusWriter {
            client: client.clone(),
            controller: config.controller_name.clone(),
            gateway_class: config.gateway_class.clone(),
            ingress_status: config.write_status,
            resources: resources.clone(),
            announced: announced.clone(),
            enabled: write_status,
        };
        let routes: Vec<ObjKey> = state.objects.keys().cloned().collect();
        status.write(&state, &routes).await;
        status.write_gateways(&state, &config.progress).await;
        status.write_gateway_class(&state).await;
        status.write_ingresses(&state, &config).await;
        // Gateways' Programmed follows their routers' ACKs: looked at again
        // on this tick (a patch only when it changed).
        let mut gateway_tick = tokio::time::interval(GATEWAY_STATUS_EVERY);
        gateway_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let gateways_served = served_kinds.contains(&CrdKind::Gateway);

        let (_tasks, mut rx) = watch_all(&sources, listed, config.watch_timeout);
        let mut rediscover = tokio::time::interval(config.rediscover_every);
        rediscover.tick().await;
        loop {
            let first = tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => return Ok(()),
                },
                _ = gateway_tick.tick(), if gateways_served || ingresses => {
                    status.write_gateways(&state, &config.progress).await;
                    status.write_ingresses(&state, &config).await;
                    continue;
                }
                _ = rediscover.tick() => {
                    let now = discover(&client, &CrdKind::ALL).await.map_err(|e| {
                        Error::unavailable_from("cannot read API discovery for rule kinds", e)
                    })?;
                    let now: BTreeSet<(CrdKind, String)> =
                        now.iter().map(|(k, r)| (*k, r.version.clone())).collect();
                    if now == versions_of(resources.iter()) {
                        continue;
                    }
                    info!(registry = %id, "kubernetes: the rule kinds served changed, re-listing");
                    break;
                }
            };
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let mut out = Outcome::default();
            let mut touched = Vec::new();
            // Services or grants changed: every route's status is looked at.
            let mut services_changed = false;
            let mut relist = false;
            for report in batch {
                match report {
                    Report::Event(n, event) => {
                        let kind = sources[n].kind;
                        let (obj, deleted) = match *event {
                            WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
                            WatchEvent::Deleted(o) => (o, true),
                            WatchEvent::Bookmark(_) | WatchEvent::Error(_) => continue,
                        };
                        let before = state.services.len();
                        if let Some(key) = state.change(&config, kind, obj, deleted, &mut out) {
                            // A grant changes what every route may refer to,
                            // a Gateway which routes it accepts.
                            services_changed |=
                                matches!(key.0, CrdKind::ReferenceGrant | CrdKind::Gateway);
                            touched.push(key);
                        }
                        services_changed |= state.services.len() != before;
                    }
                    Report::Broken(b) if b.deleted => out.fixed.push(b.object),
                    Report::Broken(b) => out.problems.push((b.object, b.reason)),
                    Report::Gone(n) => {
                        info!(registry = %id, kind = sources[n].kind.name(), "kubernetes: rule watch expired or gone, re-listing");
                        relist = true;
                    }
                    Report::Failed(e) => return Err(e),
                }
            }
            if relist {
                break;
            }
            state.recredential(&config, &mut out);
            if send(&tx, out).await.is_err() {
                return Ok(());
            }
            if services_changed {
                touched = state.objects.keys().cloned().collect();
            }
            status.write(&state, &touched).await;
            status.write_gateways(&state, &config.progress).await;
            if touched.iter().any(|k| k.0 == CrdKind::GatewayClass) {
                status.write_gateway_class(&state).await;
            }
        }
    }
}

/// Whether the service account may list `resource` (a 403 is said once,
/// and the kind left unread).
async fn may_list(
    client: &kube::Client,
    resource: &ApiResource,
    id: &RegistryId,
    announced: &Mutex<Announced>,
) -> bool {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            let mut a = announced.lock().unwrap_or_else(|p| p.into_inner());
            if !a.forbidden_ingress {
                a.forbidden_ingress = true;
                warn!(
                    registry = %id,
                    "kubernetes: cannot list {} ({}): not read; RBAC needs list and watch on {} (see deploy/rbac.yaml)",
                    resource.plural, s.message, resource.plural
                );
            }
            false
        }
        _ => true,
    }
}

/// How often Gateways' status is looked at again for their routers'
/// progress.
const GATEWAY_STATUS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

mod gateway_status;
mod ingresses;
mod status;
use status::StatusWriter;
#[cfg(test)]
use status::status_patch;

#[cfg(test)]
mod tests;
