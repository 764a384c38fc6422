//! The canonical service model every registry adapter fills in.
//!
//! The types here are also the registry file format: they derive serde with
//! `deny_unknown_fields` and defaults, so the file and etcd adapters parse
//! documents straight into them and a typo is an error, not a silent default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Labels attached to services and endpoints.
pub type Labels = BTreeMap<String, String>;

/// A service's fully qualified name, such as `reviews.default.svc`.
///
/// The hostname is the key that merges registries: the same hostname from
/// several registries is one service. Cloning is cheap (a reference count).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hostname(Arc<str>);

impl Hostname {
    /// Wraps a name without checking it; [`Service::validate`] checks it.
    pub fn new(name: impl AsRef<str>) -> Self {
        Hostname(Arc::from(name.as_ref()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Hostname {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Hostname {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Hostname {
    fn from(s: &str) -> Self {
        Hostname::new(s)
    }
}

impl From<String> for Hostname {
    fn from(s: String) -> Self {
        Hostname(Arc::from(s))
    }
}

/// A service: a hostname, its ports and the endpoints that serve them.
///
/// Registries report whole services with their endpoints; the aggregator
/// merges services with the same hostname from several registries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Fully qualified name; lowercase DNS labels separated by dots.
    pub hostname: Hostname,
    /// Namespace the service lives in (a DNS label). Defaults to `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// The ports the service exposes; at least one.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Optional virtual IP addresses (a Kubernetes ClusterIP, for instance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// The instances serving this service.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The namespaces whose proxies see it (Istio's `exportTo`): `*`
    /// every namespace (also when empty, the default), `.` its own,
    /// a namespace by name, `~` none. A proxy outside them receives
    /// nothing of it, not even through a route rule (see
    /// [`Service::exported_to`]).
    #[serde(default, rename = "exportTo", skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// How proxies reach its endpoints (Istio's ServiceEntry
    /// `resolution`); unset: by their addresses (IP addresses over EDS,
    /// DNS names resolved as [`Resolution::Dns`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Inside the mesh or outside it (Istio's ServiceEntry `location`):
    /// no mutual TLS is offered to an external service's endpoints.
    #[serde(default, skip_serializing_if = "Location::is_internal")]
    pub location: Location,
    /// Who its instances must prove to be, for mutual TLS from sidecars
    /// (Istio's ServiceEntry `subjectAltNames` and its workloads'
    /// `serviceAccount`s): empty, any identity of the mesh's trust domain.
    #[serde(default, skip_serializing_if = "Identities::is_empty")]
    pub identities: Identities,
}

/// The identities a service's instances must prove (see
/// [`Service::identities`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identities {
    /// Subject alternative names, as written (`spiffe://...` URIs, or DNS
    /// names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Service accounts of the service's namespace: each is the identity
    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
}

impl Identities {
    /// True when nothing is required beyond the trust domain.
    pub fn is_empty(&self) -> bool {
        self.subject_alt_names.is_empty() && self.service_accounts.is_empty()
    }
}

/// How a service's endpoints are found: Istio's ServiceEntry resolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// None: connections go where the application sent them (the
    /// original destination, in capture mode); the service has no
    /// endpoints.
    None,
    /// Its endpoints are IP addresses.
    Static,
    /// Its endpoints' DNS names are resolved, each to all of its
    /// addresses: by Sextant, which serves the answers as endpoints and
    /// asks again when their TTL runs out, or, when configured so, by
    /// every proxy itself (Envoy's STRICT_DNS).
    Dns,
    /// One DNS name, resolved by the proxy at connection time, the first
    /// address answered used (Envoy's LOGICAL_DNS): for names whose answer
    /// rotates at every query.
    DnsRoundRobin,
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resolution::None => "NONE",
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
            Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        })
    }
}

/// Where a service runs, as Istio's ServiceEntry `location` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Part of the mesh (the default for every registry's services).
    #[default]
    MeshInternal,
    /// Outside the mesh: its endpoints run no sidecar.
    MeshExternal,
}

impl Location {
    /// True for [`Location::MeshInternal`].
    pub fn is_internal(&self) -> bool {
        *self == Location::MeshInternal
    }
}

fn default_namespace() -> String {
    "default".to_owned()
}

impl Service {
    /// A service with no ports and no endpoints in namespace `default`.
    pub fn new(hostname: impl Into<Hostname>) -> Self {
        Service {
            hostname: hostname.into(),
            namespace: default_namespace(),
            labels: Labels::new(),
            ports: Vec::new(),
            addresses: Vec::new(),
            endpoints: Vec::new(),
            export_to: Vec::new(),
            resolution: None,
            location: Location::MeshInternal,
            identities: Identities::default(),
        }
    }

    /// True when the proxies resolve its endpoints' names themselves at
    /// connection time ([`Resolution::DnsRoundRobin`]), or connect to
    /// the original destination ([`Resolution::None`]): Sextant leaves
    /// such names alone.
    pub fn resolved_by_proxy(&self) -> bool {
        matches!(
            self.resolution,
            Some(Resolution::None | Resolution::DnsRoundRobin)
        )
    }

    /// Whether a proxy of `namespace` (none: a proxy that did not say)
    /// sees this service: [`Service::export_to`] empty or holding `*`,
    /// `.` for a proxy of the service's namespace, or its namespace.
    pub fn exported_to(&self, namespace: Option<&str>) -> bool {
        crate::export::exported(&self.export_to, &self.namespace, namespace)
    }

    /// True when some proxies may not see it.
    pub fn is_restricted(&self) -> bool {
        crate::export::restricted(&self.export_to)
    }

    /// Adds a port; the protocol is given explicitly.
    pub fn with_port(mut self, name: &str, port: u32, protocol: Protocol) -> Self {
        self.ports.push(ServicePort {
            name: name.to_owned(),
            port,
            protocol,
        });
        self
    }

    /// Adds an endpoint.
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Looks a port up by name.
    pub fn port(&self, name: &str) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// True when everything but the endpoints is equal: a change between two
    /// such services is an endpoint-only change, which proxies receive on a
    /// fast path.
    pub fn same_config(&self, other: &Service) -> bool {
        self.hostname == other.hostname
            && self.namespace == other.namespace
            && self.labels == other.labels
            && self.ports == other.ports
            && self.addresses == other.addresses
            && self.export_to == other.export_to
            && self.resolution == other.resolution
            && self.location == other.location
            && self.identities == other.identities
    }
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "ServicePortDoc")]
pub struct ServicePort {
    /// Name, unique within the service; endpoints refer to ports by name.
    pub name: String,
    /// Port number, 1 to 65535. `u32` so that out-of-range values are caught
    /// by validation with a precise message rather than by the parser.
    pub port: u32,
    /// Application protocol.
    pub protocol: Protocol,
}

impl ServicePort {
    /// A port whose protocol is derived from its name (see [`Protocol::from_port_name`]).
    pub fn new(name: &str, port: u32) -> Self {
        ServicePort {
            name: name.to_owned(),
            port,
            protocol: Protocol::from_port_name(name),
        }
    }
}

/// The on-disk shape of a port: the protocol may be omitted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicePortDoc {
    name: String,
    port: u32,
    #[serde(default)]
    protocol: Option<Protocol>,
}

impl From<ServicePortDoc> for ServicePort {
    fn from(doc: ServicePortDoc) -> Self {
        let protocol = doc
            .protocol
            .unwrap_or_else(|| Protocol::from_port_name(&doc.name));
        ServicePort {
            name: doc.name,
            port: doc.port,
            protocol,
        }
    }
}

/// Application protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1 (Envoy also accepts HTTP/2 from downstream).
    #[serde(rename = "HTTP", alias = "http")]
    Http,
    /// HTTP/2 to the upstream.
    #[serde(rename = "HTTP2", alias = "http2")]
    Http2,
    /// gRPC: HTTP/2 to the upstream; reachable by proxyless gRPC clients.
    #[serde(rename = "GRPC", alias = "grpc", alias = "gRPC")]
    Grpc,
    /// Opaque TCP.
    #[serde(rename = "TCP", alias = "tcp")]
    Tcp,
    /// TLS passed through (routed by SNI once TLS listeners exist).
    #[serde(rename = "TLS", alias = "tls")]
    Tls,
}

impl Protocol {
    /// Istio's rule for a port without an explicit protocol: the name's prefix
    /// (`http`, `http-*`, `http2*`, `grpc*`, `tls*`, `tcp*`) decides, else TCP.
    pub fn from_port_name(name: &str) -> Protocol {
        let prefix = name.split(['-', '_']).next().unwrap_or("");
        match prefix.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "grpc" | "grpc_web" => Protocol::Grpc,
            "tls" | "https" => Protocol::Tls,
            _ => Protocol::Tcp,
        }
    }

    /// True for protocols whose upstream connections use HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }

    /// True for protocols routed by HTTP host/authority.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
        })
    }
}

/// One instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub address: Address,
    /// Target port per service port name. A service port missing here is
    /// served on the same number as the service port (Kubernetes target
    /// ports differ from service ports, files and Consul usually do not).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Where the endpoint runs; gRPC clients need every endpoint to have one.
    #[serde(default)]
    pub locality: Locality,
    /// Load-balancing weight, at least 1. Defaults to 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Health as the registry reports it. Defaults to healthy.
    #[serde(default)]
    pub health: Health,
}

fn default_weight() -> u32 {
    1
}

impl Endpoint {
    /// A healthy endpoint with weight 1, no labels and an empty locality.
    pub fn new(address: Address) -> Self {
        Endpoint {
            address,
            ports: BTreeMap::new(),
            labels: Labels::new(),
            locality: Locality::default(),
            weight: 1,
            health: Health::Healthy,
        }
    }

    /// Sets the target port for the service port `name`.
    pub fn with_port(mut self, name: &str, port: u32) -> Self {
        self.ports.insert(name.to_owned(), port);
        self
    }

    /// The port this endpoint listens on for `service_port`.
    pub fn target_port(&self, service_port: &ServicePort) -> u32 {
        self.ports
            .get(&service_port.name)
            .copied()
            .unwrap_or(service_port.port)
    }
}

/// An endpoint address: an IP address or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Address {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name, resolved by the proxy.
    Dns(Hostname),
}

impl Address {
    /// The IP address, when this is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ip(ip) => Some(*ip),
            Address::Dns(_) => None,
        }
    }
}

impl std::str::FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Address::Ip(ip));
        }
        match crate::validate::dns_name_problem(s) {
            None => Ok(Address::Dns(Hostname::new(s))),
            Some(problem) => Err(format!(
                "address {s:?} is neither an IP address nor a DNS name: {problem}"
            )),
        }
    }
}

impl TryFrom<String> for Address {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.to_string()
    }
}

impl From<IpAddr> for Address {
    fn from(ip: IpAddr) -> Self {
        Address::Ip(ip)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Dns(name) => f.write_str(name),
        }
    }
}

/// Where an endpoint runs. Empty strings mean "not known".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// Region, e.g. `eu-west`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Zone, e.g. `eu-west-1a`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Sub-zone, e.g. a rack.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subzone: String,
}

/// Health of an endpoint as its registry reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    /// Receives traffic.
    #[default]
    #[serde(rename = "HEALTHY", alias = "healthy")]
    Healthy,
    /// Receives no traffic.
    #[serde(rename = "UNHEALTHY", alias = "unhealthy")]
    Unhealthy,
    /// Finishing its work: no new requests, existing ones complete.
    #[serde(rename = "DRAINING", alias = "draining")]
    Draining,
    /// The registry does not know; proxies treat it as healthy.
    #[serde(rename = "UNKNOWN", alias = "unknown")]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_from_port_name_follows_istio() {
        for (name, want) in [
            ("http", Protocol::Http),
            ("http-web", Protocol::Http),
            ("http2", Protocol::Http2),
            ("http2-api", Protocol::Http2),
            ("grpc", Protocol::Grpc),
            ("grpc-reviews", Protocol::Grpc),
            ("tls-db", Protocol::Tls),
            ("https", Protocol::Tls),
            ("tcp-redis", Protocol::Tcp),
            ("redis", Protocol::Tcp),
            ("httpx", Protocol::Tcp),
            ("", Protocol::Tcp),
        ] {
            assert_eq!(Protocol::from_port_name(name), want, "{name}");
        }
    }

    #[test]
    fn file_format_defaults_apply() {
        let yaml = "hostname: reviews.default.svc\nports:\n  - { name: http, port: 9080 }\nendpoints:\n  - address: 127.0.0.1\n";
        let s: Service = serde_yaml_ng::from_str(yaml).expect("parses");
        assert_eq!(s.namespace, "default");
        assert_eq!(s.ports[0].protocol, Protocol::Http);
        let e = &s.endpoints[0];
        assert_eq!(e.weight, 1);
        assert_eq!(e.health, Health::Healthy);
        assert_eq!(e.target_port(&s.ports[0]), 9080);
        assert_eq!(e.address, Address::Ip("127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn unknown_fields_are_errors() {
        let yaml = "hostname: a.b\nport: [1]\n";
        let err = serde_yaml_ng::from_str::<Service>(yaml).expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `port`"), "{err}");
        let yaml = "hostname: a.b\nports: [{name: http, port: 1, protocl: HTTP}]\n";
        let err = serde_yaml_ng::from_str::<Service>(yaml).expect_err("unknown field");
        assert!(err.to_string().contains("protocl"), "{err}");
    }

    #[test]
    fn addresses_parse_as_ip_or_dns() {
        assert_eq!(
            "10.0.0.1".parse::<Address>(),
            Ok(Address::Ip("10.0.0.1".parse().expect("ip")))
        );
        assert_eq!(
            "::1".parse::<Address>(),
            Ok(Address::Ip("::1".parse().expect("ip")))
        );
        assert_eq!(
            "db.example.com".parse::<Address>(),
            Ok(Address::Dns(Hostname::new("db.example.com")))
        );
        assert!("not an address".parse::<Address>().is_err());
        assert!("10.0.0.1:80".parse::<Address>().is_err());
    }

    #[test]
    fn json_round_trip() {
        let s = Service::new("a.default.svc")
            .with_port("grpc", 50051, Protocol::Grpc)
            .with_endpoint(
                Endpoint::new("10.1.2.3".parse().expect("addr")).with_port("grpc", 8080),
            );
        let json = serde_json::to_string(&s).expect("serializes");
        let back: Service = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, s);
    }
}
