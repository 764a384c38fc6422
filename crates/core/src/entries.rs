//! Istio's `ServiceEntry` and `WorkloadEntry` as services of the canonical
//! model: the services a mesh meets outside its platforms (an external
//! API, a database on a VM, a name only DNS knows).
//!
//! The types are the entries' specs as Istio writes them (camelCase,
//! unknown fields refused), with the object's `name` and `namespace` beside
//! them: a registry file or an etcd document writes them so, and the
//! Kubernetes adapter fills `name`, `namespace` and `created` from the
//! object's metadata. [`services_from_entries`] turns a whole set into
//! services, a pure function every adapter shares, so that an entry means
//! the same thing wherever it was written.
//!
//! What an entry becomes:
//! - one service per host, in the entry's namespace, with its ports,
//!   addresses, `exportTo`, `location` and `resolution`;
//! - its endpoints: the entry's own `endpoints`, or the workloads its
//!   `workloadSelector` selects in its namespace (WorkloadEntries, and the
//!   pods a Kubernetes adapter hands in as workloads); with resolution DNS
//!   and neither, the host itself (the name is resolved);
//! - a host two entries declare: the older entry wins (creation time, then
//!   namespace and name: never the order in which they were read) and the
//!   other is reported as a problem naming the winner, its other hosts
//!   still served.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{
    Address, Endpoint, Health, Hostname, Labels, Locality, Location, Protocol, Resolution, Service,
    ServicePort,
};

/// The label an endpoint's network is written under (Istio's).
pub const NETWORK_LABEL: &str = "topology.istio.io/network";

/// Istio's `ServiceEntry`: hosts the mesh should know, with their ports
/// and where their instances are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// The object's name (in a file: required).
    #[serde(default)]
    pub name: String,
    /// Its namespace; `default` when not given.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// When the object was created (RFC 3339, from Kubernetes metadata):
    /// the older of two entries for one host wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The hosts: one service each.
    pub hosts: Vec<String>,
    /// Virtual IP addresses (CIDR ranges are not served).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The ports.
    #[serde(default)]
    pub ports: Vec<EntryPort>,
    /// `MESH_EXTERNAL` (Istio's default) or `MESH_INTERNAL`.
    #[serde(default = "external")]
    pub location: Location,
    /// `NONE` (Istio's default), `STATIC`, `DNS` or `DNS_ROUND_ROBIN`.
    #[serde(default = "none")]
    pub resolution: Resolution,
    /// Instances written in the entry.
    #[serde(default)]
    pub endpoints: Vec<WorkloadSpec>,
    /// Or the workloads of its namespace whose labels hold these.
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    /// The namespaces that see it (as [`Service::export_to`]).
    #[serde(default)]
    pub export_to: Vec<String>,
    /// The identities the instances' certificates carry. Accepted and
    /// not yet enforced: a sidecar checks an upstream's certificate
    /// against the mesh's trust domain.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

fn external() -> Location {
    Location::MeshExternal
}

fn none() -> Resolution {
    Resolution::None
}

/// One port of a [`ServiceEntry`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryPort {
    /// The port number.
    pub number: u32,
    /// `HTTP`, `HTTPS`, `HTTP2`, `GRPC`, `TLS`, `TCP` (and Istio's other
    /// TCP protocols: `MONGO`, `MYSQL`, `REDIS`); from the name when not
    /// given.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Its name; `PROTOCOL-NUMBER` in lowercase when not given.
    #[serde(default)]
    pub name: Option<String>,
    /// Where the instances listen, when not on `number` (an instance's
    /// own `ports` take precedence).
    #[serde(default)]
    pub target_port: Option<u32>,
}

/// Selects workloads by their labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must carry.
    #[serde(default)]
    pub labels: Labels,
}

/// One instance: a `WorkloadEntry`'s spec, also a ServiceEntry endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// IP address or DNS name.
    #[serde(default)]
    pub address: Option<String>,
    /// Target port per port name.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    /// Its labels (what a `workloadSelector` matches).
    #[serde(default)]
    pub labels: Labels,
    /// Its network (kept as the `topology.istio.io/network` label).
    #[serde(default)]
    pub network: Option<String>,
    /// `REGION/ZONE/SUBZONE`.
    #[serde(default)]
    pub locality: Option<String>,
    /// Load-balancing weight; 1 when not given or 0.
    #[serde(default)]
    pub weight: Option<u32>,
    /// The service account it runs as. Accepted and not yet enforced (as
    /// [`ServiceEntry::subject_alt_names`]).
    #[serde(default)]
    pub service_account: Option<String>,
}

/// Istio's `WorkloadEntry`: one instance outside the platforms (a VM).
/// Written as its name, namespace and the spec's fields side by side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WorkloadEntryDoc", into = "WorkloadEntryDoc")]
pub struct WorkloadEntry {
    /// The object's name (in a file: required).
    pub name: String,
    /// Its namespace; `default` when not given.
    pub namespace: String,
    /// The instance.
    pub spec: WorkloadSpec,
    /// Whether it takes traffic: `UNHEALTHY` keeps it out of every
    /// service that selects it (Istio keeps this in the object's `Healthy`
    /// condition; an auto-registered VM's agent reports it).
    pub health: Health,
}

/// How a WorkloadEntry is written (serde's `flatten` would not refuse
/// unknown fields).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadEntryDoc {
    #[serde(default)]
    name: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_account: Option<String>,
    #[serde(default, skip_serializing_if = "is_healthy")]
    health: Health,
}

fn is_healthy(h: &Health) -> bool {
    *h == Health::Healthy
}

impl From<WorkloadEntry> for WorkloadEntryDoc {
    fn from(e: WorkloadEntry) -> Self {
        WorkloadEntryDoc {
            name: e.name,
            namespace: e.namespace,
            address: e.spec.address,
            ports: e.spec.ports,
            labels: e.spec.labels,
            network: e.spec.network,
            locality: e.spec.locality,
            weight: e.spec.weight,
            service_account: e.spec.service_account,
            health: e.health,
        }
    }
}

impl From<WorkloadEntryDoc> for WorkloadEntry {
    fn from(d: WorkloadEntryDoc) -> Self {
        WorkloadEntry {
            name: d.name,
            namespace: d.namespace,
            spec: WorkloadSpec {
                address: d.address,
                ports: d.ports,
                labels: d.labels,
                network: d.network,
                locality: d.locality,
                weight: d.weight,
                service_account: d.service_account,
            },
            health: d.health,
        }
    }
}

impl ServiceEntry {
    /// How problems name it: `ServiceEntry NAMESPACE/NAME`.
    pub fn object(&self) -> String {
        Self::object_of(&self.namespace, &self.name)
    }

    /// How problems name the ServiceEntry `namespace/name` (a source that
    /// maps problems back to its own keys asks this).
    pub fn object_of(namespace: &str, name: &str) -> String {
        format!("ServiceEntry {namespace}/{name}")
    }
}

impl WorkloadEntry {
    /// How problems name it: `WorkloadEntry NAMESPACE/NAME`.
    pub fn object(&self) -> String {
        Self::object_of(&self.namespace, &self.name)
    }

    /// How problems name the WorkloadEntry `namespace/name`.
    pub fn object_of(namespace: &str, name: &str) -> String {
        format!("WorkloadEntry {namespace}/{name}")
    }
}

/// What a set of entries becomes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Converted {
    /// The services, in hostname order.
    pub services: Vec<Service>,
    /// The entry each service's host was taken from (as
    /// [`ServiceEntry::object`] names it).
    pub declared_by: BTreeMap<Hostname, String>,
    /// Per object (as [`ServiceEntry::object`] names it), what is wrong
    /// with it or what of it is not served; the rest of it is.
    pub problems: BTreeMap<String, String>,
}

impl Converted {
    /// Only the services that pass [`Service::validate`]: the others' are
    /// problems of the entry that declared them (as the aggregator would
    /// refuse them, but named by the entry).
    pub fn validated(mut self) -> Converted {
        let mut services = Vec::with_capacity(self.services.len());
        for s in std::mem::take(&mut self.services) {
            match s.validate() {
                Ok(()) => services.push(s),
                Err(e) => {
                    let object = self.declared_by.remove(&s.hostname).unwrap_or_default();
                    let problem = self.problems.entry(object).or_default();
                    if !problem.is_empty() {
                        problem.push_str("; ");
                    }
                    problem.push_str(&e.to_string());
                }
            }
        }
        self.services = services;
        self
    }
}

/// The services a set of entries declares (see the module's text), with
/// every problem by object. `workloads` are what a `workloadSelector` can
/// select: WorkloadEntries, and pods as a Kubernetes adapter hands them in.
pub fn services_from_entries(entries: &[ServiceEntry], workloads: &[WorkloadEntry]) -> Converted {
    let mut out = Converted::default();
    let mut order: Vec<&ServiceEntry> = entries.iter().collect();
    // Oldest first: an entry without a creation time (a file's) sorts
    // after those with one, then by namespace and name.
    order.sort_by(|a, b| {
        (a.created.is_none(), &a.created, &a.namespace, &a.name).cmp(&(
            b.created.is_none(),
            &b.created,
            &b.namespace,
            &b.name,
        ))
    });
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    for entry in order {
        let mut notes: Vec<String> = Vec::new();
        let Some(template) = template(entry, &mut notes) else {
            out.problems.insert(entry.object(), notes.join("; "));
            continue;
        };
        let endpoints = endpoints(entry, &template.ports, workloads, &mut notes);
        let accounts = service_accounts(entry, workloads);
        let mut seen = BTreeSet::new();
        for host in &entry.hosts {
            if !seen.insert(host) {
                continue;
            }
            if host.contains('*') {
                notes.push(format!("host {host:?}: wildcard hosts are not served yet"));
                continue;
            }
            if let Some(first) = owner.get(host) {
                notes.push(format!(
                    "host {host:?} is also declared by {first}, which is older and wins; not served from this entry"
                ));
                continue;
            }
            owner.insert(host.clone(), entry.object());
            let mut service = template.clone();
            service.hostname = Hostname::new(host);
            service.identities.service_accounts = accounts.clone();
            service.endpoints = match &endpoints {
                Some(endpoints) => endpoints.clone(),
                // DNS with neither endpoints nor a selector: the host
                // itself is the name resolved.
                None => {
                    let spec = WorkloadSpec {
                        address: Some(host.clone()),
                        ..WorkloadSpec::default()
                    };
                    match endpoint(&spec, entry, &template.ports) {
                        Ok(e) => vec![e],
                        Err(e) => {
                            notes.push(format!("host {host:?}: {e}"));
                            Vec::new()
                        }
                    }
                }
            };
            out.declared_by
                .insert(service.hostname.clone(), entry.object());
            services.insert(host.clone(), service);
        }
        if !notes.is_empty() {
            out.problems.insert(entry.object(), notes.join("; "));
        }
    }
    out.services = services.into_values().collect();
    out
}

/// The service every host of `entry` shares (hostname and endpoints
/// aside), or `None` when the entry cannot be served at all.
fn template(entry: &ServiceEntry, notes: &mut Vec<String>) -> Option<Service> {
    if entry.name.is_empty() {
        notes.push("the entry has no name".into());
    }
    if entry.hosts.is_empty() {
        notes.push("hosts: at least one host is required".into());
    }
    if !entry.endpoints.is_empty() && entry.workload_selector.is_some() {
        notes.push("endpoints and workloadSelector cannot be used together".into());
    }
    let mut ports = Vec::new();
    for (i, p) in entry.ports.iter().enumerate() {
        let protocol = match p.protocol.as_deref() {
            Some(given) => match entry_protocol(given) {
                Some(protocol) => protocol,
                None => {
                    notes.push(format!("ports[{i}].protocol: {given:?} is not a protocol Sextant serves (HTTP, HTTPS, HTTP2, GRPC, TLS, TCP, MONGO, MYSQL, REDIS)"));
                    continue;
                }
            },
            None => p
                .name
                .as_deref()
                .map_or(Protocol::Tcp, Protocol::from_port_name),
        };
        let name = p.name.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                p.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase(),
                p.number
            )
        });
        ports.push(ServicePort {
            name,
            port: p.number,
            protocol,
        });
    }
    if ports.is_empty() && entry.ports.is_empty() {
        notes.push("ports: at least one port is required".into());
    }
    let mut addresses = Vec::new();
    for a in &entry.addresses {
        match a.parse::<IpAddr>() {
            Ok(ip) => addresses.push(ip),
            Err(_) if a.contains('/') => notes.push(format!(
                "address {a:?}: CIDR ranges are not served yet; the entry is served without it"
            )),
            Err(_) => notes.push(format!("address {a:?} is not an IP address")),
        }
    }
    if entry.name.is_empty() || entry.hosts.is_empty() || ports.is_empty() {
        return None;
    }
    let mut service = Service::new(entry.hosts[0].as_str());
    service.namespace = entry.namespace.clone();
    service.ports = ports;
    service.addresses = addresses;
    service.export_to = entry.export_to.clone();
    service.resolution = Some(entry.resolution);
    service.location = entry.location;
    service.identities.subject_alt_names = entry.subject_alt_names.clone();
    Some(service)
}

/// Istio's port protocols as Sextant's; `None` for one it does not serve.
fn entry_protocol(name: &str) -> Option<Protocol> {
    Some(match name.to_ascii_uppercase().as_str() {
        "HTTP" => Protocol::Http,
        "HTTP2" => Protocol::Http2,
        "GRPC" | "GRPC-WEB" => Protocol::Grpc,
        "HTTPS" | "TLS" => Protocol::Tls,
        "TCP" | "MONGO" | "MYSQL" | "REDIS" => Protocol::Tcp,
        _ => return None,
    })
}

/// The workloads of `entry`'s namespace whose labels hold `selector`'s.
fn selected<'a>(
    entry: &'a ServiceEntry,
    selector: &'a WorkloadSelector,
    workloads: &'a [WorkloadEntry],
) -> impl Iterator<Item = &'a WorkloadEntry> {
    workloads.iter().filter(move |w| {
        w.namespace == entry.namespace
            && selector
                .labels
                .iter()
                .all(|(k, v)| w.spec.labels.get(k) == Some(v))
    })
}

/// The service accounts the instances of `entry` run as (its own
/// endpoints', or the selected workloads'), sorted, each once.
fn service_accounts(entry: &ServiceEntry, workloads: &[WorkloadEntry]) -> Vec<String> {
    let mut out: Vec<String> = match &entry.workload_selector {
        Some(selector) => selected(entry, selector, workloads)
            .filter_map(|w| w.spec.service_account.clone())
            .collect(),
        None => entry
            .endpoints
            .iter()
            .filter_map(|e| e.service_account.clone())
            .collect(),
    };
    out.retain(|a| !a.is_empty());
    out.sort();
    out.dedup();
    out
}

/// The endpoints every host of `entry` shares, or `None` when the host
/// itself is the endpoint (resolution DNS with neither endpoints nor a
/// selector).
fn endpoints(
    entry: &ServiceEntry,
    ports: &[ServicePort],
    workloads: &[WorkloadEntry],
    notes: &mut Vec<String>,
) -> Option<Vec<Endpoint>> {
    if entry.resolution == Resolution::None {
        if !entry.endpoints.is_empty() {
            notes.push("resolution NONE takes no endpoints; they are not served".into());
        }
        return Some(Vec::new());
    }
    if let Some(selector) = &entry.workload_selector {
        let mut out = Vec::new();
        for w in selected(entry, selector, workloads) {
            match endpoint(&w.spec, entry, ports) {
                Ok(mut e) => {
                    e.health = w.health;
                    out.push(e);
                }
                Err(e) => notes.push(format!("{}: {e}", w.object())),
            }
        }
        return Some(out);
    }
    if entry.endpoints.is_empty() && entry.resolution == Resolution::Dns {
        return None;
    }
    let mut out = Vec::new();
    for (i, spec) in entry.endpoints.iter().enumerate() {
        match endpoint(spec, entry, ports) {
            Ok(e) => out.push(e),
            Err(e) => notes.push(format!("endpoints[{i}]: {e}")),
        }
    }
    Some(out)
}

/// One instance as an endpoint of `entry`'s ports.
fn endpoint(
    spec: &WorkloadSpec,
    entry: &ServiceEntry,
    ports: &[ServicePort],
) -> Result<Endpoint, String> {
    let Some(address) = spec.address.as_deref() else {
        return Err("no address".into());
    };
    if address.starts_with("unix://") {
        return Err(format!("{address:?}: unix domain sockets are not served"));
    }
    let mut endpoint = Endpoint::new(address.parse::<Address>()?);
    for port in ports {
        let given = entry.ports.iter().find(|p| p.number == port.port);
        let target = spec
            .ports
            .get(&port.name)
            .copied()
            .or_else(|| given.and_then(|p| p.target_port))
            .unwrap_or(port.port);
        endpoint.ports.insert(port.name.clone(), target);
    }
    if let Some(unknown) = spec
        .ports
        .keys()
        .find(|n| !ports.iter().any(|p| &p.name == *n))
    {
        return Err(format!("ports: {unknown:?} names no port of the entry"));
    }
    endpoint.labels = spec.labels.clone();
    if let Some(network) = spec.network.as_deref().filter(|n| !n.is_empty()) {
        endpoint
            .labels
            .insert(NETWORK_LABEL.to_owned(), network.to_owned());
    }
    if let Some(locality) = spec.locality.as_deref() {
        let mut parts = locality.splitn(3, '/');
        endpoint.locality = Locality {
            region: parts.next().unwrap_or_default().to_owned(),
            zone: parts.next().unwrap_or_default().to_owned(),
            subzone: parts.next().unwrap_or_default().to_owned(),
        };
    }
    endpoint.weight = spec.weight.filter(|w| *w > 0).unwrap_or(1);
    Ok(endpoint)
}

#[cfg(test)]
mod tests;
