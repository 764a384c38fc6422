//! Istio's ServiceEntries and WorkloadEntries (`networking.istio.io`, v1
//! preferred, else v1beta1 or v1alpha3) as a registry of their own,
//! `k8s/CLUSTER/entries`, placed after the cluster's Services: a host both
//! declare follows the aggregator's merge rules (the Service's ports win,
//! the conflict is shown), as Istio keeps its ServiceEntry registry apart
//! from the Kubernetes one.
//!
//! What an entry becomes is `sextant_core::entries` (the same for files,
//! etcd and Kubernetes); this session reads the objects: the entries, the
//! WorkloadEntries, and the Pods a `workloadSelector` may select (ready,
//! with an IP address, not being deleted: a Pod is a workload as a
//! WorkloadEntry is). It follows the server as the rules session does:
//! discovery says whether the kinds are served (asked again every
//! [`K8sConfig::rediscover_every`]: a CRD installed later is picked up);
//! list, one Reset, watch; a batch of changes converts every entry again
//! and sends what changed. An object that cannot be read or served in part
//! is a problem of that object, retracted once it is fixed or gone.
//!
//! It also reads the WorkloadGroups, for auto-registration
//! ([`K8sEntries::workload_groups`], `groups.rs`), a WorkloadEntry's health
//! from its `Healthy` condition, and (while WorkloadEntries are served)
//! removes the registered entries no replica renews any more.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, WatchEvent};
use serde_json::{Value, json};
use sextant_core::entries::{ServiceEntry, WorkloadEntry, WorkloadSpec, services_from_entries};
use sextant_core::groups::WorkloadGroup;
use sextant_core::recover::{Backoff, EventSender, resilient_task};
use sextant_core::{Error, EventStream, Registry, RegistryId, Service};
use tracing::{info, warn};

use crate::groups::K8sGroups;

use crate::kinds::{CrdKind, Kind};
use crate::rules::discover;
use crate::watch::{Report, Source, list, typed, unavailable, watch_all};
use crate::{K8sConfig, client_config};

/// A cluster's ServiceEntries and WorkloadEntries as a registry (see the
/// module's text).
pub struct K8sEntries {
    id: RegistryId,
    config: Arc<K8sConfig>,
    groups: Arc<K8sGroups>,
}

impl K8sEntries {
    /// The registry `k8s/CLUSTER_ID/entries` for `config`.
    pub fn new(config: K8sConfig) -> Self {
        let config = Arc::new(config);
        K8sEntries {
            id: RegistryId::new(format!("k8s/{}/entries", config.cluster_id)),
            groups: K8sGroups::new(config.clone()),
            config,
        }
    }

    /// The cluster's WorkloadGroups, keeping the entries VMs register
    /// from them as WorkloadEntry objects (see [`crate::groups`]), for
    /// `Sextant::workload_groups`.
    pub fn workload_groups(&self) -> Arc<K8sGroups> {
        Arc::clone(&self.groups)
    }
}

impl Registry for K8sEntries {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        let config = self.config.clone();
        let id = self.id.clone();
        let groups = self.groups.clone();
        let backoff: Backoff = config.backoff.clone();
        resilient_task(backoff, move |tx| {
            session(config.clone(), id.clone(), groups.clone(), tx)
        })
    }
}

type Key = (String, String);

/// What the session read.
#[derive(Default)]
struct State {
    entries: BTreeMap<Key, ServiceEntry>,
    workloads: BTreeMap<Key, WorkloadEntry>,
    /// WorkloadGroups (templates for auto-registration, no services).
    groups: BTreeMap<Key, WorkloadGroup>,
    /// Pods as workloads.
    pods: BTreeMap<Key, WorkloadEntry>,
    /// Objects that cannot be read, with why.
    unreadable: BTreeMap<String, String>,
}

impl State {
    /// Applies one object's change; true when what the entries declare (or
    /// the problems shown) may have changed. An object that cannot be read
    /// keeps its last good value, and says why. A Pod matters only when an
    /// entry of its namespace selects workloads and what the Pod gives as
    /// a workload changed (a status heartbeat changes nothing).
    fn change(&mut self, kind: Kind, obj: DynamicObject, deleted: bool) -> bool {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let Some(name) = obj.metadata.name.clone() else {
            return false;
        };
        let object = format!("{} {ns}/{name}", kind.name());
        let key = (ns.clone(), name.clone());
        // Whether its value moved; `Err`: unreadable (the old value stays).
        let outcome: Result<bool, String> = match kind {
            Kind::Crd(CrdKind::ServiceEntry) if deleted => Ok(self.entries.remove(&key).is_some()),
            Kind::Crd(CrdKind::ServiceEntry) => service_entry(&obj, &ns, &name)
                .map(|e| self.entries.insert(key, e.clone()).as_ref() != Some(&e)),
            Kind::Crd(CrdKind::WorkloadEntry) if deleted => {
                Ok(self.workloads.remove(&key).is_some())
            }
            Kind::Crd(CrdKind::WorkloadEntry) => workload_entry(&obj, &ns, &name)
                .map(|w| self.workloads.insert(key, w.clone()).as_ref() != Some(&w)),
            // A group declares no service: only its problem may move.
            Kind::Crd(CrdKind::WorkloadGroup) if deleted => {
                self.groups.remove(&key);
                Ok(false)
            }
            Kind::Crd(CrdKind::WorkloadGroup) => workload_group(&obj, &ns, &name).map(|g| {
                self.groups.insert(key, g);
                false
            }),
            Kind::Pod => {
                let now = if deleted {
                    Ok(None)
                } else {
                    typed::<Pod>(kind, obj)
                        .map(|pod| pod_workload(&pod, &ns, &name))
                        .map_err(|e| e.to_string())
                };
                now.map(|now| {
                    let moved = match now {
                        Some(w) => self.pods.insert(key, w.clone()).as_ref() != Some(&w),
                        None => self.pods.remove(&key).is_some(),
                    };
                    moved
                        && self
                            .entries
                            .values()
                            .any(|e| e.namespace == ns && e.workload_selector.is_some())
                })
            }
            _ => Ok(false),
        };
        match outcome {
            Ok(moved) => self.unreadable.remove(&object).is_some() || moved,
            Err(reason) => {
                self.unreadable.insert(object, reason.clone()).as_deref() != Some(&reason)
            }
        }
    }

    /// The services every entry declares now, and every problem.
    fn services(&self) -> (Vec<Service>, Vec<(String, String)>) {
        let entries: Vec<ServiceEntry> = self.entries.values().cloned().collect();
        let workloads: Vec<WorkloadEntry> = self
            .workloads
            .values()
            .chain(self.pods.values())
            .cloned()
            .collect();
        let converted = services_from_entries(&entries, &workloads).validated();
        let mut problems: Vec<(String, String)> = self
            .unreadable
            .iter()
            .map(|(o, r)| (o.clone(), r.clone()))
            .collect();
        problems.extend(converted.problems);
        let services = converted.services;
        problems.sort();
        problems.dedup_by(|a, b| a.0 == b.0);
        (services, problems)
    }
}

/// A ServiceEntry object's spec, with its name, namespace and age.
fn service_entry(obj: &DynamicObject, ns: &str, name: &str) -> Result<ServiceEntry, String> {
    let spec = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let mut entry: ServiceEntry =
        serde_json::from_value(spec).map_err(|e| format!("cannot read its spec: {e}"))?;
    entry.name = name.to_owned();
    entry.namespace = ns.to_owned();
    entry.created = obj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string());
    Ok(entry)
}

/// A WorkloadEntry object's spec, with its name, namespace and health
/// (its `Healthy` condition, Istio's: `False` is unhealthy).
fn workload_entry(obj: &DynamicObject, ns: &str, name: &str) -> Result<WorkloadEntry, String> {
    let spec = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let mut w: WorkloadEntry =
        serde_json::from_value(spec).map_err(|e| format!("cannot read its spec: {e}"))?;
    w.name = name.to_owned();
    w.namespace = ns.to_owned();
    let unhealthy = obj.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Healthy" && c["status"] == "False");
    if unhealthy {
        w.health = sextant_core::Health::Unhealthy;
    }
    Ok(w)
}

/// A WorkloadGroup object: its spec with its name and namespace.
fn workload_group(obj: &DynamicObject, ns: &str, name: &str) -> Result<WorkloadGroup, String> {
    let mut spec = obj.data.get("spec").cloned().unwrap_or_else(|| json!({}));
    let Some(fields) = spec.as_object_mut() else {
        return Err("its spec is not a mapping".into());
    };
    fields.insert("name".into(), json!(name));
    fields.insert("namespace".into(), json!(ns));
    let g: WorkloadGroup =
        serde_json::from_value(spec).map_err(|e| format!("cannot read its spec: {e}"))?;
    g.check()?;
    Ok(g)
}

/// A Pod as a workload a ServiceEntry's selector may pick: ready, with an
/// IP address, not being deleted.
fn pod_workload(pod: &Pod, ns: &str, name: &str) -> Option<WorkloadEntry> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if !ready {
        return None;
    }
    Some(WorkloadEntry {
        name: name.to_owned(),
        namespace: ns.to_owned(),
        spec: WorkloadSpec {
            address: Some(ip),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone()),
            ..WorkloadSpec::default()
        },
        health: sextant_core::Health::Healthy,
    })
}

/// Runs the cleanup of stale registered entries every heartbeat while
/// held; aborted when dropped.
struct Cleanup(tokio::task::JoinHandle<()>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_cleanup(
    client: &kube::Client,
    resource: &ApiResource,
    namespaces: &[String],
    groups: &Arc<K8sGroups>,
) -> Cleanup {
    let (client, resource, groups) = (client.clone(), resource.clone(), groups.clone());
    let namespaces = namespaces.to_vec();
    Cleanup(tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::groups::HEARTBEAT);
        loop {
            every.tick().await;
            let stale = groups.stale_after();
            if let Err(e) = crate::groups::cleanup(&client, &resource, &namespaces, stale).await {
                warn!(error = %e, "cannot look for stale registered WorkloadEntries");
            }
        }
    }))
}

async fn session(
    config: Arc<K8sConfig>,
    id: RegistryId,
    groups: Arc<K8sGroups>,
    tx: EventSender,
) -> Result<(), Error> {
    let client_config = client_config(&config).await?;
    let client = kube::Client::try_from(client_config)
        .map_err(|e| Error::unavailable_from("cannot build the Kubernetes client", e))?;
    let discovery = |e| Error::unavailable_from("cannot read API discovery for ServiceEntries", e);
    loop {
        let served = discover(&client, &CrdKind::ENTRIES)
            .await
            .map_err(discovery)?;
        let mut sources = Vec::new();
        let entries_served = served.iter().any(|(k, _)| *k == CrdKind::ServiceEntry);
        for (kind, resource) in &served {
            sources.extend(Source::of(
                &client,
                Kind::Crd(*kind),
                resource,
                &config.namespaces,
                None,
            ));
        }
        if entries_served && config.watch_pods {
            sources.extend(Source::of(
                &client,
                Kind::Pod,
                &Kind::Pod.resource(),
                &config.namespaces,
                None,
            ));
        }
        if !entries_served {
            info!(registry = %id, "kubernetes: networking.istio.io ServiceEntry is not served (CRD not installed): no entries; discovery is asked again every {:?}", config.rediscover_every);
        }
        let entries_resource = served
            .iter()
            .find(|(k, _)| *k == CrdKind::WorkloadEntry)
            .map(|(_, resource)| resource.clone());
        groups.serve_with(entries_resource.clone().map(|r| (client.clone(), r)));
        let _cleanup = entries_resource
            .as_ref()
            .map(|resource| start_cleanup(&client, resource, &config.namespaces, &groups));
        let mut state = State::default();
        let mut versions = Vec::new();
        for source in &sources {
            let (items, rv) = list(source, config.page_size)
                .await
                .map_err(|e| unavailable(source, "list", e))?;
            for obj in items {
                state.change(source.kind, obj, false);
            }
            versions.push(rv);
        }
        groups.groups.set(state.groups.values().cloned());
        let (mut sent, mut shown) = state.services();
        info!(registry = %id, services = sent.len(), entries = state.entries.len(), "kubernetes: service entries listed");
        if tx.reset(sent.clone()).await.is_err() || tx.problems_changed(&[], &shown).await.is_err()
        {
            return Ok(());
        }
        let versions_now: Vec<(CrdKind, String)> = served
            .iter()
            .map(|(k, r)| (*k, r.version.clone()))
            .collect();
        let (_tasks, mut rx) = watch_all(&sources, versions, config.watch_timeout);
        let mut rediscover = tokio::time::interval(config.rediscover_every);
        rediscover.tick().await;
        loop {
            let first = tokio::select! {
                r = rx.recv(), if !sources.is_empty() => r,
                _ = rediscover.tick() => {
                    let now: Vec<(CrdKind, String)> = discover(&client, &CrdKind::ENTRIES)
                        .await
                        .map_err(discovery)?
                        .iter()
                        .map(|(k, r)| (*k, r.version.clone()))
                        .collect();
                    if now == versions_now {
                        continue;
                    }
                    info!(registry = %id, "kubernetes: the entry kinds served changed, re-listing");
                    break;
                }
            };
            let Some(first) = first else {
                return Ok(());
            };
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let mut relist = false;
            let mut dirty = false;
            for report in batch {
                match report {
                    Report::Event(n, event) => {
                        let kind = sources[n].kind;
                        dirty |= match *event {
                            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                                state.change(kind, o, false)
                            }
                            WatchEvent::Deleted(o) => state.change(kind, o, true),
                            WatchEvent::Bookmark(_) | WatchEvent::Error(_) => false,
                        };
                    }
                    Report::Broken(b) if b.deleted => {
                        dirty |= state.unreadable.remove(&b.object).is_some();
                    }
                    Report::Broken(b) => {
                        let reason = b.reason.clone();
                        dirty |= state.unreadable.insert(b.object, b.reason) != Some(reason);
                    }
                    Report::Gone(_) => relist = true,
                    Report::Failed(e) => return Err(e),
                }
            }
            if relist {
                break;
            }
            groups.groups.set(state.groups.values().cloned());
            // Nothing an entry declares moved (most Pod events): no work.
            if !dirty {
                continue;
            }
            let (now, problems) = state.services();
            for event in sextant_core::changes(&sent, &now) {
                if tx.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            if tx.problems_changed(&shown, &problems).await.is_err() {
                return Ok(());
            }
            (sent, shown) = (now, problems);
        }
    }
}
