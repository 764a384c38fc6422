//! The mesh's root certificate in every namespace, as Istio publishes it:
//! a ConfigMap `istio-ca-root-cert` with the key `root-cert.pem`, which
//! workloads mount to check their peers and Sextant's TLS port.
//!
//! The publisher lists the namespaces, creates the ConfigMap where it is
//! missing and updates the ones it made when the root changes; it then
//! watches namespaces and serves new ones as they appear. A ConfigMap of
//! that name that Sextant did not make (no `app.kubernetes.io/managed-by:
//! sextant` label) is another controller's: it is left alone, logged once
//! and counted. When the API server cannot be reached it tries again, from
//! a fresh list, after a growing delay.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use tracing::{debug, info, warn};

/// The ConfigMap's name (Istio's).
pub const CONFIGMAP: &str = "istio-ca-root-cert";
/// Its key (Istio's).
pub const KEY: &str = "root-cert.pem";
/// The label that marks the ConfigMaps Sextant made.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sextant");

/// How often the root is compared with what was published.
const ROOT_EVERY: Duration = Duration::from_secs(5);

/// What the publisher did, for `/metrics`.
#[derive(Debug, Default)]
pub struct RootCounts {
    /// ConfigMaps created.
    pub created: AtomicU64,
    /// ConfigMaps updated to a new root.
    pub updated: AtomicU64,
    /// Namespaces where a ConfigMap of that name belongs to another
    /// controller (left alone), as last seen.
    pub foreign: AtomicU64,
    /// Writes or lists that failed.
    pub errors: AtomicU64,
}

/// Publishes `root()` into every namespace of `client`'s cluster until
/// the task is aborted.
pub fn spawn(
    client: kube::Client,
    root: Arc<dyn Fn() -> String + Send + Sync>,
    counts: Arc<RootCounts>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut publisher = Publisher {
            namespaces: Api::all(client.clone()),
            client,
            counts,
            foreign: BTreeSet::new(),
        };
        let mut backoff = Duration::from_secs(1);
        loop {
            match publisher.session(&*root).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    publisher.counts.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot publish the root certificate's ConfigMaps; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    })
}

struct Publisher {
    client: kube::Client,
    namespaces: Api<Namespace>,
    counts: Arc<RootCounts>,
    /// Namespaces whose ConfigMap is another controller's (logged once).
    foreign: BTreeSet<String>,
}

impl Publisher {
    /// One list and watch of namespaces: every namespace served at the
    /// start and when the root changes, new ones as they come. Returns
    /// when the watch ends (to be listed again).
    async fn session(&mut self, root: &(dyn Fn() -> String + Send + Sync)) -> Result<(), String> {
        let list = self
            .namespaces
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing namespaces: {e}"))?;
        let version = list.metadata.resource_version.clone().unwrap_or_default();
        let mut known: BTreeSet<String> = list
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let mut published = root();
        for ns in &known {
            self.ensure(ns, &published).await?;
        }
        self.counts
            .foreign
            .store(self.foreign.len() as u64, Ordering::Relaxed);
        debug!(
            namespaces = known.len(),
            "the root certificate is in every namespace"
        );
        let stream = self
            .namespaces
            .watch(&WatchParams::default().timeout(290), &version)
            .await
            .map_err(|e| format!("watching namespaces: {e}"))?;
        let mut stream = stream.boxed();
        let mut tick = tokio::time::interval(ROOT_EVERY);
        loop {
            tokio::select! {
                event = stream.try_next() => match event {
                    Ok(Some(WatchEvent::Added(n))) => {
                        if let Some(ns) = n.metadata.name
                            && known.insert(ns.clone())
                        {
                            self.ensure(&ns, &published).await?;
                        }
                    }
                    Ok(Some(WatchEvent::Deleted(n))) => {
                        if let Some(ns) = n.metadata.name {
                            known.remove(&ns);
                            self.foreign.remove(&ns);
                        }
                    }
                    Ok(Some(WatchEvent::Modified(_) | WatchEvent::Bookmark(_))) => {}
                    Ok(Some(WatchEvent::Error(e))) => return Err(format!("the namespace watch: {}", e.message)),
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(format!("the namespace watch: {e}")),
                },
                _ = tick.tick() => {
                    let now = root();
                    if now != published {
                        info!(namespaces = known.len(), "the root certificate changed: updating its ConfigMaps");
                        published = now;
                        for ns in &known {
                            self.ensure(ns, &published).await?;
                        }
                    }
                }
            }
            self.counts
                .foreign
                .store(self.foreign.len() as u64, Ordering::Relaxed);
        }
    }

    /// The ConfigMap in `ns` holds `root`, if it is Sextant's to write.
    async fn ensure(&mut self, ns: &str, root: &str) -> Result<(), String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let existing = api
            .get_opt(CONFIGMAP)
            .await
            .map_err(|e| format!("reading {ns}/{CONFIGMAP}: {e}"))?;
        match existing {
            None => {
                let cm = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(CONFIGMAP.to_owned()),
                        namespace: Some(ns.to_owned()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY.0.to_owned(),
                            MANAGED_BY.1.to_owned(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(KEY.to_owned(), root.to_owned())])),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => {
                        self.counts.created.fetch_add(1, Ordering::Relaxed);
                        debug!(namespace = ns, "root certificate ConfigMap created");
                        Ok(())
                    }
                    // Made meanwhile (by another replica): the next pass
                    // looks at it again.
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(format!("creating {ns}/{CONFIGMAP}: {e}")),
                }
            }
            Some(cm) => {
                let ours = cm
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MANAGED_BY.0))
                    .is_some_and(|v| v == MANAGED_BY.1);
                if !ours {
                    if self.foreign.insert(ns.to_owned()) {
                        warn!(
                            namespace = ns,
                            "{CONFIGMAP} there belongs to another controller (no {}={} label): left alone",
                            MANAGED_BY.0,
                            MANAGED_BY.1
                        );
                    }
                    return Ok(());
                }
                self.foreign.remove(ns);
                if cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(KEY))
                    .map(String::as_str)
                    == Some(root)
                {
                    return Ok(());
                }
                let patch = serde_json::json!({ "data": { KEY: root } });
                api.patch(CONFIGMAP, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| format!("updating {ns}/{CONFIGMAP}: {e}"))?;
                self.counts.updated.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}
