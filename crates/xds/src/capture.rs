//! What a capture-mode proxy receives instead of the explicit listeners:
//! Istio's layout (see [`crate::translate::capture`]), built per proxy from
//! the hosts it sees (its scope) and its own workload's ports.
//!
//! The outbound part depends on the visible services only: it is built once
//! per scope and topology generation and shared by every capture proxy with
//! that scope. The inbound part depends on the proxy's own ports (those of
//! the endpoints at its instance IPs, found through an index of endpoint
//! addresses built once per snapshot, since endpoints move without a
//! topology change) and is shared by every proxy with the same ports.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use sextant_core::MeshView;
use sextant_core::rules::PeerModes;

use crate::generational::Generational;
use crate::resource::{Resource, ResourceType};
use crate::scope::Scope;
use crate::snapshot::Snapshot;
use crate::translate::capture::{self as layout, CaptureOptions, InboundPort, PortPlan};
use crate::translate::mtls as mtls_layout;

/// Encoded resources by type and name.
#[derive(Debug, Default)]
pub struct ResourceSet {
    by_kind: [BTreeMap<Arc<str>, Arc<Resource>>; ResourceType::COUNT],
    digest: u64,
}

impl ResourceSet {
    pub(crate) fn add<M: prost::Message>(&mut self, kind: ResourceType, name: &str, m: &M) {
        let r = Resource::encode(kind, name, m);
        self.digest ^= Resource::digest(&r.name, &r.version);
        self.by_kind[kind.index()].insert(r.name.clone(), Arc::new(r));
    }

    pub(crate) fn get(&self, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.by_kind[kind.index()].get(name)
    }

    /// Its names of `kind`, sorted.
    pub(crate) fn names(&self, kind: ResourceType) -> impl Iterator<Item = &Arc<str>> {
        self.by_kind[kind.index()].keys()
    }

    /// Equal sets, equal digests.
    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }
}

/// One capture proxy's own resources: the outbound layout of its scope and
/// the inbound layout of its ports.
#[derive(Debug)]
pub struct CaptureSet {
    outbound: Arc<ResourceSet>,
    inbound: Arc<ResourceSet>,
    /// Equal sets, equal digests.
    pub digest: u64,
    /// Service ports capture cannot reach: TCP without a virtual IP, and
    /// ports equal to the proxy's own (`HOST:PORT`, with the reason).
    pub unreachable: Arc<[String]>,
    /// The proxy's own ports.
    pub inbound_ports: Arc<[InboundPort]>,
}

impl ResourceSet {
    pub(crate) fn same(a: &Arc<ResourceSet>, b: &Arc<ResourceSet>) -> bool {
        Arc::ptr_eq(a, b)
            || a.by_kind.iter().zip(&b.by_kind).all(|(x, y)| {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((n, r), (m, q))| n == m && r.version == q.version)
            })
    }
}

impl PartialEq for CaptureSet {
    fn eq(&self, other: &CaptureSet) -> bool {
        self.digest == other.digest
            && ResourceSet::same(&self.outbound, &other.outbound)
            && ResourceSet::same(&self.inbound, &other.inbound)
    }
}

impl CaptureSet {
    /// One of its resources.
    pub fn get(&self, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.outbound
            .get(kind, name)
            .or_else(|| self.inbound.get(kind, name))
    }

    /// Its resource names of one type, sorted.
    pub fn names(&self, kind: ResourceType) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self.outbound.by_kind[kind.index()]
            .keys()
            .chain(self.inbound.by_kind[kind.index()].keys())
            .cloned()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn outbound_set(
    view: &MeshView,
    scope: Option<&Scope>,
    options: &CaptureOptions,
    mtls: bool,
) -> (ResourceSet, Vec<String>) {
    // The services it sees, each with the rules its namespace sees.
    let in_scope = || {
        view.services
            .iter()
            .filter(|(h, _)| scope.is_none_or(|s| s.allows(h.as_str())))
    };
    let variants: Vec<sextant_core::MeshService> = in_scope()
        .filter_map(|(h, ms)| ms.variant(scope?.variant_of(h)?))
        .collect();
    let mut variants = variants.iter().peekable();
    let mut visible: Vec<&sextant_core::MeshService> = Vec::new();
    for (h, ms) in in_scope() {
        match variants.next_if(|v| v.service.hostname == *h) {
            Some(v) => visible.push(v),
            None => visible.push(ms),
        }
    }
    let plan = PortPlan::of(visible.iter().copied());
    // The proxy's Sidecar may set its own outbound policy.
    let scoped;
    let options = match scope.and_then(|s| s.outbound) {
        Some(policy) if policy != options.outbound_policy => {
            scoped = CaptureOptions {
                outbound_policy: policy,
                ..options.clone()
            };
            &scoped
        }
        _ => options,
    };
    let mut set = ResourceSet::default();
    set.add(
        ResourceType::Listener,
        layout::VIRTUAL_OUTBOUND,
        &layout::virtual_outbound(options),
    );
    let mut unreachable = plan.unreachable.clone();
    let mut ports: Vec<u32> = plan.http.keys().chain(plan.tls.keys()).copied().collect();
    ports.sort_unstable();
    ports.dedup();
    // A listener on the proxy's own ports would clash with the virtual
    // listeners there, and Envoy would reject every listener with it.
    ports.retain(|p| {
        let own = *p == options.outbound_port || *p == options.inbound_port;
        if own {
            let hosts = plan.http.get(p).into_iter().flatten().map(|(ms, _)| *ms);
            let hosts = hosts.chain(plan.tls.get(p).into_iter().flatten().copied());
            unreachable.extend(
                hosts.map(|ms| format!("{}:{p} (the proxy's own port)", ms.service.hostname)),
            );
        }
        !own
    });
    let mut notes = Vec::new();
    for port in ports {
        let tls = plan.tls.get(&port).map_or(&[][..], |v| &v[..]);
        let http = plan.http.get(&port);
        let l = layout::port_listener(port, http.is_some(), tls, options);
        set.add(ResourceType::Listener, &l.name.clone(), &l);
        if let Some(services) = http {
            let r = layout::port_route(port, services, options.outbound_policy, &mut notes);
            set.add(ResourceType::Route, &r.name.clone(), &r);
        }
    }
    for ((vip, port), ms) in &plan.tcp {
        let l = layout::vip_listener(*vip, *port, ms);
        set.add(ResourceType::Listener, &l.name.clone(), &l);
    }
    // A proxy with a workload certificate dials sidecars with mutual TLS:
    // its own copy of the visible services' clusters, with the transport
    // socket matches, in place of the snapshot's.
    if mtls && options.mtls.mode != mtls_layout::PeerMode::Disable {
        let mut unhonoured = Vec::new();
        for ms in &visible {
            for c in crate::translate::mesh_clusters(ms, &options.mtls, &mut unhonoured) {
                set.add(ResourceType::Cluster, &c.name.clone(), &c);
            }
        }
    }
    set.add(
        ResourceType::Cluster,
        layout::PASSTHROUGH,
        &layout::original_destination_cluster(layout::PASSTHROUGH),
    );
    set.add(
        ResourceType::Cluster,
        layout::BLACKHOLE,
        &layout::blackhole_cluster(),
    );
    (set, unreachable)
}

fn inbound_set(
    ports: &[InboundPort],
    options: &CaptureOptions,
    mtls: bool,
    peer: &PeerModes,
    authz: &Policies,
) -> ResourceSet {
    let mut set = ResourceSet::default();
    set.add(
        ResourceType::Listener,
        layout::VIRTUAL_INBOUND,
        &layout::virtual_inbound(ports, options, mtls, peer, &authz.0),
    );
    set.add(
        ResourceType::Cluster,
        layout::INBOUND_PASSTHROUGH,
        &layout::original_destination_cluster(layout::INBOUND_PASSTHROUGH),
    );
    for p in ports {
        let c = layout::inbound_cluster(*p);
        set.add(ResourceType::Cluster, &c.name.clone(), &c);
    }
    set
}

/// The authorization policies of one workload, in precedence order: equal
/// when their contents are (so alike workloads share an inbound set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policies(pub Vec<Arc<sextant_core::Rule>>);

impl std::hash::Hash for Policies {
    /// By the policies' keys only: equal sets have equal keys, and a lens
    /// lookup (per proxy, per topology change) must not encode the rules.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for r in &self.0 {
            r.key.hash(state);
        }
    }
}

/// The ports of the endpoints at each address, by address.
type PortIndex = HashMap<IpAddr, Vec<InboundPort>>;

fn port_index(view: &MeshView) -> PortIndex {
    let mut index: PortIndex = HashMap::new();
    for ms in view.services.values() {
        let s = &ms.service;
        for ep in &s.endpoints {
            let Some(ip) = ep.address.ip() else {
                continue;
            };
            for port in &s.ports {
                let target = ep.ports.get(&port.name).copied().unwrap_or(port.port);
                index.entry(ip).or_default().push(InboundPort {
                    port: target,
                    protocol: port.protocol,
                    deliver: None,
                });
            }
        }
    }
    for ports in index.values_mut() {
        ports.sort_unstable();
        // One chain per port: the first protocol (HTTP-like before TCP)
        // wins where services disagree.
        ports.dedup_by_key(|p| p.port);
    }
    index
}

/// What the outbound part of one scope gives: the set, and the service
/// ports capture cannot reach.
type Outbound = (Arc<ResourceSet>, Arc<[String]>);

/// Outbound sets per scope and topology generation, the address index per
/// snapshot, inbound sets per port set (they depend on nothing else, so
/// they are kept across generations); each bounded.
pub struct CaptureCache {
    outbound: Generational<(u64, bool), Outbound>,
    index: Generational<(), Arc<PortIndex>>,
    inbound: Generational<(Vec<InboundPort>, bool, PeerModes, Policies), Arc<ResourceSet>>,
}

impl Default for CaptureCache {
    fn default() -> Self {
        CaptureCache {
            outbound: Generational::new(MAX_CACHED_SETS),
            index: Generational::new(1),
            inbound: Generational::new(MAX_CACHED_SETS),
        }
    }
}

/// Distinct outbound or inbound sets kept.
pub const MAX_CACHED_SETS: usize = 4096;

impl CaptureCache {
    /// The capture set of a proxy with `scope` and instance `ips` in `snap`
    /// (with mutual TLS when it holds a workload certificate, `mtls`, under
    /// its peer authentication modes, `peer`, and its authorization
    /// policies, `authz`). Its inbound ports are `ingress` (its Sidecar's
    /// ingress listeners) when there are any, else those of the endpoints
    /// at its addresses.
    #[allow(clippy::too_many_arguments)]
    pub fn get(
        &self,
        snap: &Snapshot,
        options: &CaptureOptions,
        scope: Option<&Arc<Scope>>,
        ips: &[IpAddr],
        mtls: bool,
        peer: &PeerModes,
        authz: &Policies,
        ingress: &[InboundPort],
    ) -> Arc<CaptureSet> {
        let view = snap.view();
        let scope_digest = scope.map_or(0, |s| s.digest);
        let (outbound, unreachable) =
            self.outbound
                .get_or(snap.topology_generation, (scope_digest, mtls), || {
                    let (set, unreachable) = outbound_set(view, scope.map(|s| &**s), options, mtls);
                    (Arc::new(set), unreachable.into())
                });
        // Endpoints move without a topology change: the index is the
        // snapshot's.
        let index = self
            .index
            .get_or(snap.generation, (), || Arc::new(port_index(view)));
        let mut ports: Vec<InboundPort> = if ingress.is_empty() {
            ips.iter()
                .filter_map(|ip| index.get(ip))
                .flatten()
                .copied()
                .collect()
        } else {
            ingress.to_vec()
        };
        ports.sort_unstable();
        ports.dedup_by_key(|p| p.port);
        let inbound = self.inbound.get_or(
            0,
            (ports.clone(), mtls, peer.clone(), authz.clone()),
            || Arc::new(inbound_set(&ports, options, mtls, peer, authz)),
        );
        Arc::new(CaptureSet {
            digest: outbound.digest ^ inbound.digest.rotate_left(1),
            outbound,
            unreachable,
            inbound,
            inbound_ports: ports.into(),
        })
    }
}

#[cfg(test)]
mod tests;
