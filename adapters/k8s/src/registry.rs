//! The registry's settings and face: what `lib.rs` re-exports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sextant_core::recover::{Backoff, resilient_task};
use sextant_core::{Error, Event, EventStream, Registry, RegistryId, RuleSource, RuleStream};

use crate::convert::Mapping;
pub use crate::watch::MAX_EVENT_BYTES;
use crate::{rules, services};

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
    /// The Gateway API GatewayClass whose Gateways Sextant serves (to
    /// router proxies). Default `sextant`.
    pub gateway_class: String,
    /// The IngressClass whose `networking.k8s.io/v1` Ingresses Sextant
    /// serves. Default `sextant`.
    pub ingress_class: String,
    /// The gateway (`NAMESPACE/NAME`) whose routers serve those Ingresses;
    /// their TLS Secrets are read in its namespace. Default
    /// `sextant/ingress`.
    pub ingress_gateway: String,
    /// Where the Gateways' `Programmed` status is read from: whether their
    /// routers hold them (filled by the control plane; empty, nothing is
    /// claimed programmed).
    pub progress: sextant_core::progress::ProgressBoard,
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
            gateway_class: "sextant".into(),
            ingress_class: "sextant".into(),
            ingress_gateway: "sextant/ingress".into(),
            progress: sextant_core::progress::ProgressBoard::default(),
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
            services::session(config.clone(), id.clone(), tx)
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
