//! Destination policies: Istio's DestinationRule, field for field.

use serde::{Deserialize, Serialize};

use super::common::{Duration, PortSelector};
use crate::model::{Hostname, Labels};

/// How traffic to one host is balanced and protected, and the subsets
/// (named groups of its endpoints, by labels) routes may name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationPolicy {
    /// The service's hostname.
    pub host: Hostname,
    /// For the whole host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// The namespaces whose proxies the policy applies to (Istio's
    /// `exportTo`, see [`crate::export`]); empty: every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// A named group of a host's endpoints: those whose labels include all of
/// `labels`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Its name, a DNS label (`v1`).
    pub name: String,
    /// The labels its endpoints carry.
    #[serde(default)]
    pub labels: Labels,
    /// Overrides the host's policy for this subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

impl Subset {
    /// True when an endpoint with `labels` belongs to the subset.
    pub fn selects(&self, labels: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Load balancing, connection limits and outlier detection; each part set
/// here replaces the same part of the level above (host, then port, then
/// subset, then the subset's port), as in Istio.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// How an endpoint is picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// Limits on connections and requests (circuit breaking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Ejecting endpoints that fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Per service port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// TLS to the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

/// TLS from the proxy to the endpoints (Istio's `ClientTLSSettings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTls {
    /// Which TLS.
    pub mode: TlsMode,
    /// MUTUAL: the client certificate (a PEM file on the proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// MUTUAL: its key (a PEM file on the proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// SIMPLE and MUTUAL: the CAs the server's certificate must chain to
    /// (a PEM file on the proxy) [default: the system's bundle].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// A Kubernetes Secret holding the client certificate (not served for
    /// sidecars: the check names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Names the server's certificate must carry (any of them): DNS names,
    /// or SPIFFE ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// The server name sent [default: none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Do not check the server's certificate at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Istio's TLS modes toward a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plaintext, also to sidecars that would take mutual TLS.
    Disable,
    /// TLS, the server's certificate checked.
    Simple,
    /// TLS with a client certificate of the user's.
    Mutual,
    /// The mesh's mutual TLS with the workload certificate, to every
    /// endpoint (labelled as a sidecar or not).
    IstioMutual,
}

/// A traffic policy for one service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port.
    pub port: PortSelector,
    /// As [`TrafficPolicy::load_balancer`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// As [`TrafficPolicy::connection_pool`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// As [`TrafficPolicy::outlier_detection`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// As [`TrafficPolicy::tls`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

/// A load balancer: `simple` or `consistentHash`, exactly one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// A simple algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Ring hash on a request property: the same value, the same endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
}

/// The simple algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SimpleLb {
    /// In turn (the default).
    #[serde(rename = "ROUND_ROBIN")]
    RoundRobin,
    /// The endpoint with fewer outstanding requests of two picked at random.
    #[serde(rename = "LEAST_REQUEST", alias = "LEAST_CONN")]
    LeastRequest,
    /// At random.
    #[serde(rename = "RANDOM")]
    Random,
}

/// What a consistent hash hashes: exactly one of header, cookie, source IP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    /// A request header (gRPC: a metadata key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// A cookie, created by the proxy when the request lacks it and `ttl`
    /// is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HashCookie>,
    /// The client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Ring entries (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// A cookie to hash on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashCookie {
    /// Its name.
    pub name: String,
    /// Its path, when the proxy sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its lifetime, when the proxy sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}

/// Connection and request limits, Istio's ConnectionPoolSettings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    /// TCP-level limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpPool>,
    /// HTTP-level limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpPool>,
}

/// TCP-level limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpPool {
    /// Connections to the whole host, per proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// The TCP connect timeout (default 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
}

/// HTTP-level limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPool {
    /// Requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    /// Requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    /// Requests per connection before it is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Retries in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// Ejecting endpoints that fail, Istio's OutlierDetection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// 5xx answers (and connection failures) in a row that eject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// 502, 503 and 504 answers in a row that eject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Between sweeps (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// The first ejection's length; it grows with each ejection (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// The most of the host's endpoints ejected at once, in percent
    /// (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

/// The settings that apply to one cluster: a port of the host, and maybe
/// a subset, after the levels' overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EffectivePolicy<'a> {
    /// The load balancer.
    pub load_balancer: Option<&'a LoadBalancer>,
    /// The limits.
    pub connection_pool: Option<&'a ConnectionPool>,
    /// Outlier detection.
    pub outlier_detection: Option<&'a OutlierDetection>,
    /// TLS to the endpoints.
    pub tls: Option<&'a ClientTls>,
}

impl<'a> EffectivePolicy<'a> {
    /// Each part given replaces the one so far.
    fn overlay(
        &mut self,
        lb: &'a Option<LoadBalancer>,
        pool: &'a Option<ConnectionPool>,
        od: &'a Option<OutlierDetection>,
        tls: &'a Option<ClientTls>,
    ) {
        self.load_balancer = lb.as_ref().or(self.load_balancer);
        self.connection_pool = pool.as_ref().or(self.connection_pool);
        self.outlier_detection = od.as_ref().or(self.outlier_detection);
        self.tls = tls.as_ref().or(self.tls);
    }

    fn apply(&mut self, p: &'a TrafficPolicy, port: u32) {
        self.overlay(
            &p.load_balancer,
            &p.connection_pool,
            &p.outlier_detection,
            &p.tls,
        );
        if let Some(pl) = p.port_level_settings.iter().find(|s| s.port.number == port) {
            self.overlay(
                &pl.load_balancer,
                &pl.connection_pool,
                &pl.outlier_detection,
                &pl.tls,
            );
        }
    }
}

impl DestinationPolicy {
    /// The settings for `port`, and for `subset` when given: host, then the
    /// host's port level, then the subset, then the subset's port level.
    pub fn effective<'a>(&'a self, port: u32, subset: Option<&'a Subset>) -> EffectivePolicy<'a> {
        let mut e = EffectivePolicy::default();
        if let Some(p) = &self.traffic_policy {
            e.apply(p, port);
        }
        if let Some(p) = subset.and_then(|s| s.traffic_policy.as_ref()) {
            e.apply(p, port);
        }
        e
    }
}
