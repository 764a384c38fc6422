//! What the settings build: the control plane with its registries and
//! rule sources ([`Settings::sextant`]), and the file registry's checks for
//! `sextant check-config`. Reading and checking the settings is `mod.rs`.

use std::sync::Arc;

use sextant_consul::ConsulRegistry;
use sextant_core::Registry;
use sextant_core::groups::WorkloadGroups;
use sextant_etcd::EtcdRegistry;
use sextant_file::{FileRegistry, FileRegistryConfig, Loader};
use sextant_k8s::{K8sEntries, K8sRegistry};

use super::{RegistryKind, Settings, TokenSource, XdsTls};

/// The sources of WorkloadGroups, in `--registries` order.
type GroupSources = Vec<Arc<dyn WorkloadGroups>>;

impl Settings {
    /// The control plane these settings describe, with its registries and
    /// rule sources built; start it with [`crate::Sextant::start`]. Fails
    /// when the bearer-token validator cannot be built (a token file that
    /// does not load, a cluster that cannot be reached for TokenReview).
    pub async fn sextant(&self) -> anyhow::Result<crate::Sextant> {
        let mut server = self.server.clone();
        server.tokens = match &self.xds_tokens {
            TokenSource::None => None,
            TokenSource::File(path) => {
                let file = sextant_xds::server::auth::TokenFile::load(path)
                    .map_err(|e| anyhow::anyhow!(e))?;
                Some(sextant_xds::server::auth::Tokens(Arc::new(file)))
            }
            TokenSource::Review(audiences) => {
                let cluster = self.k8s.first().ok_or_else(|| {
                    anyhow::anyhow!("--xds-token-review needs a Kubernetes cluster")
                })?;
                Some(crate::kubernetes_tokens(cluster, audiences.clone()).await?)
            }
        };
        let mut sextant = crate::Sextant::new()
            .xds_plaintext(self.xds_addr)
            .admin_addr(self.admin_addr)
            .admin_token(self.admin_token.clone())
            .push_traces(self.otlp_endpoint.clone())
            .resolve_names(self.dns.clone())
            .server_config(server)
            .outbound_addr(self.translate.outbound_addr)
            .tcp_port_offset(self.translate.tcp_port_offset)
            .aggregator_config(self.aggregator.clone())
            .debounce(self.debounce.clone())
            .drain_timeout(self.drain_timeout);
        let authority = match &self.ca {
            Some(ca) => {
                let dir = ca.dir.clone();
                let (trust_domain, ttl) = (self.trust_domain.clone(), ca.max_ttl);
                let authority = tokio::task::spawn_blocking(move || {
                    sextant_ca::Authority::open(&dir, &trust_domain, ttl)
                })
                .await?
                .map_err(|e| anyhow::anyhow!("--ca-dir: {e}"))?;
                Some(Arc::new(authority))
            }
            None => None,
        };
        if let Some(authority) = &authority {
            sextant = sextant.certificate_authority(authority.clone());
        }
        match (self.xds_tls.clone(), &authority) {
            (Some((addr, XdsTls::Files(files))), _) => sextant = sextant.xds_tls(addr, files),
            (Some((addr, XdsTls::FromCa { names, client_auth })), Some(authority)) => {
                let made =
                    sextant_ca::serving::CaServing::new(authority.clone(), &names, client_auth);
                sextant = sextant.xds_tls(
                    addr,
                    sextant_xds::server::tls::TlsSource::Issued(Arc::new(made)),
                );
            }
            (Some((_, XdsTls::FromCa { .. })), None) => {
                anyhow::bail!("the TLS port's certificate comes from the CA, and there is none")
            }
            (None, _) => {}
        }
        for r in self.rule_sources_reporting_to(&sextant.progress_board()) {
            sextant = sextant.rules_arc(r);
        }
        let (registries, groups) = self.build_registries_with_groups();
        for r in registries {
            sextant = sextant.registry_arc(r);
        }
        for g in groups {
            sextant = sextant.workload_groups(g);
        }
        sextant = sextant.workload_entry_grace(self.workload_entry_grace);
        #[cfg(feature = "k8s")]
        if let Some(authority) = &authority
            && self.registries.contains(&RegistryKind::Kubernetes)
        {
            let authority = authority.clone();
            sextant = sextant.metrics_collector(Arc::new(
                crate::RootCertPublishers::spawn(&self.k8s, Arc::new(move || authority.root_pem()))
                    .await,
            ));
        }
        if self.registries.contains(&RegistryKind::Kubernetes) && !self.injection.every.is_zero() {
            sextant = sextant.metrics_collector(Arc::new(
                crate::InjectionMetrics::spawn(&self.k8s, &self.injection).await,
            ));
        }
        Ok(sextant)
    }

    /// Problems in the registry files (every file, every problem).
    pub fn check_registry_files(&self) -> Vec<String> {
        if !self.registries.contains(&RegistryKind::File) {
            return Vec::new();
        }
        let loaded = Loader::new(self.files.clone()).load();
        loaded.problems.iter().map(ToString::to_string).collect()
    }

    /// What `istioctl analyze` would warn about in the registry files'
    /// rules, against the files' services (see
    /// [`sextant_core::rules::analyze`]). Rules and services from other
    /// registries are not read here.
    pub fn analyze_registry_files(&self) -> Vec<String> {
        if !self.registries.contains(&RegistryKind::File) {
            return Vec::new();
        }
        let loaded = Loader::new(self.files.clone()).load();
        sextant_core::rules::analyze(&loaded.services, &loaded.rules)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The file registry (also a rule source), when the files are read.
    fn file_registry(&self) -> FileRegistry {
        FileRegistry::new(
            "file/main",
            self.files.clone(),
            FileRegistryConfig::default(),
        )
    }

    /// The Consul registry (also a rule source: its config entries).
    fn consul_registry(&self) -> ConsulRegistry {
        let dc = self.consul.datacenter.as_deref().unwrap_or("main");
        ConsulRegistry::new(format!("consul/{dc}"), self.consul.clone())
    }

    /// The etcd registry (also a rule source).
    fn etcd_registry(&self) -> EtcdRegistry {
        EtcdRegistry::new("etcd/main", self.etcd.clone())
    }

    /// The sources of traffic rules, in `--registries` order (the first
    /// one's rule for a host is in force): the registry files (`routes:`,
    /// `policies:`), etcd (`PREFIX routes/`, `PREFIX policies/`) and
    /// Consul (service-router, -splitter and -resolver config entries).
    pub fn build_rule_sources(&self) -> Vec<Arc<dyn sextant_core::RuleSource>> {
        self.rule_sources_reporting_to(&sextant_core::progress::ProgressBoard::default())
    }

    /// As [`Settings::build_rule_sources`], the Kubernetes ones reading
    /// the proxies' progress from `board` (Gateway status).
    fn rule_sources_reporting_to(
        &self,
        board: &sextant_core::progress::ProgressBoard,
    ) -> Vec<Arc<dyn sextant_core::RuleSource>> {
        let mut out: Vec<Arc<dyn sextant_core::RuleSource>> = Vec::new();
        for kind in &self.registries {
            match kind {
                RegistryKind::File => out.push(Arc::new(self.file_registry())),
                RegistryKind::Etcd => out.push(Arc::new(self.etcd_registry())),
                RegistryKind::Consul => out.push(Arc::new(self.consul_registry())),
                RegistryKind::Kubernetes => {
                    for cluster in self.k8s.iter().filter(|c| c.read_rules) {
                        let mut cluster = cluster.clone();
                        cluster.progress = board.clone();
                        out.push(Arc::new(K8sRegistry::new(cluster)));
                    }
                }
            }
        }
        out
    }

    /// The registries, in priority order (Kubernetes: one per cluster).
    /// Settings are validated by [`Settings::resolve`]; building cannot fail.
    pub fn build_registries(&self) -> Vec<Arc<dyn Registry>> {
        self.build_registries_with_groups().0
    }

    /// As [`Settings::build_registries`], with the sources of
    /// WorkloadGroups among them (files, etcd), in the same order.
    fn build_registries_with_groups(&self) -> (Vec<Arc<dyn Registry>>, GroupSources) {
        let mut out: Vec<Arc<dyn Registry>> = Vec::new();
        let mut groups: GroupSources = Vec::new();
        for kind in &self.registries {
            match kind {
                RegistryKind::File => {
                    let file = self.file_registry();
                    groups.push(Arc::new(file.workload_groups()));
                    out.push(Arc::new(file));
                }
                RegistryKind::Etcd => {
                    let etcd = self.etcd_registry();
                    groups.push(etcd.workload_groups());
                    out.push(Arc::new(etcd));
                }
                RegistryKind::Consul => out.push(Arc::new(self.consul_registry())),
                RegistryKind::Kubernetes => {
                    for cluster in &self.k8s {
                        out.push(Arc::new(K8sRegistry::new(cluster.clone())));
                        // Its ServiceEntries, after its Services (see
                        // sextant_k8s::K8sEntries).
                        let entries = K8sEntries::new(cluster.clone());
                        groups.push(entries.workload_groups());
                        out.push(Arc::new(entries));
                    }
                }
            }
        }
        (out, groups)
    }
}
