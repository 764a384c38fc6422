//! WorkloadGroups from Kubernetes, and the WorkloadEntries VMs register
//! from them written back as objects every replica reads (see
//! `sextant_core::groups`).
//!
//! A registered entry is a WorkloadEntry object in the group's namespace,
//! labelled [`AUTO_REGISTERED`] and annotated with the group, the holder
//! (the replica and the hold that wrote it last) and a heartbeat. Its
//! health is the `Healthy` condition of its status (Istio's). The replica
//! holding the VM's stream renews the heartbeat every
//! [`HEARTBEAT`]; once the stream is gone it waits the grace period and
//! deletes the object if it still holds it (a VM back on any replica
//! meanwhile wrote itself as holder). A replica that dies leaves its
//! entries behind: every replica deletes an auto-registered entry whose
//! heartbeat is older than three heartbeats and the grace period
//! ([`cleanup`]), so no VM entry outlives its last replica for long
//! (istio/istio#45329).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use sextant_core::Health;
use sextant_core::entries::WorkloadEntry;
use sextant_core::groups::{GroupIndex, HeldEntry, WatchedHold, WorkloadGroup, WorkloadGroups};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::K8sConfig;

/// The label of the WorkloadEntries Sextant registered.
pub const AUTO_REGISTERED: &str = "sextant.io/auto-registered";
/// The annotation naming the group an entry was registered from.
pub const GROUP_ANNOTATION: &str = "sextant.io/workload-group";
/// The annotation naming the hold that wrote the entry last.
pub const HOLDER_ANNOTATION: &str = "sextant.io/holder";
/// The annotation with the holder's last heartbeat (RFC 3339).
pub const HEARTBEAT_ANNOTATION: &str = "sextant.io/heartbeat";
/// How often a held entry's heartbeat is renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// A cluster's WorkloadGroups, and where entries registered from them
/// are written (`K8sEntries::workload_groups`).
pub struct K8sGroups {
    config: Arc<K8sConfig>,
    /// The groups read now (the entries session sets them).
    pub(crate) groups: GroupIndex,
    /// This replica: holder annotations start with it.
    replica: String,
    holds: AtomicU64,
    /// How long an entry outlives its stream, as last given to `hold`
    /// (the cleanup's staleness bound adds it).
    grace: Mutex<Duration>,
    /// The entries session's client and the WorkloadEntry resource it
    /// discovered: holds write through them (no client or discovery of
    /// their own); `None` while WorkloadEntries are not served.
    served: Served,
}

/// A client and the WorkloadEntry resource at the version served.
type Served = Arc<Mutex<Option<(kube::Client, ApiResource)>>>;

impl K8sGroups {
    pub(crate) fn new(config: Arc<K8sConfig>) -> Arc<K8sGroups> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sextant".into());
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        Arc::new(K8sGroups {
            config,
            groups: GroupIndex::default(),
            replica: format!("{host}-{}-{nanos:08x}", std::process::id()),
            holds: AtomicU64::new(0),
            grace: Mutex::new(Duration::from_secs(10)),
            served: Served::default(),
        })
    }

    /// The client and WorkloadEntry resource holds write through (the
    /// entries session sets them at each discovery; `None`: not served).
    pub(crate) fn serve_with(&self, served: Option<(kube::Client, ApiResource)>) {
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) = served;
    }

    /// How old a heartbeat may get before any replica deletes the entry.
    pub(crate) fn stale_after(&self) -> Duration {
        3 * HEARTBEAT + *self.grace.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WorkloadGroups for K8sGroups {
    fn group(&self, namespace: &str, name: &str) -> Option<WorkloadGroup> {
        self.groups.get(namespace, name)
    }

    fn hold(
        &self,
        group: &WorkloadGroup,
        entry: WorkloadEntry,
        grace: Duration,
    ) -> Result<Box<dyn HeldEntry>, String> {
        let group = group.name.clone();
        *self.grace.lock().unwrap_or_else(|p| p.into_inner()) = grace;
        let n = self.holds.fetch_add(1, Ordering::Relaxed);
        let holder = format!("{}/{n}", self.replica);
        let (held, (docs, stopped)) = WatchedHold::start(entry);
        let (config, served) = (self.config.clone(), self.served.clone());
        tokio::spawn(
            async move { keep(&config, &served, group, holder, grace, docs, stopped).await },
        );
        Ok(held)
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The WorkloadEntry API of `namespace`, through the entries session's
/// client.
fn entries_api(
    served: &Served,
    namespace: &str,
) -> Result<(Api<DynamicObject>, ApiResource), String> {
    let served = served.lock().unwrap_or_else(|p| p.into_inner());
    let Some((client, resource)) = served.as_ref() else {
        return Err(
            "networking.istio.io WorkloadEntry is not served (CRD not installed, or not read yet)"
                .into(),
        );
    };
    Ok((
        Api::namespaced_with(client.clone(), namespace, resource),
        resource.clone(),
    ))
}

/// The object for `entry`, held by `holder`.
fn object(entry: &WorkloadEntry, resource: &ApiResource, group: &str, holder: &str) -> Value {
    let mut spec = serde_json::to_value(entry).unwrap_or_else(|_| json!({}));
    if let Some(m) = spec.as_object_mut() {
        for key in ["name", "namespace", "health"] {
            m.remove(key);
        }
    }
    json!({
        "apiVersion": resource.api_version,
        "kind": "WorkloadEntry",
        "metadata": {
            "name": entry.name,
            "namespace": entry.namespace,
            "labels": { AUTO_REGISTERED: "true" },
            "annotations": {
                GROUP_ANNOTATION: group,
                HOLDER_ANNOTATION: holder,
                HEARTBEAT_ANNOTATION: now_rfc3339(),
            },
        },
        "spec": spec,
    })
}

/// The status carrying `health` (Istio's `Healthy` condition).
fn health_status(health: Health) -> Value {
    let healthy = !matches!(health, Health::Unhealthy);
    json!({"status": {"conditions": [{
        "type": "Healthy",
        "status": if healthy { "True" } else { "False" },
        "lastTransitionTime": now_rfc3339(),
    }]}})
}

/// Writes the entry, keeps its heartbeat and health, and once the hold
/// is gone deletes it after the grace period if it still holds it.
async fn keep(
    config: &K8sConfig,
    served: &Served,
    group: String,
    holder: String,
    grace: Duration,
    mut docs: watch::Receiver<WorkloadEntry>,
    mut stopped: watch::Receiver<bool>,
) {
    let (namespace, name) = {
        let e = docs.borrow();
        (e.namespace.clone(), e.name.clone())
    };
    let mut backoff = config.backoff.delays();
    loop {
        let held = tokio::select! {
            r = hold(served, &group, &holder, &mut docs) => r,
            _ = stopped.changed() => break,
        };
        let delay = backoff.next_delay();
        warn!(entry = %format!("{namespace}/{name}"), error = %held, retry_ms = delay.as_millis() as u64, "cannot keep the registered WorkloadEntry; trying again");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => break,
        }
    }
    tokio::time::sleep(grace).await;
    if let Err(e) = release(served, &namespace, &name, &holder).await {
        warn!(entry = %format!("{namespace}/{name}"), error = %e, "cannot remove the registered WorkloadEntry; the cleanup of stale entries will");
    }
}

/// Deletes `namespace/name` if `holder` still holds it.
async fn release(served: &Served, namespace: &str, name: &str, holder: &str) -> Result<(), String> {
    let (api, _) = entries_api(served, namespace)?;
    let current = match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(o) => o,
        None => return Ok(()),
    };
    let ours = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HOLDER_ANNOTATION))
        .is_some_and(|h| h == holder);
    if !ours {
        info!(entry = %format!("{namespace}/{name}"), "registered WorkloadEntry held again elsewhere; kept");
        return Ok(());
    }
    api.delete(name, &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    info!(entry = %format!("{namespace}/{name}"), "registered WorkloadEntry removed after the grace period");
    Ok(())
}

/// One attempt: the object written (created, or taken over), its status,
/// then heartbeats and health changes until an error.
async fn hold(
    served: &Served,
    group: &str,
    holder: &str,
    docs: &mut watch::Receiver<WorkloadEntry>,
) -> String {
    let entry = docs.borrow_and_update().clone();
    let (api, resource) = match entries_api(served, &entry.namespace) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let obj = object(&entry, &resource, group, holder);
    let written: Result<DynamicObject, kube::Error> =
        match serde_json::from_value::<DynamicObject>(obj.clone()) {
            Ok(o) => match api.create(&PostParams::default(), &o).await {
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    api.patch(&entry.name, &PatchParams::default(), &Patch::Merge(&obj))
                        .await
                }
                other => other,
            },
            Err(e) => return format!("cannot build the object: {e}"),
        };
    if let Err(e) = written {
        return format!(
            "cannot write WorkloadEntry {}/{}: {e}",
            entry.namespace, entry.name
        );
    }
    let status = |health| {
        let api = api.clone();
        let name = entry.name.clone();
        async move {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&health_status(health)),
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot write the status: {e}"))
        }
    };
    if let Err(e) = status(entry.health).await {
        return e;
    }
    info!(entry = %format!("{}/{}", entry.namespace, entry.name), %holder, "registered WorkloadEntry written");
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let patch = json!({"metadata": {"annotations": {
                    HOLDER_ANNOTATION: holder,
                    HEARTBEAT_ANNOTATION: now_rfc3339(),
                }}});
                if let Err(e) = api.patch(&entry.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    return format!("cannot renew the heartbeat: {e}");
                }
            }
            changed = docs.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await;
                }
                let health = docs.borrow_and_update().health;
                if let Err(e) = status(health).await {
                    return e;
                }
            }
        }
    }
}

/// Deletes the auto-registered entries of `namespaces` (every namespace
/// when empty) whose heartbeat is older than `stale_after`: what a replica
/// that died left behind. Returns how many it deleted.
pub(crate) async fn cleanup(
    client: &kube::Client,
    resource: &ApiResource,
    namespaces: &[String],
    stale_after: Duration,
) -> Result<usize, kube::Error> {
    let params = ListParams::default().labels(&format!("{AUTO_REGISTERED}=true"));
    let mut items = Vec::new();
    if namespaces.is_empty() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
        items = api.list(&params).await?.items;
    } else {
        // Only the namespaces read (RBAC may grant no more).
        for ns in namespaces {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
            items.extend(api.list(&params).await?.items);
        }
    }
    let now = SystemTime::now();
    let mut deleted = 0;
    for obj in items {
        let beat = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HEARTBEAT_ANNOTATION))
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        let stale = beat.is_none_or(|b| now.duration_since(b).unwrap_or_default() > stale_after);
        if !stale {
            continue;
        }
        let (Some(ns), Some(name)) = (
            obj.metadata.namespace.as_deref(),
            obj.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                deleted += 1;
                info!(entry = %format!("{ns}/{name}"), "stale registered WorkloadEntry removed (no replica renewed it)");
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}
