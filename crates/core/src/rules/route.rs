//! Route rules: Istio's VirtualService (HTTP part), field for field, so
//! that an Istio user recognises every name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{Duration, HeaderCondition, Percent, PortSelector, StringMatch};
use crate::model::Hostname;

/// How requests to some hosts are routed: an ordered list of HTTP routes;
/// the first whose match holds decides. A request no route matches goes
/// where it would without the rule (the host's default route).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRule {
    /// The service hostnames the rule binds to.
    pub hosts: Vec<Hostname>,
    /// The routes, in order.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// Routes of opaque TCP connections (Istio's `tcp`), in order: the
    /// first whose match holds decides where a connection goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// Routes of TLS connections by their server name (Istio's `tls`),
    /// passed through (not terminated), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// The namespaces whose proxies the rule applies to (Istio's
    /// `exportTo`, see [`crate::export`]); empty: every namespace. A proxy
    /// of another namespace routes as if the rule did not exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Where the rule applies (Istio's `gateways`): `mesh` for the
    /// sidecars, `NAMESPACE/NAME` (or `NAME`, of the rule's namespace) for
    /// the router proxies of a gateway ([`super::gateway`]); empty: the
    /// mesh only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

impl RouteRule {
    /// It applies to the mesh's sidecars (its hosts are services).
    pub fn for_mesh(&self) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == super::gateway::MESH)
    }

    /// It applies to some gateway's router proxies.
    pub fn for_gateways(&self) -> bool {
        self.gateways.iter().any(|g| g != super::gateway::MESH)
    }
}

/// Istio's `TCPRoute`: where connections go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Any one of these holds (empty: every connection).
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<L4Match>,
    /// Weighted destinations (each connection picks one).
    pub route: Vec<RouteDestination>,
}

/// A TCP route's condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4Match {
    /// The service port connected to; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// Istio's `TLSRoute`: where TLS connections go, by server name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Any one of these holds; at least one.
    #[serde(rename = "match")]
    pub matches: Vec<TlsMatch>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// A TLS route's condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatch {
    /// Server names (SNI), exact or `*.SUFFIX`; at least one.
    pub sni_hosts: Vec<String>,
    /// The service port connected to; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl RouteRule {
    /// Every destination it sends to: its HTTP routes' (mirrors included),
    /// TCP routes' and TLS routes'.
    pub fn destinations(&self) -> impl Iterator<Item = &Destination> {
        let http = self.http.iter().flat_map(|h| {
            h.route
                .iter()
                .map(|d| &d.destination)
                .chain(h.mirror.as_ref())
        });
        let l4 = self
            .tcp
            .iter()
            .flat_map(|t| &t.route)
            .chain(self.tls.iter().flat_map(|t| &t.route))
            .map(|d| &d.destination);
        http.chain(l4)
    }

    /// [`RouteRule::destinations`], to change them (a source expanding
    /// short hostnames).
    pub fn destinations_mut(&mut self) -> impl Iterator<Item = &mut Destination> {
        let http = self.http.iter_mut().flat_map(|h| {
            h.route
                .iter_mut()
                .map(|d| &mut d.destination)
                .chain(h.mirror.as_mut())
        });
        let l4 = self
            .tcp
            .iter_mut()
            .flat_map(|t| &mut t.route)
            .chain(self.tls.iter_mut().flat_map(|t| &mut t.route))
            .map(|d| &mut d.destination);
        http.chain(l4)
    }

    /// Where a connection to `port` goes by the TCP routes (`sni: None`)
    /// or, for a TLS connection naming `sni`, by the TLS routes: the first
    /// route that matches; `None` when none does (the port's own service).
    pub fn l4_route(&self, port: u32, sni: Option<&str>) -> Option<&[RouteDestination]> {
        let port_ok = |p: Option<u32>| p.is_none_or(|p| p == port);
        match sni {
            Some(name) => self
                .tls
                .iter()
                .find(|r| {
                    r.matches.iter().any(|m| {
                        port_ok(m.port) && m.sni_hosts.iter().any(|h| sni_matches(h, name))
                    })
                })
                .map(|r| r.route.as_slice()),
            None => self
                .tcp
                .iter()
                .find(|r| r.matches.is_empty() || r.matches.iter().any(|m| port_ok(m.port)))
                .map(|r| r.route.as_slice()),
        }
    }
}

/// `pattern` (a name or `*.SUFFIX`) matches server name `name`.
fn sni_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            suffix.starts_with('.') && name.len() > suffix.len() && name.ends_with(suffix)
        }
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// One route: conditions, then where matching requests go and how.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// A name for logs and debug pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one of these holds (empty: every request).
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatch>,
    /// Weighted destinations. Exactly one of `route` and `redirect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Rewrite the path prefix or the authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// The whole request's deadline, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retries of failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Injected delays and failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// A copy of each request also goes here (its answer is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// The share of requests mirrored (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// Header changes on the way in and out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Conditions on a request; all of those given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatch {
    /// A name for logs and debug pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The path (without the query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// The HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Headers (lowercase names) and their conditions; `{}`: present.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderCondition>,
    /// Headers that must not match; `{}`: absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, HeaderCondition>,
    /// The service port the request was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// A destination and its share of the route's requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where.
    pub destination: Destination,
    /// The share, in percent; all of a route's weights sum to 100, or all
    /// are absent (equal shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A service, optionally one subset and one port of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The service's hostname.
    pub host: Hostname,
    /// A subset that the host's destination policy defines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The service port; absent: the port the request was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

impl Destination {
    /// A whole service, on the port the request was sent to.
    pub fn host(host: impl Into<Hostname>) -> Self {
        Destination {
            host: host.into(),
            subset: None,
            port: None,
        }
    }

    /// One subset of it.
    pub fn subset(mut self, subset: &str) -> Self {
        self.subset = Some(subset.to_owned());
        self
    }
}

/// An HTTP redirect answered by the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// The new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The new authority (host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// 301, 302, 303, 307 or 308 (default 301).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

/// Rewrites before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces the matched path prefix (or the whole path for an exact
    /// match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the authority (Host header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Retries, Istio's HTTPRetry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    /// Retries after the first attempt (0: none).
    pub attempts: u32,
    /// Each attempt's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated conditions, Envoy's names: HTTP `5xx`,
    /// `gateway-error`, `reset`, `connect-failure`, `refused-stream`,
    /// `retriable-4xx`, ...; gRPC `cancelled`, `deadline-exceeded`,
    /// `internal`, `resource-exhausted`, `unavailable`. Default: the
    /// connection failures and `unavailable`, `cancelled`, ... as Istio does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
}

/// The retry conditions Envoy knows for HTTP (`retry_on`).
pub const HTTP_RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

/// The retry conditions Envoy and gRPC know for gRPC status codes.
pub const GRPC_RETRY_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Istio's default conditions when a rule sets none.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// Injected faults, Istio's HTTPFaultInjection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Delay some requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Fail some requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// A fixed delay before forwarding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// How long.
    pub fixed_delay: Duration,
    /// The share of requests delayed (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// An answer instead of forwarding: an HTTP status or a gRPC status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status, 200 to 599.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u32>,
    /// gRPC status by name (`UNAVAILABLE`) or number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// The share of requests aborted (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// gRPC status codes by name, in number order.
pub const GRPC_CODES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl FaultAbort {
    /// The gRPC status code, when one is given and known.
    pub fn grpc_code(&self) -> Option<u32> {
        let s = self.grpc_status.as_deref()?;
        if let Ok(n) = s.parse::<u32>() {
            return (n < GRPC_CODES.len() as u32).then_some(n);
        }
        GRPC_CODES
            .iter()
            .position(|c| c.eq_ignore_ascii_case(s))
            .and_then(|n| u32::try_from(n).ok())
    }
}

/// Header changes on requests and responses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// On the request, before it is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// On the response, before it is returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Set (replace), add (append) and remove headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Replaced or created.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Appended to what is there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}
