//! What Sextant does with the Kubernetes clusters it reads besides their
//! registries: the injection audit's metrics, the mesh's root certificate
//! published as ConfigMaps, and bearer tokens checked with TokenReview.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::{admin, config};

/// A client for each of `clusters`, by cluster id; one whose client cannot
/// be built is logged with `without` (what it goes without) and left out.
async fn kube_clients(
    clusters: &[sextant_k8s::K8sConfig],
    without: &str,
) -> Vec<(String, kube::Client)> {
    let mut out = Vec::new();
    for cluster in clusters {
        let client = match sextant_k8s::client_config(cluster).await {
            Ok(c) => kube::Client::try_from(c).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match client {
            Ok(client) => out.push((cluster.cluster_id.clone(), client)),
            Err(e) => warn!(cluster = %cluster.cluster_id, error = %e, "{without}"),
        }
    }
    out
}

/// The injection audit of each cluster as metrics:
/// `sextant_injection_pods{cluster,state}` (pods of injection-enabled
/// namespaces with no proxy, `missing`, or one from another template,
/// `outdated`) and `sextant_injection_audit_errors_total{cluster}`.
pub struct InjectionMetrics {
    clusters: Vec<(String, sextant_inject::audit::Auditor)>,
}

impl InjectionMetrics {
    /// Starts auditing each of `clusters` (one whose client cannot be
    /// built is logged and left out).
    pub async fn spawn(
        clusters: &[sextant_k8s::K8sConfig],
        audit: &config::InjectionAudit,
    ) -> InjectionMetrics {
        let clusters = kube_clients(clusters, "no injection audit for this cluster").await;
        let out = clusters
            .into_iter()
            .map(|(id, client)| {
                let auditor = sextant_inject::audit::Auditor::spawn(
                    client,
                    audit.label.clone(),
                    audit.template_hash.clone(),
                    audit.every,
                );
                (id, auditor)
            })
            .collect();
        InjectionMetrics { clusters: out }
    }
}

impl std::fmt::Debug for InjectionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InjectionMetrics")
    }
}

impl admin::Collector for InjectionMetrics {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        let mut p = admin::Families::new(encoder);
        p.gauges(
            "sextant_injection_pods",
            "Pods of injection-enabled namespaces without the current proxy: missing (none) or outdated (another template); sextant inject --audit lists them.",
            self.clusters.iter().flat_map(|(cluster, auditor)| {
                let c = auditor.counts();
                let known = c.known;
                [("missing", c.missing), ("outdated", c.outdated)]
                    .into_iter()
                    .filter(move |_| known)
                    .map(|(state, n)| {
                        (
                            vec![("cluster", cluster.clone()), ("state", state.to_owned())],
                            n as u64,
                        )
                    })
            }),
        )?;
        p.counters(
            "sextant_injection_audit_errors_total",
            "Injection audits that failed (the gauge keeps the last result).",
            self.clusters.iter().map(|(cluster, auditor)| {
                (vec![("cluster", cluster.clone())], auditor.counts().errors)
            }),
        )
    }
}

/// The mesh's root certificate published as the `istio-ca-root-cert`
/// ConfigMap in every namespace of each cluster, and what that did as
/// metrics (`sextant_ca_root_configmaps_total{cluster,action}`,
/// `sextant_ca_root_configmaps_foreign{cluster}`). The publishers stop
/// when this is dropped.
pub struct RootCertPublishers {
    clusters: Vec<(
        String,
        tokio::task::JoinHandle<()>,
        Arc<sextant_k8s::root_cert::RootCounts>,
    )>,
}

impl RootCertPublishers {
    /// Starts publishing `root()` into each of `clusters` (one whose client
    /// cannot be built is logged and left out).
    pub async fn spawn(
        clusters: &[sextant_k8s::K8sConfig],
        root: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> RootCertPublishers {
        let clusters = kube_clients(
            clusters,
            "the root certificate is not published to this cluster",
        )
        .await;
        let out = clusters
            .into_iter()
            .map(|(id, client)| {
                let counts = Arc::new(sextant_k8s::root_cert::RootCounts::default());
                let task = sextant_k8s::root_cert::spawn(client, root.clone(), counts.clone());
                (id, task, counts)
            })
            .collect();
        RootCertPublishers { clusters: out }
    }
}

impl Drop for RootCertPublishers {
    fn drop(&mut self) {
        for (_, task, _) in &self.clusters {
            task.abort();
        }
    }
}

impl std::fmt::Debug for RootCertPublishers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootCertPublishers")
    }
}

impl admin::Collector for RootCertPublishers {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        let mut p = admin::Families::new(encoder);
        p.counters(
            "sextant_ca_root_configmaps_total",
            "istio-ca-root-cert ConfigMaps written (created, updated) and failed API calls (error).",
            self.clusters.iter().flat_map(|(cluster, _, c)| {
                [
                    ("created", c.created.load(Relaxed)),
                    ("updated", c.updated.load(Relaxed)),
                    ("error", c.errors.load(Relaxed)),
                ]
                .map(|(action, v)| {
                    (
                        vec![("cluster", cluster.clone()), ("action", action.to_owned())],
                        v,
                    )
                })
            }),
        )?;
        p.gauges(
            "sextant_ca_root_configmaps_foreign",
            "Namespaces whose istio-ca-root-cert ConfigMap belongs to another controller (left alone).",
            self.clusters
                .iter()
                .map(|(cluster, _, c)| (vec![("cluster", cluster.clone())], c.foreign.load(Relaxed))),
        )
    }
}

/// Bearer tokens validated by a Kubernetes cluster's TokenReview (cached
/// for a minute per token), for [`sextant_xds::ServerConfig::tokens`].
pub async fn kubernetes_tokens(
    cluster: &sextant_k8s::K8sConfig,
    audiences: Vec<String>,
) -> anyhow::Result<sextant_xds::server::auth::Tokens> {
    use sextant_xds::server::auth::{Cached, TokenValidator, Tokens, Validation};
    struct Review(sextant_k8s::tokens::TokenReviewer);
    impl TokenValidator for Review {
        fn validate<'a>(&'a self, token: &'a str) -> Validation<'a> {
            Box::pin(self.0.review(token))
        }
    }
    let reviewer = sextant_k8s::tokens::TokenReviewer::new(cluster, audiences)
        .await
        .map_err(|e| anyhow::anyhow!("TokenReview: {e}"))?;
    Ok(Tokens(Arc::new(Cached::new(
        Review(reviewer),
        Duration::from_secs(60),
    ))))
}
