//! The Kubernetes registry's settings: flags and the `k8s:` section of the
//! file; one configuration per cluster.

use std::path::PathBuf;

use serde::Deserialize;

use super::*;

/// Kubernetes registry flags. Without --kubeconfig, the client reads
/// `KUBECONFIG` (a colon-separated list, as kubectl does), then
/// `~/.kube/config`, then the in-cluster service account.
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct K8sArgs {
    /// Kubeconfig file [default: KUBECONFIG, ~/.kube/config, in-cluster].
    #[arg(long, env = "SEXTANT_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig contexts; each is its own cluster and registry, merged by
    /// hostname [default: the current context].
    #[arg(
        long,
        env = "SEXTANT_K8S_CONTEXT",
        value_delimiter = ',',
        value_name = "NAME,..."
    )]
    #[serde(rename = "contexts")]
    pub k8s_context: Option<Vec<String>>,
    /// Cluster ids, one per context; the registry is k8s/ID
    /// [default: Kubernetes, or the context names when there are several].
    #[arg(
        long,
        env = "SEXTANT_K8S_CLUSTER_ID",
        value_delimiter = ',',
        value_name = "ID,..."
    )]
    #[serde(rename = "cluster_ids")]
    pub k8s_cluster_id: Option<Vec<String>>,
    /// Namespaces to watch [default: all].
    #[arg(
        long,
        env = "SEXTANT_K8S_NAMESPACES",
        value_delimiter = ',',
        value_name = "NS,..."
    )]
    #[serde(rename = "namespaces")]
    pub k8s_namespaces: Option<Vec<String>>,
    /// Only Services matching this label selector, e.g. `mesh=on`.
    #[arg(long, env = "SEXTANT_K8S_LABEL_SELECTOR", value_name = "SELECTOR")]
    #[serde(rename = "label_selector")]
    pub k8s_label_selector: Option<String>,
    /// The clusters' DNS domain.
    #[arg(long, env = "SEXTANT_CLUSTER_DOMAIN", value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// Do not read Nodes (no RBAC on nodes needed; endpoints get only
    /// their slice's zone, no region).
    #[arg(long, env = "SEXTANT_K8S_SKIP_NODES")]
    #[serde(rename = "skip_nodes", default)]
    pub k8s_skip_nodes: bool,
    /// Do not read Pods (no RBAC on pods needed; endpoints get no labels,
    /// so subsets select none of them).
    #[arg(long, env = "SEXTANT_K8S_SKIP_PODS")]
    #[serde(rename = "skip_pods", default)]
    pub k8s_skip_pods: bool,
    /// Do not read traffic rules (VirtualService, DestinationRule,
    /// HTTPRoute, GRPCRoute) from the cluster.
    #[arg(long, env = "SEXTANT_K8S_SKIP_RULES")]
    #[serde(rename = "skip_rules", default)]
    pub k8s_skip_rules: bool,
    /// Do not write HTTPRoute and GRPCRoute status (no patch RBAC needed).
    #[arg(long, env = "SEXTANT_K8S_SKIP_STATUS")]
    #[serde(rename = "skip_status", default)]
    pub k8s_skip_status: bool,
    /// The controller name route status is written under.
    #[arg(long, env = "SEXTANT_K8S_CONTROLLER_NAME", value_name = "NAME")]
    #[serde(rename = "controller_name")]
    pub k8s_controller_name: Option<String>,
    /// The GatewayClass whose Gateways Sextant serves to router proxies.
    #[arg(long, env = "SEXTANT_GATEWAY_CLASS", value_name = "NAME")]
    #[serde(rename = "gateway_class")]
    pub gateway_class: Option<String>,
    /// The IngressClass whose Ingresses Sextant serves (`spec.ingressClassName`,
    /// or the `kubernetes.io/ingress.class` annotation).
    #[arg(long, env = "SEXTANT_INGRESS_CLASS", value_name = "NAME")]
    #[serde(rename = "ingress_class")]
    pub ingress_class: Option<String>,
    /// The gateway, NAMESPACE/NAME, whose routers serve the Ingresses
    /// (`sextant agent --mode router --gateway` it); their TLS Secrets are
    /// read in its namespace.
    #[arg(long, env = "SEXTANT_INGRESS_GATEWAY", value_name = "NAMESPACE/NAME")]
    #[serde(rename = "ingress_gateway")]
    pub ingress_gateway: Option<String>,
    /// The namespace label that switches sidecar injection on (value
    /// `enabled`), as the webhook's namespaceSelector has it.
    #[arg(long, env = "SEXTANT_K8S_INJECTION_LABEL", value_name = "LABEL")]
    #[serde(rename = "injection_label")]
    pub k8s_injection_label: Option<String>,
    /// The injection template the webhook injects with, so that pods
    /// injected from an older one are counted [default: the built-in one].
    #[arg(long, env = "SEXTANT_K8S_INJECTION_TEMPLATE", value_name = "FILE")]
    #[serde(rename = "injection_template")]
    pub k8s_injection_template: Option<PathBuf>,
    /// How often the pods of injection-enabled namespaces are checked for
    /// a current proxy (metric `sextant_injection_pods`); 0s: never.
    #[arg(
        long,
        env = "SEXTANT_K8S_INJECTION_AUDIT_EVERY",
        value_name = "DURATION"
    )]
    #[serde(rename = "injection_audit_every")]
    pub k8s_injection_audit_every: Option<String>,
}

/// The control plane's injection audit: which pods should have the
/// current proxy (`sextant_injection_pods`).
#[derive(Clone, Debug)]
pub struct InjectionAudit {
    /// The namespace label that switches injection on.
    pub label: String,
    /// The current template's hash.
    pub template_hash: String,
    /// How often; zero: never.
    pub every: std::time::Duration,
}

impl Default for InjectionAudit {
    fn default() -> Self {
        InjectionAudit {
            label: sextant_inject::audit::DEFAULT_LABEL.to_owned(),
            template_hash: sextant_inject::Template::default().hash(),
            every: sextant_inject::audit::DEFAULT_EVERY,
        }
    }
}

impl K8sArgs {
    /// The injection audit's settings.
    pub(super) fn injection(&self, file: &K8sArgs, c: &mut Collector) -> InjectionAudit {
        let mut audit = InjectionAudit::default();
        if let Some((label, from_flag)) =
            either(&self.k8s_injection_label, &file.k8s_injection_label)
        {
            let name = label.rsplit('/').next().unwrap_or("");
            if name.is_empty()
                || name.len() > 63
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                c.bad(
                    "k8s.injection_label",
                    from_flag,
                    format!("{label:?} is not a label name"),
                );
            }
            audit.label = label;
        }
        if let Some((path, from_flag)) =
            either(&self.k8s_injection_template, &file.k8s_injection_template)
        {
            match sextant_inject::Template::load(&path) {
                Ok(t) => audit.template_hash = t.hash(),
                Err(e) => c.bad("k8s.injection_template", from_flag, e),
            }
        }
        if let Some(every) = c.duration(
            "k8s.injection_audit_every",
            &self.k8s_injection_audit_every,
            &file.k8s_injection_audit_every,
        ) {
            audit.every = every;
        }
        audit
    }

    /// One configuration per cluster.
    pub(super) fn resolve(&self, file: &K8sArgs, c: &mut Collector) -> Vec<K8sConfig> {
        let kubeconfig = either(&self.kubeconfig, &file.kubeconfig);
        if let Some((path, from_flag)) = &kubeconfig
            && !path.is_file()
        {
            c.bad_flag(
                "k8s.kubeconfig",
                "--kubeconfig",
                *from_flag,
                format!("{} does not exist or is not a file", path.display()),
            );
        }
        let mut base = K8sConfig {
            kubeconfig: kubeconfig.map(|(p, _)| p),
            ..Default::default()
        };
        let pick =
            |flag: &Option<Vec<String>>, file: &Option<Vec<String>>| -> (Vec<String>, bool) {
                let (list, from_flag) = either(flag, file).unwrap_or_default();
                let list = list
                    .into_iter()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                (list, from_flag)
            };
        let from_flag;
        (base.namespaces, from_flag) = pick(&self.k8s_namespaces, &file.k8s_namespaces);
        for ns in &base.namespaces {
            if let Some(p) = sextant_core::validate::dns_name_problem(ns).or_else(|| {
                ns.contains('.')
                    .then(|| "a namespace is one DNS label".to_owned())
            }) {
                c.bad("k8s.namespaces", from_flag, format!("{ns:?}: {p}"));
            }
        }
        base.label_selector = self
            .k8s_label_selector
            .clone()
            .or_else(|| file.k8s_label_selector.clone())
            .filter(|s| !s.trim().is_empty());
        if let Some((domain, from_flag)) = either(&self.cluster_domain, &file.cluster_domain) {
            let domain = domain.trim_end_matches('.').to_owned();
            if let Some(p) = sextant_core::validate::dns_name_problem(&domain) {
                c.bad_flag(
                    "k8s.cluster_domain",
                    "--cluster-domain",
                    from_flag,
                    format!("{domain:?}: {p}"),
                );
            }
            base.mapping.cluster_domain = domain;
        }
        base.watch_nodes = !(self.k8s_skip_nodes || file.k8s_skip_nodes);
        base.watch_pods = !(self.k8s_skip_pods || file.k8s_skip_pods);
        base.read_rules = !(self.k8s_skip_rules || file.k8s_skip_rules);
        base.write_status = !(self.k8s_skip_status || file.k8s_skip_status);
        if let Some((name, from_flag)) =
            either(&self.k8s_controller_name, &file.k8s_controller_name)
        {
            // Gateway API: a domain-prefixed path, at most 253 characters.
            let valid = name.len() <= 253
                && name.split_once('/').is_some_and(|(domain, path)| {
                    sextant_core::validate::dns_name_problem(domain).is_none()
                        && !path.is_empty()
                        && path
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=:/".contains(c))
                });
            if valid {
                base.controller_name = name;
            } else {
                c.bad_flag(
                    "k8s.controller_name",
                    "--k8s-controller-name",
                    from_flag,
                    format!("{name:?} is not a domain-prefixed path like example.com/mesh"),
                );
            }
        }

        if let Some((class, from_flag)) = either(&self.ingress_class, &file.ingress_class) {
            match sextant_core::validate::dns_name_problem(&class) {
                None => base.ingress_class = class,
                Some(p) => c.bad_flag(
                    "k8s.ingress_class",
                    "--ingress-class",
                    from_flag,
                    format!("{class:?}: {p}"),
                ),
            }
        }
        if let Some((gateway, from_flag)) = either(&self.ingress_gateway, &file.ingress_gateway) {
            let problem = match gateway.split_once('/') {
                Some((ns, name)) => sextant_core::validate::dns_name_problem(ns)
                    .or_else(|| sextant_core::validate::dns_name_problem(name)),
                None => Some("write NAMESPACE/NAME".into()),
            };
            match problem {
                None => base.ingress_gateway = gateway,
                Some(p) => c.bad_flag(
                    "k8s.ingress_gateway",
                    "--ingress-gateway",
                    from_flag,
                    format!("{gateway:?}: {p}"),
                ),
            }
        }
        if let Some((class, from_flag)) = either(&self.gateway_class, &file.gateway_class) {
            match sextant_core::validate::dns_name_problem(&class) {
                None => base.gateway_class = class,
                Some(p) => c.bad_flag(
                    "k8s.gateway_class",
                    "--gateway-class",
                    from_flag,
                    format!("{class:?}: {p}"),
                ),
            }
        }

        let (contexts, _) = pick(&self.k8s_context, &file.k8s_context);
        let (ids, ids_from_flag) = pick(&self.k8s_cluster_id, &file.k8s_cluster_id);
        let clusters: Vec<(Option<String>, String)> = match (contexts.len(), ids.len()) {
            (0, 0) => vec![(None, "Kubernetes".into())],
            (0, 1) => vec![(None, ids[0].clone())],
            (n, 0) if n > 1 => contexts
                .iter()
                .map(|c| (Some(c.clone()), c.clone()))
                .collect(),
            (1, 0) => vec![(Some(contexts[0].clone()), "Kubernetes".into())],
            (n, m) if n == m => contexts
                .iter()
                .cloned()
                .map(Some)
                .zip(ids.iter().cloned())
                .collect(),
            (n, m) => {
                c.bad_flag(
                    "k8s.cluster_ids",
                    "--k8s-cluster-id",
                    ids_from_flag,
                    format!("{m} ids for {} contexts; give one id per context", n.max(1)),
                );
                Vec::new()
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for (_, id) in &clusters {
            if id.contains('/') || id.chars().any(char::is_whitespace) {
                c.bad_flag(
                    "k8s.cluster_ids",
                    "--k8s-cluster-id",
                    ids_from_flag,
                    format!("{id:?} must not contain '/' or spaces"),
                );
            } else if !seen.insert(id.clone()) {
                c.bad_flag(
                    "k8s.cluster_ids",
                    "--k8s-cluster-id",
                    ids_from_flag,
                    format!("{id:?} is used twice"),
                );
            }
        }
        clusters
            .into_iter()
            .map(|(context, cluster_id)| K8sConfig {
                context,
                cluster_id,
                ..base.clone()
            })
            .collect()
    }
}
