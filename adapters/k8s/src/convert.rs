//! How Kubernetes objects become Sextant services: pure functions, tested on
//! real-shaped objects.
//!
//! - A Service `NAME` in `NAMESPACE` is the hostname
//!   `NAME.NAMESPACE.svc.CLUSTER_DOMAIN`; its labels are the Service's.
//! - Its TCP ports become service ports (UDP and SCTP ports are skipped: the
//!   mesh carries TCP). An unnamed port (allowed when it is the only one) is
//!   named `port-NUMBER`. Protocol: `appProtocol` when set, else the port
//!   name's prefix (`http-`, `http2-`, `grpc-`, `tcp-`, `tls-`), else TCP:
//!   Istio's rule.
//! - Endpoints come from every EndpointSlice labelled
//!   `kubernetes.io/service-name: NAME`, merged; the first address of each
//!   endpoint is used (the API says the addresses of one endpoint are
//!   fungible), so a dual-stack Service has one endpoint per family, from its
//!   IPv4 and IPv6 slices. `FQDN` slices give DNS endpoints. The target port
//!   of each service port is the slice port with the same name. An address
//!   listed twice with the same ports (a pod moving between slices) is kept
//!   once, at its best health.
//! - Conditions: `ready` -> healthy; not ready but `serving` and
//!   `terminating` -> draining (finishes its requests, gets no new ones);
//!   otherwise unhealthy. A missing `ready` counts as ready, as the API asks.
//! - Labels of an endpoint: those of the Pod its `targetRef` names (as
//!   Istio does; subsets select endpoints by them). An endpoint without a
//!   Pod behind it, or whose Pod is not known (yet), has none.
//! - Locality: zone from the slice's `zone`, else from the endpoint's node;
//!   region from the node's `topology.kubernetes.io/region` label.
//! - Cluster IPs become the service's virtual addresses. Headless services
//!   (`clusterIP: None`) are served the same way: Sextant always balances
//!   over pod endpoints.
//! - `ExternalName` services become DNS services: one endpoint, the external
//!   name, resolved by the proxy, on the service's own port numbers.
//!   An ExternalName service without ports is skipped (a cluster needs a port).
//!
//! Known limit: Sextant's model gives every endpoint every service port. An
//! endpoint in a slice that lacks one of the service's ports (a named target
//! port that a pod does not declare) is given that port at the service port's
//! number.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service as KService, ServicePort as KPort};
use k8s_openapi::api::discovery::v1::{Endpoint as KEndpoint, EndpointSlice};
use sextant_core::{
    Address, Endpoint, Error, Health, Hostname, Labels, Locality, Protocol, Service, ServicePort,
};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The node label for the region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The node label for the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Naming rules of one cluster.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// The cluster's DNS domain, `cluster.local` by default.
    pub cluster_domain: String,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            cluster_domain: "cluster.local".into(),
        }
    }
}

impl Mapping {
    /// `NAME.NAMESPACE.svc.CLUSTER_DOMAIN`.
    pub fn hostname(&self, namespace: &str, name: &str) -> Hostname {
        Hostname::new(format!("{name}.{namespace}.svc.{}", self.cluster_domain))
    }
}

/// The region and zone of a node, from its labels.
pub fn node_locality(node: &Node) -> Locality {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).cloned().unwrap_or_default();
    Locality {
        region: get(REGION_LABEL),
        zone: get(ZONE_LABEL),
        subzone: String::new(),
    }
}

/// The port protocol: `appProtocol`, else the name's prefix, else TCP.
pub fn port_protocol(name: &str, app_protocol: Option<&str>) -> Protocol {
    match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        Some("kubernetes.io/h2c") => Protocol::Http2,
        Some("kubernetes.io/ws") => Protocol::Http,
        Some("kubernetes.io/wss") => Protocol::Tls,
        Some(p) if !p.is_empty() => Protocol::from_port_name(p),
        _ => Protocol::from_port_name(name),
    }
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
}

/// The model's name for a Kubernetes port: its own, or `port-NUMBER`.
fn port_name(p: &KPort) -> String {
    match p.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => format!("port-{}", p.port),
    }
}

fn health(e: &KEndpoint) -> Health {
    let c = e.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    if ready {
        Health::Healthy
    } else if serving && terminating {
        Health::Draining
    } else {
        Health::Unhealthy
    }
}

fn health_rank(h: Health) -> u8 {
    match h {
        Health::Healthy => 3,
        Health::Draining => 2,
        Health::Unknown => 1,
        Health::Unhealthy => 0,
    }
}

/// `NAMESPACE/NAME` of an object, for messages.
pub fn object_name(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// The Service annotation that limits which namespaces see it (Istio's).
pub const EXPORT_TO: &str = "networking.istio.io/exportTo";

/// Builds the service for `svc` from its slices. `Ok(None)` when the service
/// has nothing the mesh can carry (no TCP port). Endpoints that cannot be
/// read are skipped and each reported in the returned problems.
pub fn service(
    mapping: &Mapping,
    svc: &KService,
    slices: &[&EndpointSlice],
    nodes: &HashMap<String, Locality>,
    pods: &HashMap<(String, String), Labels>,
) -> Result<(Option<Service>, Vec<Error>), Error> {
    let what = object_name("Service", &svc.metadata);
    let (Some(namespace), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
        return Err(Error::invalid_object(
            what,
            "metadata.name and metadata.namespace are required",
        ));
    };
    let spec = svc.spec.clone().unwrap_or_default();
    let mut out = Service::new(mapping.hostname(namespace, name));
    out.namespace = namespace.clone();
    out.labels = svc.metadata.labels.clone().unwrap_or_default();
    // Istio's annotation: the namespaces whose proxies see the Service.
    if let Some(export) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO))
    {
        out.export_to = export
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
    }
    // Model port name -> the Kubernetes port name the slices use.
    let mut k8s_names: Vec<(String, String)> = Vec::new();
    for p in spec.ports.iter().flatten() {
        if !is_tcp(p.protocol.as_deref()) {
            continue;
        }
        let Ok(number) = u32::try_from(p.port) else {
            return Err(Error::invalid_object(
                what,
                format!("port {} is out of range", p.port),
            ));
        };
        let model_name = port_name(p);
        out.ports.push(ServicePort {
            protocol: port_protocol(&model_name, p.app_protocol.as_deref()),
            ..ServicePort::new(&model_name, number)
        });
        k8s_names.push((model_name, p.name.clone().unwrap_or_default()));
    }
    if out.ports.is_empty() {
        return Ok((None, Vec::new()));
    }
    for ip in spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
    {
        if let Ok(ip) = ip.parse::<IpAddr>()
            && !out.addresses.contains(&ip)
        {
            out.addresses.push(ip);
        }
    }

    if spec.type_.as_deref() == Some("ExternalName") {
        let Some(external) = spec.external_name.filter(|n| !n.is_empty()) else {
            return Err(Error::invalid_object(
                what,
                "type ExternalName without spec.externalName",
            ));
        };
        let address: Address = external
            .trim_end_matches('.')
            .parse()
            .map_err(|e| Error::invalid_object(what.clone(), format!("spec.externalName: {e}")))?;
        out.endpoints.push(Endpoint::new(address));
        return Ok((Some(out), Vec::new()));
    }

    let mut problems = Vec::new();
    // Keyed by address and ports: one pod listed in two slices is one endpoint.
    let mut by_address: BTreeMap<(Address, BTreeMap<String, u32>), Endpoint> = BTreeMap::new();
    for slice in slices {
        let slice_name = object_name("EndpointSlice", &slice.metadata);
        let family = slice.address_type.as_str();
        if !matches!(family, "IPv4" | "IPv6" | "FQDN") {
            problems.push(Error::invalid_object(
                slice_name,
                format!("unknown addressType {family:?}"),
            ));
            continue;
        }
        // Target port per model port name, from the slice's port of the same name.
        let mut ports = BTreeMap::new();
        for (model, k8s) in &k8s_names {
            let found =
                slice.ports.iter().flatten().find(|p| {
                    p.name.as_deref().unwrap_or("") == k8s && is_tcp(p.protocol.as_deref())
                });
            if let Some(n) = found
                .and_then(|p| p.port)
                .and_then(|n| u32::try_from(n).ok())
            {
                ports.insert(model.clone(), n);
            }
        }
        if ports.is_empty() {
            // The slice serves none of the service's ports (yet).
            continue;
        }
        for e in &slice.endpoints {
            let Some(first) = e.addresses.first() else {
                problems.push(Error::invalid_object(
                    slice_name.clone(),
                    "an endpoint without addresses",
                ));
                continue;
            };
            let address = match family {
                "FQDN" => first.parse::<Address>().map_err(|e| e.to_string()),
                _ => first
                    .parse::<IpAddr>()
                    .map(Address::Ip)
                    .map_err(|e| format!("{first:?} is not an {family} address: {e}")),
            };
            let address = match address {
                Ok(a) => a,
                Err(reason) => {
                    problems.push(Error::invalid_object(slice_name.clone(), reason));
                    continue;
                }
            };
            let node = e.node_name.as_deref().and_then(|n| nodes.get(n));
            let mut locality = node.cloned().unwrap_or_default();
            if let Some(zone) = e.zone.as_deref().filter(|z| !z.is_empty()) {
                zone.clone_into(&mut locality.zone);
            }
            let mut ep = Endpoint::new(address.clone());
            ep.ports = ports.clone();
            ep.locality = locality;
            ep.health = health(e);
            if let Some(labels) = endpoint_pod(slice, e).and_then(|p| pods.get(&p)) {
                ep.labels = labels.clone();
            }
            let key = (address, ep.ports.clone());
            match by_address.get(&key) {
                Some(prev) if health_rank(prev.health) >= health_rank(ep.health) => {}
                _ => {
                    by_address.insert(key, ep);
                }
            }
        }
    }
    out.endpoints = by_address.into_values().collect();
    Ok((Some(out), problems))
}

/// The Pod behind an endpoint of `slice`: `(namespace, name)` from its
/// `targetRef` when that names a Pod.
pub fn endpoint_pod(slice: &EndpointSlice, e: &KEndpoint) -> Option<(String, String)> {
    let r = e.target_ref.as_ref()?;
    if r.kind.as_deref() != Some("Pod") {
        return None;
    }
    let ns = r
        .namespace
        .clone()
        .or_else(|| slice.metadata.namespace.clone())?;
    Some((ns, r.name.clone()?))
}

/// The Service an EndpointSlice belongs to: `(namespace, name)`.
pub fn slice_owner(slice: &EndpointSlice) -> Option<(String, String)> {
    let ns = slice.metadata.namespace.clone()?;
    let name = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    Some((ns, name))
}

#[cfg(test)]
mod tests;
